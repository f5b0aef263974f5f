import ATACore
import AoEWire

/// An SPC-4/SBC-3 direct-access disk backed by one remote ATA drive: CDB in, action out; ATA result in, SCSI
/// status and sense out. Pure: the caller moves the data and talks to the drive.
///
/// Answered here: TEST UNIT READY, START STOP UNIT, REQUEST SENSE (no sense pending), INQUIRY (standard; VPD 00h,
/// 80h, 83h, 89h, B0h, B1h), MODE SENSE (6)/(10) (08h, 0Ah, 1Ch, 3Fh), READ CAPACITY (10)/(16), REPORT LUNS,
/// VERIFY (10)/(16) (a range check). Passed on: READ/WRITE (6/10/12/16) as `.read`/`.write`, SYNCHRONIZE CACHE
/// (10)/(16) as `.synchronizeCache`, ATA PASS-THROUGH (12)/(16) as `.ataPassThrough`, and, when the drive has
/// TRIM, UNMAP as `.unmap` (with VPD B2h and READ CAPACITY (16) LBPME, so Linux sends it for discards). Anything else is ILLEGAL
/// REQUEST, INVALID COMMAND OPERATION CODE. Errors raised here use fixed-format sense; pass-through completions
/// use descriptor format, the only one with room for all the ATA registers.
public struct SCSIDisk: Hashable, Sendable {
    public var drive: DriveDescription

    public init(drive: DriveDescription) { self.drive = drive }

    /// The SCSI operation codes this disk answers (SPC-4, SBC-3, SAT-3).
    enum Opcode {
        static let testUnitReady: UInt8 = 0x00
        static let requestSense: UInt8 = 0x03
        static let read6: UInt8 = 0x08
        static let write6: UInt8 = 0x0A
        static let inquiry: UInt8 = 0x12
        static let modeSense6: UInt8 = 0x1A
        static let startStopUnit: UInt8 = 0x1B
        static let readCapacity10: UInt8 = 0x25
        static let read10: UInt8 = 0x28
        static let write10: UInt8 = 0x2A
        static let verify10: UInt8 = 0x2F
        static let synchronizeCache10: UInt8 = 0x35
        static let unmap: UInt8 = 0x42
        static let modeSense10: UInt8 = 0x5A
        static let ataPassThrough16: UInt8 = 0x85
        static let read16: UInt8 = 0x88
        static let write16: UInt8 = 0x8A
        static let verify16: UInt8 = 0x8F
        static let synchronizeCache16: UInt8 = 0x91
        static let serviceActionIn16: UInt8 = 0x9E
        static let reportLUNs: UInt8 = 0xA0
        static let ataPassThrough12: UInt8 = 0xA1
        static let read12: UInt8 = 0xA8
        static let write12: UInt8 = 0xAA
    }

    /// SERVICE ACTION IN(16) 10h.
    static let readCapacity16ServiceAction: UInt8 = 0x10

    /// CDB length by group code (SPC-4 4.2.5.1): bits 7:5 of the opcode.
    public static func cdbLength(_ opcode: UInt8) -> Int {
        switch opcode >> 5 {
        case 0: 6
        case 1, 2: 10
        case 4: 16
        case 5: 12
        default: 0  // 3 is reserved / variable length, 6 and 7 vendor-specific: never emulated
        }
    }

    /// What to do for one CDB whose buffer the kernel gave without a direction (TCMU): `dataLength` bytes,
    /// data-out for the commands that send data (WRITE, and ATA PASS-THROUGH with T_DIR 0 and a data
    /// protocol), data-in for every other.
    public func action(forCDB cdbBytes: some Collection<UInt8>, dataLength: Int) -> SCSIAction {
        let cdb = Array(cdbBytes)
        let out = Self.sendsData(cdb)
        return action(forCDB: cdb, dataOutLength: out ? dataLength : 0, dataInLength: out ? 0 : dataLength)
    }

    /// Whether the command carries data to the device.
    static func sendsData(_ cdb: [UInt8]) -> Bool {
        guard let opcode = cdb.first else { return false }
        switch opcode {
        case Opcode.write6, Opcode.write10, Opcode.write12, Opcode.write16, Opcode.unmap: return true
        case Opcode.ataPassThrough12, Opcode.ataPassThrough16:
            guard cdb.count >= 3 else { return false }
            let protocolField = (cdb[1] >> 1) & 0x0F
            return protocolField != 3 && cdb[2] & 0x03 != 0 && cdb[2] & 0x08 == 0
        default: return false
        }
    }

