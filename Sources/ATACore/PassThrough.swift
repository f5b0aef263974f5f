import AoEWire

/// SAT ATA PASS-THROUGH protocol field values (SAT-4 table 174). Only the ones libata maps and hdparm and
/// smartmontools use: the SAT-1 numbering of the UDMA protocols differed, so those are never sent.
public enum PassThroughProtocol: UInt8, Hashable, Sendable {
    case nonData = 3
    case pioDataIn = 4
    case pioDataOut = 5
    case dma = 6
}

/// How one ATA command crosses the pass-through: its protocol, which way data moves, whether it changes
/// the media, and how long the drive may take.
public struct PassThroughCommand: Hashable, Sendable {
    public enum Direction: Hashable, Sendable { case none, fromDevice, toDevice }

    public var taskFile: TaskFile
    public var protocolField: PassThroughProtocol
    public var direction: Direction
    /// Sectors of data moved (0 for non-data).
    public var sectors: Int
    public var writesMedia: Bool
    public var timeoutMilliseconds: UInt32

    public init(taskFile: TaskFile, protocolField: PassThroughProtocol, direction: Direction, sectors: Int, writesMedia: Bool, timeoutMilliseconds: UInt32) {
        self.taskFile = taskFile
        self.protocolField = protocolField
        self.direction = direction
        self.sectors = sectors
        self.writesMedia = writesMedia
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// The range it touches, for ordering against overlapping requests; nil = the whole device.
    public var range: (lba: UInt64, count: UInt64)? {
        switch taskFile.command {
        case .readSectors, .readSectorsExt, .readDMA, .readDMAExt, .writeSectors, .writeSectorsExt, .writeDMA, .writeDMAExt:
            (taskFile.address, UInt64(sectors))
        default:
            nil
        }
    }
}

/// Which ATA commands may reach a real drive. An allowlist, as data: reads, writes, IDENTIFY, SMART reads and
/// return status, power management, logs, FLUSH, SET FEATURES (not transfer mode). Everything else is refused
/// with ABRT before it reaches the drive, which keeps out what can destroy data or brick a drive (the SECURITY
/// feature set, DOWNLOAD MICROCODE, SANITIZE, SET MAX / HPA / DCO, TRUSTED SEND, WRITE UNCORRECTABLE, vendor
/// opcodes). On a read-only export every entry that writes is refused too.
public struct PassThroughPolicy: Hashable, Sendable {
    public struct Entry: Hashable, Sendable {
        public var opcode: UInt8
        /// nil: any feature; otherwise only these Feature register values.
        public var features: [UInt8]?
        public var protocolField: PassThroughProtocol
        public var direction: PassThroughCommand.Direction
        public var writesMedia: Bool
        public var timeoutSeconds: UInt32
        public var name: String
    }

    static let normal: UInt32 = 30, long: UInt32 = 120

    /// The default table (README "Pass-through allowlist" lists the same).
    public static let defaultEntries: [Entry] = {
        func e(_ op: UInt8, _ f: [UInt8]?, _ p: PassThroughProtocol, _ d: PassThroughCommand.Direction, writes: Bool = false,
               timeout: UInt32 = normal, _ name: String) -> Entry {
            Entry(opcode: op, features: f, protocolField: p, direction: d, writesMedia: writes, timeoutSeconds: timeout, name: name)
        }
        return [
            e(0x20, nil, .pioDataIn, .fromDevice, "READ SECTORS"),
            e(0x24, nil, .pioDataIn, .fromDevice, "READ SECTORS EXT"),
            e(0xC8, nil, .dma, .fromDevice, "READ DMA"),
            e(0x25, nil, .dma, .fromDevice, "READ DMA EXT"),
            e(0x30, nil, .pioDataOut, .toDevice, writes: true, "WRITE SECTORS"),
            e(0x34, nil, .pioDataOut, .toDevice, writes: true, "WRITE SECTORS EXT"),
            e(0xCA, nil, .dma, .toDevice, writes: true, "WRITE DMA"),
            e(0x35, nil, .dma, .toDevice, writes: true, "WRITE DMA EXT"),
            e(0x40, nil, .nonData, .none, "READ VERIFY SECTORS"),
            e(0x42, nil, .nonData, .none, "READ VERIFY SECTORS EXT"),
            e(0xEC, nil, .pioDataIn, .fromDevice, "IDENTIFY DEVICE"),
            e(0xE5, nil, .nonData, .none, "CHECK POWER MODE"),
            e(0xE0, nil, .nonData, .none, "STANDBY IMMEDIATE"),
            e(0xE1, nil, .nonData, .none, "IDLE IMMEDIATE"),
            e(0xE2, nil, .nonData, .none, "STANDBY"),
            e(0xE3, nil, .nonData, .none, "IDLE"),
            e(0xE7, nil, .nonData, .none, timeout: long, "FLUSH CACHE"),
            e(0xEA, nil, .nonData, .none, timeout: long, "FLUSH CACHE EXT"),
            // SET FEATURES: everything but 03h (set transfer mode), which libata also refuses.
            e(0xEF, (0...255).map(UInt8.init).filter { $0 != 0x03 }, .nonData, .none, "SET FEATURES"),
            e(0xB0, [0xD0, 0xD1, 0xD5], .pioDataIn, .fromDevice, timeout: 60, "SMART READ DATA / THRESHOLDS / READ LOG"),
            e(0xB0, [0xDA, 0xD8, 0xD9, 0xD2, 0xD4], .nonData, .none, timeout: 60, "SMART RETURN STATUS / ENABLE / DISABLE / AUTOSAVE / OFFLINE"),
            e(0xB0, [0xD6], .pioDataOut, .toDevice, writes: true, timeout: 60, "SMART WRITE LOG"),
            e(0x2F, nil, .pioDataIn, .fromDevice, "READ LOG EXT"),
            e(0x47, nil, .dma, .fromDevice, "READ LOG DMA EXT"),
            e(0x3F, nil, .pioDataOut, .toDevice, writes: true, "WRITE LOG EXT"),
            e(0x57, nil, .dma, .toDevice, writes: true, "WRITE LOG DMA EXT"),
            e(0x06, nil, .dma, .toDevice, writes: true, timeout: long, "DATA SET MANAGEMENT (TRIM)"),
        ]
    }()

