import AoEWire

/// What a block request asks for, hashed: who sent it, where, how many sectors, which direction. Two frames
/// with the same key are the same request sent again (a retransmission carries a fresh tag) or, rarely, the
/// same request made twice. Never 0, which marks an empty table entry.
public struct RequestKey: Hashable, Sendable {
    public let value: UInt64

    public init(source: MACAddress, lba: UInt64, sectors: Int, write: Bool) {
        var key: UInt64 = 0xCBF2_9CE4_8422_2325
        @inline(__always) func mix(_ v: UInt64) {
            key = (key ^ v) &* 0x0000_0100_0000_01B3
            key ^= key >> 29
        }
        mix(source.rawValue)
        mix(lba)
        mix(UInt64(sectors) << 1 | (write ? 1 : 0))
        value = key | 1
    }
}

/// The export's read and write requests in flight (received, not yet answered), by `RequestKey`, so that a
/// retransmission of one of them is recognised: instead of the device doing the same work again (and a slow
/// device, such as an RBD image, falling further behind under the initiator's retransmissions), the request in
/// flight takes the newest tag and its one reply answers the retransmission. Direct-mapped and fixed in size:
/// a collision forgets the older entry, whose retransmissions are then served as new requests, as without the
/// index. Event loop only.
struct InFlightIndex: ~Copyable {
    static let size = 4096
    private let keys: UnsafeMutablePointer<UInt64>
    private let slots: UnsafeMutablePointer<Int32>

    init() {
        keys = .allocate(capacity: Self.size)
        keys.initialize(repeating: 0, count: Self.size)
        slots = .allocate(capacity: Self.size)
        slots.initialize(repeating: -1, count: Self.size)
    }

    deinit {
        keys.deallocate()
        slots.deallocate()
    }

    @inline(__always) private func entry(_ key: RequestKey) -> Int { Int(key.value % UInt64(Self.size)) }

    /// The slot of the request in flight with this key, if the index holds one.
    func slot(for key: RequestKey) -> Int? {
        let i = entry(key)
        return keys[i] == key.value ? Int(slots[i]) : nil
    }

    func insert(_ key: RequestKey, slot: Int) {
        let i = entry(key)
        keys[i] = key.value
        slots[i] = Int32(slot)
    }

    /// Forgets `slot`'s entry, unless a newer request took it.
    func remove(_ key: RequestKey, slot: Int) {
        let i = entry(key)
        if keys[i] == key.value && slots[i] == Int32(slot) { keys[i] = 0 }
    }
}
