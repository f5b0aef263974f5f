/// SCSI status byte (SAM-5 5.3). Raw-value struct: the two values we send are named, any other still round-trips.
public struct SCSIStatus: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let good = SCSIStatus(rawValue: 0x00)
    public static let checkCondition = SCSIStatus(rawValue: 0x02)
}

/// Sense key (SPC-4 table 48).
public struct SenseKey: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let noSense = SenseKey(rawValue: 0x0)
    public static let recoveredError = SenseKey(rawValue: 0x1)
    public static let mediumError = SenseKey(rawValue: 0x3)
    public static let hardwareError = SenseKey(rawValue: 0x4)
    public static let illegalRequest = SenseKey(rawValue: 0x5)
    public static let abortedCommand = SenseKey(rawValue: 0xB)
}

/// ADDITIONAL SENSE CODE and QUALIFIER (SPC-4 table 49), the pairs this disk reports.
public struct AdditionalSense: Hashable, Sendable {
    public var code: UInt8
    public var qualifier: UInt8
    public init(_ code: UInt8, _ qualifier: UInt8) {
        self.code = code
        self.qualifier = qualifier
    }

    public static let none = AdditionalSense(0x00, 0x00)
    public static let ataPassThroughInformationAvailable = AdditionalSense(0x00, 0x1D)
    public static let logicalUnitCommunicationFailure = AdditionalSense(0x08, 0x00)
    /// 1Ah/00h PARAMETER LIST LENGTH ERROR.
    public static let parameterListLengthError = AdditionalSense(0x1A, 0x00)
    /// 0Ch/02h WRITE ERROR - AUTO REALLOCATION FAILED: what SAT (and libata) report for UNC on a write.
    public static let writeErrorAutoReallocationFailed = AdditionalSense(0x0C, 0x02)
    /// 11h/04h UNRECOVERED READ ERROR - AUTO REALLOCATE FAILED: SAT's translation of UNC on a read.
    public static let unrecoveredReadError = AdditionalSense(0x11, 0x04)
    public static let invalidCommandOperationCode = AdditionalSense(0x20, 0x00)
    public static let logicalBlockAddressOutOfRange = AdditionalSense(0x21, 0x00)
    public static let invalidFieldInCDB = AdditionalSense(0x24, 0x00)
    /// 26h/00h INVALID FIELD IN PARAMETER LIST.
    public static let invalidFieldInParameterList = AdditionalSense(0x26, 0x00)
    public static let savingParametersNotSupported = AdditionalSense(0x39, 0x00)
    /// 47h/00h SCSI PARITY ERROR: libata's translation of ICRC, a transfer-level CRC error worth retrying.
    public static let parityError = AdditionalSense(0x47, 0x00)
}

/// Sense data builders (SPC-4 4.5).
public enum SenseData {
    /// Fixed format (response code 70h, current error), 18 bytes. `information` sets VALID and the INFORMATION
    /// field (bytes 3-6), which Linux sd reads as the first failed LBA; values over 32 bits cannot be carried.
    public static func fixed(_ key: SenseKey, _ sense: AdditionalSense, information: UInt64? = nil) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 18)
        bytes[0] = 0x70
        bytes[2] = key.rawValue
        if let information, information <= 0xFFFF_FFFF {
            bytes[0] |= 0x80
            put32(UInt32(information), into: &bytes, at: 3)
        }
        bytes[7] = 10  // additional sense length: bytes 8-17
        bytes[12] = sense.code
        bytes[13] = sense.qualifier
        return bytes
    }

    /// Descriptor format (response code 72h, current error) with the given descriptors after the 8-byte header.
    public static func descriptor(_ key: SenseKey, _ sense: AdditionalSense, descriptors: [UInt8] = []) -> [UInt8] {
        [0x72, key.rawValue, sense.code, sense.qualifier, 0, 0, 0, UInt8(descriptors.count)] + descriptors
    }
}

func put16(_ value: UInt16, into bytes: inout [UInt8], at offset: Int) {
    bytes[offset] = UInt8(value >> 8)
    bytes[offset + 1] = UInt8(truncatingIfNeeded: value)
}

func put32(_ value: UInt32, into bytes: inout [UInt8], at offset: Int) {
    for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(3 - i))) }
}

func put64(_ value: UInt64, into bytes: inout [UInt8], at offset: Int) {
    for i in 0..<8 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(7 - i))) }
}

/// Big-endian field of `count` bytes (SCSI's byte order) starting at `offset`.
func bigEndian(_ cdb: [UInt8], _ offset: Int, _ count: Int) -> UInt64 {
    cdb[offset..<(offset + count)].reduce(0) { $0 << 8 | UInt64($1) }
}
