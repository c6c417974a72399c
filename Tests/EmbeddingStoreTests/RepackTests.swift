import EmbeddingCodecs
import Foundation
import Testing
@testable import EmbeddingStore

/// `Store.repack(to:)`: tables rebuilt under a policy and new counts into a new store — from a
/// full-precision source when there is one, otherwise only ever demoted or kept as stored — the
/// other tables copied bit for bit, the result verified, nothing left behind on an error.
@Suite struct RepackTests {
    static let n = 2_000, d = 16

    /// Tiers by access rank: deterministic codecs for every row, whatever the fits do.
    static let tiers = CodecPolicy.tiers([.init(codec: .fp16, fraction: 0.1), .init(codec: .int8, fraction: 0.2), .init(codec: .int2h, fraction: nil)])

    /// Counts of rows 0..<n: `A` favours low ids, `B` high ids (B reverses A's ranks).
    static let countsA: [Double] = (0..<n).map { 10_000 / Double($0 + 1) }
    static let countsB: [Double] = countsA.reversed()

    /// A store with table "t" (the rows, ids 0..<n, tiers under counts A) and the rows.
    static func tableUnderA(_ directory: TemporaryDirectory) throws -> (Store, [Float]) {
        let store = try makeStore(directory, mapSize: 1 << 26)
        let rows = embeddingRows(count: n, dimension: d, seed: 3)
        try rows.withUnsafeBufferPointer { try store.load(table: "t", rows: $0, count: n, dimension: d, policy: tiers, counts: countsA) }
        return (store, rows)
    }

    /// Each live row's form name, by id.
    static func forms(_ store: Store, _ table: String) throws -> [UInt64: String] {
        let census = try store.liveRowCodecs(try store.table(table))
        return Dictionary(uniqueKeysWithValues: zip(census.ids, census.form.map { census.forms[Int($0)].name }))
    }

    /// The tier each row takes under `counts`: hottest 10% fp16, next 20% int8, the rest int2h
    /// (ties in row order, as a load ranks them).
    static func tiers(under counts: [Double]) -> [String] {
        var tiers = [String](repeating: "int2h", count: counts.count)
        let order = counts.indices.sorted { counts[$0] > counts[$1] || (counts[$0] == counts[$1] && $0 < $1) }
        for (rank, row) in order.enumerated() { tiers[row] = rank < n / 10 ? "fp16" : rank < 3 * n / 10 ? "int8" : "int2h" }
        return tiers
    }

    static func counts(_ values: [Double]) throws -> RepackCounts {
        .given(["t": try LookupCounts(ids: (0..<UInt64(values.count)).map { $0 }, counts: values)])
    }

    static func openedReadOnly(_ path: String) throws -> Store {
        var options = Store.Options()
        options.readOnly = true
        return try Store(path: path, options: options)
    }

    @Test func withASourceRowsFollowTheNewCountsAndDecodeNearTheSource() throws {
        let directory = TemporaryDirectory()
        let (store, rows) = try Self.tableUnderA(directory)
        let report = try rows.withUnsafeBufferPointer { rows in
            try store.repack(to: directory.file("new"), policy: Self.tiers, counts: try Self.counts(Self.countsB),
                             sources: ["t": RepackSource(rows: MemoryRows(rows, count: Self.n, dimension: Self.d))])
        }
        let new = try Self.openedReadOnly(directory.file("new"))
        #expect(try new.verify().problems.isEmpty)
        let forms = try Self.forms(new, "t")
        let expected = Self.tiers(under: Self.countsB)
        #expect((0..<Self.n).allSatisfy { forms[UInt64($0)] == expected[$0] }, "every row in its tier under B")
        let table = report.tables[0]
        #expect(table.repacked && table.rowsFromSource == Self.n && table.rowsWithoutSource == 0 && table.promotionsRefused == 0)
        // Rows were ranked one way and now the other: the hottest 10% and coldest 10% swap, and so on.
        let before = Self.tiers(under: Self.countsA)
        let bits = ["fp16": 16, "int8": 8, "int2h": 2]
        #expect(table.promoted == (0..<Self.n).count(where: { bits[expected[$0]]! > bits[before[$0]]! }))
        #expect(table.demoted == (0..<Self.n).count(where: { bits[expected[$0]]! < bits[before[$0]]! }))
        #expect(table.formsAfter.first { $0.form == "fp16" }?.rows == Self.n / 10)
        // Encoded from the source: each row is what its codec makes of its source row (a load
        // of those rows alone gives the same bytes), so fp16 rows are within half an fp16 step of
        // it (2^-11 of the value, or 2^-25 below fp16's normal range).
        let (ids, values) = try new.export(try new.table("t"))
        #expect(ids == (0..<UInt64(Self.n)).map { $0 })
        let scratch = try makeStore(directory, name: "scratch")
        for codec in [Codec.fp16, .int8, .int2h] {
            let members = (0..<Self.n).filter { expected[$0] == codec.description }
            let source = members.flatMap { rows[$0 * Self.d..<($0 + 1) * Self.d] }
            try source.withUnsafeBufferPointer {
                try scratch.load(table: codec.description, ids: members.map(UInt64.init), rows: $0, count: members.count, dimension: Self.d, codec: codec)
            }
            let repacked = members.flatMap { values[$0 * Self.d..<($0 + 1) * Self.d] }
            #expect(repacked == (try scratch.export(try scratch.table(codec.description)).values), "\(codec) rows: their source rows encoded")
            if codec == .fp16 {
                #expect(zip(source, repacked).allSatisfy { abs($0 - $1) <= abs($0) * 0x1p-11 + 0x1p-25 }, "fp16 within half a step")
            }
        }
    }

