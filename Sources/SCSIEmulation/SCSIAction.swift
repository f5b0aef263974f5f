import ATACore

/// What the bridge knows of the remote drive when it emulates a SCSI disk for it.
public struct DriveDescription: Hashable, Sendable {
    /// The drive's IDENTIFY DEVICE data.
    public var identify: IdentifyPage
    /// Capacity in 512-byte logical blocks.
    public var capacitySectors: UInt64
    /// Advertised as VPD B0h MAXIMUM and OPTIMAL TRANSFER LENGTH, so the kernel sizes requests for the caller.
    public var maxTransferSectors: Int
    /// The most data one AoE ATA command carries (one frame): a pass-through may not move more.
    public var passThroughMaxSectors: Int

    public init(identify: IdentifyPage, capacitySectors: UInt64, maxTransferSectors: Int, passThroughMaxSectors: Int) {
        self.identify = identify
        self.capacitySectors = capacitySectors
        self.maxTransferSectors = maxTransferSectors
        self.passThroughMaxSectors = passThroughMaxSectors
    }

    /// Blocks of TRIM range entries one DSM command of this drive carries: what IDENTIFY word 105 allows and
    /// one frame holds; 0 when the drive has no TRIM (and UNMAP is not offered).
    public var trimBlocksPerCommand: Int {
        identify.trimSupported ? max(1, min(identify.maxTrimBlocks, passThroughMaxSectors)) : 0
    }

    /// VPD B0h MAXIMUM UNMAP LBA COUNT: one UNMAP becomes one DSM TRIM command, whose entries hold up to
    /// 65,535 blocks each.
    public var maxUnmapBlocks: UInt64 {
        UInt64(trimBlocksPerCommand * TrimRangeList.entriesPerBlock * TrimRangeList.maxSectorsPerEntry)
    }
}

/// Blocks [lba, lba + count) of an UNMAP block descriptor.
public struct BlockRange: Hashable, Sendable {
    public var lba: UInt64
    public var count: UInt64
    public init(lba: UInt64, count: UInt64) {
        self.lba = lba
        self.count = count
    }
}

/// The completion of one SCSI command: status, sense data (empty with GOOD) and the data-in bytes.
public struct SCSIResult: Hashable, Sendable {
    public var status: SCSIStatus
    public var sense: [UInt8]
    public var dataIn: [UInt8]
    /// Why this disk refused the command, for the caller's log; nil when it was not refused here.
    public var refusal: SCSIRefusal?

    public init(status: SCSIStatus, sense: [UInt8] = [], dataIn: [UInt8] = [], refusal: SCSIRefusal? = nil) {
        self.status = status
        self.sense = sense
        self.dataIn = dataIn
        self.refusal = refusal
    }

    public static func good(_ dataIn: [UInt8] = []) -> SCSIResult { SCSIResult(status: .good, dataIn: dataIn) }

    /// CHECK CONDITION with fixed-format sense.
    public static func checkCondition(_ key: SenseKey, _ sense: AdditionalSense, information: UInt64? = nil,
                                      refusal: SCSIRefusal? = nil) -> SCSIResult {
        SCSIResult(status: .checkCondition, sense: SenseData.fixed(key, sense, information: information), refusal: refusal)
    }

    /// The sense a refusal reports (all of them ILLEGAL REQUEST).
    public static func refused(_ refusal: SCSIRefusal) -> SCSIResult {
        checkCondition(.illegalRequest, refusal.additionalSense, refusal: refusal)
    }
}

