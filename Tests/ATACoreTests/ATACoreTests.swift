import XCTest
@testable import ATACore
import AoEWire

final class ATADispatcherTests: XCTestCase {
    let caps = ExportCapabilities(sectors: 1000, writable: true, canFlush: true, maxSectorsPerCommand: 2)

    func task(_ command: ATACommand, count: UInt8 = 1, lba: UInt64 = 0, feature: UInt8 = 0, extended: Bool = false) -> TaskFile {
        TaskFile(commandStatus: command.rawValue, featureError: feature, count: count, lbaRegisters: lba, extended: extended)
    }

    func testReadsAtFirstAndLastSectorAreInRange() {
        XCTAssertEqual(ATADispatcher.plan(task(.readSectorsExt, lba: 0), payloadLength: 24, capabilities: caps), .read(lba: 0, count: 1))
        XCTAssertEqual(ATADispatcher.plan(task(.readSectorsExt, lba: 999), payloadLength: 24, capabilities: caps), .read(lba: 999, count: 1))
        XCTAssertEqual(ATADispatcher.plan(task(.readSectorsExt, count: 2, lba: 998), payloadLength: 24, capabilities: caps), .read(lba: 998, count: 2))
    }

    func testReadPastEndReturnsIDNF() {
        let request = task(.readSectorsExt, count: 2, lba: 999)
        guard case .reply(let reply) = ATADispatcher.plan(request, payloadLength: 24, capabilities: caps) else { return XCTFail() }
        XCTAssertEqual(reply.status.rawValue, 0x51)
        XCTAssertEqual(reply.error.rawValue, 0x10)
        let oneBeyond = ATADispatcher.plan(task(.readSectors, lba: 1000), payloadLength: 24, capabilities: caps)
        XCTAssertEqual(oneBeyond, .reply(.idNotFound(task(.readSectors, lba: 1000))))
        // An LBA near 2^48 must not wrap around the range check.
        let huge = task(.readSectorsExt, count: 2, lba: 0xFFFF_FFFF_FFFF)
        XCTAssertEqual(ATADispatcher.plan(huge, payloadLength: 24, capabilities: caps), .reply(.idNotFound(huge)))
    }

    func testLBA28TakesLowNibbleOfLBA3AndIgnoresDeviceBits() {
        // LBA3 = 0xE0 | 0x0 (Linux sets LBA mode and device bits): sector 0x00000005.
        let request = task(.readSectors, lba: 0x0000_E000_0005)
        XCTAssertEqual(request.address, 5)
        XCTAssertEqual(request.device, 0xE0)
        let bigCaps = ExportCapabilities(sectors: 0x1000_0000, writable: true, canFlush: true, maxSectorsPerCommand: 2)
        let high = task(.readSectors, lba: 0x0000_EF12_3456)
        XCTAssertEqual(ATADispatcher.plan(high, payloadLength: 0, capabilities: bigCaps), .read(lba: 0x0F12_3456, count: 1))
        // The same bytes as an EXT command address all 48 bits.
        XCTAssertEqual(task(.readSectorsExt, lba: 0x0000_EF12_3456, extended: true).address, 0xEF12_3456)
    }

    func testDMAFormsMapToTheSameOperations() {
        XCTAssertEqual(ATADispatcher.plan(task(.readDMA, lba: 3), payloadLength: 0, capabilities: caps), .read(lba: 3, count: 1))
        XCTAssertEqual(ATADispatcher.plan(task(.readDMAExt, lba: 3), payloadLength: 0, capabilities: caps), .read(lba: 3, count: 1))
        XCTAssertEqual(ATADispatcher.plan(task(.writeDMA, lba: 3), payloadLength: 512, capabilities: caps), .write(lba: 3, count: 1))
        XCTAssertEqual(ATADispatcher.plan(task(.writeDMAExt, lba: 3), payloadLength: 512, capabilities: caps), .write(lba: 3, count: 1))
    }

