import EmbeddingCodecs

/// A row fully resolved for encoding: the codec plus the parameters it needs.
enum RowEncoding {
    case fp32, fp16, int8, int4
    case reduced(k: Int, basisID: UInt32, basis: PCABasis)
    case bucket(id: UInt32)
    case scaledBucket(id: UInt32, scale: Float)

    var tag: RecordTag {
        switch self {
        case .fp32: .fp32
        case .fp16: .fp16
        case .int8: .int8
        case .int4: .int4
        case .reduced: .reduced
        case .bucket: .bucket
        case .scaledBucket: .scaledBucket
        }
    }

    /// The encoding of a codec that needs no table parameters; nil for reduced and bucket codecs.
    init?(plain codec: Codec) {
        switch codec {
        case .fp32: self = .fp32
        case .fp16: self = .fp16
        case .int8: self = .int8
        case .int4: self = .int4
        case .reduced, .bucket, .scaledBucket: return nil
        }
    }

    /// Record size in bytes, tag included.
    func recordSize(dimension d: Int) -> Int {
        switch self {
        case .fp32: 1 + Float32Codec.payloadSize(dimension: d)
        case .fp16: 1 + Float16Codec.payloadSize(dimension: d)
        case .int8: 1 + Int8RowwiseCodec.payloadSize(dimension: d)
        case .int4: 1 + Int4RowwiseCodec.payloadSize(dimension: d)
        case .reduced(let k, _, _): 1 + 4 + ReducedDimensionCodec.payloadSize(k: k)
        case .bucket: 1 + BucketCodec.payloadSize
        case .scaledBucket: 1 + BucketCodec.scaledPayloadSize
        }
    }

    /// Writes the record (tag + payload) for `row` into `record`, which has `recordSize` bytes.
    func encode(_ row: UnsafeBufferPointer<Float>, into record: UnsafeMutableRawBufferPointer) throws(CodecError) {
        record.storeBytes(of: tag.rawValue, toByteOffset: 0, as: UInt8.self)
        let payload = UnsafeMutableRawBufferPointer(rebasing: record[1...])
        switch self {
        case .fp32: try Float32Codec.encode(row, into: payload)
        case .fp16: try Float16Codec.encode(row, into: payload)
        case .int8: try Int8RowwiseCodec.encode(row, into: payload)
        case .int4: try Int4RowwiseCodec.encode(row, into: payload)
        case .reduced(let k, let basisID, let basis):
            payload.storeBytes(of: basisID.littleEndian, toByteOffset: 0, as: UInt32.self)
            try ReducedDimensionCodec.encode(row, basis: basis, k: k, into: UnsafeMutableRawBufferPointer(rebasing: payload[4...]))
        case .bucket(let id): try BucketCodec.encode(bucket: id, into: payload)
        case .scaledBucket(let id, let scale): try BucketCodec.encodeScaled(bucket: id, scale: scale, into: payload)
        }
    }
}

/// Why a record cannot be decoded; the caller adds the table and id.
struct RecordProblem: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}

/// Validation and decoding of one record's bytes, shared by lookups, `get` and export.
enum RowRecord {
    /// The tag and payload of `record`, checking the tag is known and the size matches the
    /// codec at dimension `d`. For `reduced`, the size check against the basis is the caller's.
    @inline(__always)
    static func split(_ record: UnsafeRawBufferPointer, dimension d: Int) throws(RecordProblem) -> (RecordTag, UnsafeRawBufferPointer) {
        guard let first = record.first else { throw RecordProblem("the record is empty") }
        guard let tag = RecordTag(rawValue: first) else { throw RecordProblem("unknown codec tag \(first)") }
        let payload = UnsafeRawBufferPointer(rebasing: record[1...])
        let expected: Int
        switch tag {
        case .fp32: expected = Float32Codec.payloadSize(dimension: d)
        case .fp16: expected = Float16Codec.payloadSize(dimension: d)
        case .int8: expected = Int8RowwiseCodec.payloadSize(dimension: d)
        case .int4: expected = Int4RowwiseCodec.payloadSize(dimension: d)
        case .bucket: expected = BucketCodec.payloadSize
        case .scaledBucket: expected = BucketCodec.scaledPayloadSize
        case .reduced:
            guard payload.count >= 8, (payload.count - 4) % 4 == 0 else {
                throw RecordProblem("\(tag) payload of \(payload.count) bytes is not a basis id and whole float32 coefficients")
            }
            return (tag, payload)
        }
        guard payload.count == expected else {
            throw RecordProblem("\(tag) payload has \(payload.count) bytes, expected \(expected) for dimension \(d)"
                + (payload.count < expected ? " (truncated)" : ""))
        }
        return (tag, payload)
    }

    /// Decodes a self-contained record (fp32, fp16, int8, int4) into `row`.
    @inline(__always)
    static func decodePlain(_ tag: RecordTag, _ payload: UnsafeRawBufferPointer, into row: UnsafeMutableBufferPointer<Float>) {
        switch tag {
        case .fp32: Float32Codec.decode(payload, into: row)
        case .fp16: Float16Codec.decode(payload, into: row)
        case .int8: Int8RowwiseCodec.decode(payload, into: row)
        case .int4: Int4RowwiseCodec.decode(payload, into: row)
        case .reduced, .bucket, .scaledBucket: preconditionFailure("\(tag) needs table parameters")
        }
    }

    /// Checks every decoded value is finite: a damaged scale, bias or float can otherwise reach
    /// the caller as NaN or infinity.
    @inline(__always)
    static func checkFinite(_ row: UnsafeMutableBufferPointer<Float>) throws(RecordProblem) {
        var bad = false
        for value in row { bad = bad || !value.isFinite }
        if bad {
            let index = row.firstIndex { !$0.isFinite } ?? 0
            throw RecordProblem("decodes to the non-finite value \(row[index]) at column \(index)")
        }
    }
}
