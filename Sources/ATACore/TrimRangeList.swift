/// The LBA Range Entries of DATA SET MANAGEMENT with TRIM (ACS-3 7.5.3.3 and table 39): 64 entries per 512-byte
/// block, 8 bytes each, little-endian, the LBA in bits 47:0 and the number of sectors in bits 63:48. An entry
/// whose count is 0 is unused and skipped wherever it sits. Pure.
public enum TrimRangeList {
    /// Feature register bit 0: TRIM, the only DSM function ACS-3 defines.
    public static let trimFeature: UInt8 = 0x01
    /// Blocks of entries one command may carry (IDENTIFY word 105). One block (64 ranges of up to 65,535
    /// sectors, 2 GiB) fits a frame at every MTU.
    public static let maxBlocks = 1
    public static let entriesPerBlock = 64
    public static let entrySize = 8
    public static let maxSectorsPerEntry = 0xFFFF

    public enum Check: Hashable, Sendable {
        /// Every entry is unused: nothing to discard.
        case empty
        /// `count` used entries, which together lie within sectors [start, end).
        case ranges(count: Int, start: UInt64, end: UInt64)
        /// An entry reaches past the last sector: the command is aborted and nothing is discarded.
        case outOfRange
    }

    /// Checks every entry of `entries` (whole entries; a trailing partial one is ignored) against a device of
    /// `sectors` sectors.
    public static func check(_ entries: UnsafeRawBufferPointer, sectors: UInt64) -> Check {
        var used = 0
        var start = UInt64.max, end: UInt64 = 0
        var outOfRange = false
        forEach(entries) { lba, count in
            let last = lba + UInt64(count)   // 48 + 16 bits: cannot overflow
            if last > sectors { outOfRange = true }
            used += 1
            start = min(start, lba)
            end = max(end, last)
        }
        if outOfRange { return .outOfRange }
        return used == 0 ? .empty : .ranges(count: used, start: start, end: end)
    }

    /// Calls `body` with the LBA and sector count of each used entry, in order.
    public static func forEach(_ entries: UnsafeRawBufferPointer, _ body: (UInt64, Int) -> Void) {
        for i in 0..<(entries.count / entrySize) {
            let entry = UInt64(littleEndian: entries.loadUnaligned(fromByteOffset: i * entrySize, as: UInt64.self))
            let count = Int(entry >> 48)
            if count > 0 { body(entry & 0xFFFF_FFFF_FFFF, count) }
        }
    }

    /// The range entries of the TRIM commands that discard `ranges` (sectors [lba, lba + count) each): long
    /// ranges split into entries of at most `maxSectorsPerEntry`, then `blocksPerCommand` 512-byte blocks of
    /// entries per command (the last block padded with unused entries). For an initiator.
    public static func commandPayloads(_ ranges: [(lba: UInt64, count: UInt64)], blocksPerCommand: Int) -> [[UInt8]] {
        precondition(blocksPerCommand >= 1)
        var entries: [UInt64] = []
        for range in ranges {
            var next = range.lba, left = range.count
            while left > 0 {
                let piece = min(left, UInt64(maxSectorsPerEntry))
                entries.append(piece << 48 | next)
                next += piece
                left -= piece
            }
        }
        let perCommand = blocksPerCommand * entriesPerBlock
        return stride(from: 0, to: entries.count, by: perCommand).map { first in
            let slice = entries[first..<min(first + perCommand, entries.count)]
            let blocks = (slice.count + entriesPerBlock - 1) / entriesPerBlock
            var bytes = [UInt8](repeating: 0, count: blocks * entriesPerBlock * entrySize)
            for (i, entry) in slice.enumerated() {
                for b in 0..<entrySize { bytes[i * entrySize + b] = UInt8(truncatingIfNeeded: entry >> (8 * UInt64(b))) }
            }
            return bytes
        }
    }
}
