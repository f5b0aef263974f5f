import Glibc
import AoEWire
import ATACore
import PacketTransport
import Synchronization
import BlockDevices
import LinuxSystem

/// Device work for a file-backed export, queued in the kernel with io_uring, all on the receiving thread: one
/// event loop receives frames, submits every ready request of a pass in one system call (adjacent frames merged
/// into one read or write), reaps completions, and sends their replies in batches; when there is nothing to do
/// it sleeps in the ring until frames arrive (a poll on the socket) or I/O completes. No thread waits for the
/// disk, no thread hands work to another, and the device sees the whole queue depth at once.
///
/// With O_DIRECT, a merged group moves through one contiguous bounce buffer (one segment for the disk, one
/// copy in memory): disks and hypervisors that split a request per segment serve four 1 KiB segments of an
/// MTU 1500 I/O about half as fast as one 4 KiB block.
///
/// Durable writes use group commit in the ring: a write that completes waits for an fdatasync queued after it.
/// An fdatasync covers every write that completed before it was queued; up to `maxCommits` run at once, so
/// writes that complete while one runs need not wait for it to end before theirs starts.
final class DeviceIOQueue: @unchecked Sendable {
    let ring: IOUring
    let device: any FileBackedDevice
    let maxMerge: Int
    /// Per group head slot: `maxMerge` iovecs and member slots (a group's buffers must be contiguous).
    let vectors: UnsafeMutablePointer<iovec>
    let members: UnsafeMutablePointer<Int32>
    var memberCount: [Int]
    /// Per group head: bytes moved, and the bounce buffer used (-1: the frames' own buffers).
    var groupBytes: [Int]
    var bounceOf: [Int]
    /// Bounce buffers for merged O_DIRECT groups (`bounceCount` x `bounceSize`, page-aligned). A group that
    /// finds none free goes vectored.
    let bounce: UnsafeMutableRawPointer?
    static let bounceSize = 128 << 10
    static let bounceCount = 32
    var freeBounce: [Int]
    /// Largest merged group in bytes: with bounce buffers, one buffer's worth.
    let maxGroupBytes: Int
    /// Copies of the requests in the ring, by slot: written when submitted, read when completed.
    let requests: UnsafeMutablePointer<Target.PendingRequest>
    /// The ready requests being submitted, and the heads of the groups they form.
    var sorted: [SortEntry] = []
    var heads: [Int] = []

    struct SortEntry { var key: UInt64; var slot: Int32 }
    /// Kind bits above the LBA (48 bits): flushes last, then writes by durability, then reads, each by LBA.
    static let kindMask: UInt64 = 0xFFFF << 48
    static func sortKey(_ request: Target.PendingRequest) -> UInt64 {
        switch request.operation {
        case .read(let lba, _): return lba
        case .write(let lba, _): return (request.durable ? 3 : 2) << 48 | lba
        default: return 4 << 48
        }
    }

    /// Requests prepared since the last submit.
    var unsubmitted = 0
    var pollArmed = false
    var commitWaiting: [Int] = []
    /// Per commit in flight (by index): the group heads it covers; empty when that commit is free.
    var commitCovered: [[Int]]
    static let maxCommits = 4
    /// Test hook: while set, no commit (fdatasync) is queued, so a test can watch that durable writes stay
    /// unanswered until the fdatasync that covers them has completed.
    public static let holdCommits = Atomic<Bool>(false)
    var finished: [Int] = []
    var replies: [Frame]
    let reapCapacity = 64
    let reapedData: UnsafeMutablePointer<UInt64>
    let reapedResults: UnsafeMutablePointer<Int32>

    enum Kind: UInt64 { case transfer = 1, commit, flush, poll }

