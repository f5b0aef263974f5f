import XCTest
@testable import ATACore
import AoEWire

/// DATA SET MANAGEMENT TRIM (ACS-3 7.5): the range entry layout, the dispatcher's checks, IDENTIFY words.
final class TrimTests: XCTestCase {
    let caps = ExportCapabilities(sectors: 1000, writable: true, canFlush: true, maxSectorsPerCommand: 2, canTrim: true)

    func dsm(count: UInt8 = 1, feature: UInt8 = 0x01) -> TaskFile {
        TaskFile(commandStatus: 0x06, featureError: feature, count: count, lbaRegisters: 0, extended: true)
    }

    /// ACS-3 table 39: bits 47:0 LBA, bits 63:48 range length, little-endian.
    func testARangeEntryIsReadLittleEndianWithTheLengthInTheTopSixteenBits() {
        let entry: [UInt8] = [0xBC, 0x9A, 0x78, 0x56, 0x34, 0x12, 0x02, 0x01]
        var seen: [(UInt64, Int)] = []
        entry.withUnsafeBytes { TrimRangeList.forEach($0) { seen.append(($0, $1)) } }
        XCTAssertEqual(seen.count, 1)
        XCTAssertEqual(seen.first?.0, 0x1234_5678_9ABC)
        XCTAssertEqual(seen.first?.1, 0x0102)
    }

    func testUnusedEntriesAreSkippedWhereverTheySitAndTheSpanCoversTheRest() {
        var block = [UInt8](repeating: 0, count: 512)
        func put(_ index: Int, lba: UInt64, count: UInt64) {
            let entry = count << 48 | lba
            for b in 0..<8 { block[index * 8 + b] = UInt8(truncatingIfNeeded: entry >> (8 * UInt64(b))) }
        }
        put(0, lba: 40, count: 1)
        put(5, lba: 10, count: 3)   // entries 1-4 unused, so is everything after 5
        put(63, lba: 998, count: 2)  // the last entry of the block, ending at the last sector
        block.withUnsafeBytes {
            XCTAssertEqual(TrimRangeList.check($0, sectors: 1000), .ranges(count: 3, start: 10, end: 1000))
            XCTAssertEqual(TrimRangeList.check($0, sectors: 999), .outOfRange)
        }
        XCTAssertEqual([UInt8](repeating: 0, count: 512).withUnsafeBytes { TrimRangeList.check($0, sectors: 1000) }, .empty)
    }

    func testEncodingSplitsLongRangesAndFillsBlocksThatReadBackTheSame() {
        // 70,000 sectors: two entries (65,535 + 4,465), then 70 one-sector ranges: 72 entries, two commands of one block.
        let ranges = [(lba: UInt64(1 << 40), count: UInt64(70_000))] + (0..<70).map { (lba: UInt64(2 * $0), count: UInt64(1)) }
        let payloads = TrimRangeList.commandPayloads(ranges, blocksPerCommand: 1)
        XCTAssertEqual(payloads.map(\.count), [512, 512])
        XCTAssertEqual(Array(payloads[0][0..<8]), [0, 0, 0, 0, 0, 0x01, 0xFF, 0xFF])
        var decoded: [(UInt64, Int)] = []
        for payload in payloads { payload.withUnsafeBytes { TrimRangeList.forEach($0) { decoded.append(($0, $1)) } } }
        XCTAssertEqual(decoded.count, 72)
        XCTAssertEqual(decoded[1].0, (1 << 40) + 65_535)
        XCTAssertEqual(decoded[1].1, 4_465)
        XCTAssertEqual(decoded.map(\.1).reduce(0, +), 70_070)
        XCTAssertEqual(decoded.last?.0, 138)
        // With two blocks a command, the same entries travel in one.
        XCTAssertEqual(TrimRangeList.commandPayloads(ranges, blocksPerCommand: 2).map(\.count), [1024])
    }

    func testTheDispatcherPlansATrimOnlyWhenEveryRuleHolds() {
        XCTAssertEqual(ATADispatcher.plan(dsm(), payloadLength: 512, capabilities: caps), .trim(blocks: 1))
        XCTAssertEqual(ATADispatcher.plan(dsm(feature: 0), payloadLength: 512, capabilities: caps), .reply(.aborted(dsm(feature: 0))),
                       "DSM without the TRIM bit")
        XCTAssertEqual(ATADispatcher.plan(dsm(count: 0), payloadLength: 512, capabilities: caps), .reply(.aborted(dsm(count: 0))),
                       "a count of 0 is reserved")
        XCTAssertEqual(ATADispatcher.plan(dsm(count: 2), payloadLength: 1024, capabilities: caps), .reply(.aborted(dsm(count: 2))),
                       "more blocks than IDENTIFY word 105 allows")
        XCTAssertEqual(ATADispatcher.plan(dsm(), payloadLength: 511, capabilities: caps), .aoeError(.badArgument),
                       "the frame is shorter than its count says")
        var readOnly = caps
        readOnly.writable = false
        XCTAssertEqual(ATADispatcher.plan(dsm(), payloadLength: 512, capabilities: readOnly), .reply(.aborted(dsm())))
        var noDiscard = caps
        noDiscard.canTrim = false
        XCTAssertEqual(ATADispatcher.plan(dsm(), payloadLength: 512, capabilities: noDiscard), .reply(.aborted(dsm())))
        XCTAssertTrue(ATAOperation.trim(blocks: 1).writesMedia)
        XCTAssertTrue(ATACommand.dataSetManagement.usesLBA48)
    }

    func testIdentifyReportsTrimInWords169And105And69() {
        let base = IdentifyParameters(sectors: 1000, model: "m", serial: "s", firmware: "f")
        let none = IdentifyPage(base)
        XCTAssertEqual([none.words[69], none.words[105], none.words[169]], [0, 0, 0])
        XCTAssertFalse(none.trimSupported)
        var zeros = base
        zeros.trim = .zeros
        let z = IdentifyPage(zeros)
        XCTAssertEqual([z.words[69], z.words[105], z.words[169]], [0x4020, 1, 1])
        XCTAssertTrue(z.trimSupported && z.trimReadsZeros && z.checksumIsValid)
        XCTAssertEqual(z.maxTrimBlocks, 1)
        var deterministic = base
        deterministic.trim = .deterministic
        let d = IdentifyPage(deterministic)
        XCTAssertEqual(d.words[69], 0x4000)
        XCTAssertTrue(d.trimSupported)
        XCTAssertFalse(d.trimReadsZeros)
    }
}
