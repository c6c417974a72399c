import EmbeddingCodecs
import EmbeddingStore
import Foundation
import Synchronization
import Testing

/// Concurrency stress: reader threads check every row they decode while a writer thread
/// updates rows (in this process: loads as segments and per key, puts, deletes; and `embstore
/// ingest` processes) and a third thread, in turn, runs `embstore compact --out` and checks
/// each copy, and swaps the store under them all with `embstore compact --in-place` and
/// `embstore repack --in-place` processes (readers move to the new generation at a batch
/// boundary; a write a swap cuts is refused, nothing of it kept, and the writer runs it again).
///
/// Every row is a function of its id and a version it carries (`StressRows`), in values that
/// fp32, fp16 and int8 store exactly, so a torn or mixed row, or one of another id, fails the
/// check. Table "whole" is only ever rewritten entirely, one version for all of its rows, so a
/// batch that mixes versions is a failure too; in both tables a reader must never see a row's
/// version go back. The suite runs a short round (`EMBSTORE_STRESS_OPS`, default 12 writer
/// steps); `tools/stress.sh` runs long ones. Threads stop when the writer is done: no timing.
@Suite struct StressTests {
    @Test func readersNeverSeeATornMixedOrOlderRow() throws {
        let environment = ProcessInfo.processInfo.environment
        let config = StressConfig(writerSteps: Int(environment["EMBSTORE_STRESS_OPS"] ?? "") ?? 12,
                                  readers: Int(environment["EMBSTORE_STRESS_READERS"] ?? "") ?? 2,
                                  rows: Int(environment["EMBSTORE_STRESS_ROWS"] ?? "") ?? 4_096)
        let counts = try withTemporaryDirectory { dir in try runStress(config, in: dir) }
        print("[stress] \(counts)")
        #expect(counts.failures.isEmpty, "\(counts.failures.prefix(10).joined(separator: "\n"))")
        #expect(counts.rowsChecked > 0 && counts.copiesChecked > 0 && counts.compactionsInPlace > 0 && counts.repacksInPlace > 0)
    }
}

struct StressConfig {
    var writerSteps: Int
    var readers: Int
    var rows: Int
    var dimension = 16
    var batch = 256
}

/// Rows whose values are integers 0…255 (exact in fp32, fp16 and int8, whose encoder takes the
/// range [0, 255] they span): values 0 and 1 are 0 and 255, values 2 and 3 the version's low and
/// high byte, value 4 the id's low byte, the rest a hash of (id, version, column).
enum StressRows {
    static func value(id: UInt64, version: Int, column j: Int) -> Float {
        switch j {
        case 0: return 0
        case 1: return 255
        case 2: return Float(version & 255)
        case 3: return Float((version >> 8) & 255)
        case 4: return Float(id & 255)
        default:
            var z = id &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(version) &* 0xBF58_476D_1CE4_E5B9 &+ UInt64(j)
            z = (z ^ (z >> 30)) &* 0x94D0_49BB_1331_11EB
            return Float((z ^ (z >> 31)) & 255)
        }
    }

    static func rows(ids: [UInt64], versions: [Int], dimension d: Int) -> [Float] {
        var rows = [Float](repeating: 0, count: ids.count * d)
        for (i, (id, version)) in zip(ids, versions).enumerated() {
            for j in 0..<d { rows[i * d + j] = value(id: id, version: version, column: j) }
        }
        return rows
    }

    /// The version `row` carries when it is exactly that version's row of `id`, else nil.
    static func version(of row: UnsafeBufferPointer<Float>, id: UInt64) -> Int? {
        guard row.count >= 5, row[2] >= 0, row[2] <= 255, row[3] >= 0, row[3] <= 255 else { return nil }
        let version = Int(row[2]) | Int(row[3]) << 8
        for j in row.indices where row[j] != value(id: id, version: version, column: j) { return nil }
        return version
    }
}

/// What a stress run counted.
struct StressCounts: CustomStringConvertible {
    var writerSteps = 0, ingestProcesses = 0, compactions = 0
    /// Swaps in place: compactions and repacks installed; repacks refused because the writer
    /// committed while they ran (the store stays as it was); writer steps a swap cut and redone.
    var compactionsInPlace = 0, repacksInPlace = 0, repacksRefused = 0, writesRedone = 0
    var rowsChecked = 0, batches = 0, copiesChecked = 0, copyRowsChecked = 0
    var failures: [String] = []

