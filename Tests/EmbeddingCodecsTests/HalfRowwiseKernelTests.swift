import CEmbeddingKernels
import Testing
@testable import EmbeddingCodecs

/// The int4h / int2h run and accumulate kernels, dispatched and portable: a run of scattered,
/// misaligned payloads decodes to exactly the rows of the one-row decoder, and accumulating
/// gives exactly the floats of decoding into a scratch row and then adding.
@Suite struct HalfRowwiseKernelTests {
    typealias RowKernel = (UnsafeRawPointer, UnsafeMutablePointer<Float>, Int) -> Void
    typealias RunKernel = (UnsafePointer<UnsafeRawPointer?>, UnsafeMutablePointer<Float>, Int, Int) -> Void
    typealias AccumulateKernel = (UnsafeRawPointer, UnsafeMutablePointer<Float>, Int, Float) -> Void

    struct Kernels {
        var name: String
        var payloadSize: (Int) -> Int
        var encode: (UnsafeBufferPointer<Float>, UnsafeMutableRawBufferPointer) throws -> Void
        var decode: RowKernel
        var runs: [(String, RunKernel)]
        var accumulates: [(String, AccumulateKernel)]
    }

    static var codecs: [Kernels] { [
        Kernels(name: "int4h", payloadSize: Int4HalfRowwiseCodec.payloadSize(dimension:),
                encode: { try Int4HalfRowwiseCodec.encode($0, into: $1) },
                decode: { emb_i4_rowwise_sbhalf_decode($0, $1, $2) },
                runs: [("dispatched", { emb_i4_rowwise_sbhalf_decode_rows($0, $1, $2, $3) }),
                       ("portable", { emb_i4_rowwise_sbhalf_decode_rows_portable($0, $1, $2, $3) })],
                accumulates: [("dispatched", { emb_i4_rowwise_sbhalf_accumulate($0, $1, $2, $3) }),
                              ("portable", { emb_i4_rowwise_sbhalf_accumulate_portable($0, $1, $2, $3) })]),
        Kernels(name: "int2h", payloadSize: Int2HalfRowwiseCodec.payloadSize(dimension:),
                encode: { try Int2HalfRowwiseCodec.encode($0, into: $1) },
                decode: { emb_i2_rowwise_sbhalf_decode($0, $1, $2) },
                runs: [("dispatched", { emb_i2_rowwise_sbhalf_decode_rows($0, $1, $2, $3) }),
                       ("portable", { emb_i2_rowwise_sbhalf_decode_rows_portable($0, $1, $2, $3) })],
                accumulates: [("dispatched", { emb_i2_rowwise_sbhalf_accumulate($0, $1, $2, $3) }),
                              ("portable", { emb_i2_rowwise_sbhalf_accumulate_portable($0, $1, $2, $3) })]),
    ] }

    func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

    /// `rows` encoded rows of width `d`, one byte apart from each other's ends, in reverse order,
    /// starting at an odd address: scattered and unaligned, as records in a segment are.
    func withScatteredPayloads<R>(_ codec: Kernels, rows: Int, d: Int, seed: UInt64,
                                  _ body: ([UnsafeRawPointer?]) throws -> R) throws -> R {
        var generator = CodecFixtures.Generator(seed: seed &+ UInt64(d))
        let size = codec.payloadSize(d)
        var bytes = [UInt8](repeating: 0, count: rows * (size + 1) + 1)
        for r in 0..<rows {
            let distribution = CodecFixtures.Distribution.allCases[r % 3]
            let row = CodecFixtures.row(distribution, dimension: d, using: &generator)
            let at = 1 + (rows - 1 - r) * (size + 1)
            try row.withUnsafeBufferPointer { row in
                try bytes.withUnsafeMutableBytes { try codec.encode(row, UnsafeMutableRawBufferPointer(rebasing: $0[at..<at + size])) }
            }
        }
        return try bytes.withUnsafeBytes { b in
            try body((0..<rows).map { r in UnsafeRawPointer(b.baseAddress! + 1 + (rows - 1 - r) * (size + 1)) })
        }
    }

    func decodeOneByOne(_ codec: Kernels, _ pointers: [UnsafeRawPointer?], d: Int) -> [Float] {
        var out = [Float](repeating: .nan, count: pointers.count * d)
        out.withUnsafeMutableBufferPointer { out in
            for (r, p) in pointers.enumerated() { codec.decode(p!, out.baseAddress! + r * d, d) }
        }
        return out
    }

    @Test(arguments: HalfRowwiseCodecChecks.dimensions)
    func runKernelsMatchOneRowDecoder(d: Int) throws {
        for codec in Self.codecs {
            try withScatteredPayloads(codec, rows: 7, d: d, seed: 0x5B) { pointers in
                let expected = decodeOneByOne(codec, pointers, d: d)
                for (name, run) in codec.runs {
                    for count in [1, 2, pointers.count] { // runs of every length the decoders make
                        var got = [Float](repeating: .nan, count: count * d)
                        pointers.withUnsafeBufferPointer { p in got.withUnsafeMutableBufferPointer { run(p.baseAddress!, $0.baseAddress!, count, d) } }
                        #expect(bits(got) == bits(Array(expected[0..<count * d])), "\(codec.name) \(name) d=\(d) count=\(count)")
                    }
                }
            }
        }
    }

    @Test(arguments: HalfRowwiseCodecChecks.dimensions)
    func accumulateMatchesDecodeThenAdd(d: Int) throws {
        for codec in Self.codecs {
            try withScatteredPayloads(codec, rows: 3, d: d, seed: 0xACC) { pointers in
                let decoded = decodeOneByOne(codec, pointers, d: d)
                var generator = CodecFixtures.Generator(seed: 0xA0 &+ UInt64(d))
                let start = CodecFixtures.row(.gaussian, dimension: d, using: &generator)
                for (name, accumulate) in codec.accumulates {
                    for weight: Float in [1, 0.37, -2.5] {
                        // Three rows in turn, as an embedding bag adds them.
                        var expected = start, acc = start
                        for r in 0..<pointers.count {
                            expected = (0..<d).map { expected[$0] + weight * decoded[r * d + $0] }
                            acc.withUnsafeMutableBufferPointer { accumulate(pointers[r]!, $0.baseAddress!, d, weight) }
                        }
                        #expect(bits(acc) == bits(expected), "\(codec.name) \(name) d=\(d) weight=\(weight)")
                    }
                }
            }
        }
    }
}
