import Foundation
import Testing
@testable import EmbeddingStore

/// A load whose segment holds every id of an older one retires it (its parts and load note go
/// in the same commit), so reloading a table keeps one segment and the file stops growing; a
/// segment with ids the new one lacks stays, and its rows stay visible.
@Suite struct ShadowedSegmentTests {
    static func segments(_ store: Store, _ table: Table) throws -> [UInt32] {
        try store.environment.read { txn in try store.segmentManifest(table, in: txn) }
    }

    static func load(_ store: Store, ids: [UInt64], dimension d: Int, seed: UInt64) throws -> [Float] {
        let rows = embeddingRows(count: ids.count, dimension: d, seed: seed)
        try rows.withUnsafeBufferPointer { try store.load(table: "t", ids: ids, rows: $0, count: ids.count, dimension: d, policy: .single(.int8)) }
        return rows
    }

    @Test func reloadingATableKeepsOneSegmentAndTheFileBounded() throws {
        let directory = TemporaryDirectory()
        let store = try makeStore(directory, mapSize: 1 << 26)
        let d = 16, ids = (0..<20_000).map { UInt64($0) }
        _ = try Self.load(store, ids: ids, dimension: d, seed: 1)
        try store.sync()
        let fresh = store.fileSize
        var last: [Float] = []
        for round in 0..<12 { last = try Self.load(store, ids: ids, dimension: d, seed: UInt64(round + 2)) }
        try store.sync()
        let table = try store.table("t")
        #expect(try Self.segments(store, table).count == 1)
        #expect(try store.loadNotes(table).count == 1)
        #expect(store.fileSize <= 3 * fresh, "\(store.fileSize) bytes after 13 loads; one load took \(fresh)")
        let (exported, values) = try store.export(table)
        #expect(exported == ids)
        #expect(squaredError(values, last.map { $0 }) <= 1e-3 * squaredNorm(last), "the rows are the last load's")
        #expect(try store.verify().problems.isEmpty)
    }

    @Test func aSegmentWithIdsTheNewOneLacksStays() throws {
        let directory = TemporaryDirectory()
        let store = try makeStore(directory)
        let d = 8
        let first = try Self.load(store, ids: (0..<100).map { UInt64($0) }, dimension: d, seed: 1)
        _ = try Self.load(store, ids: (50..<150).map { UInt64($0) }, dimension: d, seed: 2)          // overlaps: both stay
        let table = try store.table("t")
        #expect(try Self.segments(store, table).count == 2)
        _ = try Self.load(store, ids: (0..<50).map { UInt64(2 * $0) }, dimension: d, seed: 3)        // sparse, holds only evens
        #expect(try Self.segments(store, table).count == 3)
        let row1 = try store.makeReader().lookup(table, ids: [1])
        #expect(squaredError(row1, Array(first[d..<2 * d])) <= 1e-3 * squaredNorm(Array(first[d..<2 * d])), "id 1 still comes from the first load")
        // A sparse load holding every id of the sparse one before it retires that one only.
        _ = try Self.load(store, ids: (0..<60).map { UInt64(2 * $0) }, dimension: d, seed: 4)
        #expect(try Self.segments(store, table).count == 3)
        let (ids, _) = try store.export(table)
        let expected = Set((0..<150).map { UInt64($0) }).union((0..<60).map { UInt64(2 * $0) })
        #expect(Set(ids) == expected && ids.count == expected.count)
        #expect(try store.verify().problems.isEmpty)
    }
}
