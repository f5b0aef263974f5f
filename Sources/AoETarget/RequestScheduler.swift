/// Orders device work that runs concurrently. A request that overlaps an earlier unfinished one, where either
/// writes, starts only after the earlier one completes, in arrival order. So a late retransmission of an old
/// write (Linux resends with a new tag, possibly over another NIC) can never land on top of newer data, and a
/// read never sees half of a write. Pure bookkeeping; the caller holds the lock and runs what it is told.
///
/// Cost per request: a read checks only the unfinished writes, a write every unfinished request; finishing is
/// constant time unless something waits, and then looks again only at the waiting requests that overlapped
/// the finished one. At most `waitingCapacity` requests wait (the caller refuses new ones while the list is
/// full), so no peer can make finishing quadratic in the Buffer Count. Ids are small non-negative integers
/// (frame slots).
public struct RequestScheduler: Sendable {
    struct Entry: Sendable {
        var start: UInt64
        var end: UInt64
        var writes: Bool
        var running: Bool
        /// Arrival order.
        var sequence: UInt64
        /// Positions in `unfinished` and (for writes) `writers`.
        var unfinishedIndex: Int
        var writerIndex: Int
    }

    private var entries: [Entry?] = []
    private var unfinished: [Int] = []
    private var writers: [Int] = []
    /// Ids that wait, in arrival order.
    private var waiting: [Int] = []
    private var nextSequence: UInt64 = 0

    public init() {}

    public var unfinishedCount: Int { unfinished.count }

    /// Waiting requests beyond this are refused by the caller (dropped; the initiator resends).
    public static let waitingCapacity = 64
    public var waitingIsFull: Bool { waiting.count >= Self.waitingCapacity }

    /// A plain loop over the list in place (no copy of the list, no closure).
    private static func anyConflicts(_ ids: [Int], _ entries: [Entry?], _ entry: Entry) -> Bool {
        for id in ids {
            if let other = entries[id], conflicts(other, entry) { return true }
        }
        return false
    }

    private static func conflicts(_ a: Entry, _ b: Entry) -> Bool {
        (a.writes || b.writes) && a.start < b.end && b.start < a.end
    }

    /// Registers request `id` covering sectors [start, start + count). Returns true when it may start now.
    public mutating func admit(id: Int, start: UInt64, count: UInt64, writes: Bool) -> Bool {
        precondition(id >= 0)
        if id >= entries.count { entries.append(contentsOf: repeatElement(nil, count: id + 1 - entries.count)) }
        precondition(entries[id] == nil, "request \(id) admitted twice")
        var entry = Entry(start: start, end: start + max(count, 1), writes: writes, running: false, sequence: nextSequence,
                          unfinishedIndex: unfinished.count, writerIndex: writes ? writers.count : -1)
        nextSequence += 1
        // Reads only conflict with writes; a write conflicts with anything that overlaps.
        entry.running = writes ? !Self.anyConflicts(unfinished, entries, entry) : !Self.anyConflicts(writers, entries, entry)
        entries[id] = entry
        unfinished.append(id)
        if writes { writers.append(id) }
        if !entry.running { waiting.append(id) }
        return entry.running
    }

    /// Marks `id` finished; returns the ids that may start now, in arrival order.
    public mutating func finish(id: Int) -> [Int] {
        guard id >= 0, id < entries.count, let entry = entries[id] else { preconditionFailure("finish of unknown request \(id)") }
        precondition(entry.running, "finish of request \(id), which was never started")
        entries[id] = nil
        // Swap-remove from both lists, keeping each moved entry's stored position right.
        let lastUnfinished = unfinished.removeLast()
        if entry.unfinishedIndex < unfinished.count {
            unfinished[entry.unfinishedIndex] = lastUnfinished
            entries[lastUnfinished]!.unfinishedIndex = entry.unfinishedIndex
        }
        if entry.writes {
            let lastWriter = writers.removeLast()
            if entry.writerIndex < writers.count {
                writers[entry.writerIndex] = lastWriter
                entries[lastWriter]!.writerIndex = entry.writerIndex
            }
        }
        if waiting.isEmpty { return [] }
        var ready: [Int] = []
        var i = 0
        while i < waiting.count {
            let candidate = entries[waiting[i]]!
            // Every waiting request has an earlier unfinished one in its way; if the finished request was not
            // in its way, it still has one.
            if !Self.conflicts(entry, candidate) {
                i += 1
                continue
            }
            let blocked = (candidate.writes ? unfinished : writers).contains { other in
                let e = entries[other]!
                return e.sequence < candidate.sequence && Self.conflicts(e, candidate)
            }
            if blocked {
                i += 1
            } else {
                entries[waiting[i]]!.running = true
                ready.append(waiting.remove(at: i))
            }
        }
        return ready
    }

}
