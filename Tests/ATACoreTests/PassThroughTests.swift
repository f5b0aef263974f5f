import XCTest
@testable import ATACore
import AoEWire

final class SATCommandBlockTests: XCTestCase {
    func command(_ task: TaskFile, _ p: PassThroughProtocol, _ d: PassThroughCommand.Direction, sectors: Int = 0) -> PassThroughCommand {
        PassThroughCommand(taskFile: task, protocolField: p, direction: d, sectors: sectors, writesMedia: d == .toDevice, timeoutMilliseconds: 1000)
    }

    func testReadDMAExtInterleavesLBABytesAndSetsLBAMode() {
        // READ DMA EXT, 8 sectors at LBA 0x12_3456_789A (48-bit), with the E flag.
        let task = TaskFile(commandStatus: 0x25, count: 8, lbaRegisters: 0x00_1234_5678_9A, extended: true)
        XCTAssertEqual(SATCommandBlock.build(command(task, .dma, .fromDevice, sectors: 8)), [
            0x85,        // ATA PASS-THROUGH(16)
            0x0D,        // protocol 6 (DMA) << 1 | EXTEND
            0x0E,        // T_DIR from device | BYTE_BLOCK | T_LENGTH in count; no CK_COND for data commands
            0x00, 0x00,  // feature 15:8, 7:0
            0x00, 0x08,  // count 15:8, 7:0
            0x34, 0x9A,  // LBA 31:24, LBA 7:0
            0x12, 0x78,  // LBA 39:32, LBA 15:8
            0x00, 0x56,  // LBA 47:40, LBA 23:16
            0x40,        // device: LBA mode
            0x25,        // command
            0x00])       // control
    }

    func testLBA28PutsDeviceRegisterFromLBA3NotIntoLBA31to24() {
        // WRITE SECTORS at LBA 0x0ABCDEF (27:24 = 0x0), device 0xE0 in LBA3.
        let task = TaskFile(commandStatus: 0x30, count: 1, lbaRegisters: 0xE0AB_CDEF)
        let cdb = SATCommandBlock.build(command(task, .pioDataOut, .toDevice, sectors: 1))
        XCTAssertEqual(cdb[1], 0x0A, "protocol 5 (PIO out), no EXTEND")
        XCTAssertEqual(cdb[2], 0x06, "T_DIR to device, BYTE_BLOCK, T_LENGTH count")
        XCTAssertEqual([cdb[7], cdb[9], cdb[11]], [0, 0, 0], "no high-order bytes in a 28-bit command")
        XCTAssertEqual([cdb[8], cdb[10], cdb[12]], [0xEF, 0xCD, 0xAB])
        XCTAssertEqual(cdb[13], 0xE0)
    }

    func testNonDataSetsCheckConditionAndNoTransferLength() {
        let smartStatus = TaskFile(commandStatus: 0xB0, featureError: 0xDA, lbaRegisters: 0xA0C2_4F00)
        let cdb = SATCommandBlock.build(command(smartStatus, .nonData, .none))
        XCTAssertEqual(cdb[1], 0x06, "protocol 3 (non-data)")
        XCTAssertEqual(cdb[2], 0x20, "CK_COND, T_LENGTH 0")
        XCTAssertEqual(cdb[4], 0xDA)
        XCTAssertEqual([cdb[10], cdb[12]], [0x4F, 0xC2], "SMART signature in LBA mid/high")
        XCTAssertEqual(cdb[14], 0xB0)
    }
}

final class SATSenseTests: XCTestCase {
    // Descriptor format after CK_COND success (libata): RECOVERED ERROR, 00/1D, descriptor 09h.
    let descriptorSuccess: [UInt8] = [
        0x72, 0x01, 0x00, 0x1D, 0, 0, 0, 0x0E,   // response code, key RECOVERED, ASC/ASCQ 00/1D, additional length 14
        0x09, 0x0C,                              // ATA Status Return descriptor, length 12
        0x00,                                    // EXTEND clear
        0x00,                                    // error
        0x00, 0xFF,                              // count 15:8, 7:0 (CHECK POWER MODE: FFh active)
        0x00, 0x00, 0x00, 0x4F, 0x00, 0xC2,      // LBA (SMART signature in mid/high)
        0xA0,                                    // device
        0x50]                                    // status DRDY|DSC

