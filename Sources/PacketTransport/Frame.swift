import AoEWire
import LinuxSystem

/// One frame's bytes in a `FramePool` slot. `length` is what was received or what is to be sent.
public struct Frame: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let capacity: Int
    public var length: Int
    /// Which port of a `LinkGroup` it came in on, so the reply leaves through the same NIC; 0 on a plain link.
    public var port: UInt8 = 0

    public init(base: UnsafeMutableRawPointer, capacity: Int, length: Int = 0) {
        self.base = base
        self.capacity = capacity
        self.length = length
    }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: length) }
    public var buffer: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: base, count: capacity) }

    /// The data area after the 36-byte ATA header, where read data lands and write data sits.
    public func payload(count: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: base + AoELayout.ataHeaderSize, count: count)
    }

    /// Zero-fills up to the Ethernet minimum: aoeping ignores shorter replies and veth does not pad.
    public mutating func padToMinimum() {
        if length < AoELayout.minimumFrameSize {
            (base + length).initializeMemory(as: UInt8.self, repeating: 0, count: AoELayout.minimumFrameSize - length)
            length = AoELayout.minimumFrameSize
        }
    }
}

/// Fixed frame slots allocated once, each starting at the same offset in a page. By default a frame starts 36
/// bytes before a page boundary so its ATA data area is page-aligned, which O_DIRECT needs and which lets read
/// data land in the reply frame.
public final class FramePool: @unchecked Sendable {
    public static let pageSize = 4096
    public let frameCapacity: Int
    public let slotCount: Int
    private let memory: UnsafeMutableRawPointer
    private let stride: Int
    private let startInPage: Int

    /// - Parameter startInPage: where in its page each frame starts. The default (36 bytes before the end) puts
    ///   the ATA data area on a page boundary.
    public init(slots: Int, frameCapacity: Int, startInPage: Int = FramePool.pageSize - AoELayout.ataHeaderSize) {
        precondition(slots > 0 && frameCapacity >= AoELayout.minimumFrameSize)
        precondition(startInPage >= 0 && startInPage < Self.pageSize)
        self.frameCapacity = frameCapacity
        slotCount = slots
        self.startInPage = startInPage
        stride = Self.pageSize * ((startInPage + frameCapacity + Self.pageSize - 1) / Self.pageSize)
        // Zero pages on first touch: with a large Buffer Count, only the slots in use take memory.
        memory = Syscall.mapAnonymous(bytes: stride * slots)
    }

    deinit { Syscall.unmap(memory, bytes: stride * slotCount) }

    public func frame(_ index: Int) -> Frame {
        precondition(index >= 0 && index < slotCount)
        return Frame(base: memory + index * stride + startInPage, capacity: frameCapacity)
    }
}
