import LMDB
import EmbeddingCodecs

/// The writes of one `Store.write` call: all committed together or not at all.
///
/// Rows go to the table's per-key rows database. `put` takes the full-precision row and the
/// codec to store it with; the codecs that need table parameters use the table's current ones
/// (`reduced(k)`: its PCA basis; `bucket`: the nearest of its bucket rows).
public struct WriteBatch: ~Copyable {
    let store: Store
    /// The generation the transaction belongs to; tables are this generation's handles.
    let generation: Generation
    let txn: Transaction
    /// Record bytes are encoded here first, so a row that fails to encode leaves nothing behind.
    private var scratch: [UInt8] = []
    /// Encoders resolved in this batch by table and codec; cleared when the batch adds parameters.
    private var encoders: [EncoderKey: any RowEncoder] = [:]
    /// The format version this batch has made sure the store has (FORMAT.md, "Format versions").
    private var formatEnsured: UInt32 = 1

    private struct EncoderKey: Hashable {
        let table: UInt32
        let codec: Codec
    }

    init(store: Store, generation: Generation, transaction: consuming Transaction) {
        self.store = store
        self.generation = generation
        self.txn = transaction
    }

    consuming func commit() throws {
        try txn.commit()
    }

    // MARK: - Rows

    /// Stores `vector` under `id` with `codec`, replacing any previous row. Codecs that need
    /// table parameters use the table's current ones (`reduced:K`: its current PCA basis;
    /// `bucket`: the nearest of its bucket rows).
    public mutating func put(_ table: Table, id: UInt64, vector: UnsafeBufferPointer<Float>, codec: Codec) throws {
        let table = try generation.local(table)
        try Self.validate(vector, table: table, row: 0, id: id)
        let encoder = try encoder(codec, for: table)
        try putEncoded(table, id: id, vector: vector, index: nil, encoder: encoder, codec: codec, flags: [])
    }

    /// Stores `vector` under `id` with `codec`, replacing any previous row.
    public mutating func put(_ table: Table, id: UInt64, vector: [Float], codec: Codec) throws {
        try vector.withUnsafeBufferPointer { try put(table, id: id, vector: $0, codec: codec) }
    }

    /// Stores a row that points at bucket row `bucket`, with an optional per-row scale.
    public mutating func putBucketPointer(_ table: Table, id: UInt64, bucket: UInt32, scale: Float? = nil) throws {
        let table = try generation.local(table)
        let exists = try txn.withValue(forKey: UInt64(bucket), in: table.buckets) { $0 != nil }
        guard exists else { throw StoreError.invalidArgument("table '\(table.name)' has no bucket row \(bucket)") }
        if let scale, !scale.isFinite { throw StoreError.invalidArgument("bucket scale \(scale) for id \(id) is not finite") }
        let record = try BucketCodec.record(bucket: bucket, scale: scale)
        try table.sealing(record, key: id).withUnsafeBytes { try txn.put($0, forKey: id, in: table.rows) }
    }

    /// Deletes the row `id`; returns false when there was none. When a segment holds the id,
    /// a tombstone in the delta hides it (segments are immutable until repacked).
    @discardableResult
    public mutating func delete(_ table: Table, id: UInt64) throws -> Bool {
        let table = try generation.local(table)
        let deltaRecord = try txn.withValue(forKey: id, in: table.rows) { value in try value.map { isTombstone(try table.deltaRecord($0, id: id)) ? 0 : 1 } }
        if deltaRecord == 0 { return false }   // already deleted
        guard try store.segmentsHold(table, id: id, in: txn) else {
            return try txn.delete(id, in: table.rows)
        }
        try table.sealing([tombstoneTag], key: id).withUnsafeBytes { try txn.put($0, forKey: id, in: table.rows) }
        return true
    }

