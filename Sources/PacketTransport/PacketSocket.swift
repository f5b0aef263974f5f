import Glibc
import AoEWire
import LinuxSystem
import CLinuxShims

/// An AF_PACKET raw socket bound to one interface and EtherType 0x88A2. Receives in batches from a TPACKET_V2
/// receive ring when asked and the kernel allows it (frames are taken without a system call, one copy each
/// into the caller's slots), with recvmmsg otherwise; sends batches with sendmmsg; optionally records every
/// frame to a pcap file.
public final class PacketSocket: FrameLink, @unchecked Sendable {
    public enum OpenError: Error, CustomStringConvertible {
        case noSuchInterface(String)
        case interfaceDown(String)
        case notPermitted(String)
        case system(SystemError)

        public var description: String {
            switch self {
            case .noSuchInterface(let n): "\(n): no such network interface"
            case .interfaceDown(let n): "\(n): interface is down (ip link set \(n) up)"
            case .notPermitted(let n): "\(n): raw packet sockets need root or CAP_NET_RAW"
            case .system(let e): e.description
            }
        }
    }

    public let interfaceName: String
    public let interfaceIndex: Int32
    public let macAddress: MACAddress
    public let maxBatch: Int
    private let fd: Int32
    private let pcap: PcapWriter?
    // recvmmsg/sendmmsg scratch, allocated once; receive and batch send belong to one thread each.
    private let rxHeaders: UnsafeMutablePointer<CLinuxShims_mmsghdr>
    private let rxVectors: UnsafeMutablePointer<iovec>
    private let txHeaders: UnsafeMutablePointer<CLinuxShims_mmsghdr>
    private let txVectors: UnsafeMutablePointer<iovec>
    /// The receive ring, and the next slot the kernel fills (it fills them in order); nil: recvmmsg.
    private let ring: UnsafeMutablePointer<CLinuxShims_RxRing>?
    private var ringHead: UInt32 = 0
    private let receiveTimeoutMilliseconds: Int32
    /// Why the receive ring was not set up (nil when it was, or was not asked for): the caller logs it.
    public let receiveRingRefusal: SystemError?
    public var usesReceiveRing: Bool { ring != nil }

