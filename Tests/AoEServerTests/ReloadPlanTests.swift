import XCTest
@testable import AoEServer
import AoEWire

final class ReloadPlanTests: XCTestCase {
    func spec(_ exports: [ExportSpec]) -> ServerSpec { ServerSpec(exports: exports) }
    func export(_ slot: UInt8, path: String? = nil, _ change: (inout ExportSpec) -> Void = { _ in }) -> ExportSpec {
        var e = ExportSpec(address: ShelfSlot(shelf: 1, slot: slot), interfaces: ["eth1"], path: path ?? "/srv/\(slot).img")
        change(&e)
        return e
    }

    func testEachKindOfChangeGetsItsAction() {
        let old = spec([export(1), export(2), export(3), export(4), export(5), export(6), export(8), export(9)])
        let new = spec([
            export(1),                                              // unchanged
            export(2) { $0.mask = [MACAddress("02:00:00:00:00:01")!] },   // state only
            export(3) { $0.configString = "new"; $0.buffers = 16 },  // state and the Buffer Count: live
            export(4, path: "/srv/other.img"),                      // device
            export(5) { $0.sync = true; $0.readOnly = true },       // serving settings: live
            export(7),                                              // new
            export(8) { $0.ioEngine = .threads },                   // engine: reopened
            export(9) { $0.direct = true },                         // how the device is opened
        ])
        let plan = Server.plan(from: old, to: new)
        XCTAssertEqual(plan[ShelfSlot(shelf: 1, slot: 1)], .keep)
        XCTAssertEqual(plan[ShelfSlot(shelf: 1, slot: 2)], .applyState)
        XCTAssertEqual(plan[ShelfSlot(shelf: 1, slot: 3)], .applyState)
        XCTAssertEqual(plan[ShelfSlot(shelf: 1, slot: 4)], .restart)
        XCTAssertEqual(plan[ShelfSlot(shelf: 1, slot: 5)], .applyState)
        XCTAssertEqual(plan[ShelfSlot(shelf: 1, slot: 6)], .remove)
        XCTAssertEqual(plan[ShelfSlot(shelf: 1, slot: 7)], .add)
        XCTAssertEqual(plan[ShelfSlot(shelf: 1, slot: 8)], .restart)
        XCTAssertEqual(plan[ShelfSlot(shelf: 1, slot: 9)], .restart)
        XCTAssertEqual(plan.count, 9)
    }

    func testMovingLinesAroundIsNoChange() {
        var moved = export(1)
        moved.origin = SourceLocation(file: "aoe.toml", line: 40)
        moved.keyOrigins = ["path": SourceLocation(file: "aoe.toml", line: 44)]
        XCTAssertEqual(Server.plan(from: spec([export(1)]), to: spec([moved])), [ShelfSlot(shelf: 1, slot: 1): .keep])
    }

    func testAddingAnInterfaceRestartsTheExport() {
        let plan = Server.plan(from: spec([export(1)]), to: spec([export(1) { $0.interfaces.append("eth2") }]))
        XCTAssertEqual(plan[ShelfSlot(shelf: 1, slot: 1)], .restart)
    }
}
