import Foundation
import Testing

/// `ingest` with `--freq`, `--tiers` and `--budget`, as a user runs it: what it accepts, what it
/// refuses (a clear message, non-zero exit, nothing written), and `get --why`.
@Suite("ingest policies from the command line")
struct PolicyCommandTests {
    static let n = 4000, d = 32

    /// A table, its counts (row i: 1000 / (i + 1)) as uint64, and a store path.
    static func inputs(_ dir: URL) throws -> (vectors: URL, freq: URL, store: URL) {
        let vectors = dir.appendingPathComponent("x.npy"), freq = dir.appendingPathComponent("f.npy")
        try writeFloat32(randomRows(n, d, seed: 7), to: vectors)
        try writeUInt64((0..<n).map { UInt64(1000 / ($0 + 1)) }, to: freq)
        return (vectors, freq, dir.appendingPathComponent("store"))
    }

    @Test func tiersAndBudgetsLoadAndExplainEachRow() throws {
        try withTemporaryDirectory { dir in
            let (vectors, freq, store) = try Self.inputs(dir)
            let tiers = try embstoreOK("ingest", store.path, "--table", "tiers", "--vectors", vectors.path, "--freq", freq.path,
                                       "--tiers", "fp16:5%,int8:45%,int4h")
            #expect(tiers.stdout.contains("fp16:5%,int8:45%,int4h"), "\(tiers)")
            #expect(tiers.stdout.contains("200 rows"), "the hottest 5% of 400 rows are fp16: \(tiers)")
            let hot = try embstoreOK("get", store.path, "--table", "tiers", "--why", "0")
            #expect(hot.stdout.contains("codec fp16: segment"), "\(hot)")
            #expect(hot.stdout.contains("access ranks 0%–5%"), "\(hot)")
            let cold = try embstoreOK("get", store.path, "--table", "tiers", "--why", "3999")
            #expect(cold.stdout.contains("codec int4h"), "\(cold)")
            // Without --freq, stats shows the lookups each form served by the load's own counts.
            let stats = try embstoreOK("stats", store.path, "--table", "tiers")
            #expect(stats.stdout.contains("lookups served by codec form, from the load's counts"), "\(stats)")
            let counts: [Double] = (0..<Self.n).map { Double(1000 / ($0 + 1)) }
            let hotShare: Double = counts[0..<200].reduce(0, +) / counts.reduce(0, +)
            #expect(stats.stdout.contains(String(format: "%6.2f%% of lookups", 100 * hotShare)), "fp16's share \(hotShare): \(stats)")

            let budget = try embstoreOK("ingest", store.path, "--table", "budget", "--vectors", vectors.path, "--freq", freq.path,
                                        "--budget", "40%", "--weighting", "traffic")
            #expect(budget.stdout.contains("budget 40% (traffic)"), "\(budget)")
            #expect(budget.stdout.contains("best single codec"), "\(budget)")
            let row = try embstoreOK("get", store.path, "--table", "budget", "--why", "0")
            #expect(row.stdout.contains("budget 40% (traffic)"), "\(row)")
        }
    }

    /// Each bad invocation: exit non-zero, the words that name the problem, no table.
    @Test(arguments: [
        (["--tiers", "fp16:5%,int8:40%"], "add up to 45%"),
        (["--tiers", "fp16:5%,int9"], "int9"),
        (["--tiers", "fp16:5%,int8", "--freq", "-"], "--freq"),
        (["--budget", "0.001", "--freq", "F"], "too small"),
        (["--budget", "150%"], "budget '150%'"),
        (["--budget-bytes", "0"], "positive"),
        (["--codec", "int8", "--budget", "0.5"], "only one of"),
        ([], "give one of --codec"),
        (["--budget", "0.5", "--freq", "SHORT"], "99 access counts"),
        (["--budget", "0.5", "--freq", "NEGATIVE"], "-3"),
        (["--budget", "0.5", "--freq", "NAN"], "nan"),
    ] as [([String], String)])
    func badPolicyInput(_ options: [String], _ expected: String) throws {
        try withTemporaryDirectory { dir in
            let (vectors, freq, store) = try Self.inputs(dir)
            let short = dir.appendingPathComponent("short.npy"), negative = dir.appendingPathComponent("neg.npy")
            let nan = dir.appendingPathComponent("nan.npy")
            try writeUInt64([UInt64](repeating: 1, count: 99), to: short)
            try writeInt64((0..<Int64(Self.n)).map { $0 == 3 ? -3 : 1 }, to: negative)
            var doubles = [Double](repeating: 1, count: Self.n)
            doubles[5] = .nan
            try npyFile(descr: "<f8", shape: [Self.n], payload: littleEndianBytes(doubles.map(\.bitPattern))).write(to: nan)
            let files = ["F": freq.path, "SHORT": short.path, "NEGATIVE": negative.path, "NAN": nan.path]
            var arguments = ["ingest", store.path, "--table", "t", "--vectors", vectors.path]
            // "--tiers … --freq -" means: leave --freq out.
            if options.contains("-") {
                arguments += options.filter { $0 != "--freq" && $0 != "-" }
            } else {
                arguments += options.map { files[$0] ?? $0 }
            }
            let run = try embstore(arguments)
            #expect(run.status != 0, "\(run)")
            #expect((run.stderr + run.stdout).lowercased().contains(expected.lowercased()), "\(run)")
            #expect(!run.stderr.contains("Backtrace"), "\(run)")
            if FileManager.default.fileExists(atPath: store.path) {
                let info = try embstoreOK("info", store.path)
                #expect(info.stdout.contains("0 table(s)"), "a failed first load leaves no table: \(info)")
            }
        }
    }

    /// NaN and infinite rows: refused, naming the first, or left out and counted with --skip-invalid.
    @Test func skipInvalidLeavesOutBadRowsAndSaysSo() throws {
        try withTemporaryDirectory { dir in
            var rows = randomRows(50, 4, seed: 9)
            rows[7][2] = .nan
            rows[31][0] = -.infinity
            let vectors = dir.appendingPathComponent("bad.npy"), store = dir.appendingPathComponent("store")
            try writeFloat32(rows, to: vectors)
            let refused = try embstore("ingest", store.path, "--table", "t", "--vectors", vectors.path, "--codec", "int8")
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("row 7") && refused.stderr.lowercased().contains("nan"), "\(refused)")
            let loaded = try embstoreOK("ingest", store.path, "--table", "t", "--vectors", vectors.path, "--codec", "fp32", "--skip-invalid")
            #expect(loaded.stdout.contains("ingested 48 rows"), "\(loaded)")
            #expect(loaded.stdout.contains("skipped 2 rows with a NaN or infinite value (the first: row 7, id 7)"), "\(loaded)")
            let exported = try exportTable(store, "t", in: dir)
            #expect(exported.ids == (0..<50).filter { $0 != 7 && $0 != 31 }.map(UInt64.init))
            #expect(exported.rows == rows.enumerated().filter { $0.offset != 7 && $0.offset != 31 }.map(\.element))
        }
    }
}
