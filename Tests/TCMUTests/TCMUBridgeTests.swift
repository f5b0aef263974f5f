import XCTest
import Synchronization
import AoEInitiator
import AoETarget
import AoEWire
import ATACore
import BlockDevices
import DiskAttach
import PacketTransport
import SCSIEmulation
@testable import TCMU

final class StopBox: @unchecked Sendable { let flag = Atomic<Bool>(false) }

/// The bridge between a ring (the kernel's side played by FakeKernel) and an in-memory target.
final class TCMUBridgeTests: XCTestCase {
    let stop = StopBox()
    var done: XCTestExpectation?

    override func tearDown() {
        stop.flag.store(true, ordering: .relaxed)
        if let done { wait(for: [done], timeout: 5) }
        super.tearDown()
    }

    func connect(_ device: any BlockDevice) throws -> (AoEClient, TargetInfo) {
        let targetLink = EmbeddedLink(mac: MACAddress("02:00:00:00:00:01")!, mtu: 1500)
        let clientLink = EmbeddedLink(mac: MACAddress("02:00:00:00:00:02")!, mtu: 1500)
        targetLink.onSend = { clientLink.inject($0) }
        clientLink.onSend = { targetLink.inject($0) }
        let target = Target(configuration: TargetConfiguration(address: ShelfSlot(shelf: 1, slot: 1)), device: device,
                            link: targetLink, log: TargetLog(minimum: .error) { _ in })
        let stop = self.stop
        let done = expectation(description: "target stopped")
        self.done = done
        Thread { target.run(until: stop.flag); done.fulfill() }.start()
        let client = AoEClient(link: clientLink)
        return (client, try client.find(ShelfSlot(shelf: 1, slot: 1)))
    }

    /// Serves the ring until the kernel has `answers` completions in all.
    func serve(_ k: FakeKernel, _ ring: TCMURing, _ client: AoEClient, _ info: TargetInfo, answers: Int) throws {
        let identify = try client.identify(info)
        let disk = SCSIDisk(drive: DriveDescription(identify: identify, capacitySectors: identify.sectors,
                                                    maxTransferSectors: 64, passThroughMaxSectors: info.sectorsPerFrame))
        let bridge = TCMUBridge(ring: ring, disk: disk, announce: { k.reap() }, waitForCommands: { _ in },
                                stopRequested: { k.completed.count >= answers }, log: { _ in })
        try BlockIOEngine(link: client.link, target: info, queueDepth: 8).run(bridge)
        k.reap()
    }

    /// A guest that floods commands the disk refuses gets ten lines a second; the rest are counted, and the
    /// count is logged when the next window opens.
    func testRefusedCommandsAreLoggedTenASecondAndTheRestCounted() throws {
        let (client, info) = try connect(MemoryDevice(sectors: 64))
        let k = FakeKernel(ringSize: 8192)   // room for all 26 entries at once
        let ring = try TCMURing(base: k.base, size: k.size, slots: 32, maxBuffers: 8)
        let identify = try client.identify(info)
        let disk = SCSIDisk(drive: DriveDescription(identify: identify, capacitySectors: identify.sectors,
                                                    maxTransferSectors: 64, passThroughMaxSectors: info.sectorsPerFrame))
        let lines = Mutex<[String]>([])
        let wanted = Atomic<Int>(25)
        let bridge = TCMUBridge(ring: ring, disk: disk, announce: { k.reap() }, waitForCommands: { _ in },
                                stopRequested: { k.completed.count >= wanted.load(ordering: .relaxed) },
                                log: { line in lines.withLock { $0.append(line) } })
        for id in 1...25 { k.queue(id: UInt16(id), cdb: [0xC1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], dataLength: 0) }
        try BlockIOEngine(link: client.link, target: info, queueDepth: 8).run(bridge)
        k.reap()
        XCTAssertEqual(k.completed.count, 25)
        XCTAssertEqual(bridge.counters.refused, 25)
        XCTAssertEqual(lines.withLock { $0.filter { $0.hasPrefix("aoectl attach: refused CDB ") }.count }, 10)
        usleep(1_100_000)
        k.queue(id: 26, cdb: [0xC1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], dataLength: 0)
        wanted.store(26, ordering: .relaxed)
        try BlockIOEngine(link: client.link, target: info, queueDepth: 8).run(bridge)
        XCTAssertEqual(lines.withLock { $0.filter { $0.hasPrefix("aoectl attach: refused CDB ") }.count }, 11)
        XCTAssertTrue(lines.withLock { $0.contains("aoectl attach: 15 more refused CDBs in the last second, not logged") }, "\(lines.withLock { $0 })")
    }

