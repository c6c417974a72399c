import CEmbeddingKernels
import EmbeddingCodecs
import Testing

@Suite("Float16Codec")
struct Float16CodecTests {
    typealias Fixtures = CodecFixtures

    /// Every finite binary16 value as a Float, both signs.
    static let finiteHalves: [Float] = (UInt16(0)...UInt16.max)
        .map { Float16(bitPattern: $0) }
        .filter(\.isFinite)
        .map(Float.init)

    /// Values that probe the rounding: every finite half, the exact midpoints to its upper
    /// neighbour (ties, which must go to even) and the floats on either side of each midpoint.
    static let roundingProbes: [Float] = {
        var probes: [Float] = []
        for bits in UInt16(0)..<0x7BFF { // positive finite halves below 65504
            let value = Float(Float16(bitPattern: bits)), next = Float(Float16(bitPattern: bits + 1))
            // Exact in Float: halves carry 11 significant bits, floats 24.
            let midpoint = (value + next) / 2
            for probe in [value, midpoint, midpoint.nextDown, midpoint.nextUp] {
                probes.append(probe)
                probes.append(-probe)
            }
        }
        probes.append(contentsOf: [65504, -65504, Float(65520).nextDown, -Float(65520).nextDown])
        return probes
    }()

    @Test("decode of all 65536 bit patterns: F16C == portable C == Swift's Float16 → Float")
    func exhaustiveDecode() {
        let count = 1 << 16
        Fixtures.withMisalignedPayload(byteCount: 2 * count) { payload in
            for bits in 0..<count {
                payload.storeBytes(of: UInt16(bits).littleEndian, toByteOffset: 2 * bits, as: UInt16.self)
            }
            let source = UnsafeRawBufferPointer(payload)
            let fast = Fixtures.decodeGuarded(dimension: count) { Float16Codec.decode(source, into: $0) }
            let reference = Fixtures.decodeGuarded(dimension: count) { Float16Codec.decodeReference(source, into: $0) }
            let portable = Fixtures.decodeGuarded(dimension: count) {
                emb_f16_decode_portable(source.baseAddress!, $0.baseAddress!, count)
            }
            // Widening is exact, so bitwise equality, NaN payloads included (all three quiet them).
            #expect(Fixtures.bitPatterns(fast) == Fixtures.bitPatterns(reference))
            #expect(Fixtures.bitPatterns(portable) == Fixtures.bitPatterns(reference))
        }
    }

