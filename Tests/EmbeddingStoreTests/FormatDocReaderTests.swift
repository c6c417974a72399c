import Foundation
import Testing
import EmbeddingCodecs
import LMDB
@testable import EmbeddingStore

/// Runs tools/embstore_reader.py (a reader written from FORMAT.md alone) from these tests.
enum PythonReader {
    static let tools = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("tools")

    static let available: Bool = (try? run("import numpy, lmdb\njson.dump({}, open(sys.argv[1], 'w'))", [])) != nil

    /// Runs `script` (with `json`, `sys` and tools/ importable) and returns the JSON object it
    /// writes to the file `sys.argv[1]`; `arguments` follow in `sys.argv[2...]`.
    static func run(_ script: String, _ arguments: [String]) throws -> [String: Any] {
        let scratch = TemporaryDirectory()
        let result = scratch.file("result.json"), stdout = scratch.file("stdout"), stderr = scratch.file("stderr")
        for file in [stdout, stderr] { _ = FileManager.default.createFile(atPath: file, contents: nil) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let prelude = "import json, sys; sys.path.insert(0, '\(tools.path)')\n"
        process.arguments = ["python3", "-c", prelude + script, result] + arguments
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: stdout))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderr))
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let message = (try? String(contentsOfFile: stderr, encoding: .utf8)) ?? ""
            throw StoreError.invalidArgument("python3 exited with \(process.terminationStatus): \(message)")
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: result))
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw StoreError.invalidArgument("python3 wrote no JSON object")
        }
        return object
    }
}

extension FormatDocTests {
    /// A table with every segment kind (several data parts each), every codec inside segments,
    /// shadowing between segments, delta rows, tombstones, and a segment that replaces delta
    /// rows and a tombstone; the Python reader must find the same rows as `Store`, and must
    /// refuse the table once a segment byte changes (checksum).
    @Test(.enabled(if: PythonReader.available, "python3 with numpy and py-lmdb is not installed; skipping"))
    func pythonReaderReadsEveryLayer() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let d = 6
        let table = try store.createTable("layers", dimension: d)
        let sample = embeddingRows(count: 400, dimension: d, seed: 7)
        func row(_ id: UInt64) -> [Float] { let i = Int(id % 400); return Array(sample[i * d..<(i + 1) * d]) }
        let basis = try sample.withUnsafeBufferPointer { try PCABasis.fit(rows: $0, count: 400, dimension: d, rank: 3) }
        let basisID = try store.write { batch in try batch.addBasis(basis, to: table) }
        let buckets = try Array(sample[0..<4 * d]).withUnsafeBufferPointer { rows in
            try store.write { batch in try batch.addBucketRows(table, rows: rows, codec: .fp16) }
        }
        let plain: [RowEncoding] = [.int8, .int4, .fp32, .fp16, .int4h, .int2h]
        let every: [RowEncoding] = plain + [.reduced(k: 2, basisID: basisID, basis: basis), .bucket(id: buckets.lowerBound + 1),
                                            .scaledBucket(id: buckets.lowerBound + 2, scale: 0.5)]
        func segment(_ ids: [UInt64], _ encoding: (Int) -> RowEncoding) throws {
            let records = try ids.enumerated().map { try Self.record(row($0.element), encoding($0.offset)) }
            try store.writeSegment(table, ids: ids, records: records, rowsPerPart: 16)
        }
        try segment((0..<40).map { UInt64($0) }) { _ in .fp32 }                         // 1: dense fixed
        try segment((0..<50).map { 100 + 3 * UInt64($0) }) { _ in .fp16 }              // 2: sparse fixed
        try segment((20..<60).map { UInt64($0) }) { plain[$0 % plain.count] }           // 3: dense sized
        try segment((0..<45).map { UInt64($0 * $0 + 30) }) { every[$0 % every.count] }  // 4: sparse sized
        try store.put(table, id: 5, vector: row(5), codec: .int8)       // shadows segment 1
        try store.put(table, id: 1000, vector: row(1000), codec: .fp32) // only in the delta
        try store.put(table, id: 2000, vector: row(2000), codec: .fp32)
        #expect(try store.delete(table, id: 2000))                      // no segment holds it: gone
        #expect(try store.delete(table, id: 21))                        // segment 3 (and 1): tombstone
        #expect(try store.delete(table, id: 103))                       // segment 2: tombstone
        try store.put(table, id: 34, vector: row(34), codec: .fp16)
        #expect(try store.delete(table, id: 34))                        // segment 4: tombstone
        try segment([103, 1000, 5000]) { _ in .int4 }                   // 5: replaces delta 1000 and the tombstone of 103

