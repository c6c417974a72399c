import EmbeddingCodecs
import Foundation
import NPY
import Testing
@testable import EmbeddingStore

/// The store against torch's own FBGEMM ops, through the fixtures `tools/make_fbgemm_fixtures.py`
/// made with torch (Tests/Fixtures/fbgemm; no torch needed here): packed rows load as records
/// byte for byte, pooled lookups of them give torch's sums, and float rows export as the bytes
/// torch's prepack gives the same floats.
@Suite("FBGEMM fixtures made by torch")
struct FBGEMMFixtureTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/fbgemm").path
    static let cases: [(String, FBGEMMFusedRows)] = [("d16", .int8), ("d16", .int4), ("d13", .int8), ("d13", .int4)]

    /// A fixture's packed rows: the bytes, the dimension and the row size.
    struct Packed {
        let bytes: [UInt8]
        let dimension: Int
        let rowBytes: Int
        var count: Int { bytes.count / rowBytes }
    }

    static func packed(_ table: String, _ layout: FBGEMMFusedRows) throws -> Packed {
        let file = try NPYFile(path: "\(directory)/\(layout.rawValue)_\(table).npy")
        let (_, rowBytes) = try file.byteMatrixShape()
        return Packed(bytes: Array(file.rawData), dimension: Int(table.dropFirst())!, rowBytes: rowBytes)
    }

    static func floats(_ name: String) throws -> (values: [Float], columns: Int) {
        let file = try NPYFile(path: "\(directory)/\(name).npy")
        let (rows, columns) = try file.matrixShape()
        var values = [Float](repeating: 0, count: rows * columns)
        try values.withUnsafeMutableBufferPointer { try file.readFloatRows(0..<rows, into: $0) }
        return (values, columns)
    }

    static func int64s(_ name: String) throws -> [Int] {
        try NPYFile(path: "\(directory)/\(name).npy").readIDs().map { Int($0) }
    }

    /// Loads `packed` as records into table "t" of a new store.
    static func load(_ packed: Packed, _ layout: FBGEMMFusedRows, into store: Store, loadLayout: LoadLayout = .segment) throws {
        var options = LoadOptions()
        options.layout = loadLayout
        try packed.bytes.withUnsafeBytes { bytes in
            _ = try store.load(table: "t", encoded: MemoryPayloads(bytes, codec: layout.codec, dimension: packed.dimension,
                                                                   payloadSize: packed.rowBytes), options: options)
        }
    }

    @Test(arguments: cases)
    func importedRowsAreStoredByteForByte(_ table: String, _ layout: FBGEMMFusedRows) throws {
        let packed = try Self.packed(table, layout)
        #expect(layout.dimensions(rowBytes: packed.rowBytes).contains(packed.dimension))
        for loadLayout in [LoadLayout.segment, .perKey] {
            let directory = TemporaryDirectory()
            let store = try Store(path: directory.path)
            try Self.load(packed, layout, into: store, loadLayout: loadLayout)
            let handle = try store.table("t")
            let (ids, payloads, copied) = try store.exportPayloads(handle, codec: layout.codec, payloadSize: packed.rowBytes) { _, _ in
                Issue.record("a stored \(layout.codec) row was re-encoded")
            }
            #expect(ids == (0..<UInt64(packed.count)).map { $0 })
            #expect(copied == packed.count)
            #expect(payloads == packed.bytes, "\(table) \(layout) \(loadLayout): the stored records are not the bytes given")
            #expect(try store.provenance(handle, id: 3)?.codec == layout.codec.description)
            #expect(try store.verify().isSound)
        }
    }

    /// Pooled lookups of the imported rows against torch's `embedding_bag_*_rowwise_offsets`.
    ///
    /// Tolerance: both add the same decoded rows in the same order in float32, but FBGEMM computes
    /// fma(q, w·scale, acc + w·bias) and the store acc + w·(q·scale + bias): a few roundings of
    /// the magnitudes involved per row added. The bound per value is 8 · 2⁻²⁴ · (L + 2) · Σ_r
    /// |w_r|·(|q·scale| + |bias|) for a bag of L rows (4 roundings of each term and of the running
    /// sum, which is no larger). torch 2.13's ops take mode 1 (mean) but return the sum, so the
    /// store's mean is checked against torch's sum times 1/L, which the store's own scaling is.
    @Test(arguments: cases)
    func pooledLookupsMatchTorch(_ table: String, _ layout: FBGEMMFusedRows) throws {
        let packed = try Self.packed(table, layout)
        let d = packed.dimension
        let indices = try Self.int64s("indices"), offsets = try Self.int64s("offsets")
        let weights = try NPYFile(path: "\(Self.directory)/weights.npy").readCounts().map { Float($0) }   // float32 values: exact
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.path)
        try Self.load(packed, layout, into: store)
        let handle = try store.table("t")
        let reader = try store.makeReader()
        let magnitude = Self.magnitudes(packed, layout)
        let bags = offsets.count - 1
        var worst = 0.0, largest = 0.0
        for (suffix, weighted, pooling) in [("sum", false, Pooling.sum), ("wsum", true, .sum), ("sum", false, .mean), ("wsum", true, .mean)] {
            var (expected, columns) = try Self.floats("\(layout.rawValue)_\(table)_\(suffix)")
            #expect(columns == d)
            if pooling == .mean {
                for b in 0..<bags where offsets[b + 1] > offsets[b] {
                    let inverse = 1 / Float(offsets[b + 1] - offsets[b])
                    for j in 0..<d { expected[b * d + j] *= inverse }
                }
            }
            var out = [Float](repeating: .nan, count: bags * d)
            let ids = indices.map { UInt64($0) }
            _ = try ids.withUnsafeBufferPointer { ids in
                try offsets.withUnsafeBufferPointer { offsets in
                    try weights.withUnsafeBufferPointer { weights in
                        try out.withUnsafeMutableBufferPointer {
                            try reader.lookupPooled(handle, ids: ids, offsets: offsets, weights: weighted ? weights : nil, pooling: pooling,
                                                    into: $0, missing: .error)
                        }
                    }
                }
            }
            for b in 0..<bags {
                let length = offsets[b + 1] - offsets[b]
                for j in 0..<d {
                    var size = 0.0
                    for p in offsets[b]..<offsets[b + 1] { size += Double(weighted ? abs(weights[p]) : 1) * magnitude[indices[p] * d + j] }
                    let bound = 8 * 0x1p-24 * Double(length + 2) * size
                    let difference = abs(Double(out[b * d + j]) - Double(expected[b * d + j]))
                    #expect(difference <= bound, "\(table) \(layout) \(suffix) \(pooling) bag \(b) value \(j): \(out[b * d + j]) vs torch's \(expected[b * d + j])")
                    if bound > 0 { worst = max(worst, difference / bound) }
                    largest = max(largest, difference)
                }
            }
        }
        #expect(worst <= 1)
        print("pooled \(table) \(layout) against torch: largest difference \(largest), at most \(worst) of its bound")
    }

    /// |q·scale| + |bias| for every value of every packed row.
    static func magnitudes(_ packed: Packed, _ layout: FBGEMMFusedRows) -> [Double] {
        let d = packed.dimension
        var result = [Double](repeating: 0, count: packed.count * d)
        packed.bytes.withUnsafeBytes { bytes in
            for r in 0..<packed.count {
                let row = UnsafeRawBufferPointer(rebasing: bytes[r * packed.rowBytes..<(r + 1) * packed.rowBytes])
                let scale: Float, bias: Float
                switch layout {
                case .int8:
                    scale = row.loadUnaligned(fromByteOffset: d, as: Float.self)
                    bias = row.loadUnaligned(fromByteOffset: d + 4, as: Float.self)
                case .int4:
                    scale = Float(row.loadUnaligned(fromByteOffset: (d + 1) / 2, as: Float16.self))
                    bias = Float(row.loadUnaligned(fromByteOffset: (d + 1) / 2 + 2, as: Float16.self))
                }
                for j in 0..<d {
                    let q = layout == .int8 ? row[j] : (j % 2 == 0 ? row[j / 2] & 0x0F : row[j / 2] >> 4)
                    result[r * d + j] = abs(Double(q) * Double(scale)) + abs(Double(bias))
                }
            }
        }
        return result
    }

    /// Float rows stored as fp32 and exported by FBGEMM's rule are, byte for byte, torch's
    /// prepack of the same floats: constant rows, a row of ±3e4, a minimum of both 0 and −0 (the
    /// AVX2 kernels' tie order gives −0), a range of 1e-6 and rows far from zero included.
    @Test(arguments: cases)
    func floatRowsExportAsTorchPrepacksThem(_ table: String, _ layout: FBGEMMFusedRows) throws {
        let packed = try Self.packed(table, layout)
        let (rows, d) = try Self.floats("rows_\(table)")
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.path)
        _ = try rows.withUnsafeBufferPointer { try store.load(table: "t", rows: $0, count: rows.count / d, dimension: d, codec: .fp32) }
        let (_, payloads, copied) = try store.exportPayloads(try store.table("t"), codec: layout.codec, payloadSize: packed.rowBytes) {
            try layout.quantize($0, into: $1)
        }
        #expect(copied == 0)
        for r in 0..<packed.count {
            let ours = payloads[r * packed.rowBytes..<(r + 1) * packed.rowBytes], torch = packed.bytes[r * packed.rowBytes..<(r + 1) * packed.rowBytes]
            #expect(ours == torch, "\(table) \(layout) row \(r): \(Array(ours)) vs torch's \(Array(torch))")
        }
    }

    /// A row the store could not read is refused before anything is written, naming it.
    @Test(arguments: [
        ("d16", FBGEMMFusedRows.int8, 16, [0x00, 0x00, 0xC0, 0x7F] as [UInt8], "nan"),   // f32 scale NaN
        ("d16", .int8, 20, [0x00, 0x00, 0x80, 0x7F], "inf"),                            // f32 bias +inf
        ("d16", .int4, 8, [0x00, 0x7C], "inf"),                                         // f16 scale +inf
        ("d13", .int4, 6, [0x5F], "high nibble"),                                       // a 14th value in a 13-wide row
    ])
    func badRowsAreRefused(_ table: String, _ layout: FBGEMMFusedRows, _ offset: Int, _ patch: [UInt8], _ words: String) throws {
        var packed = try Self.packed(table, layout)
        let row = 7
        var bytes = packed.bytes
        bytes.replaceSubrange(row * packed.rowBytes + offset..<row * packed.rowBytes + offset + patch.count, with: patch)
        packed = Packed(bytes: bytes, dimension: packed.dimension, rowBytes: packed.rowBytes)
        let problem = packed.bytes.withUnsafeBytes {
            layout.problem(with: UnsafeRawBufferPointer(rebasing: $0[row * packed.rowBytes..<(row + 1) * packed.rowBytes]), dimension: packed.dimension)
        }
        #expect(problem?.contains(words) == true, "\(problem ?? "no problem found")")
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.path)
        guard layout == .int8 || words != "high nibble" else { return }   // the store's decoder ignores the spare nibble
        #expect {
            try Self.load(packed, layout, into: store)
        } throws: { "\($0)".contains("row 7 (id 7)") }
        #expect(try store.tableNames().isEmpty)
    }
}
