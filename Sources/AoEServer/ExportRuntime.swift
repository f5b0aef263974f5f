import Glibc
import AoEWire
import ATACore
import AoETarget
import BlockDevices
import LinuxSystem
import PacketTransport
import RBDDevice
import Synchronization

/// Opens what an export spec names. Errors say where the spec was written and what is wrong with the path.
public enum DeviceOpener {
    public static func open(_ spec: ExportSpec) throws(ConfigError) -> any BlockDevice {
        let location = spec.location(of: "path")
        if spec.passthrough {
            do { return try SGIODevice(path: spec.path, readOnly: spec.readOnly) } catch {
                throw ConfigError(location, key: "path", error.description)
            }
        }
        if RBDImageName.isRBD(spec.path) {
            do throws(RBDOpenError) {
                let name: RBDImageName
                do { name = try RBDImageName(parsing: spec.path) } catch { throw RBDOpenError(error.description) }
                return try RBDImage(name, cephID: spec.cephID, readOnly: spec.readOnly)
            } catch {
                throw ConfigError(location, key: "path", error.description)
            }
        }
        if spec.path.hasPrefix("null:") {
            guard let bytes = parseSize(String(spec.path.dropFirst(5))), bytes >= 512 else {
                throw ConfigError(location, key: "path", "\(spec.path): give the null device a size of at least 512 bytes and at most 8 EiB, e.g. null:1G")
            }
            return NullDevice(sectors: bytes / 512, readOnly: spec.readOnly)
        }
        var options = ImageDevice.Options()
        options.readOnly = spec.readOnly
        options.direct = spec.direct
        options.offsetSectors = spec.offsetSectors
        options.lengthSectors = spec.lengthSectors
        do { return try ImageDevice(path: spec.path, options: options) } catch {
            throw ConfigError(location, key: "path", error.description)
        }
    }

    /// "512", "64K", "1G", "2T": bytes; nil when malformed or beyond UInt64.
    public static func parseSize(_ text: String) -> UInt64? {
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        guard let last = text.uppercased().last else { return nil }
        guard let unit = units[last] else { return UInt64(text) }
        guard let value = UInt64(text.dropLast()) else { return nil }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: unit)
        return overflow ? nil : bytes
    }
}

/// One export being served: its device, its protocol state, a socket on each of its interfaces, and one
/// `Target` (with its thread) over all of them, so the export has one request table: a retransmission that
/// comes in on another NIC still waits for an overlapping earlier write.
final class ExportRuntime: @unchecked Sendable {
    private(set) var spec: ExportSpec
    let device: any BlockDevice
    let state: ExportState
    let port: Port
    /// Per interface: how frames are received ("packet ring" or "recvmmsg"), for the log.
    private let receivePaths: [String]
    /// For a failover export: the thread that watches the lock and the active host.
    let failoverWatch: FailoverWatch?

    final class Port: @unchecked Sendable {
        let target: Target
        let stop = Atomic<Bool>(false)
        private var thread: JoinableThread?

        init(target: Target) { self.target = target }

        func start() {
            thread = JoinableThread { self.target.run(until: self.stop) }
        }

        /// Stops taking frames, waits for the requests in flight to be answered and the device flushed.
        func stopAndWait() {
            stop.store(true, ordering: .relaxed)
            thread?.join()
            thread = nil
        }
    }

