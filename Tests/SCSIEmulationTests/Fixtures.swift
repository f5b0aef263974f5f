import ATACore
import AoEWire
@testable import SCSIEmulation
import XCTest

/// A 500 GB drive with 4 KiB physical sectors, a WWN, 7200 rpm, 3.5", SMART and look-ahead on.
enum Fixture {
    static let capacity: UInt64 = 1_000_215_216  // 3B9E12B0h; last LBA 3B9E12AFh
    static let model = "WDC WD5000AAKX-001CA0"
    static let serial = "WD-WCAYUJ123456"

    static func identify(firmware: String = "15.01H15", edit: (inout [UInt16]) -> Void = { _ in }) -> IdentifyPage {
        var words = IdentifyPage(IdentifyParameters(sectors: capacity, model: model, serial: serial, firmware: firmware)).words
        words[82] |= 0x0001  // SMART supported
        words[85] |= 0x0041  // SMART enabled, look-ahead enabled
        words[87] = 0x4100  // word valid, bit 8: WWN in words 108-111
        words[108] = 0x5001
        words[109] = 0x4EE0
        words[110] = 0x5A1B
        words[111] = 0x2C3D
        words[106] = 0x6003  // valid, multiple logical per physical, 2^3 = 8 (4096-byte physical)
        words[168] = 0x0002  // 3.5 inch
        words[217] = 7200
        edit(&words)
        return IdentifyPage(words: words)
    }

    static func disk(identify: IdentifyPage = Fixture.identify(), capacity: UInt64 = Fixture.capacity,
                     maxTransfer: Int = 1024, passThroughMax: Int = 2) -> SCSIDisk {
        SCSIDisk(drive: DriveDescription(identify: identify, capacitySectors: capacity, maxTransferSectors: maxTransfer,
                                         passThroughMaxSectors: passThroughMax))
    }

    static func ascii(_ text: String) -> [UInt8] { Array(text.utf8) }
    static func padded(_ text: String, _ count: Int) -> [UInt8] {
        ascii(text) + [UInt8](repeating: 0x20, count: count - text.utf8.count)
    }

    /// Fixed-format sense, current error: 70h, key, additional length 10, ASC/ASCQ at 12-13.
    static func fixedSense(key: UInt8, asc: UInt8, ascq: UInt8) -> [UInt8] {
        [0x70, 0x00, key, 0x00, 0x00, 0x00, 0x00, 0x0A, 0x00, 0x00, 0x00, 0x00, asc, ascq, 0x00, 0x00, 0x00, 0x00]
    }
    static let invalidFieldInCDB = fixedSense(key: 0x05, asc: 0x24, ascq: 0x00)
}

extension XCTestCase {
    /// The result of a CDB this disk answers itself; fails the test for any other action.
    func respond(_ disk: SCSIDisk, _ cdb: [UInt8], dataIn: Int = 4096, dataOut: Int = 0,
                 file: StaticString = #filePath, line: UInt = #line) -> SCSIResult {
        let action = disk.action(forCDB: cdb, dataOutLength: dataOut, dataInLength: dataIn)
        guard case .respond(let result) = action else {
            XCTFail("expected an emulated response, got \(action)", file: file, line: line)
            return SCSIResult(status: SCSIStatus(rawValue: 0xFF))
        }
        return result
    }

    func assertGood(_ result: SCSIResult, _ data: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(result.status, .good, file: file, line: line)
        XCTAssertEqual(result.sense, [], file: file, line: line)
        XCTAssertEqual(result.dataIn, data, file: file, line: line)
    }

    func assertRefused(_ result: SCSIResult, _ refusal: SCSIRefusal, sense: [UInt8] = Fixture.invalidFieldInCDB,
                       file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(result.status, .checkCondition, file: file, line: line)
        XCTAssertEqual(result.sense, sense, file: file, line: line)
        XCTAssertEqual(result.dataIn, [], file: file, line: line)
        XCTAssertEqual(result.refusal, refusal, file: file, line: line)
    }
}
