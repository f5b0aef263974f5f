import ArgumentParser
import Foundation
import AoEWire
import ATACore
import AoEInitiator

@main
struct AoECtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aoectl",
        abstract: "Find AoE targets, talk ATA to them, and load-test them.",
        discussion: """
        Every command takes --interface IF; commands for one target take it as SHELF.SLOT (e.g. 1.1 or e1.1). \
        Numbers may be decimal or 0x-hex. --json prints exactly one JSON object on stdout. Needs root or \
        CAP_NET_RAW. Tags carry bit 31, so a Linux aoe initiator on the same host ignores our traffic.
        """,
        subcommands: [Discover.self, Identify.self, Smart.self, ATA.self, Read.self, Write.self, Discard.self,
                      Config.self, Mask.self, Reserve.self, Bench.self, Attach.self, Detach.self])
}

struct Discover: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Broadcast Query Config and list every target that answers.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Only this SHELF.SLOT (default: all).") var target: ShelfSlot?

    func run() throws {
        try reporting {
            let client = try connection.open()
            let found = try client.discover(address: target ?? .broadcast, seconds: connection.timeout)
            var sizes: [Int: UInt64] = [:]
            for (i, t) in found.enumerated() { sizes[i] = try? client.identify(t).sectors }
            if connection.json {
                printJSON(["targets": found.enumerated().map { i, t in targetJSON(t).merging(["sectors": sizes[i].map { Int($0) } as Any? ?? NSNull()]) { a, _ in a } }])
                return
            }
            if found.isEmpty { print("no AoE targets answered on \(connection.interface) in \(connection.timeout) s") }
            else { print("target  mac                sectors       size      buffers  sectors/frame  firmware  config") }
            for (i, t) in found.enumerated() {
                let sectors = sizes[i].map(String.init) ?? "?"
                let size = sizes[i].map { formatBytes(Double($0) * 512) } ?? "?"
                print("e\(t.address)".padding(toLength: 8, withPad: " ", startingAt: 0) + t.mac.description + "  " +
                      sectors.padding(toLength: 14, withPad: " ", startingAt: 0) + size.padding(toLength: 10, withPad: " ", startingAt: 0) +
                      "\(t.bufferCount)".padding(toLength: 9, withPad: " ", startingAt: 0) +
                      "\(t.sectorsPerFrame)".padding(toLength: 15, withPad: " ", startingAt: 0) +
                      hex(t.firmwareVersion, width: 4).padding(toLength: 10, withPad: " ", startingAt: 0) + String(decoding: t.configString, as: UTF8.self))
            }
        }
    }
}

func formatBytes(_ bytes: Double) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var value = bytes, unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    return String(format: unit == 0 ? "%.0f %@" : "%.1f %@", value, units[unit])
}

