import AoEWire
import BlockDevices

/// Everything that describes one export, settled before it starts serving.
public struct TargetConfiguration: Sendable {
    public var address: ShelfSlot
    /// Query Config Buffer Count: requests the target queues at once; more are dropped (AoEr11 3.2).
    /// Linux needs at least 2 and uses at most 64.
    public var bufferCount: Int = 64
    public var configString: [UInt8] = []
    public var mask: [MACAddress] = []
    public var model = "Swift AoE target"
    /// nil: derived from the device identity, so the same image keeps the same serial.
    public var serial: String? = nil
    public var firmware = "1.0"
    /// Query Config Firmware Version.
    public var firmwareVersion: UInt16 = 0x0100
    /// Every acknowledged write is on stable storage (group commit). The remote cannot turn this off.
    public var durableWrites = false
    /// DATA SET MANAGEMENT TRIM is offered when the device can discard; false: never (IDENTIFY says no TRIM).
    public var trim = true
    /// How device I/O runs: queued in the kernel (io_uring) or on worker threads.
    public var ioEngine: IOEngine = .automatic
    /// Threads running device I/O when it runs on threads; the bound on the kernel's own I/O threads with io_uring.
    public var workers = 16
    /// Fail a share of device requests on purpose (a wrapper over whichever queue runs them); nil: none.
    public var faultPlan: FaultPlan? = nil
    /// Per-request latency and bytes for the Prometheus endpoint (`ExportMetrics`): recorded only when an
    /// endpoint is served, so a target without `--metrics` pays nothing for them on the frame path.
    public var recordsMetrics = true
    /// Upper bound on sectors in one command, whatever the MTU allows.
    public var maxSectorsPerCommand = 255

    public init(address: ShelfSlot) { self.address = address }

    public static let bufferCountRange = 2...65535
}

public enum IOEngine: String, CaseIterable, Sendable {
    /// io_uring for image files and block devices when the kernel allows it, threads otherwise.
    case automatic = "auto"
    case ioUring = "io_uring"
    case threads
}
