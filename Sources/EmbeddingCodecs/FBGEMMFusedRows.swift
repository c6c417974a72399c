// FBGEMM's fused rowwise rows, as TorchRec and `torch.ops.quantized.embedding_bag_*` hold them,
// are two of this store's payloads byte for byte:
//
// - `embedding_bag_byte_prepack` ("Fused8BitRowwiseQuantizedSBFloat"): d uint8 codes, then the
//   float32 scale, then the float32 bias, d + 8 bytes; x = q·scale + bias. An `int8` payload
//   (FORMAT.md, tag 3).
// - `embedding_bag_4bit_prepack` ("FusedNBitRowwiseQuantizedSBHalf", bit rate 4): ⌈d/2⌉ bytes
//   of codes, element 2i in the low nibble of byte i and 2i + 1 in the high one, then the
//   float16 scale, then the float16 bias, ⌈d/2⌉ + 4 bytes; x = q·scale + bias with the halves
//   widened. An `int4h` payload (FORMAT.md, tag 10).
//
// So importing such rows stores them as they are, and exporting an int8 or int4h record copies
// it. Rows stored with another codec are decoded and quantized by FBGEMM's own rule, which this
// file restates from FBGEMM's `src/QuantUtils.cc` (the `...Ref` functions) and
// `src/QuantUtilsAvx2.cc` (what x86 runs), so that the bytes are the ones torch's prepack gives
// the same floats (checked against torch by tools/check_fbgemm_live.py and the fixtures of
// tools/make_fbgemm_fixtures.py):
//
// 8-bit: lo, hi = the row's min and max; range = hi − lo; scale = range / 255 and bias = lo
//   (float32 as computed); inverse = 255 / (range + 1e-8); q = round-half-even((x − lo) · inverse).
//   All in float32. The epsilon keeps a constant row's codes 0 (its scale is 0).
// 4-bit: bias = half(lo) (round to nearest even; FBGEMM names it "truncate since bias will be
//   represented by fp16"), lo = the bias widened; range = hi − lo; scale = range / 15, or 1 when
//   range is 0; scale = half(scale) widened; 0 becomes 1; inverse = 1 / scale, and when that is
//   infinite scale = inverse = 1; the stored scale is half(scale); q = clamp(round-half-even((x −
//   lo) · inverse), 0, 15). All in float32; the scale's fp16 rounding comes before the codes are
//   computed, so the codes are those of the stored scale.
//
// FBGEMM's AVX2 kernels find min and max with eight lanes of `_mm256_min_ps` / `_mm256_max_ps`
// (a tie goes to the later value) combined with `std::min` / `std::max` (a tie keeps the earlier);
// `fbgemmExtremes` does the same, which matters only for the sign of a zero bias.

/// One of FBGEMM's fused rowwise layouts: what `torch.ops.quantized.embedding_bag_byte_prepack`
/// (`.int8`) and `embedding_bag_4bit_prepack` (`.int4`) return per row.
public enum FBGEMMFusedRows: String, Sendable, CaseIterable {
    /// d uint8 codes, f32 scale, f32 bias: the payload of an `int8` record.
    case int8
    /// ⌈d/2⌉ bytes of 4-bit codes (element 2i in the low nibble), f16 scale, f16 bias: the
    /// payload of an `int4h` record.
    case int4

    /// The store's codec whose payload this layout is.
    public var codec: Codec {
        switch self {
        case .int8: .int8
        case .int4: .int4h
        }
    }

    /// Bytes of a packed row of `dimension` values: d + 8, or ⌈d/2⌉ + 4.
    public func rowBytes(dimension: Int) -> Int {
        switch self {
        case .int8: Int8RowwiseCodec.payloadSize(dimension: dimension)
        case .int4: Int4HalfRowwiseCodec.payloadSize(dimension: dimension)
        }
    }

