/// One MAC Mask List directive: reserved byte, DCmd, MAC (8 bytes).
public struct MaskDirective: Hashable, Sendable {
    public var command: DirectiveCommand
    public var mac: MACAddress
    public init(command: DirectiveCommand, mac: MACAddress) {
        self.command = command
        self.mac = mac
    }
}

/// The MAC Mask List argument (AoEr11 section 3.3): reserved, MCmd, MError, Dir Count, then directives.
public struct MaskListArg: Hashable, Sendable {
    public var command: MaskCommand
    public var error: MaskError
    public var directives: [MaskDirective]

    public init(command: MaskCommand, error: MaskError = .none, directives: [MaskDirective] = []) {
        self.command = command
        self.error = error
        self.directives = directives
    }

    public enum ParseError: Error, Hashable, Sendable {
        case truncated
        /// Dir Count promises more directives than the frame carries.
        case directivesTruncated
    }

    public init(parsing frame: UnsafeRawBufferPointer) throws(ParseError) {
        guard frame.count >= AoELayout.maskHeaderSize else { throw .truncated }
        command = MaskCommand(rawValue: frame[25])
        error = MaskError(rawValue: frame[26])
        let count = Int(frame[27])
        guard AoELayout.maskHeaderSize + count * AoELayout.maskDirectiveSize <= frame.count else { throw .directivesTruncated }
        directives = (0..<count).map { i in
            let at = AoELayout.maskHeaderSize + i * AoELayout.maskDirectiveSize
            return MaskDirective(command: DirectiveCommand(rawValue: frame[at + 1]), mac: frame.mac(at + 2))
        }
    }

    /// The Dir Count byte: in an error reply it is the index of the failing directive, not the list length.
    public var directiveCountOverride: UInt8? = nil

    @discardableResult
    public func write(to frame: UnsafeMutableRawBufferPointer) -> Int {
        let end = AoELayout.maskHeaderSize + directives.count * AoELayout.maskDirectiveSize
        precondition(frame.count >= end && directives.count <= 255)
        frame[24] = 0
        frame[25] = command.rawValue
        frame[26] = error.rawValue
        frame[27] = directiveCountOverride ?? UInt8(directives.count)
        for (i, directive) in directives.enumerated() {
            let at = AoELayout.maskHeaderSize + i * AoELayout.maskDirectiveSize
            frame[at] = 0
            frame[at + 1] = directive.command.rawValue
            frame.put(at + 2, directive.mac)
        }
        return end
    }
}
