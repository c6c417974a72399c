import Foundation
import Testing

/// `embstore rollout`: files changed atomically stage by stage, and `assign` gives every unit
/// the same variant in every process.
@Suite struct RolloutCommandTests {
    @Test func stagesAndAnAuditThatTwoProcessesAgreeOn() throws {
        try withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("r.json").path
            let create = try embstoreOK("rollout", "create", file, "--baseline", "A", "--candidate", "B", "--fraction", "0.05")
            #expect(create.stdout.contains("candidate") && create.stdout.contains("5.000%"), "\(create.stdout)")
            #expect(try embstore("rollout", "create", file, "--baseline", "A", "--candidate", "B", "--fraction", "0.05").status != 0)
            let units = directory.appendingPathComponent("u.npy")
            try writeUInt64((0..<1_000_000).map { UInt64($0) &* 2_654_435_761 }, to: units)
            func assign(_ name: String) throws -> (Data, String) {
                let out = directory.appendingPathComponent(name)
                let run = try embstoreOK("rollout", "assign", file, "--units", units.path, "--out", out.path)
                return (try Data(contentsOf: out), run.stdout)
            }
            let (first, line) = try assign("v1.npy")
            let (second, _) = try assign("v2.npy")   // another process
            #expect(first == second)
            let share = line.split(separator: "(").dropFirst(2).first.flatMap { Double($0.prefix { $0 != "%" }) } ?? -1
            #expect(abs(share - 5) < 0.2, "\(line)")
            try embstoreOK("rollout", "advance", file, "--fraction", "0.25")
            let (wider, _) = try assign("v3.npy")
            let header = 128   // numpy's version 1.0 header for a 1-D uint8 array
            #expect(zip(first.dropFirst(header), wider.dropFirst(header)).allSatisfy { $0 == 0 || $1 == 1 })
            let show = try embstoreOK("rollout", "show", file).stdout
            #expect(show.contains("25.000%") && show.contains("previous stage") && show.contains("5.000%"), "\(show)")
            try embstoreOK("rollout", "rollback", file)
            let (back, _) = try assign("v4.npy")
            #expect(back == first)
            #expect(try embstore("rollout", "rollback", file).stderr.contains("no earlier stage"))
            #expect(try embstore("rollout", "advance", file, "--fraction", "1.5").status != 0)
            #expect(Set(try FileManager.default.contentsOfDirectory(atPath: directory.path)).filter { $0.contains("writing") }.isEmpty)
        }
    }
}
