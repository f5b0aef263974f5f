import XCTest
import Synchronization
@testable import AoETarget
import AoEWire
import ATACore
import BlockDevices
import PacketTransport
import LinuxSystem
import AoETestSupport

/// An ordered list of events shared by threads.
final class EventLog: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
    func count(_ line: String) -> Int { all.filter { $0 == line }.count }
}

/// Wraps a memory device, logging writes and flushes in one ordered event list shared with the link,
/// and optionally slowing writes whose data starts with a marker byte.
final class RecordingDevice: BlockDevice, @unchecked Sendable {
    let inner: MemoryDevice
    let events: EventLog
    let slowMarker: UInt8?
    let neverBlocks: Bool
    var sectorCount: UInt64 { inner.sectorCount }
    /// By default slow on purpose, so it goes through the worker pool like a disk.
    var capabilities: DeviceCapabilities {
        var c = inner.capabilities
        c.neverBlocks = neverBlocks
        return c
    }
    var name: String { "recording" }
    var identity: String { "recording" }

    init(sectors: UInt64, events: EventLog, slowMarker: UInt8? = nil, neverBlocks: Bool = false) {
        inner = MemoryDevice(sectors: sectors)
        self.events = events
        self.slowMarker = slowMarker
        self.neverBlocks = neverBlocks
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at lba: UInt64) throws(DeviceError) {
        try inner.read(into: buffer, at: lba)
        events.append("read \(lba)")
    }
    func write(from buffer: UnsafeRawBufferPointer, at lba: UInt64) throws(DeviceError) {
        if let slowMarker, buffer[0] == slowMarker { usleepSeconds(0.3) }
        try inner.write(from: buffer, at: lba)
        events.append("write \(lba)")
    }
    func write(from buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, at lba: UInt64) throws(DeviceError) {
        events.append("writev \(lba) x\(buffers.count)")
        var next = lba
        for buffer in buffers {
            try write(from: UnsafeRawBufferPointer(buffer), at: next)
            next += UInt64(buffer.count / 512)
        }
    }
    func read(into buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, at lba: UInt64) throws(DeviceError) {
        events.append("readv \(lba) x\(buffers.count)")
        var next = lba
        for buffer in buffers {
            try inner.read(into: buffer, at: next)
            next += UInt64(buffer.count / 512)
        }
    }
    func discard(_ range: SectorRange) throws(DeviceError) {
        try inner.discard(range)
        events.append("discard \(range.lba) x\(range.count)")
    }
    func flush() throws(DeviceError) {
        // A flush takes time, as on a disk, so concurrent writes pile up behind it and share the next one.
        usleepSeconds(0.01)
        try inner.flush()
        events.append("flush")
    }
}

final class TargetTests: XCTestCase {
    let targetMAC = MACAddress("02:00:00:00:00:01")!
    let hostMAC = MACAddress("02:00:00:00:00:02")!
    let otherMAC = MACAddress("02:00:00:00:00:03")!
    var link: EmbeddedLink!
    var target: Target!
    var stopFlag: StopBox!
    var thread: Thread!
    var logLines: EventLog!
    var stopExpectation: XCTestExpectation?

    override func tearDown() {
        stopFlag?.flag.store(true, ordering: .relaxed)
        if let stopExpectation { wait(for: [stopExpectation], timeout: 5) }
        super.tearDown()
    }

    final class StopBox: @unchecked Sendable { let flag = Atomic<Bool>(false) }

