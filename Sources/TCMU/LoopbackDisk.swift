import Glibc
import LinuxSystem

/// What goes wrong setting up or tearing down a TCMU-backed loopback disk, in the words an admin needs.
public enum LoopbackDiskError: Error, CustomStringConvertible, Equatable {
    case notRoot
    case configfsNotMounted
    case moduleMissing(String)
    case alreadyAttached(String)
    case notAttached(String)
    case noUIODevice(String)
    case diskDidNotAppear(String)
    case system(SystemError)

    public var description: String {
        switch self {
        case .notRoot: "must run as root (it creates configfs objects and opens /dev/uio*)"
        case .configfsNotMounted: "configfs is not mounted at /sys/kernel/config (mount -t configfs none /sys/kernel/config)"
        case .moduleMissing(let m): "kernel module \(m) is not loaded (modprobe \(m); the kernel needs target_core_user and tcm_loop)"
        case .alreadyAttached(let what): "\(what) is attached already (if an earlier aoectl attach died, remove it with aoectl detach)"
        case .notAttached(let what): "\(what) is not attached: no configfs object of it"
        case .noUIODevice(let name): "the kernel made no /dev/uio* for TCMU device \(name)"
        case .diskDidNotAppear(let what): "the SCSI disk did not appear: \(what)"
        case .system(let e): e.description
        }
    }
}

/// The configfs and sysfs names of one attached shelf.slot. Pure: derived from the address alone, so
/// `detach` after a crash finds what an earlier run made.
public struct LoopbackDiskNames: Hashable, Sendable {
    public var shelf: UInt16
    public var slot: UInt8
    public init(shelf: UInt16, slot: UInt8) { self.shelf = shelf; self.slot = slot }

    public static let configfs = "/sys/kernel/config/target"
    /// TCMU HBA ids must be numbers; ours sit far above the small ones targetcli and tcmu-runner pick.
    public var hbaID: UInt32 { 3_000_000_000 + UInt32(shelf) << 8 + UInt32(slot) }
    public var hbaDirectory: String { "\(Self.configfs)/core/user_\(hbaID)" }
    public var deviceName: String { "aoe-e\(shelf).\(slot)" }
    public var deviceDirectory: String { "\(hbaDirectory)/\(deviceName)" }
    /// dev_config: free text for the UIO device's name; no comma (the control file splits on it).
    public var deviceConfig: String { "aoe/e\(shelf).\(slot)" }
    private var wwnStem: String { "naa.5001405a" + hex(UInt(shelf), 4) + hex(UInt(slot), 2) }
    public var targetWWN: String { wwnStem + "00" }
    public var initiatorWWN: String { wwnStem + "01" }
    public var wwnDirectory: String { "\(Self.configfs)/loopback/\(targetWWN)" }
    public var tpgDirectory: String { "\(wwnDirectory)/tpgt_1" }
    public var lunDirectory: String { "\(tpgDirectory)/lun/lun_0" }
    public var lunLink: String { "\(lunDirectory)/\(deviceName)" }
    /// The UIO device's name starts with this (tcm-user/HBA/DEVICE/CONFIG).
    public var uioNamePrefix: String { "tcm-user/\(hbaID)/\(deviceName)/" }

    private func hex(_ v: UInt, _ digits: Int) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, digits - s.count)) + s
    }
}

/// Files in configfs and sysfs, through plain system calls.
enum SysFS {
    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    static func write(_ path: String, _ text: String) throws(LoopbackDiskError) {
        let fd = Glibc.open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .system(SystemError(call: "open", errno: errno, context: path)) }
        defer { Glibc.close(fd) }
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else { throw .system(SystemError(call: "write", errno: n < 0 ? errno : EIO, context: "\(path) <- \(text)")) }
    }

    static func read(_ path: String) -> String? { Syscall.readSmallTextFile(path) }

    static func makeDirectory(_ path: String) throws(LoopbackDiskError) {
        guard Glibc.mkdir(path, 0o755) == 0 || errno == EEXIST else { throw .system(SystemError(call: "mkdir", errno: errno, context: path)) }
    }

    /// Removes a configfs directory if it is there.
    static func removeDirectory(_ path: String) throws(LoopbackDiskError) {
        guard exists(path) else { return }
        guard Glibc.rmdir(path) == 0 || errno == ENOENT else { throw .system(SystemError(call: "rmdir", errno: errno, context: path)) }
    }

    static func entries(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }
}

