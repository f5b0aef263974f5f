import Glibc
import BlockDevices
import CRBD
import LinuxSystem

/// librbd's asynchronous I/O for the export's event loop: each request becomes one `rbd_aio_readv`,
/// `rbd_aio_writev` or `rbd_aio_flush` straight from and into the frame buffers, and librbd signals its
/// completions on an eventfd (`rbd_set_image_notification`), which `reap` drains with `rbd_poll_io_events`.
/// No callback runs on librbd's threads, so no Swift code does.
public final class RBDDeviceQueue: DeviceQueue {
    public let tokenCapacity: Int
    public private(set) var outstanding = 0
    private let device: RBDImage
    private let completions = EventCounter()
    /// Requests librbd refused at submit; completed at the next reap.
    private var refused: [DeviceCompletion] = []
    private var polled: [rbd_completion_t?]
    /// Per discard token: its ranges still in librbd, and the first error among those done (0: none).
    private var discardsLeft: [Int]
    private var discardErrno: [Int32]

    init(image: RBDImage, tokenCapacity: Int) throws(DeviceError) {
        device = image
        self.tokenCapacity = tokenCapacity
        polled = Array(repeating: nil, count: 64)
        refused.reserveCapacity(tokenCapacity)
        discardsLeft = Array(repeating: 0, count: tokenCapacity)
        discardErrno = Array(repeating: 0, count: tokenCapacity)
        let rc = aoe_rbd_set_image_notification(image.image, completions.descriptor, Int32(EVENT_TYPE_EVENTFD))
        if rc < 0 { throw DeviceError(SystemError(call: "rbd_set_image_notification", errno: -rc, context: image.name)) }
    }

    public var engineDescription: String { "librbd aio on \(device.name), completions through an eventfd, rbd_cache off" }

    public func submit(_ request: DeviceRequest) {
        precondition(request.token >= 0 && request.token < tokenCapacity)
        outstanding += 1
        if case .discard(let ranges, let count) = request.operation {
            submitDiscard(token: request.token, ranges: UnsafeBufferPointer(start: ranges, count: count))
            return
        }
        var completion: rbd_completion_t?
        // The token rides in the completion's argument, offset by one so that token 0 is not a null pointer.
        var rc = aoe_rbd_aio_create_completion(UnsafeMutableRawPointer(bitPattern: request.token + 1), nil, &completion)
        if rc == 0 {
            let offset = request.lba * UInt64(sectorSize)
            switch request.operation {
            case .read: rc = aoe_rbd_aio_readv(device.image, request.segments, Int32(request.segmentCount), offset, completion)
            case .write: rc = aoe_rbd_aio_writev(device.image, request.segments, Int32(request.segmentCount), offset, completion)
            case .flush: rc = aoe_rbd_aio_flush(device.image, completion)
            case .discard: preconditionFailure("discards go through submitDiscard")
            case .passThrough: preconditionFailure("pass-through submitted for \(device.name), which is not a drive")
            }
            if rc < 0 { aoe_rbd_aio_release(completion) }
        }
        if rc < 0 {
            refused.append(DeviceCompletion(token: request.token, failure: Self.error(Self.call(request.operation), errno: -rc)))
        }
    }

    /// One `rbd_aio_discard` per range under the request's token; the request completes with the last of them.
    private func submitDiscard(token: Int, ranges: UnsafeBufferPointer<SectorRange>) {
        precondition(!ranges.isEmpty)
        discardsLeft[token] = ranges.count
        discardErrno[token] = 0
        for (i, range) in ranges.enumerated() {
            var completion: rbd_completion_t?
            var rc = aoe_rbd_aio_create_completion(UnsafeMutableRawPointer(bitPattern: token + 1), nil, &completion)
            if rc == 0 {
                rc = aoe_rbd_aio_discard(device.image, range.lba * UInt64(sectorSize), UInt64(range.count * sectorSize), completion)
                if rc < 0 { aoe_rbd_aio_release(completion) }
            }
            if rc < 0 {
                // The ranges already in librbd still complete; the request fails once they have.
                if discardErrno[token] == 0 { discardErrno[token] = -rc }
                discardsLeft[token] -= ranges.count - i
                if discardsLeft[token] == 0 {
                    refused.append(DeviceCompletion(token: token, failure: Self.error("rbd_aio_discard", errno: discardErrno[token])))
                }
                return
            }
        }
    }

    /// librbd starts each request when it is submitted.
    public func push() {}

    public func reap(_ body: (DeviceCompletion) -> Void) -> Int {
        var n = 0
        if !refused.isEmpty {
            for completion in refused { body(completion) }
            n += refused.count
            refused.removeAll(keepingCapacity: true)
        }
        if outstanding == n { outstanding = 0; return n }
        // Cleared before polling: a completion that arrives after the poll signals again, so none is left unseen.
        completions.clear()
        while true {
            let count = polled.withUnsafeMutableBufferPointer { aoe_rbd_poll_io_events(device.image, $0.baseAddress, Int32($0.count)) }
            if count <= 0 { break }
            for i in 0..<Int(count) {
                let completion = polled[i]
                let token = Int(bitPattern: aoe_rbd_aio_get_arg(completion)) - 1
                let result = aoe_rbd_aio_get_return_value(completion)
                aoe_rbd_aio_release(completion)
                if discardsLeft[token] > 0 {
                    if result < 0 && discardErrno[token] == 0 { discardErrno[token] = Int32(-result) }
                    discardsLeft[token] -= 1
                    if discardsLeft[token] > 0 { continue }
                    body(DeviceCompletion(token: token, failure: discardErrno[token] != 0 ? Self.error("rbd_aio_discard", errno: discardErrno[token]) : nil))
                } else {
                    body(DeviceCompletion(token: token, failure: result < 0 ? Self.error("rbd_aio", errno: Int32(-result)) : nil))
                }
                n += 1
            }
            if Int(count) < polled.count { break }
        }
        outstanding -= n
        return n
    }

    public func wait(readable descriptor: Int32?, timeout: Double) {
        if !refused.isEmpty { return }
        _ = Syscall.waitReadable(completions.descriptor, or: descriptor ?? -1, timeout: timeout)
    }

    /// librbd's word for "another client owns the image now": blocklisted (EBLOCKLISTED is ESHUTDOWN) after
    /// the lock was broken, or EROFS for a write once the lock is gone.
    static func error(_ call: String, errno: Int32) -> DeviceError {
        DeviceError(SystemError(call: call, errno: errno), ownershipLost: errno == ESHUTDOWN || errno == EROFS)
    }

    private static func call(_ operation: DeviceRequest.Operation) -> String {
        switch operation {
        case .read: "rbd_aio_readv"
        case .write: "rbd_aio_writev"
        case .flush: "rbd_aio_flush"
        case .discard: "rbd_aio_discard"
        case .passThrough: "pass-through"
        }
    }
}
