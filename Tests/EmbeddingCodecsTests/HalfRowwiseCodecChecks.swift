import CEmbeddingKernels
import EmbeddingCodecs
import Testing

/// What the shared checks need from Int4HalfRowwiseCodec and Int2HalfRowwiseCodec.
protocol HalfRowwiseCodecUnderTest {
    /// Highest code (15 or 3).
    static var testLevels: Int { get }
    /// Codec name in errors.
    static var testName: String { get }
    /// Bytes of codes before scale and bias.
    static func testCodeBytes(dimension: Int) -> Int
    /// Code of element `index` read from the payload as FORMAT.md says.
    static func testCode(_ payload: [UInt8], _ index: Int) -> Int
    static func payloadSize(dimension: Int) -> Int
    static func decodesFinite(_ payload: UnsafeRawPointer, dimension: Int) -> Bool
    static func encode(_ row: UnsafeBufferPointer<Float>, into payload: UnsafeMutableRawBufferPointer) throws(CodecError)
    static func encodeMinMax(_ row: UnsafeBufferPointer<Float>, into payload: UnsafeMutableRawBufferPointer) throws(CodecError)
    static func decode(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>)
    static func decodeReference(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>)
    /// The C kernels besides the dispatching one-row decoder: its portable twin and both run
    /// decoders (dispatched and portable), each given a run of one row.
    static var testOtherDecoders: [(String, (UnsafeRawPointer, UnsafeMutablePointer<Float>, Int) -> Void)] { get }
    static var descriptor: any RowCodec { get }
}

extension Int4HalfRowwiseCodec: HalfRowwiseCodecUnderTest {
    static var testLevels: Int { 15 }
    static var testName: String { "int4h" }
    static func testCodeBytes(dimension: Int) -> Int { (dimension + 1) / 2 }
    static func testCode(_ payload: [UInt8], _ index: Int) -> Int { Int(payload[index / 2] >> (4 * UInt8(index & 1)) & 0x0F) }
    static var testOtherDecoders: [(String, (UnsafeRawPointer, UnsafeMutablePointer<Float>, Int) -> Void)] {
        [("portable", { emb_i4_rowwise_sbhalf_decode_portable($0, $1, $2) }),
         ("rows", { p, out, d in var one: UnsafeRawPointer? = p; emb_i4_rowwise_sbhalf_decode_rows(&one, out, 1, d) }),
         ("rows portable", { p, out, d in var one: UnsafeRawPointer? = p; emb_i4_rowwise_sbhalf_decode_rows_portable(&one, out, 1, d) })]
    }
}

extension Int2HalfRowwiseCodec: HalfRowwiseCodecUnderTest {
    static var testLevels: Int { 3 }
    static var testName: String { "int2h" }
    static func testCodeBytes(dimension: Int) -> Int { (dimension + 3) / 4 }
    static func testCode(_ payload: [UInt8], _ index: Int) -> Int { Int(payload[index / 4] >> (2 * UInt8(index & 3)) & 0x03) }
    static var testOtherDecoders: [(String, (UnsafeRawPointer, UnsafeMutablePointer<Float>, Int) -> Void)] {
        [("portable", { emb_i2_rowwise_sbhalf_decode_portable($0, $1, $2) }),
         ("rows", { p, out, d in var one: UnsafeRawPointer? = p; emb_i2_rowwise_sbhalf_decode_rows(&one, out, 1, d) }),
         ("rows portable", { p, out, d in var one: UnsafeRawPointer? = p; emb_i2_rowwise_sbhalf_decode_rows_portable(&one, out, 1, d) })]
    }
}

/// Checks shared by the int4h and int2h suites.
enum HalfRowwiseCodecChecks {
    typealias Fixtures = CodecFixtures

