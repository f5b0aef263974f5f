import Glibc
import AoEWire
import ATACore
import BlockDevices
import LinuxSystem
import PacketTransport
import Synchronization

/// Serves one export on one link. The receiving thread parses each frame in place, answers control
/// commands and errors at once, runs I/O on memory-backed devices itself, and queues disk I/O in io_uring
/// (`DeviceIOQueue`, same thread) or, where that is unavailable, hands it to a pool of workers. Device I/O reads
/// into, and writes from, the frame's own slot: read data lands in the reply frame, write data goes to the
/// device from the request frame. Replies leave in batches (sendmmsg).
public final class Target: @unchecked Sendable {
    public let configuration: TargetConfiguration
    public let device: any BlockDevice
    public let link: any FrameLink
    public let statistics = TargetStatistics()
    public let log: TargetLog
    /// Config string, mask, reservation, write cache: saved on change.
    public let state: ExportState

    /// The IDENTIFY page with the write cache off and on, built once: an IDENTIFY (answered to anyone, even
    /// while reserved) costs one copy into the reply, no allocation.
    private let identifyPages: (cacheOff: [UInt8], cacheOn: [UInt8])
    private let pool: FramePool
    private let batch: Int
    private let groupCommit: GroupCommit
    /// Set when every ATA command goes to a real drive as sent.
    let passThrough: (device: any ATAPassThroughDevice, policy: PassThroughPolicy)?

    // Guarded by `lock`.
    let lock = ConditionLock()
    var scheduler = RequestScheduler()
    var freeSlots: [Int]
    var pending: [PendingRequest?]
    var readyQueue: [Int] = []
    var readyHead = 0
    var inFlight = 0
    /// Requests made ready during the current receive batch (receive thread only).
    private var readiedInBatch = 0
    /// The request `handle` returned `.inline` for (receive thread only).
    private var inlineRequest: PendingRequest?
    /// Completed requests whose replies are being sent.
    var sending = 0
    private var stopping = false

    private let mtu: Atomic<Int>
    private var workerThreads: [pthread_t] = []
    /// Set when device work is queued in the kernel (io_uring) instead of running on worker threads.
    let ioQueue: DeviceIOQueue?

    struct PendingRequest {
        var frame: Frame
        var header: AoEHeader
        var ata: ATAHeader
        var operation: ATAOperation
        var durable: Bool
    }

    /// - Parameter passThroughPolicy: with an `ATAPassThroughDevice`, send every ATA command to the drive as
    ///   the initiator sent it, filtered by this policy.
    /// - Parameter state: the export's protocol state, shared by all its ports; nil: a fresh one from
    ///   `configuration`, kept in memory.
    public init(configuration: TargetConfiguration, device: any BlockDevice, link: any FrameLink, log: TargetLog,
                passThroughPolicy: PassThroughPolicy? = nil, state: ExportState? = nil) {
        precondition(TargetConfiguration.bufferCountRange.contains(configuration.bufferCount))
        precondition(configuration.address.isValidTargetAddress)
        self.configuration = configuration
        self.device = device
        self.link = link
        self.log = log
        batch = 32
        let linkMTU = link.currentMTU()
        mtu = Atomic(linkMTU)
        // Slots: up to Buffer Count requests in flight, up to as many completed ones whose replies workers are
        // still sending (no longer counted in flight, so the initiator may already send more), one receive
        // batch, and the announcement.
        pool = FramePool(slots: 2 * configuration.bufferCount + batch + 1,
                         frameCapacity: max(linkMTU, 9000) + AoELayout.ethernetHeaderSize,
                         startInPage: Self.frameStartInPage(dataAlignment: device.capabilities.bufferAlignment))
        freeSlots = Array((0..<pool.slotCount).reversed())
        pending = Array(repeating: nil, count: pool.slotCount)
        self.state = state ?? ExportState(initial: ExportProtocolState(configuration: configuration),
                                          durableExport: configuration.durableWrites)
        groupCommit = GroupCommit(device: device)
        if let passThroughPolicy, let drive = device as? any ATAPassThroughDevice {
            passThrough = (drive, passThroughPolicy)
        } else {
            precondition(passThroughPolicy == nil, "pass-through needs a device that supports it")
            passThrough = nil
        }
        ioQueue = Self.makeIOQueue(configuration: configuration, device: device, slots: pool.slotCount,
                                   passThrough: passThrough != nil, log: log)
        var identify = IdentifyParameters(
            sectors: device.sectorCount, model: configuration.model,
            serial: configuration.serial ?? Self.serial(for: device.identity),
            firmware: configuration.firmware,
            writeCacheSupported: device.capabilities.writable, writeCacheEnabled: false,
            flushSupported: device.capabilities.canFlush)
        let off = IdentifyPage(identify).bytes
        identify.writeCacheEnabled = device.capabilities.writable
        identifyPages = (off, IdentifyPage(identify).bytes)
    }

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
        ExportCapabilities(sectors: device.sectorCount, writable: device.capabilities.writable,
                           canFlush: device.capabilities.canFlush, maxSectorsPerCommand: maxSectors)
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