    /// The dimensions a packed row of `rowBytes` bytes can have, largest first: one for 8-bit
    /// (rowBytes − 8); two for 4-bit (2k and 2k − 1 with k = rowBytes − 4; torch's lookups read
    /// 2k). Empty when no dimension of at least 1 fits.
    public func dimensions(rowBytes: Int) -> [Int] {
        switch self {
        case .int8: rowBytes > 8 ? [rowBytes - 8] : []
        case .int4: rowBytes > 4 ? [2 * (rowBytes - 4), 2 * (rowBytes - 4) - 1] : []
        }
    }

    /// Why `payload` (one packed row of `dimension` values) is not a row the store can hold, in
    /// words; nil when it is one. The store decodes a row only to finite values, so its scale and
    /// bias must be finite (and for 8-bit, 255 · scale + bias too); an odd 4-bit row's unused
    /// last nibble must be 0, as FORMAT.md has it.
    public func problem(with payload: UnsafeRawBufferPointer, dimension: Int) -> String? {
        let expected = rowBytes(dimension: dimension)
        guard payload.count == expected else { return "it has \(payload.count) bytes, not \(expected)" }
        switch self {
        case .int8:
            let scale = Float(bitPattern: UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: dimension, as: UInt32.self)))
            let bias = Float(bitPattern: UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: dimension + 4, as: UInt32.self)))
            if !scale.isFinite { return "its float32 scale (bytes \(dimension)..<\(dimension + 4)) is \(scale)" }
            if !bias.isFinite { return "its float32 bias (bytes \(dimension + 4)..<\(dimension + 8)) is \(bias)" }
            if !(255 * scale + bias).isFinite { return "code 255 decodes to \(255 * scale + bias) (scale \(scale), bias \(bias))" }
        case .int4:
            let codeBytes = (dimension + 1) / 2
            for (offset, name) in [(codeBytes, "scale"), (codeBytes + 2, "bias")] {
                let bits = UInt16(littleEndian: payload.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
                if bits & 0x7C00 == 0x7C00 {
                    return "its float16 \(name) (bytes \(offset)..<\(offset + 2), bits 0x\(String(bits, radix: 16))) is \(Float(Float16(bitPattern: bits)))"
                }
            }
            if dimension % 2 == 1, payload[codeBytes - 1] >> 4 != 0 {
                return "its last code byte holds \(payload[codeBytes - 1] >> 4) in its high nibble, a value \(dimension + 1) a row of "
                    + "dimension \(dimension) does not have (it must be 0; a row of dimension \(dimension + 1)?)"
            }
        }
        return nil
    }

    /// Quantizes `row` into `payload` (exactly `rowBytes(dimension: row.count)` bytes, any
    /// alignment) by FBGEMM's rule for this layout (top of this file): the bytes torch's prepack
    /// writes for the same floats.
    ///
    /// - Throws: `badPayloadSize`; `invalidParameter` for an empty row; `nonFinite` naming the
    ///   index; `outOfRange` when the rule gives a row the store cannot hold (8-bit: a range beyond
    ///   float32; 4-bit: a min or a range / 15 beyond ±65504, FBGEMM's fp16 scale or bias is then
    ///   infinite). On a throw the payload's contents are unspecified.
    public func quantize(_ row: UnsafeBufferPointer<Float>, into payload: UnsafeMutableRawBufferPointer) throws(CodecError) {
        try CodecChecks.requireNonEmpty(row)
        try CodecChecks.requirePayloadSize(payload, expected: rowBytes(dimension: row.count), codec: "fbgemm-\(rawValue)")
        if let bad = row.firstIndex(where: { !$0.isFinite }) { throw .nonFinite(index: bad, value: row[bad]) }
        let (lo, hi) = Self.fbgemmExtremes(row)
        switch self {
        case .int8: try Self.quantize8Bit(row, lo: lo, hi: hi, into: payload)
        case .int4: try Self.quantize4Bit(row, lo: lo, hi: hi, into: payload)
        }
    }

    private static func quantize8Bit(_ row: UnsafeBufferPointer<Float>, lo: Float, hi: Float,
                                     into payload: UnsafeMutableRawBufferPointer) throws(CodecError) {
        let d = row.count
        let range = hi - lo
        let scale = range / 255
        guard range.isFinite, (255 * scale + lo).isFinite else {
            throw .outOfRange(codec: "fbgemm-int8", index: row.firstIndex(of: hi) ?? 0, value: hi)
        }
        let inverse = 255 / (range + 1e-8 as Float)
        for i in 0..<d {
            // (x − lo) ≥ 0 and at most range · inverse ≤ 255 after rounding; the clamp is
            // FBGEMM's saturating pack, which never acts on a finite row.
            let q = ((row[i] - lo) * inverse).rounded(.toNearestOrEven)
            payload[i] = UInt8(min(max(q, 0), 255))
        }
        payload.storeBytes(of: scale.bitPattern.littleEndian, toByteOffset: d, as: UInt32.self)
        payload.storeBytes(of: lo.bitPattern.littleEndian, toByteOffset: d + 4, as: UInt32.self)
    }

    private static func quantize4Bit(_ row: UnsafeBufferPointer<Float>, lo: Float, hi: Float,
                                     into payload: UnsafeMutableRawBufferPointer) throws(CodecError) {
        let d = row.count
        let biasHalf = Float16(lo)   // round to nearest even, beyond ±65520 infinite: F16C's and FBGEMM's rule
        let bias = Float(biasHalf)
        let range = hi - bias
        var scale = Float(Float16(range == 0 ? 1 : range / 15))
        if scale == 0 { scale = 1 }
        var inverse = 1 / scale
        if inverse.isInfinite {
            scale = 1
            inverse = 1
        }
        let scaleHalf = Float16(scale)
        guard biasHalf.isFinite else { throw .outOfRange(codec: "fbgemm-int4", index: row.firstIndex(of: lo) ?? 0, value: lo) }
        guard scaleHalf.isFinite else { throw .outOfRange(codec: "fbgemm-int4", index: row.firstIndex(of: hi) ?? 0, value: hi) }
        let codeBytes = (d + 1) / 2
        for k in 0..<codeBytes { payload[k] = 0 }
        for i in 0..<d {
            let q = ((row[i] - bias) * inverse).rounded(.toNearestOrEven)
            payload[i / 2] |= UInt8(min(max(q, 0), 15)) << (4 * UInt8(i & 1))
        }
        payload.storeBytes(of: scaleHalf.bitPattern.littleEndian, toByteOffset: codeBytes, as: UInt16.self)
        payload.storeBytes(of: biasHalf.bitPattern.littleEndian, toByteOffset: codeBytes + 2, as: UInt16.self)
    }

    /// The row's min and max as FBGEMM's AVX2 kernels find them (top of this file): equal to the
    /// plain min and max but for the sign of a zero.
    static func fbgemmExtremes(_ row: UnsafeBufferPointer<Float>) -> (lo: Float, hi: Float) {
        let lanes = 8
        var laneLo = [Float](repeating: .greatestFiniteMagnitude, count: lanes)
        var laneHi = [Float](repeating: -.greatestFiniteMagnitude, count: lanes)
        let vectorEnd = row.count / lanes * lanes
        for i in 0..<vectorEnd {
            let x = row[i], lane = i % lanes
            laneLo[lane] = laneLo[lane] < x ? laneLo[lane] : x    // _mm256_min_ps(acc, x)
            laneHi[lane] = laneHi[lane] > x ? laneHi[lane] : x    // _mm256_max_ps(acc, x)
        }
        var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
        for x in laneLo + Array(row[vectorEnd...]) where x < lo { lo = x }   // std::min(lo, x)
        for x in laneHi + Array(row[vectorEnd...]) where hi < x { hi = x }   // std::max(hi, x)
        return (lo, hi)
    }
}
