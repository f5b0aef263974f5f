import XCTest
@testable import AoEServer
import AoETarget
import BlockDevices
import AoEWire

final class ConfigFileTests: XCTestCase {
    func parse(_ text: String) throws -> ServerSpec { try ConfigFile.parse(text, file: "aoe.toml") }

    /// The error `text` gives, as the admin sees it.
    func error(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            _ = try parse(text)
            XCTFail("no error", file: file, line: line)
            return ""
        } catch { return "\(error)" }
    }

    func testEveryKeyIsRead() throws {
        let spec = try parse("""
            state_dir = "/srv/aoe-state"
            log_level = "debug"
            pcap = "/tmp/all.pcap"
            pcap_limit = "100M"
            metrics = "127.0.0.1:9110"
            packet_ring = false

            [[export]]
            shelf = 7
            slot = 3
            interfaces = ["eth1", "eth2"]
            path = "/srv/disk.img"
            read_only = true
            direct = true
            sync = true
            trim = false
            buffers = 128
            mac_mask = ["02:00:00:00:00:01", "52:54:00:12:34:56"]
            config_string = "rack 4"
            model = "Model X"
            serial = "SER123"
            offset = 2048
            length = 4096
            io_engine = "threads"
            workers = 4
            inject_errors = "write,flush:2.5:7"

            [[export]]
            shelf = 7
            slot = 4
            interfaces = ["eth1"]
            path = "/dev/sdb"
            passthrough = true
            allow_ata = [0x2F, 146]
            allow_all_ata = true
            """)
        XCTAssertEqual(spec.stateDirectory, "/srv/aoe-state")
        XCTAssertEqual(spec.logLevel, .debug)
        XCTAssertEqual(spec.pcap, "/tmp/all.pcap")
        XCTAssertEqual(spec.pcapLimit, 100 << 20)
        XCTAssertEqual(spec.metrics, ListenAddress(host: "127.0.0.1", port: 9110))
        XCTAssertFalse(spec.packetRing)
        XCTAssertTrue(try parse(base).packetRing, "the ring is the default")
        XCTAssertEqual(spec.exports.count, 2)
        let a = spec.exports[0]
        XCTAssertEqual(a.address, ShelfSlot(shelf: 7, slot: 3))
        XCTAssertEqual(a.interfaces, ["eth1", "eth2"])
        XCTAssertEqual(a.path, "/srv/disk.img")
        XCTAssertEqual([a.readOnly, a.direct, a.sync, a.trim], [true, true, true, false])
        XCTAssertTrue(spec.exports[1].trim, "TRIM is offered by default")
        XCTAssertFalse(a.targetConfiguration.trim)
        XCTAssertEqual(a.buffers, 128)
        XCTAssertEqual(a.mask, [MACAddress("02:00:00:00:00:01")!, MACAddress("52:54:00:12:34:56")!])
        XCTAssertEqual(a.configString, "rack 4")
        XCTAssertEqual(a.model, "Model X")
        XCTAssertEqual(a.serial, "SER123")
        XCTAssertEqual(a.offsetSectors, 2048)
        XCTAssertEqual(a.lengthSectors, 4096)
        XCTAssertEqual(a.ioEngine, .threads)
        XCTAssertEqual(a.workers, 4)
        XCTAssertEqual(a.faultPlan, FaultPlan(operations: [.write, .flush], percent: 2.5, seed: 7))
        XCTAssertEqual(a.origin.description, "aoe.toml:8")
        XCTAssertEqual(a.location(of: "workers").description, "aoe.toml:25")
        let b = spec.exports[1]
        XCTAssertTrue(b.passthrough)
        XCTAssertEqual(b.allowATA, [0x2F, 0x92])
        XCTAssertTrue(b.allowAllATA)
        // The target configuration follows the spec.
        let c = a.targetConfiguration
        XCTAssertEqual(c.bufferCount, 128)
        XCTAssertTrue(c.durableWrites)
        XCTAssertEqual(c.configString, Array("rack 4".utf8))
        XCTAssertEqual(c.faultPlan, a.faultPlan)
    }

    func testDefaults() throws {
        let spec = try parse("[[export]]\nshelf = 0\nslot = 0\ninterfaces = [\"v0\"]\npath = \"null:1G\"\n")
        XCTAssertEqual(spec.stateDirectory, "/var/lib/aoe-target")
        XCTAssertEqual(spec.logLevel, .info)
        XCTAssertNil(spec.pcap)
        XCTAssertNil(spec.metrics, "metrics are off by default")
        let e = spec.exports[0]
        XCTAssertEqual(e.buffers, 64)
        XCTAssertEqual(e.ioEngine, .automatic)
        XCTAssertEqual([e.readOnly, e.direct, e.sync, e.passthrough], [false, false, false, false])
        XCTAssertEqual(e.mask, [])
        XCTAssertNil(e.faultPlan)
    }

    let base = "[[export]]\nshelf = 1\nslot = 1\ninterfaces = [\"eth1\"]\npath = \"/srv/a.img\"\n"

    func testUnknownKeyNamesFileLineAndKey() {
        XCTAssertEqual(error(base + "syncc = true\n"),
                       "aoe.toml:6: 'syncc': unknown key in [[export]] (known: \(ConfigFile.exportKeys.joined(separator: ", ")))")
        XCTAssertEqual(error("statedir = \"/x\"\n" + base),
                       "aoe.toml:1: 'statedir': unknown key (known at the top level: state_dir, log_level, pcap, pcap_limit, metrics, packet_ring, export)")
    }

    func testWrongTypesNameTheKeyAndBothTypes() {
        XCTAssertEqual(error(base + "buffers = \"64\"\n"), "aoe.toml:6: 'buffers': must be an integer, not a string")
        XCTAssertEqual(error(base + "sync = 1\n"), "aoe.toml:6: 'sync': must be true or false, not an integer")
        XCTAssertEqual(error(base.replacingOccurrences(of: "[\"eth1\"]", with: "\"eth1\"")), "aoe.toml:4: 'interfaces': must be a list of strings, not a string")
        XCTAssertEqual(error(base + "mac_mask = [1]\n"), "aoe.toml:6: 'mac_mask': must be a list of strings, not a list")
        XCTAssertEqual(error(base + "allow_ata = [\"0x92\"]\n"), "aoe.toml:6: 'allow_ata': must be a list of integers (e.g. [0x92, 0xF4]), not a list")
        XCTAssertEqual(error("log_level = 3\n" + base), "aoe.toml:1: 'log_level': must be a string, not an integer")
    }

    func testRangesAndValues() {
        XCTAssertEqual(error(base.replacingOccurrences(of: "shelf = 1", with: "shelf = 65535")),
                       "aoe.toml:2: 'shelf': 65535 is out of range: use 0-65534 (65535 is the broadcast shelf)")
        XCTAssertEqual(error(base.replacingOccurrences(of: "slot = 1", with: "slot = 255")),
                       "aoe.toml:3: 'slot': 255 is out of range: use 0-254 (255 is the broadcast slot)")
        XCTAssertEqual(error(base + "buffers = 1\n"), "aoe.toml:6: 'buffers': 1 is out of range: use 2-65535")
        XCTAssertEqual(error(base + "workers = 0\n"), "aoe.toml:6: 'workers': 0 is out of range: use 1-256")
        XCTAssertEqual(error(base + "length = 0\n"), "aoe.toml:6: 'length': 0 is out of range: use 1-\(Int.max)")
        XCTAssertEqual(error(base + "io_engine = \"aio\"\n"), "aoe.toml:6: 'io_engine': must be one of auto, io_uring, threads, not 'aio'")
        XCTAssertEqual(error(base + "inject_errors = \"write:101\"\n"),
                       "aoe.toml:6: 'inject_errors': must be \(FaultPlan.syntax), not 'write:101'")
        XCTAssertEqual(error(base + "inject_errors = \"trim:5\"\n"),
                       "aoe.toml:6: 'inject_errors': must be \(FaultPlan.syntax), not 'trim:5'")
        XCTAssertEqual(error(base + "mac_mask = [\"02:00:00\"]\n"), "aoe.toml:6: 'mac_mask': '02:00:00' is not a MAC address (aa:bb:cc:dd:ee:ff)")
        XCTAssertEqual(error(base + "serial = \"123456789012345678901\"\n"), "aoe.toml:6: 'serial': is longer than 20 characters")
        XCTAssertEqual(error(base + "config_string = \"\(String(repeating: "x", count: 1025))\"\n"), "aoe.toml:6: 'config_string': is 1025 bytes; at most 1024")
        XCTAssertEqual(error("log_level = \"loud\"\n" + base), "aoe.toml:1: 'log_level': must be debug, info, warning or error, not 'loud'")
        XCTAssertEqual(error("state_dir = \"state\"\n" + base), "aoe.toml:1: 'state_dir': must be an absolute path, not 'state'")
        XCTAssertEqual(error("metrics = \"127.0.0.1\"\n" + base), "aoe.toml:1: 'metrics': must be HOST:PORT, e.g. 127.0.0.1:9110, not '127.0.0.1'")
        XCTAssertEqual(error("metrics = \"localhost:70000\"\n" + base), "aoe.toml:1: 'metrics': must be HOST:PORT, e.g. 127.0.0.1:9110, not 'localhost:70000'")
        XCTAssertEqual(error("packet_ring = \"yes\"\n" + base), "aoe.toml:1: 'packet_ring': must be true or false, not a string")
        XCTAssertEqual(error("pcap_limit = \"1K\"\n" + base), "aoe.toml:1: 'pcap_limit': must be a size of at least 16K, e.g. \"100M\", not '1K'")
        XCTAssertEqual(error(base.replacingOccurrences(of: "[\"eth1\"]", with: "[]")), "aoe.toml:4: 'interfaces': must name at least one interface")
    }

    func testPassThroughCombinations() {
        XCTAssertEqual(error(base + "passthrough = true\nsync = true\n"),
                       "aoe.toml:6: 'passthrough': serves a whole drive as it is: direct, sync, offset, length and a null: device do not apply")
        XCTAssertEqual(error(base + "allow_ata = [0x92]\n"), "aoe.toml:6: 'allow_ata': needs pass-through")
    }

    func testRBDPathsAndTheirRules() throws {
        let rbd = base.replacingOccurrences(of: "/srv/a.img", with: "rbd:vms/tenant/boot")
        let spec = try parse(rbd + "ceph_id = \"aoe\"\nsync = true\n")
        XCTAssertEqual(spec.exports[0].path, "rbd:vms/tenant/boot")
        XCTAssertEqual(spec.exports[0].cephID, "aoe")
        XCTAssertEqual(error(rbd + "direct = true\n"),
                       "aoe.toml:6: 'direct': does not apply to an RBD image (served whole, through librbd's own asynchronous I/O)")
        XCTAssertEqual(error(rbd + "io_engine = \"io_uring\"\n"),
                       "aoe.toml:6: 'io_engine': does not apply to an RBD image (served whole, through librbd's own asynchronous I/O)")
        XCTAssertEqual(error(rbd + "offset = 8\n"),
                       "aoe.toml:6: 'offset': does not apply to an RBD image (served whole, through librbd's own asynchronous I/O)")
        XCTAssertEqual(error(rbd.replacingOccurrences(of: "rbd:vms/tenant/boot", with: "rbd:boot")),
                       "aoe.toml:5: 'path': rbd:boot: name the image as rbd:POOL/IMAGE or rbd:POOL/NAMESPACE/IMAGE")
        XCTAssertEqual(error(base + "ceph_id = \"aoe\"\n"), "aoe.toml:6: 'ceph_id': applies only to an rbd: path")
        // A changed Ceph user reopens the image: it is how the device is opened.
        var other = spec.exports[0]
        other.cephID = "admin"
        XCTAssertNotEqual(spec.exports[0].deviceSettings, other.deviceSettings)
    }

    func testMissingRequiredKeyNamesTheTable() {
        XCTAssertEqual(error("[[export]]\nshelf = 1\nslot = 1\ninterfaces = [\"eth1\"]\n"),
                       "aoe.toml:1: 'path': missing: every [[export]] needs shelf, slot, interfaces and path")
        XCTAssertEqual(error("state_dir = \"/x\"\n"), "aoe.toml: no [[export]] table: nothing to serve")
    }

    func testSameShelfSlotTwiceOnOneInterfaceIsRefusedOnSeparateInterfacesAllowed() throws {
        let second = "\n[[export]]\nshelf = 1\nslot = 1\ninterfaces = [\"eth2\", \"eth1\"]\npath = \"/srv/b.img\"\n"
        XCTAssertEqual(error(base + second), "aoe.toml:10: 'interfaces': e1.1 on eth1 is already served by the export at aoe.toml:1")
        let elsewhere = second.replacingOccurrences(of: "\"eth2\", \"eth1\"", with: "\"eth2\"")
        XCTAssertEqual(try parse(base + elsewhere).exports.count, 2)
        XCTAssertEqual(error(base.replacingOccurrences(of: "[\"eth1\"]", with: "[\"eth1\", \"eth1\"]")), "aoe.toml:4: 'interfaces': names an interface twice")
    }

    func testSyntaxErrorGivesTheParsersLine() {
        let message = error(base + "sync = \n")
        XCTAssertTrue(message.hasPrefix("aoe.toml:6: "), message)
    }

    func testReloadComparisonIgnoresWhereThingsWereWritten() throws {
        let a = try parse(base).exports[0]
        let b = try parse("# a comment moves everything down\n" + base).exports[0]
        XCTAssertNotEqual(a, b)
        XCTAssertTrue(a.sameSettings(as: b))
        var c = b
        c.buffers = 32
        XCTAssertFalse(a.sameSettings(as: c))
        XCTAssertEqual(a.deviceSettings, c.deviceSettings, "buffers do not need the device reopened")
        c.readOnly = true
        XCTAssertNotEqual(a.deviceSettings, c.deviceSettings)
    }
}
