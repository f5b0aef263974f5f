import ATACore
@testable import SCSIEmulation
import XCTest

final class ModeSenseTests: XCTestCase {
    let disk = Fixture.disk()
    /// 08h, WCE set (word 85 bit 5), DRA clear (look-ahead on).
    let caching: [UInt8] = [0x08, 0x12, 0x04, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0, 0, 0, 0, 0, 0, 0]
    /// 0Ah: GLTSD, BUSY TIMEOUT PERIOD FFFFh.
    let control: [UInt8] = [0x0A, 0x0A, 0x02, 0x00, 0, 0, 0, 0, 0xFF, 0xFF, 0x00, 0x00]
    /// 1Ch: DEXCPT clear (SMART enabled), MRIE 6.
    let exceptions: [UInt8] = [0x1C, 0x0A, 0x00, 0x06, 0, 0, 0, 0, 0, 0, 0, 0]

    func testModeSense6CachingPageWithBlockDescriptor() {
        assertGood(respond(disk, [0x1A, 0x00, 0x08, 0x00, 0xFF, 0x00]), [
            0x1F,        // MODE DATA LENGTH: 3 + 8 + 20
            0x00,        // medium type
            0x00,        // DEVICE-SPECIFIC PARAMETER: WP 0, DPOFUA 0
            0x08,        // BLOCK DESCRIPTOR LENGTH
            0x3B, 0x9E, 0x12, 0xB0, 0x00, 0x00, 0x02, 0x00,  // NUMBER OF LOGICAL BLOCKS, reserved, BLOCK LENGTH 512
        ] + caching)
    }

    func testCachingPageFollowsWriteCacheAndLookAhead() {
        let disk = Fixture.disk(identify: Fixture.identify { $0[85] &= ~0x0060 })  // write cache off, look-ahead off
        let page = respond(disk, [0x1A, 0x08, 0x08, 0x00, 0xFF, 0x00]).dataIn
        XCTAssertEqual(page, [0x17, 0x00, 0x00, 0x00,
                              0x08, 0x12, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0])  // DRA
    }

    func testModeSense10AllPagesWithoutBlockDescriptor() {
        assertGood(respond(disk, [0x5A, 0x08, 0x3F, 0x00, 0, 0, 0, 0x01, 0x00, 0x00]),
                   [0x00, 0x32,   // MODE DATA LENGTH: 6 + 20 + 12 + 12
                    0x00, 0x00,   // medium type, device-specific
                    0x00, 0x00,   // LONGLBA 0, reserved
                    0x00, 0x00]   // BLOCK DESCRIPTOR LENGTH 0 (DBD)
                   + caching + control + exceptions)
    }

    func testModeSense10LongLBABlockDescriptor() {
        let big = Fixture.disk(capacity: 0x1_2345_6789)
        assertGood(respond(big, [0x5A, 0x10, 0x0A, 0x00, 0, 0, 0, 0x00, 0xFF, 0x00]),
                   [0x00, 0x22, 0x00, 0x00, 0x01, 0x00, 0x00, 0x10]  // LONGLBA, descriptor length 16
                   + [0x00, 0x00, 0x00, 0x01, 0x23, 0x45, 0x67, 0x89, 0, 0, 0, 0, 0x00, 0x00, 0x02, 0x00]
                   + control)
    }

    func testShortBlockDescriptorClampsABigCapacity() {
        let big = Fixture.disk(capacity: 0x1_2345_6789)
        let data = respond(big, [0x1A, 0x00, 0x0A, 0x00, 0xFF, 0x00]).dataIn
        XCTAssertEqual(Array(data[4..<12]), [0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x02, 0x00])
    }

    func testInformationalExceptionsWithSMARTDisabled() {
        let disk = Fixture.disk(identify: Fixture.identify { $0[85] &= ~0x0001 })
        assertGood(respond(disk, [0x1A, 0x08, 0x1C, 0x00, 0xFF, 0x00]),
                   [0x0F, 0x00, 0x00, 0x00, 0x1C, 0x0A, 0x08, 0x06, 0, 0, 0, 0, 0, 0, 0, 0])  // DEXCPT
    }

    func testChangeableValuesAreAllZero() {
        assertGood(respond(disk, [0x1A, 0x08, 0x48, 0x00, 0xFF, 0x00]),  // PC 01b, page 08h
                   [0x17, 0x00, 0x00, 0x00, 0x08, 0x12] + [UInt8](repeating: 0, count: 18))
    }

