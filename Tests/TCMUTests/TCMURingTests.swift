import XCTest
import CLinuxShims
@testable import TCMU

final class TCMURingTests: XCTestCase {
    private func ring(_ k: FakeKernel, slots: Int = 8) throws -> TCMURing {
        try TCMURing(base: k.base, size: k.size, slots: slots, maxBuffers: 8)
    }

    func testTakesCommandsWithTheirCDBAndBuffers() throws {
        let k = FakeKernel()
        let r = try ring(k)
        XCTAssertFalse(r.hasPending)
        let offsets = k.queue(id: 7, cdb: [0x28, 0, 0, 0, 0x10, 0, 0, 0, 3, 0], dataLength: 3 * 512 + 8192, chunk: 4096)
        XCTAssertTrue(r.hasPending)
        let (_, c) = try XCTUnwrap(r.take())
        XCTAssertEqual(c.id, 7)
        XCTAssertEqual(Array(c.cdb.prefix(10)), [0x28, 0, 0, 0, 0x10, 0, 0, 0, 3, 0])
        XCTAssertEqual(c.buffers.map { $0.baseAddress! - k.base }, offsets)
        XCTAssertEqual(c.buffers.map(\.count), [4096, 4096, 1536])
        XCTAssertEqual(c.dataLength, 9728)
        XCTAssertFalse(r.hasPending)
        XCTAssertNil(try r.take())
    }

    func testOutOfOrderCompletionsCarryEachCommandsID() throws {
        let k = FakeKernel()
        let r = try ring(k)
        k.queue(id: 1, cdb: [0x00, 0, 0, 0, 0, 0])
        k.queue(id: 2, cdb: [0x12, 0, 0, 0, 36, 0], dataLength: 36)
        let first = try XCTUnwrap(r.take())
        let second = try XCTUnwrap(r.take())
        let sense: [UInt8] = [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x00, 0, 0, 0, 0]
        try sense.withUnsafeBytes { try r.complete(slot: second.slot, id: second.command.id, status: 2, sense: $0) }
        k.reap()
        XCTAssertEqual(k.completed.map(\.id), [2])
        try r.complete(slot: first.slot, id: first.command.id, status: 0)
        k.reap()
        XCTAssertEqual(k.completed.map(\.id), [2, 1])
        XCTAssertEqual(k.completed.map(\.status), [2, 0])
        XCTAssertEqual(k.completed[0].sense, sense)
        XCTAssertEqual(k.completed[1].sense, [UInt8](repeating: 0, count: 18))
        XCTAssertEqual(r.unannounced, 2)
    }

    func testWrapsAroundThePaddingAndSkipsTaskManagementEntries() throws {
        let k = FakeKernel(ringSize: 512)
        let r = try ring(k)
        var ids: [UInt16] = []
        var expected: [UInt16] = []
        for round in 0..<40 {
            let id = UInt16(100 + round)
            if round % 7 == 3 { k.queue(id: 0, cdb: [], op: k.l.opTaskManagement) }
            k.queue(id: id, cdb: [0x00, 0, 0, 0, 0, UInt8(round)])
            expected.append(id)
            let (slot, c) = try XCTUnwrap(r.take(), "round \(round)")
            XCTAssertEqual(c.cdb[5], UInt8(round))
            try r.complete(slot: slot, id: c.id, status: 0)
            k.reap()
            ids = k.completed.map(\.id)
        }
        XCTAssertEqual(ids, expected)
        XCTAssertLessThan(k.head, 512)
    }

    func testLeavesCommandsOnTheRingWhenEverySlotIsTaken() throws {
        let k = FakeKernel()
        let r = try ring(k, slots: 2)
        for id in 1...3 { k.queue(id: UInt16(id), cdb: [0, 0, 0, 0, 0, 0]) }
        let a = try XCTUnwrap(r.take())
        _ = try XCTUnwrap(r.take())
        XCTAssertNil(try r.take())
        XCTAssertTrue(r.hasPending)
        try r.complete(slot: a.slot, id: a.command.id, status: 0)
        XCTAssertEqual(try XCTUnwrap(r.take()).command.id, 3)
    }

    func testRefusesABrokenRing() throws {
        let k = FakeKernel()
        k.base.storeBytes(of: UInt16(1), toByteOffset: Int(k.l.mailboxVersion), as: UInt16.self)
        XCTAssertThrowsError(try ring(k))
        let k2 = FakeKernel()
        let r = try ring(k2)
        k2.queue(id: 1, cdb: [0, 0, 0, 0, 0, 0])
        (k2.base + k2.ringOffset).storeBytes(of: UInt32(0) | k2.l.opCommand, as: UInt32.self)   // length 0
        XCTAssertThrowsError(try r.take())
        let k3 = FakeKernel()
        let r3 = try ring(k3)
        k3.queue(id: 1, cdb: [0x28], dataLength: 512)
        (k3.base + k3.ringOffset).storeBytes(of: UInt64(k3.size), toByteOffset: Int(k3.l.requestIOVs), as: UInt64.self)   // outside
        XCTAssertThrowsError(try r3.take())
    }

    func testNamesFollowTheAddress() {
        let n = LoopbackDiskNames(shelf: 0x12, slot: 3)
        XCTAssertEqual(n.targetWWN, "naa.5001405a00120300")
        XCTAssertEqual(n.initiatorWWN, "naa.5001405a00120301")
        XCTAssertEqual(n.hbaDirectory, "/sys/kernel/config/target/core/user_3000004611")
        XCTAssertEqual(n.deviceDirectory, "/sys/kernel/config/target/core/user_3000004611/aoe-e18.3")
        XCTAssertEqual(n.uioNamePrefix, "tcm-user/3000004611/aoe-e18.3/")
        XCTAssertEqual(LoopbackDiskNames(shelf: 65534, slot: 255).targetWWN, "naa.5001405afffeff00")
    }
}
