import LMDB
import EmbeddingCodecs

/// Settings of a bulk load.
public struct LoadOptions: Sendable {
    /// The fits a codec runs first (sample size, k-means iterations, the bucket rows' codec).
    public var fit = FitOptions()
    /// Codec of the bucket rows that `bucket:B` creates.
    public var bucketCodec: Codec {
        get { fit.bucketCodec }
        set { fit.bucketCodec = newValue }
    }
    /// Rows per write transaction (LMDB caps the pages one transaction may dirty).
    public var rowsPerTransaction = 65_536
    /// Where the rows go: one new segment (the default), or one LMDB key per row, the delta
    /// layer that `put` writes (slower to read and about 19 bytes more per row; for tests and
    /// for comparing the two layers).
    public var layout: LoadLayout = .segment
    /// Approximate bytes per segment data part (one LMDB value each).
    public var segmentPartBytes = Store.segmentPartBytes
    public init() {}
}

/// Where a bulk load writes its rows.
public enum LoadLayout: Sendable {
    /// One packed, indexed segment, made visible in one commit.
    case segment
    /// One LMDB key per row, in transactions of `LoadOptions.rowsPerTransaction` rows.
    case perKey
}

/// What a bulk load did.
public struct LoadReport: Sendable {
    public let table: String
    public let rows: Int
    public let codec: Codec
    /// The parameter records the load stored first (a PCA basis for `reduced:K`).
    public let parameterIDs: [UInt32]
    /// The bucket rows written for `bucket:B` (fewer than B when there were fewer rows).
    public let bucketIDs: Range<UInt32>?
    /// The PCA basis a `reduced:K` load made the table's current one.
    public let basisID: UInt32?
}

