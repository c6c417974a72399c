import EmbeddingCodecs
import Foundation
import LMDB

/// What rebuilding one table did, for its report.
struct RebuildOutcome {
    /// Rows written.
    var rows = 0
    var policy: String
    var counts: String
    var countsDetail: String?
    var rowsFromSource = 0
    var rowsAdded = 0
    var rowsWithoutSource = 0
    var promoted = 0
    var demoted = 0
    var refusedIDs: [UInt64] = []
    var keptAtSamePrecision = 0
    var summary: PolicySummary?
}

/// One table of a store being repacked, read from the repack's snapshot and written into the
/// new store: copied as it is, or rebuilt under a policy.
struct TableCopy {
    /// The store being repacked, its table, and the table's access counts database (if any).
    let source: Store
    let table: Table
    let counts: Database?
    let snapshot: RepackSnapshot
    /// The new store.
    let target: Store

    /// Entries copied per write transaction of the new store (LMDB caps what one may dirty).
    static let entriesPerTransaction = 65_536

    // MARK: - The table, its parameters and counts

    /// Creates the table in the new store with the old schema's id counters, so that parameter
    /// records and bucket rows copied under their ids keep their meaning and new ones come after,
    /// and copies the access counts kept for it.
    func createTable() throws -> Table {
        let schema = try translatingErrors { try source.readSchema(table.name, in: snapshot.txn) }
        let new = try target.createTable(table.name, dimension: table.dimension)
        try translatingErrors {
            try target.environment.write { txn in
                var copied = schema
                copied.tableID = new.id
                copied.currentBasisID = 0   // set when that basis is copied
                try target.writeSchema(copied, name: new.name, in: txn)
            }
        }
        if let counts {
            let database = try translatingErrors {
                try target.environment.openDatabases([Store.countsDatabase(new.id)], flags: [.create, .integerKey])[0]
            }
            try copyEntries(of: counts, to: database, in: new, what: "the access count of id") { _ in true }
        }
        return new
    }

    /// Copies the parameter records and bucket rows of the table whose ids `keep` accepts (all
    /// of them when nil) under the same ids; the table's current basis stays current if copied.
    func copyParameters(into new: Table, parameters keepParameter: ((UInt32) -> Bool)? = nil,
                        buckets keepBucket: ((UInt32) -> Bool)? = nil) throws {
        try copyEntries(of: table.bases, to: new.bases, in: new, what: "parameter record") { keepParameter?(UInt32(truncatingIfNeeded: $0)) ?? true }
        try copyEntries(of: table.buckets, to: new.buckets, in: new, what: "bucket row") { keepBucket?(UInt32(truncatingIfNeeded: $0)) ?? true }
        let current = try translatingErrors { try source.readSchema(table.name, in: snapshot.txn).currentBasisID }
        if current != 0 && keepParameter?(current) ?? true {
            try translatingErrors {
                try target.environment.write { txn in
                    var schema = try target.readSchema(new.name, in: txn)
                    schema.currentBasisID = current
                    try target.writeSchema(schema, name: new.name, in: txn)
                }
            }
        }
    }

    /// Copies the entries of `database` (integer keys, in the snapshot) whose keys `keep`
    /// accepts into `destination` of the new store, in key order: each record byte for byte,
    /// its seal checked in the old store and made for the new one (FORMAT.md "Record seals").
    private func copyEntries(of database: Database, to destination: Database, in new: Table, what: String, keep: (UInt64) -> Bool) throws {
        var keys: [UInt64] = []
        var values: [UInt8] = []
        var ends: [Int] = []
        func flush() throws {
            guard !keys.isEmpty else { return }
            try translatingErrors {
                try target.environment.write { txn in
                    var start = 0
                    for (key, end) in zip(keys, ends) {
                        try values.withUnsafeBytes { try txn.put(UnsafeRawBufferPointer(rebasing: $0[start..<end]), forKey: key, in: destination, flags: .append) }
                        start = end
                    }
                }
            }
            keys.removeAll(keepingCapacity: true)
            values.removeAll(keepingCapacity: true)
            ends.removeAll(keepingCapacity: true)
        }
        try translatingErrors {
            try snapshot.txn.withCursor(database) { cursor in
                var entry = try cursor.first()
                while let current = entry {
                    guard let key = current.integerKey else {
                        throw StoreError.corruptMetadata(table: table.name, reason: "a key of \(current.key.count) bytes in an integer-keyed database")
                    }
                    if keep(key) {
                        keys.append(key)
                        let record = try table.unsealed(current.value, key: key, what: "\(what) \(key)")
                        if new.sealed {
                            values.append(contentsOf: RecordSeal.sealed(Array(record), key: key))
                        } else {
                            values.append(contentsOf: record)
                        }
                        ends.append(values.count)
                        if keys.count >= Self.entriesPerTransaction || values.count >= 64 << 20 { try flush() }
                    }
                    entry = try cursor.next()
                }
            }
        }
        try flush()
    }

