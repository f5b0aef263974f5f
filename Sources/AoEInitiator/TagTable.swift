import Glibc
import AoEWire

/// The initiator's frames in flight: which tag each carries, when it was sent, how often, and when to give
/// up. Pure state machine with the clock passed in; the engine acts on what it returns.
///
/// Tags: bit 31 set (so a Linux `aoe` initiator on the same host drops our responses, aoenet.c), bits 16-30
/// a generation that changes on every send, bits 0-15 the slot. A resend gets a fresh tag, so an answer to
/// the old one is recognised as late and dropped rather than completing the wrong attempt.
public struct TagTable: Sendable {
    public enum SlotState: Hashable, Sendable {
        /// Not in use.
        case free
        /// Sent (attempt n, n >= 1) at `sentAt` (seconds) with `tag`; the first attempt carried `firstTag`.
        case inFlight(tag: UInt32, sentAt: Double, firstSentAt: Double, attempts: Int, firstTag: UInt32)
        /// Sent once, never resent (a command that must not run twice): fails at the deadline unanswered.
        case sentOnce(tag: UInt32, sentAt: Double)
    }

    public enum ResponseOutcome: Hashable, Sendable {
        /// The answer to slot `slot`, after `rtt` seconds (from the attempt it answers).
        case complete(slot: Int, rtt: Double)
        /// The answer to an earlier attempt of a frame still in flight (the target was slow, not the frame lost):
        /// it answers the same request. The caller checks that it does (the reply's LBA) and takes it with
        /// `acceptEarlierAnswer`, rather than waiting for the answer to the latest attempt.
        case earlierAttempt(slot: Int)
        /// For a slot already completed, or a tag of no attempt of what the slot holds now: ignore it.
        case late
        /// Not one of our tags.
        case unknown
    }

    public enum TimerAction: Hashable, Sendable {
        /// Send slot `slot` again with this new tag.
        case resend(slot: Int, tag: UInt32)
        /// Out of attempts or time: the request fails.
        case fail(slot: Int)
    }

    public private(set) var slots: [SlotState]
    private var generation: UInt32 = 0
    private var freeList: [Int]

    // Retransmit policy (Jacobson/Karels, as aoecmd.c rto()): RTO = srtt + 4 x rttvar, bounded.
    public private(set) var smoothedRTT: Double
    public private(set) var rttVariance: Double
    /// The floor of the timeout: a LAN's round trip is tens to hundreds of microseconds, so 1 ms leaves room
    /// for a scheduler hiccup on either host while a lost frame costs its I/O only ~1 ms. Measured at QD16 under
    /// 5 % loss: 200 ms (the Linux initiator's floor) gave 165 IOPS of 55k, 2 ms 22 % of the loss-free rate,
    /// 1 ms 36 %, with about 0.1 % spurious resends without loss. A busy disk's latency raises the timeout
    /// through the measured RTT and its variance, not through the floor.
    public var minimumRTO = 0.001
    public var maximumRTO = 2.0
    public var maxAttempts: Int
    /// Give up on a request this long after its first send, whatever the attempts.
    public var deadline: Double

    /// The send window in frames: halved on a burst of timeouts, grown by one per answer, up to `maxWindow`.
    public private(set) var window: Int
    public var maxWindow: Int
    public private(set) var inFlight = 0
    public private(set) var retransmits = 0
    public private(set) var lateResponses = 0
    /// Late answers that completed their request (`acceptEarlierAnswer`).
    public private(set) var earlierAnswers = 0
    /// When the window was last halved: at most once per round trip, as TCP, so a burst of losses from one
    /// window counts as one congestion signal instead of collapsing the window to 1.
    private var lastDecrease = -Double.infinity

    public init(capacity: Int, maxWindow: Int, initialRTT: Double = 0.05, maxAttempts: Int = 8, deadline: Double = 10) {
        precondition(capacity > 0 && capacity <= 0xFFFF)
        slots = Array(repeating: .free, count: capacity)
        probes = Array(repeating: false, count: capacity)
        freeList = Array((0..<capacity).reversed())
        smoothedRTT = initialRTT
        rttVariance = initialRTT / 2
        self.maxWindow = max(1, maxWindow)
        window = max(1, maxWindow)
        self.maxAttempts = maxAttempts
        self.deadline = deadline
    }

    /// Karn's backoff, kept across frames (RFC 6298 5.5): each tick with a timeout doubles it, the next
    /// unambiguous sample resets it. Without it a target slower than the current estimate is never measured
    /// (every frame is resent before its answer comes, and answers to old tags do not count) and is flooded.
    public private(set) var backoff: Double = 1