    /// Opens the device and a socket per interface. Nothing is served until `start`.
    /// - Parameter recordsMetrics: the server serves a metrics endpoint, so per-request figures are recorded.
    /// - Parameter packetRing: receive through a PACKET_RX_RING where the kernel allows it.
    /// - Parameter carried: the open device of the export this one replaces, when it served actively with the
    ///   same device settings: it is served as it is, holding what it holds (an RBD image's exclusive lock).
    init(spec: ExportSpec, stateDirectory: String?, pcap: PcapWriter?, log: TargetLog, recordsMetrics: Bool, packetRing: Bool,
         carrying carried: (any BlockDevice)? = nil) throws(ConfigError) {
        self.spec = spec
        if let problem = spec.problem { throw ConfigError(spec.location(of: problem.key), key: problem.key, problem.message) }
        if let carried { device = carried } else { device = try DeviceOpener.open(spec) }
        var configuration = spec.targetConfiguration
        configuration.recordsMetrics = recordsMetrics
        state = try Self.loadState(spec, configuration: configuration, stateDirectory: stateDirectory, log: log)
        let policy = spec.passthrough ? PassThroughPolicy(allowedOpcodes: spec.allowATA, allowAll: spec.allowAllATA, readOnly: spec.readOnly) : nil
        if spec.allowAllATA {
            log.log(.warning, "e\(spec.address): allow_all_ata: every ATA command reaches \(spec.path), including ones that erase it or replace its firmware")
        }
        var sockets: [any FrameLink] = []
        var paths: [String] = []
        for interface in spec.interfaces {
            do {
                // Room for a full Buffer Count of jumbo frames in the socket's receive queue, or its ring.
                let socket = try PacketSocket(interface: interface, receiveBufferBytes: (spec.buffers + 32) * 10_240,
                                              receiveRingFrames: packetRing ? spec.buffers + 64 : nil,
                                              filter: { [address = spec.address] mac in PacketFilter.targetProgram(mac: mac, address: address) },
                                              pcap: pcap)
                paths.append(socket.usesReceiveRing ? "packet ring" : "recvmmsg")
                if let refusal = socket.receiveRingRefusal {
                    log.log(.warning, "e\(spec.address)@\(interface): no receive ring (\(refusal)); receiving with recvmmsg")
                }
                sockets.append(socket)
            } catch {
                throw ConfigError(spec.location(of: "interfaces"), key: "interfaces", error.description)
            }
        }
        receivePaths = paths
        let link: any FrameLink
        if sockets.count == 1 {
            link = sockets[0]
        } else {
            do { link = try LinkGroup(links: sockets) } catch {
                throw ConfigError(spec.location(of: "interfaces"), key: "interfaces", error.description)
            }
        }
        let exportLog = log.labelled("e\(spec.address)@\(link.interfaceName)")
        let role = carried != nil ? .active : try (device as? RBDImage).map { (image) throws(ConfigError) in try Self.role(of: image, spec, log: exportLog) } ?? .active
        let target = Target(configuration: configuration, device: device, link: link,
                            log: exportLog, passThroughPolicy: policy, state: state, role: role)
        if spec.ioEngine == .ioUring && !target.usesIOUring && !device.capabilities.neverBlocks && !spec.passthrough {
            throw ConfigError(spec.location(of: "io_engine"), key: "io_engine",
                              "io_uring: the kernel refused io_uring (see the log line above); use threads")
        }
        port = Port(target: target)
        failoverWatch = (device as? RBDImage).flatMap { image in
            spec.failover ? FailoverWatch(image: image, target: target, address: spec.address, interfaces: spec.interfaces, log: exportLog) : nil
        }
    }

    /// A writable RBD export answers only while it holds the image's exclusive lock, taken before anything is
    /// served: without failover a lock held elsewhere is an error; with it, the export stands by.
    static func role(of image: RBDImage, _ spec: ExportSpec, log: TargetLog) throws(ConfigError) -> Target.Role {
        if spec.readOnly { return .active }
        do { try image.acquireExclusiveLock() } catch {
            // An image without the lock feature cannot fail over either.
            guard spec.failover, image.hasExclusiveLock else { throw ConfigError(spec.location(of: "path"), key: "path", error.description) }
            log.log(.info, "standby: \(error); sending nothing for e\(spec.address) while that host answers")
            return .standby
        }
        return .active
    }