/// A local SCSI disk whose every command reaches this process: a TCMU backstore (the ring, through
/// /dev/uioN) exported as LUN 0 of a tcm_loop target (which makes /dev/sdX and /dev/sgN).
///
/// Order matters: the backstore and its ring first (`open`), then someone must serve the ring, then
/// `addLUN`, whose SCSI scan sends INQUIRY and READ CAPACITY through the ring and waits for their answers.
/// Teardown mirrors it: `removeLUN` (the kernel may send SYNCHRONIZE CACHE, still served), then `close`.
public final class LoopbackDisk {
    public let names: LoopbackDiskNames
    public private(set) var uioDescriptor: Int32 = -1
    public private(set) var mapping: UnsafeMutableRawPointer?
    public private(set) var mappingSize = 0

    public init(names: LoopbackDiskNames) { self.names = names }

    /// Checks what the kernel must offer: root, configfs, the two modules.
    public static func checkPrerequisites() throws(LoopbackDiskError) {
        guard geteuid() == 0 else { throw .notRoot }
        guard SysFS.exists("/sys/kernel/config") && !SysFS.entries("/sys/kernel/config").isEmpty else { throw .configfsNotMounted }
        for module in ["target_core_mod", "target_core_user", "tcm_loop"] where !SysFS.exists("/sys/module/\(module)") {
            throw .moduleMissing(module)
        }
        guard SysFS.exists(LoopbackDiskNames.configfs) else { throw .moduleMissing("target_core_mod") }
    }

    /// Creates and enables the TCMU backstore (`sectors` of 512 bytes, at most `maxSectors` per command)
    /// and maps its ring.
    /// `commandTimeoutSeconds`: how long the kernel lets a command sit on the ring before it fails it.
    public func open(sectors: UInt64, maxSectors: Int, commandTimeoutSeconds: Int) throws(LoopbackDiskError) {
        try Self.checkPrerequisites()
        guard !SysFS.exists(names.deviceDirectory) && !SysFS.exists(names.wwnDirectory) else {
            throw .alreadyAttached("e\(names.shelf).\(names.slot)")
        }
        // What a failed step made is removed again: a second try must not find it "attached already".
        do { try create(sectors: sectors, maxSectors: maxSectors, commandTimeoutSeconds: commandTimeoutSeconds) } catch {
            try? close()
            throw error
        }
    }

    private func create(sectors: UInt64, maxSectors: Int, commandTimeoutSeconds: Int) throws(LoopbackDiskError) {
        try SysFS.makeDirectory(names.hbaDirectory)
        try SysFS.makeDirectory(names.deviceDirectory)
        try SysFS.write("\(names.deviceDirectory)/control",
                        "dev_config=\(names.deviceConfig),dev_size=\(sectors * 512),hw_block_size=512,hw_max_sectors=\(maxSectors)")
        try SysFS.write("\(names.deviceDirectory)/attrib/cmd_time_out", "\(commandTimeoutSeconds)")
        try SysFS.write("\(names.deviceDirectory)/enable", "1")
        let uio = try findUIO()
        // Non-blocking: the wait polls it together with a stop descriptor, and reads it only to clear an event.
        let fd = Glibc.open("/dev/\(uio)", O_RDWR | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw .system(SystemError(call: "open", errno: errno, context: "/dev/\(uio)")) }
        uioDescriptor = fd
        guard let sizeText = SysFS.read("/sys/class/uio/\(uio)/maps/map0/size"),
              let size = Int(sizeText.hasPrefix("0x") ? String(sizeText.dropFirst(2)) : sizeText, radix: 16), size > 0 else {
            throw .noUIODevice("\(names.deviceName): no map size in /sys/class/uio/\(uio)/maps/map0/size")
        }
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else { throw .system(SystemError(call: "mmap", errno: errno, context: "/dev/\(uio), \(size) bytes")) }
        mapping = p
        mappingSize = size
    }

    private func findUIO() throws(LoopbackDiskError) -> String {
        for _ in 0..<50 {
            for entry in SysFS.entries("/sys/class/uio") {
                if let name = SysFS.read("/sys/class/uio/\(entry)/name"), name.hasPrefix(names.uioNamePrefix) { return entry }
            }
            usleep(20_000)
        }
        throw .noUIODevice(names.deviceName)
    }

    /// Waits (up to `seconds`) until the kernel has queued commands or answers were taken; clears the event.
    public func waitForCommands(seconds: Double, orStop stop: Int32) -> Bool {
        guard Syscall.waitReadable(uioDescriptor, or: stop, timeout: seconds) else { return false }
        var count: UInt32 = 0
        _ = Glibc.read(uioDescriptor, &count, 4)
        return true
    }

