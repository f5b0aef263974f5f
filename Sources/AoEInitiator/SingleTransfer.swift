/// One contiguous read or write (or one ATA command) as an I/O source: the engine pipelines its frames
/// across the window.
public final class SingleTransfer: BlockIOSource {
    private var io: BlockIO?
    private var done = false
    public private(set) var error: ClientError?
    /// The I/O as it completed: for a command, with its reply registers.
    public private(set) var result: BlockIO?

    public init(_ io: BlockIO) { self.io = io }

    public func nextIO(now: Double) -> BlockIO? {
        defer { io = nil }
        return io
    }

    public func completed(_ io: BlockIO, error: ClientError?, latencyNanoseconds: UInt64) {
        self.error = error
        result = io
        done = true
    }

    public var isFinished: Bool { done }
}

extension AoEClient {
    /// Reads or writes `sectors` at `lba` through `buffer` with up to `window` frames in flight.
    public func transfer(_ target: TargetInfo, lba: UInt64, sectors: Int, isWrite: Bool, buffer: UnsafeMutableRawPointer) throws(ClientError) {
        let engine = BlockIOEngine(link: link, target: target, queueDepth: 1)
        let source = SingleTransfer(BlockIO(lba: lba, sectors: sectors, isWrite: isWrite, buffer: buffer, id: 0))
        try engine.run(source)
        if let error = source.error { throw error }
    }
}
