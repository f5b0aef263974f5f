import AoEWire
import LinuxSystem

/// Where frames come from and go to: a real AF_PACKET socket, or an in-memory link in tests.
public protocol FrameLink: AnyObject, Sendable {
    var macAddress: MACAddress { get }
    var interfaceName: String { get }
    /// The interface MTU now (it can change while we run).
    func currentMTU() -> Int
    /// Fills `frames` (their lengths) with up to `frames.count` received frames; waits a bounded time for
    /// the first one and returns 0 if none came. Only one thread receives.
    func receive(_ frames: UnsafeMutableBufferPointer<Frame>) throws(SystemError) -> Int
    /// Like `receive`, but returns 0 at once when no frame is queued.
    func receiveWithoutWaiting(_ frames: UnsafeMutableBufferPointer<Frame>) throws(SystemError) -> Int
    /// A descriptor that polls readable while frames are queued, so an event loop can wait for frames and
    /// other events at once.
    var readinessDescriptor: Int32 { get }
    /// Sends frames in one batch; returns how many the kernel took. Callable from the receiving thread only.
    func send(_ frames: UnsafeBufferPointer<Frame>) throws(SystemError) -> Int
    /// Sends one frame; callable from any thread.
    func sendOne(_ frame: Frame) throws(SystemError)
    /// NICs behind this link (a `LinkGroup` has several) and each one's MAC address: a reply goes out through the
    /// port its request came in on (`Frame.port`), from that port's address.
    var portCount: Int { get }
    func macAddress(port: UInt8) -> MACAddress
    /// The interface name of one port.
    func interfaceName(port: UInt8) -> String
}

extension FrameLink {
    public var portCount: Int { 1 }
    public func macAddress(port: UInt8) -> MACAddress { macAddress }
    public func interfaceName(port: UInt8) -> String { interfaceName }
    /// `receive` into an array of frames (typed throws survive, unlike through withUnsafeMutableBufferPointer).
    public func receive(into frames: inout [Frame]) throws(SystemError) -> Int {
        var result: Result<Int, SystemError> = .success(0)
        frames.withUnsafeMutableBufferPointer { buffer in
            do throws(SystemError) { result = .success(try receive(buffer)) } catch { result = .failure(error) }
        }
        return try result.get()
    }

    /// `send` of `frames[range]`.
    public func send(_ frames: [Frame], range: Range<Int>) throws(SystemError) -> Int {
        var result: Result<Int, SystemError> = .success(0)
        frames.withUnsafeBufferPointer { buffer in
            do throws(SystemError) { result = .success(try send(UnsafeBufferPointer(rebasing: buffer[range]))) } catch { result = .failure(error) }
        }
        return try result.get()
    }
}
