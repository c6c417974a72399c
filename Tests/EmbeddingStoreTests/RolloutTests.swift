import Foundation
import Testing
@testable import EmbeddingStore

/// The rollout split (README, "Staged rollout"): shares as asked, stable, and monotone as a
/// candidate's share is raised.
@Suite struct RolloutTests {
    static func units(_ kind: String) -> [UInt64] {
        var state: UInt64 = 12_345
        return (0..<1_000_000).map { i in
            if kind == "consecutive" { return UInt64(i) }
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state
        }
    }

    /// Over 1,000,000 units every variant's share is within 0.2 percentage points of its
    /// fraction (the binomial's standard deviation is at most 0.05 points).
    @Test(arguments: ["consecutive", "random"]) func sharesAreTheFractions(kind: String) throws {
        let units = Self.units(kind)
        for fraction in [0.0, 0.01, 0.05, 0.25, 0.5, 1.0] {
            let rollout = try Rollout(baseline: "A", candidate: "B", fraction: fraction, salt: "salt-\(kind)")
            let candidate = rollout.variants(for: units).reduce(0) { $0 + Int($1) }
            #expect(abs(Double(candidate) / 1e6 - fraction) < 0.002, "\(kind) \(fraction): \(candidate)")
        }
        // Two candidates, each in its own half of the rule's range.
        var two = try Rollout(baseline: "A", candidate: "B", fraction: 0.1, salt: "two")
        two.variants.append(.init(name: "C", store: "C", fraction: 0.3))
        two.variants[0].fraction = 0.6
        try two.check()
        var counts = [0, 0, 0]
        for v in two.variants(for: units) { counts[Int(v)] += 1 }
        for (share, expected) in zip(counts.map { Double($0) / 1e6 }, [0.6, 0.1, 0.3]) { #expect(abs(share - expected) < 0.002, "\(counts)") }
    }

    @Test func raisingAShareOnlyMovesUnitsIntoTheCandidate() throws {
        let units = Self.units("random")
        var rollout = try Rollout(baseline: "A", candidate: "B", fraction: 0.05, salt: "stable")
        let at5 = rollout.variants(for: units)
        try rollout.advance(to: [0.25])
        let at25 = rollout.variants(for: units)
        #expect(zip(at5, at25).allSatisfy { $0 == 0 || $1 == 1 }, "a unit exposed at 5% left the candidate at 25%")
        #expect(zip(at5, at25).filter { $0 == 0 && $1 == 1 }.count > 150_000)
        try rollout.rollback()
        #expect(rollout.variants(for: units) == at5 && rollout.history.isEmpty)
        // Another salt splits otherwise; the same salt in a new value splits the same.
        #expect(try Rollout(baseline: "A", candidate: "B", fraction: 0.05, salt: "other").variants(for: units) != at5)
        #expect(try Rollout(baseline: "X", candidate: "Y", fraction: 0.05, salt: "stable").variants(for: units) == at5)
        #expect(units.prefix(1000).allSatisfy { rollout.variant(for: $0) == Int(at5[units.firstIndex(of: $0)!]) })
    }

    @Test func badRolloutsAreRefused() throws {
        for fraction in [-0.1, 1.5, Double.nan] {
            #expect(throws: StoreError.self) { _ = try Rollout(baseline: "A", candidate: "B", fraction: fraction, salt: "s") }
        }
        var rollout = try Rollout(baseline: "A", candidate: "B", fraction: 0.05, salt: "s")
        #expect(throws: StoreError.self) { try rollout.rollback() }
        #expect(throws: StoreError.self) { try rollout.advance(to: [0.1, 0.2]) }
        #expect(throws: StoreError.self) { try rollout.advance(to: [2]) }
        #expect(rollout.candidateFractions == [0.05] && rollout.history.isEmpty)   // refused advances changed nothing
        let directory = TemporaryDirectory()
        let path = directory.file("r.json")
        try rollout.write(to: path)
        #expect(try Rollout.read(from: path) == rollout)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["r.json"])
        for (old, new) in [("\"embstore-rollout\"", "\"other\""), ("\"version\" : 1", "\"version\" : 7")] {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            try text.replacingOccurrences(of: old, with: new).write(toFile: directory.file("bad.json"), atomically: true, encoding: .utf8)
            #expect(throws: StoreError.self) { _ = try Rollout.read(from: directory.file("bad.json")) }
        }
    }
}
