/// What an IDENTIFY DEVICE page says about the exported disk.
public struct IdentifyParameters: Hashable, Sendable {
    public var sectors: UInt64
    public var model: String
    public var serial: String
    public var firmware: String
    /// Word 82 bit 5: the device has a volatile write cache (and SET FEATURES 02h/82h toggle it).
    public var writeCacheSupported: Bool
    /// Word 85 bit 5: the write cache is on, so acknowledged writes are not yet durable until FLUSH.
    public var writeCacheEnabled: Bool
    /// Words 83/86 bits 12 and 13: FLUSH CACHE and FLUSH CACHE EXT.
    public var flushSupported: Bool
    /// Word 169 bit 0: DATA SET MANAGEMENT TRIM; nil when not supported.
    public var trim: TrimReadBack?

    public init(sectors: UInt64, model: String, serial: String, firmware: String,
                writeCacheSupported: Bool = true, writeCacheEnabled: Bool = true, flushSupported: Bool = true,
                trim: TrimReadBack? = nil) {
        self.trim = trim
        self.sectors = sectors
        self.model = model
        self.serial = serial
        self.firmware = firmware
        self.writeCacheSupported = writeCacheSupported
        self.writeCacheEnabled = writeCacheEnabled
        self.flushSupported = flushSupported
    }
}

/// What a trimmed sector reads back as (IDENTIFY word 69): always the same data (bit 14, DRAT), and zeros
/// (bit 5, RZAT) for a device that frees or zeroes it.
public enum TrimReadBack: Hashable, Sendable { case deterministic, zeros }

/// The 512-byte IDENTIFY DEVICE data (ACS-3 7.12.7), built and decoded. Words are little-endian; ATA
/// strings put the first character of each pair in the high byte.
public struct IdentifyPage: Hashable, Sendable {
    public static let size = 512
    public var words: [UInt16]

    public init(words: [UInt16]) {
        precondition(words.count == 256)
        self.words = words
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count >= Self.size else { return nil }
        let array = Array(bytes.prefix(Self.size))
        words = (0..<256).map { UInt16(array[2 * $0]) | UInt16(array[2 * $0 + 1]) << 8 }
    }

    public init(_ p: IdentifyParameters) {
        var w = [UInt16](repeating: 0, count: 256)
        // Legacy CHS geometry (words 1, 3, 6, 54-58) for initiators that ignore LBA: 16 heads, 63 sectors.
        let cylinders = UInt16(min(p.sectors / (16 * 63), 16383))
        w[0] = 0x0040  // fixed (non-removable) device
        w[1] = cylinders
        w[3] = 16
        w[6] = 63
        Self.put(p.serial, into: &w, at: 10, words: 10)
        Self.put(p.firmware, into: &w, at: 23, words: 4)
        Self.put(p.model, into: &w, at: 27, words: 20)
        w[47] = 0x8000  // READ/WRITE MULTIPLE not supported (low byte 0), bit 15 fixed by ACS
        w[49] = 0x0300  // bit 9 LBA supported, bit 8 DMA supported (the DMA opcodes are served)
        w[50] = 0x4000  // bit 14 shall be one
        w[53] = 0x0001  // words 54-58 valid
        w[54] = cylinders
        w[55] = 16
        w[56] = 63
        let chsCapacity = UInt32(cylinders) * 16 * 63
        w[57] = UInt16(truncatingIfNeeded: chsCapacity)
        w[58] = UInt16(truncatingIfNeeded: chsCapacity >> 16)
        let lba28 = UInt32(min(p.sectors, 0x0FFF_FFFF))
        w[60] = UInt16(truncatingIfNeeded: lba28)
        w[61] = UInt16(truncatingIfNeeded: lba28 >> 16)
        w[80] = 0x01F0  // supports ATA/ATAPI-4 through ACS-2 (bits 4-8)
        let flushBits: UInt16 = p.flushSupported ? 0x3000 : 0  // bit 12 FLUSH CACHE, bit 13 FLUSH CACHE EXT
        w[82] = p.writeCacheSupported ? 0x0020 : 0  // bit 5 volatile write cache supported
        w[83] = 0x4000 | flushBits | 0x0400  // bit 14 shall be one, bit 10 48-bit address feature set
        w[84] = 0x4000
        w[85] = (p.writeCacheSupported && p.writeCacheEnabled) ? 0x0020 : 0  // bit 5 write cache enabled
        w[86] = flushBits | 0x0400
        w[87] = 0x4000
        for i in 0..<4 { w[100 + i] = UInt16(truncatingIfNeeded: p.sectors >> (16 * UInt64(i))) }
        w[106] = 0x4000  // bit 14: word valid; 512-byte logical = physical sectors
        if let trim = p.trim {
            w[69] = 0x4000 | (trim == .zeros ? 0x0020 : 0)  // bit 14 deterministic read after TRIM, bit 5 zeros
            w[105] = UInt16(TrimRangeList.maxBlocks)  // 512-byte blocks of range entries per command
            w[169] = 0x0001  // DATA SET MANAGEMENT TRIM supported
        }
        w[255] = 0x00A5  // checksum signature; the checksum byte is computed below
        words = w
        words[255] |= UInt16(checksumByte()) << 8
    }

