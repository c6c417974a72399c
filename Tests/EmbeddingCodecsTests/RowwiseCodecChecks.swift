import CEmbeddingKernels
import EmbeddingCodecs
import Testing

/// What the shared rowwise checks need from Int8RowwiseCodec and Int4RowwiseCodec.
protocol RowwiseCodecUnderTest {
    /// Highest code (255 or 15).
    static var testLevels: Int { get }
    /// Bytes of codes before scale and bias.
    static func testCodeBytes(dimension: Int) -> Int
    static func payloadSize(dimension: Int) -> Int
    static func encode(_ row: UnsafeBufferPointer<Float>, into payload: UnsafeMutableRawBufferPointer) throws(CodecError)
    static func encodeMinMax(_ row: UnsafeBufferPointer<Float>, into payload: UnsafeMutableRawBufferPointer) throws(CodecError)
    static func decode(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>)
    static func decodeReference(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>)
    /// The C target's portable fallback, which the dispatching kernel skips on AVX2 machines.
    static func testDecodePortable(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>)
}

extension Int8RowwiseCodec: RowwiseCodecUnderTest {
    static var testLevels: Int { 255 }
    static func testCodeBytes(dimension: Int) -> Int { dimension }
    static func testDecodePortable(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>) {
        emb_i8_rowwise_decode_portable(payload.baseAddress!, row.baseAddress!, row.count)
    }
}

extension Int4RowwiseCodec: RowwiseCodecUnderTest {
    static var testLevels: Int { 15 }
    static func testCodeBytes(dimension: Int) -> Int { (dimension + 1) / 2 }
    static func testDecodePortable(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>) {
        emb_i4_rowwise_decode_portable(payload.baseAddress!, row.baseAddress!, row.count)
    }
}

/// Checks shared by the int8 and int4 test suites.
enum RowwiseCodecChecks {
    typealias Fixtures = CodecFixtures

    /// One encoded row as a reader sees it.
    struct Encoded {
        var payload: [UInt8]
        var decoded: [Float]
        var scale: Float
        var bias: Float
    }