    /// What to do for one CDB.
    /// - Parameters:
    ///   - dataOutLength: bytes the kernel has for data-out (from the initiator).
    ///   - dataInLength: bytes of data-in buffer the kernel gave; data-in is never longer.
    public func action(forCDB cdbBytes: some Collection<UInt8>, dataOutLength: Int, dataInLength: Int) -> SCSIAction {
        let cdb = Array(cdbBytes)
        guard let opcode = cdb.first else { return .respond(.refused(.truncatedCDB(length: 0))) }
        let length = Self.cdbLength(opcode)
        guard length > 0 else { return .respond(.refused(.unsupportedOperationCode(opcode))) }
        guard cdb.count >= length else { return .respond(.refused(.truncatedCDB(length: cdb.count))) }
        let dataIn = { (data: [UInt8], allocation: UInt64) -> SCSIAction in
            .respond(.good(Array(data.prefix(Int(min(allocation, UInt64(dataInLength)))))))
        }

        switch opcode {
        case Opcode.testUnitReady, Opcode.startStopUnit:
            // No media to load and no power states to emulate: the remote drive spins on its own.
            return .respond(.good())
        case Opcode.requestSense:
            // Every error is reported with its command (autosense), so nothing is ever pending.
            let descriptorFormat = cdb[1] & 0x01 != 0
            let sense = descriptorFormat ? SenseData.descriptor(.noSense, .none) : SenseData.fixed(.noSense, .none)
            return dataIn(sense, UInt64(cdb[4]))
        case Opcode.inquiry:
            return inquiry(cdb).map { dataIn($0, bigEndian(cdb, 3, 2)) } ?? .respond(.refused(inquiryRefusal(cdb)))
        case Opcode.modeSense6, Opcode.modeSense10:
            switch modeSense(cdb) {
            case .success(let data):
                return dataIn(data, opcode == Opcode.modeSense6 ? UInt64(cdb[4]) : bigEndian(cdb, 7, 2))
            case .failure(let refusal):
                return .respond(.refused(refusal))
            }
        case Opcode.readCapacity10:
            return dataIn(readCapacity10(), 8)
        case Opcode.serviceActionIn16:
            let serviceAction = cdb[1] & 0x1F
            guard serviceAction == Self.readCapacity16ServiceAction else {
                return .respond(.refused(.unsupportedServiceAction(opcode: opcode, serviceAction: serviceAction)))
            }
            return dataIn(readCapacity16(), bigEndian(cdb, 10, 4))
        case Opcode.reportLUNs:
            // One logical unit, LUN 0: LUN LIST LENGTH 8, then one zero LUN.
            return dataIn([0, 0, 0, 8, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 8), bigEndian(cdb, 6, 4))
        case Opcode.read6, Opcode.write6:
            // LBA 20:0 in bytes 1-3; TRANSFER LENGTH 0 means 256 blocks (SBC-3 5.11).
            let blocks = cdb[4] == 0 ? 256 : UInt64(cdb[4])
            return transfer(write: opcode == Opcode.write6, lba: bigEndian(cdb, 1, 3) & 0x1F_FFFF, blocks: blocks,
                            forceUnitAccess: false, dataOutLength: dataOutLength, dataInLength: dataInLength)
        case Opcode.read10, Opcode.write10:
            return transfer(write: opcode == Opcode.write10, lba: bigEndian(cdb, 2, 4), blocks: bigEndian(cdb, 7, 2),
                            forceUnitAccess: cdb[1] & 0x08 != 0, dataOutLength: dataOutLength, dataInLength: dataInLength)
        case Opcode.read12, Opcode.write12:
            return transfer(write: opcode == Opcode.write12, lba: bigEndian(cdb, 2, 4), blocks: bigEndian(cdb, 6, 4),
                            forceUnitAccess: cdb[1] & 0x08 != 0, dataOutLength: dataOutLength, dataInLength: dataInLength)
        case Opcode.read16, Opcode.write16:
            return transfer(write: opcode == Opcode.write16, lba: bigEndian(cdb, 2, 8), blocks: bigEndian(cdb, 10, 4),
                            forceUnitAccess: cdb[1] & 0x08 != 0, dataOutLength: dataOutLength, dataInLength: dataInLength)
        case Opcode.verify10, Opcode.verify16:
            // BYTCHK (byte 1 bits 2:1) asks to compare with data-out; without it VERIFY only checks the range
            // (the medium is the remote drive's to scrub).
            guard cdb[1] & 0x06 == 0 else { return .respond(.refused(.verifyByteCheck)) }
            let (lba, blocks) = opcode == Opcode.verify10
                ? (bigEndian(cdb, 2, 4), bigEndian(cdb, 7, 2)) : (bigEndian(cdb, 2, 8), bigEndian(cdb, 10, 4))
            if let refusal = rangeRefusal(lba: lba, blocks: blocks) { return .respond(.refused(refusal)) }
            return .respond(.good())
        case Opcode.synchronizeCache10, Opcode.synchronizeCache16:
            // The whole cache is flushed whatever range is named; a range past the end is still an error.
            let (lba, blocks) = opcode == Opcode.synchronizeCache10
                ? (bigEndian(cdb, 2, 4), bigEndian(cdb, 7, 2)) : (bigEndian(cdb, 2, 8), bigEndian(cdb, 10, 4))
            if let refusal = rangeRefusal(lba: lba, blocks: blocks) { return .respond(.refused(refusal)) }
            return .synchronizeCache
        case Opcode.unmap:
            // Offered (VPD B2h LBPU) only for a drive with TRIM; ANCHOR needs anchored-block tracking.
            guard drive.trimBlocksPerCommand > 0 else { return .respond(.refused(.unsupportedOperationCode(opcode))) }
            guard cdb[1] & 0x01 == 0 else { return .respond(.refused(.unmapAnchor)) }
            let length = Int(bigEndian(cdb, 7, 2))
            // SBC-3 5.28: a PARAMETER LIST LENGTH of 0 unmaps nothing and is not an error.
            guard length > 0 else { return .respond(.good()) }
            guard length >= 8 else { return .respond(.refused(.unmapParameterListLength(length))) }
            guard dataOutLength >= length else {
                return .respond(.refused(.transferLengthMismatch(expectedIn: 0, expectedOut: length, dataIn: dataInLength, dataOut: dataOutLength)))
            }
            return .unmap(parameterListLength: length)
        case Opcode.ataPassThrough12, Opcode.ataPassThrough16:
            switch ATAPassThroughRequest.decode(cdb, maxSectors: drive.passThroughMaxSectors,
                                                dataInLength: dataInLength, dataOutLength: dataOutLength) {
            case .success(let request): return .ataPassThrough(request)
            case .failure(let refusal): return .respond(.refused(.passThrough(refusal)))
            }
        default:
            return .respond(.refused(.unsupportedOperationCode(opcode)))
        }
    }