    /// The access counts kept for the table, by id; nil when none were kept.
    func keptCounts() throws -> [UInt64: Double]? {
        guard let counts else { return nil }
        var kept: [UInt64: Double] = [:]
        try translatingErrors {
            try snapshot.txn.withCursor(counts) { cursor in
                var entry = try cursor.first()
                while let current = entry {
                    guard let id = current.integerKey else {
                        throw StoreError.corruptMetadata(table: table.name, reason: "an access count record has a \(current.key.count)-byte key, not 8")
                    }
                    kept[id] = Double(try Store.decodeCount(current.value, id: id, table: table))
                    entry = try cursor.next()
                }
            }
        }
        return kept.isEmpty ? nil : kept
    }

    // MARK: - Copying a table as it is

    /// Copies every live row's record into one segment of `new`, with every parameter record
    /// and bucket row: the rows decode bit for bit as before. The load note goes along when the
    /// table was one segment and nothing else (it then describes the same rows). Returns the rows.
    func copyRows(into new: Table) throws -> Int {
        try copyParameters(into: new)
        var rows = 0, largest = 1
        var version: UInt32 = 1
        try translatingErrors {
            try source.forEachLiveRow(table, in: snapshot.txn) { _, record in
                rows += 1
                largest = max(largest, record.count)
                version = max(version, RowCodecs.codec(tag: TableDecoders.tag(of: record))?.formatVersion ?? 1)
            }
        }
        guard rows > 0 else { return 0 }
        let note = try translatingErrors { () -> [UInt8] in
            let segments = try source.segmentManifest(table, in: snapshot.txn)
            let delta = try snapshot.txn.statistics(table.rows).entries
            if segments.count == 1 && delta == 0,
               let kept = try source.withMetaRecord(StoreFormat.loadNoteKey(table.id, segment: segments[0]), in: snapshot.txn, table: table.name, { $0.map(Array.init) }) {
                return kept
            }
            let policy = "copied by repack (\(segments.count) segment\(segments.count == 1 ? "" : "s") and \(delta) delta entr\(delta == 1 ? "y" : "ies") folded)"
            return try LoadNote(summary: PolicySummary(policy: policy, shares: [])).encoded()
        }
        let rowsPerPart = SegmentWriter.rowsPerPart(recordSize: largest, partBytes: Store.segmentPartBytes)
        try target.writeSegment(new, rowsPerPart: rowsPerPart, expectedPartBytes: min(rowsPerPart, rows) * largest, formatVersion: version,
                                note: note, maximumRecordSize: largest) { emit in
            try translatingErrors { try source.forEachLiveRow(table, in: snapshot.txn) { id, record in try emit(id, record) } }
        }
        return rows
    }

    // MARK: - Rebuilding a table

