// Fuzz targets for libFuzzer, and a replay command for their corpora and crash fixtures.
//
// Fuzzing build (Tests/fuzz/run.sh): swift build --product aoe-fuzz -Xswiftc -sanitize=fuzzer,address
// -Xswiftc -DFUZZING; libFuzzer then provides main and calls LLVMFuzzerTestOneInput, with the target chosen by
// AOE_FUZZ_TARGET (frames, the default, or replies). The plain debug build has a main instead:
//   aoe-fuzz replay frames|replies FILE|DIR...     runs inputs through the same harness (crash fixtures)
//   aoe-fuzz seeds PCAP DIR                        one corpus file per frame of a capture (unicast frames
//                                                  readdressed to the harness's target MAC)
// Release builds contain only a stub: the harnesses use the targets' internals (@testable).
#if DEBUG
import Glibc
@testable import AoETarget
@testable import AoEInitiator
import AoEWire
import ATACore
import BlockDevices
import PacketTransport
import Synchronization
import CPcap

/// The whole frame path of a target: parse, protocol decisions, ATA dispatch against a memory device, replies
/// to an in-memory link. One target for the whole run, so protocol state (mask, reservation, config string,
/// write cache) carries across inputs and sequences get fuzzed. An input is one or more frames: each starts
/// with a length byte pair (big-endian) when the input begins with 0xA5, else the input is one frame.
final class FrameHarness: @unchecked Sendable {
    static let targetMAC = MACAddress("02:00:00:00:00:01")!
    let link = EmbeddedLink(mac: FrameHarness.targetMAC)
    let target: Target
    var scratch: Target.BatchScratch

    init() {
        var configuration = TargetConfiguration(address: ShelfSlot(shelf: 1, slot: 1))
        configuration.bufferCount = 16
        target = Target(configuration: configuration, device: MemoryDevice(sectors: 2048, neverBlocks: true), link: link,
                        log: TargetLog(minimum: .error) { _ in })
        scratch = target.makeBatchScratch()
    }

    func run(_ input: UnsafeRawBufferPointer) {
        var frames: [[UInt8]] = []
        if input.count > 3 && input[0] == 0xA5 {
            var i = 1
            while i + 2 <= input.count && frames.count < 32 {
                let n = Int(input[i]) << 8 | Int(input[i + 1])
                i += 2
                let end = min(input.count, i + n)
                frames.append(Array(input[i..<end]))
                i = end
            }
        } else {
            frames.append(Array(input.prefix(9018 + 14)))
        }
        link.inject(batch: frames.map { Array($0.prefix(9018 + 14)) })
        // Device work runs inline and is answered within the pass.
        while target.runPass(&scratch, stopping: false, mayWait: false) > 0 {}
        for reply in link.drainSent() {
            // Every reply carries our address and the response flag, and is at least the Ethernet minimum.
            precondition(reply.count >= AoELayout.minimumFrameSize, "reply of \(reply.count) bytes")
            let header = try! reply.withUnsafeBytes { try AoEHeader(parsing: $0) }
            precondition(header.flags.contains(.response) && header.source == FrameHarness.targetMAC)
            precondition(header.address == ShelfSlot(shelf: 1, slot: 1), "a reply from \(header.address)")
        }
    }
}

/// The parsers an initiator runs on a target's replies: AoE header, ATA, Query Config, MAC Mask List,
/// Reserve/Release, the IDENTIFY page, and what discovery makes of a Config reply.
enum ReplyHarness {
    static let client = AoEClient(link: EmbeddedLink(mac: MACAddress("02:00:00:00:00:02")!))
    static func run(_ input: UnsafeRawBufferPointer) {
        _ = try? AoEHeader(parsing: input)
        _ = ATAHeader(parsing: input)
        _ = try? ConfigArg(parsing: input)
        _ = try? MaskListArg(parsing: input)
        _ = try? ReserveArg(parsing: input)
        if input.count >= AoELayout.ataHeaderSize {
            _ = IdentifyPage(bytes: input[AoELayout.ataHeaderSize...])
        }
        if let header = try? AoEHeader(parsing: input) {
            _ = client.targetInfo(Reply(header: header, bytes: Array(input)))
        }
    }
}

nonisolated(unsafe) var frameHarness: FrameHarness?

func fuzzOne(_ target: String, _ input: UnsafeRawBufferPointer) {
    switch target {
    case "replies": ReplyHarness.run(input)
    default:
        if frameHarness == nil { frameHarness = FrameHarness() }
        frameHarness!.run(input)
    }
}

/// A line on standard error.
func say(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let target = getenv("AOE_FUZZ_TARGET").map { String(cString: $0) } ?? "frames"
    fuzzOne(target, UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// libFuzzer's entry for programs that have a main of their own (SwiftPM links every executable's main
/// under its module's name, so libFuzzer's main is not the one that runs).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

@_cdecl("aoe_fuzz_main")
func aoeFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments) { data, size in LLVMFuzzerTestOneInput(data, size) }
}
#else
@main
struct AoEFuzz {
    static func main() {
        let args = CommandLine.arguments
        guard args.count >= 3 else { usage() }
        switch args[1] {
        case "replay":
            var count = 0
            for path in args[3...] {
                for file in files(path) {
                    guard let bytes = read(file) else { say("aoe-fuzz: cannot read \(file)"); exit(1) }
                    bytes.withUnsafeBytes { fuzzOne(args[2], $0) }
                    count += 1
                }
            }
            print("aoe-fuzz: \(count) inputs replayed through the \(args[2]) harness, no crash")
        case "seeds":
            guard args.count == 4 else { usage() }
            print("aoe-fuzz: \(seeds(pcap: args[2], into: args[3])) frames written to \(args[3])")
        default:
            usage()
        }
    }

    static func usage() -> Never {
        say("usage: aoe-fuzz replay frames|replies FILE|DIR...   |   aoe-fuzz seeds PCAP DIR")
        exit(2)
    }

    static func files(_ path: String) -> [String] {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR, let dir = opendir(path) else { return [path] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if !name.hasPrefix(".") { names.append(path + "/" + name) }
        }
        return names.sorted()
    }

    static func read(_ path: String) -> [UInt8]? {
        guard let f = fopen(path, "rb") else { return nil }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, f)
            if n == 0 { return bytes }
            bytes += chunk[0..<n]
        }
    }

    /// One file per frame of a capture (as the e2e tests write with --pcap).
    static func seeds(pcap path: String, into dir: String) -> Int {
        var error = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        guard let handle = pcap_open_offline(path, &error) else {
            say("aoe-fuzz: \(path): \(String(cString: error))")
            exit(1)
        }
        defer { pcap_close(handle) }
        mkdir(dir, 0o755)
        var count = 0
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        while pcap_next_ex(handle, &header, &data) == 1, let header, let data {
            var frame = Array(UnsafeBufferPointer(start: data, count: Int(header.pointee.caplen)))
            // Unicast requests to the capture's target become requests to the harness's target.
            if frame.count >= 6 && frame[0] & 1 == 0 {
                for i in 0..<6 { frame[i] = FrameHarness.targetMAC.byte(i) }
            }
            let out = "\(dir)/frame-\(count)"
            if let f = fopen(out, "wb") {
                fwrite(frame, 1, frame.count, f)
                fclose(f)
                count += 1
            }
        }
        return count
    }
}
#endif
#else
@main
struct AoEFuzz {
    static func main() {
        print("aoe-fuzz: build it in debug (swift build --product aoe-fuzz); see Tests/fuzz/run.sh")
    }
}
#endif