extension Store {
    /// Loads `count` rows (`rows` is `count × dimension` floats, row-major) into the table
    /// `name`, creating it with this dimension when it does not exist, every row with `codec`.
    ///
    /// `ids` defaults to `0..<count`. Everything is checked before anything is written: the
    /// shape, the ids (no duplicates), that every value is finite, and that every row fits the
    /// codec; the first bad row is named in the error. Codec parameters (PCA basis, k-means
    /// bucket rows) are fitted on these rows.
    ///
    /// Rows become one new segment, which shadows older segments and replaces the table's delta
    /// rows of the same ids; it becomes visible in one commit, so a crash part-way leaves the
    /// table's rows as they were. With `options.layout = .perKey` rows go to the delta instead,
    /// in transactions of `options.rowsPerTransaction` rows, and a crash keeps the ones committed.
    @discardableResult
    public func load(table name: String, ids: [UInt64]? = nil, rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int,
                     codec: Codec, options: LoadOptions = LoadOptions()) throws -> LoadReport {
        try requireWritable()
        try Store.validateTableName(name)
        guard dimension >= 1 else {
            throw StoreError.invalidArgument("rows for table '\(name)' have dimension \(dimension); it must be at least 1")
        }
        guard count >= 0, rows.count == count * dimension else {
            throw StoreError.invalidArgument("rows hold \(rows.count) floats, not \(count) rows × \(dimension)")
        }
        let ids = ids ?? (0..<UInt64(count)).map { $0 }
        guard ids.count == count else {
            throw StoreError.invalidArgument("\(ids.count) ids for \(count) rows")
        }
        let order = try Self.sortedOrder(ids)
        try Self.checkFinite(rows, dimension: dimension, ids: ids, table: name)

        let existing = try? table(name)
        if let existing, existing.dimension != dimension {
            throw StoreError.dimensionMismatch(table: name, expected: existing.dimension, actual: dimension)
        }
        guard count > 0 else {
            _ = try existing ?? createTable(name, dimension: dimension)
            return LoadReport(table: name, rows: 0, codec: codec, parameterIDs: [], bucketIDs: nil, basisID: nil)
        }
        // Fit the codec's parameters on (a sample of) the rows and check every row fits the
        // codec, all before the table is created or anything is written.
        let plan: LoadPlan
        do {
            var fit = options.fit
            fit.overheadBytesPerRow = Self.overheadBytesPerRow(ids: ids, order: order, layout: options.layout)
            plan = try codec.rowCodec.planLoad(codec, rows: rows, count: count, dimension: dimension, options: fit)
            if let check = plan.checkRow {
                for i in 0..<count {
                    do {
                        try check(UnsafeBufferPointer(rebasing: rows[i * dimension..<(i + 1) * dimension]))
                    } catch let error as CodecError {
                        throw StoreError.encoding(table: name, id: ids[i], codec: "\(codec) (row \(i))", underlying: error)
                    }
                }
            }
        } catch let error as CodecError {
            throw StoreError(error, table: name, codec: codec)
        }
        let table = try existing ?? createTable(name, dimension: dimension)

        // Store what the rows point at, then make the encoder.
        let (parameterIDs, bucketIDs, storedBucketRows) = try write { batch in
            var parameterIDs: [UInt32] = []
            for (index, record) in plan.parameterRecords.enumerated() {
                parameterIDs.append(try batch.addParameterRecord(try record(parameterIDs), to: table,
                                                                 makeCurrentBasis: plan.makesCurrentBasis && index == plan.parameterRecords.count - 1))
            }
            guard let bucketCodec = plan.bucketCodec, !plan.bucketRows.isEmpty else {
                return (parameterIDs, Range<UInt32>?.none, [Float]())
            }
            let range = try plan.bucketRows.withUnsafeBufferPointer { try batch.addBucketRows(table, rows: $0, codec: bucketCodec) }
            return (parameterIDs, range, try batch.decodeBucketRows(table, range))
        }
        let encoder: any RowEncoder
        do {
            encoder = try plan.makeEncoder(parameterIDs, bucketIDs, storedBucketRows)
        } catch let error as CodecError {
            throw StoreError(error, table: name, codec: codec)
        }
        let report = LoadReport(table: name, rows: count, codec: codec, parameterIDs: parameterIDs, bucketIDs: bucketIDs,
                                basisID: plan.makesCurrentBasis ? parameterIDs.last : nil)
        if options.layout == .segment {
            try writeSegment(table, ids: ids, order: order, rows: rows, dimension: dimension, encoder: encoder,
                             codec: codec, partBytes: options.segmentPartBytes)
            return report
        }
        // Write in id order; MDB_APPEND when every new id sorts after the table's last one.
        let canAppend = try environment.read { txn in
            try txn.withCursor(table.rows) { cursor in
                guard let last = try cursor.last()?.integerKey else { return true }
                return last < ids[order[0]]
            }
        }
        var start = 0
        while start < count {
            let end = min(count, start + max(1, options.rowsPerTransaction))
            try write { batch in
                for position in start..<end {
                    let i = order[position]
                    let row = UnsafeBufferPointer(rebasing: rows[i * dimension..<(i + 1) * dimension])
                    try batch.putEncoded(table, id: ids[i], vector: row, index: i, encoder: encoder, codec: codec,
                                         flags: canAppend ? .append : [])
                }
            }
            start = end
        }
        return report
    }

    /// Encodes the rows in id order into one new segment.
    private func writeSegment(_ table: Table, ids: [UInt64], order: [Int], rows: UnsafeBufferPointer<Float>, dimension: Int,
                              encoder: any RowEncoder, codec: Codec, partBytes: Int) throws {
        let capacity = encoder.maximumRecordSize
        let rowsPerPart = SegmentWriter.rowsPerPart(recordSize: capacity, partBytes: partBytes)
        var record = [UInt8](repeating: 0, count: capacity)
        var sizes = RecordSizes(capacity: capacity, padding: encoder.acceptsZeroPadding)
        try writeSegment(table, rowsPerPart: rowsPerPart, expectedPartBytes: min(rowsPerPart, order.count) * capacity,
                         formatVersion: codec.rowCodec.formatVersion) { emit in
            for i in order {
                try record.withUnsafeMutableBytes { buffer in
                    let size: Int
                    do {
                        size = try encoder.encode(UnsafeBufferPointer(rebasing: rows[i * dimension..<(i + 1) * dimension]), index: i,
                                                  into: buffer)
                    } catch let error as CodecError {
                        throw StoreError.encoding(table: table.name, id: ids[i], codec: codec.description, underlying: error)
                    }
                    let stored = sizes.size(for: size)
                    if stored > size { buffer[size..<stored].initializeMemory(as: UInt8.self, repeating: 0) }
                    try emit(ids[i], UnsafeRawBufferPointer(rebasing: buffer[0..<stored]))
                }
            }
        }
    }