    init(ring: IOUring, device: any FileBackedDevice, slots: Int, maxMerge: Int, replyPlaceholder: Frame) {
        self.ring = ring
        self.device = device
        self.maxMerge = maxMerge
        // Large but mostly untouched: only the blocks of slots that head a group are ever written.
        vectors = .allocate(capacity: slots * maxMerge)
        members = .allocate(capacity: slots * maxMerge)
        memberCount = Array(repeating: 0, count: slots)
        groupBytes = Array(repeating: 0, count: slots)
        bounceOf = Array(repeating: -1, count: slots)
        if device.bypassesPageCache {
            var memory: UnsafeMutableRawPointer? = nil
            // Pages are touched only when a buffer is first used: 4 MiB at most.
            bounce = posix_memalign(&memory, 4096, Self.bounceSize * Self.bounceCount) == 0 ? memory : nil
        } else {
            bounce = nil
        }
        freeBounce = bounce == nil ? [] : Array(0..<Self.bounceCount)
        maxGroupBytes = bounce == nil ? Int.max : Self.bounceSize
        requests = .allocate(capacity: slots)
        replies = Array(repeating: replyPlaceholder, count: slots)
        reapedData = .allocate(capacity: reapCapacity)
        reapedResults = .allocate(capacity: reapCapacity)
        heads.reserveCapacity(slots)
        sorted.reserveCapacity(slots)
        finished.reserveCapacity(slots)
        commitWaiting.reserveCapacity(slots)
        commitCovered = (0..<Self.maxCommits).map { _ in [Int]() }
        for i in commitCovered.indices { commitCovered[i].reserveCapacity(slots) }
    }

    deinit {
        vectors.deallocate()
        members.deallocate()
        requests.deallocate()
        free(bounce)
        reapedData.deallocate()
        reapedResults.deallocate()
    }

    static func userData(_ kind: Kind, _ slot: Int) -> UInt64 { kind.rawValue << 32 | UInt64(slot) }

    /// Calls `body` with each member's data area (the bytes it moves) and its offset in the group.
    func forEachMember(_ head: Int, _ body: (UnsafeMutableRawBufferPointer, Int) -> Void) {
        var offset = 0
        for i in 0..<memberCount[head] {
            let request = requests[Int(members[head * maxMerge + i])]
            let bytes = request.operation.transferRange!.count * AoELayout.sectorSize
            body(request.frame.payload(count: bytes), offset)
            offset += bytes
        }
    }
}

extension Target {
    static func makeIOQueue(configuration: TargetConfiguration, device: any BlockDevice, slots: Int, passThrough: Bool,
                            log: TargetLog) -> DeviceIOQueue? {
        // Memory-backed devices are served on the receiving thread, pass-through goes to the drive with SG_IO.
        guard configuration.ioEngine != .threads, !passThrough, !device.capabilities.neverBlocks,
              let file = device as? any FileBackedDevice else { return nil }
        do {
            // Room for every slot in flight, the commits and the socket poll, up to the kernel's limit (32 Ki).
            var entries = 1
            while entries < min(slots + DeviceIOQueue.maxCommits + 1, 32768) { entries <<= 1 }
            let ring = try IOUring(entries: entries, maxKernelWorkers: max(1, configuration.workers))
            return DeviceIOQueue(ring: ring, device: file, slots: slots, maxMerge: maxMerge,
                                 replyPlaceholder: Frame(base: UnsafeMutableRawPointer(bitPattern: 1)!, capacity: 0))
        } catch {
            log.log(configuration.ioEngine == .ioUring ? .error : .info,
                    "io_uring unavailable (\(error)); device I/O runs on \(configuration.workers) threads")
            return nil
        }
    }

    /// Whether device work is queued in io_uring.
    public var usesIOUring: Bool { ioQueue != nil }

    /// For the start-up log line: where device I/O runs.
    /// Says why, so a device served the wrong way shows in the first line.
    public var ioDescription: String {
        if device.capabilities.neverBlocks { return "I/O on the receive thread: memory-backed, never waits for a disk" }
        if ioQueue != nil { return "I/O via io_uring" }
        let why = passThrough != nil ? "SG_IO pass-through"
            : configuration.ioEngine == .threads ? "--io-engine threads" : "io_uring unavailable"
        return "I/O on \(max(1, configuration.workers)) threads (\(why))"
    }

