import XCTest
import Glibc
@testable import PacketTransport

final class FramePoolTests: XCTestCase {
    /// Resident memory of this process, bytes (second field of /proc/self/statm, in pages).
    func residentBytes() throws -> Int {
        let text = try String(contentsOfFile: "/proc/self/statm", encoding: .utf8)
        return Int(text.split(separator: " ")[1])! * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    func testALargePoolTakesMemoryOnlyForTheSlotsUsed() throws {
        let before = try residentBytes()
        // What -b 65535 asks for, halved to keep the test light: 64 Ki slots of a jumbo frame, about 800 MiB.
        let pool = FramePool(slots: 65536, frameCapacity: 9018)
        let untouched = try residentBytes() - before
        XCTAssertLessThan(untouched, 16 << 20, "an untouched pool of \(65536 * 12) KiB is resident already: \(untouched) bytes")
        // Slots that are used become resident, and read as zero before their first write.
        for i in 0..<256 {
            let frame = pool.frame(i)
            XCTAssertEqual(frame.base.load(fromByteOffset: 100, as: UInt8.self), 0)
            frame.base.storeBytes(of: 0xAB, toByteOffset: 100, as: UInt8.self)
        }
        XCTAssertEqual(pool.frame(255).base.load(fromByteOffset: 100, as: UInt8.self), 0xAB)
    }
}
