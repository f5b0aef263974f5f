import Glibc
import LinuxSystem

/// What a device can do, asked once when it is opened and then enforced by the ATA dispatcher.
public struct DeviceCapabilities: Hashable, Sendable {
    public var writable: Bool
    /// FLUSH reaches stable storage (fdatasync, or the drive's own flush).
    public var canFlush: Bool
    /// Data buffers must be aligned to this many bytes (O_DIRECT); 1 when any address works.
    public var bufferAlignment: Int
    /// Operations finish in microseconds and never wait for a disk (memory-backed: null, tmpfs), so the
    /// target runs them on its receive thread instead of handing them to a worker.
    public var neverBlocks: Bool
    /// The device can discard sectors (`BlockDevice.discard`), and what a discarded sector reads back as; nil
    /// when it cannot (read-only, a drive behind SG_IO).
    public var discard: DiscardedSectors?

    public init(writable: Bool, canFlush: Bool, bufferAlignment: Int = 1, neverBlocks: Bool = false,
                discard: DiscardedSectors? = nil) {
        self.writable = writable
        self.canFlush = canFlush
        self.bufferAlignment = bufferAlignment
        self.neverBlocks = neverBlocks
        self.discard = writable ? discard : nil
    }
}

/// What a discarded sector reads back as: zeros (a hole punched in a file, a block device zeroed), or the same
/// unspecified data every time (librbd skips discards of partial objects).
public enum DiscardedSectors: Hashable, Sendable { case zeros, unchanged }

/// Sectors [lba, lba + count) of a device.
public struct SectorRange: Hashable, Sendable {
    public var lba: UInt64
    public var count: Int
    public init(lba: UInt64, count: Int) {
        self.lba = lba
        self.count = count
    }
}

/// A failed device operation. Mapped to ATA ABRT in the reply and logged with its context.
public struct DeviceError: Error, Hashable, Sendable, CustomStringConvertible {
    public var underlying: SystemError
    /// The device refused because another host owns it now (an RBD image whose lock was broken): the request
    /// must go unanswered and the export must stop answering (fencing), not reply ABRT.
    public var ownershipLost: Bool
    public init(_ underlying: SystemError, ownershipLost: Bool = false) {
        self.underlying = underlying
        self.ownershipLost = ownershipLost
    }
    public var description: String { underlying.description }
}

/// Storage behind an export, addressed in 512-byte sectors. Implementations are safe to call from several
/// threads at once (positioned I/O); range and capability checks happen before a call reaches them.
public protocol BlockDevice: AnyObject, Sendable {
    var sectorCount: UInt64 { get }
    var capabilities: DeviceCapabilities { get }
    /// A short name for logs ("image disk.img", "null").
    var name: String { get }
    /// A stable identity for the IDENTIFY serial number (the same image gives the same serial).
    var identity: String { get }

    func read(into buffer: UnsafeMutableRawBufferPointer, at lba: UInt64) throws(DeviceError)
    func write(from buffer: UnsafeRawBufferPointer, at lba: UInt64) throws(DeviceError)
    func flush() throws(DeviceError)
    /// Gives the sectors back (punches a hole, unmaps them); they read back as `capabilities.discard` says.
    /// Called only when `capabilities.discard` is set.
    func discard(_ range: SectorRange) throws(DeviceError)

    /// Reads only if the data is already in memory (page cache), without waiting for a disk; false otherwise
    /// (and the buffer's contents are then unspecified). Lets a target answer cached reads at once.
    func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at lba: UInt64) -> Bool

    /// Reads consecutive sectors starting at `lba` into several buffers (whole sectors each), in one call
    /// where the device can (preadv): adjacent requests merged into one I/O.
    func read(into buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, at lba: UInt64) throws(DeviceError)
    /// Writes several buffers (whole sectors each) to consecutive sectors starting at `lba` (pwritev).
    func write(from buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, at lba: UInt64) throws(DeviceError)
}

/// A device whose sectors are one byte range of one open file (image or block device): a target may queue its
/// reads and writes in the kernel (io_uring) instead of calling `read`/`write` from threads.
public protocol FileBackedDevice: BlockDevice {
    var fileDescriptor: Int32 { get }
    /// O_DIRECT: transfers go between the disk and the caller's buffers, segment by segment.
    var bypassesPageCache: Bool { get }
    /// Where sector `lba` of the export starts in the file (an image window starts past its offset).
    func fileOffset(of lba: UInt64) -> Int
}

extension BlockDevice {
    /// Devices that cannot discard never have it called (their `capabilities.discard` is nil).
    public func discard(_ range: SectorRange) throws(DeviceError) {
        throw DeviceError(SystemError(call: "discard", errno: EOPNOTSUPP, context: name))
    }

    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at lba: UInt64) -> Bool { false }

    /// One call per buffer, for devices without vectored I/O.
    public func read(into buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, at lba: UInt64) throws(DeviceError) {
        var next = lba
        for buffer in buffers {
            try read(into: buffer, at: next)
            next += UInt64(buffer.count / sectorSize)
        }
    }

    public func write(from buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, at lba: UInt64) throws(DeviceError) {
        var next = lba
        for buffer in buffers {
            try write(from: UnsafeRawBufferPointer(buffer), at: next)
            next += UInt64(buffer.count / sectorSize)
        }
    }
}

public let sectorSize = 512

/// A device that brings its own asynchronous queue (Ceph RBD: librbd's aio), which the target serves it through
/// instead of io_uring or threads.
public protocol QueuedBlockDevice: BlockDevice {
    func makeQueue(tokenCapacity: Int) throws(DeviceError) -> any DeviceQueue
}

/// A device another host can take over (an RBD image under an exclusive lock): served only while this host
/// owns it.
public protocol ExclusivelyOwnedDevice: BlockDevice {
    /// Asks the cluster whether this host still holds the device: false once another host has taken it over.
    /// When the cluster cannot tell (unreachable), true: the next I/O will.
    func confirmOwnership() -> Bool
}

/// A device whose size can change while it is served (an RBD image after `rbd resize`).
public protocol ResizableDevice: BlockDevice {
    /// Takes in a size change since the last call: true when `sectorCount` changed. Cheap when nothing did.
    func refreshSize() -> Bool
}
