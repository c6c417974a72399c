import EmbeddingCodecs
import Foundation
import LMDB
import Testing
@testable import EmbeddingStore

/// tc rows in a store: every read path agrees with the others and with the codec, puts use the
/// loaded model, damage is named, the format becomes version 3, and the Python reader (written
/// from FORMAT.md) decodes the same floats.
@Suite struct TransformCodedStoreTests {
    static let d = 24
    static let count = 500

    /// A store with table "tc" (a tc:3 segment) and table "keyed" (the same rows, per key).
    static func loaded(_ dir: TemporaryDirectory) throws -> (Store, Table, Table, [Float], [UInt64]) {
        let store = try makeStore(dir)
        let rows = embeddingRows(count: count, dimension: d, seed: 11)
        let ids = (0..<UInt64(count)).map { $0 * 7 + 3 }   // sparse ids: a sized, sparse segment
        var perKey = LoadOptions()
        perKey.layout = .perKey
        try rows.withUnsafeBufferPointer { rows in
            try store.load(table: "tc", ids: ids, rows: rows, count: count, dimension: d, codec: .transformCoded(bitsPerValue: 3))
            try store.load(table: "keyed", ids: ids, rows: rows, count: count, dimension: d, codec: .transformCoded(bitsPerValue: 3),
                           options: perKey)
        }
        return (store, try store.table("tc"), try store.table("keyed"), rows, ids)
    }

    @Test func everyReadPathAgrees() throws {
        let dir = TemporaryDirectory()
        let (store, table, keyed, rows, ids) = try Self.loaded(dir)
        let d = Self.d
        let exported = try store.export(table)
        #expect(exported.ids == ids)
        #expect(try store.export(keyed).values == exported.values, "the segment and per-key layouts decode alike")
        // Loss: tc:3 on clustered rows keeps them close.
        var error = 0.0, norm = 0.0
        for i in 0..<rows.count {
            error += Double(rows[i] - exported.values[i]) * Double(rows[i] - exported.values[i])
            norm += Double(rows[i]) * Double(rows[i])
        }
        #expect((error / norm).squareRoot() < 0.15, "relative error \((error / norm).squareRoot())")

        // Batched lookups (shuffled, with a missing id), one at a time, and pooled sums.
        let reader = try store.makeReader()
        var generator = SeededGenerator(state: 42)
        let probe = ids.shuffled(using: &generator) + [1]
        var found = [Bool](repeating: false, count: probe.count)
        var out = [Float](repeating: .nan, count: probe.count * d)
        try probe.withUnsafeBufferPointer { probe in
            try out.withUnsafeMutableBufferPointer { out in
                try found.withUnsafeMutableBufferPointer { _ = try reader.lookup(table, ids: probe, into: out, found: $0) }
            }
        }
        #expect(found == probe.map { $0 != 1 })
        for (i, id) in probe.enumerated() where id != 1 {
            let row = Int(ids.firstIndex(of: id)!)
            #expect(Array(out[i * d..<(i + 1) * d]) == Array(exported.values[row * d..<(row + 1) * d]), "id \(id)")
            #expect(try store.get(table, id: id) == Array(exported.values[row * d..<(row + 1) * d]))
        }
        let bag = Array(ids[10..<30])
        var pooled = [Float](repeating: 0, count: d)
        try bag.withUnsafeBufferPointer { bag in
            try [0, bag.count].withUnsafeBufferPointer { offsets in
                try pooled.withUnsafeMutableBufferPointer { _ = try reader.lookupPooled(table, ids: bag, offsets: offsets, into: $0) }
            }
        }
        var sum = [Float](repeating: 0, count: d)
        for row in 10..<30 { for j in 0..<d { sum[j] = sum[j] + 1 * exported.values[row * d + j] } }
        #expect(pooled == sum)

        let statistics = try store.statistics(table)
        #expect(statistics.codecs.map(\.codec) == ["tc"] && statistics.bases == 2)
        #expect(try store.verify().problems.isEmpty)
        let version = try store.environment.read { txn in
            try txn.withValue(forKey: StoreFormat.formatKey, in: store.meta) { try StoreFormat.decodeHeader($0!, path: "") }
        }
        #expect(version == 5, "a new store starts at version 5")
    }