    var description: String {
        "\(writerSteps) writer steps (\(ingestProcesses) ingest processes, \(writesRedone) cut by a swap and redone), "
            + "\(compactions) compactions --out, swaps in place: \(compactionsInPlace) compactions, \(repacksInPlace) repacks "
            + "(\(repacksRefused) more refused: the store changed meanwhile); "
            + "\(rowsChecked) rows checked in \(batches) batches, \(copyRowsChecked) rows in \(copiesChecked) compacted copies; "
            + "\(failures.count) failures"
    }
}

/// The shared state of a run: counts, failures and the writer's progress.
final class StressRun: Sendable {
    let config: StressConfig
    let counts = Mutex(StressCounts())
    let writerDone = Atomic<Bool>(false)
    /// Versions of table "whole", of every row of it, written so far (the newest).
    let wholeVersion = Atomic<Int>(1)
    /// Held by the writer for each step, and by every other repack for its whole run, so that
    /// it sees no commit and is installed.
    let writerGate = Mutex(())

    init(config: StressConfig) { self.config = config }

    func fail(_ text: String) {
        counts.withLock { if $0.failures.count < 100 { $0.failures.append(text) } }
    }

    /// Checks rows of `ids` decoded into `out` (`found` marks those present). With `oneVersion`
    /// every row must be present and carry the same version. `newest` is updated with the
    /// version of each id seen; a version lower than one seen before fails. Returns the rows checked.
    func check(_ out: UnsafeBufferPointer<Float>, ids: [UInt64], found: [Bool], oneVersion: Bool, newest: inout [Int], where place: String) -> Int {
        let d = config.dimension
        var batchVersion: Int?
        var checked = 0
        for (i, id) in ids.enumerated() {
            guard found[i] else {
                if oneVersion { fail("\(place): id \(id) of table whole is missing") }
                continue
            }
            checked += 1
            guard let version = StressRows.version(of: UnsafeBufferPointer(rebasing: out[i * d..<(i + 1) * d]), id: id) else {
                fail("\(place): id \(id) decoded to a row that is no version of it: \(Array(out[i * d..<(i + 1) * d]))")
                continue
            }
            if oneVersion, let batchVersion, batchVersion != version {
                fail("\(place): one batch of table whole mixes versions \(batchVersion) and \(version)")
            }
            batchVersion = version
            if version < newest[Int(id)] { fail("\(place): id \(id) went back from version \(newest[Int(id)]) to \(version)") }
            newest[Int(id)] = max(newest[Int(id)], version)
        }
        return checked
    }
}

extension StressRun {
    /// Checks every row of both tables of `store` (one snapshot each: "whole" has one version)
    /// and returns how many it checked.
    func checkAllRows(of store: Store, ids: [UInt64], where place: String) throws -> Int {
        let reader = try store.makeReader()
        let d = config.dimension
        var checked = 0
        for (name, oneVersion) in [("whole", true), ("mixed", false)] {
            let table = try store.table(name)
            var rows = [Float](repeating: 0, count: ids.count * d)
            var found = [Bool](repeating: false, count: ids.count)
            var newest = [Int](repeating: 0, count: ids.count)
            try ids.withUnsafeBufferPointer { ids in
                try rows.withUnsafeMutableBufferPointer { out in
                    try found.withUnsafeMutableBufferPointer { found in _ = try reader.lookup(table, ids: ids, into: out, found: found) }
                }
            }
            checked += rows.withUnsafeBufferPointer {
                check($0, ids: ids, found: found, oneVersion: oneVersion, newest: &newest, where: "\(place), \(name)")
            }
        }
        return checked
    }
}