        let probe: [UInt64] = [0, 5, 20, 21, 30, 31, 34, 39, 55, 100, 103, 106, 1000, 2000, 5000, 61, 131, 4999, 10_000_000]
        let script = """
            import numpy as np
            from embstore_reader import Store
            with Store(sys.argv[2]) as s:
                ids, x = s.export("layers")
                rows, found = s.get("layers", [int(i) for i in sys.argv[3].split(",")])
                json.dump({"version": s.format_version, "layers": s.layers("layers"), "ids": ids.tolist(),
                           "rows": x.astype(float).tolist(), "get": rows.astype(float).tolist(),
                           "found": found.tolist()}, open(sys.argv[1], "w"))
            """
        let result = try PythonReader.run(script, [dir.file("store"), probe.map(String.init).joined(separator: ",")])
        #expect(result["version"] as? Int == 5, "a new store is created at version 5 (sealed)")
        let layers = try #require(result["layers"] as? [String: Any])
        let segments = try #require(layers["segments"] as? [[String: Any]])
        #expect(segments.map { $0["id"] as? Int } == [5, 4, 3, 2, 1], "manifest order: \(segments)")
        #expect(segments.map { $0["kind"] as? Int } == [3, 6, 5, 3, 1], "kinds: \(segments)")
        #expect(segments.map { $0["parts"] as? Int } == [1, 3, 3, 4, 3], "parts: \(segments)")
        #expect(layers["delta"] as? Int == 3 && layers["tombstones"] as? Int == 2, "\(layers)")
        let statistics = try store.statistics(table)
        #expect(layers["rows"] as? Int == statistics.rows && statistics.tombstones == 2 && statistics.segments == 5)

        // Export: the same ids, the same floats (reduced rows to rounding: a sum of products).
        let exported = try store.export(table)
        let ids = try #require(result["ids"] as? [NSNumber]).map(\.uint64Value)
        #expect(ids == exported.ids)
        let rows = try #require(result["rows"] as? [[Double]])
        var reduced = Set<UInt64>()
        try store.environment.read { txn in
            try store.forEachLiveRow(table, in: txn) { id, record in if record[0] == Codec.reduced(k: 1).tag { reduced.insert(id) } }
        }
        #expect(!reduced.isEmpty)
        for (i, id) in exported.ids.enumerated() where i < rows.count {
            let mine = Array(exported.values[i * d..<(i + 1) * d]), theirs = rows[i].map { Float($0) }
            if reduced.contains(id) {
                let scale = mine.map(abs).max() ?? 0
                #expect(zip(mine, theirs).allSatisfy { abs($0 - $1) <= 1e-6 * max(scale, 1) }, "id \(id): \(mine) vs \(theirs)")
            } else {
                #expect(mine == theirs, "id \(id): export \(mine), Python reader \(theirs)")
            }
        }

        // Lookups: the same rows found and missing as Store.get.
        let found = try #require(result["found"] as? [Bool])
        let got = try #require(result["get"] as? [[Double]])
        for (i, id) in probe.enumerated() {
            let mine = try store.get(table, id: id)
            #expect(found[i] == (mine != nil), "id \(id): found \(found[i]) by the Python reader, \(mine != nil) by Store.get")
            if let mine, !reduced.contains(id) { #expect(got[i].map { Float($0) } == mine, "id \(id)") }
        }
        #expect(found == probe.map { ![21, 34, 2000, 61, 131, 4999, 10_000_000].contains($0) })

        // One changed byte in a data part: the checksum no longer matches.
        let key = Store.segmentKey(3, part: 2)
        try store.environment.write { txn in
            var bytes = try txn.withValue(forKey: key, in: table.segments!) { Array($0!) }
            bytes[7] ^= 0x01
            try bytes.withUnsafeBytes { try txn.put($0, forKey: key, in: table.segments!) }
        }
        let damaged = try PythonReader.run("""
            import embstore_reader
            try:
                with embstore_reader.Store(sys.argv[2]) as s:
                    s.export("layers")
                json.dump({"error": None}, open(sys.argv[1], "w"))
            except embstore_reader.SegmentChecksumError as e:
                json.dump({"error": str(e)}, open(sys.argv[1], "w"))
            """, [dir.file("store")])
        let message = try #require(damaged["error"] as? String, "the Python reader read a damaged segment: \(damaged)")
        #expect(message.contains("'layers'") && message.contains("segment 3") && message.contains("checksum"), "\(message)")
        #expect(try store.verify().problems.contains { $0.contains("segment 3") && $0.contains("checksum") })
    }
}
