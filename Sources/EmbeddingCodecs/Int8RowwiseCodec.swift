import CEmbeddingKernels

/// Rowwise 8-bit rows in FBGEMM's fused layout: `d` uint8 codes, then float32 scale at byte d,
/// then float32 bias at byte d + 4 (d + 8 bytes, little-endian). Decode: x = Float(q)·scale + bias.
public enum Int8RowwiseCodec {
    /// Codec name used in errors.
    static let name = "int8"
    /// Highest code: codes are 0...255.
    static let levels = 255

    /// Payload bytes for a row of `dimension` values: dimension + 8.
    @inlinable
    public static func payloadSize(dimension: Int) -> Int { dimension + 8 }

    /// True when every value the payload at `payload` (a row of `dimension` values, any
    /// alignment) can decode to is finite, reading only its scale and bias.
    @inlinable
    public static func decodesFinite(_ payload: UnsafeRawPointer, dimension: Int) -> Bool {
        rowwiseRangeIsFinite(payload + dimension, maxCode: 255)
    }

    /// Quantises `row` into `payload` with a per-row range search: the decoded row's mean
    /// squared error is never above the plain min/max rule's (`encodeMinMax`) and usually below.
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

    /// Quantises `row` with the plain FBGEMM rule: bias = min, scale = (max − min)/255,
    /// q = clamp(round((x − bias) · (1/scale)), 0, 255), computed in Double. The baseline for tests.
    ///
    /// - Throws: as `encode`, and `outOfRange(codec: "int8")` when the row spans so much (more
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
        let codeBytes = d
        // The codes RowwiseCoder assigns, packed 8 bits a code (C kernel, AVX2 when available).
        emb_rowwise_write_codes(row.baseAddress!, d, affine.scale, affine.bias, Int32(levels), 8, payload.baseAddress!)
        payload.storeBytes(of: affine.scale.bitPattern.littleEndian, toByteOffset: codeBytes, as: UInt32.self)
        payload.storeBytes(of: affine.bias.bitPattern.littleEndian, toByteOffset: codeBytes + 4, as: UInt32.self)
    }

    /// Decodes `payload` into `row` (the hot path): AVX2 C kernel when the CPU has it.
    ///
    /// - Precondition: `payload.count == payloadSize(dimension: row.count)`, checked by a debug
    ///   `assert` only; the store validates sizes before decoding.
    @inlinable
    public static func decode(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>) {
        assert(payload.count == payloadSize(dimension: row.count), "int8 payload size does not match the row")
        guard let source = payload.baseAddress, let destination = row.baseAddress else { return }
        emb_i8_rowwise_decode(source, destination, row.count)
    }

    /// Scalar reference twin of `decode`; tests compare every fast path against it bit for bit.
    public static func decodeReference(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>) {
        assert(payload.count == payloadSize(dimension: row.count), "int8 payload size does not match the row")
        let d = row.count
        let scale = Float(bitPattern: UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: d, as: UInt32.self)))
        let bias = Float(bitPattern: UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: d + 4, as: UInt32.self)))
        for index in row.indices {
            row[index] = Float(payload[index]) * scale + bias
        }
    }
}

/// True when `q · scale + bias` is finite for every code q in 0…maxCode, given the float32
/// scale and bias at `scaleAndBias`: rounding is monotone, so the two ends decide.
@inlinable @inline(__always)
func rowwiseRangeIsFinite(_ scaleAndBias: UnsafeRawPointer, maxCode: Float) -> Bool {
    let scale = Float(bitPattern: UInt32(littleEndian: scaleAndBias.loadUnaligned(as: UInt32.self)))
    let bias = Float(bitPattern: UInt32(littleEndian: scaleAndBias.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
    return scale.isFinite && bias.isFinite && (maxCode * scale + bias).isFinite
}

extension Int8RowwiseCodec {
    /// The codec's kernels for the descriptor (FORMAT.md, tag 3).
    static let kernels: FixedSizeKernels = {
        var kernels = FixedSizeKernels(
            tag: 3, name: name, summary: "one byte a value, f32 scale and bias per row (FBGEMM's fused 8-bit rowwise)",
            payloadSize: { payloadSize(dimension: $0) },
            encode: { row, payload throws(CodecError) in try encode(row, into: payload) },
            decodeRows: { payloads, count, dimension, out in
                for i in 0..<count where !decodesFinite(payloads[i]!, dimension: dimension) { return false }
                emb_i8_rowwise_decode_rows(payloads, out, count, dimension)
                return true
            },
            accumulate: { payload, dimension, weight, acc in
                guard decodesFinite(payload, dimension: dimension) else { return false }
                emb_i8_rowwise_accumulate(payload, acc, dimension, weight)
                return true
            },
            decode: { decode($0, into: $1) },
            pooledRowKind: EMB_ROW_KIND_I8)
        return kernels
    }()
    /// The registered codec.
    public static let descriptor: any RowCodec = FixedSizeRowCodec(kernels: kernels)
}

extension Codec {
    /// One byte a value with a per-row f32 scale and bias.
    public static let int8 = FixedSizeRowCodec(kernels: Int8RowwiseCodec.kernels).codec
}
