import EmbeddingCodecs
import LMDB

/// What `Store.verify` found.
public struct VerifyReport: Sendable {
    public struct TableReport: Sendable {
        public let name: String
        /// Live segments whose checksum and index were checked.
        public let segments: Int
        /// Live rows decoded (delta and segments merged).
        public let rows: Int
        /// Bucket rows and parameter records checked (referenced or not).
        public let bucketRows: Int
        public let parameterRecords: Int
        /// Access count records checked.
        public let counts: Int
    }

    /// One thing wrong: where (the table, nil for the store's own records, and the record) and what.
    public struct Problem: Sendable, CustomStringConvertible {
        public let table: String?
        /// The damaged record: "id 42", "segment 3", "bucket row 7", "parameter record 2",
        /// "manifest", "meta 'load/1/2'", "access count of id 9", "table".
        public let location: String
        public let problem: String

        public var description: String {
            (table.map { "table '\($0)', " } ?? "store, ") + "\(location): \(problem)"
        }
    }

    public let tables: [TableReport]
    /// Every problem found, in the order met (at most `Store.verifyProblemLimit`).
    public let findings: [Problem]
    /// Problems found beyond `findings` (counted, not kept: verify's memory stays bounded).
    public let moreProblems: Int
    /// One sentence per problem (`findings`' descriptions); empty when the store is sound.
    public var problems: [String] { findings.map(\.description) }
    public var isSound: Bool { findings.isEmpty }
}

extension Store {
    /// The most problems `verify` keeps; more are only counted.
    public static let verifyProblemLimit = 1_000

    /// Checks everything the store holds, FORMAT.md's rules one by one, and reports every problem
    /// with where it is instead of stopping at the first:
    /// - the store's `meta` records: the format header, `next_table_id`, every table schema and
    ///   load note (and, from version 5, every record's seal);
    /// - per table: the segment manifest; each live segment's checksum, index and parts; every
    ///   live row (delta and segments merged) decodes to finite values, its bucket row and
    ///   parameter records existing; every bucket row and parameter record, referenced or not,
    ///   decodes; every access count; from version 5 every seal.
    /// Reads the whole store in one snapshot per table with cursors: memory stays bounded by one
    /// segment's part pointers and the decoders' caches, not by the table's size.
    public func verify() throws -> VerifyReport {
        let findings = Findings()
        var tables: [VerifyReport.TableReport] = []
        try translatingErrors {
            try environment.read { txn in try verifyMeta(in: txn, findings) }
        }
        for name in try tableNames() {
            let table: Table
            do {
                table = try self.table(name)
            } catch {
                findings.add(name, "table", "\(error)")
                continue
            }
            do {
                tables.append(try translatingErrors {
                    try environment.read { txn in try verify(table, in: txn, findings) }
                })
            } catch {
                findings.add(name, "table", "\(error)")
            }
        }
        return VerifyReport(tables: tables, findings: findings.kept, moreProblems: findings.more)
    }

    /// The cursor's next entry; a cursor that cannot move on (a damaged page) is a problem, and
    /// the walk of that database ends there, said, not silently.
    static func nextEntry(_ cursor: inout Cursor, _ findings: Findings, _ table: String?, _ location: String) -> CursorEntry? {
        do {
            return try cursor.next()
        } catch {
            findings.add(table, location, "the walk stopped: \(error)")
            return nil
        }
    }

    /// Problems kept up to the limit, the rest counted.
    final class Findings {
        var kept: [VerifyReport.Problem] = []
        var more = 0

        func add(_ table: String?, _ location: String, _ problem: String) {
            if kept.count < Store.verifyProblemLimit {
                kept.append(.init(table: table, location: location, problem: problem))
            } else {
                more += 1
            }
        }
    }

