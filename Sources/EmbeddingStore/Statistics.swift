import EmbeddingCodecs
import LMDB

/// Rows and bytes of one codec in a table.
public struct CodecUsage: Sendable, Equatable, Codable {
    public let codec: String
    public let rows: Int
    /// Record bytes (tag + payload), without LMDB's per-key overhead.
    public let bytes: Int
}

/// The codec of every live row of a table (`Store.liveRowCodecs`).
public struct LiveRowCodecs: Sendable {
    /// A codec, or a codec with one parameter record (a tc model: one rate).
    public struct Form: Sendable, Equatable {
        /// `int8`, `tc:1.5`; two forms may share a name (two tc models fitted for one rate).
        public let name: String
        public let tag: UInt8
        /// The parameter record its records name, for codecs whose records name one.
        public let parameterID: UInt32?
    }
    /// Live ids, ascending.
    public var ids: [UInt64]
    /// Per row, its index in `forms`.
    public var form: [UInt16]
    /// Per row, its record's bytes (tag + payload).
    public var recordBytes: [UInt32]
    /// In order of first appearance.
    public var forms: [Form]
}

/// What a table holds.
public struct TableStatistics: Sendable, Equatable, Codable {
    public let name: String
    public let dimension: Int
    /// Live rows: what a lookup can find.
    public let rows: Int
    /// Per codec, in tag order; codecs with no rows are left out.
    public let codecs: [CodecUsage]
    public let bucketRows: Int
    public let bucketBytes: Int
    /// Parameter records (`t<T>/bases`): PCA bases, and tc bases and models.
    public let bases: Int
    /// Live segments, and the rows they hold (rows shadowed by newer layers included).
    public let segments: Int
    public let segmentRows: Int
    /// Entries in the delta (per-key rows written by `put` and `delete`), tombstones included.
    public let deltaRows: Int
    /// Delta entries that hide a deleted id's segment row.
    public let tombstones: Int
}

extension Store {
    /// Counts a table's live rows and bytes per codec, and what each layer holds (a scan).
    public func statistics(_ table: Table) throws -> TableStatistics {
        let (generation, table) = try resolved(table)
        return try translatingErrors {
            try generation.environment.read { txn in
                var rows = [Int](repeating: 0, count: 256)
                var bytes = [Int](repeating: 0, count: 256)
                var total = 0
                try forEachLiveRow(table, in: txn) { _, record in
                    let tag = Int(record.first ?? 0)
                    rows[tag] += 1
                    bytes[tag] += record.count
                    total += 1
                }
                var usage: [CodecUsage] = []
                for tag in 0..<256 where rows[tag] > 0 {
                    let name = RowCodecs.name(tag: UInt8(tag))
                    usage.append(CodecUsage(codec: name, rows: rows[tag], bytes: bytes[tag]))
                }
                var bucketRows = 0
                var bucketBytes = 0
                try txn.withCursor(table.buckets) { cursor in
                    var entry = try cursor.first()
                    while let current = entry {
                        bucketRows += 1
                        bucketBytes += current.value.count
                        entry = try cursor.next()
                    }
                }
                var tombstones = 0
                try txn.withCursor(table.rows) { cursor in
                    var entry = try cursor.first()
                    while let current = entry {
                        if let id = current.integerKey, isTombstone(try table.deltaRecord(current.value, id: id)) { tombstones += 1 }
                        entry = try cursor.next()
                    }
                }
                let segments = try segmentManifest(table, in: txn).map { try SegmentView(table: table, segment: $0, in: txn) }
                return TableStatistics(name: table.name, dimension: table.dimension, rows: total, codecs: usage,
                                       bucketRows: bucketRows, bucketBytes: bucketBytes, bases: try txn.statistics(table.bases).entries,
                                       segments: segments.count, segmentRows: segments.reduce(0) { $0 + $1.index.count },
                                       deltaRows: try txn.statistics(table.rows).entries, tombstones: tombstones)
            }
        }
    }

