/// How one row is stored: the per-row codec whose tag is the first byte of its record.
///
/// The byte layout of each is in FORMAT.md ("Row records").
public enum Codec: Hashable, Sendable, CustomStringConvertible {
    /// 4 bytes per value, lossless.
    case fp32
    /// IEEE half, 2 bytes per value; rows with a value beyond ±65504 are refused.
    case fp16
    /// One byte per value with a per-row float32 scale and bias.
    case int8
    /// Half a byte per value with a per-row float32 scale and bias.
    case int4
    /// `k` float32 coefficients on the table's PCA basis, decoded back to full width.
    case reduced(k: Int)
    /// A pointer to the nearest of the table's shared bucket rows.
    case bucket
    /// A pointer to a shared bucket row and a per-row float32 scale.
    case scaledBucket

    public var description: String {
        if case .reduced(let k) = self { return "reduced:\(k)" }
        return tag.description
    }

    /// The tag byte that starts a record of this codec (FORMAT.md, "Row records").
    public var tag: RecordTag {
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
}

/// The first byte of a row record. Tag 0 is never written, so a zero-filled record is caught.
public enum RecordTag: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case fp32 = 1
    case fp16 = 2
    case int8 = 3
    case int4 = 4
    case reduced = 5
    case bucket = 6
    case scaledBucket = 7

    public var description: String {
        switch self {
        case .fp32: "fp32"
        case .fp16: "fp16"
        case .int8: "int8"
        case .int4: "int4"
        case .reduced: "reduced"
        case .bucket: "bucket"
        case .scaledBucket: "bucket+scale"
        }
    }

    /// Tags a bucket row itself may carry: a bucket row never points elsewhere.
    var isAllowedForBucketRows: Bool {
        switch self {
        case .fp32, .fp16, .int8, .int4: true
        case .reduced, .bucket, .scaledBucket: false
        }
    }
}

/// What a bulk load does to every row: one codec for all rows, with the parameters the
/// store fits from those rows first (`reduced:K` fits a PCA basis of rank K; `bucket:B`
/// runs k-means for B bucket rows).
public enum LoadCodec: Hashable, Sendable, CustomStringConvertible {
    case fp32, fp16, int8, int4
    case reduced(k: Int)
    case bucket(count: Int, scaled: Bool)

    /// Parses the command-line spelling: `fp32`, `fp16`, `int8`, `int4`, `reduced:K`,
    /// `bucket:B` or `bucket:B:scaled`.
    public init(parsing text: String) throws(StoreError) {
        let parts = text.lowercased().split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        func number(_ s: String) throws(StoreError) -> Int {
            guard let n = Int(s), n > 0 else {
                throw .invalidArgument("codec '\(text)': '\(s)' is not a positive integer")
            }
            return n
        }
        switch (parts.first ?? "", parts.count) {
        case ("fp32", 1): self = .fp32
        case ("fp16", 1): self = .fp16
        case ("int8", 1): self = .int8
        case ("int4", 1): self = .int4
        case ("reduced", 2): self = .reduced(k: try number(parts[1]))
        case ("bucket", 2): self = .bucket(count: try number(parts[1]), scaled: false)
        case ("bucket", 3) where parts[2] == "scaled": self = .bucket(count: try number(parts[1]), scaled: true)
        default:
            throw .invalidArgument("unknown codec '\(text)'; expected fp32, fp16, int8, int4, reduced:K, bucket:B or bucket:B:scaled")
        }
    }

    public var description: String {
        if case .bucket(let count, let scaled) = self { return scaled ? "bucket:\(count):scaled" : "bucket:\(count)" }
        return Store.rowCodec(self).description
    }
}
