import AoEWire

/// What an export offers, fixed when it is opened (nbdkit-style capabilities: asked once, then enforced here
/// so devices hold only their own logic).
public struct ExportCapabilities: Hashable, Sendable {
    public var sectors: UInt64
    public var writable: Bool
    public var canFlush: Bool
    /// Largest sector count one frame can carry on this interface (min of device cap and (MTU-36)/512).
    public var maxSectorsPerCommand: Int
    /// DATA SET MANAGEMENT TRIM is served (the device can discard).
    public var canTrim: Bool

    public init(sectors: UInt64, writable: Bool, canFlush: Bool, maxSectorsPerCommand: Int, canTrim: Bool = false) {
        self.sectors = sectors
        self.writable = writable
        self.canFlush = canFlush
        self.maxSectorsPerCommand = maxSectorsPerCommand
        self.canTrim = canTrim
    }
}

/// The device work an ATA request turns into. The dispatcher decides; the target performs it and reports the outcome.
public enum ATAOperation: Hashable, Sendable {
    /// Read `count` sectors at `lba` into the reply's data area.
    case read(lba: UInt64, count: Int)
    /// Write `count` sectors at `lba` from the request's data area.
    case write(lba: UInt64, count: Int)
    /// Make every write completed before this one durable.
    case flush
    /// DATA SET MANAGEMENT TRIM: discard the ranges in the request's `blocks` 512-byte blocks of LBA Range
    /// Entries (`TrimRangeList` reads them).
    case trim(blocks: Int)
    /// Reply with the export's IDENTIFY page.
    case identify
    /// SET FEATURES 02h / 82h.
    case setWriteCache(enabled: Bool)
    /// No device work: reply with these registers.
    case reply(ATAReply)
    /// The request is malformed at the AoE level: reply with the E flag and this code.
    case aoeError(AoEError)
    /// Run the command on the drive as sent (SG_IO pass-through) and reply with the drive's registers.
    case passThrough(PassThroughCommand)

    /// Whether the operation changes the media (and so must be ordered against overlapping requests).
    public var writesMedia: Bool {
        switch self {
        case .write, .trim: true
        case .passThrough(let command): command.writesMedia
        default: false
        }
    }

    /// Bytes that move through the frame's data area: the sectors of a read, a write or a pass-through data
    /// command; 0 for everything else.
    public var dataBytes: Int {
        switch self {
        case .read(_, let count), .write(_, let count): count * 512
        case .passThrough(let command): command.sectors * 512
        default: 0
        }
    }

    /// The sectors a read or write moves; nil for every other operation.
    public var transferRange: (lba: UInt64, count: Int)? {
        switch self {
        case .read(let lba, let count), .write(let lba, let count): (lba, count)
        default: nil
        }
    }
}

/// The registers of an ATA reply and how many data bytes follow the header.
public struct ATAReply: Hashable, Sendable {
    public var status: ATAStatus
    public var error: ATAErrorRegister
    public var count: UInt8
    public var lbaRegisters: UInt64

    public init(status: ATAStatus, error: ATAErrorRegister = [], count: UInt8 = 0, lbaRegisters: UInt64) {
        self.status = status
        self.error = error
        self.count = count
        self.lbaRegisters = lbaRegisters
    }

    public static func ok(_ request: TaskFile, count: UInt8 = 0) -> ATAReply {
        ATAReply(status: .ok, count: count, lbaRegisters: request.lbaRegisters)
    }
    /// Status 0x51, error 0x04: the command is not supported or failed (ACS-3 "command aborted").
    public static func aborted(_ request: TaskFile) -> ATAReply {
        ATAReply(status: .failed, error: .abort, count: request.count, lbaRegisters: request.lbaRegisters)
    }
    /// Status 0x51, error 0x10: the address is beyond the device.
    public static func idNotFound(_ request: TaskFile) -> ATAReply {
        ATAReply(status: .failed, error: .idNotFound, count: request.count, lbaRegisters: request.lbaRegisters)
    }
}

