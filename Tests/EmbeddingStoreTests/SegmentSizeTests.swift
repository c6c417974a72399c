import EmbeddingCodecs
import Testing
import LMDB
@testable import EmbeddingStore

/// On-disk cost of segments, measured at the LMDB page level (`mdb_stat`): every page a
/// database owns (branch, leaf, overflow) × page size, minus the row records (tag + payload),
/// per row. Budget: ≤ 4 bytes per row for dense ids, ≤ 12 for sparse ids.
@Suite struct SegmentSizeTests {
    static let rowCount = 100_000
    static let d = 64
    /// Record sizes (tag + payload) at d = 64.
    static let int8 = (tag: UInt8(3), size: 1 + 64 + 8)
    static let int4 = (tag: UInt8(4), size: 1 + 32 + 8)
    static let fp16 = (tag: UInt8(2), size: 1 + 2 * 64)

    /// Bytes of every page `database` owns.
    static func pageBytes(_ store: Store, _ database: Database) throws -> Int {
        try store.environment.read { txn in
            let stats = try txn.statistics(database)
            return (stats.branchPages + stats.leafPages + stats.overflowPages) * stats.pageSize
        }
    }

    /// Overhead per row of one segment whose row i has a record of codec `codec(i)`: the tag
    /// and payload bytes of the right length (the sizes are what matters here). Parts are as
    /// large as a load makes them.
    static func segmentOverhead(ids: [UInt64], codec: (Int) -> (tag: UInt8, size: Int)) throws -> Double {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir, mapSize: 1 << 26)
        let table = try store.createTable("t", dimension: d)
        // Payload bytes: slices of one random pool (their values do not change the size).
        var random = SeededRandom(seed: 17)
        var pool = (0..<4096).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        var recordBytes = 0
        let largest = (0..<min(ids.count, 3)).map { codec($0).size }.max()!
        let rowsPerPart = SegmentWriter.rowsPerPart(recordSize: largest, partBytes: Store.segmentPartBytes)
        try store.writeSegment(table, rowsPerPart: rowsPerPart, maximumRecordSize: largest) { emit in
            try pool.withUnsafeMutableBytes { pool in
                for (i, id) in ids.enumerated() {
                    let (tag, size) = codec(i)
                    let start = (i &* 977) % (pool.count - size)
                    pool[start] = tag
                    recordBytes += size
                    try emit(id, UnsafeRawBufferPointer(rebasing: pool[start..<start + size]))
                }
            }
        }
        let total = try pageBytes(store, table.segments!)
        return Double(total - recordBytes) / Double(ids.count)
    }

    static func sparseIDs() -> [UInt64] {
        var random = SeededRandom(seed: 23)
        var ids = Set<UInt64>()
        while ids.count < rowCount { ids.insert(random.next()) }
        return ids.sorted()
    }

    /// Alternating int8 / int4 / fp16 records.
    static func mixed(_ i: Int) -> (tag: UInt8, size: Int) {
        switch i % 3 {
        case 0: int8
        case 1: int4
        default: fp16
        }
    }

    @Test func denseSegmentsCostAtMostFourBytesPerRow() throws {
        let dense = (0..<UInt64(Self.rowCount)).map { $0 + 1_000_000 }
        let fixed = try Self.segmentOverhead(ids: dense) { _ in Self.int8 }
        let mixed = try Self.segmentOverhead(ids: dense, codec: Self.mixed)
        print("segment overhead, bytes/row above the record (100k rows): dense int8 \(fixed), dense int8/int4/fp16 \(mixed)")
        #expect(fixed <= 4, "dense single codec: \(fixed) bytes/row")
        #expect(mixed <= 4, "dense mixed codecs: \(mixed) bytes/row")
        // The grouped kind stores a 64-byte entry per 29 rows: the measurement must see it.
        #expect(mixed >= 64.0 / 29, "dense mixed codecs: \(mixed) bytes/row is less than its group entries")
    }

    @Test func sparseSegmentsCostAtMostTwelveBytesPerRow() throws {
        let ids = Self.sparseIDs()
        let fixed = try Self.segmentOverhead(ids: ids) { _ in Self.int8 }
        let mixed = try Self.segmentOverhead(ids: ids, codec: Self.mixed)
        print("segment overhead, bytes/row above the record (100k rows): sparse random 64-bit int8 \(fixed), sparse int8/int4/fp16 \(mixed)")
        #expect(fixed <= 12, "sparse single codec: \(fixed) bytes/row")
        #expect(mixed <= 12, "sparse mixed codecs: \(mixed) bytes/row")
        // Every id is stored in 8 bytes: the measurement must see at least those.
        #expect(fixed >= 8 && mixed >= 8 + 64.0 / 29, "sparse: \(fixed), \(mixed) bytes/row is less than the ids (and group entries)")
    }

    /// The same int8 rows loaded per key (one LMDB node each) and as a segment: the segment is
    /// smaller. (25k rows: this test runs two real loads, and the per-key figure is per row.)
    @Test func perKeyLoadCostsMoreThanTheSegment() throws {
        let count = 25_000
        var random = SeededRandom(seed: 29)
        let rows = (0..<count * Self.d).map { _ in Float(Int64(bitPattern: random.next() >> 40) - (1 << 23)) / Float(1 << 23) }
        var bytes: [LoadLayout: Int] = [:]
        var recordBytes = 0
        for layout in [LoadLayout.perKey, .segment] {
            let dir = TemporaryDirectory()
            let store = try makeStore(dir, mapSize: 1 << 27)
            var options = LoadOptions()
            options.layout = layout
            _ = try rows.withUnsafeBufferPointer {
                try store.load(table: "t", rows: $0, count: count, dimension: Self.d, codec: .int8, options: options)
            }
            let table = try store.table("t")
            let stats = try store.statistics(table)
            #expect(stats.rows == count)
            recordBytes = stats.codecs.reduce(0) { $0 + $1.bytes }
            bytes[layout] = try Self.pageBytes(store, table.rows) + Self.pageBytes(store, table.segments!)
        }
        #expect(recordBytes == count * Self.int8.size)
        let perKey = Double(bytes[.perKey]! - recordBytes) / Double(count)
        let segment = Double(bytes[.segment]! - recordBytes) / Double(count)
        print("int8 d=64, 25k dense rows, bytes/row above the record: per key \(perKey), segment \(segment)")
        #expect(segment <= 4)
        #expect(perKey > segment, "per key \(perKey) vs segment \(segment) bytes/row")
    }
}
