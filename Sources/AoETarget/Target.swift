import Glibc
import AoEWire
import ATACore
import BlockDevices
import LinuxSystem
import PacketTransport
import Synchronization

/// Serves one export on one link (a `LinkGroup` when it has several NICs), all on one thread: an event loop
/// receives frames in batches, parses each in place, answers control commands and errors at once, submits
/// device work to the export's `DeviceQueue` (adjacent requests merged into one transfer), reaps what
/// completed, and sends the replies in batches (sendmmsg). Device I/O reads into, and writes from, the frame's
/// own slot: read data lands in the reply frame, write data goes to the device from the request frame.
public final class Target: @unchecked Sendable {
    public let configuration: TargetConfiguration
    public let device: any BlockDevice
    public let link: any FrameLink
    public let statistics: TargetStatistics
    public let metrics: ExportMetrics
    /// Several NICs: frames are counted per NIC too.
    private let countsByInterface: Bool
    /// Per-request latency and bytes (`TargetConfiguration.recordsMetrics`).
    private let recordsMetrics: Bool
    public let log: TargetLog
    /// Config string, mask, reservation, write cache: saved on change.
    public let state: ExportState
    /// Where device work runs: io_uring, inline, or worker threads.
    let queue: any DeviceQueue

    /// The IDENTIFY page with the write cache off and on, built once: an IDENTIFY (answered to anyone, even
    /// while reserved) costs one copy into the reply, no allocation.
    @exclusivity(unchecked) private var identifyPages: (cacheOff: [UInt8], cacheOn: [UInt8])
    /// What the pages say; rebuilt when the device is resized.
    @exclusivity(unchecked) private var identifyParameters: IdentifyParameters
    private let pool: FramePool
    private let batch: Int
    /// Set when every ATA command goes to a real drive as sent.
    let passThrough: (device: any ATAPassThroughDevice, policy: PassThroughPolicy)?

    // Event loop state: one thread (the loop's) reads and writes it, so Swift's dynamic exclusivity checks on
    // these properties can never fire; they cost 2 % of the CPU per frame (measured), hence `unchecked`.
    @exclusivity(unchecked) var scheduler = RequestScheduler()
    @exclusivity(unchecked) var freeSlots: [Int]
    /// By slot: the request it holds while in flight (stale otherwise). Pointers, not arrays, for the per-slot
    /// tables the loop touches several times per frame: no exclusivity check or uniqueness test per access.
    let pending: UnsafeMutablePointer<PendingRequest>
    /// Admitted requests not yet submitted.
    @exclusivity(unchecked) var readyQueue: [Int] = []
    /// Requests received and not yet answered.
    @exclusivity(unchecked) var inFlight = 0
    /// Per transfer (by the slot of its first request): its requests' slots and their data segments.
    private let members: UnsafeMutablePointer<Int32>
    private let segments: UnsafeMutablePointer<iovec>
    private let memberCount: UnsafeMutablePointer<Int>
    private let transferBytes: UnsafeMutablePointer<Int>
    /// Per slot: the ranges of a TRIM it holds, decoded from its range entries for the device.
    private let trimRanges: UnsafeMutablePointer<SectorRange>
    private let trimRangeCount: UnsafeMutablePointer<Int>
    @exclusivity(unchecked) private var candidates: [MergeRule.Candidate] = []
    @exclusivity(unchecked) private var runs: [Int] = []
    @exclusivity(unchecked) private var commits: GroupCommit
    /// Requests answered in the current reap, and their reply frames.
    @exclusivity(unchecked) private var finished: [Int] = []
    @exclusivity(unchecked) private var replies: [Frame]
    /// Tokens past the slots: the commits, then the final flush.
    private let commitToken: Int
    @exclusivity(unchecked) private var finalFlush: DeviceCompletion?

    /// Test hook: while set, no commit (flush) is queued, so a test can watch that durable writes stay
    /// unanswered until the flush that covers them has completed.
    public static let holdCommits = Atomic<Bool>(false)

    /// Whether this host answers for the export. A failover export waits as a standby while another host holds
    /// its image's lock; one whose device reported that another host owns it now is fenced. Only an active
    /// export sends anything for its shelf.slot: a standby that answered Query Config would become a target the
    /// Linux initiator sends writes to.
    public enum Role: UInt8, Sendable, CustomStringConvertible {
        case active, standby, fenced
        public var description: String {
            switch self {
            case .active: "active"
            case .standby: "standby"
            case .fenced: "fenced"
            }
        }
    }

    private let roleValue: Atomic<UInt8>
    public var role: Role { Role(rawValue: roleValue.load(ordering: .acquiring))! }
    /// Unsolicited Config replies still to broadcast (a takeover repeats its announcement).
    private let announcementsDue = Atomic<Int>(0)
    static let takeoverAnnouncements = 3

    /// Standby to active, once this host holds the lock: answers from the next frame on, and announces the
    /// export a few times so initiators add this host as a target and retransmit to it.
    public func becomeActive() {
        guard roleValue.compareExchange(expected: Role.standby.rawValue, desired: Role.active.rawValue, ordering: .acquiringAndReleasing).exchanged else { return }
        announcementsDue.store(Self.takeoverAnnouncements, ordering: .releasing)
    }

    /// IDENTIFY offers DATA SET MANAGEMENT TRIM (read per ATA frame, so kept apart from the IDENTIFY parameters).
    public let offersTrim: Bool
    private let mtu: Atomic<Int>
    /// Settings a reload changes while the export serves (the event loop reads them per frame).
    private let liveBufferCount: Atomic<Int>
    private let forcedReadOnly = Atomic<Bool>(false)
    static let liveBufferCountLimit = 256

    // Metrics (event loop only): when the current batch arrived, what the last ATA reply built was, and for
    // the replies of a reap, their operation and bytes.
    @exclusivity(unchecked) private var batchReceivedAt: UInt64 = 0
    @exclusivity(unchecked) private var replyOperation: ExportMetrics.Operation?
    @exclusivity(unchecked) private var replyBytes = 0
    private let finishedOperations: UnsafeMutablePointer<ExportMetrics.Operation?>
    private let finishedBytes: UnsafeMutablePointer<Int>
    /// By token: when a flush was submitted.
    private let flushSubmittedAt: UnsafeMutablePointer<UInt64>
    private let retransmits = RetransmitDetector()
    private let inFlightIndex = InFlightIndex()
    /// A device another host can take over, checked after a stall.
    private let ownedDevice: (any ExclusivelyOwnedDevice)?
    /// A device whose size can change while served.
    private let resizable: (any ResizableDevice)?
    @exclusivity(unchecked) private var lastAwake: UInt64 = 0

    struct PendingRequest {
        var frame: Frame
        var header: AoEHeader
        var ata: ATAHeader
        var operation: ATAOperation
        var durable: Bool
        var receivedAt: UInt64
        /// For reads and writes: its entry in `inFlightIndex` (nil: not indexed).
        var key: RequestKey? = nil
    }