    @Test("encode rounds to nearest even exactly as Swift's Float16(x), ties and subnormals included")
    func encodeMatchesSwift() throws {
        let probes = Self.roundingProbes
        let expected = probes.map { Float16($0).bitPattern }
        try Fixtures.withMisalignedPayload(byteCount: Float16Codec.payloadSize(dimension: probes.count)) { payload in
            try probes.withUnsafeBufferPointer { try Float16Codec.encode($0, into: payload) }
            let fast = (0..<probes.count).map { UInt16(littleEndian: payload.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)) }
            #expect(fast == expected)
        }
        // The portable kernel too, including values that overflow (the codec refuses those
        // before calling it; the kernel itself must round them to infinity, as IEEE says).
        let beyond: [Float] = [65520, -65520, 70000, 1e6, .greatestFiniteMagnitude, .infinity, -.infinity]
        let all = probes + beyond
        var bytes = [UInt8](repeating: 0, count: 2 * all.count)
        all.withUnsafeBufferPointer { source in
            bytes.withUnsafeMutableBytes { emb_f16_encode_portable(source.baseAddress!, $0.baseAddress!, all.count) }
        }
        let portable = (0..<all.count).map { UInt16(bytes[2 * $0]) | UInt16(bytes[2 * $0 + 1]) << 8 }
        #expect(portable == all.map { Float16($0).bitPattern })
    }

    @Test("round trip equals Float(Float16(x)), misaligned, fast == reference", arguments: CodecFixtures.dimensions)
    func roundTrip(dimension: Int) throws {
        var generator = Fixtures.Generator(seed: 0xF16 &+ UInt64(dimension))
        // Gaussian rows at a few magnitudes, so normal, subnormal and zero halves all occur.
        let magnitude = [1e-6, 1e-3, 1, 100, 10_000][dimension % 5] as Float
        let row = (0..<dimension).map { _ in Fixtures.gaussian(using: &generator) * magnitude }
            .map { Swift.min(Swift.max($0, -65504), 65504) }
        #expect(Float16Codec.payloadSize(dimension: dimension) == 2 * dimension)
        try Fixtures.withMisalignedPayload(byteCount: Float16Codec.payloadSize(dimension: dimension)) { payload in
            try row.withUnsafeBufferPointer { try Float16Codec.encode($0, into: payload) }
            let fast = Fixtures.decodeGuarded(dimension: dimension) { Float16Codec.decode(UnsafeRawBufferPointer(payload), into: $0) }
            let reference = Fixtures.decodeGuarded(dimension: dimension) {
                Float16Codec.decodeReference(UnsafeRawBufferPointer(payload), into: $0)
            }
            // Exact: the codec's result is defined as IEEE round-to-nearest-even, which
            // Swift's Float16 initialiser implements.
            #expect(Fixtures.bitPatterns(fast) == Fixtures.bitPatterns(row.map { Float(Float16($0)) }))
            #expect(Fixtures.bitPatterns(fast) == Fixtures.bitPatterns(reference))
        }
    }

    @Test("accepts the largest finite values, refuses what would round to infinity")
    func range() throws {
        func encode(_ row: [Float]) throws -> [Float] {
            var payload = [UInt8](repeating: 0, count: Float16Codec.payloadSize(dimension: row.count))
            try row.withUnsafeBufferPointer { row in
                try payload.withUnsafeMutableBytes { try Float16Codec.encode(row, into: $0) }
            }
            return Fixtures.decodeGuarded(dimension: row.count) { out in
                payload.withUnsafeBytes { Float16Codec.decode($0, into: out) }
            }
        }
        // 65519.996 is the largest float that rounds to a finite half (65504).
        #expect(try encode([65504, -65504, Float(65520).nextDown, 0]) == [65504, -65504, 65504, 0])
        #expect(throws: CodecError.outOfRange(codec: "fp16", index: 2, value: 70000)) { try encode([1, 2, 70000, 4]) }
        #expect(throws: CodecError.outOfRange(codec: "fp16", index: 0, value: -1e6)) { try encode([-1e6, 2]) }
        #expect(throws: CodecError.outOfRange(codec: "fp16", index: 1, value: 65520)) { try encode([0, 65520]) }
        #expect(throws: CodecError.outOfRange(codec: "fp16", index: 1, value: -65520)) { try encode([0, -65520]) }
        #expect(throws: CodecError.nonFinite(index: 1, value: .infinity)) { try encode([0, .infinity]) }
        let error = #expect(throws: CodecError.self) { try encode([0, 0, .nan]) }
        guard case let .nonFinite(index, value) = error else {
            Issue.record("expected nonFinite, got \(String(describing: error))")
            return
        }
        #expect(index == 2 && value.isNaN)
        // Tiny values become subnormal or zero, as IEEE says (2^-24 is the smallest subnormal).
        #expect(try encode([1e-8, 3e-8, -1e-5]) == [0, 0x1p-24, Float(Float16(-1e-5 as Float))])
    }

    @Test("refuses a payload of the wrong size")
    func badSize() {
        var payload = [UInt8](repeating: 0, count: 5)
        #expect(throws: CodecError.badPayloadSize(codec: "fp16", expected: 6, actual: 5)) {
            try [Float](repeating: 1, count: 3).withUnsafeBufferPointer { row in
                try payload.withUnsafeMutableBytes { try Float16Codec.encode(row, into: $0) }
            }
        }
    }
}
