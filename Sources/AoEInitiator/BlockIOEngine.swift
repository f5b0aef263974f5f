import Glibc
import AoEWire
import ATACore
import LinuxSystem
import PacketTransport

/// One block I/O: `sectors` at `lba`, data in `buffer` (written from, or read into).
public struct BlockIO: @unchecked Sendable {
    public var lba: UInt64
    public var sectors: Int
    public var isWrite: Bool
    public var buffer: UnsafeMutableRawPointer
    /// The source's own reference, returned on completion.
    public var id: Int
    /// Set: not a read or write of `sectors` at `lba` but this one ATA command in one frame (a pass-through,
    /// a FLUSH), with `sectors` of data out (`isWrite`) or in. Its reply registers come back in it.
    public var command: ATACommandIO?

    public init(lba: UInt64, sectors: Int, isWrite: Bool, buffer: UnsafeMutableRawPointer, id: Int) {
        self.lba = lba
        self.sectors = sectors
        self.isWrite = isWrite
        self.buffer = buffer
        self.id = id
    }

    /// One ATA command with `sectors` of data (at most the target's sectors per frame) in `buffer`.
    public init(command task: ATAHeader, sectors: Int, isWrite: Bool, buffer: UnsafeMutableRawPointer, id: Int, resendable: Bool) {
        self.init(lba: task.lba, sectors: sectors, isWrite: isWrite, buffer: buffer, id: id)
        command = ATACommandIO(task: task, resendable: resendable)
    }
}

/// An ATA command sent as it is. The engine does not judge its status: the reply registers, an error
/// included, are the answer (`reply`); only a transport failure completes it with an error.
public struct ATACommandIO: Sendable {
    public var task: ATAHeader
    /// False for a command that must not run twice (a SECURITY or DOWNLOAD MICROCODE command, a SET FEATURES):
    /// it is sent once and waited for until the deadline, since a retransmission could run it again.
    public var resendable: Bool
    public var reply: ATAHeader? = nil
}

/// Supplies I/Os to the engine and learns how they ended.
public protocol BlockIOSource: AnyObject {
    /// The next I/O to start now, or nil (nothing now; the engine asks again later).
    func nextIO(now: Double) -> BlockIO?
    func completed(_ io: BlockIO, error: ClientError?, latencyNanoseconds: UInt64)
    /// No further I/O will come.
    var isFinished: Bool { get }
}

/// Runs block I/O against one target with `queueDepth` I/Os in flight, each split into frames of the
/// target's sectors per frame, within a frame window of at most the target's Buffer Count. Retransmits with
/// an adaptive timeout (`TagTable`). Frames are built in preallocated slots; the loop allocates nothing.
public final class BlockIOEngine {
    struct Active {
        var io: BlockIO
        var nextSector = 0
        var framesOutstanding = 0
        var error: ClientError? = nil
        var startedAt: UInt64 = 0
        var reply: ATAHeader? = nil
        var commandSent = false
        var inUse = false
        /// In the `unsent` ring. An entry outlives an I/O that failed with parts unsent; its successor in
        /// the same slot then uses that entry.
        var queued = false
    }

    struct FramePart {
        var active = -1
        var offsetSectors = 0
        var sectors = 0
    }

    /// The target as it answers now: its MAC changes when the export fails over to another host.
    public private(set) var target: TargetInfo
    /// Times the target moved to another host during the run.
    public private(set) var failovers = 0
    /// When the target last answered an ATA request, and when we last asked who serves it after a silence.
    private var lastAnswerAt = monotonicSeconds()
    private var lastProbeAt = 0.0
    public let link: any FrameLink
    public let queueDepth: Int
    public var tags: TagTable { tagTable.pointee }
    private let tagTable: UnsafeMutablePointer<TagTable>
    private let pool: FramePool
    private let rxPool: FramePool
    // Per-frame and per-I/O state sits in memory the engine owns, not in arrays: each access to an array
    // stored in a class pays an exclusivity check (a thread-local lookup) and a uniqueness check, several
    // times per frame.
    private let actives: UnsafeMutablePointer<Active>
    /// A stack of unused `actives` indices; `freeActiveCount` of them.
    private let freeActives: UnsafeMutablePointer<Int>
    private var freeActiveCount: Int
    private let parts: UnsafeMutablePointer<FramePart>
    /// Ring of `actives` indices with parts still to send, in round-robin order: `unsentCount` from `unsentHead`.
    private let unsent: UnsafeMutablePointer<Int>
    private var unsentHead = 0
    private var unsentCount = 0
    private let rxFrames: UnsafeMutableBufferPointer<Frame>
    private let txFrames: UnsafeMutableBufferPointer<Frame>
    private var txCount = 0
    private var timerActions: [TagTable.TimerAction] = []
    private var activeCount = 0

