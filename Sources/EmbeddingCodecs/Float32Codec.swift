import CEmbeddingKernels

/// Lossless fp32 rows: the payload is `d` little-endian IEEE binary32 values, 4·d bytes.
///
/// The baseline codec for the hottest rows; decode is a `memcpy`.
public enum Float32Codec {
    /// Codec name used in errors.
    static let name = "fp32"

    /// Payload bytes for a row of `dimension` values: 4·dimension.
    @inlinable
    public static func payloadSize(dimension: Int) -> Int { 4 * dimension }

    /// Writes `row` into `payload` bit for bit.
    ///
    /// - Parameter payload: exactly `payloadSize(dimension: row.count)` bytes, any alignment.
    /// - Throws: `badPayloadSize`, `nonFinite` (NaN or ±infinity, naming the index), or
    ///   `invalidParameter` for an empty row. On a throw the payload's contents are unspecified.
    public static func encode(
        _ row: UnsafeBufferPointer<Float>, into payload: UnsafeMutableRawBufferPointer
    ) throws(CodecError) {
        try CodecChecks.requireNonEmpty(row)
        try CodecChecks.requirePayloadSize(payload, expected: payloadSize(dimension: row.count), codec: name)
        try CodecChecks.requireFinite(row)
        for index in row.indices {
            payload.storeBytes(of: row[index].bitPattern.littleEndian, toByteOffset: 4 * index, as: UInt32.self)
        }
    }

    /// Decodes `payload` into `row` (the hot path): one `memcpy` on little-endian hosts.
    ///
    /// - Precondition: `payload.count == payloadSize(dimension: row.count)`, checked by a debug
    ///   `assert` only; the store validates sizes before decoding.
    @inlinable
    public static func decode(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>) {
        assert(payload.count == payloadSize(dimension: row.count), "fp32 payload size does not match the row")
        #if _endian(little)
        // The payload's bytes are the row's bytes; copyMemory has no alignment requirement.
        guard let source = payload.baseAddress, let destination = row.baseAddress else { return }
        UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: 4 * row.count)
        #else
        decodeReference(payload, into: row)
        #endif
    }

    /// Scalar reference twin of `decode`, one unaligned little-endian load per element; tests
    /// compare the fast path against it.
    public static func decodeReference(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>) {
        assert(payload.count == payloadSize(dimension: row.count), "fp32 payload size does not match the row")
        for index in row.indices {
            let bits = UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: 4 * index, as: UInt32.self))
            row[index] = Float(bitPattern: bits)
        }
    }
}

extension Float32Codec {
    /// The codec's kernels for the descriptor (FORMAT.md, tag 1).
    static let kernels: FixedSizeKernels = {
        var kernels = FixedSizeKernels(
            tag: 1, name: name, summary: "4 bytes a value, lossless",
            payloadSize: { payloadSize(dimension: $0) },
            encode: { row, payload throws(CodecError) in try encode(row, into: payload) },
            decodeRows: { payloads, count, dimension, out in
                emb_f32_decode_checked_rows(payloads, out, count, dimension) != 0
            },
            accumulate: { payload, dimension, weight, acc in
                emb_f32_accumulate(payload, acc, dimension, weight) != 0
            },
            decode: { decode($0, into: $1) },
            pooledRowKind: EMB_ROW_KIND_F32)
        return kernels
    }()
    /// The registered codec.
    public static let descriptor: any RowCodec = FixedSizeRowCodec(kernels: kernels)
}

extension Codec {
    /// 4 bytes a value, lossless.
    public static let fp32 = FixedSizeRowCodec(kernels: Float32Codec.kernels).codec
}
