import XCTest
@testable import AoEWire

/// Byte fixtures written from AoEr11 (section numbers beside each), one comment per row.
final class AoEWireTests: XCTestCase {
    func bytes(_ hex: String) -> [UInt8] {
        let digits = hex.filter { $0.isHexDigit }
        return stride(from: 0, to: digits.count, by: 2).map {
            UInt8(digits[digits.index(digits.startIndex, offsetBy: $0)...].prefix(2), radix: 16)!
        }
    }

    // A Linux-style broadcast Query Config (aoecmd.c aoecmd_cfg_pkts): 0xFFFF/0xFF, CCmd 0, tag 0x1234.
    let queryConfigFrame =
        "ff ff ff ff ff ff" +  // destination: broadcast
        "52 54 00 12 34 56" +  // source
        "88 a2" +              // EtherType (AoEr11 2.1)
        "10" +                 // Ver 1, flags 0
        "00" +                 // error
        "ff ff" +              // major: any shelf
        "ff" +                 // minor: any slot
        "01" +                 // command 1: Query Config
        "00 00 12 34" +        // tag
        "00 00 00 00 00 00 00 00"  // Buffer Count, Firmware, Sector Count, Ver/CCmd, string length: all zero

    func testHeaderParsesEveryField() throws {
        let frame = bytes(queryConfigFrame)
        let header = try frame.withUnsafeBytes { try AoEHeader(parsing: $0) }
        XCTAssertEqual(header.destination, .broadcast)
        XCTAssertEqual(header.source, MACAddress("52:54:00:12:34:56"))
        XCTAssertEqual(header.version, 1)
        XCTAssertEqual(header.flags, [])
        XCTAssertEqual(header.address, .broadcast)
        XCTAssertEqual(header.command, .queryConfig)
        XCTAssertEqual(header.tag, Tag(rawValue: 0x1234))
    }

    func testHeaderRejectsShortFramesAndOtherEtherTypes() {
        let short = bytes(queryConfigFrame).prefix(23)
        XCTAssertThrowsError(try Array(short).withUnsafeBytes { try AoEHeader(parsing: $0) }) {
            XCTAssertEqual($0 as? AoEHeader.ParseError, .truncated)
        }
        var ipv4 = bytes(queryConfigFrame)
        ipv4[12] = 0x08; ipv4[13] = 0x00
        XCTAssertThrowsError(try ipv4.withUnsafeBytes { try AoEHeader(parsing: $0) }) {
            XCTAssertEqual($0 as? AoEHeader.ParseError, .notAoE)
        }
    }

    func testReplyHeaderSwapsAddressesSetsResponseAndUsesOwnShelfSlot() {
        let request = bytes(queryConfigFrame)
        let header = try! request.withUnsafeBytes { try AoEHeader(parsing: $0) }
        let reply = header.reply(from: MACAddress("02:00:00:00:00:01")!, address: ShelfSlot(shelf: 7, slot: 3), error: .badArgument)
        var out = [UInt8](repeating: 0, count: 24)
        out.withUnsafeMutableBytes { reply.write(to: $0) }
        XCTAssertEqual(out, bytes(
            "52 54 00 12 34 56" +  // back to the sender
            "02 00 00 00 00 01" +  // from us
            "88 a2" +
            "1c" +                 // Ver 1, R (0x08) | E (0x04)
            "02" +                 // error 2: bad argument
            "00 07" +              // our own shelf, not the wildcard
            "03" +                 // our own slot
            "01" +                 // same command
            "00 00 12 34"))        // same tag
    }

    // A Linux READ SECTORS EXT request (aoecmd.c ata_rw_frameinit): E flag, 2 sectors at LBA 0x0000_1234_5678.
    func testATAHeaderRoundTripsLBA48() throws {
        let arg = bytes(
            "40" +                 // AFlags: E (extended)
            "00" +                 // feature
            "02" +                 // sector count
            "24" +                 // READ SECTORS EXT
            "78 56 34 12 00 00" +  // LBA0..LBA5, least significant first
            "00 00")               // reserved
        let frame = Array(bytes(queryConfigFrame).prefix(24)) + arg
        let ata = try XCTUnwrap(frame.withUnsafeBytes { ATAHeader(parsing: $0) })
        XCTAssertEqual(ata.flags, .extended)
        XCTAssertEqual(ata.sectorCount, 2)
        XCTAssertEqual(ata.cmdStatus, 0x24)
        XCTAssertEqual(ata.lba, 0x1234_5678)
        var out = [UInt8](repeating: 0xEE, count: 36)
        out.withUnsafeMutableBytes { ata.write(to: $0) }
        XCTAssertEqual(Array(out[24...]), arg)
    }

    func testATAHeaderNeeds36Bytes() {
        let frame = [UInt8](repeating: 0, count: 35)
        XCTAssertNil(frame.withUnsafeBytes { ATAHeader(parsing: $0) })
    }

