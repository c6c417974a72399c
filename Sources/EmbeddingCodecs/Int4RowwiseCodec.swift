import CEmbeddingKernels

/// Rowwise 4-bit rows: ceil(d/2) code bytes (element 2k in the low nibble of byte k, element
/// 2k+1 in the high nibble, the unused last high nibble of an odd row 0), then float32 scale,
/// then float32 bias (ceil(d/2) + 8 bytes, little-endian). Decode: x = Float(q)·scale + bias.
///
/// Unlike FBGEMM's 4-bit layout, scale and bias are float32, not fp16: a rounded fp16 scale
/// or bias would break the guarantee that encoding is never worse than the min/max rule.
public enum Int4RowwiseCodec {
    /// Codec name used in errors.
    static let name = "int4"
    /// Highest code: codes are 0...15.
    static let levels = 15

    /// Payload bytes for a row of `dimension` values: ceil(dimension/2) + 8.
    @inlinable
    public static func payloadSize(dimension: Int) -> Int { (dimension + 1) / 2 + 8 }

    /// True when every value the payload at `payload` (a row of `dimension` values, any
    /// alignment) can decode to is finite, reading only its scale and bias.
    @inlinable
    public static func decodesFinite(_ payload: UnsafeRawPointer, dimension: Int) -> Bool {
        rowwiseRangeIsFinite(payload + (dimension + 1) / 2, maxCode: 15)
    }

    /// Quantises `row` into `payload` with a per-row range search: the decoded row's mean
    /// squared error is never above the plain min/max rule's (`encodeMinMax`) and usually well
    /// below (with 16 levels, clipping the tails pays off).
    ///
    /// A constant row is stored exactly (scale 0, codes 0, bias = the value). Every decoded value
    /// is finite, even for rows spanning ±3e38 (whose range is then clipped).
    ///
    /// - Parameter payload: exactly `payloadSize(dimension: row.count)` bytes, any alignment.
    /// - Throws: `badPayloadSize`, `nonFinite` (naming the index), or `invalidParameter` for an
    ///   empty row. On a throw the payload's contents are unspecified.
    public static func encode(
        _ row: UnsafeBufferPointer<Float>, into payload: UnsafeMutableRawBufferPointer
    ) throws(CodecError) {
        try CodecChecks.requireNonEmpty(row)
        try CodecChecks.requirePayloadSize(payload, expected: payloadSize(dimension: row.count), codec: name)
        write(row, try RowwiseQuantizer.search(row, levels: levels), into: payload)
    }

    /// Quantises `row` with the plain min/max rule: bias = min, scale = (max − min)/15,
    /// q = clamp(round((x − bias) · (1/scale)), 0, 15), computed in Double. The baseline for tests.
    ///
    /// - Throws: as `encode`, and `outOfRange(codec: "int4")` when the row spans so much (more
    ///   than about 3.4e38) that this rule would decode a value to infinity.
    public static func encodeMinMax(
        _ row: UnsafeBufferPointer<Float>, into payload: UnsafeMutableRawBufferPointer
    ) throws(CodecError) {
        try CodecChecks.requireNonEmpty(row)
        try CodecChecks.requirePayloadSize(payload, expected: payloadSize(dimension: row.count), codec: name)
        write(row, try RowwiseQuantizer.minMaxAffine(row, levels: levels, codec: name), into: payload)
    }

    private static func write(
        _ row: UnsafeBufferPointer<Float>, _ affine: RowwiseAffine, into payload: UnsafeMutableRawBufferPointer
    ) {
        let d = row.count
        let codeBytes = (d + 1) / 2
        // The codes RowwiseCoder assigns, packed 4 bits a code (C kernel, AVX2 when available).
        emb_rowwise_write_codes(row.baseAddress!, d, affine.scale, affine.bias, Int32(levels), 4, payload.baseAddress!)
        payload.storeBytes(of: affine.scale.bitPattern.littleEndian, toByteOffset: codeBytes, as: UInt32.self)
        payload.storeBytes(of: affine.bias.bitPattern.littleEndian, toByteOffset: codeBytes + 4, as: UInt32.self)
    }

    /// Decodes `payload` into `row` (the hot path): AVX2 C kernel when the CPU has it.
    ///
    /// - Precondition: `payload.count == payloadSize(dimension: row.count)`, checked by a debug
    ///   `assert` only; the store validates sizes before decoding.
    @inlinable
    public static func decode(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>) {
        assert(payload.count == payloadSize(dimension: row.count), "int4 payload size does not match the row")
        guard let source = payload.baseAddress, let destination = row.baseAddress else { return }
        emb_i4_rowwise_decode(source, destination, row.count)
    }

    /// Scalar reference twin of `decode`; tests compare every fast path against it bit for bit.
    public static func decodeReference(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>) {
        assert(payload.count == payloadSize(dimension: row.count), "int4 payload size does not match the row")
        let codeBytes = (row.count + 1) / 2
        let scale = Float(bitPattern: UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: codeBytes, as: UInt32.self)))
        let bias = Float(bitPattern: UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: codeBytes + 4, as: UInt32.self)))
        for index in row.indices {
            let byte = payload[index / 2]
            let q = index & 1 == 0 ? byte & 0x0F : byte >> 4
            row[index] = Float(q) * scale + bias
        }
    }
}

extension Int4RowwiseCodec {
    /// The codec's kernels for the descriptor (FORMAT.md, tag 4).
    static let kernels: FixedSizeKernels = {
        var kernels = FixedSizeKernels(
            tag: 4, name: name, summary: "half a byte a value, f32 scale and bias per row",
            payloadSize: { payloadSize(dimension: $0) },
            encode: { row, payload throws(CodecError) in try encode(row, into: payload) },
            decodeRows: { payloads, count, dimension, out in
                for i in 0..<count where !decodesFinite(payloads[i]!, dimension: dimension) { return false }
                emb_i4_rowwise_decode_rows(payloads, out, count, dimension)
                return true
            },
            accumulate: { payload, dimension, weight, acc in
                guard decodesFinite(payload, dimension: dimension) else { return false }
                emb_i4_rowwise_accumulate(payload, acc, dimension, weight)
                return true
            },
            decode: { decode($0, into: $1) },
            pooledRowKind: EMB_ROW_KIND_I4)
        return kernels
    }()
    /// The registered codec.
    public static let descriptor: any RowCodec = FixedSizeRowCodec(kernels: kernels)
}

extension Codec {
    /// Half a byte a value with a per-row f32 scale and bias.
    public static let int4 = FixedSizeRowCodec(kernels: Int4RowwiseCodec.kernels).codec
}