    /// Announces the export and serves until `stop` becomes true; then finishes the requests in flight, flushes
    /// the device, and returns.
    public func run(until stop: borrowing Atomic<Bool>) {
        var scratch = makeBatchScratch()
        if let ioQueue {
            announce()
            runEventLoop(ioQueue, scratch: &scratch, until: stop)
        } else {
            startWorkers()
            announce()
            var lastMTUCheck = monotonicSeconds()
            while !stop.load(ordering: .relaxed) {
                _ = serveBatch(&scratch, wait: true)
                checkMTU(every: 1, last: &lastMTUCheck)
            }
        }
        drain()
    }

    /// The receive thread's scratch; one per thread that calls `serveBatch`.
    func makeBatchScratch() -> BatchScratch { BatchScratch(batch: batch, placeholder: pool.frame(0)) }

    /// The receiving thread's frames: one receive batch and the replies it sends at once.
    struct BatchScratch {
        var rxFrames: [Frame]
        var rxSlots: [Int]
        var txFrames: [Frame]
        var txSlots: [Int]
        var txCount = 0
        /// Consecutive inline transfers that continue one another on the media, and their places in the batch:
        /// run as one vectored call when the run ends.
        var run: [PendingRequest] = []
        var runIndices: [Int] = []
        var runBuffers: [UnsafeMutableRawBufferPointer] = []
        init(batch: Int, placeholder: Frame) {
            rxFrames = Array(repeating: placeholder, count: batch)
            rxSlots = Array(repeating: 0, count: batch)
            txFrames = rxFrames
            txSlots = rxSlots
            run.reserveCapacity(batch)
            runIndices.reserveCapacity(batch)
            runBuffers.reserveCapacity(batch)
        }

        mutating func reply(_ i: Int) {
            txFrames[txCount] = rxFrames[i]
            txSlots[txCount] = rxSlots[i]
            txCount += 1
            rxSlots[i] = -1
        }

        /// Whether `request` continues the run: the same kind and durability, starting where the run ends.
        func continuesRun(_ request: PendingRequest) -> Bool {
            guard let last = run.last, run.count < Target.maxMerge,
                  let (lba, _) = request.operation.transferRange, let (lastLBA, lastCount) = last.operation.transferRange
            else { return false }
            return request.operation.writesMedia == last.operation.writesMedia && request.durable == last.durable
                && lba == lastLBA + UInt64(lastCount)
        }
    }

    func checkMTU(every seconds: Double, last: inout Double) {
        let now = monotonicSeconds()
        if now - last >= seconds {
            last = now
            refreshMTU()
        }
    }

