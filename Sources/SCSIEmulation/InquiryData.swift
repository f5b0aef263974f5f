import ATACore

/// IDENTIFY fields as SAT reads them.
extension IdentifyPage {
    /// An ATA string as stored (first character of each pair in the high byte), padding and all.
    func ataString(word first: Int, words count: Int) -> [UInt8] {
        (first..<(first + count)).flatMap { [UInt8(words[$0] >> 8), UInt8(truncatingIfNeeded: words[$0])] }
    }

    var serialField: [UInt8] { ataString(word: 10, words: 10) }
    var firmwareField: [UInt8] { ataString(word: 23, words: 4) }
    var modelField: [UInt8] { ataString(word: 27, words: 20) }

    /// Word 87 bits 15:14 = 01b (word valid) and bit 8: words 108-111 hold the World Wide Name.
    var hasWorldWideName: Bool { words[87] & 0xC100 == 0x4100 }
    var worldWideName: [UInt8] { ataString(word: 108, words: 4) }

    /// Word 106 (valid when bits 15:14 = 01b): bit 13 says bits 3:0 are log2 of logical sectors per physical.
    var logicalPerPhysicalExponent: UInt8 {
        let w = words[106]
        guard w & 0xC000 == 0x4000, w & 0x2000 != 0 else { return 0 }
        return UInt8(w & 0x000F)
    }

    /// Word 209 (valid when bits 15:14 = 01b): offset of LBA 0 within the first physical sector; SCSI reports
    /// the first LBA that starts one (READ CAPACITY(16) LOWEST ALIGNED LOGICAL BLOCK ADDRESS).
    var lowestAlignedLBA: UInt16 {
        let w = words[209]
        guard w & 0xC000 == 0x4000 else { return 0 }
        let offset = w & 0x3FFF
        return offset == 0 ? 0 : (1 << UInt16(logicalPerPhysicalExponent)) &- offset
    }

    /// Major version from word 80 (the highest ATA/ACS version bit): words 168 and 217 mean something from
    /// ATA8-ACS (7) on; before they were vendor-specific.
    private var majorVersion: Int {
        let w = words[80]
        guard w != 0, w != 0xFFFF else { return 0 }
        return 15 - w.leadingZeroBitCount
    }

    /// Word 217 NOMINAL MEDIA ROTATION RATE: 1 = non-rotating, 0401h-FFFEh rpm; 2-0400h are reserved.
    var mediumRotationRate: UInt16 {
        let w = words[217]
        guard majorVersion >= 7, w != 0xFFFF, w < 2 || w > 0x400 else { return 0 }
        return w
    }

    /// Word 168 bits 3:0 NOMINAL FORM FACTOR (1 = 5.25", 2 = 3.5", 3 = 2.5", 4 = 1.8", 5 = smaller); the same
    /// codes as SBC's field.
    var nominalFormFactor: UInt8 {
        let w = words[168]
        guard majorVersion >= 7, w != 0xFFFF, w & 0xF <= 5 else { return 0 }
        return UInt8(w & 0xF)
    }
}

/// INQUIRY data (SPC-4 6.4, SAT-3 8.1 and 10.3).
enum InquiryData {
    static let vendor = Array("ATA     ".utf8)  // SAT: T10 VENDOR IDENTIFICATION of an ATA device; smartctl keys on it
    /// The SATL's own names in page 89h (SAT-3 10.3.4).
    static let satVendor = Array("AoE     ".utf8)
    static let satProduct = Array("aoectl TCMU SATL".utf8)
    static let satRevision = Array("1.0 ".utf8)
    /// B2h only for a drive with TRIM.
    static func supportedPages(_ drive: DriveDescription) -> [UInt8] {
        [0x00, 0x80, 0x83, 0x89, 0xB0, 0xB1] + (drive.trimBlocksPerCommand > 0 ? [0xB2] : [])
    }

    /// Standard INQUIRY data, 36 bytes.
    static func standard(_ id: IdentifyPage) -> [UInt8] {
        var data = [UInt8](repeating: 0, count: 36)
        data[0] = 0x00  // peripheral qualifier 0, device type 0: direct access block device
        data[2] = 0x06  // VERSION: SPC-4
        data[3] = 0x02  // RESPONSE DATA FORMAT 2
        data[4] = UInt8(data.count - 5)  // ADDITIONAL LENGTH: bytes after byte 4
        data[7] = 0x02  // CMDQUE: the caller keeps several commands in flight
        data.replaceSubrange(8..<16, with: vendor)
        data.replaceSubrange(16..<32, with: id.modelField.prefix(16))
        data.replaceSubrange(32..<36, with: revision(id))
        return data
    }

    /// SAT-3 8.1.2: the last four characters of the firmware revision unless they are blank, then the first
    /// four; "n/a " when that starts blank too (libata does the same).
    static func revision(_ id: IdentifyPage) -> [UInt8] {
        let firmware = id.firmwareField
        var revision = Array(firmware[4..<8])
        if revision == Array("    ".utf8) { revision = Array(firmware[0..<4]) }
        if revision[0] == 0 || revision[0] == 0x20 { revision = Array("n/a ".utf8) }
        return revision
    }