    public var retransmitTimeout: Double {
        min(maximumRTO, max(minimumRTO, smoothedRTT + 4 * rttVariance, Self.tailMargin * tailRTT) * backoff)
    }

    // The latency tail. srtt + 4 x rttvar suits a round trip that varies little (a LAN, a fast disk); a
    // device whose latency has a long tail (Ceph: p50 4 ms, p99 14 ms) sits beyond it for a few percent of
    // its requests, and each of those is resent although nothing was lost (11,408 resends in 20 s against
    // an RBD export). So the timeout is also kept above the 99th percentile of round trips. Ordinary samples
    // cannot show that percentile: a request slower than the timeout is resent and gives none, so the tail is
    // cut off where the timeout is. Every `probeEvery`-th frame is a probe, given `probeStretch` times the
    // timeout before its first resend: probes measure the tail uncut. A lost probe costs its I/O that much
    // longer, one loss in `probeEvery`; on a LAN the percentile stays far below the 1 ms floor, so loss
    // recovery is as fast as before.
    /// The 99th percentile of recent probe round trips (0 until `tailEvery` probes were answered).
    public private(set) var tailRTT: Double = 0
    static let tailMargin = 1.25
    /// Samples by round trip, in buckets of a quarter power of two from `tailBase` seconds up.
    private var tailBuckets = [UInt32](repeating: 0, count: 96)
    private var tailSamples = 0
    static let tailBase = 8e-6
    /// The percentile is recomputed every `tailEvery` probes, and the counts halve every `tailHalfLife`
    /// probes, so a target that became faster is followed within seconds.
    static let tailEvery = 64
    static let tailHalfLife = 1024
    static let probeEvery = 32
    static let probeStretch = 8.0
    /// By slot: whether the frame in it is a probe.
    private var probes: [Bool]
    private var sends = 0

    static func tailBucket(_ rtt: Double) -> Int {
        let x = rtt / tailBase
        guard x >= 1 else { return 0 }
        let f = x.significand  // [1, 2)
        let quarter = f < 1.189_207 ? 0 : f < 1.414_214 ? 1 : f < 1.681_793 ? 2 : 3
        return min(95, Int(x.exponent) * 4 + quarter)
    }

    /// The upper bound of a bucket: a round trip in it is at most this.
    static func tailBucketLimit(_ index: Int) -> Double { tailBase * exp2(Double(index + 1) / 4) }

    private mutating func recordTail(_ rtt: Double) {
        tailBuckets[Self.tailBucket(rtt)] &+= 1
        tailSamples += 1
        if tailSamples % Self.tailHalfLife == 0 {
            for i in tailBuckets.indices { tailBuckets[i] /= 2 }
        }
        guard tailSamples % Self.tailEvery == 0 else { return }
        let total = tailBuckets.reduce(0) { $0 + Int($1) }
        var above = 0
        for i in tailBuckets.indices.reversed() {
            above += Int(tailBuckets[i])
            if above * 100 >= total {
                tailRTT = Self.tailBucketLimit(i)
                return
            }
        }
    }
    public var canSend: Bool { inFlight < window && !freeList.isEmpty }

    private mutating func nextTag(slot: Int) -> UInt32 {
        generation = (generation + 1) & 0x7FFF
        return 0x8000_0000 | generation << 16 | UInt32(slot)
    }

    /// Takes a free slot and its first tag. Call only when `canSend`. A frame that is not `resendable` is
    /// sent once and fails at the deadline when unanswered.
    public mutating func send(now: Double, resendable: Bool = true) -> (slot: Int, tag: UInt32) {
        precondition(canSend, "send beyond the window")
        let slot = freeList.removeLast()
        let tag = nextTag(slot: slot)
        slots[slot] = resendable ? .inFlight(tag: tag, sentAt: now, firstSentAt: now, attempts: 1, firstTag: tag) : .sentOnce(tag: tag, sentAt: now)
        sends &+= 1
        probes[slot] = resendable && sends % Self.probeEvery == 0
        inFlight += 1
        return (slot, tag)
    }

