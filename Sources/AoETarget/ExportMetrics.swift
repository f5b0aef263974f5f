import Synchronization
import ATACore
import AoEWire

/// Request latencies, written by the export's event loop with relaxed atomics (no lock, no allocation) and
/// read by the metrics exporter at any time. Buckets resolve 10 µs to 10 s in 1-2-5 steps. One thread writes
/// (the event loop), so an update is a relaxed load and store, not a locked read-modify-write.
public final class LatencyHistogram: @unchecked Sendable {
    /// Upper bounds, in nanoseconds.
    public static let bounds: [UInt64] = [
        10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
        1_000_000, 2_000_000, 5_000_000, 10_000_000, 20_000_000, 50_000_000,
        100_000_000, 200_000_000, 500_000_000, 1_000_000_000, 2_000_000_000, 5_000_000_000, 10_000_000_000,
    ]
    public static let bucketCount = bounds.count + 1
    /// Per bucket (not cumulative), then one past the last bound.
    private let buckets: UnsafeMutablePointer<Atomic<Int>>
    private let sumNanoseconds: UnsafeMutablePointer<Atomic<UInt64>>
    private let ownsStorage: Bool

    public convenience init() {
        let buckets = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: Self.bucketCount)
        for i in 0..<Self.bucketCount { (buckets + i).initialize(to: Atomic(0)) }
        let sum = UnsafeMutablePointer<Atomic<UInt64>>.allocate(capacity: 1)
        sum.initialize(to: Atomic(0))
        self.init(buckets: buckets, sum: sum, owned: true)
    }

    /// A histogram over storage someone else writes (and, unless `owned`, frees): `bucketCount` counters and a sum.
    init(buckets: UnsafeMutablePointer<Atomic<Int>>, sum: UnsafeMutablePointer<Atomic<UInt64>>, owned: Bool) {
        self.buckets = buckets
        sumNanoseconds = sum
        ownsStorage = owned
    }

    deinit {
        guard ownsStorage else { return }
        buckets.deinitialize(count: Self.bucketCount)
        buckets.deallocate()
        sumNanoseconds.deinitialize(count: 1)
        sumNanoseconds.deallocate()
    }

    /// The bucket of a latency, by comparisons against constants: no array, and the common sub-millisecond
    /// answers take three or four of them.
    @inline(__always)
    public static func bucket(of ns: UInt64) -> Int {
        if ns <= 100_000 { return ns <= 10_000 ? 0 : ns <= 20_000 ? 1 : ns <= 50_000 ? 2 : 3 }
        if ns <= 10_000_000 {
            return ns <= 1_000_000 ? (ns <= 200_000 ? 4 : ns <= 500_000 ? 5 : 6) : (ns <= 2_000_000 ? 7 : ns <= 5_000_000 ? 8 : 9)
        }
        if ns <= 1_000_000_000 {
            return ns <= 100_000_000 ? (ns <= 20_000_000 ? 10 : ns <= 50_000_000 ? 11 : 12) : (ns <= 200_000_000 ? 13 : ns <= 500_000_000 ? 14 : 15)
        }
        return ns <= 2_000_000_000 ? 16 : ns <= 5_000_000_000 ? 17 : ns <= 10_000_000_000 ? 18 : 19
    }

    /// One writer only: a relaxed load and store, not a locked read-modify-write.
    @inline(__always)
    static func record(_ ns: UInt64, buckets: UnsafeMutablePointer<Atomic<Int>>, sum: UnsafeMutablePointer<Atomic<UInt64>>) {
        let bucket = buckets + bucket(of: ns)
        bucket.pointee.store(bucket.pointee.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        sum.pointee.store(sum.pointee.load(ordering: .relaxed) &+ ns, ordering: .relaxed)
    }

    @inline(__always)
    public func record(nanoseconds: UInt64) { Self.record(nanoseconds, buckets: buckets, sum: sumNanoseconds) }

    public struct Snapshot: Sendable, Equatable {
        /// Cumulative: observations at or below each bound, as Prometheus wants them.
        public var cumulative: [Int]
        public var count: Int
        public var sumSeconds: Double
    }

    /// A consistent-enough view: each value is read once; the count is the sum of the buckets read, so the
    /// +Inf bucket and the count always agree.
    public func snapshot() -> Snapshot {
        var cumulative: [Int] = []
        cumulative.reserveCapacity(Self.bounds.count)
        var running = 0
        for i in 0..<Self.bounds.count {
            running += buckets[i].load(ordering: .relaxed)
            cumulative.append(running)
        }
        running += buckets[Self.bounds.count].load(ordering: .relaxed)
        return Snapshot(cumulative: cumulative, count: running,
                        sumSeconds: Double(sumNanoseconds.pointee.load(ordering: .relaxed)) / 1e9)
    }
}

