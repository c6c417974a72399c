import CEmbeddingKernels

/// Rowwise 4-bit rows with f16 scale and bias, FBGEMM's fused 4-bit rowwise layout
/// ("FusedNBitRowwiseQuantizedSBHalf", bit rate 4): ceil(d/2) code bytes (element 2k in the low
/// nibble of byte k, element 2k+1 in the high nibble, the unused last high nibble of an odd row
/// 0), then f16 scale, then f16 bias (ceil(d/2) + 4 bytes, little-endian). Decode: scale and bias
/// widened exactly to Float, then x = Float(q)·scale + bias.
///
/// Four bytes a row smaller than `Int4RowwiseCodec` (10% at d = 64); the encoder searches among
/// parameters a half can hold, so its error is the stored row's (see HalfRowwiseQuantizer.swift).
public enum Int4HalfRowwiseCodec {
    /// Codec name used in errors.
    static let name = "int4h"
    /// Highest code: codes are 0...15.
    static let levels = 15

    /// Payload bytes for a row of `dimension` values: ceil(dimension/2) + 4.
    @inlinable
    public static func payloadSize(dimension: Int) -> Int { (dimension + 1) / 2 + 4 }

    /// True when every value the payload at `payload` (a row of `dimension` values, any
    /// alignment) can decode to is finite, reading only its scale and bias: finite halves always
    /// decode finitely, so this is a test of their exponent bits.
    @inlinable
    public static func decodesFinite(_ payload: UnsafeRawPointer, dimension: Int) -> Bool {
        emb_rowwise_sbhalf_params_finite(payload + (dimension + 1) / 2) != 0
    }

    /// Quantises `row` into `payload` with a per-row range search over f16 scales and biases: the
    /// decoded row's squared error is never above the plain min/max rule's with rounded
    /// parameters (`encodeMinMax`).
    ///
    /// A constant row is stored exactly (scale 0, codes 0) when its value is a half. Rows with
    /// values beyond ±65504 are clipped (bias and scale saturate at 65504), never refused: every
    /// decoded value is finite.
    ///
    /// - Parameter payload: exactly `payloadSize(dimension: row.count)` bytes, any alignment.
    /// - Throws: `badPayloadSize`, `nonFinite` (naming the index), or `invalidParameter` for an
    ///   empty row. On a throw the payload's contents are unspecified.
    public static func encode(
        _ row: UnsafeBufferPointer<Float>, into payload: UnsafeMutableRawBufferPointer
    ) throws(CodecError) {
        try CodecChecks.requireNonEmpty(row)
        try CodecChecks.requirePayloadSize(payload, expected: payloadSize(dimension: row.count), codec: name)
        write(row, try HalfRowwiseQuantizer.search(row, levels: levels), into: payload)
    }

    /// Quantises `row` with the plain min/max rule on rounded parameters: bias = half(min),
    /// scale = half((max − bias)/15), q = clamp(round((x − bias)/scale), 0, 15) against those
    /// halves. The baseline for tests.
    ///
    /// - Throws: as `encode`.
    public static func encodeMinMax(
        _ row: UnsafeBufferPointer<Float>, into payload: UnsafeMutableRawBufferPointer
    ) throws(CodecError) {
        try CodecChecks.requireNonEmpty(row)
        try CodecChecks.requirePayloadSize(payload, expected: payloadSize(dimension: row.count), codec: name)
        write(row, try HalfRowwiseQuantizer.minMax(row, levels: levels), into: payload)
    }

    private static func write(
        _ row: UnsafeBufferPointer<Float>, _ parameters: HalfRowwiseParameters, into payload: UnsafeMutableRawBufferPointer
    ) {
        let d = row.count
        let codeBytes = (d + 1) / 2
        let affine = parameters.affine
        // The codes RowwiseCoder assigns, packed 4 bits a code (C kernel, AVX2 when available).
        emb_rowwise_write_codes(row.baseAddress!, d, affine.scale, affine.bias, Int32(levels), 4, payload.baseAddress!)
        payload.storeBytes(of: parameters.scale.bits.littleEndian, toByteOffset: codeBytes, as: UInt16.self)
        payload.storeBytes(of: parameters.bias.bits.littleEndian, toByteOffset: codeBytes + 2, as: UInt16.self)
    }

    /// Decodes `payload` into `row` (the hot path): AVX2 + F16C C kernel when the CPU has them.
    ///
    /// - Precondition: `payload.count == payloadSize(dimension: row.count)`, checked by a debug
    ///   `assert` only; the store validates sizes before decoding.
    @inlinable
    public static func decode(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>) {
        assert(payload.count == payloadSize(dimension: row.count), "int4h payload size does not match the row")
        guard let source = payload.baseAddress, let destination = row.baseAddress else { return }
        emb_i4_rowwise_sbhalf_decode(source, destination, row.count)
    }

    /// Scalar reference twin of `decode`; tests compare every fast path against it bit for bit.
    public static func decodeReference(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>) {
        assert(payload.count == payloadSize(dimension: row.count), "int4h payload size does not match the row")
        let codeBytes = (row.count + 1) / 2
        let scale = HalfBits.widen(UInt16(littleEndian: payload.loadUnaligned(fromByteOffset: codeBytes, as: UInt16.self)))
        let bias = HalfBits.widen(UInt16(littleEndian: payload.loadUnaligned(fromByteOffset: codeBytes + 2, as: UInt16.self)))
        for index in row.indices {
            let byte = payload[index / 2]
            let q = index & 1 == 0 ? byte & 0x0F : byte >> 4
            row[index] = Float(q) * scale + bias
        }
    }
}

extension Int4HalfRowwiseCodec {
    /// The codec's kernels for the descriptor (FORMAT.md, tag 10).
    static let kernels: FixedSizeKernels = {
        var kernels = FixedSizeKernels(
            tag: 10, name: name, summary: "half a byte a value, f16 scale and bias per row (FBGEMM's fused 4-bit rowwise)",
            payloadSize: { payloadSize(dimension: $0) },
            encode: { row, payload throws(CodecError) in try encode(row, into: payload) },
            decodeRows: { payloads, count, dimension, out in
                for i in 0..<count where !decodesFinite(payloads[i]!, dimension: dimension) { return false }
                emb_i4_rowwise_sbhalf_decode_rows(payloads, out, count, dimension)
                return true
            },
            accumulate: { payload, dimension, weight, acc in
                guard decodesFinite(payload, dimension: dimension) else { return false }
                emb_i4_rowwise_sbhalf_accumulate(payload, acc, dimension, weight)
                return true
            },
            decode: { decode($0, into: $1) },
            pooledRowKind: EMB_ROW_KIND_I4H)
        kernels.formatVersion = 3   // tags 10 and 11 came with version 3
        return kernels
    }()
    /// The registered codec.
    public static let descriptor: any RowCodec = FixedSizeRowCodec(kernels: kernels)
}

extension Codec {
    /// Half a byte a value with a per-row f16 scale and bias.
    public static let int4h = FixedSizeRowCodec(kernels: Int4HalfRowwiseCodec.kernels).codec
}
