import EmbeddingCodecs
import Testing
@testable import EmbeddingStore

@Suite struct ReaderPoolTests {
    func filledStore(_ dir: TemporaryDirectory, rows n: Int = 2000, d: Int = 16) throws -> (Store, Table, [Float]) {
        let store = try makeStore(dir)
        let rows = embeddingRows(count: n, dimension: d, seed: 21)
        try rows.withUnsafeBufferPointer { _ = try store.load(table: "t", rows: $0, count: n, dimension: d, codec: .int8) }
        return (store, try store.table("t"), rows)
    }

    @Test func manyTasksShareABoundedNumberOfReaders() async throws {
        let dir = TemporaryDirectory()
        let (store, table, _) = try filledStore(dir)
        let pool = ReaderPool(store: store, capacity: 3)
        let expected = try store.makeReader().lookup(table, ids: (0..<64).map { UInt64($0 * 31 % 2000) })
        try await withThrowingTaskGroup(of: [Float].self) { group in
            for _ in 0..<40 {
                group.addTask { try await pool.lookup(table, ids: (0..<64).map { UInt64($0 * 31 % 2000) }) }
            }
            for try await result in group { #expect(result == expected) }
        }
        #expect(pool.readerCount >= 1 && pool.readerCount <= 3)
    }

    @Test func splitBatchEqualsOneBatch() throws {
        let dir = TemporaryDirectory()
        let (store, table, _) = try filledStore(dir)
        let pool = ReaderPool(store: store, capacity: 4)
        let ids = (0..<1000).map { UInt64($0 * 7 % 2100) }   // some beyond the 2000 rows: missing
        let expected = try store.makeReader().lookup(table, ids: ids)
        for parts in [1, 2, 3, 4, 9] {
            var out = [Float](repeating: -1, count: ids.count * table.dimension)
            let found = try ids.withUnsafeBufferPointer { ids in
                try out.withUnsafeMutableBufferPointer { try pool.lookupSplit(table, ids: ids, into: $0, parts: parts) }
            }
            #expect(out == expected, "parts \(parts)")
            #expect(found == ids.filter { $0 < 2000 }.count)
        }
        var small = [Float](repeating: 0, count: 10)
        #expect(throws: StoreError.self) {
            try ids.withUnsafeBufferPointer { ids in
                try small.withUnsafeMutableBufferPointer { try pool.lookupSplit(table, ids: ids, into: $0, parts: 2) }
            }
        }
        var full = [Float](repeating: 0, count: ids.count * table.dimension)
        #expect {
            try ids.withUnsafeBufferPointer { ids in
                try full.withUnsafeMutableBufferPointer {
                    try pool.lookupSplit(table, ids: ids, into: $0, parts: 2, missing: .error)
                }
            }
        } throws: { "\($0)".contains("is not in table 't'") }
    }
}
