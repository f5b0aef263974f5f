import AoEWire
import ATACore
import LinuxSystem
import PacketTransport

/// A target as its Query Config reply describes it.
public struct TargetInfo: Hashable, Sendable {
    public var address: ShelfSlot
    public var mac: MACAddress
    public var bufferCount: Int
    /// Sectors per ATA command: the target's Sector Count (0 means 2), capped by our own MTU.
    public var sectorsPerFrame: Int
    public var firmwareVersion: UInt16
    public var aoeVersion: UInt8
    public var configString: [UInt8]
    public var interfaceName: String
}

public enum ClientError: Error, CustomStringConvertible, Equatable {
    case noReply(target: String, seconds: Double)
    case notFound(ShelfSlot, interface: String, seconds: Double)
    case aoe(AoEError, target: String)
    case ataFailed(status: UInt8, error: UInt8, lba: UInt64)
    case shortReply(expected: Int, got: Int)
    case system(SystemError)

    public var description: String {
        switch self {
        case .noReply(let t, let s): "no reply from \(t) in \(formatSeconds(s))"
        case .notFound(let a, let i, let s): "no AoE target e\(a) answered on \(i) in \(formatSeconds(s))"
        case .aoe(let e, let t):
            e == .targetReserved ? "\(t): target reserved by another host (AoE error 6)" : "\(t): AoE error \(e.rawValue): \(e)"
        case .ataFailed(let s, let e, let lba):
            "ATA command failed at LBA \(lba): status 0x\(String(s, radix: 16)) error 0x\(String(e, radix: 16))" +
            (e & 0x10 != 0 ? " (IDNF: address out of range)" : e & 0x04 != 0 ? " (ABRT: command aborted)" : "")
        case .shortReply(let e, let g): "reply carried \(g) data bytes, expected \(e)"
        case .system(let e): e.description
        }
    }
}

func formatSeconds(_ s: Double) -> String { s == s.rounded() ? "\(Int(s)) s" : "\(s) s" }

/// The reply to one request: its header and the whole frame.
public struct Reply: Sendable {
    public var header: AoEHeader
    public var bytes: [UInt8]
}

/// Talks AoE over one link: discovery and single request/response exchanges with retransmission.
/// Bulk transfers go through `BlockIOEngine`.
public final class AoEClient: @unchecked Sendable {
    public let link: any FrameLink
    let pool: FramePool
    private var rxFrames: [Frame]
    private var generation: UInt32 = 0

    public init(link: any FrameLink) {
        self.link = link
        let pool = FramePool(slots: 33, frameCapacity: max(link.currentMTU(), 9000) + AoELayout.ethernetHeaderSize)
        self.pool = pool
        rxFrames = (0..<32).map { pool.frame($0) }
    }

    /// Tags: bit 31 set so a kernel initiator on the same host ignores our replies; the rest a counter.
    func freshTag() -> UInt32 {
        generation = (generation &+ 1) & 0x7FFF_FFFF
        return 0x8000_0000 | generation
    }

    var ourSectorsPerFrame: Int { AoELayout.sectorsPerFrame(mtu: link.currentMTU()) }

