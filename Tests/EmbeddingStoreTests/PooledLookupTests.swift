import EmbeddingCodecs
import Testing
@testable import EmbeddingStore

@Suite struct PooledLookupTests {
    /// A table whose rows use every codec, so bags mix them.
    func mixedTable(_ dir: TemporaryDirectory, d: Int = 9) throws -> (Store, Table, [Float]) {
        let store = try makeStore(dir)
        let rows = embeddingRows(count: 40, dimension: d, seed: 11)
        try rows.withUnsafeBufferPointer { buffer in
            _ = try store.load(table: "t", rows: UnsafeBufferPointer(rebasing: buffer[0..<20 * d]), count: 20, dimension: d, codec: .reduced(k: 3))
            _ = try store.load(table: "t", ids: (20..<30).map { $0 }, rows: UnsafeBufferPointer(rebasing: buffer[20 * d..<30 * d]),
                               count: 10, dimension: d, codec: .bucket(count: 4, scaled: true))
        }
        let table = try store.table("t")
        let codecs: [Codec] = [.fp32, .fp16, .int8, .int4, .bucket]
        try store.write { batch in
            for i in 30..<40 { try batch.put(table, id: UInt64(i), vector: Array(rows[i * d..<(i + 1) * d]), codec: codecs[i % codecs.count]) }
        }
        return (store, table, rows)
    }

    @Test func pooledEqualsTheSumOfLookedUpRows() throws {
        let dir = TemporaryDirectory()
        let d = 9
        let (store, table, _) = try mixedTable(dir, d: d)
        let reader = try store.makeReader()
        let ids: [UInt64] = [0, 25, 31, 33, 34, 36, 2, 2, 999, 39, 21]
        let offsets = [0, 3, 3, 8, 11]   // bags of 3, 0, 5 (with a duplicate) and 3 (with a missing id)
        let weights: [Float] = [1, 0.5, -2, 1, 1, 3, 0.25, 0.25, 7, 1, 2]
        let rows = try reader.lookup(table, ids: ids)
        for pooling in [Pooling.sum, .mean] {
            for weighted in [false, true] {
                var out = [Float](repeating: 7, count: 4 * d)
                let found = try ids.withUnsafeBufferPointer { ids in
                    try offsets.withUnsafeBufferPointer { offsets in
                        try weights.withUnsafeBufferPointer { weights in
                            try out.withUnsafeMutableBufferPointer {
                                try reader.lookupPooled(table, ids: ids, offsets: offsets, weights: weighted ? weights : nil, pooling: pooling, into: $0)
                            }
                        }
                    }
                }
                #expect(found == 10)
                for b in 0..<4 {
                    for j in 0..<d {
                        var expected: Float = 0
                        for p in offsets[b]..<offsets[b + 1] { expected += (weighted ? weights[p] : 1) * rows[p * d + j] }
                        if pooling == .mean && offsets[b + 1] > offsets[b] { expected /= Float(offsets[b + 1] - offsets[b]) }
                        // Same decoded rows, summed in the same order: equal to float rounding of the mean's division.
                        #expect(abs(out[b * d + j] - expected) <= 1e-6 * max(1, abs(expected)), "bag \(b) column \(j) \(pooling) weighted \(weighted)")
                    }
                }
                #expect(out[d..<2 * d].allSatisfy { $0 == 0 }, "an empty bag gives zeros")
            }
        }
    }