    /// The event loop of an io_uring export; returns once `stop` is set and every request has been answered.
    func runEventLoop(_ q: DeviceIOQueue, scratch: inout BatchScratch, until stop: borrowing Atomic<Bool>) {
        var lastMTUCheck = monotonicSeconds()
        while true {
            let stopping = stop.load(ordering: .relaxed)
            if stopping && lock.withLock({ inFlight == 0 }) { return }
            // Stopping: answer what is in flight, take nothing new.
            let received = stopping ? 0 : serveBatch(&scratch, wait: false)
            let events = reapCompletions(q)
            startCommit(q)
            if received == 0 && events == 0 {
                if !q.pollArmed && !stopping {
                    queue(q) { $0.preparePollIn(fd: link.readinessDescriptor, userData: DeviceIOQueue.userData(.poll, 0)) }
                    q.pollArmed = true
                }
                let queued = q.unsubmitted
                q.unsubmitted = 0
                do { try q.ring.submitAndWait(timeout: 0.2) } catch { submitFailed(q, error, queued: queued) }
            } else if q.unsubmitted > 0 {
                let queued = q.unsubmitted
                q.unsubmitted = 0
                do { try q.ring.submit() } catch { submitFailed(q, error, queued: queued) }
            }
            checkMTU(every: 1, last: &lastMTUCheck)
        }
    }

    /// io_uring_enter failed. Short of memory or completion room (EAGAIN, EBUSY, ENOMEM, EINTR), the kernel
    /// leaves the requests in the submission queue: count, log, pause a moment and submit them on the next
    /// pass, serving on. Any other errno is a bug in how the ring is used, and traps.
    func submitFailed(_ q: DeviceIOQueue, _ error: SystemError, queued: Int) {
        switch error.errno {
        case EAGAIN, EBUSY, ENOMEM, EINTR:
            statistics.add(.ringSubmitRetries)
            log.frame(.warning, "\(error); \(queued) request(s) stay queued and are submitted again")
            q.unsubmitted = max(q.unsubmitted, max(queued, 1))
            usleepSeconds(0.001)
        default:
            fatalError("io_uring failed: \(error)")
        }
    }

    /// Moves every ready request into the ring (submitted by the event loop), adjacent frames of the same kind
    /// merged.
    func prepareReady(_ q: DeviceIOQueue) {
        q.heads.removeAll(keepingCapacity: true)
        q.sorted.removeAll(keepingCapacity: true)
        lock.withLock {
            for slot in readyQueue[readyHead...] {
                let request = pending[slot]!
                (q.requests + slot).initialize(to: request)
                q.sorted.append(DeviceIOQueue.SortEntry(key: DeviceIOQueue.sortKey(request), slot: Int32(slot)))
            }
            readyQueue.removeAll(keepingCapacity: true)
            readyHead = 0
        }
        // Initiators interleave the frames of concurrent I/Os (aoectl round-robins them): sorted by kind and
        // LBA, the frames of one I/O meet again and go to the device as one request. Every ready request was
        // admitted by the scheduler, so none overlaps a write in flight or queued: any order is safe.
        q.sorted.sort { $0.key < $1.key }
        var end: UInt64 = 0
        for entry in q.sorted {
            let slot = Int(entry.slot)
            let request = q.requests[slot]
            if case .flush = request.operation {
                q.memberCount[slot] = 1
                q.heads.append(slot)
                end = 0
                continue
            }
            let (lba, count) = request.operation.transferRange!
            let bytes = count * AoELayout.sectorSize
            if let head = q.heads.last, end != 0, lba == end, q.memberCount[head] < q.maxMerge,
               q.groupBytes[head] + bytes <= q.maxGroupBytes,
               DeviceIOQueue.sortKey(q.requests[head]) & DeviceIOQueue.kindMask == entry.key & DeviceIOQueue.kindMask {
                q.members[head * q.maxMerge + q.memberCount[head]] = entry.slot
                q.memberCount[head] += 1
                q.groupBytes[head] += bytes
            } else {
                q.members[slot * q.maxMerge] = entry.slot
                q.memberCount[slot] = 1
                q.groupBytes[slot] = bytes
                q.heads.append(slot)
            }
            end = lba + UInt64(count)
        }
        for head in q.heads {
            let first = q.requests[head]
            switch first.operation {
            case .read(let lba, _), .write(let lba, _):
                let base = head * q.maxMerge
                let write = first.operation.writesMedia
                var segments = q.memberCount[head]
                q.bounceOf[head] = -1
                if segments > 1, let bounce = q.bounce, let index = q.freeBounce.popLast() {
                    let buffer = bounce + index * DeviceIOQueue.bounceSize
                    if write {
                        q.forEachMember(head) { payload, offset in (buffer + offset).copyMemory(from: payload.baseAddress!, byteCount: payload.count) }
                    }
                    q.bounceOf[head] = index
                    q.vectors[base] = iovec(iov_base: buffer, iov_len: q.groupBytes[head])
                    segments = 1
                } else {
                    var i = 0
                    q.forEachMember(head) { payload, _ in
                        q.vectors[base + i] = iovec(iov_base: payload.baseAddress, iov_len: payload.count)
                        i += 1
                    }
                }
                queue(q) {
                    $0.prepareVectored(write: write, fd: q.device.fileDescriptor, vectors: q.vectors + base, count: segments,
                                       offset: q.device.fileOffset(of: lba), userData: DeviceIOQueue.userData(.transfer, head))
                }
            case .flush:
                queue(q) { $0.prepareDatasync(fd: q.device.fileDescriptor, userData: DeviceIOQueue.userData(.flush, head)) }
            default:
                preconditionFailure("\(first.operation) does not go through io_uring")
            }
        }
    }