/// What an export's metrics add to its counters (`TargetStatistics`): latency by operation, bytes by
/// operation, AoE errors by code, pass-through by opcode, retransmissions seen, requests in flight. Written by
/// the export's event loop, read by the exporter.
public final class ExportMetrics: @unchecked Sendable {
    /// The `op` label: what kind of ATA command a request was.
    public enum Operation: Int, CaseIterable, Sendable {
        case read, write, flush, other

        public var name: String { ["read", "write", "flush", "other"][rawValue] }

        public static func of(_ command: ATACommand) -> Operation {
            switch command {
            case .readSectors, .readSectorsExt, .readDMA, .readDMAExt, .readVerifySectors, .readVerifySectorsExt: .read
            case .writeSectors, .writeSectorsExt, .writeDMA, .writeDMAExt: .write
            case .flushCache, .flushCacheExt: .flush
            default: .other
            }
        }
    }

    /// From frame received to reply handed to the kernel, by operation; its count is the I/Os answered. The
    /// four sit in one block (`requestBuckets`, `requestSums`) that `answered` writes without a class reference.
    public let readLatency: LatencyHistogram, writeLatency: LatencyHistogram
    public let flushCommandLatency: LatencyHistogram, otherLatency: LatencyHistogram
    private let requestBuckets: UnsafeMutablePointer<Atomic<Int>>
    private let requestSums: UnsafeMutablePointer<Atomic<UInt64>>

    /// A switch, not an array: no reference counting per request.
    @inline(__always)
    public func latency(_ operation: Operation) -> LatencyHistogram {
        switch operation {
        case .read: readLatency
        case .write: writeLatency
        case .flush: flushCommandLatency
        case .other: otherLatency
        }
    }
    /// Device flushes (fdatasync, or the drive's flush): from submitted to completed.
    public let flushLatency = LatencyHistogram()
    private let bytes: UnsafeMutablePointer<Atomic<Int>>
    /// By AoE error code (0-15; the spec defines 1-8).
    private let aoeErrors: UnsafeMutablePointer<Atomic<Int>>
    /// By ATA opcode.
    private let passThroughSent: UnsafeMutablePointer<Atomic<Int>>
    private let passThroughRefused: UnsafeMutablePointer<Atomic<Int>>
    public let retransmitsSeen = Atomic<Int>(0)
    public let requestsInFlight = Atomic<Int>(0)

    /// For an export on several NICs: each NIC's name and the frames it received and sent (the `interface`
    /// label); empty for one NIC, whose counts are the export's.
    public let interfaces: [String]
    public let framesReceivedByInterface: UnsafeMutablePointer<Atomic<Int>>
    public let framesSentByInterface: UnsafeMutablePointer<Atomic<Int>>

