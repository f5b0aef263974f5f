import CPcap
import LinuxSystem
import Glibc

/// Writes frames to a .pcap file (link type Ethernet) through libpcap, without opening any interface. With a
/// size limit the file is rotated: when the next frame would take it past the limit it is renamed to
/// FILE.1 (replacing an older FILE.1) and a new FILE is started, so a long run keeps at most twice the limit.
public final class PcapWriter: @unchecked Sendable {
    private let handle: OpaquePointer
    private var dumper: OpaquePointer
    private let lock = ConditionLock()
    public let path: String
    /// Bytes one file may hold; nil: unbounded.
    public let limitBytes: Int?
    /// Bytes in the current file (guarded by `lock`).
    private var written = 0
    public private(set) var rotations = 0

    public struct OpenError: Error, CustomStringConvertible {
        public var description: String
    }

    /// libpcap's file header, and its per-frame record header.
    static let fileHeaderBytes = 24, recordHeaderBytes = 16

    public init(path: String, limitBytes: Int? = nil) throws(OpenError) {
        if let limitBytes, limitBytes < Self.fileHeaderBytes + Self.recordHeaderBytes + 9018 {
            throw OpenError(description: "--pcap-limit \(limitBytes): too small to hold one jumbo frame; use at least 16K")
        }
        guard let handle = pcap_open_dead(DLT_EN10MB, 65535) else { throw OpenError(description: "pcap_open_dead failed") }
        self.handle = handle
        self.path = path
        self.limitBytes = limitBytes
        do { dumper = try Self.open(handle, path) } catch {
            pcap_close(handle)
            throw error
        }
        written = Self.fileHeaderBytes
    }

    private static func open(_ handle: OpaquePointer, _ path: String) throws(OpenError) -> OpaquePointer {
        guard let dumper = pcap_dump_open(handle, path) else {
            throw OpenError(description: "\(path): \(String(cString: pcap_geterr(handle)))")
        }
        return dumper
    }

    public func record(_ bytes: UnsafeRawBufferPointer) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var header = pcap_pkthdr()
        header.ts = timeval(tv_sec: now.tv_sec, tv_usec: now.tv_nsec / 1000)
        header.caplen = UInt32(bytes.count)
        header.len = UInt32(bytes.count)
        lock.withLock { () -> Void in
            let size = Self.recordHeaderBytes + bytes.count
            if let limitBytes, written + size > limitBytes { rotate() }
            pcap_dump(UnsafeMutableRawPointer(dumper).assumingMemoryBound(to: UInt8.self), &header,
                      bytes.baseAddress!.assumingMemoryBound(to: UInt8.self))
            written += size
        }
    }

    /// Caller holds the lock. A rotation that fails keeps writing the current file (a trace is worth less
    /// than the frames it records, so this never stops serving).
    private func rotate() {
        pcap_dump_flush(dumper)
        do { try Syscall.rename(path, to: path + ".1") } catch { return }
        guard let next = try? Self.open(handle, path) else { return }
        pcap_dump_close(dumper)
        dumper = next
        written = Self.fileHeaderBytes
        rotations += 1
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
