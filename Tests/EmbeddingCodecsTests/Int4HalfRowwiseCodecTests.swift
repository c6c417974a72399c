import CEmbeddingKernels
import EmbeddingCodecs
import Testing

@Suite("Int4HalfRowwiseCodec")
struct Int4HalfRowwiseCodecTests {
    typealias Checks = HalfRowwiseCodecChecks

    @Test("random rows: decoders agree bitwise, finite, never worse than min/max", arguments: Checks.dimensions)
    func randomRows(dimension: Int) throws {
        try Checks.checkRandomRows(Int4HalfRowwiseCodec.self, dimension: dimension, seed: 0x14A)
    }

    @Test("range search lowers the error on Gaussian rows, and f16 parameters cost almost nothing")
    func gaussianImprovement() throws {
        // Measured with this seed: mean MSE(ours) / MSE(min/max) ≈ 0.87 at d = 64, as int4's.
        // The bound is loose on purpose: it catches a search that does nothing.
        let ratio = try Checks.meanGaussianErrorRatio(Int4HalfRowwiseCodec.self, dimension: 64, count: 200)
        #expect(ratio < 0.95)
        // Against int4 (f32 scale and bias) on the same rows: a half's relative step, 2^-11, moves
        // the codes' grid by far less than its own step, so the errors are within a few percent
        // (measured: 0.99–1.00× int4's at d = 8…1024, the scale refit with the bias fixed being
        // one step int4's encoder does not take).
        var generator = CodecFixtures.Generator(seed: 0x6A56)
        var half = 0.0, single = 0.0
        for _ in 0..<200 {
            let row = CodecFixtures.row(.gaussian, dimension: 64, using: &generator)
            half += CodecFixtures.squaredError(try Checks.encode(Int4HalfRowwiseCodec.self, row).decoded, row)
            single += CodecFixtures.squaredError(try RowwiseCodecChecks.encode(Int4RowwiseCodec.self, row).decoded, row)
        }
        #expect(half / single < 1.02, "int4h / int4 squared error \(half / single)")
    }

    @Test("rows far from zero relative to their spread: the codes absorb the coarse f16 bias")
    func offsetRows() throws {
        // At 40 a half's step is 1/32, so the bias lands up to 1/32 below the row's range and the
        // codes must span that too. Measured with this seed (squared error / int4's): 1.09 for
        // 40 ± 0.1 (several half steps wide), 3.6 for 40 ± 0.01 (narrower than one), which is
        // the f16 grid's own cost: a brute-force search over nearby halves found at most 6% less.
        // Rounding a jointly refitted scale and bias instead gave 6× int4's relative L2 error on
        // the benchmark table mapped to 40 ± 0.01.
        for (spread, bound) in [(Float(0.05), 1.5), (0.005, 5.0)] {
            var generator = CodecFixtures.Generator(seed: 0x40)
            var half = 0.0, single = 0.0
            for _ in 0..<100 {
                let row = CodecFixtures.row(.gaussian, dimension: 64, using: &generator).map { 40 + spread * $0 }
                half += try Checks.compareWithMinMax(Int4HalfRowwiseCodec.self, row).ours
                single += CodecFixtures.squaredError(try RowwiseCodecChecks.encode(Int4RowwiseCodec.self, row).decoded, row)
            }
            #expect(half / single < bound, "40 ± \(2 * spread): int4h / int4 squared error \(half / single)")
        }
    }

    @Test("layout: low nibble first, odd rows end with a zero high nibble, then f16 scale and bias")
    func layout() throws {
        // Min 0, max 15: scale exactly 1 (f16 3c00), bias 0, codes equal the values; the search
        // cannot beat an exact encoding, so both encoders write these bytes.
        //   byte 0 = element 0 (low) | element 1 (high) = 0x0 | 0xF << 4 = 0xF0
        //   byte 1 = element 2 (low), unused high nibble 0 = 0x05
        let row: [Float] = [0, 15, 5]
        let expected: [UInt8] = [0xF0, 0x05, 0x00, 0x3C, 0x00, 0x00]
        #expect(Int4HalfRowwiseCodec.payloadSize(dimension: 3) == 6)
        for minMax in [false, true] {
            let encoded = try Checks.encode(Int4HalfRowwiseCodec.self, row, minMax: minMax)
            #expect(encoded.payload == expected)
            #expect(encoded.decoded == row)
        }
        // Ties round to even: with scale exactly 1, codes 0 15 | 0 2 | 2 (0.5 → 0, 1.5 → 2, 2.5 → 2).
        let tie = try Checks.encode(Int4HalfRowwiseCodec.self, [0, 15, 0.5, 1.5, 2.5], minMax: true)
        #expect(Array(tie.payload[..<3]) == [0xF0, 0x20, 0x02])
        // Bias and scale as written: bias 1, scale 1, codes 0 1 2 3 15.
        let shifted = try Checks.encode(Int4HalfRowwiseCodec.self, [1, 2, 3, 4, 16], minMax: true)
        #expect(shifted.payload == [0x10, 0x32, 0x0F, 0x00, 0x3C, 0x00, 0x3C])
        #expect(Int4HalfRowwiseCodec.payloadSize(dimension: 64) + 4 == Int4RowwiseCodec.payloadSize(dimension: 64))
    }

    @Test("odd dimensions: last high nibble written as 0 and ignored by every decoder", arguments: [1, 3, 5, 7, 9, 15, 17, 31, 33, 101])
    func oddTail(dimension: Int) throws {
        try Checks.checkUnusedBits(Int4HalfRowwiseCodec.self, dimension: dimension, unusedMask: 0xF0)
    }

    @Test("constant rows: exact when the value is a half")
    func constantRows() throws {
        try Checks.checkConstantRows(Int4HalfRowwiseCodec.self)
    }

    @Test("rows at and beyond fp16's limits, and tiny rows, decode finite")
    func extremes() throws {
        try Checks.checkExtremes(Int4HalfRowwiseCodec.self)
    }

    @Test("an infinite or NaN scale or bias is detected", arguments: Checks.dimensions)
    func nonFiniteParameters(dimension: Int) throws {
        try Checks.checkNonFiniteParameters(Int4HalfRowwiseCodec.self, dimension: dimension)
    }

    @Test("NaN and ±infinity are refused with their index")
    func nonFinite() {
        Checks.checkRefusesNonFinite(Int4HalfRowwiseCodec.self)
    }

    @Test("wrong payload sizes and empty rows are refused")
    func misuse() {
        Checks.checkMisuse(Int4HalfRowwiseCodec.self)
    }
}