    public mutating func response(tag: UInt32, now: Double) -> ResponseOutcome {
        guard tag & 0x8000_0000 != 0 else { return .unknown }
        let slot = Int(tag & 0xFFFF)
        guard slot < slots.count else { return .unknown }
        if case .sentOnce(let current, let sentAt) = slots[slot], current == tag {
            release(slot)
            return .complete(slot: slot, rtt: now - sentAt)
        }
        guard case .inFlight(let current, let sentAt, _, let attempts, let firstTag) = slots[slot], current == tag else {
            lateResponses += 1
            // The answer to an earlier attempt of a frame still in flight: it was resent because the target
            // was slow, not because a frame was lost (a lost frame never answers). That is congestion: back
            // off and shrink the window, as for a burst of timeouts, instead of piling resends on the target.
            if case .inFlight(let current, _, _, _, let firstTag) = slots[slot] {
                congested(now: now)
                if Self.isAttempt(tag, between: firstTag, and: current) { return .earlierAttempt(slot: slot) }
            }
            return .late
        }
        let rtt = now - sentAt
        // Karn: only an unambiguous sample (first attempt) updates the estimate.
        if attempts == 1 {
            let error = rtt - smoothedRTT
            smoothedRTT += error / 8
            rttVariance += (abs(error) - rttVariance) / 4
            if probes[slot] { recordTail(rtt) }
            backoff = 1
        }
        release(slot)
        if window < maxWindow { window += 1 }
        return .complete(slot: slot, rtt: rtt)
    }

    /// Whether `tag` is one of the attempts from `first` to `latest` of one slot. Generations grow by one per
    /// send of any slot (15 bits, wrapping); a request whose attempts span half the range or more is not
    /// trusted with it, so a very old tag of the slot's previous request cannot pass for an attempt.
    static func isAttempt(_ tag: UInt32, between first: UInt32, and latest: UInt32) -> Bool {
        let g = tag >> 16 & 0x7FFF, g0 = first >> 16 & 0x7FFF, g1 = latest >> 16 & 0x7FFF
        let span = (g1 &- g0) & 0x7FFF
        return span < 0x4000 && (g &- g0) & 0x7FFF <= span
    }

    /// Takes the answer to an earlier attempt (`earlierAttempt`) as the slot's answer. No round-trip sample
    /// (Karn: which attempt it answers is ambiguous) and no window growth (it was a congestion signal).
    public mutating func acceptEarlierAnswer(slot: Int) {
        guard case .inFlight = slots[slot] else { return }
        earlierAnswers += 1
        release(slot)
    }

    private mutating func release(_ slot: Int) {
        slots[slot] = .free
        freeList.append(slot)
        inFlight -= 1
    }

    /// After the target moved to another host: every frame in flight goes again now, with a fresh tag, and the
    /// backoff its silence built up is forgotten (the new host has not been slow). Deadlines still hold.
    public mutating func resendAll(now: Double, into actions: inout [TimerAction]) {
        for slot in slots.indices {
            guard case .inFlight(_, _, let firstSentAt, let attempts, let firstTag) = slots[slot] else { continue }
            let tag = nextTag(slot: slot)
            slots[slot] = .inFlight(tag: tag, sentAt: now, firstSentAt: firstSentAt, attempts: attempts, firstTag: firstTag)
            retransmits += 1
            actions.append(.resend(slot: slot, tag: tag))
        }
        backoff = 1
    }

    /// Expired frames: resend with a fresh tag, or fail when out of attempts or past the deadline.
    /// Appends to `actions` (kept by the caller so the hot path does not allocate).
    public mutating func tick(now: Double, into actions: inout [TimerAction]) {
        let rto = retransmitTimeout
        var timedOut = 0
        for slot in slots.indices {
            if case .sentOnce(_, let sentAt) = slots[slot], now - sentAt >= deadline {
                release(slot)
                actions.append(.fail(slot: slot))
                continue
            }
            guard case .inFlight(_, let sentAt, let firstSentAt, let attempts, let firstTag) = slots[slot] else { continue }
            // Each further attempt waits longer (exponential backoff), as TCP does.
            let limit = attempts == 1 && probes[slot] ? rto * Self.probeStretch : rto * Double(1 << min(attempts - 1, 6))
            guard now - sentAt >= limit else { continue }
            timedOut += 1
            if attempts >= maxAttempts || now - firstSentAt >= deadline {
                release(slot)
                actions.append(.fail(slot: slot))
            } else {
                let tag = nextTag(slot: slot)
                slots[slot] = .inFlight(tag: tag, sentAt: now, firstSentAt: firstSentAt, attempts: attempts + 1, firstTag: firstTag)
                retransmits += 1
                actions.append(.resend(slot: slot, tag: tag))
            }
        }
        if timedOut > 0 { backoff = min(backoff * 2, 64) }
        // Halve the window on a burst of timeouts (a quarter of the window at once: a target dropping beyond its
        // Buffer Count, a congested link), not on a stray lost frame, which random loss on a LAN is: there a
        // smaller window only idles the target.
        if timedOut > 0 && timedOut * 4 >= window { congested(now: now) }
    }

    /// Halves the window, at most once per round trip, as TCP does for one window's worth of congestion signals.
    private mutating func congested(now: Double) {
        if now - lastDecrease >= max(smoothedRTT, minimumRTO) {
            window = max(1, window / 2)
            lastDecrease = now
        }
    }
}
