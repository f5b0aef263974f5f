/// Orders device work that runs concurrently. A request that overlaps an earlier unfinished one, where either
/// writes, starts only after the earlier one completes, in arrival order. So a late retransmission of an old
/// write (Linux resends with a new tag, possibly over another NIC) can never land on top of newer data, and a
/// read never sees half of a write. Pure bookkeeping; the caller holds the lock and runs what it is told.
public struct RequestScheduler: Sendable {
    public struct Entry: Sendable {
        public var id: Int
        public var start: UInt64
        public var end: UInt64
        public var writes: Bool
        public var running: Bool
    }

    /// Unfinished requests in arrival order (running or waiting).
    private var entries: [Entry] = []

    public init() {}

    public var unfinished: Int { entries.count }

    private static func conflicts(_ a: Entry, _ b: Entry) -> Bool {
        (a.writes || b.writes) && a.start < b.end && b.start < a.end
    }

    /// Registers request `id` covering sectors [start, start + count). Returns true when it may start now.
    public mutating func admit(id: Int, start: UInt64, count: UInt64, writes: Bool) -> Bool {
        var entry = Entry(id: id, start: start, end: start + max(count, 1), writes: writes, running: false)
        entry.running = !entries.contains { Self.conflicts($0, entry) }
        entries.append(entry)
        return entry.running
    }

    /// Marks `id` finished; returns the ids that may start now, in arrival order.
    public mutating func finish(id: Int) -> [Int] {
        guard let index = entries.firstIndex(where: { $0.id == id }) else {
            preconditionFailure("finish of unknown request \(id)")
        }
        entries.remove(at: index)
        var ready: [Int] = []
        for i in entries.indices where !entries[i].running {
            let blocked = entries[..<i].contains { Self.conflicts($0, entries[i]) }
            if !blocked {
                entries[i].running = true
                ready.append(entries[i].id)
            }
        }
        return ready
    }
}
