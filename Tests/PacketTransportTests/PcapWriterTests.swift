import XCTest
import Glibc
@testable import PacketTransport

final class PcapWriterTests: XCTestCase {
    func temporaryPath() -> String {
        let dir = NSTemporaryDirectory() + "aoe-pcap-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        mkdir(dir, 0o755)
        addTeardownBlock { _ = try? FileManager.default.removeItem(atPath: dir) }
        return dir + "/trace.pcap"
    }

    func size(_ path: String) -> Int { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1 }

    /// The libpcap file magic (little-endian, microseconds) and link type Ethernet: a file tshark opens.
    func assertPcapFile(_ path: String, file: StaticString = #filePath, line: UInt = #line) {
        guard let data = FileManager.default.contents(atPath: path), data.count >= 24 else { return XCTFail("\(path) missing", file: file, line: line) }
        XCTAssertEqual(Array(data.prefix(4)), [0xD4, 0xC3, 0xB2, 0xA1], file: file, line: line)
        XCTAssertEqual(data[20], 1, "link type 1: Ethernet", file: file, line: line)
    }

    func testWithALimitTheTraceRotatesAndNeverGrowsPastIt() throws {
        let path = temporaryPath()
        let limit = 16 << 10
        let writer = try PcapWriter(path: path, limitBytes: limit)
        let frame = [UInt8](repeating: 0xAB, count: 1000)
        for _ in 0..<100 { frame.withUnsafeBytes { writer.record($0) } }
        writer.close()
        XCTAssertGreaterThanOrEqual(writer.rotations, 5, "100 KB of frames through a 16 KiB limit")
        for p in [path, path + ".1"] {
            XCTAssertLessThanOrEqual(size(p), limit, p)
            assertPcapFile(p)
        }
        // The full file holds whole records only: header + n * (16 + 1000).
        XCTAssertEqual((size(path + ".1") - 24) % 1016, 0)
    }

    func testWithoutALimitOneFileHoldsEverything() throws {
        let path = temporaryPath()
        let writer = try PcapWriter(path: path)
        let frame = [UInt8](repeating: 0x01, count: 1000)
        for _ in 0..<100 { frame.withUnsafeBytes { writer.record($0) } }
        writer.close()
        XCTAssertEqual(size(path), 24 + 100 * 1016)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".1"))
    }

    func testALimitTooSmallForOneJumboFrameIsRefused() {
        XCTAssertThrowsError(try PcapWriter(path: temporaryPath(), limitBytes: 4096)) {
            XCTAssertTrue("\($0)".contains("too small"), "\($0)")
        }
    }
}