    /// - Parameters:
    ///   - receiveTimeoutMilliseconds: how long `receive` waits for a first frame before returning 0.
    ///   - receiveBufferBytes: SO_RCVBUFFORCE / SO_SNDBUFFORCE size, so a burst of `bufferCount` frames is neither
    ///     dropped on receive nor blocked on send.
    ///   - receiveRingFrames: receive through a TPACKET_V2 ring of about this many frames, each with room for a
    ///     jumbo frame (or the MTU, if larger: it may grow while we serve); when the kernel refuses it, recvmmsg
    ///     as without it (`receiveRingRefusal`).
    public init(interface name: String, maxBatch: Int = 32, receiveTimeoutMilliseconds: Int = 200,
                receiveBufferBytes: Int? = nil, receiveRingFrames: Int? = nil,
                filter: ((MACAddress) -> [sock_filter])? = nil, pcap: PcapWriter? = nil) throws(OpenError) {
        let info: NetworkInterface
        do { info = try NetworkInterface.lookup(name) } catch {
            throw error.errno == ENODEV ? .noSuchInterface(name) : .system(error)
        }
        guard info.isUp else { throw .interfaceDown(name) }
        let m = info.macBytes
        let mac = MACAddress(m[0], m[1], m[2], m[3], m[4], m[5])
        let fd: Int32
        do {
            fd = try Syscall.socket(domain: AF_PACKET, type: Int32(SOCK_RAW.rawValue), protocol: Int32(UInt16(CLS_ETH_P_AOE).bigEndian), context: name)
        } catch {
            throw (error.errno == EPERM || error.errno == EACCES) ? .notPermitted(name) : .system(error)
        }
        var openedRing: UnsafeMutablePointer<CLinuxShims_RxRing>? = nil
        var refusal: SystemError? = nil
        do throws(SystemError) {
            // The filter goes on before bind so no unfiltered frame is queued in between.
            if let filter { try Syscall.attachFilter(fd, filter(mac), context: name) }
            // The ring too: frames that arrive between bind and the ring would wait in the plain queue.
            if let frames = receiveRingFrames {
                let r = UnsafeMutablePointer<CLinuxShims_RxRing>.allocate(capacity: 1)
                r.initialize(to: CLinuxShims_RxRing())
                let frameBytes = max(info.mtu, 9000) + AoELayout.ethernetHeaderSize
                if CLinuxShims_rxRingOpen(fd, UInt32(frameBytes), UInt32(frames), r) == 0 {
                    openedRing = r
                } else {
                    refusal = SystemError(call: "setsockopt(PACKET_RX_RING)", errno: errno, context: name)
                    r.deallocate()
                }
            }
            var address = sockaddr_ll()
            address.sll_family = UInt16(AF_PACKET)
            address.sll_protocol = UInt16(CLS_ETH_P_AOE).bigEndian
            address.sll_ifindex = info.index
            try Syscall.bind(fd, address, context: name)
            // Our own transmissions would otherwise come back to us on this socket.
            try? Syscall.setSocketOption(fd, level: SOL_PACKET, name: 23 /* PACKET_IGNORE_OUTGOING */, value: 1, context: name)
            var timeout = timeval(tv_sec: receiveTimeoutMilliseconds / 1000, tv_usec: (receiveTimeoutMilliseconds % 1000) * 1000)
            guard setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
                throw SystemError(call: "setsockopt(SO_RCVTIMEO)", errno: errno, context: name)
            }
            if let bytes = receiveBufferBytes {
                // The FORCE forms pass rmem_max/wmem_max when privileged; fall back to the capped forms otherwise.
                // The send buffer gets the same size: a burst of jumbo frames would otherwise block in sendmmsg.
                for (force, plain) in [(SO_RCVBUFFORCE, SO_RCVBUF), (SO_SNDBUFFORCE, SO_SNDBUF)] {
                    do { try Syscall.setSocketOption(fd, level: SOL_SOCKET, name: force, value: Int32(clamping: bytes), context: name) }
                    catch { try Syscall.setSocketOption(fd, level: SOL_SOCKET, name: plain, value: Int32(clamping: bytes), context: name) }
                }
            }
        } catch {
            if let openedRing { CLinuxShims_rxRingClose(openedRing); openedRing.deallocate() }
            Syscall.close(fd)
            throw .system(error)
        }
        ring = openedRing
        receiveRingRefusal = refusal
        self.receiveTimeoutMilliseconds = Int32(receiveTimeoutMilliseconds)
        self.fd = fd
        self.pcap = pcap
        interfaceName = name
        interfaceIndex = info.index
        macAddress = mac
        self.maxBatch = maxBatch
        rxHeaders = .allocate(capacity: maxBatch)
        rxVectors = .allocate(capacity: maxBatch)
        txHeaders = .allocate(capacity: maxBatch)
        txVectors = .allocate(capacity: maxBatch)
        rxHeaders.initialize(repeating: CLinuxShims_mmsghdr(), count: maxBatch)
        txHeaders.initialize(repeating: CLinuxShims_mmsghdr(), count: maxBatch)
    }

    deinit {
        if let ring { CLinuxShims_rxRingClose(ring); ring.deallocate() }
        Syscall.close(fd)
        rxHeaders.deallocate()
        rxVectors.deallocate()
        txHeaders.deallocate()
        txVectors.deallocate()
    }

    public func currentMTU() -> Int {
        (try? NetworkInterface.currentMTU(interfaceName)) ?? 1500
    }

    /// Points one mmsghdr per frame at its own single iovec.
    private func prepare(_ headers: UnsafeMutablePointer<CLinuxShims_mmsghdr>, _ vectors: UnsafeMutablePointer<iovec>,
                         _ frames: UnsafeBufferPointer<Frame>, count: Int, wholeSlot: Bool) {
        for i in 0..<count {
            vectors[i] = iovec(iov_base: frames[i].base, iov_len: wholeSlot ? frames[i].capacity : frames[i].length)
            headers[i] = CLinuxShims_mmsghdr()
            headers[i].msg_hdr.msg_iov = vectors + i
            headers[i].msg_hdr.msg_iovlen = 1
        }
    }

    public func receive(_ frames: UnsafeMutableBufferPointer<Frame>) throws(SystemError) -> Int {
        if ring != nil {
            let n = takeFromRing(frames)
            if n > 0 { return n }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if Glibc.poll(&entry, 1, receiveTimeoutMilliseconds) < 0 && errno != EINTR {
                throw SystemError(call: "poll", errno: errno, context: interfaceName)
            }
            return takeFromRing(frames)
        }
        // MSG_WAITFORONE: block (up to SO_RCVTIMEO) for the first frame, then take whatever else is queued.
        return try receive(frames, flags: Int32(MSG_WAITFORONE))
    }

    public func receiveWithoutWaiting(_ frames: UnsafeMutableBufferPointer<Frame>) throws(SystemError) -> Int {
        if ring != nil { return takeFromRing(frames) }
        return try receive(frames, flags: Int32(MSG_DONTWAIT))
    }

    /// Copies the frames the kernel has handed over, in ring order, into `frames` and gives each slot back at
    /// once, so the ring never waits on a request that is still in flight.
    private func takeFromRing(_ frames: UnsafeMutableBufferPointer<Frame>) -> Int {
        guard let ring else { return 0 }
        let count = min(frames.count, maxBatch)
        var n = 0
        while n < count {
            var length: UInt32 = 0
            var truncated: Int32 = 0
            let slot = CLinuxShims_rxRingSlot(ring, ringHead)
            guard let bytes = CLinuxShims_rxRingFrame(slot, &length, &truncated) else { break }
            let fits = truncated == 0 && Int(length) <= frames[n].capacity
            if fits { frames[n].base.copyMemory(from: bytes, byteCount: Int(length)) }
            // Cut short by the ring slot or longer than ours: length 0, so the parser rejects it, as MSG_TRUNC.
            frames[n].length = fits ? Int(length) : 0
            CLinuxShims_rxRingRelease(slot)
            ringHead = ringHead + 1 == ring.pointee.frameCount ? 0 : ringHead + 1
            pcap?.record(frames[n].bytes)
            n += 1
        }
        return n
    }

    public var readinessDescriptor: Int32 { fd }

    private func receive(_ frames: UnsafeMutableBufferPointer<Frame>, flags: Int32) throws(SystemError) -> Int {
        let count = min(frames.count, maxBatch)
        prepare(rxHeaders, rxVectors, UnsafeBufferPointer(frames), count: count, wholeSlot: true)
        let n = try Syscall.recvmmsg(fd, rxHeaders, count: count, flags: flags, context: interfaceName)
        for i in 0..<n {
            frames[i].length = Int(rxHeaders[i].msg_len)
            // A frame longer than the slot arrives truncated (MSG_TRUNC): mark it so the parser rejects it.
            if rxHeaders[i].msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 { frames[i].length = 0 }
            pcap?.record(frames[i].bytes)
        }
        return n
    }

    public func send(_ frames: UnsafeBufferPointer<Frame>) throws(SystemError) -> Int {
        let count = min(frames.count, maxBatch)
        prepare(txHeaders, txVectors, frames, count: count, wholeSlot: false)
        let sent = try Syscall.sendmmsg(fd, txHeaders, count: count, context: interfaceName)
        // Only what left: a frame the kernel did not take is sent (and recorded) again by the caller.
        for i in 0..<sent { pcap?.record(frames[i].bytes) }
        return sent
    }

    public func sendOne(_ frame: Frame) throws(SystemError) {
        while true {
            if Glibc.send(fd, frame.base, frame.length, 0) >= 0 {
                pcap?.record(frame.bytes)
                return
            }
            let err = errno
            if err == EINTR { continue }
            throw SystemError(call: "send", errno: err, context: interfaceName)
        }
    }
}
