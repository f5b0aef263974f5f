import ArgumentParser
import Glibc
import AoEWire
import ATACore
import AoETarget
import BlockDevices
import LinuxSystem
import PacketTransport
import Synchronization

@main
struct AoETargetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aoe-target",
        abstract: "Export a disk image or block device as an ATA over Ethernet (AoEr11) target.",
        discussion: """
        Serves FILE as AoE shelf SHELF, slot SLOT on network interface NETIF, to any AoE initiator on that \
        Ethernet segment: the Linux aoe driver (/dev/etherd/eSHELF.SLOT), iPXE (sanboot aoe:eSHELF.SLOT), \
        aoetools and aoectl. The command line is vblade's: `vblade -b 64 -r 0 1 eth1 disk.img` and \
        `aoe-target -b 64 -r 0 1 eth1 disk.img` mean the same; options may also follow the positionals.

        FILE is a regular file (locked, so two targets never serve one image), a block device (opened \
        exclusively, so a mounted or already-exported disk is refused), or null:SIZE (a device of SIZE bytes, \
        suffix K/M/G/T, whose reads return zeros and whose writes are discarded: a benchmark ceiling).

        DURABILITY: by default a write is acknowledged once the backing file has it (page cache): it survives \
        a crash or kill -9 of aoe-target but not a power cut, like a drive with its write cache on. FLUSH \
        CACHE (EXT) makes every earlier write durable (fdatasync). With --sync, every acknowledged write is \
        on stable storage (one fdatasync covers a group of concurrent writes). The Linux aoe initiator never \
        sends FLUSH, so use --sync when its filesystems must survive power loss.

        SIGNALS: SIGUSR1 logs the counters; SIGINT/SIGTERM stop taking frames, finish the requests in \
        flight, flush, log the counters and exit 0.

        Needs root or CAP_NET_RAW (raw packet socket).
        """)

    @Argument(help: "Shelf (AoE major) number, 0-65534. Linux rejects 4095.")
    var shelf: Int

    @Argument(help: "Slot (AoE minor) number, 0-254.")
    var slot: Int

    @Argument(help: "Network interface to serve on, e.g. eth1.")
    var netif: String

    @Argument(help: "Image file, block device, or null:SIZE.")
    var file: String

    @Option(name: [.customShort("b"), .customLong("buffers")], help: "Buffer Count advertised and honoured: requests queued at once (2-65535).")
    var buffers: Int = 64

    @Flag(name: [.customShort("r"), .customLong("read-only")], help: "Export read-only: writes get ATA ABRT; the file is never opened for writing.")
    var readOnly = false

    @Flag(name: [.customShort("d"), .customLong("direct")], help: "Open the image with O_DIRECT (bypass the page cache).")
    var direct = false

    @Flag(name: [.customShort("s"), .customLong("sync")], help: "Durable mode: acknowledge a write only once it is on stable storage.")
    var sync = false

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

    @Flag(help: "FILE is a real ATA drive (/dev/sdX or /dev/sgN): send every ATA command to it through SG_IO (SAT ATA PASS-THROUGH) and return the drive's own registers. Commands outside the allowlist get ABRT.")
    var passthrough = false

    @Option(name: .customLong("allow-ata"), help: "With --passthrough: also let these opcodes through (comma-separated, e.g. 0x92,0xF4). Their direction comes from the AoE W flag and the frame's data.")
    var allowATA: String?

    @Flag(name: .customLong("allow-all-ata"), help: "With --passthrough: let every opcode through, including ones that can destroy data or brick the drive.")
    var allowAllATA = false

    @Option(name: .customLong("state-dir"), help: "Keep what initiators change (config string, MAC mask list, reserve list, write cache) in DIR/eSHELF.SLOT.state, saved before each change is acknowledged and loaded at start; the saved state wins over --mac-mask and --config-string. Without it, such changes last until the process ends, as with vblade.")
    var stateDirectory: String?

    @Option(help: "Write every frame received and sent to this pcap file (open it with tshark or wireshark).")
    var pcap: String?

    @Flag(help: "Log every request (rate-limited) and debug details.")
    var verbose = false

    func validate() throws {
        guard (0...65534).contains(shelf) else { throw ValidationError("shelf \(shelf) is out of range: use 0-65534 (65535 is the broadcast shelf)") }
        guard (0...254).contains(slot) else { throw ValidationError("slot \(slot) is out of range: use 0-254 (255 is the broadcast slot)") }
        guard TargetConfiguration.bufferCountRange.contains(buffers) else { throw ValidationError("buffer count \(buffers) is out of range: use 2-65535") }
        guard configString.utf8.count <= 1024 else { throw ValidationError("config string is \(configString.utf8.count) bytes; at most 1024") }
        guard (1...256).contains(workers) else { throw ValidationError("workers must be 1-256") }
        if let macMask { _ = try parseMACs(macMask) }
        if let length, length == 0 { throw ValidationError("length must be at least 1 sector") }
        if model.utf8.count > 40 { throw ValidationError("model is longer than 40 characters") }
        if let serial, serial.utf8.count > 20 { throw ValidationError("serial is longer than 20 characters") }
        if passthrough && (direct || sync || offset != 0 || length != nil || file.hasPrefix("null:")) {
            throw ValidationError("--passthrough serves a whole drive as it is: --direct, --sync, --offset, --length and null: do not apply")
        }
        if !passthrough && (allowATA != nil || allowAllATA) { throw ValidationError("--allow-ata and --allow-all-ata need --passthrough") }
        if let allowATA { _ = try parseOpcodes(allowATA) }
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

    func openDevice() throws -> any BlockDevice {
        if passthrough {
            do { return try SGIODevice(path: file, readOnly: readOnly) } catch { throw fail(error.description) }
        }
        if file.hasPrefix("null:") {
            guard let bytes = parseSize(String(file.dropFirst(5))), bytes >= 512 else {
                throw fail("\(file): give the null device a size, e.g. null:1G")
            }
            return NullDevice(sectors: bytes / 512, readOnly: readOnly)
        }
        var options = ImageDevice.Options()
        options.readOnly = readOnly
        options.direct = direct
        options.offsetSectors = offset
        options.lengthSectors = length
        do { return try ImageDevice(path: file, options: options) } catch { throw fail(error.description) }
    }

    func run() throws {
        let log = TargetLog.standardError(minimum: verbose ? .debug : .info)
        if shelf == 4095 { log.log(.warning, "shelf 4095 (0x0FFF) is rejected by the Linux aoe initiator (\"check shelf dip switches\")") }
        guard Privileges.canOpenPacketSockets else { throw fail("raw packet sockets need root or CAP_NET_RAW (run as root, or setcap cap_net_raw+ep aoe-target)") }

        // Signals are taken by one thread with sigwait, so every other thread runs undisturbed.
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGINT, SIGTERM, SIGUSR1] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let device = try openDevice()
        var recorder: PcapWriter? = nil
        if let pcap {
            do { recorder = try PcapWriter(path: pcap) } catch { throw fail(error.description) }
        }
        var configuration = TargetConfiguration(address: ShelfSlot(shelf: UInt16(shelf), slot: UInt8(slot)))
        configuration.bufferCount = buffers
        configuration.configString = Array(configString.utf8)
        configuration.mask = try macMask.map(parseMACs) ?? []
        configuration.model = model
        configuration.serial = serial
        configuration.durableWrites = sync
        configuration.workers = workers
        configuration.ioEngine = ioEngine
        let socket: PacketSocket
        do {
            // Room for a full Buffer Count of jumbo frames in the socket's receive queue.
            socket = try PacketSocket(interface: netif, receiveBufferBytes: (buffers + 32) * 10_240,
                                      filter: { [address = configuration.address] mac in PacketFilter.targetProgram(mac: mac, address: address) },
                                      pcap: recorder)
        } catch { throw fail(error.description) }
        let policy = passthrough ? PassThroughPolicy(allowedOpcodes: try allowATA.map(parseOpcodes) ?? [], allowAll: allowAllATA, readOnly: readOnly) : nil
        if allowAllATA { log.log(.warning, "--allow-all-ata: every ATA command reaches \(file), including ones that erase it or replace its firmware") }
        let state = try loadState(configuration, log: log)
        let target = Target(configuration: configuration, device: device, link: socket, log: log, passThroughPolicy: policy, state: state)
        if ioEngine == .ioUring && !target.usesIOUring && !device.capabilities.neverBlocks && !passthrough {
            throw fail("--io-engine io_uring: the kernel refused io_uring (see the log line above); use --io-engine threads")
        }
        log.log(.info, "serving \(device.name) (\(device.sectorCount) sectors, \(device.capabilities.writable ? "read-write" : "read-only")\(sync ? ", durable writes" : ""), \(target.ioDescription)) as e\(configuration.address) on \(netif) (\(socket.macAddress), MTU \(socket.currentMTU()), \(target.configuration.bufferCount) buffers)")

        let control = SignalControl(signals: signals, target: target, log: log)
        control.start()
        target.run(until: control.stop)
        recorder?.close()
        log.log(.info, "stopped; counters: \(target.statistics.summary)")
    }
}

