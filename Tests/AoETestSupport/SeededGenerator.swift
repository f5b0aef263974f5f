/// SplitMix64: a small seeded generator, so every random test replays exactly. The seed is AOE_TEST_SEED
/// when set (to explore), else the test's fixed default; tests put `seedNote` in their failure messages so
/// a failure says how to replay it.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    public let seed: UInt64
    private var state: UInt64

    public init(defaultSeed: UInt64) {
        let fromEnvironment = getenvString("AOE_TEST_SEED").flatMap { UInt64($0) }
        seed = fromEnvironment ?? defaultSeed
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public var seedNote: String { "seed \(seed) (replay: AOE_TEST_SEED=\(seed))" }
}

#if canImport(Glibc)
import Glibc
private func getenvString(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
#endif
