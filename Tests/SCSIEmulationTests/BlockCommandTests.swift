import ATACore
import AoEWire
@testable import SCSIEmulation
import XCTest

final class BlockCommandTests: XCTestCase {
    let disk = Fixture.disk()
    let outOfRange = Fixture.fixedSense(key: 0x05, asc: 0x21, ascq: 0x00)

    func action(_ cdb: [UInt8], dataIn: Int = 0, dataOut: Int = 0) -> SCSIAction {
        disk.action(forCDB: cdb, dataOutLength: dataOut, dataInLength: dataIn)
    }

    func testRead6LengthZeroMeans256Blocks() {
        // LBA 21 bits: byte 1 bits 4:0 (the top three bits are the obsolete LUN).
        XCTAssertEqual(action([0x08, 0xE1, 0x23, 0x45, 0x00, 0x00], dataIn: 256 * 512), .read(lba: 0x01_2345, sectors: 256))
        XCTAssertEqual(action([0x0A, 0x00, 0x00, 0x10, 0x08, 0x00], dataOut: 8 * 512),
                       .write(lba: 0x10, sectors: 8, forceUnitAccess: false))
    }

    func testRead10Write10WithFUA() {
        XCTAssertEqual(action([0x28, 0x00, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x10, 0x00], dataIn: 16 * 512),
                       .read(lba: 0x1234_5678, sectors: 16))
        XCTAssertEqual(action([0x2A, 0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x02, 0x00], dataOut: 1024),
                       .write(lba: 1, sectors: 2, forceUnitAccess: true))
    }

    func testRead12Write12() {
        XCTAssertEqual(action([0xA8, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00], dataIn: 3 * 512),
                       .read(lba: 0x100, sectors: 3))
        XCTAssertEqual(action([0xAA, 0x08, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00], dataOut: 3 * 512),
                       .write(lba: 0x100, sectors: 3, forceUnitAccess: true))
    }

    func testRead16Write16ToTheLastBlock() {
        // Last LBA 3B9E12AFh.
        XCTAssertEqual(action([0x88, 0x00, 0, 0, 0, 0, 0x3B, 0x9E, 0x12, 0xAF, 0, 0, 0, 0x01, 0, 0], dataIn: 512),
                       .read(lba: 0x3B9E_12AF, sectors: 1))
        XCTAssertEqual(action([0x8A, 0x00, 0, 0, 0, 0, 0x3B, 0x9E, 0x12, 0xAE, 0, 0, 0, 0x02, 0, 0], dataOut: 1024),
                       .write(lba: 0x3B9E_12AE, sectors: 2, forceUnitAccess: false))
    }

    func testTransferPastTheEndIsLogicalBlockAddressOutOfRange() {
        guard case .respond(let result) = action([0x88, 0x00, 0, 0, 0, 0, 0x3B, 0x9E, 0x12, 0xAF, 0, 0, 0, 0x02, 0, 0],
                                                 dataIn: 1024) else { return XCTFail() }
        assertRefused(result, .logicalBlockAddressOutOfRange(lba: 0x3B9E_12AF, blocks: 2), sense: outOfRange)
        // An LBA near 2^64 must not wrap around into range.
        guard case .respond(let wrapped) = action([0x8A, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0x02, 0, 0],
                                                  dataOut: 1024) else { return XCTFail() }
        assertRefused(wrapped, .logicalBlockAddressOutOfRange(lba: .max, blocks: 2), sense: outOfRange)
    }

    func testZeroLengthTransferIsGoodWithoutTouchingTheDrive() {
        XCTAssertEqual(action([0x28, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00]), .respond(.good()))
        XCTAssertEqual(action([0x8A, 0x00, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0]), .respond(.good()))
        // ...but still with an LBA on the medium.
        XCTAssertEqual(action([0x28, 0x00, 0x3B, 0x9E, 0x12, 0xB0, 0x00, 0x00, 0x00, 0x00]),
                       .respond(.refused(.logicalBlockAddressOutOfRange(lba: 0x3B9E_12B0, blocks: 0))))
    }

    func testTransferLengthThatDisagreesWithTheKernelsBufferIsRefused() {
        guard case .respond(let short) = action([0x28, 0x00, 0, 0, 0, 0x10, 0x00, 0x00, 0x02, 0x00], dataIn: 512) else {
            return XCTFail()
        }
        assertRefused(short, .transferLengthMismatch(expectedIn: 1024, expectedOut: 0, dataIn: 512, dataOut: 0))
        guard case .respond(let wrongWay) = action([0x2A, 0x00, 0, 0, 0, 0x10, 0x00, 0x00, 0x01, 0x00], dataIn: 512) else {
            return XCTFail()
        }
        assertRefused(wrongWay, .transferLengthMismatch(expectedIn: 0, expectedOut: 512, dataIn: 512, dataOut: 0))
    }

