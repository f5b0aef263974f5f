import Glibc
import CLinuxShims

/// An eventfd: a counter that polls readable while it is above zero. Lets a thread that waits on descriptors
/// (poll, io_uring) be woken by something that is not a descriptor.
public final class EventCounter: @unchecked Sendable {
    public let descriptor: Int32

    public init() {
        descriptor = CLinuxShims_eventCounter()
        precondition(descriptor >= 0, "eventfd failed: \(String(cString: strerror(errno)))")
    }

    deinit { Syscall.close(descriptor) }

    public func signal() {
        var one: UInt64 = 1
        _ = Glibc.write(descriptor, &one, 8)
    }

    /// Whether it was signalled since the last `take` or `clear`; back to zero either way.
    public func take() -> Bool {
        var value: UInt64 = 0
        return Glibc.read(descriptor, &value, 8) == 8 && value > 0
    }

    /// Back to zero (not readable) until the next `signal`.
    public func clear() {
        var value: UInt64 = 0
        _ = Glibc.read(descriptor, &value, 8)
    }
}