struct Identify: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "IDENTIFY DEVICE, decoded.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "SHELF.SLOT") var target: ShelfSlot
    @Flag(help: "Print the 512 bytes in hex.") var raw = false

    func run() throws {
        try reporting {
            let (client, info) = try connection.connect(target)
            let page = try client.identify(info)
            if raw && !connection.json { print(hexDump(page.bytes)); return }
            if connection.json {
                printJSON(["target": "\(info.address)", "model": page.model, "serial": page.serial, "firmware": page.firmware,
                           "sectors": Int(page.sectors), "lba28_sectors": Int(page.lba28Sectors), "lba48": page.supportsLBA48,
                           "lba48_sectors": Int(page.lba48Sectors), "write_cache_supported": page.writeCacheSupported,
                           "write_cache_enabled": page.writeCacheEnabled, "flush_cache": page.flushCacheSupported,
                           "flush_cache_ext": page.flushCacheExtSupported, "smart_supported": page.smartSupported,
                           "smart_enabled": page.smartEnabled, "ncq": page.ncqSupported, "checksum_valid": page.checksumIsValid,
                           "trim": page.trimSupported, "trim_reads_zeros": page.trimReadsZeros,
                           "raw": page.bytes.map { String(format: "%02x", $0) }.joined()])
                return
            }
            print("target: e\(info.address) (\(info.mac))")
            print("model: \(page.model)")
            print("serial: \(page.serial)")
            print("firmware: \(page.firmware)")
            print("sectors: \(page.sectors)")
            print("size: \(formatBytes(Double(page.sectors) * 512))")
            print("lba28 sectors: \(page.lba28Sectors)")
            print("lba48: \(page.supportsLBA48 ? "yes (\(page.lba48Sectors) sectors)" : "no")")
            print("write cache: \(page.writeCacheSupported ? (page.writeCacheEnabled ? "supported, enabled" : "supported, disabled") : "not supported")")
            print("flush cache: \(page.flushCacheSupported ? "yes" : "no"), flush cache ext: \(page.flushCacheExtSupported ? "yes" : "no")")
            print("smart: \(page.smartSupported ? (page.smartEnabled ? "supported, enabled" : "supported, disabled") : "not supported")")
            print("ncq: \(page.ncqSupported ? "yes, depth \(page.queueDepth)" : "no")")
            print("trim: \(page.trimSupported ? (page.trimReadsZeros ? "yes, trimmed sectors read as zeros" : "yes") : "no")")
            print("checksum: \(page.checksumIsValid ? "valid" : "INVALID")")
        }
    }
}

struct ATA: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send any ATA task file and print the registers that come back.",
        discussion: "Exit status 0 only when the returned status has neither ERR nor DF.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "SHELF.SLOT") var target: ShelfSlot
    @Option(help: "Command register (opcode).") var command: Number<UInt8>
    @Option(help: "Feature register.") var feature: Number<UInt8> = Number(argument: "0")!
    @Option(help: "Sector count register.") var count: Number<UInt8> = Number(argument: "0")!
    @Option(help: "LBA (48 bits; for 28-bit commands bits 24-27 go in the device register's low nibble).") var lba: Number<UInt64> = Number(argument: "0")!
    @Option(help: "Device register (default 0xE0; 0x40 for --lba48).") var device: Number<UInt8>?
    @Flag(help: "48-bit command: the AoE E flag, LBA bytes 3-5 are address bytes.") var lba48 = false
    @Option(help: "Expect this many sectors of data back.") var readSectors: Int = 0
    @Option(help: "Write the returned data to this file (default: hex on stdout).") var output: String?
    @Option(help: "Send this file's contents as data (W flag).") var writeFile: String?

    func run() throws {
        try reporting {
            let (client, info) = try connection.connect(target)
            var registers = lba.value & 0xFFFF_FFFF_FFFF
            if !lba48 {
                let dev = UInt64(device?.value ?? 0xE0)
                registers = (registers & 0x00FF_FFFF) | ((dev & 0xF0 | (lba.value >> 24) & 0x0F) << 24)
            }
            let data = try writeFile.map { Array(try Data(contentsOf: URL(fileURLWithPath: $0))) } ?? []
            if !data.isEmpty && data.count % 512 != 0 { throw CLIError("--write-file must hold a whole number of 512-byte sectors") }
            let task = ATAHeader(flags: lba48 ? .extended : [], errFeature: feature.value, sectorCount: count.value, cmdStatus: command.value, lba: registers)
            let result = try client.ata(info, task, data: data, readSectors: readSectors, timeout: connection.timeout)
            let r = result.registers
            if let output, !result.data.isEmpty { try Data(result.data).write(to: URL(fileURLWithPath: output)) }
            if connection.json {
                printJSON(["status": Int(r.cmdStatus), "error": Int(r.errFeature), "count": Int(r.sectorCount), "lba": Int(r.lba),
                           "status_bits": decodeStatus(r.cmdStatus), "error_bits": decodeError(r.errFeature),
                           "data": result.data.map { String(format: "%02x", $0) }.joined()])
            } else {
                print("status: \(hex(r.cmdStatus)) (\(decodeStatus(r.cmdStatus)))")
                print("error: \(hex(r.errFeature)) (\(decodeError(r.errFeature)))")
                print("count: \(hex(r.sectorCount))")
                print("lba: \(hex(r.lba, width: 12))")
                if !result.data.isEmpty && output == nil { print(hexDump(result.data)) }
            }
            if ATAStatus(rawValue: r.cmdStatus).contains(.error) || ATAStatus(rawValue: r.cmdStatus).contains(.deviceFault) { throw ExitCode(2) }
        }
    }
}

