import XCTest
@testable import AoETarget

final class MergeRuleTests: XCTestCase {
    typealias C = MergeRule.Candidate

    func runs(_ candidates: [C], maxMembers: Int = 32, maxSectors: Int = .max) -> (sorted: [C], runs: [Int]) {
        var c = candidates
        var r: [Int] = []
        MergeRule.group(&c, maxMembers: maxMembers, maxSectors: maxSectors, runs: &r)
        return (c, r)
    }

    func testInterleavedFramesOfTwoReadsBecomeTwoTransfers() {
        // aoectl round-robins the frames of concurrent I/Os: 0-1, 100-101, 2-3, 102-103.
        let (sorted, r) = runs([C(slot: 0, kind: .read, lba: 0, sectors: 2), C(slot: 1, kind: .read, lba: 100, sectors: 2),
                                C(slot: 2, kind: .read, lba: 2, sectors: 2), C(slot: 3, kind: .read, lba: 102, sectors: 2)])
        XCTAssertEqual(sorted.map(\.slot), [0, 2, 1, 3])
        XCTAssertEqual(r, [2, 2])
    }

    func testKindsNeverMixAndFlushesComeLastUnmerged() {
        let (sorted, r) = runs([C(slot: 5, kind: .single), C(slot: 0, kind: .write, lba: 0, sectors: 1),
                                C(slot: 1, kind: .durableWrite, lba: 1, sectors: 1), C(slot: 2, kind: .read, lba: 2, sectors: 1),
                                C(slot: 6, kind: .single), C(slot: 3, kind: .write, lba: 1, sectors: 1)])
        XCTAssertEqual(sorted.map(\.kind), [.read, .write, .write, .durableWrite, .single, .single])
        // The two plain writes continue each other; a durable write at the same place does not join them.
        XCTAssertEqual(r, [1, 2, 1, 1, 1])
    }

    func testAGapOrALimitEndsATransfer() {
        let gap = runs([C(slot: 0, kind: .read, lba: 0, sectors: 2), C(slot: 1, kind: .read, lba: 3, sectors: 2)])
        XCTAssertEqual(gap.runs, [1, 1], "a sector between them")
        let many = (0..<10).map { C(slot: Int32($0), kind: .write, lba: UInt64($0 * 2), sectors: 2) }
        XCTAssertEqual(runs(many, maxMembers: 4).runs, [4, 4, 2])
        XCTAssertEqual(runs(many, maxSectors: 6).runs, [3, 3, 3, 1])
        XCTAssertEqual(runs(many).runs, [10])
    }
}

final class GroupCommitTests: XCTestCase {
    func testACommitCoversWhatCompletedBeforeItWasQueuedAndNothingAfter() {
        var commits = GroupCommit(capacity: 16)
        XCTAssertNil(commits.startCommit(), "nothing waits")
        commits.writeCompleted(1)
        commits.writeCompleted(2)
        let first = commits.startCommit()
        XCTAssertEqual(first, 0)
        commits.writeCompleted(3)   // completed after the first commit was queued: not covered by it
        let second = commits.startCommit()
        XCTAssertEqual(second, 1)
        var covered: [Int] = []
        commits.finish(0) { covered.append($0) }
        XCTAssertEqual(covered, [1, 2])
        covered = []
        commits.finish(1) { covered.append($0) }
        XCTAssertEqual(covered, [3])
        XCTAssertEqual(commits.inFlight, 0)
    }

    func testAtMostMaxCommitsRunAtOnce() {
        var commits = GroupCommit(capacity: 16)
        for i in 0..<GroupCommit.maxCommits {
            commits.writeCompleted(i)
            XCTAssertEqual(commits.startCommit(), i)
        }
        commits.writeCompleted(99)
        XCTAssertNil(commits.startCommit(), "every commit is in flight: the write waits")
        XCTAssertEqual(commits.waiting, [99])
        commits.finish(2) { _ in }
        XCTAssertEqual(commits.startCommit(), 2, "a freed commit takes what waits")
        XCTAssertEqual(commits.waiting, [])
    }
}