    /// The most block descriptors one UNMAP may carry (VPD B0h): one, so that it always fits one TRIM command
    /// (Linux sends one per UNMAP).
    static let maxUnmapDescriptors = 1

    /// The ranges of an UNMAP parameter list (SBC-3 5.28.2): an 8-byte header (UNMAP DATA LENGTH, BLOCK
    /// DESCRIPTOR DATA LENGTH), then 16-byte descriptors (LBA, NUMBER OF LOGICAL BLOCKS). Descriptors of 0 blocks
    /// are skipped; every range is checked before any is discarded.
    public func unmapRanges(_ list: [UInt8]) -> Result<[BlockRange], SCSIRefusal> {
        guard list.count >= 8 else { return .failure(.unmapParameterListLength(list.count)) }
        let dataLength = Int(bigEndian(list, 0, 2)), descriptorBytes = Int(bigEndian(list, 2, 2))
        guard dataLength + 2 <= list.count, descriptorBytes + 8 <= list.count else {
            return .failure(.unmapParameterListLength(list.count))
        }
        let descriptors = descriptorBytes / 16  // a partial descriptor at the end is ignored (SBC-3)
        var ranges: [BlockRange] = []
        var total: UInt64 = 0
        for i in 0..<descriptors {
            let at = 8 + 16 * i
            let lba = bigEndian(list, at, 8), count = bigEndian(list, at + 8, 4)
            if let refusal = rangeRefusal(lba: lba, blocks: count) { return .failure(refusal) }
            total += count
            if count > 0 { ranges.append(BlockRange(lba: lba, count: count)) }
        }
        guard descriptors <= Self.maxUnmapDescriptors, total <= drive.maxUnmapBlocks else {
            return .failure(.unmapBeyondLimits(descriptors: descriptors, blocks: total))
        }
        return .success(ranges)
    }

