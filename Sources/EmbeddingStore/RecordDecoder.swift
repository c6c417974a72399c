import LMDB
import EmbeddingCodecs

/// Decodes a table's records, resolving what the record points at (the PCA basis of a
/// `reduced` row, the bucket row of a `bucket` row) in the same transaction.
///
/// Bases are immutable once written (their ids are never reused), so decoded ones are kept.
struct RecordDecoder {
    let table: Table
    private var bases: [UInt32: PCABasis] = [:]
    /// Decoded bucket rows (also immutable once written), up to `bucketCacheLimit` floats.
    private var bucketRows: [UInt32: [Float]] = [:]
    private var cachedFloats = 0
    static let bucketCacheLimit = 1 << 24

    init(table: Table) { self.table = table }

    /// Decodes the record stored for `id` into `row` (`table.dimension` floats).
    mutating func decode(_ record: UnsafeRawBufferPointer, id: UInt64, in txn: borrowing Transaction,
                         into row: UnsafeMutableBufferPointer<Float>) throws {
        do {
            let (tag, payload) = try RowRecord.split(record, dimension: table.dimension)
            switch tag {
            case .fp32, .fp16, .int8, .int4:
                RowRecord.decodePlain(tag, payload, into: row)
            case .reduced:
                let basisID = UInt32(littleEndian: payload.loadUnaligned(as: UInt32.self))
                let basis = try basis(basisID, in: txn)
                let coefficients = UnsafeRawBufferPointer(rebasing: payload[4...])
                let k = coefficients.count / 4
                guard k <= basis.rank, k < table.dimension else {
                    throw RecordProblem("reduced row has \(k) coefficients; basis \(basisID) has rank \(basis.rank) at dimension \(table.dimension)")
                }
                ReducedDimensionCodec.decode(coefficients, basis: basis, into: row)
            case .bucket, .scaledBucket:
                let bucketID = BucketCodec.bucketID(payload)
                try decodeCachedBucketRow(bucketID, in: txn, into: row)
                if tag == .scaledBucket {
                    let scale = BucketCodec.scale(payload)
                    guard scale.isFinite else { throw RecordProblem("bucket scale is \(scale)") }
                    for i in row.indices { row[i] *= scale }
                }
            }
            try RowRecord.checkFinite(row)
        } catch let problem as RecordProblem {
            throw StoreError.corruptRecord(table: table.name, id: id, reason: problem.reason)
        }
    }

    /// Decodes bucket row `bucketID` into `row`, from the cache when it was decoded before.
    private mutating func decodeCachedBucketRow(_ bucketID: UInt32, in txn: borrowing Transaction,
                                                into row: UnsafeMutableBufferPointer<Float>) throws {
        if let cached = bucketRows[bucketID] {
            _ = row.update(fromContentsOf: cached)
            return
        }
        try decodeBucketRow(bucketID, in: txn, into: row)
        if cachedFloats + row.count <= Self.bucketCacheLimit {
            bucketRows[bucketID] = Array(row)
            cachedFloats += row.count
        }
    }

    /// Decodes bucket row `bucketID` into `row`.
    func decodeBucketRow(_ bucketID: UInt32, in txn: borrowing Transaction, into row: UnsafeMutableBufferPointer<Float>) throws {
        try txn.withValue(forKey: UInt64(bucketID), in: table.buckets) { record throws in
            guard let record else { throw RecordProblem("points at bucket \(bucketID), which does not exist") }
            let (tag, payload): (RecordTag, UnsafeRawBufferPointer)
            do {
                (tag, payload) = try RowRecord.split(record, dimension: table.dimension)
            } catch let problem as RecordProblem {
                throw RecordProblem("its bucket \(bucketID) is damaged: \(problem.reason)")
            }
            guard tag.isAllowedForBucketRows else { throw RecordProblem("its bucket \(bucketID) has codec \(tag), which bucket rows cannot use") }
            RowRecord.decodePlain(tag, payload, into: row)
        }
    }

    /// The basis `basisID`, read once per decoder.
    mutating func basis(_ basisID: UInt32, in txn: borrowing Transaction) throws -> PCABasis {
        if let basis = bases[basisID] { return basis }
        let basis = try txn.withValue(forKey: UInt64(basisID), in: table.bases) { bytes throws -> PCABasis in
            guard let bytes else { throw RecordProblem("points at PCA basis \(basisID), which does not exist") }
            return try BasisRecord.decode(bytes, table: table.name, basisID: basisID)
        }
        guard basis.dimension == table.dimension else {
            throw StoreError.corruptMetadata(table: table.name, reason: "basis \(basisID) has dimension \(basis.dimension)")
        }
        bases[basisID] = basis
        return basis
    }
}