    func start(device: any BlockDevice, state: ExportState? = nil, role: Target.Role = .active,
               configure: (inout TargetConfiguration) -> Void = { _ in }) {
        link = EmbeddedLink(mac: targetMAC)
        var configuration = TargetConfiguration(address: ShelfSlot(shelf: 1, slot: 2))
        configure(&configuration)
        let lines = EventLog()
        logLines = lines
        target = Target(configuration: configuration, device: device, link: link, log: TargetLog(minimum: .info) { line in lines.append(line) },
                        state: state, role: role)
        stopFlag = StopBox()
        let target = target!, stop = stopFlag!
        let done = expectation(description: "target stopped")
        thread = Thread {
            target.run(until: stop.flag)
            done.fulfill()
        }
        thread.start()
        addTeardownBlock {
            stop.flag.store(true, ordering: .relaxed)
        }
        stopExpectation = done
        // The start-up announcement: one broadcast Config reply (a standby sends none).
        if role != .active { return }
        let announce = link.waitForSent(1)
        XCTAssertEqual(announce.count, 1)
        XCTAssertEqual(Array(announce[0][0..<6]), [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
    }

    func frame(command: AoECommand, tag: UInt32, from source: MACAddress? = nil, to destination: MACAddress? = nil,
               shelf: UInt16 = 1, slot: UInt8 = 2, version: UInt8 = 1, flags: AoEHeaderFlags = [], arg: [UInt8]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 24)
        let header = AoEHeader(destination: destination ?? targetMAC, source: source ?? hostMAC, version: version, flags: flags,
                               address: ShelfSlot(shelf: shelf, slot: slot), command: command, tag: Tag(rawValue: tag))
        bytes.withUnsafeMutableBytes { header.write(to: $0) }
        return bytes + arg
    }

    func ata(_ command: ATACommand, tag: UInt32, lba: UInt64 = 0, count: UInt8 = 1, feature: UInt8 = 0, data: [UInt8] = [],
             from source: MACAddress? = nil) -> [UInt8] {
        var arg = [UInt8](repeating: 0, count: 12)
        var flags: ATAArgFlags = command.usesLBA48 ? .extended : []
        if !data.isEmpty { flags.insert(.write) }
        let header = ATAHeader(flags: flags, errFeature: feature, sectorCount: count, cmdStatus: command.rawValue,
                               lba: command.usesLBA48 ? lba : lba | 0xE000_0000)
        var full = [UInt8](repeating: 0, count: 36)
        full.withUnsafeMutableBytes { header.write(to: $0) }
        arg = Array(full[24...])
        return frame(command: .issueATA, tag: tag, from: source, arg: arg + data)
    }

    func exchange(_ request: [UInt8]) -> [UInt8]? {
        link.inject(request)
        return link.waitForSent(1, timeoutSeconds: 2).first
    }

    func header(_ reply: [UInt8]) -> AoEHeader { try! reply.withUnsafeBytes { try AoEHeader(parsing: $0) } }
    func ataReply(_ reply: [UInt8]) -> ATAHeader { reply.withUnsafeBytes { ATAHeader(parsing: $0)! } }

    // MARK: -

    func testQueryConfigAnswersWithOwnAddressBufferCountAndSectorsForMTU() throws {
        start(device: MemoryDevice(sectors: 100)) { $0.bufferCount = 16 }
        let reply = try XCTUnwrap(exchange(frame(command: .queryConfig, tag: 0x42, to: .broadcast, shelf: 0xFFFF, slot: 0xFF, arg: [UInt8](repeating: 0, count: 8))))
        let h = header(reply)
        XCTAssertEqual(h.destination, hostMAC)
        XCTAssertEqual(h.source, targetMAC)
        XCTAssertEqual(h.address, ShelfSlot(shelf: 1, slot: 2))
        XCTAssertEqual(h.flags, .response)
        XCTAssertEqual(h.tag.rawValue, 0x42)
        XCTAssertEqual(reply.count, 60, "padded to the Ethernet minimum")
        let config = try reply.withUnsafeBytes { try ConfigArg(parsing: $0) }
        XCTAssertEqual(config.bufferCount, 16)
        XCTAssertEqual(config.sectorCount, 2, "(1500 - 36 + 14) / 512")
        XCTAssertEqual(config.aoeVersion, 1)
    }

    func testBufferCountAndReadOnlyChangeWhileServing() throws {
        start(device: MemoryDevice(sectors: 100)) { $0.bufferCount = 16 }
        func bufferCount(_ tag: UInt32) throws -> UInt16 {
            let reply = try XCTUnwrap(exchange(frame(command: .queryConfig, tag: tag, arg: [UInt8](repeating: 0, count: 8))))
            return try reply.withUnsafeBytes { try ConfigArg(parsing: $0) }.bufferCount
        }
        XCTAssertEqual(try bufferCount(1), 16)
        XCTAssertTrue(target.setBufferCount(200))
        XCTAssertEqual(try bufferCount(2), 200, "the next Query Config says so")
        XCTAssertFalse(target.setBufferCount(target.bufferCountCapacity + 1), "beyond the frame slots: needs a reopen")
        XCTAssertFalse(target.setBufferCount(1))
        XCTAssertEqual(try bufferCount(3), 200, "a refused change changes nothing")
        let data = [UInt8](repeating: 0x5A, count: 512)
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(ata(.writeSectorsExt, tag: 4, lba: 3, data: data)))).cmdStatus, 0x40)
        XCTAssertTrue(target.setReadOnly(true))
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(ata(.writeSectorsExt, tag: 5, lba: 3, data: data)))).errFeature, 0x04, "ABRT")
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(ata(.readSectorsExt, tag: 6, lba: 3)))).cmdStatus, 0x40)
        XCTAssertTrue(target.setReadOnly(false))
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(ata(.writeSectorsExt, tag: 7, lba: 3, data: data)))).cmdStatus, 0x40)
    }

    func testAReadOnlyDeviceCannotBeMadeWritableWhileServing() {
        start(device: MemoryDevice(sectors: 100, writable: false))
        XCTAssertFalse(target.setReadOnly(false))
        XCTAssertTrue(target.isReadOnly)
    }

    func testFramesForOthersAreDroppedAndCounted() {
        start(device: MemoryDevice(sectors: 100))
        link.inject(ata(.identifyDevice, tag: 1).replacing(at: 0, with: otherMAC))
        link.inject(frame(command: .queryConfig, tag: 2, flags: .response, arg: [UInt8](repeating: 0, count: 8)))
        link.inject(frame(command: .queryConfig, tag: 3, shelf: 9, arg: [UInt8](repeating: 0, count: 8)))
        link.inject(frame(command: .queryConfig, tag: 4, slot: 9, arg: [UInt8](repeating: 0, count: 8)))
        link.inject(Array(frame(command: .queryConfig, tag: 5, arg: []).prefix(20)))
        XCTAssertEqual(link.waitForSent(1, timeoutSeconds: 0.5).count, 0)
        XCTAssertEqual(target.statistics[.droppedNotForUs], 1)
        XCTAssertEqual(target.statistics[.droppedResponse], 1)
        XCTAssertEqual(target.statistics[.droppedOtherAddress], 2)
        XCTAssertEqual(target.statistics[.droppedTruncated], 1)
    }

    func testUnknownCommandAndVersionGetAoEErrors() throws {
        start(device: MemoryDevice(sectors: 100))
        let unknown = try XCTUnwrap(exchange(frame(command: AoECommand(rawValue: 9), tag: 7, arg: [])))
        XCTAssertEqual(header(unknown).flags, [.response, .error])
        XCTAssertEqual(header(unknown).error, .unrecognizedCommand)
        XCTAssertEqual(unknown.count, 60)
        let version = try XCTUnwrap(exchange(frame(command: .queryConfig, tag: 8, version: 2, arg: [UInt8](repeating: 0, count: 8))))
        XCTAssertEqual(header(version).error, .unsupportedVersion)
        let shortATA = try XCTUnwrap(exchange(frame(command: .issueATA, tag: 9, arg: [0x40, 0, 1])))
        XCTAssertEqual(header(shortATA).error, .badArgument)
    }

    func testWriteThenReadFirstAndLastSectorAndIDNFPastEnd() throws {
        let device = MemoryDevice(sectors: 100)
        start(device: device)
        let first = [UInt8](repeating: 0xA1, count: 512), last = [UInt8](repeating: 0xB2, count: 512)
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(ata(.writeSectorsExt, tag: 1, lba: 0, data: first)))).cmdStatus, 0x40)
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(ata(.writeSectors, tag: 2, lba: 99, data: last)))).cmdStatus, 0x40)
        XCTAssertEqual(device.contents(lba: 0, count: 1), first)
        XCTAssertEqual(device.contents(lba: 99, count: 1), last)
        let read = try XCTUnwrap(exchange(ata(.readSectorsExt, tag: 3, lba: 99)))
        XCTAssertEqual(read.count, 36 + 512)
        XCTAssertEqual(Array(read[36...]), last)
        let beyond = try XCTUnwrap(exchange(ata(.readSectorsExt, tag: 4, lba: 99, count: 2)))
        XCTAssertEqual(ataReply(beyond).cmdStatus, 0x51)
        XCTAssertEqual(ataReply(beyond).errFeature, 0x10)
        XCTAssertEqual(beyond.count, 60)
    }

    func testReservedExportStillAnswersIdentifyButRefusesOthers() throws {
        start(device: MemoryDevice(sectors: 100))
        var arg: [UInt8] = [ReserveCommand.set.rawValue, 1]
        arg += (0..<6).map { hostMAC.byte($0) }
        let set = try XCTUnwrap(exchange(frame(command: .reserveRelease, tag: 1, arg: arg)))
        XCTAssertEqual(try set.withUnsafeBytes { try ReserveArg(parsing: $0) }.macs, [hostMAC])
        let identify = try XCTUnwrap(exchange(ata(.identifyDevice, tag: 2, from: otherMAC)))
        XCTAssertEqual(identify.count, 36 + 512)
        XCTAssertFalse(header(identify).flags.contains(.error))
        let read = try XCTUnwrap(exchange(ata(.readSectors, tag: 3, from: otherMAC)))
        XCTAssertEqual(header(read).error, .targetReserved)
        // Another host's plain set fails; its force set succeeds.
        var steal: [UInt8] = [ReserveCommand.set.rawValue, 1]
        steal += (0..<6).map { otherMAC.byte($0) }
        XCTAssertEqual(header(try XCTUnwrap(exchange(frame(command: .reserveRelease, tag: 4, from: otherMAC, arg: steal)))).error, .targetReserved)
        steal[0] = ReserveCommand.forceSet.rawValue
        XCTAssertFalse(header(try XCTUnwrap(exchange(frame(command: .reserveRelease, tag: 5, from: otherMAC, arg: steal)))).flags.contains(.error))
        XCTAssertEqual(header(try XCTUnwrap(exchange(ata(.readSectors, tag: 6)))).error, .targetReserved)
    }

    func testMaskListEditDeleteLastAndEnforcement() throws {
        start(device: MemoryDevice(sectors: 100))
        func directive(_ command: DirectiveCommand, _ mac: MACAddress) -> [UInt8] { [0, command.rawValue] + (0..<6).map { mac.byte($0) } }
        let add = try XCTUnwrap(exchange(frame(command: .macMaskList, tag: 1, arg: [0, 1, 0, 1] + directive(.add, hostMAC))))
        XCTAssertEqual(try add.withUnsafeBytes { try MaskListArg(parsing: $0) }.directives.map(\.mac), [hostMAC])
        // Another host is now ignored: no reply at all.
        link.inject(ata(.identifyDevice, tag: 2, from: otherMAC))
        XCTAssertEqual(link.waitForSent(1, timeoutSeconds: 0.3).count, 0)
        XCTAssertEqual(target.statistics[.droppedMasked], 1)
        // Deleting the last entry (which crashes vblade) empties the list and opens the export again.
        let delete = try XCTUnwrap(exchange(frame(command: .macMaskList, tag: 3, arg: [0, 1, 0, 1] + directive(.delete, hostMAC))))
        XCTAssertEqual(try delete.withUnsafeBytes { try MaskListArg(parsing: $0) }.directives, [])
        XCTAssertNotNil(exchange(ata(.identifyDevice, tag: 4, from: otherMAC)))
        // A bad directive: MError 2, Dir Count = its index.
        let bad = try XCTUnwrap(exchange(frame(command: .macMaskList, tag: 5, arg: [0, 1, 0, 2] + directive(.noDirective, hostMAC) + directive(DirectiveCommand(rawValue: 7), hostMAC))))
        XCTAssertEqual(bad[26], MaskError.badDirective.rawValue)
        XCTAssertEqual(bad[27], 1)
    }

    // MARK: - Saved state

    func directive(_ command: DirectiveCommand, _ mac: MACAddress) -> [UInt8] { [0, command.rawValue] + (0..<6).map { mac.byte($0) } }

    func temporaryDirectory() -> String {
        let path = NSTemporaryDirectory() + "aoe-state-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        mkdir(path, 0o755)
        addTeardownBlock { _ = try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func testMaskEditReserveAndConfigSetAreSavedBeforeTheirReplies() throws {
        let file = StateFile(directory: temporaryDirectory(), address: ShelfSlot(shelf: 1, slot: 2))
        start(device: MemoryDevice(sectors: 100), state: ExportState(initial: ExportProtocolState(), durableExport: false, file: file))
        XCTAssertNil(try file.load(), "nothing is saved before the first change")
        XCTAssertNotNil(exchange(frame(command: .macMaskList, tag: 1, arg: [0, 1, 0, 1] + directive(.add, hostMAC))))
        // The reply is here, so the file must already hold the change.
        XCTAssertEqual(try file.load()?.access.mask, [hostMAC])
        XCTAssertNotNil(exchange(frame(command: .reserveRelease, tag: 2, arg: [1, 1] + (0..<6).map { hostMAC.byte($0) })))
        XCTAssertEqual(try file.load()?.access.reservation, [hostMAC])
        let text = Array("disk one".utf8)
        XCTAssertNotNil(exchange(frame(command: .queryConfig, tag: 3, arg: [0, 0, 0, 0, 0, 0x13, UInt8(text.count >> 8), UInt8(text.count & 0xFF)] + text)))
        XCTAssertEqual(try file.load()?.configString.value, text)
        XCTAssertNotNil(exchange(ata(.setFeatures, tag: 4, feature: 0x82)))
        XCTAssertEqual(try file.load()?.writeCacheEnabled, false)
        // What a restarted target would start from.
        XCTAssertEqual(try file.load(), target.state.current)
    }

    func testAChangeThatCannotBeSavedIsUndoneAndNotAcknowledged() throws {
        let file = StateFile(directory: "/nonexistent-aoe-state-dir", address: ShelfSlot(shelf: 1, slot: 2))
        start(device: MemoryDevice(sectors: 100), state: ExportState(initial: ExportProtocolState(), durableExport: false, file: file))
        link.inject(frame(command: .macMaskList, tag: 1, arg: [0, 1, 0, 1] + directive(.add, hostMAC)))
        XCTAssertEqual(link.waitForSent(1, timeoutSeconds: 0.3).count, 0, "no reply for a change that is not saved")
        XCTAssertEqual(target.state.current.access.mask, [])
        XCTAssertEqual(target.statistics[.stateSaveErrors], 1)
        // A read changes nothing, so it needs no save and is answered.
        XCTAssertNotNil(exchange(frame(command: .macMaskList, tag: 2, arg: [0, 0, 0, 0])))
    }

    func testTwoPortsOfOneExportShareItsState() throws {
        let state = ExportState(initial: ExportProtocolState(), durableExport: false)
        start(device: MemoryDevice(sectors: 100), state: state)
        XCTAssertNotNil(exchange(frame(command: .macMaskList, tag: 1, arg: [0, 1, 0, 1] + directive(.add, hostMAC))))
        // A second port of the same export (another NIC) sees the mask at once.
        let other = Target(configuration: TargetConfiguration(address: ShelfSlot(shelf: 1, slot: 2)), device: MemoryDevice(sectors: 100),
                           link: EmbeddedLink(mac: otherMAC), log: TargetLog { _ in }, state: state)
        XCTAssertFalse(other.state.admission(of: otherMAC).maskAdmits)
        XCTAssertTrue(other.state.admission(of: hostMAC).maskAdmits)
    }

    /// A server runs one port per export and NIC; a wildcard request reaches every export on the NIC and
    /// each answers for itself, never with the wildcard.
    func testWildcardQueryConfigIsAnsweredByEveryExportWithItsOwnAddress() throws {
        var replies: [[UInt8]] = []
        for slot: UInt8 in [1, 2] {
            let link = EmbeddedLink(mac: targetMAC)
            let t = Target(configuration: TargetConfiguration(address: ShelfSlot(shelf: 5, slot: slot)), device: MemoryDevice(sectors: 8),
                           link: link, log: TargetLog { _ in })
            let stop = StopBox()
            let done = expectation(description: "port \(slot) stopped")
            Thread { t.run(until: stop.flag); done.fulfill() }.start()
            _ = link.waitForSent(1)   // the announcement
            link.inject(frame(command: .queryConfig, tag: 9, to: .broadcast, shelf: 0xFFFF, slot: 0xFF, arg: [UInt8](repeating: 0, count: 8)))
            replies += link.waitForSent(1, timeoutSeconds: 2)
            stop.flag.store(true, ordering: .relaxed)
            wait(for: [done], timeout: 5)
        }
        XCTAssertEqual(replies.map { header($0).address }, [ShelfSlot(shelf: 5, slot: 1), ShelfSlot(shelf: 5, slot: 2)])
        XCTAssertEqual(replies.map { header($0).tag.rawValue }, [9, 9])
    }

    func testFramesFromAGroupAddressAreDroppedNotAnswered() throws {
        start(device: MemoryDevice(sectors: 100))
        // A broadcast IDENTIFY (answered even while reserved) from a multicast or broadcast "source" would
        // make every host on the segment receive a 548-byte reply.
        for source in [MACAddress("01:00:5e:00:00:01")!, MACAddress.broadcast] {
            link.inject(ata(.identifyDevice, tag: 1, from: source))
        }
        XCTAssertEqual(link.waitForSent(1, timeoutSeconds: 0.3).count, 0)
        XCTAssertEqual(target.statistics[.droppedBadSource], 2)
        // The same request from a unicast source is answered.
        XCTAssertNotNil(exchange(ata(.identifyDevice, tag: 2)))
    }

    func testIdentifyPageFollowsTheWriteCacheSetting() throws {
        start(device: MemoryDevice(sectors: 100))
        func word85(_ reply: [UInt8]) -> UInt16 { UInt16(reply[36 + 170]) | UInt16(reply[36 + 171]) << 8 }
        let on = try XCTUnwrap(exchange(ata(.identifyDevice, tag: 1)))
        XCTAssertEqual(word85(on) & 0x20, 0x20, "word 85 bit 5: write cache enabled")
        XCTAssertNotNil(exchange(ata(.setFeatures, tag: 2, feature: 0x82)))
        let off = try XCTUnwrap(exchange(ata(.identifyDevice, tag: 3)))
        XCTAssertEqual(word85(off) & 0x20, 0)
        XCTAssertEqual(Array(on[36...]).count, Array(off[36...]).count)
    }

    func testQueryConfigFloodDoesNotReadTheMTUPerFrame() throws {
        start(device: MemoryDevice(sectors: 100))
        let before = link.mtuQueries
        for tag in 0..<200 {
            link.inject(frame(command: .queryConfig, tag: UInt32(tag), arg: [UInt8](repeating: 0, count: 8)))
        }
        XCTAssertEqual(link.waitForSent(200, timeoutSeconds: 5).count, 200)
        // The run loop re-reads it once a second; 200 frames in well under that must not add 200 reads.
        XCTAssertLessThanOrEqual(link.mtuQueries - before, 3)
    }

    func testProtocolStateChangesLogThroughTheRateLimiter() throws {
        start(device: MemoryDevice(sectors: 100))
        for tag in 0..<40 {
            _ = exchange(ata(.setFeatures, tag: UInt32(tag), feature: tag % 2 == 0 ? 0x82 : 0x02))
        }
        let lines = logLines.all.filter { $0.contains("write cache") }
        XCTAssertLessThanOrEqual(lines.count, 12, "40 SET FEATURES in a second log at most the per-second allowance")
        XCTAssertGreaterThan(lines.count, 0)
    }

    func testABurstOfTenThousandMaskEditsLogsABoundedNumberOfLinesAndSaysHowManyWereLeftOut() throws {
        start(device: MemoryDevice(sectors: 100))
        let edits = 10_000
        // Adding the host that is already on the list: every edit is answered and logged, and changes nothing.
        for chunk in stride(from: 0, to: edits, by: 500) {
            link.inject(batch: (chunk..<(chunk + 500)).map { i in frame(command: .macMaskList, tag: UInt32(i), arg: [0, 1, 0, 1] + directive(.add, hostMAC)) })
            XCTAssertEqual(link.waitForSent(500, timeoutSeconds: 10).count, 500)
        }
        // The counts of what was left out come when each window ends, flood over or not: the loop's once-a-second
        // timer reports them, so within two seconds of the window's start.
        func counts() -> (logged: Int, leftOut: Int) {
            let lines = logLines.all
            return (lines.filter { $0.contains("MAC mask list edited") }.count,
                    lines.compactMap { line -> Int? in
                        guard let r = line.range(of: " more mask list edits in the last second, not logged") else { return nil }
                        return Int(line[..<r.lowerBound].split(separator: " ").last ?? "")
                    }.reduce(0, +))
        }
        let deadline = monotonicSeconds() + 3
        while counts().logged + counts().leftOut < edits && monotonicSeconds() < deadline { usleepSeconds(0.05) }
        let (logged, leftOut) = counts()
        XCTAssertGreaterThan(logged, 0)
        XCTAssertLessThanOrEqual(logged, 10 * 12, "at most 10 lines a second, and the burst took seconds at most: \(logged)")
        XCTAssertEqual(logged + leftOut, edits, "every edit is either logged or counted: \(logged) + \(leftOut)")
    }

    func testLogLinesCarryTheirContextAsMetadataInBothStyles() {
        let lines = EventLog()
        let peer = MACAddress("02:00:00:00:00:07")!
        let journal = TargetLog(minimum: .info, style: .journal) { lines.append($0) }.labelled("e1.2@eth1")
        journal.frame(.deviceError, .error, "read failed", peer: peer, tag: Tag(rawValue: 0x2a))
        journal.log(.info, "serving")
        journal.log(.debug, "below the minimum")
        let terminal = TargetLog(minimum: .info, style: .terminal) { lines.append($0) }
        terminal.log(.warning, "no export", peer: peer)
        XCTAssertEqual(lines.all, [
            "<3>e1.2@eth1: read failed peer=02:00:00:00:00:07 tag=0x2a",
            "<6>e1.2@eth1: serving",
            "aoe-target: warning: no export peer=02:00:00:00:00:07",
        ])
    }

    func testAFloodOfOneKindOfLineNeverHidesAnother() {
        let lines = EventLog()
        let log = TargetLog(minimum: .info) { lines.append($0) }
        for i in 0..<1000 { log.frame(.passThroughRefused, .warning, "refused \(i)") }
        log.frame(.deviceError, .error, "the disk failed")
        XCTAssertTrue(lines.all.contains { $0.contains("the disk failed") }, "an error after a flood of warnings is logged")
        XCTAssertEqual(lines.all.filter { $0.contains("refused ") }.count, 10)
        // Negative control: within the window nothing more of the flooded kind gets through.
        log.frame(.passThroughRefused, .warning, "refused again")
        XCTAssertFalse(lines.all.contains { $0.contains("refused again") })
        log.reportSuppressed()
        XCTAssertFalse(lines.all.contains { $0.contains("not logged") }, "the window has not ended yet")
        usleepSeconds(1.05)
        log.reportSuppressed()
        XCTAssertTrue(lines.all.contains { $0.contains("warning: 991 more refused pass-through commands in the last second, not logged") }, "\(lines.all.suffix(2))")
    }

    func testConfigStringCommands() throws {
        start(device: MemoryDevice(sectors: 100))
        func config(_ command: ConfigCommand, _ text: String, tag: UInt32) -> [UInt8] {
            var arg = [UInt8](repeating: 0, count: 8)
            arg[5] = 0x10 | command.rawValue
            arg[6] = 0; arg[7] = UInt8(text.utf8.count)
            return frame(command: .queryConfig, tag: tag, arg: arg + Array(text.utf8))
        }
        let set = try XCTUnwrap(exchange(config(.set, "rack7", tag: 1)))
        XCTAssertEqual(try set.withUnsafeBytes { try ConfigArg(parsing: $0) }.configString, Array("rack7".utf8))
        XCTAssertEqual(header(try XCTUnwrap(exchange(config(.set, "other", tag: 2)))).error, .configStringPresent)
        XCTAssertNotNil(exchange(config(.set, "rack7", tag: 3)), "setting the same string again is accepted")
        XCTAssertNotNil(exchange(config(.test, "rack7", tag: 4)))
        link.inject(config(.test, "rack", tag: 5))
        XCTAssertEqual(link.waitForSent(1, timeoutSeconds: 0.3).count, 0, "test answers only on an exact match")
        XCTAssertNotNil(exchange(config(.testPrefix, "rack", tag: 6)))
        link.inject(config(.testPrefix, "rock", tag: 7))
        XCTAssertEqual(link.waitForSent(1, timeoutSeconds: 0.3).count, 0)
        let forced = try XCTUnwrap(exchange(config(.forceSet, "new", tag: 8)))
        XCTAssertEqual(try forced.withUnsafeBytes { try ConfigArg(parsing: $0) }.configString, Array("new".utf8))
        XCTAssertEqual(header(try XCTUnwrap(exchange(config(ConfigCommand(rawValue: 9), "", tag: 9)))).error, .badArgument)
    }

    func testDurableModeSendsNoWriteReplyBeforeTheFlushThatCoversIt() throws {
        let events = EventLog()
        let device = RecordingDevice(sectors: 100, events: events)
        start(device: device) { $0.durableWrites = true }
        link.onSend = { bytes in
            if bytes[19] == 0 && bytes[27] == 0x40 {
                let lba = UInt64(bytes[28])
                events.append("reply \(lba)")
            }
        }
        for i in 0..<20 { link.inject(ata(.writeSectorsExt, tag: UInt32(i), lba: UInt64(i), data: [UInt8](repeating: UInt8(i), count: 512))) }
        XCTAssertEqual(link.waitForSent(20).count, 20)
        let log = events.all
        for i in 0..<20 {
            let write = try XCTUnwrap(log.firstIndex(of: "write \(i)"))
            let reply = try XCTUnwrap(log.firstIndex(of: "reply \(i)"))
            XCTAssertTrue(log[write..<reply].contains("flush"), "reply \(i) left before a flush covered its write: \(log)")
        }
        XCTAssertLessThan(log.filter { $0 == "flush" }.count, 20, "group commit: fewer flushes than writes")
        // IDENTIFY says the write cache is off, and the remote cannot turn it on.
        let identify = try XCTUnwrap(exchange(ata(.identifyDevice, tag: 100)))
        XCTAssertFalse(IdentifyPage(bytes: identify[36...])!.writeCacheEnabled)
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(ata(.setFeatures, tag: 101, feature: 0x02)))).errFeature, 0x04)
    }

    func testDisablingWriteCacheMakesWritesDurable() throws {
        let events = EventLog()
        start(device: RecordingDevice(sectors: 100, events: events))
        XCTAssertTrue(IdentifyPage(bytes: try XCTUnwrap(exchange(ata(.identifyDevice, tag: 1)))[36...])!.writeCacheEnabled)
        _ = exchange(ata(.writeSectorsExt, tag: 2, lba: 1, data: [UInt8](repeating: 1, count: 512)))
        XCTAssertEqual(events.count("flush"), 0)
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(ata(.setFeatures, tag: 3, feature: 0x82)))).cmdStatus, 0x40)
        XCTAssertFalse(IdentifyPage(bytes: try XCTUnwrap(exchange(ata(.identifyDevice, tag: 4)))[36...])!.writeCacheEnabled)
        _ = exchange(ata(.writeSectorsExt, tag: 5, lba: 2, data: [UInt8](repeating: 2, count: 512)))
        XCTAssertEqual(events.count("flush"), 1)
    }

    /// One export on two NICs is one request table: a write that arrives on the second NIC waits for an
    /// overlapping earlier write from the first, and every reply leaves through the NIC its request came in on,
    /// from that NIC's address.
    func testExportOnTwoNICsOrdersAcrossThemAndRepliesOnEach() throws {
        let nicA = EmbeddedLink(mac: targetMAC), nicB = EmbeddedLink(mac: MACAddress("02:00:00:00:00:0b")!)
        let group = try LinkGroup(links: [nicA, nicB])
        let events = EventLog()
        let device = RecordingDevice(sectors: 100, events: events, slowMarker: 0x01)
        var configuration = TargetConfiguration(address: ShelfSlot(shelf: 1, slot: 2))
        configuration.workers = 4
        let t = Target(configuration: configuration, device: device, link: group, log: TargetLog { _ in })
        let stop = StopBox()
        let done = expectation(description: "stopped")
        Thread { t.run(until: stop.flag); done.fulfill() }.start()
        defer { stop.flag.store(true, ordering: .relaxed); wait(for: [done], timeout: 5) }
        // The announcement goes out on both, each from its own MAC.
        let announcements = [nicA.waitForSent(1), nicB.waitForSent(1)]
        XCTAssertEqual(announcements.map { $0.first.map { header($0).source } }, [targetMAC, nicB.macAddress])
        // The old write (slow, 300 ms) on A, then an overlapping newer one on B, addressed to B.
        nicA.inject(ata(.writeSectorsExt, tag: 1, lba: 5, data: [UInt8](repeating: 0x01, count: 512)))
        usleepSeconds(0.05)
        var onB = ata(.writeSectorsExt, tag: 2, lba: 5, data: [UInt8](repeating: 0x02, count: 512))
        for i in 0..<6 { onB[i] = nicB.macAddress.byte(i) }
        nicB.inject(onB)
        let repliesA = nicA.waitForSent(1, timeoutSeconds: 2), repliesB = nicB.waitForSent(1, timeoutSeconds: 2)
        XCTAssertEqual(repliesA.map { header($0).tag.rawValue }, [1])
        XCTAssertEqual(repliesB.map { header($0).tag.rawValue }, [2])
        XCTAssertEqual(repliesB.map { header($0).source }, [nicB.macAddress], "B's reply from B's address")
        XCTAssertEqual(events.all.filter { $0.hasPrefix("write") }, ["write 5", "write 5"])
        XCTAssertEqual(device.inner.contents(lba: 5, count: 1), [UInt8](repeating: 0x02, count: 512),
                       "the newer write from the other NIC waited for the older one and landed last")
        // Counted per NIC: one request in on each; the announcement and one reply out of each.
        XCTAssertEqual(t.metrics.interfaces, [nicA.interfaceName, nicB.interfaceName])
        for _ in 0..<100 where t.metrics.framesSentByInterface[1].load(ordering: .relaxed) < 2 { usleepSeconds(0.01) }
        XCTAssertEqual((0..<2).map { t.metrics.framesReceivedByInterface[$0].load(ordering: .relaxed) }, [1, 1])
        XCTAssertEqual((0..<2).map { t.metrics.framesSentByInterface[$0].load(ordering: .relaxed) }, [2, 2])
    }

    func testLateDuplicateOfOldWriteDoesNotOverwriteNewerData() throws {
        let events = EventLog()
        // Writes whose data starts with 0x01 (the old write) take 300 ms; the newer one is instant.
        let device = RecordingDevice(sectors: 100, events: events, slowMarker: 0x01)
        start(device: device) { $0.workers = 4 }
        link.inject(ata(.writeSectorsExt, tag: 1, lba: 5, data: [UInt8](repeating: 0x01, count: 512)))
        link.inject(ata(.writeSectorsExt, tag: 2, lba: 5, data: [UInt8](repeating: 0x02, count: 512)))
        let replies = link.waitForSent(2)
        // Replies may leave in either order; what matters is which write reached the media last.
        XCTAssertEqual(Set(replies.map { header($0).tag.rawValue }), [1, 2])
        XCTAssertEqual(device.inner.contents(lba: 5, count: 1), [UInt8](repeating: 0x02, count: 512))
    }

    func testAdjacentFramesArrivingTogetherBecomeOneVectoredIO() throws {
        let events = EventLog()
        let device = RecordingDevice(sectors: 100, events: events)
        start(device: device)
        // One 4 KiB initiator write at MTU 1500: four 2-sector frames for LBA 10..17, plus one elsewhere.
        var frames: [[UInt8]] = []
        for i in 0..<4 {
            let data = [UInt8](repeating: UInt8(i + 1), count: 1024)
            frames.append(ata(.writeSectorsExt, tag: UInt32(i), lba: UInt64(10 + 2 * i), count: 2, data: data))
        }
        frames.append(ata(.writeSectorsExt, tag: 9, lba: 50, count: 2, data: [UInt8](repeating: 9, count: 1024)))
        link.inject(batch: frames)
        let replies = link.waitForSent(5)
        XCTAssertEqual(Set(replies.map { header($0).tag.rawValue }), [0, 1, 2, 3, 9])
        XCTAssertTrue(replies.allSatisfy { ataReply($0).cmdStatus == 0x40 })
        XCTAssertTrue(events.all.contains("writev 10 x4"), "\(events.all)")
        for i in 0..<4 {
            let expected = [UInt8](repeating: UInt8(i + 1), count: 1024)
            XCTAssertEqual(device.inner.contents(lba: UInt64(10 + 2 * i), count: 2), expected)
        }
        XCTAssertEqual(device.inner.contents(lba: 50, count: 2), [UInt8](repeating: 9, count: 1024))
        // Reads of the same range come back merged too, each reply with its own data.
        var reads: [[UInt8]] = []
        for i in 0..<4 { reads.append(ata(.readSectorsExt, tag: UInt32(20 + i), lba: UInt64(10 + 2 * i), count: 2)) }
        link.inject(batch: reads)
        let readReplies = link.waitForSent(4)
        XCTAssertTrue(events.all.contains("readv 10 x4"), "\(events.all)")
        for reply in readReplies {
            let i = Int(header(reply).tag.rawValue) - 20
            XCTAssertEqual(Array(reply[36...]), [UInt8](repeating: UInt8(i + 1), count: 1024))
        }
        XCTAssertEqual(target.statistics[.mergedRequests], 8)
    }

    func testInlineDeviceMergesConsecutiveFramesAndOrdersOverlaps() throws {
        let events = EventLog()
        let device = RecordingDevice(sectors: 100, events: events, neverBlocks: true)
        start(device: device)
        // A 4 KiB write as four 2-sector frames, then a read overlapping its end, then a write continuing it:
        // the read must see the first write, so it waits for it; the second write overlaps neither and joins
        // the first one's transfer (one merge rule for every device queue).
        var frames: [[UInt8]] = []
        for i in 0..<4 { frames.append(ata(.writeSectorsExt, tag: UInt32(i), lba: UInt64(10 + 2 * i), count: 2, data: [UInt8](repeating: UInt8(i + 1), count: 1024))) }
        frames.append(ata(.readSectorsExt, tag: 4, lba: 17, count: 1))
        frames.append(ata(.writeSectorsExt, tag: 5, lba: 18, count: 2, data: [UInt8](repeating: 9, count: 1024)))
        link.inject(batch: frames)
        let replies = link.waitForSent(6)
        XCTAssertEqual(Set(replies.map { header($0).tag.rawValue }), [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(events.all, ["writev 10 x5", "write 10", "write 12", "write 14", "write 16", "write 18", "read 17"])
        let read = try XCTUnwrap(replies.first { header($0).tag.rawValue == 4 })
        XCTAssertEqual(Array(read[36..<548]), [UInt8](repeating: 4, count: 512))
        XCTAssertEqual(target.statistics[.mergedRequests], 5)
    }

    func testBufferCountIsHonoured() throws {
        let events = EventLog()
        let device = RecordingDevice(sectors: 100, events: events, slowMarker: 0x01)
        start(device: device) { $0.bufferCount = 2; $0.workers = 4 }
        for i in 0..<4 { link.inject(ata(.writeSectorsExt, tag: UInt32(i), lba: UInt64(i), data: [UInt8](repeating: 0x01, count: 512))) }
        let replies = link.waitForSent(4, timeoutSeconds: 1.5)
        XCTAssertEqual(replies.count, 2)
        XCTAssertEqual(target.statistics[.droppedOverrun], 2)
    }

    func testDeviceFailureAnswersABRTThroughIOUring() throws { try deviceFailureAnswersABRT(engine: .ioUring) }
    func testDeviceFailureAnswersABRTOnThreads() throws { try deviceFailureAnswersABRT(engine: .threads) }

    func testIOUringSubmitRefusedForAMomentIsRetriedAndEveryRequestAnswered() throws {
        let path = try diskImage(sectors: 64)
        defer { unlink(path) }
        start(device: try ImageDevice(path: path, options: .init())) { $0.ioEngine = .ioUring }
        XCTAssertTrue(target.usesIOUring)
        IOUring.failNextSubmits.store(3, ordering: .relaxed)
        defer { IOUring.failNextSubmits.store(0, ordering: .relaxed) }
        for i in 0..<4 {
            let data = [UInt8](repeating: UInt8(0x30 + i), count: 512)
            let write = try XCTUnwrap(exchange(ata(.writeSectorsExt, tag: UInt32(10 + i), lba: UInt64(i), data: data)), "write \(i) unanswered")
            XCTAssertEqual(ataReply(write).cmdStatus, 0x40)
            let read = try XCTUnwrap(exchange(ata(.readSectorsExt, tag: UInt32(20 + i), lba: UInt64(i))), "read \(i) unanswered")
            XCTAssertEqual(Array(read[36..<548]), data)
        }
        XCTAssertEqual(IOUring.failNextSubmits.load(ordering: .relaxed), 0, "every injected refusal was hit")
        XCTAssertEqual(target.statistics[.ringSubmitRetries], 3)
        XCTAssertTrue(logLines.all.contains { $0.contains("stay queued and are submitted again") }, "\(logLines.all)")
    }

    private func deviceFailureAnswersABRT(engine: IOEngine) throws {
        let path = try diskImage(sectors: 16)
        defer { unlink(path) }
        start(device: try ImageDevice(path: path, options: .init())) { $0.ioEngine = engine }
        XCTAssertEqual(target.usesIOUring, engine == .ioUring)
        Syscall.failPwriteAfter.store(1, ordering: .relaxed)
        defer { Syscall.failPwriteAfter.store(0, ordering: .relaxed) }
        let reply = ataReply(try XCTUnwrap(exchange(ata(.writeSectorsExt, tag: 1, lba: 3, data: [UInt8](repeating: 9, count: 512)))))
        XCTAssertEqual(reply.cmdStatus, 0x51)
        XCTAssertEqual(reply.errFeature, 0x04)
        XCTAssertEqual(target.statistics[.deviceErrors], 1)
        XCTAssertTrue(logLines.all.contains { $0.contains("pwrite") && $0.contains("Input/output error") }, "\(logLines.all)")
        // The next write succeeds: the failure held no slot and no LBA range.
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(ata(.writeSectorsExt, tag: 2, lba: 3, data: [UInt8](repeating: 7, count: 512))))).cmdStatus, 0x40)
    }

    // MARK: - io_uring

    /// An image file on a disk filesystem (not tmpfs, which is served on the receive thread), each sector
    /// filled with its own LBA's low byte.
    func diskImage(sectors: Int) throws -> String {
        let path = "/var/tmp/aoe-target-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).img"
        var bytes = [UInt8](repeating: 0, count: sectors * 512)
        for lba in 0..<sectors { for i in 0..<512 { bytes[lba * 512 + i] = UInt8(truncatingIfNeeded: lba) } }
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        return path
    }

    func testIOUringMergesInterleavedFramesOfTwoReads() throws {
        let path = try diskImage(sectors: 64)
        defer { unlink(path) }
        var options = ImageDevice.Options()
        options.direct = true   // O_DIRECT: every read reaches the ring (no page-cache shortcut), through a bounce buffer
        start(device: try ImageDevice(path: path, options: options))
        XCTAssertTrue(target.usesIOUring, "io_uring refused: \(logLines.all)")
        // Two 3-frame reads interleaved as a round-robin initiator sends them: A 10..15 and B 40..45.
        var frames: [[UInt8]] = []
        for i in 0..<3 {
            frames.append(ata(.readSectorsExt, tag: UInt32(i), lba: UInt64(10 + 2 * i), count: 2))
            frames.append(ata(.readSectorsExt, tag: UInt32(10 + i), lba: UInt64(40 + 2 * i), count: 2))
        }
        link.inject(batch: frames)
        let replies = link.waitForSent(6)
        XCTAssertEqual(replies.count, 6)
        for reply in replies {
            let tag = header(reply).tag.rawValue
            let lba = tag < 10 ? 10 + 2 * Int(tag) : 40 + 2 * Int(tag - 10)
            XCTAssertEqual(ataReply(reply).cmdStatus, 0x40)
            XCTAssertEqual(Array(reply[36..<548]), [UInt8](repeating: UInt8(lba), count: 512), "tag \(tag)")
            XCTAssertEqual(Array(reply[548..<1060]), [UInt8](repeating: UInt8(lba + 1), count: 512), "tag \(tag)")
        }
        XCTAssertEqual(target.statistics[.mergedRequests], 6, "each I/O's three frames became one device read")
    }

    /// The order of events, not a counter: on the default engine a durable write's reply never leaves before
    /// the fdatasync that covers it has completed. The test holds every commit back and watches.
    /// Where each device queue is tested: io_uring and threads on an ext4 image; inline on a tmpfs image.
    enum QueueUnderTest: CaseIterable { case ioUring, threads, inline }

    /// The image a queue is tested on: on tmpfs for the inline queue, else `diskImage`; sectors hold their LBA's
    /// low byte either way.
    func image(for engine: QueueUnderTest, sectors: Int) throws -> String {
        guard engine == .inline else { return try diskImage(sectors: sectors) }
        let path = "/dev/shm/aoe-target-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).img"
        var bytes = [UInt8](repeating: 0, count: sectors * 512)
        for lba in 0..<sectors { for i in 0..<512 { bytes[lba * 512 + i] = UInt8(truncatingIfNeeded: lba) } }
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else { throw XCTSkip("no /dev/shm") }
        return path
    }

    func startDurable(on engine: QueueUnderTest, sectors: Int) throws -> String {
        let path = try image(for: engine, sectors: sectors)
        let device = try ImageDevice(path: path, options: .init())
        start(device: device) {
            $0.durableWrites = true
            $0.ioEngine = engine == .threads ? .threads : .ioUring
        }
        switch engine {
        case .ioUring: XCTAssertTrue(target.usesIOUring, "io_uring refused: \(logLines.all)")
        case .threads: XCTAssertTrue(target.ioDescription.contains("threads"), target.ioDescription)
        case .inline: XCTAssertTrue(target.ioDescription.contains("receive thread"), target.ioDescription)
        }
        return path
    }

    func testDurableWriteReplyWaitsForItsFlushOnIOUring() throws { try durableWriteReplyWaitsForItsFlush(.ioUring) }
    func testDurableWriteReplyWaitsForItsFlushOnThreads() throws { try durableWriteReplyWaitsForItsFlush(.threads) }
    func testDurableWriteReplyWaitsForItsFlushInline() throws { try durableWriteReplyWaitsForItsFlush(.inline) }

    private func durableWriteReplyWaitsForItsFlush(_ engine: QueueUnderTest) throws {
        let path = try startDurable(on: engine, sectors: 64)
        defer { unlink(path) }
        Target.holdCommits.store(true, ordering: .relaxed)
        defer { Target.holdCommits.store(false, ordering: .relaxed) }
        let before = Syscall.fdatasyncCalls.load(ordering: .relaxed)
        link.inject(batch: (0..<4).map { i in ata(.writeSectorsExt, tag: UInt32(i), lba: UInt64(10 + i), data: [UInt8](repeating: 0xC0 | UInt8(i), count: 512)) })
        // The writes themselves complete (the data reaches the file) ...
        let deadline = monotonicSeconds() + 2
        var landed = false
        while !landed && monotonicSeconds() < deadline {
            let image = try Data(contentsOf: URL(fileURLWithPath: path))
            landed = (0..<4).allSatisfy { image[(10 + $0) * 512] == 0xC0 | UInt8($0) }
            if !landed { usleepSeconds(0.01) }
        }
        XCTAssertTrue(landed, "\(engine): the writes never reached the file")
        // ... but with their flush held back, not one reply may leave.
        XCTAssertEqual(link.waitForSent(1, timeoutSeconds: 0.5).count, 0, "\(engine): a durable write was acknowledged before its flush")
        XCTAssertEqual(Syscall.fdatasyncCalls.load(ordering: .relaxed), before, "\(engine): no fdatasync was even queued")
        Target.holdCommits.store(false, ordering: .relaxed)
        let replies = link.waitForSent(4, timeoutSeconds: 2)
        XCTAssertEqual(replies.count, 4)
        XCTAssertTrue(replies.allSatisfy { ataReply($0).cmdStatus == 0x40 })
        XCTAssertEqual(Syscall.fdatasyncCalls.load(ordering: .relaxed) - before, 1, "\(engine): one fdatasync covered all four")
    }

    func testDurableWritesShareFlushesOnIOUring() throws { try durableWritesShareFlushes(.ioUring) }
    func testDurableWritesShareFlushesOnThreads() throws { try durableWritesShareFlushes(.threads) }
    func testDurableWritesShareFlushesInline() throws { try durableWritesShareFlushes(.inline) }

    private func durableWritesShareFlushes(_ engine: QueueUnderTest) throws {
        let path = try startDurable(on: engine, sectors: 64)
        defer { unlink(path) }
        let before = Syscall.fdatasyncCalls.load(ordering: .relaxed)
        // 20 single-sector writes to scattered LBAs (nothing to merge) arriving together.
        let frames = (0..<20).map { i in ata(.writeSectorsExt, tag: UInt32(i), lba: UInt64(3 * i), data: [UInt8](repeating: 0xA0 | UInt8(i & 0xF), count: 512)) }
        link.inject(batch: frames)
        let replies = link.waitForSent(20)
        XCTAssertEqual(replies.count, 20)
        XCTAssertTrue(replies.allSatisfy { ataReply($0).cmdStatus == 0x40 })
        let syncs = Syscall.fdatasyncCalls.load(ordering: .relaxed) - before
        XCTAssertGreaterThanOrEqual(syncs, 1, "\(engine): durable writes were acknowledged without an fdatasync")
        XCTAssertLessThan(syncs, 20, "\(engine): group commit: one fdatasync covers many writes")
        let image = try Data(contentsOf: URL(fileURLWithPath: path))
        for i in 0..<20 {
            XCTAssertEqual(image[(3 * i) * 512], 0xA0 | UInt8(i & 0xF), "LBA \(3 * i)")
            XCTAssertEqual(image[(3 * i + 1) * 512], UInt8(3 * i + 1), "LBA \(3 * i + 1) untouched")
        }
        // FLUSH CACHE EXT is one more fdatasync, answered when it is done.
        let flushBefore = Syscall.fdatasyncCalls.load(ordering: .relaxed)
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(ata(.flushCacheExt, tag: 99, count: 0)))).cmdStatus, 0x40)
        XCTAssertEqual(Syscall.fdatasyncCalls.load(ordering: .relaxed) - flushBefore, 1, "\(engine)")
        XCTAssertEqual(target.statistics[.flushes], 1)
    }

    func testAFaultPlanWrapsIOUringAndFailsExactlyTheWritesItPicks() throws {
        let path = try diskImage(sectors: 64)
        defer { unlink(path) }
        let plan = FaultPlan(operations: [.write], percent: 40, seed: 3)
        start(device: try ImageDevice(path: path, options: .init())) {
            $0.ioEngine = .ioUring
            $0.faultPlan = plan
        }
        XCTAssertTrue(target.usesIOUring, "the wrapper sits over io_uring: \(target.ioDescription)")
        XCTAssertTrue(target.ioDescription.contains("on purpose"), target.ioDescription)
        // One write at a time, so each is one device request and the plan's picks are in order.
        var failed: [Int] = []
        for i in 0..<20 {
            let reply = try XCTUnwrap(exchange(ata(.writeSectorsExt, tag: UInt32(i), lba: UInt64(2 * i), data: [UInt8](repeating: 0xF0, count: 512))))
            if ataReply(reply).cmdStatus & 0x01 != 0 { failed.append(i) }
        }
        XCTAssertTrue((3...14).contains(failed.count), "40 % of 20 writes failed on purpose, not \(failed.count)")
        let image = try Data(contentsOf: URL(fileURLWithPath: path))
        for i in 0..<20 {
            // A failed write never reached the file; every other one did.
            XCTAssertEqual(image[2 * i * 512], failed.contains(i) ? UInt8(2 * i) : 0xF0, "write \(i)")
        }
        // Reads are not in the plan.
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(ata(.readSectorsExt, tag: 50, lba: 1)))).cmdStatus, 0x40)
        XCTAssertEqual(target.statistics[.deviceErrors], failed.count)
    }

    func testConcurrentDurableWritesBehindASlowFlushShareTheNextOne() throws {
        // A flush that takes as long as a disk's, on worker threads, and 16 writes that complete while the
        // first flush runs: they share the next one instead of paying one each.
        let device = SlowFlushingMemoryDevice(sectors: 64, flushSeconds: 0.05)
        start(device: device) {
            $0.durableWrites = true
            $0.workers = 16
        }
        link.inject(ata(.writeSectorsExt, tag: 0, lba: 0, data: [UInt8](repeating: 1, count: 512)))
        usleepSeconds(0.01)   // the first write's flush is running
        link.inject(batch: (1...16).map { i in ata(.writeSectorsExt, tag: UInt32(i), lba: UInt64(2 * i), data: [UInt8](repeating: UInt8(i), count: 512)) })
        XCTAssertEqual(link.waitForSent(17, timeoutSeconds: 5).count, 17)
        let flushes = device.flushCount.load(ordering: .relaxed)
        XCTAssertGreaterThanOrEqual(flushes, 2, "the first write and the sixteen that followed it need a flush each")
        // The sixteen complete one by one on their workers; at most `maxCommits` flushes run at once, each
        // covering what had completed when it was queued.
        XCTAssertLessThanOrEqual(flushes, 1 + GroupCommit.maxCommits, "17 writes behind a 50 ms flush took \(flushes) flushes: no group commit")
    }
}

