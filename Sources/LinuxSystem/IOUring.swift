import Glibc
import Synchronization
import CIOUring

/// An io_uring instance: requests are queued in shared memory, handed to the kernel in one system call, and
/// completed in any order. Used by one thread, which prepares, submits, waits and reaps.
public final class IOUring: @unchecked Sendable {
    private let ring: OpaquePointer

    /// Results above this bit in the user data belong to the ring (injected failures); callers use the rest.
    public static let userDataLimit: UInt64 = 1 << 62
    private static let injectedFailure: UInt64 = 1 << 63

    /// - Parameters:
    ///   - entries: submission queue size (a power of two is used); completions get twice as many.
    ///   - maxKernelWorkers: bound on the kernel threads that run requests which must block (buffered I/O).
    public init(entries: Int, maxKernelWorkers: Int) throws(SystemError) {
        var error: Int32 = 0
        guard let ring = CIOUring_create(UInt32(entries), UInt32(maxKernelWorkers), &error) else {
            throw SystemError(call: "io_uring_setup", errno: error, context: "\(entries) entries")
        }
        self.ring = ring
    }

    deinit { CIOUring_destroy(ring) }

    /// Test hook: the next N submits fail with EAGAIN before reaching the kernel, as io_uring_enter does when
    /// the kernel is short of memory; the queued requests stay queued, as they do then.
    public static let failNextSubmits = Atomic<Int>(0)

    private func injectedSubmitFailure(_ context: String) throws(SystemError) {
        if Self.failNextSubmits.load(ordering: .relaxed) > 0, Self.failNextSubmits.subtract(1, ordering: .relaxed).oldValue > 0 {
            throw SystemError(call: "io_uring_enter", errno: EAGAIN, context: "\(context) (injected)")
        }
    }

    /// Queues a preadv / pwritev; false when the submission queue is full.
    public func prepareVectored(write: Bool, fd: Int32, vectors: UnsafePointer<iovec>, count: Int, offset: Int,
                                userData: UInt64) -> Bool {
        precondition(userData < Self.userDataLimit)
        if write && Syscall.failPwriteAfter.load(ordering: .relaxed) > 0,
           Syscall.failPwriteAfter.subtract(1, ordering: .relaxed).newValue == 0 {
            // The test hook of Syscall.vectored, for writes that go through the ring: completes as EIO.
            return CIOUring_prepareNop(ring, userData | Self.injectedFailure) == 0
        }
        return CIOUring_prepareVectored(ring, write ? 1 : 0, fd, vectors, UInt32(count), UInt64(offset), userData) == 0
    }

    /// Queues an fdatasync. Its caller counts it in `Syscall.fdatasyncCalls` when it completes, as the
    /// synchronous ones are counted when they return.
    public func prepareDatasync(fd: Int32, userData: UInt64) -> Bool {
        precondition(userData < Self.userDataLimit)
        return CIOUring_prepareDatasync(ring, fd, userData) == 0
    }

    /// Queues an fallocate(2) (a hole punched: `Syscall.punchHoleMode`).
    public func prepareFallocate(fd: Int32, mode: Int32, offset: Int, length: Int, userData: UInt64) -> Bool {
        precondition(userData < Self.userDataLimit)
        return CIOUring_prepareFallocate(ring, fd, mode, UInt64(offset), UInt64(length), userData) == 0
    }

    /// Queues a one-shot wait for `fd` to become readable (frames queued on a socket).
    public func preparePollIn(fd: Int32, userData: UInt64) -> Bool {
        precondition(userData < Self.userDataLimit)
        return CIOUring_preparePollIn(ring, fd, userData) == 0
    }

    /// Hands every queued request to the kernel.
    @discardableResult
    public func submit() throws(SystemError) -> Int {
        try injectedSubmitFailure("submit")
        let rc = CIOUring_submit(ring)
        guard rc >= 0 else { throw SystemError(call: "io_uring_enter", errno: -rc, context: "submit") }
        return Int(rc)
    }

    /// Submits what is queued and sleeps until a completion is ready or `timeout` seconds pass.
    public func submitAndWait(timeout: Double) throws(SystemError) {
        try injectedSubmitFailure("submit and wait")
        let rc = CIOUring_submitAndWait(ring, Int64(timeout * 1e9))
        guard rc >= 0 else { throw SystemError(call: "io_uring_enter", errno: -rc, context: "submit and wait") }
    }

    /// Takes up to `capacity` completions that are ready, without waiting: user data and result (bytes
    /// moved, or -errno). Returns how many.
    public func reapReady(userData: UnsafeMutablePointer<UInt64>, results: UnsafeMutablePointer<Int32>, capacity: Int) -> Int {
        let n = Int(CIOUring_reapReady(ring, userData, results, UInt32(capacity)))
        for i in 0..<n where userData[i] & Self.injectedFailure != 0 {
            userData[i] &= ~Self.injectedFailure
            results[i] = -EIO
        }
        return n
    }
}