    public var entries: [Entry]
    /// Opcodes the operator allowed on top of the table (`--allow-ata`); their direction comes from the frame.
    public var allowedOpcodes: Set<UInt8>
    /// `--allow-all-ata`.
    public var allowAll: Bool
    public var readOnly: Bool

    public init(entries: [Entry] = PassThroughPolicy.defaultEntries, allowedOpcodes: Set<UInt8> = [], allowAll: Bool = false, readOnly: Bool = false) {
        self.entries = entries
        self.allowedOpcodes = allowedOpcodes
        self.allowAll = allowAll
        self.readOnly = readOnly
    }

    public enum Decision: Hashable, Sendable {
        case send(PassThroughCommand)
        /// Not sent: ABRT, with the reason for the log.
        case refuse(String)
        case aoeError(AoEError)
    }

    /// - Parameters:
    ///   - writeFlag: the AoE W flag; with `payloadLength` it decides the direction of explicitly allowed
    ///     commands the table does not know.
    public func decide(_ request: TaskFile, writeFlag: Bool, payloadLength: Int, maxSectors: Int) -> Decision {
        let opcode = request.commandStatus
        var entry = entries.first { $0.opcode == opcode && ($0.features?.contains(request.featureError) ?? true) }
        if entry == nil {
            guard allowAll || allowedOpcodes.contains(opcode) else {
                return .refuse("opcode 0x\(String(opcode, radix: 16, uppercase: true)) feature 0x\(String(request.featureError, radix: 16, uppercase: true)) is not in the pass-through allowlist (--allow-ata to permit)")
            }
            let out = writeFlag && payloadLength >= AoELayout.sectorSize
            let dataIn = !writeFlag && request.count > 0
            entry = Entry(opcode: opcode, features: nil, protocolField: out ? .pioDataOut : dataIn ? .pioDataIn : .nonData,
                          direction: out ? .toDevice : dataIn ? .fromDevice : .none, writesMedia: out, timeoutSeconds: Self.long,
                          name: "allowed opcode")
        }
        guard let entry else { preconditionFailure() }
        if readOnly && entry.writesMedia { return .refuse("\(entry.name) writes, and the export is read-only") }
        var sectors = 0
        if entry.direction != .none {
            // IDENTIFY and SMART data are one sector whatever the count register says.
            sectors = opcode == 0xEC || opcode == 0xB0 ? 1 : Int(request.count)
            guard sectors > 0 else { return .refuse("\(entry.name) with a sector count of 0 would move more data than a frame holds") }
            guard sectors <= maxSectors else { return .aoeError(.badArgument) }
            if entry.direction == .toDevice && payloadLength < sectors * AoELayout.sectorSize { return .aoeError(.badArgument) }
        }
        return .send(PassThroughCommand(taskFile: request, protocolField: entry.protocolField, direction: entry.direction,
                                        sectors: sectors, writesMedia: entry.writesMedia, timeoutMilliseconds: entry.timeoutSeconds * 1000))
    }
}

/// ATA PASS-THROUGH(16) (SAT-4 12.2.2), built from an AoE task file.
public enum SATCommandBlock {
    public static let opcode: UInt8 = 0x85

