import EmbeddingCodecs
import Foundation
import LMDB
import Testing
@testable import EmbeddingStore

/// `Store.storageStatistics` and `environmentStatistics`: bytes per codec form from LMDB's pages,
/// adding up exactly; shared and superseded lines; lookups from counts; the environment's pages.
@Suite struct StorageStatisticsTests {
    static let d = 16

    /// A table with every kind of line: int8 and fp16 segments (the second shadows 200 rows of
    /// the first), a reduced segment (a PCA basis), a bucket segment (bucket rows), fp32 puts
    /// (one replacing a segment row) and a delete (a tombstone).
    static func mixedStore(_ dir: TemporaryDirectory) throws -> (Store, Table) {
        let store = try makeStore(dir, mapSize: 1 << 26)
        func load(_ ids: Range<UInt64>, _ codec: Codec, seed: UInt64) throws {
            let rows = embeddingRows(count: ids.count, dimension: d, seed: seed)
            try rows.withUnsafeBufferPointer {
                try store.load(table: "t", ids: Array(ids), rows: $0, count: ids.count, dimension: d, codec: codec)
            }
        }
        try load(0..<600, .int8, seed: 1)
        try load(400..<1000, .fp16, seed: 2)
        try load(3000..<3400, .reduced(k: 4), seed: 3)
        try load(4000..<4300, .bucket(count: 16, scaled: false), seed: 4)
        let table = try store.table("t")
        try store.write { batch in
            for id in UInt64(2000)..<2010 { try batch.put(table, id: id, vector: Array(repeating: Float(id), count: d), codec: .fp32) }
            try batch.put(table, id: 10, vector: Array(repeating: 1, count: d), codec: .fp32)
        }
        try store.delete(table, id: 20)
        return (store, table)
    }

    @Test func linesAddUpToTheTablesPages() throws {
        let dir = TemporaryDirectory()
        let (store, table) = try Self.mixedStore(dir)
        let storage = try store.storageStatistics(table)
        let census = try store.liveRowCodecs(table)
        let classic = try store.statistics(table)

        #expect(storage.rows == census.ids.count && storage.rows == classic.rows)
        #expect(storage.rows == 1000 - 1 + 400 + 300 + 10)
        // Forms: the census's rows and record bytes, by name.
        var rows: [String: Int] = [:], bytes: [String: Int] = [:]
        for (i, form) in census.form.enumerated() {
            rows[census.forms[Int(form)].name, default: 0] += 1
            bytes[census.forms[Int(form)].name, default: 0] += Int(census.recordBytes[i])
        }
        #expect(Dictionary(uniqueKeysWithValues: storage.forms.map { ($0.form, $0.rows) }) == rows)
        #expect(Dictionary(uniqueKeysWithValues: storage.forms.map { ($0.form, $0.recordBytes) }) == bytes)
        #expect(storage.forms.first?.form == "fp32", "most bytes a row first: \(storage.forms.map(\.form))")
        #expect(storage.forms.allSatisfy { $0.lookups == nil })

        // Pages: the databases' pages, as LMDB counts them, and every byte of them on some line.
        let databases = [table.segments!, table.rows, table.buckets, table.bases]
        let pages = try store.environment.read { txn in try databases.reduce(0) { $0 + (try txn.statistics($1).pages) } }
        #expect(storage.pages == pages)
        #expect(storage.databases.map(\.role) == ["segments", "rows", "buckets", "bases"])
        #expect(storage.databases.reduce(0) { $0 + $1.pages } == pages)
        let lines = storage.forms.reduce(0) { $0 + $1.diskBytes } + storage.shared.reduce(0) { $0 + $1.diskBytes }
        #expect(lines == pages * store.environment.pageSize)
        for form in storage.forms {
            #expect(form.diskBytes >= form.recordBytes, "\(form.form): on disk \(form.diskBytes) < records \(form.recordBytes)")
        }

        // Shared lines.
        let shared = Dictionary(uniqueKeysWithValues: storage.shared.map { ($0.kind, $0) })
        #expect(shared[.parameters]?.entries == classic.bases)
        #expect(shared[.bucketRows]?.entries == classic.bucketRows)
        #expect(shared[.bucketRows]?.recordBytes == classic.bucketBytes)
        #expect(shared[.parameters]?.diskBytes == (try store.environment.read { txn in try txn.statistics(table.bases).pages }) * 4096)
        // 200 int8 rows under the fp16 segment, id 10's int8 row under its put, id 20's int8
        // row and its tombstone.
        #expect(shared[.superseded]?.entries == 200 + 1 + 1 + 1)
        let int8Record = 1 + Self.d + 8
        #expect(shared[.superseded]?.recordBytes == 202 * int8Record + 1)
    }

