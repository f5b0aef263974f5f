import XCTest
@testable import RBDDevice

final class RBDImageNameTests: XCTestCase {
    func testPoolAndImage() throws {
        let name = try RBDImageName(parsing: "rbd:rbd/disk1")
        XCTAssertEqual(name, RBDImageName(pool: "rbd", image: "disk1"))
        XCTAssertEqual(name.description, "rbd:rbd/disk1")
    }

    func testPoolNamespaceAndImage() throws {
        let name = try RBDImageName(parsing: "rbd:vms/tenant-a/boot")
        XCTAssertEqual(name, RBDImageName(pool: "vms", namespace: "tenant-a", image: "boot"))
        XCTAssertEqual(name.description, "rbd:vms/tenant-a/boot")
    }

    func testOnlyTheSchemeMakesAnRBDPath() {
        XCTAssertTrue(RBDImageName.isRBD("rbd:x/y"))
        XCTAssertFalse(RBDImageName.isRBD("/dev/rbd0"))
        XCTAssertFalse(RBDImageName.isRBD("null:1G"))
    }

    func testMalformedNamesSayWhatIsExpected() {
        for bad in ["rbd:", "rbd:pool", "rbd:/image", "rbd:pool/", "rbd:a/b/c/d", "rbd:pool//image"] {
            XCTAssertThrowsError(try RBDImageName(parsing: bad), bad) { error in
                XCTAssertEqual((error as? RBDNameError)?.description, "\(bad): name the image as rbd:POOL/IMAGE or rbd:POOL/NAMESPACE/IMAGE")
            }
        }
    }

    func testSnapshotsAndSpacesAreRefused() {
        XCTAssertThrowsError(try RBDImageName(parsing: "rbd:pool/image@snap")) { error in
            XCTAssertEqual((error as? RBDNameError)?.message, "snapshots are not served (they are read-only views): drop '@…'")
        }
        XCTAssertThrowsError(try RBDImageName(parsing: "rbd:my pool/image")) { error in
            XCTAssertEqual((error as? RBDNameError)?.message, "'my pool' contains a space or control character")
        }
    }
}
