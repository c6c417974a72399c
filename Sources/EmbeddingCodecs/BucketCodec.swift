/// `bucket` rows (weight sharing): a little-endian uint32 bucket id, 4 bytes, optionally followed
/// by a little-endian float32 scale s, 8 bytes; the row decodes to x̂ = s · centroid[id] (s = 1 in
/// the 4-byte form).
///
/// The centroids live in the table's bucket rows (see `KMeansCodebook`); this codec only writes
/// and reads the pointer and scale, and scales a decoded bucket row.
public enum BucketCodec {
    /// Codec name used in errors.
    static let name = "bucket"

    /// Payload bytes of the unscaled form: the uint32 id.
    public static let payloadSize = 4
    /// Payload bytes of the scaled form: the uint32 id, then the float32 scale.
    public static let scaledPayloadSize = 8

    /// Writes a bucket id.
    ///
    /// - Parameter payload: exactly `payloadSize` bytes, any alignment.
    /// - Throws: `badPayloadSize`.
    public static func encode(bucket: UInt32, into payload: UnsafeMutableRawBufferPointer) throws(CodecError) {
        try CodecChecks.requirePayloadSize(payload, expected: payloadSize, codec: name)
        payload.storeBytes(of: bucket.littleEndian, toByteOffset: 0, as: UInt32.self)
    }

    /// Writes a bucket id and a per-row scale.
    ///
    /// - Parameter payload: exactly `scaledPayloadSize` bytes, any alignment.
    /// - Throws: `badPayloadSize`, or `invalidParameter` for a NaN or infinite scale (the row
    ///   would decode to non-finite values).
    public static func encodeScaled(bucket: UInt32, scale: Float, into payload: UnsafeMutableRawBufferPointer) throws(CodecError) {
        try CodecChecks.requirePayloadSize(payload, expected: scaledPayloadSize, codec: name)
        guard scale.isFinite else {
            throw .invalidParameter("bucket scale must be finite, got \(scale)")
        }
        payload.storeBytes(of: bucket.littleEndian, toByteOffset: 0, as: UInt32.self)
        payload.storeBytes(of: scale.bitPattern.littleEndian, toByteOffset: 4, as: UInt32.self)
    }

    /// The bucket id of a 4- or 8-byte payload (unaligned little-endian load).
    ///
    /// - Precondition: `payload.count ≥ 4`, checked by a debug `assert` only.
    @inlinable
    public static func bucketID(_ payload: UnsafeRawBufferPointer) -> UInt32 {
        assert(payload.count >= payloadSize, "bucket payload is shorter than 4 bytes")
        return UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
    }

    /// The scale of a payload: the stored float32 in the 8-byte form, 1 in the 4-byte form.
    @inlinable
    public static func scale(_ payload: UnsafeRawBufferPointer) -> Float {
        guard payload.count >= scaledPayloadSize else { return 1 }
        return Float(bitPattern: UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
    }

    /// Writes `scale · centroid` into `row` (the hot path; a plain loop that vectorises).
    ///
    /// - Precondition: `centroid.count == row.count`, checked by a debug `assert` only.
    @inlinable
    public static func decode(centroid: UnsafeBufferPointer<Float>, scale: Float, into row: UnsafeMutableBufferPointer<Float>) {
        assert(centroid.count == row.count, "bucket row width does not match the centroid")
        guard let source = centroid.baseAddress, let target = row.baseAddress else { return }
        for i in 0..<row.count { target[i] = scale * source[i] }
    }
}