    public var retransmits: Int { tags.retransmits }
    public var lateResponses: Int { tags.lateResponses }
    /// Late answers that completed their I/O (an earlier attempt answered while a resend was out).
    public var earlierAnswers: Int { tags.earlierAnswers }
    /// The retransmit timeout now, and the round-trip estimate it comes from (seconds).
    public var retransmitTimeout: Double { tags.retransmitTimeout }
    public var smoothedRTT: Double { tags.smoothedRTT }

    public init(link: any FrameLink, target: TargetInfo, queueDepth: Int, maxAttempts: Int = 10, deadlineSeconds: Double = 15) {
        self.link = link
        self.target = target
        self.queueDepth = max(1, queueDepth)
        let window = max(1, min(target.bufferCount, 0xFFFF))
        tagTable = .allocate(capacity: 1)
        tagTable.initialize(to: TagTable(capacity: window, maxWindow: window, maxAttempts: maxAttempts, deadline: deadlineSeconds))
        let frameCapacity = AoELayout.ataHeaderSize + target.sectorsPerFrame * AoELayout.sectorSize
        let capacity = max(frameCapacity, max(link.currentMTU(), 1500) + AoELayout.ethernetHeaderSize)
        // Where request frames sit decides how fast the kernel copies them: `rep movsb` runs about 15 times
        // slower when its destination is 1-31 bytes past its source modulo 4096 (false store-to-load
        // aliasing). The kernel copies a frame shorter than a page whole into a buffer 16 bytes past a
        // 2 KiB boundary, and a longer one from byte 14 on into fresh pages; the default layout (36 bytes
        // before a page end) hit the slow case for 4 KiB writes, costing 2.5 us a frame. 96 bytes into a page
        // keeps the destination behind the source in both cases, and our copy of the data into the frame fast.
        // One slot past the window for the Query Config that looks for the export on another host.
        let pool = FramePool(slots: window + 1, frameCapacity: capacity, startInPage: 96)
        let rxPool = FramePool(slots: 32, frameCapacity: capacity, startInPage: 96)
        self.pool = pool
        self.rxPool = rxPool
        actives = .allocate(capacity: self.queueDepth)
        actives.initialize(repeating: Active(io: BlockIO(lba: 0, sectors: 0, isWrite: false, buffer: UnsafeMutableRawPointer(bitPattern: 1)!, id: 0)),
                           count: self.queueDepth)
        freeActives = .allocate(capacity: self.queueDepth)
        // Reversed, so the first I/Os take the lowest indices.
        for i in 0..<self.queueDepth { (freeActives + i).initialize(to: self.queueDepth - 1 - i) }
        freeActiveCount = self.queueDepth
        unsent = .allocate(capacity: self.queueDepth)
        parts = .allocate(capacity: window)
        parts.initialize(repeating: FramePart(), count: window)
        rxFrames = .allocate(capacity: 32)
        for i in 0..<32 { (rxFrames.baseAddress! + i).initialize(to: rxPool.frame(i)) }
        txFrames = .allocate(capacity: 64)
        txFrames.initialize(repeating: pool.frame(0))
        timerActions.reserveCapacity(window)
        // Every request carries the same Ethernet and AoE header but for the tag: write it once per slot, and
        // per frame only the tag.
        writeHeaders()
    }

    private func writeHeaders() {
        let header = AoEHeader(destination: target.mac, source: link.macAddress, address: target.address, command: .issueATA, tag: Tag(rawValue: 0))
        for slot in 0..<tagTable.pointee.maxWindow { header.write(to: pool.frame(slot).buffer) }
    }

    deinit {
        actives.deinitialize(count: queueDepth)
        actives.deallocate()
        freeActives.deallocate()
        unsent.deallocate()
        tagTable.deinitialize(count: 1)
        tagTable.deallocate()
        parts.deallocate()
        rxFrames.deallocate()
        txFrames.deallocate()
    }