    func data(_ k: FakeKernel, at offset: Int, count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: k.base + offset, count: count))
    }

    func testWritesReadsEmulatedAndPassedThroughCommands() throws {
        let device = MemoryDevice(sectors: 4096)
        let (client, info) = try connect(device)
        let k = FakeKernel()
        let ring = try TCMURing(base: k.base, size: k.size, slots: 8, maxBuffers: 8)
        // WRITE(10) of 9 sectors at LBA 10, its data in two buffers (4096 + 512 bytes).
        let pattern = (0..<4608).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 / 512) }
        let out = k.queue(id: 1, cdb: [0x2A, 0, 0, 0, 0, 10, 0, 0, 9, 0], dataLength: 4608)
        UnsafeMutableRawBufferPointer(start: k.base + out[0], count: 4608).copyBytes(from: pattern)
        try serve(k, ring, client, info, answers: 1)
        XCTAssertEqual(k.completed.map(\.status), [0])
        XCTAssertEqual(device.contents(lba: 10, count: 9), pattern)
        XCTAssertEqual(device.contents(lba: 19, count: 1), [UInt8](repeating: 0, count: 512), "nothing past the write")

        let back = k.queue(id: 2, cdb: [0x28, 0, 0, 0, 0, 10, 0, 0, 9, 0], dataLength: 4608)
        let inquiry = k.queue(id: 3, cdb: [0x12, 0, 0, 0, 36, 0], dataLength: 36)
        // ATA PASS-THROUGH(16), PIO data-in, IDENTIFY DEVICE: the target's own page comes back.
        let identify = k.queue(id: 4, cdb: [0x85, 0x08, 0x0E, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0xEC, 0], dataLength: 512)
        k.queue(id: 5, cdb: [0xC1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], dataLength: 0)
        // SYNCHRONIZE CACHE(10).
        k.queue(id: 6, cdb: [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        try serve(k, ring, client, info, answers: 6)
        let byID = Dictionary(uniqueKeysWithValues: k.completed.map { ($0.id, $0) })
        XCTAssertEqual(byID.count, 6)
        XCTAssertEqual(byID[2]?.status, 0)
        XCTAssertEqual(data(k, at: back[0], count: 4096) + data(k, at: back[1], count: 512), pattern)
        XCTAssertEqual(byID[3]?.status, 0)
        XCTAssertEqual(data(k, at: inquiry[0], count: 16)[8..<16], ArraySlice(Array("ATA     ".utf8)))
        XCTAssertEqual(byID[4]?.status, 0)
        XCTAssertEqual(data(k, at: identify[0], count: 512), try client.identify(info).bytes)
        XCTAssertEqual(byID[5]?.status, 2)
        XCTAssertEqual(byID[5]?.sense[2], 0x05, "ILLEGAL REQUEST")
        XCTAssertEqual(byID[5]?.sense[12], 0x20, "INVALID COMMAND OPERATION CODE")
        XCTAssertEqual(byID[6]?.status, 0)
    }

    /// UNMAP from the guest becomes one DATA SET MANAGEMENT TRIM: the target zeroes exactly those blocks; a
    /// descriptor past the end is refused before anything is sent.
    func testUnmapBecomesATrimOfExactlyItsBlocks() throws {
        let sectors = 80_000
        let device = MemoryDevice(sectors: UInt64(sectors))
        let filled = [UInt8](repeating: 0xAB, count: sectors * 512)
        XCTAssertNotNil(filled.withUnsafeBytes { try? device.write(from: $0, at: 0) })
        let (client, info) = try connect(device)
        XCTAssertTrue(try client.identify(info).trimSupported)
        let k = FakeKernel()
        let ring = try TCMURing(base: k.base, size: k.size, slots: 8, maxBuffers: 8)
        func unmap(id: UInt16, lba: UInt64, blocks: UInt32) {
            var list: [UInt8] = [0, 22, 0, 16, 0, 0, 0, 0]
            list += (0..<8).map { UInt8(truncatingIfNeeded: lba >> (56 - 8 * UInt64($0))) }
            list += (0..<4).map { UInt8(truncatingIfNeeded: blocks >> (24 - 8 * UInt32($0))) } + [0, 0, 0, 0]
            let out = k.queue(id: id, cdb: [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], dataLength: 24)
            UnsafeMutableRawBufferPointer(start: k.base + out[0], count: 24).copyBytes(from: list)
        }
        unmap(id: 1, lba: 100, blocks: 70_000)   // two TRIM entries (65,535 + 4,465)
        unmap(id: 2, lba: 79_950, blocks: 200)   // past the end
        try serve(k, ring, client, info, answers: 2)
        let byID = Dictionary(uniqueKeysWithValues: k.completed.map { ($0.id, $0) })
        XCTAssertEqual(byID[1]?.status, 0)
        XCTAssertEqual(byID[2]?.status, 2)
        XCTAssertEqual(byID[2]?.sense[12], 0x21, "LOGICAL BLOCK ADDRESS OUT OF RANGE")
        let image = device.contents(lba: 0, count: sectors)
        let zeroed = (0..<sectors).filter { lba in image[lba * 512] == 0 && image[lba * 512 + 511] == 0 }
        XCTAssertEqual(zeroed.first, 100)
        XCTAssertEqual(zeroed.last, 70_099)
        XCTAssertEqual(zeroed.count, 70_000, "exactly the unmapped blocks, and nothing of the refused one")
    }

    /// Writes whose data comes in many small buffers: one BlockIO each, several commands at once, all landing.
    func testFragmentedWritesLandWhole() throws {
        let device = MemoryDevice(sectors: 4096)
        let (client, info) = try connect(device)
        let k = FakeKernel()
        let ring = try TCMURing(base: k.base, size: k.size, slots: 3, maxBuffers: 16)
        var patterns: [[UInt8]] = []
        for n in 0..<3 {
            let pattern = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ n &* 101 &+ $0 / 512) }
            let lba = UInt8(100 + n * 16)
            let buffers = k.queue(id: UInt16(n + 1), cdb: [0x2A, 0, 0, 0, 0, lba, 0, 0, 16, 0], dataLength: 8192, chunk: 512)
            XCTAssertEqual(buffers.count, 16)
            for (i, offset) in buffers.enumerated() {
                UnsafeMutableRawBufferPointer(start: k.base + offset, count: 512).copyBytes(from: pattern[(i * 512)..<((i + 1) * 512)])
            }
            patterns.append(pattern)
        }
        try serve(k, ring, client, info, answers: 3)
        XCTAssertEqual(k.completed.map(\.status), [0, 0, 0])
        for n in 0..<3 { XCTAssertEqual(device.contents(lba: UInt64(100 + n * 16), count: 16), patterns[n], "write \(n)") }
    }

    func testAnATAErrorOfAPassThroughComesBackAsRegistersInSense() throws {
        let (client, info) = try connect(MemoryDevice(sectors: 64))
        let k = FakeKernel()
        let ring = try TCMURing(base: k.base, size: k.size, slots: 8, maxBuffers: 8)
        // A pass-through READ SECTORS EXT past the end: the target's IDNF comes back as registers in sense.
        k.queue(id: 1, cdb: [0x85, 0x09, 0x0E, 0, 0, 0, 1, 0, 0, 0, 0x10, 0, 0, 0x40, 0x24, 0], dataLength: 512)
        try serve(k, ring, client, info, answers: 1)
        let sense = try XCTUnwrap(k.completed.first).sense
        XCTAssertEqual(k.completed.first?.status, 2)
        XCTAssertEqual(Array(sense[0..<4]), [0x72, 0x0B, 0x00, 0x1D], "descriptor sense, ABORTED COMMAND, ATA PASS-THROUGH INFORMATION AVAILABLE")
        XCTAssertEqual(sense[8], 0x09, "ATA Status Return descriptor")
        XCTAssertEqual(sense[11], 0x10, "error register: IDNF")
    }
}
