// swift-tools-version:6.0
import PackageDescription

// Dependencies point one way: AoEWire / ATACore (pure) <- BlockDevices / PacketTransport (I/O)
// <- AoETarget / AoEInitiator <- executables.
let package = Package(
    name: "aoe-target",
    products: [
        .executable(name: "aoe-target", targets: ["aoe-target"]),
        .executable(name: "aoectl", targets: ["aoectl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .target(name: "CLinuxShims"),
        .target(name: "CIOUring", linkerSettings: [.linkedLibrary("uring")]),
        .target(name: "CRBD"),
        .systemLibrary(name: "CPcap", pkgConfig: "libpcap", providers: [.apt(["libpcap-dev"])]),
        .target(name: "AoEWire"),
        .target(name: "ATACore", dependencies: ["AoEWire"]),
        // SCSI disk emulation for a TCMU-backed local disk: CDB in, action out; ATA result in, SCSI status/sense out.
        .target(name: "SCSIEmulation", dependencies: ["ATACore", "AoEWire"]),
        .target(name: "LinuxSystem", dependencies: ["CLinuxShims", "CIOUring"]),
        .target(name: "BlockDevices", dependencies: ["ATACore", "LinuxSystem", "CLinuxShims"]),
        // Ceph RBD images: one more device with its own queue. librbd and librados are loaded when an rbd: export
        // opens (dlopen), so aoe-target runs without them; building needs their headers (librbd-dev, librados-dev).
        .target(name: "RBDDevice", dependencies: ["BlockDevices", "LinuxSystem", "CRBD"]),
        // The kernel's TCMU ring and the configfs objects of a tcm_loop disk: the I/O edge of `aoectl attach`.
        .target(name: "TCMU", dependencies: ["LinuxSystem", "CLinuxShims"]),
        // aoectl attach: SCSI commands from the TCMU ring answered over AoE.
        .target(name: "DiskAttach", dependencies: ["TCMU", "SCSIEmulation", "AoEInitiator", "ATACore", "AoEWire", "LinuxSystem"]),
        .target(name: "PacketTransport", dependencies: ["AoEWire", "LinuxSystem", "CLinuxShims", "CPcap"]),
        .target(name: "AoETarget", dependencies: [
            "AoEWire", "ATACore", "BlockDevices", "PacketTransport", "LinuxSystem",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "AoEInitiator", dependencies: [
            "AoEWire", "ATACore", "PacketTransport", "LinuxSystem",
            .product(name: "Histogram", package: "hdrhistogram-swift"),
        ]),
        .target(name: "AoEServer", dependencies: [
            "AoETarget", "AoEWire", "ATACore", "BlockDevices", "RBDDevice", "PacketTransport", "LinuxSystem", "AoEInitiator",
            .product(name: "TOMLKit", package: "TOMLKit"),
        ]),
        // The Prometheus endpoint: exposition of every export's counters and histograms over HTTP/1 (SwiftNIO).
        .target(name: "AoEMetrics", dependencies: [
            "AoETarget", "AoEWire", "ATACore", "LinuxSystem",
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .executableTarget(name: "aoe-target", dependencies: [
            "AoEServer", "AoEMetrics", "AoETarget", "ATACore", "BlockDevices", "PacketTransport", "LinuxSystem",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "aoectl", dependencies: [
            "AoEInitiator", "DiskAttach", "SCSIEmulation", "TCMU", "ATACore", "AoEWire", "PacketTransport", "LinuxSystem",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Histogram", package: "hdrhistogram-swift"),
        ]),
        // libFuzzer targets and their replay command (Tests/fuzz/run.sh); not a product.
        .executableTarget(name: "aoe-fuzz", dependencies: [
            "AoETarget", "AoEInitiator", "AoEWire", "ATACore", "BlockDevices", "PacketTransport", "CPcap",
        ]),
        .target(name: "AoETestSupport", path: "Tests/AoETestSupport"),
        .testTarget(name: "AoEWireTests", dependencies: ["AoEWire"]),
        .testTarget(name: "ATACoreTests", dependencies: ["ATACore", "AoEWire"]),
        .testTarget(name: "SCSIEmulationTests", dependencies: ["SCSIEmulation", "ATACore", "AoEWire"]),
        .testTarget(name: "BlockDevicesTests", dependencies: ["BlockDevices", "ATACore", "LinuxSystem"]),
        .testTarget(name: "TCMUTests", dependencies: ["TCMU", "CLinuxShims", "DiskAttach", "SCSIEmulation", "AoEInitiator",
                                                   "AoETarget", "AoEWire", "ATACore", "BlockDevices", "PacketTransport"]),
        .testTarget(name: "RBDDeviceTests", dependencies: ["RBDDevice", "BlockDevices"]),
        .testTarget(name: "AoETargetTests", dependencies: ["AoETestSupport", "AoETarget", "AoEWire", "ATACore", "BlockDevices", "PacketTransport"]),
        .testTarget(name: "PacketTransportTests", dependencies: ["PacketTransport", "AoEWire", "CLinuxShims"]),
        .testTarget(name: "AoEMetricsTests", dependencies: ["AoEMetrics", "AoETarget", "AoEWire"]),
        .testTarget(name: "AoEServerTests", dependencies: ["AoEServer", "AoETarget", "AoEWire", "BlockDevices"]),
        .testTarget(name: "AoEInitiatorTests", dependencies: ["AoETestSupport", "AoEInitiator", "AoETarget", "AoEWire", "ATACore", "BlockDevices", "PacketTransport"]),
    ],
    swiftLanguageModes: [.v6]
)
