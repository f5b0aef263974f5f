import AoETarget
import AoEWire
import LinuxSystem
import Prometheus

/// One export as the exporter reads it: its address and the counters its event loop writes.
public struct MetricsSource: Sendable {
    public var address: ShelfSlot
    public var bufferCount: Int
    public var statistics: TargetStatistics
    public var metrics: ExportMetrics

    public init(address: ShelfSlot, bufferCount: Int, statistics: TargetStatistics, metrics: ExportMetrics) {
        self.address = address
        self.bufferCount = bufferCount
        self.statistics = statistics
        self.metrics = metrics
    }
}

/// The Prometheus text exposition of every export. Each scrape reads the exports' relaxed atomics into a
/// fresh swift-prometheus registry (counters and gauges) and renders it; nothing on the frame path changes
/// for a scrape. Histograms are rendered here from the exports' own lock-free buckets, in the same format:
/// swift-prometheus's `Histogram` takes a lock per observation, which the frame path must not.
public final class MetricsExporter: Sendable {
    private let sources: @Sendable () -> [MetricsSource]
    private let startTime: Double
    private let version: String

    /// - Parameter sources: the exports served now (called on each scrape, from the listener's thread).
    public init(version: String, sources: @escaping @Sendable () -> [MetricsSource]) {
        self.sources = sources
        self.version = version
        startTime = wallClockSeconds()
    }

    /// Why each frame was dropped, by the `cause` label.
    static let dropCauses: [(TargetStatistics.Counter, String)] = [
        (.droppedTruncated, "truncated"), (.droppedNotForUs, "not_for_us"), (.droppedResponse, "response_flag"),
        (.droppedOtherAddress, "other_shelf_slot"), (.droppedMasked, "mac_mask"), (.droppedOverrun, "buffer_count_exceeded"),
        (.droppedConfigNoMatch, "config_string_no_match"), (.droppedBadSource, "group_source"),
        (.droppedOrderingBacklog, "ordering_backlog"), (.droppedNotActive, "not_active"),
    ]

    /// Plain per-export counters: (statistic, metric name without prefix and suffix, help).
    static let plainCounters: [(TargetStatistics.Counter, String, String)] = [
        (.framesReceived, "frames_received", "AoE frames received for this export (after the kernel filter)."),
        (.framesSent, "frames_sent", "AoE frames sent by this export."),
        (.deviceErrors, "device_errors", "Device requests that failed (answered with ATA ABRT)."),
        (.mergedRequests, "merged_requests", "Requests that went to the device merged with adjacent ones."),
        (.retransmitsAbsorbed, "retransmits_absorbed", "Retransmissions of a request still in flight, answered by its one reply instead of repeating the device work."),
        (.cachedReads, "page_cache_reads", "Reads answered from the page cache without queuing."),
        (.trims, "trims", "DATA SET MANAGEMENT TRIM commands that discarded sectors."),
        (.sectorsTrimmed, "sectors_trimmed", "Sectors discarded by TRIM."),
        (.sendErrors, "send_errors", "Replies the kernel refused to send."),
        (.receiveErrors, "receive_errors", "Failed receive calls."),
        (.stateSaveErrors, "state_save_errors", "Protocol state changes that could not be saved (not applied)."),
        (.ringSubmitRetries, "io_uring_submit_retries", "io_uring submissions refused for a moment and retried."),
        (.mtuChanges, "mtu_changes", "MTU changes noticed on the export's interfaces."),
        (.receiveStalledNoSlots, "receive_stalls", "Receive passes that found no free frame slot (expected to stay 0)."),
    ]

