import EmbeddingCodecs
import Foundation
import Testing
@testable import EmbeddingStore

@Suite struct LoadTests {
    /// Loads `rows` with `codec` and returns what export gives back.
    func roundTrip(_ rows: [Float], count: Int, dimension d: Int, codec: Codec, ids: [UInt64]? = nil,
                   options: LoadOptions = LoadOptions()) throws -> (store: Store, report: LoadReport, ids: [UInt64], values: [Float], dir: TemporaryDirectory) {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let report = try rows.withUnsafeBufferPointer {
            try store.load(table: "t", ids: ids, rows: $0, count: count, dimension: d, codec: codec, options: options)
        }
        let (outIDs, values) = try store.export(try store.table("t"))
        return (store, report, outIDs, values, dir)
    }

    @Test(arguments: [Codec.fp32, .fp16, .int8, .int4])
    func plainCodecsLoadAndExportInIDOrder(codec: Codec) throws {
        let d = 17
        let rows = embeddingRows(count: 300, dimension: d)
        let ids = (0..<300).map { UInt64(($0 * 7919) % 1000) + 5 }   // unsorted, sparse
        let result = try roundTrip(rows, count: 300, dimension: d, codec: codec, ids: ids)
        #expect(result.ids == ids.sorted())
        let relative = (0..<300).reduce(0.0) { sum, i in
            let position = result.ids.firstIndex(of: ids[i])!
            return sum + squaredError(rows[i * d..<(i + 1) * d], result.values[position * d..<(position + 1) * d])
        } / squaredNorm(rows)
        // Relative squared error bounds: fp32 exact; fp16 ~2^-22; int8 ~1e-5; int4 ~1e-2 on these rows.
        let bound: Double = switch codec { case .fp32: 0; case .fp16: 1e-6; case .int8: 1e-4; default: 2e-2 }
        #expect(relative <= bound, "\(codec): relative squared error \(relative)")
        let stats = try result.store.statistics(try result.store.table("t"))
        #expect(stats.rows == 300)
        #expect(stats.codecs.count == 1)
    }