    /// Encodes `row` (range search, or the min/max rule) into a misaligned payload with guard
    /// bytes, decodes it with the fast, reference and portable C decoders, and checks that all
    /// three agree bit for bit and that every decoded value is finite.
    static func encode<Codec: RowwiseCodecUnderTest>(
        _ codec: Codec.Type, _ row: [Float], minMax: Bool = false,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> Encoded {
        let d = row.count
        return try Fixtures.withMisalignedPayload(byteCount: Codec.payloadSize(dimension: d), sourceLocation: sourceLocation) { payload in
            try row.withUnsafeBufferPointer { row in
                if minMax { try Codec.encodeMinMax(row, into: payload) } else { try Codec.encode(row, into: payload) }
            }
            let source = UnsafeRawBufferPointer(payload)
            let fast = Fixtures.decodeGuarded(dimension: d, sourceLocation: sourceLocation) { Codec.decode(source, into: $0) }
            let reference = Fixtures.decodeGuarded(dimension: d, sourceLocation: sourceLocation) { Codec.decodeReference(source, into: $0) }
            let portable = Fixtures.decodeGuarded(dimension: d, sourceLocation: sourceLocation) { Codec.testDecodePortable(source, into: $0) }
            // Decoding is a multiply then an add in Float everywhere, never fused: bitwise equal.
            #expect(Fixtures.bitPatterns(fast) == Fixtures.bitPatterns(reference), "fast decode differs from reference", sourceLocation: sourceLocation)
            #expect(Fixtures.bitPatterns(portable) == Fixtures.bitPatterns(reference), "portable decode differs from reference", sourceLocation: sourceLocation)
            #expect(fast.allSatisfy { $0.isFinite }, "decoded a non-finite value", sourceLocation: sourceLocation)
            let codeBytes = Codec.testCodeBytes(dimension: d)
            return Encoded(payload: Array(source), decoded: fast,
                           scale: Fixtures.readFloat(payload, at: codeBytes),
                           bias: Fixtures.readFloat(payload, at: codeBytes + 4))
        }
    }

    /// The range-searching encoder against the min/max rule on one row: never a higher squared
    /// error, and inside its chosen range no value off by more than half a step. Returns both
    /// squared errors.
    @discardableResult
    static func compareWithMinMax<Codec: RowwiseCodecUnderTest>(
        _ codec: Codec.Type, _ row: [Float], sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> (ours: Double, minMax: Double) {
        let ours = try encode(codec, row, sourceLocation: sourceLocation)
        let oursError = Fixtures.squaredError(ours.decoded, row)
        let minMaxError: Double
        do {
            minMaxError = Fixtures.squaredError(try encode(codec, row, minMax: true, sourceLocation: sourceLocation).decoded, row)
        } catch CodecError.outOfRange {
            // The rule itself would decode to infinity on this row (|values| near 3.4e38): an
            // infinite error, which any finite result beats.
            minMaxError = .infinity
        }
        // No tolerance: the encoder keeps the min/max candidate unless it beats it by a relative
        // 2^-30, far more than any difference in summation order could undo.
        #expect(oursError <= minMaxError, "range search lost to min/max", sourceLocation: sourceLocation)

        // Nearest-code rounding: |decoded − x| ≤ scale/2 for x inside [bias, bias + levels·scale],
        // plus the decode's two Float roundings (½ ulp each of a result no larger than `top`) and
        // a relative 1e-9 of the step for the Double reciprocal used to choose codes.
        let top = Swift.max(ours.bias.magnitude, (ours.bias + Float(Codec.testLevels) * ours.scale).magnitude)
        let slack = 2 * top.ulp + ours.scale * 1e-9
        let rangeEnd = Double(ours.bias) + Double(Codec.testLevels) * Double(ours.scale)
        for index in row.indices where Double(row[index]) >= Double(ours.bias) && Double(row[index]) <= rangeEnd {
            let error = (ours.decoded[index] - row[index]).magnitude
            #expect(error <= ours.scale / 2 + Swift.max(slack, row[index].ulp * 2),
                    "value \(row[index]) at \(index) decoded to \(ours.decoded[index]) with scale \(ours.scale)",
                    sourceLocation: sourceLocation)
        }
        return (oursError, minMaxError)
    }

    /// Rows of every distribution at `dimension`: bitwise agreement of the decoders, finite
    /// values, and never worse than min/max.
    static func checkRandomRows<Codec: RowwiseCodecUnderTest>(_ codec: Codec.Type, dimension: Int, seed: UInt64) throws {
        var generator = Fixtures.Generator(seed: seed &+ UInt64(dimension))
        let rowsPerDistribution = dimension >= 1024 ? 4 : 12
        for distribution in Fixtures.Distribution.allCases {
            for _ in 0..<rowsPerDistribution {
                let row = Fixtures.row(distribution, dimension: dimension, using: &generator)
                try compareWithMinMax(codec, row)
            }
        }
    }

    /// Mean over `count` Gaussian rows of MSE(ours) / MSE(min/max).
    static func meanGaussianErrorRatio<Codec: RowwiseCodecUnderTest>(_ codec: Codec.Type, dimension: Int, count: Int) throws -> Double {
        var generator = Fixtures.Generator(seed: 0x6A55)
        var sum = 0.0
        for _ in 0..<count {
            let row = Fixtures.row(.gaussian, dimension: dimension, using: &generator)
            let (ours, minMax) = try compareWithMinMax(codec, row)
            sum += ours / minMax
        }
        return sum / Double(count)
    }

    /// Constant rows, including ±0, extremes and subnormals, come back exactly (scale 0, codes 0).
    static func checkConstantRows<Codec: RowwiseCodecUnderTest>(_ codec: Codec.Type) throws {
        let values: [Float] = [0, -0.0, 1.5, -7, 3e38, -.greatestFiniteMagnitude, 1e-38, .leastNonzeroMagnitude]
        for value in values {
            for dimension in [1, 2, 7, 64] {
                let row = [Float](repeating: value, count: dimension)
                for minMax in [false, true] {
                    let encoded = try encode(codec, row, minMax: minMax)
                    // == rather than bitwise: 0·0 + (−0) is +0, equal in value to −0.
                    #expect(encoded.decoded == row, "constant \(value) ×\(dimension)")
                    #expect(encoded.scale == 0 && encoded.bias == value)
                    #expect(encoded.payload[..<Codec.testCodeBytes(dimension: dimension)].allSatisfy { $0 == 0 })
                }
            }
        }
    }

    /// Rows near Float's limits decode to finite values; where min/max itself overflows, it
    /// refuses with `outOfRange` while the range search still succeeds.
    static func checkExtremes<Codec: RowwiseCodecUnderTest>(_ codec: Codec.Type, name: String) throws {
        var generator = Fixtures.Generator(seed: 0xE87)
        let huge = Float.greatestFiniteMagnitude
        let spanning: [[Float]] = [
            [3e38, -3e38],
            [huge, -huge],
            [-huge, 0, 1, huge],
            [3e38, -3e38, 1, 2, 3, -1, 0.5],
            [huge, -1e37],
            (0..<64).map { _ in Fixtures.gaussian(using: &generator) * 2e38 }.map { Swift.min(Swift.max($0, -huge), huge) },
        ]
        for row in spanning {
            _ = try encode(codec, row) // finiteness and decoder agreement checked inside
            let error = #expect(throws: CodecError.self) { _ = try encode(codec, row, minMax: true) }
            guard case let .outOfRange(codecName, index, value)? = error else {
                Issue.record("min/max on \(row.prefix(4)) should refuse with outOfRange, got \(String(describing: error))")
                continue
            }
            #expect(codecName == name && row[index] == value)
        }
        // Wide but representable, tiny, and mixed magnitudes: finite, and never worse than min/max.
        let representable: [[Float]] = [
            [3e38, 0, -1e30],
            [huge, huge / 2, 1],
            [huge, huge * 0.9],
            [huge, huge.nextDown],
            [-huge, -huge * 0.9, -huge * 0.95],
            [1e-38, -1e-38, 1e-38 / 2, 0, .leastNonzeroMagnitude],
            [.leastNonzeroMagnitude, 0, -.leastNonzeroMagnitude],
            [1e-38, 1e38, -2, 7],
            [3e38],
            [-3e38, -2.9e38],
            (0..<33).map { _ in Fixtures.gaussian(using: &generator) * 1e-38 },
            (0..<33).map { _ in Fixtures.gaussian(using: &generator) * 5e37 },
        ]
        for row in representable {
            try compareWithMinMax(codec, row)
        }
    }

    /// Every encoder names the first NaN or infinity.
    static func checkRefusesNonFinite<Codec: RowwiseCodecUnderTest>(_ codec: Codec.Type) {
        for bad in [Float.nan, .infinity, -.infinity] {
            for minMax in [false, true] {
                var row: [Float] = [0.5, -1, 2, 3, 4, 5, 6, 7, 8]
                row[4] = bad
                row[7] = .nan // a later bad value must not be the one reported
                let error = #expect(throws: CodecError.self) { _ = try encode(codec, row, minMax: minMax) }
                guard case let .nonFinite(index, value)? = error else {
                    Issue.record("expected nonFinite, got \(String(describing: error))")
                    continue
                }
                #expect(index == 4 && value.bitPattern == bad.bitPattern)
            }
        }
    }

    /// Wrong payload sizes and empty rows are refused before anything is written.
    static func checkMisuse<Codec: RowwiseCodecUnderTest>(_ codec: Codec.Type, name: String) {
        let row: [Float] = [1, 2, 3, 4, 5]
        let expected = Codec.payloadSize(dimension: row.count)
        for size in [0, expected - 1, expected + 1] {
            var payload = [UInt8](repeating: 0, count: size)
            for minMax in [false, true] {
                #expect(throws: CodecError.badPayloadSize(codec: name, expected: expected, actual: size)) {
                    try row.withUnsafeBufferPointer { row in
                        try payload.withUnsafeMutableBytes {
                            if minMax { try Codec.encodeMinMax(row, into: $0) } else { try Codec.encode(row, into: $0) }
                        }
                    }
                }
            }
        }
        var payload = [UInt8](repeating: 0, count: Codec.payloadSize(dimension: 0))
        #expect(throws: CodecError.self) {
            try [Float]().withUnsafeBufferPointer { row in
                try payload.withUnsafeMutableBytes { try Codec.encode(row, into: $0) }
            }
        }
    }
}