    func testVerifyIsGoodOnlyInRange() {
        XCTAssertEqual(action([0x2F, 0x00, 0x3B, 0x9E, 0x12, 0xA0, 0x00, 0x00, 0x10, 0x00]), .respond(.good()))
        assertRefused(respond(disk, [0x2F, 0x00, 0x3B, 0x9E, 0x12, 0xA0, 0x00, 0x00, 0x11, 0x00]),
                      .logicalBlockAddressOutOfRange(lba: 0x3B9E_12A0, blocks: 0x11), sense: outOfRange)
        XCTAssertEqual(action([0x8F, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0, 0]), .respond(.good()))
        assertRefused(respond(disk, [0x8F, 0x00, 0, 0, 0, 0, 0x3B, 0x9E, 0x12, 0xB0, 0, 0, 0, 0x01, 0, 0]),
                      .logicalBlockAddressOutOfRange(lba: 0x3B9E_12B0, blocks: 1), sense: outOfRange)
    }

    func testVerifyWithByteCheckIsRefused() {
        assertRefused(respond(disk, [0x2F, 0x02, 0, 0, 0, 0, 0x00, 0x00, 0x01, 0x00], dataIn: 0, dataOut: 512),
                      .verifyByteCheck)
    }

    func testSynchronizeCache10And16() {
        XCTAssertEqual(action([0x35, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]), .synchronizeCache)
        XCTAssertEqual(action([0x91, 0x00, 0, 0, 0, 0, 0, 0, 0x10, 0x00, 0, 0, 0x01, 0x00, 0, 0]), .synchronizeCache)
        // NUMBER OF BLOCKS 0 is "to the end", but the LBA must still name a block: 3B9E12B0h is one past the last.
        assertRefused(respond(disk, [0x91, 0x00, 0, 0, 0, 0, 0x3B, 0x9E, 0x12, 0xB0, 0, 0, 0, 0, 0, 0]),
                      .logicalBlockAddressOutOfRange(lba: 0x3B9E_12B0, blocks: 0), sense: outOfRange)
        XCTAssertEqual(action([0x91, 0x00, 0, 0, 0, 0, 0x3B, 0x9E, 0x12, 0xAF, 0, 0, 0, 0, 0, 0]), .synchronizeCache)
    }

    func testTestUnitReadyStartStopUnitAndReportLUNs() {
        XCTAssertEqual(action([0x00, 0, 0, 0, 0, 0]), .respond(.good()))
        XCTAssertEqual(action([0x1B, 0x01, 0, 0, 0x01, 0]), .respond(.good()))
        assertGood(respond(disk, [0xA0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x10, 0, 0]),
                   [0x00, 0x00, 0x00, 0x08, 0, 0, 0, 0,  // LUN LIST LENGTH 8, reserved
                    0, 0, 0, 0, 0, 0, 0, 0])            // LUN 0
    }

    func testRequestSenseInFixedAndDescriptorFormat() {
        assertGood(respond(disk, [0x03, 0x00, 0, 0, 0xFC, 0]), Fixture.fixedSense(key: 0x00, asc: 0x00, ascq: 0x00))
        assertGood(respond(disk, [0x03, 0x01, 0, 0, 0xFC, 0]), [0x72, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00])
        assertGood(respond(disk, [0x03, 0x00, 0, 0, 0x08, 0]), [0x70, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0A])
    }

    func testUnknownOpcodeIsInvalidCommandOperationCode() {
        let invalidOpcode = Fixture.fixedSense(key: 0x05, asc: 0x20, ascq: 0x00)
        assertRefused(respond(disk, [0x15, 0x10, 0, 0, 0x18, 0]), .unsupportedOperationCode(0x15), sense: invalidOpcode)  // MODE SELECT(6)
        assertRefused(respond(disk, [0x7F, 0, 0, 0, 0, 0, 0, 0x18]), .unsupportedOperationCode(0x7F), sense: invalidOpcode)
        assertRefused(respond(disk, [0xC0, 0, 0, 0, 0, 0]), .unsupportedOperationCode(0xC0), sense: invalidOpcode)
    }

    func testTruncatedCDBIsRefused() {
        assertRefused(respond(disk, [0x28, 0x00, 0, 0, 0, 0]), .truncatedCDB(length: 6))
        assertRefused(respond(disk, []), .truncatedCDB(length: 0))
    }

    func testCDBFromARawBuffer() {
        let cdb: [UInt8] = [0x28, 0x00, 0, 0, 0, 0x07, 0x00, 0x00, 0x01, 0x00]
        let action = cdb.withUnsafeBytes { disk.action(forCDB: $0, dataOutLength: 0, dataInLength: 512) }
        XCTAssertEqual(action, .read(lba: 7, sectors: 1))
    }

