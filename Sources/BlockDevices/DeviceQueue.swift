import Glibc
import ATACore
import LinuxSystem

/// One operation handed to a device queue. A transfer moves whole sectors between consecutive sectors of the
/// media, starting at `lba`, and the segments in order (adjacent requests merged by the target are one
/// transfer). The caller keeps the segments and their memory valid until the completion is reaped.
public struct DeviceRequest: @unchecked Sendable {
    public enum Operation: @unchecked Sendable {
        case read, write, flush
        /// Discard `count` ranges (`BlockDevice.discard`), at `ranges`; the request's lba and segments are unused.
        case discard(ranges: UnsafePointer<SectorRange>, count: Int)
        /// One ATA command for the drive as sent (`ATAPassThroughDevice`); data in or out through segment 0.
        case passThrough(PassThroughCommand)
    }

    public var operation: Operation
    public var lba: UInt64
    public var segments: UnsafeMutablePointer<iovec>?
    public var segmentCount: Int
    /// Bytes the segments hold together.
    public var bytes: Int
    /// The caller's name for the request, given back in its completion; below the queue's `tokenCapacity`.
    public var token: Int

    public init(operation: Operation, lba: UInt64 = 0, segments: UnsafeMutablePointer<iovec>? = nil, segmentCount: Int = 0,
                bytes: Int = 0, token: Int) {
        self.operation = operation
        self.lba = lba
        self.segments = segments
        self.segmentCount = segmentCount
        self.bytes = bytes
        self.token = token
    }

    public static func flush(token: Int) -> DeviceRequest { DeviceRequest(operation: .flush, token: token) }
}

/// What became of a request: done (every byte moved, or the flush reached stable storage), or why not.
public struct DeviceCompletion: Sendable {
    public var token: Int
    public var failure: DeviceError?
    /// For pass-through: the drive's registers and whether data arrived.
    public var passThrough: PassThroughResult?

    public init(token: Int, failure: DeviceError? = nil, passThrough: PassThroughResult? = nil) {
        self.token = token
        self.failure = failure
        self.passThrough = passThrough
    }
}

/// The one interface a target serves every device through, with asynchronous completion: it submits requests
/// from its event loop, hands them to the device once per pass, and reaps what completed; when there is nothing
/// to do it sleeps in `wait` until frames arrive or a request completes. Implementations: io_uring for files and
/// block devices, inline for memory-backed ones, worker threads for SG_IO and where io_uring is unavailable; a
/// wrapper implements it over another queue. Used by one thread, the event loop.
public protocol DeviceQueue: AnyObject {
    /// For logs: where the I/O runs and why.
    var engineDescription: String { get }
    /// Tokens are below this.
    var tokenCapacity: Int { get }
    /// Requests submitted and not yet reaped.
    var outstanding: Int { get }
    /// The largest transfer the target should merge requests into.
    var maxTransferBytes: Int { get }
    /// Queues one request. Never waits for the device.
    func submit(_ request: DeviceRequest)
    /// Hands the requests submitted since the last call to the device, in one system call where it batches.
    func push()
    /// Calls `body` with each completion that is ready, without waiting; returns how many.
    @discardableResult
    func reap(_ body: (DeviceCompletion) -> Void) -> Int
    /// Pushes, then sleeps until `descriptor` (when given) is readable, a completion is ready, or `timeout`
    /// seconds pass.
    func wait(readable descriptor: Int32?, timeout: Double)
    /// After the last completion was reaped: stops whatever the queue runs (worker threads).
    func shutDown()
    /// The queue that does the I/O: itself, or what a wrapper wraps.
    var engine: any DeviceQueue { get }
}

extension DeviceQueue {
    public var maxTransferBytes: Int { Int.max }
    public func shutDown() {}
    public var engine: any DeviceQueue { self }
}

extension DeviceRequest {
    /// The segments as buffers, for the blocking calls of a device.
    func withBuffers<R>(_ body: (UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) throws(DeviceError) -> R) throws(DeviceError) -> R {
        try withUnsafeTemporaryAllocation(of: UnsafeMutableRawBufferPointer.self, capacity: max(1, segmentCount)) { (buffers) throws(DeviceError) in
            for i in 0..<segmentCount {
                buffers[i] = UnsafeMutableRawBufferPointer(start: segments![i].iov_base, count: segments![i].iov_len)
            }
            return try body(UnsafeBufferPointer(rebasing: buffers[0..<segmentCount]))
        }
    }

    /// Runs the request with the device's blocking calls: what the inline and thread queues do, and what the
    /// io_uring queue falls back to after a short transfer.
    func perform(on device: any BlockDevice) -> DeviceCompletion {
        do throws(DeviceError) {
            switch operation {
            case .read:
                try withBuffers { (b) throws(DeviceError) in
                    if b.count == 1 { try device.read(into: b[0], at: lba) } else { try device.read(into: b, at: lba) }
                }
            case .write:
                try withBuffers { (b) throws(DeviceError) in
                    if b.count == 1 { try device.write(from: UnsafeRawBufferPointer(b[0]), at: lba) } else { try device.write(from: b, at: lba) }
                }
            case .flush:
                try device.flush()
            case .discard(let ranges, let count):
                for i in 0..<count { try device.discard(ranges[i]) }
            case .passThrough(let command):
                guard let drive = device as? any ATAPassThroughDevice else {
                    preconditionFailure("pass-through submitted for \(device.name), which is not a drive")
                }
                let data = segmentCount > 0 ? UnsafeMutableRawBufferPointer(start: segments![0].iov_base, count: segments![0].iov_len)
                    : UnsafeMutableRawBufferPointer(start: nil, count: 0)
                return DeviceCompletion(token: token, passThrough: drive.passThrough(command, data: data))
            }
            return DeviceCompletion(token: token)
        } catch {
            return DeviceCompletion(token: token, failure: error)
        }
    }
}

