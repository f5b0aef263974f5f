import Glibc
import CLinuxShims
import Synchronization

/// The one place that calls into the kernel for files and sockets. Each wrapper names its C call, retries
/// EINTR, returns EAGAIN as `nil` where a caller polls, traps on errnos that can only mean a bug of ours
/// (EFAULT, EBADF), and throws `SystemError` for the rest.
public enum Syscall {
    /// fdatasync calls that have completed (synchronous ones when they return, io_uring ones when reaped), for
    /// tests and the statistics report.
    public static let fdatasyncCalls = Atomic<Int>(0)

    /// Test hook: when > 0, the Nth following pwrite fails with EIO (1 = the next one). Set only by tests
    /// and by the fault-injection option; zero costs one relaxed load per write.
    public static let failPwriteAfter = Atomic<Int>(0)

    @inline(__always)
    static func checkBug(_ call: String, _ err: Int32) {
        precondition(err != EFAULT && err != EBADF, "\(call) returned \(String(cString: strerror(err))): a bug in aoe-target")
    }

    @inline(__always)
    static func retrying<T: BinaryInteger>(_ call: String, _ context: @autoclosure () -> String, _ body: () -> T) throws(SystemError) -> T {
        while true {
            let rc = body()
            if rc >= 0 { return rc }
            let err = errno
            if err == EINTR { continue }
            checkBug(call, err)
            throw SystemError(call: call, errno: err, context: context())
        }
    }

    /// open(2).
    public static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(SystemError) -> Int32 {
        try retrying("open", path) { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }

    /// close(2). EINTR is not retried: on Linux the descriptor is gone either way.
    public static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    /// fstat(2).
    public static func fstat(_ fd: Int32, context: String) throws(SystemError) -> stat {
        var st = stat()
        _ = try retrying("fstat", context) { Glibc.fstat(fd, &st) }
        return st
    }

    /// The first 4 KiB of a small text file (sysfs, configfs, procfs), without the newlines, spaces and NULs
    /// that end such values; nil when it cannot be read.
    public static func readSmallTextFile(_ path: String) -> String? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n >= 0 else { return nil }
        var text = String(decoding: bytes[0..<n], as: UTF8.self)
        while let last = text.last, last == "\n" || last == " " || last == "\0" { text.removeLast() }
        return text
    }

    /// The major and minor numbers of a device number (st_rdev), as glibc's gnu_dev_major/minor split it.
    public static func deviceNumbers(_ rdev: dev_t) -> (major: UInt32, minor: UInt32) {
        let d = UInt64(rdev)
        return (UInt32((d >> 8) & 0xFFF | (d >> 32) & 0xFFFF_F000), UInt32(d & 0xFF | (d >> 12) & 0xFFFF_FF00))
    }

    /// flock(fd, LOCK_EX | LOCK_NB). Returns false when another process holds the lock.
    public static func tryExclusiveLock(_ fd: Int32, context: String) throws(SystemError) -> Bool {
        while true {
            if CLinuxShims_lockExclusiveNonBlocking(fd) == 0 { return true }
            let err = errno
            if err == EINTR { continue }
            if err == EWOULDBLOCK { return false }
            throw SystemError(call: "flock", errno: err, context: context)
        }
    }

    /// fstatfs(2): the filesystem's magic number (f_type).
    public static func filesystemType(_ fd: Int32, context: String) throws(SystemError) -> Int {
        var type = 0
        _ = try retrying("fstatfs", context) { CLinuxShims_filesystemType(fd, &type) }
        return type
    }

    /// ioctl(BLKGETSIZE64).
    public static func blockDeviceSize(_ fd: Int32, context: String) throws(SystemError) -> UInt64 {
        var bytes: UInt64 = 0
        _ = try retrying("ioctl(BLKGETSIZE64)", context) { CLinuxShims_blockDeviceSize(fd, &bytes) }
        return bytes
    }

