import AoEWire
import AoETarget
import BlockDevices
import LinuxSystem
import PacketTransport
import Synchronization

/// The whole process: every export of a `ServerSpec`, started together, reloaded as one, stopped as one.
/// Start and reload open everything new before serving any of it, so a bad file changes nothing.
public final class Server: @unchecked Sendable {
    public private(set) var spec: ServerSpec
    public let log: TargetLog
    private let pcap: PcapWriter?
    private var exports: [ShelfSlot: ExportRuntime] = [:]
    private let served = Mutex<[ServedExport]>([])

    /// Opens every export (devices, state, sockets); throws the first problem and leaves nothing open.
    public init(spec: ServerSpec, log: TargetLog) throws(ConfigError) {
        self.spec = spec
        self.log = log
        if let path = spec.pcap {
            do { pcap = try PcapWriter(path: path, limitBytes: spec.pcapLimit) } catch {
                throw ConfigError(SourceLocation(file: "pcap", line: 0), key: "pcap", error.description)
            }
        } else {
            pcap = nil
        }
        for export in spec.exports {
            exports[export.address] = try open(export)
        }
    }

    /// An export with the process-wide settings this server started with.
    private func open(_ export: ExportSpec, carrying device: (any BlockDevice)? = nil) throws(ConfigError) -> ExportRuntime {
        try ExportRuntime(spec: export, stateDirectory: spec.stateDirectory, pcap: pcap, log: log,
                          recordsMetrics: spec.metrics != nil, packetRing: spec.packetRing, carrying: device)
    }

    public func start() {
        for export in spec.exports { exports[export.address]?.start(log: log) }
        publish()
        log.log(.info, "\(exports.count) export\(exports.count == 1 ? "" : "s") on \(Set(spec.exports.flatMap(\.interfaces)).sorted().joined(separator: ", "))")
    }

    /// Stops every export: no new frames, requests in flight answered, devices flushed.
    public func stop() {
        // Every export stops taking frames at once, then each drains: one slow device holds up no other.
        for export in exports.values { export.port.stop.store(true, ordering: .relaxed) }
        for export in exports.values { export.stop() }
        pcap?.close()
        served.withLock { $0 = [] }
    }

    public var counters: [String] {
        spec.exports.compactMap { e in exports[e.address].map { "e\(e.address): \($0.counters)" } }
    }

    /// What a reload does to each export.
    public enum Change: Hashable, Sendable {
        case add, remove
        /// A setting that shapes the device or its ports changed (path, read_only, direct, sync, buffers,
        /// interfaces, io_engine, ...): the export is drained (requests in flight answered, device flushed),
        /// closed and opened again with the new settings and the same protocol state.
        case restart
        /// Only settings that can change while serving changed (mask, config string, buffers, read_only, sync):
        /// applied to the live export, no request dropped, nothing reopened. (Should one turn out to need the
        /// device reopened, such as read_only off on a device opened read-only, the export restarts instead.)
        case applyState
        case keep
    }

    public static func plan(from old: ServerSpec, to new: ServerSpec) -> [ShelfSlot: Change] {
        var plan: [ShelfSlot: Change] = [:]
        let before = Dictionary(uniqueKeysWithValues: old.exports.map { ($0.address, $0) })
        for export in new.exports {
            guard let previous = before[export.address] else { plan[export.address] = .add; continue }
            var stateOnly = export
            stateOnly.mask = previous.mask
            stateOnly.configString = previous.configString
            stateOnly.buffers = previous.buffers
            stateOnly.readOnly = previous.readOnly
            stateOnly.sync = previous.sync
            plan[export.address] = export.sameSettings(as: previous) ? .keep : stateOnly.sameSettings(as: previous) ? .applyState : .restart
        }
        for export in old.exports where plan[export.address] == nil { plan[export.address] = .remove }
        return plan
    }

