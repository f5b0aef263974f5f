/// At most `perSecond` lines of one kind of message in each one-second window, so a flood cannot flood a log.
/// What is left out is counted and reported once its window has ended: by the next `take`, or by
/// `takeLeftOut` from a periodic caller, so a count is never lost when the flood stops. Pure: the caller
/// passes the time and writes the lines.
public struct LineBudget: Sendable {
    public let perSecond: Int
    private var windowStart = -1e9
    private var inWindow = 0
    private var leftOut = 0

    public init(perSecond: Int) { self.perSecond = perSecond }

    /// At `now` (seconds, monotonic): whether one more line fits its window, and how many lines the window
    /// that ended before it left out (to report first; 0 when none).
    public mutating func take(now: Double) -> (allowed: Bool, leftOutBefore: Int) {
        var ended = 0
        if now - windowStart >= 1 {
            ended = leftOut
            windowStart = now
            inWindow = 0
            leftOut = 0
        }
        guard inWindow < perSecond else {
            leftOut += 1
            return (false, ended)
        }
        inWindow += 1
        return (true, ended)
    }

    /// The lines left out in a window that has ended by `now`, then forgotten; 0 while the window runs.
    public mutating func takeLeftOut(now: Double) -> Int {
        guard leftOut > 0, now - windowStart >= 1 else { return 0 }
        defer { leftOut = 0 }
        return leftOut
    }
}