/// A memory device whose flush takes as long as a disk's, counting flushes.
final class SlowFlushingMemoryDevice: BlockDevice, @unchecked Sendable {
    let inner: MemoryDevice
    let flushSeconds: Double
    let flushCount = Atomic<Int>(0)
    init(sectors: UInt64, flushSeconds: Double) {
        inner = MemoryDevice(sectors: sectors)
        self.flushSeconds = flushSeconds
    }
    var sectorCount: UInt64 { inner.sectorCount }
    var capabilities: DeviceCapabilities { inner.capabilities }
    var name: String { "slow-flush" }
    var identity: String { "slow-flush" }
    func read(into buffer: UnsafeMutableRawBufferPointer, at lba: UInt64) throws(DeviceError) { try inner.read(into: buffer, at: lba) }
    func write(from buffer: UnsafeRawBufferPointer, at lba: UInt64) throws(DeviceError) { try inner.write(from: buffer, at: lba) }
    func flush() throws(DeviceError) {
        usleepSeconds(flushSeconds)
        flushCount.add(1, ordering: .relaxed)
    }
}

extension Array where Element == UInt8 {
    func replacing(at offset: Int, with mac: MACAddress) -> [UInt8] {
        var copy = self
        for i in 0..<6 { copy[offset + i] = mac.byte(i) }
        return copy
    }
}