    /// Rebuilds the table into `new` (created, empty) under `policy`: one load of its live rows
    /// (and the source's new rows, when allowed), each encoded from its source row when it has
    /// one and from its decoded row otherwise, rows without a source row kept as stored unless
    /// the policy demotes them (`Store.repack`).
    func rebuild(into new: Table, policy: CodecPolicy, counts: RepackCounts, source rowSource: RepackSource?,
                 options: RepackOptions, liveRows: Int) throws -> RebuildOutcome {
        let d = table.dimension
        let sourceRows = rowSource?.rows
        let sourceCount = sourceRows?.count ?? 0
        if let sourceRows, sourceRows.dimension != d {
            throw StoreError.invalidArgument("the source for table '\(table.name)' has rows of \(sourceRows.dimension) values; the table's have \(d)")
        }
        let sourceIDs = rowSource?.ids ?? (0..<UInt64(sourceCount)).map { $0 }
        guard sourceIDs.count == sourceCount else {
            throw StoreError.invalidArgument("\(sourceIDs.count) source ids for \(sourceCount) source rows of table '\(table.name)'")
        }
        let census = try takeCensus(sourceIDs: sourceIDs, order: try Store.sortedOrder(sourceIDs), liveRows: liveRows,
                                    progress: options.load.progress)
        if let (row, count) = census.added.first.map({ ($0, census.added.count) }), !options.addingNewRows {
            throw StoreError.invalidArgument("\(count) id\(count == 1 ? " of the source is not a row" : "s of the source are not rows") of table '\(table.name)' "
                + "(the first: id \(sourceIDs[row]), source row \(row)); add them as new rows (RepackOptions.addingNewRows, --add-new) or give this table's own rows")
        }
        let ids = sourceIDs + census.storeOnlyIDs
        var outcome = RebuildOutcome(rows: ids.count, policy: policy.description, counts: "none")
        outcome.rowsFromSource = sourceCount - census.added.count
        outcome.rowsAdded = census.added.count
        outcome.rowsWithoutSource = census.storeOnlyIDs.count
        let weights = try self.weights(of: ids, counts: counts, outcome: &outcome)

        let revision = RepackRevision(copy: self, new: new, ids: ids, sourceCount: sourceCount, census: census, outcome: outcome)
        var load = options.load
        load.layout = .segment
        load.skipInvalid = false
        load.revision = { try revision.revise(&$0) }
        let rows = RepackRows(source: sourceRows, sourceCount: sourceCount, decoded: census.decoded, dimension: d)
        let report = try target.load(table: new.name, ids: ids, source: rows, policy: policy, counts: weights, options: load)
        outcome = revision.outcome
        outcome.summary = report.summary
        return outcome
    }

    /// The live rows of the table against the source's ids: each row's form and bits a value,
    /// and the decoded values of the rows the source lacks.
    struct Census {
        var forms: [LiveRowCodecs.Form] = []
        /// Per row of the load (the source's rows in its order, then `storeOnlyIDs`): its index
        /// in `forms`, -1 for a source row new to the table; its bits a value, NaN when unknown.
        var form: [Int32]
        var bits: [Double]
        /// Live ids the source does not have, ascending, and their rows decoded.
        var storeOnlyIDs: [UInt64] = []
        var decoded: [Float] = []
        /// Source rows whose ids are not live rows, ascending by id.
        var added: [Int] = []
    }

    private func takeCensus(sourceIDs: [UInt64], order: [Int], liveRows: Int, progress: (@Sendable (WorkProgress) -> Void)?) throws -> Census {
        let d = table.dimension
        var census = Census(form: [Int32](repeating: -1, count: sourceIDs.count), bits: [Double](repeating: .nan, count: sourceIDs.count))
        var classifier = FormClassifier(parameters: TableParameters(snapshot.txn, table: table))
        let decoders = TableDecoders(table: table)
        let parameters = TableParameters(snapshot.txn, table: table)
        var row = [Float](repeating: 0, count: d)
        var next = 0   // in `order`
        var seen = 0
        try translatingErrors {
            try row.withUnsafeMutableBufferPointer { row in
                try source.forEachLiveRow(table, in: snapshot.txn) { id, record in
                    let form = try classifier.form(of: record)
                    let bits = CodecPrecision.bits(ofRecord: record, form: classifier.forms[Int(form)], dimension: d) ?? .nan
                    while next < order.count && sourceIDs[order[next]] < id {
                        census.added.append(order[next])
                        next += 1
                    }
                    if next < order.count && sourceIDs[order[next]] == id {
                        census.form[order[next]] = Int32(form)
                        census.bits[order[next]] = bits
                        next += 1
                    } else {
                        try decoders.decode(record, id: id, into: row.baseAddress!, parameters: parameters)
                        census.storeOnlyIDs.append(id)
                        census.form.append(Int32(form))
                        census.bits.append(bits)
                        census.decoded.append(contentsOf: row)
                    }
                    seen += 1
                    if seen % 65_536 == 0 { progress?(WorkProgress(stage: "reading the store", done: seen, total: max(seen, liveRows), unit: "rows")) }
                }
            }
        }
        census.added += order[next...]
        census.forms = classifier.forms
        return census
    }

