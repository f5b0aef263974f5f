import ATACore
import AoEWire
@testable import SCSIEmulation
import XCTest

final class PassThroughTranslationTests: XCTestCase {
    let disk = Fixture.disk(passThroughMax: 2)

    func request(_ cdb: [UInt8], dataIn: Int = 0, dataOut: Int = 0, file: StaticString = #filePath,
                 line: UInt = #line) -> ATAPassThroughRequest? {
        let action = disk.action(forCDB: cdb, dataOutLength: dataOut, dataInLength: dataIn)
        guard case .ataPassThrough(let request) = action else {
            XCTFail("expected a pass-through, got \(action)", file: file, line: line)
            return nil
        }
        return request
    }

    func refusal(_ cdb: [UInt8], dataIn: Int = 0, dataOut: Int = 0) -> ATAPassThroughRefusal? {
        guard case .respond(let result) = disk.action(forCDB: cdb, dataOutLength: dataOut, dataInLength: dataIn),
              case .passThrough(let reason) = result.refusal else { return nil }
        XCTAssertEqual(result.sense, Fixture.invalidFieldInCDB)
        return reason
    }

    func test28BitReadSectorsPutsTheDeviceRegisterInLBA3() {
        let cdb: [UInt8] = [
            0x85,
            0x08,        // PROTOCOL 4 (PIO data-in), EXTEND 0
            0x0E,        // T_DIR from device, BYT_BLOK, T_LENGTH 2 (COUNT)
            0x00, 0x00,  // FEATURE 15:8 (ignored without EXTEND), 7:0
            0x00, 0x01,  // COUNT 15:8, 7:0
            0x00, 0xF1,  // LBA 31:24 (ignored), 7:0
            0x00, 0xDE,  // LBA 39:32 (ignored), 15:8
            0x00, 0xBC,  // LBA 47:40 (ignored), 23:16
            0xF5,        // DEVICE: obsolete bits 7 and 5, LBA, DEV, LBA 27:24 = 5
            0x20,        // READ SECTORS
            0x00]
        guard let request = request(cdb, dataIn: 512) else { return }
        XCTAssertEqual(request.task, ATAHeader(flags: [], errFeature: 0x00, sectorCount: 0x01, cmdStatus: 0x20,
                                               lba: 0xE5_BC_DE_F1))  // LBA3 = DEVICE with DEV cleared
        XCTAssertEqual(request.direction, .fromDevice)
        XCTAssertEqual(request.sectors, 1)
        XCTAssertEqual(request.dataInSectors, 1)
        XCTAssertEqual(request.dataOutSectors, 0)
        XCTAssertFalse(request.extend)
        XCTAssertFalse(request.checkCondition)
        XCTAssertEqual(request.protocolField, 4)
    }

    func testATAPassThrough12MapsTheSameRegisters() {
        let cdb: [UInt8] = [0xA1, 0x08, 0x0E, 0x00, 0x01, 0xF1, 0xDE, 0xBC, 0xE5, 0x20, 0x00, 0x00]
        XCTAssertEqual(request(cdb, dataIn: 512)?.task, ATAHeader(sectorCount: 0x01, cmdStatus: 0x20, lba: 0xE5_BC_DE_F1))
    }

    func test48BitReadDMAExtInterleavesHighOrderBytes() {
        let cdb: [UInt8] = [
            0x85,
            0x0D,        // PROTOCOL 6 (DMA), EXTEND
            0x0E,        // T_DIR from device, BYT_BLOK, T_LENGTH 2
            0x00, 0x00,  // FEATURE
            0x00, 0x02,  // COUNT 2
            0x34, 0x9A,  // LBA 31:24, 7:0
            0x12, 0x78,  // LBA 39:32, 15:8
            0x00, 0x56,  // LBA 47:40, 23:16
            0x40,        // DEVICE: LBA
            0x25,        // READ DMA EXT
            0x00]
        guard let request = request(cdb, dataIn: 1024) else { return }
        XCTAssertEqual(request.task, ATAHeader(flags: .extended, errFeature: 0, sectorCount: 2, cmdStatus: 0x25,
                                               lba: 0x0012_3456_789A))
        XCTAssertEqual(request.direction, .fromDevice)
        XCTAssertEqual(request.sectors, 2)
        XCTAssertTrue(request.extend)
        XCTAssertEqual(request.device, 0x40)
    }

