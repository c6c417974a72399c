import CEmbeddingKernels
import Foundation
import Testing
@testable import EmbeddingCodecs

/// The tc codec through its descriptor: fit, encode, decode, records, damage, and the bounds
/// of a fit. Rows have a decaying spectrum (like embeddings), so the rotation matters.
@Suite struct TransformCodedCodecTests {
    /// `count` rows of `d` values: x = Σ_j g_j·s_j·u_j + offset, s_j = 0.85^j, u_j a fixed
    /// random orthonormal-ish direction set (random ±1/√d patterns), g_j ~ N(0, 1).
    static func rows(count: Int, dimension d: Int, seed: UInt64) -> [Float] {
        var generator = CodecFixtures.Generator(seed: seed)
        let directions = (0..<d * d).map { _ in Float(Bool.random(using: &generator) ? 1 : -1) / Float(d).squareRoot() }
        var rows = [Float](repeating: 0.25, count: count * d)
        for r in 0..<count {
            for j in 0..<d {
                let g = Float(CodecFixtures.gaussian(using: &generator)) * pow(0.85, Float(j))
                for i in 0..<d { rows[r * d + i] += g * directions[j * d + i] }
            }
        }
        return rows
    }

    /// Fits `codec` on `rows`, encodes every row and decodes it back through the descriptor.
    static func roundTrip(_ rows: [Float], count: Int, dimension d: Int, codec: Codec)
        throws -> (table: InMemoryCodecTable, records: [[UInt8]], decoded: [Float]) {
        let table = InMemoryCodecTable(dimension: d)
        let plan = try rows.withUnsafeBufferPointer { try codec.rowCodec.planLoad(codec, rows: $0, count: count, dimension: d, options: FitOptions()) }
        let encoder = try table.apply(plan)
        var records: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: encoder.maximumRecordSize)
        for r in 0..<count {
            let size = try rows.withUnsafeBufferPointer { rows in
                try buffer.withUnsafeMutableBytes {
                    try encoder.encode(UnsafeBufferPointer(rebasing: rows[r * d..<(r + 1) * d]), index: r, into: $0)
                }
            }
            records.append(Array(buffer[0..<size]))
        }
        let decoded = try decode(records, dimension: d, table: table)
        return (table, records, decoded)
    }

    static func decode(_ records: [[UInt8]], dimension d: Int, table: InMemoryCodecTable) throws -> [Float] {
        let decoder = TransformCodedRowCodec.descriptor.makeDecoder(dimension: d)
        var out = [Float](repeating: .nan, count: records.count * d)
        let stored = records.map { bytes -> UnsafeMutableRawBufferPointer in
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
            copy.copyBytes(from: bytes)
            return copy
        }
        defer { for copy in stored { copy.deallocate() } }
        var views = stored.map { UnsafeRawBufferPointer($0) }
        let decoded = try out.withUnsafeMutableBufferPointer { out in
            try decoder.decode(&views, count: views.count, into: out.baseAddress!, parameters: table)
        }
        #expect(decoded == records.count)
        return out
    }

    static func relativeError(_ x: [Float], _ y: [Float]) -> Double {
        let error = zip(x, y).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
        let norm = x.reduce(0.0) { $0 + Double($1) * Double($1) }
        return (error / max(norm, 1e-30)).squareRoot()
    }

    @Test(arguments: [1, 2, 3, 8, 17, 64])
    func moreBitsGiveLessErrorAndSizesFollowTheTarget(dimension d: Int) throws {
        let count = 600
        let rows = Self.rows(count: count, dimension: d, seed: UInt64(d))
        var previous = Double.infinity
        for bits in [1.5, 3.0, 6.0] {
            let (_, records, decoded) = try Self.roundTrip(rows, count: count, dimension: d, codec: .transformCoded(bitsPerValue: bits))
            let error = Self.relativeError(rows, decoded)
            #expect(decoded.allSatisfy { $0.isFinite })
            // Each doubling of the rate must cut the error (plus slack for the coarsest d = 1 fits).
            #expect(error < previous || error < 1e-3, "d \(d) tc:\(bits): error \(error) after \(previous)")
            previous = error
            // Sizes: the fit aims at B·d/8 bytes a row on its sample (here: all rows); rANS words
            // are 2 bytes, so small rows land within a few bytes.
            let mean = Double(records.map(\.count).reduce(0, +)) / Double(count)
            let target = TransformCodedRowCodec.targetRecordBytes(bits: bits, dimension: d)
            #expect(mean <= target * 1.1 + 2, "d \(d) tc:\(bits): \(mean) bytes a row for a target of \(target)")
            #expect(records.allSatisfy { $0[0] == 9 })
        }
        // At 6 bits a value the rows come back close (the spectrum spans 0.85^63 ≈ 3e-5).
        #expect(previous < 0.06, "d \(d): tc:6 error \(previous)")
    }

    @Test func constantRowsDecodeExactly() throws {
        let d = 5
        let rows = [Float](repeating: 0, count: 40 * d).enumerated().map { Float($0.offset % d) - 1.5 }
        let (_, records, decoded) = try Self.roundTrip(rows, count: 40, dimension: d, codec: .transformCoded(bitsPerValue: 2))
        #expect(decoded == rows)
        #expect(records.allSatisfy { $0.count <= 8 }, "\(records.map(\.count))")
    }

    @Test func recordsRoundTripAndDamageIsNamed() throws {
        let d = 16, count = 300
        let rows = Self.rows(count: count, dimension: d, seed: 3)
        let (table, records, decoded) = try Self.roundTrip(rows, count: count, dimension: d, codec: .transformCoded(bitsPerValue: 3))
        // The model and basis records parse back to the same bytes.
        let basisRecord = try #require(table.parameterRecord(1))
        let basis = try TransformBasis(record: basisRecord)
        #expect(basis.record == Array(basisRecord))
        #expect(basis.precision == .int8Rowwise)
        let modelRecord = try #require(table.parameterRecord(2))
        let model = try TransformModel(record: modelRecord) { _ in basis }
        #expect(model.record == Array(modelRecord))
        #expect(model.tables.count <= TransformCodedFit.tableGroups && model.tables.allSatisfy { $0.theta == 0 })

        let decoder = TransformCodedRowCodec.descriptor.makeDecoder(dimension: d)
        func refused(_ bytes: [UInt8]) throws -> String? {
            var out = [Float](repeating: 0, count: d)
            return try bytes.withUnsafeBytes { raw in
                var view = raw
                let decoded = try out.withUnsafeMutableBufferPointer { try decoder.decode(&view, count: 1, into: $0.baseAddress!, parameters: table) }
                return decoded == 1 ? nil : decoder.problem(with: raw, parameters: table)
            }
        }
        let record = records[7]
        // Zero padding decodes to the same row; any other trailing byte is refused.
        #expect(try Self.decode([record + [0, 0, 0]], dimension: d, table: table) == Array(decoded[7 * d..<8 * d]))
        #expect(try refused(record + [0, 1]) != nil)
        // Every truncation is refused and named.
        for length in 1..<record.count {
            let problem = try refused(Array(record[0..<length]))
            #expect(problem != nil, "a \(length)-byte prefix decoded")
        }
        #expect(try refused([9, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])?.contains("LEB128") == true)
        #expect(try refused([9, 0x82, 0x00] + Array(record[2...]))?.contains("LEB128") == true, "an overlong id")
        #expect(try refused([9, 5] + Array(record[2...]))?.contains("tc model 5, which does not exist") == true)
        #expect(try refused([9, 1] + Array(record[2...]))?.contains("tc model 1 is damaged") == true, "id 1 is the basis, not a model")
        // A flipped bit in the stream is refused or decodes to finite values; never a crash.
        var caught = 0
        for bit in 16..<(8 * record.count) {
            var damaged = record
            damaged[bit / 8] ^= 1 << (bit % 8)
            if try refused(damaged) != nil { caught += 1 }
        }
        #expect(caught > (8 * record.count - 16) / 2, "only \(caught) flips refused")
    }

    @Test func putsUseTheNewestModelOfTheirRate() throws {
        let d = 8
        let rows = Self.rows(count: 200, dimension: d, seed: 5)
        let (table, _, _) = try Self.roundTrip(rows, count: 200, dimension: d, codec: .transformCoded(bitsPerValue: 3))
        let encoder = try TransformCodedRowCodec.descriptor.putEncoder(.transformCoded(bitsPerValue: 3), table: table)
        #expect((encoder as? TransformCodedEncoder)?.idBytes == [2])
        #expect { try TransformCodedRowCodec.descriptor.putEncoder(.transformCoded(bitsPerValue: 4), table: table) } throws: { error in
            guard case CodecError.missingParameters(let text) = error else { return false }
            return text.contains("tc:4")
        }
    }

    @Test func wideTablesAreRefusedBeforeAnyAllocation() throws {
        let d = 100_000
        let rows = [Float](repeating: 0.5, count: 10 * d)
        // Refused up front: a d × d covariance would be 40 GB, which this test could not survive.
        for codec in [Codec.transformCoded(bitsPerValue: 2), .reduced(k: 4)] {
            #expect { try rows.withUnsafeBufferPointer { _ = try codec.rowCodec.planLoad(codec, rows: $0, count: 10, dimension: d, options: FitOptions()) } } throws: { error in
                "\(error)".contains("2048") && "\(error)".contains("100000")
            }
        }
    }

    /// The encoder's projection: the dispatched path (AVX2 + FMA here) agrees with the portable
    /// one to float32 rounding of the summed terms (|error| ≤ 1e-5 × Σ|v_i·x_i|), at awkward widths.
    @Test(arguments: [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 384])
    func projectionPathsAgree(dimension d: Int) {
        var generator = CodecFixtures.Generator(seed: UInt64(d))
        let k = max(1, d - 1)
        let basis = (0..<k * d).map { _ in Float(CodecFixtures.gaussian(using: &generator)) }
        let mean = (0..<d).map { _ in Float(CodecFixtures.gaussian(using: &generator)) }
        let x = (0..<d).map { _ in Float(CodecFixtures.gaussian(using: &generator)) }
        var fast = [Float](repeating: .nan, count: k), portable = fast, centred = [Float](repeating: 0, count: d)
        emb_tc_project(mean, basis, k, d, x, &centred, &fast)
        emb_tc_project_portable(mean, basis, k, d, x, &centred, &portable)
        for j in 0..<k {
            let magnitude = (0..<d).reduce(Float(0)) { $0 + abs(basis[j * d + $1] * (x[$1] - mean[$1])) }
            #expect(abs(fast[j] - portable[j]) <= 1e-5 * max(magnitude, 1e-30), "d \(d) j \(j): \(fast[j]) vs \(portable[j])")
        }
        // The energy the first k coefficients leave out: both paths, and a float64 reference.
        for kept in Set([0, 1, k / 2, k]) {
            var reference = 0.0, scale = 0.0
            for i in 0..<d {
                var r = Double(centred[i])
                for j in 0..<kept { r -= Double(portable[j]) * Double(basis[j * d + i]) }
                reference += r * r
                scale += Double(centred[i]) * Double(centred[i]) + (0..<kept).reduce(0.0) { $0 + pow(Double(portable[$1] * basis[$1 * d + i]), 2) }
            }
            let a = emb_tc_outside_energy(basis, kept, d, centred, portable)
            let b = emb_tc_outside_energy_portable(basis, kept, d, centred, portable)
            for (path, value) in [("dispatched", a), ("portable", b)] {
                #expect(abs(Double(value) - reference) <= 1e-4 * scale, "d \(d) k \(kept) \(path): \(value) vs \(reference)")
            }
        }
    }

    @Test func spellings() throws {
        #expect(try Codec(parsing: "tc:3.5") == .transformCoded(bitsPerValue: 3.5))
        #expect(try Codec(parsing: "TC:4").description == "tc:4")
        #expect(try Codec(parsing: "tc:6.25%") == .transformCoded(budget: 0.0625))
        #expect(try Codec(parsing: "tc:12.5%").description == "tc:12.5%")
        for bad in ["tc", "tc:0", "tc:-1", "tc:17", "tc:nan", "tc:3:4", "tc:x", "tc:0%", "tc:101%", "tc:x%", "tc:%"] {
            #expect(throws: CodecError.self, "\(bad)") { try Codec(parsing: bad) }
        }
        let forms = TransformCodedRowCodec.descriptor.forms(dimension: 384)
        #expect(forms.first { $0.codec == "tc:4" }?.bytesPerRow == 198)
    }
}
