import AoEWire
import AoETarget
import BlockDevices
import RBDDevice

/// What the server serves: every export, and the settings that are the whole process's. Built from the
/// config file or from the vblade-style command line (one export); a plain value, compared on reload.
public struct ServerSpec: Hashable, Sendable {
    public var exports: [ExportSpec]
    /// Where each export's protocol state is saved; nil keeps it in memory (the command line without --state-dir).
    public var stateDirectory: String?
    public var logLevel: TargetLog.Level = .info
    /// Every frame received and sent, by every export, to this pcap file.
    public var pcap: String?
    /// Bytes one pcap file may hold before it is rotated to FILE.1; nil: unbounded.
    public var pcapLimit: Int?
    /// Where the Prometheus endpoint listens; nil: off.
    public var metrics: ListenAddress?
    /// Frames are received through a PACKET_RX_RING where the kernel allows it; false: recvmmsg always.
    public var packetRing = true

    public init(exports: [ExportSpec], stateDirectory: String? = nil) {
        self.exports = exports
        self.stateDirectory = stateDirectory
    }

    public static let defaultStateDirectory = "/var/lib/aoe-target"
}

/// HOST:PORT for a TCP listener: "127.0.0.1:9110", "localhost:9110", "[::1]:9110", "0.0.0.0:9110".
public struct ListenAddress: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains(" ") else { return nil }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    public static let syntax = "HOST:PORT, e.g. 127.0.0.1:9110"
}

/// One export: a shelf.slot, the NICs it is served on, its backing path and how it is served.
public struct ExportSpec: Hashable, Sendable {
    public var address: ShelfSlot
    public var interfaces: [String]
    /// An image file, a block device, null:SIZE, or rbd:POOL/[NAMESPACE/]IMAGE.
    public var path: String
    /// For an rbd: path, the Ceph user the target connects as (client.ID); nil: admin, or what CEPH_ARGS says.
    public var cephID: String?
    /// For a writable rbd: export served by two hosts: stand by while another host holds the image's lock,
    /// take over when it stops answering.
    public var failover = false
    public var readOnly = false
    public var direct = false
    public var sync = false
    /// Offer TRIM where the device can discard (config key `trim`, `--no-trim`).
    public var trim = true
    public var buffers = 64
    public var mask: [MACAddress] = []
    public var configString = ""
    public var model = "Swift AoE target"
    public var serial: String?
    public var offsetSectors: UInt64 = 0
    public var lengthSectors: UInt64?
    public var passthrough = false
    public var allowATA: Set<UInt8> = []
    public var allowAllATA = false
    public var ioEngine: IOEngine = .automatic
    public var workers = 16
    /// Requests failed on purpose, for testing initiators; nil: none.
    public var faultPlan: FaultPlan?
    /// Where it was written: "FILE:LINE" of its [[export]] table, and of each key, for error messages.
    public var origin = SourceLocation(file: "command line", line: 0)
    public var keyOrigins: [String: SourceLocation] = [:]

    public init(address: ShelfSlot, interfaces: [String], path: String) {
        self.address = address
        self.interfaces = interfaces
        self.path = path
    }

    /// Where `key` was set, else the export's own table.
    public func location(of key: String) -> SourceLocation { keyOrigins[key] ?? origin }

    /// The settings that decide how the device is opened: if any differs, a reload must reopen it.
    public var deviceSettings: [String] {
        [path, cephID ?? "-", "\(failover)", "\(readOnly)", "\(direct)", "\(offsetSectors)", "\(lengthSectors.map(String.init) ?? "-")", "\(passthrough)"]
    }

    /// Equal ignoring where it was written (a reload that only moved lines changes nothing).
    public func sameSettings(as other: ExportSpec) -> Bool {
        var a = self, b = other
        a.origin = b.origin
        a.keyOrigins = b.keyOrigins
        return a == b
    }

    /// The export's part of the target configuration.
    public var targetConfiguration: TargetConfiguration {
        var c = TargetConfiguration(address: address)
        c.bufferCount = buffers
        c.configString = Array(configString.utf8)
        c.mask = mask
        c.model = model
        c.serial = serial
        c.durableWrites = sync
        c.trim = trim
        c.workers = workers
        c.ioEngine = ioEngine
        c.faultPlan = faultPlan
        return c
    }
}

public struct SourceLocation: Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public init(file: String, line: Int) {
        self.file = file
        self.line = line
    }
    public var description: String { line > 0 ? "\(file):\(line)" : file }
}

/// A problem with what the admin wrote, with where they wrote it.
public struct ConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    public var location: SourceLocation
    public var key: String?
    public var message: String
    public init(_ location: SourceLocation, key: String? = nil, _ message: String) {
        self.location = location
        self.key = key
        self.message = message
    }
    public var description: String { "\(location): \(key.map { "'\($0)': " } ?? "")\(message)" }
}

extension ExportSpec {
    /// The first setting that cannot work, as (key, why); the same rules for the config file and the command
    /// line. Whether the path and interfaces exist is checked when the export is opened.
    public var problem: (key: String, message: String)? {
        if !TargetConfiguration.bufferCountRange.contains(buffers) { return ("buffers", "\(buffers) is out of range: use 2-65535") }
        if configString.utf8.count > 1024 { return ("config_string", "is \(configString.utf8.count) bytes; at most 1024") }
        if !(1...256).contains(workers) { return ("workers", "must be 1-256") }
        if model.utf8.count > 40 { return ("model", "is longer than 40 characters") }
        if let serial, serial.utf8.count > 20 { return ("serial", "is longer than 20 characters") }
        if lengthSectors == 0 { return ("length", "must be at least 1 sector") }
        if mask.count > ExportAccess.maskCapacity { return ("mac_mask", "has \(mask.count) entries; at most \(ExportAccess.maskCapacity)") }
        if path.isEmpty { return ("path", "is empty") }
        if passthrough && (direct || sync || offsetSectors != 0 || lengthSectors != nil || path.hasPrefix("null:")) {
            return ("passthrough", "serves a whole drive as it is: direct, sync, offset, length and a null: device do not apply")
        }
        if !passthrough && (!allowATA.isEmpty || allowAllATA) { return (allowAllATA ? "allow_all_ata" : "allow_ata", "needs pass-through") }
        if RBDImageName.isRBD(path) {
            do { _ = try RBDImageName(parsing: path) } catch { return ("path", error.description) }
            let inapplicable = [("passthrough", passthrough), ("direct", direct), ("offset", offsetSectors != 0),
                                ("length", lengthSectors != nil), ("io_engine", ioEngine == .ioUring)]
            if let key = inapplicable.first(where: { $0.1 })?.0 {
                return (key, "does not apply to an RBD image (served whole, through librbd's own asynchronous I/O)")
            }
            if failover && readOnly { return ("failover", "needs a writable export: a read-only one takes no lock, so any number may serve the image") }
        } else if cephID != nil {
            return ("ceph_id", "applies only to an rbd: path")
        } else if failover {
            return ("failover", "applies only to an rbd: path (two hosts share the image through its lock)")
        }
        return nil
    }
}
