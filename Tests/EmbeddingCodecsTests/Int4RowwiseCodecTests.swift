import CEmbeddingKernels
import EmbeddingCodecs
import Testing

@Suite("Int4RowwiseCodec")
struct Int4RowwiseCodecTests {
    typealias Checks = RowwiseCodecChecks

    @Test("random rows: decoders agree bitwise, finite, never worse than min/max", arguments: CodecFixtures.dimensions)
    func randomRows(dimension: Int) throws {
        try Checks.checkRandomRows(Int4RowwiseCodec.self, dimension: dimension, seed: 0x14)
    }

    @Test("range search lowers the error on Gaussian rows")
    func gaussianImprovement() throws {
        // Measured with this seed: mean MSE(ours) / MSE(min/max) ≈ 0.88 at d = 64, i.e. about
        // 12% lower (0.82 at d = 8 and d = 256, 0.71 at d = 1024, where clipping the tails pays
        // most). The bound is loose on purpose: it catches a search that does nothing.
        let ratio = try Checks.meanGaussianErrorRatio(Int4RowwiseCodec.self, dimension: 64, count: 200)
        #expect(ratio < 0.95)
    }

    @Test("layout: low nibble first, odd rows end with a zero high nibble, then scale and bias")
    func layout() throws {
        // Min 0, max 15: scale exactly 1, bias 0, codes equal the values; the search cannot beat
        // an exact encoding, so both encoders write these bytes.
        //   byte 0 = element 0 (low) | element 1 (high) = 0x0 | 0xF << 4 = 0xF0
        //   byte 1 = element 2 (low), unused high nibble 0 = 0x05
        let row: [Float] = [0, 15, 5]
        let expected: [UInt8] = [0xF0, 0x05, 0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0x00]
        #expect(Int4RowwiseCodec.payloadSize(dimension: 3) == 10)
        for minMax in [false, true] {
            let encoded = try Checks.encode(Int4RowwiseCodec.self, row, minMax: minMax)
            #expect(encoded.payload == expected)
            #expect(encoded.decoded == row)
        }
        // Ties round to even: with scale exactly 1, codes 0 15 | 0 2 | 2 (0.5 → 0, 1.5 → 2, 2.5 → 2).
        let tie = try Checks.encode(Int4RowwiseCodec.self, [0, 15, 0.5, 1.5, 2.5], minMax: true)
        #expect(Array(tie.payload[..<3]) == [0xF0, 0x20, 0x02])
        // Bias and scale as written: bias 1, scale 1, codes 0 1 2 3 15.
        let shifted = try Checks.encode(Int4RowwiseCodec.self, [1, 2, 3, 4, 16], minMax: true)
        #expect(Array(shifted.payload) == [0x10, 0x32, 0x0F, 0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x80, 0x3F])
    }

    @Test("odd dimensions: last high nibble written as 0 and ignored by every decoder", arguments: [1, 3, 7, 9, 15, 17, 31, 33, 101])
    func oddTail(dimension: Int) throws {
        var generator = CodecFixtures.Generator(seed: 0x0DD &+ UInt64(dimension))
        let row = CodecFixtures.row(.gaussian, dimension: dimension, using: &generator)
        let encoded = try Checks.encode(Int4RowwiseCodec.self, row)
        let lastCodeByte = (dimension + 1) / 2 - 1
        #expect(encoded.payload[lastCodeByte] >> 4 == 0)
        // Set the unused nibble: fast, reference and portable decoders must still agree with
        // the original decode, bit for bit.
        var dirty = encoded.payload
        dirty[lastCodeByte] |= 0xF0
        dirty.withUnsafeBytes { payload in
            for decode in [Int4RowwiseCodec.decode, Int4RowwiseCodec.decodeReference] {
                let decoded = CodecFixtures.decodeGuarded(dimension: dimension) { decode(payload, $0) }
                #expect(CodecFixtures.bitPatterns(decoded) == CodecFixtures.bitPatterns(encoded.decoded))
            }
            let portable = CodecFixtures.decodeGuarded(dimension: dimension) {
                emb_i4_rowwise_decode_portable(payload.baseAddress!, $0.baseAddress!, dimension)
            }
            #expect(CodecFixtures.bitPatterns(portable) == CodecFixtures.bitPatterns(encoded.decoded))
        }
    }

    @Test("constant rows decode exactly")
    func constantRows() throws {
        try Checks.checkConstantRows(Int4RowwiseCodec.self)
    }

    @Test("rows near Float's limits decode finite")
    func extremes() throws {
        try Checks.checkExtremes(Int4RowwiseCodec.self, name: "int4")
    }

    @Test("NaN and ±infinity are refused with their index")
    func nonFinite() {
        Checks.checkRefusesNonFinite(Int4RowwiseCodec.self)
    }

    @Test("wrong payload sizes and empty rows are refused")
    func misuse() {
        Checks.checkMisuse(Int4RowwiseCodec.self, name: "int4")
    }
}