    /// Word 255 high byte: makes the sum of all 512 bytes zero modulo 256 (ACS-3 7.12.7.92).
    private func checksumByte() -> UInt8 {
        var sum: UInt8 = 0
        for (i, word) in words.enumerated() {
            sum &+= UInt8(truncatingIfNeeded: word)
            if i != 255 { sum &+= UInt8(truncatingIfNeeded: word >> 8) }
        }
        return 0 &- sum
    }

    public var checksumIsValid: Bool {
        guard words[255] & 0xFF == 0xA5 else { return words[255] == 0 }  // 0: no checksum given
        var sum: UInt8 = 0
        for word in words { sum &+= UInt8(truncatingIfNeeded: word) &+ UInt8(truncatingIfNeeded: word >> 8) }
        return sum == 0
    }

    private static func put(_ text: String, into w: inout [UInt16], at first: Int, words count: Int) {
        var bytes = Array(text.utf8.prefix(count * 2).map { $0 < 0x20 || $0 > 0x7E ? UInt8(ascii: "?") : $0 })
        bytes += [UInt8](repeating: 0x20, count: count * 2 - bytes.count)
        for i in 0..<count { w[first + i] = UInt16(bytes[2 * i]) << 8 | UInt16(bytes[2 * i + 1]) }
    }

    private func string(at first: Int, words count: Int) -> String {
        var bytes: [UInt8] = []
        for i in first..<(first + count) { bytes += [UInt8(words[i] >> 8), UInt8(truncatingIfNeeded: words[i])] }
        while let last = bytes.last, last == 0x20 || last == 0 { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }

    public var bytes: [UInt8] { words.flatMap { [UInt8(truncatingIfNeeded: $0), UInt8($0 >> 8)] } }

    public var serial: String { string(at: 10, words: 10) }
    public var firmware: String { string(at: 23, words: 4) }
    public var model: String { string(at: 27, words: 20) }
    public var supportsLBA48: Bool { (words[83] | words[86]) & 0x0400 != 0 }
    public var lba28Sectors: UInt64 { UInt64(words[60]) | UInt64(words[61]) << 16 }
    public var lba48Sectors: UInt64 { (0..<4).reduce(0) { $0 | UInt64(words[100 + $1]) << (16 * UInt64($1)) } }
    /// Capacity as the Linux initiator reads it (aoecmd.c ataid_complete): LBA48 words when bit 10 is set.
    public var sectors: UInt64 { supportsLBA48 ? lba48Sectors : lba28Sectors }
    public var writeCacheSupported: Bool { words[82] & 0x0020 != 0 }
    public var writeCacheEnabled: Bool { words[85] & 0x0020 != 0 }
    public var flushCacheSupported: Bool { words[83] & 0x1000 != 0 }
    public var flushCacheExtSupported: Bool { words[83] & 0x2000 != 0 }
    /// Word 82 bit 0 / word 85 bit 0: SMART feature set.
    public var smartSupported: Bool { words[82] & 0x0001 != 0 }
    public var smartEnabled: Bool { words[85] & 0x0001 != 0 }
    /// Word 169 bit 0: DATA SET MANAGEMENT TRIM.
    public var trimSupported: Bool { words[169] & 0x0001 != 0 }
    /// Word 69 bit 5: a trimmed sector reads back as zeros.
    public var trimReadsZeros: Bool { trimSupported && words[69] & 0x4020 == 0x4020 }
    /// Word 105: blocks of range entries one DSM command may carry (0: not reported, read as 1).
    public var maxTrimBlocks: Int { max(1, Int(words[105])) }
    /// Word 76 bit 8: NCQ.
    public var ncqSupported: Bool { words[76] != 0xFFFF && words[76] & 0x0100 != 0 }
    public var queueDepth: Int { Int(words[75] & 0x1F) + 1 }
}