/// Turns a request task file into an operation, and an operation's outcome into reply registers.
/// Pure: no I/O, no state beyond its arguments.
public enum ATADispatcher {
    /// SET FEATURES subcommands (ACS-3 7.45).
    static let enableWriteCache: UInt8 = 0x02
    static let disableWriteCache: UInt8 = 0x82
    /// CHECK POWER MODE count: FFh = active or idle (ACS-3 7.3).
    static let powerModeActive: UInt8 = 0xFF

    /// - Parameter payloadLength: data bytes present after the 36-byte header (writes need count x 512).
    public static func plan(_ request: TaskFile, payloadLength: Int, capabilities c: ExportCapabilities) -> ATAOperation {
        switch request.command {
        case .readSectors, .readSectorsExt, .readDMA, .readDMAExt:
            let count = request.sectorCount
            guard count <= c.maxSectorsPerCommand else { return .aoeError(.badArgument) }
            guard inRange(request.address, count, c) else { return .reply(.idNotFound(request)) }
            return .read(lba: request.address, count: count)

        case .writeSectors, .writeSectorsExt, .writeDMA, .writeDMAExt:
            let count = request.sectorCount
            guard count <= c.maxSectorsPerCommand, payloadLength >= count * AoELayout.sectorSize else {
                return .aoeError(.badArgument)
            }
            guard c.writable else { return .reply(.aborted(request)) }
            guard inRange(request.address, count, c) else { return .reply(.idNotFound(request)) }
            return .write(lba: request.address, count: count)

        case .readVerifySectors, .readVerifySectorsExt:
            // The image has no media errors to find; the range check is the whole verification.
            guard inRange(request.address, request.sectorCount, c) else { return .reply(.idNotFound(request)) }
            return .reply(.ok(request))

        case .identifyDevice:
            return .identify

        case .flushCache, .flushCacheExt:
            return c.canFlush ? .flush : .reply(.aborted(request))

        case .checkPowerMode:
            return .reply(.ok(request, count: powerModeActive))

        case .dataSetManagement:
            // Feature bit 0 is TRIM, the only DSM function ACS-3 defines; COUNT is the number of 512-byte blocks
            // of range entries (0 is reserved), at most what IDENTIFY word 105 promises.
            let blocks = Int(request.count)
            guard request.featureError & TrimRangeList.trimFeature != 0, c.canTrim, c.writable,
                  (1...TrimRangeList.maxBlocks).contains(blocks) else { return .reply(.aborted(request)) }
            guard payloadLength >= blocks * AoELayout.sectorSize else { return .aoeError(.badArgument) }
            return .trim(blocks: blocks)

        case .setFeatures:
            switch request.featureError {
            case enableWriteCache: return .setWriteCache(enabled: true)
            case disableWriteCache: return .setWriteCache(enabled: false)
            default: return .reply(.aborted(request))
            }

        default:
            return .reply(.aborted(request))
        }
    }

    /// Registers for a performed operation: DRDY on success, ABRT when the device failed or refused.
    public static func reply(to request: TaskFile, succeeded: Bool) -> ATAReply {
        succeeded ? .ok(request) : .aborted(request)
    }

    static func inRange(_ lba: UInt64, _ count: Int, _ c: ExportCapabilities) -> Bool {
        lba <= c.sectors && UInt64(count) <= c.sectors - lba
    }
}

extension TaskFile {
    /// The request registers of an AoE Issue ATA Command header.
    public init(_ header: ATAHeader) {
        self.init(commandStatus: header.cmdStatus, featureError: header.errFeature, count: header.sectorCount,
                  lbaRegisters: header.lba, extended: header.flags.contains(.extended))
    }
}

extension ATAHeader {
    /// The reply header: request flags kept, registers replaced by the reply's.
    public func replying(_ reply: ATAReply) -> ATAHeader {
        ATAHeader(flags: flags, errFeature: reply.error.rawValue, sectorCount: reply.count,
                  cmdStatus: reply.status.rawValue, lba: reply.lbaRegisters)
    }
}