    /// Runs until the source is finished and every I/O has completed.
    public func run(_ source: BlockIOSource) throws(ClientError) {
        var lastTick = monotonicSeconds()
        while true {
            // One clock read stamps everything started and sent in this pass, one more everything received:
            // a read per frame cost more than the rest of the frame's bookkeeping.
            let startedAt = monotonicNanoseconds()
            let now = Self.seconds(startedAt)
            while activeCount < queueDepth, let io = source.nextIO(now: now) { start(io, at: startedAt) }
            if activeCount == 0 && source.isFinished { return }
            try sendParts(now: now)
            var n: Int
            do {
                n = try link.receiveWithoutWaiting(rxFrames)
                // Nothing yet: sleep until a frame arrives or the next retransmit timer tick is due, on a precise
                // timer (the socket's own receive timeout is rounded up to scheduler ticks).
                if n == 0 && Syscall.waitReadable(link.readinessDescriptor, timeout: Self.tickInterval) {
                    n = try link.receiveWithoutWaiting(rxFrames)
                }
            } catch { throw .system(error) }
            let receivedAt = monotonicNanoseconds()
            let after = Self.seconds(receivedAt)
            for i in 0..<n { handle(rxFrames[i], now: after, at: receivedAt, source: source) }
            if after - lastTick >= Self.tickInterval || n == 0 {
                lastTick = after
                try tick(now: after, source: source)
            }
        }
    }

    private static func seconds(_ nanoseconds: UInt64) -> Double { Double(nanoseconds) / 1e9 }

    /// How often the retransmit timers are looked at: well under the 2 ms floor of the timeout.
    static let tickInterval = 0.0005

    private func start(_ io: BlockIO, at time: UInt64) {
        freeActiveCount -= 1
        let a = freeActives[freeActiveCount]
        let queued = actives[a].queued
        actives[a] = Active(io: io, startedAt: time, inUse: true, queued: queued)
        if !queued { queueUnsent(a) }
        activeCount += 1
    }

    private func queueUnsent(_ a: Int) {
        var tail = unsentHead + unsentCount
        if tail >= queueDepth { tail -= queueDepth }
        unsent[tail] = a
        unsentCount += 1
        actives[a].queued = true
    }

    /// Builds frames for unsent parts of active I/Os while the window allows: all of one I/O's frames back to
    /// back, as the Linux driver sends them, so a target sees them together and can merge them into one device
    /// request; I/Os take turns in the order they started.
    private func sendParts(now: Double) throws(ClientError) {
        while unsentCount > 0 && tagTable.pointee.canSend {
            let a = unsent[unsentHead]
            // A failed I/O sends nothing more (it completes when its frames in flight have).
            let hasUnsent = actives[a].io.command == nil ? actives[a].nextSector < actives[a].io.sectors : !actives[a].commandSent
            guard actives[a].inUse, actives[a].error == nil, hasUnsent else {
                unsentHead = unsentHead + 1 == queueDepth ? 0 : unsentHead + 1
                unsentCount -= 1
                actives[a].queued = false
                continue
            }
            let offset = actives[a].nextSector
            // A single ATA command goes whole in one frame, even one without data.
            let count = actives[a].io.command != nil ? actives[a].io.sectors : min(target.sectorsPerFrame, actives[a].io.sectors - offset)
            actives[a].nextSector += count
            actives[a].commandSent = actives[a].io.command != nil
            actives[a].framesOutstanding += 1
            if actives[a].nextSector == actives[a].io.sectors || actives[a].io.command != nil {   // its last frame: the next I/O's turn
                unsentHead = unsentHead + 1 == queueDepth ? 0 : unsentHead + 1
                unsentCount -= 1
                actives[a].queued = false
            }
            let (slot, tag) = tagTable.pointee.send(now: now, resendable: actives[a].io.command?.resendable ?? true)
            parts[slot] = FramePart(active: a, offsetSectors: offset, sectors: count)
            build(slot: slot, tag: tag)
            queue(pool.frame(slot).with(length: frameLength(slot)))
            if txCount == txFrames.count { try flushTx() }
        }
        try flushTx()
    }

    private func frameLength(_ slot: Int) -> Int {
        let part = parts[slot]
        let io = actives[part.active].io
        return max(AoELayout.minimumFrameSize, AoELayout.ataHeaderSize + (io.isWrite ? part.sectors * AoELayout.sectorSize : 0))
    }

