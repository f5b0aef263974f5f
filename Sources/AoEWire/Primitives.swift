/// A 48-bit Ethernet address, kept in the low bits of a UInt64 so comparisons and hashing are one word.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue & 0xFFFF_FFFF_FFFF }

    public init(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8, _ b4: UInt8, _ b5: UInt8) {
        rawValue = UInt64(b0) << 40 | UInt64(b1) << 32 | UInt64(b2) << 24 | UInt64(b3) << 16 | UInt64(b4) << 8 | UInt64(b5)
    }

    /// Parses "aa:bb:cc:dd:ee:ff" (also "-" separated, or 12 hex digits as vblade's -m accepts).
    public init?(_ text: String) {
        let hex = text.filter { $0 != ":" && $0 != "-" }
        guard hex.count == 12, let value = UInt64(hex, radix: 16) else { return nil }
        rawValue = value
    }

    public static let broadcast = MACAddress(rawValue: 0xFFFF_FFFF_FFFF)
    public static let zero = MACAddress(rawValue: 0)

    public var isBroadcast: Bool { self == .broadcast }
    /// The I/G bit (bit 0 of the first byte): a group address, broadcast included. Never a frame's sender.
    public var isMulticast: Bool { byte(0) & 1 != 0 }

    public func byte(_ index: Int) -> UInt8 { UInt8(truncatingIfNeeded: rawValue >> (40 - 8 * UInt64(index))) }

    public var description: String {
        (0..<6).map { hex2(byte($0)) }.joined(separator: ":")
    }
}

@inline(__always) func hex2(_ v: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(v >> 4)], digits[Int(v & 0xF)]])
}

/// An AoE address: shelf (major, 16 bits) and slot (minor, 8 bits). AoEr11 section 2: 0xFFFF and 0xFF are wildcards.
public struct ShelfSlot: Hashable, Sendable, CustomStringConvertible {
    public var shelf: UInt16
    public var slot: UInt8

    public static let anyShelf: UInt16 = 0xFFFF
    public static let anySlot: UInt8 = 0xFF
    public static let broadcast = ShelfSlot(shelf: anyShelf, slot: anySlot)

    public init(shelf: UInt16, slot: UInt8) {
        self.shelf = shelf
        self.slot = slot
    }

    /// Whether a frame addressed to `address` is for this (non-wildcard) export.
    public func accepts(_ address: ShelfSlot) -> Bool {
        (address.shelf == shelf || address.shelf == Self.anyShelf) && (address.slot == slot || address.slot == Self.anySlot)
    }

    /// A target's own address may not be a wildcard: Linux drops such Config replies ("broadcast shelf number invalid").
    public var isValidTargetAddress: Bool { shelf != Self.anyShelf && slot != Self.anySlot }

    public var description: String { "\(shelf).\(slot)" }
}

/// The request tag the initiator chose; the target echoes it verbatim (AoEr11 section 2.5).
public struct Tag: Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public var description: String { "0x" + String(rawValue, radix: 16) }
}