    /// The count each never-counted row gets from sampled counts, and how many rows those are.
    ///
    /// Kept counts are samples (an `AccessCounter` counts one lookup in s, adding s): a row never
    /// sampled was looked up less than s times, not never, and weighing it 0 would give it the
    /// cheapest codec whatever the budget leaves. By Good–Turing, the lookups of the rows never
    /// seen are about as many as those of the rows seen once (the rows holding the smallest
    /// count, s): those are shared out evenly among them.
    static func shareOfUncountedRows(_ counts: [Double]) -> (share: Double, rows: Int) {
        let uncounted = counts.count(where: { $0 == 0 })
        guard uncounted > 0, let unit = counts.filter({ $0 > 0 }).min() else { return (0, uncounted) }
        let once = counts.count(where: { $0 == unit })
        return (Double(once) * unit / Double(uncounted), uncounted)
    }

    /// The access counts of the load's rows (`ids`) from `counts`, nil for none.
    private func weights(of ids: [UInt64], counts: RepackCounts, outcome: inout RebuildOutcome) throws -> [Double]? {
        switch counts {
        case .none:
            return nil
        case .tracked:
            guard let kept = try keptCounts() else {
                throw StoreError.invalidArgument("table '\(table.name)' has no access counts kept (an AccessCounter's flush, or embstore bench --track-every N, keeps them); give counts instead")
            }
            outcome.counts = "tracked"
            var weights = ids.map { kept[$0] ?? 0 }
            let (share, uncounted) = Self.shareOfUncountedRows(weights)
            if uncounted > 0 {
                for i in weights.indices where weights[i] == 0 { weights[i] = share }
            }
            outcome.countsDetail = String(format: "%d of %d rows counted; the %d never counted weigh %.4g each (Good–Turing: together as much as the rows counted once)",
                                          ids.count - uncounted, ids.count, uncounted, share)
            return weights
        case .given(let given):
            guard let counted = given[table.name] else { return nil }
            outcome.counts = "given"
            let rows = Set(ids)
            if let first = counted.ids.firstIndex(where: { !rows.contains($0) }) {
                let unknown = counted.ids.count(where: { !rows.contains($0) })
                throw StoreError.invalidArgument("\(unknown) counted id\(unknown == 1 ? " is not a row" : "s are not rows") of table '\(table.name)' "
                    + "(nor new rows of its source); the first is id \(counted.ids[first]) at index \(first)")
            }
            let byID = Dictionary(uniqueKeysWithValues: zip(counted.ids, counted.counts))
            return ids.map { byID[$0] ?? 0 }
        }
    }
}

// MARK: - Keeping rows as stored

/// Repack's revision of a load's decision (`LoadOptions.revision`): rows without a source row
/// that the policy does not demote keep their records, and the promotions and demotions are
/// counted. Runs once, on the loading thread.
final class RepackRevision: @unchecked Sendable {   // used by the repacking thread only
    let copy: TableCopy
    let new: Table
    let ids: [UInt64]
    let sourceCount: Int
    let census: TableCopy.Census
    private(set) var outcome: RebuildOutcome

    init(copy: TableCopy, new: Table, ids: [UInt64], sourceCount: Int, census: TableCopy.Census, outcome: RebuildOutcome) {
        self.copy = copy
        self.new = new
        self.ids = ids
        self.sourceCount = sourceCount
        self.census = census
        self.outcome = outcome
    }