    /// `repackInPlace`: the same rebuild, swapped in as the store's next generation; a reader of
    /// the store from before the swap moves to it at its next lookup, and a write committed
    /// while a repack ran makes the swap refuse (the store keeps that write).
    @Test func inPlaceTheStoreBecomesTheRepackedOneUnderItsReaders() throws {
        let directory = TemporaryDirectory()
        let (store, rows) = try Self.tableUnderA(directory)
        let reader = try store.makeReader()
        let before = try reader.lookup(try store.table("t"), ids: [0, 1, 1999])
        let (report, swap) = try rows.withUnsafeBufferPointer { rows in
            try store.repackInPlace(policy: Self.tiers, counts: try Self.counts(Self.countsB),
                                    sources: ["t": RepackSource(rows: MemoryRows(rows, count: Self.n, dimension: Self.d))])
        }
        #expect(swap.previous == nil && swap.current == store.generationName && report.tables[0].rowsFromSource == Self.n)
        #expect(!FileManager.default.fileExists(atPath: directory.file("store/repack-\(getpid())")))
        let forms = try Self.forms(store, "t")
        let expected = Self.tiers(under: Self.countsB)
        #expect((0..<Self.n).allSatisfy { forms[UInt64($0)] == expected[$0] }, "every row in its tier under B")
        #expect(try store.verify().isSound)
        // Row 0 was fp16 under A and is int2h under B: the reader sees the new generation.
        let after = try reader.lookup(try store.table("t"), ids: [0, 1, 1999])
        #expect(after != before)
        #expect(Array(after[0..<Self.d]) == (try store.get(try store.table("t"), id: 0)))
        // A reopened store opens the new generation.
        store.close()
        let reopened = try makeStore(directory)
        #expect(reopened.generationName == swap.current)
        #expect(try Self.forms(reopened, "t") == forms)
    }