    /// The store's own records in `meta`: every seal (version 5), the header, `next_table_id`,
    /// each schema (of tables, and of tables loads are creating) and each load note.
    private func verifyMeta(in txn: borrowing Transaction, _ findings: Findings) throws {
        var highestTableID: UInt32 = 0
        var nextTableID: UInt32?
        try txn.withCursor(meta) { cursor in
            var entry = try cursor.first()
            while let current = entry {
                let key = current.stringKey
                defer { entry = Store.nextEntry(&cursor, findings, nil, "meta") }
                let tableName = key.hasPrefix(StoreFormat.tableKeyPrefix) ? String(key.dropFirst(StoreFormat.tableKeyPrefix.count)) : nil
                if key == StoreFormat.formatKey {
                    do { _ = try StoreFormat.decodeHeader(current.value, path: path) } catch { findings.add(nil, "meta 'format'", "\(error)") }
                    continue
                }
                var payload = current.value
                if sealed {
                    switch RecordSeal.open(current.value, key: key) {
                    case .success(let opened): payload = opened
                    case .failure(let broken):
                        findings.add(tableName, "meta '\(key)'", "\(broken)")
                        continue
                    }
                }
                if key == StoreFormat.nextTableIDKey {
                    if payload.count == 4 { nextTableID = loadLE(payload, 0) } else { findings.add(nil, "meta '\(key)'", "\(payload.count) bytes, not 4") }
                } else if let schemaName = tableName ?? (key.hasPrefix(StoreFormat.creatingKeyPrefix) ? String(key.dropFirst(StoreFormat.creatingKeyPrefix.count)) : nil) {
                    // A table's schema, or the schema of one a load is creating (not a table yet).
                    do {
                        highestTableID = max(highestTableID, try TableSchema.decode(payload, table: schemaName).tableID)
                    } catch {
                        findings.add(tableName, "meta '\(key)'", "\(error)")
                    }
                } else if key.hasPrefix("load/"), LoadNote.decode(payload) == nil {
                    findings.add(nil, "meta '\(key)'", "the load note is not the JSON object FORMAT.md describes")
                }
            }
        }
        if let nextTableID, nextTableID <= highestTableID {
            findings.add(nil, "meta 'next_table_id'", "it is \(nextTableID), but table id \(highestTableID) exists: a new table would reuse an id")
        } else if nextTableID == nil, !isReadOnly || highestTableID > 0 {
            findings.add(nil, "meta 'next_table_id'", "the record is missing")
        }
    }