    @Test func pooledRefusesBadOffsetsAndReportsMissingIDs() throws {
        let dir = TemporaryDirectory()
        let (store, table, _) = try mixedTable(dir)
        let reader = try store.makeReader()
        var out = [Float](repeating: 0, count: 18)
        let ids: [UInt64] = [1, 2, 999]
        for (offsets, expected) in [([0, 2, 1], "decreasing"), ([0, 4], "outside"), ([0, 1, 2, 3], "need")] {
            #expect {
                try ids.withUnsafeBufferPointer { ids in
                    try offsets.withUnsafeBufferPointer { offsets in
                        try out.withUnsafeMutableBufferPointer { try reader.lookupPooled(table, ids: ids, offsets: offsets, into: $0) }
                    }
                }
            } throws: { "\($0)".contains(expected) }
        }
        #expect {
            try ids.withUnsafeBufferPointer { ids in
                try [0, 3].withUnsafeBufferPointer { offsets in
                    try out.withUnsafeMutableBufferPointer { try reader.lookupPooled(table, ids: ids, offsets: offsets, into: $0, missing: .error) }
                }
            }
        } throws: { "\($0)".contains("id 999") }
    }

    /// A multi-table request writes, per sample, each feature's pooled bag side by side, each
    /// exactly what the single-table call gives; one feature may use a table twice.
    @Test func aMultiTableRequestIsTheSingleTableCallsSideBySide() throws {
        let dir = TemporaryDirectory()
        let (store, mixed, _) = try mixedTable(dir, d: 9)
        let narrow = embeddingRows(count: 50, dimension: 4, seed: 3)
        _ = try narrow.withUnsafeBufferPointer { try store.load(table: "narrow", rows: $0, count: 50, dimension: 4, codec: .int8) }
        let small = try store.table("narrow")
        let reader = try store.makeReader()
        let batch = 3
        let mixedIDs: [UInt64] = [0, 25, 31, 999, 36, 2], mixedOffsets = [0, 2, 2, 6]
        let narrowIDs: [UInt64] = [1, 2, 3, 4, 5], narrowOffsets = [0, 1, 3, 5]
        let weights: [Float] = [2, 1, 0.5, 3, -1]
        let width = 9 + 4 + 9
        var out = [Float](repeating: 7, count: batch * width)
        let found = try mixedIDs.withUnsafeBufferPointer { mixedIDs in
            try mixedOffsets.withUnsafeBufferPointer { mixedOffsets in
                try narrowIDs.withUnsafeBufferPointer { narrowIDs in
                    try narrowOffsets.withUnsafeBufferPointer { narrowOffsets in
                        try weights.withUnsafeBufferPointer { weights in
                            let features = [
                                PooledFeature(table: mixed, ids: mixedIDs, offsets: mixedOffsets),
                                PooledFeature(table: small, ids: narrowIDs, offsets: narrowOffsets, weights: weights, pooling: .mean),
                                PooledFeature(table: mixed, ids: mixedIDs, offsets: mixedOffsets, pooling: .mean),
                            ]
                            return try out.withUnsafeMutableBufferPointer { try reader.lookupPooled(features, batchSize: batch, into: $0) }
                        }
                    }
                }
            }
        }
        #expect(found == 5 + 5 + 5)
        func single(_ table: Table, _ ids: [UInt64], _ offsets: [Int], weights: [Float]? = nil, pooling: Pooling) throws -> [Float] {
            var out = [Float](repeating: 0, count: (offsets.count - 1) * table.dimension)
            try ids.withUnsafeBufferPointer { ids in
                try offsets.withUnsafeBufferPointer { offsets in
                    try out.withUnsafeMutableBufferPointer { out in
                        if let weights {
                            try weights.withUnsafeBufferPointer { _ = try reader.lookupPooled(table, ids: ids, offsets: offsets, weights: $0, pooling: pooling, into: out) }
                        } else {
                            _ = try reader.lookupPooled(table, ids: ids, offsets: offsets, pooling: pooling, into: out)
                        }
                    }
                }
            }
            return out
        }
        let parts = [try single(mixed, mixedIDs, mixedOffsets, pooling: .sum), try single(small, narrowIDs, narrowOffsets, weights: weights, pooling: .mean),
                     try single(mixed, mixedIDs, mixedOffsets, pooling: .mean)]
        for b in 0..<batch {
            var column = 0
            for part in parts {
                let d = part.count / batch
                #expect(Array(out[b * width + column..<b * width + column + d]) == Array(part[b * d..<(b + 1) * d]), "sample \(b) at column \(column)")
                column += d
            }
        }
        // Offsets that do not make `batch` bags are refused, naming the feature.
        #expect(throws: StoreError.self) {
            try mixedIDs.withUnsafeBufferPointer { ids in
                try [0, 6].withUnsafeBufferPointer { offsets in
                    try out.withUnsafeMutableBufferPointer {
                        try reader.lookupPooled([PooledFeature(table: mixed, ids: ids, offsets: offsets)], batchSize: batch, into: $0)
                    }
                }
            }
        }
    }
}