    func testDescriptorFormatRegisters() throws {
        let r = try XCTUnwrap(SATSense.registers(descriptorSuccess))
        XCTAssertEqual(r.status.rawValue, 0x50)
        XCTAssertEqual(r.count, 0xFF)
        XCTAssertEqual(r.lbaRegisters & 0xFF_FFFF, 0xC2_4F00)
        XCTAssertEqual(r.lbaRegisters >> 24, 0xA0, "28-bit: device register back in LBA3")
        XCTAssertEqual(SATSense.senseKey(descriptorSuccess), 0x01)
    }

    func testDescriptorIsSearchedNotAssumedFirst() throws {
        var sense = Array(descriptorSuccess.prefix(8))
        sense[7] = 14 + 4
        sense += [0x02, 0x02, 0x00, 0x00]  // an unrelated descriptor (type 2, length 2) first
        sense += descriptorSuccess[8...]
        XCTAssertEqual(try XCTUnwrap(SATSense.registers(sense)).count, 0xFF)
    }

    func testFixedFormatSATLayout() throws {
        // SAT fixed format (VALID set): error 3, status 4, device 5, count 6, flags 8, LBA 9-11; ABORTED COMMAND.
        let sense: [UInt8] = [0xF0, 0, 0x0B, 0x04, 0x51, 0xE0, 0x01, 0x0A, 0x00, 0x10, 0x20, 0x30, 0x00, 0x00, 0, 0, 0, 0]
        let r = try XCTUnwrap(SATSense.registers(sense))
        XCTAssertEqual(r.status.rawValue, 0x51)
        XCTAssertEqual(r.error.rawValue, 0x04)
        XCTAssertEqual(r.count, 0x01)
        XCTAssertEqual(r.lbaRegisters, 0xE030_2010)
    }

    func testFixedFormatOldLibataLayout() throws {
        // libata before its 2024 fix (kernel 6.1, seen with QEMU): VALID clear; error 8, status 9, device 10,
        // count 11, flags 16, LBA 17-19.
        let sense: [UInt8] = [0x70, 0, 0x0B, 0, 0, 0, 0, 0x0A, 0x04, 0x51, 0xE0, 0x00, 0x00, 0x00, 0, 0, 0x00, 0xE8, 0x03, 0x00]
        let r = try XCTUnwrap(SATSense.registers(sense))
        XCTAssertEqual(r.status.rawValue, 0x51)
        XCTAssertEqual(r.error.rawValue, 0x04)
        XCTAssertEqual(r.lbaRegisters & 0xFF_FFFF, 1000)
    }

    func testFixedFormatOldLibataLayoutInEighteenBytes() throws {
        // Captured from kernel 6.1 + QEMU AHCI: READ SECTORS EXT past the end. The drive said status 0x41,
        // error 0x04 (sg_raw agrees); libata's 18-byte buffer ends before the LBA bytes 17-19.
        let sense: [UInt8] = [0x70, 0x00, 0x0B, 0x00, 0x00, 0x00, 0x00, 0x0A, 0x04, 0x41, 0x40, 0x01, 0x00, 0x00, 0x00, 0x00, 0x80, 0x00]
        let r = try XCTUnwrap(SATSense.registers(sense))
        XCTAssertEqual(r.status.rawValue, 0x41)
        XCTAssertEqual(r.error.rawValue, 0x04)
        XCTAssertEqual(r.count, 0x01)
        XCTAssertEqual(SATSense.senseKey(sense), 0x0B)
    }

