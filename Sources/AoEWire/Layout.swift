/// Byte offsets and sizes of AoEr11 frames, counted from the first byte of the Ethernet header.
public enum AoELayout {
    public static let etherType: UInt16 = 0x88A2
    public static let version: UInt8 = 1
    public static let ethernetHeaderSize = 14
    /// Ethernet + AoE common header (vblade `Naoehdr`).
    public static let headerSize = 24
    /// Common header + Issue ATA Command arg (vblade `Natahdr`).
    public static let ataHeaderSize = 36
    /// Common header + Query Config arg before the string (vblade `Ncfghdr`).
    public static let configHeaderSize = 32
    public static let maskHeaderSize = 28
    public static let reserveHeaderSize = 26
    /// IEEE 802.3 minimum frame without FCS: replies are padded to this, as `aoeping` ignores shorter ones.
    public static let minimumFrameSize = 60
    public static let sectorSize = 512
    /// AoEr11 section 3.2: the config string holds at most 1024 bytes.
    public static let maxConfigStringLength = 1024
    public static let maskDirectiveSize = 8

    /// Sectors that fit one frame of an interface with this MTU (the MTU excludes the 14-byte Ethernet header).
    public static func sectorsPerFrame(mtu: Int) -> Int {
        max(0, (mtu - (ataHeaderSize - ethernetHeaderSize)) / sectorSize)
    }
}

/// Big-endian loads and stores on raw frame bytes. Callers check lengths first: these only read what they are told.
extension UnsafeRawBufferPointer {
    @inline(__always) func u8(_ offset: Int) -> UInt8 { self[offset] }
    @inline(__always) func u16(_ offset: Int) -> UInt16 { UInt16(self[offset]) << 8 | UInt16(self[offset + 1]) }
    @inline(__always) func u32(_ offset: Int) -> UInt32 {
        UInt32(self[offset]) << 24 | UInt32(self[offset + 1]) << 16 | UInt32(self[offset + 2]) << 8 | UInt32(self[offset + 3])
    }
    @inline(__always) func mac(_ offset: Int) -> MACAddress {
        MACAddress(self[offset], self[offset + 1], self[offset + 2], self[offset + 3], self[offset + 4], self[offset + 5])
    }
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always) func put(_ offset: Int, _ v: UInt8) { self[offset] = v }
    @inline(__always) func put(_ offset: Int, _ v: UInt16) {
        self[offset] = UInt8(v >> 8)
        self[offset + 1] = UInt8(truncatingIfNeeded: v)
    }
    @inline(__always) func put(_ offset: Int, _ v: UInt32) {
        self[offset] = UInt8(v >> 24)
        self[offset + 1] = UInt8(truncatingIfNeeded: v >> 16)
        self[offset + 2] = UInt8(truncatingIfNeeded: v >> 8)
        self[offset + 3] = UInt8(truncatingIfNeeded: v)
    }
    @inline(__always) func put(_ offset: Int, _ mac: MACAddress) {
        for i in 0..<6 { self[offset + i] = mac.byte(i) }
    }
}