    func testWriteNeedsItsWholePayload() {
        XCTAssertEqual(ATADispatcher.plan(task(.writeSectors, count: 2), payloadLength: 1023, capabilities: caps), .aoeError(.badArgument))
        XCTAssertEqual(ATADispatcher.plan(task(.writeSectors, count: 2), payloadLength: 1024, capabilities: caps), .write(lba: 0, count: 2))
    }

    func testMoreSectorsThanAFrameCarriesIsBadArgument() {
        XCTAssertEqual(ATADispatcher.plan(task(.readSectors, count: 3), payloadLength: 0, capabilities: caps), .aoeError(.badArgument))
        // Count 0 means 256 sectors (ACS-3), far more than a frame carries.
        XCTAssertEqual(ATADispatcher.plan(task(.readSectors, count: 0), payloadLength: 0, capabilities: caps), .aoeError(.badArgument))
    }

    func testReadOnlyExportAbortsWrites() {
        var ro = caps
        ro.writable = false
        let request = task(.writeSectorsExt, lba: 10)
        XCTAssertEqual(ATADispatcher.plan(request, payloadLength: 512, capabilities: ro), .reply(.aborted(request)))
        XCTAssertEqual(ATADispatcher.plan(task(.readSectorsExt, lba: 10), payloadLength: 0, capabilities: ro), .read(lba: 10, count: 1))
    }

    func testUnknownOpcodeIsAbortedNotSilent() {
        for opcode: UInt8 in [0x00, 0x2F, 0x92, 0xB0, 0xF1, 0xFF] {
            let request = TaskFile(commandStatus: opcode, count: 1, lbaRegisters: 0)
            guard case .reply(let reply) = ATADispatcher.plan(request, payloadLength: 0, capabilities: caps) else {
                return XCTFail("opcode \(opcode) not answered")
            }
            XCTAssertEqual(reply.status.rawValue, 0x51)
            XCTAssertEqual(reply.error.rawValue, 0x04)
        }
    }

    func testFlushCheckPowerVerifyAndSetFeatures() {
        XCTAssertEqual(ATADispatcher.plan(task(.flushCache), payloadLength: 0, capabilities: caps), .flush)
        XCTAssertEqual(ATADispatcher.plan(task(.flushCacheExt), payloadLength: 0, capabilities: caps), .flush)
        var noFlush = caps
        noFlush.canFlush = false
        XCTAssertEqual(ATADispatcher.plan(task(.flushCache), payloadLength: 0, capabilities: noFlush), .reply(.aborted(task(.flushCache))))
        guard case .reply(let power) = ATADispatcher.plan(task(.checkPowerMode), payloadLength: 0, capabilities: caps) else { return XCTFail() }
        XCTAssertEqual(power.count, 0xFF)
        XCTAssertEqual(power.status.rawValue, 0x40)
        XCTAssertEqual(ATADispatcher.plan(task(.readVerifySectorsExt, count: 2, lba: 998), payloadLength: 0, capabilities: caps),
                       .reply(.ok(task(.readVerifySectorsExt, count: 2, lba: 998))))
        XCTAssertEqual(ATADispatcher.plan(task(.readVerifySectors, count: 2, lba: 999), payloadLength: 0, capabilities: caps),
                       .reply(.idNotFound(task(.readVerifySectors, count: 2, lba: 999))))
        XCTAssertEqual(ATADispatcher.plan(task(.setFeatures, feature: 0x02), payloadLength: 0, capabilities: caps), .setWriteCache(enabled: true))
        XCTAssertEqual(ATADispatcher.plan(task(.setFeatures, feature: 0x82), payloadLength: 0, capabilities: caps), .setWriteCache(enabled: false))
        XCTAssertEqual(ATADispatcher.plan(task(.setFeatures, feature: 0x03), payloadLength: 0, capabilities: caps), .reply(.aborted(task(.setFeatures, feature: 0x03))))
    }

    func testReplyHeaderKeepsFlagsAndCarriesRegisters() {
        let request = ATAHeader(flags: [.extended, .write], errFeature: 0, sectorCount: 2, cmdStatus: 0x34, lba: 77)
        let reply = request.replying(.aborted(TaskFile(request)))
        XCTAssertEqual(reply.flags, [.extended, .write])
        XCTAssertEqual(reply.cmdStatus, 0x51)
        XCTAssertEqual(reply.errFeature, 0x04)
        XCTAssertEqual(reply.lba, 77)
    }
}