    // MARK: Completions

    /// The completion of a pass-through, from the registers the drive returned (status in `cmdStatus`, error in
    /// `errFeature`) and the data-in it sent.
    public func result(of request: ATAPassThroughRequest, registers: ATAHeader, dataIn: [UInt8] = []) -> SCSIResult {
        request.result(registers: registers, dataIn: dataIn)
    }

    /// Which of the block operations failed.
    public enum BlockOperation: Hashable, Sendable { case read, write, synchronizeCache, unmap }

    /// A READ, WRITE or SYNCHRONIZE CACHE the drive failed (its status shows ERR or DF), translated as SAT-3
    /// table 103 and libata do. The error's LBA registers become the INFORMATION field for reads and writes.
    public func failedTransferResult(_ operation: BlockOperation, registers: ATAHeader) -> SCSIResult {
        let error = ATAErrorRegister(rawValue: registers.errFeature)
        // 28-bit registers carry the Device register in LBA3; only 27:0 is the address.
        let address = registers.flags.contains(.extended) ? registers.lba : registers.lba & 0x0FFF_FFFF
        let failedLBA = operation == .read || operation == .write ? Optional(address) : nil
        if error.contains(.uncorrectable) {
            let sense: AdditionalSense = operation == .read ? .unrecoveredReadError : .writeErrorAutoReallocationFailed
            return .checkCondition(.mediumError, sense, information: failedLBA)
        }
        if error.contains(.idNotFound) { return .checkCondition(.illegalRequest, .logicalBlockAddressOutOfRange) }
        if error.contains(.interfaceCRC) { return .checkCondition(.abortedCommand, .parityError) }
        // ABRT, or a failure without a known error bit: the command did not happen; the kernel may retry it.
        return .checkCondition(.abortedCommand, .none)
    }

    /// The remote drive did not answer (no AoE response, target down): ABORTED COMMAND, LOGICAL UNIT
    /// COMMUNICATION FAILURE, which Linux retries and then fails the I/O with.
    public func transportFailureResult() -> SCSIResult {
        .checkCondition(.abortedCommand, .logicalUnitCommunicationFailure)
    }

    // MARK: Emulated commands

    private func transfer(write: Bool, lba: UInt64, blocks: UInt64, forceUnitAccess: Bool,
                          dataOutLength: Int, dataInLength: Int) -> SCSIAction {
        let bytes = Int(blocks) * IdentifyPage.size
        let (expectedIn, expectedOut) = write ? (0, bytes) : (bytes, 0)
        guard dataInLength == expectedIn, dataOutLength == expectedOut else {
            return .respond(.refused(.transferLengthMismatch(expectedIn: expectedIn, expectedOut: expectedOut,
                                                              dataIn: dataInLength, dataOut: dataOutLength)))
        }
        if let refusal = rangeRefusal(lba: lba, blocks: blocks) { return .respond(.refused(refusal)) }
        // SBC-3: a TRANSFER LENGTH of 0 moves nothing and is not an error.
        guard blocks > 0 else { return .respond(.good()) }
        return write ? .write(lba: lba, sectors: Int(blocks), forceUnitAccess: forceUnitAccess)
            : .read(lba: lba, sectors: Int(blocks))
    }

    /// SBC-3: the LBA must name a block (even when no block moves) and the range must end by the last one.
    private func rangeRefusal(lba: UInt64, blocks: UInt64) -> SCSIRefusal? {
        let (end, overflow) = lba.addingReportingOverflow(blocks)
        guard overflow || lba >= drive.capacitySectors || end > drive.capacitySectors else { return nil }
        return .logicalBlockAddressOutOfRange(lba: lba, blocks: blocks)
    }

