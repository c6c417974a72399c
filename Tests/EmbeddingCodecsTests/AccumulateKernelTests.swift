import CEmbeddingKernels
import Testing
@testable import EmbeddingCodecs

/// The pooled-lookup kernels add `weight × decode(row)` in one pass. They must give exactly the
/// floats of decoding into a scratch row and then adding, on the dispatched and the portable
/// path, at every width (vector bodies, tails, odd int4 widths).
@Suite struct AccumulateKernelTests {
    static let dimensions = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 1024]

    /// Deterministic values in ±4 with some exact zeros.
    func values(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { i in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return i % 11 == 0 ? 0 : Float(Int64(state % 80_000) - 40_000) / 10_000
        }
    }

    /// acc + weight × decoded, element by element: the reference the kernels must match.
    func reference(_ acc: [Float], _ decoded: [Float], _ weight: Float) -> [Float] {
        zip(acc, decoded).map { $0 + weight * $1 }
    }

    func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

    typealias Kernel = (UnsafeRawPointer, UnsafeMutablePointer<Float>, Int, Float) -> Void

    func check(payload: [UInt8], decoded: [Float], d: Int, kernels: [(String, Kernel)]) {
        for weight: Float in [1, 0.37, -2.5] {
            let start = values(d, seed: UInt64(d) &+ 99)
            let expected = reference(start, decoded, weight)
            for (name, kernel) in kernels {
                var acc = start
                payload.withUnsafeBytes { p in acc.withUnsafeMutableBufferPointer { kernel(p.baseAddress!, $0.baseAddress!, d, weight) } }
                #expect(bits(acc) == bits(expected), "\(name) d=\(d) weight=\(weight)")
            }
        }
    }

    @Test(arguments: dimensions) func int8MatchesDecodeThenAdd(d: Int) throws {
        let row = values(d, seed: UInt64(d))
        var payload = [UInt8](repeating: 0, count: Int8RowwiseCodec.payloadSize(dimension: d))
        try row.withUnsafeBufferPointer { r in try payload.withUnsafeMutableBytes { try Int8RowwiseCodec.encode(r, into: $0) } }
        var decoded = [Float](repeating: 0, count: d)
        payload.withUnsafeBytes { p in decoded.withUnsafeMutableBufferPointer { Int8RowwiseCodec.decode(p, into: $0) } }
        check(payload: payload, decoded: decoded, d: d, kernels: [
            ("dispatched", { emb_i8_rowwise_accumulate($0, $1, $2, $3) }),
            ("portable", { emb_i8_rowwise_accumulate_portable($0, $1, $2, $3) }),
        ])
    }

    @Test(arguments: dimensions) func int4MatchesDecodeThenAdd(d: Int) throws {
        let row = values(d, seed: UInt64(d) + 7)
        var payload = [UInt8](repeating: 0, count: Int4RowwiseCodec.payloadSize(dimension: d))
        try row.withUnsafeBufferPointer { r in try payload.withUnsafeMutableBytes { try Int4RowwiseCodec.encode(r, into: $0) } }
        var decoded = [Float](repeating: 0, count: d)
        payload.withUnsafeBytes { p in decoded.withUnsafeMutableBufferPointer { Int4RowwiseCodec.decode(p, into: $0) } }
        check(payload: payload, decoded: decoded, d: d, kernels: [
            ("dispatched", { emb_i4_rowwise_accumulate($0, $1, $2, $3) }),
            ("portable", { emb_i4_rowwise_accumulate_portable($0, $1, $2, $3) }),
        ])
    }

    /// The checked decoders lookups use write what the plain decoders write and flag a
    /// non-finite value anywhere in the row.
    @Test(arguments: dimensions) func checkedDecodersMatchPlainOnesAndFlagNonFinite(d: Int) throws {
        let row = values(d, seed: UInt64(d) + 21)
        var fp16 = [UInt8](repeating: 0, count: 2 * d)
        try row.withUnsafeBufferPointer { r in try fp16.withUnsafeMutableBytes { try Float16Codec.encode(r, into: $0) } }
        var plain16 = [Float](repeating: 0, count: d)
        fp16.withUnsafeBytes { p in plain16.withUnsafeMutableBufferPointer { Float16Codec.decode(p, into: $0) } }
        let fp32 = [UInt8(0)] + row.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        typealias Checked = (UnsafeRawPointer, UnsafeMutablePointer<Float>, Int) -> Int32
        let cases: [(String, [UInt8], Int, [Float], [Checked])] = [
            ("fp16", fp16, 0, plain16, [{ emb_f16_decode_checked($0, $1, $2) }, { emb_f16_decode_checked_portable($0, $1, $2) }]),
            ("fp32", fp32, 1, row, [{ emb_f32_decode_checked($0, $1, $2) }, { emb_f32_decode_checked_portable($0, $1, $2) }]),
        ]
        for (name, payload, skip, expected, kernels) in cases {
            for kernel in kernels {
                var out = [Float](repeating: .nan, count: d)
                let finite = payload.withUnsafeBytes { p in out.withUnsafeMutableBufferPointer { kernel(p.baseAddress! + skip, $0.baseAddress!, d) } }
                #expect(finite == 1 && bits(out) == bits(expected), "\(name) d=\(d)")
                for position in Set([0, d / 2, d - 1]) {
                    var bad = payload
                    if skip == 0 {
                        bad[2 * position] = 0x01; bad[2 * position + 1] = 0x7C          // a NaN
                    } else {
                        bad.replaceSubrange(1 + 4 * position..<5 + 4 * position,
                                            with: withUnsafeBytes(of: Float.infinity.bitPattern.littleEndian, Array.init))
                    }
                    let flagged = bad.withUnsafeBytes { p in out.withUnsafeMutableBufferPointer { kernel(p.baseAddress! + skip, $0.baseAddress!, d) } }
                    #expect(flagged == 0, "\(name) d=\(d) non-finite at \(position)")
                }
            }
        }
    }

    /// The run kernels decode scattered payloads into consecutive rows exactly as the one-row
    /// kernels do, and the fp32/fp16 ones flag a run holding a non-finite value.
    @Test(arguments: [1, 7, 8, 17, 64, 100]) func runKernelsMatchOneRowKernels(d: Int) throws {
        let rows = 5
        let values = values(rows * d, seed: UInt64(d) + 33)
        let sizes = [4 * d, 2 * d, Int8RowwiseCodec.payloadSize(dimension: d), Int4RowwiseCodec.payloadSize(dimension: d)]
        for (codec, size) in sizes.enumerated() {
            // Payloads one byte apart from each other's ends, in reverse order: scattered, unaligned.
            var bytes = [UInt8](repeating: 0, count: rows * (size + 1) + 1)
            try values.withUnsafeBufferPointer { v in
                try bytes.withUnsafeMutableBytes { b in
                    for r in 0..<rows {
                        let row = UnsafeBufferPointer(rebasing: v[r * d..<(r + 1) * d])
                        let at = 1 + (rows - 1 - r) * (size + 1)
                        let payload = UnsafeMutableRawBufferPointer(rebasing: b[at..<at + size])
                        switch codec {
                        case 0: try Float32Codec.encode(row, into: payload)
                        case 1: try Float16Codec.encode(row, into: payload)
                        case 2: try Int8RowwiseCodec.encode(row, into: payload)
                        default: try Int4RowwiseCodec.encode(row, into: payload)
                        }
                    }
                }
            }
            var expected = [Float](repeating: 0, count: rows * d)
            var got = [Float](repeating: .nan, count: rows * d)
            bytes.withUnsafeBytes { b in
                let pointers: [UnsafeRawPointer?] = (0..<rows).map { r in b.baseAddress! + 1 + (rows - 1 - r) * (size + 1) }
                expected.withUnsafeMutableBufferPointer { e in
                    for r in 0..<rows {
                        let payload = UnsafeRawBufferPointer(start: pointers[r], count: size)
                        let out = UnsafeMutableBufferPointer(rebasing: e[r * d..<(r + 1) * d])
                        switch codec {
                        case 0: Float32Codec.decode(payload, into: out)
                        case 1: Float16Codec.decode(payload, into: out)
                        case 2: Int8RowwiseCodec.decode(payload, into: out)
                        default: Int4RowwiseCodec.decode(payload, into: out)
                        }
                    }
                }
                pointers.withUnsafeBufferPointer { p in
                    got.withUnsafeMutableBufferPointer { g in
                        switch codec {
                        case 0: #expect(emb_f32_decode_checked_rows(p.baseAddress!, g.baseAddress!, rows, d) == 1)
                        case 1: #expect(emb_f16_decode_checked_rows(p.baseAddress!, g.baseAddress!, rows, d) == 1)
                        case 2: emb_i8_rowwise_decode_rows(p.baseAddress!, g.baseAddress!, rows, d)
                        default: emb_i4_rowwise_decode_rows(p.baseAddress!, g.baseAddress!, rows, d)
                        }
                    }
                }
            }
            #expect(bits(got) == bits(expected), "codec \(codec) d=\(d)")
            if codec < 2 {
                // A NaN in the last value of the middle row flags the run.
                let at = 1 + (rows - 1 - rows / 2) * (size + 1) + size - (codec == 0 ? 4 : 2)
                if codec == 0 { bytes.replaceSubrange(at..<at + 4, with: [0, 0, 0xC0, 0x7F]) } else { bytes.replaceSubrange(at..<at + 2, with: [0x01, 0x7E]) }
                let flag = bytes.withUnsafeBytes { b in
                    let pointers: [UnsafeRawPointer?] = (0..<rows).map { r in b.baseAddress! + 1 + (rows - 1 - r) * (size + 1) }
                    return pointers.withUnsafeBufferPointer { p in
                        got.withUnsafeMutableBufferPointer { g in
                            codec == 0 ? emb_f32_decode_checked_rows(p.baseAddress!, g.baseAddress!, rows, d)
                                       : emb_f16_decode_checked_rows(p.baseAddress!, g.baseAddress!, rows, d)
                        }
                    }
                }
                #expect(flag == 0, "codec \(codec) d=\(d): NaN in the run")
            }
        }
    }

    @Test(arguments: dimensions) func floatCodecsMatchDecodeThenAddAndFlagNonFinite(d: Int) throws {
        let row = values(d, seed: UInt64(d) + 13)
        var fp16 = [UInt8](repeating: 0, count: 2 * d)
        try row.withUnsafeBufferPointer { r in try fp16.withUnsafeMutableBytes { try Float16Codec.encode(r, into: $0) } }
        var fp16Decoded = [Float](repeating: 0, count: d)
        fp16.withUnsafeBytes { p in fp16Decoded.withUnsafeMutableBufferPointer { Float16Codec.decode(p, into: $0) } }
        // One byte of offset: payloads in the map are not 4-byte aligned.
        let fp32 = [UInt8(0)] + row.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        for (name, payload, decoded, f16) in [("fp16", fp16, fp16Decoded, true), ("fp32", fp32, row, false)] {
            let skip = f16 ? 0 : 1
            check(payload: payload, decoded: decoded, d: d, kernels: [
                ("\(name) dispatched", { p, acc, n, w in
                    #expect((f16 ? emb_f16_accumulate(p, acc, n, w) : emb_f32_accumulate(p + skip, acc, n, w)) == 1) }),
                ("\(name) portable", { p, acc, n, w in
                    #expect((f16 ? emb_f16_accumulate_portable(p, acc, n, w) : emb_f32_accumulate_portable(p + skip, acc, n, w)) == 1) }),
            ])
            // A non-finite value anywhere in the row is reported.
            for position in Set([0, d / 2, d - 1]) {
                var bad = payload
                if f16 {
                    bad[2 * position] = 0x00; bad[2 * position + 1] = 0x7C          // +infinity
                } else {
                    let nan = withUnsafeBytes(of: Float.nan.bitPattern.littleEndian, Array.init)
                    bad.replaceSubrange(1 + 4 * position..<5 + 4 * position, with: nan)
                }
                var acc = [Float](repeating: 0, count: d)
                let flags = bad.withUnsafeBytes { p in
                    acc.withUnsafeMutableBufferPointer { a in
                        f16 ? [emb_f16_accumulate(p.baseAddress!, a.baseAddress!, d, 1), emb_f16_accumulate_portable(p.baseAddress!, a.baseAddress!, d, 1)]
                            : [emb_f32_accumulate(p.baseAddress! + 1, a.baseAddress!, d, 1), emb_f32_accumulate_portable(p.baseAddress! + 1, a.baseAddress!, d, 1)]
                    }
                }
                #expect(flags == [0, 0], "\(name) d=\(d) non-finite at \(position)")
            }
        }
    }
}