final class RequestSchedulerTests: XCTestCase {
    func testOverlappingWriteWaitsAndStartsInArrivalOrder() {
        var s = RequestScheduler()
        XCTAssertTrue(s.admit(id: 1, start: 0, count: 8, writes: true))
        XCTAssertFalse(s.admit(id: 2, start: 4, count: 8, writes: false), "read overlapping a running write waits")
        XCTAssertTrue(s.admit(id: 3, start: 100, count: 8, writes: true), "disjoint write runs")
        XCTAssertFalse(s.admit(id: 4, start: 6, count: 1, writes: true), "write behind a waiting read waits")
        XCTAssertTrue(s.admit(id: 5, start: 200, count: 1, writes: false))
        XCTAssertEqual(s.finish(id: 1), [2])
        XCTAssertEqual(s.finish(id: 2), [4])
        XCTAssertEqual(s.finish(id: 3), [])
    }

    /// The rule in its plainest form (every earlier unfinished request checked, in a list): the oracle for the
    /// indexed scheduler.
    struct PlainScheduler {
        struct Entry { var id: Int; var start: UInt64; var end: UInt64; var writes: Bool; var running: Bool }
        var entries: [Entry] = []
        static func conflicts(_ a: Entry, _ b: Entry) -> Bool { (a.writes || b.writes) && a.start < b.end && b.start < a.end }
        mutating func admit(id: Int, start: UInt64, count: UInt64, writes: Bool) -> Bool {
            var e = Entry(id: id, start: start, end: start + max(count, 1), writes: writes, running: false)
            e.running = !entries.contains { Self.conflicts($0, e) }
            entries.append(e)
            return e.running
        }
        mutating func finish(id: Int) -> [Int] {
            entries.remove(at: entries.firstIndex { $0.id == id }!)
            var ready: [Int] = []
            for i in entries.indices where !entries[i].running && !entries[..<i].contains(where: { Self.conflicts($0, entries[i]) }) {
                entries[i].running = true
                ready.append(entries[i].id)
            }
            return ready
        }
    }

