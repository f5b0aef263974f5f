import ATACore
import AoEWire

/// One ATA command decoded from ATA PASS-THROUGH (12) A1h or (16) 85h (SAT-3 12.2.2, 12.2.3), ready to go out as
/// one AoE ATA command.
public struct ATAPassThroughRequest: Hashable, Sendable {
    /// The same vocabulary as the target's pass-through: none, fromDevice (data-in), toDevice (data-out).
    public typealias Direction = PassThroughCommand.Direction

    /// The AoE ATA argument: command, feature 7:0, count 7:0, LBA (LBA3 = Device register unless extended),
    /// E flag for EXTEND, W flag for data-out.
    public var task: ATAHeader
    /// The PROTOCOL field (SAT-3 table 101): 3, 4, 5, 6, 10 or 11.
    public var protocolField: UInt8
    public var direction: Direction
    /// 512-byte sectors the command moves (0 for non-data).
    public var sectors: Int
    /// CK_COND: return the registers (as sense) even on success.
    public var checkCondition: Bool
    /// EXTEND: a 48-bit command; the status descriptor then carries the high-order LBA bytes.
    public var extend: Bool
    /// The DEVICE field as sent, DEV bit cleared. AoE returns no Device register for extended commands, so the
    /// status descriptor repeats this one.
    public var device: UInt8

    public var byteCount: Int { sectors * IdentifyPage.size }
    public var dataInSectors: Int { direction == .fromDevice ? sectors : 0 }
    public var dataOutSectors: Int { direction == .toDevice ? sectors : 0 }

    public init(task: ATAHeader, protocolField: UInt8, direction: Direction, sectors: Int, checkCondition: Bool,
                extend: Bool, device: UInt8) {
        self.task = task
        self.protocolField = protocolField
        self.direction = direction
        self.sectors = sectors
        self.checkCondition = checkCondition
        self.extend = extend
        self.device = device
    }
}

/// Why an ATA PASS-THROUGH CDB cannot become one AoE ATA command. All are reported as ILLEGAL REQUEST,
/// INVALID FIELD IN CDB.
public enum ATAPassThroughRefusal: Error, Hashable, Sendable, CustomStringConvertible {
    /// Resets, diagnostics, DMA queued, FPDMA (NCQ), return response info and reserved values: AoE carries
    /// one task file and nothing else.
    case unsupportedProtocol(UInt8)
    /// READ/WRITE MULTIPLE block counts: the remote target serves no MULTIPLE commands.
    case multipleCount(UInt8)
    /// EXTEND with FEATURE 15:8 or COUNT 15:8 non-zero: the AoE ATA header has no byte for them.
    case highOrderRegisters(feature: UInt8, count: UInt8)
    /// T_LENGTH 3 (length in the TPSIU): no such unit on AoE.
    case transferLengthInTPSIU
    /// A data protocol whose T_LENGTH or length field says nothing moves.
    case noTransferLength
    /// The non-data protocol with a transfer length.
    case transferLengthWithoutData
    /// BYT_BLOK=0 with a byte count that is not whole 512-byte sectors.
    case partialSector(bytes: Int)
    /// More sectors than one AoE frame carries.
    case exceedsFrame(sectors: Int, maximum: Int)
    /// PROTOCOL, T_DIR and the kernel's buffers disagree on which way data moves.
    case directionMismatch
    /// The kernel's buffer is smaller than the transfer.
    case bufferTooSmall(needed: Int, available: Int)

    public var description: String {
        switch self {
        case .unsupportedProtocol(let p): "protocol \(p) is not carried by AoE"
        case .multipleCount(let m): "MULTIPLE_COUNT \(m) is not supported"
        case .highOrderRegisters(let f, let c): "FEATURE 15:8 \(hex(f)) / COUNT 15:8 \(hex(c)) have no AoE field"
        case .transferLengthInTPSIU: "T_LENGTH in the TPSIU is not supported"
        case .noTransferLength: "a data protocol without a transfer length"
        case .transferLengthWithoutData: "the non-data protocol with a transfer length"
        case .partialSector(let bytes): "\(bytes) bytes is not whole 512-byte sectors"
        case .exceedsFrame(let sectors, let maximum): "\(sectors) sectors exceed one AoE frame (\(maximum))"
        case .directionMismatch: "PROTOCOL, T_DIR and the data buffers disagree on the direction"
        case .bufferTooSmall(let needed, let available): "transfer of \(needed) bytes, buffer of \(available)"
        }
    }
}

extension ATAPassThroughRequest {
    static let opcode16: UInt8 = 0x85
    static let opcode12: UInt8 = 0xA1