    /// Sends one request and collects matching replies until `collect` says stop or the time is up.
    /// Each retry gets a fresh tag, and only replies to the newest tag count.
    func exchange(to mac: MACAddress, address: ShelfSlot, command: AoECommand, arg: [UInt8],
                  timeout: Double, attempts: Int, collect: (Reply) -> Bool) throws(ClientError) {
        var tx = pool.frame(32)
        for attempt in 0..<max(1, attempts) {
            let tag = freshTag()
            let header = AoEHeader(destination: mac, source: link.macAddress, address: address, command: command, tag: Tag(rawValue: tag))
            header.write(to: tx.buffer)
            arg.withUnsafeBytes { tx.buffer.baseAddress!.advanced(by: AoELayout.headerSize).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            tx.length = AoELayout.headerSize + arg.count
            tx.padToMinimum()
            do { try link.sendOne(tx) } catch { throw .system(error) }
            let deadline = monotonicSeconds() + timeout * Double(1 << min(attempt, 4)) / Double(1 << min(attempts - 1, 4))
            while monotonicSeconds() < deadline {
                let n: Int
                do { n = try link.receive(into: &rxFrames) } catch { throw .system(error) }
                for i in 0..<n {
                    guard let reply = try? AoEHeader(parsing: rxFrames[i].bytes), reply.flags.contains(.response),
                          reply.tag.rawValue == tag,
                          reply.destination == link.macAddress || reply.destination.isBroadcast else { continue }
                    if !collect(Reply(header: reply, bytes: Array(rxFrames[i].bytes))) { return }
                }
            }
        }
    }

    /// Broadcasts Query Config (to `address`, 0xFFFF.0xFF for all) and lists every target that answers.
    public func discover(address: ShelfSlot = .broadcast, seconds: Double = 1) throws(ClientError) -> [TargetInfo] {
        var found: [TargetInfo] = []
        try exchange(to: .broadcast, address: address, command: .queryConfig, arg: [UInt8](repeating: 0, count: 8),
                     timeout: seconds, attempts: 1) { reply in
            guard !reply.header.flags.contains(.error), let info = targetInfo(reply) else { return true }
            if !found.contains(where: { $0.address == info.address && $0.mac == info.mac }) { found.append(info) }
            return true
        }
        return found.sorted { ($0.address.shelf, $0.address.slot) < ($1.address.shelf, $1.address.slot) }
    }

    func targetInfo(_ reply: Reply) -> TargetInfo? {
        guard let config = try? reply.bytes.withUnsafeBytes({ try ConfigArg(parsing: $0) }) else { return nil }
        let advertised = config.sectorCount == 0 ? 2 : Int(config.sectorCount)
        return TargetInfo(address: reply.header.address, mac: reply.header.source, bufferCount: Int(config.bufferCount),
                          sectorsPerFrame: max(1, min(advertised, ourSectorsPerFrame)), firmwareVersion: config.firmwareVersion,
                          aoeVersion: config.aoeVersion, configString: config.configString, interfaceName: link.interfaceName)
    }

    /// Finds one target by shelf.slot (the first to answer).
    public func find(_ address: ShelfSlot, seconds: Double = 2) throws(ClientError) -> TargetInfo {
        var found: TargetInfo? = nil
        try exchange(to: .broadcast, address: address, command: .queryConfig, arg: [UInt8](repeating: 0, count: 8),
                     timeout: seconds, attempts: 3) { reply in
            guard reply.header.address == address, let info = targetInfo(reply) else { return true }
            found = info
            return false
        }
        guard let found else { throw .notFound(address, interface: link.interfaceName, seconds: seconds) }
        return found
    }

    /// One request, one reply (with retries); an AoE error reply throws.
    public func request(_ target: TargetInfo, command: AoECommand, arg: [UInt8], timeout: Double = 2, attempts: Int = 4) throws(ClientError) -> Reply {
        var answer: Reply? = nil
        try exchange(to: target.mac, address: target.address, command: command, arg: arg, timeout: timeout, attempts: attempts) { reply in
            guard reply.header.address == target.address else { return true }
            answer = reply
            return false
        }
        guard let answer else { throw .noReply(target: "e\(target.address) (\(target.mac))", seconds: timeout) }
        if answer.header.flags.contains(.error) { throw .aoe(answer.header.error, target: "e\(target.address)") }
        return answer
    }

    /// Query Config with a CCmd: nil when the target stays silent (test / prefix without a match).
    public func config(_ target: TargetInfo, command: ConfigCommand, string: [UInt8], timeout: Double = 1) throws(ClientError) -> ConfigArg? {
        let arg = ConfigArg(command: command, configString: string)
        var bytes = [UInt8](repeating: 0, count: AoELayout.configHeaderSize + string.count)
        bytes.withUnsafeMutableBytes { arg.write(to: $0) }
        do {
            let reply = try request(target, command: .queryConfig, arg: Array(bytes[AoELayout.headerSize...]), timeout: timeout, attempts: 1)
            return try? reply.bytes.withUnsafeBytes { try ConfigArg(parsing: $0) }
        } catch .noReply {
            return nil
        }
    }

    public func mask(_ target: TargetInfo, _ arg: MaskListArg) throws(ClientError) -> MaskListArg {
        var bytes = [UInt8](repeating: 0, count: AoELayout.maskHeaderSize + arg.directives.count * 8)
        bytes.withUnsafeMutableBytes { arg.write(to: $0) }
        let reply = try request(target, command: .macMaskList, arg: Array(bytes[AoELayout.headerSize...]))
        do { return try reply.bytes.withUnsafeBytes { try MaskListArg(parsing: $0) } } catch {
            // An error reply's Dir Count is an index, not a count: read the fixed part only, if it came.
            guard reply.bytes.count >= AoELayout.maskHeaderSize else {
                throw .shortReply(expected: AoELayout.maskHeaderSize, got: reply.bytes.count)
            }
            return MaskListArg(command: MaskCommand(rawValue: reply.bytes[25]), error: MaskError(rawValue: reply.bytes[26]),
                               directives: [])
        }
    }

    public func reserve(_ target: TargetInfo, _ arg: ReserveArg) throws(ClientError) -> ReserveArg {
        var bytes = [UInt8](repeating: 0, count: arg.frameLength)
        bytes.withUnsafeMutableBytes { arg.write(to: $0) }
        let reply = try request(target, command: .reserveRelease, arg: Array(bytes[AoELayout.headerSize...]))
        do { return try reply.bytes.withUnsafeBytes { try ReserveArg(parsing: $0) } } catch { throw .shortReply(expected: 26, got: reply.bytes.count) }
    }

    /// Result of one ATA command: the reply registers and any data.
    public struct ATAResult: Sendable {
        public var registers: ATAHeader
        public var data: [UInt8]
        public var status: ATAStatus { ATAStatus(rawValue: registers.cmdStatus) }
    }

    /// Any task file; `data` goes out with the W flag, `readSectors` sectors are expected back.
    public func ata(_ target: TargetInfo, _ task: ATAHeader, data: [UInt8] = [], readSectors: Int = 0, timeout: Double = 3) throws(ClientError) -> ATAResult {
        var arg = [UInt8](repeating: 0, count: AoELayout.ataHeaderSize)
        var header = task
        if !data.isEmpty { header.flags.insert(.write) }
        arg.withUnsafeMutableBytes { header.write(to: $0) }
        let reply = try request(target, command: .issueATA, arg: Array(arg[AoELayout.headerSize...]) + data, timeout: timeout)
        guard let registers = reply.bytes.withUnsafeBytes({ ATAHeader(parsing: $0) }) else {
            throw .shortReply(expected: AoELayout.ataHeaderSize, got: reply.bytes.count)
        }
        let status = ATAStatus(rawValue: registers.cmdStatus)
        var payload: [UInt8] = []
        if readSectors > 0 && !status.contains(.error) {
            let want = readSectors * AoELayout.sectorSize
            guard reply.bytes.count >= AoELayout.ataHeaderSize + want else {
                throw .shortReply(expected: want, got: reply.bytes.count - AoELayout.ataHeaderSize)
            }
            payload = Array(reply.bytes[AoELayout.ataHeaderSize..<(AoELayout.ataHeaderSize + want)])
        }
        return ATAResult(registers: registers, data: payload)
    }

    /// DATA SET MANAGEMENT TRIM of `ranges` (sectors [lba, lba + count) each), in as many commands as their
    /// entries need at `blocksPerCommand` blocks of entries a command (IDENTIFY word 105), one after another.
    /// TRIM is safe to repeat, so a lost reply is simply asked again.
    public func trim(_ target: TargetInfo, ranges: [(lba: UInt64, count: UInt64)], blocksPerCommand: Int = 1, timeout: Double = 3) throws(ClientError) {
        for payload in TrimRangeList.commandPayloads(ranges, blocksPerCommand: blocksPerCommand) {
            let task = ATAHeader(flags: .extended, errFeature: TrimRangeList.trimFeature,
                                 sectorCount: UInt8(payload.count / AoELayout.sectorSize),
                                 cmdStatus: ATACommand.dataSetManagement.rawValue, lba: 0)
            let result = try ata(target, task, data: payload, timeout: timeout)
            if result.status.contains(.error) {
                let first = UInt64(littleEndian: payload.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }) & 0xFFFF_FFFF_FFFF
                throw .ataFailed(status: result.registers.cmdStatus, error: result.registers.errFeature, lba: first)
            }
        }
    }

    /// IDENTIFY DEVICE, decoded.
    public func identify(_ target: TargetInfo) throws(ClientError) -> IdentifyPage {
        let result = try ata(target, ATAHeader(sectorCount: 1, cmdStatus: ATACommand.identifyDevice.rawValue, lba: 0xA000_0000), readSectors: 1)
        if result.status.contains(.error) { throw .ataFailed(status: result.registers.cmdStatus, error: result.registers.errFeature, lba: 0) }
        return IdentifyPage(bytes: result.data)!
    }
}
