import AoEWire
import LinuxSystem

/// A link with no kernel behind it, for tests: frames are injected into an inbox and sent frames are
/// collected (and handed to an observer), so a test can play the network.
public final class EmbeddedLink: FrameLink, @unchecked Sendable {
    public let macAddress: MACAddress
    public let interfaceName = "embedded0"
    public var mtu: Int
    private let lock = ConditionLock()
    private var inbox: [[UInt8]] = []
    private var outbox: [[UInt8]] = []
    /// Called for each sent frame, under no lock.
    public var onSend: (@Sendable ([UInt8]) -> Void)?

    private let readiness = EventCounter()

    public init(mac: MACAddress, mtu: Int = 1500) {
        macAddress = mac
        self.mtu = mtu
    }

    /// How often the MTU was asked for: on a real socket each ask is a socket, an ioctl and a close.
    public private(set) var mtuQueries = 0

    public func currentMTU() -> Int {
        lock.withLock {
            mtuQueries += 1
            return mtu
        }
    }

    public func inject(_ frame: [UInt8]) { inject(batch: [frame]) }

    /// Frames that arrive together (one receive call sees them all).
    public func inject(batch frames: [[UInt8]]) {
        lock.withLock {
            inbox.append(contentsOf: frames)
            lock.broadcast()
        }
        readiness.signal()
    }

    /// Takes every frame sent so far.
    public func drainSent() -> [[UInt8]] {
        lock.withLock {
            defer { outbox.removeAll() }
            return outbox
        }
    }

    /// Waits (bounded) until at least `count` frames have been sent, then takes them.
    public func waitForSent(_ count: Int, timeoutSeconds: Double = 5) -> [[UInt8]] {
        let deadline = monotonicSeconds() + timeoutSeconds
        while monotonicSeconds() < deadline {
            let ready = lock.withLock { outbox.count >= count }
            if ready { break }
            usleepSeconds(0.002)
        }
        return drainSent()
    }

    public func receive(_ frames: UnsafeMutableBufferPointer<Frame>) throws(SystemError) -> Int {
        let deadline = monotonicSeconds() + 0.05
        while true {
            let n = receiveWithoutWaiting(frames)
            if n > 0 || monotonicSeconds() >= deadline { return n }
            usleepSeconds(0.001)
        }
    }

    /// Readable while injected frames wait: every inject adds to the counter, every receive clears it first,
    /// so a frame injected after a receive always leaves it readable.
    public var readinessDescriptor: Int32 { readiness.descriptor }

    public func receiveWithoutWaiting(_ frames: UnsafeMutableBufferPointer<Frame>) -> Int {
        readiness.clear()
        let (taken, more) = lock.withLock {
            let n = min(frames.count, inbox.count)
            defer { inbox.removeFirst(n) }
            return (Array(inbox.prefix(n)), inbox.count > n)
        }
        if more { readiness.signal() }   // frames left behind keep the descriptor readable
        for (i, bytes) in taken.enumerated() {
            let n = min(bytes.count, frames[i].capacity)
            bytes.withUnsafeBytes { frames[i].base.copyMemory(from: $0.baseAddress!, byteCount: n) }
            frames[i].length = n
        }
        return taken.count
    }

    public func send(_ frames: UnsafeBufferPointer<Frame>) throws(SystemError) -> Int {
        for frame in frames { try sendOne(frame) }
        return frames.count
    }

    public func sendOne(_ frame: Frame) throws(SystemError) {
        let bytes = Array(frame.bytes)
        lock.withLock { outbox.append(bytes) }
        onSend?(bytes)
    }
}