    /// Bytes on disk a row of this load costs beyond its record, as measured from LMDB page
    /// counts for records of several sizes (`SegmentSizeTests`): one LMDB key a row; a dense
    /// segment (a size class and an offset share a row); a sparse one (its id, directory, class).
    static func overheadBytesPerRow(ids: [UInt64], order: [Int], layout: LoadLayout) -> Double {
        guard layout == .segment else { return 21 }
        guard let first = order.first.map({ ids[$0] }), let last = order.last.map({ ids[$0] }) else { return 0 }
        return last - first == UInt64(order.count - 1) ? 1.4 : 10.5
    }

    /// Positions of `ids` in ascending id order; throws on a duplicate, naming both rows.
    static func sortedOrder(_ ids: [UInt64]) throws(StoreError) -> [Int] {
        let order = ids.indices.sorted { ids[$0] < ids[$1] || (ids[$0] == ids[$1] && $0 < $1) }
        for position in order.indices.dropFirst() where ids[order[position]] == ids[order[position - 1]] {
            throw .invalidArgument("id \(ids[order[position]]) appears twice (rows \(order[position - 1]) and \(order[position])); nothing was written")
        }
        return order
    }

    /// Finds the first row with a non-finite value.
    static func checkFinite(_ rows: UnsafeBufferPointer<Float>, dimension: Int, ids: [UInt64], table: String) throws(StoreError) {
        if let bad = rows.firstIndex(where: { !$0.isFinite }) {
            let row = bad / dimension
            throw .nonFiniteValue(table: table, row: row, id: ids[row], column: bad % dimension, value: rows[bad])
        }
    }
}

extension WriteBatch {
    /// Bucket rows `range` of `table` as they decode from this transaction, row-major.
    func decodeBucketRows(_ table: Table, _ range: Range<UInt32>) throws -> [Float] {
        let d = table.dimension
        let decoders = TableDecoders(table: table)
        let parameters = TableParameters(txn, table: table)
        var rows = [Float](repeating: 0, count: range.count * d)
        try rows.withUnsafeMutableBufferPointer { out in
            for (i, bucket) in range.enumerated() {
                guard let record = try parameters.bucketRecord(bucket) else {
                    throw StoreError.corruptMetadata(table: table.name, reason: "bucket row \(bucket) was not written")
                }
                try decoders.decode(record, id: UInt64(bucket), into: out.baseAddress! + i * d, parameters: parameters)
            }
        }
        return rows
    }
}

/// The record sizes of a segment being written. A segment holds at most 255 sizes; records of a
/// codec that accepts zero padding are padded, once 254 sizes are in use, to the smallest size
/// already used that fits them, or to the codec's largest record (the 255th size, kept for
/// that), so every load fits in one segment whatever its rows.
struct RecordSizes {
    let capacity: Int
    let padding: Bool
    private var used: [Int] = []   // ascending

    init(capacity: Int, padding: Bool) {
        self.capacity = capacity
        self.padding = padding
    }

    mutating func size(for size: Int) -> Int {
        var low = 0, high = used.count
        while low < high {
            let middle = (low + high) / 2
            if used[middle] < size { low = middle + 1 } else { high = middle }
        }
        if low < used.count && used[low] == size { return size }
        guard padding && used.count >= 254 else {
            used.insert(size, at: low)
            return size
        }
        if low < used.count { return used[low] }
        used.append(capacity)
        return capacity
    }
}