    func testSenseWithoutATARegisters() {
        XCTAssertNil(SATSense.registers([0x70, 0, 0x05, 0, 0, 0, 0, 0x0A, 0, 0, 0]), "too short for registers")
        XCTAssertNil(SATSense.registers([0x72, 0x05, 0x24, 0x00, 0, 0, 0, 0]), "descriptor format with no descriptors")
    }
}

final class PassThroughPolicyTests: XCTestCase {
    let policy = PassThroughPolicy()
    func task(_ op: UInt8, feature: UInt8 = 0, count: UInt8 = 1) -> TaskFile { TaskFile(commandStatus: op, featureError: feature, count: count, lbaRegisters: 0) }

    func testDestructiveCommandsAreRefusedByDefault() {
        for op: UInt8 in [0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0x92, 0x93, 0xB4, 0xF9, 0x37, 0xB1, 0x5E, 0x45, 0x80, 0x8F] {
            guard case .refuse = policy.decide(task(op), writeFlag: false, payloadLength: 0, maxSectors: 2) else { return XCTFail("0x\(String(op, radix: 16)) let through") }
        }
        guard case .refuse = policy.decide(task(0xEF, feature: 0x03), writeFlag: false, payloadLength: 0, maxSectors: 2) else { return XCTFail("set transfer mode") }
    }

    func testAllowedCommandsGetTheirProtocol() {
        guard case .send(let smart) = policy.decide(task(0xB0, feature: 0xD0), writeFlag: false, payloadLength: 0, maxSectors: 2) else { return XCTFail() }
        XCTAssertEqual(smart.protocolField, .pioDataIn)
        XCTAssertEqual(smart.sectors, 1)
        guard case .send(let status) = policy.decide(task(0xB0, feature: 0xDA, count: 0), writeFlag: false, payloadLength: 0, maxSectors: 2) else { return XCTFail() }
        XCTAssertEqual(status.direction, .none)
        guard case .send(let write) = policy.decide(task(0x35, count: 2), writeFlag: true, payloadLength: 1024, maxSectors: 2) else { return XCTFail() }
        XCTAssertEqual(write.protocolField, .dma)
        XCTAssertTrue(write.writesMedia)
        XCTAssertEqual(policy.decide(task(0x35, count: 2), writeFlag: true, payloadLength: 1000, maxSectors: 2), .aoeError(.badArgument))
        XCTAssertEqual(policy.decide(task(0x25, count: 3), writeFlag: false, payloadLength: 0, maxSectors: 2), .aoeError(.badArgument))
    }

    func testReadOnlyRefusesEveryWritingEntry() {
        let ro = PassThroughPolicy(readOnly: true)
        for (op, feature) in [(UInt8(0x30), UInt8(0)), (0x34, 0), (0xCA, 0), (0x35, 0), (0x3F, 0), (0x57, 0), (0x06, 0), (0xB0, 0xD6)] {
            guard case .refuse = ro.decide(task(op, feature: feature), writeFlag: true, payloadLength: 512, maxSectors: 2) else {
                return XCTFail("0x\(String(op, radix: 16)) written on a read-only export")
            }
        }
        guard case .send = ro.decide(task(0x25), writeFlag: false, payloadLength: 0, maxSectors: 2) else { return XCTFail() }
    }

    func testExplicitlyAllowedOpcodeTakesDirectionFromTheFrame() {
        let allowed = PassThroughPolicy(allowedOpcodes: [0x92])
        guard case .send(let out) = allowed.decide(task(0x92, count: 1), writeFlag: true, payloadLength: 512, maxSectors: 2) else { return XCTFail() }
        XCTAssertEqual(out.direction, .toDevice)
        guard case .send(let none) = allowed.decide(task(0x92, count: 0), writeFlag: false, payloadLength: 0, maxSectors: 2) else { return XCTFail() }
        XCTAssertEqual(none.direction, .none)
        guard case .send = PassThroughPolicy(allowAll: true).decide(task(0xF4), writeFlag: false, payloadLength: 0, maxSectors: 2) else { return XCTFail() }
    }
}
