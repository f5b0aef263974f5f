import Glibc
import LinuxSystem

/// Files and block devices: requests queued in the kernel with io_uring, from the event loop's thread. One
/// system call per pass hands every request to the kernel; the loop sleeps in the ring until a request
/// completes or frames arrive (a poll on the socket). No thread waits for the disk and the device sees the
/// whole queue depth at once.
///
/// With O_DIRECT, a merged transfer moves through one contiguous bounce buffer (one segment for the disk, one
/// copy in memory): disks and hypervisors that split a request per segment serve four 1 KiB segments of an
/// MTU 1500 I/O about half as fast as one 4 KiB block.
public final class IOUringDeviceQueue: DeviceQueue, @unchecked Sendable {
    public let device: any FileBackedDevice
    public let tokenCapacity: Int
    public private(set) var outstanding = 0
    private let ring: IOUring
    /// Called when io_uring_enter refused for a moment (the requests stay queued): errno and how many.
    private let onSubmitRetry: (SystemError, Int) -> Void

    /// Per token: the request in the ring, and its bounce buffer (-1: the caller's segments).
    private let requests: UnsafeMutablePointer<DeviceRequest>
    private var bounceOf: [Int]
    /// One iovec per token for a bounced transfer.
    private let bounceVectors: UnsafeMutablePointer<iovec>
    private let bounce: UnsafeMutableRawPointer?
    static let bounceSize = 128 << 10
    static let bounceCount = 32
    private var freeBounce: [Int]
    /// Per discard token: its ranges still in the ring, and the first error among those done (0: none).
    private var discardsLeft: [Int]
    private var discardErrno: [Int32]

    private var unsubmitted = 0
    private var pollArmed = false
    private static let pollToken = UInt64(1) << 40
    private let reapCapacity = 64
    private let reapedData: UnsafeMutablePointer<UInt64>
    private let reapedResults: UnsafeMutablePointer<Int32>

    /// - Parameters:
    ///   - tokenCapacity: requests that may be in the ring at once (tokens below it).
    ///   - kernelWorkers: bound on the kernel threads that run requests which must block (buffered I/O).
    public init(device: any FileBackedDevice, tokenCapacity: Int, kernelWorkers: Int,
                onSubmitRetry: @escaping (SystemError, Int) -> Void) throws(SystemError) {
        // Room for every request and the socket poll, up to the kernel's limit (32 Ki).
        var entries = 1
        while entries < min(tokenCapacity + 1, 32768) { entries <<= 1 }
        ring = try IOUring(entries: entries, maxKernelWorkers: max(1, kernelWorkers))
        self.device = device
        self.tokenCapacity = tokenCapacity
        self.onSubmitRetry = onSubmitRetry
        requests = .allocate(capacity: tokenCapacity)
        bounceOf = Array(repeating: -1, count: tokenCapacity)
        bounceVectors = .allocate(capacity: tokenCapacity)
        if device.bypassesPageCache {
            var memory: UnsafeMutableRawPointer? = nil
            // Pages are touched only when a buffer is first used: 4 MiB at most.
            bounce = posix_memalign(&memory, 4096, Self.bounceSize * Self.bounceCount) == 0 ? memory : nil
        } else {
            bounce = nil
        }
        freeBounce = bounce == nil ? [] : Array(0..<Self.bounceCount)
        discardsLeft = Array(repeating: 0, count: tokenCapacity)
        discardErrno = Array(repeating: 0, count: tokenCapacity)
        reapedData = .allocate(capacity: reapCapacity)
        reapedResults = .allocate(capacity: reapCapacity)
    }

    deinit {
        requests.deallocate()
        bounceVectors.deallocate()
        free(bounce)
        reapedData.deallocate()
        reapedResults.deallocate()
    }

    public var engineDescription: String { "I/O via io_uring" }

    /// A merged O_DIRECT transfer fits one bounce buffer.
    public var maxTransferBytes: Int { bounce == nil ? Int.max : Self.bounceSize }

    /// Whether one buffer touches more pages than its length needs (a 4 KiB frame payload at a 512-byte boundary
    /// spans two): the disk then gets a segment per page, and this virtio disk served two-segment 4 KiB reads at
    /// half the rate of one segment (45k against 92k IOPS at QD32), for the price of a 4 KiB copy.
    static func splitsPages(_ vector: iovec) -> Bool {
        let start = Int(bitPattern: vector.iov_base), length = vector.iov_len
        guard length > 0 else { return false }
        let touched = (start + length - 1) / 4096 - start / 4096 + 1
        return touched > (length + 4095) / 4096
    }

    public func submit(_ request: DeviceRequest) {
        let token = request.token
        precondition(token >= 0 && token < tokenCapacity)
        (requests + token).initialize(to: request)
        outstanding += 1
        let userData = UInt64(token)
        switch request.operation {
        case .read, .write:
            let write = request.operation.isWrite
            var vectors = request.segments!
            var count = request.segmentCount
            bounceOf[token] = -1
            if count > 1 || Self.splitsPages(vectors[0]), request.bytes <= Self.bounceSize, let bounce, let index = freeBounce.popLast() {
                let buffer = bounce + index * Self.bounceSize
                if write { request.copySegments(to: buffer) }
                bounceOf[token] = index
                bounceVectors[token] = iovec(iov_base: buffer, iov_len: request.bytes)
                vectors = bounceVectors + token
                count = 1
            }
            let offset = device.fileOffset(of: request.lba)
            prepare { $0.prepareVectored(write: write, fd: device.fileDescriptor, vectors: vectors, count: count,
                                         offset: offset, userData: userData) }
        case .flush:
            prepare { $0.prepareDatasync(fd: device.fileDescriptor, userData: userData) }
        case .discard(let ranges, let count):
            // One fallocate per range, all under the request's token; it completes with the last of them.
            precondition(count > 0)
            discardsLeft[token] = count
            discardErrno[token] = 0
            for i in 0..<count {
                let offset = device.fileOffset(of: ranges[i].lba), length = ranges[i].count * sectorSize
                prepare { $0.prepareFallocate(fd: device.fileDescriptor, mode: Syscall.punchHoleMode, offset: offset,
                                              length: length, userData: userData) }
            }
        case .passThrough:
            preconditionFailure("pass-through does not go through io_uring")
        }
    }

