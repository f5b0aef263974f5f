/// The data `bench --verify` writes: every 512-byte sector says which LBA it belongs to, which write
/// (generation) put it there, and carries a checksum, so a read-back can tell a misplaced sector (wrong LBA),
/// a stale one (old generation) and a corrupted one (bad checksum) apart.
///
/// Layout (little-endian): 0-7 LBA, 8-15 generation, 16-23 seed, 24-507 filler from a PRNG keyed on all
/// three, 508-511 FNV-1a of bytes 0-507.
public enum VerifyPattern {
    public enum Mismatch: Hashable, Sendable, CustomStringConvertible {
        case checksum(lba: UInt64)
        case wrongLBA(lba: UInt64, found: UInt64)
        case wrongGeneration(lba: UInt64, expected: UInt64, found: UInt64)
        case wrongSeed(lba: UInt64)

        public var lba: UInt64 {
            switch self {
            case .checksum(let l), .wrongLBA(let l, _), .wrongGeneration(let l, _, _), .wrongSeed(let l): l
            }
        }

        public var description: String {
            switch self {
            case .checksum(let l): "LBA \(l): checksum mismatch (corrupted data)"
            case .wrongLBA(let l, let f): "LBA \(l): holds the data of LBA \(f) (misplaced)"
            case .wrongGeneration(let l, let e, let f): "LBA \(l): generation \(f), expected \(e) (stale or lost write)"
            case .wrongSeed(let l): "LBA \(l): not written by this run's pattern (seed differs)"
            }
        }
    }

    static func splitmix(_ state: inout UInt64) -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    static func fnv1a(_ p: UnsafeRawPointer, _ count: Int) -> UInt32 {
        var hash: UInt32 = 0x811C_9DC5
        for i in 0..<count { hash = (hash ^ UInt32(p.load(fromByteOffset: i, as: UInt8.self))) &* 0x0100_0193 }
        return hash
    }

    /// Fills one sector at `sector` (512 bytes).
    public static func fill(_ sector: UnsafeMutableRawPointer, lba: UInt64, generation: UInt64, seed: UInt64) {
        sector.storeBytes(of: lba.littleEndian, toByteOffset: 0, as: UInt64.self)
        sector.storeBytes(of: generation.littleEndian, toByteOffset: 8, as: UInt64.self)
        sector.storeBytes(of: seed.littleEndian, toByteOffset: 16, as: UInt64.self)
        var state = lba &* 31 &+ generation &* 17 &+ seed
        var offset = 24
        while offset < 504 {
            sector.storeBytes(of: splitmix(&state), toByteOffset: offset, as: UInt64.self)
            offset += 8
        }
        sector.storeBytes(of: UInt32(truncatingIfNeeded: splitmix(&state)), toByteOffset: 504, as: UInt32.self)
        sector.storeBytes(of: fnv1a(sector, 508).littleEndian, toByteOffset: 508, as: UInt32.self)
    }

    /// Checks one sector; `generation` nil accepts any generation.
    public static func check(_ sector: UnsafeRawPointer, lba: UInt64, generation: UInt64?, seed: UInt64) -> Mismatch? {
        let stored = UInt32(littleEndian: sector.loadUnaligned(fromByteOffset: 508, as: UInt32.self))
        guard stored == fnv1a(sector, 508) else { return .checksum(lba: lba) }
        let foundLBA = UInt64(littleEndian: sector.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard foundLBA == lba else { return .wrongLBA(lba: lba, found: foundLBA) }
        guard UInt64(littleEndian: sector.loadUnaligned(fromByteOffset: 16, as: UInt64.self)) == seed else { return .wrongSeed(lba: lba) }
        let foundGeneration = UInt64(littleEndian: sector.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        if let generation, foundGeneration != generation {
            return .wrongGeneration(lba: lba, expected: generation, found: foundGeneration)
        }
        return nil
    }
}
