import LMDB
import EmbeddingCodecs

/// Settings of a bulk load.
public struct LoadOptions: Sendable {
    /// Codec of the bucket rows that `bucket:B` creates.
    public var bucketCodec: Codec = .fp32
    /// Rows per write transaction (LMDB caps the pages one transaction may dirty).
    public var rowsPerTransaction = 65_536
    /// At most this many rows (an even stride through the input) fit k-means, and PCA too
    /// unless 100 × dimension is more (fewer rows measured up to 20% over the optimal error).
    public var fitSampleLimit = 262_144
    /// Lloyd iterations for `bucket:B`.
    public var kMeansIterations = 20
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
    public let codec: LoadCodec
    /// The PCA basis written for `reduced:K`.
    public let basisID: UInt32?
    /// The bucket rows written for `bucket:B` (fewer than B when there were fewer rows).
    public let bucketIDs: Range<UInt32>?
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
                     codec: LoadCodec, options: LoadOptions = LoadOptions()) throws -> LoadReport {
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
        try Self.checkRows(rows, count: count, dimension: dimension, ids: ids, table: name, codec: codec)

        let existing = try? table(name)
        if let existing, existing.dimension != dimension {
            throw StoreError.dimensionMismatch(table: name, expected: existing.dimension, actual: dimension)
        }
        // Creates the table once everything that can be refused has been checked.
        var resolved = existing
        func target() throws -> Table {
            if let resolved { return resolved }
            let created = try createTable(name, dimension: dimension)
            resolved = created
            return created
        }

        // Fit the codec's parameters on (a sample of) the rows, then resolve every row's encoding.
        var basisID: UInt32?
        var bucketIDs: Range<UInt32>?
        var encodings: (Int) -> RowEncoding
        switch codec {
        case _ where count == 0:
            encodings = { _ in .fp32 }   // nothing to encode and nothing to fit on
        case .fp32, .fp16, .int8, .int4:
            let plain = RowEncoding(plain: Self.rowCodec(codec))!
            encodings = { _ in plain }
        case .reduced(let k):
            guard k < dimension else {
                throw StoreError.invalidArgument("reduced:\(k) needs k < dimension \(dimension)")
            }
            // PCA on a sample stays within a few percent of the optimum only with ~100·d rows or more.
            let basis = try Self.sample(rows, count: count, dimension: dimension, limit: max(options.fitSampleLimit, 100 * dimension)) { sample, sampleCount in
                try PCABasis.fit(rows: sample, count: sampleCount, dimension: dimension, rank: k)
            }
            let table = try target()
            let id = try write { batch in try batch.addBasis(basis, to: table) }
            basisID = id
            let rank = min(k, basis.rank)
            encodings = { _ in .reduced(k: rank, basisID: id, basis: basis) }
        case .bucket(let requested, let scaled):
            let bucketCount = max(1, min(requested, count))
            let codebook = try Self.sample(rows, count: count, dimension: dimension, limit: options.fitSampleLimit) { sample, sampleCount in
                try KMeansCodebook.fit(rows: sample, count: sampleCount, dimension: dimension, buckets: bucketCount,
                                       iterations: options.kMeansIterations)
            }
            // Checks the bucket codec before anything is written.
            let storedCentroids = try Self.roundTrip(codebook.centroids, dimension: dimension, codec: options.bucketCodec)
            let table = try target()
            let range = try codebook.centroids.withUnsafeBufferPointer { centroids in
                try write { batch in try batch.addBucketRows(table, rows: centroids, codec: options.bucketCodec) }
            }
            bucketIDs = range
            // Assign against the bucket rows as stored, so a lossy bucket codec is accounted for.
            let stored = try KMeansCodebook(dimension: dimension, count: codebook.count, centroids: storedCentroids)
            var assigned = [UInt32](repeating: 0, count: count)
            var scales = [Float](repeating: 1, count: scaled ? count : 0)
            assigned.withUnsafeMutableBufferPointer { assignedBuffer in
                if scaled {
                    scales.withUnsafeMutableBufferPointer { stored.assignScaled(rows: rows, count: count, into: assignedBuffer, scales: $0) }
                } else {
                    stored.assign(rows: rows, count: count, into: assignedBuffer)
                }
            }
            let first = range.lowerBound
            encodings = scaled
                ? { i in .scaledBucket(id: first + assigned[i], scale: scales[i]) }
                : { i in .bucket(id: first + assigned[i]) }
        }

        let table = try target()
        let rowCodec = Self.rowCodec(codec)
        if options.layout == .segment {
            try writeSegment(table, ids: ids, order: order, rows: rows, dimension: dimension, encodings: encodings,
                             codec: rowCodec, partBytes: options.segmentPartBytes)
            return LoadReport(table: name, rows: count, codec: codec, basisID: basisID, bucketIDs: bucketIDs)
        }
        // Write in id order; MDB_APPEND when every new id sorts after the table's last one.
        let canAppend = try environment.read { txn in
            try txn.withCursor(table.rows) { cursor in
                guard let last = try cursor.last()?.integerKey else { return true }
                return count == 0 || last < ids[order[0]]
            }
        }
        var start = 0
        while start < count {
            let end = min(count, start + max(1, options.rowsPerTransaction))
            try write { batch in
                for position in start..<end {
                    let i = order[position]
                    let row = UnsafeBufferPointer(rebasing: rows[i * dimension..<(i + 1) * dimension])
                    try batch.putEncoded(table, id: ids[i], vector: row, encoding: encodings(i), codec: rowCodec,
                                         flags: canAppend ? .append : [])
                }
            }
            start = end
        }
        return LoadReport(table: name, rows: count, codec: codec, basisID: basisID, bucketIDs: bucketIDs)
    }

    /// Encodes the rows in id order into one new segment.
    private func writeSegment(_ table: Table, ids: [UInt64], order: [Int], rows: UnsafeBufferPointer<Float>, dimension: Int,
                              encodings: (Int) -> RowEncoding, codec: Codec, partBytes: Int) throws {
        guard let firstRow = order.first else { return }
        let recordSize = encodings(firstRow).recordSize(dimension: dimension)
        let rowsPerPart = SegmentWriter.rowsPerPart(recordSize: recordSize, partBytes: partBytes)
        var record = [UInt8](repeating: 0, count: recordSize)
        try writeSegment(table, rowsPerPart: rowsPerPart, expectedPartBytes: min(rowsPerPart, order.count) * recordSize) { emit in
            for i in order {
                let encoding = encodings(i)
                let size = encoding.recordSize(dimension: dimension)
                if record.count < size { record = [UInt8](repeating: 0, count: size) }
                try record.withUnsafeMutableBytes { buffer in
                    let bytes = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size])
                    do {
                        try encoding.encode(UnsafeBufferPointer(rebasing: rows[i * dimension..<(i + 1) * dimension]), into: bytes)
                    } catch let error as CodecError {
                        throw StoreError.encoding(table: table.name, id: ids[i], codec: codec.description, underlying: error)
                    }
                    try emit(ids[i], UnsafeRawBufferPointer(bytes))
                }
            }
        }
    }

    /// The row codec a load codec writes (for error messages).
    static func rowCodec(_ codec: LoadCodec) -> Codec {
        switch codec {
        case .fp32: .fp32
        case .fp16: .fp16
        case .int8: .int8
        case .int4: .int4
        case .reduced(let k): .reduced(k: k)
        case .bucket(_, let scaled): scaled ? .scaledBucket : .bucket
        }
    }

    /// Positions of `ids` in ascending id order; throws on a duplicate, naming both rows.
    static func sortedOrder(_ ids: [UInt64]) throws(StoreError) -> [Int] {
        let order = ids.indices.sorted { ids[$0] < ids[$1] || (ids[$0] == ids[$1] && $0 < $1) }
        for position in order.indices.dropFirst() where ids[order[position]] == ids[order[position - 1]] {
            throw .invalidArgument("id \(ids[order[position]]) appears twice (rows \(order[position - 1]) and \(order[position])); nothing was written")
        }
        return order
    }

    /// Finds the first row with a non-finite value, or (for fp16) a value fp16 cannot hold.
    static func checkRows(_ rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int, ids: [UInt64],
                          table: String, codec: LoadCodec) throws(StoreError) {
        if let bad = rows.firstIndex(where: { !$0.isFinite }) {
            let row = bad / dimension
            throw .nonFiniteValue(table: table, row: row, id: ids[row], column: bad % dimension, value: rows[bad])
        }
        guard codec == .fp16 else { return }
        var payload = [UInt8](repeating: 0, count: Float16Codec.payloadSize(dimension: dimension))
        for i in 0..<count {
            let row = UnsafeBufferPointer(rebasing: rows[i * dimension..<(i + 1) * dimension])
            do {
                try payload.withUnsafeMutableBytes { buffer in try Float16Codec.encode(row, into: buffer) }
            } catch let error as CodecError {
                throw .encoding(table: table, id: ids[i], codec: "fp16 (row \(i))", underlying: error)
            } catch {
                throw .invalidArgument("row \(i): \(error)")
            }
        }
    }

    /// Calls `fit` with at most `limit` rows taken at an even stride (all rows when fewer).
    static func sample<R>(_ rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int, limit: Int,
                          _ fit: (UnsafeBufferPointer<Float>, Int) throws -> R) throws -> R {
        guard count > limit, limit > 0 else { return try fit(rows, count) }
        var sample = [Float]()
        sample.reserveCapacity(limit * dimension)
        for j in 0..<limit {
            let i = Int((Double(j) * Double(count) / Double(limit)).rounded(.down))
            sample.append(contentsOf: rows[i * dimension..<(i + 1) * dimension])
        }
        return try sample.withUnsafeBufferPointer { try fit($0, limit) }
    }

    /// `values` (rows of `dimension`) as they decode after encoding with `codec`.
    static func roundTrip(_ values: [Float], dimension: Int, codec: Codec) throws -> [Float] {
        guard let encoding = RowEncoding(plain: codec) else {
            throw StoreError.invalidArgument("bucket rows must use fp32, fp16, int8 or int4, not \(codec)")
        }
        if codec == .fp32 { return values }
        var result = values
        var record = [UInt8](repeating: 0, count: encoding.recordSize(dimension: dimension))
        for i in 0..<values.count / dimension {
            try values.withUnsafeBufferPointer { source in
                try record.withUnsafeMutableBytes { try encoding.encode(UnsafeBufferPointer(rebasing: source[i * dimension..<(i + 1) * dimension]), into: $0) }
            }
            record.withUnsafeBytes { bytes in
                result.withUnsafeMutableBufferPointer { out in
                    RowRecord.decodePlain(encoding.tag, UnsafeRawBufferPointer(rebasing: bytes[1...]),
                                          into: UnsafeMutableBufferPointer(rebasing: out[i * dimension..<(i + 1) * dimension]))
                }
            }
        }
        return result
    }
}