    public func push() {
        guard unsubmitted > 0 else { return }
        let queued = unsubmitted
        unsubmitted = 0
        do { try ring.submit() } catch { submitFailed(error, queued: queued) }
    }

    public func wait(readable descriptor: Int32?, timeout: Double) {
        if !pollArmed, let descriptor {
            prepare { $0.preparePollIn(fd: descriptor, userData: Self.pollToken) }
            pollArmed = true
        }
        let queued = unsubmitted
        unsubmitted = 0
        do { try ring.submitAndWait(timeout: timeout) } catch { submitFailed(error, queued: queued) }
    }

    public func reap(_ body: (DeviceCompletion) -> Void) -> Int {
        var delivered = 0
        while true {
            let reaped = ring.reapReady(userData: reapedData, results: reapedResults, capacity: reapCapacity)
            for i in 0..<reaped {
                if reapedData[i] == Self.pollToken {
                    pollArmed = false
                    continue
                }
                let token = Int(reapedData[i])
                if case .discard = requests[token].operation {
                    if reapedResults[i] < 0 && discardErrno[token] == 0 { discardErrno[token] = -reapedResults[i] }
                    discardsLeft[token] -= 1
                    if discardsLeft[token] > 0 { continue }
                }
                body(complete(token: token, result: reapedResults[i]))
                (requests + token).deinitialize(count: 1)
                outstanding -= 1
                delivered += 1
            }
            if reaped < reapCapacity { return delivered }
        }
    }

    private func complete(token: Int, result: Int32) -> DeviceCompletion {
        let request = requests[token]
        defer {
            if bounceOf[token] >= 0 {
                freeBounce.append(bounceOf[token])
                bounceOf[token] = -1
            }
        }
        switch request.operation {
        case .flush:
            Syscall.fdatasyncCalls.add(1, ordering: .relaxed)   // counted done, not queued
            guard result >= 0 else {
                return DeviceCompletion(token: token, failure: DeviceError(SystemError(call: "fdatasync", errno: -result, context: device.name)))
            }
            return DeviceCompletion(token: token)
        case .discard(let ranges, _):
            guard discardErrno[token] == 0 else {
                return DeviceCompletion(token: token, failure: DeviceError(SystemError(
                    call: "fallocate(PUNCH_HOLE)", errno: discardErrno[token], context: "\(device.name) from byte \(device.fileOffset(of: ranges[0].lba))")))
            }
            return DeviceCompletion(token: token)
        default:
            let write = request.operation.isWrite
            if result < 0 {
                return DeviceCompletion(token: token, failure: DeviceError(SystemError(
                    call: write ? "pwritev" : "preadv", errno: -result, context: "\(device.name) at byte \(device.fileOffset(of: request.lba))")))
            }
            if Int(result) < request.bytes {
                // A short transfer (a signal, the end of a file that shrank): redo it the blocking way, straight
                // between the caller's segments and the device, which finishes or reports why not.
                return request.perform(on: device)
            }
            if !write, bounceOf[token] >= 0 {
                request.copySegments(from: bounce! + bounceOf[token] * Self.bounceSize)
            }
            return DeviceCompletion(token: token)
        }
    }

    /// Prepares one request; when the submission queue is full (more at once than it has entries, only with a
    /// Buffer Count above 32 Ki), submits what is there first.
    private func prepare(_ body: (IOUring) -> Bool) {
        var attempts = 0
        while !body(ring) {
            precondition(attempts < 10_000, "io_uring submission queue still full after 10 s of retries")
            attempts += 1
            do {
                try ring.submit()
                unsubmitted = 0
            } catch { submitFailed(error, queued: unsubmitted) }
        }
        unsubmitted += 1
    }

    /// io_uring_enter failed. Short of memory or completion room (EAGAIN, EBUSY, ENOMEM, EINTR), the kernel
    /// leaves the requests in the submission queue: report, pause a moment and submit them on the next pass.
    /// Any other errno is a bug in how the ring is used, and traps.
    private func submitFailed(_ error: SystemError, queued: Int) {
        switch error.errno {
        case EAGAIN, EBUSY, ENOMEM, EINTR:
            onSubmitRetry(error, queued)
            unsubmitted = max(unsubmitted, max(queued, 1))
            usleepSeconds(0.001)
        default:
            fatalError("io_uring failed: \(error)")
        }
    }
}

extension DeviceRequest.Operation {
    var isWrite: Bool { if case .write = self { true } else { false } }
}

extension DeviceRequest {
    func copySegments(to buffer: UnsafeMutableRawPointer) {
        var offset = 0
        for i in 0..<segmentCount {
            (buffer + offset).copyMemory(from: segments![i].iov_base, byteCount: segments![i].iov_len)
            offset += segments![i].iov_len
        }
    }

    func copySegments(from buffer: UnsafeMutableRawPointer) {
        var offset = 0
        for i in 0..<segmentCount {
            segments![i].iov_base.copyMemory(from: buffer + offset, byteCount: segments![i].iov_len)
            offset += segments![i].iov_len
        }
    }
}
