import ArgumentParser
import Glibc
import AoEWire
import AoEServer
import AoEMetrics
import ATACore
import AoETarget
import BlockDevices
import LinuxSystem
import PacketTransport
import Synchronization

@main
struct AoETargetCommand: ParsableCommand {
    static let version = "0.10.0"
    static let configuration = CommandConfiguration(
        commandName: "aoe-target",
        abstract: "Export a disk image or block device as an ATA over Ethernet (AoEr11) target.",
        usage: """
            aoe-target [options] SHELF SLOT NETIF FILE
            aoe-target --config FILE [--verbose]
            aoe-target --check-config FILE
            """,
        discussion: """
        Serves FILE as AoE shelf SHELF, slot SLOT on network interface NETIF, to any AoE initiator on that \
        Ethernet segment: the Linux aoe driver (/dev/etherd/eSHELF.SLOT), iPXE (sanboot aoe:eSHELF.SLOT), \
        aoetools and aoectl. The command line is vblade's: `vblade -b 64 -r 0 1 eth1 disk.img` and \
        `aoe-target -b 64 -r 0 1 eth1 disk.img` mean the same; options may also follow the positionals.

        FILE is a regular file (locked, so two targets never serve one image), a block device (opened \
        exclusively, so a mounted or already-exported disk is refused), or null:SIZE (a device of SIZE bytes, \
        suffix K/M/G/T, whose reads return zeros and whose writes are discarded: a benchmark ceiling), or \
        rbd:POOL/IMAGE (rbd:POOL/NAMESPACE/IMAGE): a Ceph RBD image, reached with the settings librados reads \
        itself (CEPH_CONF or /etc/ceph/ceph.conf and the keyring it names) as client.admin or --ceph-id. A \
        writable RBD export takes the image's exclusive lock first; librbd's cache is off, so a write is \
        acknowledged only once the OSDs have committed it.

        DURABILITY: by default a write is acknowledged once the backing file has it (page cache): it survives \
        a crash or kill -9 of aoe-target but not a power cut, like a drive with its write cache on. FLUSH \
        CACHE (EXT) makes every earlier write durable (fdatasync). With --sync, every acknowledged write is \
        on stable storage (one fdatasync covers a group of concurrent writes). The Linux aoe initiator never \
        sends FLUSH, so use --sync when its filesystems must survive power loss.

        MANY EXPORTS: --config FILE serves every [[export]] of a TOML file (shelf, slot, interfaces, path, and \
        one key per option: read_only, direct, sync, buffers, mac_mask, config_string, model, serial, offset, \
        length, passthrough, allow_ata, allow_all_ata, io_engine, workers, inject_errors, ceph_id, failover; top level: state_dir, log_level, \
        pcap); see deploy/aoe-target.toml. What initiators change (config string, MAC mask list, reserve \
        list, write cache) is saved in state_dir (default /var/lib/aoe-target; --state-dir on the command \
        line) before the change is acknowledged.

        SIGNALS: SIGUSR1 logs the counters; SIGHUP reloads the config file (new exports start, removed ones \
        drain and stop, changed ones restart, mask or config string changes apply live; an invalid file \
        changes nothing); SIGINT/SIGTERM stop taking frames, finish the requests in flight, flush, log the \
        counters and exit 0.

        Needs root or CAP_NET_RAW (raw packet socket).
        """,
        version: version)

    @Argument(help: "Shelf (AoE major) number, 0-65534. Linux rejects 4095.")
    var shelf: Int?

    @Argument(help: "Slot (AoE minor) number, 0-254.")
    var slot: Int?

    @Argument(help: "Network interface to serve on, e.g. eth1.")
    var netif: String?

    @Argument(help: "Image file, block device, null:SIZE, or rbd:POOL/IMAGE.")
    var file: String?

    @Option(help: "Serve every export in this TOML file instead of the one on the command line (see deploy/aoe-target.toml). SIGHUP reloads it.")
    var config: String?

    @Option(name: .customLong("check-config"), help: "Check this config file and print what it would serve, then exit: no socket is opened and no image is locked.")
    var checkConfig: String?

    @Option(name: [.customShort("b"), .customLong("buffers")], help: "Buffer Count advertised and honoured: requests queued at once (2-65535).")
    var buffers: Int = 64

    @Flag(name: [.customShort("r"), .customLong("read-only")], help: "Export read-only: writes get ATA ABRT; the file is never opened for writing.")
    var readOnly = false

    @Flag(name: [.customShort("d"), .customLong("direct")], help: "Open the image with O_DIRECT (bypass the page cache).")
    var direct = false

