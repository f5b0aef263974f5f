import ATACore
import AoEWire
import AoEInitiator
import SCSIEmulation
import TCMU
import LinuxSystem

/// Serves a TCMU ring from an AoE target: each SCSI command the kernel queues becomes an answer emulated
/// here (SCSIDisk) or block I/O and ATA commands for the engine, whose completions become the SCSI status.
/// Reads and writes go straight between the ring's data buffers and the frames; one BlockIO per buffer.
///
/// Runs on the engine's thread. Once `stopRequested` says so (it may be set from any thread), it takes no new
/// command and finishes when what it took is answered.
public final class TCMUBridge: BlockIOSource {
    /// What one taken SCSI command waits for.
    enum Work {
        case transfer(write: Bool)
        case flush
        case trim
        case passThrough(ATAPassThroughRequest)
    }

    struct Pending {
        var id: UInt16
        var work: Work
        var buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>
        var partsLeft = 0
        var failure: SCSIResult? = nil
        /// A FUA write's flush is sent once its data is acknowledged.
        var flushAfter = false
    }

    public struct Counters: Sendable {
        public var commands = 0
        public var reads = 0
        public var writes = 0
        public var flushes = 0
        public var unmaps = 0
        public var passThroughs = 0
        public var refused = 0
        public var failed = 0
    }

    private let ring: TCMURing
    private let disk: SCSIDisk
    private let lba48: Bool
    /// Called when completions are on the ring (a write to the UIO device).
    private let announce: () -> Void
    /// Sleeps up to the given seconds, until the kernel queues commands (or a stop wakes it).
    private let waitForCommands: (Double) -> Void
    private let stopRequested: () -> Bool
    private let log: (String) -> Void
    /// A guest that floods unknown commands gets its refusals logged ten a second, the rest counted.
    private var refusalLines = LineBudget(perSecond: 10)
    private var pending: [Pending?]
    /// BlockIOs made but not handed to the engine yet (a FIFO of `queuedCount` from `queuedHead`).
    private var queued: [BlockIO]
    private var queuedHead = 0
    private var queuedCount = 0
    private var outstanding = 0
    private var taken = 0
    /// Per ring slot, room for one pass-through's data (at most one frame).
    private let bounce: UnsafeMutableRawPointer
    private let bounceBytes: Int
    public private(set) var counters = Counters()
    public private(set) var ringError: TCMURing.RingError?

    public init(ring: TCMURing, disk: SCSIDisk, announce: @escaping () -> Void,
                waitForCommands: @escaping (Double) -> Void, stopRequested: @escaping () -> Bool, log: @escaping (String) -> Void) {
        self.ring = ring
        self.disk = disk
        lba48 = disk.drive.identify.supportsLBA48
        self.announce = announce
        self.waitForCommands = waitForCommands
        self.stopRequested = stopRequested
        self.log = log
        pending = Array(repeating: nil, count: ring.slotCount)
        // Room for every slot's command at its largest: a BlockIO per buffer, or one flush after a FUA write.
        queued = Array(repeating: BlockIO(lba: 0, sectors: 0, isWrite: false, buffer: UnsafeMutableRawPointer(bitPattern: 1)!, id: 0),
                       count: ring.slotCount * (ring.maxBuffers + 1))
        bounceBytes = max(1, disk.drive.passThroughMaxSectors) * 512
        bounce = .allocate(byteCount: bounceBytes * ring.slotCount, alignment: 4096)
    }

    deinit { bounce.deallocate() }

    public var isFinished: Bool { (stopRequested() || ringError != nil) && taken == 0 && queuedCount == 0 }

    public func nextIO(now: Double) -> BlockIO? {
        if queuedCount == 0 && ringError == nil && !stopRequested() {
            takeCommands()
            // Nothing to do at all: sleep on the ring rather than spin the engine's loop.
            if queuedCount == 0 && outstanding == 0 && !ring.hasPending {
                reportLeftOutRefusals(refusalLines.takeLeftOut(now: now))
                waitForCommands(0.2)
                takeCommands()
            }
        }
        if ring.unannounced > 0 { announceCompletions() }
        guard queuedCount > 0 else { return nil }
        let io = queued[queuedHead]
        queuedHead = (queuedHead + 1) % queued.count
        queuedCount -= 1
        outstanding += 1
        return io
    }

    private func reportLeftOutRefusals(_ count: Int) {
        if count > 0 { log("aoectl attach: \(count) more refused CDBs in the last second, not logged") }
    }

    private func announceCompletions() {
        announce()
        ring.announced()
    }

    private func enqueue(_ io: BlockIO) {
        precondition(queuedCount < queued.count, "bridge queue overflow")
        queued[(queuedHead + queuedCount) % queued.count] = io
        queuedCount += 1
    }

