import AoEWire
import AoETarget
import BlockDevices
import TOMLKit

/// The config file: TOML (parsed by TOMLKit, a wrapper of toml++), read into a `ServerSpec`. Pure: the
/// caller reads the file; this turns its text into a spec or one error naming the file, line and key.
///
///     state_dir = "/var/lib/aoe-target"     # top level: state_dir, log_level, pcap, pcap_limit, metrics, packet_ring
///     [[export]]
///     shelf = 1
///     slot = 1
///     interfaces = ["eth1", "eth2"]
///     path = "/dev/sdb"
///     sync = true
public enum ConfigFile {
    public static let topLevelKeys = ["state_dir", "log_level", "pcap", "pcap_limit", "metrics", "packet_ring", "export"]
    public static let exportKeys = [
        "shelf", "slot", "interfaces", "path", "read_only", "direct", "sync", "trim", "buffers", "mac_mask", "config_string",
        "model", "serial", "offset", "length", "passthrough", "allow_ata", "allow_all_ata", "io_engine", "workers",
        "inject_errors", "ceph_id", "failover",
    ]

    public static func parse(_ text: String, file: String) throws(ConfigError) -> ServerSpec {
        let table: TOMLTable
        do { table = try TOMLTable(string: text) } catch let error as TOMLParseError {
            throw ConfigError(SourceLocation(file: file, line: error.source.begin.line), error.description)
        } catch {
            throw ConfigError(SourceLocation(file: file, line: 0), "\(error)")
        }
        let lines = LineIndex(text: text, file: file)
        for key in table.keys where !topLevelKeys.contains(key) {
            throw ConfigError(lines.topLevel(key), key: key, "unknown key (known at the top level: \(topLevelKeys.joined(separator: ", ")))")
        }
        var spec = ServerSpec(exports: [], stateDirectory: ServerSpec.defaultStateDirectory)
        let top = Keys(table: table, location: { lines.topLevel($0) })
        if let dir = try top.string("state_dir") {
            guard dir.hasPrefix("/") else { throw top.error("state_dir", "must be an absolute path, not '\(dir)'") }
            spec.stateDirectory = dir
        }
        if let level = try top.string("log_level") {
            guard let parsed = TargetLog.Level(name: level) else { throw top.error("log_level", "must be debug, info, warning or error, not '\(level)'") }
            spec.logLevel = parsed
        }
        spec.pcap = try top.string("pcap")
        if let limit = try top.string("pcap_limit") {
            guard let bytes = DeviceOpener.parseSize(limit), bytes >= 16 << 10, bytes <= Int.max else {
                throw top.error("pcap_limit", "must be a size of at least 16K, e.g. \"100M\", not '\(limit)'")
            }
            spec.pcapLimit = Int(bytes)
        }
        if let text = try top.string("metrics") {
            guard let address = ListenAddress(parsing: text) else { throw top.error("metrics", "must be \(ListenAddress.syntax), not '\(text)'") }
            spec.metrics = address
        }
        spec.packetRing = try top.bool("packet_ring") ?? true
        guard let list = table["export"] else {
            throw ConfigError(SourceLocation(file: file, line: 0), "no [[export]] table: nothing to serve")
        }
        guard let exports = list.array, exports.allSatisfy({ $0.table != nil }) else {
            throw top.error("export", "must be [[export]] tables")
        }
        for (index, value) in exports.enumerated() {
            let export = try parseExport(value.table!, index: index, lines: lines)
            // One shelf.slot may be served once per NIC: two exports answering the same address on one segment
            // would corrupt each other's initiators.
            for earlier in spec.exports where earlier.address == export.address {
                if let shared = earlier.interfaces.first(where: export.interfaces.contains) {
                    throw ConfigError(export.location(of: "interfaces"), key: "interfaces",
                                      "e\(export.address) on \(shared) is already served by the export at \(earlier.origin)")
                }
            }
            spec.exports.append(export)
        }
        return spec
    }

