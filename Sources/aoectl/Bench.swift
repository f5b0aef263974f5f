import ArgumentParser
import Foundation
import Glibc
import AoEWire
import AoEInitiator
import Histogram

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load generator: random or sequential I/O with latency histograms and optional data verification.",
        discussion: """
        QD counts I/Os, not frames: a 4k I/O at MTU 1500 is 4 frames. --verify writes a pattern that encodes \
        each sector's LBA, a generation and a checksum, checks every read against the last write, and at the \
        end reads back every block written; the first bad LBA is named. --verify-existing checks that the \
        region holds this seed's pattern for the right LBAs (any generation), without writing.
        """)
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "SHELF.SLOT") var target: ShelfSlot
    @Option(help: "randread, randwrite, read, write or randrw.") var rw: String = "randread"
    @Option(help: "Percentage of reads in randrw.") var mix: Int = 50
    @Option(help: "Block size: a multiple of 512, suffix k/m allowed.") var bs: String = "4k"
    @Option(help: "I/Os in flight.") var qd: Int = 1
    @Option(help: "Seconds to run the measured phase (default 10 unless --count).") var duration: Double?
    @Option(help: "Number of I/Os in the measured phase.") var count: Int?
    @Option(help: "START:LEN in sectors (default: the whole target; with --verify at most 256 MiB from 0).") var region: String?
    @Option(help: "Seconds of unmeasured warm-up.") var warmup: Double = 0
    @Flag(help: "Write a checkable pattern and verify every read.") var verify = false
    @Flag(help: "Verify that the region holds this seed's pattern, without writing.") var verifyExisting = false
    @Option(help: "Seed for the random offsets and the pattern.") var seed: UInt64 = 1

    func run() throws {
        try reporting {
            guard let mode = BenchOptions.Mode(rawValue: rw) else { throw CLIError("--rw must be one of randread, randwrite, read, write, randrw") }
            guard let bytes = parseByteSize(bs), bytes > 0, bytes % 512 == 0 else { throw CLIError("--bs must be a multiple of 512 (e.g. 4k)") }
            guard bytes <= 64 << 20 else { throw CLIError("--bs \(bs) is larger than the 64 MiB an I/O may be") }
            guard qd >= 1 && qd <= 4096 else { throw CLIError("--qd must be 1-4096") }
            guard (0...100).contains(mix) else { throw CLIError("--mix must be 0-100") }
            let (client, info) = try connection.connect(target)
            let sectors = try client.identify(info).sectors
            var options = BenchOptions()
            options.mode = mode
            options.readPercent = mix
            options.blockSectors = bytes / 512
            options.count = count
            options.duration = count == nil ? (duration ?? 10) : duration
            options.warmup = warmup
            options.verify = verify
            options.verifyExisting = verifyExisting
            options.seed = seed
            if let region {
                let parts = region.split(separator: ":")
                guard parts.count == 2, let start = Number<UInt64>(argument: String(parts[0]))?.value,
                      let length = Number<UInt64>(argument: String(parts[1]))?.value else { throw CLIError("--region takes START:LEN in sectors") }
                options.regionStart = start
                options.regionSectors = length
            } else {
                options.regionSectors = verify ? min(sectors, 524_288) : sectors
            }
            guard options.regionStart + options.regionSectors <= sectors else {
                throw CLIError("region \(options.regionStart):\(options.regionSectors) goes past the target's \(sectors) sectors")
            }
            guard options.regionSectors >= UInt64(options.blockSectors) else { throw CLIError("region is smaller than one block") }

            let workload = BenchWorkload(options: options, queueDepth: qd)
            let engine = BlockIOEngine(link: client.link, target: info, queueDepth: qd)
            // On a terminal: one line a second that overwrites itself; the figures so far in the measured phase.
            let live = isatty(2) != 0
            if live {
                workload.onProgress = { [unowned engine] r in
                    let line = String(format: "\r%4.0f s  %8.0f IOPS  %8.1f MB/s  p50 %6.0f us  p99 %6.0f us  retransmits %ld  errors %ld ",
                                      r.seconds, r.iops, r.megabytesPerSecond, Double(r.latency.valueAtPercentile(50)) / 1000,
                                      Double(r.latency.valueAtPercentile(99)) / 1000, engine.retransmits, r.errors)
                    FileHandle.standardError.write(Data(line.utf8))
                }
            }
            try engine.run(workload)
            if live { FileHandle.standardError.write(Data("\n".utf8)) }
            let r = workload.report
            let h = r.latency
            func us(_ v: UInt64) -> Double { Double(v) / 1000 }
            let latency: [String: Any] = [
                "min": us(r.ios > 0 ? h.min : 0), "mean": h.mean / 1000, "p50": us(h.valueAtPercentile(50)), "p90": us(h.valueAtPercentile(90)),
                "p99": us(h.valueAtPercentile(99)), "p99_9": us(h.valueAtPercentile(99.9)), "max": us(h.max),
            ]
            if connection.json {
                var object: [String: Any] = [
                    "target": "\(info.address)", "rw": rw, "bs": bytes, "qd": qd, "seconds": r.seconds, "ios": r.ios,
                    "iops": r.iops, "mbps": r.megabytesPerSecond, "latency_us": latency, "retransmits": engine.retransmits,
                    "rto_ms": engine.retransmitTimeout * 1000, "srtt_ms": engine.smoothedRTT * 1000,
                    "late_responses": engine.lateResponses, "errors": r.errors, "verify_mismatches": r.verifyMismatches,
                    "verified_blocks": r.verifiedBlocks, "failovers": engine.failovers, "target_mac": "\(engine.target.mac)",
                ]
                if let e = r.firstError { object["first_error"] = e }
                if let m = r.firstMismatch { object["first_mismatch"] = m }
                printJSON(object)
            } else {
                print("e\(info.address) \(rw) bs=\(bytes) qd=\(qd): \(r.ios) I/Os in \(String(format: "%.2f", r.seconds)) s")
                print(String(format: "iops: %.0f", r.iops))
                print(String(format: "throughput: %.2f MB/s", r.megabytesPerSecond))
                print(String(format: "latency us: min %.1f mean %.1f p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f",
                             latency["min"] as! Double, latency["mean"] as! Double, latency["p50"] as! Double, latency["p90"] as! Double,
                             latency["p99"] as! Double, latency["p99_9"] as! Double, latency["max"] as! Double))
                print("retransmits: \(engine.retransmits) (late replies ignored: \(engine.lateResponses))")
                if engine.failovers > 0 { print("failovers: \(engine.failovers) (the export now answers from \(engine.target.mac))") }
                print("errors: \(r.errors)" + (r.firstError.map { " (first: \($0))" } ?? ""))
                if verify || verifyExisting {
                    print("verified blocks: \(r.verifiedBlocks), mismatches: \(r.verifyMismatches)" + (r.firstMismatch.map { " (first: \($0))" } ?? ""))
                }
                if isatty(1) != 0 && r.ios > 0 {
                    print("latency histogram:")
                    for row in LatencyChart.rows(h) { print("  " + row) }
                }
            }
            if r.errors > 0 || r.verifyMismatches > 0 { throw ExitCode(2) }
        }
    }
}
