import CEmbeddingKernels
import EmbeddingCodecs
import Foundation
import LMDB
import Testing
@testable import EmbeddingStore

/// Record seals (format version 5, FORMAT.md "Record seals"): every value outside segment parts
/// ends with the CRC-32 of its key and payload, and every reader checks it before using a byte.
@Suite struct SealTests {
    @Test func crc32IsZlibs() {
        // The standard check value, and the key chained before the value.
        let check = Array("123456789".utf8)
        #expect(emb_crc32(0, check, check.count) == 0xCBF4_3926)
        #expect(check.withUnsafeBytes { RecordSeal.checksum(key: "1234", UnsafeRawBufferPointer(rebasing: $0[4...])) } == 0xCBF4_3926)
        // Long inputs cross the 8-byte loop; the bit-by-bit twin in FormatDocSegmentExamples agrees.
        var random = SeededRandom(seed: 3)
        for length in [0, 1, 7, 8, 9, 63, 64, 1000, 4099] {
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            #expect(emb_crc32(0, bytes, bytes.count) == FormatDocTests.crc32(bytes), "length \(length)")
        }
    }

    /// A store with every sealed record kind: delta rows and a tombstone, a segment (and its
    /// manifest and load note), bucket rows, a PCA basis, tc parameters and access counts.
    static func populated(_ dir: TemporaryDirectory) throws -> (Store, Table, Table) {
        let store = try makeStore(dir)
        let d = 8
        let rows = embeddingRows(count: 400, dimension: d, seed: 5)
        try rows.withUnsafeBufferPointer {
            _ = try store.load(table: "loaded", ids: (0..<400).map { UInt64($0) }, rows: $0, count: 400, dimension: d,
                               policy: .tiers([.init(codec: .fp16, fraction: 0.1), .init(codec: .transformCoded(bitsPerValue: 2), fraction: nil)]),
                               counts: (0..<400).map { Double(400 - $0) })
        }
        let loaded = try store.table("loaded")
        let puts = try store.createTable("puts", dimension: d)
        try store.write { batch in
            _ = try rows.withUnsafeBufferPointer { try batch.addBucketRows(puts, rows: UnsafeBufferPointer(rebasing: $0[0..<(4 * d)]), codec: .int8) }
            try batch.addBasis(try rows.withUnsafeBufferPointer { try PCABasis.fit(rows: $0, count: 400, dimension: d, rank: 3) }, to: puts)
            for id in 0..<20 {
                let codec: Codec = [.fp32, .int8, .bucket, .reduced(k: 3)][id % 4]
                try batch.put(puts, id: UInt64(id), vector: Array(rows[id * d..<(id + 1) * d]), codec: codec)
            }
        }
        #expect(try store.delete(loaded, id: 7))   // a tombstone
        try store.put(loaded, id: 8, vector: Array(rows[0..<d]), codec: .int8)
        try store.addAccessCounts([loaded.id: [(id: 3, count: 10), (id: 500, count: 2)]])
        _ = puts
        return (store, loaded, puts)
    }

    /// Every value of every database, walked raw: each sealed by FORMAT.md's rule, except parts.
    @Test func everyValueOutsideSegmentPartsIsSealed() throws {
        let dir = TemporaryDirectory()
        let (store, loaded, _) = try Self.populated(dir)
        defer { store.close() }
        #expect(store.sealed)
        var checked: [String: Int] = [:]
        try store.environment.read { txn in
            let main = try txn.openDatabase(nil)
            let names = try txn.withCursor(main) { cursor in
                var names: [String] = []
                var entry = try cursor.first()
                while let current = entry { names.append(current.stringKey); entry = try cursor.next() }
                return names
            }
            for name in names {
                let integerKeys = name != StoreFormat.metaDatabase
                let database = try txn.openDatabase(name, flags: integerKeys ? .integerKey : [])
                try txn.withCursor(database) { cursor in
                    var entry = try cursor.first()
                    while let current = entry {
                        defer { entry = try? cursor.next() }
                        if name.hasSuffix("/segments"), current.integerKey != 0 { continue }   // parts: the segment checksum
                        let key = Array(current.key)
                        _ = try FormatDocTests.unseal(Array(current.value), key: key)
                        checked[name.split(separator: "/").last.map(String.init) ?? name, default: 0] += 1
                    }
                }
            }
        }
        for kind in ["meta", "rows", "buckets", "bases", "segments", "counts"] {
            #expect(checked[kind, default: 0] > 0, "no \(kind) value was checked: \(checked)")
        }
        #expect(try store.verify().isSound)
        _ = loaded
    }

