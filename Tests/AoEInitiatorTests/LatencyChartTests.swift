import XCTest
import Histogram
@testable import AoEInitiator

final class LatencyChartTests: XCTestCase {
    func testOneRowPerPowerOfTwoBandWithSharesAndBars() {
        var h = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        for _ in 0..<300 { h.record(100_000) }    // 100 µs: band 64-128us
        for _ in 0..<100 { h.record(150_000) }    // 150 µs: band 128-256us
        h.record(1_500_000)                       // 1.5 ms: band 1.0ms-2.0ms
        let rows = LatencyChart.rows(h, width: 30)
        XCTAssertEqual(rows.count, 5, "64us up to 2ms, empty bands between included: \(rows)")
        XCTAssertEqual(rows[0], "     64us-128us  74.8% " + String(repeating: "#", count: 30))
        XCTAssertEqual(rows[1], "    128us-256us  24.9% " + String(repeating: "#", count: 10))
        XCTAssertEqual(rows[2], "    256us-512us   0.0% ")
        XCTAssertEqual(rows[4], "    1.0ms-2.0ms   0.2% #", "a single I/O still shows")
        XCTAssertNotEqual(rows[0], rows[1], "negative control: different counts draw different bars")
    }

    func testEmptyHistogramHasNoRows() {
        XCTAssertEqual(LatencyChart.rows(Histogram<UInt64>(highestTrackableValue: 1_000_000, numberOfSignificantValueDigits: .two)), [])
    }
}