    func revise(_ decision: inout LoadDecision) throws {
        let d = copy.table.dimension
        let count = decision.input.count
        var choice = decision.choice ?? [UInt8](repeating: 0, count: count)
        let candidateBits = decision.candidates.map { CodecPrecision.bits($0.codec, dimension: d) }
        var kept: [Int] = []
        for i in 0..<count where census.form[i] >= 0 {
            let old = census.bits[i]
            let newBits = candidateBits[Int(choice[i])]
            if i < sourceCount {
                // Encoded from the source: a promotion is real.
                if let newBits, !old.isNaN {
                    if newBits > old { outcome.promoted += 1 } else if newBits < old { outcome.demoted += 1 }
                }
                continue
            }
            if let newBits, !old.isNaN, newBits < old {
                outcome.demoted += 1   // from the decoded row: fewer bits of what it had
                continue
            }
            kept.append(i)
            if let newBits, !old.isNaN, newBits > old { outcome.refusedIDs.append(ids[i]) } else { outcome.keptAtSamePrecision += 1 }
        }
        guard !kept.isEmpty else { return }

        let records = try keptRecords(kept)
        // A candidate per kept form, whose "encoder" writes the stored record.
        var candidates = decision.candidates
        let firstKept = candidates.count
        var candidateOfForm: [Int32: UInt8] = [:]
        for i in kept {
            let form = census.form[i]
            if candidateOfForm[form] == nil {
                guard candidates.count < 256 else {
                    throw StoreError.invalidArgument("repack of table '\(copy.table.name)': more than 256 codec forms to write")
                }
                candidateOfForm[form] = UInt8(candidates.count)
                let stored = census.forms[Int(form)]
                candidates.append(PolicyCandidate(codec: Codec(tag: stored.tag, description: stored.name), label: stored.name + " (kept)", fixedBytes: nil))
            }
            choice[i] = candidateOfForm[form]!
        }
        let keptCandidates = Array(firstKept..<candidates.count)
        decision.groups.append(LoadGroup(codec: candidates[firstKept].codec,
                                         plan: LoadPlan { _, _, _ in preconditionFailure("kept records need no encoder of their own") }) { _, _, _ in
            let encoder = KeptRecordEncoder(records)
            return keptCandidates.map { ($0, encoder) }
        })
        // The note's shares: the policy's per-row bytes for the rows it encodes, the stored
        // records' for the kept ones.
        var meanBytes = [Double](repeating: 0, count: candidates.count)
        for k in 0..<firstKept {
            let candidate = candidates[k]
            if let share = decision.summary.shares.first(where: { $0.codec == candidate.label }), share.rows > 0 {
                meanBytes[k] = Double(share.bytes) / Double(share.rows)
            } else {
                meanBytes[k] = candidate.fixedBytes.map(Double.init)
                    ?? candidate.codec.rowCodec.forms(dimension: d).first { $0.codec == candidate.codec.description }?.bytesPerRow ?? 0
            }
        }
        decision.summary.shares = BudgetPolicy.shares(PolicyDecision(candidates: candidates, choice: choice, summary: decision.summary),
                                                      input: decision.input) { i, k in
            k >= firstKept ? Double(records.size(ofRow: i)) : meanBytes[k]
        }
        decision.candidates = candidates
        decision.choice = choice
    }

    /// The stored records of rows `kept` (ascending rows of the load, all without a source row,
    /// so in ascending id order), read from the snapshot; the parameter records and bucket rows
    /// they point at are copied into the new table under their ids.
    private func keptRecords(_ kept: [Int]) throws -> KeptRecords {
        let table = copy.table
        let records = KeptRecords()
        let references = ParameterReferences(TableParameters(copy.snapshot.txn, table: table))
        var decoders: [UInt8: any RowDecoder] = [:]   // fresh ones: their caches have asked for nothing yet
        var row = [Float](repeating: 0, count: table.dimension)
        var next = 0
        try translatingErrors {
            try copy.source.forEachLiveRow(table, in: copy.snapshot.txn) { id, record in
                guard next < kept.count, id == ids[kept[next]] else { return }
                records.append(record, ofRow: kept[next])
                // Decoding it asks the parameter source for exactly what it points at.
                let tag = TableDecoders.tag(of: record)
                guard let codec = RowCodecs.codec(tag: tag) else {
                    throw StoreError.corruptRecord(table: table.name, id: id, reason: "unknown codec tag \(tag)")
                }
                let decoder = decoders[tag] ?? codec.makeDecoder(dimension: table.dimension)
                decoders[tag] = decoder
                var pointer = record
                let decoded = try row.withUnsafeMutableBufferPointer { try decoder.decode(&pointer, count: 1, into: $0.baseAddress!, parameters: references) }
                guard decoded == 1 else {
                    throw StoreError.corruptRecord(table: table.name, id: id, reason: decoder.problem(with: record, parameters: references))
                }
                next += 1
            }
        }
        guard next == kept.count else {
            throw StoreError.corruptMetadata(table: table.name, reason: "\(kept.count - next) rows read once were not found again in the same snapshot")
        }
        try copy.copyParameters(into: new, parameters: { references.parameters.contains($0) }, buckets: { references.buckets.contains($0) })
        return records
    }
}

