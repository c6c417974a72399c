import Foundation
import Testing

/// `embstore repack` as a user runs it: with a source rows follow the new counts, without one
/// the promotions are refused and listed, the new store verifies, bad input leaves nothing.
@Suite("repack from the command line")
struct RepackCommandTests {
    static let n = 1000, d = 16

    /// A store whose table "t" was loaded with tiers under counts A (row i: 10·(n − i), so rank
    /// i), a second table "u", and counts B (A reversed: row i has rank n − 1 − i) beside it.
    static func inputs(_ dir: URL) throws -> (store: URL, vectors: URL, freqB: URL) {
        let vectors = dir.appendingPathComponent("x.npy"), freqA = dir.appendingPathComponent("a.npy")
        let freqB = dir.appendingPathComponent("b.npy"), store = dir.appendingPathComponent("store")
        try writeFloat32(randomRows(n, d, seed: 11), to: vectors)
        let counts = (0..<n).map { UInt64(10 * (n - $0)) }
        try writeUInt64(counts, to: freqA)
        try writeUInt64(counts.reversed(), to: freqB)
        try embstoreOK("ingest", store.path, "--table", "t", "--vectors", vectors.path, "--freq", freqA.path, "--tiers", "fp16:10%,int8:20%,int2h", "--quiet")
        try embstoreOK("ingest", store.path, "--table", "u", "--vectors", vectors.path, "--codec", "int4h", "--quiet")
        return (store, vectors, freqB)
    }

    @Test func repackFollowsTheNewCountsAndSaysWhatItCouldNotPromote() throws {
        try withTemporaryDirectory { dir in
            let (store, vectors, freqB) = try Self.inputs(dir)
            let tiers = ["--tiers", "fp16:10%,int8:20%,int2h"]
            let new = dir.appendingPathComponent("new")
            let run = try embstoreOK(["repack", store.path, "--out", new.path, "--table", "t", "--freq", freqB.path, "--source", vectors.path, "--quiet"] + tiers)
            #expect(run.stdout.contains("table 't': repacked as fp16:10%,int8:20%,int2h with counts given"), "\(run)")
            #expect(run.stdout.contains("table 'u': copied as it was, 1000 rows"), "\(run)")
            #expect(run.stdout.contains("promoted 300"), "the 300 rows B ranks above int2h were int2h under A: \(run)")
            #expect(try embstoreOK("verify", new.path).stdout.contains("ok"))
            let hot = try embstoreOK("get", new.path, "--table", "t", "--why", "999")
            #expect(hot.stdout.contains("codec fp16"), "the coldest row under A is the hottest under B: \(hot)")
            #expect(try exportTable(new, "u", in: dir).rows == (try exportTable(store, "u", in: dir).rows))

            // Without the source: the same 300 promotions are refused and named.
            let refusedOut = dir.appendingPathComponent("refused.npy")
            let noSource = try embstoreOK(["repack", store.path, "--out", dir.appendingPathComponent("new2").path, "--table", "t",
                                           "--freq", freqB.path, "--refused-out", refusedOut.path, "--quiet"] + tiers)
            #expect(noSource.stdout.contains("300 rows not promoted: no full-precision row"), "\(noSource)")
            #expect(try NPYArray(contentsOf: refusedOut).uint64s == (700..<1000).map(UInt64.init))
            let json = try embstoreOK(["repack", store.path, "--out", dir.appendingPathComponent("new3").path, "--table", "t",
                                       "--freq", freqB.path, "--json"] + tiers)
            let report = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
            let table = (report?["tables"] as? [[String: Any]])?.first { $0["table"] as? String == "t" }
            #expect(table?["promotions_refused"] as? Int == 300, "\(json)")
            #expect((table?["refused_ids"] as? [Int])?.count == 300)
            #expect(table?["demoted"] as? Int == 300, "rows 0..<300 fall from fp16 and int8 to int2h")
        }
    }

    /// Each bad invocation: exit non-zero, the words that name the problem, nothing at --out.
    @Test func badInputIsRefusedAndLeavesNothing() throws {
        try withTemporaryDirectory { dir in
            let (store, vectors, _) = try Self.inputs(dir)
            let narrow = dir.appendingPathComponent("narrow.npy"), short = dir.appendingPathComponent("short.npy")
            let withNaN = dir.appendingPathComponent("nan.npy")
            try writeFloat32(randomRows(Self.n, 8, seed: 1), to: narrow)
            try writeUInt64([1, 2, 3], to: short)
            var rows = randomRows(Self.n, Self.d, seed: 11)
            rows[40][2] = .nan
            try writeFloat32(rows, to: withNaN)
            let out = dir.appendingPathComponent("new")
            let cases: [([String], String)] = [
                (["--table", "t", "--codec", "int8", "--source", narrow.path], "rows of 8 values; the table's have 16"),
                (["--table", "t", "--codec", "int8", "--source", withNaN.path], "row 40 (id 40)"),
                (["--table", "t", "--codec", "int8", "--source", vectors.path, "--freq", short.path], "3 counts but"),
                (["--table", "t", "--codec", "int8", "--freq", short.path, "--tracked"], "two sources of counts"),
                (["--table", "t", "--codec", "int8", "--tracked"], "no access counts kept"),
                (["--codec", "int8", "--source", vectors.path], "name the one --source"),
                (["--table", "t", "--tiers", "fp16:10%,int2h"], "give --freq or --tracked"),
                (["--table", "nope", "--codec", "int8"], "no table named 'nope'"),
            ]
            for (options, words) in cases {
                let run = try embstore(["repack", store.path, "--out", out.path, "--quiet"] + options)
                #expect(run.status != 0 && (run.stderr + run.stdout).contains(words), "\(options): \(run)")
                #expect(!FileManager.default.fileExists(atPath: out.path), "\(options) left \(out.path)")
            }
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            let exists = try embstore("repack", store.path, "--out", out.path, "--codec", "int8")
            #expect(exists.status != 0 && exists.stderr.contains("exists"), "\(exists)")
        }
    }

    /// `--out` a bare one-character name, relative to the working directory: Foundation's
    /// `deletingLastPathComponent` trapped on it once the new store was in place (SIGILL).
    @Test func aOneCharacterOutPathWorks() throws {
        try withTemporaryDirectory { dir in
            let (store, _, _) = try Self.inputs(dir)
            guard let binary = Tooling.embstoreBinary else { throw TestFailure("no embstore binary") }
            let run = try runProcess(URL(fileURLWithPath: "/bin/sh"),
                                     ["-c", "cd \"$1\" && exec \"$2\" repack store --out o --codec int8 --quiet", "sh", dir.path, binary.path])
            #expect(run.status == 0 && run.signal == nil, "\(run)")
            try embstoreOK("verify", dir.appendingPathComponent("o").path)
            #expect(try exportTable(dir.appendingPathComponent("o"), "u", in: dir).rows == (try exportTable(store, "u", in: dir).rows))
        }
    }
}
