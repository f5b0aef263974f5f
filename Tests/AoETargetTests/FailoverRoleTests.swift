import XCTest
import Synchronization
@testable import AoETarget
import AoEWire
import ATACore
import BlockDevices
import LinuxSystem

/// A memory device another host can take over: writes whose data starts with `lostMarker` fail the way librbd
/// fails once the lock was broken (after a delay, so later requests queue behind them), and
/// `confirmOwnership` says what `owned` holds.
final class OwnedDevice: ExclusivelyOwnedDevice, @unchecked Sendable {
    let inner = MemoryDevice(sectors: 64)
    let events = EventLog()
    let owned = Atomic<Bool>(true)
    let lostMarker: UInt8 = 0xEE
    var sectorCount: UInt64 { inner.sectorCount }
    var capabilities: DeviceCapabilities { inner.capabilities.with(neverBlocks: false) }
    var name: String { "owned" }
    var identity: String { "owned" }
    func read(into buffer: UnsafeMutableRawBufferPointer, at lba: UInt64) throws(DeviceError) { try inner.read(into: buffer, at: lba) }
    func write(from buffer: UnsafeRawBufferPointer, at lba: UInt64) throws(DeviceError) {
        if buffer[0] == lostMarker {
            usleepSeconds(0.2)
            throw DeviceError(SystemError(call: "rbd_aio", errno: ESHUTDOWN), ownershipLost: true)
        }
        try inner.write(from: buffer, at: lba)
        events.append("write \(lba) \(buffer[0])")
    }
    func flush() throws(DeviceError) {}
    func confirmOwnership() -> Bool { owned.load(ordering: .relaxed) }
}

extension DeviceCapabilities {
    func with(neverBlocks: Bool) -> DeviceCapabilities {
        var c = self
        c.neverBlocks = neverBlocks
        return c
    }
}

extension TargetTests {
    func queryConfig(tag: UInt32) -> [UInt8] { frame(command: .queryConfig, tag: tag, arg: [UInt8](repeating: 0, count: 8)) }

    func testAStandbySendsNothingForItsExportUntilItBecomesActiveThenAnnouncesItself() throws {
        start(device: MemoryDevice(sectors: 64), role: .standby)
        link.inject(queryConfig(tag: 1))
        link.inject(ata(.identifyDevice, tag: 2))
        link.inject(ata(.readSectorsExt, tag: 3, lba: 1))
        link.inject(frame(command: .queryConfig, tag: 4, to: .broadcast, shelf: 0xFFFF, slot: 0xFF, arg: [UInt8](repeating: 0, count: 8)))
        XCTAssertEqual(link.waitForSent(1, timeoutSeconds: 0.5).count, 0, "a standby answered")
        XCTAssertEqual(target.statistics[.droppedNotActive], 4)
        XCTAssertEqual(target.role, .standby)

        target.becomeActive()
        let announcements = link.waitForSent(Target.takeoverAnnouncements, timeoutSeconds: 3)
        XCTAssertEqual(announcements.count, Target.takeoverAnnouncements)
        for frame in announcements {
            let h = header(frame)
            XCTAssertEqual(h.destination, .broadcast)
            XCTAssertEqual(h.command, .queryConfig)
            XCTAssertTrue(h.flags.contains(.response))
            // Bit 31 clear: the Linux initiator drops responses whose tag has it set.
            XCTAssertEqual(h.tag.rawValue & 0x8000_0000, 0)
        }
        _ = link.drainSent()
        let reply = try XCTUnwrap(exchange(ata(.identifyDevice, tag: 5)))
        XCTAssertEqual(ataReply(reply).cmdStatus, 0x40)
    }

    func testALostLockFencesTheExportWithoutAnErrorReplyAndDropsWhatItQueued() throws {
        let device = OwnedDevice()
        start(device: device) { $0.ioEngine = .threads; $0.workers = 2 }
        // The first write fails as a broken lock does; the second overlaps it and waits behind it; the third is
        // elsewhere and the device finishes it before the first fails.
        link.inject(ata(.writeSectorsExt, tag: 1, lba: 5, data: [UInt8](repeating: device.lostMarker, count: 512)))
        link.inject(ata(.writeSectorsExt, tag: 2, lba: 5, data: [UInt8](repeating: 0x22, count: 512)))
        XCTAssertEqual(link.waitForSent(1, timeoutSeconds: 1).count, 0, "a request was answered after the lock was lost")
        for _ in 0..<100 where target.role != .fenced { usleepSeconds(0.01) }
        XCTAssertEqual(target.role, .fenced)
        XCTAssertTrue(logLines.all.contains { $0.contains("fenced:") }, "\(logLines.all)")
        // The queued overlapping write never reached the device, and nothing is answered from now on.
        XCTAssertFalse(device.events.all.contains("write 5 34"), "\(device.events.all)")
        link.inject(queryConfig(tag: 3))
        link.inject(ata(.identifyDevice, tag: 4))
        XCTAssertEqual(link.waitForSent(1, timeoutSeconds: 0.5).count, 0)
        target.becomeActive()   // only a standby becomes active; a fenced export stays fenced
        XCTAssertEqual(target.role, .fenced)
    }

