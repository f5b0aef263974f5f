import ATACore
@testable import SCSIEmulation
import XCTest

final class InquiryTests: XCTestCase {
    let disk = Fixture.disk()
    let model40 = Fixture.padded(Fixture.model, 40)
    let serial20 = Fixture.padded(Fixture.serial, 20)

    func testStandardInquiryIsSATStyleDirectAccessSPC4() {
        let result = respond(disk, [0x12, 0x00, 0x00, 0x00, 0xFF, 0x00])
        assertGood(result, [
            0x00,        // peripheral qualifier 0, device type 0 (direct access block)
            0x00,        // RMB 0
            0x06,        // VERSION: SPC-4
            0x02,        // RESPONSE DATA FORMAT 2
            0x1F,        // ADDITIONAL LENGTH: 36 - 5
            0x00, 0x00,
            0x02,        // CMDQUE
        ] + Fixture.ascii("ATA     ")             // T10 VENDOR IDENTIFICATION
          + Fixture.ascii("WDC WD5000AAKX-0")     // PRODUCT: first 16 model characters
          + Fixture.ascii("1H15"))                // REVISION: last 4 of "15.01H15"
    }

    func testRevisionIsFirstFourFirmwareCharactersWhenTheLastFourAreBlank() {
        let disk = Fixture.disk(identify: Fixture.identify(firmware: "1.0"))
        let result = respond(disk, [0x12, 0x00, 0x00, 0x00, 0x24, 0x00])
        XCTAssertEqual(Array(result.dataIn[32..<36]), Fixture.ascii("1.0 "))
    }

    func testRevisionIsNotApplicableWhenFirmwareIsBlank() {
        let disk = Fixture.disk(identify: Fixture.identify(firmware: ""))
        let result = respond(disk, [0x12, 0x00, 0x00, 0x00, 0x24, 0x00])
        XCTAssertEqual(Array(result.dataIn[32..<36]), Fixture.ascii("n/a "))
    }

    func testInquiryIsTruncatedToAllocationLengthAndToTheKernelsBuffer() {
        let byAllocation = respond(disk, [0x12, 0x00, 0x00, 0x00, 0x05, 0x00])
        assertGood(byAllocation, [0x00, 0x00, 0x06, 0x02, 0x1F])
        let byBuffer = respond(disk, [0x12, 0x00, 0x00, 0x00, 0xFF, 0x00], dataIn: 3)
        assertGood(byBuffer, [0x00, 0x00, 0x06])
        // ALLOCATION LENGTH is 16 bits (bytes 3-4): 0100h asks for all 36 bytes.
        XCTAssertEqual(respond(disk, [0x12, 0x00, 0x00, 0x01, 0x00, 0x00]).dataIn.count, 36)
    }

    func testCmdDtIsRefused() {
        assertRefused(respond(disk, [0x12, 0x02, 0x00, 0x00, 0xFF, 0x00]), .commandSupportDataRequested)
    }

    func testPageCodeWithoutEVPDIsRefused() {
        assertRefused(respond(disk, [0x12, 0x00, 0x80, 0x00, 0xFF, 0x00]), .unsupportedVPDPage(0x80))
    }

    func testUnknownVPDPageIsRefused() {
        assertRefused(respond(disk, [0x12, 0x01, 0xB2, 0x00, 0xFF, 0x00]), .unsupportedVPDPage(0xB2))
    }

    func testSupportedVPDPages() {
        assertGood(respond(disk, [0x12, 0x01, 0x00, 0x00, 0xFF, 0x00]), [
            0x00, 0x00,  // device type, page 00h
            0x00, 0x06,  // PAGE LENGTH
            0x00, 0x80, 0x83, 0x89, 0xB0, 0xB1])
    }

    func testUnitSerialNumberPageIsTheIdentifySerial() {
        assertGood(respond(disk, [0x12, 0x01, 0x80, 0x00, 0xFF, 0x00]),
                   [0x00, 0x80, 0x00, 0x14] + Fixture.ascii("WD-WCAYUJ123456     "))
    }

    func testDeviceIdentificationHasT10VendorAndNAAFromTheWorldWideName() {
        assertGood(respond(disk, [0x12, 0x01, 0x83, 0x00, 0xFF, 0x00]),
                   [0x00, 0x83, 0x00, 0x54]                      // PAGE LENGTH 84 = 72 + 12
                   + [0x02, 0x01, 0x00, 0x44]                   // ASCII; LU, T10 vendor ID; length 68
                   + Fixture.ascii("ATA     ") + model40 + serial20
                   + [0x01, 0x03, 0x00, 0x08]                   // binary; LU, NAA; length 8
                   + [0x50, 0x01, 0x4E, 0xE0, 0x5A, 0x1B, 0x2C, 0x3D])  // words 108-111, NAA 5
    }

