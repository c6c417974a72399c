import LMDB

/// Segments in LMDB: database `t<T>/segments` (`MDB_INTEGERKEY`), key `(segment id << 32) | part`,
/// key 0 the manifest (u32 count, then count × u32 live segment ids, newest first).
///
/// Internal and not yet called by `load`, lookups, export or statistics: the format stays
/// version 1 until they are all wired in (issue 3). Tests drive it directly.
extension Store {
    static func segmentsDatabase(_ tableID: UInt32) -> String { "t\(tableID)/segments" }

    /// Key of `part` of segment `segment`.
    static func segmentKey(_ segment: UInt32, part: Int) -> UInt64 { UInt64(segment) << 32 | UInt64(part) }

    /// Opens (creating it when writable) the table's segments database.
    func segmentsDatabase(_ table: Table) throws -> Database {
        try table.requireLive()
        let name = Store.segmentsDatabase(table.id)
        return try translatingErrors {
            if isReadOnly { return try environment.openDatabases([name], flags: .integerKey)[0] }
            return try environment.write { txn in try txn.openDatabase(name, flags: [.create, .integerKey]) }
        }
    }

    /// Live segment ids of `table`, newest first (empty when it has none, e.g. a version-1 table).
    func segmentManifest(_ database: Database, table: Table, in txn: borrowing Transaction) throws -> [UInt32] {
        try txn.withValue(forKey: 0, in: database) { bytes in
            guard let bytes else { return [] }
            guard bytes.count >= 4 else { throw StoreError.corruptMetadata(table: table.name, reason: "segment manifest of \(bytes.count) bytes") }
            let count = Int(loadLE(bytes, 0) as UInt32)
            guard bytes.count == 4 + 4 * count else {
                throw StoreError.corruptMetadata(table: table.name, reason: "segment manifest of \(bytes.count) bytes lists \(count) segments")
            }
            return (0..<count).map { loadLE(bytes, 4 + 4 * $0) }
        }
    }

    /// Writes `records` of strictly ascending `ids` as a new segment and returns its id.
    /// Data parts go in their own transactions (LMDB caps the pages one may dirty); the segment
    /// becomes visible only in the last one, which writes part 0 and the manifest, so a crash
    /// part-way leaves unreferenced parts but never a half segment.
    @discardableResult
    func writeSegment(_ table: Table, ids: [UInt64], records: [[UInt8]], rowsPerPart: Int) throws -> UInt32 {
        try requireWritable()
        let database = try segmentsDatabase(table)
        let parts: SegmentBuilder.Parts
        do {
            parts = try SegmentBuilder.build(ids: ids, records: records, rowsPerPart: rowsPerPart)
        } catch {
            throw StoreError.invalidArgument("segment for table '\(table.name)': \(error.reason)")
        }
        return try translatingErrors {
            // Ids are never reused: the next one follows the highest key ever written, even a
            // dropped segment's leftover parts.
            let segment = try environment.read { txn in
                try txn.withCursor(database) { cursor in UInt32((try cursor.last()?.integerKey ?? 0) >> 32) + 1 }
            }
            for (i, part) in parts.dataParts.enumerated() {
                try environment.retryingWhenMapFull {
                    try environment.write { txn in
                        try part.withUnsafeBytes { try txn.put($0, forKey: Store.segmentKey(segment, part: i + 1), in: database) }
                    }
                }
            }
            try environment.retryingWhenMapFull {
                try environment.write { txn in
                    let live = try segmentManifest(database, table: table, in: txn)
                    try parts.part0.withUnsafeBytes { try txn.put($0, forKey: Store.segmentKey(segment, part: 0), in: database) }
                    var manifest: [UInt8] = []
                    appendLE(UInt32(live.count + 1), to: &manifest)
                    for id in [segment] + live { appendLE(id, to: &manifest) }
                    try manifest.withUnsafeBytes { try txn.put($0, forKey: 0, in: database) }
                }
            }
            return segment
        }
    }

    /// The record of `id` in the newest live segment holding it, or nil. Never returns another
    /// row's bytes: inconsistent offsets or a missing part throw, naming table and segment.
    func segmentRecord(_ table: Table, id: UInt64) throws -> [UInt8]? {
        let database = try segmentsDatabase(table)
        return try translatingErrors {
            try environment.read { txn in
                for segment in try segmentManifest(database, table: table, in: txn) {
                    let found = try txn.withValue(forKey: Store.segmentKey(segment, part: 0), in: database) { bytes -> [UInt8]?? in
                        let index = try segmentIndex(bytes, table: table, segment: segment)
                        guard let row = index.row(of: id) else { return .some(nil) }
                        let part = index.part(ofRow: row)
                        return try txn.withValue(forKey: Store.segmentKey(segment, part: part), in: database) { data -> [UInt8]?? in
                            guard let data, let range = index.recordRange(ofRow: row, partLength: data.count) else {
                                throw StoreError.corruptMetadata(table: table.name, reason: "segment \(segment) part \(part) is missing or does not match its index")
                            }
                            return .some(Array(data[range]))
                        }
                    }
                    if let record = found ?? nil { return record }
                }
                return nil
            }
        }
    }

    /// Recomputes every live segment's checksum and checks its parts against its index.
    func verifySegments(_ table: Table) throws {
        let database = try segmentsDatabase(table)
        try translatingErrors {
            try environment.read { txn in
                for segment in try segmentManifest(database, table: table, in: txn) {
                    try txn.withValue(forKey: Store.segmentKey(segment, part: 0), in: database) { bytes in
                        let index = try segmentIndex(bytes, table: table, segment: segment)
                        var sum = SegmentChecksum()
                        for part in 1...Int(index.header.partCount) {
                            try txn.withValue(forKey: Store.segmentKey(segment, part: part), in: database) { data in
                                let first = (part - 1) * Int(index.header.rowsPerPart)
                                guard let data, index.recordRange(ofRow: first, partLength: data.count) != nil else {
                                    throw StoreError.corruptMetadata(table: table.name, reason: "segment \(segment) part \(part) is missing or does not match its index")
                                }
                                sum.update(data)
                            }
                        }
                        sum.update(UnsafeRawBufferPointer(rebasing: index.part0[SegmentHeader.size...]))
                        guard sum.value == index.header.checksum else {
                            throw StoreError.corruptMetadata(table: table.name, reason: "segment \(segment) checksum mismatch")
                        }
                    }
                }
            }
        }
    }

    private func segmentIndex(_ bytes: UnsafeRawBufferPointer?, table: Table, segment: UInt32) throws -> SegmentIndex {
        guard let bytes else { throw StoreError.corruptMetadata(table: table.name, reason: "segment \(segment) has no part 0") }
        do {
            return try SegmentIndex(part0: bytes)
        } catch {
            throw StoreError.corruptMetadata(table: table.name, reason: "segment \(segment): \(error.reason)")
        }
    }
}
