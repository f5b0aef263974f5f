import Glibc
import LinuxSystem
import Logging
import AoEWire

/// Where the target's log lines go (stderr in the executable, a buffer in tests), through swift-log: each line
/// is one event, with its context as metadata (`export`, and `peer`, `tag` for lines about a frame) instead of
/// spliced into the text. Lines about individual frames are rate-limited per kind, so a flood of bad frames
/// cannot flood the log.
public final class TargetLog: @unchecked Sendable {
    public enum Level: Int, Comparable, Sendable {
        case debug, info, warning, error
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        var label: String { ["debug", "info", "warning", "error"][rawValue] }
        var loggerLevel: Logger.Level { [.debug, .info, .warning, .error][rawValue] }
    }

    /// How a line looks: for a person at a terminal, or for journald (stderr not a TTY: a `<N>` syslog
    /// priority prefix, which journald turns into the entry's priority; the unit names the program).
    public enum Style: Sendable { case terminal, journal }

    private var logger: Logger
    public let minimum: Level
    private let style: Style
    private let sink: @Sendable (String) -> Void
    private let lock = ConditionLock()
    /// Per kind: its budget of lines, and the highest level of the lines it left out.
    private var budgets: [LineBudget]
    private var suppressedLevel: [Level]
    /// Per-frame lines allowed each second, per kind.
    public let frameLinesPerSecond: Int

    /// - Parameter export: the `export` metadata of every line (e.g. "e1.1@eth1"); nil for the process's own.
    public init(minimum: Level = .info, frameLinesPerSecond: Int = 10, export: String? = nil, style: Style = .terminal,
                sink: @escaping @Sendable (String) -> Void) {
        self.minimum = minimum
        self.style = style
        self.sink = sink
        self.frameLinesPerSecond = frameLinesPerSecond
        logger = Logger(label: "aoe-target") { _ in LineLogHandler(style: style, sink: sink) }
        logger.logLevel = minimum.loggerLevel
        if let export { logger[metadataKey: "export"] = .string(export) }
        let kinds = FrameEvent.allCases.count
        budgets = Array(repeating: LineBudget(perSecond: frameLinesPerSecond), count: kinds)
        suppressedLevel = Array(repeating: .debug, count: kinds)
    }

    /// The same destination and level for one export ("e1.1@eth1"); its own rate limits for frame lines.
    public func labelled(_ export: String) -> TargetLog {
        TargetLog(minimum: minimum, frameLinesPerSecond: frameLinesPerSecond, export: export, style: style, sink: sink)
    }

    /// stderr, styled for a terminal or for journald by whether it is one.
    public static func standardError(minimum: Level = .info) -> TargetLog {
        TargetLog(minimum: minimum, style: isatty(2) != 0 ? .terminal : .journal) { line in
            var text = line + "\n"
            text.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
        }
    }

    public func log(_ level: Level, _ message: @autoclosure () -> String, peer: MACAddress? = nil, tag: Tag? = nil) {
        guard level >= minimum else { return }
        var metadata: Logger.Metadata? = nil
        if peer != nil || tag != nil {
            var m = Logger.Metadata()
            if let peer { m["peer"] = .string(peer.description) }
            if let tag { m["tag"] = .string(tag.description) }
            metadata = m
        }
        logger.log(level: level.loggerLevel, "\(message())", metadata: metadata)
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

    /// A line about one frame: at most `frameLinesPerSecond` of each kind a second. What is left out is
    /// counted and reported when its window ends: by the next line of that kind, or by `reportSuppressed`,
    /// which the event loop calls every second, so a count is never lost when the flood stops.
    public func frame(_ kind: FrameEvent, _ level: Level, _ message: @autoclosure () -> String,
                      peer: MACAddress? = nil, tag: Tag? = nil) {
        guard level >= minimum else { return }
        let now = monotonicSeconds()
        let k = kind.rawValue
        let (allowed, report): (Bool, (Int, Level)?) = lock.withLock {
            let (allowed, ended) = budgets[k].take(now: now)
            var report: (Int, Level)? = nil
            if ended > 0 {
                report = (ended, suppressedLevel[k])
                suppressedLevel[k] = .debug
            }
            if !allowed { suppressedLevel[k] = max(suppressedLevel[k], level) }
            return (allowed, report)
        }
        if let (count, worst) = report { log(worst, "\(count) more \(kind.name) in the last second, not logged") }
        if allowed { log(level, message(), peer: peer, tag: tag) }
    }

    /// Reports the counts of every kind whose window has ended with lines left out.
    public func reportSuppressed() {
        let now = monotonicSeconds()
        let due: [(FrameEvent, Int, Level)] = lock.withLock {
            var due: [(FrameEvent, Int, Level)] = []
            for kind in FrameEvent.allCases {
                let count = budgets[kind.rawValue].takeLeftOut(now: now)
                guard count > 0 else { continue }
                due.append((kind, count, suppressedLevel[kind.rawValue]))
                suppressedLevel[kind.rawValue] = .debug
            }
            return due
        }
        for (kind, count, level) in due { log(level, "\(count) more \(kind.name) in the last second, not logged") }
    }
}

/// Formats swift-log events as one line each for `TargetLog`'s sink: the message, then its metadata as
/// key=value pairs (export first).
struct LineLogHandler: LogHandler {
    let style: TargetLog.Style
    let sink: @Sendable (String) -> Void
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let extra = event.metadata { all.merge(extra) { $1 } }
        var line = ""
        switch style {
        case .terminal: line = "aoe-target: \(Self.name(event.level)): "
        case .journal: line = "<\(Self.syslogPriority(event.level))>"
        }
        if let export = all.removeValue(forKey: "export") { line += "\(export): " }
        line += "\(event.message)"
        for key in all.keys.sorted() { line += " \(key)=\(all[key]!)" }
        sink(line)
    }

    static func name(_ level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: "debug"
        case .info, .notice: "info"
        case .warning: "warning"
        case .error, .critical: "error"
        }
    }

    static func syslogPriority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }
}
