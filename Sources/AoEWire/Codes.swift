/// AoE header command codes (AoEr11 section 2.6). A raw-value struct, not an enum: a peer may send any byte,
/// and an unknown one is still a value the target answers with `AoEError.unrecognizedCommand`.
public struct AoECommand: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let issueATA = AoECommand(rawValue: 0)
    public static let queryConfig = AoECommand(rawValue: 1)
    public static let macMaskList = AoECommand(rawValue: 2)
    public static let reserveRelease = AoECommand(rawValue: 3)

    public var description: String {
        switch self {
        case .issueATA: "ATA"
        case .queryConfig: "QueryConfig"
        case .macMaskList: "MACMaskList"
        case .reserveRelease: "ReserveRelease"
        default: "command(\(rawValue))"
        }
    }
}

/// The header's Error field, meaningful when the E flag is set (AoEr11 section 2.4). Codes 1-6 are all there are.
public struct AoEError: RawRepresentable, Hashable, Sendable, Error, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let unrecognizedCommand = AoEError(rawValue: 1)
    public static let badArgument = AoEError(rawValue: 2)
    public static let deviceUnavailable = AoEError(rawValue: 3)
    public static let configStringPresent = AoEError(rawValue: 4)
    public static let unsupportedVersion = AoEError(rawValue: 5)
    public static let targetReserved = AoEError(rawValue: 6)

    public var description: String {
        switch rawValue {
        case 1: "unrecognized command code"
        case 2: "bad argument parameter"
        case 3: "device unavailable"
        case 4: "config string present"
        case 5: "unsupported version"
        case 6: "target is reserved"
        default: "AoE error \(rawValue)"
        }
    }
}

/// Header flag bits (low nibble of the Ver/Flags byte).
public struct AoEHeaderFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let response = AoEHeaderFlags(rawValue: 0x08)
    public static let error = AoEHeaderFlags(rawValue: 0x04)
}

/// Issue ATA Command AFlags (AoEr11 section 3.1).
public struct ATAArgFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// E: LBA48 extended command; LBA3..LBA5 are the high-order bytes.
    public static let extended = ATAArgFlags(rawValue: 0x40)
    /// D: device/head register flag.
    public static let device = ATAArgFlags(rawValue: 0x10)
    /// A: asynchronous write (the initiator does not wait for stable storage).
    public static let asynchronous = ATAArgFlags(rawValue: 0x02)
    /// W: data follows the header.
    public static let write = ATAArgFlags(rawValue: 0x01)
}

/// Query Config CCmd (AoEr11 section 3.2).
public struct ConfigCommand: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let read = ConfigCommand(rawValue: 0)
    public static let test = ConfigCommand(rawValue: 1)
    public static let testPrefix = ConfigCommand(rawValue: 2)
    public static let set = ConfigCommand(rawValue: 3)
    public static let forceSet = ConfigCommand(rawValue: 4)
}

/// MAC Mask List MCmd, MError and DCmd (AoEr11 section 3.3).
public struct MaskCommand: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let read = MaskCommand(rawValue: 0)
    public static let edit = MaskCommand(rawValue: 1)
}

public struct MaskError: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let none = MaskError(rawValue: 0)
    public static let unspecified = MaskError(rawValue: 1)
    public static let badDirective = MaskError(rawValue: 2)
    public static let listFull = MaskError(rawValue: 3)
}

public struct DirectiveCommand: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let noDirective = DirectiveCommand(rawValue: 0)
    public static let add = DirectiveCommand(rawValue: 1)
    public static let delete = DirectiveCommand(rawValue: 2)
}

/// Reserve/Release RCmd (AoEr11 section 3.4).
public struct ReserveCommand: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let read = ReserveCommand(rawValue: 0)
    public static let set = ReserveCommand(rawValue: 1)
    public static let forceSet = ReserveCommand(rawValue: 2)
}
