import AoEWire

/// Who may use an export: the MAC Mask List (AoEr11 3.3) and the reserve list (3.4). Pure state; each
/// command is a transition that returns the reply to send. IDENTIFY is exempt from reservation, as in
/// vblade, so broadcast IDENTIFY discovery (WinAoE) keeps working while a host holds the reservation.
public struct ExportAccess: Hashable, Sendable {
    /// vblade keeps 32; 128 still lists in one reply at MTU 1500 (28 + 128 x 8 bytes).
    public static let maskCapacity = 128
    public static let reserveCapacity = 255

    /// Empty: everyone may talk to the export. Otherwise only these sources; others are ignored silently.
    public private(set) var mask: [MACAddress]
    /// Empty: not reserved. Otherwise only these sources may issue ATA commands other than IDENTIFY.
    public private(set) var reservation: [MACAddress]

    public init(mask: [MACAddress] = [], reservation: [MACAddress] = []) {
        self.mask = mask
        self.reservation = reservation
    }

    /// Whether a frame from `source` is looked at at all.
    public func maskAdmits(_ source: MACAddress) -> Bool { mask.isEmpty || mask.contains(source) }

    /// What one frame's source may do, decided once per frame (one look at the state).
    public struct Admission: Hashable, Sendable {
        public let maskAdmits: Bool
        let reservedByOthers: Bool
        /// The one place of the rule: a reservation shuts other sources out of every ATA command but IDENTIFY.
        public func reservationAdmits(isIdentify: Bool) -> Bool { isIdentify || !reservedByOthers }
    }

    /// No mask, no reservation: what `admission` says to every source then.
    public static let everyoneAdmitted = Admission(maskAdmits: true, reservedByOthers: false)

    public func admission(of source: MACAddress) -> Admission {
        Admission(maskAdmits: maskAdmits(source), reservedByOthers: !reservation.isEmpty && !reservation.contains(source))
    }

    /// Whether `source` may run this ATA command under the current reservation.
    public func reservationAdmits(_ source: MACAddress, isIdentify: Bool) -> Bool {
        admission(of: source).reservationAdmits(isIdentify: isIdentify)
    }

    public enum Outcome<Reply: Hashable & Sendable>: Hashable, Sendable {
        case reply(Reply)
        case error(AoEError)
    }

    /// MAC Mask List read/edit. Directives apply in order; the first failing one stops the edit, its index
    /// goes in Dir Count and the error in MError. Success and read return the whole list.
    public mutating func handleMask(_ request: MaskListArg) -> Outcome<MaskListArg> {
        switch request.command {
        case .read:
            return .reply(listReply(request.command))
        case .edit:
            for (index, directive) in request.directives.enumerated() {
                switch directive.command {
                case .noDirective:
                    continue
                case .add:
                    if mask.contains(directive.mac) { continue }
                    guard mask.count < Self.maskCapacity else { return .reply(failure(request, index, .listFull)) }
                    mask.append(directive.mac)
                case .delete:
                    mask.removeAll { $0 == directive.mac }
                default:
                    return .reply(failure(request, index, .badDirective))
                }
            }
            return .reply(listReply(request.command))
        default:
            return .error(.badArgument)
        }
    }

    private func listReply(_ command: MaskCommand) -> MaskListArg {
        MaskListArg(command: command, error: .none, directives: mask.map { MaskDirective(command: .noDirective, mac: $0) })
    }

    private func failure(_ request: MaskListArg, _ index: Int, _ error: MaskError) -> MaskListArg {
        var reply = MaskListArg(command: request.command, error: error, directives: [])
        reply.directiveCountOverride = UInt8(index)
        return reply
    }

    /// Reserve/Release. Set succeeds when the list is empty or the sender is on it; force set always;
    /// zero addresses release. The reply carries the list as it is afterwards, so a list whose reply would
    /// not fit `maxFrameLength` is refused (error 2) rather than half-reported.
    public mutating func handleReserve(_ request: ReserveArg, from source: MACAddress, maxFrameLength: Int) -> Outcome<ReserveArg> {
        switch request.command {
        case .read:
            return .reply(ReserveArg(command: .read, macs: reservation))
        case .set, .forceSet:
            guard request.macs.count <= Self.reserveCapacity, request.frameLength <= maxFrameLength else { return .error(.badArgument) }
            if request.command == .set && !reservation.isEmpty && !reservation.contains(source) { return .error(.targetReserved) }
            var unique: [MACAddress] = []
            for mac in request.macs where !unique.contains(mac) { unique.append(mac) }
            reservation = unique
            return .reply(ReserveArg(command: request.command, macs: reservation))
        default:
            return .error(.badArgument)
        }
    }
}

/// The config string and its CCmd semantics (AoEr11 3.2; aoecfg(8)).
public struct ConfigStringState: Hashable, Sendable {
    public private(set) var value: [UInt8]

    public init(_ value: [UInt8] = []) {
        precondition(value.count <= AoELayout.maxConfigStringLength)
        self.value = value
    }

    public enum Outcome: Hashable, Sendable {
        /// Reply with the (possibly new) config string.
        case reply
        /// Test / test-prefix did not match: say nothing.
        case silence
        case error(AoEError)
    }

    public mutating func handle(_ command: ConfigCommand, argument: [UInt8]) -> Outcome {
        switch command {
        case .read:
            return .reply
        case .test:
            return argument == value ? .reply : .silence
        case .testPrefix:
            return value.starts(with: argument) ? .reply : .silence
        case .set:
            guard value.isEmpty || value == argument else { return .error(.configStringPresent) }
            value = argument
            return .reply
        case .forceSet:
            value = argument
            return .reply
        default:
            return .error(.badArgument)
        }
    }
}
