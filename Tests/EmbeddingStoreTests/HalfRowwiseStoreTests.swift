import EmbeddingCodecs
import Testing
@testable import EmbeddingStore

/// int4h and int2h through the store: bulk loads in both layouts, puts, lookups, pooled lookups
/// (the accumulate kernels) and bucket rows stored with them (they are self-contained).
@Suite struct HalfRowwiseStoreTests {
    static let d = 17

    /// Relative squared error bounds on embeddingRows: int4h about 5e-3 like int4; int2h about
    /// 0.1 (four levels: the optimum for a Gaussian is about 0.12 of its variance).
    static func bound(_ codec: Codec) -> Double { codec == .int4h ? 2e-2 : 0.15 }

    @Test(arguments: [Codec.int4h, .int2h])
    func loadsLookUpAndPoolExactlyAsTheCodecDecodes(codec: Codec) throws {
        let d = Self.d, n = 300
        let rows = embeddingRows(count: n, dimension: d, seed: 21)
        for layout in [LoadLayout.segment, .perKey] {
            let dir = TemporaryDirectory()
            let store = try makeStore(dir)
            var options = LoadOptions()
            options.layout = layout
            _ = try rows.withUnsafeBufferPointer { try store.load(table: "t", rows: $0, count: n, dimension: d, codec: codec, options: options) }
            let table = try store.table("t")
            let (ids, values) = try store.export(table)
            #expect(ids == (0..<UInt64(n)).map { $0 })
            #expect(squaredError(values, rows) / squaredNorm(rows) <= Self.bound(codec), "\(codec) \(layout)")
            // Each row is exactly what the codec's encoder and decoder make of it.
            let encoder = try codec.rowCodec.putEncoder(codec, table: InMemoryCodecTable(dimension: d))
            var record = [UInt8](repeating: 0, count: encoder.maximumRecordSize)
            for i in [0, 1, 150, n - 1] {
                let size = try rows[i * d..<(i + 1) * d].withUnsafeBufferPointer { row in
                    try record.withUnsafeMutableBytes { try encoder.encode(row, index: i, into: $0) }
                }
                #expect(size == 1 + (codec == .int4h ? (d + 1) / 2 : (d + 3) / 4) + 4)
                let decoded = try RowRecord.decode(record[0..<size], dimension: d)
                #expect(decoded.map(\.bitPattern) == values[i * d..<(i + 1) * d].map(\.bitPattern), "\(codec) row \(i)")
            }
            // Pooled sums add the decoded rows in bag order: bit for bit acc + w·x.
            let reader = try store.makeReader()
            let bagIDs: [UInt64] = [3, 7, 7, 299, 12, 5000, 40, 41, 42, 0]
            let offsets = [0, 4, 4, 10]
            let weights: [Float] = [1, 0.5, -2, 0.25, 3, 9, 1, -1, 0.125, 2]
            let looked = try reader.lookup(table, ids: bagIDs)
            var pooled = [Float](repeating: 7, count: 3 * d)
            let found = try bagIDs.withUnsafeBufferPointer { ids in
                try offsets.withUnsafeBufferPointer { offsets in
                    try weights.withUnsafeBufferPointer { weights in
                        try pooled.withUnsafeMutableBufferPointer {
                            try reader.lookupPooled(table, ids: ids, offsets: offsets, weights: weights, pooling: .sum, into: $0)
                        }
                    }
                }
            }
            #expect(found == 9)
            var expected = [Float](repeating: 0, count: 3 * d)
            for b in 0..<3 {
                for p in offsets[b]..<offsets[b + 1] where bagIDs[p] < UInt64(n) {
                    for j in 0..<d { expected[b * d + j] = expected[b * d + j] + weights[p] * looked[p * d + j] }
                }
            }
            #expect(pooled.map(\.bitPattern) == expected.map(\.bitPattern), "\(codec) \(layout)")
        }
    }

    @Test(arguments: [Codec.int4h, .int2h])
    func putsAndBucketRows(codec: Codec) throws {
        let d = Self.d
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let rows = embeddingRows(count: 200, dimension: d, seed: 22)
        var options = LoadOptions()
        options.bucketCodec = codec
        _ = try rows.withUnsafeBufferPointer {
            try store.load(table: "t", rows: $0, count: 200, dimension: d, codec: .bucket(count: 16, scaled: true), options: options)
        }
        let table = try store.table("t")
        let vector = Array(rows[0..<d])
        try store.put(table, id: 1000, vector: vector, codec: codec)
        let back = try #require(try store.get(table, id: 1000))
        let expected = try RowRecord.decode((codec == .int4h ? RowEncoding.int4h : .int2h).record(vector), dimension: d)
        #expect(back == expected)
        let (_, values) = try store.export(table)
        #expect(values.allSatisfy { $0.isFinite })
        // Bucket rows quantised with `codec`, 16 of them for 200 clustered rows: no better than
        // the codec alone, and far better than nothing.
        #expect(squaredError(Array(values[0..<200 * d]), rows) / squaredNorm(rows) < 0.5)
        let stats = try store.statistics(table)
        #expect(stats.rows == 201)
    }
}
