import CPcap
import LinuxSystem
import Glibc

/// Writes frames to a .pcap file (link type Ethernet) through libpcap, without opening any interface.
public final class PcapWriter: @unchecked Sendable {
    private let handle: OpaquePointer
    private let dumper: OpaquePointer
    private let lock = ConditionLock()

    public struct OpenError: Error, CustomStringConvertible {
        public var description: String
    }

    public init(path: String) throws(OpenError) {
        guard let handle = pcap_open_dead(DLT_EN10MB, 65535) else { throw OpenError(description: "pcap_open_dead failed") }
        guard let dumper = pcap_dump_open(handle, path) else {
            let message = String(cString: pcap_geterr(handle))
            pcap_close(handle)
            throw OpenError(description: "\(path): \(message)")
        }
        self.handle = handle
        self.dumper = dumper
    }

    public func record(_ bytes: UnsafeRawBufferPointer) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var header = pcap_pkthdr()
        header.ts = timeval(tv_sec: now.tv_sec, tv_usec: now.tv_nsec / 1000)
        header.caplen = UInt32(bytes.count)
        header.len = UInt32(bytes.count)
        lock.withLock { () -> Void in
            pcap_dump(UnsafeMutableRawPointer(dumper).assumingMemoryBound(to: UInt8.self), &header,
                      bytes.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
    }

    public func close() {
        lock.withLock {
            pcap_dump_flush(dumper)
        }
    }

    deinit {
        pcap_dump_close(dumper)
        pcap_close(handle)
    }
}