    /// A loop stopped for longer than the takeover timeout's share (SIGSTOP, a paused VM) asks the device
    /// before answering what arrived meanwhile: taken over means fenced, with nothing sent.
    func testAfterAStallTheExportAsksWhetherItStillOwnsTheDeviceBeforeAnswering() throws {
        try stallThenQueryConfig(stillOwned: false)
        XCTAssertEqual(link.waitForSent(1, timeoutSeconds: 2.5).count, 0, "answered after being taken over")
        XCTAssertEqual(target.role, .fenced)
        XCTAssertTrue(logLines.all.contains { $0.contains("without running") }, "\(logLines.all)")
    }

    func testAfterAStallAnOwnerThatStillHoldsTheDeviceAnswers() throws {
        try stallThenQueryConfig(stillOwned: true)
        XCTAssertEqual(link.waitForSent(1, timeoutSeconds: 2).count, 1)
        XCTAssertEqual(target.role, .active)
    }

    private func stallThenQueryConfig(stillOwned: Bool) throws {
        let device = OwnedDevice()
        device.owned.store(stillOwned, ordering: .relaxed)
        start(device: device) { $0.ioEngine = .threads }
        // The loop thread sleeps inside the send of this reply, as if the process had been stopped.
        let stall = Atomic<Bool>(true)
        link.onSend = { _ in if stall.exchange(false, ordering: .relaxed) { usleepSeconds(1.3) } }
        XCTAssertNotNil(exchange(ata(.identifyDevice, tag: 1)))
        _ = link.drainSent()
        link.inject(queryConfig(tag: 2))
    }
}

extension TargetTests {
    /// The initiator gave up on tag 1 and resent the write as tag 2 while the device was still on it: one
    /// device write, one reply, carrying tag 2.
    func testARetransmissionOfAWriteInFlightIsAnsweredByItsOneReplyWithTheNewTag() throws {
        let events = EventLog()
        start(device: RecordingDevice(sectors: 64, events: events, slowMarker: 0x01)) { $0.ioEngine = .threads }
        let data = [UInt8](repeating: 0x01, count: 512)
        link.inject(ata(.writeSectorsExt, tag: 1, lba: 9, data: data))
        usleepSeconds(0.05)
        link.inject(ata(.writeSectorsExt, tag: 2, lba: 9, data: data))
        let replies = link.waitForSent(2, timeoutSeconds: 1.5)
        XCTAssertEqual(replies.count, 1)
        XCTAssertEqual(replies.first.map { header($0).tag.rawValue }, 2)
        XCTAssertEqual(events.count("write 9"), 1)
        XCTAssertEqual(target.statistics[.retransmitsAbsorbed], 1)
    }

    /// Random I/O at depth sends the same request twice at once now and then (fio, aoectl bench, aoe-load): two
    /// equal writes in one batch, closer than any initiator resends, are two requests with two replies.
    func testTheSameWriteTwiceInOneBatchIsAnsweredTwice() throws {
        let events = EventLog()
        start(device: RecordingDevice(sectors: 64, events: events, slowMarker: 0x01)) { $0.ioEngine = .threads }
        let data = [UInt8](repeating: 0x01, count: 512)
        link.inject(batch: [ata(.writeSectorsExt, tag: 1, lba: 9, data: data), ata(.writeSectorsExt, tag: 2, lba: 9, data: data)])
        let replies = link.waitForSent(2, timeoutSeconds: 1.5)
        XCTAssertEqual(replies.map { header($0).tag.rawValue }, [1, 2])
        XCTAssertEqual(events.count("write 9"), 2)
        XCTAssertEqual(target.statistics[.retransmitsAbsorbed], 0)
    }