    /// Prepares one request; when the submission queue is full (more ready at once than it has entries, only
    /// with a Buffer Count above 32 Ki), submits what is there first.
    func queue(_ q: DeviceIOQueue, _ prepare: (IOUring) -> Bool) {
        // A full submission queue is submitted to make room; while the kernel refuses for a moment, try again.
        var attempts = 0
        while !prepare(q.ring) {
            precondition(attempts < 10_000, "io_uring submission queue still full after 10 s of retries")
            attempts += 1
            do {
                try q.ring.submit()
                q.unsubmitted = 0
            } catch { submitFailed(q, error, queued: q.unsubmitted) }
        }
        q.unsubmitted += 1
    }

    /// Takes the completions that are ready: finishes requests (durable writes after the fdatasync that covers
    /// them), releases their LBA ranges, prepares what that made ready, and sends the replies in batches.
    /// Returns the number of completions (the socket poll included).
    func reapCompletions(_ q: DeviceIOQueue) -> Int {
        let reaped = q.ring.reapReady(userData: q.reapedData, results: q.reapedResults, capacity: q.reapCapacity)
        if reaped == 0 { return 0 }
        q.finished.removeAll(keepingCapacity: true)
        for i in 0..<reaped {
            let data = q.reapedData[i], result = q.reapedResults[i]
            let slot = Int(data & 0xFFFF_FFFF)
            switch DeviceIOQueue.Kind(rawValue: data >> 32) {
            case .transfer:
                completeTransfer(q, head: slot, result: result)
            case .commit:
                Syscall.fdatasyncCalls.add(1, ordering: .relaxed)   // counted done, not queued
                let failure = result < 0 ? DeviceError(SystemError(call: "fdatasync", errno: -result, context: device.name)) : nil
                if let failure {
                    statistics.add(.deviceErrors)
                    log.frame(.error, "fdatasync covering \(q.commitCovered[slot].count) write(s) failed: \(failure); replying ABRT")
                }
                for head in q.commitCovered[slot] { finishGroup(q, head: head, succeeded: failure == nil) }
                q.commitCovered[slot].removeAll(keepingCapacity: true)
            case .flush:
                Syscall.fdatasyncCalls.add(1, ordering: .relaxed)
                finishFlush(&q.requests[slot], failure: result < 0 ? DeviceError(SystemError(call: "fdatasync", errno: -result, context: device.name)) : nil)
                q.replies[q.finished.count] = q.requests[slot].frame
                q.finished.append(slot)
            case .poll:
                q.pollArmed = false
            case nil:
                preconditionFailure("unknown io_uring user data \(data)")
            }
        }
        startCommit(q)
        let count = q.finished.count
        if count == 0 { return reaped }
        var readied = false
        lock.withLock {
            for slot in q.finished {
                let nowReady = scheduler.finish(id: slot)
                if !nowReady.isEmpty {
                    readyQueue.append(contentsOf: nowReady)
                    readied = true
                }
                pending[slot] = nil
                (q.requests + slot).deinitialize(count: 1)
            }
            inFlight -= count
        }
        if readied { prepareReady(q) }
        sendBatch(q.replies, count: count)
        lock.withLock { freeSlots.append(contentsOf: q.finished) }
        return reaped
    }

