import CEmbeddingKernels
import EmbeddingCodecs
import Testing

@Suite("Int2HalfRowwiseCodec")
struct Int2HalfRowwiseCodecTests {
    typealias Checks = HalfRowwiseCodecChecks

    @Test("random rows: decoders agree bitwise, finite, never worse than min/max", arguments: Checks.dimensions)
    func randomRows(dimension: Int) throws {
        try Checks.checkRandomRows(Int2HalfRowwiseCodec.self, dimension: dimension, seed: 0x12A)
    }

    @Test("range search lowers the error on Gaussian rows")
    func gaussianImprovement() throws {
        // With four levels, min/max spends them on the tails: clipping pays off far more than at
        // 4 bits (measured with this seed: mean MSE(ours) / MSE(min/max) ≈ 0.53 at d = 64, 0.39 at d = 256).
        let ratio = try Checks.meanGaussianErrorRatio(Int2HalfRowwiseCodec.self, dimension: 64, count: 200)
        #expect(ratio < 0.75)
    }

    @Test("layout: element 4k+m in bits 2m…2m+1 of byte k, unused high bits 0, then f16 scale and bias")
    func layout() throws {
        // Min 0, max 3: scale exactly 1 (f16 3c00), bias 0, codes equal the values.
        //   byte 0 = 0 | 1 << 2 | 2 << 4 | 3 << 6 = 0xE4;  byte 1 = 3, bits 2…7 unused = 0x03
        let row: [Float] = [0, 1, 2, 3, 3]
        let expected: [UInt8] = [0xE4, 0x03, 0x00, 0x3C, 0x00, 0x00]
        #expect(Int2HalfRowwiseCodec.payloadSize(dimension: 5) == 6)
        for minMax in [false, true] {
            let encoded = try Checks.encode(Int2HalfRowwiseCodec.self, row, minMax: minMax)
            #expect(encoded.payload == expected)
            #expect(encoded.decoded == row)
        }
        // Ties round to even: codes 0 3 | 0 2 (0.5 → 0, 1.5 → 2) | 2 (2.5 → 2).
        let tie = try Checks.encode(Int2HalfRowwiseCodec.self, [0, 3, 0.5, 1.5, 2.5], minMax: true)
        #expect(Array(tie.payload[..<2]) == [0b10_00_11_00, 0x02])
        // Bias 1 (3c00), scale 1: codes 0 1 2 3.
        let shifted = try Checks.encode(Int2HalfRowwiseCodec.self, [1, 2, 3, 4], minMax: true)
        #expect(shifted.payload == [0xE4, 0x00, 0x3C, 0x00, 0x3C])
        #expect(Int2HalfRowwiseCodec.payloadSize(dimension: 64) == 20)
    }

    @Test("dimensions not a multiple of 4: unused high bits written as 0 and ignored by every decoder",
          arguments: [1, 2, 3, 5, 6, 7, 9, 15, 17, 31, 33, 101])
    func unusedBits(dimension: Int) throws {
        let used = dimension % 4
        try Checks.checkUnusedBits(Int2HalfRowwiseCodec.self, dimension: dimension, unusedMask: UInt8(truncatingIfNeeded: 0xFF << (2 * used)))
    }

    @Test("constant rows: exact when the value is a half")
    func constantRows() throws {
        try Checks.checkConstantRows(Int2HalfRowwiseCodec.self)
    }

    @Test("rows at and beyond fp16's limits, and tiny rows, decode finite")
    func extremes() throws {
        try Checks.checkExtremes(Int2HalfRowwiseCodec.self)
    }

    @Test("an infinite or NaN scale or bias is detected", arguments: Checks.dimensions)
    func nonFiniteParameters(dimension: Int) throws {
        try Checks.checkNonFiniteParameters(Int2HalfRowwiseCodec.self, dimension: dimension)
    }

    @Test("NaN and ±infinity are refused with their index")
    func nonFinite() {
        Checks.checkRefusesNonFinite(Int2HalfRowwiseCodec.self)
    }

    @Test("wrong payload sizes and empty rows are refused")
    func misuse() {
        Checks.checkMisuse(Int2HalfRowwiseCodec.self)
    }
}
