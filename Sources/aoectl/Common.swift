import ArgumentParser
import Foundation
import AoEWire
import ATACore
import AoEInitiator
import LinuxSystem
import PacketTransport

/// A number given as decimal or 0x-hex (scripts depend on both).
struct Number<T: FixedWidthInteger & Sendable>: ExpressibleByArgument, Sendable {
    var value: T
    init?(argument: String) {
        let text = argument.lowercased()
        if text.hasPrefix("0x") { guard let v = T(text.dropFirst(2), radix: 16) else { return nil }; value = v }
        else { guard let v = T(text) else { return nil }; value = v }
    }
}

/// A byte size with an optional k/m/g suffix ("4k", "1M", "512").
func parseByteSize(_ text: String) -> Int? {
    let units: [Character: Int] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30]
    guard let last = text.lowercased().last else { return nil }
    guard let unit = units[last] else { return Int(text) }
    guard let value = Int(text.dropLast()) else { return nil }
    let (bytes, overflow) = value.multipliedReportingOverflow(by: unit)
    return overflow ? nil : bytes
}

extension ShelfSlot: ExpressibleByArgument {
    public init?(argument: String) {
        let trimmed = argument.hasPrefix("e") ? String(argument.dropFirst()) : argument
        let parts = trimmed.split(separator: ".")
        guard parts.count == 2, let shelf = UInt16(parts[0]), let slot = UInt8(parts[1]) else { return nil }
        self.init(shelf: shelf, slot: slot)
    }
}

struct ConnectionOptions: ParsableArguments {
    @Option(name: [.short, .long], help: "Network interface the targets are on.")
    var interface: String

    @Option(help: "Seconds to wait for replies.")
    var timeout: Double = 2

    @Flag(help: "Print exactly one JSON object on stdout.")
    var json = false

    func open() throws -> AoEClient {
        guard Privileges.canOpenPacketSockets else { throw CLIError("raw packet sockets need root or CAP_NET_RAW (run as root)") }
        do {
            return AoEClient(link: try PacketSocket(interface: interface, receiveTimeoutMilliseconds: 1, receiveBufferBytes: 4 << 20))
        } catch {
            throw CLIError(error.description)
        }
    }

    func connect(_ address: ShelfSlot) throws -> (AoEClient, TargetInfo) {
        let client = try open()
        do { return (client, try client.find(address, seconds: timeout)) } catch { throw CLIError(error.description) }
    }
}

struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs a command body, turning our errors into one line on stderr and exit status 1.
func reporting(_ body: () throws -> Void) throws {
    do { try body() } catch let error as CLIError {
        FileHandle.standardError.write(Data("aoectl: error: \(error.description)\n".utf8))
        throw ExitCode(1)
    } catch let error as ClientError {
        FileHandle.standardError.write(Data("aoectl: error: \(error.description)\n".utf8))
        throw ExitCode(1)
    }
}

func printJSON(_ object: [String: Any]) {
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

func hex(_ v: some BinaryInteger, width: Int = 2) -> String {
    let s = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, width - s.count)) + s
}

func hexDump(_ bytes: [UInt8]) -> String {
    stride(from: 0, to: bytes.count, by: 16).map { offset in
        let row = bytes[offset..<min(offset + 16, bytes.count)]
        return String(format: "%04x  ", offset) + row.map { String(format: "%02x", $0) }.joined(separator: " ")
    }.joined(separator: "\n")
}

func decodeStatus(_ status: UInt8) -> String {
    let names: [(UInt8, String)] = [(0x80, "BSY"), (0x40, "DRDY"), (0x20, "DF"), (0x10, "DSC"), (0x08, "DRQ"), (0x01, "ERR")]
    let set = names.filter { status & $0.0 != 0 }.map(\.1)
    return set.isEmpty ? "-" : set.joined(separator: "|")
}

func decodeError(_ error: UInt8) -> String {
    let names: [(UInt8, String)] = [(0x80, "ICRC"), (0x40, "UNC"), (0x10, "IDNF"), (0x04, "ABRT"), (0x02, "EOM"), (0x01, "AMNF")]
    let set = names.filter { error & $0.0 != 0 }.map(\.1)
    return set.isEmpty ? "-" : set.joined(separator: "|")
}

func targetJSON(_ t: TargetInfo) -> [String: Any] {
    ["target": "\(t.address)", "shelf": Int(t.address.shelf), "slot": Int(t.address.slot), "mac": t.mac.description,
     "buffer_count": t.bufferCount, "sectors_per_frame": t.sectorsPerFrame, "firmware": Int(t.firmwareVersion),
     "config_string": String(decoding: t.configString, as: UTF8.self), "interface": t.interfaceName]
}