    /// nil: refused (see `inquiryRefusal`).
    private func inquiry(_ cdb: [UInt8]) -> [UInt8]? {
        guard cdb[1] & 0x02 == 0 else { return nil }
        guard cdb[1] & 0x01 != 0 else {
            // PAGE CODE must be zero without EVPD (SPC-4 6.4.1).
            return cdb[2] == 0 ? InquiryData.standard(drive.identify) : nil
        }
        return InquiryData.page(cdb[2], drive)
    }

    private func inquiryRefusal(_ cdb: [UInt8]) -> SCSIRefusal {
        cdb[1] & 0x02 != 0 ? .commandSupportDataRequested : .unsupportedVPDPage(cdb[2])
    }

    private func modeSense(_ cdb: [UInt8]) -> Result<[UInt8], SCSIRefusal> {
        let six = cdb[0] == Opcode.modeSense6
        let withBlockDescriptor = cdb[1] & 0x08 == 0  // DBD clear
        let longLBA = !six && cdb[1] & 0x10 != 0  // LLBAA, MODE SENSE(10) only
        let pageCode = cdb[2] & 0x3F
        let subpage = cdb[3]
        guard let control = ModePages.PageControl(rawValue: cdb[2] >> 6), control != .saved else {
            return .failure(.savedModeValuesRequested)
        }
        // No page here has subpages: subpage 0, or FFh (all subpages) which is the same.
        guard subpage == 0 || subpage == 0xFF,
              let pages = ModePages.pages(pageCode, drive.identify, control) else {
            return .failure(.unsupportedModePage(page: pageCode, subpage: subpage))
        }
        let descriptor = withBlockDescriptor
            ? ModePages.blockDescriptor(capacity: drive.capacitySectors, long: longLBA) : []
        // DEVICE-SPECIFIC PARAMETER: WP 0, DPOFUA 0, so Linux flushes with SYNCHRONIZE CACHE instead of
        // sending FUA writes.
        let deviceSpecific: UInt8 = 0x00
        if six {
            let header: [UInt8] = [UInt8(clamping: 3 + descriptor.count + pages.count), 0x00, deviceSpecific,
                                   UInt8(descriptor.count)]
            return .success(header + descriptor + pages)
        }
        let dataLength = 6 + descriptor.count + pages.count
        let header: [UInt8] = [UInt8(dataLength >> 8), UInt8(truncatingIfNeeded: dataLength), 0x00, deviceSpecific,
                               longLBA && withBlockDescriptor ? 0x01 : 0x00, 0x00,
                               UInt8(descriptor.count >> 8), UInt8(truncatingIfNeeded: descriptor.count)]
        return .success(header + descriptor + pages)
    }

    /// READ CAPACITY(10) (SBC-3 5.15): last LBA, FFFFFFFFh when it does not fit (the kernel then asks (16)).
    private func readCapacity10() -> [UInt8] {
        var data = [UInt8](repeating: 0, count: 8)
        let lastLBA = drive.capacitySectors == 0 ? 0 : drive.capacitySectors - 1
        put32(UInt32(clamping: lastLBA), into: &data, at: 0)
        put32(UInt32(IdentifyPage.size), into: &data, at: 4)
        return data
    }

    /// READ CAPACITY(16) parameter data (SBC-3 5.16), 32 bytes.
    private func readCapacity16() -> [UInt8] {
        var data = [UInt8](repeating: 0, count: 32)
        let lastLBA = drive.capacitySectors == 0 ? 0 : drive.capacitySectors - 1
        put64(lastLBA, into: &data, at: 0)
        put32(UInt32(IdentifyPage.size), into: &data, at: 8)
        data[13] = drive.identify.logicalPerPhysicalExponent  // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT
        put16(drive.identify.lowestAlignedLBA & 0x3FFF, into: &data, at: 14)
        // LBPME: UNMAP is served (Linux then reads VPD B0h and B2h); LBPRZ: unmapped blocks read as zeros.
        if drive.trimBlocksPerCommand > 0 {
            data[14] |= 0x80 | (drive.identify.trimReadsZeros ? 0x40 : 0)
        }
        return data
    }
}