struct Discard: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Discard sectors (DATA SET MANAGEMENT TRIM), like blkdiscard: the target gives their space back.",
        discussion: "The target must say TRIM in its IDENTIFY page (an image on a filesystem with holes, a disk with WRITE ZEROES, an RBD image). Discarded sectors read back as zeros where IDENTIFY says so.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "SHELF.SLOT") var target: ShelfSlot
    @Option(help: "First sector.") var lba: Number<UInt64>
    @Option(help: "Number of sectors.") var count: Number<UInt64>

    func run() throws {
        try reporting {
            guard count.value > 0 else { throw CLIError("--count must be at least 1") }
            let (client, info) = try connection.connect(target)
            let page = try client.identify(info)
            guard page.trimSupported else { throw CLIError("e\(info.address) does not support TRIM (IDENTIFY word 169)") }
            let (end, overflow) = lba.value.addingReportingOverflow(count.value)
            guard !overflow, end <= page.sectors else {
                throw CLIError("sectors \(lba.value)..<\(lba.value &+ count.value) reach past the end of e\(info.address) (\(page.sectors) sectors)")
            }
            try client.trim(info, ranges: [(lba.value, count.value)], blocksPerCommand: page.maxTrimBlocks, timeout: connection.timeout)
            if connection.json { printJSON(["discarded_sectors": Int(count.value), "lba": Int(lba.value), "reads_zeros": page.trimReadsZeros]) }
        }
    }
}

struct Read: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Read sectors to stdout or a file.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "SHELF.SLOT") var target: ShelfSlot
    @Option(help: "First sector.") var lba: Number<UInt64>
    @Option(help: "Number of sectors.") var count: Number<UInt32>
    @Option(help: "Write here instead of stdout.") var output: String?

    func run() throws {
        try reporting {
            let (client, info) = try connection.connect(target)
            let bytes = Int(count.value) * 512
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 4096)
            defer { buffer.deallocate() }
            try client.transfer(info, lba: lba.value, sectors: Int(count.value), isWrite: false, buffer: buffer)
            let data = Data(bytes: buffer, count: bytes)
            if let output { try data.write(to: URL(fileURLWithPath: output)) } else { FileHandle.standardOutput.write(data) }
        }
    }
}

struct Write: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write sectors from stdin or a file (a whole number of sectors).")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "SHELF.SLOT") var target: ShelfSlot
    @Option(help: "First sector.") var lba: Number<UInt64>
    @Option(help: "Read the data from here instead of stdin.") var input: String?

    func run() throws {
        try reporting {
            let data = try input.map { try Data(contentsOf: URL(fileURLWithPath: $0)) } ?? FileHandle.standardInput.readDataToEndOfFile()
            guard !data.isEmpty, data.count % 512 == 0 else { throw CLIError("input is \(data.count) bytes: give a whole number of 512-byte sectors") }
            let (client, info) = try connection.connect(target)
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: data.count, alignment: 4096)
            defer { buffer.deallocate() }
            data.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: data.count) }
            try client.transfer(info, lba: lba.value, sectors: data.count / 512, isWrite: true, buffer: buffer)
            if connection.json { printJSON(["written_sectors": data.count / 512, "lba": Int(lba.value)]) }
        }
    }
}