    static func page(_ code: UInt8, _ drive: DriveDescription) -> [UInt8]? {
        let id = drive.identify
        switch code {
        case 0x00: return vpd(code, supportedPages(drive))
        case 0x80: return vpd(code, id.serialField)
        case 0x83: return vpd(code, deviceIdentification(id))
        case 0x89: return vpd(code, ataInformation(id))
        case 0xB0: return vpd(code, blockLimits(drive))
        case 0xB1: return vpd(code, blockDeviceCharacteristics(id))
        case 0xB2 where drive.trimBlocksPerCommand > 0: return vpd(code, logicalBlockProvisioning(drive))
        default: return nil
        }
    }

    /// VPD header: qualifier/type, page code, 16-bit PAGE LENGTH.
    private static func vpd(_ code: UInt8, _ body: [UInt8]) -> [UInt8] {
        [0x00, code, UInt8(body.count >> 8), UInt8(truncatingIfNeeded: body.count)] + body
    }

    /// 83h: a T10 vendor ID designator "ATA     " + model + serial (SAT-3 10.3.3), then the NAA designator from
    /// the World Wide Name when IDENTIFY has one.
    private static func deviceIdentification(_ id: IdentifyPage) -> [UInt8] {
        let t10 = vendor + id.modelField + id.serialField
        // code set 2 (ASCII); association 0 (logical unit), designator type 1 (T10 vendor ID)
        var body: [UInt8] = [0x02, 0x01, 0x00, UInt8(t10.count)] + t10
        if id.hasWorldWideName {
            // code set 1 (binary); association 0, designator type 3 (NAA); the WWN starts with its NAA nibble
            body += [0x01, 0x03, 0x00, 0x08] + id.worldWideName
        }
        return body
    }

    /// 89h ATA Information (SAT-3 10.3.4): PAGE LENGTH 0238h.
    private static func ataInformation(_ id: IdentifyPage) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: 0x238)
        // Offsets below are page offsets minus the 4-byte header.
        body.replaceSubrange(4..<12, with: satVendor)
        body.replaceSubrange(12..<28, with: satProduct)
        body.replaceSubrange(28..<32, with: satRevision)
        // Page bytes 36-55: the device signature as a D2H Register FIS. AoE gives no signature, so this is the one
        // every ATA (non-packet) device shows after reset: status 50h, error 01h, count 1, LBA 1.
        body[32] = 0x34  // FIS type: Register - Device to Host
        body[33] = 0x00  // PM port 0, interrupt bit clear
        body[34] = 0x50  // status: DRDY | DSC
        body[35] = 0x01  // error: 01h, diagnostics passed
        body[36] = 0x01  // LBA 7:0
        body[44] = 0x01  // count 7:0
        body[52] = 0xEC  // page byte 56 COMMAND CODE: the data below is IDENTIFY DEVICE's
        body.replaceSubrange(56..<568, with: id.bytes)  // page bytes 60-571, in the drive's byte order
        return body
    }

    /// B0h Block Limits (SBC-3 6.5.3), PAGE LENGTH 3Ch.
    private static func blockLimits(_ drive: DriveDescription) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: 0x3C)
        let granularity = UInt16(1) << UInt16(drive.identify.logicalPerPhysicalExponent)
        put16(granularity, into: &body, at: 2)  // page 6-7: OPTIMAL TRANSFER LENGTH GRANULARITY = one physical block
        let maximum = UInt32(clamping: drive.maxTransferSectors)
        put32(maximum, into: &body, at: 4)  // page 8-11: MAXIMUM TRANSFER LENGTH
        put32(maximum, into: &body, at: 8)  // page 12-15: OPTIMAL TRANSFER LENGTH
        if drive.trimBlocksPerCommand > 0 {
            put32(UInt32(clamping: drive.maxUnmapBlocks), into: &body, at: 16)  // page 20-23: MAXIMUM UNMAP LBA COUNT
            put32(UInt32(SCSIDisk.maxUnmapDescriptors), into: &body, at: 20)  // page 24-27: MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
        }
        return body
    }

    /// B2h Logical Block Provisioning (SBC-3 6.6.4), PAGE LENGTH 4: LBPU (UNMAP is served), LBPRZ when unmapped
    /// blocks read as zeros, provisioning type 2 (thin: the target gives the space back).
    private static func logicalBlockProvisioning(_ drive: DriveDescription) -> [UInt8] {
        [0x00, 0x80 | (drive.identify.trimReadsZeros ? 0x04 : 0), 0x02, 0x00]
    }

    /// B1h Block Device Characteristics (SBC-3 6.5.2), PAGE LENGTH 3Ch.
    private static func blockDeviceCharacteristics(_ id: IdentifyPage) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: 0x3C)
        put16(id.mediumRotationRate, into: &body, at: 0)  // page 4-5: MEDIUM ROTATION RATE
        body[3] = id.nominalFormFactor  // page 7 bits 3:0: NOMINAL FORM FACTOR
        return body
    }
}