    func testFrameDataMeetsTheDeviceAlignmentAwayFromPageBoundaries() {
        XCTAssertEqual(Target.frameStartInPage(dataAlignment: 1), 476)
        XCTAssertEqual(Target.frameStartInPage(dataAlignment: 512), 476)
        XCTAssertEqual(Target.frameStartInPage(dataAlignment: 2048), 2012)
        XCTAssertEqual(Target.frameStartInPage(dataAlignment: 4096), 4060, "page alignment when the device needs it")
    }

    func testSchedulerAgreesWithThePlainRuleOnRandomTraffic() {
        var generator = SeededGenerator(defaultSeed: 20261201)
        let seed = generator.seedNote
        for round in 0..<200 {
            var fast = RequestScheduler(), plain = PlainScheduler()
            var free = Array(0..<24), running: [Int] = []
            for step in 0..<300 {
                if !free.isEmpty && (running.isEmpty || Bool.random(using: &generator)) {
                    let id = free.remove(at: Int.random(in: 0..<free.count, using: &generator))
                    let start = UInt64.random(in: 0..<64, using: &generator), count = UInt64.random(in: 0...8, using: &generator)
                    let writes = Int.random(in: 0..<3, using: &generator) == 0
                    let a = fast.admit(id: id, start: start, count: count, writes: writes)
                    XCTAssertEqual(a, plain.admit(id: id, start: start, count: count, writes: writes), "round \(round) step \(step): admit \(id), \(seed)")
                    if a { running.append(id) }
                } else if !running.isEmpty {
                    let id = running.remove(at: Int.random(in: 0..<running.count, using: &generator))
                    let ready = fast.finish(id: id)
                    XCTAssertEqual(ready, plain.finish(id: id), "round \(round) step \(step): finish \(id), \(seed)")
                    running.append(contentsOf: ready)
                    free.append(id)
                }
            }
        }
    }

