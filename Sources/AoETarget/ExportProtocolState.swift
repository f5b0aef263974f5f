import AoEWire

/// Everything about an export that initiators can change: the config string (Query Config set / force set),
/// the MAC Mask List, the reserve list, and the write cache setting (SET FEATURES 02h/82h). One value, so it
/// is saved and loaded whole; each AoE command is a transition on it. Pure: no I/O.
public struct ExportProtocolState: Hashable, Sendable {
    public var access: ExportAccess
    public var configString: ConfigStringState
    public var writeCacheEnabled: Bool

    public init(access: ExportAccess = ExportAccess(), configString: ConfigStringState = ConfigStringState(),
                writeCacheEnabled: Bool = true) {
        self.access = access
        self.configString = configString
        self.writeCacheEnabled = writeCacheEnabled
    }

    /// The state an export starts with when nothing was saved: the configured mask and config string, and the
    /// write cache on unless every write must be durable.
    public init(configuration: TargetConfiguration) {
        self.init(access: ExportAccess(mask: configuration.mask),
                  configString: ConfigStringState(configuration.configString),
                  writeCacheEnabled: !configuration.durableWrites)
    }

    /// SET FEATURES 02h (enable) / 82h (disable). A durable (--sync) export stays durable: the remote may make
    /// it stricter, never weaker. Returns false when refused.
    public mutating func setWriteCache(_ enabled: Bool, durableExport: Bool) -> Bool {
        if enabled && durableExport { return false }
        writeCacheEnabled = enabled
        return true
    }

    // MARK: - Saved form

    /// A small text file, one `key=value` per line, so an admin can read it; the last line is a checksum of
    /// everything before it, so a file that is not exactly what was written is refused rather than half-read.
    ///
    ///     aoe-target-state 1
    ///     config_string=<hex>
    ///     mask=<mac>,<mac>
    ///     reserve=<mac>
    ///     write_cache=1
    ///     checksum=<FNV-1a 64 of the lines above, hex>
    public var encoded: String {
        let hex = configString.value.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        let body = """
            \(Self.magic)
            config_string=\(hex)
            mask=\(access.mask.map(\.description).joined(separator: ","))
            reserve=\(access.reservation.map(\.description).joined(separator: ","))
            write_cache=\(writeCacheEnabled ? 1 : 0)

            """
        return body + "checksum=\(String(fnv1a64(body), radix: 16))\n"
    }

    public enum DecodeError: Error, Hashable, CustomStringConvertible {
        case notAStateFile
        case checksumMismatch
        case badLine(Int, String)
        case missingKey(String)

        public var description: String {
            switch self {
            case .notAStateFile: "not an aoe-target state file (first line is not '\(ExportProtocolState.magic)')"
            case .checksumMismatch: "checksum does not match the contents (the file was changed or damaged)"
            case .badLine(let n, let text): "line \(n): cannot read '\(text)'"
            case .missingKey(let key): "no '\(key)' line"
            }
        }
    }

    public init(decoding text: String) throws(DecodeError) {
        // Lines as written: the magic, the keys, the checksum, and the empty piece after the last newline.
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.first == Substring(Self.magic) else { throw .notAStateFile }
        guard lines.count >= 3, lines[lines.count - 1].isEmpty, lines[lines.count - 2].hasPrefix("checksum="),
              let sum = UInt64(lines[lines.count - 2].dropFirst("checksum=".count), radix: 16),
              sum == fnv1a64(lines[..<(lines.count - 2)].map { $0 + "\n" }.joined()) else { throw .checksumMismatch }
        var values: [String: String] = [:]
        for (index, line) in lines[1..<(lines.count - 2)].enumerated() {
            guard let eq = line.firstIndex(of: "=") else { throw .badLine(index + 2, String(line)) }
            values[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        func field(_ key: String) throws(DecodeError) -> String {
            guard let value = values[key] else { throw .missingKey(key) }
            return value
        }
        func macs(_ key: String, capacity: Int) throws(DecodeError) -> [MACAddress] {
            let text = try field(key)
            if text.isEmpty { return [] }
            var result: [MACAddress] = []
            for item in text.split(separator: ",") {
                guard let mac = MACAddress(String(item)), result.count < capacity else { throw .badLine(0, "\(key)=\(text)") }
                result.append(mac)
            }
            return result
        }
        let hex = Array(try field("config_string").utf8)
        guard hex.count % 2 == 0, hex.count / 2 <= AoELayout.maxConfigStringLength else { throw .badLine(0, "config_string") }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(hex.count / 2)
        for i in stride(from: 0, to: hex.count, by: 2) {
            guard let byte = UInt8(String(decoding: hex[i..<i + 2], as: UTF8.self), radix: 16) else { throw .badLine(0, "config_string") }
            bytes.append(byte)
        }
        let writeCache = try field("write_cache")
        guard writeCache == "0" || writeCache == "1" else { throw .badLine(0, "write_cache=\(writeCache)") }
        self.init(access: ExportAccess(mask: try macs("mask", capacity: ExportAccess.maskCapacity),
                                       reservation: try macs("reserve", capacity: ExportAccess.reserveCapacity)),
                  configString: ConfigStringState(bytes), writeCacheEnabled: writeCache == "1")
    }

    static let magic = "aoe-target-state 1"
}

/// FNV-1a, 64 bits: a stable hash for serial numbers and state-file checksums (not for security).
func fnv1a64(_ text: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
    return hash
}
