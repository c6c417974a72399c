import EmbeddingCodecs
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Shared fixtures for the fp32 / fp16 / int8 / int4 codec tests: seeded rows, misaligned
/// payload buffers with guard bytes, and error measures. Namespaced so that other test files
/// in this target cannot collide with these names.
enum CodecFixtures {
    /// Awkward sizes that hit every vector-body / tail combination of the kernels (8-wide AVX2
    /// bodies, 16- and 32-element int4 bodies, odd int4 rows).
    static let dimensions = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 1024]

    /// Byte offset of a payload inside its buffer: odd, so every multi-byte field is misaligned,
    /// as LMDB values (2-byte aligned) can be and worse.
    static let misalignment = 3

    /// Bytes of 0xA5 on either side of a payload, and floats of a NaN pattern on either side of
    /// an output row, that must survive every encode and decode untouched.
    static let guardBytes = 16
    static let guardFloats = 8
    static let guardPattern: UInt8 = 0xA5
    static let guardFloatBits: UInt32 = 0x7FC0_1234

    // MARK: - Seeded randomness

    /// SplitMix64: small, fast, and the same sequence on every platform for a given seed.
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Row shapes the rowwise codecs must handle.
    enum Distribution: String, CaseIterable, CustomStringConvertible {
        /// N(0, 1), the usual shape of a trained embedding row.
        case gaussian
        /// Gaussian with a random per-element scale (Student-t-like tails) and one outlier of
        /// 10×: the case range clipping is for.
        case heavyTailed
        /// U(a, b) with a random offset and width, including rows far from zero.
        case uniform

        var description: String { rawValue }
    }

    static func gaussian(using generator: inout Generator) -> Float {
        // Box–Muller; u1 > 0 keeps the logarithm finite.
        let u1 = Double.random(in: Double.ulpOfOne..<1, using: &generator)
        let u2 = Double.random(in: 0..<1, using: &generator)
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    static func row(_ distribution: Distribution, dimension: Int, using generator: inout Generator) -> [Float] {
        switch distribution {
        case .gaussian:
            return (0..<dimension).map { _ in gaussian(using: &generator) }
        case .heavyTailed:
            var row = (0..<dimension).map { _ in
                gaussian(using: &generator) / Float.random(in: 0.05...1, using: &generator)
            }
            row[Int.random(in: 0..<dimension, using: &generator)] *= 10
            return row
        case .uniform:
            let low = Float.random(in: -100...100, using: &generator)
            let width = Float.random(in: 0.001...10, using: &generator)
            return (0..<dimension).map { _ in low + width * Float.random(in: 0...1, using: &generator) }
        }
    }

    /// Floats over many binades, both signs, with zeros and subnormals: for lossless fp32 checks.
    static func wideRow(dimension: Int, using generator: inout Generator) -> [Float] {
        (0..<dimension).map { index in
            switch index % 7 {
            case 0: return Float(bitPattern: UInt32.random(in: 0...0x7F7F_FFFF, using: &generator)) // any finite ≥ 0
            case 1: return -Float(bitPattern: UInt32.random(in: 0...0x007F_FFFF, using: &generator)) // subnormal
            case 2: return index % 2 == 0 ? 0 : -0.0
            default: return gaussian(using: &generator) * 1000
            }
        }
    }

    // MARK: - Buffers

    /// Runs `body` with a payload of `byteCount` bytes at an odd offset inside a larger buffer,
    /// surrounded by guard bytes; returns the body's result and checks the guards afterwards.
    static func withMisalignedPayload<Result>(
        byteCount: Int,
        sourceLocation: SourceLocation = #_sourceLocation,
        _ body: (UnsafeMutableRawBufferPointer) throws -> Result
    ) rethrows -> Result {
        let total = misalignment + guardBytes + byteCount + guardBytes
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 16)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: guardPattern)
        let start = misalignment + guardBytes
        let payload = UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + byteCount)])
        let result = try body(payload)
        // Nothing may be written outside the payload.
        let outside = buffer[..<start].allSatisfy { $0 == guardPattern }
            && buffer[(start + byteCount)...].allSatisfy { $0 == guardPattern }
        #expect(outside, "a codec wrote outside its payload", sourceLocation: sourceLocation)
        return result
    }

    /// Decodes with `decode` into a row surrounded by guard floats; checks the guards and returns
    /// the row.
    static func decodeGuarded(
        dimension: Int,
        sourceLocation: SourceLocation = #_sourceLocation,
        _ decode: (UnsafeMutableBufferPointer<Float>) -> Void
    ) -> [Float] {
        var buffer = [Float](repeating: Float(bitPattern: guardFloatBits), count: guardFloats + dimension + guardFloats)
        buffer.withUnsafeMutableBufferPointer { all in
            decode(UnsafeMutableBufferPointer(rebasing: all[guardFloats..<(guardFloats + dimension)]))
        }
        let intact = buffer[..<guardFloats].allSatisfy { $0.bitPattern == guardFloatBits }
            && buffer[(guardFloats + dimension)...].allSatisfy { $0.bitPattern == guardFloatBits }
        #expect(intact, "a decoder wrote outside its row", sourceLocation: sourceLocation)
        return Array(buffer[guardFloats..<(guardFloats + dimension)])
    }

    // MARK: - Measures

    /// Sum of squared differences in Double, in index order.
    static func squaredError(_ a: [Float], _ b: [Float]) -> Double {
        var sum = 0.0
        for index in a.indices {
            let difference = Double(a[index]) - Double(b[index])
            sum += difference * difference
        }
        return sum
    }

    static func bitPatterns(_ row: [Float]) -> [UInt32] { row.map(\.bitPattern) }

    static func readFloat(_ payload: UnsafeMutableRawBufferPointer, at offset: Int) -> Float {
        Float(bitPattern: UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    }
}