    @Flag(name: [.customShort("s"), .customLong("sync")], help: "Durable mode: acknowledge a write only once it is on stable storage.")
    var sync = false

    @Flag(name: .customLong("no-trim"), help: "Do not offer TRIM (DATA SET MANAGEMENT), even where the device can discard (punch holes, WRITE ZEROES, rbd discard).")
    var noTrim = false

    @Option(name: [.customShort("m"), .customLong("mac-mask")], help: "Comma-separated MAC addresses allowed to use the export (the initial MAC Mask List).")
    var macMask: String?

    @Option(name: [.customShort("o"), .customLong("offset")], help: "Sectors (512 bytes) to skip at the start of FILE.")
    var offset: UInt64 = 0

    @Option(name: [.customShort("l"), .customLong("length")], help: "Sectors to export (default: to the end of FILE).")
    var length: UInt64?

    @Option(name: .customLong("config-string"), help: "Initial config string (at most 1024 bytes).")
    var configString: String = ""

    @Option(help: "IDENTIFY model string (40 characters at most).")
    var model: String = "Swift AoE target"

    @Option(help: "IDENTIFY serial number (20 characters at most; default: derived from the image, stable across restarts).")
    var serial: String?

    @Option(name: .customLong("io-engine"), help: "How device I/O runs for disk-backed images: io_uring (every request queued in the kernel, submitted and completed in batches), threads (--workers threads, one request each), or auto (io_uring when the kernel allows it). Memory-backed images are served on the receive thread, --passthrough uses threads.")
    var ioEngine: IOEngine = .automatic

    @Option(help: "With the threads engine: threads doing device I/O, one request each in flight on the device. With io_uring: the bound on the kernel's worker threads for requests that must block.")
    var workers: Int = 16

    @Option(name: .customLong("inject-errors"), help: ArgumentHelp("For testing how initiators handle a failing disk: fail this share of device requests with an I/O error (the initiator gets ABRT), chosen by a seeded generator, e.g. write:5 or read,flush:0.5:42.", valueName: "OPS:PERCENT[:SEED]"))
    var injectErrors: String?

    @Flag(help: "FILE is a real ATA drive (/dev/sdX or /dev/sgN): send every ATA command to it through SG_IO (SAT ATA PASS-THROUGH) and return the drive's own registers. Commands outside the allowlist get ABRT.")
    var passthrough = false

    @Option(name: .customLong("allow-ata"), help: "With --passthrough: also let these opcodes through (comma-separated, e.g. 0x92,0xF4). Their direction comes from the AoE W flag and the frame's data.")
    var allowATA: String?

    @Flag(name: .customLong("allow-all-ata"), help: "With --passthrough: let every opcode through, including ones that can destroy data or brick the drive.")
    var allowAllATA = false

    @Flag(help: "With a writable rbd: FILE served by two hosts: while another host holds the image's lock, stand by and send nothing for SHELF.SLOT; when that host stops answering Query Config for 3 s (or releases the lock), break its lock (Ceph blocklists it), take over and announce the export. A host that lost the lock is fenced: it answers nothing more.")
    var failover = false

    @Option(name: .customLong("ceph-id"), help: ArgumentHelp("With an rbd: FILE: connect to Ceph as client.ID (default: admin), with that user's keyring.", valueName: "ID"))
    var cephID: String?

    @Option(name: .customLong("state-dir"), help: "Keep what initiators change (config string, MAC mask list, reserve list, write cache) in DIR/eSHELF.SLOT.state, saved before each change is acknowledged and loaded at start; the saved state wins over --mac-mask and --config-string. Without it, such changes last until the process ends, as with vblade.")
    var stateDirectory: String?

    @Option(help: "Write every frame received and sent to this pcap file (open it with tshark or wireshark).")
    var pcap: String?

    @Option(name: .customLong("pcap-limit"), help: "With --pcap: rotate the capture when it reaches SIZE (e.g. 100M): the full file becomes FILE.1, replacing the previous one, so at most twice SIZE is kept. Default: unbounded.")
    var pcapLimit: String?

    @Option(help: ArgumentHelp("Serve Prometheus metrics at http://HOST:PORT/metrics (off by default). Bind to loopback (127.0.0.1) unless the network in between is trusted: the endpoint has no authentication.", valueName: "HOST:PORT"))
    var metrics: String?

    @Flag(name: .customLong("no-packet-ring"), help: "Receive frames with recvmmsg instead of a PACKET_RX_RING (the ring takes frames without a system call; without it, or when the kernel refuses it, recvmmsg is used). Config file: packet_ring = false.")
    var noPacketRing = false

    @Flag(help: "Log every request (rate-limited) and debug details.")
    var verbose = false