    public init(interfaces: [String] = []) {
        self.interfaces = interfaces
        func counters(_ n: Int) -> UnsafeMutablePointer<Atomic<Int>> {
            let p = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: n)
            for i in 0..<n { (p + i).initialize(to: Atomic(0)) }
            return p
        }
        let operations = Operation.allCases.count
        let requestBuckets = counters(operations * LatencyHistogram.bucketCount)
        let requestSums = UnsafeMutablePointer<Atomic<UInt64>>.allocate(capacity: operations)
        for i in 0..<operations { (requestSums + i).initialize(to: Atomic(0)) }
        (self.requestBuckets, self.requestSums) = (requestBuckets, requestSums)
        func view(_ op: Operation) -> LatencyHistogram {
            LatencyHistogram(buckets: requestBuckets + op.rawValue * LatencyHistogram.bucketCount, sum: requestSums + op.rawValue, owned: false)
        }
        (readLatency, writeLatency, flushCommandLatency, otherLatency) = (view(.read), view(.write), view(.flush), view(.other))
        bytes = counters(operations)
        aoeErrors = counters(16)
        passThroughSent = counters(256)
        passThroughRefused = counters(256)
        framesReceivedByInterface = counters(max(1, interfaces.count))
        framesSentByInterface = counters(max(1, interfaces.count))
    }

    deinit {
        for (p, n) in [(bytes, Operation.allCases.count), (aoeErrors, 16), (passThroughSent, 256), (passThroughRefused, 256),
                       (framesReceivedByInterface, max(1, interfaces.count)), (framesSentByInterface, max(1, interfaces.count)),
                       (requestBuckets, Operation.allCases.count * LatencyHistogram.bucketCount)] {
            p.deinitialize(count: n)
            p.deallocate()
        }
        requestSums.deinitialize(count: Operation.allCases.count)
        requestSums.deallocate()
    }

    @inline(__always)
    public func answered(_ operation: Operation, bytes moved: Int, nanoseconds: UInt64) {
        LatencyHistogram.record(nanoseconds, buckets: requestBuckets + operation.rawValue &* LatencyHistogram.bucketCount,
                                sum: requestSums + operation.rawValue)
        if moved > 0 { bytes[operation.rawValue].bump(moved) }
    }

    public func aoeError(_ error: AoEError) { aoeErrors[Int(error.rawValue & 15)].bump(1) }
    public func passThrough(opcode: UInt8, refused: Bool) {
        (refused ? passThroughRefused : passThroughSent)[Int(opcode)].bump(1)
    }

    public func bytes(_ operation: Operation) -> Int { bytes[operation.rawValue].load(ordering: .relaxed) }
    /// Nonzero counts only, by code.
    public var aoeErrorsByCode: [(code: UInt8, count: Int)] {
        (0..<16).compactMap { i in
            let n = aoeErrors[i].load(ordering: .relaxed)
            return n > 0 ? (UInt8(i), n) : nil
        }
    }
    public func passThroughByOpcode(refused: Bool) -> [(opcode: UInt8, count: Int)] {
        let p = refused ? passThroughRefused : passThroughSent
        return (0..<256).compactMap { i in
            let n = p[i].load(ordering: .relaxed)
            return n > 0 ? (UInt8(i), n) : nil
        }
    }
}

/// Retransmissions as the target sees them: the same source asking for the same LBA range, the same way,
/// again within `window` (Linux resends with a new tag, so tags cannot tell). A direct-mapped table of recent
/// requests: constant work per request, no allocation; a collision forgets an entry (an undercount, never a
/// false positive for a different request, since the whole key is compared). Pure: the caller passes the time.
public struct RetransmitDetector: ~Copyable {
    private static let size = 4096
    private let keys: UnsafeMutablePointer<UInt64>
    private let times: UnsafeMutablePointer<UInt64>
    public let windowNanoseconds: UInt64

    public init(windowSeconds: Double = 1) {
        keys = .allocate(capacity: Self.size)
        keys.initialize(repeating: 0, count: Self.size)
        times = .allocate(capacity: Self.size)
        times.initialize(repeating: 0, count: Self.size)
        windowNanoseconds = UInt64(windowSeconds * 1e9)
    }

    deinit {
        keys.deallocate()
        times.deallocate()
    }

    /// Notes a request; true when the same one was seen within the window.
    public func seen(_ request: RequestKey, now: UInt64) -> Bool {
        let key = request.value
        let i = Int(key % UInt64(Self.size))
        let repeated = keys[i] == key && now &- times[i] < windowNanoseconds
        keys[i] = key
        times[i] = now
        return repeated
    }
}

extension Atomic where Value == Int {
    /// Adds for a counter with one writer: a relaxed load and store (readers see old or new, never torn).
    @inline(__always)
    func bump(_ amount: Int) { store(load(ordering: .relaxed) &+ amount, ordering: .relaxed) }
}