    /// The export's protocol state: what was saved, else the configured mask and config string. The saved
    /// state wins: it is what initiators changed since.
    static func loadState(_ spec: ExportSpec, configuration: TargetConfiguration, stateDirectory: String?,
                          log: TargetLog) throws(ConfigError) -> ExportState {
        let fresh = ExportProtocolState(configuration: configuration)
        guard let stateDirectory else { return ExportState(initial: fresh, durableExport: spec.sync) }
        let location = SourceLocation(file: "state_dir", line: 0)
        do { try Syscall.makeDirectory(stateDirectory) } catch { throw ConfigError(location, "\(error)") }
        let file = StateFile(directory: stateDirectory, address: spec.address)
        let saved: ExportProtocolState?
        do { saved = try file.load() } catch { throw ConfigError(location, error.description) }
        if let saved {
            log.log(.info, "e\(spec.address): state loaded from \(file.path): mask \(saved.access.mask.map(\.description)), reserve \(saved.access.reservation.map(\.description)), config string \(saved.configString.value.count) bytes")
            if saved.access.mask != fresh.access.mask && !configuration.mask.isEmpty {
                log.log(.warning, "e\(spec.address): the saved MAC mask list (changed by initiators) overrides the configured one; delete \(file.path) to start from the configuration")
            }
        }
        return ExportState(initial: saved ?? fresh, durableExport: spec.sync, file: file)
    }

    func start(log: TargetLog) {
        let t = port.target
        for p in 0..<t.link.portCount {
            let mac = t.link.macAddress(port: UInt8(p))
            let name = spec.interfaces[p]
            t.log.log(.info, "\(t.role == .standby ? "standing by to serve" : "serving") \(device.name) (\(device.sectorCount) sectors, \(device.capabilities.writable ? "read-write" : "read-only")\(spec.sync ? ", durable writes" : "")\(t.offersTrim ? ", TRIM" : ""), \(t.ioDescription)) as e\(spec.address) on \(name) (\(mac), MTU \(t.link.currentMTU()), \(t.configuration.bufferCount) buffers, \(receivePaths[p]))")
        }
        port.start()
        failoverWatch?.start()
    }

    /// Stops taking frames, finishes what is in flight on every NIC, flushes.
    func stop() {
        failoverWatch?.stopAndWait()
        port.stopAndWait()
    }

    /// Applies the protocol-state keys of a reloaded spec whose value in the file changed: the admin's newer
    /// word wins over what was saved. Returns what was applied, for the log.
    /// A setting that cannot change while serving (a read-only device asked to take writes, a Buffer Count
    /// beyond the export's frame slots): the export must be reopened.
    struct NeedsReopen: Error, CustomStringConvertible {
        var key: String
        var description: String { "\(key) cannot change without reopening the export" }
    }

    /// Applies a reload's mask, config string, buffers, read_only and sync to the live export: no request is
    /// dropped and nothing is reopened. Returns the keys applied.
    func applyStateChanges(to new: ExportSpec) throws -> [String] {
        let old = spec
        let target = port.target
        if new.buffers != old.buffers && new.buffers > target.bufferCountCapacity { throw NeedsReopen(key: "buffers") }
        if new.readOnly != old.readOnly && !new.readOnly && !device.capabilities.writable { throw NeedsReopen(key: "read_only") }
        var applied: [String] = []
        // What is saved first (it can fail, and then nothing has changed), then what cannot fail.
        try state.update { state in
            if new.mask != old.mask {
                state.access = ExportAccess(mask: new.mask, reservation: state.access.reservation)
                applied.append("mac_mask")
            }
            if new.configString != old.configString {
                state.configString = ConfigStringState(Array(new.configString.utf8))
                applied.append("config_string")
            }
        }
        if new.sync != old.sync {
            try state.setDurableExport(new.sync)
            applied.append("sync")
        }
        if new.buffers != old.buffers {
            _ = target.setBufferCount(new.buffers)
            applied.append("buffers")
        }
        if new.readOnly != old.readOnly {
            _ = target.setReadOnly(new.readOnly)
            applied.append("read_only")
        }
        spec = new
        return applied
    }

    var counters: String { "\(port.target.link.interfaceName): \(port.target.statistics.summary)" }
}
