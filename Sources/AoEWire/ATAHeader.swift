/// The Issue ATA Command argument (AoEr11 section 3.1): 12 bytes after the common header.
/// In a request `errFeature` is the Feature register and `cmdStatus` the Command; in a response they are
/// the Error and Status registers. `lba` holds LBA0..LBA5 as one little-endian-ordered 48-bit number.
public struct ATAHeader: Hashable, Sendable {
    public var flags: ATAArgFlags
    public var errFeature: UInt8
    public var sectorCount: UInt8
    public var cmdStatus: UInt8
    public var lba: UInt64

    public init(flags: ATAArgFlags = [], errFeature: UInt8 = 0, sectorCount: UInt8 = 0, cmdStatus: UInt8, lba: UInt64 = 0) {
        self.flags = flags
        self.errFeature = errFeature
        self.sectorCount = sectorCount
        self.cmdStatus = cmdStatus
        self.lba = lba & 0xFFFF_FFFF_FFFF
    }

    /// Reads bytes 24..35 of an ATA frame. The two reserved bytes are not checked: initiators disagree about them.
    public init?(parsing frame: UnsafeRawBufferPointer) {
        guard frame.count >= AoELayout.ataHeaderSize else { return nil }
        flags = ATAArgFlags(rawValue: frame[24])
        errFeature = frame[25]
        sectorCount = frame[26]
        cmdStatus = frame[27]
        var value: UInt64 = 0
        for i in (0..<6).reversed() { value = value << 8 | UInt64(frame[28 + i]) }
        lba = value
    }

    public func write(to frame: UnsafeMutableRawBufferPointer) {
        precondition(frame.count >= AoELayout.ataHeaderSize)
        frame[24] = flags.rawValue
        frame[25] = errFeature
        frame[26] = sectorCount
        frame[27] = cmdStatus
        for i in 0..<6 { frame[28 + i] = UInt8(truncatingIfNeeded: lba >> (8 * UInt64(i))) }
        frame[34] = 0
        frame[35] = 0
    }

    /// LBA byte n (LBA3 carries the Device register for 28-bit commands).
    public func lbaByte(_ n: Int) -> UInt8 { UInt8(truncatingIfNeeded: lba >> (8 * UInt64(n))) }
}
