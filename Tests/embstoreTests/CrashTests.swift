import Foundation
import Testing

/// `embstore ingest`, `compact` and `repack` killed with SIGKILL part-way, at the writers' crash points
/// (`EMBSTORE_CRASH_AT`, Sources/EmbeddingStore/CrashPoints.swift: the process kills itself at
/// an exact step, so the test needs no timing). Afterwards the store opens, verifies, and holds
/// exactly its last committed state: a first load killed before its last commit leaves no table
/// (issue 9 found an empty one in 12 of 24 kills), one killed after it the whole table.
@Suite struct CrashTests {
    static let rows = randomRows(3_000, 8, seed: 21)

    /// Runs `ingest` with the crash point set and requires that it died by SIGKILL.
    static func killedIngest(_ store: URL, table: String, vectors: URL, at point: String, _ extra: [String]) throws {
        let run = try embstore(["ingest", store.path, "--table", table, "--vectors", vectors.path, "--quiet"] + extra,
                               environment: ["EMBSTORE_CRASH_AT": point])
        guard run.signal == SIGKILL else { throw TestFailure("ingest with EMBSTORE_CRASH_AT=\(point) was not killed: \(run)") }
    }

    @Test(arguments: [("load.table-created", ["--codec", "tc:2"]), ("load.parameters-stored", ["--codec", "tc:2"]),
                      ("segment.before-commit", ["--codec", "int8"]), ("segment.committed", ["--codec", "int8"]),
                      ("perkey.committed", ["--codec", "fp16", "--layout", "per-key"])])
    func aFirstLoadKilledPartWay(point: String, options: [String]) throws {
        try withTemporaryDirectory { dir in
            let vectors = dir.appendingPathComponent("x.npy"), store = dir.appendingPathComponent("store")
            try writeFloat32(Self.rows, to: vectors)
            try embstoreOK("ingest", store.path, "--table", "kept", "--vectors", vectors.path, "--codec", "fp32", "--quiet")
            let kept = try exportTable(store, "kept", in: dir)
            try Self.killedIngest(store, table: "t", vectors: vectors, at: point, options)
            let committed = point == "segment.committed" || point == "perkey.committed"   // killed after its last commit
            let info = try embstoreOK("info", store.path)
            #expect(info.stdout.contains("table 't'") == committed, "killed at \(point): \(info)")
            try embstoreOK("verify", store.path)
            #expect(try exportTable(store, "kept", in: dir) == kept)
            if committed {
                #expect(try exportTable(store, "t", in: dir).ids == (0..<3_000).map { UInt64($0) })
            }
            // The next load of the name works (taking over what the killed one left).
            let again = try embstore(["ingest", store.path, "--table", "t", "--vectors", vectors.path, "--quiet"] + options)
            #expect(again.status == 0, "\(again)")
            #expect(try exportTable(store, "t", in: dir).ids == (0..<3_000).map { UInt64($0) })
            try embstoreOK("verify", store.path)
        }
    }

    /// A re-ingest killed before its last commit leaves the table's rows as they were.
    @Test func aReloadKilledBeforeItsCommitLeavesTheOldRows() throws {
        try withTemporaryDirectory { dir in
            let vectors = dir.appendingPathComponent("x.npy"), newer = dir.appendingPathComponent("y.npy")
            let store = dir.appendingPathComponent("store")
            try writeFloat32(Self.rows, to: vectors)
            try writeFloat32(randomRows(3_000, 8, seed: 22), to: newer)
            try embstoreOK("ingest", store.path, "--table", "t", "--vectors", vectors.path, "--codec", "int8", "--quiet")
            let before = try exportTable(store, "t", in: dir)
            try Self.killedIngest(store, table: "t", vectors: newer, at: "segment.before-commit", ["--codec", "int8"])
            try embstoreOK("verify", store.path)
            #expect(try exportTable(store, "t", in: dir) == before)
        }
    }