    /// pread(2) until `buffer` is full. A short read at end of file is an error naming the offset.
    public static func preadFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: Int, context: String) throws(SystemError) {
        var done = 0
        while done < buffer.count {
            let n = try retrying("pread", "\(context) at byte \(offset + done)") {
                Glibc.pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            }
            if n == 0 { throw SystemError(call: "pread", errno: EIO, context: "\(context): unexpected end of file at byte \(offset + done)") }
            done += n
        }
    }

    /// pwrite(2) until all of `buffer` is written.
    public static func pwriteFully(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, offset: Int, context: String) throws(SystemError) {
        if failPwriteAfter.load(ordering: .relaxed) > 0, failPwriteAfter.subtract(1, ordering: .relaxed).newValue == 0 {
            throw SystemError(call: "pwrite", errno: EIO, context: "\(context) at byte \(offset) (injected)")
        }
        var done = 0
        while done < buffer.count {
            let n = try retrying("pwrite", "\(context) at byte \(offset + done)") {
                Glibc.pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            }
            done += n
        }
    }

    /// preadv(2) / pwritev(2) over `buffers`, then plain pread / pwrite for whatever a short transfer left.
    /// `iovecs` is the caller's scratch (at least `buffers.count` entries), so the call allocates nothing.
    public static func vectored(_ fd: Int32, write: Bool, _ buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>,
                                iovecs: UnsafeMutablePointer<iovec>, offset: Int, context: String) throws(SystemError) {
        if write && failPwriteAfter.load(ordering: .relaxed) > 0, failPwriteAfter.subtract(1, ordering: .relaxed).newValue == 0 {
            throw SystemError(call: "pwritev", errno: EIO, context: "\(context) at byte \(offset) (injected)")
        }
        var total = 0
        for (i, buffer) in buffers.enumerated() {
            iovecs[i] = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
            total += buffer.count
        }
        let call = write ? "pwritev" : "preadv"
        let done = try retrying(call, "\(context) at byte \(offset)") {
            write ? Glibc.pwritev(fd, iovecs, Int32(buffers.count), off_t(offset))
                  : Glibc.preadv(fd, iovecs, Int32(buffers.count), off_t(offset))
        }
        if done == total { return }
        // Short transfer (end of file, a signal): finish buffer by buffer from where it stopped.
        var position = 0
        for buffer in buffers {
            let end = position + buffer.count
            if end > done {
                let skip = max(0, done - position)
                let rest = UnsafeMutableRawBufferPointer(rebasing: buffer[skip...])
                if write { try pwriteFully(fd, UnsafeRawBufferPointer(rest), offset: offset + position + skip, context: context) }
                else { try preadFully(fd, rest, offset: offset + position + skip, context: context) }
            }
            position = end
        }
    }

    /// preadv2(2) with RWF_NOWAIT: true when all of `buffer` came from the page cache; false when it would have
    /// had to wait for the disk (EAGAIN), came back short, or the filesystem does not support it.
    public static func preadIfCached(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: Int) -> Bool {
        while true {
            let n = CLinuxShims_preadNoWait(fd, buffer.baseAddress, buffer.count, off_t(offset))
            if n == buffer.count { return true }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { checkBug("preadv2", errno) }
            return false
        }
    }

    /// mmap(2) of anonymous private memory: zero-filled pages that the kernel allocates on first touch, so a
    /// large pool costs memory only for the slots that are used. Traps when the kernel has no address space.
    public static func mapAnonymous(bytes: Int) -> UnsafeMutableRawPointer {
        let p = Glibc.mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        precondition(p != MAP_FAILED && p != nil, "mmap of \(bytes) bytes failed: \(String(cString: strerror(errno)))")
        return p!
    }

    /// munmap(2) of what `mapAnonymous` returned.
    public static func unmap(_ pointer: UnsafeMutableRawPointer, bytes: Int) {
        _ = Glibc.munmap(pointer, bytes)
    }

    /// ppoll(2) for POLLIN on one descriptor, at most `timeout` seconds. Unlike a socket's SO_RCVTIMEO, which
    /// the kernel rounds up to whole scheduler ticks (a 1 ms timeout sleeps 8 ms at HZ=250), ppoll sleeps on a
    /// high-resolution timer: what a retransmit timer of a few milliseconds needs. Returns true when `fd` (or
    /// `other`, when given) is readable.
    public static func waitReadable(_ fd: Int32, or other: Int32 = -1, timeout: Double) -> Bool {
        let nanoseconds = Int64(max(0, timeout) * 1e9)
        while true {
            let rc = CLinuxShims_pollReadable(fd, other, nanoseconds)
            if rc >= 0 { return rc > 0 }
            if errno == EINTR { continue }
            checkBug("ppoll", errno)
            return false
        }
    }

    /// epoll_create1(2): a descriptor that polls readable while any descriptor added to it is.
    public static func epollCreate(context: String) throws(SystemError) -> Int32 {
        try retrying("epoll_create1", context) { CLinuxShims_epollCreate() }
    }

    /// epoll_ctl(2) EPOLL_CTL_ADD for EPOLLIN.
    public static func epollAddReadable(_ epfd: Int32, _ fd: Int32, context: String) throws(SystemError) {
        _ = try retrying("epoll_ctl", context) { CLinuxShims_epollAddReadable(epfd, fd) }
    }

    /// epoll_pwait2(2): waits up to `timeout` seconds (a precise timer) for any added descriptor to be readable.
    public static func epollWaitReadable(_ epfd: Int32, timeout: Double) -> Bool {
        let nanoseconds = Int64(max(0, timeout) * 1e9)
        while true {
            let rc = CLinuxShims_epollWaitReadable(epfd, nanoseconds)
            if rc >= 0 { return rc > 0 }
            if errno == EINTR { continue }
            checkBug("epoll_pwait2", errno)
            return false
        }
    }

    /// fsync(2): the file's data and metadata (or a directory's entries) reach stable storage.
    public static func fsync(_ fd: Int32, context: String) throws(SystemError) {
        _ = try retrying("fsync", context) { Glibc.fsync(fd) }
    }

    /// rename(2): atomically replaces `to` with `from` (same filesystem).
    public static func rename(_ from: String, to: String) throws(SystemError) {
        _ = try retrying("rename", "\(from) -> \(to)") { Glibc.rename(from, to) }
    }

    /// unlink(2); a missing file is not an error.
    public static func unlinkIfPresent(_ path: String) throws(SystemError) {
        if Glibc.unlink(path) != 0 && errno != ENOENT { throw SystemError(call: "unlink", errno: errno, context: path) }
    }

    /// mkdir(2); an existing directory is not an error.
    public static func makeDirectory(_ path: String, mode: mode_t = 0o750) throws(SystemError) {
        if Glibc.mkdir(path, mode) != 0 && errno != EEXIST { throw SystemError(call: "mkdir", errno: errno, context: path) }
    }

    /// The whole of a small file (a config or state file), or nil when it does not exist.
    public static func readWholeFile(_ path: String) throws(SystemError) -> [UInt8]? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw SystemError(call: "open", errno: errno, context: path)
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 1)
        defer { chunk.deallocate() }
        while true {
            let n = try retrying("read", path) { Glibc.read(fd, chunk.baseAddress, chunk.count) }
            if n == 0 { return bytes }
            bytes += chunk[0..<n]
        }
    }

    /// Replaces `path` with `bytes` so that after a crash at any moment the file is either the old one or the
    /// new one, complete: a temporary file beside it, written and fsynced, renamed over it, and the directory
    /// fsynced so the rename itself is durable.
    public static func replaceFileAtomically(_ path: String, with bytes: [UInt8], mode: mode_t = 0o640) throws(SystemError) {
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let temporary = path + ".tmp"
        let fd = try open(temporary, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: mode)
        do throws(SystemError) {
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, bytes.count), alignment: 1)
            defer { copy.deallocate() }
            copy.copyBytes(from: bytes)
            var done = 0
            while done < bytes.count {
                done += try retrying("write", temporary) { Glibc.write(fd, copy.baseAddress! + done, bytes.count - done) }
            }
            try fsync(fd, context: temporary)
        } catch {
            close(fd)
            try? unlinkIfPresent(temporary)
            throw error
        }
        close(fd)
        try rename(temporary, to: path)
        let dir = try open(directory.isEmpty ? "/" : directory, flags: O_RDONLY | O_DIRECTORY)
        defer { close(dir) }
        try fsync(dir, context: directory)
    }

    /// fdatasync(2): everything written so far reaches stable storage.
    public static func fdatasync(_ fd: Int32, context: String) throws(SystemError) {
        _ = try retrying("fdatasync", context) { Glibc.fdatasync(fd) }
        fdatasyncCalls.add(1, ordering: .relaxed)
    }

    /// fallocate(2) with PUNCH_HOLE | KEEP_SIZE: frees the bytes of a file (they read back as zeros) or zeroes
    /// those of a block device, without changing the size.
    public static func punchHole(_ fd: Int32, offset: Int, length: Int, context: @autoclosure () -> String) throws(SystemError) {
        _ = try retrying("fallocate(PUNCH_HOLE)", context()) { CLinuxShims_fallocate(fd, punchHoleMode, Int64(offset), Int64(length)) }
    }

    /// FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (linux/falloc.h).
    public static let punchHoleMode: Int32 = 0x02 | 0x01

    /// The memory and file-offset alignment O_DIRECT needs on `fd` (statx STATX_DIOALIGN); nil when the kernel,
    /// the filesystem or the device does not say.
    public static func directIOAlignment(_ fd: Int32) -> (memory: Int, offset: Int)? {
        var memory: UInt32 = 0, offset: UInt32 = 0
        guard CLinuxShims_directIOAlignment(fd, &memory, &offset) == 0, memory > 0, offset > 0 else { return nil }
        return (Int(memory), Int(offset))
    }

    /// ioctl(BLKSSZGET): a block device's logical sector size.
    public static func logicalBlockSize(_ fd: Int32, context: String) throws(SystemError) -> Int {
        var bytes: Int32 = 0
        _ = try retrying("ioctl(BLKSSZGET)", context) { CLinuxShims_logicalBlockSize(fd, &bytes) }
        return Int(bytes)
    }

    /// socket(2).
    public static func socket(domain: Int32, type: Int32, protocol proto: Int32, context: String) throws(SystemError) -> Int32 {
        try retrying("socket", context) { Glibc.socket(domain, type | Int32(SOCK_CLOEXEC.rawValue), proto) }
    }

    /// setsockopt(2) with an integer value.
    public static func setSocketOption(_ fd: Int32, level: Int32, name: Int32, value: Int32, context: String) throws(SystemError) {
        var v = value
        _ = try retrying("setsockopt", context) { Glibc.setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) }
    }

    /// bind(2) of an AF_PACKET address.
    public static func bind(_ fd: Int32, _ address: sockaddr_ll, context: String) throws(SystemError) {
        var a = address
        _ = try retrying("bind", context) {
            withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_ll>.size)) }
            }
        }
    }

    /// recvmmsg(2). Returns the number of messages, or 0 when nothing is waiting (EAGAIN) or the wait timed out.
    public static func recvmmsg(_ fd: Int32, _ msgs: UnsafeMutablePointer<CLinuxShims_mmsghdr>, count: Int, flags: Int32 = 0, context: String) throws(SystemError) -> Int {
        while true {
            let n = CLinuxShims_recvmmsg(fd, msgs, UInt32(count), flags)
            if n >= 0 { return Int(n) }
            let err = errno
            if err == EINTR { continue }
            if err == EAGAIN || err == EWOULDBLOCK { return 0 }
            checkBug("recvmmsg", err)
            throw SystemError(call: "recvmmsg", errno: err, context: context)
        }
    }

    /// sendmmsg(2). Returns how many of `count` messages the kernel took; EAGAIN counts as none.
    public static func sendmmsg(_ fd: Int32, _ msgs: UnsafeMutablePointer<CLinuxShims_mmsghdr>, count: Int, context: String) throws(SystemError) -> Int {
        while true {
            let n = CLinuxShims_sendmmsg(fd, msgs, UInt32(count), 0)
            if n >= 0 { return Int(n) }
            let err = errno
            if err == EINTR { continue }
            if err == EAGAIN || err == EWOULDBLOCK { return 0 }
            checkBug("sendmmsg", err)
            throw SystemError(call: "sendmmsg", errno: err, context: context)
        }
    }

    /// SO_ATTACH_FILTER with a classic BPF program.
    public static func attachFilter(_ fd: Int32, _ program: [sock_filter], context: String) throws(SystemError) {
        _ = try retrying("setsockopt(SO_ATTACH_FILTER)", context) {
            program.withUnsafeBufferPointer { CLinuxShims_attachFilter(fd, $0.baseAddress, UInt16($0.count)) }
        }
    }

    /// ioctl(SG_IO).
    public static func sgIO(_ fd: Int32, _ header: inout sg_io_hdr_t, context: String) throws(SystemError) {
        _ = try retrying("ioctl(SG_IO)", context) { CLinuxShims_sgIO(fd, &header) }
    }
}
