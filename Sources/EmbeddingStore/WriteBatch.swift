import LMDB
import EmbeddingCodecs

/// The writes of one `Store.write` call: all committed together or not at all.
///
/// Rows go to the table's per-key rows database. `put` takes the full-precision row and the
/// codec to store it with; the codecs that need table parameters use the table's current ones
/// (`reduced(k)`: its PCA basis; `bucket`: the nearest of its bucket rows).
public struct WriteBatch: ~Copyable {
    let store: Store
    let txn: Transaction
    /// Record bytes are encoded here first, so a row that fails to encode leaves nothing behind.
    private var scratch: [UInt8] = []
    private var bases: [UInt32: [UInt32: PCABasis]] = [:]
    private var codebooks: [UInt32: (nextBucketID: UInt32, ids: [UInt32], codebook: KMeansCodebook)] = [:]

    init(store: Store, transaction: consuming Transaction) {
        self.store = store
        self.txn = transaction
    }

    consuming func commit() throws {
        try txn.commit()
    }

    // MARK: - Rows

    /// Stores `vector` under `id` with `codec`, replacing any previous row.
    public mutating func put(_ table: Table, id: UInt64, vector: UnsafeBufferPointer<Float>, codec: Codec) throws {
        try table.requireLive()
        try Self.validate(vector, table: table, row: 0, id: id)
        let encoding = try resolve(codec, for: table, vector: vector)
        try putEncoded(table, id: id, vector: vector, encoding: encoding, codec: codec, flags: [])
    }

    /// Stores `vector` under `id` with `codec`, replacing any previous row.
    public mutating func put(_ table: Table, id: UInt64, vector: [Float], codec: Codec) throws {
        try vector.withUnsafeBufferPointer { try put(table, id: id, vector: $0, codec: codec) }
    }

    /// Stores a row that points at bucket row `bucket`, with an optional per-row scale.
    public mutating func putBucketPointer(_ table: Table, id: UInt64, bucket: UInt32, scale: Float? = nil) throws {
        try table.requireLive()
        let exists = try txn.withValue(forKey: UInt64(bucket), in: table.buckets) { $0 != nil }
        guard exists else { throw StoreError.invalidArgument("table '\(table.name)' has no bucket row \(bucket)") }
        if let scale, !scale.isFinite { throw StoreError.invalidArgument("bucket scale \(scale) for id \(id) is not finite") }
        let encoding: RowEncoding = scale.map { .scaledBucket(id: bucket, scale: $0) } ?? .bucket(id: bucket)
        try putEncoded(table, id: id, vector: UnsafeBufferPointer(start: nil, count: 0), encoding: encoding,
                       codec: scale == nil ? .bucket : .scaledBucket, flags: [])
    }

    /// Deletes the row `id`; returns false when there was none. When a segment holds the id,
    /// a tombstone in the delta hides it (segments are immutable until repacked).
    @discardableResult
    public mutating func delete(_ table: Table, id: UInt64) throws -> Bool {
        try table.requireLive()
        let deltaRecord = try txn.withValue(forKey: id, in: table.rows) { record in record.map { isTombstone($0) ? 0 : 1 } }
        if deltaRecord == 0 { return false }   // already deleted
        guard try store.segmentsHold(table, id: id, in: txn) else {
            return try txn.delete(id, in: table.rows)
        }
        try withUnsafeBytes(of: tombstoneTag) { try txn.put($0, forKey: id, in: table.rows) }
        return true
    }

