import XCTest
@testable import AoETarget
import AoEWire
import LinuxSystem

final class ExportStateTests: XCTestCase {
    let a = MACAddress("02:00:00:00:00:0a")!
    let b = MACAddress("52:54:00:12:34:56")!

    var directory = ""
    override func setUp() {
        directory = NSTemporaryDirectory() + "aoe-state-tests-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        mkdir(directory, 0o755)
    }
    override func tearDown() { _ = try? FileManager.default.removeItem(atPath: directory) }

    var sample: ExportProtocolState {
        ExportProtocolState(access: ExportAccess(mask: [a, b], reservation: [b]),
                            configString: ConfigStringState([0x00, 0x41, 0xFF]), writeCacheEnabled: false)
    }

    func testDurableModeSwitchedWhileServingTurnsTheWriteCacheOffAndOn() throws {
        let state = ExportState(initial: ExportProtocolState(configuration: TargetConfiguration(address: ShelfSlot(shelf: 1, slot: 1))),
                                durableExport: false)
        XCTAssertTrue(state.writeCacheEnabled)
        try state.setDurableExport(true)
        XCTAssertTrue(state.durableExport)
        XCTAssertFalse(state.writeCacheEnabled, "durable: every write waits for a flush")
        XCTAssertFalse(try state.update { $0.setWriteCache(true, durableExport: state.durableExport) }, "and the remote cannot turn it on")
        try state.setDurableExport(false)
        XCTAssertFalse(state.durableExport)
        XCTAssertTrue(state.writeCacheEnabled)
    }

    func testEncodedFormIsExactlyThisText() {
        // The checksum is FNV-1a 64 of the five lines above it, newlines included.
        let body = "aoe-target-state 1\nconfig_string=0041ff\nmask=02:00:00:00:00:0a,52:54:00:12:34:56\nreserve=52:54:00:12:34:56\nwrite_cache=0\n"
        XCTAssertEqual(sample.encoded, body + "checksum=\(String(fnv1a64(body), radix: 16))\n")
        XCTAssertEqual(fnv1a64(""), 0xcbf2_9ce4_8422_2325, "FNV-1a 64 offset basis")
        XCTAssertEqual(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c, "FNV-1a 64 of 'a' (published test vector)")
    }

    func testDecodingGivesBackWhatWasEncoded() throws {
        XCTAssertEqual(try ExportProtocolState(decoding: sample.encoded), sample)
        XCTAssertEqual(try ExportProtocolState(decoding: ExportProtocolState().encoded), ExportProtocolState())
    }

    func testAnyChangedByteIsRefused() {
        var bytes = Array(sample.encoded.utf8)
        bytes[30] ^= 0x01   // inside the mask line
        XCTAssertThrowsError(try ExportProtocolState(decoding: String(decoding: bytes, as: UTF8.self))) {
            XCTAssertEqual($0 as? ExportProtocolState.DecodeError, .checksumMismatch)
        }
        XCTAssertThrowsError(try ExportProtocolState(decoding: String(sample.encoded.dropLast(3)))) {
            XCTAssertEqual($0 as? ExportProtocolState.DecodeError, .checksumMismatch)
        }
        XCTAssertThrowsError(try ExportProtocolState(decoding: "")) {
            XCTAssertEqual($0 as? ExportProtocolState.DecodeError, .notAStateFile)
        }
    }

    func testSavedFileLoadsAndALeftoverTemporaryFileIsIgnored() throws {
        let file = StateFile(directory: directory, address: ShelfSlot(shelf: 7, slot: 3))
        XCTAssertEqual(file.path, directory + "/e7.3.state")
        XCTAssertNil(try file.load())
        try file.save(sample)
        // A crash in the middle of the next save leaves a torn temporary file: never read.
        FileManager.default.createFile(atPath: file.path + ".tmp", contents: Data("aoe-target-state 1\nmask=02:".utf8))
        XCTAssertEqual(try file.load(), sample)
        // The next save replaces both.
        var next = sample
        next.writeCacheEnabled = true
        try file.save(next)
        XCTAssertEqual(try file.load(), next)
        XCTAssertFalse(FileManager.default.fileExists(atPath: file.path + ".tmp"))
    }

    func testDamagedStateFileIsAnErrorNamingIt() throws {
        let file = StateFile(directory: directory, address: ShelfSlot(shelf: 1, slot: 1))
        FileManager.default.createFile(atPath: file.path, contents: Data("aoe-target-state 1\nmask=\nchecksum=0\n".utf8))
        XCTAssertThrowsError(try file.load()) { error in
            XCTAssertEqual("\(error)", "\(file.path): checksum does not match the contents (the file was changed or damaged); move it away to start from the configured state")
        }
    }

    func testUpdateSavesOnlyRealChanges() throws {
        let file = StateFile(directory: directory, address: ShelfSlot(shelf: 1, slot: 1))
        let state = ExportState(initial: ExportProtocolState(), durableExport: false, file: file)
        _ = try state.update { $0.access.handleMask(MaskListArg(command: .read, error: .none, directives: [])) }
        XCTAssertNil(try file.load(), "a read changes nothing and writes nothing")
        _ = try state.update { $0.configString.handle(.forceSet, argument: [0x42]) }
        XCTAssertEqual(try file.load()?.configString.value, [0x42])
    }

    func testDurableExportNeverStartsOrBecomesWriteCached() throws {
        var saved = ExportProtocolState()
        saved.writeCacheEnabled = true
        let state = ExportState(initial: saved, durableExport: true)
        XCTAssertFalse(state.writeCacheEnabled, "a --sync export ignores a saved 'write cache on'")
        XCTAssertFalse(try state.update { $0.setWriteCache(true, durableExport: state.durableExport) })
        XCTAssertTrue(try state.update { $0.setWriteCache(false, durableExport: state.durableExport) })
    }
}
