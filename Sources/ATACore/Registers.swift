/// An ATA command opcode (ACS-3 tables 28-29). Raw-value struct: an opcode nobody listed is still a value
/// the dispatcher answers with ABRT.
public struct ATACommand: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public init(_ rawValue: UInt8) { self.rawValue = rawValue }

    public static let dataSetManagement = ATACommand(0x06)
    public static let readSectors = ATACommand(0x20)
    public static let readSectorsExt = ATACommand(0x24)
    public static let readDMAExt = ATACommand(0x25)
    public static let readLogExt = ATACommand(0x2F)
    public static let writeSectors = ATACommand(0x30)
    public static let writeSectorsExt = ATACommand(0x34)
    public static let writeDMAExt = ATACommand(0x35)
    public static let readVerifySectors = ATACommand(0x40)
    public static let readVerifySectorsExt = ATACommand(0x42)
    public static let smart = ATACommand(0xB0)
    public static let readDMA = ATACommand(0xC8)
    public static let writeDMA = ATACommand(0xCA)
    public static let checkPowerMode = ATACommand(0xE5)
    public static let flushCache = ATACommand(0xE7)
    public static let identifyDevice = ATACommand(0xEC)
    public static let flushCacheExt = ATACommand(0xEA)
    public static let setFeatures = ATACommand(0xEF)

    /// Commands whose LBA is 48 bits wide (all six LBA bytes); the rest take 28 bits with LBA 27:24 in the
    /// low nibble of the Device register (AoE LBA3).
    public var usesLBA48: Bool {
        switch self {
        case .readSectorsExt, .readDMAExt, .writeSectorsExt, .writeDMAExt, .readVerifySectorsExt, .flushCacheExt, .readLogExt,
             .dataSetManagement:
            true
        default:
            false
        }
    }

    public var description: String { "0x" + String(rawValue, radix: 16, uppercase: true) }
}

/// The ATA Status register (ACS-3 6.2).
public struct ATAStatus: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let error = ATAStatus(rawValue: 0x01)
    public static let dataRequest = ATAStatus(rawValue: 0x08)
    public static let deviceFault = ATAStatus(rawValue: 0x20)
    public static let deviceReady = ATAStatus(rawValue: 0x40)
    public static let busy = ATAStatus(rawValue: 0x80)

    /// 0x40: what a drive reports after a command completes without error.
    public static let ok: ATAStatus = [.deviceReady]
    /// 0x51: DRDY | SERV/DSC (bit 4, as every open target and QEMU report it) | ERR.
    public static let failed = ATAStatus(rawValue: 0x51)

    /// Linux aoe treats BSY|DF|DRQ|ERR (0xA9) as failure (aoecmd.c ktiocomplete).
    public var indicatesFailure: Bool { rawValue & 0xA9 != 0 }
}

/// The ATA Error register (ACS-3 6.3).
public struct ATAErrorRegister: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let abort = ATAErrorRegister(rawValue: 0x04)
    public static let idNotFound = ATAErrorRegister(rawValue: 0x10)
    public static let uncorrectable = ATAErrorRegister(rawValue: 0x40)
    public static let interfaceCRC = ATAErrorRegister(rawValue: 0x80)
}

/// The register set of one AoE ATA exchange. AoE carries 8-bit Feature/Count and six LBA bytes; for 28-bit
/// commands LBA3 doubles as the Device register.
public struct TaskFile: Hashable, Sendable {
    /// Command in a request, Status in a response.
    public var commandStatus: UInt8
    /// Feature in a request, Error in a response.
    public var featureError: UInt8
    public var count: UInt8
    /// LBA0..LBA5 as carried on the wire.
    public var lbaRegisters: UInt64
    /// The AoE E flag: LBA3..LBA5 are high-order address bytes, not the Device register.
    public var extended: Bool

    public init(commandStatus: UInt8, featureError: UInt8 = 0, count: UInt8 = 0, lbaRegisters: UInt64 = 0, extended: Bool = false) {
        self.commandStatus = commandStatus
        self.featureError = featureError
        self.count = count
        self.lbaRegisters = lbaRegisters & 0xFFFF_FFFF_FFFF
        self.extended = extended
    }

    public var command: ATACommand { ATACommand(commandStatus) }
    public var status: ATAStatus { ATAStatus(rawValue: commandStatus) }
    public var error: ATAErrorRegister { ATAErrorRegister(rawValue: featureError) }

    /// The Device register: LBA3 for 28-bit commands; LBA mode (0x40) for 48-bit ones.
    public var device: UInt8 { extended ? 0x40 : UInt8(truncatingIfNeeded: lbaRegisters >> 24) }

    /// The logical block address as the command's own addressing mode reads it.
    public var address: UInt64 {
        command.usesLBA48 ? lbaRegisters : lbaRegisters & 0x0FFF_FFFF
    }

    /// Number of sectors a data command moves: 0 means 256 in the 8-bit count field (ACS-3 7.22.3.2).
    public var sectorCount: Int { count == 0 ? 256 : Int(count) }
}

extension ATACommand {
    /// Whether a second run of the command leaves the drive as one run does, so that a retransmission may
    /// repeat it: reads, writes of the same data, IDENTIFY, CHECK POWER MODE, FLUSH CACHE and the SMART
    /// reads (READ DATA D0h, READ THRESHOLDS D1h, READ LOG D5h, RETURN STATUS DAh, by the Feature register).
    /// Anything else (SECURITY, DOWNLOAD MICROCODE, SET FEATURES, SMART EXECUTE OFFLINE, ...) may act twice.
    public func isSafeToRepeat(feature: UInt8) -> Bool {
        switch rawValue {
        case 0x20, 0x21, 0x24, 0x25, 0x29, 0x2F, 0x40, 0x41, 0x42, 0x47, 0xC4, 0xC8, 0xC9: true   // reads, READ LOG (DMA) EXT, verifies
        case 0x30, 0x31, 0x34, 0x35, 0x39, 0x3D, 0xC5, 0xCA, 0xCB, 0xCE: true                     // writes
        case 0xEC, 0xA1, 0xE5, 0x98, 0xE7, 0xEA: true            // IDENTIFY (PACKET) DEVICE, CHECK POWER MODE, FLUSH CACHE (EXT)
        case 0xB0: [0xD0, 0xD1, 0xD5, 0xDA].contains(feature)
        default: false
        }
    }
}