    mutating func putEncoded(_ table: Table, id: UInt64, vector: UnsafeBufferPointer<Float>, encoding: RowEncoding,
                             codec: Codec, flags: PutFlags) throws {
        let size = encoding.recordSize(dimension: table.dimension)
        if scratch.count < size { scratch = [UInt8](repeating: 0, count: size) }
        try scratch.withUnsafeMutableBytes { buffer in
            let record = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size])
            do {
                try encoding.encode(vector, into: record)
            } catch let error as CodecError {
                throw StoreError.encoding(table: table.name, id: id, codec: codec.description, underlying: error)
            }
            try txn.put(UnsafeRawBufferPointer(record), forKey: id, in: table.rows, flags: flags)
        }
    }

    /// Refuses rows of the wrong width or with NaN/infinity.
    static func validate(_ vector: UnsafeBufferPointer<Float>, table: Table, row: Int, id: UInt64) throws(StoreError) {
        guard vector.count == table.dimension else {
            throw .dimensionMismatch(table: table.name, expected: table.dimension, actual: vector.count)
        }
        if let column = vector.firstIndex(where: { !$0.isFinite }) {
            throw .nonFiniteValue(table: table.name, row: row, id: id, column: column, value: vector[column])
        }
    }

    /// Turns a codec into a concrete encoding with the table's current parameters.
    mutating func resolve(_ codec: Codec, for table: Table, vector: UnsafeBufferPointer<Float>) throws -> RowEncoding {
        if let plain = RowEncoding(plain: codec) { return plain }
        switch codec {
        case .fp32, .fp16, .int8, .int4: preconditionFailure("plain codecs are resolved above")
        case .reduced(let k):
            let schema = try store.readSchema(table.name, in: txn)
            guard schema.currentBasisID != 0 else {
                throw StoreError.missingCodecParameters(table: table.name, reason:
                    "reduced rows need a PCA basis; fit one with WriteBatch.addBasis or load with codec reduced:K")
            }
            let basis = try basis(schema.currentBasisID, of: table)
            guard k >= 1, k <= basis.rank, k < table.dimension else {
                throw StoreError.invalidArgument("reduced:\(k) for table '\(table.name)': k must be in 1...\(min(basis.rank, table.dimension - 1)) (basis rank \(basis.rank), dimension \(table.dimension))")
            }
            return .reduced(k: k, basisID: schema.currentBasisID, basis: basis)
        case .bucket, .scaledBucket:
            let (ids, codebook) = try codebook(of: table)
            var index: UInt32 = 0
            var scale: Float = 1
            withUnsafeMutablePointer(to: &index) { indexPointer in
                let indexBuffer = UnsafeMutableBufferPointer(start: indexPointer, count: 1)
                if codec == .bucket {
                    codebook.assign(rows: vector, count: 1, into: indexBuffer)
                } else {
                    withUnsafeMutablePointer(to: &scale) { scalePointer in
                        codebook.assignScaled(rows: vector, count: 1, into: indexBuffer,
                                              scales: UnsafeMutableBufferPointer(start: scalePointer, count: 1))
                    }
                }
            }
            let bucket = ids[Int(index)]
            return codec == .bucket ? .bucket(id: bucket) : .scaledBucket(id: bucket, scale: scale)
        }
    }

    // MARK: - Codec parameters

    /// Stores `basis` as the table's new PCA basis for `reduced` rows and returns its id.
    /// Rows written earlier keep decoding with the basis they were written with.
    @discardableResult
    public mutating func addBasis(_ basis: PCABasis, to table: Table) throws -> UInt32 {
        try table.requireLive()
        guard basis.dimension == table.dimension else {
            throw StoreError.dimensionMismatch(table: table.name, expected: table.dimension, actual: basis.dimension)
        }
        var schema = try store.readSchema(table.name, in: txn)
        let basisID = schema.nextBasisID
        try BasisRecord.encode(basis).withUnsafeBytes { try txn.put($0, forKey: UInt64(basisID), in: table.bases) }
        schema.currentBasisID = basisID
        schema.nextBasisID += 1
        try store.writeSchema(schema, name: table.name, in: txn)
        bases[table.id, default: [:]][basisID] = basis
        return basisID
    }

    /// Appends bucket rows (`count` rows of `table.dimension` values, row-major) stored with
    /// `codec` (fp32, fp16, int8 or int4) and returns their ids.
    public mutating func addBucketRows(_ table: Table, rows: UnsafeBufferPointer<Float>, codec: Codec) throws -> Range<UInt32> {
        try table.requireLive()
        let d = table.dimension
        guard rows.count % d == 0 else {
            throw StoreError.dimensionMismatch(table: table.name, expected: d, actual: rows.count % d)
        }
        guard let encoding = RowEncoding(plain: codec) else {
            throw StoreError.invalidArgument("bucket rows must use fp32, fp16, int8 or int4, not \(codec)")
        }
        var schema = try store.readSchema(table.name, in: txn)
        let count = rows.count / d
        guard UInt64(schema.nextBucketID) + UInt64(count) <= UInt64(UInt32.max) else {
            throw StoreError.invalidArgument("table '\(table.name)' would exceed \(UInt32.max) bucket ids")
        }
        let first = schema.nextBucketID
        let size = encoding.recordSize(dimension: d)
        var record = [UInt8](repeating: 0, count: size)
        for i in 0..<count {
            let row = UnsafeBufferPointer(rebasing: rows[i * d..<(i + 1) * d])
            try Self.validate(row, table: table, row: i, id: UInt64(first) + UInt64(i))
            try record.withUnsafeMutableBytes { buffer in
                do {
                    try encoding.encode(row, into: buffer)
                } catch let error as CodecError {
                    throw StoreError.encoding(table: table.name, id: UInt64(first) + UInt64(i), codec: "bucket row \(codec)", underlying: error)
                }
                try txn.put(UnsafeRawBufferPointer(buffer), forKey: UInt64(first) + UInt64(i), in: table.buckets)
            }
        }
        schema.nextBucketID = first + UInt32(count)
        try store.writeSchema(schema, name: table.name, in: txn)
        return first..<schema.nextBucketID
    }

    private mutating func basis(_ basisID: UInt32, of table: Table) throws -> PCABasis {
        if let basis = bases[table.id]?[basisID] { return basis }
        var decoder = RecordDecoder(table: table)
        let basis = try decoder.basis(basisID, in: txn)
        bases[table.id, default: [:]][basisID] = basis
        return basis
    }

    /// The table's bucket rows, decoded, as a codebook to assign new rows with.
    private mutating func codebook(of table: Table) throws -> ([UInt32], KMeansCodebook) {
        let schema = try store.readSchema(table.name, in: txn)
        if let cached = codebooks[table.id], cached.nextBucketID == schema.nextBucketID {
            return (cached.ids, cached.codebook)
        }
        let d = table.dimension
        var ids: [UInt32] = []
        var centroids: [Float] = []
        let decoder = RecordDecoder(table: table)
        var row = [Float](repeating: 0, count: d)
        try txn.withCursor(table.buckets) { cursor in
            var entry = try cursor.first()
            while let current = entry {
                guard let key = current.integerKey, key <= UInt64(UInt32.max) else {
                    throw StoreError.corruptMetadata(table: table.name, reason: "bucket key is not a 32-bit id")
                }
                ids.append(UInt32(key))
                entry = try cursor.next()
            }
        }
        for bucket in ids {
            try row.withUnsafeMutableBufferPointer { try decoder.decodeBucketRow(bucket, in: txn, into: $0) }
            centroids.append(contentsOf: row)
        }
        guard !ids.isEmpty else {
            throw StoreError.missingCodecParameters(table: table.name, reason:
                "bucket rows need shared bucket rows; add them with WriteBatch.addBucketRows or load with codec bucket:B")
        }
        let codebook = try KMeansCodebook(dimension: d, count: ids.count, centroids: centroids)
        codebooks[table.id] = (schema.nextBucketID, ids, codebook)
        return (ids, codebook)
    }
}
