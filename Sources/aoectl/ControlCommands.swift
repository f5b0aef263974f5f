import ArgumentParser
import Foundation
import AoEWire
import ATACore
import AoEInitiator

struct Smart: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "SMART RETURN STATUS and, when supported, the attribute table.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "SHELF.SLOT") var target: ShelfSlot

    // SMART (ACS-3 7.48): command B0h, LBA mid/high 4Fh/C2h select the feature set.
    static let smartLBA: UInt64 = 0xA0C2_4F00
    static let names: [UInt8: String] = [
        1: "Raw_Read_Error_Rate", 3: "Spin_Up_Time", 4: "Start_Stop_Count", 5: "Reallocated_Sector_Ct", 7: "Seek_Error_Rate",
        9: "Power_On_Hours", 10: "Spin_Retry_Count", 12: "Power_Cycle_Count", 177: "Wear_Leveling_Count",
        187: "Reported_Uncorrect", 190: "Airflow_Temperature_Cel", 194: "Temperature_Celsius", 195: "Hardware_ECC_Recovered",
        196: "Reallocated_Event_Count", 197: "Current_Pending_Sector", 198: "Offline_Uncorrectable", 199: "UDMA_CRC_Error_Count",
    ]

    func run() throws {
        try reporting {
            let (client, info) = try connection.connect(target)
            let status = try client.ata(info, ATAHeader(errFeature: 0xDA, cmdStatus: ATACommand.smart.rawValue, lba: Self.smartLBA))
            let r = status.registers
            if ATAStatus(rawValue: r.cmdStatus).contains(.error) {
                let message = "SMART not supported by e\(info.address): status \(hex(r.cmdStatus)) error \(hex(r.errFeature)) (\(decodeError(r.errFeature)))"
                if connection.json { printJSON(["supported": false, "status": Int(r.cmdStatus), "error": Int(r.errFeature)]) } else { print(message) }
                throw ExitCode(2)
            }
            let mid = UInt8(truncatingIfNeeded: r.lba >> 8), high = UInt8(truncatingIfNeeded: r.lba >> 16)
            let healthy = !(mid == 0xF4 && high == 0x2C)
            var attributes: [[String: Any]] = []
            let data = try? client.ata(info, ATAHeader(errFeature: 0xD0, sectorCount: 1, cmdStatus: ATACommand.smart.rawValue, lba: Self.smartLBA), readSectors: 1)
            if let page = data?.data, page.count == 512 {
                for i in 0..<30 {
                    let at = 2 + i * 12
                    let id = page[at]
                    if id == 0 { continue }
                    let raw = (0..<6).reduce(UInt64(0)) { $0 | UInt64(page[at + 5 + $1]) << (8 * UInt64($1)) }
                    attributes.append(["id": Int(id), "name": Self.names[id] ?? "Unknown_Attribute", "flags": Int(page[at + 1]) | Int(page[at + 2]) << 8,
                                       "value": Int(page[at + 3]), "worst": Int(page[at + 4]), "raw": Int(raw)])
                }
            }
            if connection.json {
                printJSON(["supported": true, "healthy": healthy, "attributes": attributes])
                return
            }
            print("SMART overall-health self-assessment: \(healthy ? "PASSED" : "FAILED (threshold exceeded)")")
            if !attributes.isEmpty {
                print("ID# ATTRIBUTE_NAME          FLAG     VALUE WORST RAW_VALUE")
                for a in attributes {
                    let line = String(format: "%3d %@ 0x%04x   %03d   %03d   %lld", a["id"] as! Int,
                                      (a["name"] as! String).padding(toLength: 23, withPad: " ", startingAt: 0),
                                      a["flags"] as! Int, a["value"] as! Int, a["worst"] as! Int, Int64(a["raw"] as! Int))
                    print(line)
                }
            }
        }
    }
}

struct Config: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Read, test or set the target's config string.")
    enum Action: String, ExpressibleByArgument, CaseIterable {
        case read, test, prefix, set, force = "force-set"
        var command: ConfigCommand { [.read, .test, .testPrefix, .set, .forceSet][Self.allCases.firstIndex(of: self)!] }
    }
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "SHELF.SLOT") var target: ShelfSlot
    @Argument(help: "read, test, prefix, set or force-set") var action: Action = .read
    @Argument(help: "The string (for test, prefix, set, force-set).") var string: String = ""

    func run() throws {
        try reporting {
            let (client, info) = try connection.connect(target)
            guard let reply = try client.config(info, command: action.command, string: Array(string.utf8), timeout: connection.timeout) else {
                if connection.json { printJSON(["match": false]) } else { print("no reply (the config string does not match)") }
                throw ExitCode(3)
            }
            let text = String(decoding: reply.configString, as: UTF8.self)
            if connection.json { printJSON(["match": true, "config_string": text, "buffer_count": Int(reply.bufferCount), "sector_count": Int(reply.sectorCount)]) }
            else { print("config string: \(text)") }
        }
    }
}

struct Mask: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Read or edit the MAC Mask List (who may use the target).")
    enum Action: String, ExpressibleByArgument { case read, add, delete }
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "SHELF.SLOT") var target: ShelfSlot
    @Argument(help: "read, add or delete") var action: Action = .read
    @Argument(help: "MAC addresses to add or delete.") var macs: [String] = []

    func run() throws {
        try reporting {
            let addresses = try macs.map { guard let m = MACAddress($0) else { throw CLIError("'\($0)' is not a MAC address") }; return m }
            let (client, info) = try connection.connect(target)
            let request: MaskListArg
            switch action {
            case .read: request = MaskListArg(command: .read)
            case .add: request = MaskListArg(command: .edit, directives: addresses.map { MaskDirective(command: .add, mac: $0) })
            case .delete: request = MaskListArg(command: .edit, directives: addresses.map { MaskDirective(command: .delete, mac: $0) })
            }
            let reply = try client.mask(info, request)
            if reply.error != .none {
                let reason = [1: "unspecified error", 2: "bad directive", 3: "list full"][Int(reply.error.rawValue)] ?? "error \(reply.error.rawValue)"
                throw CLIError("mask list edit failed: \(reason)")
            }
            let list = reply.directives.map(\.mac.description)
            if connection.json { printJSON(["mask": list]) } else { print(list.isEmpty ? "mask list: empty (everyone may use the target)" : "mask list: " + list.joined(separator: " ")) }
        }
    }
}

struct Reserve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Read, set, force or release the reservation.")
    enum Action: String, ExpressibleByArgument { case read, set, force, release }
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "SHELF.SLOT") var target: ShelfSlot
    @Argument(help: "read, set, force or release") var action: Action = .read
    @Argument(help: "MAC addresses for set/force (default for set: this host).") var macs: [String] = []

    func run() throws {
        try reporting {
            var addresses = try macs.map { guard let m = MACAddress($0) else { throw CLIError("'\($0)' is not a MAC address") }; return m }
            let (client, info) = try connection.connect(target)
            if addresses.isEmpty && (action == .set || action == .force) { addresses = [client.link.macAddress] }
            let request: ReserveArg
            switch action {
            case .read: request = ReserveArg(command: .read)
            case .set: request = ReserveArg(command: .set, macs: addresses)
            case .force: request = ReserveArg(command: .forceSet, macs: addresses)
            case .release: request = ReserveArg(command: .set, macs: [])
            }
            let reply = try client.reserve(info, request)
            let list = reply.macs.map(\.description)
            if connection.json { printJSON(["reserved_by": list]) } else { print(list.isEmpty ? "not reserved" : "reserved by: " + list.joined(separator: " ")) }
        }
    }
}