    /// - Parameter passThroughPolicy: with an `ATAPassThroughDevice`, send every ATA command to the drive as
    ///   the initiator sent it, filtered by this policy.
    /// - Parameter state: the export's protocol state, shared by all its ports; nil: a fresh one from
    ///   `configuration`, kept in memory.
    /// - Parameter role: `.standby` for a failover export whose lock another host holds: silent until `becomeActive`.
    public init(configuration: TargetConfiguration, device: any BlockDevice, link: any FrameLink, log: TargetLog,
                passThroughPolicy: PassThroughPolicy? = nil, state: ExportState? = nil, role: Role = .active) {
        roleValue = Atomic(role.rawValue)
        countsByInterface = link.portCount > 1
        recordsMetrics = configuration.recordsMetrics
        metrics = ExportMetrics(interfaces: link.portCount > 1 ? (0..<link.portCount).map { link.interfaceName(port: UInt8($0)) } : [])
        ownedDevice = device as? any ExclusivelyOwnedDevice
        precondition(TargetConfiguration.bufferCountRange.contains(configuration.bufferCount))
        precondition(configuration.address.isValidTargetAddress)
        self.configuration = configuration
        self.device = device
        self.link = link
        self.log = log
        let statistics = TargetStatistics()
        self.statistics = statistics
        batch = 32
        let linkMTU = link.currentMTU()
        mtu = Atomic(linkMTU)
        liveBufferCount = Atomic(configuration.bufferCount)
        // Slots: up to Buffer Count requests in flight, one receive batch, and the announcement. A reply
        // leaves before its slot is free again, within the pass that completed it.
        // Room for a reload to raise the Buffer Count to 256 without reopening the export (slots are mapped,
        // not touched, until used).
        pool = FramePool(slots: max(configuration.bufferCount, Self.liveBufferCountLimit) + batch + 1,
                         frameCapacity: max(linkMTU, 9000) + AoELayout.ethernetHeaderSize,
                         startInPage: Self.frameStartInPage(dataAlignment: device.capabilities.bufferAlignment))
        let slots = pool.slotCount
        freeSlots = Array((0..<slots).reversed())
        pending = .allocate(capacity: slots)
        pending.initialize(repeating: PendingRequest(
            frame: pool.frame(0), header: AoEHeader(destination: .broadcast, source: .broadcast, address: configuration.address,
                                                    command: .issueATA, tag: Tag(rawValue: 0)),
            ata: ATAHeader(flags: [], errFeature: 0, sectorCount: 0, cmdStatus: 0, lba: 0), operation: .flush, durable: false,
            receivedAt: 0),
            count: slots)
        finishedOperations = .allocate(capacity: slots)
        finishedOperations.initialize(repeating: nil, count: slots)
        finishedBytes = .allocate(capacity: slots)
        finishedBytes.initialize(repeating: 0, count: slots)
        let tokens = slots + GroupCommit.maxCommits + 1
        flushSubmittedAt = .allocate(capacity: tokens)
        flushSubmittedAt.initialize(repeating: 0, count: tokens)
        readyQueue.reserveCapacity(slots)
        // Large but mostly untouched: only the blocks of slots that head a transfer are ever written.
        members = .allocate(capacity: slots * Self.maxMerge)
        segments = .allocate(capacity: slots * Self.maxMerge)
        memberCount = .allocate(capacity: slots)
        memberCount.initialize(repeating: 0, count: slots)
        transferBytes = .allocate(capacity: slots)
        transferBytes.initialize(repeating: 0, count: slots)
        // Mapped, not touched, until a TRIM uses a slot's block of ranges.
        trimRanges = .allocate(capacity: slots * Self.maxTrimRanges)
        trimRangeCount = .allocate(capacity: slots)
        trimRangeCount.initialize(repeating: 0, count: slots)
        candidates.reserveCapacity(slots)
        runs.reserveCapacity(slots)
        commits = GroupCommit(capacity: slots)
        finished.reserveCapacity(slots)
        replies = Array(repeating: Frame(base: UnsafeMutableRawPointer(bitPattern: 1)!, capacity: 0), count: slots)
        commitToken = slots
        self.state = state ?? ExportState(initial: ExportProtocolState(configuration: configuration),
                                          durableExport: configuration.durableWrites)
        if let passThroughPolicy, let drive = device as? any ATAPassThroughDevice {
            passThrough = (drive, passThroughPolicy)
        } else {
            precondition(passThroughPolicy == nil, "pass-through needs a device that supports it")
            passThrough = nil
        }
        let engine = Self.makeDeviceQueue(configuration: configuration, device: device,
                                          tokens: tokens, passThrough: passThrough != nil,
                                          log: log, statistics: statistics)
        queue = configuration.faultPlan.map { FaultInjectingDeviceQueue(engine, plan: $0) } ?? engine
        identifyParameters = IdentifyParameters(
            sectors: device.sectorCount, model: configuration.model,
            serial: configuration.serial ?? Self.serial(for: device.identity),
            firmware: configuration.firmware,
            writeCacheSupported: device.capabilities.writable, writeCacheEnabled: false,
            flushSupported: device.capabilities.canFlush,
            trim: Self.trimSupport(configuration, device))
        identifyPages = Self.identifyPages(identifyParameters)
        offersTrim = identifyParameters.trim != nil
        resizable = device as? any ResizableDevice
    }

    /// What IDENTIFY says of TRIM: offered when the device can discard and the export allows it.
    static func trimSupport(_ configuration: TargetConfiguration, _ device: any BlockDevice) -> TrimReadBack? {
        guard configuration.trim, let discard = device.capabilities.discard else { return nil }
        return discard == .zeros ? .zeros : .deterministic
    }

    /// The IDENTIFY page with the write cache off and on.
    static func identifyPages(_ parameters: IdentifyParameters) -> (cacheOff: [UInt8], cacheOn: [UInt8]) {
        var p = parameters
        p.writeCacheEnabled = false
        let off = IdentifyPage(p).bytes
        p.writeCacheEnabled = p.writeCacheSupported
        return (off, IdentifyPage(p).bytes)
    }

    /// The device changed size (checked once a second): IDENTIFY says so from now on, requests are checked
    /// against the new end, and an announcement makes initiators that are not using the device read IDENTIFY
    /// again (the Linux initiator does; one with the device open needs `aoe-revalidate`).
    func takeResize() {
        guard let resizable, resizable.refreshSize() else { return }
        let before = identifyParameters.sectors
        identifyParameters.sectors = device.sectorCount
        identifyPages = Self.identifyPages(identifyParameters)
        log.log(.warning, "\(device.name) resized from \(before) to \(device.sectorCount) sectors; announcing the new size")
        if role == .active { announcementsDue.store(1, ordering: .releasing) }
    }

    deinit {
        pending.deinitialize(count: pool.slotCount)
        pending.deallocate()
        memberCount.deallocate()
        transferBytes.deallocate()
        trimRanges.deallocate()
        trimRangeCount.deallocate()
        finishedOperations.deallocate()
        finishedBytes.deallocate()
        flushSubmittedAt.deallocate()
        members.deallocate()
        segments.deallocate()
    }