    @Test func withoutASourcePromotionsAreRefusedAndDemotionsReencodeTheDecodedRow() throws {
        let directory = TemporaryDirectory()
        let (store, _) = try Self.tableUnderA(directory)
        let old = try store.export(try store.table("t"))
        let report = try store.repack(to: directory.file("new"), policy: Self.tiers, counts: try Self.counts(Self.countsB))
        let new = try Self.openedReadOnly(directory.file("new"))
        #expect(try new.verify().problems.isEmpty)
        let table = report.tables[0]
        let before = Self.tiers(under: Self.countsA)
        let asked = Self.tiers(under: Self.countsB)
        let bits = ["fp16": 16, "int8": 8, "int2h": 2]
        let refused = (0..<Self.n).filter { bits[asked[$0]]! > bits[before[$0]]! }
        #expect(!refused.isEmpty)
        #expect(table.refusedIDs == refused.map(UInt64.init), "exactly the rows B would promote, ascending")
        #expect(table.promotionsRefused == refused.count && table.promoted == 0 && table.rowsWithoutSource == Self.n)
        let forms = try Self.forms(new, "t")
        let (ids, values) = try new.export(try new.table("t"))
        #expect(ids == old.ids)
        // A row keeps its form and decodes bit for bit unless B demotes it; a demoted row is its
        // old decoded row encoded with the new codec, nothing else.
        var demoted: [Int] = []
        for i in 0..<Self.n {
            let row = values[i * Self.d..<(i + 1) * Self.d], was = old.values[i * Self.d..<(i + 1) * Self.d]
            if bits[asked[i]]! < bits[before[i]]! {
                #expect(forms[UInt64(i)] == asked[i])
                demoted.append(i)
            } else {
                #expect(forms[UInt64(i)] == before[i] && row == was, "row \(i) kept as stored")
            }
        }
        #expect(table.demoted == demoted.count)
        let scratch = try makeStore(directory, name: "scratch")
        for codec in [Codec.int8, .int2h] {
            let rows = demoted.filter { asked[$0] == codec.description }
            let decoded = rows.flatMap { old.values[$0 * Self.d..<($0 + 1) * Self.d] }
            try decoded.withUnsafeBufferPointer {
                try scratch.load(table: codec.description, ids: rows.map(UInt64.init), rows: $0, count: rows.count, dimension: Self.d, codec: codec)
            }
            let expected = try scratch.export(try scratch.table(codec.description)).values
            #expect(rows.flatMap { values[$0 * Self.d..<($0 + 1) * Self.d] } == expected, "\(codec) rows: the old rows re-encoded")
        }
    }

    @Test func keptRecordsBringTheParametersTheyPointAt() throws {
        let directory = TemporaryDirectory()
        let store = try makeStore(directory, mapSize: 1 << 26)
        let rows = embeddingRows(count: Self.n, dimension: Self.d, seed: 5)
        try rows.withUnsafeBufferPointer {
            try store.load(table: "tc", rows: $0, count: Self.n, dimension: Self.d, codec: .transformCoded(bitsPerValue: 4))
            try store.load(table: "reduced", rows: $0, count: Self.n, dimension: Self.d, codec: .reduced(k: 4))
            try store.load(table: "bucket", rows: $0, count: Self.n, dimension: Self.d, codec: .bucket(count: 32, scaled: false))
        }
        // fp16 asks every row for more bits than it has: every record is kept, with its model,
        // basis or bucket row, under the ids it names.
        let kept = try store.repack(to: directory.file("kept"), policy: .single(.fp16))
        let new = try Self.openedReadOnly(directory.file("kept"))
        #expect(try new.verify().problems.isEmpty)
        for name in ["tc", "reduced"] {
            #expect(try new.export(try new.table(name)).values == (try store.export(try store.table(name)).values), "\(name) bit for bit")
            #expect(kept.tables.first { $0.table == name }?.promotionsRefused == Self.n)
            #expect(try new.statistics(try new.table(name)).bases == (try store.statistics(try store.table(name)).bases))
        }
        // A bucket row has 0 bits of its own: fp16 would promote it too.
        #expect(try new.export(try new.table("bucket")).values == (try store.export(try store.table("bucket")).values))
        #expect(try new.statistics(try new.table("bucket")).bucketRows == (try store.statistics(try store.table("bucket")).bucketRows))
        // int2h (2 bits) demotes the tc:4 rows: none is kept, so neither is the tc model.
        let demoted = try store.repack(to: directory.file("demoted"), tables: ["tc"], policy: .single(.int2h))
        let small = try Self.openedReadOnly(directory.file("demoted"))
        #expect(demoted.tables.first { $0.table == "tc" }?.demoted == Self.n)
        #expect(try small.statistics(try small.table("tc")).bases == 0)
        #expect(try small.statistics(try small.table("tc")).codecs.map(\.codec) == ["int2h"])
    }

