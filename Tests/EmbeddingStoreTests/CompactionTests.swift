import Foundation
import Testing
@testable import EmbeddingStore

/// `compact(to:)`: a verified copy with only the pages in use, without the parts a killed load
/// left; the store itself is not changed.
@Suite struct CompactionTests {
    @Test func aReloadedStoreCompactsToAFreshLoadsSize() throws {
        let directory = TemporaryDirectory()
        let d = 16, count = 20_000
        let rows = embeddingRows(count: count, dimension: d)
        func load(_ store: Store) throws {
            _ = try rows.withUnsafeBufferPointer { try store.load(table: "t", rows: $0, count: count, dimension: d, policy: .single(.int8)) }
        }
        let fresh = try makeStore(directory, name: "fresh")
        try load(fresh)
        let reloaded = try makeStore(directory, name: "reloaded", mapSize: 1 << 26)
        for _ in 0..<10 { try load(reloaded) }
        // A load killed after writing a part: a segment no manifest lists.
        let table = try reloaded.table("t")
        try reloaded.environment.write { txn in
            try [UInt8](repeating: 7, count: 5_000).withUnsafeBytes {
                try txn.put($0, forKey: Store.segmentKey(999, part: 1), in: table.segments!)
            }
        }
        try fresh.sync()
        try reloaded.sync()
        let report = try reloaded.compact(to: directory.file("compacted"))
        #expect(report.orphanParts == 1)
        #expect(report.bytesBefore > report.bytesAfter)
        #expect(Double(report.bytesAfter) <= 1.1 * Double(fresh.fileSize), "\(report.bytesAfter) against a fresh load's \(fresh.fileSize)")
        let copy = try Store(path: directory.file("compacted"))
        #expect(try copy.export(try copy.table("t")).values == (try fresh.export(try fresh.table("t")).values))
        #expect(try copy.verify().problems.isEmpty)
        // The store compacted is as it was: the orphan part is still there.
        let orphanKept = try reloaded.environment.read { txn in
            try txn.withValue(forKey: Store.segmentKey(999, part: 1), in: table.segments!) { $0 != nil }
        }
        #expect(orphanKept)
        #expect(throws: StoreError.self) { try reloaded.compact(to: directory.file("compacted")) }   // never replaces
        #expect(!FileManager.default.fileExists(atPath: directory.file("compacted.compacting-\(getpid())")))
    }
}
