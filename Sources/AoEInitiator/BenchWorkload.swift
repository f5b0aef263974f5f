import Histogram
import LinuxSystem

public struct BenchOptions: Sendable {
    public enum Mode: String, CaseIterable, Sendable {
        case randread, randwrite, read, write, randrw
        var writes: Bool { self != .randread && self != .read }
        var reads: Bool { self != .randwrite && self != .write }
        var random: Bool { self == .randread || self == .randwrite || self == .randrw }
    }

    public var mode: Mode = .randread
    /// Percentage of reads in randrw.
    public var readPercent = 50
    public var blockSectors = 8
    public var duration: Double? = 10
    public var count: Int? = nil
    public var regionStart: UInt64 = 0
    public var regionSectors: UInt64 = 0
    public var warmup: Double = 0
    /// Write the verify pattern and check every read against it; read back all written blocks at the end.
    public var verify = false
    /// Reads check the pattern a previous run wrote (any generation), without writing first.
    public var verifyExisting = false
    public var seed: UInt64 = 1

    public init() {}
}

/// The `aoectl bench` workload as an I/O source: optional prefill, warm-up, the measured phase, and with
/// --verify a final read-back of every block written. No two I/Os touch one block at once, so each read has
/// exactly one expected generation.
public final class BenchWorkload: BlockIOSource {
    enum Phase { case prefill, warmup, measure, readback, done }

    public struct Report: Sendable {
        public var ios = 0
        public var reads = 0
        public var writes = 0
        public var bytes = 0
        public var seconds = 0.0
        public var errors = 0
        public var firstError: String? = nil
        public var verifyMismatches = 0
        public var firstMismatch: String? = nil
        public var verifiedBlocks = 0
        public var latency = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        public var iops: Double { seconds > 0 ? Double(ios) / seconds : 0 }
        public var megabytesPerSecond: Double { seconds > 0 ? Double(bytes) / seconds / 1_000_000 : 0 }
    }

    public let options: BenchOptions
    public private(set) var report = Report()
    private var phase: Phase
    private let blocks: Int
    /// Per block, the generation last written; kept only with --verify (empty otherwise), the one use.
    private var generations: [UInt32]
    // The per-I/O state below lives in memory of our own rather than in arrays: every I/O touches it twice,
    // and an array on a class costs an exclusivity check and a uniqueness check per access.
    private let busy: BlockSet
    private let buffers: UnsafeMutableRawPointer
    /// A stack of free buffer indices; `freeCount` of them.
    private let freeBuffers: UnsafeMutablePointer<Int>
    private var freeCount: Int
    /// Per buffer: the block its I/O targets and the generation a write carries.
    private let inFlight: UnsafeMutablePointer<(block: Int, generation: UInt32)>
    private let queueDepth: Int
    private var rng: UInt64
    private var sequentialNext = 0
    private var readbackNext = 0
    private var generation: UInt32 = 1
    private var phaseEnds = 0.0
    private var measureStarted = 0.0
    private var issuedInMeasure = 0
    private let bufferBytes: Int
    /// Called about once a second during the measured phase (live progress).
    public var onProgress: ((Report) -> Void)?
    private var lastProgress = 0.0

    public init(options: BenchOptions, queueDepth: Int) {
        precondition(options.blockSectors > 0 && options.regionSectors >= UInt64(options.blockSectors))
        self.options = options
        blocks = Int(options.regionSectors / UInt64(options.blockSectors))
        generations = options.verify ? Array(repeating: 0, count: blocks) : []
        busy = BlockSet(capacity: queueDepth)
        bufferBytes = options.blockSectors * 512
        buffers = UnsafeMutableRawPointer.allocate(byteCount: bufferBytes * queueDepth, alignment: 4096)
        freeBuffers = .allocate(capacity: queueDepth)
        for i in 0..<queueDepth { (freeBuffers + i).initialize(to: i) }
        freeCount = queueDepth
        inFlight = .allocate(capacity: queueDepth)
        inFlight.initialize(repeating: (0, 0), count: queueDepth)
        self.queueDepth = queueDepth
        rng = options.seed &* 0x9E37_79B9_7F4A_7C15 | 1
        phase = options.verify && !options.mode.writes ? .prefill : .warmup
    }

    deinit {
        buffers.deallocate()
        busy.deallocate()
        freeBuffers.deallocate()
        inFlight.deallocate()
    }

    private func isBusy(_ block: Int) -> Bool { busy.contains(block) }
    private func setBusy(_ block: Int) { busy.insert(block) }
    private func clearBusy(_ block: Int) { busy.remove(block) }

    public var isFinished: Bool { phase == .done }

    private func lba(_ block: Int) -> UInt64 { options.regionStart + UInt64(block * options.blockSectors) }

    private func random() -> UInt64 { VerifyPattern.splitmix(&rng) }

