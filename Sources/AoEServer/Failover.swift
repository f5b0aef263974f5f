import Glibc
import AoEInitiator
import AoETarget
import AoEWire
import LinuxSystem
import PacketTransport
import RBDDevice
import Synchronization

/// How a standby decides that the active host is gone. The Linux initiator moves a silent target's frames to
/// another target of the device after about 10 s (HARD_SCORN_SECS) and fails the device after aoe_deadsecs, so
/// the takeover must be done well before 10 s: three Query Config probes of one second each go unanswered,
/// then breaking and taking the lock takes about 0.1 s. Shorter would take over from a host that is merely
/// busy for a moment (safe, since the old owner is fenced, but a needless move of every initiator).
public enum FailoverTiming {
    public static let probeSeconds = 1.0
    public static let missedProbes = 3
    public static var takeoverAfterSilence: Double { probeSeconds * Double(missedProbes) }
}

/// Active/passive failover of one RBD export (`failover = true`) between hosts that serve the same image:
/// the holder of the image's exclusive lock is active. The standby probes the export on its NICs with Query
/// Config; when nobody answers for `FailoverTiming.takeoverAfterSilence`, or the lock is free, it breaks the
/// lock (librbd blocklists the old owner, so none of its queued writes can land afterwards), takes it, and
/// makes the target active, which announces itself. The active one checks each second that it still holds the
/// lock and fences its target when it does not. Runs on its own thread; touches the target only through its
/// role.
final class FailoverWatch: @unchecked Sendable {
    private let image: RBDImage
    private let target: Target
    private let address: ShelfSlot
    private let interfaces: [String]
    private let log: TargetLog
    private let stopping = Atomic<Bool>(false)
    private var thread: JoinableThread?

    init(image: RBDImage, target: Target, address: ShelfSlot, interfaces: [String], log: TargetLog) {
        self.image = image
        self.target = target
        self.address = address
        self.interfaces = interfaces
        self.log = log
    }

    func start() {
        thread = JoinableThread { self.run() }
    }

    func stopAndWait() {
        stopping.store(true, ordering: .relaxed)
        thread?.join()
        thread = nil
    }

    private func run() {
        var probes: [AoEClient] = []
        var missed = 0
        while !stopping.load(ordering: .relaxed) {
            switch target.role {
            case .fenced:
                return
            case .active:
                pause(FailoverTiming.probeSeconds)
                if target.role == .active && !stopping.load(ordering: .relaxed) && !image.confirmOwnership() {
                    target.fence(because: "\(image.name): the cluster says another host holds its lock")
                }
            case .standby:
                if probes.isEmpty { probes = openProbes() }
                if image.lockOwners()?.isEmpty == true {
                    takeOver(why: "its lock is free")
                    continue
                }
                if probes.isEmpty {
                    pause(FailoverTiming.probeSeconds)
                    continue
                }
                if activeAnswers(probes) {
                    if missed > 0 { log.log(.info, "standby: the active host answers again") }
                    missed = 0
                    continue
                }
                missed += 1
                log.log(.warning, "standby: no answer to Query Config for e\(address) (\(missed) of \(FailoverTiming.missedProbes))")
                if missed >= FailoverTiming.missedProbes {
                    takeOver(why: "the active host did not answer for \(Int(FailoverTiming.takeoverAfterSilence)) s")
                    missed = 0
                }
            }
        }
    }

    /// A client on each NIC of the export; a NIC it cannot open is logged and left out.
    private func openProbes() -> [AoEClient] {
        interfaces.compactMap { name in
            do { return AoEClient(link: try PacketSocket(interface: name, receiveTimeoutMilliseconds: 50, receiveBufferBytes: 1 << 20)) } catch {
                log.log(.error, "standby: cannot probe on \(name): \(error)")
                return nil
            }
        }
    }

    /// One probe round: Query Config for the export on every NIC; whether another host answered.
    private func activeAnswers(_ probes: [AoEClient]) -> Bool {
        let seconds = FailoverTiming.probeSeconds / Double(probes.count)
        for probe in probes {
            let ours = probe.link.macAddress
            if let found = try? probe.discover(address: address, seconds: seconds),
               found.contains(where: { $0.address == address && $0.mac != ours }) {
                return true
            }
        }
        return false
    }

    private func takeOver(why: String) {
        let began = monotonicSeconds()
        do {
            let broken = try image.takeOver()
            target.becomeActive()
            let ms = Int((monotonicSeconds() - began) * 1000)
            log.log(.warning, "took over e\(address): \(why); \(broken.isEmpty ? "lock taken" : "lock of \(broken.joined(separator: ", ")) broken and taken") in \(ms) ms; announcing")
        } catch {
            log.log(.error, "takeover of e\(address) failed: \(error); still standing by")
            pause(FailoverTiming.probeSeconds)
        }
    }

    /// Sleeps in short steps, so that a stop is noticed at once.
    private func pause(_ seconds: Double) {
        let end = monotonicSeconds() + seconds
        while !stopping.load(ordering: .relaxed) && monotonicSeconds() < end { usleepSeconds(0.05) }
    }
}