    public func render() -> String {
        let registry = PrometheusCollectorRegistry()
        let exports = sources()
        func labels(_ s: MetricsSource, _ extra: [(String, String)] = []) -> [(String, String)] {
            [("shelf", "\(s.address.shelf)"), ("slot", "\(s.address.slot)")] + extra
        }
        func counter(_ name: String, _ help: String, _ labelSet: [(String, String)], _ value: Int) {
            let descriptor = MetricNameDescriptor(namespace: "aoe_target", metricName: name, unitName: "total", helpText: help)
            registry.makeCounter(descriptor: descriptor, labels: labelSet).increment(by: Int64(max(0, value)))
        }
        func gauge(_ name: String, unit: String = "", _ help: String, _ labelSet: [(String, String)], _ value: Double) {
            let descriptor = MetricNameDescriptor(namespace: "aoe_target", metricName: name, unitName: unit, helpText: help)
            registry.makeGauge(descriptor: descriptor, labels: labelSet).set(value)
        }
        gauge("start_time", unit: "seconds", "When the process started, in seconds since the epoch.", [], startTime)
        gauge("build_info", "The running build.", [("version", version)], 1)
        gauge("exports", "Exports configured and served.", [], Double(exports.count))
        counter("fdatasync_calls", "fdatasync calls completed, process-wide.", [], Syscall.fdatasyncCalls.load(ordering: .relaxed))
        for s in exports {
            let st = s.statistics, m = s.metrics
            for (stat, name, help) in Self.plainCounters { counter(name, help, labels(s), st[stat]) }
            for (stat, cause) in Self.dropCauses {
                counter("frames_dropped", "Frames dropped unanswered, by cause.", labels(s, [("cause", cause)]), st[stat])
            }
            for (code, n) in m.aoeErrorsByCode {
                counter("aoe_errors", "AoE error replies, by error code (AoEr11 section 2.4).", labels(s, [("code", "\(code)")]), n)
            }
            counter("ata_errors", "ATA error replies, by kind.", labels(s, [("kind", "abrt")]), st[.ataAborted])
            counter("ata_errors", "ATA error replies, by kind.", labels(s, [("kind", "idnf")]), st[.ataOutOfRange])
            for op in ExportMetrics.Operation.allCases {
                counter("ios", "ATA commands answered, one per AoE request, by operation.", labels(s, [("op", op.name)]),
                        m.latency(op).snapshot().count)
                counter("bytes", "Data moved by answered commands, by operation.", labels(s, [("op", op.name)]), m.bytes(op))
            }
            for (opcode, n) in m.passThroughByOpcode(refused: false) {
                counter("passthrough_commands", "ATA commands sent to the drive (pass-through), by opcode.", labels(s, [("opcode", hex(opcode))]), n)
            }
            for (opcode, n) in m.passThroughByOpcode(refused: true) {
                counter("passthrough_refused", "Pass-through commands refused by the allowlist, by opcode.", labels(s, [("opcode", hex(opcode))]), n)
            }
            counter("retransmits_seen", "Requests seen again from the same source for the same sectors within a second.", labels(s),
                    m.retransmitsSeen.load(ordering: .relaxed))
            gauge("requests_in_flight", "Requests received and not yet answered.", labels(s), Double(m.requestsInFlight.load(ordering: .relaxed)))
            gauge("buffers", "The Buffer Count the export advertises (Query Config).", labels(s), Double(s.bufferCount))
            for (i, interface) in m.interfaces.enumerated() {
                counter("interface_frames_received", "For an export on several NICs: AoE frames received, by NIC.", labels(s, [("interface", interface)]),
                        m.framesReceivedByInterface[i].load(ordering: .relaxed))
                counter("interface_frames_sent", "For an export on several NICs: AoE frames sent, by NIC.", labels(s, [("interface", interface)]),
                        m.framesSentByInterface[i].load(ordering: .relaxed))
            }
        }
        var text = registry.emitToString()
        renderHistogram(into: &text, name: "aoe_target_request_duration_seconds",
                        help: "From frame received to reply handed to the kernel, by operation.",
                        series: exports.flatMap { s in
                            ExportMetrics.Operation.allCases.map { op in
                                (labels(s, [("op", op.name)]), s.metrics.latency(op).snapshot())
                            }
                        })
        renderHistogram(into: &text, name: "aoe_target_device_flush_duration_seconds",
                        help: "Device flushes (fdatasync or the drive's flush), from submitted to completed.",
                        series: exports.map { (labels($0), $0.metrics.flushLatency.snapshot()) })
        return text
    }

    private func hex(_ byte: UInt8) -> String {
        let digits = String(byte, radix: 16, uppercase: false)
        return "0x" + (digits.count == 1 ? "0" : "") + digits
    }

    /// One histogram family in the text exposition format (version 0.0.4): cumulative buckets, +Inf, sum, count.
    func renderHistogram(into text: inout String, name: String, help: String,
                         series: [([(String, String)], LatencyHistogram.Snapshot)]) {
        guard !series.isEmpty else { return }
        text += "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        for (labels, snapshot) in series {
            let base = labels.map { "\($0.0)=\"\($0.1)\"" }.joined(separator: ",")
            for (i, bound) in LatencyHistogram.bounds.enumerated() {
                text += "\(name)_bucket{\(base),le=\"\(formatSeconds(bound))\"} \(snapshot.cumulative[i])\n"
            }
            text += "\(name)_bucket{\(base),le=\"+Inf\"} \(snapshot.count)\n"
            text += "\(name)_sum{\(base)} \(snapshot.sumSeconds)\n"
            text += "\(name)_count{\(base)} \(snapshot.count)\n"
        }
    }

    /// A bound in nanoseconds as seconds, exactly ("0.00001", "2.5"...).
    func formatSeconds(_ nanoseconds: UInt64) -> String {
        let whole = nanoseconds / 1_000_000_000, fraction = nanoseconds % 1_000_000_000
        if fraction == 0 { return "\(whole)" }
        var digits = String(fraction)
        digits = String(repeating: "0", count: 9 - digits.count) + digits
        while digits.hasSuffix("0") { digits.removeLast() }
        return "\(whole).\(digits)"
    }
}
