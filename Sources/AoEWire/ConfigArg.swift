/// The Query Config Information argument (AoEr11 section 3.2): 8 bytes, then the config string.
public struct ConfigArg: Hashable, Sendable {
    public var bufferCount: UInt16
    public var firmwareVersion: UInt16
    /// Maximum sectors per ATA command; 0 means 2 to old initiators.
    public var sectorCount: UInt8
    public var aoeVersion: UInt8
    public var command: ConfigCommand
    public var configString: [UInt8]

    public init(bufferCount: UInt16 = 0, firmwareVersion: UInt16 = 0, sectorCount: UInt8 = 0,
                aoeVersion: UInt8 = AoELayout.version, command: ConfigCommand = .read, configString: [UInt8] = []) {
        self.bufferCount = bufferCount
        self.firmwareVersion = firmwareVersion
        self.sectorCount = sectorCount
        self.aoeVersion = aoeVersion
        self.command = command
        self.configString = configString
    }

    public enum ParseError: Error, Hashable, Sendable {
        case truncated
        /// The string length field exceeds 1024 or the bytes present in the frame.
        case badStringLength
    }

    public init(parsing frame: UnsafeRawBufferPointer) throws(ParseError) {
        guard frame.count >= AoELayout.configHeaderSize else { throw .truncated }
        bufferCount = frame.u16(24)
        firmwareVersion = frame.u16(26)
        sectorCount = frame[28]
        aoeVersion = frame[29] >> 4
        command = ConfigCommand(rawValue: frame[29] & 0x0F)
        let length = Int(frame.u16(30))
        guard length <= AoELayout.maxConfigStringLength,
              AoELayout.configHeaderSize + length <= frame.count else { throw .badStringLength }
        configString = Array(frame[AoELayout.configHeaderSize..<(AoELayout.configHeaderSize + length)])
    }

    /// Bytes this argument needs after the common header.
    public var encodedSize: Int { AoELayout.configHeaderSize - AoELayout.headerSize + configString.count }

    /// Writes bytes 24..(32 + string) and returns the frame length so far.
    @discardableResult
    public func write(to frame: UnsafeMutableRawBufferPointer) -> Int {
        let end = AoELayout.configHeaderSize + configString.count
        precondition(frame.count >= end && configString.count <= AoELayout.maxConfigStringLength)
        frame.put(24, bufferCount)
        frame.put(26, firmwareVersion)
        frame[28] = sectorCount
        frame[29] = aoeVersion << 4 | (command.rawValue & 0x0F)
        frame.put(30, UInt16(configString.count))
        for (i, byte) in configString.enumerated() { frame[AoELayout.configHeaderSize + i] = byte }
        return end
    }
}