    /// Tells the kernel that responses are on the ring (it walks the tail on any write to the UIO device).
    public func announceCompletions() {
        var one: UInt32 = 1
        _ = Glibc.write(uioDescriptor, &one, 4)
    }

    /// The tcm_loop target, its nexus and LUN 0 linked to the backstore; returns the SCSI disk's block and
    /// generic device names once they exist (within `seconds`). The ring must be served meanwhile.
    public func addLUN(seconds: Double = 60) throws(LoopbackDiskError) -> (block: String, generic: String) {
        try SysFS.makeDirectory("\(LoopbackDiskNames.configfs)/loopback")
        try SysFS.makeDirectory(names.wwnDirectory)
        try SysFS.makeDirectory(names.tpgDirectory)
        try SysFS.write("\(names.tpgDirectory)/nexus", names.initiatorWWN)
        try SysFS.makeDirectory("\(names.tpgDirectory)/lun")
        try SysFS.makeDirectory(names.lunDirectory)
        guard symlink(names.deviceDirectory, names.lunLink) == 0 || errno == EEXIST else {
            throw .system(SystemError(call: "symlink", errno: errno, context: "\(names.lunLink) -> \(names.deviceDirectory)"))
        }
        guard let address = SysFS.read("\(names.tpgDirectory)/address") else {
            throw .diskDidNotAppear("no \(names.tpgDirectory)/address")
        }
        let device = "/sys/bus/scsi/devices/\(address):0"
        let deadline = monotonicSeconds() + seconds
        while monotonicSeconds() < deadline {
            if let block = SysFS.entries("\(device)/block").first, let generic = SysFS.entries("\(device)/scsi_generic").first {
                return ("/dev/\(block)", "/dev/\(generic)")
            }
            usleep(50_000)
        }
        throw .diskDidNotAppear("nothing in \(device)/block and \(device)/scsi_generic after \(Int(seconds)) s")
    }

    /// Removes the tcm_loop objects (the SCSI disk goes away); what is absent already is skipped.
    public func removeLUN() throws(LoopbackDiskError) { try Self.removeLUN(names) }

    static func removeLUN(_ names: LoopbackDiskNames) throws(LoopbackDiskError) {
        if SysFS.exists(names.lunDirectory) {
            for entry in SysFS.entries(names.lunDirectory) {
                let path = "\(names.lunDirectory)/\(entry)"
                var st = stat()
                if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK { _ = unlink(path) }
            }
        }
        try SysFS.removeDirectory(names.lunDirectory)
        if SysFS.exists("\(names.tpgDirectory)/nexus"), let nexus = SysFS.read("\(names.tpgDirectory)/nexus"), !nexus.isEmpty {
            try? SysFS.write("\(names.tpgDirectory)/nexus", "NULL")
        }
        try SysFS.removeDirectory(names.tpgDirectory)
        try SysFS.removeDirectory(names.wwnDirectory)
    }

    /// Unmaps the ring, closes the UIO device and removes the backstore.
    public func close() throws(LoopbackDiskError) {
        if let mapping { munmap(mapping, mappingSize) }
        mapping = nil
        if uioDescriptor >= 0 { Glibc.close(uioDescriptor) }
        uioDescriptor = -1
        try Self.removeBackstore(names)
    }

    static func removeBackstore(_ names: LoopbackDiskNames) throws(LoopbackDiskError) {
        try SysFS.removeDirectory(names.deviceDirectory)
        try SysFS.removeDirectory(names.hbaDirectory)
    }

    /// Removes whatever an earlier run for this shelf.slot left: the LUN, then the backstore.
    public static func detach(_ names: LoopbackDiskNames) throws(LoopbackDiskError) {
        guard geteuid() == 0 else { throw .notRoot }
        guard SysFS.exists(names.wwnDirectory) || SysFS.exists(names.hbaDirectory) else {
            throw .notAttached("e\(names.shelf).\(names.slot)")
        }
        // Nobody serves the ring any more, so the SYNCHRONIZE CACHE that removing a disk with a write cache sends
        // would wait out the kernel's command timeout, with retries (minutes). "temporary write through" changes
        // only the kernel's idea of the cache (no MODE SELECT goes out), so none is sent; what the dead process
        // acknowledged had reached the target already. Offline, any other command fails at once.
        if let address = SysFS.read("\(names.tpgDirectory)/address") {
            try? SysFS.write("/sys/class/scsi_disk/\(address):0/cache_type", "temporary write through")
            try? SysFS.write("/sys/bus/scsi/devices/\(address):0/state", "offline")
        }
        try removeLUN(names)
        try removeBackstore(names)
    }
}
