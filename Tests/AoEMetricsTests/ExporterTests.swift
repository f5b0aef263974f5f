import XCTest
@testable import AoEMetrics
import AoETarget
import AoEWire
import Synchronization

final class ExporterTests: XCTestCase {
    func testHistogramBucketsAreInclusiveUpperBoundsAndCumulative() {
        let h = LatencyHistogram()
        h.record(nanoseconds: 10_000)        // exactly 10 µs: in le="0.00001"
        h.record(nanoseconds: 10_001)        // just above: the 20 µs bucket
        h.record(nanoseconds: 3_000_000)     // 3 ms: the 5 ms bucket
        h.record(nanoseconds: 60_000_000_000) // a minute: only +Inf
        let s = h.snapshot()
        XCTAssertEqual(s.count, 4)
        XCTAssertEqual(s.cumulative[0], 1)
        XCTAssertEqual(s.cumulative[1], 2)
        XCTAssertEqual(s.cumulative[LatencyHistogram.bounds.firstIndex(of: 2_000_000)!], 2)
        XCTAssertEqual(s.cumulative[LatencyHistogram.bounds.firstIndex(of: 5_000_000)!], 3)
        XCTAssertEqual(s.cumulative.last, 3, "a minute is past the 10 s bound")
        XCTAssertEqual(s.sumSeconds, 60.003020001, accuracy: 1e-9)
    }

    /// The bucket search by constants agrees with the table of bounds at, just above and just below each bound.
    func testBucketOfAgreesWithTheBounds() {
        func byTable(_ ns: UInt64) -> Int { LatencyHistogram.bounds.firstIndex { ns <= $0 } ?? LatencyHistogram.bounds.count }
        var values: [UInt64] = [0, 1, .max]
        for b in LatencyHistogram.bounds { values += [b - 1, b, b + 1] }
        for ns in values { XCTAssertEqual(LatencyHistogram.bucket(of: ns), byTable(ns), "\(ns) ns") }
        XCTAssertEqual(LatencyHistogram.bucket(of: 10_000_000_001), LatencyHistogram.bounds.count, "past the last bound: +Inf")
    }

    func testAnsweredRequestsLandInTheirOperationsHistogramOnly() {
        let m = ExportMetrics()
        m.answered(.write, bytes: 4096, nanoseconds: 30_000)
        m.answered(.write, bytes: 4096, nanoseconds: 30_000)
        m.answered(.flush, bytes: 0, nanoseconds: 7_000_000)
        XCTAssertEqual(m.latency(.write).snapshot().count, 2)
        XCTAssertEqual(m.latency(.write).snapshot().cumulative[2], 2, "30 µs: the 50 µs bucket")
        XCTAssertEqual(m.latency(.write).snapshot().cumulative[1], 0)
        XCTAssertEqual(m.latency(.flush).snapshot().count, 1)
        XCTAssertEqual(m.latency(.flush).snapshot().sumSeconds, 0.007, accuracy: 1e-12)
        XCTAssertEqual(m.latency(.read).snapshot().count, 0)
        XCTAssertEqual(m.latency(.other).snapshot().count, 0)
    }

    func testRenderedTextNamesEveryExportAndAgreesWithTheCounters() {
        let statistics = TargetStatistics(), metrics = ExportMetrics()
        statistics.add(.framesReceived, 7)
        statistics.add(.droppedTruncated, 2)
        metrics.answered(.read, bytes: 4096, nanoseconds: 150_000)
        metrics.answered(.read, bytes: 4096, nanoseconds: 250_000)
        metrics.answered(.write, bytes: 512, nanoseconds: 1_500_000)
        metrics.aoeError(.unrecognizedCommand)
        metrics.passThrough(opcode: 0xB0, refused: false)
        metrics.passThrough(opcode: 0x92, refused: true)
        let source = MetricsSource(address: ShelfSlot(shelf: 3, slot: 4), bufferCount: 64, statistics: statistics, metrics: metrics)
        let text = MetricsExporter(version: "test") { [source] }.render()
        let lines = Set(text.split(separator: "\n").map(String.init))
        let l = #"shelf="3",slot="4""#
        for expected in [
            "aoe_target_exports 1.0",
            "aoe_target_frames_received_total{\(l)} 7",
            "aoe_target_frames_dropped_total{\(l),cause=\"truncated\"} 2",
            "aoe_target_frames_dropped_total{\(l),cause=\"mac_mask\"} 0",
            "aoe_target_ios_total{\(l),op=\"read\"} 2",
            "aoe_target_ios_total{\(l),op=\"write\"} 1",
            "aoe_target_ios_total{\(l),op=\"flush\"} 0",
            "aoe_target_bytes_total{\(l),op=\"read\"} 8192",
            "aoe_target_aoe_errors_total{\(l),code=\"\(AoEError.unrecognizedCommand.rawValue)\"} 1",
            "aoe_target_passthrough_commands_total{\(l),opcode=\"0xb0\"} 1",
            "aoe_target_passthrough_refused_total{\(l),opcode=\"0x92\"} 1",
            "aoe_target_buffers{\(l)} 64.0",
            "# TYPE aoe_target_request_duration_seconds histogram",
            "aoe_target_request_duration_seconds_bucket{\(l),op=\"read\",le=\"0.0001\"} 0",
            "aoe_target_request_duration_seconds_bucket{\(l),op=\"read\",le=\"0.0002\"} 1",
            "aoe_target_request_duration_seconds_bucket{\(l),op=\"read\",le=\"0.0005\"} 2",
            "aoe_target_request_duration_seconds_bucket{\(l),op=\"read\",le=\"+Inf\"} 2",
            "aoe_target_request_duration_seconds_count{\(l),op=\"read\"} 2",
            "aoe_target_request_duration_seconds_sum{\(l),op=\"read\"} 0.0004",
            "aoe_target_request_duration_seconds_bucket{\(l),op=\"write\",le=\"0.002\"} 1",
        ] {
            XCTAssertTrue(lines.contains(expected), "missing: \(expected)\n\(text)")
        }
        // Negative control: a line with a wrong value is not in the text.
        XCTAssertFalse(lines.contains("aoe_target_ios_total{\(l),op=\"read\"} 3"))
        // Each family is declared once, however many series it has.
        XCTAssertEqual(text.components(separatedBy: "# TYPE aoe_target_frames_dropped_total counter").count, 2)
    }