    func testWriteDMAExtSetsTheWriteFlag() {
        let cdb: [UInt8] = [0x85, 0x0D, 0x06, 0, 0, 0, 0x01, 0, 0x10, 0, 0, 0, 0, 0x40, 0x35, 0]  // T_DIR to device
        guard let request = request(cdb, dataOut: 512) else { return }
        XCTAssertEqual(request.task, ATAHeader(flags: [.extended, .write], sectorCount: 1, cmdStatus: 0x35, lba: 0x10))
        XCTAssertEqual(request.direction, .toDevice)
        XCTAssertEqual(request.dataOutSectors, 1)
    }

    func testUDMAProtocolsAndLengthInFeatureAndBytes() {
        // UDMA data-in (10); T_DIR from device, BYT_BLOK, T_LENGTH 1: the length is FEATURE, 2 blocks.
        let inBlocks: [UInt8] = [0xA1, 0x14, 0x0D, 0x02, 0x00, 0, 0, 0, 0xE0, 0xC8, 0, 0]
        XCTAssertEqual(request(inBlocks, dataIn: 1024)?.sectors, 2)
        let out: [UInt8] = [0xA1, 0x16, 0x06, 0x00, 0x01, 0, 0, 0, 0xE0, 0xCA, 0, 0]  // UDMA data-out (11), COUNT 1
        XCTAssertEqual(request(out, dataOut: 512)?.task.flags, .write)
    }

    func testLargerKernelBufferIsAccepted() {
        let identify: [UInt8] = [0xA1, 0x08, 0x0E, 0x00, 0x01, 0, 0, 0, 0xA0, 0xEC, 0, 0]
        XCTAssertEqual(request(identify, dataIn: 4096)?.sectors, 1)
    }

    func testEveryProtocolAoECannotCarryIsRefused() {
        for p: UInt8 in [0, 1, 2, 7, 8, 9, 12, 13, 14, 15] {
            let cdb: [UInt8] = [0x85, p << 1, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xE0, 0x00, 0]
            XCTAssertEqual(refusal(cdb), .unsupportedProtocol(p), "protocol \(p)")
        }
    }

    func testMultipleCountIsRefused() {
        let cdb: [UInt8] = [0x85, 0x28, 0x0E, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0xE0, 0xC4, 0]  // READ MULTIPLE, 2^1
        XCTAssertEqual(refusal(cdb, dataIn: 512), .multipleCount(1))
    }

    func testExtendWithHighOrderFeatureOrCountIsRefused() {
        let feature: [UInt8] = [0x85, 0x07, 0x00, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0xEA, 0]
        XCTAssertEqual(refusal(feature), .highOrderRegisters(feature: 0x01, count: 0x00))
        let count: [UInt8] = [0x85, 0x0D, 0x0E, 0x00, 0x00, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0x40, 0x25, 0]
        XCTAssertEqual(refusal(count, dataIn: 512), .highOrderRegisters(feature: 0x00, count: 0x01))
        // Without EXTEND the high-order bytes are ignored, as libata does.
        let ignored: [UInt8] = [0x85, 0x06, 0x00, 0x01, 0x00, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0xE0, 0xE7, 0]
        XCTAssertEqual(request(ignored)?.task, ATAHeader(cmdStatus: 0xE7, lba: 0xE000_0000))
    }

    func testTransferLengthInTPSIUIsRefused() {
        let cdb: [UInt8] = [0xA1, 0x08, 0x0F, 0x00, 0x01, 0, 0, 0, 0xE0, 0x20, 0, 0]
        XCTAssertEqual(refusal(cdb, dataIn: 512), .transferLengthInTPSIU)
    }

    func testByteTransfersThatAreNotWholeSectorsAreRefused() {
        let cdb: [UInt8] = [0xA1, 0x08, 0x0A, 0x00, 0xFF, 0, 0, 0, 0xE0, 0x20, 0, 0]  // BYT_BLOK 0: 255 bytes
        XCTAssertEqual(refusal(cdb, dataIn: 255), .partialSector(bytes: 255))
    }

    func testMoreThanOneFrameIsRefused() {
        let cdb: [UInt8] = [0x85, 0x0D, 0x0E, 0, 0, 0, 0x03, 0, 0, 0, 0, 0, 0, 0x40, 0x25, 0]
        XCTAssertEqual(refusal(cdb, dataIn: 1536), .exceedsFrame(sectors: 3, maximum: 2))
    }

