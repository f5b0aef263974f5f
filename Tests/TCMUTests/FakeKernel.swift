import CLinuxShims

/// The kernel's side of the ring, as drivers/target/target_core_user.c does it: entries (8-byte aligned) at
/// the head, a PAD entry where one would not fit before the ring's end, and a completion walk from the last
/// cleaned entry to the tail that looks each entry's command id up.
final class FakeKernel {
    let l: CLinuxShims_TCMULayout = { var l = CLinuxShims_TCMULayout(); CLinuxShims_tcmuLayout(&l); return l }()
    let size = 64 * 1024
    let ringOffset = 128
    let ringSize: Int
    let dataOffset = 16 * 1024
    let base: UnsafeMutableRawPointer
    var head = 0
    var lastCleaned = 0
    var nextData = 0
    var completed: [(id: UInt16, status: UInt8, sense: [UInt8])] = []

    init(ringSize: Int = 1024) {
        self.ringSize = ringSize
        base = .allocate(byteCount: size, alignment: 4096)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        base.storeBytes(of: UInt16(2), toByteOffset: Int(l.mailboxVersion), as: UInt16.self)
        base.storeBytes(of: UInt32(ringOffset), toByteOffset: Int(l.mailboxCommandRingOffset), as: UInt32.self)
        base.storeBytes(of: UInt32(ringSize), toByteOffset: Int(l.mailboxCommandRingSize), as: UInt32.self)
    }
    deinit { base.deallocate() }

    private func lenOp(_ length: Int, _ op: UInt32) -> UInt32 { UInt32(length) | op }
    private func setHead(_ h: Int) {
        head = h
        base.storeBytes(of: UInt32(h), toByteOffset: Int(l.mailboxHead), as: UInt32.self)
    }

    /// Queues a command: `data` bytes split into iovecs of `chunk` bytes. Returns the data area offsets.
    @discardableResult
    func queue(id: UInt16, cdb: [UInt8], dataLength: Int = 0, chunk: Int = 4096, op: UInt32? = nil) -> [Int] {
        var iovs: [(Int, Int)] = []
        var left = dataLength
        while left > 0 { let n = min(chunk, left); iovs.append((dataOffset + nextData, n)); nextData += n; left -= n }
        let cdbAt = Int(l.requestIOVs) + iovs.count * Int(l.iovSize)
        let length = (cdbAt + cdb.count + 7) & ~7
        let entryLength = max(length, Int(l.responseSense) + Int(l.senseSize))
        if ringSize - head < entryLength {
            let pad = ringSize - head
            (base + ringOffset + head).storeBytes(of: lenOp(pad, l.opPad), as: UInt32.self)
            setHead(0)
        }
        let e = base + ringOffset + head
        e.initializeMemory(as: UInt8.self, repeating: 0, count: entryLength)
        e.storeBytes(of: lenOp((entryLength + 7) & ~7, op ?? l.opCommand), toByteOffset: Int(l.entryLengthOp), as: UInt32.self)
        e.storeBytes(of: id, toByteOffset: Int(l.entryCommandID), as: UInt16.self)
        e.storeBytes(of: UInt32(iovs.count), toByteOffset: Int(l.requestIOVCount), as: UInt32.self)
        e.storeBytes(of: UInt64(ringOffset + head + cdbAt), toByteOffset: Int(l.requestCDBOffset), as: UInt64.self)
        for (i, iov) in iovs.enumerated() {
            e.storeBytes(of: UInt64(iov.0), toByteOffset: Int(l.requestIOVs) + i * Int(l.iovSize), as: UInt64.self)
            e.storeBytes(of: UInt64(iov.1), toByteOffset: Int(l.requestIOVs) + i * Int(l.iovSize) + 8, as: UInt64.self)
        }
        for (i, b) in cdb.enumerated() { e.storeBytes(of: b, toByteOffset: cdbAt + i, as: UInt8.self) }
        setHead((head + ((entryLength + 7) & ~7)) % ringSize)
        return iovs.map(\.0)
    }

    /// The kernel's completion walk (tcmu_handle_completions).
    func reap() {
        let tail = Int(base.load(fromByteOffset: Int(l.mailboxTail), as: UInt32.self))
        while lastCleaned != tail {
            let e = base + ringOffset + lastCleaned
            let lo = e.load(as: UInt32.self)
            let length = Int(lo & ~l.opMask)
            if lo & l.opMask == l.opCommand {
                let id = e.load(fromByteOffset: Int(l.entryCommandID), as: UInt16.self)
                let status = e.load(fromByteOffset: Int(l.responseStatus), as: UInt8.self)
                let sense = (0..<18).map { e.load(fromByteOffset: Int(l.responseSense) + $0, as: UInt8.self) }
                completed.append((id, status, sense))
            }
            lastCleaned = (lastCleaned + length) % ringSize
        }
    }
}