    func testBoundsAreWrittenExactly() {
        let e = MetricsExporter(version: "x") { [] }
        XCTAssertEqual(LatencyHistogram.bounds.map(e.formatSeconds),
                       ["0.00001", "0.00002", "0.00005", "0.0001", "0.0002", "0.0005", "0.001", "0.002", "0.005",
                        "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1", "2", "5", "10"])
    }

    func testRetransmitDetectorSeesTheSameRequestAgainWithinTheWindowOnly() {
        let d = RetransmitDetector(windowSeconds: 1)
        let a = MACAddress("02:00:00:00:00:01")!, b = MACAddress("02:00:00:00:00:02")!
        XCTAssertFalse(d.seen(RequestKey(source: a, lba: 100, sectors: 8, write: false), now: 1_000))
        XCTAssertTrue(d.seen(RequestKey(source: a, lba: 100, sectors: 8, write: false), now: 500_000_000), "again within a second")
        XCTAssertFalse(d.seen(RequestKey(source: b, lba: 100, sectors: 8, write: false), now: 600_000_000), "another host")
        XCTAssertFalse(d.seen(RequestKey(source: a, lba: 100, sectors: 8, write: true), now: 700_000_000), "a write is another request")
        XCTAssertFalse(d.seen(RequestKey(source: a, lba: 101, sectors: 8, write: false), now: 800_000_000), "another LBA")
        XCTAssertFalse(d.seen(RequestKey(source: a, lba: 101, sectors: 8, write: false), now: 2_900_000_000), "after the window")
    }
}

extension ExporterTests {
    func testAnExportOnSeveralNICsCountsFramesPerInterfaceAndOneNICDoesNot() {
        let statistics = TargetStatistics(), metrics = ExportMetrics(interfaces: ["eth1", "eth2"])
        metrics.framesReceivedByInterface[0].store(5, ordering: .relaxed)
        metrics.framesReceivedByInterface[1].store(3, ordering: .relaxed)
        metrics.framesSentByInterface[1].store(2, ordering: .relaxed)
        let multi = MetricsSource(address: ShelfSlot(shelf: 1, slot: 1), bufferCount: 64, statistics: statistics, metrics: metrics)
        let single = MetricsSource(address: ShelfSlot(shelf: 1, slot: 2), bufferCount: 64, statistics: TargetStatistics(), metrics: ExportMetrics())
        let text = MetricsExporter(version: "test") { [multi, single] }.render()
        let lines = Set(text.split(separator: "\n").map(String.init))
        for expected in [
            #"aoe_target_interface_frames_received_total{shelf="1",slot="1",interface="eth1"} 5"#,
            #"aoe_target_interface_frames_received_total{shelf="1",slot="1",interface="eth2"} 3"#,
            #"aoe_target_interface_frames_sent_total{shelf="1",slot="1",interface="eth1"} 0"#,
            #"aoe_target_interface_frames_sent_total{shelf="1",slot="1",interface="eth2"} 2"#,
        ] {
            XCTAssertTrue(lines.contains(expected), "missing: \(expected)\n\(text)")
        }
        XCTAssertFalse(text.contains(#"interface_frames_received_total{shelf="1",slot="2""#), "a one-NIC export has no interface series")
    }
}