    func testDataProtocolWithoutLengthAndNonDataWithLengthAreRefused() {
        let pioWithoutLength: [UInt8] = [0xA1, 0x08, 0x08, 0x00, 0x01, 0, 0, 0, 0xE0, 0x20, 0, 0]  // T_LENGTH 0
        XCTAssertEqual(refusal(pioWithoutLength), .noTransferLength)
        let zeroCount: [UInt8] = [0xA1, 0x08, 0x0E, 0x00, 0x00, 0, 0, 0, 0xE0, 0x20, 0, 0]  // COUNT 0
        XCTAssertEqual(refusal(zeroCount, dataIn: 512), .noTransferLength)
        let nonDataWithLength: [UInt8] = [0xA1, 0x06, 0x0E, 0x00, 0x01, 0, 0, 0, 0xE0, 0xE7, 0, 0]
        XCTAssertEqual(refusal(nonDataWithLength, dataIn: 512), .transferLengthWithoutData)
    }

    func testDirectionThatDisagreesIsRefused() {
        // PIO data-in with T_DIR to device.
        let tDir: [UInt8] = [0xA1, 0x08, 0x06, 0x00, 0x01, 0, 0, 0, 0xE0, 0x20, 0, 0]
        XCTAssertEqual(refusal(tDir, dataIn: 512), .directionMismatch)
        // PIO data-in, but the kernel has a data-out buffer.
        let read: [UInt8] = [0xA1, 0x08, 0x0E, 0x00, 0x01, 0, 0, 0, 0xE0, 0x20, 0, 0]
        XCTAssertEqual(refusal(read, dataOut: 512), .directionMismatch)
        // PIO data-out with no data-out buffer.
        let write: [UInt8] = [0xA1, 0x0A, 0x06, 0x00, 0x01, 0, 0, 0, 0xE0, 0x30, 0, 0]
        XCTAssertEqual(refusal(write, dataIn: 512), .directionMismatch)
        // Non-data with a data-in buffer.
        let nonData: [UInt8] = [0xA1, 0x06, 0x20, 0xDA, 0x00, 0x00, 0x4F, 0xC2, 0xA0, 0xB0, 0, 0]
        XCTAssertEqual(refusal(nonData, dataIn: 512), .directionMismatch)
    }

    func testKernelBufferSmallerThanTheTransferIsRefused() {
        let read: [UInt8] = [0x85, 0x0D, 0x0E, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0x40, 0x25, 0]
        XCTAssertEqual(refusal(read, dataIn: 512), .bufferTooSmall(needed: 1024, available: 512))
    }
}

final class PassThroughCompletionTests: XCTestCase {
    let disk = Fixture.disk()

    func passThrough(_ cdb: [UInt8], dataIn: Int = 0) -> ATAPassThroughRequest? {
        guard case .ataPassThrough(let request) = disk.action(forCDB: cdb, dataOutLength: 0, dataInLength: dataIn) else {
            XCTFail("not a pass-through")
            return nil
        }
        return request
    }

    func testSMARTReturnStatusWithCheckConditionReturnsTheRegisters() {
        // smartctl's SMART RETURN STATUS: non-data, CK_COND, FEATURE DAh, LBA mid/high 4Fh/C2h.
        let cdb: [UInt8] = [0x85, 0x06, 0x20, 0x00, 0xDA, 0x00, 0x00, 0x00, 0x00, 0x00, 0x4F, 0x00, 0xC2, 0x00, 0xB0, 0x00]
        guard let request = passThrough(cdb) else { return }
        XCTAssertEqual(request.task, ATAHeader(errFeature: 0xDA, cmdStatus: 0xB0, lba: 0x00_C2_4F_00))
        XCTAssertTrue(request.checkCondition)
        // The drive says "threshold exceeded": LBA mid/high F4h/2Ch.
        let registers = ATAHeader(errFeature: 0x00, sectorCount: 0x00, cmdStatus: 0x50, lba: 0x00_2C_F4_00)
        let result = disk.result(of: request, registers: registers)
        XCTAssertEqual(result.status, .checkCondition)
        XCTAssertEqual(result.sense, [
            0x72, 0x01, 0x00, 0x1D,  // descriptor format, RECOVERED ERROR, ATA PASS-THROUGH INFORMATION AVAILABLE
            0x00, 0x00, 0x00, 0x0E,  // ADDITIONAL SENSE LENGTH 14
            0x09, 0x0C,              // ATA Status Return descriptor, length 12
            0x00,                    // EXTEND 0
            0x00,                    // ERROR
            0x00, 0x00,              // COUNT 15:8, 7:0
            0x00, 0x00,              // LBA 31:24, 7:0
            0x00, 0xF4,              // LBA 39:32, 15:8
            0x00, 0x2C,              // LBA 47:40, 23:16
            0x00,                    // DEVICE
            0x50])                   // STATUS
        XCTAssertEqual(result.dataIn, [])
        // ATACore's reader (used by the target for real SCSI drives) decodes the same registers.
        let decoded = SATSense.registers(result.sense)
        XCTAssertEqual(decoded?.lbaRegisters, 0x2C_F400)
        XCTAssertEqual(decoded?.status.rawValue, 0x50)
    }

