import Testing
@testable import EmbeddingCodecs

/// FBGEMM's rules on small rows whose bytes follow from the rule by hand; the fixtures torch made
/// check the same against torch (EmbeddingStoreTests/FBGEMMFixtureTests.swift).
@Suite("FBGEMM's fused rowwise rows")
struct FBGEMMFusedRowsTests {
    func quantized(_ layout: FBGEMMFusedRows, _ row: [Float]) throws -> [UInt8] {
        var payload = [UInt8](repeating: 0xAA, count: layout.rowBytes(dimension: row.count))
        try row.withUnsafeBufferPointer { row in try payload.withUnsafeMutableBytes { try layout.quantize(row, into: $0) } }
        return payload
    }

    @Test func rowSizesAndTheWidthsTheyHold() {
        #expect(FBGEMMFusedRows.int8.rowBytes(dimension: 13) == 21)
        #expect(FBGEMMFusedRows.int4.rowBytes(dimension: 13) == 11 && FBGEMMFusedRows.int4.rowBytes(dimension: 14) == 11)
        #expect(FBGEMMFusedRows.int8.dimensions(rowBytes: 21) == [13])
        #expect(FBGEMMFusedRows.int4.dimensions(rowBytes: 11) == [14, 13])
        #expect(FBGEMMFusedRows.int8.dimensions(rowBytes: 8).isEmpty && FBGEMMFusedRows.int4.dimensions(rowBytes: 4).isEmpty)
        #expect(FBGEMMFusedRows.int8.codec == .int8 && FBGEMMFusedRows.int4.codec == .int4h)
    }

    /// 8-bit: scale = (max − min)/255, bias = min, codes round((x − min) · 255/(range + 1e-8)),
    /// half to even; a constant row has scale 0 and codes 0.
    @Test func eightBitRule() throws {
        let bytes = try quantized(.int8, [0, 1, 0.5, 255])
        #expect(Array(bytes[0..<4]) == [0, 1, 0, 255])   // 0.5 · (255/255) rounds half to even: 0
        #expect(bytes[4..<8].withUnsafeBytes { $0.loadUnaligned(as: Float.self) } == 1)
        #expect(bytes[8..<12].withUnsafeBytes { $0.loadUnaligned(as: Float.self) } == 0)
        let constant = try quantized(.int8, [2.5, 2.5, 2.5])
        #expect(Array(constant[0..<3]) == [0, 0, 0])
        #expect(constant[3..<7].withUnsafeBytes { $0.loadUnaligned(as: Float.self) } == 0)
        #expect(constant[7..<11].withUnsafeBytes { $0.loadUnaligned(as: Float.self) } == 2.5)
    }

    /// 4-bit: bias = half(min), scale = half((max − bias)/15), element 2i in the low nibble; a
    /// constant row gets scale 1; an odd row's last high nibble stays 0.
    @Test func fourBitRule() throws {
        let bytes = try quantized(.int4, [0, 15, 7.5, 1, 2])
        #expect(Array(bytes[0..<3]) == [0xF0, 0x18, 0x02])   // codes 0, 15, 8 (7.5 half to even), 1, 2
        #expect(bytes[3..<5].withUnsafeBytes { Float($0.loadUnaligned(as: Float16.self)) } == 1)
        #expect(bytes[5..<7].withUnsafeBytes { Float($0.loadUnaligned(as: Float16.self)) } == 0)
        let constant = try quantized(.int4, [3, 3])
        #expect(constant[0] == 0 && constant[1..<3].withUnsafeBytes { Float($0.loadUnaligned(as: Float16.self)) } == 1)
        #expect(constant[3..<5].withUnsafeBytes { Float($0.loadUnaligned(as: Float16.self)) } == 3)
    }

    /// The AVX2 kernels' tie order: with 0 at index 2 and −0 at index 9 the bias is −0 (torch's
    /// prepack gives the same; the fixtures' row 4), where a first-minimum search gives +0.
    @Test func signedZeroMinimumFollowsTheAVX2Kernels() {
        var row = [Float](repeating: 1, count: 16)
        row[2] = 0
        row[9] = -0.0
        let (lo, _) = row.withUnsafeBufferPointer { FBGEMMFusedRows.fbgemmExtremes($0) }
        #expect(lo == 0 && lo.sign == .minus)
        row[9] = 0
        row[2] = -0.0
        #expect(row.withUnsafeBufferPointer { FBGEMMFusedRows.fbgemmExtremes($0) }.lo.sign == .plus)   // lane 1's +0 comes first; lane 2's −0 loses the tie
    }

    @Test func rowsTheRuleCannotStoreAreRefused() {
        #expect(throws: CodecError.self) { try quantized(.int4, [-70_000, 0]) }      // bias beyond fp16
        #expect(throws: CodecError.self) { try quantized(.int4, [0, 2_000_000]) }   // range / 15 beyond fp16
        #expect(throws: CodecError.self) { try quantized(.int8, [-3e38, 3e38]) }    // range beyond float32
        #expect(throws: CodecError.self) { try quantized(.int8, [1, .nan]) }
    }

    @Test func problemsNameWhatIsWrong() {
        var int8 = [UInt8](repeating: 0, count: 10)
        int8.replaceSubrange(2..<6, with: [0, 0, 0xC0, 0x7F])
        #expect(int8.withUnsafeBytes { FBGEMMFusedRows.int8.problem(with: $0, dimension: 2) }?.contains("scale") == true)
        var int4 = [UInt8](repeating: 0, count: 5)
        int4[0] = 0x30
        #expect(int4.withUnsafeBytes { FBGEMMFusedRows.int4.problem(with: $0, dimension: 1) }?.contains("high nibble") == true)
        int4[0] = 0x03
        int4.replaceSubrange(3..<5, with: [0x00, 0xFC])   // bias −inf
        #expect(int4.withUnsafeBytes { FBGEMMFusedRows.int4.problem(with: $0, dimension: 1) }?.contains("bias") == true)
        #expect([UInt8](repeating: 0, count: 5).withUnsafeBytes { FBGEMMFusedRows.int4.problem(with: $0, dimension: 2) } == nil)
    }
}
