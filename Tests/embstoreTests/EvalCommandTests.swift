import Foundation
import Testing

/// `embstore eval` as a user runs it: the JSON keys, the text report, float16 sources, given
/// queries, and a clear refusal for every bad input. Store.evaluate's figures are checked
/// against NumPy in EmbeddingStoreTests/EvaluationTests.
@Suite("eval reports what compression cost and refuses bad input")
struct EvalCommandTests {
    static let n = 400, d = 8

    /// A store with table "t" (int8, sparse ids 1000 + 3·row) and the files of its source.
    struct Files {
        let dir: URL
        var store: String { dir.appendingPathComponent("store").path }
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
    }

    static func files(_ dir: URL) throws -> Files {
        let files = Files(dir: dir)
        let rows = randomRows(n, d, seed: 31)
        try writeFloat32(rows, to: dir.appendingPathComponent("x.npy"))
        try writeInt64((0..<Int64(n)).map { 1000 + 3 * $0 }, to: dir.appendingPathComponent("ids.npy"))
        // float64 counts, as numpy saves them by default.
        let counts = (0..<n).map { Double(($0 * 7919) % 97) }
        try npyFile(descr: "<f8", shape: [n], payload: littleEndianBytes(counts.map(\.bitPattern)))
            .write(to: dir.appendingPathComponent("freq.npy"))
        try embstoreOK("ingest", files.store, "--table", "t", "--vectors", files.path("x.npy"), "--ids", files.path("ids.npy"), "--codec", "int8")
        return files
    }

    /// Runs the CLI and requires exit status 0.
    func succeed(_ arguments: [String]) throws -> Run {
        let run = try embstore(arguments)
        guard run.status == 0 else { throw TestFailure("embstore \(arguments.joined(separator: " ")) failed: \(run)") }
        return run
    }