    /// One table in the snapshot of `txn`.
    private func verify(_ table: Table, in txn: borrowing Transaction, _ findings: Findings) throws -> VerifyReport.TableReport {
        let name = table.name
        let decoders = TableDecoders(table: table)
        let parameters = TableParameters(txn, table: table)
        var row = [Float](repeating: 0, count: table.dimension)

        // Segments: the manifest, then each one's checksum, index and parts; rows are read only
        // from the sound ones.
        var sound: [SegmentView] = []
        var manifest: [UInt32] = []
        do {
            manifest = try segmentManifest(table, in: txn)
        } catch {
            findings.add(name, "manifest", "\(error)")
        }
        for segment in manifest {
            do {
                let view = try SegmentView(table: table, segment: segment, in: txn)
                try Store.verifySegment(view, table: table)
                sound.append(view)
            } catch {
                findings.add(name, "segment \(segment)", "\(error)")
            }
        }

        // Live rows.
        var rows = 0
        try row.withUnsafeMutableBufferPointer { row in
            try forEachLiveRow(table, segments: sound, in: txn, onDamage: { id, error in
                findings.add(name, "id \(id)", "\(error)")
            }) { id, record, _ in
                do {
                    try decoders.decode(record, id: id, into: row.baseAddress!, parameters: parameters)
                    rows += 1
                } catch {
                    findings.add(name, "id \(id)", "\(error)")
                }
            }
        }
        // Delta keys must be ids (8 bytes); forEachLiveRow stops at the first that is not.
        try txn.withCursor(table.rows) { cursor in
            var entry = try cursor.first()
            while let current = entry {
                if current.integerKey == nil { findings.add(name, "delta", "a key of \(current.key.count) bytes, not 8") }
                entry = try cursor.next()
            }
        }

        // Bucket rows: each decodes as a bucket row (tags 1–4, 10, 11) to finite values.
        var bucketRows = 0
        try txn.withCursor(table.buckets) { cursor in
            var entry = try cursor.first()
            while let current = entry {
                defer { entry = Store.nextEntry(&cursor, findings, name, "bucket rows") }
                bucketRows += 1
                guard let key = current.integerKey, key <= UInt64(UInt32.max) else {
                    findings.add(name, "bucket rows", "a key that is not a 32-bit id (\(current.key.count) bytes)")
                    continue
                }
                do {
                    let record = try table.unsealed(current.value, key: key, what: "bucket row \(key)")
                    let tag = TableDecoders.tag(of: record)
                    guard RowCodecs.codec(tag: tag)?.canStoreBucketRows == true else {
                        findings.add(name, "bucket row \(key)", "tag \(tag) is not a codec bucket rows may use")
                        continue
                    }
                    try row.withUnsafeMutableBufferPointer { row in
                        try decoders.decode(record, id: key, into: row.baseAddress!, parameters: parameters)
                    }
                } catch {
                    findings.add(name, "bucket row \(key)", "\(error)")
                }
            }
        }

        // Parameter records: each parses as the kind it says, of the table's dimension.
        var parameterRecords = 0
        try txn.withCursor(table.bases) { cursor in
            var entry = try cursor.first()
            while let current = entry {
                defer { entry = Store.nextEntry(&cursor, findings, name, "parameter records") }
                parameterRecords += 1
                guard let key = current.integerKey, key >= 1, key <= UInt64(UInt32.max) else {
                    findings.add(name, "parameter records", "a key that is not an id in 1...2³²−1")
                    continue
                }
                if let problem = parameterProblem(UInt32(key), table: table, parameters: parameters) {
                    findings.add(name, "parameter record \(key)", problem)
                }
            }
        }

        // Access counts (optional database).
        var counts = 0
        if let database = try? txn.openDatabase(Store.countsDatabase(table.id), flags: .integerKey) {
            try txn.withCursor(database) { cursor in
                var entry = try cursor.first()
                while let current = entry {
                    defer { entry = Store.nextEntry(&cursor, findings, name, "access counts") }
                    counts += 1
                    guard let id = current.integerKey else {
                        findings.add(name, "access counts", "a key of \(current.key.count) bytes, not 8")
                        continue
                    }
                    do { _ = try Store.decodeCount(current.value, id: id, table: table) } catch { findings.add(name, "access count of id \(id)", "\(error)") }
                }
            }
        }
        return .init(name: name, segments: manifest.count, rows: rows, bucketRows: bucketRows, parameterRecords: parameterRecords, counts: counts)
    }

    /// What is wrong with parameter record `id` (its seal, its kind, its fields, its dimension),
    /// or nil.
    private func parameterProblem(_ id: UInt32, table: Table, parameters: TableParameters) -> String? {
        do {
            guard let record = try parameters.parameterRecord(id) else { return "missing" }
            let dimension: Int
            switch TypedParameterKind.of(record).map({ TypedParameterKind(rawValue: $0) }) {
            case .none:
                dimension = try PCABasis(record: record).dimension
            case .some(.transformBasis):
                dimension = try TransformBasis(record: record).dimension
            case .some(.transformModel):
                dimension = try TransformModel(record: record) { basisID in
                    guard let stored = try parameters.parameterRecord(basisID) else {
                        throw StoreError.corruptMetadata(table: table.name, reason: "tc model \(id) names tc basis \(basisID), which does not exist")
                    }
                    return try TransformBasis(record: stored)
                }.basis.dimension
            case .some(.none):
                return "unknown typed parameter kind \(TypedParameterKind.of(record) ?? 0)"
            }
            return dimension == table.dimension ? nil : "dimension \(dimension), not the table's \(table.dimension)"
        } catch {
            return "\(error)"
        }
    }
}
