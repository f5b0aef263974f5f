import Glibc
import ATACore
import CLinuxShims
import LinuxSystem

/// What a pass-through command returned: the drive's registers, and whether data-in arrived.
public struct PassThroughResult: Hashable, Sendable {
    public var registers: ATAReply
    public var dataArrived: Bool
    /// Why the command did not reach or did not complete on the drive (for the log), if so.
    public var failure: String?
}

/// A device that runs ATA commands as they come, returning the drive's own registers.
public protocol ATAPassThroughDevice: BlockDevice {
    func passThrough(_ command: PassThroughCommand, data: UnsafeMutableRawBufferPointer) -> PassThroughResult
}

/// A real ATA drive behind Linux's SCSI/ATA translation (libata, or a USB bridge), reached with SG_IO and
/// ATA PASS-THROUGH(16). Opened exclusively: a mounted or already-exported disk is refused.
public final class SGIODevice: ATAPassThroughDevice, @unchecked Sendable {
    public enum OpenError: Error, CustomStringConvertible {
        case system(SystemError)
        case notADisk(String)
        case notATA(String, String)
        case noPermission(String)

        public var description: String {
            switch self {
            case .system(let e):
                switch e.errno {
                case ENOENT: return "\(e.context): no such device"
                case EBUSY: return "\(e.context): device busy (mounted, or exported by another process)"
                case EACCES, EPERM: return "\(e.context): permission denied"
                default: return e.description
                }
            case .notADisk(let p): return "\(p): not a disk (give a block device such as /dev/sda or an SCSI generic device /dev/sgN)"
            case .notATA(let p, let why): return "\(p): IDENTIFY through ATA PASS-THROUGH failed (\(why)); is it an ATA drive?"
            case .noPermission(let p): return "\(p): SG_IO with ATA PASS-THROUGH needs CAP_SYS_RAWIO (run as root), or use /dev/sgN opened read-write"
            }
        }
    }

    public let path: String
    public let sectorCount: UInt64
    public let capabilities: DeviceCapabilities
    public let identity: String
    public let identifyPage: IdentifyPage
    public var name: String { "drive \(path) (\(identifyPage.model), serial \(identifyPage.serial))" }
    private let fd: Int32

    public init(path: String, readOnly: Bool) throws(OpenError) {
        self.path = path
        var st = stat()
        guard stat(path, &st) == 0 else { throw .system(SystemError(call: "stat", errno: errno, context: path)) }
        let kind = st.st_mode & S_IFMT
        guard kind == S_IFBLK || kind == S_IFCHR else { throw .notADisk(path) }
        // SG_IO needs a read-write descriptor for commands that are not "safe" reads, even on a read-only export.
        let fd: Int32
        do { fd = try Syscall.open(path, flags: O_RDWR | O_EXCL | O_NONBLOCK) } catch { throw .system(error) }
        self.fd = fd
        capabilities = DeviceCapabilities(writable: !readOnly, canFlush: true)
        identity = "sg:\(st.st_rdev)"
        var page = [UInt8](repeating: 0, count: 512)
        let identify = PassThroughCommand(taskFile: TaskFile(commandStatus: 0xEC, count: 1, lbaRegisters: 0xA000_0000),
                                          protocolField: .pioDataIn, direction: .fromDevice, sectors: 1, writesMedia: false,
                                          timeoutMilliseconds: 15_000)
        let result = page.withUnsafeMutableBytes { Self.execute(fd: fd, path: path, identify, data: $0) }
        if let failure = result.failure {
            Syscall.close(fd)
            if failure.contains("Operation not permitted") { throw .noPermission(path) }
            throw .notATA(path, failure)
        }
        guard result.dataArrived, !result.registers.status.contains(.error), let parsed = IdentifyPage(bytes: page) else {
            Syscall.close(fd)
            throw .notATA(path, "status 0x\(String(result.registers.status.rawValue, radix: 16)) error 0x\(String(result.registers.error.rawValue, radix: 16))")
        }
        identifyPage = parsed
        sectorCount = parsed.sectors
    }

    deinit { Syscall.close(fd) }

    public func passThrough(_ command: PassThroughCommand, data: UnsafeMutableRawBufferPointer) -> PassThroughResult {
        Self.execute(fd: fd, path: path, command, data: data)
    }

    static let senseCapacity = 32
    static let checkCondition: UInt8 = 0x02
    static let driverSense: UInt16 = 0x08