final class IdentifyPageTests: XCTestCase {
    let params = IdentifyParameters(sectors: 0x1_2345_6789, model: "Swift AoE target", serial: "SER123", firmware: "1.0")

    func testCapacityWordsLBA28SaturatesAndLBA48IsExact() {
        let page = IdentifyPage(params)
        XCTAssertEqual(page.words[60], 0xFFFF)       // min(n, 0x0FFFFFFF) low word
        XCTAssertEqual(page.words[61], 0x0FFF)
        XCTAssertEqual(page.words[100], 0x6789)
        XCTAssertEqual(page.words[101], 0x2345)
        XCTAssertEqual(page.words[102], 0x0001)
        XCTAssertEqual(page.words[103], 0x0000)
        XCTAssertEqual(page.sectors, 0x1_2345_6789)
        let small = IdentifyPage(IdentifyParameters(sectors: 131072, model: "m", serial: "s", firmware: "f"))
        XCTAssertEqual(small.lba28Sectors, 131072)
        XCTAssertEqual(small.lba48Sectors, 131072)
    }

    func testFeatureWordsForInitiators() {
        let page = IdentifyPage(params)
        XCTAssertEqual(page.words[49] & 0x0200, 0x0200, "word 49 bit 9: LBA supported")
        XCTAssertEqual(page.words[83], 0x7400, "word 83: bit 14 one, 13 FLUSH EXT, 12 FLUSH, 10 LBA48")
        XCTAssertEqual(page.words[86], 0x3400, "word 86: bits 13, 12, 10 enabled")
        XCTAssertEqual(page.words[84] & 0xC000, 0x4000, "word 84: bit 14 one, bit 15 zero")
        XCTAssertEqual(page.words[87] & 0xC000, 0x4000, "word 87: bit 14 one, bit 15 zero")
        XCTAssertEqual(page.words[82] & 0x0020, 0x0020, "word 82 bit 5: write cache supported")
        XCTAssertEqual(page.words[85] & 0x0020, 0x0020, "word 85 bit 5: write cache enabled")
    }

    func testWriteCacheDisabledClearsWord85Bit5() {
        var p = params
        p.writeCacheEnabled = false
        let page = IdentifyPage(p)
        XCTAssertEqual(page.words[82] & 0x0020, 0x0020)
        XCTAssertEqual(page.words[85] & 0x0020, 0)
        XCTAssertFalse(page.writeCacheEnabled)
    }

    func testStringsAreByteSwappedAndSpacePadded() {
        let bytes = IdentifyPage(params).bytes
        // Word 27 holds "Sw": 'S' in the high byte, so the little-endian bytes are 'w', 'S'.
        XCTAssertEqual(bytes[54], UInt8(ascii: "w"))
        XCTAssertEqual(bytes[55], UInt8(ascii: "S"))
        XCTAssertEqual(bytes[20], UInt8(ascii: "E"))  // serial "SER123": word 10 = "SE"
        XCTAssertEqual(bytes[21], UInt8(ascii: "S"))
        XCTAssertEqual(bytes[39], 0x20)               // padding
        let parsed = IdentifyPage(bytes: bytes)!
        XCTAssertEqual(parsed.model, "Swift AoE target")
        XCTAssertEqual(parsed.serial, "SER123")
        XCTAssertEqual(parsed.firmware, "1.0")
    }

    func testChecksumMakesByteSumZero() {
        let bytes = IdentifyPage(params).bytes
        XCTAssertEqual(bytes[510], 0xA5)
        XCTAssertEqual(bytes.reduce(UInt8(0)) { $0 &+ $1 }, 0)
        XCTAssertTrue(IdentifyPage(bytes: bytes)!.checksumIsValid)
        var corrupted = bytes
        corrupted[100] ^= 1
        XCTAssertFalse(IdentifyPage(bytes: corrupted)!.checksumIsValid)
    }
}