    /// Control: a second write to the same sectors with other data is a new request, ordered after the first.
    func testASecondWriteWithOtherDataIsNotTakenForARetransmission() throws {
        let events = EventLog()
        start(device: RecordingDevice(sectors: 64, events: events, slowMarker: 0x01)) { $0.ioEngine = .threads }
        link.inject(ata(.writeSectorsExt, tag: 1, lba: 9, data: [UInt8](repeating: 0x01, count: 512)))
        usleepSeconds(0.05)
        link.inject(ata(.writeSectorsExt, tag: 2, lba: 9, data: [UInt8](repeating: 0x02, count: 512)))
        let replies = link.waitForSent(2, timeoutSeconds: 1.5)
        XCTAssertEqual(replies.map { header($0).tag.rawValue }, [1, 2])
        XCTAssertEqual(events.count("write 9"), 2)
        XCTAssertEqual(target.statistics[.retransmitsAbsorbed], 0)
    }
}

/// A memory device of 64 sectors whose visible size a test changes, as `rbd resize` does an image's.
final class ResizingDevice: ResizableDevice, @unchecked Sendable {
    let inner = MemoryDevice(sectors: 64)
    let visible = Atomic<UInt64>(32)
    private let seen = Atomic<UInt64>(32)
    var sectorCount: UInt64 { seen.load(ordering: .relaxed) }
    var capabilities: DeviceCapabilities { inner.capabilities.with(neverBlocks: false) }
    var name: String { "resizing" }
    var identity: String { "resizing" }
    func read(into buffer: UnsafeMutableRawBufferPointer, at lba: UInt64) throws(DeviceError) { try inner.read(into: buffer, at: lba) }
    func write(from buffer: UnsafeRawBufferPointer, at lba: UInt64) throws(DeviceError) { try inner.write(from: buffer, at: lba) }
    func flush() throws(DeviceError) {}
    func refreshSize() -> Bool {
        let now = visible.load(ordering: .relaxed)
        return seen.exchange(now, ordering: .relaxed) != now
    }
}

extension TargetTests {
    func testAResizeWhileServingShowsInIdentifyAndTheRangeCheckAndIsAnnounced() throws {
        let device = ResizingDevice()
        start(device: device) { $0.ioEngine = .threads }
        let before = try XCTUnwrap(exchange(ata(.readSectorsExt, tag: 1, lba: 40)))
        XCTAssertEqual(ataReply(before).errFeature & 0x10, 0x10, "IDNF past the end before the resize")
        _ = link.drainSent()
        device.visible.store(64, ordering: .relaxed)
        // The announcement of the new size (the loop looks once a second).
        let announced = link.waitForSent(1, timeoutSeconds: 3)
        XCTAssertEqual(announced.first.map { header($0).command }, .queryConfig)
        XCTAssertEqual(announced.first.map { header($0).destination }, .broadcast)
        XCTAssertTrue(logLines.all.contains { $0.contains("resized from 32 to 64 sectors") }, "\(logLines.all)")
        _ = link.drainSent()
        let identify = try XCTUnwrap(exchange(ata(.identifyDevice, tag: 2)))
        let page = try XCTUnwrap(IdentifyPage(bytes: identify[36...]))
        XCTAssertEqual(page.sectors, 64)
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(ata(.readSectorsExt, tag: 3, lba: 40)))).cmdStatus, 0x40)
    }
}

extension TargetTests {
    /// Without a metrics endpoint nothing per request is recorded; with one, every answer is.
    func testPerRequestFiguresAreNotRecordedWithoutAMetricsEndpoint() throws { try perRequestFigures(recorded: false) }
    func testPerRequestFiguresAreRecordedWithAMetricsEndpoint() throws { try perRequestFigures(recorded: true) }

    private func perRequestFigures(recorded: Bool) throws {
        start(device: MemoryDevice(sectors: 64, neverBlocks: true)) { $0.recordsMetrics = recorded }
        XCTAssertNotNil(exchange(ata(.readSectorsExt, tag: 1, lba: 3)))
        XCTAssertNotNil(exchange(ata(.writeSectorsExt, tag: 2, lba: 3, data: [UInt8](repeating: 7, count: 512))))
        XCTAssertEqual(target.metrics.latency(.read).snapshot().count, recorded ? 1 : 0)
        XCTAssertEqual(target.metrics.latency(.write).snapshot().count, recorded ? 1 : 0)
        XCTAssertEqual(target.metrics.bytes(.write), recorded ? 512 : 0)
    }
}
