import EmbeddingCodecs
import Foundation

/// A row's codec with its parameters spelled out (basis id, bucket id, scale): tests write
/// records with exactly the bytes they mean, through the codecs' own encoders.
enum RowEncoding {
    case fp32, fp16, int8, int4, int4h, int2h
    case reduced(k: Int, basisID: UInt32, basis: PCABasis)
    case bucket(id: UInt32)
    case scaledBucket(id: UInt32, scale: Float)

    var tag: UInt8 {
        switch self {
        case .fp32: Codec.fp32.tag
        case .fp16: Codec.fp16.tag
        case .int8: Codec.int8.tag
        case .int4: Codec.int4.tag
        case .int4h: Codec.int4h.tag
        case .int2h: Codec.int2h.tag
        case .reduced: Codec.reduced(k: 1).tag
        case .bucket: Codec.bucket.tag
        case .scaledBucket: Codec.scaledBucket.tag
        }
    }

    /// The record of `row`.
    func record(_ row: [Float]) throws -> [UInt8] {
        switch self {
        case .fp32, .fp16, .int8, .int4, .int4h, .int2h:
            let codec = [Codec.fp32, .fp16, .int8, .int4, .int4h, .int2h].first { $0.tag == tag }!
            let encoder = try codec.rowCodec.putEncoder(codec, table: InMemoryCodecTable(dimension: row.count))
            var record = [UInt8](repeating: 0, count: encoder.maximumRecordSize)
            let size = try row.withUnsafeBufferPointer { row in
                try record.withUnsafeMutableBytes { try encoder.encode(row, index: nil, into: $0) }
            }
            return Array(record[0..<size])
        case .reduced(let k, let basisID, let basis):
            var record: [UInt8] = [tag]
            withUnsafeBytes(of: basisID.littleEndian) { record.append(contentsOf: $0) }
            var coefficients = [UInt8](repeating: 0, count: ReducedDimensionCodec.payloadSize(k: k))
            try row.withUnsafeBufferPointer { row in
                try coefficients.withUnsafeMutableBytes { try ReducedDimensionCodec.encode(row, basis: basis, k: k, into: $0) }
            }
            return record + coefficients
        case .bucket(let id):
            return try BucketCodec.record(bucket: id, scale: nil)
        case .scaledBucket(let id, let scale):
            return try BucketCodec.record(bucket: id, scale: scale)
        }
    }
}

enum RowRecord {
    /// Decodes `record` through its codec's decoder, with `parameters` for what it points at.
    static func decode(_ record: some Collection<UInt8>, dimension d: Int,
                       parameters: some CodecParameterSource = InMemoryCodecTable(dimension: 1)) throws -> [Float] {
        let bytes = Array(record)
        guard let tag = bytes.first, let codec = RowCodecs.codec(tag: tag) else {
            throw CodecError.invalidParameter("no codec for record \(bytes)")
        }
        let decoder = codec.makeDecoder(dimension: d)
        var out = [Float](repeating: 0, count: d)
        try bytes.withUnsafeBytes { raw in
            var buffer = raw
            let decoded = try out.withUnsafeMutableBufferPointer {
                try decoder.decode(&buffer, count: 1, into: $0.baseAddress!, parameters: parameters)
            }
            if decoded != 1 { throw CodecError.invalidParameter(decoder.problem(with: raw, parameters: parameters)) }
        }
        return out
    }
}