    /// Moves to `new`. Exports the reload does not touch never notice. New exports are opened before anything
    /// stops: if one fails (a missing file, an unknown interface), nothing changes and the error is thrown.
    /// Process-wide settings (state_dir, log_level, pcap, metrics, packet_ring) take effect at the next start.
    public func reload(to new: ServerSpec) throws(ConfigError) {
        let plan = Self.plan(from: spec, to: new)
        let newSpecs = Dictionary(uniqueKeysWithValues: new.exports.map { ($0.address, $0) })
        // Everything but the exports is process-wide: compared as the whole spec with the exports set aside.
        var newProcessSettings = new
        newProcessSettings.exports = spec.exports
        if newProcessSettings != spec {
            log.log(.warning, "reload: state_dir, log_level, pcap, pcap_limit, metrics and packet_ring take effect at the next start")
        }
        var opened: [ShelfSlot: ExportRuntime] = [:]
        for (address, change) in plan where change == .add {
            opened[address] = try open(newSpecs[address]!)
        }
        for (address, change) in plan.sorted(by: { "\($0.key)" < "\($1.key)" }) {
            switch change {
            case .keep:
                break
            case .add:
                exports[address] = opened[address]
                exports[address]?.start(log: log)
                log.log(.info, "reload: e\(address) added")
            case .remove:
                exports[address]?.stop()
                exports[address] = nil
                log.log(.info, "reload: e\(address) removed; stopped after answering its requests in flight")
            case .applyState:
                guard let export = exports[address] else { break }
                do {
                    let applied = try export.applyStateChanges(to: newSpecs[address]!)
                    log.log(.info, "reload: e\(address): \(applied.joined(separator: ", ")) applied while serving")
                } catch let reopen as ExportRuntime.NeedsReopen {
                    log.log(.info, "reload: e\(address): \(reopen); restarting it")
                    restart(address, to: newSpecs[address]!)
                } catch {
                    log.log(.error, "reload: e\(address): \(error); kept as it was")
                }
            case .restart:
                restart(address, to: newSpecs[address]!)
            }
        }
        // The process-wide settings stay as started. What is really served: an export that fell back to its
        // previous settings (or failed) shows as such.
        spec.exports = new.exports.compactMap { exports[$0.address]?.spec }
        publish()
    }

    /// Drains an export (requests in flight answered, device flushed), closes it and opens it with `new`; if
    /// that fails, opens it again as it was. When the device settings are the same and the export was active,
    /// the open device carries over: an RBD image keeps its exclusive lock (a failover peer never sees it
    /// free, so a reload is not a takeover), a block device its exclusive open. A standby or fenced export's
    /// device is opened again: that is how a fenced export serves again.
    private func restart(_ address: ShelfSlot, to new: ExportSpec) {
        guard let old = exports[address] else { return }
        let previous = old.spec
        old.stop()
        let carried = new.deviceSettings == previous.deviceSettings && old.port.target.role == .active ? old.device : nil
        // Dropped before reopening: an image lock or exclusive open that does not carry over must be released.
        exports[address] = nil
        do throws(ConfigError) {
            exports[address] = try open(new, carrying: carried)
            log.log(.info, "reload: e\(address) restarted with its new settings\(carried != nil ? " (its device kept open)" : "")")
        } catch {
            log.log(.error, "reload: e\(address): \(error); serving it with its previous settings")
            exports[address] = try? open(previous, carrying: carried)
            if exports[address] == nil { log.log(.error, "reload: e\(address) could not be opened again; not served") }
        }
        exports[address]?.start(log: log)
    }

    /// An export as the metrics exporter sees it.
    public struct ServedExport: Sendable {
        public var address: ShelfSlot
        public var bufferCount: Int
        public var statistics: TargetStatistics
        public var metrics: ExportMetrics
    }

    /// The exports served now; safe to read from any thread (the metrics listener's).
    public var servedExports: [ServedExport] { served.withLock { $0 } }

    private func publish() {
        let now = spec.exports.compactMap { e in
            exports[e.address].map { ServedExport(address: e.address, bufferCount: e.buffers,
                                                  statistics: $0.port.target.statistics, metrics: $0.port.target.metrics) }
        }
        served.withLock { $0 = now }
    }
}