    /// `compact --out NEW` killed part-way leaves no NEW (the copy is built and verified in a
    /// staging directory, then renamed); the next compaction to NEW removes the staging one. The
    /// store has a table a killed load was creating, so the copy is compacted twice.
    @Test(arguments: ["compact.copied", "compact.before-publish"])
    func aCompactionKilledPartWayLeavesNoOutput(point: String) throws {
        try withTemporaryDirectory { dir in
            let vectors = dir.appendingPathComponent("x.npy"), store = dir.appendingPathComponent("store")
            let out = dir.appendingPathComponent("compacted")
            try writeFloat32(Self.rows, to: vectors)
            try embstoreOK("ingest", store.path, "--table", "kept", "--vectors", vectors.path, "--codec", "int8", "--quiet")
            try Self.killedIngest(store, table: "t", vectors: vectors, at: "load.table-created", ["--codec", "int8"])
            let killed = try embstore(["compact", store.path, "--out", out.path], environment: ["EMBSTORE_CRASH_AT": point])
            #expect(killed.signal == SIGKILL, "\(killed)")
            #expect(!FileManager.default.fileExists(atPath: out.path))
            let staging = { try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("compacted.compacting-") } }
            #expect(try staging().count == 1)
            let run = try embstoreOK("compact", store.path, "--out", out.path)
            #expect(run.stdout.contains("1 table(s) a killed load was creating left out"), "\(run)")
            #expect(try staging().isEmpty)
            try embstoreOK("verify", out.path)
            #expect(try exportTable(out, "kept", in: dir) == (try exportTable(store, "kept", in: dir)))
            #expect(!(try embstoreOK("info", out.path).stdout.contains("table 't'")))
        }
    }

    // MARK: - Swaps and repacks

    /// What `CURRENT` of `store` holds (nil: a plain store), and the store directory's entries.
    static func pointer(_ store: URL) -> String? {
        try? String(contentsOfFile: store.path + "/CURRENT", encoding: .utf8)
    }

    static func entries(_ directory: URL) -> Set<String> {
        Set((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
    }

    /// Runs `arguments` with the crash point set and requires that it died by SIGKILL.
    static func killed(_ arguments: [String], at point: String) throws {
        let run = try embstore(arguments, environment: ["EMBSTORE_CRASH_AT": point])
        guard run.signal == SIGKILL else { throw TestFailure("\(arguments.joined(separator: " ")) with EMBSTORE_CRASH_AT=\(point) was not killed: \(run)") }
    }

    /// The next `compact --in-place`, run to completion, leaves `CURRENT` and the one generation
    /// it names, nothing else: whatever a killed command left went with it.
    static func swapLeavesOneGeneration(_ store: URL) throws {
        try embstoreOK("compact", store.path, "--in-place")
        let current = try #require(pointer(store)).trimmingCharacters(in: .newlines)
        #expect(entries(store) == ["CURRENT", current], "\(entries(store))")
    }

    /// `compact --in-place` killed at each step of its swap, from a plain store and from one with
    /// generations: the store opens, verifies and exports what it held (a compaction changes no
    /// rows), `CURRENT` names the old generation until it is written and the new one from then
    /// on, and the next swap takes what the kill left.
    @Test(arguments: ["compact.copied", "swap.staged", "swap.published", "swap.pointer-written", "swap.retired"], [true, false])
    func aCompactionInPlaceKilledAtEachStepOfItsSwap(point: String, plain: Bool) throws {
        try withTemporaryDirectory { dir in
            let vectors = dir.appendingPathComponent("x.npy"), store = dir.appendingPathComponent("store")
            try writeFloat32(Self.rows, to: vectors)
            try embstoreOK("ingest", store.path, "--table", "t", "--vectors", vectors.path, "--codec", "int8", "--quiet")
            if !plain { try embstoreOK("compact", store.path, "--in-place") }
            let before = try exportTable(store, "t", in: dir)
            let old = Self.pointer(store)
            try Self.killed(["compact", store.path, "--in-place"], at: point)
            let moved = point == "swap.pointer-written" || point == "swap.retired"
            #expect(Self.pointer(store) == (moved ? (plain ? "gen-000001\n" : "gen-000002\n") : old), "\(Self.entries(store))")
            try embstoreOK("verify", store.path)
            #expect(try exportTable(store, "t", in: dir) == before)
            try Self.swapLeavesOneGeneration(store)
            #expect(try exportTable(store, "t", in: dir) == before)
        }
    }

    /// `repack --in-place` killed at each step: until `CURRENT` moves the store holds its old rows,
    /// from then on the repacked ones (what `repack --out` writes from the same store); the table
    /// not repacked is as it was. The `repack-<pid>` directories a kill before the swap leaves in
    /// the store directory go with the next swap (they stayed for good before).
    @Test(arguments: ["repack.built", "repack.verified", "repack.staged", "swap.published", "swap.pointer-written"])
    func aRepackInPlaceKilledAtEachStep(point: String) throws {
        try withTemporaryDirectory { dir in
            let vectors = dir.appendingPathComponent("x.npy"), store = dir.appendingPathComponent("store")
            let reference = dir.appendingPathComponent("reference")
            try writeFloat32(Self.rows, to: vectors)
            try embstoreOK("ingest", store.path, "--table", "t", "--vectors", vectors.path, "--codec", "fp32", "--quiet")
            try embstoreOK("ingest", store.path, "--table", "u", "--vectors", vectors.path, "--codec", "int8", "--quiet")
            let (before, other) = (try exportTable(store, "t", in: dir), try exportTable(store, "u", in: dir))
            let policy = ["--table", "t", "--codec", "int4h", "--quiet"]
            try embstoreOK(["repack", store.path, "--out", reference.path] + policy)
            let repacked = try exportTable(reference, "t", in: dir)
            #expect(repacked != before)
            try Self.killed(["repack", store.path, "--in-place"] + policy, at: point)
            let moved = point == "swap.pointer-written"
            #expect(Self.pointer(store) == (moved ? "gen-000001\n" : nil), "\(Self.entries(store))")
            #expect(Self.entries(store).contains { $0.hasPrefix("repack-") } == point.hasPrefix("repack."), "\(Self.entries(store))")
            try embstoreOK("verify", store.path)
            #expect(try exportTable(store, "t", in: dir) == (moved ? repacked : before))
            #expect(try exportTable(store, "u", in: dir) == other)
            try Self.swapLeavesOneGeneration(store)
            #expect(try exportTable(store, "t", in: dir) == (moved ? repacked : before))
        }
    }

    /// `repack --out NEW` killed part-way leaves no NEW and the store as it was; the next repack
    /// to NEW removes the staging directories the killed one left beside it (of a process that
    /// has ended) and writes NEW.
    @Test(arguments: ["repack.built", "repack.verified"])
    func aRepackKilledPartWayLeavesNoOutput(point: String) throws {
        try withTemporaryDirectory { dir in
            let vectors = dir.appendingPathComponent("x.npy"), store = dir.appendingPathComponent("store")
            let out = dir.appendingPathComponent("new")
            try writeFloat32(Self.rows, to: vectors)
            try embstoreOK("ingest", store.path, "--table", "t", "--vectors", vectors.path, "--codec", "fp32", "--quiet")
            let before = try exportTable(store, "t", in: dir)
            try Self.killed(["repack", store.path, "--out", out.path, "--codec", "int8", "--quiet"], at: point)
            #expect(!FileManager.default.fileExists(atPath: out.path))
            let staging = { Self.entries(dir).filter { $0.hasPrefix("new.repack") } }
            #expect(!staging().isEmpty)
            try embstoreOK("verify", store.path)
            #expect(try exportTable(store, "t", in: dir) == before)
            try embstoreOK("repack", store.path, "--out", out.path, "--codec", "int8", "--quiet")
            #expect(staging().isEmpty, "\(staging())")
            try embstoreOK("verify", out.path)
            #expect(try exportTable(out, "t", in: dir).ids == before.ids)
        }
    }

    /// A fault inside liblmdb (a damaged page can send LMDB through a wild pointer: the corruption
    /// sweep's seed 2 found one) ends the command with a message and status 3, not a crash.
    @Test func aFaultInsideLMDBEndsTheCommandWithStatus3AndAMessage() throws {
        try withTemporaryDirectory { dir in
            let run = try embstore(["info", dir.appendingPathComponent("store").path], environment: ["EMBSTORE_CRASH_AT": "lmdb.fault"])
            #expect(run.status == 3 && run.signal == nil, "\(run)")
            #expect(run.stderr.contains("LMDB crashed reading a damaged page"), "\(run.stderr)")
        }
    }
}