    /// Queues an fdatasync for the durable writes waiting for one, when a commit slot is free. Called after each
    /// reap and on every pass of the loop (a held commit starts once it is let go).
    func startCommit(_ q: DeviceIOQueue) {
        guard !q.commitWaiting.isEmpty, !DeviceIOQueue.holdCommits.load(ordering: .relaxed),
              let free = q.commitCovered.firstIndex(where: \.isEmpty) else { return }
        swap(&q.commitWaiting, &q.commitCovered[free])
        queue(q) { $0.prepareDatasync(fd: q.device.fileDescriptor, userData: DeviceIOQueue.userData(.commit, free)) }
    }

    /// A readv/writev of one group completed: short transfers are finished synchronously, durable writes wait
    /// for the next commit, everything else is answered.
    private func completeTransfer(_ q: DeviceIOQueue, head: Int, result: Int32) {
        let n = q.memberCount[head]
        let first = q.requests[head]
        let write = first.operation.writesMedia
        let bytes = q.groupBytes[head]
        let lba = first.operation.transferRange!.lba
        var failure: DeviceError? = nil
        if result < 0 {
            failure = DeviceError(SystemError(call: write ? "pwritev" : "preadv", errno: -result,
                                              context: "\(device.name) at byte \(q.device.fileOffset(of: lba))"))
        } else if Int(result) < bytes {
            // A short transfer (a signal, the end of a file that shrank): redo it the blocking way, straight
            // between the frames and the device, which finishes or reports why not.
            var buffers: [UnsafeMutableRawBufferPointer] = []
            q.forEachMember(head) { payload, _ in buffers.append(payload) }
            do throws(DeviceError) {
                try buffers.withUnsafeBufferPointer { (b) throws(DeviceError) in
                    if write { try device.write(from: b, at: lba) } else { try device.read(into: b, at: lba) }
                }
            } catch { failure = error }
        } else if !write, q.bounceOf[head] >= 0 {
            let buffer = q.bounce! + q.bounceOf[head] * DeviceIOQueue.bounceSize
            q.forEachMember(head) { payload, offset in payload.copyMemory(from: UnsafeRawBufferPointer(start: buffer + offset, count: payload.count)) }
        }
        if q.bounceOf[head] >= 0 {
            let index = q.bounceOf[head]
            q.bounceOf[head] = -1
            q.freeBounce.append(index)
        }
        countTransfer(first, requests: n, bytes: bytes, failure: failure)
        if failure == nil && write && first.durable {
            q.commitWaiting.append(head)
            return
        }
        finishGroup(q, head: head, succeeded: failure == nil)
    }

    private func finishGroup(_ q: DeviceIOQueue, head: Int, succeeded: Bool) {
        let base = head * q.maxMerge
        for i in 0..<q.memberCount[head] {
            let slot = Int(q.members[base + i])
            finishTransfer(&q.requests[slot], succeeded: succeeded)
            q.replies[q.finished.count] = q.requests[slot].frame
            q.finished.append(slot)
        }
    }
}