    /// Pass-through goes to the drive with SG_IO on threads; memory-backed devices run inline; a device with a
    /// queue of its own (RBD) uses it; files and block devices go through io_uring unless told otherwise or the
    /// kernel refuses it.
    static func makeDeviceQueue(configuration: TargetConfiguration, device: any BlockDevice, tokens: Int, passThrough: Bool,
                                log: TargetLog, statistics: TargetStatistics) -> any DeviceQueue {
        let workers = configuration.workers
        if passThrough { return ThreadDeviceQueue(device: device, tokenCapacity: tokens, workers: workers, why: "SG_IO pass-through") }
        if device.capabilities.neverBlocks { return InlineDeviceQueue(device: device, tokenCapacity: tokens) }
        if let queued = device as? any QueuedBlockDevice {
            do { return try queued.makeQueue(tokenCapacity: tokens) } catch {
                log.log(.error, "\(device.name): its own queue is unavailable (\(error)); device I/O runs on \(max(1, workers)) threads")
                return ThreadDeviceQueue(device: device, tokenCapacity: tokens, workers: workers, why: "\(device.name): no queue of its own")
            }
        }
        if configuration.ioEngine == .threads {
            return ThreadDeviceQueue(device: device, tokenCapacity: tokens, workers: workers, why: "--io-engine threads")
        }
        guard let file = device as? any FileBackedDevice else {
            return ThreadDeviceQueue(device: device, tokenCapacity: tokens, workers: workers, why: "not a file")
        }
        do {
            return try IOUringDeviceQueue(device: file, tokenCapacity: tokens, kernelWorkers: workers) { error, queued in
                statistics.add(.ringSubmitRetries)
                log.frame(.submitRetry, .warning, "\(error); \(queued) request(s) stay queued and are submitted again")
            }
        } catch {
            log.log(configuration.ioEngine == .ioUring ? .error : .info,
                    "io_uring unavailable (\(error)); device I/O runs on \(max(1, workers)) threads")
            return ThreadDeviceQueue(device: device, tokenCapacity: tokens, workers: workers, why: "io_uring unavailable")
        }
    }

    // MARK: - Settings changed while serving

    /// The Buffer Count advertised and enforced now.
    public var bufferCount: Int { liveBufferCount.load(ordering: .relaxed) }
    /// The largest Buffer Count this export can take without being reopened (its frame slots).
    public var bufferCountCapacity: Int { pool.slotCount - batch - 1 }

    /// A new Buffer Count, from the next frame on (requests in flight beyond it finish normally); false when
    /// it is beyond this export's frame slots.
    public func setBufferCount(_ count: Int) -> Bool {
        guard TargetConfiguration.bufferCountRange.contains(count), count <= bufferCountCapacity else { return false }
        liveBufferCount.store(count, ordering: .relaxed)
        return true
    }

    /// Refuses writes from the next frame on (ABRT), or lets them through again; false when writes are asked
    /// for on a device opened read-only (that needs it opened again).
    public func setReadOnly(_ readOnly: Bool) -> Bool {
        guard readOnly || device.capabilities.writable else { return false }
        forcedReadOnly.store(readOnly, ordering: .relaxed)
        return true
    }

    public var isReadOnly: Bool { !device.capabilities.writable || forcedReadOnly.load(ordering: .relaxed) }

    /// Whether device work is queued in io_uring.
    public var usesIOUring: Bool { queue.engine is IOUringDeviceQueue }

    /// For the start-up log line: where device I/O runs, and why, so a device served the wrong way shows in
    /// the first line.
    public var ioDescription: String { queue.engineDescription }

    /// Where each frame starts in its page. The data area (36 bytes in) must meet the device's O_DIRECT
    /// alignment, so read data can land in the reply frame; it sits at 512 bytes into the page when that is
    /// enough. Page-aligned data would put the frame's start 36 bytes before a page boundary, where the kernel's
    /// `rep movsb` copy between the frame and the socket buffer runs many times slower (source and destination
    /// 1-31 bytes apart modulo 4 KiB): measured, null-device 4 KiB reads cost 30 % more CPU there.
    static func frameStartInPage(dataAlignment: Int) -> Int {
        let dataOffset = max(512, dataAlignment) % FramePool.pageSize
        return (dataOffset - AoELayout.ataHeaderSize + FramePool.pageSize) % FramePool.pageSize
    }