    /// The awkward sizes of the half-parameter kernels: besides CodecFixtures.dimensions, 4 and 5
    /// (one full int2 byte, and one past it).
    static let dimensions = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 1024]

    /// Binary16 bits to Float, written here from IEEE 754 independently of the code under test.
    static func half(_ bits: UInt16) -> Float {
        let sign: Float = bits & 0x8000 != 0 ? -1 : 1
        let exponent = Int(bits >> 10 & 0x1F), mantissa = Float(bits & 0x3FF)
        if exponent == 0 { return sign * mantissa * 0x1p-24 }
        precondition(exponent != 0x1F, "only finite halves here")
        return sign * (1 + mantissa / 1024) * Float(sign: .plus, exponent: exponent - 15, significand: 1)
    }

    /// One encoded row as a reader sees it.
    struct Encoded {
        var payload: [UInt8]
        var decoded: [Float]
        var scaleBits: UInt16
        var biasBits: UInt16
        var scale: Float { HalfRowwiseCodecChecks.half(scaleBits) }
        var bias: Float { HalfRowwiseCodecChecks.half(biasBits) }
    }

    /// Encodes `row` (range search, or the min/max rule) into a misaligned payload with guard
    /// bytes, decodes it with the dispatching kernel, the Swift reference, the portable twin and
    /// both run decoders, and checks that all agree bit for bit, that every value is finite, and
    /// that the reference is q·scale + bias computed here from the bytes.
    static func encode<Codec: HalfRowwiseCodecUnderTest>(
        _ codec: Codec.Type, _ row: [Float], minMax: Bool = false,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> Encoded {
        let d = row.count
        return try Fixtures.withMisalignedPayload(byteCount: Codec.payloadSize(dimension: d), sourceLocation: sourceLocation) { payload in
            try row.withUnsafeBufferPointer { row in
                if minMax { try Codec.encodeMinMax(row, into: payload) } else { try Codec.encode(row, into: payload) }
            }
            let source = UnsafeRawBufferPointer(payload)
            let reference = Fixtures.decodeGuarded(dimension: d, sourceLocation: sourceLocation) { Codec.decodeReference(source, into: $0) }
            let fast = Fixtures.decodeGuarded(dimension: d, sourceLocation: sourceLocation) { Codec.decode(source, into: $0) }
            // Decoding is a multiply then an add in Float everywhere, never fused: bitwise equal.
            #expect(Fixtures.bitPatterns(fast) == Fixtures.bitPatterns(reference), "fast decode differs from reference", sourceLocation: sourceLocation)
            for (name, kernel) in Codec.testOtherDecoders {
                let other = Fixtures.decodeGuarded(dimension: d, sourceLocation: sourceLocation) { kernel(source.baseAddress!, $0.baseAddress!, d) }
                #expect(Fixtures.bitPatterns(other) == Fixtures.bitPatterns(reference), "\(name) decode differs from reference", sourceLocation: sourceLocation)
            }
            #expect(fast.allSatisfy { $0.isFinite }, "decoded a non-finite value", sourceLocation: sourceLocation)
            #expect(Codec.decodesFinite(source.baseAddress!, dimension: d), sourceLocation: sourceLocation)
            let bytes = Array(source)
            let codeBytes = Codec.testCodeBytes(dimension: d)
            let encoded = Encoded(payload: bytes, decoded: fast,
                                  scaleBits: UInt16(bytes[codeBytes]) | UInt16(bytes[codeBytes + 1]) << 8,
                                  biasBits: UInt16(bytes[codeBytes + 2]) | UInt16(bytes[codeBytes + 3]) << 8)
            let byHand = (0..<d).map { Float(Codec.testCode(bytes, $0)) * encoded.scale + encoded.bias }
            #expect(Fixtures.bitPatterns(byHand) == Fixtures.bitPatterns(reference), "reference differs from FORMAT.md's rule", sourceLocation: sourceLocation)
            #expect(encoded.scale >= 0, "negative scale", sourceLocation: sourceLocation)
            return encoded
        }
    }

    /// The range-searching encoder against the min/max rule on rounded parameters: never a
    /// higher squared error, and inside its chosen range no value off by more than half a step
    /// (codes are chosen against the stored halves). Returns both squared errors.
    @discardableResult
    static func compareWithMinMax<Codec: HalfRowwiseCodecUnderTest>(
        _ codec: Codec.Type, _ row: [Float], sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> (ours: Double, minMax: Double) {
        let ours = try encode(codec, row, sourceLocation: sourceLocation)
        let minMax = try encode(codec, row, minMax: true, sourceLocation: sourceLocation)
        let oursError = Fixtures.squaredError(ours.decoded, row), minMaxError = Fixtures.squaredError(minMax.decoded, row)
        // No tolerance: the encoder keeps the min/max candidate unless it beats it by a relative
        // 2^-30, far more than any difference in summation order could undo.
        #expect(oursError <= minMaxError, "range search lost to min/max: \(oursError) > \(minMaxError)", sourceLocation: sourceLocation)

        // The min/max rule's parameters are the nearest halves to min and (max − bias)/levels.
        let low = row.min()!
        #expect(isNearestHalf(minMax.biasBits, to: Double(low)), "min/max bias \(minMax.bias) for min \(low)", sourceLocation: sourceLocation)

        // Nearest-code rounding: |decoded − x| ≤ scale/2 for x inside [bias, bias + levels·scale],
        // plus the decode's two Float roundings (½ ulp each of a result no larger than `top`) and
        // a relative 1e-9 of the step for the Double reciprocal used to choose codes.
        for encoded in [ours, minMax] {
            let top = Swift.max(encoded.bias.magnitude, (encoded.bias + Float(Codec.testLevels) * encoded.scale).magnitude)
            let slack = 2 * top.ulp + encoded.scale * 1e-9
            let rangeEnd = Double(encoded.bias) + Double(Codec.testLevels) * Double(encoded.scale)
            for index in row.indices where Double(row[index]) >= Double(encoded.bias) && Double(row[index]) <= rangeEnd {
                let error = (encoded.decoded[index] - row[index]).magnitude
                #expect(error <= encoded.scale / 2 + Swift.max(slack, row[index].ulp * 2),
                        "value \(row[index]) at \(index) decoded to \(encoded.decoded[index]) with scale \(encoded.scale)",
                        sourceLocation: sourceLocation)
            }
        }
        return (oursError, minMaxError)
    }

    /// True when `bits` is a nearest half to `x` (saturated at ±65504).
    static func isNearestHalf(_ bits: UInt16, to x: Double) -> Bool {
        let value = Double(half(bits))
        if x.magnitude >= 65504 { return value == (x < 0 ? -65504 : 65504) }
        let magnitude = Int(bits & 0x7FFF)
        let neighbours = [magnitude - 1, magnitude + 1].filter { $0 >= 0 && $0 <= 0x7BFF }.map {
            Double(half(UInt16($0) | (bits & 0x8000)))
        }
        let opposite = magnitude == 0 ? [] : [Double(half(bits ^ 0x8000))]
        return (neighbours + opposite).allSatisfy { ($0 - x).magnitude >= (value - x).magnitude }
    }

    /// Rows of every distribution at `dimension`: bitwise agreement of the decoders, finite
    /// values, and never worse than min/max.
    static func checkRandomRows<Codec: HalfRowwiseCodecUnderTest>(_ codec: Codec.Type, dimension: Int, seed: UInt64) throws {
        var generator = Fixtures.Generator(seed: seed &+ UInt64(dimension))
        let rowsPerDistribution = dimension >= 1024 ? 4 : 12
        for distribution in Fixtures.Distribution.allCases {
            for _ in 0..<rowsPerDistribution {
                let row = Fixtures.row(distribution, dimension: dimension, using: &generator)
                try compareWithMinMax(codec, row)
            }
        }
    }

    /// Mean over `count` Gaussian rows of MSE(ours) / MSE(min/max on rounded parameters).
    static func meanGaussianErrorRatio<Codec: HalfRowwiseCodecUnderTest>(_ codec: Codec.Type, dimension: Int, count: Int) throws -> Double {
        var generator = Fixtures.Generator(seed: 0x6A55)
        var sum = 0.0
        for _ in 0..<count {
            let row = Fixtures.row(.gaussian, dimension: dimension, using: &generator)
            let (ours, minMax) = try compareWithMinMax(codec, row)
            sum += ours / minMax
        }
        return sum / Double(count)
    }

    /// Constant rows whose value is a half come back exactly (scale 0, codes 0, bias the value);
    /// others come back finite, no worse than min/max.
    static func checkConstantRows<Codec: HalfRowwiseCodecUnderTest>(_ codec: Codec.Type) throws {
        let halves: [Float] = [0, -0.0, 1.5, -7, 65504, -65504, 60000, 0x1p-24, -0x1p-14, 0.333251953125]
        for value in halves {
            for dimension in [1, 2, 5, 7, 64] {
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
        // Not halves: 0.1, 1/3, 1e-6 (below the smallest normal half), 65519, values beyond
        // 65504, Float's extremes.
        let others: [Float] = [0.1, 1.0 / 3, 1e-6, -1e-6, 65519, 70000, -70000, 1e6, 3e38, -.greatestFiniteMagnitude, 1e-38]
        for value in others {
            for dimension in [1, 3, 64] {
                let row = [Float](repeating: value, count: dimension)
                let (ours, minMax) = try compareWithMinMax(codec, row)
                // The nearest half as bias is one candidate: within half a half's step, where
                // there is one.
                if value.magnitude < 65504 {
                    let ulp = Double(Swift.max(value.magnitude, 0x1p-14)) * 0x1p-10
                    #expect(ours / Double(dimension) <= (ulp / 2) * (ulp / 2), "constant \(value): \(ours) (min/max \(minMax))")
                }
            }
        }
        // 1e5 is 65504 + 34496, and 34496 is a half: the code-1 candidate reaches it exactly.
        let beyond = try encode(codec, [Float](repeating: 100_000, count: 9))
        #expect(beyond.decoded.allSatisfy { $0 == 100_000 }, "\(beyond.decoded)")
    }

    /// Rows at and beyond fp16's limits, and tiny rows, decode finite and never worse than
    /// min/max on rounded (saturated) parameters.
    static func checkExtremes<Codec: HalfRowwiseCodecUnderTest>(_ codec: Codec.Type) throws {
        var generator = Fixtures.Generator(seed: 0xE87)
        let huge = Float.greatestFiniteMagnitude
        var rows: [[Float]] = [
            [60000, -60000],
            [60000, -60000, 1, 2, 3, -1, 0.5],
            [65504, -65504, 0, 17],
            [65519, -65519],
            [60000, 60001, 60002, 60010],                 // far from zero, narrow: a half's step is 32 there
            [-60000, -59990.5, -59999, -59980.25],
            [1e-6, -1e-6, 5e-7, 0, 2e-6],                // below the smallest normal half (6.1e-5)
            [1e-6, 2e-6, 3e-6, 4e-6, 5e-6, 6e-6, 7e-6],
            [1e-6, 60000, -3, 7],                         // mixed magnitudes
            [0x1p-24, 0, -0x1p-24],
            // Beyond ±65504: clipped, finite.
            [70000, -70000],
            [0, 1e6],
            [-1e6, 0],
            [1e5, 1.1e5, 1.2e5],
            [3e38, -3e38, 1, 2],
            [huge, -huge],
            [huge, huge.nextDown],
        ]
        for d in [5, 33, 100] {
            rows.append((0..<d).map { _ in Fixtures.gaussian(using: &generator) * 30000 })
            rows.append((0..<d).map { _ in Fixtures.gaussian(using: &generator) * 1e-6 })
            rows.append((0..<d).map { _ in 60000 + Fixtures.gaussian(using: &generator) * 3 })
            rows.append((0..<d).map { i in i % 3 == 0 ? Fixtures.gaussian(using: &generator) * 50000 : Fixtures.gaussian(using: &generator) * 1e-4 })
            rows.append((0..<d).map { _ in Fixtures.gaussian(using: &generator) * 1e6 })
        }
        for row in rows {
            try compareWithMinMax(codec, row)
        }
        // Inside ±65504, min/max's bias is the nearest half to the minimum: values there are
        // not clipped by more than half a half's step of it.
        let inside = try encode(codec, [60000, -60000], minMax: true)
        #expect(inside.decoded.first { $0 < -60000 - 16 } == nil && inside.bias == -60000)
        // Beyond: the bias saturates at −65504, and no value decodes below it.
        let wide = try encode(codec, [3e38, -3e38, 1, 2], minMax: true)
        #expect(wide.bias == -65504 && wide.scale == 65504)
        #expect(wide.decoded.allSatisfy { $0 >= -65504 && $0.isFinite })
    }

    /// Every encoder names the first NaN or infinity.
    static func checkRefusesNonFinite<Codec: HalfRowwiseCodecUnderTest>(_ codec: Codec.Type) {
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
    static func checkMisuse<Codec: HalfRowwiseCodecUnderTest>(_ codec: Codec.Type) {
        let row: [Float] = [1, 2, 3, 4, 5]
        let expected = Codec.payloadSize(dimension: row.count)
        for size in [0, expected - 1, expected + 1] {
            var payload = [UInt8](repeating: 0, count: size)
            for minMax in [false, true] {
                #expect(throws: CodecError.badPayloadSize(codec: Codec.testName, expected: expected, actual: size)) {
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

    /// Unused high bits of the last code byte are written 0, and every decoder ignores them.
    static func checkUnusedBits<Codec: HalfRowwiseCodecUnderTest>(_ codec: Codec.Type, dimension: Int, unusedMask: UInt8) throws {
        var generator = Fixtures.Generator(seed: 0x0DD &+ UInt64(dimension))
        let row = Fixtures.row(.gaussian, dimension: dimension, using: &generator)
        let encoded = try encode(codec, row)
        let last = Codec.testCodeBytes(dimension: dimension) - 1
        #expect(encoded.payload[last] & unusedMask == 0)
        var dirty = encoded.payload
        dirty[last] |= unusedMask
        Fixtures.withMisalignedPayload(byteCount: dirty.count) { payload in
            payload.copyBytes(from: dirty)
            let source = UnsafeRawBufferPointer(payload)
            for (name, decode) in [("reference", Codec.decodeReference), ("fast", Codec.decode)] {
                let decoded = Fixtures.decodeGuarded(dimension: dimension) { decode(source, $0) }
                #expect(Fixtures.bitPatterns(decoded) == Fixtures.bitPatterns(encoded.decoded), "\(name) d=\(dimension)")
            }
            for (name, kernel) in Codec.testOtherDecoders {
                let decoded = Fixtures.decodeGuarded(dimension: dimension) { kernel(source.baseAddress!, $0.baseAddress!, dimension) }
                #expect(Fixtures.bitPatterns(decoded) == Fixtures.bitPatterns(encoded.decoded), "\(name) d=\(dimension)")
            }
        }
    }

    /// A payload whose scale or bias is infinite or NaN is caught by `decodesFinite` (which looks
    /// at nothing else), and the registered codec's decoder refuses it (in a run, and when
    /// accumulating) and names the problem.
    static func checkNonFiniteParameters<Codec: HalfRowwiseCodecUnderTest>(_ codec: Codec.Type, dimension d: Int) throws {
        var generator = Fixtures.Generator(seed: 0xF1 &+ UInt64(d))
        let row = Fixtures.row(.gaussian, dimension: d, using: &generator)
        let good = try encode(codec, row).payload
        let codeBytes = Codec.testCodeBytes(dimension: d)
        let decoder = Codec.descriptor.makeDecoder(dimension: d)
        let table = InMemoryCodecTable(dimension: d)
        // 7c00 +inf, fc00 −inf, 7e00 quiet NaN, 7c01 signalling NaN, 7fff NaN with every bit.
        for special: UInt16 in [0x7C00, 0xFC00, 0x7E00, 0x7C01, 0x7FFF] {
            for field in [0, 2] {
                var bad = good
                bad[codeBytes + field] = UInt8(special & 0xFF)
                bad[codeBytes + field + 1] = UInt8(special >> 8)
                let records = [good, bad, good].map { [Codec.descriptor.tag] + $0 }
                bad.withUnsafeBytes { #expect(!Codec.decodesFinite($0.baseAddress!, dimension: d), "\(special) at \(field)") }
                let (decoded, accumulated, problem) = withRecords(records) { buffers in
                    var out = [Float](repeating: 0, count: 3 * d)
                    let decoded = out.withUnsafeMutableBufferPointer {
                        (try? decoder.decode(buffers.baseAddress!, count: 3, into: $0.baseAddress!, parameters: table)) ?? -1
                    }
                    var acc = [Float](repeating: 0, count: d)
                    let accumulated = acc.withUnsafeMutableBufferPointer {
                        (try? decoder.accumulate(buffers.baseAddress!, weights: nil, count: 3, into: $0.baseAddress!, parameters: table)) ?? -1
                    }
                    return (decoded, accumulated, decoder.problem(with: buffers[1], parameters: table))
                }
                #expect(decoded == 1 && accumulated == 1, "\(special) at \(field): refused at \(decoded), \(accumulated)")
                #expect(problem.contains("non-finite"), "\(problem)")
            }
        }
        // Large finite halves are fine: the worst row, 15 (or 3) × 65504 + 65504, is finite.
        var largest = good
        for field in [0, 2] { largest[codeBytes + field] = 0xFF; largest[codeBytes + field + 1] = 0x7B }
        for i in 0..<codeBytes { largest[i] = 0xFF }
        largest.withUnsafeBytes { #expect(Codec.decodesFinite($0.baseAddress!, dimension: d)) }
        let decoded = withRecords([[Codec.descriptor.tag] + largest]) { buffers in
            var out = [Float](repeating: 0, count: d)
            let count = out.withUnsafeMutableBufferPointer {
                (try? decoder.decode(buffers.baseAddress!, count: 1, into: $0.baseAddress!, parameters: table)) ?? -1
            }
            return count == 1 ? out : []
        }
        #expect(decoded == [Float](repeating: Float(Codec.testLevels + 1) * 65504, count: d))
    }

    /// Runs `body` with the records as buffers, each at an odd address.
    static func withRecords<R>(_ records: [[UInt8]], _ body: (UnsafeMutableBufferPointer<UnsafeRawBufferPointer>) -> R) -> R {
        let total = records.reduce(0) { $0 + $1.count + 1 } + 1
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 16)
        defer { storage.deallocate() }
        var buffers: [UnsafeRawBufferPointer] = []
        var at = 1
        for record in records {
            let slice = UnsafeMutableRawBufferPointer(rebasing: storage[at..<at + record.count])
            slice.copyBytes(from: record)
            buffers.append(UnsafeRawBufferPointer(slice))
            at += record.count + 1
        }
        return buffers.withUnsafeMutableBufferPointer { body($0) }
    }
}