/// Runs the stress in `dir` and returns its counts.
func runStress(_ config: StressConfig, in dir: URL) throws -> StressCounts {
    let run = StressRun(config: config)
    let d = config.dimension, n = config.rows
    let path = dir.appendingPathComponent("store").path
    let store = try Store(path: path)
    defer { store.close() }
    let allIDs = (0..<UInt64(n)).map { $0 }
    for name in ["whole", "mixed"] {
        let rows = StressRows.rows(ids: allIDs, versions: Array(repeating: 1, count: n), dimension: d)
        _ = try rows.withUnsafeBufferPointer { try store.load(table: name, rows: $0, count: n, dimension: d, codec: .int8) }
    }
    let whole = try store.table("whole"), mixed = try store.table("mixed")

    let group = DispatchGroup()
    func thread(_ name: String, _ body: @escaping @Sendable () throws -> Void) {
        group.enter()
        let thread = Thread {
            do { try body() } catch { run.fail("\(name): \(error)") }
            group.leave()
        }
        thread.stackSize = 4 << 20
        thread.start()
    }

    // The writer: each step rewrites all of "whole" at a new version (a segment load, a per-key
    // load, or an `embstore ingest` process, in turn, each with the next codec) and changes
    // some rows of "mixed" (puts, deletes, or a segment load of a random subset).
    let codecs: [Codec] = [.fp32, .fp16, .int8]
    /// Runs `step` again while a swap in place cuts it (refused, nothing of it kept).
    @Sendable func redoingWhenCut(_ step: () throws -> Void) throws {
        while true {
            do {
                return try step()
            } catch StoreError.generationRetired {
                run.counts.withLock { $0.writesRedone += 1 }
            }
        }
    }
    thread("writer") {
        defer { run.writerDone.store(true, ordering: .releasing) }
        var random = SplitMix(seed: 7)
        var mixedVersion = [Int](repeating: 1, count: n)
        for step in 0..<config.writerSteps { try run.writerGate.withLock { _ in
            let version = run.wholeVersion.load(ordering: .acquiring) + 1
            let codec = codecs[step % codecs.count]
            let rows = StressRows.rows(ids: allIDs, versions: Array(repeating: version, count: n), dimension: d)
            switch step % 3 {
            case 0, 1:
                var options = LoadOptions()
                options.layout = step % 3 == 0 ? .segment : .perKey
                options.rowsPerTransaction = n   // one commit: the table is rewritten at once
                try redoingWhenCut {
                    _ = try rows.withUnsafeBufferPointer {
                        try store.load(table: "whole", rows: $0, count: n, dimension: d, policy: .single(codec), options: options)
                    }
                }
            default:
                let vectors = dir.appendingPathComponent("whole-\(version).npy")
                try writeFloat32(stride(from: 0, to: rows.count, by: d).map { Array(rows[$0..<$0 + d]) }, to: vectors)
                while true {
                    let ingest = try embstore(["ingest", path, "--table", "whole", "--vectors", vectors.path, "--codec", "\(codec)", "--quiet"])
                    if ingest.status != 0, ingest.stderr.contains("swapped to a new generation") {
                        run.counts.withLock { $0.writesRedone += 1 }
                        continue
                    }
                    if ingest.status != 0 { run.fail("ingest process: \(ingest)") }
                    break
                }
                try? FileManager.default.removeItem(at: vectors)
                run.counts.withLock { $0.ingestProcesses += 1 }
            }
            run.wholeVersion.store(version, ordering: .releasing)

            switch step % 3 {
            case 0:
                try store.write { batch in
                    for _ in 0..<64 {
                        let id = random.next() % UInt64(n)
                        mixedVersion[Int(id)] += 1
                        try batch.put(mixed, id: id, vector: StressRows.rows(ids: [id], versions: [mixedVersion[Int(id)]], dimension: d), codec: codec)
                    }
                }
            case 1:
                try store.write { batch in
                    for _ in 0..<32 {
                        let id = random.next() % UInt64(n)
                        mixedVersion[Int(id)] += 1   // a later put must carry a newer version
                        try batch.delete(mixed, id: id)
                    }
                }
            default:
                let ids = Array(Set((0..<512).map { _ in random.next() % UInt64(n) })).sorted()
                for id in ids { mixedVersion[Int(id)] += 1 }
                let rows = StressRows.rows(ids: ids, versions: ids.map { mixedVersion[Int($0)] }, dimension: d)
                try redoingWhenCut {
                    _ = try rows.withUnsafeBufferPointer {
                        try store.load(table: "mixed", ids: ids, rows: $0, count: ids.count, dimension: d, policy: .single(codec))
                    }
                }
            }
            run.counts.withLock { $0.writerSteps += 1 }
        } }
    }

    // Compactions and swaps, in turn, while the others run: `embstore compact --out`, each copy
    // opened and every row of both tables checked (the copy is one snapshot: "whole" has one
    // version); `embstore compact --in-place`; and `embstore repack --in-place --codec int8`,
    // which moves fp32 and fp16 rows to int8 (exact for these rows) and keeps int8 records. A
    // repack is refused when the writer committed while it ran, and must say so; every other
    // repack holds the writer back for its run (`writerGate`) and must be installed.
    thread("compactor") {
        var number = 0
        repeat {
            number += 1
            switch number % 3 {
            case 1:
                let out = dir.appendingPathComponent("compacted-\(number)").path
                let compact = try embstore(["compact", path, "--out", out])
                guard compact.status == 0 else { run.fail("compact: \(compact)"); break }
                var options = Store.Options()
                options.readOnly = true
                let copy = try Store(path: out, options: options)
                // The reader (in checkAllRows) ends before the store closes: a reader alive then
                // keeps its LMDB transaction's memory for good (LeakSanitizer reported it).
                let checked = try run.checkAllRows(of: copy, ids: allIDs, where: "compacted copy \(number)")
                copy.close()
                try FileManager.default.removeItem(atPath: out)
                run.counts.withLock {
                    $0.compactions += 1
                    $0.copiesChecked += 1
                    $0.copyRowsChecked += checked
                }
            case 2:
                let compact = try embstore(["compact", path, "--in-place"])
                guard compact.status == 0 else { run.fail("compact --in-place: \(compact)"); break }
                run.counts.withLock { $0.compactionsInPlace += 1 }
            default:
                // Every other one holds the writer back and must be installed; the others race it.
                let repack = number % 6 == 0
                    ? try run.writerGate.withLock { _ in try embstore(["repack", path, "--in-place", "--codec", "int8", "--quiet"]) }
                    : try embstore(["repack", path, "--in-place", "--codec", "int8", "--quiet"])
                if repack.status == 0 {
                    run.counts.withLock { $0.repacksInPlace += 1 }
                } else if number % 6 != 0, repack.stderr.contains("changed since the environment to install was staged") {
                    run.counts.withLock { $0.repacksRefused += 1 }
                } else {
                    run.fail("repack --in-place: \(repack)")
                }
            }
        } while !run.writerDone.load(ordering: .acquiring) || number < 6
    }

    for r in 0..<config.readers {
        thread("reader \(r)") {
            let reader = try store.makeReader()
            var random = SplitMix(seed: 100 + UInt64(r))
            var newest = (whole: [Int](repeating: 0, count: n), mixed: [Int](repeating: 0, count: n))
            var out = [Float](repeating: 0, count: config.batch * d)
            var found = [Bool](repeating: false, count: config.batch)
            var checked = 0, batches = 0
            var last = false
            while !last {
                last = run.writerDone.load(ordering: .acquiring)   // one more round after the writer ends
                for (table, oneVersion) in [(whole, true), (mixed, false)] {
                    let ids = (0..<config.batch).map { _ in random.next() % UInt64(n) }
                    try ids.withUnsafeBufferPointer { ids in
                        try out.withUnsafeMutableBufferPointer { out in
                            try found.withUnsafeMutableBufferPointer { found in _ = try reader.lookup(table, ids: ids, into: out, found: found) }
                        }
                    }
                    checked += out.withUnsafeBufferPointer { out in
                        oneVersion ? run.check(out, ids: ids, found: found, oneVersion: true, newest: &newest.whole, where: "reader \(r), whole")
                                   : run.check(out, ids: ids, found: found, oneVersion: false, newest: &newest.mixed, where: "reader \(r), mixed")
                    }
                    batches += 1
                }
            }
            run.counts.withLock {
                $0.rowsChecked += checked
                $0.batches += batches
            }
        }
    }
    // A deadlock guard only: every thread ends when the writer's fixed number of steps is done.
    if group.wait(timeout: .now() + 3_600) == .timedOut { run.fail("the stress threads did not finish within an hour") }
    // The store as the swaps left it: it verifies, and every row is there and sound.
    let verify = try embstore(["verify", path])
    if verify.status != 0 { run.fail("verify after the run: \(verify)") }
    let checked = try run.checkAllRows(of: store, ids: allIDs, where: "the store after the run")
    run.counts.withLock { $0.rowsChecked += checked }
    return run.counts.withLock { $0 }
}
