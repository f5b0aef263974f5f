import Glibc
import LinuxSystem
import CLinuxShims

/// A disk image: a regular file or a block device, optionally a window of it (offset and length in sectors).
public final class ImageDevice: FileBackedDevice, @unchecked Sendable {
    public struct Options: Hashable, Sendable {
        public var readOnly = false
        /// O_DIRECT: bypass the page cache (buffers and offsets 512-aligned).
        public var direct = false
        /// Sectors to skip at the start of the file.
        public var offsetSectors: UInt64 = 0
        /// Sectors to export; nil = up to the end.
        public var lengthSectors: UInt64? = nil
        public init() {}
    }

    public enum OpenError: Error, CustomStringConvertible {
        case system(SystemError)
        case notARegularFileOrBlockDevice(String)
        case inUse(String)
        case tooSmall(path: String, sectors: UInt64, offset: UInt64, length: UInt64?)
        case empty(String)
        case directNeedsLargerSectors(path: String, alignment: Int)

        public var description: String {
            switch self {
            case .system(let e):
                switch e.errno {
                case ENOENT: return "\(e.context): no such file"
                case EACCES, EPERM: return "\(e.context): permission denied"
                case EBUSY: return "\(e.context): device busy (mounted, or exported by another process)"
                case EINVAL where e.call == "open": return "\(e.context): the filesystem does not support O_DIRECT (--direct)"
                default: return e.description
                }
            case .notARegularFileOrBlockDevice(let p): return "\(p): not a regular file or block device"
            case .inUse(let p): return "\(p): in use by another process (it holds the image's lock; two targets must never serve one image)"
            case .tooSmall(let p, let s, let o, let l):
                return "\(p): image too small: it has \(s) sectors, the window needs offset \(o)" + (l.map { " + length \($0)" } ?? " + at least 1")
            case .empty(let p): return "\(p): image is empty (0 sectors); create it first, e.g. truncate -s 1G \(p)"
            case .directNeedsLargerSectors(let p, let a):
                return "\(p): O_DIRECT (--direct) needs \(a)-byte aligned I/O here, but AoE transfers 512-byte sectors; serve it without --direct"
            }
        }
    }

    public let path: String
    public let sectorCount: UInt64
    public let capabilities: DeviceCapabilities
    public let identity: String
    public var name: String { storage == .blockDevice ? "block device \(path)" : "image \(path) (\(storage))" }
    private let fd: Int32
    private let byteOffset: Int
    private let direct: Bool

    public init(path: String, options: Options) throws(OpenError) {
        self.path = path
        var flags = options.readOnly ? O_RDONLY : O_RDWR
        if options.direct { flags |= CLinuxShims_O_DIRECT() }
        let fd: Int32
        let storage: Storage
        var alignment = 1
        do {
            // Probe the kind first: a block device must be opened with O_EXCL so a mounted disk is refused.
            var st = stat()
            guard stat(path, &st) == 0 else { throw SystemError(call: "stat", errno: errno, context: path) }
            let isBlock = (st.st_mode & S_IFMT) == S_IFBLK
            guard isBlock || (st.st_mode & S_IFMT) == S_IFREG else { throw OpenError.notARegularFileOrBlockDevice(path) }
            fd = try Syscall.open(path, flags: flags | (isBlock ? O_EXCL : 0))
            do {
                let bytes: UInt64
                if isBlock {
                    bytes = try Syscall.blockDeviceSize(fd, context: path)
                } else {
                    guard try Syscall.tryExclusiveLock(fd, context: path) else { throw OpenError.inUse(path) }
                    bytes = UInt64(try Syscall.fstat(fd, context: path).st_size)
                }
                storage = try Self.storage(of: fd, context: path)
                if options.direct {
                    alignment = try Self.directIOMemoryAlignment(fd, path: path, isBlockDevice: isBlock)
                }
                let total = bytes / UInt64(sectorSize)
                if total == 0 { throw OpenError.empty(path) }
                guard options.offsetSectors < total else {
                    throw OpenError.tooSmall(path: path, sectors: total, offset: options.offsetSectors, length: options.lengthSectors)
                }
                let available = total - options.offsetSectors
                if let length = options.lengthSectors, length > available || length == 0 {
                    throw OpenError.tooSmall(path: path, sectors: total, offset: options.offsetSectors, length: length)
                }
                sectorCount = options.lengthSectors ?? available
                identity = "\(st.st_dev):\(st.st_ino):\(options.offsetSectors)"
            } catch {
                Syscall.close(fd)
                throw error
            }
        } catch let e as OpenError {
            throw e
        } catch let e as SystemError {
            throw .system(e)
        } catch {
            fatalError("unexpected error \(error)")
        }
        self.fd = fd
        self.storage = storage
        direct = options.direct
        byteOffset = Int(options.offsetSectors) * sectorSize
        capabilities = DeviceCapabilities(writable: !options.readOnly, canFlush: true, bufferAlignment: alignment,
                                          neverBlocks: storage.isMemory,
                                          discard: !options.readOnly && Self.canPunchHoles(fd, storage: storage) ? .zeros : nil)
        if storage.isMemory && !options.direct {
            memoryMap = MemoryMap(fd: fd, byteOffset: byteOffset, bytes: Int(sectorCount) * sectorSize, writable: !options.readOnly)
        }
    }