    /// Random READ(16)s with a fixed seed: the action is a read exactly when the range ends at or before the end.
    func testRandomRead16RangesAgreeWithTheCapacity() {
        var generator = SplitMix64(seed: 0x5EED_0011)
        let small = Fixture.disk(capacity: 1000)
        for _ in 0..<500 {
            let lba = generator.next() % 1100
            let blocks = generator.next() % 80 + 1
            var cdb: [UInt8] = [0x88, 0x00] + [UInt8](repeating: 0, count: 14)
            for i in 0..<8 { cdb[2 + i] = UInt8(truncatingIfNeeded: lba >> (8 * UInt64(7 - i))) }
            for i in 0..<4 { cdb[10 + i] = UInt8(truncatingIfNeeded: blocks >> (8 * UInt64(3 - i))) }
            let action = small.action(forCDB: cdb, dataOutLength: 0, dataInLength: Int(blocks) * 512)
            if lba + blocks <= 1000 {
                XCTAssertEqual(action, .read(lba: lba, sectors: Int(blocks)))
            } else {
                XCTAssertEqual(action, .respond(.refused(.logicalBlockAddressOutOfRange(lba: lba, blocks: blocks))))
            }
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a fixed seed gives the same sequence on every run.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

final class FailedTransferTests: XCTestCase {
    let disk = Fixture.disk()

    func testUncorrectableReadIsMediumErrorWithTheFailedLBA() {
        // 28-bit response: LBA3 = Device register E0h, not part of the address.
        let registers = ATAHeader(errFeature: 0x40, sectorCount: 0, cmdStatus: 0x51, lba: 0xE012_3456)
        let result = disk.failedTransferResult(.read, registers: registers)
        XCTAssertEqual(result.status, .checkCondition)
        XCTAssertEqual(result.sense, [0xF0, 0x00, 0x03,        // VALID | 70h, MEDIUM ERROR
                                      0x00, 0x12, 0x34, 0x56,  // INFORMATION: LBA 27:0
                                      0x0A, 0, 0, 0, 0,
                                      0x11, 0x04,              // UNRECOVERED READ ERROR - AUTO REALLOCATE FAILED
                                      0, 0, 0, 0])
    }

    func testUncorrectableWriteIsWriteErrorWith48BitLBA() {
        let registers = ATAHeader(flags: .extended, errFeature: 0x40, cmdStatus: 0x51, lba: 0x0000_8000_0001)
        XCTAssertEqual(disk.failedTransferResult(.write, registers: registers).sense,
                       [0xF0, 0x00, 0x03, 0x80, 0x00, 0x00, 0x01, 0x0A, 0, 0, 0, 0, 0x0C, 0x02, 0, 0, 0, 0])
        // An LBA over 32 bits does not fit INFORMATION: VALID stays clear.
        let high = ATAHeader(flags: .extended, errFeature: 0x40, cmdStatus: 0x51, lba: 0x0001_0000_0000)
        XCTAssertEqual(disk.failedTransferResult(.write, registers: high).sense, Fixture.fixedSense(key: 0x03, asc: 0x0C, ascq: 0x02))
    }

    func testIDNFIsLogicalBlockAddressOutOfRange() {
        let registers = ATAHeader(errFeature: 0x10, cmdStatus: 0x51, lba: 0xE000_0000)
        XCTAssertEqual(disk.failedTransferResult(.read, registers: registers),
                       SCSIResult(status: .checkCondition, sense: Fixture.fixedSense(key: 0x05, asc: 0x21, ascq: 0x00)))
    }

    func testAbortIsAbortedCommand() {
        let registers = ATAHeader(errFeature: 0x04, cmdStatus: 0x51)
        XCTAssertEqual(disk.failedTransferResult(.synchronizeCache, registers: registers).sense,
                       Fixture.fixedSense(key: 0x0B, asc: 0x00, ascq: 0x00))
        XCTAssertEqual(disk.failedTransferResult(.write, registers: ATAHeader(errFeature: 0x84, cmdStatus: 0x51)).sense,
                       Fixture.fixedSense(key: 0x0B, asc: 0x47, ascq: 0x00), "ICRC|ABRT: a transfer CRC error")
    }

    func testUnreachableTargetIsLogicalUnitCommunicationFailure() {
        XCTAssertEqual(disk.transportFailureResult(),
                       SCSIResult(status: .checkCondition, sense: Fixture.fixedSense(key: 0x0B, asc: 0x08, ascq: 0x00)))
    }
}

/// TCMU gives one buffer and no direction: the disk takes it from the CDB.
final class DirectionFromCDBTests: XCTestCase {
    func testWritesAndDataOutPassThroughSendTheBufferEverythingElseReceivesIt() {
        XCTAssertTrue(SCSIDisk.sendsData([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0]))
        XCTAssertTrue(SCSIDisk.sendsData([0x0A, 0, 0, 0, 1, 0]))
        XCTAssertFalse(SCSIDisk.sendsData([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]))
        XCTAssertFalse(SCSIDisk.sendsData([0x12, 0, 0, 0, 36, 0]))
        // ATA PASS-THROUGH(16): PIO data-out (5), T_DIR 0, length in the sector count: out.
        XCTAssertTrue(SCSIDisk.sendsData([0x85, 0x0A, 0x06, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0xF4, 0]))
        // PIO data-in (4), T_DIR 1: in. Non-data (3): nothing goes out.
        XCTAssertFalse(SCSIDisk.sendsData([0x85, 0x08, 0x0E, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0xEC, 0]))
        XCTAssertFalse(SCSIDisk.sendsData([0x85, 0x06, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0xE5, 0]))
    }
}