    /// Receives one batch (waiting a bounded time for its first frame, or not at all), handles every frame,
    /// sends the replies that are ready at once in one batch, and hands device work on. Returns the number of
    /// frames received.
    func serveBatch(_ s: inout BatchScratch, wait: Bool) -> Int {
        // The pool is sized so a full batch is always free; taking only what is free keeps that a
        // performance matter, never a crash.
        let taken = lock.withLock { () -> Int in
            let n = min(batch, freeSlots.count)
            for i in 0..<n { s.rxSlots[i] = freeSlots.removeLast() }
            return n
        }
        if taken == 0 {
            usleepSeconds(0.001)
            return 0
        }
        for i in 0..<taken { s.rxFrames[i] = pool.frame(s.rxSlots[i]) }
        for i in taken..<batch { s.rxSlots[i] = -1 }
        var received: Int
        do {
            received = try s.rxFrames.withUnsafeMutableBufferPointer { frames throws(SystemError) in
                let window = UnsafeMutableBufferPointer(rebasing: frames[0..<taken])
                return wait ? try link.receive(window) : try link.receiveWithoutWaiting(window)
            }
        } catch {
            statistics.add(.receiveErrors)
            log.frame(.warning, "receive on \(link.interfaceName): \(error)")
            usleepSeconds(0.05)
            received = 0
        }
        statistics.add(.framesReceived, received)

        s.txCount = 0
        for i in 0..<received {
            switch handle(&s.rxFrames[i], slot: s.rxSlots[i]) {
            case .reply:
                s.reply(i)
            case .queued:
                s.rxSlots[i] = -1
            case .dropped:
                break
            case .inline:
                let request = inlineRequest.take()!
                if !s.continuesRun(request) { finishInlineRun(&s) }
                s.run.append(request)
                s.runIndices.append(i)
            }
        }
        finishInlineRun(&s)
        let txCount = s.txCount
        if readiedInBatch > 0 {
            if let ioQueue {
                prepareReady(ioQueue)
            } else {
                lock.withLock {
                    for _ in 0..<min(readiedInBatch, max(1, configuration.workers)) { lock.signal() }
                }
            }
            readiedInBatch = 0
        }
        if txCount > 0 { sendBatch(s.txFrames, count: txCount) }
        lock.withLock {
            for i in 0..<batch where s.rxSlots[i] >= 0 { freeSlots.append(s.rxSlots[i]) }
            for i in 0..<txCount { freeSlots.append(s.txSlots[i]) }
        }
        return received
    }

    /// Runs the inline run (one vectored call when it has several requests) and queues its replies.
    private func finishInlineRun(_ s: inout BatchScratch) {
        if s.run.isEmpty { return }
        if s.run[0].operation.transferRange != nil { performTransfer(&s.run, buffers: &s.runBuffers) } else { perform(&s.run[0]) }
        for (k, i) in s.runIndices.enumerated() {
            s.rxFrames[i] = s.run[k].frame
            s.reply(i)
        }
        s.run.removeAll(keepingCapacity: true)
        s.runIndices.removeAll(keepingCapacity: true)
    }