    /// One SG_IO. The buffers live for the whole ioctl; `dxfer_direction` and `dxfer_len` agree with the CDB's
    /// T_DIR and count (libata does not check this for us).
    static func execute(fd: Int32, path: String, _ command: PassThroughCommand, data: UnsafeMutableRawBufferPointer) -> PassThroughResult {
        var cdb = SATCommandBlock.build(command)
        var sense = [UInt8](repeating: 0, count: senseCapacity)
        let bytes = command.sectors * sectorSize
        precondition(data.count >= bytes)
        var header = sg_io_hdr_t()
        header.interface_id = Int32(UInt8(ascii: "S"))
        switch command.direction {
        case .none: header.dxfer_direction = SG_DXFER_NONE
        case .fromDevice: header.dxfer_direction = SG_DXFER_FROM_DEV
        case .toDevice: header.dxfer_direction = SG_DXFER_TO_DEV
        }
        header.cmd_len = UInt8(cdb.count)
        header.mx_sb_len = UInt8(senseCapacity)
        header.dxfer_len = UInt32(command.direction == .none ? 0 : bytes)
        header.timeout = command.timeoutMilliseconds
        let failureRegisters = ATAReply.aborted(command.taskFile)
        let outcome: Result<Void, SystemError> = cdb.withUnsafeMutableBufferPointer { cdbBuffer in
            sense.withUnsafeMutableBufferPointer { senseBuffer in
                header.cmdp = cdbBuffer.baseAddress
                header.sbp = senseBuffer.baseAddress
                header.dxferp = command.direction == .none ? nil : data.baseAddress
                do throws(SystemError) { try Syscall.sgIO(fd, &header, context: path) } catch { return .failure(error) }
                return .success(())
            }
        }
        if case .failure(let error) = outcome {
            return PassThroughResult(registers: failureRegisters, dataArrived: false, failure: error.description)
        }
        if header.host_status != 0 || (header.driver_status & ~driverSense) != 0 {
            let what = header.host_status == 3 ? "timed out after \(command.timeoutMilliseconds) ms" : "host status \(header.host_status), driver status \(header.driver_status)"
            return PassThroughResult(registers: failureRegisters, dataArrived: false, failure: "SG_IO on \(path): \(what)")
        }
        let senseBytes = Array(sense.prefix(Int(header.sb_len_wr)))
        if header.status == 0 {
            // GOOD without CK_COND: the drive finished without error and no registers came back.
            let ok = ATAReply(status: ATAStatus(rawValue: 0x50), count: 0, lbaRegisters: command.taskFile.lbaRegisters)
            return PassThroughResult(registers: ok, dataArrived: command.direction == .fromDevice, failure: nil)
        }
        if header.status == checkCondition, let registers = SATSense.registers(senseBytes) {
            let failed = registers.status.contains(.error) || registers.status.contains(.deviceFault)
            return PassThroughResult(registers: registers, dataArrived: command.direction == .fromDevice && !failed, failure: nil)
        }
        let key = SATSense.senseKey(senseBytes).map { " sense key \($0)" } ?? ""
        return PassThroughResult(registers: failureRegisters, dataArrived: false,
                                 failure: "SG_IO on \(path): SCSI status \(header.status)\(key) without ATA registers")
    }

    private func readWrite(_ opcode: UInt8, _ buffer: UnsafeMutableRawBufferPointer, at lba: UInt64, direction: PassThroughCommand.Direction) throws(DeviceError) {
        var done = 0
        while done < buffer.count {
            let sectors = min(128, (buffer.count - done) / sectorSize)
            let task = TaskFile(commandStatus: opcode, count: UInt8(sectors), lbaRegisters: lba + UInt64(done / sectorSize), extended: true)
            let command = PassThroughCommand(taskFile: task, protocolField: .dma, direction: direction, sectors: sectors,
                                             writesMedia: direction == .toDevice, timeoutMilliseconds: 30_000)
            let result = passThrough(command, data: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            if result.failure != nil || result.registers.status.contains(.error) {
                throw DeviceError(SystemError(call: "SG_IO", errno: EIO, context: "\(path) LBA \(task.lbaRegisters): \(result.failure ?? "ATA error 0x\(String(result.registers.error.rawValue, radix: 16))")"))
            }
            done += sectors * sectorSize
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at lba: UInt64) throws(DeviceError) {
        try readWrite(0x25, buffer, at: lba, direction: .fromDevice)
    }

    public func write(from buffer: UnsafeRawBufferPointer, at lba: UInt64) throws(DeviceError) {
        try readWrite(0x35, UnsafeMutableRawBufferPointer(mutating: buffer), at: lba, direction: .toDevice)
    }

    public func flush() throws(DeviceError) {
        var none = [UInt8]()
        let command = PassThroughCommand(taskFile: TaskFile(commandStatus: 0xEA, lbaRegisters: 0, extended: true), protocolField: .nonData,
                                         direction: .none, sectors: 0, writesMedia: false, timeoutMilliseconds: 120_000)
        let result = none.withUnsafeMutableBytes { passThrough(command, data: $0) }
        if result.failure != nil || result.registers.status.contains(.error) {
            throw DeviceError(SystemError(call: "SG_IO(FLUSH CACHE EXT)", errno: EIO, context: path))
        }
    }
}
