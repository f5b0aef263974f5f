import AoEWire
import CLinuxShims

/// A classic BPF program that passes only AoE requests a target should see, so the kernel drops the rest
/// before waking us (the job of vblade's bpf.c): destination our MAC or broadcast, R flag clear, shelf ours
/// or 0xFFFF, slot ours or 0xFF.
public enum PacketFilter {
    static let ldW: UInt16 = 0x20, ldH: UInt16 = 0x28, ldB: UInt16 = 0x30
    static let jeq: UInt16 = 0x15, jset: UInt16 = 0x45, ret: UInt16 = 0x06

    public static func targetProgram(mac: MACAddress, address: ShelfSlot) -> [sock_filter] {
        func op(_ code: UInt16, _ jt: UInt8, _ jf: UInt8, _ k: UInt32) -> sock_filter { sock_filter(code: code, jt: jt, jf: jf, k: k) }
        let macHigh = UInt32(truncatingIfNeeded: mac.rawValue >> 16), macLow = UInt32(truncatingIfNeeded: mac.rawValue & 0xFFFF)
        // Jump offsets count instructions after the current one.
        return [
            /* 0 */ op(ldH, 0, 0, 12),
            /* 1 */ op(jeq, 0, 16, UInt32(AoELayout.etherType)),   // not AoE -> drop (18)
            /* 2 */ op(ldW, 0, 0, 0),
            /* 3 */ op(jeq, 0, 3, macHigh),                         // -> 7 (broadcast check)
            /* 4 */ op(ldH, 0, 0, 4),
            /* 5 */ op(jeq, 4, 0, macLow),                          // ours -> 10
            /* 6 */ op(ret, 0, 0, 0),
            /* 7 */ op(jeq, 0, 10, 0xFFFF_FFFF),                    // not broadcast -> drop (18)
            /* 8 */ op(ldH, 0, 0, 4),
            /* 9 */ op(jeq, 0, 8, 0xFFFF),                          // -> drop (18)
            /* 10 */ op(ldB, 0, 0, 14),
            /* 11 */ op(jset, 6, 0, UInt32(AoEHeaderFlags.response.rawValue)),  // response -> drop (18)
            /* 12 */ op(ldH, 0, 0, 16),
            /* 13 */ op(jeq, 1, 0, UInt32(address.shelf)),          // -> 15
            /* 14 */ op(jeq, 0, 3, UInt32(ShelfSlot.anyShelf)),     // -> drop (18)
            /* 15 */ op(ldB, 0, 0, 18),
            /* 16 */ op(jeq, 2, 0, UInt32(address.slot)),           // -> accept (19)
            /* 17 */ op(jeq, 1, 0, UInt32(ShelfSlot.anySlot)),      // -> accept (19)
            /* 18 */ op(ret, 0, 0, 0),
            /* 19 */ op(ret, 0, 0, 0x0004_0000),
        ]
    }
}
