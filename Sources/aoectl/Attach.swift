import ArgumentParser
import Foundation
import Synchronization
import AoEWire
import ATACore
import AoEInitiator
import DiskAttach
import LinuxSystem
import SCSIEmulation
import TCMU

final class StopFlag: Sendable {
    let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .acquiring) }
    func set() { flag.store(true, ordering: .releasing) }
}

struct Attach: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a target as a local SCSI disk (TCMU + tcm_loop): smartctl, hdparm, sg3_utils and VMs reach the drive.",
        discussion: """
        Creates a TCMU backstore and a tcm_loop LUN through configfs (kernel modules target_core_user and \
        tcm_loop, configfs mounted, root), answers every SCSI command of the new disk, and serves it until \
        SIGINT or SIGTERM, then removes every configfs object it made. Once the disk is usable it prints its \
        block and SCSI generic device (with --json one object: block_device, generic_device, target, \
        target_mac, sectors).

        Reads and writes go over AoE split by the target's sectors per frame; SYNCHRONIZE CACHE becomes FLUSH \
        CACHE EXT. ATA PASS-THROUGH (12)/(16) becomes one AoE ATA command with the CDB's task file, answered \
        with the drive's registers in descriptor sense (ATA Status Return); the target's pass-through policy \
        decides what runs. Refused with ILLEGAL REQUEST, INVALID FIELD IN CDB: 48-bit commands with a non-zero \
        high-order Feature or Count byte (AoE has no byte for them), NCQ/queued/reset protocols, MULTIPLE \
        counts, and data larger than one frame (the target's sectors per frame). A command that may not run \
        twice (anything but reads, writes, IDENTIFY, SMART reads, CHECK POWER MODE, FLUSH CACHE) is sent once \
        and never retransmitted: without an answer within --command-timeout it fails with ABORTED COMMAND, \
        LOGICAL UNIT COMMUNICATION FAILURE, and the drive may or may not have run it.

        After a crash, `aoectl detach SHELF.SLOT` removes what is left.
        """)

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The target, SHELF.SLOT.") var target: ShelfSlot
    @Option(help: "Block I/Os in flight to the target at once.") var queueDepth = 32
    @Option(help: "Largest SCSI transfer the local disk accepts, in 512-byte sectors.") var maxSectors = 1024
    @Option(help: "Seconds an I/O may take, retransmissions included, before it fails.") var commandTimeout = 25.0

    func run() throws {
        try reporting {
            guard (8...65_535).contains(maxSectors) else { throw CLIError("--max-sectors must be 8..65535") }
            guard (1...4096).contains(queueDepth) else { throw CLIError("--queue-depth must be 1..4096") }
            do { try LoopbackDisk.checkPrerequisites() } catch { throw CLIError("\(error)") }
            var signals = sigset_t()
            sigemptyset(&signals)
            for s in [SIGINT, SIGTERM] { sigaddset(&signals, s) }
            pthread_sigmask(SIG_BLOCK, &signals, nil)

            let (client, info) = try connection.connect(target)
            let identify = try client.identify(info)
            let drive = DriveDescription(identify: identify, capacitySectors: identify.sectors,
                                         maxTransferSectors: maxSectors, passThroughMaxSectors: info.sectorsPerFrame)
            let disk = LoopbackDisk(names: LoopbackDiskNames(shelf: target.shelf, slot: target.slot))
            do { try disk.open(sectors: identify.sectors, maxSectors: maxSectors, commandTimeoutSeconds: Int(commandTimeout) + 10) } catch {
                throw CLIError("\(error)")
            }
            let ring: TCMURing
            do {
                ring = try TCMURing(base: disk.mapping!, size: disk.mappingSize, slots: 64, maxBuffers: maxSectors / 8 + 2)
            } catch {
                try? disk.close()
                throw CLIError("\(error)")
            }
            let stop = StopFlag()
            let stopSignal = EventCounter()
            nonisolated(unsafe) let bridge = TCMUBridge(ring: ring, disk: SCSIDisk(drive: drive),
                                    announce: { disk.announceCompletions() },
                                    waitForCommands: { _ = disk.waitForCommands(seconds: $0, orStop: stopSignal.descriptor) },
                                    stopRequested: { stop.isSet },
                                    log: { FileHandle.standardError.write(Data("\($0)\n".utf8)) })
            nonisolated(unsafe) let engine = BlockIOEngine(link: client.link, target: info, queueDepth: queueDepth, maxAttempts: 1000, deadlineSeconds: commandTimeout)
            nonisolated(unsafe) var engineError: ClientError? = nil
            let server = JoinableThread {
                do throws(ClientError) { try engine.run(bridge) } catch { engineError = error }
                // Serving ended by itself (a socket error, a broken ring): wake the main thread to tear down.
                if !stop.isSet { kill(getpid(), SIGTERM) }
            }
            func shutDown() {
                try? disk.removeLUN()
                stop.set()
                stopSignal.signal()
                server.join()
                try? disk.close()
            }
            let devices: (block: String, generic: String)
            do { devices = try disk.addLUN() } catch {
                shutDown()
                throw CLIError("\(error)")
            }
            // Written at once, unbuffered: a script waiting for the line sees it while we serve.
            let line: String
            if connection.json {
                let object: [String: Any] = ["block_device": devices.block, "generic_device": devices.generic, "target": "e\(target)",
                                             "target_mac": "\(info.mac)", "sectors": Int(identify.sectors)]
                line = String(decoding: try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
            } else {
                line = "e\(target) (\(identify.model), \(identify.sectors) sectors, \(info.mac)) attached as \(devices.block) and \(devices.generic)"
            }
            FileHandle.standardOutput.write(Data((line + "\n").utf8))
            var received: Int32 = 0
            var set = signals
            while sigwait(&set, &received) != 0 {}
            FileHandle.standardError.write(Data("aoectl attach: signal \(received): removing \(devices.block)\n".utf8))
            shutDown()
            let c = bridge.counters
            FileHandle.standardError.write(Data("aoectl attach: detached e\(target): \(c.commands) SCSI commands, \(c.reads) reads, \(c.writes) writes, \(c.flushes) flushes, \(c.passThroughs) pass-through, \(c.refused) refused, \(c.failed) failed; \(engine.retransmits) retransmits\n".utf8))
            if let engineError { throw engineError }
            if let ringError = bridge.ringError { throw CLIError(ringError.description) }
        }
    }
}

struct Detach: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove the configfs objects an `aoectl attach` of SHELF.SLOT left behind (after a crash).")
    @Argument(help: "The target, SHELF.SLOT.") var target: ShelfSlot

    func run() throws {
        try reporting {
            do { try LoopbackDisk.detach(LoopbackDiskNames(shelf: target.shelf, slot: target.slot)) } catch { throw CLIError("\(error)") }
            print("detached e\(target)")
        }
    }
}
