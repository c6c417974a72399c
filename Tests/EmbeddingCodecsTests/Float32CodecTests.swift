import EmbeddingCodecs
import Testing

@Suite("Float32Codec")
struct Float32CodecTests {
    typealias Fixtures = CodecFixtures

    @Test("round trip is bit exact, misaligned, fast == reference", arguments: CodecFixtures.dimensions)
    func roundTrip(dimension: Int) throws {
        var generator = Fixtures.Generator(seed: 0xF32 &+ UInt64(dimension))
        let row = Fixtures.wideRow(dimension: dimension, using: &generator)
        #expect(Float32Codec.payloadSize(dimension: dimension) == 4 * dimension)
        try Fixtures.withMisalignedPayload(byteCount: Float32Codec.payloadSize(dimension: dimension)) { payload in
            try row.withUnsafeBufferPointer { try Float32Codec.encode($0, into: payload) }
            // The payload is the little-endian bit patterns, nothing else.
            for index in row.indices {
                #expect(Fixtures.readFloat(payload, at: 4 * index).bitPattern == row[index].bitPattern)
            }
            let fast = Fixtures.decodeGuarded(dimension: dimension) { Float32Codec.decode(UnsafeRawBufferPointer(payload), into: $0) }
            let reference = Fixtures.decodeGuarded(dimension: dimension) {
                Float32Codec.decodeReference(UnsafeRawBufferPointer(payload), into: $0)
            }
            // Lossless: bitwise equality, so -0.0 and subnormals survive too.
            #expect(Fixtures.bitPatterns(fast) == Fixtures.bitPatterns(row))
            #expect(Fixtures.bitPatterns(reference) == Fixtures.bitPatterns(row))
        }
    }

    @Test("refuses NaN and ±infinity, naming the index", arguments: [Float.nan, .infinity, -.infinity, .signalingNaN])
    func refusesNonFinite(bad: Float) {
        var row: [Float] = [1, 2, 3, 4, 5, 6, 7]
        row[5] = bad
        var payload = [UInt8](repeating: 0, count: Float32Codec.payloadSize(dimension: row.count))
        let error = #expect(throws: CodecError.self) {
            try row.withUnsafeBufferPointer { row in
                try payload.withUnsafeMutableBytes { try Float32Codec.encode(row, into: $0) }
            }
        }
        // Pattern match rather than ==: NaN payloads never compare equal.
        guard case let .nonFinite(index, value) = error else {
            Issue.record("expected nonFinite, got \(String(describing: error))")
            return
        }
        #expect(index == 5)
        #expect(value.bitPattern == bad.bitPattern)
    }

    @Test("refuses a payload of the wrong size and an empty row")
    func misuse() {
        let row: [Float] = [1, 2, 3]
        for size in [0, 11, 13] {
            var payload = [UInt8](repeating: 0, count: size)
            #expect(throws: CodecError.badPayloadSize(codec: "fp32", expected: 12, actual: size)) {
                try row.withUnsafeBufferPointer { row in
                    try payload.withUnsafeMutableBytes { try Float32Codec.encode(row, into: $0) }
                }
            }
        }
        var empty: [UInt8] = []
        #expect(throws: CodecError.self) {
            try [Float]().withUnsafeBufferPointer { row in
                try empty.withUnsafeMutableBytes { try Float32Codec.encode(row, into: $0) }
            }
        }
    }
}
