import Benchmark
import EmbeddingCodecs
import EmbeddingStore
import Foundation

/// Rows shaped like embeddings (Gaussian, fixed seed) for the kernels to chew on.
func sampleRows(count: Int, dimension: Int) -> [Float] {
    var state: UInt64 = 0x5EED
    return (0..<count * dimension).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return Float(Int64(bitPattern: state >> 11) % 2_000_001 - 1_000_000) / 1_000_000
    }
}

/// A new store at `path` with table "t": `count` sample rows loaded as int8 (one segment).
func loadedStore(path: String, count: Int, dimension: Int) throws -> (Store, Table, [Float]) {
    let store = try Store(path: path)
    let rows = sampleRows(count: count, dimension: dimension)
    try rows.withUnsafeBufferPointer { try store.load(table: "t", rows: $0, count: count, dimension: dimension, codec: .int8) }
    return (store, try store.table("t"), rows)
}

/// Encodes `rows` with `encode` into a packed, cache-resident payload buffer.
func packed(_ rows: [Float], dimension d: Int, payloadSize: Int,
            _ encode: (UnsafeBufferPointer<Float>, UnsafeMutableRawBufferPointer) throws -> Void) -> [UInt8] {
    let count = rows.count / d
    var bytes = [UInt8](repeating: 0, count: count * payloadSize + 1)
    rows.withUnsafeBufferPointer { rows in
        bytes.withUnsafeMutableBytes { out in
            for i in 0..<count {
                // Offset by one byte: payloads in LMDB are only 2-byte aligned, so measure misaligned.
                try! encode(UnsafeBufferPointer(rebasing: rows[i * d..<(i + 1) * d]),
                            UnsafeMutableRawBufferPointer(rebasing: out[1 + i * payloadSize..<1 + (i + 1) * payloadSize]))
            }
        }
    }
    return bytes
}

let batch = 512
let dimension = 64

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .throughput, .mallocCountTotal], scalingFactor: .kilo,
                                           maxDuration: .seconds(2))
    let rows = sampleRows(count: batch, dimension: dimension)

    // Decode of one batch of 512 cache-resident rows (shared/bench's "decode" workload):
    // throughput × 1000 × 512 = rows/s.
    let codecs: [(String, Int, (UnsafeBufferPointer<Float>, UnsafeMutableRawBufferPointer) throws -> Void,
                  (UnsafeRawBufferPointer, UnsafeMutableBufferPointer<Float>) -> Void)] = [
        ("fp32", Float32Codec.payloadSize(dimension: dimension), { try Float32Codec.encode($0, into: $1) }, { Float32Codec.decode($0, into: $1) }),
        ("fp16", Float16Codec.payloadSize(dimension: dimension), { try Float16Codec.encode($0, into: $1) }, { Float16Codec.decode($0, into: $1) }),
        ("int8", Int8RowwiseCodec.payloadSize(dimension: dimension), { try Int8RowwiseCodec.encode($0, into: $1) }, { Int8RowwiseCodec.decode($0, into: $1) }),
        ("int4", Int4RowwiseCodec.payloadSize(dimension: dimension), { try Int4RowwiseCodec.encode($0, into: $1) }, { Int4RowwiseCodec.decode($0, into: $1) }),
    ]
    for (name, size, encode, decode) in codecs {
        let payloads = packed(rows, dimension: dimension, payloadSize: size, encode)
        Benchmark("decode \(name) d=\(dimension), batch of \(batch)") { benchmark in
            var out = [Float](repeating: 0, count: batch * dimension)
            payloads.withUnsafeBytes { payloads in
                out.withUnsafeMutableBufferPointer { out in
                    for _ in benchmark.scaledIterations {
                        for i in 0..<batch {
                            decode(UnsafeRawBufferPointer(rebasing: payloads[1 + i * size..<1 + (i + 1) * size]),
                                   UnsafeMutableBufferPointer(rebasing: out[i * dimension..<(i + 1) * dimension]))
                        }
                        blackHole(out[0])
                    }
                }
            }
        }
    }

    // One batched lookup call against a real store: malloc count per call is the figure to watch.
    Benchmark("lookup int8 d=\(dimension), batch of \(batch), 100k rows",
              configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal], scalingFactor: .one,
                                   maxDuration: .seconds(2))) { benchmark in
        let path = NSTemporaryDirectory() + "embstore-bench-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let n = 100_000
        let (store, handle, _) = try loadedStore(path: path, count: n, dimension: dimension)
        let reader = try store.makeReader()
        var state: UInt64 = 1
        let ids = (0..<batch).map { _ in state = state &* 6_364_136_223_846_793_005 &+ 1; return (state >> 33) % UInt64(n) }
        var out = [Float](repeating: 0, count: batch * dimension)
        try ids.withUnsafeBufferPointer { ids in
            try out.withUnsafeMutableBufferPointer { out in
                try reader.lookup(handle, ids: ids, into: out)   // warm-up
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    try reader.lookup(handle, ids: ids, into: out)
                }
                benchmark.stopMeasurement()
            }
        }
    }

    // Pooled lookups (512 bags of 20 ids) on a segment with a small delta on top (puts and a
    // delete): the delta filter and the fused accumulate path, malloc count per call.
    Benchmark("pooled int8 d=\(dimension), 512 bags of 20, 100k rows + delta",
              configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal], scalingFactor: .one,
                                   maxDuration: .seconds(2))) { benchmark in
        let path = NSTemporaryDirectory() + "embstore-bench-pooled-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let n = 100_000
        let (store, handle, table) = try loadedStore(path: path, count: n, dimension: dimension)
        try store.write { batch in
            for id in stride(from: UInt64(0), to: 1000, by: 7) {
                try batch.put(handle, id: id, vector: Array(table[Int(id) * dimension..<(Int(id) + 1) * dimension]), codec: .fp16)
            }
            try batch.delete(handle, id: 3)
        }
        let reader = try store.makeReader()
        var state: UInt64 = 7
        let ids = (0..<(batch * 20)).map { _ in state = state &* 6_364_136_223_846_793_005 &+ 1; return (state >> 33) % UInt64(n) }
        let offsets = (0...batch).map { $0 * 20 }
        var out = [Float](repeating: 0, count: batch * dimension)
        try ids.withUnsafeBufferPointer { ids in
            try offsets.withUnsafeBufferPointer { offsets in
                try out.withUnsafeMutableBufferPointer { out in
                    try reader.lookupPooled(handle, ids: ids, offsets: offsets, into: out)   // warm-up
                    benchmark.startMeasurement()
                    for _ in benchmark.scaledIterations {
                        try reader.lookupPooled(handle, ids: ids, offsets: offsets, into: out)
                    }
                    benchmark.stopMeasurement()
                }
            }
        }
    }
}
