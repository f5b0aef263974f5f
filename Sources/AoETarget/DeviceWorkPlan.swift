/// The one merge rule, for every device queue. Initiators interleave the frames of concurrent I/Os (aoectl
/// round-robins them); sorted by kind and LBA, the frames of one I/O meet again, and adjacent requests of the
/// same kind become one device transfer. Every ready request was admitted by the scheduler, so none overlaps
/// a write in flight or ready: any order among them is safe. Pure.
public enum MergeRule {
    public enum Kind: UInt64, Sendable {
        case read = 1, write, durableWrite
        /// FLUSH and pass-through: never merged, after the transfers.
        case single
    }

    public struct Candidate: Sendable, Equatable {
        public var slot: Int32
        public var kind: Kind
        public var lba: UInt64
        public var sectors: Int

        public init(slot: Int32, kind: Kind, lba: UInt64 = 0, sectors: Int = 0) {
            self.slot = slot
            self.kind = kind
            self.lba = lba
            self.sectors = sectors
        }

        /// Kind above the LBA (48 bits), so one sort orders by kind, then LBA.
        var key: UInt64 { kind.rawValue << 48 | lba }
    }

    /// Sorts `candidates` and writes to `runs` the length of each transfer: the first `runs[0]` candidates are
    /// one transfer, the next `runs[1]` the next, and so on. A run continues while the next candidate has the
    /// same kind, starts where the run ends, and keeps the run within `maxMembers` and `maxSectors`.
    public static func group(_ candidates: inout [Candidate], maxMembers: Int, maxSectors: Int, runs: inout [Int]) {
        runs.removeAll(keepingCapacity: true)
        candidates.sort { $0.key < $1.key }
        var i = 0
        while i < candidates.count {
            let first = candidates[i]
            var end = first.lba + UInt64(first.sectors)
            var sectors = first.sectors
            var n = 1
            if first.kind != .single {
                while i + n < candidates.count, n < maxMembers {
                    let next = candidates[i + n]
                    guard next.kind == first.kind, next.lba == end, sectors + next.sectors <= maxSectors else { break }
                    end += UInt64(next.sectors)
                    sectors += next.sectors
                    n += 1
                }
            }
            runs.append(n)
            i += n
        }
    }
}

/// Group commit, the one for every device queue: a durable write is answered only after a flush that was
/// queued after the write completed has finished. Each commit covers every write that completed before it
/// was queued; up to `maxCommits` run at once, so writes that complete while one runs need not wait for it to
/// end before theirs starts. N concurrent writes cost about two flushes, not N. Pure: the caller queues the
/// flushes and answers the writes.
public struct GroupCommit: Sendable {
    public static let maxCommits = 4
    /// Transfers (by id) that completed and wait for a commit to be queued.
    public private(set) var waiting: [Int] = []
    /// Per commit in flight (by index): the transfers it covers; empty when that commit is free.
    private var covered: [[Int]]

    public init(capacity: Int) {
        waiting.reserveCapacity(capacity)
        covered = (0..<Self.maxCommits).map { _ in
            var list = [Int]()
            list.reserveCapacity(capacity)
            return list
        }
    }

    public mutating func writeCompleted(_ id: Int) { waiting.append(id) }

    /// Takes the waiting transfers into a free commit and returns its index, for the caller to queue its flush;
    /// nil when nothing waits or every commit is in flight.
    public mutating func startCommit() -> Int? {
        guard !waiting.isEmpty, let free = covered.firstIndex(where: \.isEmpty) else { return nil }
        swap(&waiting, &covered[free])
        return free
    }

    /// Commit `index` finished (or failed): calls `body` with each transfer it covered, then frees it.
    public mutating func finish(_ index: Int, _ body: (Int) -> Void) {
        for id in covered[index] { body(id) }
        covered[index].removeAll(keepingCapacity: true)
    }

    public var inFlight: Int { covered.count { !$0.isEmpty } }
}
