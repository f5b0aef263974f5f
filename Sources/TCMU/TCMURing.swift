import Glibc
import CLinuxShims
import LinuxSystem

/// One SCSI command taken off the TCMU command ring. The CDB is copied out (a response written at the ring's
/// tail may overwrite the entry it came in); the data buffers stay in the shared mapping, where the kernel
/// keeps them until this command's completion.
public struct TCMUCommand {
    public var id: UInt16
    public var cdb: UnsafeRawBufferPointer
    /// The data buffers: each a contiguous piece of the mapping, in order.
    public var buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>
    public var dataLength: Int { buffers.reduce(0) { $0 + $1.count } }
}

/// The TCMU ring protocol (<linux/target_core_user.h>) over a mapping of the kernel's shared area: a
/// mailbox, a command ring the kernel fills (head) and we answer (tail), and a data area the entries'
/// iovecs point into. Completions may come out of order: each one is written into the next entry at the
/// tail with the command's id, as the kernel's completion walk expects (it looks the id up per entry).
///
/// Not thread-safe: one thread takes and completes commands.
public final class TCMURing {
    public enum RingError: Error, CustomStringConvertible {
        case badMailbox(String)
        case badEntry(String)
        public var description: String {
            switch self {
            case .badMailbox(let why): "TCMU mailbox: \(why)"
            case .badEntry(let why): "TCMU command ring: \(why)"
            }
        }
    }

    private static let layout: CLinuxShims_TCMULayout = {
        var l = CLinuxShims_TCMULayout()
        CLinuxShims_tcmuLayout(&l)
        return l
    }()

    public let base: UnsafeMutableRawPointer
    public let size: Int
    private let ringOffset: Int
    private let ringSize: Int
    /// Where we read the next entry: entries between the tail and here are taken, not yet answered.
    private var consumed: Int
    /// Per taken command, its CDB copy and iovecs, in slots reused once answered.
    public let slotCount: Int
    public let maxBuffers: Int
    private let cdbStorage: UnsafeMutableRawPointer
    private let bufferStorage: UnsafeMutablePointer<UnsafeMutableRawBufferPointer>
    private var freeSlots: [Int]
    public static let maxCDBLength = 32
    /// Completions written since the kernel was last told.
    public private(set) var unannounced = 0

    /// `base`/`size`: the whole mapping (mailbox first). `slots`: how many commands may be taken at once;
    /// `maxBuffers`: the most iovecs one command may have (its data length in pages, plus one).
    public init(base: UnsafeMutableRawPointer, size: Int, slots: Int, maxBuffers: Int) throws(RingError) {
        let l = Self.layout
        self.base = base
        self.size = size
        let version = base.loadUnaligned(fromByteOffset: Int(l.mailboxVersion), as: UInt16.self)
        guard version == 2 else { throw .badMailbox("version \(version), this program speaks version 2 (Linux 4.19 and later)") }
        ringOffset = Int(base.loadUnaligned(fromByteOffset: Int(l.mailboxCommandRingOffset), as: UInt32.self))
        ringSize = Int(base.loadUnaligned(fromByteOffset: Int(l.mailboxCommandRingSize), as: UInt32.self))
        guard ringSize > 0, ringOffset >= Int(l.mailboxTail) + 4, ringOffset + ringSize <= size else {
            throw .badMailbox("command ring at \(ringOffset) of \(ringSize) bytes does not fit the \(size)-byte mapping")
        }
        consumed = Int(Self.loadAcquire(base + Int(l.mailboxTail)))
        slotCount = slots
        self.maxBuffers = maxBuffers
        cdbStorage = .allocate(byteCount: slots * Self.maxCDBLength, alignment: 8)
        bufferStorage = .allocate(capacity: slots * maxBuffers)
        freeSlots = Array((0..<slots).reversed())
    }

    deinit {
        cdbStorage.deallocate()
        bufferStorage.deallocate()
    }

    private static func loadAcquire(_ p: UnsafeMutableRawPointer) -> UInt32 {
        CLinuxShims_loadAcquire32(p.assumingMemoryBound(to: UInt32.self))
    }

    private var head: Int { Int(Self.loadAcquire(base + Int(Self.layout.mailboxHead))) }
    private var tail: Int {
        get { Int(base.loadUnaligned(fromByteOffset: Int(Self.layout.mailboxTail), as: UInt32.self)) }
        set { CLinuxShims_storeRelease32((base + Int(Self.layout.mailboxTail)).assumingMemoryBound(to: UInt32.self), UInt32(newValue)) }
    }

    private func entry(at offset: Int) -> UnsafeMutableRawPointer { base + ringOffset + offset }

    /// The kernel's length and opcode of the entry at `offset`, checked against the ring.
    private func lengthAndOp(at offset: Int) throws(RingError) -> (length: Int, op: UInt32) {
        let l = Self.layout
        let lenOp = entry(at: offset).loadUnaligned(fromByteOffset: Int(l.entryLengthOp), as: UInt32.self)
        let length = Int(lenOp & ~l.opMask)
        guard length > 0, length <= ringSize - offset else { throw .badEntry("entry at \(offset) has length \(length)") }
        return (length, lenOp & l.opMask)
    }