    @Test func countsGiveLookupsPerFormAndTheCurve() throws {
        let dir = TemporaryDirectory()
        let (store, table) = try Self.mixedStore(dir)
        // fp32 delta rows are hot, then fp16; int8 rows get 1 each; the rest none.
        var counts: [UInt64: Double] = [:]
        for id in UInt64(2000)..<2010 { counts[id] = 1000 }
        counts[10] = 500
        for id in UInt64(600)..<1000 { counts[id] = 10 }
        for id in UInt64(0)..<400 where id != 20 && id != 10 { counts[id] = 1 }
        let lookups = try LookupCounts(counts)
        let storage = try store.storageStatistics(table, counts: lookups)
        let byForm = Dictionary(uniqueKeysWithValues: storage.forms.map { ($0.form, $0.lookups ?? -1) })
        #expect(byForm["fp32"] == 10_500)
        #expect(byForm["fp16"] == 4_000)
        #expect(byForm["int8"] == 398)
        #expect(byForm["reduced"] == 0)
        #expect(storage.lookups == TableStorage.Lookups(total: 14_898, rowsCounted: 11 + 400 + 398, unknownIDCount: 0, unknownLookups: 0))

        // The curve: from 0 to every row, monotone, ending at the rows' bytes and every lookup.
        let curve = storage.curve
        #expect(curve.first == TableStorage.CurvePoint(rows: 0, diskBytes: 0, lookups: 0, form: curve.first!.form))
        #expect(curve.last?.rows == storage.rows)
        #expect(curve.last?.lookups == 14_898)
        let formBytes = Double(storage.forms.reduce(0) { $0 + $1.diskBytes })
        #expect(abs(curve.last!.diskBytes - formBytes) < Double(storage.forms.count), "\(curve.last!.diskBytes) vs \(formBytes)")
        for (a, b) in zip(curve, curve.dropFirst()) {
            #expect(b.rows > a.rows && b.diskBytes >= a.diskBytes && b.lookups >= a.lookups)
        }
        // The hottest rows are the fp32 ones: the first stretch is fp32.
        let fp32 = storage.forms.firstIndex { $0.form == "fp32" }!
        #expect(curve[1].form == fp32)
        // Milestones: 11 fp32 rows serve 10,500 of 14,898 (70%); 50% needs 8 of them.
        let half = try #require(storage.milestones.first { $0.lookupShare == 0.5 })
        #expect(half.rows == 8)
        let ninety = try #require(storage.milestones.first { $0.lookupShare == 0.9 })
        #expect(ninety.rows > 11 && ninety.rows < 11 + 400)
        #expect(storage.milestones.map(\.lookupShare) == [0.5, 0.8, 0.9, 0.95, 0.99])
    }

    @Test func countedIDsMustBeLiveRows() throws {
        let dir = TemporaryDirectory()
        let (store, table) = try Self.mixedStore(dir)
        // 20 is deleted, 5000 and 7 never... 7 is live. 5000 and 6000 are not in the table.
        let counts = try LookupCounts(ids: [7, 5000, 20, 6000], counts: [1, 2, 3, 4])
        do {
            _ = try store.storageStatistics(table, counts: counts)
            Issue.record("unknown ids were accepted")
        } catch {
            let text = "\(error)"
            #expect(text.contains("3 of the 4 counted ids are not in table 't'"), "\(text)")
            #expect(text.contains("the first is id 5000 at index 1"), "\(text)")
        }
        let storage = try store.storageStatistics(table, counts: counts, unknownIDs: .ignore)
        #expect(storage.lookups == TableStorage.Lookups(total: 1, rowsCounted: 1, unknownIDCount: 3, unknownLookups: 9))
    }