    public func nextIO(now: Double) -> BlockIO? {
        advancePhase(now: now)
        guard freeCount > 0 else { return nil }
        let buffer = freeBuffers[freeCount - 1]
        let block: Int
        let isWrite: Bool
        switch phase {
        case .done:
            return nil
        case .prefill:
            guard sequentialNext < blocks else { return nil }
            block = sequentialNext
            sequentialNext += 1
            isWrite = true
        case .readback:
            while readbackNext < blocks && generations[readbackNext] == 0 { readbackNext += 1 }
            guard readbackNext < blocks, !isBusy(readbackNext) else { return nil }
            block = readbackNext
            readbackNext += 1
            isWrite = false
        case .warmup, .measure:
            if phase == .measure {
                // Once the phase is over, start nothing new: it ends when what is in flight has completed.
                if let count = options.count, issuedInMeasure >= count { return nil }
                if let duration = options.duration, now - measureStarted >= duration { return nil }
            }
            switch options.mode {
            case .randread: isWrite = false
            case .randwrite, .write: isWrite = true
            case .read: isWrite = false
            case .randrw: isWrite = Int(random() % 100) >= options.readPercent
            }
            if options.mode.random {
                var candidate = Int(random() % UInt64(blocks))
                var tries = 0
                while isBusy(candidate) && tries < 8 { candidate = Int(random() % UInt64(blocks)); tries += 1 }
                if isBusy(candidate) { return nil }
                block = candidate
            } else {
                block = sequentialNext % blocks
                if isBusy(block) { return nil }
                sequentialNext += 1
            }
            if phase == .measure { issuedInMeasure += 1 }
        }
        freeCount -= 1
        setBusy(block)
        let pointer = buffers + buffer * bufferBytes
        if isWrite {
            generation = generation &+ 1 == 0 ? 1 : generation &+ 1
            if options.verify || options.verifyExisting {
                for s in 0..<options.blockSectors {
                    VerifyPattern.fill(pointer + s * 512, lba: lba(block) + UInt64(s), generation: UInt64(generation), seed: options.seed)
                }
            } else {
                pointer.storeBytes(of: lba(block).littleEndian, toByteOffset: 0, as: UInt64.self)
            }
        }
        inFlight[buffer] = (block, isWrite ? generation : 0)
        return BlockIO(lba: lba(block), sectors: options.blockSectors, isWrite: isWrite, buffer: pointer, id: buffer)
    }

    private func advancePhase(now: Double) {
        switch phase {
        case .prefill:
            if sequentialNext >= blocks && freeCount == queueDepth {
                sequentialNext = 0
                phase = .warmup
                phaseEnds = now + options.warmup
            }
        case .warmup:
            if phaseEnds == 0 { phaseEnds = now + options.warmup }
            if now >= phaseEnds {
                phase = .measure
                measureStarted = now
                lastProgress = now
                report = Report()
            }
        case .measure:
            let timeUp = options.duration.map { now - measureStarted >= $0 } ?? false
            let countUp = options.count.map { issuedInMeasure >= $0 } ?? false
            if (timeUp || countUp) && freeCount == queueDepth {
                report.seconds = now - measureStarted
                phase = options.verify && options.mode.writes ? .readback : .done
            } else if now - lastProgress >= 1 {
                lastProgress = now
                var snapshot = report
                snapshot.seconds = now - measureStarted
                onProgress?(snapshot)
            }
        case .readback:
            if readbackNext >= blocks && freeCount == queueDepth { phase = .done }
        case .done:
            break
        }
    }


    public func completed(_ io: BlockIO, error: ClientError?, latencyNanoseconds: UInt64) {
        let buffer = io.id
        let (block, writtenGeneration) = inFlight[buffer]
        freeBuffers[freeCount] = buffer
        freeCount += 1
        clearBusy(block)
        if let error {
            report.errors += 1
            if report.firstError == nil { report.firstError = "\(io.isWrite ? "write" : "read") at LBA \(io.lba): \(error)" }
            // After a failed write the block's content is unknown: stop expecting a generation there.
            if io.isWrite && options.verify { generations[block] = 0 }
            return
        }
        if io.isWrite {
            if options.verify { generations[block] = writtenGeneration }
        } else if options.verify || options.verifyExisting {
            let expected: UInt64? = options.verifyExisting ? nil : (generations[block] == 0 ? nil : UInt64(generations[block]))
            if options.verifyExisting || expected != nil {
                var bad: VerifyPattern.Mismatch? = nil
                for s in 0..<io.sectors where bad == nil {
                    bad = VerifyPattern.check(io.buffer + s * 512, lba: io.lba + UInt64(s), generation: expected, seed: options.seed)
                }
                if let bad {
                    report.verifyMismatches += 1
                    if report.firstMismatch == nil { report.firstMismatch = bad.description }
                } else {
                    report.verifiedBlocks += 1
                }
            }
        }
        if phase == .measure { Self.count(io, latencyNanoseconds: latencyNanoseconds, in: &report) }
    }

    /// One access to `report` for all of an I/O's counters, rather than an exclusivity check for each.
    private static func count(_ io: BlockIO, latencyNanoseconds: UInt64, in report: inout Report) {
        report.ios += 1
        report.bytes += io.sectors * 512
        if io.isWrite { report.writes += 1 } else { report.reads += 1 }
        report.latency.record(latencyNanoseconds)
    }
}

