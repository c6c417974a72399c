import Testing
import LMDB
@testable import EmbeddingStore

/// Segments written into and read back from a real LMDB environment (not yet via `load`).
@Suite struct SegmentStorageTests {
    /// fp32 row records (tag 1) of dimension 2 whose values encode the id.
    func records(_ ids: [UInt64]) -> [[UInt8]] {
        ids.map { id in
            var bytes: [UInt8] = [1]
            appendLE(Float(id).bitPattern, to: &bytes)
            appendLE(Float(id + 1).bitPattern, to: &bytes)
            return bytes
        }
    }

    @Test func multiPartSegmentReadsBackAcrossReopen() throws {
        let dir = TemporaryDirectory()
        let ids = (0..<100).map { UInt64($0 * 3) }   // sparse
        do {
            let store = try makeStore(dir)
            let table = try store.createTable("t", dimension: 2)
            #expect(try store.segmentRecord(table, id: 0) == nil)   // no segments yet, like a v1 table
            let segment = try store.writeSegment(table, ids: ids, records: records(ids), rowsPerPart: 7)
            #expect(segment == 1)
            store.close()
        }
        let store = try makeStore(dir)
        let table = try store.table("t")
        let expected = records(ids)
        for (i, id) in ids.enumerated() { #expect(try store.segmentRecord(table, id: id) == expected[i]) }
        for id: UInt64 in [1, 2, 298, 300, .max] { #expect(try store.segmentRecord(table, id: id) == nil) }
        try store.verifySegments(table)
    }

    @Test func newerSegmentShadowsOlderForOverlappingIDs() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("t", dimension: 2)
        try store.writeSegment(table, ids: Array(0..<10), records: records(Array(0..<10)), rowsPerPart: 4)
        let newer: [UInt64] = [5, 6, 20]
        let newerRecords = records([105, 106, 120])
        let second = try store.writeSegment(table, ids: newer, records: newerRecords, rowsPerPart: 4)
        #expect(second == 2)
        #expect(try store.segmentRecord(table, id: 5) == newerRecords[0])
        #expect(try store.segmentRecord(table, id: 20) == newerRecords[2])
        #expect(try store.segmentRecord(table, id: 4) == records([4])[0])
        #expect(try store.segmentRecord(table, id: 11) == nil)
        try store.verifySegments(table)
    }

    @Test func corruptDataPartIsNamedByVerifyAndNeverAnswersAnotherRow() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("t", dimension: 2)
        let ids = Array(UInt64(0)..<20)
        let segment = try store.writeSegment(table, ids: ids, records: records(ids), rowsPerPart: 8)
        let database = try store.segmentsDatabase(table)
        // Flip one payload byte of part 2: same length, so only the checksum can tell.
        try store.environment.write { txn in
            var part = try txn.withValue(forKey: Store.segmentKey(segment, part: 2), in: database) { Array($0!) }
            part[3] ^= 0x10
            try part.withUnsafeBytes { try txn.put($0, forKey: Store.segmentKey(segment, part: 2), in: database) }
        }
        do {
            try store.verifySegments(table)
            Issue.record("verify accepted a corrupt segment")
        } catch let error as StoreError {
            #expect("\(error)".contains("segment \(segment)"), "\(error)")
            #expect("\(error)".contains("table 't'"), "\(error)")
        }
        // Truncating a part of a fixed-stride segment makes lookups in it throw, not misread.
        try store.environment.write { txn in
            let part = try txn.withValue(forKey: Store.segmentKey(segment, part: 3), in: database) { Array($0!) }
            try part.dropLast().withUnsafeBytes { try txn.put($0, forKey: Store.segmentKey(segment, part: 3), in: database) }
        }
        #expect(throws: StoreError.self) { try store.segmentRecord(table, id: 17) }
        #expect(try store.segmentRecord(table, id: 1) == records([1])[0])
    }
}

extension SegmentStorageTests {
    @Test func droppingATableDropsItsSegments() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("t", dimension: 2)
        try store.writeSegment(table, ids: [1, 2], records: records([1, 2]), rowsPerPart: 4)
        try store.dropTable("t")
        #expect(throws: LMDBError.self) { try store.environment.openDatabases([Store.segmentsDatabase(table.id)], flags: .integerKey) }
    }
}