    @Test func lookupCountsRefuseBadInput() throws {
        func message(_ body: () throws -> LookupCounts) -> String {
            do {
                _ = try body()
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        #expect(message { try LookupCounts(ids: [1, 2], counts: [1]) }.contains("2 ids but 1 counts"))
        let negative = message { try LookupCounts(ids: [1, 2, 3, 4], counts: [1, -1, .nan, 2]) }
        #expect(negative.contains("2 of 4 counts are negative, NaN or infinite"), "\(negative)")
        #expect(negative.contains("the first is -1.0 at index 1 (id 2)"), "\(negative)")
        #expect(message { try LookupCounts(ids: [1], counts: [.infinity]) }.contains("1 of 1 counts is negative, NaN or infinite"))
        let repeated = message { try LookupCounts(ids: [5, 9, 5, 9, 9], counts: [1, 1, 1, 1, 1]) }
        #expect(repeated.contains("3 ids repeat an earlier one; the first is id 5 at index 2"), "\(repeated)")
        let fine = try LookupCounts([3: 1, 1: 2.5])
        #expect(fine.ids == [1, 3] && fine.counts == [2.5, 1] && fine.total == 3.5)
    }

    /// Every page of the environment is a meta page, a page of LMDB's own databases, of `meta`,
    /// of a table, or free; and the figures match `Store.fileSize`.
    @Test func environmentPagesAddUp() throws {
        let dir = TemporaryDirectory()
        let (store, _) = try Self.mixedStore(dir)
        let rows = embeddingRows(count: 50, dimension: 8, seed: 9)
        try rows.withUnsafeBufferPointer { try store.load(table: "second", rows: $0, count: 50, dimension: 8, codec: .int4) }
        try store.dropTable("second")
        try rows.withUnsafeBufferPointer { try store.load(table: "third", rows: $0, count: 50, dimension: 8, codec: .int4) }
        let environment = try store.environmentStatistics()
        #expect(environment.unaccountedPages == 0, "\(environment)")
        #expect(environment.tables.map(\.table) == ["t", "third"])
        #expect(environment.freePages > 0, "dropping a table frees its pages")
        #expect(environment.fileBytes == store.fileSize)
        #expect(environment.pagesInUse * environment.pageSize <= environment.fileBytes)
        #expect(environment.tables[0].pages == (try store.storageStatistics(store.table("t"))).pages)
    }

    @Test func emptyTableTakesNoPages() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("empty", dimension: 4)
        let storage = try store.storageStatistics(table, counts: try LookupCounts(ids: [], counts: []))
        #expect(storage.rows == 0 && storage.forms.isEmpty && storage.shared.isEmpty && storage.pages == 0)
        #expect(storage.lookups?.total == 0 && storage.milestones.isEmpty)
        #expect(storage.curve == [TableStorage.CurvePoint(rows: 0, diskBytes: 0, lookups: 0, form: 0)])
    }

    /// Per-key rows cost more than segment rows: the delta's pages go to its rows only.
    @Test func deltaRowsCarryTheDeltasPages() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir, mapSize: 1 << 26)
        let rows = embeddingRows(count: 2000, dimension: Self.d, seed: 5)
        try rows.withUnsafeBufferPointer {
            try store.load(table: "t", rows: UnsafeBufferPointer(rebasing: $0[..<(1000 * Self.d)]), count: 1000, dimension: Self.d, codec: .int8)
        }
        var options = LoadOptions()
        options.layout = .perKey
        try rows.withUnsafeBufferPointer {
            try store.load(table: "t", ids: Array(UInt64(1000)..<2000), rows: UnsafeBufferPointer(rebasing: $0[(1000 * Self.d)...]),
                           count: 1000, dimension: Self.d, codec: .int4, options: options)
        }
        let table = try store.table("t")
        let storage = try store.storageStatistics(table)
        let pageSize = store.environment.pageSize
        let segmentPages = storage.databases.first { $0.role == "segments" }!.pages
        let deltaPages = storage.databases.first { $0.role == "rows" }!.pages
        let int8 = storage.forms.first { $0.form == "int8" }!, int4 = storage.forms.first { $0.form == "int4" }!
        #expect(int8.diskBytes == segmentPages * pageSize)
        #expect(int4.diskBytes == deltaPages * pageSize)
        #expect(int4.diskBytesPerRow > Double(1 + Self.d / 2 + 8 + Store.perKeyOverhead))
    }

    @Test func apportionKeepsTheTotal() {
        #expect(apportion([1.5, 1.5, 1.0], total: 4) == [2, 1, 1])
        #expect(apportion([0.3, 0.3, 0.4], total: 1) == [0, 0, 1])
        #expect(apportion([4095.9999999, 0.0000001], total: 4096) == [4096, 0])
        #expect(apportion([], total: 0) == [])
        var random = SeededRandom(seed: 3)
        for _ in 0..<200 {
            let weights = (0..<Int(random.next() % 9 + 1)).map { _ in Double(random.next() % 1000) }
            let total = Int(random.next() % 100_000)
            let sum = weights.reduce(0, +)
            let exact = weights.map { sum > 0 ? $0 / sum * Double(total) : Double(total) / Double(weights.count) }
            let parts = apportion(exact, total: total)
            #expect(parts.reduce(0, +) == total)
            for (part, share) in zip(parts, exact) { #expect(abs(Double(part) - share) < 1.000001) }
        }
    }
}
