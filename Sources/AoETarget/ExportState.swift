import AoEWire
import LinuxSystem
import Synchronization

/// One export's protocol state, shared by every port (NIC) that serves the export, so a mask edit or a
/// reservation made through one NIC holds on all of them. A change is saved (when the export has a state
/// file) before the call returns, so before the reply that acknowledges it leaves: a crash right after the
/// reply never loses it. A change that cannot be saved is undone and the request dropped unanswered; the
/// initiator retries.
public final class ExportState: Sendable {
    private let value: Mutex<ExportProtocolState>
    /// What every frame asks, readable without the lock (kept in step by `update`): no mask and no reservation
    /// (the common case: everyone admitted to everything), and the write cache setting.
    private let openToAll: Atomic<Bool>
    private let writeCache: Atomic<Bool>
    /// The export's durable mode, which the remote cannot weaken (SET FEATURES 02h is refused).
    private let durable: Atomic<Bool>
    public var durableExport: Bool { durable.load(ordering: .acquiring) }
    /// Where the state is saved; nil: kept in memory only (the vblade-style command line without --state-dir).
    public let file: StateFile?

    public init(initial: ExportProtocolState, durableExport: Bool, file: StateFile? = nil) {
        var initial = initial
        if durableExport { initial.writeCacheEnabled = false }
        value = Mutex(initial)
        openToAll = Atomic(initial.access.mask.isEmpty && initial.access.reservation.isEmpty)
        writeCache = Atomic(initial.writeCacheEnabled)
        durable = Atomic(durableExport)
        self.file = file
    }

    /// Durable mode switched while serving (a reload). On: the write cache goes off, so every write from now
    /// on is acknowledged only after a flush, which also covers the writes acknowledged before. Off: the write
    /// cache goes on, as for an export configured without it. Saved like any change.
    public func setDurableExport(_ on: Bool) throws(SaveFailed) {
        if on { durable.store(true, ordering: .releasing) }
        do {
            try update { $0.writeCacheEnabled = !on }
        } catch {
            if on { durable.store(false, ordering: .releasing) }
            throw error
        }
        if !on { durable.store(false, ordering: .releasing) }
    }

    public var current: ExportProtocolState { value.withLock { $0 } }

    /// What a frame from `source` may do: one lock per frame.
    public func admission(of source: MACAddress) -> ExportAccess.Admission {
        if openToAll.load(ordering: .acquiring) { return ExportAccess.everyoneAdmitted }
        return value.withLock { $0.access.admission(of: source) }
    }

    public var configString: [UInt8] { value.withLock { $0.configString.value } }
    public var writeCacheEnabled: Bool { writeCache.load(ordering: .acquiring) }

    /// Thrown when a change could not be saved: the state is as it was before, nothing may be acknowledged.
    public struct SaveFailed: Error, CustomStringConvertible {
        public let error: SystemError
        public var description: String { "cannot save export state: \(error)" }
    }

    /// Runs one transition; saves the result if it changed anything, or undoes it and throws if saving fails.
    /// Under the lock, so saves happen in the order of the changes.
    public func update<R>(_ transition: (inout ExportProtocolState) -> R) throws(SaveFailed) -> R {
        try value.withLock { (state) throws(SaveFailed) -> R in
            let before = state
            let result = transition(&state)
            if state != before, let file {
                do throws(SystemError) { try file.save(state) } catch {
                    state = before
                    throw SaveFailed(error: error)
                }
            }
            openToAll.store(state.access.mask.isEmpty && state.access.reservation.isEmpty, ordering: .releasing)
            writeCache.store(state.writeCacheEnabled, ordering: .releasing)
            return result
        }
    }
}

/// The saved state of one export: `DIR/eSHELF.SLOT.state`, replaced atomically on every change.
public struct StateFile: Sendable {
    public let path: String

    public init(directory: String, address: ShelfSlot) {
        path = "\(directory)/e\(address.shelf).\(address.slot).state"
    }

    public enum LoadError: Error, CustomStringConvertible {
        case system(SystemError)
        case damaged(path: String, ExportProtocolState.DecodeError)
        public var description: String {
            switch self {
            case .system(let e): "\(e)"
            case .damaged(let path, let e): "\(path): \(e); move it away to start from the configured state"
            }
        }
    }

    /// The saved state, or nil when none was saved yet. A leftover temporary file (a crash mid-save) is never
    /// read: only the renamed, complete file counts.
    public func load() throws(LoadError) -> ExportProtocolState? {
        let bytes: [UInt8]?
        do { bytes = try Syscall.readWholeFile(path) } catch { throw .system(error) }
        guard let bytes else { return nil }
        do { return try ExportProtocolState(decoding: String(decoding: bytes, as: UTF8.self)) } catch {
            throw .damaged(path: path, error)
        }
    }

    public func save(_ state: ExportProtocolState) throws(SystemError) {
        try Syscall.replaceFileAtomically(path, with: Array(state.encoded.utf8))
    }
}