extension AoETargetCommand {
    /// The export's protocol state: what --state-dir saved, else the configured mask and config string.
    func loadState(_ configuration: TargetConfiguration, log: TargetLog) throws -> ExportState {
        let fresh = ExportProtocolState(configuration: configuration)
        guard let stateDirectory else { return ExportState(initial: fresh, durableExport: configuration.durableWrites) }
        do { try Syscall.makeDirectory(stateDirectory) } catch { throw fail("--state-dir: \(error)") }
        let file = StateFile(directory: stateDirectory, address: configuration.address)
        let saved: ExportProtocolState?
        do { saved = try file.load() } catch { throw fail(error.description) }
        if let saved {
            log.log(.info, "state loaded from \(file.path): mask \(saved.access.mask.map(\.description)), reserve \(saved.access.reservation.map(\.description)), config string \(saved.configString.value.count) bytes")
            if saved.access.mask != fresh.access.mask && !configuration.mask.isEmpty {
                log.log(.warning, "the saved MAC mask list (changed by initiators) overrides --mac-mask; delete \(file.path) to start from --mac-mask")
            }
        }
        return ExportState(initial: saved ?? fresh, durableExport: configuration.durableWrites, file: file)
    }
}

func parseSize(_ text: String) -> UInt64? {
    let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    guard let last = text.uppercased().last else { return nil }
    if let unit = units[last] { return UInt64(text.dropLast()).map { $0 * unit } }
    return UInt64(text)
}

/// Owns the signal-waiting thread: SIGUSR1 logs counters, SIGINT/SIGTERM raise `stop`.
final class SignalControl: @unchecked Sendable {
    let stop = Atomic<Bool>(false)
    let signals: sigset_t
    let target: Target
    let log: TargetLog

    init(signals: sigset_t, target: Target, log: TargetLog) {
        self.signals = signals
        self.target = target
        self.log = log
    }

    func start() {
        var thread = pthread_t()
        let box = Unmanaged.passRetained(self)
        pthread_create(&thread, nil, { raw in
            let control = Unmanaged<SignalControl>.fromOpaque(raw!).takeRetainedValue()
            control.loop()
            return nil
        }, box.toOpaque())
        pthread_detach(thread)
    }

    private func loop() {
        var set = signals
        while true {
            var received: Int32 = 0
            guard sigwait(&set, &received) == 0 else { continue }
            if received == SIGUSR1 {
                log.log(.info, "counters: \(target.statistics.summary)")
                continue
            }
            log.log(.info, "signal \(received): finishing requests in flight, flushing, exiting")
            stop.store(true, ordering: .relaxed)
            return
        }
    }
}

extension IOEngine: ExpressibleByArgument {}