    func testWaitingBacklogIsBoundedAndFinishingReleasesOnlyTheNextInLine() {
        var s = RequestScheduler()
        XCTAssertTrue(s.admit(id: 0, start: 0, count: 8, writes: true))
        for id in 1...RequestScheduler.waitingCapacity {
            XCTAssertFalse(s.waitingIsFull)
            XCTAssertFalse(s.admit(id: id, start: 0, count: 8, writes: true), "overlapping write \(id) waits")
        }
        XCTAssertTrue(s.waitingIsFull, "the caller refuses more from here on")
        // Disjoint traffic is not held back by the scheduler itself.
        XCTAssertTrue(s.admit(id: 1000, start: 500, count: 8, writes: true))
        XCTAssertEqual(s.finish(id: 0), [1], "only the earliest overlapping write may start")
        XCTAssertFalse(s.waitingIsFull)
        XCTAssertEqual(s.finish(id: 1000), [], "a disjoint finish releases nothing")
        XCTAssertEqual(s.finish(id: 1), [2])
    }

    func testReadsDoNotBlockReads() {
        var s = RequestScheduler()
        XCTAssertTrue(s.admit(id: 1, start: 0, count: 8, writes: false))
        XCTAssertTrue(s.admit(id: 2, start: 0, count: 8, writes: false))
        XCTAssertFalse(s.admit(id: 3, start: 7, count: 8, writes: true))
        XCTAssertEqual(s.finish(id: 1), [])
        XCTAssertEqual(s.finish(id: 2), [3])
    }
}