    /// A 20-character serial that stays the same for the same image (FNV-1a of its identity).
    static func serial(for identity: String) -> String {
        let hex = String(fnv1a64(identity), radix: 16, uppercase: true)
        return "AOE" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    // MARK: - Derived limits

    /// Sectors one command may move: device cap, frame slot, and what fits the interface MTU now.
    var maxSectors: Int {
        min(configuration.maxSectorsPerCommand, (pool.frameCapacity - AoELayout.ataHeaderSize) / AoELayout.sectorSize,
            AoELayout.sectorsPerFrame(mtu: mtu.load(ordering: .relaxed)))
    }

    var capabilities: ExportCapabilities {
        ExportCapabilities(sectors: device.sectorCount, writable: device.capabilities.writable && !forcedReadOnly.load(ordering: .relaxed),
                           canFlush: device.capabilities.canFlush, maxSectorsPerCommand: maxSectors,
                           canTrim: offersTrim)
    }

    /// Re-reads the MTU; logs and counts a change.
    public func refreshMTU() {
        let now = link.currentMTU()
        let before = mtu.exchange(now, ordering: .relaxed)
        if before != now {
            statistics.add(.mtuChanges)
            log.log(.info, "\(link.interfaceName): MTU changed from \(before) to \(now); \(maxSectors) sectors per frame")
        }
    }

    // MARK: - Running

    /// Announces the export and serves until `stop` becomes true; then answers the requests in flight, flushes
    /// the device, and returns.
    public func run(until stop: borrowing Atomic<Bool>) {
        var scratch = makeBatchScratch()
        if role == .active { announce() }
        var lastSecond = monotonicSeconds()
        var nextAnnouncement = 0.0
        while true {
            let stopping = stop.load(ordering: .relaxed)
            if stopping && inFlight == 0 { break }
            runPass(&scratch, stopping: stopping)
            everySecond(last: &lastSecond)
            announceIfDue(next: &nextAnnouncement)
        }
        drain()
    }

    /// One pass of the event loop: receive a batch and hand its device work to the queue, reap completions
    /// and answer them, queue a commit for the durable writes that wait, and push it all to the device in one
    /// call. With nothing in the device queue, only frames can wake us: the receive itself waits for them (one
    /// system call per batch, as a blocking loop). Otherwise, with nothing received and nothing completed, it
    /// sleeps until frames arrive or a request completes. Stopping: answers what is in flight, takes nothing new.
    /// Returns the frames received and requests completed.
    @discardableResult
    func runPass(_ scratch: inout BatchScratch, stopping: Bool, mayWait: Bool = true) -> Int {
        let received = stopping ? 0 : serveBatch(&scratch, wait: mayWait && queue.outstanding == 0)
        let completed = reapCompletions()
        startCommit()
        if received == 0 && completed == 0 && mayWait {
            if queue.outstanding > 0 {
                queue.wait(readable: stopping ? nil : link.readinessDescriptor, timeout: 0.2)
            } else if stopping {
                usleepSeconds(0.001)   // what is left waits for a held commit (a test hook)
            }
        }
        queue.push()
        if recordsMetrics { metrics.requestsInFlight.store(inFlight, ordering: .relaxed) }
        return received + completed
    }

    /// The receive thread's scratch; one per thread that calls `serveBatch`.
    func makeBatchScratch() -> BatchScratch { BatchScratch(batch: batch, placeholder: pool.frame(0)) }

    /// The receiving thread's frames: one receive batch and the replies it sends at once.
    struct BatchScratch {
        var rxFrames: [Frame]
        var rxSlots: [Int]
        var txFrames: [Frame]
        var txSlots: [Int]
        /// Per reply: the ATA operation it answers (nil: not an ATA command) and the data it moved.
        var txOperations: [ExportMetrics.Operation?]
        var txBytes: [Int]
        var txCount = 0
        init(batch: Int, placeholder: Frame) {
            rxFrames = Array(repeating: placeholder, count: batch)
            rxSlots = Array(repeating: 0, count: batch)
            txFrames = rxFrames
            txSlots = rxSlots
            txOperations = Array(repeating: nil, count: batch)
            txBytes = rxSlots
        }

        mutating func reply(_ i: Int, operation: ExportMetrics.Operation?, bytes: Int) {
            txFrames[txCount] = rxFrames[i]
            txSlots[txCount] = rxSlots[i]
            txOperations[txCount] = operation
            txBytes[txCount] = bytes
            txCount += 1
            rxSlots[i] = -1
        }
    }

    /// After a takeover: one of its announcements, a quarter of a second apart.
    func announceIfDue(next: inout Double) {
        guard announcementsDue.load(ordering: .acquiring) > 0 else { return }
        let now = monotonicSeconds()
        guard now >= next, role == .active else { return }
        next = now + 0.25
        announcementsDue.subtract(1, ordering: .relaxed)
        announce()
    }

    /// Once a second: re-reads the MTU, takes in a resize of the device, and reports the log lines left out in the
    /// last window.
    func everySecond(last: inout Double) {
        let now = monotonicSeconds()
        if now - last >= 1 {
            last = now
            refreshMTU()
            log.reportSuppressed()
            takeResize()
        }
    }

    /// Receives one batch (waiting a bounded time for its first frame, or not at all), handles every frame,
    /// sends the replies that are ready at once in one batch, and submits device work. Returns the number of
    /// frames received.
    func serveBatch(_ s: inout BatchScratch, wait: Bool) -> Int {
        // The pool is sized so a full batch is always free; taking only what is free keeps that a
        // performance matter, never a crash.
        let taken = min(batch, freeSlots.count)
        if taken == 0 {
            // Never expected (the pool has a batch beyond every request that can be in flight): counted and
            // logged, so a leak of slots shows instead of looking like a silent target.
            statistics.add(.receiveStalledNoSlots)
            log.frame(.receiveError, .error, "no free frame slot to receive into (\(inFlight) requests in flight); not receiving")
            usleepSeconds(0.001)
            return 0
        }
        for i in 0..<taken {
            s.rxSlots[i] = freeSlots.removeLast()
            s.rxFrames[i] = pool.frame(s.rxSlots[i])
        }
        for i in taken..<batch { s.rxSlots[i] = -1 }
        var received: Int
        do {
            received = try s.rxFrames.withUnsafeMutableBufferPointer { frames throws(SystemError) in
                let window = UnsafeMutableBufferPointer(rebasing: frames[0..<taken])
                return wait ? try link.receive(window) : try link.receiveWithoutWaiting(window)
            }
        } catch {
            statistics.add(.receiveErrors)
            log.frame(.receiveError, .warning, "receive on \(link.interfaceName): \(error)")
            usleepSeconds(0.05)
            received = 0
        }
        statistics.add(.framesReceived, received)
        if countsByInterface { for i in 0..<received { metrics.framesReceivedByInterface[Int(s.rxFrames[i].port)].bump(1) } }
        if received > 0 { batchReceivedAt = monotonicNanoseconds() }
        if ownedDevice != nil { confirmOwnershipAfterStall() }

        s.txCount = 0
        for i in 0..<received {
            replyOperation = nil
            switch handle(&s.rxFrames[i], slot: s.rxSlots[i]) {
            case .reply:
                s.reply(i, operation: replyOperation, bytes: replyBytes)
            case .queued:
                s.rxSlots[i] = -1
            case .dropped:
                break
            }
        }
        // Submitted once the whole batch is in, so adjacent frames are merged.
        if !readyQueue.isEmpty { submitReady() }
        let txCount = s.txCount
        if txCount > 0 { sendBatch(s.txFrames, count: txCount) }
        if txCount > 0 && recordsMetrics {
            let elapsed = monotonicNanoseconds() &- batchReceivedAt
            for i in 0..<txCount {
                if let operation = s.txOperations[i] { metrics.answered(operation, bytes: s.txBytes[i], nanoseconds: elapsed) }
            }
        }
        for i in 0..<batch where s.rxSlots[i] >= 0 { freeSlots.append(s.rxSlots[i]) }
        for i in 0..<txCount { freeSlots.append(s.txSlots[i]) }
        return received
    }

    func sendBatch(_ frames: [Frame], count: Int) {
        var sent = 0
        while sent < count {
            do {
                let n = try link.send(frames, range: sent..<count)
                if n == 0 { break }
                if countsByInterface { for i in sent..<(sent + n) { metrics.framesSentByInterface[Int(frames[i].port)].bump(1) } }
                sent += n
            } catch {
                // ENOBUFS, ENETDOWN, EMSGSIZE after an MTU drop: count, skip that frame, keep serving.
                statistics.add(.sendErrors)
                log.frame(.sendError, .warning, "send on \(link.interfaceName): \(error)")
                if error.errno == EMSGSIZE { refreshMTU() }
                sent += 1
            }
        }
        statistics.add(.framesSent, min(sent, count))
    }

    private func sendOne(_ frame: Frame) {
        do {
            try link.sendOne(frame)
            statistics.add(.framesSent)
            if countsByInterface { metrics.framesSentByInterface[Int(frame.port)].bump(1) }
        } catch {
            statistics.add(.sendErrors)
            log.frame(.sendError, .warning, "send on \(link.interfaceName): \(error)")
            if error.errno == EMSGSIZE { refreshMTU() }
        }
    }

    /// One unsolicited Config reply to the broadcast address, so initiators that are already up find us.
    public func announce() {
        let slot = freeSlots.removeLast()
        var frame = pool.frame(slot)
        // On every port, from that port's address: the Linux initiator learns each NIC as a path to the export.
        for port in 0..<link.portCount {
            frame.port = UInt8(port)
            let header = AoEHeader(destination: .broadcast, source: link.macAddress(port: frame.port), flags: .response,
                                   address: configuration.address, command: .queryConfig, tag: Tag(rawValue: 0))
            header.write(to: frame.buffer)
            frame.length = configReply(command: .read).write(to: frame.buffer)
            frame.padToMinimum()
            sendOne(frame)
        }
        freeSlots.append(slot)
    }

    // MARK: - Per-frame handling (receive thread)

    enum Disposition { case reply, queued, dropped }

    func handle(_ frame: inout Frame, slot: Int) -> Disposition {
        let bytes = frame.bytes
        guard let header = try? AoEHeader(parsing: bytes) else {
            statistics.add(.droppedTruncated)
            return .dropped
        }
        // A standby or fenced export sends nothing for its shelf.slot.
        guard roleValue.load(ordering: .relaxed) == Role.active.rawValue else {
            statistics.add(.droppedNotActive)
            return .dropped
        }
        // AF_PACKET also hands us frames for other hosts (promiscuous NICs, bridges): answer only ours.
        guard header.destination == link.macAddress(port: frame.port) || header.destination.isBroadcast else {
            statistics.add(.droppedNotForUs)
            return .dropped
        }
        // A reply to a group address would go to every host on the segment: no real initiator sends from one.
        guard !header.source.isMulticast else {
            statistics.add(.droppedBadSource)
            return .dropped
        }
        guard !header.flags.contains(.response) else {
            statistics.add(.droppedResponse)
            return .dropped
        }
        guard configuration.address.accepts(header.address) else {
            statistics.add(.droppedOtherAddress)
            return .dropped
        }
        // One look at the access state per frame: the mask, and whether a reservation shuts this source out.
        let admission = state.admission(of: header.source)
        guard admission.maskAdmits else {
            statistics.add(.droppedMasked)
            return .dropped
        }
        guard header.version == AoELayout.version else {
            return replyError(&frame, header, .unsupportedVersion)
        }
        switch header.command {
        case .issueATA: return handleATA(&frame, header, slot: slot, admission: admission)
        case .queryConfig: return handleConfig(&frame, header)
        case .macMaskList: return handleMask(&frame, header)
        case .reserveRelease: return handleReserve(&frame, header)
        default: return replyError(&frame, header, .unrecognizedCommand)
        }
    }

    /// A transition of the export's state, saved before the reply; nil (drop the request unanswered, so the
    /// initiator retries) when the change could not be saved.
    private func changeState<R>(_ header: AoEHeader, _ transition: (inout ExportProtocolState) -> R) -> R? {
        do { return try state.update(transition) } catch {
            statistics.add(.stateSaveErrors)
            log.frame(.stateSaveError, .error, "\(header.command): \(error); not applied, request dropped", peer: header.source, tag: header.tag)
            return nil
        }
    }

    /// An AoE error reply: the request's argument echoed (up to the 60-byte minimum) with E set.
    private func replyError(_ frame: inout Frame, _ header: AoEHeader, _ error: AoEError) -> Disposition {
        statistics.add(.aoeErrorsSent)
        metrics.aoeError(error)
        log.frame(.aoeError, .info, "\(header.command): AoE error \(error.rawValue) (\(error))", peer: header.source, tag: header.tag)
        header.reply(from: link.macAddress(port: frame.port), address: configuration.address, error: error).write(to: frame.buffer)
        frame.length = min(frame.length, AoELayout.minimumFrameSize)
        frame.padToMinimum()
        return .reply
    }

    private func handleConfig(_ frame: inout Frame, _ header: AoEHeader) -> Disposition {
        let request: ConfigArg
        do { request = try ConfigArg(parsing: frame.bytes) } catch {
            return replyError(&frame, header, .badArgument)
        }
        // The MTU is re-read once a second by the run loop (and at once on EMSGSIZE), never per frame: any
        // host could otherwise make the target issue syscalls at its own rate.
        guard let outcome = changeState(header, { $0.configString.handle(request.command, argument: request.configString) }) else {
            return .dropped
        }
        switch outcome {
        case .silence:
            statistics.add(.droppedConfigNoMatch)
            return .dropped
        case .error(let error):
            return replyError(&frame, header, error)
        case .reply:
            header.reply(from: link.macAddress(port: frame.port), address: configuration.address).write(to: frame.buffer)
            frame.length = configReply(command: request.command).write(to: frame.buffer)
            frame.padToMinimum()
            return .reply
        }
    }

    private func configReply(command: ConfigCommand) -> ConfigArg {
        ConfigArg(bufferCount: UInt16(bufferCount), firmwareVersion: configuration.firmwareVersion,
                  sectorCount: UInt8(clamping: maxSectors), aoeVersion: AoELayout.version, command: command,
                  configString: state.configString)
    }

    private func handleMask(_ frame: inout Frame, _ header: AoEHeader) -> Disposition {
        let request: MaskListArg
        do { request = try MaskListArg(parsing: frame.bytes) } catch {
            return replyError(&frame, header, .badArgument)
        }
        guard let outcome = changeState(header, { $0.access.handleMask(request) }) else { return .dropped }
        switch outcome {
        case .error(let error):
            return replyError(&frame, header, error)
        case .reply(let reply):
            if request.command == .edit {
                log.frame(.maskEdit, .info, "MAC mask list edited: \(reply.directives.count) entries", peer: header.source)
            }
            header.reply(from: link.macAddress(port: frame.port), address: configuration.address).write(to: frame.buffer)
            frame.length = reply.write(to: frame.buffer)
            frame.padToMinimum()
            return .reply
        }
    }

    private func handleReserve(_ frame: inout Frame, _ header: AoEHeader) -> Disposition {
        let request: ReserveArg
        do { request = try ReserveArg(parsing: frame.bytes) } catch {
            return replyError(&frame, header, .badArgument)
        }
        let maxLength = mtu.load(ordering: .relaxed) + AoELayout.ethernetHeaderSize
        guard let outcome = changeState(header, { $0.access.handleReserve(request, from: header.source, maxFrameLength: maxLength) }) else {
            return .dropped
        }
        switch outcome {
        case .error(let error):
            return replyError(&frame, header, error)
        case .reply(let reply):
            if request.command != .read {
                log.frame(.reserveSet, .info, "reserve list set: \(reply.macs.count) entries", peer: header.source)
            }
            header.reply(from: link.macAddress(port: frame.port), address: configuration.address).write(to: frame.buffer)
            frame.length = reply.write(to: frame.buffer)
            frame.padToMinimum()
            return .reply
        }
    }

    private func handleATA(_ frame: inout Frame, _ header: AoEHeader, slot: Int, admission: ExportAccess.Admission) -> Disposition {
        guard let ata = ATAHeader(parsing: frame.bytes) else {
            return replyError(&frame, header, .badArgument)
        }
        let request = TaskFile(ata)
        // IDENTIFY is answered while reserved (vblade does; WinAoE discovers with it).
        guard admission.reservationAdmits(isIdentify: request.command == .identifyDevice) else { return replyError(&frame, header, .targetReserved) }

        let payloadLength = frame.length - AoELayout.ataHeaderSize
        if let passThrough {
            switch passThrough.policy.decide(request, writeFlag: ata.flags.contains(.write), payloadLength: payloadLength, maxSectors: maxSectors) {
            case .refuse(let reason):
                statistics.add(.passThroughRefused)
                metrics.passThrough(opcode: ata.cmdStatus, refused: true)
                log.frame(.passThroughRefused, .warning, "pass-through refused: \(reason); replying ABRT", peer: header.source, tag: header.tag)
                finishATA(&frame, header, ata, .aborted(request), dataBytes: 0)
                return .reply
            case .aoeError(let error):
                return replyError(&frame, header, error)
            case .send(let command):
                let range = command.range ?? (0, device.sectorCount)
                // Commands without a range (IDENTIFY, SMART, FLUSH, ...) are ordered against everything.
                return enqueue(&frame, header, ata, .passThrough(command), slot: slot, range: range, barrier: command.range == nil)
            }
        }
        let operation = ATADispatcher.plan(request, payloadLength: payloadLength, capabilities: capabilities)
        switch operation {
        case .aoeError(let error):
            return replyError(&frame, header, error)
        case .reply(let registers):
            finishATA(&frame, header, ata, registers, dataBytes: 0)
            return .reply
        case .identify:
            statistics.add(.identifies)
            identifyPage.withUnsafeBytes { frame.payload(count: IdentifyPage.size).copyMemory(from: $0) }
            finishATA(&frame, header, ata, .ok(request), dataBytes: IdentifyPage.size)
            return .reply
        case .setWriteCache(let enabled):
            let durableExport = state.durableExport
            guard let allowed = changeState(header, { $0.setWriteCache(enabled, durableExport: durableExport) }) else { return .dropped }
            if allowed { log.frame(.writeCache, .info, "write cache \(enabled ? "enabled" : "disabled")", peer: header.source) }
            finishATA(&frame, header, ata, allowed ? .ok(request) : .aborted(request), dataBytes: 0)
            return .reply
        case .read, .write, .flush:
            return enqueueDeviceWork(&frame, header, ata, operation, slot: slot)
        case .trim(let blocks):
            return enqueueTrim(&frame, header, ata, blocks: blocks, slot: slot)
        case .passThrough:
            preconditionFailure("the dispatcher never plans pass-through")
        }
    }

    private func enqueueDeviceWork(_ frame: inout Frame, _ header: AoEHeader, _ ata: ATAHeader, _ operation: ATAOperation, slot: Int) -> Disposition {
        switch operation {
        case .read(let lba, let count), .write(let lba, let count):
            let key = RequestKey(source: header.source, lba: lba, sectors: count, write: operation.writesMedia)
            if retransmits.seen(key, now: batchReceivedAt) {
                metrics.retransmitsSeen.bump(1)
                if absorbRetransmission(of: key, frame, header, operation) { return .dropped }
            }
            return enqueue(&frame, header, ata, operation, slot: slot, range: (lba, UInt64(count)), key: key)
        case .flush:
            return enqueue(&frame, header, ata, operation, slot: slot, range: (0, device.sectorCount))
        default:
            preconditionFailure("\(operation) is not device work")
        }
    }

    /// Most ranges one TRIM carries.
    static let maxTrimRanges = TrimRangeList.maxBlocks * TrimRangeList.entriesPerBlock

    /// A TRIM: every range is checked before anything is discarded (one past the end aborts the command, ACS-3
    /// 7.5.3.3), decoded into the slot's ranges, and ordered as one write over the span that holds them all.
    private func enqueueTrim(_ frame: inout Frame, _ header: AoEHeader, _ ata: ATAHeader, blocks: Int, slot: Int) -> Disposition {
        let entries = UnsafeRawBufferPointer(frame.payload(count: blocks * AoELayout.sectorSize))
        switch TrimRangeList.check(entries, sectors: device.sectorCount) {
        case .outOfRange:
            finishATA(&frame, header, ata, .aborted(TaskFile(ata)), dataBytes: 0)
            return .reply
        case .empty:
            finishATA(&frame, header, ata, .ok(TaskFile(ata)), dataBytes: 0)
            return .reply
        case .ranges(let count, let start, let end):
            let ranges = trimRanges + slot * Self.maxTrimRanges
            var n = 0
            TrimRangeList.forEach(entries) { lba, sectors in
                ranges[n] = SectorRange(lba: lba, count: sectors)
                n += 1
            }
            precondition(n == count && n <= Self.maxTrimRanges)
            trimRangeCount[slot] = n
            return enqueue(&frame, header, ata, .trim(blocks: blocks), slot: slot, range: (start, end - start))
        }
    }

    /// A retransmission of a request still in flight (the same source, sectors and direction, the same data for
    /// a write, on the same NIC, at least `shortestRetransmitInterval` after it): the request in flight takes the
    /// retransmission's tag, so its one reply answers the initiator, which ignores replies to a tag it has given
    /// up on, and the device does the work once. A request made twice on purpose that long apart is answered
    /// once too; the initiator resends the other, as after a loss.
    private func absorbRetransmission(of key: RequestKey, _ frame: Frame, _ header: AoEHeader, _ operation: ATAOperation) -> Bool {
        guard let slot = inFlightIndex.slot(for: key) else { return false }
        let original = pending[slot]
        guard original.key == key, original.header.source == header.source, original.operation == operation,
              original.frame.port == frame.port,
              batchReceivedAt &- original.receivedAt >= Self.shortestRetransmitInterval else { return false }
        if operation.writesMedia {
            let bytes = operation.dataBytes
            guard memcmp(original.frame.payload(count: bytes).baseAddress!, frame.payload(count: bytes).baseAddress!, bytes) == 0 else { return false }
        }
        pending[slot].header.tag = header.tag
        statistics.add(.retransmitsAbsorbed)
        return true
    }

    /// No initiator resends sooner than this (aoectl's floor is 1 ms; the Linux driver's is far longer), so two
    /// equal requests closer together are two requests (random I/O at depth meets the same block twice now and
    /// then): both are answered, where absorbing the second cost its initiator a retransmit timeout.
    static let shortestRetransmitInterval: UInt64 = 500_000

    /// The page for the write cache as it is now (word 85 bit 5).
    var identifyPage: [UInt8] { state.writeCacheEnabled ? identifyPages.cacheOn : identifyPages.cacheOff }

    /// Writes the reply registers and length for an ATA request answered from `frame`'s slot.
    func finishATA(_ frame: inout Frame, _ header: AoEHeader, _ ata: ATAHeader, _ registers: ATAReply, dataBytes: Int) {
        if registers.status.contains(.error) {
            statistics.add(.ataErrors)
            statistics.add(registers.error.contains(.idNotFound) ? .ataOutOfRange : .ataAborted)
        }
        header.reply(from: link.macAddress(port: frame.port), address: configuration.address).write(to: frame.buffer)
        ata.replying(registers).write(to: frame.buffer)
        frame.length = AoELayout.ataHeaderSize + dataBytes
        frame.padToMinimum()
        replyOperation = ExportMetrics.Operation.of(ATACommand(rawValue: ata.cmdStatus))
        replyBytes = dataBytes
    }

    private func enqueue(_ frame: inout Frame, _ header: AoEHeader, _ ata: ATAHeader, _ operation: ATAOperation,
                         slot: Int, range: (UInt64, UInt64), barrier: Bool = false, key: RequestKey? = nil) -> Disposition {
        // Buffer Count is a promise: beyond it, requests are dropped (AoEr11 3.2) and the initiator resends.
        guard inFlight < liveBufferCount.load(ordering: .relaxed) else {
            statistics.add(.droppedOverrun)
            return .dropped
        }
        // A backlog of requests waiting for overlapping earlier ones is bounded too: a peer that keeps sending
        // overlapping writes gets drops, not quadratic work.
        guard !scheduler.waitingIsFull else {
            statistics.add(.droppedOrderingBacklog)
            return .dropped
        }
        let request = PendingRequest(frame: frame, header: header, ata: ata, operation: operation,
                                     durable: operation.writesMedia && !state.writeCacheEnabled, receivedAt: batchReceivedAt, key: key)
        guard scheduler.admit(id: slot, start: range.0, count: range.1, writes: operation.writesMedia || barrier) else {
            inFlight += 1
            pending[slot] = request
            if let key { inFlightIndex.insert(key, slot: slot) }
            return .queued
        }
        // An admitted read whose data is in the page cache is answered here, with this batch's replies: no
        // trip through the queue. Memory-backed devices skip this: their queue runs on this thread anyway, and
        // merges the frames of one I/O into one call where this would make one per frame.
        if case .read(let lba, let count) = operation, !device.capabilities.neverBlocks,
           device.readIfCached(into: frame.payload(count: count * AoELayout.sectorSize), at: lba) {
            statistics.add(.reads)
            statistics.add(.cachedReads)
            statistics.add(.bytesRead, count * AoELayout.sectorSize)
            let nowReady = scheduler.finish(id: slot)
            readyQueue.append(contentsOf: nowReady)
            finishATA(&frame, header, ata, .ok(TaskFile(ata)), dataBytes: count * AoELayout.sectorSize)
            return .reply
        }
        inFlight += 1
        pending[slot] = request
        readyQueue.append(slot)
        if let key { inFlightIndex.insert(key, slot: slot) }
        return .queued
    }

    // MARK: - Device work

    /// Most adjacent requests merged into one transfer (a 64 KiB request at MTU 9000 is 8 frames; at MTU
    /// 1500, 32).
    static let maxMerge = 32

    /// Hands every ready request to the device queue, adjacent ones merged by the one merge rule.
    func submitReady() {
        candidates.removeAll(keepingCapacity: true)
        for slot in readyQueue {
            let request = pending[slot]
            switch request.operation {
            case .read(let lba, let count):
                candidates.append(.init(slot: Int32(slot), kind: .read, lba: lba, sectors: count))
            case .write(let lba, let count):
                candidates.append(.init(slot: Int32(slot), kind: request.durable ? .durableWrite : .write, lba: lba, sectors: count))
            default:
                candidates.append(.init(slot: Int32(slot), kind: .single))
            }
        }
        readyQueue.removeAll(keepingCapacity: true)
        MergeRule.group(&candidates, maxMembers: Self.maxMerge, maxSectors: queue.maxTransferBytes / AoELayout.sectorSize, runs: &runs)
        var next = 0
        for run in runs {
            let head = Int(candidates[next].slot)
            let base = head * Self.maxMerge
            var bytes = 0
            for k in 0..<run {
                let slot = Int(candidates[next + k].slot)
                members[base + k] = Int32(slot)
                let payload = pending[slot].frame.payload(count: pending[slot].operation.dataBytes)
                segments[base + k] = iovec(iov_base: payload.baseAddress, iov_len: payload.count)
                bytes += payload.count
            }
            next += run
            memberCount[head] = run
            transferBytes[head] = bytes
            let request = pending[head]
            let operation: DeviceRequest.Operation
            var lba: UInt64 = 0
            switch request.operation {
            case .read(let start, _):
                operation = .read
                lba = start
            case .write(let start, _):
                operation = .write
                lba = start
            case .flush:
                submitFlush(token: head)
                continue
            case .trim:
                operation = .discard(ranges: trimRanges + head * Self.maxTrimRanges, count: trimRangeCount[head])
            case .passThrough(let command):
                operation = .passThrough(command)
            default:
                preconditionFailure("\(request.operation) is not device work")
            }
            queue.submit(DeviceRequest(operation: operation, lba: lba, segments: segments + base,
                                       segmentCount: bytes > 0 ? run : 0, bytes: bytes, token: head))
        }
    }

    /// Takes the completions that are ready: answers requests (durable writes after the commit that covers
    /// them), releases their LBA ranges, submits what that made ready, and sends the replies in one batch.
    /// Returns the number of completions.
    func reapCompletions() -> Int {
        finished.removeAll(keepingCapacity: true)
        let reaped = queue.reap { complete($0) }
        if finished.isEmpty { return reaped }
        for slot in finished {
            readyQueue.append(contentsOf: scheduler.finish(id: slot))
        }
        inFlight -= finished.count
        if roleValue.load(ordering: .relaxed) == Role.active.rawValue {
            if !readyQueue.isEmpty { submitReady() }
            sendBatch(replies, count: finished.count)
            let now = recordsMetrics ? monotonicNanoseconds() : 0
            for (i, slot) in finished.enumerated() where recordsMetrics {
                if let operation = finishedOperations[i] {
                    metrics.answered(operation, bytes: finishedBytes[i], nanoseconds: now &- pending[slot].receivedAt)
                }
            }
        } else {
            discardReady()
        }
        freeSlots.append(contentsOf: finished)
        return reaped
    }

    private func complete(_ completion: DeviceCompletion) {
        let token = completion.token
        if let failure = completion.failure, failure.ownershipLost { fence(because: "\(device.name): \(failure)") }
        if token >= commitToken {
            flushCompleted(token: token)
            if token == commitToken + GroupCommit.maxCommits {
                finalFlush = completion
                return
            }
            if let failure = completion.failure {
                statistics.add(.deviceErrors)
                log.frame(.deviceError, .error, "flush covering durable write(s) failed: \(failure); replying ABRT")
            }
            commits.finish(token - commitToken) { finishTransfer(head: $0, succeeded: completion.failure == nil) }
            return
        }
        let head = token
        let first = pending[head]
        switch first.operation {
        case .flush:
            flushCompleted(token: head)
            finishFlush(&pending[head], failure: completion.failure)
            answered(head)
        case .passThrough(let command):
            let result = completion.passThrough!
            statistics.add(.passThroughCommands)
            metrics.passThrough(opcode: first.ata.cmdStatus, refused: false)
            if let failure = result.failure {
                statistics.add(.deviceErrors)
                log.frame(.deviceError, .error, "\(command.taskFile.command): \(failure); replying ABRT", peer: first.header.source, tag: first.header.tag)
            }
            finishATA(&pending[head].frame, first.header, first.ata, result.registers,
                      dataBytes: result.dataArrived ? first.operation.dataBytes : 0)
            answered(head)
        case .trim:
            countTrim(first, ranges: UnsafeBufferPointer(start: trimRanges + head * Self.maxTrimRanges, count: trimRangeCount[head]),
                      failure: completion.failure)
            if completion.failure == nil && first.durable {
                commits.writeCompleted(head)
            } else {
                finishTransfer(head: head, succeeded: completion.failure == nil)
            }
        default:
            countTransfer(first, requests: memberCount[head], bytes: transferBytes[head], failure: completion.failure)
            if completion.failure == nil && first.operation.writesMedia && first.durable {
                commits.writeCompleted(head)
            } else {
                finishTransfer(head: head, succeeded: completion.failure == nil)
            }
        }
    }

    /// Another host owns the device now (its lock was broken): from this moment the export answers nothing, not
    /// even an error for what it could not finish (the initiator would fail that I/O; silence makes it
    /// retransmit to the new owner), and the requests it queued are dropped, never submitted later. It does not
    /// become active again by itself.
    public func fence(because reason: String) {
        guard roleValue.exchange(Role.fenced.rawValue, ordering: .acquiringAndReleasing) != Role.fenced.rawValue else { return }
        log.log(.error, "fenced: \(reason); another host owns the export now, so this one answers nothing more and drops what it queued (restart or reload to serve it again)")
    }

    /// A loop that did not run for a while (the process was stopped, the VM paused) may have been taken over
    /// meanwhile: before it answers what arrived during the stall, it asks the cluster whether it still owns
    /// the device. The standby takes over only after `FailoverTiming.takeoverAfterSilence` of silence, so a
    /// stall shorter than this cannot hide a takeover.
    static let stallBeforeOwnershipCheck: UInt64 = 1_000_000_000

    private func confirmOwnershipAfterStall() {
        let now = monotonicNanoseconds()
        defer { lastAwake = now }
        guard now &- lastAwake > Self.stallBeforeOwnershipCheck, lastAwake != 0, let ownedDevice,
              roleValue.load(ordering: .relaxed) == Role.active.rawValue else { return }
        if !ownedDevice.confirmOwnership() {
            fence(because: "\(device.name): after \((now &- lastAwake) / 1_000_000) ms without running, the cluster says another host holds it")
        }
    }

    /// Releases every request that is ready but not submitted, unanswered, with those their finishing admits.
    private func discardReady() {
        while let slot = readyQueue.popLast() {
            if let key = pending[slot].key { inFlightIndex.remove(key, slot: slot) }
            readyQueue.append(contentsOf: scheduler.finish(id: slot))
            inFlight -= 1
            freeSlots.append(slot)
        }
    }

    /// Queues a commit (flush) for the durable writes waiting for one, when a commit is free.
    func startCommit() {
        guard !Self.holdCommits.load(ordering: .relaxed), let index = commits.startCommit() else { return }
        submitFlush(token: commitToken + index)
    }

    /// Every flush (FLUSH CACHE, a group commit, the final one) goes to the device this way: timed from here
    /// to `flushCompleted`.
    private func submitFlush(token: Int) {
        flushSubmittedAt[token] = monotonicNanoseconds()
        queue.submit(.flush(token: token))
    }

    private func flushCompleted(token: Int) {
        metrics.flushLatency.record(nanoseconds: monotonicNanoseconds() &- flushSubmittedAt[token])
    }

    /// Turns every request of a transfer into its reply.
    private func finishTransfer(head: Int, succeeded: Bool) {
        let base = head * Self.maxMerge
        for i in 0..<memberCount[head] {
            let slot = Int(members[base + i])
            let request = pending[slot]
            var dataBytes = 0
            if succeeded, case .read(_, let count) = request.operation { dataBytes = count * AoELayout.sectorSize }
            finishATA(&pending[slot].frame, request.header, request.ata,
                      ATADispatcher.reply(to: TaskFile(request.ata), succeeded: succeeded), dataBytes: dataBytes)
            if succeeded, case .write(_, let count) = request.operation { replyBytes = count * AoELayout.sectorSize }
            answered(slot)
        }
    }

    /// The reply in `slot`'s frame is ready; it leaves with the rest of this reap's.
    private func answered(_ slot: Int) {
        if let key = pending[slot].key { inFlightIndex.remove(key, slot: slot) }
        replies[finished.count] = pending[slot].frame
        finishedOperations[finished.count] = replyOperation
        finishedBytes[finished.count] = replyBytes
        finished.append(slot)
    }

    /// Statistics (and the log line on failure) for one device transfer of `requests` adjacent requests, the
    /// first of them `first`.
    func countTransfer(_ first: PendingRequest, requests: Int, bytes: Int, failure: DeviceError?) {
        let write = first.operation.writesMedia
        if requests > 1 { statistics.add(.mergedRequests, requests) }
        if let failure {
            statistics.add(.deviceErrors)
            log.frame(.deviceError, .error, "\(first.operation)\(requests > 1 ? " and \(requests - 1) adjacent request(s)" : "") failed: \(failure); replying ABRT", peer: first.header.source, tag: first.header.tag)
        } else {
            statistics.add(write ? .writes : .reads, requests)
            statistics.add(write ? .bytesWritten : .bytesRead, bytes)
        }
    }

    /// Statistics (and the log line on failure) for one TRIM.
    func countTrim(_ request: PendingRequest, ranges: UnsafeBufferPointer<SectorRange>, failure: DeviceError?) {
        if let failure {
            statistics.add(.deviceErrors)
            log.frame(.deviceError, .error, "TRIM of \(ranges.count) range(s) failed: \(failure); replying ABRT", peer: request.header.source, tag: request.header.tag)
        } else {
            statistics.add(.trims)
            statistics.add(.sectorsTrimmed, ranges.reduce(0) { $0 + $1.count })
        }
    }

    /// Counts a FLUSH (or its failure) and turns its frame into the reply.
    func finishFlush(_ request: inout PendingRequest, failure: DeviceError?) {
        if let failure {
            statistics.add(.deviceErrors)
            log.frame(.deviceError, .error, "flush failed: \(failure); replying ABRT", peer: request.header.source, tag: request.header.tag)
        } else {
            statistics.add(.flushes)
        }
        finishATA(&request.frame, request.header, request.ata, ATADispatcher.reply(to: TaskFile(request.ata), succeeded: failure == nil), dataBytes: 0)
    }

    /// After the last request is answered: one flush of a writable device, through the queue like every other,
    /// then the queue's workers stop.
    private func drain() {
        if device.capabilities.writable {
            submitFlush(token: commitToken + GroupCommit.maxCommits)
            finalFlush = nil
            while finalFlush == nil {
                queue.wait(readable: nil, timeout: 0.2)
                _ = reapCompletions()
            }
            if let failure = finalFlush?.failure { log.log(.error, "final flush of \(device.name) failed: \(failure)") }
        }
        queue.shutDown()
    }
}