    func testDeviceIdentificationWithoutWorldWideNameHasOnlyTheT10Designator() {
        let disk = Fixture.disk(identify: Fixture.identify { $0[87] = 0x4000 })  // word 87 bit 8 clear
        assertGood(respond(disk, [0x12, 0x01, 0x83, 0x00, 0xFF, 0x00]),
                   [0x00, 0x83, 0x00, 0x48, 0x02, 0x01, 0x00, 0x44] + Fixture.ascii("ATA     ") + model40 + serial20)
    }

    func testATAInformationPageHoldsTheIdentifyDataAtOffset60() {
        let page = respond(disk, [0x12, 0x01, 0x89, 0x02, 0x3C, 0x00]).dataIn
        XCTAssertEqual(page.count, 572)
        XCTAssertEqual(Array(page[0..<4]), [0x00, 0x89, 0x02, 0x38])  // PAGE LENGTH 238h
        XCTAssertEqual(Array(page[4..<8]), [0, 0, 0, 0])
        XCTAssertEqual(Array(page[8..<16]), Fixture.ascii("AoE     "))          // SAT VENDOR IDENTIFICATION
        XCTAssertEqual(Array(page[16..<32]), Fixture.ascii("aoectl TCMU SATL"))  // SAT PRODUCT IDENTIFICATION
        XCTAssertEqual(Array(page[32..<36]), Fixture.ascii("1.0 "))              // SAT PRODUCT REVISION LEVEL
        XCTAssertEqual(Array(page[36..<56]), [
            0x34, 0x00,              // D2H Register FIS, PM port 0
            0x50, 0x01,              // status, error
            0x01, 0x00, 0x00, 0x00,  // LBA 7:0, 15:8, 23:16, device
            0x00, 0x00, 0x00, 0x00,  // LBA 31:24, 39:32, 47:40, reserved
            0x01, 0x00,              // count 7:0, 15:8
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00])
        XCTAssertEqual(Array(page[56..<60]), [0xEC, 0x00, 0x00, 0x00])  // COMMAND CODE: IDENTIFY DEVICE
        // Word 0 = 0040h little-endian; word 10 = 'W''D' stored high byte first, so 'D' comes first in memory.
        XCTAssertEqual(Array(page[60..<62]), [0x40, 0x00])
        XCTAssertEqual(Array(page[80..<84]), Fixture.ascii("DWW-"))  // words 10-11 "WD" "-W"
        XCTAssertEqual(Array(page[60 + 2 * 217..<62 + 2 * 217]), [0x20, 0x1C])  // word 217 = 7200
        XCTAssertEqual(Array(page[60..<572]), disk.drive.identify.bytes)
    }

    func testBlockLimitsPage() {
        assertGood(respond(disk, [0x12, 0x01, 0xB0, 0x00, 0xFF, 0x00]), [
            0x00, 0xB0, 0x00, 0x3C,
            0x00, 0x00,              // WSNZ, MAXIMUM COMPARE AND WRITE LENGTH
            0x00, 0x08,              // OPTIMAL TRANSFER LENGTH GRANULARITY: one 4096-byte physical block
            0x00, 0x00, 0x04, 0x00,  // MAXIMUM TRANSFER LENGTH 1024
            0x00, 0x00, 0x04, 0x00,  // OPTIMAL TRANSFER LENGTH 1024
        ] + [UInt8](repeating: 0, count: 48))
    }

    func testBlockDeviceCharacteristicsPageFromWords217And168() {
        assertGood(respond(disk, [0x12, 0x01, 0xB1, 0x00, 0xFF, 0x00]), [
            0x00, 0xB1, 0x00, 0x3C,
            0x1C, 0x20,  // MEDIUM ROTATION RATE 7200
            0x00,        // PRODUCT TYPE
            0x02,        // NOMINAL FORM FACTOR 3.5"
        ] + [UInt8](repeating: 0, count: 56))
    }

    func testNonRotatingMediumAndReservedRotationValues() {
        let ssd = Fixture.disk(identify: Fixture.identify { $0[217] = 0x0001; $0[168] = 0x0003 })
        XCTAssertEqual(Array(respond(ssd, [0x12, 0x01, 0xB1, 0x00, 0xFF, 0x00]).dataIn[4..<8]), [0x00, 0x01, 0x00, 0x03])
        let reserved = Fixture.disk(identify: Fixture.identify { $0[217] = 0x0400; $0[168] = 0x0007 })
        XCTAssertEqual(Array(respond(reserved, [0x12, 0x01, 0xB1, 0x00, 0xFF, 0x00]).dataIn[4..<8]), [0, 0, 0, 0])
    }
}
