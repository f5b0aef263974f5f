/// The Reserve/Release argument (AoEr11 section 3.4): RCmd, NMacs, then NMacs 6-byte addresses.
public struct ReserveArg: Hashable, Sendable {
    public var command: ReserveCommand
    public var macs: [MACAddress]

    public init(command: ReserveCommand, macs: [MACAddress] = []) {
        self.command = command
        self.macs = macs
    }

    public enum ParseError: Error, Hashable, Sendable {
        case truncated
        /// NMacs promises more addresses than the frame carries.
        case addressesTruncated
    }

    public init(parsing frame: UnsafeRawBufferPointer) throws(ParseError) {
        guard frame.count >= AoELayout.reserveHeaderSize else { throw .truncated }
        command = ReserveCommand(rawValue: frame[24])
        let count = Int(frame[25])
        guard AoELayout.reserveHeaderSize + count * 6 <= frame.count else { throw .addressesTruncated }
        macs = (0..<count).map { frame.mac(AoELayout.reserveHeaderSize + $0 * 6) }
    }

    /// Frame length needed to carry this argument.
    public var frameLength: Int { AoELayout.reserveHeaderSize + macs.count * 6 }

    @discardableResult
    public func write(to frame: UnsafeMutableRawBufferPointer) -> Int {
        let end = frameLength
        precondition(frame.count >= end && macs.count <= 255)
        frame[24] = command.rawValue
        frame[25] = UInt8(macs.count)
        for (i, mac) in macs.enumerated() { frame.put(AoELayout.reserveHeaderSize + i * 6, mac) }
        return end
    }
}
