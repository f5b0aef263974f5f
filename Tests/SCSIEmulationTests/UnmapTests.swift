import ATACore
import AoEWire
@testable import SCSIEmulation
import XCTest

/// UNMAP (SBC-3 5.28) over a drive with TRIM, and the logical block provisioning it is offered with.
final class UnmapTests: XCTestCase {
    /// The fixture drive with TRIM that reads zeros (IDENTIFY words 69, 105, 169).
    let trimDisk = Fixture.disk(identify: Fixture.identify { w in
        w[69] = 0x4020
        w[105] = 1
        w[169] = 0x0001
    }, capacity: 1000)
    let plainDisk = Fixture.disk(capacity: 1000)

    func unmapCDB(length: UInt16, anchor: Bool = false) -> [UInt8] {
        [0x42, anchor ? 1 : 0, 0, 0, 0, 0, 0, UInt8(length >> 8), UInt8(truncatingIfNeeded: length), 0]
    }

    /// A parameter list: 8-byte header, then one 16-byte descriptor per range (big-endian LBA and count).
    func parameterList(_ ranges: [(UInt64, UInt32)]) -> [UInt8] {
        var list: [UInt8] = [0, UInt8(6 + 16 * ranges.count), 0, UInt8(16 * ranges.count), 0, 0, 0, 0]
        for (lba, count) in ranges {
            list += (0..<8).map { UInt8(truncatingIfNeeded: lba >> (56 - 8 * UInt64($0))) }
            list += (0..<4).map { UInt8(truncatingIfNeeded: count >> (24 - 8 * UInt32($0))) }
            list += [0, 0, 0, 0]
        }
        return list
    }

    func testADriveWithTrimOffersUnmapInReadCapacityAndVPDPagesB0AndB2() {
        let capacity = respond(trimDisk, [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]).dataIn
        XCTAssertEqual(capacity[14] & 0xC0, 0xC0, "LBPME and LBPRZ")
        let pages = respond(trimDisk, [0x12, 0x01, 0x00, 0, 255, 0]).dataIn
        XCTAssertEqual(Array(pages[4...]), [0x00, 0x80, 0x83, 0x89, 0xB0, 0xB1, 0xB2])
        XCTAssertEqual(respond(trimDisk, [0x12, 0x01, 0xB2, 0, 255, 0]).dataIn, [0x00, 0xB2, 0x00, 0x04, 0x00, 0x84, 0x02, 0x00])
        let limits = respond(trimDisk, [0x12, 0x01, 0xB0, 0, 255, 0]).dataIn
        // MAXIMUM UNMAP LBA COUNT: 64 entries of 65,535 blocks = 4,194,240 = 003FFFC0h; one descriptor.
        XCTAssertEqual(Array(limits[20..<28]), [0x00, 0x3F, 0xFF, 0xC0, 0x00, 0x00, 0x00, 0x01])
    }

    func testADriveWithoutTrimOffersNone() {
        XCTAssertEqual(respond(plainDisk, [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]).dataIn[14] & 0xC0, 0)
        XCTAssertFalse(respond(plainDisk, [0x12, 0x01, 0x00, 0, 255, 0]).dataIn.contains(0xB2))
        XCTAssertEqual(respond(plainDisk, [0x12, 0x01, 0xB2, 0, 255, 0]).refusal, .unsupportedVPDPage(0xB2))
        XCTAssertEqual(respond(plainDisk, unmapCDB(length: 24), dataIn: 0, dataOut: 24).refusal, .unsupportedOperationCode(0x42))
        let limits = respond(plainDisk, [0x12, 0x01, 0xB0, 0, 255, 0]).dataIn
        XCTAssertEqual(Array(limits[20..<28]), [0, 0, 0, 0, 0, 0, 0, 0])
    }

    func testTheUnmapCDBAsksForItsParameterListOrIsRefused() {
        XCTAssertTrue(SCSIDisk.sendsData(unmapCDB(length: 24)))
        XCTAssertEqual(trimDisk.action(forCDB: unmapCDB(length: 24), dataOutLength: 24, dataInLength: 0), .unmap(parameterListLength: 24))
        XCTAssertEqual(respond(trimDisk, unmapCDB(length: 0), dataIn: 0).status, .good, "a length of 0 unmaps nothing")
        XCTAssertEqual(respond(trimDisk, unmapCDB(length: 24, anchor: true), dataIn: 0, dataOut: 24).refusal, .unmapAnchor)
        let short = respond(trimDisk, unmapCDB(length: 6), dataIn: 0, dataOut: 6)
        XCTAssertEqual(short.refusal, .unmapParameterListLength(6))
        XCTAssertEqual(Array(short.sense[12...13]), [0x1A, 0x00], "PARAMETER LIST LENGTH ERROR")
        guard case .respond(let mismatch) = trimDisk.action(forCDB: unmapCDB(length: 24), dataOutLength: 16, dataInLength: 0),
              case .transferLengthMismatch = mismatch.refusal else { return XCTFail("a list longer than the data-out is refused") }
    }

    func testTheParameterListBecomesRangesEachCheckedFirst() {
        XCTAssertEqual(try trimDisk.unmapRanges(parameterList([(990, 10)])).get(), [BlockRange(lba: 990, count: 10)])
        XCTAssertEqual(try trimDisk.unmapRanges(parameterList([(5, 0)])).get(), [], "a descriptor of 0 blocks unmaps nothing")
        XCTAssertEqual(try trimDisk.unmapRanges(parameterList([])).get(), [])
        XCTAssertEqual(trimDisk.unmapRanges(parameterList([(995, 10)])), .failure(.logicalBlockAddressOutOfRange(lba: 995, blocks: 10)))
        XCTAssertEqual(trimDisk.unmapRanges(parameterList([(1, 1), (3, 1)])), .failure(.unmapBeyondLimits(descriptors: 2, blocks: 2)))
        let big = Fixture.disk(identify: trimDisk.drive.identify, capacity: 10_000_000)
        XCTAssertEqual(big.unmapRanges(parameterList([(0, 4_194_241)])), .failure(.unmapBeyondLimits(descriptors: 1, blocks: 4_194_241)))
        XCTAssertEqual(try big.unmapRanges(parameterList([(0, 4_194_240)])).get(), [BlockRange(lba: 0, count: 4_194_240)])
        var truncated = parameterList([(1, 1)])
        truncated.removeLast(4)
        XCTAssertEqual(trimDisk.unmapRanges(truncated), .failure(.unmapParameterListLength(20)))
        // The most one UNMAP may name fits one TRIM command: 64 entries, one block.
        XCTAssertEqual(TrimRangeList.commandPayloads([(0, 4_194_240)], blocksPerCommand: big.drive.trimBlocksPerCommand).map(\.count), [512])
    }

    func testAFailedTrimIsAbortedCommandWithoutAnLBA() {
        let result = trimDisk.failedTransferResult(.unmap, registers: ATAHeader(flags: .extended, errFeature: 0x04, cmdStatus: 0x51, lba: 77))
        XCTAssertEqual(result.status, .checkCondition)
        XCTAssertEqual(result.sense[2], 0x0B, "ABORTED COMMAND")
        XCTAssertEqual(result.sense[0] & 0x80, 0, "no INFORMATION field")
    }
}