    /// The codec of every live row, in ascending id order: what statistics, eval and the
    /// policy report per codec. Rows are grouped by form: by codec, and for codecs whose records
    /// name a parameter record that sets their rate (tc models), by that record (`tc:1.5`).
    public func liveRowCodecs(_ table: Table) throws -> LiveRowCodecs {
        let (generation, table) = try resolved(table)
        return try translatingErrors {
            try generation.environment.read { txn in
                var classifier = FormClassifier(parameters: TableParameters(txn, table: table))
                var census = LiveRowCodecs(ids: [], form: [], recordBytes: [], forms: [])
                try forEachLiveRow(table, in: txn) { id, record in
                    let index = try classifier.form(of: record)
                    census.ids.append(id)
                    census.form.append(index)
                    census.recordBytes.append(UInt32(record.count))
                }
                census.forms = classifier.forms
                return census
            }
        }
    }

    /// Every live row of `table` decoded, in ascending id order: the ids and `ids.count × dimension` floats.
    /// An offline job: every segment's checksum and index are checked first (as `verify` does),
    /// so a damaged store fails it instead of handing out wrong rows.
    public func export(_ table: Table) throws -> (ids: [UInt64], values: [Float]) {
        var ids = [UInt64]()
        var values = [Float]()
        try forEachExportedRow(table) { id, _, decoded in
            ids.append(id)
            values.append(contentsOf: try decoded())
        }
        return (ids, values)
    }

    /// Every live row of `table` in ascending id order as a payload of `codec` (`payloadSize`
    /// bytes): a row whose record is `codec`'s is copied byte for byte, any other is decoded and
    /// handed to `encode`, which writes its payload. For FBGEMM's fused rows: `codec` int8 or
    /// int4h, `encode` FBGEMM's quantization rule (`FBGEMMFusedRows.quantize`). Checked as
    /// `export` is. Returns the ids, the payloads back to back, and how many were copied.
    /// - Throws: `StoreError.encoding` naming the row when `encode` throws a `CodecError`.
    public func exportPayloads(_ table: Table, codec: Codec, payloadSize: Int,
                               encode: (UnsafeBufferPointer<Float>, UnsafeMutableRawBufferPointer) throws -> Void)
        throws -> (ids: [UInt64], payloads: [UInt8], copied: Int) {
        var ids = [UInt64]()
        var payloads = [UInt8]()
        var copied = 0
        var payload = [UInt8](repeating: 0, count: payloadSize)
        try forEachExportedRow(table) { id, record, decoded in
            if record.first == codec.tag && record.count == 1 + payloadSize {
                payloads.append(contentsOf: record[1...])
                copied += 1
            } else {
                let row = try decoded()
                do {
                    try payload.withUnsafeMutableBytes { try encode(row, $0) }
                } catch let error as CodecError {
                    throw StoreError.encoding(table: table.name, id: id, codec: codec.description, underlying: error)
                }
                payloads.append(contentsOf: payload)
            }
            ids.append(id)
        }
        return (ids, payloads, copied)
    }

    /// Calls `body` with every live row of `table` in ascending id order: its id, its record and
    /// a function that decodes it (valid until `body` returns), in one snapshot whose segments'
    /// checksums and indexes are checked first, as `verify` does, so a damaged store fails an
    /// export instead of handing out wrong rows.
    private func forEachExportedRow(_ table: Table,
                                    _ body: (UInt64, UnsafeRawBufferPointer, () throws -> UnsafeBufferPointer<Float>) throws -> Void) throws {
        let (generation, table) = try resolved(table)
        try translatingErrors {
            try generation.environment.read { txn in
                _ = try verifySegments(table, in: txn)
                var row = [Float](repeating: 0, count: table.dimension)
                let decoders = TableDecoders(table: table)
                let parameters = TableParameters(txn, table: table)
                try row.withUnsafeMutableBufferPointer { row in
                    try forEachLiveRow(table, in: txn) { id, record in
                        try body(id, record) {
                            try decoders.decode(record, id: id, into: row.baseAddress!, parameters: parameters)
                            return UnsafeBufferPointer(row)
                        }
                    }
                }
            }
        }
    }

    /// Calls `body` with every live row's id and record in ascending id order: a merge of the
    /// delta and the segments in which the delta wins, then newer segments; tombstones hide.
    func forEachLiveRow(_ table: Table, in txn: borrowing Transaction,
                        _ body: (UInt64, UnsafeRawBufferPointer) throws -> Void) throws {
        let segments = try segmentManifest(table, in: txn).map { try SegmentView(table: table, segment: $0, in: txn) }
        try forEachLiveRow(table, segments: segments, in: txn) { id, record, _ in try body(id, record) }
    }

