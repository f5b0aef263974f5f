import Histogram

/// A latency histogram as a few lines of text for a terminal: one row per power-of-two band of microseconds,
/// from the fastest band observed to the slowest, each with its share of the I/Os as a bar. Pure.
public enum LatencyChart {
    /// - Parameter width: characters of the longest bar.
    public static func rows(_ histogram: Histogram<UInt64>, width: Int = 40) -> [String] {
        let total = histogram.totalCount
        guard total > 0 else { return [] }
        // Bands [2^k, 2^(k+1)) µs; the first holds everything below 2 µs.
        func band(_ ns: UInt64) -> Int { max(0, (UInt64.bitWidth - 1) - (max(ns / 1000, 1)).leadingZeroBitCount) }
        let first = band(histogram.min), last = band(histogram.max)
        var counts: [UInt64] = []
        for k in first...last {
            let low: UInt64 = k == 0 ? 0 : (UInt64(1) << k) * 1000
            let high: UInt64 = (UInt64(1) << (k + 1)) * 1000 - 1
            counts.append(histogram.count(within: low...high))
        }
        let peak = counts.max() ?? 1
        return counts.enumerated().map { i, count in
            let k = first + i
            let label = "\(format(k == 0 ? 0 : 1 << k))-\(format(1 << (k + 1)))"
            let bar = String(repeating: "#", count: count == 0 ? 0 : max(1, Int((Double(count) / Double(peak) * Double(width)).rounded())))
            let tenths = Int((Double(count) / Double(total) * 1000).rounded())
            return pad(label, 15) + " " + pad("\(tenths / 10).\(tenths % 10)%", 6) + " " + bar
        }
    }

    /// Microseconds as "512us", "1.0ms", "4.1s" (one decimal, truncated).
    static func format(_ us: Int) -> String {
        if us < 1000 { return "\(us)us" }
        if us < 1_000_000 { return "\(us / 1000).\(us / 100 % 10)ms" }
        return "\(us / 1_000_000).\(us / 100_000 % 10)s"
    }

    private static func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
}