    func testConfigArgRoundTripWithString() throws {
        let arg = ConfigArg(bufferCount: 64, firmwareVersion: 0x0100, sectorCount: 2, command: .set, configString: Array("abc".utf8))
        var frame = [UInt8](repeating: 0, count: 60)
        let end = frame.withUnsafeMutableBytes { arg.write(to: $0) }
        XCTAssertEqual(end, 35)
        XCTAssertEqual(Array(frame[24..<35]), bytes(
            "00 40" +      // Buffer Count 64
            "01 00" +      // Firmware Version
            "02" +         // Sector Count
            "13" +         // AoE version 1 | CCmd 3 (set)
            "00 03" +      // string length
            "61 62 63"))   // "abc"
        frame[12] = 0x88; frame[13] = 0xA2
        let parsed = try frame.withUnsafeBytes { try ConfigArg(parsing: $0) }
        XCTAssertEqual(parsed, arg)
    }

    func testConfigArgRejectsLengthBeyondFrameOr1024() {
        var frame = [UInt8](repeating: 0, count: 60)
        frame[30] = 0x00; frame[31] = 40  // 40 bytes promised, 28 present
        XCTAssertThrowsError(try frame.withUnsafeBytes { try ConfigArg(parsing: $0) })
        var big = [UInt8](repeating: 0, count: 32 + 1025)
        big[30] = 0x04; big[31] = 0x01  // 1025
        XCTAssertThrowsError(try big.withUnsafeBytes { try ConfigArg(parsing: $0) })
    }

    func testMaskListArgRoundTrip() throws {
        let frame = Array(bytes(queryConfigFrame).prefix(24)) + bytes(
            "00" +                          // reserved
            "01" +                          // MCmd 1: edit
            "00" +                          // MError
            "02" +                          // Dir Count
            "00 01 00 11 22 33 44 55" +     // add 00:11:22:33:44:55
            "00 02 66 77 88 99 aa bb")      // delete 66:77:88:99:aa:bb
        let arg = try frame.withUnsafeBytes { try MaskListArg(parsing: $0) }
        XCTAssertEqual(arg.command, .edit)
        XCTAssertEqual(arg.directives, [MaskDirective(command: .add, mac: MACAddress("00:11:22:33:44:55")!),
                                        MaskDirective(command: .delete, mac: MACAddress("66:77:88:99:aa:bb")!)])
        var out = [UInt8](repeating: 0, count: frame.count)
        out.withUnsafeMutableBytes { arg.write(to: $0) }
        XCTAssertEqual(Array(out[24...]), Array(frame[24...]))
    }

    func testMaskListRejectsMoreDirectivesThanPresent() {
        var frame = [UInt8](repeating: 0, count: 36)
        frame[27] = 2  // two directives promised, one present
        XCTAssertThrowsError(try frame.withUnsafeBytes { try MaskListArg(parsing: $0) })
    }

    func testReserveArgRoundTrip() throws {
        let frame = Array(bytes(queryConfigFrame).prefix(24)) + bytes(
            "01" +                    // RCmd 1: set
            "02" +                    // NMacs
            "00 11 22 33 44 55" +
            "66 77 88 99 aa bb")
        let arg = try frame.withUnsafeBytes { try ReserveArg(parsing: $0) }
        XCTAssertEqual(arg.command, .set)
        XCTAssertEqual(arg.macs.map(\.description), ["00:11:22:33:44:55", "66:77:88:99:aa:bb"])
        var out = [UInt8](repeating: 0, count: frame.count)
        out.withUnsafeMutableBytes { arg.write(to: $0) }
        XCTAssertEqual(out[24...], frame[24...])
    }

    func testShelfSlotWildcards() {
        let ours = ShelfSlot(shelf: 3, slot: 9)
        XCTAssertTrue(ours.accepts(ShelfSlot(shelf: 3, slot: 9)))
        XCTAssertTrue(ours.accepts(ShelfSlot(shelf: 0xFFFF, slot: 9)))
        XCTAssertTrue(ours.accepts(ShelfSlot(shelf: 3, slot: 0xFF)))
        XCTAssertTrue(ours.accepts(.broadcast))
        XCTAssertFalse(ours.accepts(ShelfSlot(shelf: 4, slot: 9)))
        XCTAssertFalse(ours.accepts(ShelfSlot(shelf: 3, slot: 8)))
        XCTAssertFalse(ShelfSlot.broadcast.isValidTargetAddress)
    }

    func testSectorsPerFrameFromMTU() {
        XCTAssertEqual(AoELayout.sectorsPerFrame(mtu: 1500), 2)   // (1500 - 22) / 512
        XCTAssertEqual(AoELayout.sectorsPerFrame(mtu: 9000), 17)
        XCTAssertEqual(AoELayout.sectorsPerFrame(mtu: 1045), 1)
        XCTAssertEqual(AoELayout.sectorsPerFrame(mtu: 500), 0)
    }

    func testMACAddressParsingAndFormatting() {
        XCTAssertEqual(MACAddress("00:1b:21:0a:0B:ff")?.description, "00:1b:21:0a:0b:ff")
        XCTAssertEqual(MACAddress("001b210a0bff"), MACAddress("00:1b:21:0a:0b:ff"))
        XCTAssertNil(MACAddress("00:1b:21:0a:0b"))
        XCTAssertNil(MACAddress("zz:1b:21:0a:0b:ff"))
    }
}
