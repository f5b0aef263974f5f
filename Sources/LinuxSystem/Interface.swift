import Glibc
import CLinuxShims

/// A network interface as the kernel describes it now: index, hardware address, MTU, up/down.
public struct NetworkInterface: Hashable, Sendable {
    public var name: String
    public var index: Int32
    public var macBytes: [UInt8]
    public var mtu: Int
    public var isUp: Bool
    public var isRunning: Bool

    /// Reads SIOCGIFINDEX / SIOCGIFHWADDR / SIOCGIFMTU / SIOCGIFFLAGS. ENODEV becomes "no such interface".
    public static func lookup(_ name: String) throws(SystemError) -> NetworkInterface {
        var index: Int32 = 0, mtu: Int32 = 0, flags: Int32 = 0
        var mac = [UInt8](repeating: 0, count: 6)
        try check("SIOCGIFINDEX", name, CLinuxShims_interfaceIndex(name, &index))
        try check("SIOCGIFHWADDR", name, CLinuxShims_interfaceHardwareAddress(name, &mac))
        try check("SIOCGIFMTU", name, CLinuxShims_interfaceMTU(name, &mtu))
        try check("SIOCGIFFLAGS", name, CLinuxShims_interfaceFlags(name, &flags))
        return NetworkInterface(name: name, index: index, macBytes: mac, mtu: Int(mtu),
                                isUp: flags & Int32(IFF_UP) != 0, isRunning: flags & Int32(IFF_RUNNING) != 0)
    }

    /// The current MTU (re-read when it may have changed).
    public static func currentMTU(_ name: String) throws(SystemError) -> Int {
        var mtu: Int32 = 0
        try check("SIOCGIFMTU", name, CLinuxShims_interfaceMTU(name, &mtu))
        return Int(mtu)
    }

    private static func check(_ call: String, _ name: String, _ rc: Int32) throws(SystemError) {
        if rc < 0 { throw SystemError(call: "ioctl(\(call))", errno: errno, context: name) }
    }
}

/// Privileges the target needs, checked up front so the error says which one is missing.
public enum Privileges {
    static let capNetRaw: Int32 = 13

    public static var canOpenPacketSockets: Bool { CLinuxShims_hasCapability(capNetRaw) != 0 }
}