    func testDefaultValuesAreTheCurrentOnes() {
        assertGood(respond(disk, [0x1A, 0x08, 0x8A, 0x00, 0xFF, 0x00]), [0x0F, 0x00, 0x00, 0x00] + control)
    }

    func testSavedValuesAreNotSupported() {
        assertRefused(respond(disk, [0x1A, 0x08, 0xC8, 0x00, 0xFF, 0x00]), .savedModeValuesRequested,
                      sense: Fixture.fixedSense(key: 0x05, asc: 0x39, ascq: 0x00))
    }

    func testUnknownPageAndSubpageAreRefused() {
        assertRefused(respond(disk, [0x1A, 0x08, 0x01, 0x00, 0xFF, 0x00]), .unsupportedModePage(page: 0x01, subpage: 0))
        assertRefused(respond(disk, [0x1A, 0x08, 0x0A, 0xF2, 0xFF, 0x00]), .unsupportedModePage(page: 0x0A, subpage: 0xF2))
        // Subpage FFh (all subpages) of a page without subpages is the page itself.
        assertGood(respond(disk, [0x1A, 0x08, 0x0A, 0xFF, 0xFF, 0x00]), [0x0F, 0x00, 0x00, 0x00] + control)
    }

    func testModeSenseIsTruncatedToAllocationLength() {
        assertGood(respond(disk, [0x1A, 0x00, 0x08, 0x00, 0x06, 0x00]), [0x1F, 0x00, 0x00, 0x08, 0x3B, 0x9E])
        assertGood(respond(disk, [0x5A, 0x08, 0x3F, 0x00, 0, 0, 0, 0x00, 0x04, 0x00]), [0x00, 0x32, 0x00, 0x00])
    }
}

final class CapacityTests: XCTestCase {
    func testReadCapacity10() {
        assertGood(respond(Fixture.disk(), [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                   [0x3B, 0x9E, 0x12, 0xAF,   // RETURNED LOGICAL BLOCK ADDRESS: the last LBA
                    0x00, 0x00, 0x02, 0x00])  // BLOCK LENGTH 512
    }

    func testReadCapacity10ReportsFFFFFFFFWhenTheLastLBADoesNotFit() {
        assertGood(respond(Fixture.disk(capacity: 0x1_0000_0001), [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                   [0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x02, 0x00])
        // Exactly 2^32 blocks: the last LBA FFFFFFFFh fits, and the kernel must ask (16) anyway.
        assertGood(respond(Fixture.disk(capacity: 0x1_0000_0000), [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                   [0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x02, 0x00])
        assertGood(respond(Fixture.disk(capacity: 0xFFFF_FFFF), [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                   [0xFF, 0xFF, 0xFF, 0xFE, 0x00, 0x00, 0x02, 0x00])
    }

    func testReadCapacity16() {
        let cdb: [UInt8] = [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x20, 0, 0]
        assertGood(respond(Fixture.disk(capacity: 0x1_2345_6789), cdb), [
            0x00, 0x00, 0x00, 0x01, 0x23, 0x45, 0x67, 0x88,  // last LBA
            0x00, 0x00, 0x02, 0x00,                          // LOGICAL BLOCK LENGTH 512
            0x00,                                            // P_TYPE, PROT_EN
            0x03,                                            // 2^3 logical blocks per physical block (word 106)
            0x00, 0x00,                                      // LOWEST ALIGNED LOGICAL BLOCK ADDRESS
        ] + [UInt8](repeating: 0, count: 16))
    }

    func testReadCapacity16LowestAlignedLBAFromWord209() {
        // Word 209: valid, LBA 0 at offset 1 in its physical sector, so LBA 7 starts the next one.
        let disk = Fixture.disk(identify: Fixture.identify { $0[209] = 0x4001 })
        let data = respond(disk, [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x10, 0, 0]).dataIn
        XCTAssertEqual(Array(data[12..<16]), [0x00, 0x03, 0x00, 0x07])
        XCTAssertEqual(data.count, 16, "truncated to ALLOCATION LENGTH 16")
    }

    func testOtherServiceActionInIsRefused() {
        assertRefused(respond(Fixture.disk(), [0x9E, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0]),
                      .unsupportedServiceAction(opcode: 0x9E, serviceAction: 0x12))
    }
}
