import EmbeddingCodecs

/// Rows already encoded with one codec, as the payloads of its records (FORMAT.md, "Row
/// records"), which a load stores byte for byte instead of encoding floats. FBGEMM's fused
/// rowwise rows are such payloads: `int8` and `int4h` ones (`FBGEMMFusedRows`).
public protocol EncodedRowSource: Sendable {
    var count: Int { get }
    var dimension: Int { get }
    /// The codec of every row: one whose records need no table parameters
    /// (`canStoreBucketRows`: fp32, fp16, int8, int4, int4h, int2h).
    var codec: Codec { get }
    /// Bytes of each payload (the record without its tag byte).
    var payloadSize: Int { get }
    /// Calls `body` with the payloads of rows `range`, `range.count × payloadSize` bytes back to
    /// back, valid during the call.
    func withPayloads<R>(_ range: Range<Int>, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R
    /// Drops what the source keeps resident of rows read so far (a file map's pages).
    func release()
}

extension Store {
    /// Loads `source`'s rows, already encoded, into the table `name` (created with their
    /// dimension when it does not exist): each row's record is the codec's tag followed by its
    /// payload exactly as given, nothing re-quantized.
    ///
    /// Everything is checked before anything is written: the ids (no duplicates; `0..<count`
    /// when nil), and that every payload has the codec's size and decodes to finite values (the
    /// first bad row is named); the store never holds a row it would refuse to read. The rows
    /// are written as a float load's are (`options.layout`: one new segment, visible in one
    /// commit with its load note, or one key a row), with the same crash behaviour; the note's
    /// policy reads "<codec> records, stored as given".
    @discardableResult
    public func load(table name: String, ids: [UInt64]? = nil, encoded source: any EncodedRowSource,
                     options: LoadOptions = LoadOptions()) throws -> LoadReport {
        let count = source.count, dimension = source.dimension, codec = source.codec
        let ids = try startLoad(table: name, ids: ids, count: count, dimension: dimension)
        guard codec.rowCodec.canStoreBucketRows else {
            throw StoreError.invalidArgument("\(codec) records point at table parameters; only \(RowCodecs.bucketRowCodecNames) records can be loaded as they are")
        }
        let order = try Self.sortedOrder(ids)
        try Self.checkPayloads(source, ids: ids, table: name, progress: options.progress)
        let existing = try existingTable(name, dimension: dimension)
        let recordBytes = 1 + source.payloadSize
        let summary = PolicySummary(policy: "\(codec) records, stored as given",
                                    shares: count > 0 ? [.init(codec: codec.description, rows: count, bytes: count * recordBytes)] : [])
        let report = LoadReport(table: name, rows: count, codec: codec, summary: summary, parameterIDs: [], bucketIDs: nil, basisID: nil)
        guard count > 0 else {
            if existing == nil { _ = try createOrAdoptTable(name, dimension: dimension) }
            return report
        }
        try writingInto(existing, name, dimension: dimension) { table in
            try writeRows(table, ids: ids, order: order, records: CopiedLoadRecords(source), formatVersion: codec.rowCodec.formatVersion,
                          summary: summary, options: options)
        }
        return report
    }

    /// Decodes every payload of `source` with its codec's decoder, as a reader will: throws for
    /// the first the decoder refuses (wrong size, a non-finite value), naming its row and id.
    static func checkPayloads(_ source: any EncodedRowSource, ids: [UInt64], table: String,
                              progress: (@Sendable (WorkProgress) -> Void)?) throws {
        let d = source.dimension, size = source.payloadSize, codec = source.codec
        let decoder = codec.rowCodec.makeDecoder(dimension: d)
        let stretch = max(1, (1 << 22) / max(size, 1))
        var record = [UInt8](repeating: codec.tag, count: 1 + size)
        var row = [Float](repeating: 0, count: d)
        var start = 0
        while start < source.count {
            let range = start..<min(source.count, start + stretch)
            try source.withPayloads(range) { payloads in
                for r in 0..<range.count {
                    record.withUnsafeMutableBytes { UnsafeMutableRawBufferPointer(rebasing: $0[1...]).copyMemory(from: UnsafeRawBufferPointer(rebasing: payloads[r * size..<(r + 1) * size])) }
                    try record.withUnsafeBytes { bytes in
                        var pointer = bytes
                        guard try row.withUnsafeMutableBufferPointer({ try decoder.decode(&pointer, count: 1, into: $0.baseAddress!, parameters: NoParameters()) }) == 1 else {
                            let i = range.lowerBound + r
                            throw StoreError.invalidArgument("row \(i) (id \(ids[i])) of table '\(table)' is not a \(codec) row the store can read: "
                                + decoder.problem(with: bytes, parameters: NoParameters()) + "; nothing was written")
                        }
                    }
                }
            }
            source.release()
            start = range.upperBound
            progress?(WorkProgress(stage: "checking", done: start, total: source.count, unit: "rows"))
        }
    }
}

/// The parameters of a table without any: what records of self-contained codecs decode with.
private struct NoParameters: CodecParameterSource {
    func parameterRecord(_ id: UInt32) throws -> UnsafeRawBufferPointer? { nil }
    func bucketRecord(_ id: UInt32) throws -> UnsafeRawBufferPointer? { nil }
}

/// The records of an import: the codec's tag, then the payload as the source holds it.
final class CopiedLoadRecords: LoadRecords {
    let source: any EncodedRowSource
    let maximumRecordSize: Int

    init(_ source: any EncodedRowSource) {
        self.source = source
        maximumRecordSize = 1 + source.payloadSize
    }

    func make(_ positions: ArraySlice<Int>, into records: UnsafeMutableRawBufferPointer, sizes: UnsafeMutableBufferPointer<Int>) throws {
        let size = source.payloadSize, capacity = maximumRecordSize, tag = source.codec.tag
        var r = 0
        var position = positions.startIndex
        while position < positions.endIndex {
            // A run of consecutive rows (the usual case: ids in input order) is one read.
            let first = positions[position]
            var end = position + 1
            while end < positions.endIndex, positions[end] == first + (end - position) { end += 1 }
            try source.withPayloads(first..<first + (end - position)) { payloads in
                for k in 0..<(end - position) {
                    records[(r + k) * capacity] = tag
                    UnsafeMutableRawBufferPointer(rebasing: records[(r + k) * capacity + 1..<(r + k + 1) * capacity])
                        .copyMemory(from: UnsafeRawBufferPointer(rebasing: payloads[k * size..<(k + 1) * size]))
                    sizes[r + k] = capacity
                }
            }
            r += end - position
            position = end
        }
    }

    func release() { source.release() }
}

/// Payloads in memory, `count × payloadSize` bytes back to back, valid while the load runs.
public struct MemoryPayloads: EncodedRowSource, @unchecked Sendable {   // read, never written
    public let payloads: UnsafeRawBufferPointer
    public let codec: Codec
    public let dimension: Int
    public let payloadSize: Int
    public var count: Int { payloads.count / payloadSize }

    /// `payloads` holds whole payloads of `payloadSize` bytes (a trailing partial one is ignored).
    public init(_ payloads: UnsafeRawBufferPointer, codec: Codec, dimension: Int, payloadSize: Int) {
        self.payloads = payloads
        self.codec = codec
        self.dimension = dimension
        self.payloadSize = max(payloadSize, 1)
    }

    public func withPayloads<R>(_ range: Range<Int>, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        try body(UnsafeRawBufferPointer(rebasing: payloads[range.lowerBound * payloadSize..<range.upperBound * payloadSize]))
    }

    public func release() {}
}
