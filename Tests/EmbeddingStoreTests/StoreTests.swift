import EmbeddingCodecs
import Foundation
import Testing
import LMDB
@testable import EmbeddingStore

@Suite struct StoreTests {
    static let plainCodecs: [Codec] = [.fp32, .fp16, .int8, .int4]

    @Test func createListAndDropTables() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        _ = try store.createTable("users", dimension: 8)
        _ = try store.createTable("items", dimension: 3)
        #expect(try store.tableNames() == ["items", "users"])
        #expect(try store.table("items").dimension == 3)
        #expect(throws: StoreError.self) { try store.createTable("users", dimension: 8) }
        #expect(throws: StoreError.self) { try store.createTable("", dimension: 8) }
        #expect(throws: StoreError.self) { try store.createTable("zero", dimension: 0) }
        let users = try store.table("users")
        try store.put(users, id: 1, vector: [Float](repeating: 1, count: 8), codec: .fp32)
        try store.dropTable("users")
        #expect(try store.tableNames() == ["items"])
        #expect(users.isDropped)
        #expect(throws: StoreError.self) { try store.table("users") }
        #expect(throws: StoreError.self) { try store.get(users, id: 1) }
        // A table created again under the same name starts empty, with a new id.
        let again = try store.createTable("users", dimension: 4)
        #expect(again.id != users.id)
        #expect(try store.get(again, id: 1) == nil)
    }

    @Test func putGetDeleteEveryPlainCodec() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        for d in [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 1024] {
            let table = try store.createTable("d\(d)", dimension: d)
            let rows = embeddingRows(count: 4, dimension: d, seed: UInt64(d))
            for (i, codec) in Self.plainCodecs.enumerated() {
                let row = Array(rows[i * d..<(i + 1) * d])
                try store.put(table, id: UInt64(i), vector: row, codec: codec)
                let back = try #require(try store.get(table, id: UInt64(i)))
                let error = squaredError(row, back) / Double(d)
                // Error bounds per codec at these magnitudes (|x| < ~1): fp32 exact; fp16 relative
                // 2^-11 → squared error < 1e-6; int8 step range/255 → < 1e-4; int4 step range/15 → < 1e-2.
                let bound: Double = switch codec { case .fp32: 0; case .fp16: 1e-6; case .int8: 1e-4; default: 1e-2 }
                #expect(error <= bound, "d=\(d) \(codec): mean squared error \(error)")
            }
            #expect(try store.delete(table, id: 0))
            #expect(try store.delete(table, id: 0) == false)
            #expect(try store.get(table, id: 0) == nil)
        }
    }

    @Test func reopenShowsExactlyWhatWasCommitted() throws {
        let dir = TemporaryDirectory()
        let rows = embeddingRows(count: 50, dimension: 16)
        do {
            let store = try makeStore(dir)
            let table = try store.createTable("t", dimension: 16)
            try store.write { batch in
                for i in 0..<50 { try batch.put(table, id: UInt64(i * 7), vector: Array(rows[i * 16..<(i + 1) * 16]), codec: .fp32) }
            }
            // A batch that throws leaves nothing behind.
            struct Abandon: Error {}
            #expect(throws: Abandon.self) {
                try store.write { batch in
                    try batch.put(table, id: 999, vector: [Float](repeating: 1, count: 16), codec: .fp32)
                    _ = try batch.delete(table, id: 0)
                    throw Abandon()
                }
            }
            store.close()
        }
        let store = try makeStore(dir)
        let table = try store.table("t")
        let (ids, values) = try store.export(table)
        #expect(ids == (0..<50).map { UInt64($0 * 7) })
        #expect(values == rows)
        #expect(try store.get(table, id: 999) == nil)
    }

    @Test func batchedLookupMissingPolicies() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("t", dimension: 4)
        try store.put(table, id: 10, vector: [1, 2, 3, 4], codec: .fp32)
        try store.put(table, id: 20, vector: [5, 6, 7, 8], codec: .fp32)
        let reader = try store.makeReader()
        let ids: [UInt64] = [20, 11, 10, 20]
        #expect(try reader.lookup(table, ids: ids) == [5, 6, 7, 8, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
        #expect {
            _ = try reader.lookup(table, ids: ids, missing: .error)
        } throws: { error in
            (error as? StoreError)?.description.contains("id 11") == true
        }
        var out = [Float](repeating: 9, count: 16)
        var found = [Bool](repeating: true, count: 4)
        let hits = try ids.withUnsafeBufferPointer { ids in
            try out.withUnsafeMutableBufferPointer { out in
                try found.withUnsafeMutableBufferPointer { try reader.lookup(table, ids: ids, into: out, found: $0) }
            }
        }
        #expect(hits == 3)
        #expect(found == [true, false, true, true])
        #expect(out[4..<8].allSatisfy { $0 == 0 })
        // An output buffer too small is refused, not overrun.
        var small = [Float](repeating: 0, count: 15)
        #expect(throws: StoreError.self) {
            try ids.withUnsafeBufferPointer { ids in
                try small.withUnsafeMutableBufferPointer { _ = try reader.lookup(table, ids: ids, into: $0) }
            }
        }
    }

    @Test func badRowsAreRefusedAndLeaveTheStoreAsItWas() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("t", dimension: 3)
        try store.put(table, id: 1, vector: [1, 2, 3], codec: .fp32)
        #expect { try store.put(table, id: 1, vector: [1, .nan, 3], codec: .fp32) } throws: { error in
            "\(error)".contains("non-finite") && "\(error)".contains("column 1")
        }
        #expect { try store.put(table, id: 1, vector: [1, 2], codec: .fp32) } throws: { error in
            "\(error)".contains("dimension 3")
        }
        #expect { try store.put(table, id: 1, vector: [1, 70000, 3], codec: .fp16) } throws: { error in
            "\(error)".contains("fp16") && "\(error)".contains("id 1")
        }
        #expect { try store.put(table, id: 1, vector: [1, 2, 3], codec: .reduced(k: 1)) } throws: { error in
            "\(error)".contains("PCA basis")
        }
        #expect { try store.put(table, id: 1, vector: [1, 2, 3], codec: .bucket) } throws: { error in
            "\(error)".contains("bucket")
        }
        #expect(try store.get(table, id: 1) == [1, 2, 3])
        #expect(try store.statistics(table).rows == 1)
    }

    @Test func corruptRecordsGiveErrorsNamingTableAndID() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("emb", dimension: 4)
        try store.put(table, id: 5, vector: [1, 2, 3, 4], codec: .int8)
        try store.put(table, id: 6, vector: [1, 2, 3, 4], codec: .fp32)
        // Damage records with the raw LMDB layer: an unknown tag, a truncated payload, NaN bits.
        let rawRecords: [(UInt64, [UInt8], String)] = [
            (7, [0x63, 1, 2, 3], "unknown codec tag 99"),
            (8, [Codec.int8.tag, 1, 2, 3], "truncated"),
            (9, [Codec.fp32.tag] + [0, 0, 0xC0, 0x7F] + [UInt8](repeating: 0, count: 12), "non-finite"),
            (10, [], "empty"),
            (11, [Codec.bucket.tag, 9, 0, 0, 0], "bucket 9"),
            (12, [Codec.reduced(k: 1).tag, 1, 0, 0, 0, 0, 0, 0x80, 0x3F], "basis 1"),
        ]
        try store.environment.write { txn in
            for (id, bytes, _) in rawRecords {
                try bytes.withUnsafeBytes { try txn.put($0, forKey: id, in: table.rows) }
            }
        }
        let reader = try store.makeReader()
        for (id, _, expected) in rawRecords {
            #expect {
                _ = try reader.lookup(table, ids: [5, id])
            } throws: { error in
                let text = "\(error)"
                return text.contains("'emb'") && text.contains("id \(id)") && text.contains(expected)
            }
        }
        // A damaged row inside a run of good rows of its codec (decoded by one kernel call) is
        // still named: fp32 NaN, and an fp16 infinity among fp16 rows.
        try store.put(table, id: 20, vector: [1, 2, 3, 4], codec: .fp16)
        try store.environment.write { txn in
            let infinity: [UInt8] = [Codec.fp16.tag, 0, 0x3C, 0, 0x7C, 0, 0x3C, 0, 0x3C]
            try infinity.withUnsafeBytes { try txn.put($0, forKey: 21, in: table.rows) }
        }
        for (ids, bad) in [([6, 6, 9, 6, 6] as [UInt64], UInt64(9)), ([20, 20, 21, 20], 21)] {
            #expect {
                _ = try reader.lookup(table, ids: ids)
            } throws: { error in
                "\(error)".contains("id \(bad)") && "\(error)".contains("non-finite")
            }
        }
        // The good rows still read.
        #expect(try reader.lookup(table, ids: [6]) == [1, 2, 3, 4])
        #expect(try reader.lookup(table, ids: [20, 6, 20]) == [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4])
    }

    @Test func newerFormatVersionIsRefused() throws {
        let dir = TemporaryDirectory()
        do {
            let store = try makeStore(dir)
            _ = try store.createTable("t", dimension: 2)
            var header = StoreFormat.encodeHeader()
            header[8] = 6  // version 6 (the header keeps version 5's length and seal: the version is read first)
            try store.environment.write { txn in
                try header.withUnsafeBytes { try txn.put($0, forKey: StoreFormat.formatKey, in: store.meta) }
            }
            store.close()
        }
        for readOnly in [false, true] {
            var options = Store.Options()
            options.readOnly = readOnly
            #expect { try Store(path: dir.file("store"), options: options) } throws: { error in
                "\(error)".contains("version 6") && "\(error)".contains("newer embstore")
            }
        }
    }

    @Test func directoriesThatAreNotStoresAreRefused() throws {
        let dir = TemporaryDirectory()
        var readOnly = Store.Options()
        readOnly.readOnly = true
        #expect(throws: StoreError.self) { try Store(path: dir.file("missing"), options: readOnly) }
        FileManager.default.createFile(atPath: dir.file("plain"), contents: Data("hello".utf8))
        #expect(throws: StoreError.self) { try Store(path: dir.file("plain")) }
        // An LMDB environment that holds other databases is not taken over.
        try FileManager.default.createDirectory(atPath: dir.file("other"), withIntermediateDirectories: true)
        let env = try Environment(path: dir.file("other"), configuration: {
            var c = Environment.Configuration(); c.maxDatabases = 4; return c
        }())
        _ = try env.openDatabases(["something"], flags: .create)
        env.close()
        #expect { try Store(path: dir.file("other")) } throws: { "\($0)".contains("not an embstore store") }
        // Garbage in data.mdb.
        try FileManager.default.createDirectory(atPath: dir.file("garbage"), withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: dir.file("garbage/data.mdb"), contents: Data(repeating: 0x5A, count: 8192))
        #expect(throws: StoreError.self) { try Store(path: dir.file("garbage")) }
    }

    @Test func readOnlyStoreRefusesWrites() throws {
        let dir = TemporaryDirectory()
        do {
            let store = try makeStore(dir)
            _ = try store.createTable("t", dimension: 2)
        }
        var options = Store.Options()
        options.readOnly = true
        let store = try Store(path: dir.file("store"), options: options)
        let table = try store.table("t")
        #expect { try store.put(table, id: 1, vector: [1, 2], codec: .fp32) } throws: { "\($0)".contains("read-only") }
        #expect(throws: StoreError.self) { try store.createTable("u", dimension: 2) }
    }

    @Test func mapGrowsByItself() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir, mapSize: 1 << 20)
        let table = try store.createTable("t", dimension: 256)
        let rows = embeddingRows(count: 4000, dimension: 256)
        // 4000 × 1 KiB records: four times the initial 1 MiB map.
        try rows.withUnsafeBufferPointer { buffer in
            _ = try store.load(table: "t", rows: buffer, count: 4000, dimension: 256, codec: .fp32)
        }
        #expect(store.environment.mapSize > 1 << 20)
        let (ids, values) = try store.export(table)
        #expect(ids.count == 4000)
        #expect(values == rows)
    }

    @Test func readersSeeConsistentSnapshotsWhileAWriterCommits() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("t", dimension: 8)
        let ids: [UInt64] = Array(0..<64)
        try store.write { batch in
            for id in ids { try batch.put(table, id: id, vector: [Float](repeating: 0, count: 8), codec: .fp32) }
        }
        let rounds = 200
        let failures = LockedCounter()
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            do {
                if worker == 0 {
                    // The writer sets every row of the table to the round number in one transaction.
                    for round in 1...rounds {
                        try store.write { batch in
                            for id in ids { try batch.put(table, id: id, vector: [Float](repeating: Float(round), count: 8), codec: .fp32) }
                        }
                    }
                } else {
                    let reader = try store.makeReader()
                    var last: Float = 0
                    for _ in 0..<400 {
                        let values = try reader.lookup(table, ids: ids)
                        // Consistent snapshot: every value of every row equals the first one,
                        // and snapshots never go back in time.
                        if values.contains(where: { $0 != values[0] }) || values[0] < last { failures.add() }
                        last = values[0]
                    }
                }
            } catch {
                failures.add()
            }
        }
        #expect(failures.value == 0)
        #expect(try store.get(table, id: 3) == [Float](repeating: Float(rounds), count: 8))
    }
}