    /// Options that belong in the config file when there is one.
    var exportOptionsGiven: Bool {
        buffers != 64 || readOnly || direct || sync || macMask != nil || offset != 0 || length != nil || !configString.isEmpty
            || model != "Swift AoE target" || serial != nil || ioEngine != .automatic || workers != 16 || passthrough || injectErrors != nil || cephID != nil || failover
            || allowATA != nil || allowAllATA || pcap != nil || pcapLimit != nil || stateDirectory != nil || metrics != nil
            || noPacketRing
    }

    func validate() throws {
        let positionals = [shelf != nil, slot != nil, netif != nil, file != nil]
        if config != nil || checkConfig != nil {
            guard !positionals.contains(true) else { throw ValidationError("give either --config FILE or SHELF SLOT NETIF FILE, not both") }
            guard config == nil || checkConfig == nil else { throw ValidationError("--config and --check-config: give one") }
            guard !exportOptionsGiven else { throw ValidationError("with --config, every option but --verbose goes in the file, one key each (see deploy/aoe-target.toml)") }
            return
        }
        guard !positionals.contains(false) else { throw ValidationError("give SHELF SLOT NETIF FILE (or --config FILE)") }
        guard (0...65534).contains(shelf!) else { throw ValidationError("shelf \(shelf!) is out of range: use 0-65534 (65535 is the broadcast shelf)") }
        guard (0...254).contains(slot!) else { throw ValidationError("slot \(slot!) is out of range: use 0-254 (255 is the broadcast slot)") }
        if let macMask { _ = try parseMACs(macMask) }
        if let allowATA { _ = try parseOpcodes(allowATA) }
        if let problem = try commandLineExport().problem { throw ValidationError(cliProblem(problem)) }
    }

    /// A spec problem in the words of the command line.
    func cliProblem(_ problem: (key: String, message: String)) -> String {
        let flags = ["buffers": "buffer count", "config_string": "config string", "workers": "--workers", "model": "model",
                     "serial": "serial", "length": "length", "mac_mask": "--mac-mask",
                     "passthrough": "--passthrough", "allow_ata": "--allow-ata", "allow_all_ata": "--allow-all-ata", "ceph_id": "--ceph-id", "failover": "--failover", "direct": "--direct",
                     "offset": "--offset", "io_engine": "--io-engine"]
        // A path problem names the path itself.
        if problem.key == "path" { return problem.message }
        return "\(flags[problem.key] ?? problem.key) \(problem.message)"
    }

    func parseOpcodes(_ list: String) throws -> Set<UInt8> {
        Set(try list.split(separator: ",").map { item in
            let text = item.lowercased()
            let value = text.hasPrefix("0x") ? UInt8(text.dropFirst(2), radix: 16) : UInt8(text)
            guard let value else { throw ValidationError("'\(item)' is not an ATA opcode (0-255 or 0x00-0xFF)") }
            return value
        })
    }

    func parseMACs(_ list: String) throws -> [MACAddress] {
        try list.split(separator: ",").map {
            guard let mac = MACAddress(String($0)) else { throw ValidationError("'\($0)' is not a MAC address (aa:bb:cc:dd:ee:ff)") }
            return mac
        }
    }

    func fail(_ message: String) -> ExitCode {
        let line = "aoe-target: error: \(message)\n"
        var text = line
        text.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
        return ExitCode(1)
    }

    /// The vblade-style command line as a spec: one export on one interface.
    func commandLineExport() throws -> ExportSpec {
        var e = ExportSpec(address: ShelfSlot(shelf: UInt16(shelf!), slot: UInt8(slot!)), interfaces: [netif!], path: file!)
        e.readOnly = readOnly
        e.direct = direct
        e.sync = sync
        e.trim = !noTrim
        e.buffers = buffers
        e.mask = try macMask.map(parseMACs) ?? []
        e.configString = configString
        e.model = model
        e.serial = serial
        e.offsetSectors = offset
        e.lengthSectors = length
        e.passthrough = passthrough
        e.allowATA = try allowATA.map(parseOpcodes) ?? []
        e.allowAllATA = allowAllATA
        e.ioEngine = ioEngine
        e.workers = workers
        e.cephID = cephID
        e.failover = failover
        if let injectErrors {
            guard let plan = FaultPlan(parsing: injectErrors) else { throw ValidationError("--inject-errors: must be \(FaultPlan.syntax), not '\(injectErrors)'") }
            e.faultPlan = plan
        }
        return e
    }

