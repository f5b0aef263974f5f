import Glibc

/// A failed system call: which call, the errno, and what we were doing (a path, an interface, an LBA).
public struct SystemError: Error, Hashable, Sendable, CustomStringConvertible {
    public var call: String
    public var errno: Int32
    public var context: String

    public init(call: String, errno: Int32, context: String = "") {
        self.call = call
        self.errno = errno
        self.context = context
    }

    public var message: String { String(cString: strerror(errno)) }

    public var description: String {
        context.isEmpty ? "\(call): \(message)" : "\(call)(\(context)): \(message)"
    }
}
