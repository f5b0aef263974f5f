import XCTest
@testable import AoETarget
import AoEWire

final class ExportAccessTests: XCTestCase {
    let a = MACAddress("02:00:00:00:00:0a")!
    let b = MACAddress("02:00:00:00:00:0b")!

    func testReserveListWhoseReplyWouldNotFitIsBadArgument() {
        var access = ExportAccess()
        let many = (0..<250).map { MACAddress(rawValue: 0x0200_0000_0000 + UInt64($0)) }
        // 26 + 250 x 6 = 1526 bytes: more than a 1514-byte frame at MTU 1500, less than at 9000.
        XCTAssertEqual(access.handleReserve(ReserveArg(command: .set, macs: many), from: a, maxFrameLength: 1514), .error(.badArgument))
        XCTAssertTrue(access.reservation.isEmpty, "a refused set changes nothing")
        guard case .reply(let reply) = access.handleReserve(ReserveArg(command: .set, macs: many), from: a, maxFrameLength: 9014) else { return XCTFail() }
        XCTAssertEqual(reply.macs.count, 250)
    }

    func testReleaseBySetWithNoAddresses() {
        var access = ExportAccess()
        _ = access.handleReserve(ReserveArg(command: .set, macs: [a]), from: a, maxFrameLength: 1514)
        XCTAssertFalse(access.reservationAdmits(b, isIdentify: false))
        XCTAssertTrue(access.reservationAdmits(b, isIdentify: true))
        XCTAssertEqual(access.handleReserve(ReserveArg(command: .set, macs: []), from: b, maxFrameLength: 1514), .error(.targetReserved))
        _ = access.handleReserve(ReserveArg(command: .set, macs: []), from: a, maxFrameLength: 1514)
        XCTAssertTrue(access.reservationAdmits(b, isIdentify: false))
        XCTAssertEqual(access.handleReserve(ReserveArg(command: ReserveCommand(rawValue: 3)), from: a, maxFrameLength: 1514), .error(.badArgument))
    }

    func testMaskListFullAndUnknownCommand() {
        var access = ExportAccess()
        let full = (0..<ExportAccess.maskCapacity).map { MaskDirective(command: .add, mac: MACAddress(rawValue: 0x0200_0000_0000 + UInt64($0))) }
        guard case .reply(let ok) = access.handleMask(MaskListArg(command: .edit, directives: full)) else { return XCTFail() }
        XCTAssertEqual(ok.directives.count, ExportAccess.maskCapacity)
        let newcomer = MACAddress("04:00:00:00:00:01")!
        guard case .reply(let overflow) = access.handleMask(MaskListArg(command: .edit, directives: [MaskDirective(command: .add, mac: newcomer)])) else { return XCTFail() }
        XCTAssertEqual(overflow.error, .listFull)
        XCTAssertEqual(overflow.directiveCountOverride, 0)
        XCTAssertEqual(access.handleMask(MaskListArg(command: MaskCommand(rawValue: 5))), .error(.badArgument))
    }
}
