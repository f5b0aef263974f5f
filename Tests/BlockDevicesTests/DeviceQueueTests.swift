import XCTest
import Glibc
@testable import BlockDevices
import LinuxSystem

/// Every device queue, run against the same image: a merged write of several segments reads back, a flush
/// completes, an I/O error comes back in the completion, and the queue ends with nothing outstanding.
final class DeviceQueueTests: XCTestCase {
    var directory = ""

    override func setUp() {
        directory = NSTemporaryDirectory() + "aoe-queue-tests-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        mkdir(directory, 0o755)
    }

    override func tearDown() {
        _ = try? FileManager.default.removeItem(atPath: directory)
    }

    enum Engine: CaseIterable { case inline, threads, ioUring, ioUringDirect }

    func makeQueue(_ engine: Engine, sectors: Int = 64) throws -> (any DeviceQueue, ImageDevice) {
        let path = directory + "/\(engine).img"
        FileManager.default.createFile(atPath: path, contents: Data(count: sectors * 512))
        var options = ImageDevice.Options()
        options.direct = engine == .ioUringDirect
        let device = try ImageDevice(path: path, options: options)
        switch engine {
        case .inline: return (InlineDeviceQueue(device: device, tokenCapacity: 8), device)
        case .threads: return (ThreadDeviceQueue(device: device, tokenCapacity: 8, workers: 3, why: "test"), device)
        case .ioUring, .ioUringDirect:
            return (try IOUringDeviceQueue(device: device, tokenCapacity: 8, kernelWorkers: 2) { _, _ in }, device)
        }
    }

    /// Waits (bounded) for `count` completions.
    func reapAll(_ queue: any DeviceQueue, count: Int) -> [DeviceCompletion] {
        var completions: [DeviceCompletion] = []
        let deadline = monotonicSeconds() + 10
        queue.push()
        while completions.count < count && monotonicSeconds() < deadline {
            queue.reap { completions.append($0) }
            if completions.count < count { queue.wait(readable: nil, timeout: 0.05) }
        }
        return completions
    }

