import Glibc
import LinuxSystem

/// Where the target's log lines go (stderr in the executable, a buffer in tests), with a limit on lines
/// about individual frames so a flood of bad frames cannot flood the log.
public final class TargetLog: @unchecked Sendable {
    public enum Level: Int, Comparable, Sendable {
        case debug, info, warning, error
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        var label: String { ["debug", "info", "warning", "error"][rawValue] }
    }

    /// What a per-frame line is about. Each kind has its own rate limit, so a flood of one (say, refused
    /// pass-through warnings) never hides another (a device error).
    public enum FrameEvent: Int, CaseIterable, Sendable {
        case aoeError, maskEdit, reserveSet, writeCache, passThroughRefused, deviceError, stateSaveError
        case sendError, receiveError, submitRetry

        public var name: String {
            ["AoE error replies", "mask list edits", "reserve list changes", "write cache changes", "refused pass-through commands",
             "device errors", "state save errors", "send errors", "receive errors", "io_uring submit retries"][rawValue]
        }
    }

    private let sink: @Sendable (String) -> Void
    public let minimum: Level
    /// Put before every message, e.g. "e1.1@eth1: ", so a process serving many exports says which one.
    private let label: String
    private let lock = ConditionLock()
    /// Per kind: when its window started, lines in it, lines left out, and the level of the last one left out.
    private var windowStart: [Double]
    private var linesInWindow: [Int]
    private var suppressed: [Int]
    private var suppressedLevel: [Level]
    /// Per-frame lines allowed each second, per kind.
    public let frameLinesPerSecond: Int

    public init(minimum: Level = .info, frameLinesPerSecond: Int = 10, label: String = "", sink: @escaping @Sendable (String) -> Void) {
        self.minimum = minimum
        self.label = label
        self.sink = sink
        self.frameLinesPerSecond = frameLinesPerSecond
        let kinds = FrameEvent.allCases.count
        windowStart = Array(repeating: -1e9, count: kinds)
        linesInWindow = Array(repeating: 0, count: kinds)
        suppressed = Array(repeating: 0, count: kinds)
        suppressedLevel = Array(repeating: .debug, count: kinds)
    }

    /// The same destination and level with `label` before each message; its own rate limits for frame lines.
    public func labelled(_ label: String) -> TargetLog {
        TargetLog(minimum: minimum, frameLinesPerSecond: frameLinesPerSecond, label: self.label + label + ": ", sink: sink)
    }

    public static func standardError(minimum: Level = .info) -> TargetLog {
        TargetLog(minimum: minimum) { line in
            var text = line + "\n"
            text.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
        }
    }

    public func log(_ level: Level, _ message: @autoclosure () -> String) {
        guard level >= minimum else { return }
        sink("aoe-target: \(level.label): \(label)\(message())")
    }

    /// A line about one frame: at most `frameLinesPerSecond` of each kind a second. What is left out is
    /// counted and reported when its window ends: by the next line of that kind, or by `reportSuppressed`,
    /// which the event loop calls every second, so a count is never lost when the flood stops.
    public func frame(_ kind: FrameEvent, _ level: Level, _ message: @autoclosure () -> String) {
        guard level >= minimum else { return }
        let now = monotonicSeconds()
        let k = kind.rawValue
        let (allowed, report): (Bool, (Int, Level)?) = lock.withLock {
            var report: (Int, Level)? = nil
            if now - windowStart[k] >= 1 {
                if suppressed[k] > 0 { report = (suppressed[k], suppressedLevel[k]) }
                windowStart[k] = now
                linesInWindow[k] = 0
                suppressed[k] = 0
            }
            if linesInWindow[k] < frameLinesPerSecond {
                linesInWindow[k] += 1
                return (true, report)
            }
            suppressed[k] += 1
            suppressedLevel[k] = max(suppressedLevel[k], level)
            return (false, report)
        }
        if let (count, worst) = report { log(worst, "\(count) more \(kind.name) in the last second, not logged") }
        if allowed { log(level, message()) }
    }

    /// Reports the counts of every kind whose window has ended with lines left out.
    public func reportSuppressed() {
        let now = monotonicSeconds()
        let due: [(FrameEvent, Int, Level)] = lock.withLock {
            var due: [(FrameEvent, Int, Level)] = []
            for kind in FrameEvent.allCases where suppressed[kind.rawValue] > 0 && now - windowStart[kind.rawValue] >= 1 {
                due.append((kind, suppressed[kind.rawValue], suppressedLevel[kind.rawValue]))
                suppressed[kind.rawValue] = 0
                suppressedLevel[kind.rawValue] = .debug
            }
            return due
        }
        for (kind, count, level) in due { log(level, "\(count) more \(kind.name) in the last second, not logged") }
    }
}