    /// `forEachLiveRow`, also saying where each row lives: `source` is nil for the delta, or the
    /// index in `segments` (the table's live segments, newest first, as `segmentManifest` lists them).
    /// With `onDamage`, a delta value whose seal fails and a segment record its index places
    /// outside its part are handed to it and skipped (verify goes on); without, they throw.
    func forEachLiveRow(_ table: Table, segments: [SegmentView], in txn: borrowing Transaction,
                        onDamage: ((UInt64, StoreError) throws -> Void)? = nil,
                        _ body: (UInt64, UnsafeRawBufferPointer, _ source: Int?) throws -> Void) throws {
        var next = [Int](repeating: 0, count: segments.count)   // each segment's next row
        try txn.withCursor(table.rows) { cursor in
            var delta = try cursor.first()
            while true {
                var smallest: UInt64?
                if let delta {
                    guard let id = delta.integerKey else {
                        throw StoreError.corruptMetadata(table: table.name, reason: "a row key is \(delta.key.count) bytes, not 8")
                    }
                    smallest = id
                }
                for (s, segment) in segments.enumerated() where next[s] < segment.index.count {
                    let id = segment.index.id(atRow: next[s])
                    if smallest.map({ id < $0 }) ?? true { smallest = id }
                }
                guard let id = smallest else { return }
                var record: UnsafeRawBufferPointer?
                var source: Int?
                var deleted = false
                if let current = delta, current.integerKey == id {
                    // Only the delta holds tombstones; in a segment a 1-byte `08` is a bad record.
                    do {
                        let value = try table.deltaRecord(current.value, id: id)
                        deleted = isTombstone(value)
                        record = value
                    } catch let error as StoreError where onDamage != nil {
                        try onDamage?(id, error)
                        deleted = true   // what it held is unknown: its older rows are not shown
                    }
                    delta = try cursor.next()
                    // LMDB hands keys out in order; one that is not after this id is a damaged
                    // page (a node pointer moved onto another node: an id twice, another lost).
                    if let following = delta, let key = following.integerKey, key <= id {
                        let error = StoreError.corruptMetadata(table: table.name, reason: "the delta's ids are out of order: \(key) after \(id) (a damaged page)")
                        guard let onDamage else { throw error }
                        try onDamage(key, error)
                        while let skipped = delta, let key = skipped.integerKey, key <= id { delta = try cursor.next() }
                    }
                }
                for (s, segment) in segments.enumerated() where next[s] < segment.index.count && segment.index.id(atRow: next[s]) == id {
                    if record == nil && !deleted {
                        if let found = segment.record(ofRow: next[s]) {
                            record = found
                            source = s
                        } else {
                            let error = StoreError.corruptMetadata(table: table.name, reason: "segment \(segment.segment) does not match its index at id \(id)")
                            guard let onDamage else { throw error }
                            try onDamage(id, error)
                            deleted = true
                        }
                    }
                    next[s] += 1
                }
                if let record, !deleted { try body(id, record, source) }
            }
        }
    }
}

/// Sorts live rows into forms as `Store.liveRowCodecs` reports them: by codec, and for codecs
/// whose records name a parameter record that sets their rate (tc models), by that record.
struct FormClassifier {
    let parameters: TableParameters
    /// In order of first appearance.
    private(set) var forms: [LiveRowCodecs.Form] = []
    private var formIndex: [UInt64: UInt16] = [:]   // tag << 32 | parameter id (+ 1 << 40 when named)

    init(parameters: TableParameters) { self.parameters = parameters }

    /// The index in `forms` of `record`'s form, adding the form when it is new.
    mutating func form(of record: UnsafeRawBufferPointer) throws -> UInt16 {
        let tag = record.first ?? 0
        let codec = RowCodecs.codec(tag: tag)
        let parameter = codec?.parameterID(of: record)
        let key = UInt64(tag) << 32 | UInt64(parameter ?? 0) | (parameter == nil ? 0 : 1 << 40)
        if let index = formIndex[key] { return index }
        var name = codec?.name ?? RowCodecs.name(tag: tag)
        if let codec, let parameter {
            name = try parameters.parameterRecord(parameter).map { codec.formName(parameter: $0) } ?? name
        }
        let index = UInt16(forms.count)
        formIndex[key] = index
        forms.append(LiveRowCodecs.Form(name: name, tag: tag, parameterID: parameter))
        return index
    }
}