    deinit {
        memoryMap?.unmap()
        Syscall.close(fd)
    }

    /// A memory-backed image (tmpfs, ramfs) mapped shared: its reads and writes are copies, with no system call
    /// per request. A copy that faults (someone truncated the file) falls back to the system calls, which give
    /// the error the initiator sees; the fault never ends the process.
    struct MemoryMap {
        let base: UnsafeMutableRawPointer
        let length: Int
        /// Where the image's first sector sits in the mapping (the mapping starts on a page boundary).
        let start: UnsafeMutableRawPointer
        let bytes: Int

        init?(fd: Int32, byteOffset: Int, bytes: Int, writable: Bool) {
            let page = Int(sysconf(Int32(_SC_PAGESIZE)))
            let mapOffset = byteOffset / page * page
            length = byteOffset - mapOffset + bytes
            guard let p = mmap(nil, length, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, off_t(mapOffset)),
                  p != MAP_FAILED else { return nil }
            base = p
            start = p + (byteOffset - mapOffset)
            self.bytes = bytes
        }

        func unmap() { munmap(base, length) }

        /// Copies between the buffers and the image at `offset`; false when it does not fit or a page faulted.
        func copy(_ buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, at offset: Int, write: Bool) -> Bool {
            var at = offset
            for b in buffers {
                guard copy(UnsafeMutableRawPointer(b.baseAddress), count: b.count, at: at, write: write) else { return false }
                at += b.count
            }
            return true
        }

        func copy(_ buffer: UnsafeMutableRawPointer?, count: Int, at offset: Int, write: Bool) -> Bool {
            guard let buffer, offset >= 0, count <= bytes - offset else { return count == 0 }
            let image = start + offset
            let rc = write ? CLinuxShims_guardedCopy(image, buffer, count, base, base + length)
                           : CLinuxShims_guardedCopy(buffer, image, count, base, base + length)
            return rc == 0
        }
    }
    private var memoryMap: MemoryMap? = nil
    /// Whether requests are served by copies from a mapping (a memory-backed image).
    public var isMapped: Bool { memoryMap != nil }

    public var fileDescriptor: Int32 { fd }
    public var bypassesPageCache: Bool { direct }
    public func fileOffset(of lba: UInt64) -> Int { byteOffset + Int(lba) * sectorSize }

    /// What an image's bytes live on, which decides where its I/O runs.
    public enum Storage: Hashable, Sendable, CustomStringConvertible {
        /// A block device (a whole disk, a partition, a RAM disk): always queued like a disk. Its node's
        /// filesystem (devtmpfs, which reports TMPFS_MAGIC) says nothing about where its sectors are.
        case blockDevice
        /// A regular file on tmpfs or ramfs: its pages are memory, reads and writes never wait for a disk.
        case memoryFile(filesystem: String)
        /// A regular file on any other filesystem.
        case file

        public var isMemory: Bool { if case .memoryFile = self { true } else { false } }

        public var description: String {
            switch self {
            case .blockDevice: "block device"
            case .memoryFile(let fs): "file on \(fs)"
            case .file: "file"
            }
        }

        /// The rule, from a file's mode (`st_mode`) and its filesystem's magic (`f_type` of statfs).
        public static func classify(mode: mode_t, filesystemType: Int) -> Storage {
            switch mode & S_IFMT {
            case S_IFBLK: return .blockDevice
            case S_IFREG:
                switch filesystemType {
                case 0x0102_1994: return .memoryFile(filesystem: "tmpfs")   // TMPFS_MAGIC
                case 0x8584_58F6: return .memoryFile(filesystem: "ramfs")   // RAMFS_MAGIC
                default: return .file
                }
            default: return .file
            }
        }
    }

    public let storage: Storage

    /// The storage of an open file (fstat + fstatfs).
    public static func storage(of fd: Int32, context: String) throws(SystemError) -> Storage {
        let mode = try Syscall.fstat(fd, context: context).st_mode
        return Storage.classify(mode: mode, filesystemType: try Syscall.filesystemType(fd, context: context))
    }

