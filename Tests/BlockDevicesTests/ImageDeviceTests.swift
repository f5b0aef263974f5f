import XCTest
import Synchronization
import Glibc
@testable import BlockDevices
import LinuxSystem

final class ImageDeviceTests: XCTestCase {
    var directory = ""

    override func setUp() {
        directory = NSTemporaryDirectory() + "aoe-image-tests-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        mkdir(directory, 0o755)
    }

    override func tearDown() {
        _ = try? FileManager.default.removeItem(atPath: directory)
    }

    func makeImage(sectors: Int, name: String = "disk.img") -> String {
        let path = directory + "/" + name
        var bytes = [UInt8](repeating: 0, count: sectors * 512)
        for s in 0..<sectors { bytes[s * 512] = UInt8(s & 0xFF); bytes[s * 512 + 1] = UInt8(s >> 8) }
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    func firstBytes(_ device: ImageDevice, lba: UInt64) throws -> (UInt8, UInt8) {
        var buffer = [UInt8](repeating: 0xEE, count: 512)
        try buffer.withUnsafeMutableBytes { try device.read(into: $0, at: lba) }
        return (buffer[0], buffer[1])
    }

    func testDirectImageReadsIntoBuffersAtTheAlignmentItReports() throws {
        let path = makeImage(sectors: 64)
        var options = ImageDevice.Options()
        options.direct = true
        let device = try ImageDevice(path: path, options: options)
        let alignment = device.capabilities.bufferAlignment
        XCTAssertTrue(alignment > 1 && alignment <= 4096 && alignment & (alignment - 1) == 0, "alignment \(alignment)")
        // A buffer aligned to exactly what the device reports (and no more): the target puts frame data there.
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 3 * 4096, alignment: 4096)
        defer { memory.deallocate() }
        let start = alignment < 4096 ? memory + alignment : memory
        let buffer = UnsafeMutableRawBufferPointer(start: start, count: 2 * 512)
        try device.read(into: buffer, at: 7)
        XCTAssertEqual([buffer[0], buffer[512]], [7, 8])
    }

    // MARK: - Where an image's I/O runs: memory-backed means a regular file on tmpfs or ramfs, nothing else.

    /// The storage of `path` as the device classes it, from a descriptor opened with O_PATH (no I/O, no driver
    /// needed: a block node whose driver is absent still stats).
    func storage(ofNode path: String) throws -> (ImageDevice.Storage, filesystem: Int) {
        let oPath: Int32 = 0o10000000   // O_PATH (asm-generic/fcntl.h), which Glibc's Swift module does not export
        let fd = open(path, oPath | O_CLOEXEC)
        guard fd >= 0 else { throw XCTSkip("cannot open \(path) with O_PATH: errno \(errno)") }
        defer { close(fd) }
        return (try ImageDevice.storage(of: fd, context: path), try Syscall.filesystemType(fd, context: path))
    }

    let tmpfsMagic = 0x0102_1994

    func testRegularFileOnDevShmIsMemoryBacked() throws {
        let path = "/dev/shm/aoe-image-tests-\(getpid()).img"
        FileManager.default.createFile(atPath: path, contents: Data(count: 4096))
        defer { unlink(path) }
        let device = try ImageDevice(path: path, options: .init())
        XCTAssertEqual(device.storage, .memoryFile(filesystem: "tmpfs"))
        XCTAssertTrue(device.capabilities.neverBlocks)
    }

