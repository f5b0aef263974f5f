/// The Ethernet header plus the AoE common header (AoEr11 section 2), 24 bytes.
public struct AoEHeader: Hashable, Sendable {
    public var destination: MACAddress
    public var source: MACAddress
    public var version: UInt8
    public var flags: AoEHeaderFlags
    public var error: AoEError
    public var address: ShelfSlot
    public var command: AoECommand
    public var tag: Tag

    public init(destination: MACAddress, source: MACAddress, version: UInt8 = AoELayout.version,
                flags: AoEHeaderFlags = [], error: AoEError = AoEError(rawValue: 0),
                address: ShelfSlot, command: AoECommand, tag: Tag) {
        self.destination = destination
        self.source = source
        self.version = version
        self.flags = flags
        self.error = error
        self.address = address
        self.command = command
        self.tag = tag
    }

    public enum ParseError: Error, Hashable, Sendable {
        case truncated
        case notAoE
    }

    /// Reads the header of a received frame. Fails on frames shorter than 24 bytes or of another EtherType.
    public init(parsing frame: UnsafeRawBufferPointer) throws(ParseError) {
        guard frame.count >= AoELayout.headerSize else { throw .truncated }
        guard frame.u16(12) == AoELayout.etherType else { throw .notAoE }
        destination = frame.mac(0)
        source = frame.mac(6)
        version = frame[14] >> 4
        flags = AoEHeaderFlags(rawValue: frame[14] & 0x0F)
        error = AoEError(rawValue: frame[15])
        address = ShelfSlot(shelf: frame.u16(16), slot: frame[18])
        command = AoECommand(rawValue: frame[19])
        tag = Tag(rawValue: frame.u32(20))
    }

    /// Writes the 24 header bytes at the start of `frame`.
    public func write(to frame: UnsafeMutableRawBufferPointer) {
        precondition(frame.count >= AoELayout.headerSize)
        frame.put(0, destination)
        frame.put(6, source)
        frame.put(12, AoELayout.etherType)
        frame[14] = version << 4 | (flags.rawValue & 0x0F)
        frame[15] = error.rawValue
        frame.put(16, address.shelf)
        frame[18] = address.slot
        frame[19] = command.rawValue
        frame.put(20, tag.rawValue)
    }

    /// The header of the reply to this request: back to the sender, from `ourMAC`, R set, our own
    /// shelf.slot (never the wildcard the request may have used), same command and tag.
    public func reply(from ourMAC: MACAddress, address ours: ShelfSlot, error: AoEError? = nil) -> AoEHeader {
        AoEHeader(destination: source, source: ourMAC, version: AoELayout.version,
                  flags: error == nil ? .response : [.response, .error],
                  error: error ?? AoEError(rawValue: 0), address: ours, command: command, tag: tag)
    }
}