    /// The memory alignment of O_DIRECT buffers. AoE addresses 512-byte sectors, so a file or device whose
    /// O_DIRECT offsets must be coarser (a disk with 4096-byte logical sectors) cannot be served with --direct.
    private static func directIOMemoryAlignment(_ fd: Int32, path: String, isBlockDevice: Bool) throws -> Int {
        let known = Syscall.directIOAlignment(fd)
        // Block devices: their logical sector size, when statx does not report it (kernels before 6.1).
        let offsetAlignment = try known?.offset ?? (isBlockDevice ? Syscall.logicalBlockSize(fd, context: path) : sectorSize)
        if offsetAlignment > sectorSize { throw OpenError.directNeedsLargerSectors(path: path, alignment: offsetAlignment) }
        // What the file says it needs, else a page (always enough).
        return known?.memory ?? 4096
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at lba: UInt64) throws(DeviceError) {
        if let memoryMap, memoryMap.copy(buffer.baseAddress, count: buffer.count, at: Int(lba) * sectorSize, write: false) { return }
        do { try Syscall.preadFully(fd, buffer, offset: fileOffset(of: lba), context: path) } catch { throw DeviceError(error) }
    }

    public func write(from buffer: UnsafeRawBufferPointer, at lba: UInt64) throws(DeviceError) {
        if let memoryMap, memoryMap.copy(UnsafeMutableRawPointer(mutating: buffer.baseAddress), count: buffer.count,
                                         at: Int(lba) * sectorSize, write: true) { return }
        do { try Syscall.pwriteFully(fd, buffer, offset: fileOffset(of: lba), context: path) } catch { throw DeviceError(error) }
    }

    /// O_DIRECT reads always go to the disk, so only buffered images can answer from the page cache.
    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at lba: UInt64) -> Bool {
        !direct && Syscall.preadIfCached(fd, buffer, offset: fileOffset(of: lba))
    }

    /// Adjacent requests merged by the target arrive here as one preadv / pwritev.
    public func read(into buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, at lba: UInt64) throws(DeviceError) {
        try vectored(write: false, buffers, at: lba)
    }

    public func write(from buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, at lba: UInt64) throws(DeviceError) {
        try vectored(write: true, buffers, at: lba)
    }

    private func vectored(write: Bool, _ buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, at lba: UInt64) throws(DeviceError) {
        if let memoryMap, memoryMap.copy(buffers, at: Int(lba) * sectorSize, write: write) { return }
        // IOV_MAX is 1024; the target merges at most a few dozen frames.
        precondition(buffers.count <= Self.maxVectors)
        try withUnsafeTemporaryAllocation(of: iovec.self, capacity: buffers.count) { (iovecs) throws(DeviceError) in
            do throws(SystemError) {
                try Syscall.vectored(fd, write: write, buffers, iovecs: iovecs.baseAddress!, offset: fileOffset(of: lba), context: path)
            } catch { throw DeviceError(error) }
        }
    }

    public static let maxVectors = 64

    /// Whether `discard` can work here. A block device zeroes a punched range only with WRITE ZEROES (the kernel
    /// never falls back to writing zeros for it), which sysfs reports per disk. A file's filesystem is asked with
    /// a hole punched past its end, which changes nothing where holes are supported (ext4, xfs, btrfs, tmpfs)
    /// and fails where they are not (ramfs, vfat).
    static func canPunchHoles(_ fd: Int32, storage: Storage) -> Bool {
        guard let st = try? Syscall.fstat(fd, context: "") else { return false }
        if storage == .blockDevice {
            let (major, minor) = Syscall.deviceNumbers(st.st_rdev)
            let device = "/sys/dev/block/\(major):\(minor)"
            // A partition has no queue of its own: its disk's is one level up.
            for queue in ["\(device)/queue", "\(device)/../queue"] {
                if let text = Syscall.readSmallTextFile("\(queue)/write_zeroes_max_bytes"), let limit = Int(text) { return limit > 0 }
            }
            return false
        }
        let pastEnd = (Int(st.st_size) + 4095) / 4096 * 4096 + 4096
        return (try? Syscall.punchHole(fd, offset: pastEnd, length: 4096, context: "")) != nil
    }

    /// A hole punched in the file (ext4, xfs, btrfs, tmpfs), or a block device's sectors zeroed by discard or
    /// WRITE ZEROES; a filesystem or disk that can do neither says EOPNOTSUPP, which the initiator gets as ABRT.
    public func discard(_ range: SectorRange) throws(DeviceError) {
        do throws(SystemError) {
            try Syscall.punchHole(fd, offset: fileOffset(of: range.lba), length: range.count * sectorSize,
                                  context: "\(path) at byte \(fileOffset(of: range.lba))")
        } catch { throw DeviceError(error) }
    }

    public func flush() throws(DeviceError) {
        do { try Syscall.fdatasync(fd, context: path) } catch { throw DeviceError(error) }
    }
}