    private func build(slot: Int, tag: UInt32) {
        let part = parts[slot]
        let io = actives[part.active].io
        let frame = pool.frame(slot)
        retag(slot: slot, tag: tag)
        if var task = io.command?.task {
            if io.isWrite { task.flags.insert(.write) } else { task.flags.remove(.write) }
            task.write(to: frame.buffer)
        } else {
            let lba = io.lba + UInt64(part.offsetSectors)
            let lba48 = lba + UInt64(part.sectors) > 0x0FFF_FFFF
            let command: ATACommand = io.isWrite ? (lba48 ? .writeSectorsExt : .writeSectors) : (lba48 ? .readSectorsExt : .readSectors)
            var flags: ATAArgFlags = lba48 ? .extended : []
            if io.isWrite { flags.insert(.write) }
            ATAHeader(flags: flags, sectorCount: UInt8(part.sectors), cmdStatus: command.rawValue, lba: lba48 ? lba : lba | 0xE000_0000)
                .write(to: frame.buffer)
        }
        let bytes = part.sectors * AoELayout.sectorSize
        if io.isWrite {
            frame.payload(count: bytes).copyMemory(from: UnsafeRawBufferPointer(start: io.buffer + part.offsetSectors * AoELayout.sectorSize, count: bytes))
        } else {
            // Short requests are padded to 60 bytes: zero the padding rather than leak old frame contents.
            frame.payload(count: AoELayout.minimumFrameSize - AoELayout.ataHeaderSize).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    /// The tag is all of a slot's AoE header that changes between sends (the rest is written once, in init).
    private func retag(slot: Int, tag: UInt32) {
        let frame = pool.frame(slot)
        frame.buffer.storeBytes(of: tag.bigEndian, toByteOffset: 20, as: UInt32.self)
    }

    private func queue(_ frame: Frame) {
        txFrames[txCount] = frame
        txCount += 1
    }

    private func flushTx() throws(ClientError) {
        var sent = 0
        while sent < txCount {
            do {
                let n = try link.send(UnsafeBufferPointer(rebasing: txFrames[sent..<txCount]))
                // A full socket buffer (EAGAIN) or ENOBUFS: the retransmit timer resends what did not go out.
                if n == 0 { break }
                sent += n
            } catch {
                if error.errno == ENOBUFS || error.errno == EAGAIN { break }
                throw .system(error)
            }
        }
        txCount = 0
    }

    private func handle(_ frame: Frame, now: Double, at time: UInt64, source: BlockIOSource) {
        let bytes = frame.bytes
        guard let header = try? AoEHeader(parsing: bytes), header.flags.contains(.response), header.address == target.address else { return }
        if header.command == .queryConfig && header.source != target.mac && !header.flags.contains(.error) {
            considerMove(to: header.source, now: now)
            return
        }
        guard header.command == .issueATA, header.source == target.mac else { return }
        lastAnswerAt = now
        let slot: Int
        switch tagTable.pointee.response(tag: header.tag.rawValue, now: now) {
        case .complete(let s, _):
            slot = s
        case .earlierAttempt(let s):
            // The same request answered by an earlier attempt: taken when the reply names the LBA the request
            // asked for (an ATA command's reply registers need not, so those wait for their latest attempt).
            // The resend still on its way is harmless: our frames reach the target in order on the one link, and
            // the target runs overlapping writes in arrival order, so it lands before anything sent after it.
            guard actives[parts[s].active].io.command == nil, bytes.count >= AoELayout.ataHeaderSize,
                  memcmp(bytes.baseAddress! + 28, UnsafeRawPointer(pool.frame(s).buffer.baseAddress!) + 28, 6) == 0 else { return }
            tagTable.pointee.acceptEarlierAnswer(slot: s)
            slot = s
        case .late, .unknown:
            return
        }
        let part = parts[slot]
        let a = part.active
        if header.flags.contains(.error) {
            actives[a].error = actives[a].error ?? .aoe(header.error, target: "e\(target.address)")
        } else if let ata = ATAHeader(parsing: bytes) {
            let status = ATAStatus(rawValue: ata.cmdStatus)
            if actives[a].io.command != nil {
                actives[a].reply = ata
                if !status.indicatesFailure && !actives[a].io.isWrite && part.sectors > 0 { takeData(bytes, a, part) }
            } else if status.indicatesFailure {
                actives[a].error = actives[a].error ?? .ataFailed(status: ata.cmdStatus, error: ata.errFeature, lba: actives[a].io.lba + UInt64(part.offsetSectors))
            } else if !actives[a].io.isWrite {
                takeData(bytes, a, part)
            }
        }
        partDone(a, at: time, source: source)
    }

    /// A read's data (or a command's data-in) from the reply into the I/O's buffer, at the part's offset.
    private func takeData(_ bytes: UnsafeRawBufferPointer, _ a: Int, _ part: FramePart) {
        let want = part.sectors * AoELayout.sectorSize
        if bytes.count - AoELayout.ataHeaderSize < want {
            actives[a].error = actives[a].error ?? .shortReply(expected: want, got: bytes.count - AoELayout.ataHeaderSize)
        } else {
            (actives[a].io.buffer + part.offsetSectors * AoELayout.sectorSize)
                .copyMemory(from: bytes.baseAddress! + AoELayout.ataHeaderSize, byteCount: want)
        }
    }

    private func partDone(_ a: Int, at time: UInt64, source: BlockIOSource) {
        actives[a].framesOutstanding -= 1
        let finished = actives[a].framesOutstanding == 0 && (actives[a].nextSector >= actives[a].io.sectors || actives[a].error != nil)
        guard finished else { return }
        let latency = time &- actives[a].startedAt
        actives[a].inUse = false
        freeActives[freeActiveCount] = a
        freeActiveCount += 1
        activeCount -= 1
        var io = actives[a].io
        io.command?.reply = actives[a].reply
        source.completed(io, error: actives[a].error, latencyNanoseconds: latency)
    }

    private func tick(now: Double, source: BlockIOSource) throws(ClientError) {
        timerActions.removeAll(keepingCapacity: true)
        tagTable.pointee.tick(now: now, into: &timerActions)
        if tags.inFlight > 0 && now - lastAnswerAt >= Self.silenceBeforeMove && now - lastProbeAt >= Self.silenceBeforeMove {
            lastProbeAt = now
            try probeForExport()
        }
        for action in timerActions {
            switch action {
            case .resend(let slot, let tag):
                retag(slot: slot, tag: tag)
                queue(pool.frame(slot).with(length: frameLength(slot)))
                if txCount == txFrames.count { try flushTx() }
            case .fail(let slot):
                let a = parts[slot].active
                actives[a].error = actives[a].error ?? .noReply(target: "e\(target.address) (\(target.mac))", seconds: tags.deadline)
                partDone(a, at: monotonicNanoseconds(), source: source)
            }
        }
        try flushTx()
    }
}

extension BlockIOEngine {
    /// How long the target must have been silent, with requests in flight, before a Config reply for the same
    /// shelf.slot from another MAC moves our frames there (an RBD export that failed over to its standby host,
    /// which announces itself); after this long we also ask the segment who serves it, once per interval.
    static let silenceBeforeMove = 1.0

    /// Broadcasts Query Config for the target's shelf.slot: a host that took the export over answers.
    private func probeForExport() throws(ClientError) {
        var frame = pool.frame(tagTable.pointee.maxWindow)
        AoEHeader(destination: .broadcast, source: link.macAddress, address: target.address, command: .queryConfig,
                  tag: Tag(rawValue: 0xFFFF_FFFF)).write(to: frame.buffer)
        frame.payload(count: AoELayout.minimumFrameSize - AoELayout.headerSize).initializeMemory(as: UInt8.self, repeating: 0)
        frame.length = AoELayout.minimumFrameSize
        do { try link.sendOne(frame) } catch { throw .system(error) }
    }

    /// A Config reply for our shelf.slot from another MAC: once ours has gone silent, the export lives there now.
    private func considerMove(to mac: MACAddress, now: Double) {
        guard tags.inFlight > 0, now - lastAnswerAt >= Self.silenceBeforeMove else { return }
        target.mac = mac
        failovers += 1
        lastAnswerAt = now
        writeHeaders()
        timerActions.removeAll(keepingCapacity: true)
        tagTable.pointee.resendAll(now: now, into: &timerActions)
        for case .resend(let slot, let tag) in timerActions {
            retag(slot: slot, tag: tag)
            queue(pool.frame(slot).with(length: frameLength(slot)))
            if txCount == txFrames.count { try? flushTx() }
        }
        try? flushTx()
    }
}

extension Frame {
    func with(length: Int) -> Frame {
        var copy = self
        copy.length = length
        return copy
    }
}