    /// Lookups set tc rows aside and decode them together at the end of the batch, grouped by
    /// model: among int8 and fp16 rows, in any order, with missing ids and repeats, every batch
    /// size gives exactly the rows `get` gives one at a time; a damaged tc record among them is
    /// named by its own id.
    @Test func tcRowsSetAsideInABatchLandInTheirPlaces() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let d = Self.d, count = 600
        let rows = embeddingRows(count: count, dimension: d, seed: 12)
        var random = SeededRandom(seed: 4)
        let counts = (0..<count).map { _ in Double(random.next() % 1000) }
        try rows.withUnsafeBufferPointer { rows in
            _ = try store.load(table: "mixed", rows: rows, count: count, dimension: d,
                               policy: .tiers([.init(codec: .fp16, fraction: 0.2), .init(codec: .int8, fraction: 0.3),
                                               .init(codec: .transformCoded(bitsPerValue: 2), fraction: 0.25),
                                               .init(codec: .transformCoded(bitsPerValue: 4), fraction: nil)]),
                               counts: counts)
        }
        let table = try store.table("mixed")
        #expect(Set(try store.statistics(table).codecs.map(\.codec)) == ["fp16", "int8", "tc"])
        var expected: [UInt64: [Float]] = [:]
        for id in 0..<UInt64(count) { expected[id] = try #require(try store.get(table, id: id)) }
        let reader = try store.makeReader()
        for batch in [1, 3, 8, 9, 64, 512, 1500] {
            let ids = (0..<batch).map { _ in random.next() % UInt64(count + 40) }   // ids ≥ 600 are missing
            let got = try reader.lookup(table, ids: ids)
            for (i, id) in ids.enumerated() {
                #expect(Array(got[i * d..<(i + 1) * d]) == expected[id] ?? [Float](repeating: 0, count: d), "batch \(batch), id \(id)")
            }
        }
        // Damage one tc record's model id (a model that does not exist): the lookup names it.
        let victim = try #require((0..<UInt64(count)).first { id in
            try store.provenance(table, id: id)?.codec.hasPrefix("tc") == true
        })
        try store.environment.write { txn in
            try table.sealing([9, 99] + [UInt8](repeating: 0, count: 8), key: victim).withUnsafeBytes { try txn.put($0, forKey: victim, in: table.rows) }
        }
        #expect { _ = try store.makeReader().lookup(table, ids: [0, 1, victim, 2]) } throws: { "\($0)".contains("id \(victim)") }
    }

    @Test func putsUseTheLoadedModelAndDamageIsNamed() throws {
        let dir = TemporaryDirectory()
        let (store, table, _, rows, ids) = try Self.loaded(dir)
        let d = Self.d
        let row = Array(rows[0..<d])
        let before = try #require(try store.get(table, id: ids[0]))
        try store.put(table, id: 1, vector: row, codec: .transformCoded(bitsPerValue: 3))
        #expect(try store.get(table, id: 1) == before, "a put encodes with the same model as the load")
        #expect { try store.put(table, id: 2, vector: row, codec: .transformCoded(bitsPerValue: 5)) } throws: { error in
            "\(error)".contains("tc:5") && "\(error)".contains("'tc'")
        }
        // A damaged record in the delta: truncated, and pointing at a model that is missing.
        let record = try store.environment.read { txn in
            Array(try table.deltaRecord(try #require(try txn.unsafeValue(forKey: 1, in: table.rows)), id: 1))
        }
        try store.environment.write { txn in
            try table.sealing(Array(record.dropLast(3)), key: 5).withUnsafeBytes { try txn.put($0, forKey: 5, in: table.rows) }
            try table.sealing([9, 77] + Array(record[2...]), key: 6).withUnsafeBytes { try txn.put($0, forKey: 6, in: table.rows) }
        }
        #expect { _ = try store.get(table, id: 5) } throws: { "\($0)".contains("id 5") && "\($0)".contains("does not decode") }
        #expect { _ = try store.get(table, id: 6) } throws: { "\($0)".contains("id 6") && "\($0)".contains("tc model 77") }
        #expect(try store.verify().problems.count == 2)   // each damaged row is named
    }

    /// `tc:P%` fits the rate to a budget of bytes on disk: the data file stays within it, for
    /// sparse and dense ids, and a budget too small for the model is refused by name.
    @Test func budgetsHoldOnDisk() throws {
        let d = 64, count = 4000
        let rows = embeddingRows(count: count, dimension: d, seed: 3)
        for (sparse, budget) in [(true, 0.25), (false, 0.25), (false, 0.125)] {
            let dir = TemporaryDirectory()
            let store = try makeStore(dir)
            let ids = (0..<UInt64(count)).map { sparse ? $0 &* 0x9E37_79B9_7F4A_7C15 : $0 }
            try rows.withUnsafeBufferPointer {
                _ = try store.load(table: "t", ids: ids, rows: $0, count: count, dimension: d, codec: .transformCoded(budget: budget))
            }
            let limit = Int(budget * Double(count * d * 4))
            print("[budget] sparse \(sparse), \(budget): \(store.fileSize) of \(limit) bytes")
            #expect(store.fileSize <= limit, "sparse \(sparse), \(budget): \(store.fileSize) bytes > \(limit)")
            #expect(store.fileSize >= limit * 3 / 4, "sparse \(sparse), \(budget): \(store.fileSize) bytes wastes the budget of \(limit)")
            #expect(try store.verify().problems.isEmpty)
            try store.put(try store.table("t"), id: 1, vector: Array(rows[0..<d]), codec: .transformCoded(budget: budget))
        }
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        #expect {
            try rows.withUnsafeBufferPointer {
                _ = try store.load(table: "t", rows: UnsafeBufferPointer(rebasing: $0[0..<(10 * d)]), count: 10, dimension: d,
                                   codec: .transformCoded(budget: 0.05))
            }
        } throws: { "\($0)".contains("tc:5%") && "\($0)".contains("budget") }
    }

    @Test(.enabled(if: PythonReader.available, "python3 with numpy and py-lmdb is not installed; skipping"))
    func pythonReaderDecodesTheSameFloats() throws {
        let dir = TemporaryDirectory()
        let (store, table, keyed, _, _) = try Self.loaded(dir)
        let script = """
            import numpy as np
            from embstore_reader import Store
            with Store(sys.argv[2]) as s:
                out = {}
                for name in ("tc", "keyed"):
                    ids, x = s.export(name)
                    out[name] = {"ids": ids.tolist(), "bits": x.view(np.uint32).ravel().tolist()}
                json.dump(out, open(sys.argv[1], "w"))
            """
        let result = try PythonReader.run(script, [dir.file("store")])
        for handle in [table, keyed] {
            let exported = try store.export(handle)
            let python = try #require(result[handle.name] as? [String: Any])
            #expect((python["ids"] as? [NSNumber])?.map(\.uint64Value) == exported.ids)
            #expect((python["bits"] as? [NSNumber])?.map(\.uint32Value) == exported.values.map(\.bitPattern),
                    "the reader's float32 synthesis in ascending order is the kernel's, bit for bit")
        }
    }
}