    @Test func reducedStaysWithinFivePercentOfOptimalRankK() throws {
        let d = 32, n = 2000, k = 8
        let rows = embeddingRows(count: n, dimension: d, seed: 7)
        let result = try roundTrip(rows, count: n, dimension: d, codec: .reduced(k: k))
        let error = squaredError(rows, result.values)
        // The optimal rank-k error is the sum of the covariance's trailing eigenvalues × n;
        // the stored basis keeps the top `rank` variances, the total variance gives the rest.
        let table = try result.store.table("t")
        let basis = try result.store.environment.read { txn in
            try PCABasis(record: try #require(try TableParameters(txn, table: table).parameterRecord(result.report.basisID!)))
        }
        var mean = [Double](repeating: 0, count: d)
        for i in 0..<n { for j in 0..<d { mean[j] += Double(rows[i * d + j]) / Double(n) } }
        var total = 0.0
        for i in 0..<n { for j in 0..<d { total += pow(Double(rows[i * d + j]) - mean[j], 2) } }
        let kept = basis.variances.prefix(k).reduce(0.0) { $0 + Double($1) } * Double(n)
        let optimal = total - kept
        #expect(optimal > 0)
        #expect(error <= 1.05 * optimal, "reduced error \(error) vs optimal \(optimal)")
        let stats = try result.store.statistics(table)
        #expect(stats.codecs.first?.bytes == n * (1 + 4 + 4 * k))
    }

    @Test func bucketsBeatHashingIntoTheSameNumberOfBuckets() throws {
        let d = 16, n = 3000, buckets = 64
        let rows = embeddingRows(count: n, dimension: d, clusters: 64, seed: 3)
        let result = try roundTrip(rows, count: n, dimension: d, codec: .bucket(count: buckets, scaled: false))
        #expect(result.report.bucketIDs?.count == buckets)
        let ours = squaredError(rows, result.values)
        // Baseline: hash each id into one of `buckets` buckets and store the bucket's mean.
        var sums = [Double](repeating: 0, count: buckets * d)
        var counts = [Int](repeating: 0, count: buckets)
        func bucket(_ i: Int) -> Int { Int((UInt64(i) &* 0x9E37_79B9_7F4A_7C15) >> 58) % buckets }
        for i in 0..<n {
            counts[bucket(i)] += 1
            for j in 0..<d { sums[bucket(i) * d + j] += Double(rows[i * d + j]) }
        }
        var hashed = 0.0
        for i in 0..<n {
            let b = bucket(i)
            for j in 0..<d { hashed += pow(Double(rows[i * d + j]) - sums[b * d + j] / Double(max(counts[b], 1)), 2) }
        }
        // "Clearly lower": k-means on clustered rows should cut the hashing error by far more than 20%.
        #expect(ours < 0.8 * hashed, "k-means \(ours) vs hashing \(hashed)")
        let scaled = try roundTrip(rows, count: n, dimension: d, codec: .bucket(count: buckets, scaled: true))
        #expect(squaredError(rows, scaled.values) <= ours * 1.0001)
        // Single puts with the bucket codec use the table's bucket rows.
        let table = try result.store.table("t")
        try result.store.put(table, id: 99_999, vector: Array(rows[0..<d]), codec: .bucket)
        let back = try #require(try result.store.get(table, id: 99_999))
        #expect(back == Array(result.values[0..<d]))
    }

    @Test func badInputIsRefusedBeforeAnythingIsWritten() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let d = 4
        var rows = embeddingRows(count: 100, dimension: d)
        try rows.withUnsafeBufferPointer { _ = try store.load(table: "t", rows: $0, count: 100, dimension: d, codec: .fp32) }
        let before = try store.export(try store.table("t"))
        rows[57 * d + 2] = .nan
        #expect {
            try rows.withUnsafeBufferPointer { _ = try store.load(table: "t", ids: (1000..<1100).map { $0 }, rows: $0, count: 100, dimension: d, codec: .int8) }
        } throws: { "\($0)".contains("row 57") && "\($0)".contains("id 1057") }
        rows[57 * d + 2] = 1e6
        #expect {
            try rows.withUnsafeBufferPointer { _ = try store.load(table: "t", ids: (1000..<1100).map { $0 }, rows: $0, count: 100, dimension: d, codec: .fp16) }
        } throws: { "\($0)".contains("row 57") && "\($0)".contains("fp16") }
        rows[57 * d + 2] = 0
        #expect {
            try rows.withUnsafeBufferPointer { _ = try store.load(table: "t", ids: [UInt64](repeating: 3, count: 100), rows: $0, count: 100, dimension: d, codec: .fp32) }
        } throws: { "\($0)".contains("appears twice") }
        #expect {
            try rows.withUnsafeBufferPointer { _ = try store.load(table: "t", rows: UnsafeBufferPointer(rebasing: $0[0..<200]), count: 25, dimension: 8, codec: .fp32) }
        } throws: { "\($0)".contains("dimension 4") }
        #expect(throws: CodecError.self) { try Codec(parsing: "int3") }
        #expect(throws: CodecError.self) { try Codec(parsing: "reduced:0") }
        #expect(throws: CodecError.self) { try Codec(parsing: "bucket:x") }
        #expect(try Codec(parsing: "bucket:16:scaled") == .bucket(count: 16, scaled: true))
        let after = try store.export(try store.table("t"))
        #expect(after.ids == before.ids && after.values == before.values)
    }

    @Test func loadingMoreRowsIntoATableKeepsBothAndReplacesOverlaps() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let a = embeddingRows(count: 10, dimension: 2, seed: 1)
        let b = embeddingRows(count: 10, dimension: 2, seed: 2)
        var options = LoadOptions()
        options.rowsPerTransaction = 3
        try a.withUnsafeBufferPointer { _ = try store.load(table: "t", rows: $0, count: 10, dimension: 2, codec: .fp32, options: options) }
        try b.withUnsafeBufferPointer { _ = try store.load(table: "t", ids: (5..<15).map { $0 }, rows: $0, count: 10, dimension: 2, codec: .fp32, options: options) }
        let (ids, values) = try store.export(try store.table("t"))
        #expect(ids == (0..<15).map { $0 })
        #expect(Array(values[0..<10]) == Array(a[0..<10]))
        #expect(Array(values[10..<30]) == b)
    }
}

@Suite struct EmptyLoadTests {
    @Test(arguments: [Codec.int8, .reduced(k: 2), .bucket(count: 4, scaled: false)])
    func loadingNoRowsCreatesAnEmptyTable(codec: Codec) throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let report = try [Float]().withUnsafeBufferPointer { try store.load(table: "t", rows: $0, count: 0, dimension: 4, codec: codec) }
        #expect(report.rows == 0)
        #expect(try store.statistics(store.table("t")).rows == 0)
    }
}