    func sendBatch(_ frames: [Frame], count: Int) {
        var sent = 0
        while sent < count {
            do {
                let n = try link.send(frames, range: sent..<count)
                if n == 0 { break }
                sent += n
            } catch {
                // ENOBUFS, ENETDOWN, EMSGSIZE after an MTU drop: count, skip that frame, keep serving.
                statistics.add(.sendErrors)
                log.frame(.warning, "send on \(link.interfaceName): \(error)")
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
        } catch {
            statistics.add(.sendErrors)
            log.frame(.warning, "send on \(link.interfaceName): \(error)")
            if error.errno == EMSGSIZE { refreshMTU() }
        }
    }

    /// One unsolicited Config reply to the broadcast address, so initiators that are already up find us.
    public func announce() {
        let slot = lock.withLock { freeSlots.removeLast() }
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
        lock.withLock { freeSlots.append(slot) }
    }

    // MARK: - Per-frame handling (receive thread)

    /// `inline`: device work to run on the receiving thread, left in `inlineRequest`.
    enum Disposition { case reply, queued, dropped, inline }

    func handle(_ frame: inout Frame, slot: Int) -> Disposition {
        let bytes = frame.bytes
        guard let header = try? AoEHeader(parsing: bytes) else {
            statistics.add(.droppedTruncated)
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
            log.frame(.error, "\(header.command) from \(header.source): \(error); not applied, request dropped")
            return nil
        }
    }

    /// An AoE error reply: the request's argument echoed (up to the 60-byte minimum) with E set.
    private func replyError(_ frame: inout Frame, _ header: AoEHeader, _ error: AoEError) -> Disposition {
        statistics.add(.aoeErrorsSent)
        log.frame(.info, "\(header.command) from \(header.source) tag \(header.tag): AoE error \(error.rawValue) (\(error))")
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
        ConfigArg(bufferCount: UInt16(configuration.bufferCount), firmwareVersion: configuration.firmwareVersion,
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
                log.frame(.info, "MAC mask list edited by \(header.source): \(reply.directives.count) entries")
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
                log.frame(.info, "reserve list set by \(header.source): \(reply.macs.count) entries")
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
                log.frame(.warning, "refused for \(header.source): \(reason); replying ABRT")
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
            if allowed { log.frame(.info, "write cache \(enabled ? "enabled" : "disabled") by \(header.source)") }
            finishATA(&frame, header, ata, allowed ? .ok(request) : .aborted(request), dataBytes: 0)
            return .reply
        case .read, .write, .flush:
            if device.capabilities.neverBlocks {
                // Memory-backed device: run it on this thread, in arrival order (so ordering holds by
                // construction), with the reply in this batch's sendmmsg instead of waking a worker.
                inlineRequest = PendingRequest(frame: frame, header: header, ata: ata, operation: operation,
                                               durable: operation.writesMedia && !state.writeCacheEnabled)
                return .inline
            }
            return enqueueDeviceWork(&frame, header, ata, operation, slot: slot)
        case .passThrough:
            preconditionFailure("the dispatcher never plans pass-through")
        }
    }

    private func enqueueDeviceWork(_ frame: inout Frame, _ header: AoEHeader, _ ata: ATAHeader, _ operation: ATAOperation, slot: Int) -> Disposition {
        switch operation {
        case .read(let lba, let count), .write(let lba, let count):
            return enqueue(&frame, header, ata, operation, slot: slot, range: (lba, UInt64(count)))
        case .flush:
            return enqueue(&frame, header, ata, operation, slot: slot, range: (0, device.sectorCount))
        default:
            preconditionFailure("\(operation) is not device work")
        }
    }

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
    }

    private func enqueue(_ frame: inout Frame, _ header: AoEHeader, _ ata: ATAHeader, _ operation: ATAOperation,
                         slot: Int, range: (UInt64, UInt64), barrier: Bool = false) -> Disposition {
        lock.lock()
        // Buffer Count is a promise: beyond it, requests are dropped (AoEr11 3.2) and the initiator resends.
        guard inFlight < configuration.bufferCount else {
            lock.unlock()
            statistics.add(.droppedOverrun)
            return .dropped
        }
        // A backlog of requests waiting for overlapping earlier ones is bounded too: a peer that keeps sending
        // overlapping writes gets drops, not quadratic work.
        guard !scheduler.waitingIsFull else {
            lock.unlock()
            statistics.add(.droppedOrderingBacklog)
            return .dropped
        }
        inFlight += 1
        let durable = operation.writesMedia && !state.writeCacheEnabled
        pending[slot] = PendingRequest(frame: frame, header: header, ata: ata, operation: operation, durable: durable)
        guard scheduler.admit(id: slot, start: range.0, count: range.1, writes: operation.writesMedia || barrier) else {
            lock.unlock()
            return .queued
        }
        lock.unlock()
        // An admitted read whose data is in the page cache is answered here, with this batch's replies: no
        // worker hand-off. Anything that would wait for the disk goes to the workers as before.
        if case .read(let lba, let count) = operation,
           device.readIfCached(into: frame.payload(count: count * AoELayout.sectorSize), at: lba) {
            statistics.add(.reads)
            statistics.add(.cachedReads)
            statistics.add(.bytesRead, count * AoELayout.sectorSize)
            lock.withLock {
                let nowReady = scheduler.finish(id: slot)
                readyQueue.append(contentsOf: nowReady)
                readiedInBatch += nowReady.count
                pending[slot] = nil
                inFlight -= 1
            }
            finishATA(&frame, header, ata, .ok(TaskFile(ata)), dataBytes: count * AoELayout.sectorSize)
            return .reply
        }
        lock.withLock {
            readyQueue.append(slot)
            // Workers are woken once the whole batch is queued, so adjacent frames can be merged.
            readiedInBatch += 1
        }
        return .queued
    }