    private func takeCommands() {
        // A command may need a BlockIO per buffer: take one only when its largest case fits.
        while ring.hasFreeSlot && queued.count - queuedCount >= ring.maxBuffers + 1 {
            let next: (slot: Int, command: TCMUCommand)?
            do { next = try ring.take() } catch {
                ringError = error
                log("aoectl attach: \(error); no more commands are taken")
                return
            }
            guard let (slot, command) = next else { return }
            taken += 1
            counters.commands += 1
            start(slot: slot, command)
        }
    }

    private func start(slot: Int, _ command: TCMUCommand) {
        let length = command.dataLength
        switch disk.action(forCDB: command.cdb, dataLength: length) {
        case .respond(let result):
            respond(slot: slot, command, result)
        case .read(let lba, let sectors):
            counters.reads += 1
            startTransfer(slot: slot, command, lba: lba, sectors: sectors, write: false, forceUnitAccess: false)
        case .write(let lba, let sectors, let forceUnitAccess):
            counters.writes += 1
            startTransfer(slot: slot, command, lba: lba, sectors: sectors, write: true, forceUnitAccess: forceUnitAccess)
        case .synchronizeCache:
            counters.flushes += 1
            pending[slot] = Pending(id: command.id, work: .flush, buffers: command.buffers, partsLeft: 1)
            enqueueFlush(slot: slot)
        case .unmap(let length):
            counters.unmaps += 1
            var list = [UInt8](repeating: 0, count: length)
            list.withUnsafeMutableBytes { gather(command.buffers, into: $0.baseAddress!, bytes: length) }
            switch disk.unmapRanges(list) {
            case .failure(let refusal):
                respond(slot: slot, command, .refused(refusal))
            case .success(let ranges) where ranges.isEmpty:
                respond(slot: slot, command, .good())
            case .success(let ranges):
                // The limits of VPD B0h make one UNMAP one TRIM command, whose entries fit the slot's buffer.
                let payloads = TrimRangeList.commandPayloads(ranges.map { ($0.lba, $0.count) }, blocksPerCommand: disk.drive.trimBlocksPerCommand)
                precondition(payloads.count == 1 && payloads[0].count <= bounceBytes)
                let data = bounce + slot * bounceBytes
                payloads[0].withUnsafeBytes { data.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                let blocks = payloads[0].count / 512
                let task = ATAHeader(flags: .extended, errFeature: TrimRangeList.trimFeature, sectorCount: UInt8(blocks),
                                     cmdStatus: ATACommand.dataSetManagement.rawValue, lba: 0)
                pending[slot] = Pending(id: command.id, work: .trim, buffers: command.buffers, partsLeft: 1)
                // TRIM is safe to repeat: a lost reply is sent again.
                enqueue(BlockIO(command: task, sectors: blocks, isWrite: true, buffer: data, id: slot, resendable: true))
            }
        case .ataPassThrough(let request):
            counters.passThroughs += 1
            let data = bounce + slot * bounceBytes
            if request.direction == .toDevice { gather(command.buffers, into: data, bytes: request.byteCount) }
            let resendable = ATACommand(request.task.cmdStatus).isSafeToRepeat(feature: request.task.errFeature)
            pending[slot] = Pending(id: command.id, work: .passThrough(request), buffers: command.buffers, partsLeft: 1)
            enqueue(BlockIO(command: request.task, sectors: request.sectors, isWrite: request.direction == .toDevice,
                            buffer: data, id: slot, resendable: resendable))
        }
    }

    /// Completes a command answered here; a refusal is counted and logged (at most 10 lines a second).
    private func respond(slot: Int, _ command: TCMUCommand, _ result: SCSIResult) {
        if let refusal = result.refusal {
            counters.refused += 1
            let (allowed, leftOut) = refusalLines.take(now: monotonicSeconds())
            reportLeftOutRefusals(leftOut)
            if allowed { log("aoectl attach: refused CDB \(hexBytes(command.cdb.prefix(max(6, SCSIDisk.cdbLength(command.cdb.first ?? 0xFF))))): \(refusal)") }
        }
        finish(slot: slot, id: command.id, result, buffers: command.buffers)
    }

    /// One BlockIO per data buffer, at consecutive LBAs: the engine splits each into frames.
    private func startTransfer(slot: Int, _ command: TCMUCommand, lba: UInt64, sectors: Int, write: Bool, forceUnitAccess: Bool) {
        var p = Pending(id: command.id, work: .transfer(write: write), buffers: command.buffers)
        p.flushAfter = forceUnitAccess
        var at = lba
        for buffer in command.buffers where buffer.count > 0 {
            let n = buffer.count / 512
            enqueue(BlockIO(lba: at, sectors: n, isWrite: write, buffer: buffer.baseAddress!, id: slot))
            at += UInt64(n)
            p.partsLeft += 1
        }
        pending[slot] = p
        if at != lba + UInt64(sectors) {
            // The emulator checked the length against the buffers; pieces not whole sectors would land here.
            pending[slot]?.failure = .checkCondition(.illegalRequest, .invalidFieldInCDB)
        }
        if p.partsLeft == 0 { complete(slot: slot) }
    }

    private func enqueueFlush(slot: Int) {
        let task = lba48 ? ATAHeader(flags: .extended, cmdStatus: ATACommand.flushCacheExt.rawValue)
                         : ATAHeader(cmdStatus: ATACommand.flushCache.rawValue, lba: 0xE000_0000)
        enqueue(BlockIO(command: task, sectors: 0, isWrite: false, buffer: bounce + slot * bounceBytes, id: slot, resendable: true))
    }

    public func completed(_ io: BlockIO, error: ClientError?, latencyNanoseconds: UInt64) {
        outstanding -= 1
        let slot = io.id
        guard var p = pending[slot] else { return }
        p.partsLeft -= 1
        switch p.work {
        case .transfer(let write):
            if let error, p.failure == nil { p.failure = failure(of: error, write ? .write : .read) }
            if p.partsLeft == 0 && p.failure == nil && p.flushAfter {
                p.flushAfter = false
                p.partsLeft = 1
                p.work = .flush
                pending[slot] = p
                enqueueFlush(slot: slot)
                return
            }
        case .flush, .trim:
            let operation: SCSIDisk.BlockOperation = if case .trim = p.work { .unmap } else { .synchronizeCache }
            if let error { p.failure = failure(of: error, operation) }
            else if let reply = io.command?.reply, ATAStatus(rawValue: reply.cmdStatus).indicatesFailure {
                p.failure = disk.failedTransferResult(operation, registers: reply)
            }
        case .passThrough(let request):
            let result: SCSIResult
            if let error {
                log("aoectl attach: pass-through command \(ATACommand(request.task.cmdStatus)) got no answer: \(error)")
                result = disk.transportFailureResult()
            } else {
                let reply = io.command?.reply ?? ATAHeader(cmdStatus: ATAStatus.failed.rawValue)
                let dataIn = request.direction == .fromDevice && !ATAStatus(rawValue: reply.cmdStatus).indicatesFailure
                    ? Array(UnsafeRawBufferPointer(start: io.buffer, count: request.byteCount)) : []
                result = disk.result(of: request, registers: reply, dataIn: dataIn)
            }
            pending[slot] = nil
            finish(slot: slot, id: p.id, result, buffers: p.buffers)
            return
        }
        pending[slot] = p
        if p.partsLeft == 0 { complete(slot: slot) }
    }

    private func failure(of error: ClientError, _ operation: SCSIDisk.BlockOperation) -> SCSIResult {
        counters.failed += 1
        if case .ataFailed(let status, let err, let lba) = error {
            return disk.failedTransferResult(operation, registers: ATAHeader(flags: .extended, errFeature: err, cmdStatus: status, lba: lba))
        }
        log("aoectl attach: \(operation) failed: \(error)")
        return disk.transportFailureResult()
    }

    private func complete(slot: Int) {
        guard let p = pending[slot] else { return }
        pending[slot] = nil
        finish(slot: slot, id: p.id, p.failure ?? .good(), buffers: p.buffers)
    }

    /// Answers the command on the ring: data-in emulated here is scattered into its buffers first.
    private func finish(slot: Int, id: UInt16, _ result: SCSIResult, buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) {
        var readLength: Int? = nil
        if !result.dataIn.isEmpty {
            let n = result.dataIn.withUnsafeBytes { scatter($0, into: buffers) }
            if ring.acceptsReadLength { readLength = n }
        }
        let failed: TCMURing.RingError? = result.sense.withUnsafeBytes { sense in
            do throws(TCMURing.RingError) {
                try ring.complete(slot: slot, id: id, status: result.status.rawValue, sense: sense, readLength: readLength)
                return nil
            } catch { return error }
        }
        if let failed {
            ringError = failed
            log("aoectl attach: \(failed)")
        }
        taken -= 1
    }

    private func gather(_ buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, into data: UnsafeMutableRawPointer, bytes: Int) {
        var at = 0
        for b in buffers where at < bytes {
            let n = min(b.count, bytes - at)
            (data + at).copyMemory(from: b.baseAddress!, byteCount: n)
            at += n
        }
    }

    @discardableResult
    private func scatter(_ data: UnsafeRawBufferPointer, into buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) -> Int {
        var at = 0
        for b in buffers where at < data.count {
            let n = min(b.count, data.count - at)
            b.baseAddress!.copyMemory(from: data.baseAddress! + at, byteCount: n)
            at += n
        }
        return at
    }
}

func hexBytes(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { let s = String($0, radix: 16); return s.count == 1 ? "0" + s : s }.joined(separator: " ")
}
