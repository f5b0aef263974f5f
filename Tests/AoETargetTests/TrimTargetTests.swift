import XCTest
import Glibc
@testable import AoETarget
import AoEWire
import ATACore
import BlockDevices
import LinuxSystem

/// DATA SET MANAGEMENT TRIM through the whole target: decoded, ordered, discarded on every device queue,
/// made durable by the one group commit, refused where it must be.
extension TargetTests {
    /// One 512-byte block of range entries.
    func trimEntries(_ ranges: [(lba: UInt64, count: UInt64)], unusedFirst: Int = 0) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: 512)
        for (i, range) in ranges.enumerated() {
            let entry = range.count << 48 | range.lba
            for b in 0..<8 { block[(unusedFirst + i) * 8 + b] = UInt8(truncatingIfNeeded: entry >> (8 * UInt64(b))) }
        }
        return block
    }

    func trim(tag: UInt32, _ ranges: [(lba: UInt64, count: UInt64)], unusedFirst: Int = 0) -> [UInt8] {
        ata(.dataSetManagement, tag: tag, lba: 0, count: 1, feature: 0x01, data: trimEntries(ranges, unusedFirst: unusedFirst))
    }

    func identifyWords(_ tag: UInt32) throws -> [UInt16] {
        let reply = try XCTUnwrap(exchange(ata(.identifyDevice, tag: tag)))
        return (0..<256).map { UInt16(reply[36 + 2 * $0]) | UInt16(reply[36 + 2 * $0 + 1]) << 8 }
    }

    func testTrimDiscardsEveryRangeThroughIOUring() throws { try trimDiscardsEveryRange(.ioUring) }
    func testTrimDiscardsEveryRangeOnThreads() throws { try trimDiscardsEveryRange(.threads) }
    func testTrimDiscardsEveryRangeInline() throws { try trimDiscardsEveryRange(.inline) }

    /// Sectors hold their LBA's low byte; a TRIM of two ranges (behind unused entries) zeroes exactly those, and
    /// a 32 KiB aligned range becomes a hole in the file.
    private func trimDiscardsEveryRange(_ engine: QueueUnderTest) throws {
        let sectors = 256
        let path = try image(for: engine, sectors: sectors)
        defer { unlink(path) }
        let device = try ImageDevice(path: path, options: .init())
        XCTAssertEqual(device.capabilities.discard, .zeros, "\(engine): the filesystem of \(path) punches holes")
        start(device: device) { $0.ioEngine = engine == .threads ? .threads : .ioUring }
        switch engine {
        case .ioUring: XCTAssertTrue(target.usesIOUring, "io_uring refused: \(logLines.all)")
        case .threads: XCTAssertTrue(target.ioDescription.contains("threads"), target.ioDescription)
        case .inline: XCTAssertTrue(target.ioDescription.contains("receive thread"), target.ioDescription)
        }
        let words = try identifyWords(1)
        XCTAssertEqual([words[69], words[105], words[169]], [0x4020, 1, 1], "\(engine): IDENTIFY says TRIM, zeros after it")

        let reply = try XCTUnwrap(exchange(trim(tag: 2, [(10, 3), (64, 64)], unusedFirst: 2)))
        XCTAssertEqual(ataReply(reply).cmdStatus, 0x40, "\(engine)")
        XCTAssertEqual(reply.count, 60, "\(engine): a TRIM reply carries no data")
        let image = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        for lba in 0..<sectors {
            let trimmed = (10..<13).contains(lba) || (64..<128).contains(lba)
            let expected = trimmed ? 0 : UInt8(truncatingIfNeeded: lba)
            XCTAssertEqual(image[lba * 512], expected, "\(engine): sector \(lba)")
            XCTAssertEqual(image[lba * 512 + 511], expected, "\(engine): sector \(lba)")
        }
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        XCTAssertEqual(lseek(fd, 64 * 512, 4 /* SEEK_HOLE */), 64 * 512, "\(engine): the aligned range is a hole, not zeros written")
        XCTAssertEqual(lseek(fd, 64 * 512, 3 /* SEEK_DATA */), 128 * 512, "\(engine): the data resumes where the range ends")
        XCTAssertEqual(target.statistics[.trims], 1)
        XCTAssertEqual(target.statistics[.sectorsTrimmed], 67)
        // Read back through the target too (the page cache and a mapping of a tmpfs image see the hole).
        let read = try XCTUnwrap(exchange(ata(.readSectorsExt, tag: 3, lba: 12, count: 2)))
        XCTAssertEqual(Array(read[36..<548]), [UInt8](repeating: 0, count: 512), "\(engine)")
        XCTAssertEqual(Array(read[548..<1060]), [UInt8](repeating: 13, count: 512), "\(engine)")
    }

    func testATrimReachingPastTheEndIsAbortedAndDiscardsNothing() throws {
        let device = MemoryDevice(sectors: 100)
        start(device: device)
        let data = [UInt8](repeating: 0x5A, count: 512)
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(ata(.writeSectorsExt, tag: 1, lba: 5, data: data)))).cmdStatus, 0x40)
        let reply = ataReply(try XCTUnwrap(exchange(trim(tag: 2, [(5, 1), (99, 2)]))))
        XCTAssertEqual([reply.cmdStatus, reply.errFeature], [0x51, 0x04])
        XCTAssertEqual(device.contents(lba: 5, count: 1), data, "the range in bounds was not discarded either")
        // The last sector itself is fine; entries that are all unused trim nothing and succeed.
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(trim(tag: 3, [(99, 1)])))).cmdStatus, 0x40)
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(trim(tag: 4, [])))).cmdStatus, 0x40)
        XCTAssertEqual(target.statistics[.trims], 1)
        // A DSM frame shorter than its one block of entries is malformed at the AoE level: Bad Argument.
        var short = trim(tag: 5, [(5, 1)])
        short.removeLast(100)
        let error = try XCTUnwrap(exchange(short))
        XCTAssertTrue(header(error).flags.contains(.error))
        XCTAssertEqual(header(error).error, .badArgument)
        XCTAssertEqual(device.contents(lba: 5, count: 1), data)
    }

    func testTrimIsRefusedWhereTheExportCannotDiscard() throws {
        let path = try diskImage(sectors: 16)
        defer { unlink(path) }
        var options = ImageDevice.Options()
        options.readOnly = true
        start(device: try ImageDevice(path: path, options: options))
        let words = try identifyWords(1)
        XCTAssertEqual([words[69], words[105], words[169]], [0, 0, 0], "a read-only export does not offer TRIM")
        let reply = ataReply(try XCTUnwrap(exchange(trim(tag: 2, [(1, 1)]))))
        XCTAssertEqual([reply.cmdStatus, reply.errFeature], [0x51, 0x04])
        XCTAssertEqual([UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))[512], 1, "nothing discarded")
    }

    /// A TRIM overlapping a slow write waits for it, and a write after the TRIM waits for the TRIM: the last
    /// word on every sector is the last request's, whichever worker runs first.
    /// `trim = false` / `--no-trim`: a device that could discard is served without TRIM.
    func testAnExportWithTrimOffDoesNotOfferIt() throws {
        let device = MemoryDevice(sectors: 100)
        XCTAssertNotNil(device.capabilities.discard)
        start(device: device) { $0.trim = false }
        let words = try identifyWords(1)
        XCTAssertEqual([words[69], words[105], words[169]], [0, 0, 0])
        let data = [UInt8](repeating: 0x33, count: 512)
        XCTAssertEqual(ataReply(try XCTUnwrap(exchange(ata(.writeSectorsExt, tag: 2, lba: 1, data: data)))).cmdStatus, 0x40)
        let reply = ataReply(try XCTUnwrap(exchange(trim(tag: 3, [(1, 1)]))))
        XCTAssertEqual([reply.cmdStatus, reply.errFeature], [0x51, 0x04])
        XCTAssertEqual(device.contents(lba: 1, count: 1), data)
    }

    func testTrimIsOrderedAgainstOverlappingWritesBothWays() throws {
        let events = EventLog()
        let device = RecordingDevice(sectors: 100, events: events, slowMarker: 0x01)
        start(device: device) { $0.workers = 4 }
        link.inject(batch: [
            ata(.writeSectorsExt, tag: 1, lba: 20, data: [UInt8](repeating: 0x01, count: 512)),
            trim(tag: 2, [(20, 2)]),
            ata(.writeSectorsExt, tag: 3, lba: 21, data: [UInt8](repeating: 0x02, count: 512)),
        ])
        let replies = link.waitForSent(3, timeoutSeconds: 3)
        XCTAssertEqual(Set(replies.map { header($0).tag.rawValue }), [1, 2, 3])
        XCTAssertEqual(events.all, ["write 20", "discard 20 x2", "write 21"])
        XCTAssertEqual(device.inner.contents(lba: 20, count: 1), [UInt8](repeating: 0, count: 512))
        XCTAssertEqual(device.inner.contents(lba: 21, count: 1), [UInt8](repeating: 0x02, count: 512))
    }

    /// On a durable export a TRIM is acknowledged only after the flush that covers it, like a write.
    func testADurableTrimIsAnsweredAfterItsFlush() throws {
        let path = try startDurable(on: .ioUring, sectors: 64)
        defer { unlink(path) }
        Target.holdCommits.store(true, ordering: .relaxed)
        defer { Target.holdCommits.store(false, ordering: .relaxed) }
        let before = Syscall.fdatasyncCalls.load(ordering: .relaxed)
        link.inject(trim(tag: 7, [(8, 8)]))
        let deadline = monotonicSeconds() + 2
        var landed = false
        while !landed && monotonicSeconds() < deadline {
            landed = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))[8 * 512] == 0
            if !landed { usleepSeconds(0.01) }
        }
        XCTAssertTrue(landed, "the hole was never punched")
        XCTAssertEqual(link.waitForSent(1, timeoutSeconds: 0.5).count, 0, "a durable TRIM was acknowledged before its flush")
        Target.holdCommits.store(false, ordering: .relaxed)
        let replies = link.waitForSent(1, timeoutSeconds: 2)
        XCTAssertEqual(replies.count, 1)
        XCTAssertEqual(replies.first.map { ataReply($0).cmdStatus }, 0x40)
        XCTAssertGreaterThan(Syscall.fdatasyncCalls.load(ordering: .relaxed), before)
    }
}