    static func parseExport(_ table: TOMLTable, index: Int, lines: LineIndex) throws(ConfigError) -> ExportSpec {
        let origin = lines.exportTable(index)
        let keys = Keys(table: table, location: { lines.exportKey(index, $0) })
        for key in table.keys where !exportKeys.contains(key) {
            throw keys.error(key, "unknown key in [[export]] (known: \(exportKeys.joined(separator: ", ")))")
        }
        func required<T>(_ key: String, _ value: T?) throws(ConfigError) -> T {
            guard let value else { throw ConfigError(origin, key: key, "missing: every [[export]] needs shelf, slot, interfaces and path") }
            return value
        }
        let shelf = try required("shelf", try keys.int("shelf", in: 0...65534, why: "65535 is the broadcast shelf"))
        let slot = try required("slot", try keys.int("slot", in: 0...254, why: "255 is the broadcast slot"))
        let interfaces = try required("interfaces", try keys.strings("interfaces"))
        guard !interfaces.isEmpty else { throw keys.error("interfaces", "must name at least one interface") }
        guard Set(interfaces).count == interfaces.count else { throw keys.error("interfaces", "names an interface twice") }
        var export = ExportSpec(address: ShelfSlot(shelf: UInt16(shelf), slot: UInt8(slot)), interfaces: interfaces,
                                path: try required("path", try keys.string("path")))
        export.origin = origin
        export.keyOrigins = Dictionary(uniqueKeysWithValues: table.keys.map { ($0, lines.exportKey(index, $0)) })
        export.readOnly = try keys.bool("read_only") ?? false
        export.direct = try keys.bool("direct") ?? false
        export.sync = try keys.bool("sync") ?? false
        export.trim = try keys.bool("trim") ?? true
        export.buffers = try keys.int("buffers", in: TargetConfiguration.bufferCountRange) ?? export.buffers
        if let macs = try keys.strings("mac_mask") {
            export.mask = try macs.map { (text) throws(ConfigError) -> MACAddress in
                guard let mac = MACAddress(text) else { throw keys.error("mac_mask", "'\(text)' is not a MAC address (aa:bb:cc:dd:ee:ff)") }
                return mac
            }
        }
        export.configString = try keys.string("config_string") ?? ""
        export.model = try keys.string("model") ?? export.model
        export.serial = try keys.string("serial")
        export.offsetSectors = UInt64(try keys.int("offset", in: 0...Int.max) ?? 0)
        export.lengthSectors = try keys.int("length", in: 1...Int.max).map(UInt64.init)
        export.passthrough = try keys.bool("passthrough") ?? false
        if let opcodes = try keys.ints("allow_ata", in: 0...255) { export.allowATA = Set(opcodes.map(UInt8.init)) }
        export.allowAllATA = try keys.bool("allow_all_ata") ?? false
        if let engine = try keys.string("io_engine") {
            guard let parsed = IOEngine(rawValue: engine) else {
                throw keys.error("io_engine", "must be one of \(IOEngine.allCases.map(\.rawValue).joined(separator: ", ")), not '\(engine)'")
            }
            export.ioEngine = parsed
        }
        export.workers = try keys.int("workers", in: 1...256) ?? export.workers
        export.cephID = try keys.string("ceph_id")
        export.failover = try keys.bool("failover") ?? false
        if let text = try keys.string("inject_errors") {
            guard let plan = FaultPlan(parsing: text) else { throw keys.error("inject_errors", "must be \(FaultPlan.syntax), not '\(text)'") }
            export.faultPlan = plan
        }
        if let problem = export.problem { throw ConfigError(export.location(of: problem.key), key: problem.key, problem.message) }
        return export
    }

    /// Typed reads of one table's keys; a wrong type or range is an error at the key's line.
    struct Keys {
        let table: TOMLTable
        let location: (String) -> SourceLocation

        func error(_ key: String, _ message: String) -> ConfigError { ConfigError(location(key), key: key, message) }

        func wrongType(_ key: String, _ want: String) -> ConfigError {
            error(key, "must be \(want), not \(table[key].map { describe($0.type) } ?? "nothing")")
        }

        func string(_ key: String) throws(ConfigError) -> String? {
            guard let value = table[key] else { return nil }
            guard let s = value.string else { throw wrongType(key, "a string") }
            return s
        }