    /// CK_COND only for non-data commands, as hdparm does: it is how their registers come back, and with PIO
    /// data-in some SATLs report a false DRQ status when it is set.
    public static func build(_ command: PassThroughCommand) -> [UInt8] {
        let t = command.taskFile
        let extended = t.extended
        var cdb = [UInt8](repeating: 0, count: 16)
        cdb[0] = opcode
        cdb[1] = command.protocolField.rawValue << 1 | (extended ? 1 : 0)
        switch command.direction {
        case .none:
            cdb[2] = 0x20  // CK_COND, T_LENGTH 0
        case .fromDevice:
            cdb[2] = 0x08 | 0x04 | 0x02  // T_DIR from device, BYTE_BLOCK, T_LENGTH in the count field
        case .toDevice:
            cdb[2] = 0x04 | 0x02
        }
        let lba = { (n: Int) in UInt8(truncatingIfNeeded: t.lbaRegisters >> (8 * UInt64(n))) }
        cdb[4] = t.featureError
        cdb[6] = t.count
        // LBA bytes interleave high/low: 7:0 in byte 8, 15:8 in 10, 23:16 in 12; the 48-bit upper bytes in 7, 9, 11.
        cdb[8] = lba(0)
        cdb[10] = lba(1)
        cdb[12] = lba(2)
        if extended {
            cdb[7] = lba(3)
            cdb[9] = lba(4)
            cdb[11] = lba(5)
            // LBA mode: with 0 an emulated drive reads the address as CHS.
            cdb[13] = 0x40
        } else {
            // 28-bit: AoE's LBA3 is the Device register (LBA 27:24 in its low nibble).
            cdb[13] = lba(3)
        }
        cdb[14] = t.commandStatus
        return cdb
    }
}

/// The ATA registers a drive returned, read from SCSI sense data.
public enum SATSense {
    /// Registers from descriptor-format sense (0x72/0x73, ATA Status Return descriptor 09h) or fixed-format
    /// sense (0x70/0x71) in either layout: SAT's (VALID set; error, status, device, count in bytes 3-6, LBA in
    /// 9-11) or the one libata wrote before its 2024 fix (error, status, device, count in 8-11, LBA in 17-19).
    /// nil when the sense carries no ATA registers.
    public static func registers(_ sense: [UInt8]) -> ATAReply? {
        guard sense.count >= 8 else { return nil }
        switch sense[0] & 0x7F {
        case 0x72, 0x73:
            var at = 8
            let end = min(sense.count, 8 + Int(sense[7]))
            while at + 1 < end {
                let length = Int(sense[at + 1]) + 2
                if sense[at] == 0x09 && sense[at + 1] >= 0x0C && at + 14 <= sense.count {
                    let d = Array(sense[at..<(at + 14)])
                    var lba = UInt64(d[7]) | UInt64(d[9]) << 8 | UInt64(d[11]) << 16
                    if d[2] & 1 != 0 { lba |= UInt64(d[6]) << 24 | UInt64(d[8]) << 32 | UInt64(d[10]) << 40 }
                    else { lba |= UInt64(d[12]) << 24 }  // 28-bit: the Device register goes back in LBA3
                    return ATAReply(status: ATAStatus(rawValue: d[13]), error: ATAErrorRegister(rawValue: d[3]), count: d[5], lbaRegisters: lba)
                }
                at += length
            }
            return nil
        case 0x70, 0x71:
            if sense[0] & 0x80 != 0 {
                guard sense.count >= 12 else { return nil }
                let lba = UInt64(sense[9]) | UInt64(sense[10]) << 8 | UInt64(sense[11]) << 16 | UInt64(sense[5]) << 24
                return ATAReply(status: ATAStatus(rawValue: sense[4]), error: ATAErrorRegister(rawValue: sense[3]), count: sense[6], lbaRegisters: lba)
            }
            // The old layout overran the 18 bytes libata returns: the LBA bytes (17-19) are there only sometimes.
            guard sense.count >= 12 else { return nil }
            let byte = { (i: Int) in i < sense.count ? UInt64(sense[i]) : 0 }
            let lba = byte(17) | byte(18) << 8 | byte(19) << 16 | UInt64(sense[10]) << 24
            return ATAReply(status: ATAStatus(rawValue: sense[9]), error: ATAErrorRegister(rawValue: sense[8]), count: sense[11], lbaRegisters: lba)
        default:
            return nil
        }
    }

    /// Sense key (either format).
    public static func senseKey(_ sense: [UInt8]) -> UInt8? {
        guard sense.count >= 3 else { return nil }
        switch sense[0] & 0x7F {
        case 0x72, 0x73: return sense[1] & 0x0F
        case 0x70, 0x71: return sense[2] & 0x0F
        default: return nil
        }
    }
}