/// Memory-backed devices (null, tmpfs): each request runs when it is submitted, on the event loop, because it
/// finishes in microseconds and never waits for a disk; its completion is reaped with the rest of the pass.
public final class InlineDeviceQueue: DeviceQueue {
    public let device: any BlockDevice
    public let tokenCapacity: Int
    private var completed: [DeviceCompletion] = []

    public init(device: any BlockDevice, tokenCapacity: Int) {
        self.device = device
        self.tokenCapacity = tokenCapacity
        completed.reserveCapacity(tokenCapacity)
    }

    public var engineDescription: String { "I/O on the receive thread: memory-backed, never waits for a disk" }
    public var outstanding: Int { completed.count }

    public func submit(_ request: DeviceRequest) {
        precondition(request.token >= 0 && request.token < tokenCapacity)
        completed.append(request.perform(on: device))
    }

    public func push() {}

    public func reap(_ body: (DeviceCompletion) -> Void) -> Int {
        let n = completed.count
        for completion in completed { body(completion) }
        completed.removeAll(keepingCapacity: true)
        return n
    }

    public func wait(readable descriptor: Int32?, timeout: Double) {
        if completed.isEmpty, let descriptor { _ = Syscall.waitReadable(descriptor, timeout: timeout) }
    }
}

/// Blocking devices without io_uring (SG_IO pass-through, `--io-engine threads`, io_uring unavailable): worker
/// threads run the requests with the device's blocking calls and hand completions back to the event loop,
/// which an eventfd wakes.
public final class ThreadDeviceQueue: DeviceQueue, @unchecked Sendable {
    public let device: any BlockDevice
    public let tokenCapacity: Int
    public let workerCount: Int
    private let why: String
    /// Event loop only: submitted since the last push.
    private var staged: [DeviceRequest] = []
    private var taken: [DeviceCompletion] = []
    public private(set) var outstanding = 0

    // Guarded by `lock`.
    private let lock = ConditionLock()
    private var queued: [DeviceRequest] = []
    private var queuedHead = 0
    private var completed: [DeviceCompletion] = []
    private var stopping = false

    private let wakeLoop = EventCounter()
    private var threads: [JoinableThread] = []

    /// - Parameter why: for the log, what made the target use threads.
    public init(device: any BlockDevice, tokenCapacity: Int, workers: Int, why: String) {
        self.device = device
        self.tokenCapacity = tokenCapacity
        workerCount = max(1, workers)
        self.why = why
        staged.reserveCapacity(tokenCapacity)
        taken.reserveCapacity(tokenCapacity)
        queued.reserveCapacity(tokenCapacity)
        completed.reserveCapacity(tokenCapacity)
        for _ in 0..<workerCount {
            threads.append(JoinableThread { self.workerLoop() })
        }
    }

    /// Stops the workers once what is queued has run. Called by the owner before letting go of the queue (the
    /// workers hold it).
    public func shutDown() {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
        for thread in threads { thread.join() }
        threads.removeAll()
    }

    public var engineDescription: String { "I/O on \(workerCount) threads (\(why))" }

    public func submit(_ request: DeviceRequest) {
        precondition(request.token >= 0 && request.token < tokenCapacity)
        staged.append(request)
        outstanding += 1
    }

    public func push() {
        if staged.isEmpty { return }
        lock.withLock {
            queued.append(contentsOf: staged)
            // A pass's requests were merged by the target already: one worker each.
            if staged.count == 1 { lock.signal() } else { lock.broadcast() }
        }
        staged.removeAll(keepingCapacity: true)
    }

    public func reap(_ body: (DeviceCompletion) -> Void) -> Int {
        if outstanding == staged.count { return 0 }
        guard lock.withLock({ !completed.isEmpty }) else { return 0 }
        // Cleared before taking: a completion added after this signals again, so none is left unseen.
        wakeLoop.clear()
        lock.withLock { swap(&completed, &taken) }
        let n = taken.count
        for completion in taken { body(completion) }
        taken.removeAll(keepingCapacity: true)
        outstanding -= n
        return n
    }

    public func wait(readable descriptor: Int32?, timeout: Double) {
        push()
        _ = Syscall.waitReadable(wakeLoop.descriptor, or: descriptor ?? -1, timeout: timeout)
    }

    private func workerLoop() {
        while true {
            lock.lock()
            while queuedHead == queued.count && !stopping { lock.wait() }
            if queuedHead == queued.count {
                lock.unlock()
                return
            }
            let request = queued[queuedHead]
            queuedHead += 1
            if queuedHead == queued.count {
                queued.removeAll(keepingCapacity: true)
                queuedHead = 0
            }
            lock.unlock()

            let completion = request.perform(on: device)

            let first = lock.withLock { () -> Bool in
                completed.append(completion)
                return completed.count == 1
            }
            if first { wakeLoop.signal() }
        }
    }
}