    @Test func tablesNotRepackedAreCopiedBitForBitWithTheirCounts() throws {
        let directory = TemporaryDirectory()
        let (store, rows) = try Self.tableUnderA(directory)
        try rows.withUnsafeBufferPointer {
            try store.load(table: "other", rows: $0, count: Self.n, dimension: Self.d, codec: .reduced(k: 6))
        }
        let other = try store.table("other")
        // Layers to fold: a put, a deleted segment row (a tombstone), and kept access counts.
        try store.put(other, id: 5_000, vector: Array(rows[0..<Self.d]), codec: .int8)
        try store.delete(other, id: 7)
        _ = try store.addAccessCounts([other.id: [(id: 3, count: 40), (id: 99_999, count: 2)], try store.table("t").id: [(id: 1, count: 5)]])
        let report = try store.repack(to: directory.file("new"), tables: ["t"], policy: .single(.int8))
        let new = try Self.openedReadOnly(directory.file("new"))
        #expect(try new.verify().problems.isEmpty)
        #expect(try new.tableNames() == ["other", "t"])
        let copied = try new.table("other")
        #expect(try new.export(copied).ids == (try store.export(other).ids))
        #expect(try new.export(copied).values == (try store.export(other).values))
        let stats = try new.statistics(copied)
        #expect(stats.segments == 1 && stats.deltaRows == 0 && stats.bases == 1, "the delta folded into one segment, the basis copied")
        #expect(try new.accessCounts(copied) == [3: 40, 99_999: 2])
        #expect(try new.accessCounts(try new.table("t")) == [1: 5], "a repacked table's kept counts go along too")
        #expect(report.tables.map(\.repacked) == [false, true])
        #expect(report.tables[0].rowsAfter == Self.n)   // one put, one deleted
    }

    @Test func trackedCountsWeighTheRowsAndSourceGapsKeepTheirRows() throws {
        let directory = TemporaryDirectory()
        let (store, rows) = try Self.tableUnderA(directory)
        let table = try store.table("t")
        _ = try store.addAccessCounts([table.id: (0..<Self.n).map { (id: UInt64($0), count: UInt64(Self.countsB[$0])) }])
        // The source holds the upper half of the rows only: the lower half has its decoded rows.
        let half = Self.n / 2
        let report = try rows.withUnsafeBufferPointer { rows in
            try store.repack(to: directory.file("new"), policy: Self.tiers, counts: .tracked, sources: ["t": RepackSource(
                rows: MemoryRows(UnsafeBufferPointer(rebasing: rows[half * Self.d..<Self.n * Self.d]), count: Self.n - half, dimension: Self.d),
                ids: (half..<Self.n).map(UInt64.init))])
        }
        let result = report.tables[0]
        #expect(result.counts == "tracked" && result.rowsFromSource == half && result.rowsWithoutSource == half)
        let forms = try Self.forms(try Self.openedReadOnly(directory.file("new")), "t")
        let tracked = Self.tiers(under: (0..<Self.n).map { Double(UInt64(Self.countsB[$0])) })
        // B makes the upper half hot: from the source they take their tiers; the lower half only
        // falls, so none of it is refused (it was hot under A).
        #expect((half..<Self.n).allSatisfy { forms[UInt64($0)] == tracked[$0] })
        #expect(result.promotionsRefused == 0 && result.promoted > 0)
        #expect((0..<half).allSatisfy { forms[UInt64($0)] == tracked[$0] })
    }

    @Test func aBudgetRepackFromTheSourceStaysWithinItAndCutsTheErrorUnderTheNewCounts() throws {
        let directory = TemporaryDirectory()
        let store = try makeStore(directory, mapSize: 1 << 26)
        let rows = embeddingRows(count: Self.n, dimension: 32, seed: 9)
        let budget = CodecPolicy.budget(.fraction(0.5), weighting: .traffic)
        try rows.withUnsafeBufferPointer { try store.load(table: "t", rows: $0, count: Self.n, dimension: 32, policy: budget, counts: Self.countsA) }
        let report = try rows.withUnsafeBufferPointer { rows in
            try store.repack(to: directory.file("new"), policy: budget, counts: try Self.counts(Self.countsB),
                             sources: ["t": RepackSource(rows: MemoryRows(rows, count: Self.n, dimension: 32))])
        }
        let new = try Self.openedReadOnly(directory.file("new"))
        func weightedError(_ store: Store) throws -> Double {
            let values = try store.export(try store.table("t")).values
            return (0..<Self.n).reduce(0) { $0 + Self.countsB[$1] * squaredError(rows[$1 * 32..<($1 + 1) * 32], values[$1 * 32..<($1 + 1) * 32]) }
        }
        #expect(try weightedError(new) < 0.5 * weightedError(store), "the rows B makes hot get the precise codecs")
        #expect(Double(report.tables[0].diskBytesAfter) <= 0.5 * Double(Self.n * 32 * 4), "\(report.tables[0].diskBytesAfter) bytes")
        #expect(report.tables[0].summary?.budgetBytes != nil)
    }

