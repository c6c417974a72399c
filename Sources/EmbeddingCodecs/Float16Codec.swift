import CEmbeddingKernels

/// Half-precision rows: the payload is `d` little-endian IEEE binary16 values, 2·d bytes,
/// rounded to nearest, ties to even.
///
/// Values beyond fp16's finite range are refused (never stored as infinity); tiny values become
/// subnormal or zero as IEEE 754 rounding says.
public enum Float16Codec {
    /// Codec name used in errors.
    static let name = "fp16"

    /// Smallest magnitude that rounds to infinity in binary16: the midpoint between 65504 (the
    /// largest finite half) and 65536, which ties-to-even sends up.
    static let overflowThreshold: Float = 65520

    /// Payload bytes for a row of `dimension` values: 2·dimension.
    @inlinable
    public static func payloadSize(dimension: Int) -> Int { 2 * dimension }

    /// Rounds `row` to binary16 into `payload`, using the CPU's F16C instructions when present.
    ///
    /// - Parameter payload: exactly `payloadSize(dimension: row.count)` bytes, any alignment.
    /// - Throws: `badPayloadSize`; `nonFinite` for NaN or ±infinity; `outOfRange(codec: "fp16")`
    ///   for the first value with |x| ≥ 65520 (it would round to infinity); `invalidParameter`
    ///   for an empty row. On a throw the payload's contents are unspecified.
    public static func encode(
        _ row: UnsafeBufferPointer<Float>, into payload: UnsafeMutableRawBufferPointer
    ) throws(CodecError) {
        try CodecChecks.requireNonEmpty(row)
        try CodecChecks.requirePayloadSize(payload, expected: payloadSize(dimension: row.count), codec: name)
        // One comparison per element: NaN fails `<` too, and is then told apart from overflow.
        for index in row.indices where !(row[index].magnitude < overflowThreshold) {
            let value = row[index]
            throw value.isFinite
                ? .outOfRange(codec: name, index: index, value: value)
                : .nonFinite(index: index, value: value)
        }
        // Non-empty buffers have base addresses.
        emb_f16_encode(row.baseAddress!, payload.baseAddress!, row.count)
    }

    /// Widens `payload` into `row` (the hot path), with F16C when the CPU has it.
    ///
    /// - Precondition: `payload.count == payloadSize(dimension: row.count)`, checked by a debug
    ///   `assert` only; the store validates sizes before decoding.
    @inlinable
    public static func decode(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>) {
        assert(payload.count == payloadSize(dimension: row.count), "fp16 payload size does not match the row")
        guard let source = payload.baseAddress, let destination = row.baseAddress else { return }
        emb_f16_decode(source, destination, row.count)
    }

    /// Scalar reference twin of `decode` using Swift's own `Float16 → Float` conversion; tests
    /// compare the C kernels against it bit for bit. Slow: a library call per element.
    public static func decodeReference(_ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>) {
        assert(payload.count == payloadSize(dimension: row.count), "fp16 payload size does not match the row")
        #if arch(x86_64) && os(macOS)
        // Swift has no Float16 on Intel Macs; fall back to the portable C conversion.
        guard let source = payload.baseAddress, let destination = row.baseAddress else { return }
        emb_f16_decode_portable(source, destination, row.count)
        #else
        for index in row.indices {
            let bits = UInt16(littleEndian: payload.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self))
            row[index] = Float(Float16(bitPattern: bits))
        }
        #endif
    }
}

extension Float16Codec {
    /// The codec's kernels for the descriptor (FORMAT.md, tag 2).
    static let kernels: FixedSizeKernels = {
        var kernels = FixedSizeKernels(
            tag: 2, name: name, summary: "IEEE half, 2 bytes a value; rows beyond ±65504 are refused",
            payloadSize: { payloadSize(dimension: $0) },
            encode: { row, payload throws(CodecError) in try encode(row, into: payload) },
            decodeRows: { payloads, count, dimension, out in
                emb_f16_decode_checked_rows(payloads, out, count, dimension) != 0
            },
            accumulate: { payload, dimension, weight, acc in
                emb_f16_accumulate(payload, acc, dimension, weight) != 0
            },
            decode: { decode($0, into: $1) },
            pooledRowKind: EMB_ROW_KIND_F16)
        kernels.check = { row throws(CodecError) in
            for index in row.indices where !(row[index].magnitude < overflowThreshold) {
                throw .outOfRange(codec: name, index: index, value: row[index])
            }
        }
        return kernels
    }()
    /// The registered codec.
    public static let descriptor: any RowCodec = FixedSizeRowCodec(kernels: kernels)
}

extension Codec {
    /// IEEE half, 2 bytes a value.
    public static let fp16 = FixedSizeRowCodec(kernels: Float16Codec.kernels).codec
}