/// A seeded generator for shuffles.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        return z ^ (z >> 27)
    }
}

/// A version-2 store stays version 2 until a write needs more: an int4h put raises it to 3 (tag
/// 10); any segment, now written with a blockmix64 checksum, to 4 — each in its own commit.
@Suite struct FormatVersionUpgradeTests {
    static func version(_ store: Store) throws -> UInt32 {
        try store.environment.read { txn in
            try txn.withValue(forKey: StoreFormat.formatKey, in: store.meta) { try StoreFormat.decodeHeader($0!, path: "") }
        }
    }

    /// A store created at version 2 (what a version-2 writer made: no record seals).
    static func versionTwoStore(_ dir: TemporaryDirectory) throws -> Store {
        try makeStore(dir, formatVersion: 2)
    }

    @Test func writesRaiseTheVersionTheyNeed() throws {
        let d = 16
        let rows = embeddingRows(count: 300, dimension: d, seed: 2)
        let writes: [(String, (Store) throws -> Void, UInt32)] = [
            ("int8 put", { try $0.put(try $0.createTable("t", dimension: d), id: 1, vector: Array(rows[0..<d]), codec: .int8) }, 2),
            ("int8 segment", { store in try rows.withUnsafeBufferPointer { _ = try store.load(table: "t", rows: $0, count: 300, dimension: d, codec: .int8) } }, 4),
            ("int4h put", { try $0.put(try $0.createTable("t", dimension: d), id: 1, vector: Array(rows[0..<d]), codec: .int4h) }, 3),
            ("int2h segment", { store in try rows.withUnsafeBufferPointer { _ = try store.load(table: "t", rows: $0, count: 300, dimension: d, codec: .int2h) } }, 4),
            ("tc load", { store in try rows.withUnsafeBufferPointer { _ = try store.load(table: "t", rows: $0, count: 300, dimension: d, codec: .transformCoded(bitsPerValue: 3)) } }, 4),
            ("tc per-key load", { store in
                var options = LoadOptions()
                options.layout = .perKey
                try rows.withUnsafeBufferPointer { _ = try store.load(table: "t", rows: $0, count: 300, dimension: d, codec: .transformCoded(bitsPerValue: 3), options: options) }
            }, 3),
        ]
        for (name, write, expected) in writes {
            let dir = TemporaryDirectory()
            let store = try Self.versionTwoStore(dir)
            #expect(try Self.version(store) == 2)
            try write(store)
            #expect(try Self.version(store) == expected, "\(name)")
        }
    }
}