    func readSpec(_ path: String) throws -> ServerSpec {
        let bytes: [UInt8]?
        do { bytes = try Syscall.readWholeFile(path) } catch { throw fail("\(error)") }
        guard let bytes else { throw fail("\(path): no such file") }
        do { return try ConfigFile.parse(String(decoding: bytes, as: UTF8.self), file: path) } catch { throw fail(error.description) }
    }

    func run() throws {
        if let checkConfig {
            let spec = try readSpec(checkConfig)
            do { for line in try ConfigCheck.describe(spec) { print(line) } } catch { throw fail(error.description) }
            print("\(checkConfig): OK, \(spec.exports.count) export\(spec.exports.count == 1 ? "" : "s")")
            return
        }
        var spec: ServerSpec
        if let config {
            spec = try readSpec(config)
        } else {
            spec = ServerSpec(exports: [try commandLineExport()], stateDirectory: stateDirectory)
            spec.pcap = pcap
            spec.packetRing = !noPacketRing
            if let pcapLimit {
                guard pcap != nil else { throw fail("--pcap-limit needs --pcap FILE") }
                guard let bytes = DeviceOpener.parseSize(pcapLimit), bytes >= 16 << 10, bytes <= Int.max else {
                    throw fail("--pcap-limit \(pcapLimit): give a size of at least 16K, e.g. 100M")
                }
                spec.pcapLimit = Int(bytes)
            }
            if let metrics {
                guard let address = ListenAddress(parsing: metrics) else { throw fail("--metrics \(metrics): give \(ListenAddress.syntax)") }
                spec.metrics = address
            }
        }
        if verbose { spec.logLevel = .debug }
        let log = TargetLog.standardError(minimum: spec.logLevel)
        for export in spec.exports where export.address.shelf == 4095 {
            log.log(.warning, "e\(export.address): shelf 4095 (0x0FFF) is rejected by the Linux aoe initiator (\"check shelf dip switches\")")
        }
        guard Privileges.canOpenPacketSockets else { throw fail("raw packet sockets need root or CAP_NET_RAW (run as root, or setcap cap_net_raw+ep aoe-target)") }

        // Signals are taken by one thread with sigwait, so every other thread runs undisturbed.
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGINT, SIGTERM, SIGUSR1, SIGHUP] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let server: Server
        do { server = try Server(spec: spec, log: log) } catch {
            // The command line has no file and line to name: say what is wrong as its flags would.
            throw fail(config == nil ? error.message : error.description)
        }
        // The listener is bound before anything is served: an address in use stops the start, with its reason.
        var metricsServer: MetricsServer? = nil
        if let address = spec.metrics {
            let exporter = MetricsExporter(version: Self.version) {
                server.servedExports.map { MetricsSource(address: $0.address, bufferCount: $0.bufferCount, statistics: $0.statistics, metrics: $0.metrics) }
            }
            do { metricsServer = try MetricsServer(host: address.host, port: address.port, exporter: exporter) } catch { throw fail(error.description) }
            log.log(.info, "metrics at http://\(metricsServer!.address)/metrics")
        }
        server.start()
        SignalLoop(signals: signals, server: server, configPath: config, log: log).run()
        server.stop()
        metricsServer?.close()
        for line in server.counters { log.log(.info, "stopped; counters: \(line)") }
    }
}

/// The main thread waits here for signals: SIGUSR1 logs the counters, SIGHUP reloads the config file,
/// SIGINT/SIGTERM return so the server stops.
struct SignalLoop {
    let signals: sigset_t
    let server: Server
    let configPath: String?
    let log: TargetLog

    func run() {
        var set = signals
        while true {
            var received: Int32 = 0
            guard sigwait(&set, &received) == 0 else { continue }
            switch received {
            case SIGUSR1:
                for line in server.counters { log.log(.info, "counters: \(line)") }
            case SIGHUP:
                reload()
            default:
                log.log(.info, "signal \(received): finishing requests in flight, flushing, exiting")
                return
            }
        }
    }

    /// A file that does not parse or whose new exports cannot be opened changes nothing.
    private func reload() {
        guard let configPath else {
            log.log(.info, "SIGHUP: nothing to reload (serving from the command line, not --config)")
            return
        }
        log.log(.info, "SIGHUP: reloading \(configPath)")
        do {
            guard let bytes = try Syscall.readWholeFile(configPath) else {
                log.log(.error, "reload: \(configPath): no such file; nothing changed")
                return
            }
            let spec = try ConfigFile.parse(String(decoding: bytes, as: UTF8.self), file: configPath)
            try server.reload(to: spec)
            log.log(.info, "reload: done; \(server.spec.exports.count) exports")
        } catch {
            log.log(.error, "reload: \(error); nothing changed")
        }
    }
}

extension IOEngine: ExpressibleByArgument {}
