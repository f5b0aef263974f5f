import Glibc
import LinuxSystem

/// Which requests fail on purpose, for testing how initiators handle a failing disk (nbdkit's error filter):
/// a share of the reads, writes or flushes, chosen by a seeded generator so a run can be repeated.
public struct FaultPlan: Hashable, Sendable, CustomStringConvertible {
    public enum Operation: String, Hashable, Sendable, CaseIterable { case read, write, flush, discard }
    public var operations: Set<Operation>
    /// 0...100.
    public var percent: Double
    public var seed: UInt64

    public init(operations: Set<Operation>, percent: Double, seed: UInt64 = 1) {
        self.operations = operations
        self.percent = percent
        self.seed = seed
    }

    /// `OPS:PERCENT[:SEED]`, OPS a comma list of read, write, flush or `all`: "write:5", "read,flush:0.5:42".
    public init?(parsing text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 || parts.count == 3, let percent = Double(parts[1]), (0...100).contains(percent) else { return nil }
        var operations = Set<Operation>()
        for name in parts[0].split(separator: ",") {
            if name == "all" { operations.formUnion(Operation.allCases); continue }
            guard let operation = Operation(rawValue: String(name)) else { return nil }
            operations.insert(operation)
        }
        guard !operations.isEmpty else { return nil }
        var seed: UInt64 = 1
        if parts.count == 3 {
            guard let s = UInt64(parts[2]) else { return nil }
            seed = s
        }
        self.init(operations: operations, percent: percent, seed: seed)
    }

    public var description: String {
        let names = Operation.allCases.filter { operations.contains($0) }.map(\.rawValue).joined(separator: ",")
        return "\(names):\(percent):\(seed)"
    }

    public static let syntax = "OPS:PERCENT[:SEED] (OPS: read, write, flush, discard, comma-separated, or all)"
}

/// A wrapper over any device queue that fails requests by a `FaultPlan` with EIO instead of running them, and
/// passes the rest through. It sits under every engine alike (io_uring included), as any wrapper does.
public final class FaultInjectingDeviceQueue: DeviceQueue {
    public let inner: any DeviceQueue
    public let plan: FaultPlan
    private var state: UInt64
    private var failed: [DeviceCompletion] = []
    public private(set) var injected = 0

    public init(_ inner: any DeviceQueue, plan: FaultPlan) {
        self.inner = inner
        self.plan = plan
        state = plan.seed
        failed.reserveCapacity(inner.tokenCapacity)
    }

    public var engineDescription: String { "\(inner.engineDescription); failing \(plan.percent)% of \(plan.operations.map(\.rawValue).sorted().joined(separator: "/")) on purpose" }
    public var tokenCapacity: Int { inner.tokenCapacity }
    public var outstanding: Int { inner.outstanding + failed.count }
    public var maxTransferBytes: Int { inner.maxTransferBytes }
    public var engine: any DeviceQueue { inner.engine }

    /// SplitMix64: a uniform number in [0, 100).
    private func nextPercent() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / Double(1 << 53) * 100
    }

    public func submit(_ request: DeviceRequest) {
        let operation: FaultPlan.Operation? = switch request.operation {
        case .read: .read
        case .write: .write
        case .flush: .flush
        case .discard: .discard
        case .passThrough: nil
        }
        if let operation, plan.operations.contains(operation), nextPercent() < plan.percent {
            injected += 1
            failed.append(DeviceCompletion(token: request.token, failure: DeviceError(SystemError(
                call: operation.rawValue, errno: EIO, context: "sector \(request.lba) (injected by the fault plan \(plan))"))))
            return
        }
        inner.submit(request)
    }

    public func push() { inner.push() }

    public func reap(_ body: (DeviceCompletion) -> Void) -> Int {
        let n = failed.count
        for completion in failed { body(completion) }
        failed.removeAll(keepingCapacity: true)
        return n + inner.reap(body)
    }

    public func wait(readable descriptor: Int32?, timeout: Double) {
        if failed.isEmpty { inner.wait(readable: descriptor, timeout: timeout) } else { inner.push() }
    }

    public func shutDown() { inner.shutDown() }
}