    @Test func anExistingTargetOrABadInputLeavesNothing() throws {
        let directory = TemporaryDirectory()
        let (store, rows) = try Self.tableUnderA(directory)
        let target = directory.file("new")
        func refuses(_ words: String, sources: [String: RepackSource] = [:], counts: RepackCounts = .none,
                     policy: CodecPolicy = .single(.int8), options: RepackOptions = RepackOptions()) {
            do {
                try store.repack(to: target, policy: policy, counts: counts, sources: sources, options: options)
                Issue.record("repack did not refuse (\(words))")
            } catch {
                #expect("\(error)".contains(words), "\(error)")
            }
            #expect(!FileManager.default.fileExists(atPath: target))
            #expect(!FileManager.default.fileExists(atPath: target + ".repacking-\(getpid())"))
            #expect(!FileManager.default.fileExists(atPath: target + ".repacked-\(getpid())"))
        }
        try rows.withUnsafeBufferPointer { rows in
            let all = MemoryRows(rows, count: Self.n, dimension: Self.d)
            var withNaN = Array(rows)
            withNaN[17 * Self.d + 3] = .nan
            try withNaN.withUnsafeBufferPointer { bad in
                refuses("row 17 (id 17)", sources: ["t": RepackSource(rows: MemoryRows(bad, count: Self.n, dimension: Self.d))])
            }
            refuses("rows of 8 values; the table's have 16",
                    sources: ["t": RepackSource(rows: MemoryRows(UnsafeBufferPointer(rebasing: rows[0..<80]), count: 10, dimension: 8))])
            refuses("1999 source ids for 2000 source rows", sources: ["t": RepackSource(rows: all, ids: (0..<1_999).map(UInt64.init))])
            refuses("appears twice", sources: ["t": RepackSource(rows: all, ids: [5] + (1..<UInt64(Self.n)).map { $0 })])
            refuses("1 id of the source is not a row of table 't' (the first: id 9000",
                    sources: ["t": RepackSource(rows: all, ids: (0..<UInt64(Self.n - 1)).map { $0 } + [9_000])])
            refuses("a source is given for table 'u'", sources: ["u": RepackSource(rows: all)])
        }
        refuses("1 counted id is not a row of table 't'", counts: .given(["t": try LookupCounts(ids: [1, 77_777], counts: [1, 2])]))
        refuses("has no access counts kept", counts: .tracked)
        refuses("tiers rank rows by access count", policy: Self.tiers)
        #expect(throws: StoreError.self) { _ = try LookupCounts(ids: [1, 2, 3], counts: [1, 2]) }   // counts of the wrong length
        // A target that exists is never replaced, even an empty directory.
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        #expect(throws: StoreError.self) { try store.repack(to: target, policy: .single(.int8)) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: target).isEmpty)
    }

    @Test func sourceRowsNewToTheTableAreAddedWhenAsked() throws {
        let directory = TemporaryDirectory()
        let (store, rows) = try Self.tableUnderA(directory)
        var options = RepackOptions()
        options.addingNewRows = true
        let ids = (0..<UInt64(Self.n - 1)).map { $0 } + [9_000]
        let report = try rows.withUnsafeBufferPointer { rows in
            try store.repack(to: directory.file("new"), policy: .single(.fp32), counts: .none,
                             sources: ["t": RepackSource(rows: MemoryRows(rows, count: Self.n, dimension: Self.d), ids: ids)], options: options)
        }
        #expect(report.tables[0].rowsAdded == 1 && report.tables[0].rowsAfter == Self.n + 1 && report.tables[0].rowsWithoutSource == 1)
        let new = try Self.openedReadOnly(directory.file("new"))
        #expect(try new.get(try new.table("t"), id: 9_000) == Array(rows[(Self.n - 1) * Self.d..<Self.n * Self.d]))
        // Id n-1 has no source row: fp32 would promote it, so it keeps its record.
        #expect(report.tables[0].refusedIDs == [UInt64(Self.n - 1)])
        #expect(try new.get(try new.table("t"), id: UInt64(Self.n - 1)) == (try store.get(try store.table("t"), id: UInt64(Self.n - 1))))
    }
}
