import Glibc
import LinuxSystem
import RBDDevice

/// `--check-config`: what a spec would serve, checked as far as can be without serving: each path exists and
/// is a regular file, block device or null:SIZE, each interface exists. Opens no packet socket and takes no
/// lock, so it can check a file for a server that is already running.
public enum ConfigCheck {
    public static func describe(_ spec: ServerSpec) throws(ConfigError) -> [String] {
        var lines: [String] = []
        for export in spec.exports {
            let location = export.location(of: "path")
            var what: String
            if RBDImageName.isRBD(export.path) {
                // Connecting would take the cluster's time and, for a writable export, its lock: the name was checked.
                what = "Ceph RBD image, connected to when served\(export.cephID.map { " as client.\($0)" } ?? "")"
            } else if export.path.hasPrefix("null:") {
                guard let bytes = DeviceOpener.parseSize(String(export.path.dropFirst(5))), bytes >= 512 else {
                    throw ConfigError(location, key: "path", "\(export.path): give the null device a size, e.g. null:1G")
                }
                what = "null device, \(bytes / 512) sectors"
            } else {
                var st = stat()
                guard stat(export.path, &st) == 0 else {
                    let e = errno
                    throw ConfigError(location, key: "path", "\(export.path): \(e == ENOENT ? "no such file" : e == EACCES ? "permission denied" : String(cString: strerror(e)))")
                }
                switch st.st_mode & S_IFMT {
                case S_IFBLK: what = "block device"
                case S_IFCHR where export.passthrough: what = "SCSI generic device"
                case S_IFREG:
                    let sectors = UInt64(st.st_size) / 512
                    guard sectors > export.offsetSectors + (export.lengthSectors ?? 1) - 1 else {
                        throw ConfigError(location, key: "path", "\(export.path): image too small: \(sectors) sectors for offset \(export.offsetSectors) + length \(export.lengthSectors ?? 1)")
                    }
                    what = "image file, \(export.lengthSectors ?? sectors - export.offsetSectors) sectors"
                default:
                    throw ConfigError(location, key: "path", "\(export.path): not a regular file or block device")
                }
            }
            for interface in export.interfaces {
                do { _ = try NetworkInterface.lookup(interface) } catch {
                    throw ConfigError(export.location(of: "interfaces"), key: "interfaces",
                                      error.errno == ENODEV ? "\(interface): no such network interface" : "\(error)")
                }
            }
            var mode = [export.readOnly ? "read-only" : "read-write"]
            if export.sync { mode.append("durable writes") }
            if export.direct { mode.append("O_DIRECT") }
            if export.passthrough { mode.append("ATA pass-through") }
            if !export.trim { mode.append("no TRIM") }
            lines.append("e\(export.address) on \(export.interfaces.joined(separator: ", ")): \(export.path) (\(what); \(mode.joined(separator: ", ")); \(export.buffers) buffers; from \(export.origin))")
        }
        lines.append("state: \(spec.stateDirectory ?? "not saved")")
        return lines
    }
}
