import Foundation
import Testing

/// `get`, `info`, and looking at a store from outside with lmdb-utils.
@Suite("get, info and the LMDB layout")
struct InspectTests {
    /// `get` prints `ID: v0 v1 …` per id with the floats `export` writes; a missing id prints
    /// "not found" and makes the exit status 1 (the found rows are still printed).
    @Test func getPrintsTheExportedRows() throws {
        try withTemporaryDirectory { dir in
            let vectors = dir.appendingPathComponent("x.npy"), ids = dir.appendingPathComponent("ids.npy")
            try writeFloat32(randomRows(20, 6, seed: 9), to: vectors)
            try writeUInt64((0..<20).map { UInt64($0) * 10 }, to: ids)
            let store = dir.appendingPathComponent("store")
            try embstoreOK("ingest", store.path, "--table", "q", "--vectors", vectors.path, "--ids", ids.path, "--codec", "int8")
            let exported = try exportTable(store, "q", in: dir)
            let rowByID = Dictionary(uniqueKeysWithValues: zip(exported.ids, exported.rows))

            func parse(_ output: String) throws -> [UInt64: [Float]?] {
                var result: [UInt64: [Float]?] = [:]
                for line in output.split(separator: "\n") {
                    let parts = line.split(separator: ":", maxSplits: 1)
                    let id = try #require(UInt64(parts[0].trimmingCharacters(in: .whitespaces)), "bad line \(line)")
                    let rest = parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : ""
                    if rest == "not found" {
                        result[id] = .some(nil)
                    } else {
                        result[id] = try rest.split(separator: " ").map { try #require(Float(String($0)), "bad float in \(line)") }
                    }
                }
                return result
            }

            let ok = try embstoreOK("get", store.path, "--table", "q", "190", "0", "70")
            let got = try parse(ok.stdout)
            #expect(got.count == 3)
            for id: UInt64 in [190, 0, 70] {
                #expect(got[id] == .some(rowByID[id]!), "get \(id) differs from export")
            }
            #expect(ok.stdout.split(separator: "\n").first?.hasPrefix("190:") == true, "rows in request order: \(ok.stdout)")

            let missing = try embstore("get", store.path, "--table", "q", "10", "11")
            #expect(missing.status == 1, "\(missing)")
            let partial = try parse(missing.stdout)
            #expect(partial[10] == .some(rowByID[10]!))
            #expect(partial[11] == .some(nil), "id 11 should print 'not found': \(missing)")
            #expect(missing.stdout.contains("11: not found"), "\(missing)")

            let noTable = try embstore("get", store.path, "--table", "nope", "1")
            #expect(noTable.status != 0 && noTable.stderr.contains("nope"), "\(noTable)")
        }
    }

    struct InfoReport: Decodable {
        struct Table: Decodable {
            struct Usage: Decodable { let codec: String; let rows: Int; let bytes: Int }
            let name: String
            let dimension: Int
            let rows: Int
            let codecs: [Usage]
            let bucketRows: Int
            let bucketBytes: Int
            let bases: Int
        }
        let path: String
        let fileBytes: Int
        let tables: [Table]
    }

    @Test func infoJSON() throws {
        try withTemporaryDirectory { dir in
            let d = 6, n = 40
            let vectors = dir.appendingPathComponent("x.npy")
            try writeFloat32(randomRows(n, d, seed: 10), to: vectors)
            let store = dir.appendingPathComponent("store")
            try embstoreOK("ingest", store.path, "--table", "a8", "--vectors", vectors.path, "--codec", "int8")
            try embstoreOK("ingest", store.path, "--table", "b4", "--vectors", vectors.path, "--codec", "int4")
            try embstoreOK("ingest", store.path, "--table", "c32", "--vectors", vectors.path, "--codec", "fp32")
            try embstoreOK("ingest", store.path, "--table", "red", "--vectors", vectors.path, "--codec", "reduced:3")
            try embstoreOK("ingest", store.path, "--table", "buck", "--vectors", vectors.path, "--codec", "bucket:4:scaled",
                           "--bucket-codec", "fp16")
            let run = try embstoreOK("info", store.path, "--json")
            let report = try JSONDecoder().decode(InfoReport.self, from: Data(run.stdout.utf8))
            #expect(report.fileBytes > 0)
            #expect(Set(report.tables.map(\.name)) == ["a8", "b4", "c32", "red", "buck"])
            let byName = Dictionary(uniqueKeysWithValues: report.tables.map { ($0.name, $0) })
            // Record sizes from FORMAT.md: tag byte + payload.
            let expected: [(String, String, Int)] = [
                ("a8", "int8", 1 + d + 8), ("b4", "int4", 1 + (d + 1) / 2 + 8), ("c32", "fp32", 1 + 4 * d),
                ("red", "reduced", 1 + 4 + 4 * 3), ("buck", "bucket+scale", 1 + 8),
            ]
            for (name, codec, recordBytes) in expected {
                let t = try #require(byName[name])
                #expect(t.dimension == d && t.rows == n, "\(name): \(t)")
                #expect(t.codecs.count == 1, "\(name): \(t.codecs)")
                #expect(t.codecs.first?.codec == codec, "\(name): \(t.codecs)")
                #expect(t.codecs.first?.rows == n, "\(name): \(t.codecs)")
                #expect(t.codecs.first?.bytes == n * recordBytes, "\(name): \(t.codecs)")
            }
            #expect(byName["red"]?.bases == 1)
            #expect(byName["buck"]?.bucketRows == 4)
            #expect(byName["buck"]?.bucketBytes == 4 * (1 + 2 * d + 4), "bucket rows are fp16 records and their 4-byte seals")
            #expect(byName["c32"]?.bucketRows == 0 && byName["c32"]?.bases == 0)

            let text = try embstoreOK("info", store.path)
            #expect(text.stdout.contains("table 'a8': dimension 6, 40 rows"), "\(text.stdout)")
        }
    }

    /// lmdb-utils sees the named databases FORMAT.md lists: four per table. A default ingest
    /// writes one segment (manifest, part 0, one data part) and no delta rows; a per-key ingest
    /// writes one delta row per id.
    @Test(.enabled(if: Tooling.hasMdbStat, "mdb_stat (lmdb-utils) is not installed; skipping"))
    func mdbStatListsTheNamedDatabases() throws {
        try withTemporaryDirectory { dir in
            let vectors = dir.appendingPathComponent("x.npy")
            try writeFloat32(randomRows(30, 5, seed: 12), to: vectors)
            let store = dir.appendingPathComponent("store")
            try embstoreOK("ingest", store.path, "--table", "first", "--vectors", vectors.path, "--codec", "reduced:2")
            try embstoreOK("ingest", store.path, "--table", "second", "--vectors", vectors.path, "--codec", "bucket:3",
                           "--layout", "per-key")
            let run = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["mdb_stat", "-a", store.path])
            #expect(run.status == 0, "\(run)")
            for name in ["meta", "t1/rows", "t1/buckets", "t1/bases", "t1/segments", "t2/rows", "t2/buckets", "t2/bases", "t2/segments"] {
                #expect(run.stdout.contains("Status of \(name)\n"), "mdb_stat -a does not list \(name):\n\(run.stdout)")
            }
            var entries: [String: String] = [:]
            for section in run.stdout.components(separatedBy: "Status of ").dropFirst() {
                let lines = section.split(separator: "\n", maxSplits: 1)
                entries[String(lines[0])] = lines.count > 1 ? String(lines[1]) : ""
            }
            // t1 (segment layout): no delta rows; manifest, part 0 and one data part.
            // t2 (per-key layout): 30 row records in the delta, no segment.
            let expected = ["t1/rows": 0, "t1/segments": 3, "t1/bases": 1, "t2/rows": 30, "t2/segments": 0, "t2/buckets": 3]
            for (name, count) in expected {
                #expect(entries[name]?.contains("Entries: \(count)\n") == true, "\(name): \(entries[name] ?? "missing")")
            }
        }
    }

    /// `info` on a directory that is not a store (empty, or holding other files), or on a path
    /// that does not exist, fails with a message and leaves the directory alone.
    @Test(arguments: ["empty", "other-files", "missing", "file"])
    func infoOnSomethingThatIsNotAStore(_ kind: String) throws {
        try withTemporaryDirectory { dir in
            let target = dir.appendingPathComponent("target")
            switch kind {
            case "empty": try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
            case "other-files":
                try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
                try Data("not lmdb".utf8).write(to: target.appendingPathComponent("notes.txt"))
            case "file": try Data("just a file".utf8).write(to: target)
            default: break
            }
            let before = (try? FileManager.default.contentsOfDirectory(atPath: target.path))?.sorted()
            let run = try embstore("info", target.path)
            #expect(run.status != 0, "\(kind): info succeeded on something that is not a store: \(run)")
            #expect(!run.stderr.isEmpty, "\(kind): no message")
            #expect(!run.stderr.contains("Fatal error"), "\(kind): crashed: \(run)")
            let after = (try? FileManager.default.contentsOfDirectory(atPath: target.path))?.sorted()
            #expect(before == after, "\(kind): info changed the directory: \(before ?? []) → \(after ?? [])")
        }
    }
}