/// A counter several threads can bump.
final class LockedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func add() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}

/// A schema whose dimension a flipped byte made huge is damaged metadata, named as such, not a
/// request for gigabytes a row.
@Suite struct SchemaBoundsTests {
    @Test func aDimensionOutsideTheFormatsBoundIsCorruptMetadata() throws {
        let directory = TemporaryDirectory()
        let store = try makeStore(directory)
        let table = try store.createTable("t", dimension: 64)
        try store.put(table, id: 1, vector: [Float](repeating: 1, count: 64), codec: .fp32)
        for flipped: UInt32 in [64 | 1 << 24, 0, (1 << 20) + 1] {
            let schema = TableSchema(tableID: table.id, dimension: flipped)
            try store.environment.write { txn in
                try schema.encode().withUnsafeBytes { try txn.put($0, forKey: StoreFormat.tableKeyPrefix + "t", in: store.meta) }
            }
            #expect {
                _ = try store.table("t")
            } throws: { "\($0)".contains("corrupt metadata in table 't'") && "\($0)".contains("dimension \(flipped) is outside 1...1048576") }
        }
    }
}

/// LMDB sizes its named databases when the environment opens (four a table): a store refuses
/// the table beyond `maxTables` with an error that says so, and stays readable, and a process
/// that opened it for fewer tables than it holds gets a clear error, not "damaged".
@Suite struct TableLimitTests {
    @Test func theTableBeyondTheLimitIsRefusedAndTheStoreStaysWhole() throws {
        let directory = TemporaryDirectory()
        var options = Store.Options()
        options.maxTables = 6
        do {
            let store = try Store(path: directory.file("s"), options: options)
            for t in 0..<6 { _ = try store.createTable("t\(t)", dimension: 4) }
            #expect {
                _ = try store.createTable("t6", dimension: 4)
            } throws: { "\($0)".contains("holds 6 tables") && "\($0)".contains("maxTables") }
            // A dropped table frees its place.
            try store.dropTable("t0")
            _ = try store.createTable("t6", dimension: 4)
            store.close()
        }
        let reopened = try Store(path: directory.file("s"), options: options)
        #expect(try reopened.tableNames() == ["t1", "t2", "t3", "t4", "t5", "t6"])
        for name in try reopened.tableNames() { _ = try reopened.table(name) }
        #expect(try reopened.verify().problems.isEmpty)
        reopened.close()
        // Opened for fewer tables than it holds: the tables beyond are a clear error.
        var fewer = Store.Options()
        fewer.maxTables = 2
        let small = try Store(path: directory.file("s"), options: fewer)
        var refused = 0
        for name in try small.tableNames() {
            do { _ = try small.table(name) } catch {
                refused += 1
                #expect("\(error)".contains("open it with a larger maxTables"), "\(error)")
            }
        }
        #expect(refused > 0)
        small.close()
    }
}

@Suite struct SharedEnvironmentTests {
    /// LMDB forbids opening one environment twice in a process; two Stores share it instead.
    @Test func twoStoresOfOneDirectoryShareTheEnvironment() throws {
        let dir = TemporaryDirectory()
        let first = try makeStore(dir)
        let table = try first.createTable("t", dimension: 2)
        var readOnly = Store.Options()
        readOnly.readOnly = true
        let second = try Store(path: dir.file("store"), options: readOnly)
        #expect(second.environment === first.environment)
        try first.put(table, id: 1, vector: [1, 2], codec: .fp32)
        #expect(try second.get(second.table("t"), id: 1) == [1, 2])
        #expect(throws: StoreError.self) { try second.put(second.table("t"), id: 2, vector: [1, 2], codec: .fp32) }
        // Through a symlink too.
        try FileManager.default.createSymbolicLink(atPath: dir.file("link"), withDestinationPath: dir.file("store"))
        let third = try Store(path: dir.file("link"))
        #expect(third.environment === first.environment)
    }
}
