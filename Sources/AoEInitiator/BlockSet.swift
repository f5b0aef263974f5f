/// The blocks with an I/O in flight: a set of at most `capacity` non-negative integers, open addressing with
/// linear probing, never more than half full. Its size follows the queue depth, not the region, so the lookup
/// every I/O makes stays in cache (a bit per block of a large region did not), and no operation allocates.
/// The owner calls `deallocate()`.
struct BlockSet {
    private let slots: UnsafeMutablePointer<Int>
    private let mask: Int
    private let shift: UInt64
    private static let empty = -1

    init(capacity: Int) {
        var size = 8
        while size < 2 * capacity { size <<= 1 }
        mask = size - 1
        shift = UInt64(64 - size.trailingZeroBitCount)
        slots = .allocate(capacity: size)
        slots.initialize(repeating: Self.empty, count: size)
    }

    func deallocate() { slots.deallocate() }

    /// Fibonacci hashing: neighbouring blocks (sequential I/O) spread over the table.
    private func home(_ block: Int) -> Int { Int(truncatingIfNeeded: (UInt64(block) &* 0x9E37_79B9_7F4A_7C15) >> shift) }

    func contains(_ block: Int) -> Bool {
        var i = home(block)
        while slots[i] != Self.empty {
            if slots[i] == block { return true }
            i = (i + 1) & mask
        }
        return false
    }

    /// Adds a block that is not in the set.
    func insert(_ block: Int) {
        var i = home(block)
        while slots[i] != Self.empty { i = (i + 1) & mask }
        slots[i] = block
    }

    func remove(_ block: Int) {
        var i = home(block)
        while slots[i] != block {
            if slots[i] == Self.empty { return }
            i = (i + 1) & mask
        }
        // Backward-shift deletion: move later entries of the probe run into the hole when their home allows,
        // so lookups never need tombstones.
        var j = i
        while true {
            j = (j + 1) & mask
            if slots[j] == Self.empty { break }
            let k = home(slots[j])
            let stays = i <= j ? (i < k && k <= j) : (i < k || k <= j)
            if stays { continue }
            slots[i] = slots[j]
            i = j
        }
        slots[i] = Self.empty
    }
}