/// A parameter source that notes the ids asked for: decoding a record through it names the
/// parameter records and bucket rows the record points at, whatever its codec.
final class ParameterReferences: CodecParameterSource {
    let base: TableParameters
    private(set) var parameters: Set<UInt32> = []
    private(set) var buckets: Set<UInt32> = []

    init(_ base: TableParameters) { self.base = base }

    func parameterRecord(_ id: UInt32) throws -> UnsafeRawBufferPointer? {
        parameters.insert(id)
        return try base.parameterRecord(id)
    }

    func bucketRecord(_ id: UInt32) throws -> UnsafeRawBufferPointer? {
        buckets.insert(id)
        return try base.bucketRecord(id)
    }
}

/// Stored records that a repack keeps, by row of its load: filled before the load encodes,
/// then only read (by every encoding thread).
final class KeptRecords: @unchecked Sendable {
    private(set) var bytes: [UInt8] = []
    private(set) var ranges: [Int: Range<Int>] = [:]
    private(set) var maximumSize = 1

    func append(_ record: UnsafeRawBufferPointer, ofRow row: Int) {
        ranges[row] = bytes.count..<bytes.count + record.count
        bytes.append(contentsOf: record)
        maximumSize = max(maximumSize, record.count)
    }

    func size(ofRow row: Int) -> Int { ranges[row]?.count ?? 0 }
}

/// The "encoder" of kept rows: writes the row's stored record, whatever the row's values.
final class KeptRecordEncoder: RowEncoder {
    let records: KeptRecords
    init(_ records: KeptRecords) { self.records = records }

    var maximumRecordSize: Int { records.maximumSize }

    func encode(_ row: UnsafeBufferPointer<Float>, index: Int?, into record: UnsafeMutableRawBufferPointer) throws(CodecError) -> Int {
        guard let index, let range = records.ranges[index] else {
            throw .invalidParameter("repack keeps no record for row \(index.map(String.init) ?? "of a put")")
        }
        records.bytes.withUnsafeBytes { record.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[range])) }
        return range.count
    }
}

/// The rows of a repack's load: the source's rows first (its order), then the decoded rows of
/// the live ids the source lacks.
struct RepackRows: RowSource {
    let source: (any RowSource)?
    let sourceCount: Int
    let decoded: [Float]
    let dimension: Int
    var count: Int { sourceCount + decoded.count / dimension }

    func withRows<R>(_ range: Range<Int>, _ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R {
        let d = dimension
        if range.upperBound <= sourceCount, let source { return try source.withRows(range, body) }
        if range.lowerBound >= sourceCount {
            return try decoded.withUnsafeBufferPointer {
                try body(UnsafeBufferPointer(rebasing: $0[(range.lowerBound - sourceCount) * d..<(range.upperBound - sourceCount) * d]))
            }
        }
        // A stretch across the two: gathered.
        var rows = [Float]()
        rows.reserveCapacity(range.count * d)
        try source?.withRows(range.lowerBound..<sourceCount) { rows.append(contentsOf: $0) }
        rows.append(contentsOf: decoded[0..<(range.upperBound - sourceCount) * d])
        return try rows.withUnsafeBufferPointer { try body($0) }
    }

    func release() { source?.release() }
}
