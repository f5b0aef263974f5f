/// Which RBD image an export names: `rbd:POOL/IMAGE` or `rbd:POOL/NAMESPACE/IMAGE`.
public struct RBDImageName: Hashable, Sendable, CustomStringConvertible {
    public static let scheme = "rbd:"

    public var pool: String
    /// The RADOS namespace inside the pool; empty for the default one.
    public var namespace: String
    public var image: String

    public init(pool: String, namespace: String = "", image: String) {
        self.pool = pool
        self.namespace = namespace
        self.image = image
    }

    /// Whether a path names an RBD image at all (then `init(parsing:)` says what is wrong with it).
    public static func isRBD(_ path: String) -> Bool { path.hasPrefix(scheme) }

    /// Parses `rbd:POOL/IMAGE` or `rbd:POOL/NAMESPACE/IMAGE`; the error says what a valid name looks like.
    public init(parsing path: String) throws(RBDNameError) {
        guard Self.isRBD(path) else { throw RBDNameError(path, "does not start with \(Self.scheme)") }
        let parts = path.dropFirst(Self.scheme.count).split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 || parts.count == 3, parts.allSatisfy({ !$0.isEmpty }) else {
            throw RBDNameError(path, "name the image as rbd:POOL/IMAGE or rbd:POOL/NAMESPACE/IMAGE")
        }
        if let bad = parts.first(where: { $0.contains(where: { $0 == "@" || $0.isWhitespace || $0.asciiValue == 0 }) }) {
            throw RBDNameError(path, bad.contains("@") ? "snapshots are not served (they are read-only views): drop '@…'"
                                                       : "'\(bad)' contains a space or control character")
        }
        self.init(pool: parts[0], namespace: parts.count == 3 ? parts[1] : "", image: parts[parts.count - 1])
    }

    public var description: String { Self.scheme + (namespace.isEmpty ? "\(pool)/\(image)" : "\(pool)/\(namespace)/\(image)") }
}

public struct RBDNameError: Error, Hashable, Sendable, CustomStringConvertible {
    public var path: String
    public var message: String
    init(_ path: String, _ message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "\(path): \(message)" }
}
