import Glibc
import Synchronization

/// Reads return zeros, writes are discarded, any size: the ceiling reference for benchmarks (nbdkit's null plugin).
public final class NullDevice: BlockDevice {
    public let sectorCount: UInt64
    public let capabilities: DeviceCapabilities
    public var name: String { "null" }
    public var identity: String { "null:\(sectorCount)" }

    public init(sectors: UInt64, readOnly: Bool = false) {
        sectorCount = sectors
        capabilities = DeviceCapabilities(writable: !readOnly, canFlush: true, neverBlocks: true, discard: .zeros)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at lba: UInt64) throws(DeviceError) {
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
    }
    public func write(from buffer: UnsafeRawBufferPointer, at lba: UInt64) throws(DeviceError) {}
    public func flush() throws(DeviceError) {}
    public func discard(_ range: SectorRange) throws(DeviceError) {}
}

/// A device in memory, for tests. Records flushes so tests can check ordering against replies.
public final class MemoryDevice: BlockDevice {
    public let sectorCount: UInt64
    public let capabilities: DeviceCapabilities
    public var name: String { "memory" }
    public var identity: String { "memory:\(sectorCount)" }
    private let storage: Mutex<[UInt8]>
    public let flushCount = Atomic<Int>(0)

    /// - Parameter neverBlocks: served inline, like tmpfs; otherwise like a disk (on threads).
    public init(sectors: UInt64, writable: Bool = true, neverBlocks: Bool = false) {
        sectorCount = sectors
        capabilities = DeviceCapabilities(writable: writable, canFlush: true, neverBlocks: neverBlocks, discard: .zeros)
        storage = Mutex([UInt8](repeating: 0, count: Int(sectors) * sectorSize))
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at lba: UInt64) throws(DeviceError) {
        storage.withLock { bytes in
            let start = Int(lba) * sectorSize
            bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[start..<(start + buffer.count)])) }
        }
    }

    public func write(from buffer: UnsafeRawBufferPointer, at lba: UInt64) throws(DeviceError) {
        storage.withLock { bytes in
            let start = Int(lba) * sectorSize
            guard let source = buffer.baseAddress else { return }
            bytes.withUnsafeMutableBytes { ($0.baseAddress! + start).copyMemory(from: source, byteCount: buffer.count) }
        }
    }

    public func flush() throws(DeviceError) { flushCount.add(1, ordering: .relaxed) }

    public func discard(_ range: SectorRange) throws(DeviceError) {
        storage.withLock { bytes in
            let start = Int(range.lba) * sectorSize
            _ = bytes.withUnsafeMutableBytes { memset($0.baseAddress! + start, 0, range.count * sectorSize) }
        }
    }

    public func contents(lba: UInt64, count: Int) -> [UInt8] {
        storage.withLock { Array($0[(Int(lba) * sectorSize)..<((Int(lba) + count) * sectorSize)]) }
    }
}
