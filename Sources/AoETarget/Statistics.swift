import Synchronization
import LinuxSystem

/// Counters by reason, shared by the receive thread and the workers (relaxed atomics: they are reports,
/// not synchronisation).
public final class TargetStatistics: @unchecked Sendable {
    public enum Counter: Int, CaseIterable, Sendable {
        case framesReceived, framesSent
        case droppedTruncated, droppedNotForUs, droppedResponse, droppedOtherAddress, droppedMasked, droppedOverrun
        case droppedConfigNoMatch, droppedBadSource, droppedOrderingBacklog
        case aoeErrorsSent, ataErrors, ataOutOfRange, ataAborted
        case reads, writes, flushes, identifies, bytesRead, bytesWritten, deviceErrors
        case sendErrors, receiveErrors, mtuChanges, fdatasyncs
        case passThroughCommands, passThroughRefused, mergedRequests, cachedReads, stateSaveErrors, ringSubmitRetries
        case receiveStalledNoSlots, droppedNotActive, retransmitsAbsorbed, trims, sectorsTrimmed

        public var name: String {
            switch self {
            case .framesReceived: "frames_in"
            case .framesSent: "frames_out"
            case .droppedTruncated: "dropped_truncated"
            case .droppedNotForUs: "dropped_not_for_us"
            case .droppedResponse: "dropped_response_flag"
            case .droppedOtherAddress: "dropped_other_shelf_slot"
            case .droppedMasked: "dropped_mac_mask"
            case .droppedOverrun: "dropped_buffer_count_exceeded"
            case .droppedConfigNoMatch: "config_test_no_match"
            case .droppedBadSource: "dropped_group_source"
            case .droppedOrderingBacklog: "dropped_ordering_backlog"
            case .aoeErrorsSent: "aoe_errors"
            case .ataErrors: "ata_errors"
            case .ataOutOfRange: "ata_idnf"
            case .ataAborted: "ata_abrt"
            case .reads: "reads"
            case .writes: "writes"
            case .flushes: "flushes"
            case .identifies: "identifies"
            case .bytesRead: "bytes_read"
            case .bytesWritten: "bytes_written"
            case .deviceErrors: "device_errors"
            case .sendErrors: "send_errors"
            case .receiveErrors: "receive_errors"
            case .mtuChanges: "mtu_changes"
            case .fdatasyncs: "fdatasync_calls"
            case .passThroughCommands: "passthrough_commands"
            case .passThroughRefused: "passthrough_refused"
            case .mergedRequests: "merged_requests"
            case .cachedReads: "reads_from_page_cache"
            case .stateSaveErrors: "state_save_errors"
            case .ringSubmitRetries: "io_uring_submit_retries"
            case .receiveStalledNoSlots: "receive_stalled_no_frame_slots"
            case .droppedNotActive: "dropped_not_active"
            case .retransmitsAbsorbed: "retransmits_absorbed"
            case .trims: "trims"
            case .sectorsTrimmed: "sectors_trimmed"
            }
        }
    }

    private let values: UnsafeMutablePointer<Atomic<Int>>

    public init() {
        values = .allocate(capacity: Counter.allCases.count)
        for i in 0..<Counter.allCases.count { (values + i).initialize(to: Atomic(0)) }
    }

    deinit {
        values.deinitialize(count: Counter.allCases.count)
        values.deallocate()
    }

    @inline(__always)
    public func add(_ counter: Counter, _ amount: Int = 1) {
        values[counter.rawValue].add(amount, ordering: .relaxed)
    }

    public func set(_ counter: Counter, _ value: Int) {
        values[counter.rawValue].store(value, ordering: .relaxed)
    }

    public subscript(_ counter: Counter) -> Int { values[counter.rawValue].load(ordering: .relaxed) }

    /// One line, `name=value` pairs, zero counters left out.
    public var summary: String {
        // fdatasync is counted where it is called, in the syscall layer.
        self.set(.fdatasyncs, Syscall.fdatasyncCalls.load(ordering: .relaxed))
        return Counter.allCases.compactMap { self[$0] == 0 ? nil : "\($0.name)=\(self[$0])" }.joined(separator: " ")
    }
}