        func bool(_ key: String) throws(ConfigError) -> Bool? {
            guard let value = table[key] else { return nil }
            guard let b = value.bool else { throw wrongType(key, "true or false") }
            return b
        }

        func int(_ key: String, in range: ClosedRange<Int>, why: String? = nil) throws(ConfigError) -> Int? {
            guard let value = table[key] else { return nil }
            guard let n = value.int else { throw wrongType(key, "an integer") }
            guard range.contains(n) else {
                throw error(key, "\(n) is out of range: use \(range.lowerBound)-\(range.upperBound)" + (why.map { " (\($0))" } ?? ""))
            }
            return n
        }

        func strings(_ key: String) throws(ConfigError) -> [String]? {
            guard let value = table[key] else { return nil }
            guard let array = value.array else { throw wrongType(key, "a list of strings") }
            var result: [String] = []
            for item in array {
                guard let s = item.string else { throw wrongType(key, "a list of strings") }
                result.append(s)
            }
            return result
        }

        func ints(_ key: String, in range: ClosedRange<Int>) throws(ConfigError) -> [Int]? {
            guard let value = table[key] else { return nil }
            guard let array = value.array else { throw wrongType(key, "a list of integers") }
            var result: [Int] = []
            for item in array {
                guard let n = item.int else { throw wrongType(key, "a list of integers (e.g. [0x92, 0xF4])") }
                guard range.contains(n) else { throw error(key, "\(n) is out of range: use \(range.lowerBound)-\(range.upperBound)") }
                result.append(n)
            }
            return result
        }

        func describe(_ type: TOMLType) -> String {
            switch type {
            case .string: "a string"
            case .int: "an integer"
            case .double: "a number with a fraction"
            case .bool: "a boolean"
            case .array: "a list"
            case .table: "a table"
            default: "a date or time"
            }
        }
    }

    /// Lines of the source text, to say where a key was written (TOMLKit reports positions only for syntax
    /// errors). Finds the n-th `[[export]]` header and a key's `key =` line in the table that follows it.
    struct LineIndex {
        let lines: [Substring]
        let file: String
        /// Line numbers (1-based) of each `[[export]]` header.
        let exportHeaders: [Int]

        init(text: String, file: String) {
            self.file = file
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            self.lines = lines
            exportHeaders = lines.indices.filter { Self.stripped(lines[$0]).hasPrefix("[[export]]") }.map { $0 + 1 }
        }

        static func stripped(_ line: Substring) -> Substring { line.drop { $0 == " " || $0 == "\t" } }

        func keyLine(_ key: String, from start: Int, to end: Int) -> Int? {
            guard start < end else { return nil }
            for i in start..<end {
                let line = Self.stripped(lines[i])
                guard line.hasPrefix(key) else { continue }
                let rest = line.dropFirst(key.count).drop { $0 == " " || $0 == "\t" }
                if rest.hasPrefix("=") { return i + 1 }
            }
            return nil
        }

        func topLevel(_ key: String) -> SourceLocation {
            let end = lines.indices.first { Self.stripped(lines[$0]).hasPrefix("[") } ?? lines.count
            return SourceLocation(file: file, line: keyLine(key, from: 0, to: end) ?? 0)
        }

        func exportTable(_ index: Int) -> SourceLocation {
            SourceLocation(file: file, line: index < exportHeaders.count ? exportHeaders[index] : 0)
        }

        func exportKey(_ index: Int, _ key: String) -> SourceLocation {
            guard index < exportHeaders.count else { return exportTable(index) }
            let start = exportHeaders[index]
            let next = lines.indices.dropFirst(start).first { Self.stripped(lines[$0]).hasPrefix("[") } ?? lines.count
            return SourceLocation(file: file, line: keyLine(key, from: start, to: next) ?? exportHeaders[index])
        }
    }
}

extension TargetLog.Level {
    public init?(name: String) {
        switch name {
        case "debug": self = .debug
        case "info": self = .info
        case "warning": self = .warning
        case "error": self = .error
        default: return nil
        }
    }
}
