import Testing
@testable import EmbeddingStore

/// The pure byte layout of segments: kinds, lookups, part boundaries, checksum, corruption.
@Suite struct SegmentFormatTests {
    /// Records of varying (or fixed) size whose bytes name their id, so a wrong row is visible.
    func records(_ ids: [UInt64], fixed: Bool) -> [[UInt8]] {
        ids.map { id in
            let size = fixed ? 9 : 5 + Int(id % 7)
            return [1] + (0..<size - 1).map { UInt8(truncatingIfNeeded: id &* 31 &+ UInt64($0)) }
        }
    }

    func kind(of parts: SegmentBuilder.Parts) throws -> SegmentKind {
        try parts.part0.withUnsafeBytes { p0 throws -> SegmentKind in try SegmentHeader.decode(p0).kind }
    }

    /// Every id maps back to exactly its record; ids the segment lacks report nil.
    func checkLookups(_ parts: SegmentBuilder.Parts, ids: [UInt64], records: [[UInt8]], absent: [UInt64]) throws {
        try parts.part0.withUnsafeBytes { p0 in
            let index = try SegmentIndex(part0: p0)
            #expect(index.rowCount == ids.count)
            for (r, id) in ids.enumerated() {
                let row = try #require(index.row(of: id))
                #expect(row == r)
                #expect(index.id(atRow: row) == id)
                let part = parts.dataParts[index.part(ofRow: row) - 1]
                let range = try #require(index.recordRange(ofRow: row, partLength: part.count))
                #expect(Array(part[range]) == records[r])
            }
            for id in absent { #expect(index.row(of: id) == nil, "id \(id) must be missing") }
        }
    }

    @Test(arguments: [1, 3, 1000])
    func denseFixedHasNoIndex(rowsPerPart: Int) throws {
        let ids = (10..<30).map(UInt64.init)
        let recs = records(ids, fixed: true)
        let parts = try SegmentBuilder.build(ids: ids, records: recs, rowsPerPart: rowsPerPart)
        #expect(parts.part0.count == SegmentHeader.size)
        #expect(parts.dataParts.count == (20 + rowsPerPart - 1) / rowsPerPart)
        #expect(try kind(of: parts) == .denseFixed)
        try checkLookups(parts, ids: ids, records: recs, absent: [0, 9, 30, .max])
    }

    @Test(arguments: [1, 4, 1000])
    func denseVariableUsesFourBytesPerRow(rowsPerPart: Int) throws {
        let ids = (0..<50).map(UInt64.init)
        let recs = records(ids, fixed: false)
        let parts = try SegmentBuilder.build(ids: ids, records: recs, rowsPerPart: rowsPerPart)
        #expect(parts.part0.count == SegmentHeader.size + 4 * 50)
        #expect(try kind(of: parts) == .denseOffsets)
        try checkLookups(parts, ids: ids, records: recs, absent: [50, 51, .max])
    }

    @Test(arguments: [false, true])
    func sparseFindsEveryIDAndNoGap(fixed: Bool) throws {
        let ids: [UInt64] = [0, 2, 3, 17, 1 << 40, .max - 1]
        let recs = records(ids, fixed: fixed)
        let parts = try SegmentBuilder.build(ids: ids, records: recs, rowsPerPart: 4)
        #expect(parts.part0.count == SegmentHeader.size + 12 * ids.count)
        #expect(try kind(of: parts) == .sparse)
        try checkLookups(parts, ids: ids, records: recs, absent: [1, 4, 16, 18, (1 << 40) + 1, .max])
    }

    @Test func checksumCoversDataAndIndexButNotItself() throws {
        let ids: [UInt64] = [1, 5, 9]
        let parts = try SegmentBuilder.build(ids: ids, records: records(ids, fixed: false), rowsPerPart: 2)
        func stored(_ p: SegmentBuilder.Parts) throws -> (UInt64, UInt64) {
            try p.part0.withUnsafeBytes { p0 in
                let header = try SegmentHeader.decode(p0)
                let a = p.dataParts[0], b = p.dataParts[1]
                let sum = a.withUnsafeBytes { a in b.withUnsafeBytes { b in SegmentChecksum.of(part0: p0, dataParts: [a, b]) } }
                return (header.checksum, sum)
            }
        }
        let (header, computed) = try stored(parts)
        #expect(header == computed)
        var flipped = parts
        flipped.dataParts[1][0] ^= 0x40
        #expect(try stored(flipped).0 != (try stored(flipped).1))
        var index = parts
        index.part0[SegmentHeader.size + 8] ^= 1   // second id
        #expect(try stored(index).0 != (try stored(index).1))
    }

    @Test func fnv1aMatchesPublishedVectors() {
        // Published FNV-1a 64 test vectors, so other readers can check their implementation.
        var empty = SegmentChecksum()
        empty.update(UnsafeRawBufferPointer(start: nil, count: 0))
        #expect(empty.value == 0xcbf2_9ce4_8422_2325)
        var a = SegmentChecksum()
        Array("a".utf8).withUnsafeBytes { a.update($0) }
        #expect(a.value == 0xaf63_dc4c_8601_ec8c)
    }

    @Test func corruptHeadersAreRefused() throws {
        let ids = (0..<8).map(UInt64.init)
        let good = try SegmentBuilder.build(ids: ids, records: records(ids, fixed: false), rowsPerPart: 3).part0
        func refused(_ mutate: (inout [UInt8]) -> Void) -> Bool {
            var bytes = good
            mutate(&bytes)
            return bytes.withUnsafeBytes { (try? SegmentIndex(part0: $0)) == nil }
        }
        #expect(!refused { _ in })
        #expect(refused { $0[0] = 0x58 })                  // magic
        #expect(refused { $0[4] = 9 })                     // kind
        #expect(refused { $0[36] = 2 })                    // part count
        #expect(refused { $0[40] = 0 })                    // rows per part 0
        #expect(refused { $0[24] = 99 })                   // last id breaks density
        #expect(refused { $0.removeLast() })               // truncated index
    }

    @Test func inconsistentOffsetsNeverYieldAnotherRow() throws {
        let ids = (0..<6).map(UInt64.init)
        var parts = try SegmentBuilder.build(ids: ids, records: records(ids, fixed: false), rowsPerPart: 6)
        // Make row 2's offset point past row 3's: row 2 must come back as corrupt, not as bytes of row 3.
        parts.part0[SegmentHeader.size + 8] = 200
        try parts.part0.withUnsafeBytes { p0 in
            let index = try SegmentIndex(part0: p0)
            #expect(index.recordRange(ofRow: 2, partLength: parts.dataParts[0].count) == nil)
        }
    }

    @Test func builderRefusesUnsortedOrDuplicateIDs() {
        #expect(throws: SegmentFormatError.self) { try SegmentBuilder.build(ids: [2, 1], records: [[1], [1]], rowsPerPart: 4) }
        #expect(throws: SegmentFormatError.self) { try SegmentBuilder.build(ids: [1, 1], records: [[1], [1]], rowsPerPart: 4) }
        #expect(throws: SegmentFormatError.self) { try SegmentBuilder.build(ids: [], records: [], rowsPerPart: 4) }
    }
}
