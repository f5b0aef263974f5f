import AoEWire
import LinuxSystem

/// Several links (one per NIC) serving one export as one link, so the export keeps one request table, one
/// ordering rule and one set of frame slots whichever NIC a request (or its retransmission) arrives on. A frame
/// remembers the port it came in on (`Frame.port`); its reply leaves through that port, from that port's MAC.
/// One epoll descriptor watches every port, so an event loop waits on all of them at once.
public final class LinkGroup: FrameLink, @unchecked Sendable {
    public let links: [any FrameLink]
    private let epoll: Int32
    /// The port received from first in the next pass, so a busy NIC cannot starve the others.
    private var nextPort = 0

    public init(links: [any FrameLink]) throws(SystemError) {
        precondition(!links.isEmpty && links.count <= 255)
        self.links = links
        let names = links.map(\.interfaceName).joined(separator: ",")
        epoll = try Syscall.epollCreate(context: names)
        do throws(SystemError) {
            for link in links { try Syscall.epollAddReadable(epoll, link.readinessDescriptor, context: link.interfaceName) }
        } catch {
            Syscall.close(epoll)
            throw error
        }
    }

    deinit { Syscall.close(epoll) }

    public var macAddress: MACAddress { links[0].macAddress }
    public var interfaceName: String { links.map(\.interfaceName).joined(separator: ",") }
    public var portCount: Int { links.count }
    public func macAddress(port: UInt8) -> MACAddress { links[Int(port)].macAddress }
    public func interfaceName(port: UInt8) -> String { links[Int(port)].interfaceName }

    /// The smallest: a request that fits every port's frames is what sectors per frame must promise.
    public func currentMTU() -> Int { links.map { $0.currentMTU() }.min()! }

    public var readinessDescriptor: Int32 { epoll }

    public func receive(_ frames: UnsafeMutableBufferPointer<Frame>) throws(SystemError) -> Int {
        let n = try receiveWithoutWaiting(frames)
        if n > 0 || !Syscall.epollWaitReadable(epoll, timeout: 0.2) { return n }
        return try receiveWithoutWaiting(frames)
    }

    public func receiveWithoutWaiting(_ frames: UnsafeMutableBufferPointer<Frame>) throws(SystemError) -> Int {
        var filled = 0
        let first = nextPort
        nextPort = (nextPort + 1) % links.count
        for k in 0..<links.count where filled < frames.count {
            let port = (first + k) % links.count
            let window = UnsafeMutableBufferPointer(rebasing: frames[filled...])
            let n = try links[port].receiveWithoutWaiting(window)
            for i in filled..<(filled + n) { frames[i].port = UInt8(port) }
            filled += n
        }
        return filled
    }

    /// Sends the leading run of frames that share a port; callers loop until all are sent.
    public func send(_ frames: UnsafeBufferPointer<Frame>) throws(SystemError) -> Int {
        guard let port = frames.first?.port else { return 0 }
        var run = 1
        while run < frames.count && frames[run].port == port { run += 1 }
        return try links[Int(port)].send(UnsafeBufferPointer(rebasing: frames[0..<run]))
    }

    public func sendOne(_ frame: Frame) throws(SystemError) { try links[Int(frame.port)].sendOne(frame) }
}
