import LinuxSystem

/// Makes completed writes durable with as few flushes as possible: each writer waits until a flush that
/// started after its write completed has finished. One writer at a time runs the flush (the leader); the
/// writes that finish while it runs share the next one. So N concurrent writes cost about two flushes, not N.
public final class GroupCommit: @unchecked Sendable {
    private let device: any BlockDevice
    private let lock = ConditionLock()
    /// Writes that have completed (reached the device) so far; guarded by `lock`.
    private var completed: UInt64 = 0
    /// Every write numbered up to this is durable.
    private var durable: UInt64 = 0
    private var flushing = false

    public init(device: any BlockDevice) { self.device = device }

    /// Call after a write completed; returns once it is on stable storage, or throws the flush's failure.
    public func makeDurable() throws(DeviceError) {
        lock.lock()
        defer { lock.unlock() }
        completed += 1
        let mine = completed
        while durable < mine {
            if flushing {
                lock.wait()
                continue
            }
            flushing = true
            let covers = completed
            lock.unlock()
            var failure: DeviceError? = nil
            do { try device.flush() } catch { failure = error }
            lock.lock()
            flushing = false
            lock.broadcast()
            // A failed flush fails only its leader; the writers it covered retry with a flush of their own,
            // so each of them learns the outcome of a flush that really covers it.
            if let failure { throw failure }
            durable = max(durable, covers)
        }
    }
}