    func testATAErrorIsAbortedCommandWithTheRegisters() {
        let cdb: [UInt8] = [0x85, 0x0D, 0x0E, 0, 0, 0, 0x02, 0x34, 0x9A, 0x12, 0x78, 0x00, 0x56, 0x40, 0x25, 0]
        guard let request = passThrough(cdb, dataIn: 1024) else { return }
        let registers = ATAHeader(flags: .extended, errFeature: 0x40, sectorCount: 0x01, cmdStatus: 0x51,
                                  lba: 0x0012_3456_789B)
        let result = disk.result(of: request, registers: registers, dataIn: [UInt8](repeating: 0xAA, count: 1024))
        XCTAssertEqual(result.status, .checkCondition)
        XCTAssertEqual(result.sense, [
            0x72, 0x0B, 0x00, 0x1D,  // ABORTED COMMAND, ATA PASS-THROUGH INFORMATION AVAILABLE
            0x00, 0x00, 0x00, 0x0E,
            0x09, 0x0C,
            0x01,                    // EXTEND
            0x40,                    // ERROR: UNC
            0x00, 0x01,              // COUNT
            0x34, 0x9B,              // LBA 31:24, 7:0
            0x12, 0x78,              // LBA 39:32, 15:8
            0x00, 0x56,              // LBA 47:40, 23:16
            0x40,                    // DEVICE: the request's (AoE returns none for extended commands)
            0x51])                   // STATUS: DRDY DSC ERR
        XCTAssertEqual(result.dataIn, [], "data from a failed command is not returned")
    }

    func testDeviceFaultWithoutErrorBitIsAnErrorToo() {
        let cdb: [UInt8] = [0xA1, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xE0, 0xE7, 0x00, 0x00]
        guard let request = passThrough(cdb) else { return }
        let result = disk.result(of: request, registers: ATAHeader(cmdStatus: 0x60, lba: 0xE000_0000))
        XCTAssertEqual(result.sense, [0x72, 0x0B, 0x00, 0x1D, 0, 0, 0, 0x0E,
                                      0x09, 0x0C, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                      0xE0,   // DEVICE: the returned LBA3
                                      0x60])  // DRDY | DF
    }

    func testSuccessWithoutCheckConditionIsGoodWithTheData() {
        let identify: [UInt8] = [0xA1, 0x08, 0x0E, 0x00, 0x01, 0, 0, 0, 0xA0, 0xEC, 0, 0]
        guard let request = passThrough(identify, dataIn: 512) else { return }
        let data = (0..<600).map { UInt8(truncatingIfNeeded: $0) }
        let result = disk.result(of: request, registers: ATAHeader(cmdStatus: 0x50, lba: 0xA000_0000), dataIn: data)
        XCTAssertEqual(result, .good(Array(data[0..<512])), "data-in is the command's 512 bytes, not more")
    }

    func testSuccessWithCheckConditionKeepsTheDataIn() {
        let cdb: [UInt8] = [0xA1, 0x08, 0x2E, 0x00, 0x01, 0, 0, 0, 0xA0, 0xEC, 0, 0]  // CK_COND
        guard let request = passThrough(cdb, dataIn: 512) else { return }
        let data = [UInt8](repeating: 0x5A, count: 512)
        let result = disk.result(of: request, registers: ATAHeader(sectorCount: 0x00, cmdStatus: 0x50, lba: 0xA000_0000),
                                 dataIn: data)
        XCTAssertEqual(result.status, .checkCondition)
        XCTAssertEqual(Array(result.sense[0..<4]), [0x72, 0x01, 0x00, 0x1D])
        XCTAssertEqual(result.sense[20], 0xA0, "DEVICE from the returned LBA3")
        XCTAssertEqual(result.dataIn, data)
    }
}