    /// Decodes a pass-through CDB (the caller checked its opcode and length).
    static func decode(_ cdb: [UInt8], maxSectors: Int, dataInLength: Int, dataOutLength: Int)
        -> Result<ATAPassThroughRequest, ATAPassThroughRefusal> {
        let sixteen = cdb[0] == opcode16
        // Byte 1: MULTIPLE_COUNT 7:5, PROTOCOL 4:1, EXTEND 0 (reserved in the 12-byte CDB).
        let protocolField = (cdb[1] >> 1) & 0x0F
        let multipleCount = cdb[1] >> 5
        let extend = sixteen && cdb[1] & 0x01 != 0
        // Byte 2: OFF_LINE 7:6 (a wait for the host, nothing to do over AoE), CK_COND 5, T_TYPE 4 (512-byte
        // logical blocks either way), T_DIR 3, BYT_BLOK 2, T_LENGTH 1:0.
        let checkCondition = cdb[2] & 0x20 != 0
        let fromDeviceBit = cdb[2] & 0x08 != 0
        let inBlocks = cdb[2] & 0x04 != 0
        let lengthField = cdb[2] & 0x03

        let protocolDirection: Direction?  // nil: DMA, whose direction is T_DIR's
        switch protocolField {
        case 3: protocolDirection = Direction.none
        case 4, 10: protocolDirection = .fromDevice
        case 5, 11: protocolDirection = .toDevice
        case 6: protocolDirection = nil
        default: return .failure(.unsupportedProtocol(protocolField))
        }
        guard multipleCount == 0 else { return .failure(.multipleCount(multipleCount)) }

        let feature, count, device, command: UInt8
        var lba: UInt64
        if sixteen {
            if extend && (cdb[3] != 0 || cdb[5] != 0) {
                return .failure(.highOrderRegisters(feature: cdb[3], count: cdb[5]))
            }
            (feature, count, device, command) = (cdb[4], cdb[6], cdb[13], cdb[14])
            // LBA 7:0, 15:8, 23:16 in bytes 8, 10, 12; with EXTEND 31:24, 39:32, 47:40 in bytes 7, 9, 11.
            lba = UInt64(cdb[8]) | UInt64(cdb[10]) << 8 | UInt64(cdb[12]) << 16
            if extend { lba |= UInt64(cdb[7]) << 24 | UInt64(cdb[9]) << 32 | UInt64(cdb[11]) << 40 }
        } else {
            (feature, count, device, command) = (cdb[3], cdb[4], cdb[8], cdb[9])
            lba = UInt64(cdb[5]) | UInt64(cdb[6]) << 8 | UInt64(cdb[7]) << 16
        }
        // DEV (bit 4) picks master or slave on a parallel bus; an AoE shelf.slot is one drive.
        let deviceRegister = device & ~0x10
        // 28-bit: AoE's LBA3 is the Device register, LBA 27:24 in its low nibble.
        if !extend { lba |= UInt64(deviceRegister) << 24 }

        var direction = Direction.none
        var sectors = 0
        switch lengthField {
        case 0:
            guard protocolDirection == Direction.none else { return .failure(.noTransferLength) }
        case 3:
            return .failure(.transferLengthInTPSIU)
        default:
            guard protocolDirection != Direction.none else { return .failure(.transferLengthWithoutData) }
            direction = protocolDirection ?? (fromDeviceBit ? .fromDevice : .toDevice)
            guard (direction == .fromDevice) == fromDeviceBit else { return .failure(.directionMismatch) }
            let field = Int(lengthField == 1 ? feature : count)
            let bytes = inBlocks ? field * IdentifyPage.size : field
            guard bytes > 0 else { return .failure(.noTransferLength) }
            guard bytes % IdentifyPage.size == 0 else { return .failure(.partialSector(bytes: bytes)) }
            sectors = bytes / IdentifyPage.size
            guard sectors <= maxSectors else { return .failure(.exceedsFrame(sectors: sectors, maximum: maxSectors)) }
        }

        switch direction {
        case .none:
            guard dataInLength == 0 && dataOutLength == 0 else { return .failure(.directionMismatch) }
        case .fromDevice:
            guard dataOutLength == 0 && dataInLength > 0 else { return .failure(.directionMismatch) }
            guard dataInLength >= sectors * IdentifyPage.size else {
                return .failure(.bufferTooSmall(needed: sectors * IdentifyPage.size, available: dataInLength))
            }
        case .toDevice:
            guard dataInLength == 0 && dataOutLength > 0 else { return .failure(.directionMismatch) }
            guard dataOutLength >= sectors * IdentifyPage.size else {
                return .failure(.bufferTooSmall(needed: sectors * IdentifyPage.size, available: dataOutLength))
            }
        }

        var flags: ATAArgFlags = []
        if extend { flags.insert(.extended) }
        if direction == .toDevice { flags.insert(.write) }
        let task = ATAHeader(flags: flags, errFeature: feature, sectorCount: count, cmdStatus: command, lba: lba)
        return .success(ATAPassThroughRequest(task: task, protocolField: protocolField, direction: direction,
                                              sectors: sectors, checkCondition: checkCondition, extend: extend,
                                              device: deviceRegister))
    }

    /// The ATA Status Return sense data descriptor (SAT-3 12.2.2.6): code 09h, additional length 0Ch.
    func statusReturnDescriptor(_ registers: ATAHeader) -> [UInt8] {
        let lba = { (n: Int) in registers.lbaByte(n) }
        return [
            0x09, 0x0C,
            extend ? 0x01 : 0x00,
            registers.errFeature,
            0x00,  // COUNT 15:8: AoE returns no high-order count
            registers.sectorCount,
            extend ? lba(3) : 0, lba(0),
            extend ? lba(4) : 0, lba(1),
            extend ? lba(5) : 0, lba(2),
            extend ? device : lba(3),  // 28-bit: LBA3 is the Device register the drive returned
            registers.cmdStatus,
        ]
    }

    /// The SCSI completion of this command given the registers the drive returned (SAT-3 12.2.2.6 and libata).
    func result(registers: ATAHeader, dataIn: [UInt8]) -> SCSIResult {
        let status = ATAStatus(rawValue: registers.cmdStatus)
        let data = direction == .fromDevice ? Array(dataIn.prefix(byteCount)) : []
        let descriptor = statusReturnDescriptor(registers)
        if status.indicatesFailure {
            // The drive's own error, with its registers: the application reads them, no data is valid.
            return SCSIResult(status: .checkCondition,
                              sense: SenseData.descriptor(.abortedCommand, .ataPassThroughInformationAvailable,
                                                          descriptors: descriptor))
        }
        guard checkCondition else { return .good(data) }
        return SCSIResult(status: .checkCondition,
                          sense: SenseData.descriptor(.recoveredError, .ataPassThroughInformationAvailable,
                                                      descriptors: descriptor),
                          dataIn: data)
    }
}