    /// A tmpfs image is served by copies from a mapping: what it writes is in the file, what the file holds is
    /// what it reads, at a window that does not start on a page; a file on disk is not mapped.
    func testMemoryBackedImageIsMappedAndAgreesWithTheFile() throws {
        let path = "/dev/shm/aoe-image-tests-map-\(getpid()).img"
        FileManager.default.createFile(atPath: path, contents: Data((0..<(64 * 512)).map { UInt8(truncatingIfNeeded: $0 / 512) }))
        defer { unlink(path) }
        var options = ImageDevice.Options()
        options.offsetSectors = 3
        let device = try ImageDevice(path: path, options: options)
        XCTAssertTrue(device.isMapped)
        XCTAssertTrue(try firstBytes(device, lba: 0) == (3, 3), "window offset 3: file sector 3")
        let data = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 8)
        defer { data.deallocate() }
        data.initializeMemory(as: UInt8.self, repeating: 0xC7)
        try device.write(from: UnsafeRawBufferPointer(data), at: 10)
        let file = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual(Array(file[(13 * 512)..<(15 * 512)]), [UInt8](repeating: 0xC7, count: 1024))
        XCTAssertEqual(file[15 * 512], 15, "the sector after is untouched")
        XCTAssertFalse(try ImageDevice(path: makeImage(sectors: 8), options: .init()).isMapped, "a file on disk is not mapped")
    }

    /// Someone truncates a mapped image under the target: reads of the lost pages fail as an I/O error (the
    /// system call's short read), never a SIGBUS that ends the process; the sectors still there read fine.
    func testTruncatedMappedImageFailsTheReadInsteadOfKillingTheProcess() throws {
        let path = "/dev/shm/aoe-image-tests-trunc-\(getpid()).img"
        FileManager.default.createFile(atPath: path, contents: Data((0..<(64 * 512)).map { UInt8(truncatingIfNeeded: $0 / 512) }))
        defer { unlink(path) }
        let device = try ImageDevice(path: path, options: .init())
        XCTAssertTrue(device.isMapped)
        XCTAssertTrue(try firstBytes(device, lba: 40) == (40, 40))
        XCTAssertEqual(truncate(path, 8 * 512), 0)
        XCTAssertThrowsError(try firstBytes(device, lba: 40), "past the new end: an error, not a crash")
        XCTAssertTrue(try firstBytes(device, lba: 2) == (2, 2), "before the new end: still read")
    }

    func testRegularFileOnADiskFilesystemIsNotMemoryBacked() throws {
        // The test's own source folder: on the disk the checkout lives on.
        let folder = String(#filePath.prefix(upTo: #filePath.lastIndex(of: "/")!))
        let path = folder + "/.storage-test-\(getpid()).img"
        FileManager.default.createFile(atPath: path, contents: Data(count: 4096))
        defer { unlink(path) }
        let (_, filesystem) = try storage(ofNode: path)
        if filesystem == tmpfsMagic { throw XCTSkip("\(folder) is on tmpfs here") }
        let device = try ImageDevice(path: path, options: .init())
        XCTAssertEqual(device.storage, .file)
        XCTAssertFalse(device.capabilities.neverBlocks)
    }

    /// The bug this guards against: a block device's node lives on devtmpfs, whose magic is TMPFS_MAGIC, so
    /// asking fstatfs alone classed every whole disk as memory and served it on the receive thread.
    func testBlockDeviceNodeOnDevtmpfsIsNotMemoryBacked() throws {
        let nodes = (try? FileManager.default.contentsOfDirectory(atPath: "/dev")) ?? []
        guard let node = nodes.sorted().map({ "/dev/" + $0 }).first(where: { path in
            var st = stat()
            return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFBLK
        }) else { throw XCTSkip("no block device node in /dev") }
        let (storage, filesystem) = try storage(ofNode: node)
        XCTAssertEqual(filesystem, tmpfsMagic, "\(node) is expected on devtmpfs, the case that was misclassified")
        XCTAssertEqual(storage, .blockDevice, node)
        XCTAssertFalse(storage.isMemory)
    }

    func testCharacterDeviceNodeOnDevtmpfsIsNotMemoryBacked() throws {
        let (storage, filesystem) = try storage(ofNode: "/dev/null")
        XCTAssertEqual(filesystem, tmpfsMagic)
        XCTAssertFalse(storage.isMemory)
        XCTAssertThrowsError(try ImageDevice(path: "/dev/null", options: .init())) { error in
            XCTAssertEqual("\(error)", "/dev/null: not a regular file or block device")
        }
    }

    func testClassificationRuleByModeAndFilesystem() {
        let ramfs = 0x8584_58F6, ext4 = 0xEF53
        XCTAssertEqual(ImageDevice.Storage.classify(mode: S_IFREG | 0o644, filesystemType: tmpfsMagic), .memoryFile(filesystem: "tmpfs"))
        XCTAssertEqual(ImageDevice.Storage.classify(mode: S_IFREG | 0o644, filesystemType: ramfs), .memoryFile(filesystem: "ramfs"))
        XCTAssertEqual(ImageDevice.Storage.classify(mode: S_IFREG | 0o644, filesystemType: ext4), .file)
        XCTAssertEqual(ImageDevice.Storage.classify(mode: S_IFBLK | 0o600, filesystemType: tmpfsMagic), .blockDevice)
        XCTAssertEqual(ImageDevice.Storage.classify(mode: S_IFBLK | 0o600, filesystemType: ext4), .blockDevice)
    }

    func testWindowMapsFirstAndLastSector() throws {
        let path = makeImage(sectors: 100)
        var options = ImageDevice.Options()
        options.offsetSectors = 10
        options.lengthSectors = 80
        let device = try ImageDevice(path: path, options: options)
        XCTAssertEqual(device.sectorCount, 80)
        XCTAssertTrue(try firstBytes(device, lba: 0) == (10, 0))
        XCTAssertTrue(try firstBytes(device, lba: 79) == (89, 0))
    }

    func testWindowLargerThanImageIsRefused() {
        let path = makeImage(sectors: 100)
        var options = ImageDevice.Options()
        options.offsetSectors = 10
        options.lengthSectors = 91
        XCTAssertThrowsError(try ImageDevice(path: path, options: options)) { error in
            XCTAssertTrue("\(error)".contains("image too small"), "\(error)")
        }
        options.lengthSectors = 90
        XCTAssertNoThrow(try ImageDevice(path: path, options: options))
    }

    func testOffsetAtEndIsRefused() {
        let path = makeImage(sectors: 100)
        var options = ImageDevice.Options()
        options.offsetSectors = 100
        XCTAssertThrowsError(try ImageDevice(path: path, options: options))
    }

    func testMissingFileSaysSo() {
        XCTAssertThrowsError(try ImageDevice(path: directory + "/nope.img", options: .init())) { error in
            XCTAssertTrue("\(error)".contains("no such file"), "\(error)")
        }
    }

    func testSecondOpenOfTheSameImageIsRefused() throws {
        let path = makeImage(sectors: 8)
        let first = try ImageDevice(path: path, options: .init())
        XCTAssertThrowsError(try ImageDevice(path: path, options: .init())) { error in
            XCTAssertTrue("\(error)".contains("in use"), "\(error)")
        }
        _ = first
    }

    func testReadOnlyDeviceIsNotWritable() throws {
        let path = makeImage(sectors: 8)
        var options = ImageDevice.Options()
        options.readOnly = true
        let device = try ImageDevice(path: path, options: options)
        XCTAssertFalse(device.capabilities.writable)
        // The descriptor itself is O_RDONLY (writing through it would trap as EBADF, an internal bug).
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")
        let modes = fds.compactMap { fd -> String? in
            guard (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")) == path else { return nil }
            return try? String(contentsOfFile: "/proc/self/fdinfo/\(fd)", encoding: .utf8)
        }
        XCTAssertEqual(modes.count, 1)
        let flags = modes.first?.split(separator: "\n").first { $0.hasPrefix("flags:") }.map { Int($0.split(separator: "\t").last!, radix: 8)! }
        XCTAssertEqual(flags.map { $0 & 3 }, 0, "O_RDONLY")
    }

    func testWriteThenReadAndFlushCallsFdatasync() throws {
        let path = makeImage(sectors: 8)
        let device = try ImageDevice(path: path, options: .init())
        let data = [UInt8](repeating: 0x5A, count: 1024)
        try data.withUnsafeBytes { try device.write(from: $0, at: 6) }
        var back = [UInt8](repeating: 0, count: 1024)
        try back.withUnsafeMutableBytes { try device.read(into: $0, at: 6) }
        XCTAssertEqual(back, data)
        let before = Syscall.fdatasyncCalls.load(ordering: .relaxed)
        try device.flush()
        XCTAssertEqual(Syscall.fdatasyncCalls.load(ordering: .relaxed), before + 1)
    }

    func testVectoredWriteAndReadLandAtConsecutiveSectorsOfTheWindow() throws {
        let path = makeImage(sectors: 32)
        var options = ImageDevice.Options()
        options.offsetSectors = 4
        let device = try ImageDevice(path: path, options: options)
        let parts = [UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 4096),
                     UnsafeMutableRawBufferPointer.allocate(byteCount: 512, alignment: 4096),
                     UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 4096)]
        defer { parts.forEach { $0.deallocate() } }
        for (i, part) in parts.enumerated() { part.initializeMemory(as: UInt8.self, repeating: UInt8(0xA0 + i)) }
        try parts.withUnsafeBufferPointer { try device.write(from: $0, at: 6) }
        let file = try Data(contentsOf: URL(fileURLWithPath: path))
        // Window offset 4: LBA 6 is file sector 10; 2 + 1 + 2 sectors.
        XCTAssertEqual(Array(file[(10 * 512)..<(12 * 512)]), [UInt8](repeating: 0xA0, count: 1024))
        XCTAssertEqual(Array(file[(12 * 512)..<(13 * 512)]), [UInt8](repeating: 0xA1, count: 512))
        XCTAssertEqual(Array(file[(13 * 512)..<(15 * 512)]), [UInt8](repeating: 0xA2, count: 1024))
        XCTAssertEqual(file[15 * 512], 15, "the sector after is untouched")
        for part in parts { part.initializeMemory(as: UInt8.self, repeating: 0) }
        try parts.withUnsafeBufferPointer { try device.read(into: $0, at: 6) }
        XCTAssertEqual(Array(parts[1]), [UInt8](repeating: 0xA1, count: 512))
        XCTAssertEqual(Array(parts[2]), [UInt8](repeating: 0xA2, count: 1024))
    }

    func testReadIfCachedReturnsPageCacheDataAndNeverForDirect() throws {
        let path = makeImage(sectors: 16)
        let device = try ImageDevice(path: path, options: .init())
        let data = [UInt8](repeating: 0x3C, count: 1024)
        try data.withUnsafeBytes { try device.write(from: $0, at: 4) }
        var back = [UInt8](repeating: 0, count: 1024)
        // Just written, so in the page cache.
        XCTAssertTrue(back.withUnsafeMutableBytes { device.readIfCached(into: $0, at: 4) })
        XCTAssertEqual(back, data)
        XCTAssertFalse(NullDevice(sectors: 8).readIfCached(into: UnsafeMutableRawBufferPointer(start: nil, count: 0), at: 0),
                       "devices without a page cache say no")
    }

    func testDirectImageNeverAnswersFromThePageCacheEvenWhenTheDataIsThere() throws {
        // Written through the page cache (and read back, so certainly cached), then opened with O_DIRECT.
        let path = makeImage(sectors: 16)
        _ = FileManager.default.contents(atPath: path)
        var options = ImageDevice.Options()
        options.direct = true
        let device = try ImageDevice(path: path, options: options)
        XCTAssertTrue(device.bypassesPageCache)
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { memory.deallocate() }
        let buffer = UnsafeMutableRawBufferPointer(start: memory, count: 512)
        XCTAssertFalse(device.readIfCached(into: buffer, at: 5), "O_DIRECT reads go to the disk, never to the page cache")
        try device.read(into: buffer, at: 5)
        XCTAssertEqual([buffer[0], buffer[1]], [5, 0], "the real read returns the sector")
    }

    func testInjectedPwriteFailureSurfacesAsDeviceError() throws {
        let path = makeImage(sectors: 8)
        let device = try ImageDevice(path: path, options: .init())
        Syscall.failPwriteAfter.store(1, ordering: .relaxed)
        defer { Syscall.failPwriteAfter.store(0, ordering: .relaxed) }
        let data = [UInt8](repeating: 1, count: 512)
        XCTAssertThrowsError(try data.withUnsafeBytes { try device.write(from: $0, at: 0) }) { error in
            XCTAssertEqual((error as? DeviceError)?.underlying.errno, EIO)
        }
        XCTAssertNoThrow(try data.withUnsafeBytes { try device.write(from: $0, at: 0) })
    }
}