    /// Encodes `vector` (row `index` of a load, nil for a put) and stores it under `id`.
    mutating func putEncoded(_ table: Table, id: UInt64, vector: UnsafeBufferPointer<Float>, index: Int?, encoder: any RowEncoder,
                             codec: Codec, flags: PutFlags) throws {
        let table = try generation.local(table)
        try ensureFormat(codec.rowCodec.formatVersion)
        let capacity = encoder.maximumRecordSize
        if scratch.count < capacity + RecordSeal.size { scratch = [UInt8](repeating: 0, count: capacity + RecordSeal.size) }
        try scratch.withUnsafeMutableBytes { buffer in
            var size: Int
            do {
                size = try encoder.encode(vector, index: index, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<capacity]))
            } catch let error as CodecError {
                throw StoreError.encoding(table: table.name, id: id, codec: codec.description, underlying: error)
            }
            if table.sealed { size = RecordSeal.seal(buffer, count: size, key: id) }
            try txn.put(UnsafeRawBufferPointer(rebasing: buffer[0..<size]), forKey: id, in: table.rows, flags: flags)
        }
    }

    /// Stores `record` (tag + payload, made by a load) under `id`, sealed, and raises the store
    /// to `formatVersion` in this batch's commit.
    mutating func putRecord(_ table: Table, id: UInt64, record: UnsafeRawBufferPointer, formatVersion: UInt32, flags: PutFlags) throws {
        let table = try generation.local(table)
        try ensureFormat(formatVersion)
        if scratch.count < record.count + RecordSeal.size { scratch = [UInt8](repeating: 0, count: record.count + RecordSeal.size) }
        try scratch.withUnsafeMutableBytes { buffer in
            buffer.copyMemory(from: record)
            let size = table.sealed ? RecordSeal.seal(buffer, count: record.count, key: id) : record.count
            try txn.put(UnsafeRawBufferPointer(rebasing: buffer[0..<size]), forKey: id, in: table.rows, flags: flags)
        }
    }

    /// Raises the store to `version` in this batch's commit when it is older (once per batch).
    mutating func ensureFormat(_ version: UInt32) throws {
        guard version > formatEnsured else { return }
        try store.upgradeFormat(to: version, in: txn)
        formatEnsured = version
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

    /// The encoder of `codec` with the table's current parameters, made once per batch.
    mutating func encoder(_ codec: Codec, for table: Table) throws -> any RowEncoder {
        let key = EncoderKey(table: table.id, codec: codec)
        if let encoder = encoders[key] { return encoder }
        let encoder: any RowEncoder
        do {
            encoder = try codec.rowCodec.putEncoder(codec, table: try tableState(table))
        } catch let error as CodecError {
            throw StoreError(error, table: table.name, codec: codec)
        }
        encoders[key] = encoder
        return encoder
    }

    /// What a codec may encode with: the table's parameter records and bucket rows in this
    /// transaction.
    private func tableState(_ table: Table) throws -> WriteTableState {
        let schema = try generation.schemaRecord(of: table, in: txn).schema
        func keys(_ database: Database) throws -> [UInt32] {
            try txn.withCursor(database) { cursor in
                var ids: [UInt32] = []
                var entry = try cursor.first()
                while let current = entry {
                    guard let key = current.integerKey, key <= UInt64(UInt32.max) else {
                        throw StoreError.corruptMetadata(table: table.name, reason: "a key of \(database.name ?? "?") is not a 32-bit id")
                    }
                    ids.append(UInt32(key))
                    entry = try cursor.next()
                }
                return ids
            }
        }
        return WriteTableState(parameters: TableParameters(txn, table: table), dimension: table.dimension,
                               currentBasisID: schema.currentBasisID, parameterIDList: try keys(table.bases),
                               bucketIDList: try keys(table.buckets))
    }

    // MARK: - Codec parameters

    /// Stores `basis` as the table's new PCA basis for `reduced` rows and returns its id.
    /// Rows written earlier keep decoding with the basis they were written with.
    @discardableResult
    public mutating func addBasis(_ basis: PCABasis, to table: Table) throws -> UInt32 {
        let table = try generation.local(table)
        guard basis.dimension == table.dimension else {
            throw StoreError.dimensionMismatch(table: table.name, expected: table.dimension, actual: basis.dimension)
        }
        return try addParameterRecord(basis.record, to: table, makeCurrentBasis: true)
    }

    /// Stores a parameter record (FORMAT.md, `t<T>/bases`) under the table's next parameter id
    /// and returns the id; with `makeCurrentBasis` it becomes the basis of new `reduced` rows.
    mutating func addParameterRecord(_ record: [UInt8], to table: Table, makeCurrentBasis: Bool) throws -> UInt32 {
        let table = try generation.local(table)
        let schemaRecord = try generation.schemaRecord(of: table, in: txn)
        var schema = schemaRecord.schema
        let id = schema.nextBasisID
        guard id < UInt32.max else { throw StoreError.invalidArgument("table '\(table.name)' has used every parameter id") }
        try table.sealing(record, key: UInt64(id)).withUnsafeBytes { try txn.put($0, forKey: UInt64(id), in: table.bases) }
        if TypedParameterKind.isTyped(record) {
            try ensureFormat(StoreFormat.typedParametersVersion)
        }
        if makeCurrentBasis { schema.currentBasisID = id }
        schema.nextBasisID += 1
        try generation.putMetaRecord(schema.encode(), key: schemaRecord.key, in: txn)
        encoders = [:]
        return id
    }

    /// Appends bucket rows (`count` rows of `table.dimension` values, row-major) stored with
    /// `codec` (one that needs no table parameters: `RowCodecs.bucketRowCodecNames`) and returns their ids.
    public mutating func addBucketRows(_ table: Table, rows: UnsafeBufferPointer<Float>, codec: Codec) throws -> Range<UInt32> {
        let table = try generation.local(table)
        let d = table.dimension
        guard rows.count % d == 0 else {
            throw StoreError.dimensionMismatch(table: table.name, expected: d, actual: rows.count % d)
        }
        guard codec.rowCodec.canStoreBucketRows else {
            throw StoreError.invalidArgument("bucket rows must use a codec without table parameters (\(RowCodecs.bucketRowCodecNames)), not \(codec)")
        }
        let encoder = try self.encoder(codec, for: table)
        try ensureFormat(codec.rowCodec.formatVersion)
        let schemaRecord = try generation.schemaRecord(of: table, in: txn)
        var schema = schemaRecord.schema
        let count = rows.count / d
        guard UInt64(schema.nextBucketID) + UInt64(count) <= UInt64(UInt32.max) else {
            throw StoreError.invalidArgument("table '\(table.name)' would exceed \(UInt32.max) bucket ids")
        }
        let first = schema.nextBucketID
        var record = [UInt8](repeating: 0, count: encoder.maximumRecordSize + RecordSeal.size)
        for i in 0..<count {
            let row = UnsafeBufferPointer(rebasing: rows[i * d..<(i + 1) * d])
            let bucket = UInt64(first) + UInt64(i)
            try Self.validate(row, table: table, row: i, id: bucket)
            try record.withUnsafeMutableBytes { buffer in
                var size: Int
                do {
                    try encoder.check(row)
                    size = try encoder.encode(row, index: nil, into: UnsafeMutableRawBufferPointer(rebasing: buffer.dropLast(RecordSeal.size)))
                } catch let error as CodecError {
                    throw StoreError.encoding(table: table.name, id: bucket, codec: "bucket row \(codec)", underlying: error)
                }
                if table.sealed { size = RecordSeal.seal(buffer, count: size, key: bucket) }
                try txn.put(UnsafeRawBufferPointer(rebasing: buffer[0..<size]), forKey: bucket, in: table.buckets)
            }
        }
        schema.nextBucketID = first + UInt32(count)
        try generation.putMetaRecord(schema.encode(), key: schemaRecord.key, in: txn)
        encoders = [:]
        return first..<schema.nextBucketID
    }

    /// Adds bucket row records as they are (tag and payload, unsealed; a grow copies another
    /// shard's), under the next bucket ids; returns the ids they got.
    mutating func addBucketRecords(_ table: Table, _ records: [[UInt8]]) throws -> Range<UInt32> {
        let table = try generation.local(table)
        let schemaRecord = try generation.schemaRecord(of: table, in: txn)
        var schema = schemaRecord.schema
        let first = schema.nextBucketID
        guard UInt64(first) + UInt64(records.count) <= UInt64(UInt32.max) else {
            throw StoreError.invalidArgument("table '\(table.name)' would exceed \(UInt32.max) bucket ids")
        }
        for (i, record) in records.enumerated() {
            guard let tag = record.first, let codec = RowCodecs.codec(tag: tag), codec.canStoreBucketRows else {
                throw StoreError.invalidArgument("bucket row \(i) of table '\(table.name)' is not a record of \(RowCodecs.bucketRowCodecNames)")
            }
            try ensureFormat(codec.formatVersion)
            let bucket = UInt64(first) + UInt64(i)
            try table.sealing(record, key: bucket).withUnsafeBytes { try txn.put($0, forKey: bucket, in: table.buckets) }
        }
        schema.nextBucketID = first + UInt32(records.count)
        try generation.putMetaRecord(schema.encode(), key: schemaRecord.key, in: txn)
        encoders = [:]
        return first..<schema.nextBucketID
    }
}

/// A table's parameters as a put sees them inside its write transaction.
struct WriteTableState: CodecTableState {
    let parameters: TableParameters
    let dimension: Int
    let currentBasisID: UInt32
    let parameterIDList: [UInt32]
    let bucketIDList: [UInt32]

    func parameterRecord(_ id: UInt32) throws -> UnsafeRawBufferPointer? { try parameters.parameterRecord(id) }
    func bucketRecord(_ id: UInt32) throws -> UnsafeRawBufferPointer? { try parameters.bucketRecord(id) }
    func parameterIDs() throws -> [UInt32] { parameterIDList }
    func bucketIDs() throws -> [UInt32] { bucketIDList }
}

extension StoreError {
    /// A codec's refusal, for `table` and `codec`.
    init(_ error: CodecError, table: String, codec: Codec) {
        switch error {
        case .missingParameters(let reason): self = .missingCodecParameters(table: table, reason: reason)
        default: self = .invalidArgument("codec \(codec) for table '\(table)': \(error)")
        }
    }
}
