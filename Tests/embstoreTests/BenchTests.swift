import Foundation
import Testing

/// `embstore bench` prints shared/bench's JSON lines; a tiny run checks their shape and sanity
/// (speed itself is measured by running the benchmark, not here).
@Suite struct BenchTests {
    @Test func benchPrintsLookupAndPooledJSONLines() throws {
        try withTemporaryDirectory { dir in
            let n = 600, d = 8
            let vectors = dir.appendingPathComponent("table.npy")
            try writeFloat32(randomRows(n, d, seed: 5), to: vectors)
            let store = dir.appendingPathComponent("store").path
            try embstoreOK("ingest", store, "--table", "t", "--vectors", vectors.path, "--codec", "int8")
            let ids = (0..<1024).map { UInt64(($0 * 37) % n) }
            try writeUInt64(ids, to: dir.appendingPathComponent("ids.npy"))
            try writeUInt64((0..<200).map { UInt64($0 % n) }, to: dir.appendingPathComponent("bags.npy"))
            try writeInt64((0...40).map { Int64($0 * 5) }, to: dir.appendingPathComponent("offsets.npy"))
            let run = try embstoreOK("bench", store, "--table", "t", "--ids", dir.appendingPathComponent("ids.npy").path,
                                     "--bags", dir.appendingPathComponent("bags.npy").path,
                                     "--offsets", dir.appendingPathComponent("offsets.npy").path,
                                     "--batch", "64", "--bag-batch", "8", "--reps", "3", "--rep-seconds", "0.01",
                                     "--table-npy", vectors.path, "--threads", "2", "--decode-only", "--features", "2", "--json")
            let lines = run.stdout.split(separator: "\n").map { String($0) }
            #expect(lines.count == 12)
            let all = try lines.map { try #require(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
            #expect(all.map { $0["workload"] as? String } == ["open_first_batch", "lookup"] + Array(repeating: "decode", count: 7) + ["pooled", "pooled", "pooled"])
            // Start-up: open, table, reader and one batch of 64 ids, timed in the process.
            #expect((all[0]["seconds"] as? Double ?? 0) > 0 && all[0]["batch"] as? Int == 64)
            // Decode-only: one line per codec of shared/bench (its int4 is int4h), our int4, and
            // two tc rates, over the first batch's rows (tc fitted on the table's rows).
            #expect(all[2...8].map { $0["codec"] as? String } == ["fp32", "fp16", "int8", "int4", "int4h", "tc:2", "tc:4"])
            for record in all[2...8] {
                #expect((record["rows_per_s"] as? Double ?? 0) > 0 && record["batch"] as? Int == 64 && record["reps"] as? Int == 3)
            }
            let records = [all[1], all[9]]
            for record in records {
                #expect(record["system"] as? String == "embstore")
                #expect(record["codec"] as? String == "int8")
                #expect(record["N"] as? Int == n && record["d"] as? Int == d)
                #expect((record["rows_per_s"] as? Double ?? 0) > 0)
                #expect(record["reps"] as? Int == 3 && record["threads"] as? Int == 2)
            }
            #expect(records[0]["ids"] as? String == "zipf" && records[0]["batch"] as? Int == 64)
            // int8 loses ~0.5% of the row norm on these rows; well under 2%.
            let error = try #require(records[0]["rel_l2_err"] as? Double)
            #expect(error > 0 && error < 0.02)
            #expect(records[1]["batch"] as? Int == 8 && (records[1]["bags_per_s"] as? Double ?? 0) > 0)
            // --features 2: multi-table requests of 2 bag batches against the 2 single-table calls.
            #expect(all[10...11].map { $0["variant"] as? String } == ["single-table x2", "multi-table x2"])
            for record in all[10...11] {
                #expect((record["rows_per_s"] as? Double ?? 0) > 0 && record["rounds"] as? Int == 3 && record["features"] as? Int == 2)
            }
        }
    }

    /// --table-npy reads the stream's ids as row positions: sparse 64-bit ids are an error that
    /// says so, not a crash.
    @Test func tableNpyWithIdsPastItsRowsIsAnError() throws {
        try withTemporaryDirectory { dir in
            let n = 100, d = 8
            let vectors = dir.appendingPathComponent("table.npy"), ids = dir.appendingPathComponent("ids.npy")
            try writeFloat32(randomRows(n, d, seed: 2), to: vectors)
            let sparse = (0..<UInt64(n)).map { $0 &* 0x9E37_79B9_7F4A_7C15 | 1 << 63 }
            try writeUInt64(sparse, to: ids)
            let store = dir.appendingPathComponent("store").path
            try embstoreOK("ingest", store, "--table", "t", "--vectors", vectors.path, "--ids", ids.path, "--codec", "int8")
            for extra in [[], ["--decode-only"]] {
                let run = try embstore(["bench", store, "--table", "t", "--ids", ids.path, "--batch", "16", "--reps", "1", "--rep-seconds", "0.01",
                                        "--table-npy", vectors.path] + extra)
                #expect(run.status == 1, "\(run)")
                #expect(run.stderr.contains("ids are read as its row positions") && run.stderr.contains("past its 100 rows"), "\(run.stderr)")
            }
        }
    }
}