    /// Replaces the value under `key` with `change` applied to it, in one write.
    static func damage(_ store: Store, _ database: Database, key: UInt64, _ change: (inout [UInt8]) -> Void) throws {
        try store.environment.write { txn in
            var value = try txn.withValue(forKey: key, in: database) { Array(try #require($0)) }
            change(&value)
            try value.withUnsafeBytes { try txn.put($0, forKey: key, in: database) }
        }
    }

    @Test func aFlippedByteInAnyRecordKindIsRefusedAndNamed() throws {
        // (what to damage, a read that must now fail, what its error and verify must name)
        typealias Case = (name: String, damage: (Store, Table, Table) throws -> Void, read: (Store, Table, Table) throws -> Void, names: String)
        let cases: [Case] = [
            ("delta row", { s, _, p in try Self.damage(s, p.rows, key: 1) { $0[2] ^= 0x10 } },
             { s, _, p in _ = try s.get(p, id: 1) }, "id 1"),
            ("tombstone", { s, l, _ in try Self.damage(s, l.rows, key: 7) { $0[0] ^= 0x01 } },
             { s, l, _ in _ = try s.get(l, id: 7) }, "id 7"),
            ("bucket row", { s, _, p in try Self.damage(s, p.buckets, key: 2) { $0[3] ^= 0x40 } },
             { s, _, p in _ = try s.makeReader().lookup(p, ids: Array(0..<20)) }, "bucket row 2"),
            ("PCA basis", { s, _, p in try Self.damage(s, p.bases, key: 1) { $0[20] ^= 0x02 } },
             { s, _, p in _ = try s.get(p, id: 3) }, "parameter record 1"),
            ("tc model", { s, l, _ in try Self.damage(s, l.bases, key: 2) { $0[$0.count - 9] ^= 0x80 } },
             { s, l, _ in _ = try s.export(l) }, "parameter record 2"),
            ("manifest", { s, l, _ in try Self.damage(s, l.segments!, key: 0) { $0[4] ^= 0x01 } },
             { s, l, _ in _ = try s.get(l, id: 100) }, "manifest"),
            ("access count", { s, l, _ in
                try s.environment.write { txn in
                    let counts = try txn.openDatabase(Store.countsDatabase(l.id), flags: .integerKey)
                    var value = try txn.withValue(forKey: 3, in: counts) { Array(try #require($0)) }
                    value[0] ^= 0x08
                    try value.withUnsafeBytes { try txn.put($0, forKey: 3, in: counts) }
                }
            }, { s, l, _ in _ = try s.accessCounts(l) }, "access count of id 3"),
        ]
        for c in cases {
            let dir = TemporaryDirectory()
            let (store, loaded, puts) = try Self.populated(dir)
            defer { store.close() }
            try c.damage(store, loaded, puts)
            #expect("\(c.name): the read refuses the damaged record", performing: { try c.read(store, loaded, puts) }, throws: { error in
                "\(error)".contains("seal does not match")
            })
            let report = try store.verify()
            #expect(report.findings.contains { "\($0)".contains(c.names) && $0.problem.contains("seal does not match") },
                    "\(c.name): verify said \(report.problems)")
        }
    }

    @Test func aRowFiledUnderAnotherIDIsRefused() throws {
        // What a flipped key byte does: an intact value appears under another id.
        let dir = TemporaryDirectory()
        let (store, _, puts) = try Self.populated(dir)
        defer { store.close() }
        try store.environment.write { txn in
            let value = try txn.withValue(forKey: 4, in: puts.rows) { Array(try #require($0)) }
            try value.withUnsafeBytes { try txn.put($0, forKey: 4 | 1 << 40, in: puts.rows) }
        }
        #expect(performing: { _ = try store.get(puts, id: 4 | 1 << 40) }, throws: { "\($0)".contains("seal does not match") })
        #expect(try store.get(puts, id: 4) != nil)
        #expect(try store.verify().findings.map(\.location) == ["id \(4 | 1 << 40)"])
    }

    @Test func damagedMetaRecordsAreNamed() throws {
        let dir = TemporaryDirectory()
        let (store, loaded, _) = try Self.populated(dir)
        defer { store.close() }
        let noteKey = StoreFormat.loadNoteKey(loaded.id, segment: 1)
        try store.environment.write { txn in
            for key in [StoreFormat.tableKeyPrefix + "puts", noteKey] {
                var value = try txn.withValue(forKey: key, in: store.meta) { Array(try #require($0)) }
                value[1] ^= 0x20
                try value.withUnsafeBytes { try txn.put($0, forKey: key, in: store.meta) }
            }
        }
        #expect(performing: { _ = try store.table("puts") }, throws: { error in
            guard case StoreError.corruptMetadata(let table, let reason) = error else { return false }
            return table == "puts" && reason.contains("seal does not match")
        })
        let report = try store.verify()
        let locations = Set(report.findings.map(\.location))
        #expect(locations.contains("meta 'table/puts'"), "\(report.problems)")
        #expect(locations.contains("meta '\(noteKey)'"), "\(report.problems)")
        // The sound table is still verified in full.
        #expect(report.tables.map(\.name) == ["loaded"])
    }

    @Test func verifyListsEveryProblemNotJustTheFirst() throws {
        let dir = TemporaryDirectory()
        let (store, loaded, puts) = try Self.populated(dir)
        defer { store.close() }
        try Self.damage(store, puts.rows, key: 1) { $0[2] ^= 1 }
        try Self.damage(store, puts.rows, key: 5) { $0[2] ^= 1 }
        try Self.damage(store, loaded.rows, key: 8) { $0[3] ^= 1 }
        let report = try store.verify()
        #expect(Set(report.findings.map { "\($0.table ?? "-") \($0.location)" }) == ["puts id 1", "puts id 5", "loaded id 8"],
                "\(report.problems)")
        // Every other row was still decoded.
        #expect(report.tables.first { $0.name == "puts" }?.rows == 18)
        #expect(report.tables.first { $0.name == "loaded" }?.rows == 398)
    }

    @Test func aStoreCreatedAtVersion4HasNoSealsAndStaysAt4() throws {
        let dir = TemporaryDirectory()
        do {
            let store = try makeStore(dir, formatVersion: 4)
            #expect(!store.sealed)
            let table = try store.createTable("t", dimension: 3)
            try store.put(table, id: 1, vector: [1, 2, 3], codec: .int8)
            try [Float]([1, 2, 3, 4, 5, 6]).withUnsafeBufferPointer {
                _ = try store.load(table: "t", ids: [5, 6], rows: $0, count: 2, dimension: 3, policy: .single(.fp16))
            }
            try store.environment.read { txn in
                let value = try txn.withValue(forKey: 1, in: table.rows) { Array(try #require($0)) }
                #expect(value.count == 1 + 3 + 8)   // int8, d = 3: no seal
            }
            store.close()
        }
        // Reopened with the default (version 5): an existing store keeps its version.
        let store = try makeStore(dir)
        defer { store.close() }
        #expect(!store.sealed)
        let version = try store.environment.read { txn in
            try txn.withValue(forKey: StoreFormat.formatKey, in: store.meta) { try StoreFormat.decodeHeader(try #require($0), path: dir.path) }
        }
        #expect(version == 4)
        #expect(try store.get(try store.table("t"), id: 6) == [4, 5, 6])
        #expect(try store.verify().isSound)
    }

    /// A damaged leaf page whose node pointer moved onto the next node shows that node twice and
    /// another not at all, each with a sound seal (the corruption sweep's seed 2 found one that
    /// `verify` passed): the delta's keys then go out of order, which export and verify refuse.
    @Test func aDeltaLeafWithAMovedNodePointerIsRefused() throws {
        let dir = TemporaryDirectory()
        let d = 4, count = 60
        do {
            let store = try makeStore(dir)
            let table = try store.createTable("t", dimension: d)
            try store.write { batch in
                for id in 0..<count { try batch.put(table, id: UInt64(id), vector: [Float](repeating: Float(id), count: d), codec: .fp32) }
            }
            store.close()
        }
        // The leaf page of t's rows: LMDB's page header is pgno (8 bytes), pad (2), flags (2,
        // leaf 0x02), lower (2), upper (2), then the nodes' u16 offsets; a node is lo, hi,
        // flags, key size (2 bytes each), then its key: here the id, native (little) endian.
        let file = URL(fileURLWithPath: dir.file("store") + "/data.mdb")
        var bytes = try [UInt8](Data(contentsOf: file))
        let page = 4096
        func u16(_ offset: Int) -> Int { Int(bytes[offset]) | Int(bytes[offset + 1]) << 8 }
        func key(page start: Int, node: Int) -> UInt64 {
            let at = start + u16(start + 16 + 2 * node) + 8
            return (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * $1) }
        }
        let leaf = try #require(stride(from: 2 * page, to: bytes.count, by: page).first { start in
            u16(start + 10) & 0x02 != 0 && (u16(start + 12) - 16) / 2 == count && key(page: start, node: 0) == 0 && key(page: start, node: 1) == 1
        })
        bytes[leaf + 16 + 2 * 20] = bytes[leaf + 16 + 2 * 21]   // node 20's pointer onto node 21
        bytes[leaf + 16 + 2 * 20 + 1] = bytes[leaf + 16 + 2 * 21 + 1]
        try Data(bytes).write(to: file)

        var options = Store.Options()
        options.readOnly = true
        let store = try Store(path: dir.file("store"), options: options)
        defer { store.close() }
        #expect { _ = try store.export(try store.table("t")) } throws: { "\($0)".contains("out of order") }
        let report = try store.verify()
        #expect(report.problems.contains { $0.contains("out of order") }, "\(report.problems)")
    }
}