    /// Whether the kernel has queued entries not taken yet (one load of the mailbox head: no system call).
    public var hasPending: Bool { consumed != head }
    public var hasFreeSlot: Bool { !freeSlots.isEmpty }

    /// Takes the next command off the ring, skipping padding and task-management entries; nil when none
    /// is queued or every slot is in use. The returned command is valid until `complete` of its slot.
    public func take() throws(RingError) -> (slot: Int, command: TCMUCommand)? {
        let l = Self.layout
        while consumed != head {
            let (length, op) = try lengthAndOp(at: consumed)
            if op != l.opCommand {
                consumed = (consumed + length) % ringSize
                continue
            }
            guard let slot = freeSlots.popLast() else { return nil }
            let e = entry(at: consumed)
            let id = e.loadUnaligned(fromByteOffset: Int(l.entryCommandID), as: UInt16.self)
            let iovCount = Int(e.loadUnaligned(fromByteOffset: Int(l.requestIOVCount), as: UInt32.self))
            let cdbOffset = Int(e.loadUnaligned(fromByteOffset: Int(l.requestCDBOffset), as: UInt64.self))
            guard iovCount <= maxBuffers, Int(l.requestIOVs) + iovCount * Int(l.iovSize) <= length else {
                freeSlots.append(slot)
                throw .badEntry("command \(id) has \(iovCount) iovecs (at most \(maxBuffers) expected)")
            }
            guard cdbOffset >= 0, cdbOffset < size else {
                freeSlots.append(slot)
                throw .badEntry("command \(id): CDB offset \(cdbOffset) outside the mapping")
            }
            let cdbLength = min(Self.maxCDBLength, size - cdbOffset)
            let cdb = cdbStorage + slot * Self.maxCDBLength
            cdb.copyMemory(from: base + cdbOffset, byteCount: cdbLength)
            let buffers = bufferStorage + slot * maxBuffers
            for i in 0..<iovCount {
                let iov = e + Int(l.requestIOVs) + i * Int(l.iovSize)
                let offset = Int(iov.loadUnaligned(as: UInt64.self))
                let count = Int(iov.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                guard offset >= 0, count >= 0, offset <= size - count else {
                    freeSlots.append(slot)
                    throw .badEntry("command \(id): data buffer \(offset)+\(count) outside the mapping")
                }
                buffers[i] = UnsafeMutableRawBufferPointer(start: base + offset, count: count)
            }
            consumed = (consumed + length) % ringSize
            let command = TCMUCommand(id: id, cdb: UnsafeRawBufferPointer(start: cdb, count: cdbLength),
                                      buffers: UnsafeBufferPointer(start: buffers, count: iovCount))
            return (slot, command)
        }
        return nil
    }

    /// Answers a taken command: status (SAM: 00h GOOD, 02h CHECK CONDITION) and sense (at most 96 bytes),
    /// written into the entry at the tail. `readLength`, for a data-in command, is how much data is valid
    /// when less than the buffers hold. The kernel learns of it at the next `announce`.
    public func complete(slot: Int, id: UInt16, status: UInt8, sense: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                         readLength: Int? = nil) throws(RingError) {
        let l = Self.layout
        // Padding and task-management entries at the tail were taken already; the kernel skips them too.
        var t = tail
        while true {
            let (length, op) = try lengthAndOp(at: t)
            if op == l.opCommand { break }
            t = (t + length) % ringSize
        }
        let (length, _) = try lengthAndOp(at: t)
        let e = entry(at: t)
        e.storeBytes(of: id, toByteOffset: Int(l.entryCommandID), as: UInt16.self)
        var flags: UInt8 = 0
        if let readLength {
            flags |= UInt8(l.userFlagReadLength)
            e.storeBytes(of: UInt32(readLength), toByteOffset: Int(l.responseReadLength), as: UInt32.self)
        }
        e.storeBytes(of: flags, toByteOffset: Int(l.entryUserFlags), as: UInt8.self)
        e.storeBytes(of: status, toByteOffset: Int(l.responseStatus), as: UInt8.self)
        let senseArea = UnsafeMutableRawBufferPointer(start: e + Int(l.responseSense), count: Int(l.senseSize))
        senseArea.initializeMemory(as: UInt8.self, repeating: 0)
        if let source = sense.baseAddress { senseArea.baseAddress!.copyMemory(from: source, byteCount: min(sense.count, senseArea.count)) }
        tail = (t + length) % ringSize
        freeSlots.append(slot)
        unannounced += 1
    }

    /// Whether the kernel accepts `readLength` (TCMU_MAILBOX_FLAG_CAP_READ_LEN).
    public var acceptsReadLength: Bool {
        base.loadUnaligned(fromByteOffset: Int(Self.layout.mailboxFlags), as: UInt16.self) & UInt16(Self.layout.mailboxCapReadLength) != 0
    }

    /// Marks the completions written as told (the caller pokes the kernel: a write to the UIO device).
    public func announced() { unannounced = 0 }
}
