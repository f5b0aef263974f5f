import XCTest
import AoEWire
import CLinuxShims
@testable import PacketTransport

/// The kernel filter, run on fixture frames by a small classic-BPF interpreter with the kernel's rules for the
/// instructions the program uses: absolute loads (a load past the end of the frame returns 0, dropping it),
/// jeq / jset with a constant, ret.
final class PacketFilterTests: XCTestCase {
    let ours = MACAddress("02:00:00:00:00:01")!
    let address = ShelfSlot(shelf: 7, slot: 3)

    func run(_ program: [sock_filter], _ frame: [UInt8]) -> UInt32 {
        var a: UInt32 = 0
        var pc = 0
        func load(_ offset: Int, _ size: Int) -> UInt32? {
            guard offset + size <= frame.count else { return nil }
            return frame[offset..<offset + size].reduce(0) { $0 << 8 | UInt32($1) }
        }
        while pc < program.count {
            let i = program[pc]
            switch i.code {
            case 0x20, 0x28, 0x30:   // ld [k], word / half / byte
                guard let v = load(Int(i.k), i.code == 0x20 ? 4 : i.code == 0x28 ? 2 : 1) else { return 0 }
                a = v
                pc += 1
            case 0x15: pc += 1 + Int(a == i.k ? i.jt : i.jf)
            case 0x45: pc += 1 + Int(a & i.k != 0 ? i.jt : i.jf)
            case 0x06: return i.k
            default:
                XCTFail("instruction 0x\(String(i.code, radix: 16)) not covered by this interpreter")
                return 0
            }
        }
        XCTFail("the program ran off its end")
        return 0
    }

    /// An AoE request: Ethernet header, AoE header (version 1, flags, error 0, shelf, slot, command 0), tag.
    func frame(to destination: MACAddress, shelf: UInt16, slot: UInt8, flags: UInt8 = 0x10, etherType: UInt16 = 0x88A2) -> [UInt8] {
        let dst = (0..<6).map { destination.byte($0) }
        let src: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
        return dst + src + [UInt8(etherType >> 8), UInt8(etherType & 0xFF), flags, 0, UInt8(shelf >> 8), UInt8(shelf & 0xFF), slot, 0, 0, 0, 0, 1]
            + [UInt8](repeating: 0, count: 36)
    }

    func passes(_ frame: [UInt8]) -> Bool { run(PacketFilter.targetProgram(mac: ours, address: address), frame) != 0 }

    func testOwnRequestsAndWildcardsPass() {
        XCTAssertTrue(passes(frame(to: ours, shelf: 7, slot: 3)), "ours, our shelf.slot")
        XCTAssertTrue(passes(frame(to: .broadcast, shelf: 0xFFFF, slot: 0xFF)), "broadcast discovery")
        XCTAssertTrue(passes(frame(to: .broadcast, shelf: 7, slot: 3)), "broadcast to our shelf.slot (iPXE)")
        XCTAssertTrue(passes(frame(to: ours, shelf: 0xFFFF, slot: 3)), "any shelf, our slot")
        XCTAssertTrue(passes(frame(to: ours, shelf: 7, slot: 0xFF)), "our shelf, any slot")
    }

    func testEverythingElseIsDroppedInTheKernel() {
        XCTAssertFalse(passes(frame(to: MACAddress("02:00:00:00:00:02")!, shelf: 7, slot: 3)), "another host's MAC (low half differs)")
        XCTAssertFalse(passes(frame(to: MACAddress("12:00:00:00:00:01")!, shelf: 7, slot: 3)), "another host's MAC (high half differs)")
        XCTAssertFalse(passes(frame(to: MACAddress("ff:ff:ff:ff:00:01")!, shelf: 7, slot: 3)), "half broadcast")
        XCTAssertFalse(passes(frame(to: ours, shelf: 7, slot: 3, flags: 0x18)), "a response (R flag)")
        XCTAssertFalse(passes(frame(to: ours, shelf: 8, slot: 3)), "other shelf")
        XCTAssertFalse(passes(frame(to: ours, shelf: 7, slot: 4)), "other slot")
        XCTAssertFalse(passes(frame(to: ours, shelf: 7, slot: 3, etherType: 0x0800)), "not AoE")
        XCTAssertFalse(passes(Array(frame(to: ours, shelf: 7, slot: 3).prefix(18))), "cut before the slot byte")
    }

    func testTheProgramAcceptsWholeFrames() {
        XCTAssertEqual(run(PacketFilter.targetProgram(mac: ours, address: address), frame(to: ours, shelf: 7, slot: 3)), 0x0004_0000)
    }
}