    // MARK: - Workers

    private func startWorkers() {
        for _ in 0..<max(1, configuration.workers) {
            let box = Unmanaged.passRetained(self)
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { raw in
                let target = Unmanaged<Target>.fromOpaque(raw!).takeRetainedValue()
                target.workerLoop()
                return nil
            }, box.toOpaque())
            precondition(rc == 0, "pthread_create failed: \(rc)")
            workerThreads.append(thread)
        }
    }

    /// Most adjacent frames one worker merges into a single vectored I/O (a 64 KiB request at MTU 9000 is
    /// 8 frames; at MTU 1500, 32).
    static let maxMerge = 32

    private func workerLoop() {
        var group: [PendingRequest] = []
        var slots: [Int] = []
        var buffers: [UnsafeMutableRawBufferPointer] = []
        group.reserveCapacity(Self.maxMerge)
        slots.reserveCapacity(Self.maxMerge)
        buffers.reserveCapacity(Self.maxMerge)
        while true {
            lock.lock()
            while readyHead == readyQueue.count && !stopping { lock.wait() }
            if readyHead == readyQueue.count && stopping {
                lock.unlock()
                return
            }
            group.removeAll(keepingCapacity: true)
            slots.removeAll(keepingCapacity: true)
            takeAdjacent(into: &slots)
            for slot in slots { group.append(pending[slot]!) }
            lock.unlock()

            if group[0].operation.transferRange != nil { performTransfer(&group, buffers: &buffers) } else { perform(&group[0]) }

            // The requests are done before their replies leave: an initiator that sends its next request the
            // moment a reply arrives must find the Buffer Count free again. The slots stay taken until sent.
            lock.lock()
            for slot in slots {
                let nowReady = scheduler.finish(id: slot)
                if !nowReady.isEmpty {
                    readyQueue.append(contentsOf: nowReady)
                    lock.broadcast()
                }
                pending[slot] = nil
            }
            inFlight -= slots.count
            sending += slots.count
            lock.unlock()

            for request in group { sendOne(request.frame) }

            lock.lock()
            freeSlots.append(contentsOf: slots)
            sending -= slots.count
            if inFlight == 0 && sending == 0 { lock.broadcast() }
            lock.unlock()
        }
    }

    /// Takes the next ready request and, behind it in the queue, the ready requests of the same kind that
    /// continue it on the media (the frames of one initiator I/O arrive together): one vectored I/O for all.
    /// Caller holds the lock. Every request taken was already admitted by the scheduler, and adjacent ranges do
    /// not overlap, so running them together keeps the ordering rule.
    func takeAdjacent(into slots: inout [Int]) {
        func take() {
            slots.append(readyQueue[readyHead])
            readyHead += 1
        }
        take()
        var end: UInt64
        let first = pending[slots[0]]!
        switch first.operation {
        case .read(let lba, let count), .write(let lba, let count): end = lba + UInt64(count)
        default: end = 0
        }
        while end > 0 && slots.count < Self.maxMerge && readyHead < readyQueue.count {
            let next = pending[readyQueue[readyHead]]!
            guard next.durable == first.durable else { break }
            switch (first.operation, next.operation) {
            case (.read, .read(let lba, let count)) where lba == end, (.write, .write(let lba, let count)) where lba == end:
                end += UInt64(count)
                take()
            default:
                end = 0
            }
        }
        if readyHead == readyQueue.count {
            readyQueue.removeAll(keepingCapacity: true)
            readyHead = 0
        }
    }

    /// One preadv / pwritev for adjacent requests; each gets its own reply. A failure fails them all (ABRT):
    /// the initiator retries each on its own.
    private func performTransfer(_ group: inout [PendingRequest], buffers: inout [UnsafeMutableRawBufferPointer]) {
        buffers.removeAll(keepingCapacity: true)
        var bytes = 0
        for request in group {
            let count = request.operation.transferRange!.count
            buffers.append(request.frame.payload(count: count * AoELayout.sectorSize))
            bytes += count * AoELayout.sectorSize
        }
        let lba = group[0].operation.transferRange!.lba
        let isWrite = group[0].operation.writesMedia
        var failure: DeviceError? = nil
        do throws(DeviceError) {
            if group.count == 1 {
                if isWrite { try device.write(from: UnsafeRawBufferPointer(buffers[0]), at: lba) } else { try device.read(into: buffers[0], at: lba) }
            } else {
                try buffers.withUnsafeBufferPointer { (vectors) throws(DeviceError) in
                    if isWrite { try device.write(from: vectors, at: lba) } else { try device.read(into: vectors, at: lba) }
                }
            }
            if isWrite && group[0].durable { try groupCommit.makeDurable() }
        } catch {
            failure = error
        }
        countTransfer(group[0], requests: group.count, bytes: bytes, failure: failure)
        for i in group.indices { finishTransfer(&group[i], succeeded: failure == nil) }
    }

    /// Statistics (and the log line on failure) for one device transfer of `requests` adjacent requests, the
    /// first of them `first`.
    func countTransfer(_ first: PendingRequest, requests: Int, bytes: Int, failure: DeviceError?) {
        let write = first.operation.writesMedia
        if requests > 1 { statistics.add(.mergedRequests, requests) }
        if let failure {
            statistics.add(.deviceErrors)
            log.frame(.error, "\(first.operation) for \(first.header.source) tag \(first.header.tag)\(requests > 1 ? " and \(requests - 1) adjacent request(s)" : "") failed: \(failure); replying ABRT")
        } else {
            statistics.add(write ? .writes : .reads, requests)
            statistics.add(write ? .bytesWritten : .bytesRead, bytes)
        }
    }

    /// Turns a read or write request's frame into its reply (with the data for a read that succeeded).
    func finishTransfer(_ request: inout PendingRequest, succeeded: Bool) {
        var dataBytes = 0
        if succeeded, case .read(_, let count) = request.operation { dataBytes = count * AoELayout.sectorSize }
        finishATA(&request.frame, request.header, request.ata, ATADispatcher.reply(to: TaskFile(request.ata), succeeded: succeeded), dataBytes: dataBytes)
    }

    /// Runs a FLUSH or pass-through command and turns `request.frame` into its reply.
    private func perform(_ request: inout PendingRequest) {
        switch request.operation {
        case .flush:
            var failure: DeviceError? = nil
            do { try device.flush() } catch { failure = error }
            finishFlush(&request, failure: failure)
        case .passThrough(let command):
            let bytes = command.sectors * AoELayout.sectorSize
            let result = passThrough!.device.passThrough(command, data: request.frame.payload(count: bytes))
            statistics.add(.passThroughCommands)
            if let failure = result.failure {
                statistics.add(.deviceErrors)
                log.frame(.error, "\(command.taskFile.command) for \(request.header.source) tag \(request.header.tag): \(failure); replying ABRT")
            }
            finishATA(&request.frame, request.header, request.ata, result.registers, dataBytes: result.dataArrived ? bytes : 0)
        default:
            preconditionFailure("\(request.operation) is not run by perform")
        }
    }

    /// Counts a FLUSH (or its failure) and turns its frame into the reply.
    func finishFlush(_ request: inout PendingRequest, failure: DeviceError?) {
        if let failure {
            statistics.add(.deviceErrors)
            log.frame(.error, "flush for \(request.header.source) tag \(request.header.tag) failed: \(failure); replying ABRT")
        } else {
            statistics.add(.flushes)
        }
        finishATA(&request.frame, request.header, request.ata, ATADispatcher.reply(to: TaskFile(request.ata), succeeded: failure == nil), dataBytes: 0)
    }

    /// Waits for the requests in flight, stops the workers, and flushes the device.
    private func drain() {
        lock.lock()
        while inFlight > 0 || sending > 0 { lock.wait() }
        stopping = true
        lock.broadcast()
        lock.unlock()
        for thread in workerThreads { pthread_join(thread, nil) }
        workerThreads.removeAll()
        if device.capabilities.writable {
            do { try device.flush() } catch { log.log(.error, "final flush of \(device.name) failed: \(error)") }
        }
    }
}