    /// Page-aligned memory with `segments` segments of `sectors` sectors each.
    struct Segments {
        let memory: UnsafeMutableRawPointer
        let vectors: UnsafeMutablePointer<iovec>
        let count: Int
        let bytesEach: Int
        init(count: Int, sectors: Int) {
            self.count = count
            bytesEach = sectors * 512
            memory = .allocate(byteCount: count * bytesEach, alignment: 4096)
            vectors = .allocate(capacity: count)
            for i in 0..<count { vectors[i] = iovec(iov_base: memory + i * bytesEach, iov_len: bytesEach) }
        }
        func free() {
            memory.deallocate()
            vectors.deallocate()
        }
        var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: memory, count: count * bytesEach) }
        func request(_ operation: DeviceRequest.Operation, lba: UInt64, token: Int) -> DeviceRequest {
            DeviceRequest(operation: operation, lba: lba, segments: vectors, segmentCount: count, bytes: count * bytesEach, token: token)
        }
    }

    func testEveryQueueWritesReadsAndFlushes() throws {
        for engine in Engine.allCases {
            let (queue, device) = try makeQueue(engine)
            defer { queue.shutDown() }
            let out = Segments(count: 3, sectors: 2)
            let back = Segments(count: 1, sectors: 6)
            defer { out.free(); back.free() }
            for i in 0..<out.bytes.count { out.bytes[i] = UInt8(truncatingIfNeeded: i * 7 + 1) }
            queue.submit(out.request(.write, lba: 10, token: 3))
            queue.submit(.flush(token: 5))
            let written = reapAll(queue, count: 2)
            XCTAssertEqual(Set(written.map(\.token)), [3, 5], "\(engine)")
            XCTAssertTrue(written.allSatisfy { $0.failure == nil }, "\(engine): \(written)")
            queue.submit(back.request(.read, lba: 10, token: 1))
            let read = reapAll(queue, count: 1)
            XCTAssertEqual(read.map(\.token), [1], "\(engine)")
            XCTAssertEqual(Array(back.bytes), Array(out.bytes), "\(engine): three segments written at 10 read back as one")
            XCTAssertEqual(queue.outstanding, 0, "\(engine)")
            // And the bytes are where the LBA says, in the file (an aligned buffer: the device may be O_DIRECT).
            let check = Segments(count: 1, sectors: 1)
            defer { check.free() }
            try device.read(into: check.bytes, at: 11)
            XCTAssertEqual(Array(check.bytes), Array(out.bytes[512..<1024]), "\(engine): sector 11 is the write's second sector")
        }
    }

    func testAnIOErrorComesBackInTheCompletion() throws {
        for engine in Engine.allCases {
            let (queue, _) = try makeQueue(engine)
            defer { queue.shutDown() }
            let out = Segments(count: 2, sectors: 1)
            defer { out.free() }
            Syscall.failPwriteAfter.store(1, ordering: .relaxed)
            queue.submit(out.request(.write, lba: 0, token: 2))
            let completions = reapAll(queue, count: 1)
            Syscall.failPwriteAfter.store(0, ordering: .relaxed)
            XCTAssertEqual(completions.first?.failure?.underlying.errno, EIO, "\(engine): \(completions)")
            // The next write is fine again.
            queue.submit(out.request(.write, lba: 0, token: 2))
            XCTAssertNil(reapAll(queue, count: 1).first?.failure, "\(engine)")
        }
    }

    func testManyRequestsAtOnceAllComplete() throws {
        // More requests than workers or bounce buffers... all complete, each once.
        for engine in Engine.allCases {
            let path = directory + "/many-\(engine).img"
            FileManager.default.createFile(atPath: path, contents: Data(count: 512 * 512))
            var options = ImageDevice.Options()
            options.direct = engine == .ioUringDirect
            let device = try ImageDevice(path: path, options: options)
            let queue: any DeviceQueue = switch engine {
            case .inline: InlineDeviceQueue(device: device, tokenCapacity: 256)
            case .threads: ThreadDeviceQueue(device: device, tokenCapacity: 256, workers: 4, why: "test")
            case .ioUring, .ioUringDirect: try IOUringDeviceQueue(device: device, tokenCapacity: 256, kernelWorkers: 2) { _, _ in }
            }
            defer { queue.shutDown() }
            let buffers = (0..<256).map { _ in Segments(count: 2, sectors: 1) }
            defer { buffers.forEach { $0.free() } }
            for (i, b) in buffers.enumerated() {
                b.bytes.initializeMemory(as: UInt8.self, repeating: UInt8(i & 0xFF))
                queue.submit(b.request(.write, lba: UInt64(i * 2), token: i))
            }
            let completions = reapAll(queue, count: 256)
            XCTAssertEqual(completions.map(\.token).sorted(), Array(0..<256), "\(engine)")
            let sector = Segments(count: 1, sectors: 1)
            defer { sector.free() }
            try device.read(into: sector.bytes, at: 2 * 200 + 1)
            XCTAssertEqual(Array(sector.bytes), [UInt8](repeating: 200, count: 512), "\(engine)")
        }
    }

    func testFaultPlanSyntax() {
        XCTAssertEqual(FaultPlan(parsing: "write:5"), FaultPlan(operations: [.write], percent: 5, seed: 1))
        XCTAssertEqual(FaultPlan(parsing: "read,flush:0.5:42"), FaultPlan(operations: [.read, .flush], percent: 0.5, seed: 42))
        XCTAssertEqual(FaultPlan(parsing: "all:100")?.operations, [.read, .write, .flush, .discard])
        XCTAssertEqual(FaultPlan(parsing: "discard:5"), FaultPlan(operations: [.discard], percent: 5, seed: 1))
        for bad in ["write", "write:", "write:101", "write:-1", "trim:5", ":5", "write:5:x", "write:5:1:2"] {
            XCTAssertNil(FaultPlan(parsing: bad), bad)
        }
        XCTAssertEqual(FaultPlan(parsing: "flush,read:2:9")?.description, "read,flush:2.0:9")
    }

    func testTheFaultWrapperFailsOnlyWhatItsPlanNamesAndPassesTheRestThrough() throws {
        let (inner, _) = try makeQueue(.ioUring)
        let queue = FaultInjectingDeviceQueue(inner, plan: FaultPlan(operations: [.flush], percent: 100))
        defer { queue.shutDown() }
        let out = Segments(count: 1, sectors: 1)
        defer { out.free() }
        queue.submit(out.request(.write, lba: 0, token: 1))
        queue.submit(.flush(token: 2))
        let completions = reapAll(queue, count: 2)
        XCTAssertNil(completions.first { $0.token == 1 }?.failure, "writes are not in the plan")
        XCTAssertEqual(completions.first { $0.token == 2 }?.failure?.underlying.errno, EIO)
        XCTAssertEqual(queue.injected, 1)
        XCTAssertEqual(queue.outstanding, 0)
    }
}

/// O_DIRECT buffers that straddle more pages than their length needs go through a bounce buffer (one segment).
final class BounceRuleTests: XCTestCase {
    func testABufferSplitsPagesOnlyWhenItTouchesMoreThanItsLengthNeeds() {
        func splits(_ start: Int, _ length: Int) -> Bool {
            IOUringDeviceQueue.splitsPages(iovec(iov_base: UnsafeMutableRawPointer(bitPattern: start), iov_len: length))
        }
        XCTAssertFalse(splits(0x1000, 4096), "page-aligned 4 KiB: one page")
        XCTAssertTrue(splits(0x1200, 4096), "4 KiB at a 512-byte boundary: two pages")
        XCTAssertFalse(splits(0x1200, 512), "512 bytes inside a page")
        XCTAssertFalse(splits(0x1200, 8704), "17 sectors from 0x1200 end in the third page: three pages either way")
        XCTAssertTrue(splits(0x1F00, 8704), "17 sectors from 0x1F00 reach a fourth page")
        XCTAssertFalse(splits(0x1F00, 0))
    }
}