    func json(_ run: Run) throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any] else {
            throw TestFailure("not a JSON object: \(run)")
        }
        return object
    }

    @Test func jsonAndTextReports() throws {
        try withTemporaryDirectory { dir in
            let f = try Self.files(dir)
            let base = ["eval", f.store, "--table", "t", "--source", f.path("x.npy"), "--ids", f.path("ids.npy")]
            let run = try succeed(base + ["--freq", f.path("freq.npy"), "--query-count", "50", "--json"])
            #expect(run.stderr.isEmpty, "no progress lines for a short run on a pipe: \(run.stderr)")
            let report = try json(run)
            for key in ["table", "dimension", "rows", "store_rows", "k", "dot_sample_rows", "seed", "frequency_weighted",
                        "overall", "query_sets", "forms", "deciles", "notes"] {
                #expect(report[key] != nil, "missing key \(key)")
            }
            #expect(report["rows"] as? Int == Self.n && report["k"] as? Int == 10 && report["dot_sample_rows"] as? Int == Self.n)
            let overall = report["overall"] as? [String: Any] ?? [:]
            for key in ["rows", "mse", "mean_cosine", "mean_relative_l2", "zero_source_rows", "weighted_mse",
                        "weighted_mean_cosine", "weighted_mean_relative_l2"] {
                #expect(overall[key] != nil, "overall lacks \(key)")
            }
            let sets = report["query_sets"] as? [[String: Any]] ?? []
            #expect(sets.map { $0["name"] as? String } == ["hot", "uniform"])
            for key in ["drawn", "queries", "recall", "dot_rms_error", "dot_relative_error", "dot_pairs", "exact_rescans", "rows"] {
                #expect(sets.first?[key] != nil, "query set lacks \(key)")
            }
            #expect((report["forms"] as? [[String: Any]])?.map { $0["form"] as? String } == ["int8"])
            #expect((report["deciles"] as? [[String: Any]])?.count == 10)
            // int8 keeps almost every neighbour of these random rows.
            #expect((sets.first?["recall"] as? Double ?? 0) > 0.8)

            let text = try succeed(base + ["--freq", f.path("freq.npy"), "--query-count", "50"]).stdout
            for fragment in ["row errors", "int8", "recall@10", "hot", "uniform", "popularity deciles"] {
                #expect(text.contains(fragment), "text report lacks '\(fragment)':\n\(text)")
            }
            let plain = try succeed(base + ["--query-count", "50"]).stdout
            #expect(plain.contains("uniform queries only") && !plain.contains("popularity deciles"), "\(plain)")
        }
    }

    /// A float16 source gives the figures of the same values as float32; --queries gives one set.
    @Test func float16SourceAndGivenQueries() throws {
        try withTemporaryDirectory { dir in
            let f = try Self.files(dir)
            // Values exact in float16: multiples of 1/64 in ±1.
            let rows = randomRows(Self.n, Self.d, seed: 32).map { $0.map { ($0 * 64).rounded() / 64 } }
            try writeFloat32(rows, to: dir.appendingPathComponent("x32.npy"))
            let halves = rows.flatMap { $0 }.map { Float16($0).bitPattern }
            try npyFile(descr: "<f2", shape: [Self.n, Self.d], payload: littleEndianBytes(halves)).write(to: dir.appendingPathComponent("x16.npy"))
            try embstoreOK("ingest", f.store, "--table", "h", "--vectors", f.path("x32.npy"), "--codec", "int4")
            try writeInt64([5, 0, 399], to: dir.appendingPathComponent("q.npy"))
            let runs = try ["x32.npy", "x16.npy"].map { source in
                try succeed(["eval", f.store, "--table", "h", "--source", f.path(source), "--queries", f.path("q.npy"), "--json"])
            }
            let sets = try json(runs[0])["query_sets"] as? [[String: Any]] ?? []
            #expect(sets.map { $0["name"] as? String } == ["given"] && sets.first?["rows"] as? [Int] == [5, 0, 399])
            #expect(runs[0].stdout == runs[1].stdout, "float16 and float32 sources differ")   // keys are sorted
        }
    }

    /// Each bad input: non-zero exit and a message naming the problem (all of `fragments`).
    @Test(arguments: [
        ("ids length", ["--ids", "short-ids.npy"], ["short-ids.npy has 5 ids", "x.npy has 400 rows"]),
        ("freq length", ["--freq", "short-freq.npy"], ["short-freq.npy has 3 counts", "400 rows"]),
        ("negative count", ["--freq", "negative-freq.npy"], ["count of row 2 (id 1006) is negative (-3.0)"]),
        ("NaN count", ["--freq", "nan-freq.npy"], ["count of row 1 (id 1003) is NaN"]),
        ("dimension", ["--source", "wide.npy"], ["wide.npy has rows of dimension 9", "table 't' has dimension 8"]),
        ("missing ids", ["--ids", "missing-ids.npy"], ["2 source ids are not in table 't'", "first: id 999 at source row 1"]),
        ("non-finite", ["--source", "nan.npy"], ["source row 3 (id 1009)", "non-finite value nan at column 1"]),
        ("queries range", ["--queries", "far-queries.npy"], ["far-queries.npy: query 1 is row 400", "outside the 400 source rows"]),
        ("queries repeat", ["--queries", "twice-queries.npy"], ["row 7 is a query twice"]),
        ("float64 source", ["--source", "f8.npy"], ["unsupported dtype '<f8' (float64)"]),
        ("table", ["--table", "nope"], ["no table named 'nope'"]),
        ("query count", ["--query-count", "0"], ["--query-count must be at least 1"]),
    ] as [(String, [String], [String])])
    func refusals(_ kind: String, _ change: [String], _ fragments: [String]) throws {
        try withTemporaryDirectory { dir in
            let f = try Self.files(dir)
            try writeInt64([1000, 1003, 1006, 1009, 1012], to: dir.appendingPathComponent("short-ids.npy"))
            try npyFile(descr: "<f8", shape: [3], payload: littleEndianBytes([1.0, 2, 3].map(\.bitPattern)))
                .write(to: dir.appendingPathComponent("short-freq.npy"))
            try writeInt64([4, 5, -3] + [Int64](repeating: 1, count: Self.n - 3), to: dir.appendingPathComponent("negative-freq.npy"))
            let nanCounts = [1.0, .nan] + [Double](repeating: 1, count: Self.n - 2)
            try npyFile(descr: "<f8", shape: [Self.n], payload: littleEndianBytes(nanCounts.map(\.bitPattern)))
                .write(to: dir.appendingPathComponent("nan-freq.npy"))
            try writeFloat32(randomRows(Self.n, 9, seed: 1), to: dir.appendingPathComponent("wide.npy"))
            var ids = (0..<Int64(Self.n)).map { 1000 + 3 * $0 }
            ids[1] = 999
            ids[300] = 5
            try writeInt64(ids, to: dir.appendingPathComponent("missing-ids.npy"))
            var rows = randomRows(Self.n, Self.d, seed: 31)
            rows[3][1] = .nan
            try writeFloat32(rows, to: dir.appendingPathComponent("nan.npy"))
            try writeInt64([0, 400], to: dir.appendingPathComponent("far-queries.npy"))
            try writeInt64([7, 8, 7], to: dir.appendingPathComponent("twice-queries.npy"))
            try npyFile(descr: "<f8", shape: [2, 8], payload: littleEndianBytes([Double](repeating: 1, count: 16).map(\.bitPattern)))
                .write(to: dir.appendingPathComponent("f8.npy"))

            var options = ["--table": "t", "--source": f.path("x.npy"), "--ids": f.path("ids.npy")]
            var extra: [String] = []
            for i in stride(from: 0, to: change.count, by: 2) {
                let value = change[i + 1].hasSuffix(".npy") ? f.path(change[i + 1]) : change[i + 1]
                if options[change[i]] != nil { options[change[i]] = value } else { extra += [change[i], value] }
            }
            let arguments = ["eval", f.store] + options.sorted { $0.key < $1.key }.flatMap { [$0.key, $0.value] } + extra
            let run = try embstore(arguments)
            #expect(run.status != 0, "\(kind): accepted: \(run)")
            for fragment in fragments {
                #expect(run.stderr.contains(fragment), "\(kind): stderr should mention '\(fragment)': \(run)")
            }
        }
    }
}
