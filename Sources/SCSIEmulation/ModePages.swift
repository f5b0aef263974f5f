import ATACore

/// MODE SENSE (6)/(10) parameter data (SPC-4 7.5, SBC-3 6.4, SAT-3 10.4). Nothing is changeable: there is no
/// MODE SELECT, so the changeable mask is all zeros, and defaults are the drive's current settings.
enum ModePages {
    enum PageControl: UInt8 { case current = 0, changeable = 1, defaults = 2, saved = 3 }

    static let caching: UInt8 = 0x08
    static let control: UInt8 = 0x0A
    static let informationalExceptions: UInt8 = 0x1C
    static let all: UInt8 = 0x3F

    /// The pages for `code`, in ascending page order for 3Fh; nil when not emulated.
    static func pages(_ code: UInt8, _ id: IdentifyPage, _ control: PageControl) -> [UInt8]? {
        let changeable = control == .changeable
        switch code {
        case caching: return cachingPage(id, changeable: changeable)
        case Self.control: return controlPage(changeable: changeable)
        case informationalExceptions: return informationalExceptionsPage(id, changeable: changeable)
        case all:
            return cachingPage(id, changeable: changeable) + controlPage(changeable: changeable)
                + informationalExceptionsPage(id, changeable: changeable)
        default: return nil
        }
    }

    /// 08h Caching (SBC-3 6.4.5), 20 bytes. SAT-3 10.4.4: WCE from word 85 bit 5 (write cache enabled) and DRA
    /// (byte 12 bit 5, disable read-ahead) from word 85 bit 6 (look-ahead enabled) inverted; RCD stays 0.
    private static func cachingPage(_ id: IdentifyPage, changeable: Bool) -> [UInt8] {
        var page = [UInt8](repeating: 0, count: 20)
        page[0] = caching
        page[1] = 0x12
        guard !changeable else { return page }
        if id.words[85] & 0x0020 != 0 { page[2] |= 0x04 }  // WCE
        if id.words[85] & 0x0040 == 0 { page[12] |= 0x20 }  // DRA
        return page
    }

    /// 0Ah Control (SPC-4 7.5.8), 12 bytes: GLTSD (no implicit log saving, as SAT says), D_SENSE 0 (fixed
    /// format sense unless a pass-through asks for its registers), BUSY TIMEOUT PERIOD FFFFh (unlimited).
    private static func controlPage(changeable: Bool) -> [UInt8] {
        var page = [UInt8](repeating: 0, count: 12)
        page[0] = control
        page[1] = 0x0A
        guard !changeable else { return page }
        page[2] = 0x02  // GLTSD
        page[8] = 0xFF
        page[9] = 0xFF
        return page
    }

    /// 1Ch Informational Exceptions Control (SPC-4 7.5.12, SAT-3 10.4.7), 12 bytes: DEXCPT set unless SMART is
    /// enabled (word 85 bit 0); MRIE 6, report only on request (the drive's state is read by pass-through).
    private static func informationalExceptionsPage(_ id: IdentifyPage, changeable: Bool) -> [UInt8] {
        var page = [UInt8](repeating: 0, count: 12)
        page[0] = informationalExceptions
        page[1] = 0x0A
        guard !changeable else { return page }
        if !id.smartEnabled { page[2] |= 0x08 }  // DEXCPT
        page[3] = 0x06  // MRIE
        return page
    }

    /// Block descriptor (SBC-3 6.4.2): short (8 bytes, block count clamped to FFFFFFFFh) or long LBA (16 bytes).
    static func blockDescriptor(capacity: UInt64, long: Bool) -> [UInt8] {
        if long {
            var descriptor = [UInt8](repeating: 0, count: 16)
            put64(capacity, into: &descriptor, at: 0)
            put32(UInt32(IdentifyPage.size), into: &descriptor, at: 12)
            return descriptor
        }
        var descriptor = [UInt8](repeating: 0, count: 8)
        put32(UInt32(clamping: capacity), into: &descriptor, at: 0)
        put32(UInt32(IdentifyPage.size), into: &descriptor, at: 4)  // byte 4 reserved, 5-7 LOGICAL BLOCK LENGTH
        return descriptor
    }
}
