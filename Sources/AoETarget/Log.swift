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

    private let sink: @Sendable (String) -> Void
    public let minimum: Level
    /// Put before every message, e.g. "e1.1@eth1: ", so a process serving many exports says which one.
    private let label: String
    private let lock = ConditionLock()
    private var windowStart = 0.0
    private var linesInWindow = 0
    private var suppressed = 0
    /// Per-frame lines allowed each second.
    public let frameLinesPerSecond: Int

    public init(minimum: Level = .info, frameLinesPerSecond: Int = 10, label: String = "", sink: @escaping @Sendable (String) -> Void) {
        self.minimum = minimum
        self.label = label
        self.sink = sink
        self.frameLinesPerSecond = frameLinesPerSecond
    }

    /// The same destination and level with `label` before each message; its own rate limit for frame lines.
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

    /// A line about one frame: rate-limited, with a count of what was left out.
    public func frame(_ level: Level, _ message: @autoclosure () -> String) {
        guard level >= minimum else { return }
        let now = monotonicSeconds()
        let (allowed, dropped): (Bool, Int) = lock.withLock {
            if now - windowStart >= 1 {
                let d = suppressed
                windowStart = now
                linesInWindow = 0
                suppressed = 0
                linesInWindow += 1
                return (true, d)
            }
            if linesInWindow < frameLinesPerSecond {
                linesInWindow += 1
                return (true, 0)
            }
            suppressed += 1
            return (false, 0)
        }
        if dropped > 0 { log(level, "\(dropped) similar messages suppressed") }
        if allowed { log(level, message()) }
    }
}
