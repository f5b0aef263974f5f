import XCTest
import LinuxSystem

final class LineBudgetTests: XCTestCase {
    func testTenLinesAWindowThenCountedAndReportedOnceTheWindowEnds() {
        var budget = LineBudget(perSecond: 10)
        let allowed = (0..<25).map { i in budget.take(now: 100 + Double(i) * 0.01) }
        XCTAssertEqual(allowed.filter(\.allowed).count, 10)
        XCTAssertEqual(allowed.prefix(10).map(\.allowed), Array(repeating: true, count: 10), "the first ten of the window")
        XCTAssertTrue(allowed.allSatisfy { $0.leftOutBefore == 0 }, "no window ended yet")
        XCTAssertEqual(budget.takeLeftOut(now: 100.5), 0, "the window still runs")
        // The next line after the window: allowed, with the 15 left out to report first.
        let next = budget.take(now: 101.2)
        XCTAssertTrue(next.allowed)
        XCTAssertEqual(next.leftOutBefore, 15)
        XCTAssertEqual(budget.take(now: 101.3).leftOutBefore, 0, "reported once")
    }

    func testAPeriodicCallerReportsWhatAFloodLeftOutAfterItStops() {
        var budget = LineBudget(perSecond: 2)
        for i in 0..<5 { _ = budget.take(now: 10 + Double(i) * 0.1) }
        XCTAssertEqual(budget.takeLeftOut(now: 10.9), 0)
        XCTAssertEqual(budget.takeLeftOut(now: 11.0), 3)
        XCTAssertEqual(budget.takeLeftOut(now: 12), 0, "forgotten once taken")
        XCTAssertEqual(budget.take(now: 12.1).leftOutBefore, 0)
    }
}
