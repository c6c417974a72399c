import CEmbeddingKernels
import EmbeddingCodecs
import LMDB

/// A table's parameter records and bucket rows, as its decoders see them in one snapshot.
/// Valid only while the transaction it was made from is active.
struct TableParameters: CodecParameterSource {
    let view: TransactionView
    /// Unowned: the caller holds the table for the transaction's lifetime, and copies of this
    /// value (one per decoder call) then cost no reference counting.
    unowned(unsafe) let table: Table

    init(_ txn: borrowing Transaction, table: Table) {
        view = txn.unsafeView
        self.table = table
    }

    /// Parameter record `id`, its seal checked (version 5): decoders cache what they make of
    /// it, so a seal is checked once per reader and record, not per row.
    func parameterRecord(_ id: UInt32) throws -> UnsafeRawBufferPointer? {
        try view.unsafeValue(forKey: UInt64(id), in: table.bases).map {
            try table.unsealed($0, key: UInt64(id), what: "parameter record \(id)")
        }
    }

    /// Bucket row `id`, its seal checked (version 5; decoders cache decoded bucket rows).
    func bucketRecord(_ id: UInt32) throws -> UnsafeRawBufferPointer? {
        try view.unsafeValue(forKey: UInt64(id), in: table.buckets).map {
            try table.unsealed($0, key: UInt64(id), what: "bucket row \(id)")
        }
    }
}

/// The decoders of one table, one per codec tag met, made on first use. Lookups, export and
/// verify all decode through it, so every record is checked the same way and a refused record
/// is named the same way. Not thread-safe: one per reader or scan.
final class TableDecoders {
    let table: Table
    /// By tag; nil until the first record of that tag.
    private let decoders = UnsafeMutablePointer<(any RowDecoder)?>.allocate(capacity: 256)
    /// By tag: whether its codec decodes faster in batches (`RowCodec.decodesInBatches`).
    private let batched = UnsafeMutablePointer<Bool>.allocate(capacity: 256)
    /// By tag: how `emb_pool_bags` adds its records (`RowCodec.pooledRowKind`).
    let pooledRowKinds = UnsafeMutablePointer<UInt8>.allocate(capacity: 256)

    init(table: Table) {
        self.table = table
        decoders.initialize(repeating: nil, count: 256)
        batched.initialize(repeating: false, count: 256)
        pooledRowKinds.initialize(repeating: UInt8(EMB_ROW_KIND_NONE), count: 256)
        for tag in 0..<256 {
            guard let codec = RowCodecs.codec(tag: UInt8(tag)) else { continue }
            batched[tag] = codec.decodesInBatches
            pooledRowKinds[tag] = codec.pooledRowKind
        }
    }

    deinit {
        decoders.deinitialize(count: 256)
        decoders.deallocate()
        batched.deallocate()
        pooledRowKinds.deallocate()
    }

    /// True when records of `tag` decode faster gathered over a batch (`RowCodec.decodesInBatches`).
    @inline(__always)
    func decodesInBatches(_ tag: UInt8) -> Bool { batched[Int(tag)] }

    /// The key batched records are grouped by: their tag, then their parameter record.
    func batchKey(_ record: UnsafeRawBufferPointer) -> UInt64 {
        let tag = Self.tag(of: record)
        return UInt64(tag) << 32 | UInt64(RowCodecs.codec(tag: tag)?.parameterID(of: record) ?? 0)
    }

    /// The decoder of `tag`'s codec, nil for a tag no codec has.
    @inline(__always)
    private func decoder(_ tag: UInt8) -> (any RowDecoder)? {
        if let decoder = decoders[Int(tag)] { return decoder }
        guard let codec = RowCodecs.codec(tag: tag) else { return nil }
        let decoder = codec.makeDecoder(dimension: table.dimension)
        decoders[Int(tag)] = decoder
        return decoder
    }

    /// Decodes `count` records that all start with `tag` into consecutive rows at `out`.
    /// Throws `corruptRecord` naming the id (from `ids`) of the first record refused.
    @inline(__always)
    func decode(_ records: UnsafePointer<UnsafeRawBufferPointer>, tag: UInt8, ids: UnsafePointer<UInt64>, count: Int,
                into out: UnsafeMutablePointer<Float>, parameters: TableParameters) throws {
        guard let decoder = decoder(tag) else {
            throw refused(records[0], id: ids[0], reason: unknownTag(records[0]))
        }
        let decoded = try decoder.decode(records, count: count, into: out, parameters: parameters)
        if decoded < count {
            throw refused(records[decoded], id: ids[decoded], reason: decoder.problem(with: records[decoded], parameters: parameters))
        }
    }

    /// Decodes one record (`table.dimension` floats into `row`).
    func decode(_ record: UnsafeRawBufferPointer, id: UInt64, into row: UnsafeMutablePointer<Float>, parameters: TableParameters) throws {
        var record = record
        var id = id
        try decode(&record, tag: Self.tag(of: record), ids: &id, count: 1, into: row, parameters: parameters)
    }

    /// Adds `weights[r] ×` each decoded record (all starting with `tag`; weights nil: 1) to
    /// `acc`, with the float operations of decoding then adding. Throws `corruptRecord` naming the
    /// id (from `ids`) of the first record refused.
    @inline(__always)
    func accumulate(_ records: UnsafePointer<UnsafeRawBufferPointer>, tag: UInt8, ids: UnsafePointer<UInt64>,
                    weights: UnsafePointer<Float>?, count: Int, into acc: UnsafeMutablePointer<Float>,
                    parameters: TableParameters) throws {
        guard let decoder = decoder(tag) else { throw refused(records[0], id: ids[0], reason: unknownTag(records[0])) }
        let added = try decoder.accumulate(records, weights: weights, count: count, into: acc, parameters: parameters)
        if added < count {
            throw refused(records[added], id: ids[added], reason: decoder.problem(with: records[added], parameters: parameters))
        }
    }

    /// True when `emb_pool_bags` adds records of `tag` itself.
    @inline(__always)
    func poolsInKernel(_ tag: UInt8) -> Bool { pooledRowKinds[Int(tag)] != UInt8(EMB_ROW_KIND_NONE) }

    /// The error for `record` (of `id`), which its codec refuses: what its decoder finds wrong.
    func refusal(_ record: UnsafeRawBufferPointer, id: UInt64, parameters: TableParameters) -> StoreError {
        guard let decoder = decoder(Self.tag(of: record)) else { return refused(record, id: id, reason: unknownTag(record)) }
        return refused(record, id: id, reason: decoder.problem(with: record, parameters: parameters))
    }

    /// A record's tag byte; 0 (never a codec's) for an empty record.
    @inline(__always)
    static func tag(of record: UnsafeRawBufferPointer) -> UInt8 {
        record.isEmpty ? 0 : record[0]
    }

    private func unknownTag(_ record: UnsafeRawBufferPointer) -> String {
        record.isEmpty ? "the record is empty" : "unknown codec tag \(record[0])"
    }

    private func refused(_ record: UnsafeRawBufferPointer, id: UInt64, reason: String) -> StoreError {
        .corruptRecord(table: table.name, id: id, reason: reason)
    }
}