/// Why a CDB was refused. Each maps to one ILLEGAL REQUEST additional sense code.
public enum SCSIRefusal: Error, Hashable, Sendable, CustomStringConvertible {
    case unsupportedOperationCode(UInt8)
    /// A service action of an opcode that has others (9Eh other than READ CAPACITY(16)).
    case unsupportedServiceAction(opcode: UInt8, serviceAction: UInt8)
    /// INQUIRY with CmdDt set: obsolete since SPC-3.
    case commandSupportDataRequested
    case unsupportedVPDPage(UInt8)
    case unsupportedModePage(page: UInt8, subpage: UInt8)
    case savedModeValuesRequested
    /// VERIFY with BYTCHK: comparing needs the data-out this disk does not take.
    case verifyByteCheck
    /// The CDB is shorter than its opcode's length.
    case truncatedCDB(length: Int)
    case logicalBlockAddressOutOfRange(lba: UInt64, blocks: UInt64)
    /// The CDB's transfer does not match the buffers the kernel gave (bytes).
    case transferLengthMismatch(expectedIn: Int, expectedOut: Int, dataIn: Int, dataOut: Int)
    case passThrough(ATAPassThroughRefusal)
    /// UNMAP with ANCHOR set: anchored blocks are not emulated.
    case unmapAnchor
    /// An UNMAP parameter list shorter than its 8-byte header, or than its own length fields say.
    case unmapParameterListLength(Int)
    /// More UNMAP block descriptors or blocks than VPD B0h allows.
    case unmapBeyondLimits(descriptors: Int, blocks: UInt64)

    public var additionalSense: AdditionalSense {
        switch self {
        case .unsupportedOperationCode: .invalidCommandOperationCode
        case .logicalBlockAddressOutOfRange: .logicalBlockAddressOutOfRange
        case .unmapParameterListLength: .parameterListLengthError
        case .unmapBeyondLimits: .invalidFieldInParameterList
        case .savedModeValuesRequested: .savingParametersNotSupported
        default: .invalidFieldInCDB
        }
    }

    public var description: String {
        switch self {
        case .unsupportedOperationCode(let op): "operation code \(hex(op)) is not emulated"
        case .unsupportedServiceAction(let op, let sa): "service action \(hex(sa)) of \(hex(op)) is not emulated"
        case .commandSupportDataRequested: "INQUIRY CmdDt is obsolete"
        case .unsupportedVPDPage(let page): "VPD page \(hex(page)) is not emulated"
        case .unsupportedModePage(let page, let subpage): "mode page \(hex(page)) subpage \(hex(subpage)) is not emulated"
        case .savedModeValuesRequested: "saved mode values are not kept"
        case .verifyByteCheck: "VERIFY with BYTCHK is not emulated"
        case .truncatedCDB(let length): "CDB of \(length) bytes is too short for its operation code"
        case .logicalBlockAddressOutOfRange(let lba, let blocks): "LBA \(lba) + \(blocks) blocks is past the end"
        case .transferLengthMismatch(let eIn, let eOut, let dIn, let dOut):
            "CDB moves \(eIn) bytes in / \(eOut) out, the kernel's buffers are \(dIn) in / \(dOut) out"
        case .passThrough(let reason): "ATA pass-through: \(reason)"
        case .unmapAnchor: "UNMAP with ANCHOR is not emulated"
        case .unmapParameterListLength(let n): "UNMAP parameter list of \(n) bytes is shorter than it says"
        case .unmapBeyondLimits(let d, let b): "UNMAP of \(b) blocks in \(d) descriptors is beyond the limits of VPD B0h"
        }
    }
}

func hex(_ byte: UInt8) -> String { "0x" + String(byte, radix: 16, uppercase: true) }

/// What the caller must do for one CDB.
public enum SCSIAction: Hashable, Sendable {
    /// Emulated here: complete the command with this result.
    case respond(SCSIResult)
    /// Read these 512-byte blocks from the drive into the data-in buffer; complete with `SCSIResult.good(data)`
    /// or `SCSIDisk.failedTransferResult`.
    case read(lba: UInt64, sectors: Int)
    /// Write the data-out buffer to these blocks. DPOFUA=0 is advertised, so FUA arrives only from SG_IO users.
    case write(lba: UInt64, sectors: Int, forceUnitAccess: Bool)
    /// Flush the drive's write cache (FLUSH CACHE EXT).
    case synchronizeCache
    /// Send this one ATA command; complete with `SCSIDisk.result(of:registers:dataIn:)`.
    case ataPassThrough(ATAPassThroughRequest)
    /// Read this many bytes of UNMAP parameter list from the data-out buffer, turn them into ranges with
    /// `SCSIDisk.unmapRanges`, and discard those with DATA SET MANAGEMENT TRIM.
    case unmap(parameterListLength: Int)
}
