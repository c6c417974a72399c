import Foundation
import EmbeddingCodecs
import LMDB

/// Segments in LMDB: database `t<T>/segments` (`MDB_INTEGERKEY`), key `(segment id << 32) | part`,
/// key 0 the manifest (u32 count, then count × u32 live segment ids, newest first).
extension Store {
    static func segmentsDatabase(_ tableID: UInt32) -> String { "t\(tableID)/segments" }

    /// Key of `part` of segment `segment`.
    static func segmentKey(_ segment: UInt32, part: Int) -> UInt64 { UInt64(segment) << 32 | UInt64(part) }

    /// Data parts of about this many bytes: large enough that a row is found with arithmetic on
    /// one map pointer, small enough for one write transaction (LMDB caps the pages it dirties).
    static let segmentPartBytes = 16 << 20

    /// Live segment ids of `table`, newest first (empty when it has none, e.g. a version-1 table).
    func segmentManifest(_ table: Table, in txn: borrowing Transaction) throws -> [UInt32] {
        guard let database = table.segments else { return [] }
        return try txn.withValue(forKey: 0, in: database) { bytes in
            guard let bytes else { return [] }
            return try Store.decodeManifest(try table.unsealed(bytes, key: 0, what: "the segment manifest"), table: table)
        }
    }

    static func decodeManifest(_ bytes: UnsafeRawBufferPointer, table: Table) throws -> [UInt32] {
        guard bytes.count >= 4 else { throw StoreError.corruptMetadata(table: table.name, reason: "segment manifest of \(bytes.count) bytes") }
        let count = Int(loadLE(bytes, 0) as UInt32)
        guard bytes.count == 4 + 4 * count else {
            throw StoreError.corruptMetadata(table: table.name, reason: "segment manifest of \(bytes.count) bytes lists \(count) segments")
        }
        let segments: [UInt32] = (0..<count).map { loadLE(bytes, 4 + 4 * $0) }
        if Set(segments).count != count || segments.contains(0) {
            throw StoreError.corruptMetadata(table: table.name, reason: "segment manifest lists a segment twice or segment 0: \(segments)")
        }
        return segments
    }

    /// Writes a new segment from the rows `produce` emits (strictly ascending ids, each a record:
    /// tag + payload) and returns its id, or nil when `produce` emitted nothing.
    ///
    /// Each full data part is written in its own transaction; the segment becomes visible only
    /// in the last one, which writes part 0, puts the segment first in the manifest and removes
    /// from the delta every id the segment holds (the newest write of an id wins). A crash or
    /// an error part-way leaves the table's rows as they were: the parts already written are
    /// unreferenced; after an error here they are removed, after a crash they stay (wasted
    /// space, never read) until the table is dropped.
    @discardableResult
    func writeSegment(_ table: Table, rowsPerPart: Int, expectedPartBytes: Int = 0, formatVersion: UInt32 = 1, note: [UInt8]? = nil,
                      maximumRecordSize: Int? = nil, checksum: SegmentChecksum.Algorithm = .blockMix64, sizeClassIndex: Bool = false,
                      _ produce: (_ emit: (UInt64, UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws -> UInt32? {
        try requireWritable()
        // Every transaction of the load goes to this generation, and is refused once a swap has
        // replaced it: the parts written before would not be in the new one.
        let generation = generation
        let table = try generation.local(table)
        guard let database = table.segments else {
            throw StoreError.corruptMetadata(table: table.name, reason: "it has no segments database")
        }
        var writer: SegmentWriter
        do {
            writer = try SegmentWriter(rowsPerPart: rowsPerPart, expectedPartBytes: expectedPartBytes, maximumRecordSize: maximumRecordSize,
                                       checksum: checksum, sizeClassIndex: sizeClassIndex)
        } catch {
            throw StoreError.invalidArgument("segment for table '\(table.name)': \(error.reason)")
        }
        let claimed = SegmentClaim()
        // A new id follows the highest key written, leftover parts included, so no visible
        // segment's id is reused (a failed write's parts are removed, and its never-visible id
        // may come again). Claimed inside the transaction that writes the first part, so two
        // concurrent writers cannot pick the same one.
        @Sendable func claim(_ txn: borrowing Transaction) throws -> UInt32 {
            if let segment = claimed.segment { return segment }
            let next = try txn.withCursor(database) { cursor in UInt32((try cursor.last()?.integerKey ?? 0) >> 32) + 1 }
            claimed.segment = next
            return next
        }
        // Full parts are written on a thread of their own while the next one is encoded.
        let environment = generation.environment
        let parts = SegmentPartWriter { number, full in
            try translatingErrors {
                try environment.write { txn in
                    try generation.requireCurrent(txn)
                    let id = try claim(txn)
                    try full.withUnsafeBytes { try txn.put($0, forKey: Store.segmentKey(id, part: number), in: database) }
                }
            }
            CrashPoints.reach("segment.part-written")
        }
        var partsFinished = false
        do {
            try produce { id, record in
                let full: [UInt8]?
                do {
                    full = try writer.append(id: id, record: record)
                } catch let error as SegmentFormatError {
                    throw StoreError.invalidArgument("segment for table '\(table.name)': \(error.reason)")
                }
                guard let full else { return }
                writer.recycle(try parts.send(writer.partsWritten, full))
            }
            partsFinished = true
            try parts.finish()
            guard writer.rowCount > 0 else { return nil }
            let (lastPart, part0) = try writer.finish()
            let lastNumber = writer.partsWritten
            CrashPoints.reach("segment.before-commit")
            let segment = try translatingErrors {
                try environment.retryingWhenMapFull {
                    try environment.write { txn in
                        try generation.requireCurrent(txn)
                        let id = try claim(txn)
                        if let lastPart {
                            try lastPart.withUnsafeBytes { try txn.put($0, forKey: Store.segmentKey(id, part: lastNumber), in: database) }
                        }
                        let (header, live) = try part0.withUnsafeBytes { bytes in
                            try txn.put(bytes, forKey: Store.segmentKey(id, part: 0), in: database)
                            let index = try SegmentIndex(part0: bytes)
                            try removeShadowedDelta(table, segment: index, in: txn)
                            let live = try retireShadowedSegments(table, by: index, live: try segmentManifest(table, in: txn), in: txn)
                            return (index.header, live)
                        }
                        var manifest: [UInt8] = []
                        appendLE(UInt32(live.count + 1), to: &manifest)
                        for live in [id] + live { appendLE(live, to: &manifest) }
                        try table.sealing(manifest, key: 0).withUnsafeBytes { try txn.put($0, forKey: 0, in: database) }
                        if let note { try generation.putMetaRecord(note, key: StoreFormat.loadNoteKey(table.id, segment: id), in: txn) }
                        try upgradeFormat(to: max(StoreFormat.version(of: header), formatVersion), in: txn)
                        try generation.publishIfBeingCreated(table, in: txn)
                        return id
                    }
                }
            }
            CrashPoints.reach("segment.committed")
            return segment
        } catch {
            if !partsFinished { try? parts.finish() }
            if let segment = claimed.segment { try? deleteSegmentParts(table, segment: segment) }
            if let error = error as? SegmentFormatError {
                throw StoreError.invalidArgument("segment for table '\(table.name)': \(error.reason)")
            }
            throw error
        }
    }

    /// Convenience for tests and small tables: a segment from records in memory.
    @discardableResult
    func writeSegment(_ table: Table, ids: [UInt64], records: [[UInt8]], rowsPerPart: Int,
                      checksum: SegmentChecksum.Algorithm = .blockMix64, sizeClassIndex: Bool = false) throws -> UInt32? {
        guard ids.count == records.count else { throw StoreError.invalidArgument("\(ids.count) ids for \(records.count) records") }
        return try writeSegment(table, rowsPerPart: rowsPerPart, maximumRecordSize: records.map(\.count).max(), checksum: checksum,
                                sizeClassIndex: sizeClassIndex) { emit in
            for (id, record) in zip(ids, records) { try record.withUnsafeBytes { try emit(id, $0) } }
        }
    }

    /// True when a live segment holds `id` (reads only the segments' part 0).
    func segmentsHold(_ table: Table, id: UInt64, in txn: borrowing Transaction) throws -> Bool {
        guard let database = table.segments else { return false }
        for segment in try segmentManifest(table, in: txn) {
            let holds = try txn.withValue(forKey: Store.segmentKey(segment, part: 0), in: database) { bytes -> Bool in
                guard let bytes else { throw StoreError.corruptMetadata(table: table.name, reason: "segment \(segment) has no part 0") }
                do {
                    return try SegmentIndex(part0: bytes).row(of: id) != nil
                } catch let error as SegmentFormatError {
                    throw StoreError.corruptMetadata(table: table.name, reason: "segment \(segment): \(error.reason)")
                }
            }
            if holds { return true }
        }
        return false
    }

    /// Removes from `live` (and from the store: its parts and its load note) every segment whose
    /// ids `newer` all holds: no lookup can reach its rows any more. A table loaded again and
    /// again so keeps one segment, and LMDB reuses the pages of the ones replaced. Returns the
    /// segments left.
    private func retireShadowedSegments(_ table: Table, by newer: SegmentIndex, live: [UInt32], in txn: borrowing Transaction) throws -> [UInt32] {
        guard let database = table.segments else { return live }
        var kept: [UInt32] = []
        for segment in live {
            let shadowed = try txn.withValue(forKey: Store.segmentKey(segment, part: 0), in: database) { bytes -> Bool in
                guard let bytes, let older = try? SegmentIndex(part0: bytes) else { return false }   // damaged: left for verify
                guard older.header.firstID >= newer.header.firstID, older.header.lastID <= newer.header.lastID else { return false }
                if !newer.header.kind.isSparse { return true }   // a dense segment holds its whole range
                for r in 0..<older.count where newer.row(of: older.id(atRow: r)) == nil { return false }
                return true
            }
            guard shadowed else {
                kept.append(segment)
                continue
            }
            try Store.deleteParts(of: segment, in: database, txn)
            _ = try txn.delete(StoreFormat.loadNoteKey(table.id, segment: segment), in: meta)
        }
        return kept
    }

    /// Deletes the delta rows (and tombstones) of ids that `segment` holds.
    private func removeShadowedDelta(_ table: Table, segment: SegmentIndex, in txn: borrowing Transaction) throws {
        var shadowed: [UInt64] = []
        try txn.withCursor(table.rows) { cursor in
            var entry = try cursor.seek(atLeast: segment.header.firstID)
            while let current = entry, let id = current.integerKey, id <= segment.header.lastID {
                if segment.row(of: id) != nil { shadowed.append(id) }
                entry = try cursor.next()
            }
        }
        for id in shadowed { _ = try txn.delete(id, in: table.rows) }
    }

    /// Marks the store as version 2 (it now holds segments) if it was version 1.
    /// Raises the store's format version to `minimum` when it is lower (never lowers it): the
    /// commit that writes the first byte a version needs also says that version.
    func upgradeFormat(to minimum: UInt32, in txn: borrowing Transaction) throws {
        let version = try txn.withValue(forKey: StoreFormat.formatKey, in: meta) { bytes -> UInt32 in
            guard let bytes else { throw StoreError.notAStore(path: path, reason: "'meta' has no 'format' record") }
            return try StoreFormat.decodeHeader(bytes, path: path)
        }
        // A store is created sealed (version 5) or not, and nothing unsealed becomes 5.
        let minimum = sealed ? minimum : min(minimum, StoreFormat.sealedVersion - 1)
        if version < minimum {
            try StoreFormat.encodeHeader(version: minimum).withUnsafeBytes { try txn.put($0, forKey: StoreFormat.formatKey, in: meta) }
        }
    }

    /// Deletes every stored part of `segment` (part 0 included).
    @discardableResult
    static func deleteParts(of segment: UInt32, in database: Database, _ txn: borrowing Transaction) throws -> Int {
        var keys: [UInt64] = []
        try txn.withCursor(database) { cursor in
            var entry = try cursor.seek(atLeast: Store.segmentKey(segment, part: 0))
            while let current = entry, let key = current.integerKey, key >> 32 == UInt64(segment) {
                keys.append(key)
                entry = try cursor.next()
            }
        }
        for key in keys { _ = try txn.delete(key, in: database) }
        return keys.count
    }

    /// Removes every stored part of `segment` (after a failed write).
    private func deleteSegmentParts(_ table: Table, segment: UInt32) throws {
        guard let database = table.segments else { return }
        _ = try writeTransaction { txn in try Store.deleteParts(of: segment, in: database, txn) }
    }

    /// Recomputes every live segment's checksum and checks its parts against its index;
    /// returns the number of segments checked.
    @discardableResult
    func verifySegments(_ table: Table) throws -> Int {
        let (generation, table) = try resolved(table)
        return try translatingErrors { try generation.environment.read { txn in try verifySegments(table, in: txn) } }
    }

    /// `verifySegments` in the snapshot of `txn`.
    func verifySegments(_ table: Table, in txn: borrowing Transaction) throws -> Int {
        let live = try segmentManifest(table, in: txn)
        for segment in live { try Store.verifySegment(try SegmentView(table: table, segment: segment, in: txn), table: table) }
        return live.count
    }

    /// Checks one segment: its checksum, its index (ids strictly ascending, group entries) and
    /// that the index places every record inside its part.
    static func verifySegment(_ view: SegmentView, table: Table) throws {
        let segment = view.segment
        let index = view.index
        let sum = SegmentChecksum.of(parts: view.parts, part0: UnsafeRawBufferPointer(start: index.part0, count: index.header.part0Size),
                                     algorithm: index.header.checksumAlgorithm)
        guard sum == index.header.checksum else {
            throw StoreError.corruptMetadata(table: table.name, reason: "segment \(segment) checksum mismatch: its bytes changed since it was written")
        }
        // The checksum does not cover the 64-byte header: a sparse segment's ids must
        // run strictly ascending from its first to its last id, and the directory
        // must count them, or a damaged first id, last id or shift hides rows.
        if index.header.kind.isSparse, let reason = Store.sparseIndexProblem(index) {
            throw StoreError.corruptMetadata(table: table.name, reason: "segment \(segment) \(reason)")
        }
        // Group entries: every check word, base and end (the checksum does not cover
        // entries of a segment whose header was damaged into another layout).
        if index.header.kind.hasGroupEntries, let reason = Store.groupEntriesProblem(index, parts: view.parts) {
            throw StoreError.corruptMetadata(table: table.name, reason: "segment \(segment) \(reason)")
        }
        // The index must place every record inside its part (sized segments).
        if index.header.kind.isSized {
            for p in 1...index.partCount {
                let last = min(p * Int(index.header.rowsPerPart), index.count) - 1
                guard let (offset, length) = index.record(ofRow: last, partLength: view.parts[p - 1].count),
                      offset + length == view.parts[p - 1].count else {
                    throw StoreError.corruptMetadata(table: table.name, reason: "segment \(segment) part \(p) does not match its index")
                }
            }
        }
    }
}

extension Store {
    /// What is wrong with a kind 5 or 6 segment's group entries, or nil: each entry passes its
    /// check, starts where the previous one ended (0 for a part's first), its rows' ends rise,
    /// the slots of rows it lacks are 0, and each part ends with its last record. O(N).
    static func groupEntriesProblem(_ index: SegmentIndex, parts: [UnsafeRawBufferPointer]) -> String? {
        let header = index.header
        let width = header.endWidth, rowsPerGroup = header.rowsPerGroup
        func load(_ entry: UnsafeRawPointer, _ slot: Int) -> Int {
            width == 2 ? Int(UInt16(littleEndian: entry.loadUnaligned(fromByteOffset: 4 + 2 * slot, as: UInt16.self)))
                : Int(UInt32(littleEndian: entry.loadUnaligned(fromByteOffset: 4 + 4 * slot, as: UInt32.self)))
        }
        for p in 1...index.partCount {
            var offset = 0
            let rows = index.rows(inPart: p)
            for g in 0..<GroupEntry.count(rows: rows, width: width) {
                let number = (p - 1) * header.entriesPerPart + g
                let entry = index.part0 + header.groupsOffset + GroupEntry.size * number
                guard GroupEntry.xorOfWords(entry) == UInt16(truncatingIfNeeded: number) else { return "group entry \(number) fails its check" }
                guard Int(UInt32(littleEndian: entry.loadUnaligned(as: UInt32.self))) == offset else {
                    return "group entry \(number) does not start where the previous one ended"
                }
                let used = min(rowsPerGroup, rows - g * rowsPerGroup)
                var previous = 0
                for slot in 0..<rowsPerGroup {
                    let end = load(entry, slot)
                    if slot < used {
                        guard end > previous else { return "group entry \(number) has a record of no bytes at slot \(slot)" }
                        previous = end
                    } else if end != 0 {
                        return "group entry \(number) has an end for slot \(slot), past its rows"
                    }
                }
                if width == 4 && entry.loadUnaligned(fromByteOffset: 60, as: UInt16.self) != 0 {
                    return "group entry \(number) has padding that is not 0"
                }
                offset += previous
            }
            guard offset == parts[p - 1].count else { return "part \(p) has \(parts[p - 1].count) bytes; its group entries give \(offset)" }
        }
        let padding = UnsafeRawBufferPointer(start: index.part0 + header.classSizesOffset, count: header.groupsOffset - header.classSizesOffset)
        return padding.allSatisfy { $0 == 0 } ? nil : "padding before the group entries is not 0"
    }

    /// What is wrong with a sparse segment's ids and directory given its header, or nil: O(N + B).
    static func sparseIndexProblem(_ index: SegmentIndex) -> String? {
        let header = index.header
        let part0 = UnsafeRawBufferPointer(start: index.part0, count: header.part0Size)
        let shift = UInt64(header.directoryShift)
        var bucket = 0   // the next directory entry to check
        var previous: UInt64?
        for r in 0..<index.count {
            let id = index.id(atRow: r)
            guard previous.map({ id > $0 }) ?? (id == header.firstID), id <= header.lastID else {
                return "ids are not strictly ascending from first id \(header.firstID) to last id \(header.lastID) at row \(r)"
            }
            // Entries up to this id's bucket count the rows before it.
            let b = Int((id - header.firstID) >> shift)
            while bucket <= b {
                guard loadLE(part0, header.directoryOffset + 4 * bucket) as UInt32 == UInt32(r) else {
                    return "directory entry \(bucket) does not count its rows"
                }
                bucket += 1
            }
            previous = id
        }
        guard previous == header.lastID else { return "last id is not \(header.lastID)" }
        while bucket < header.directoryEntries {
            guard loadLE(part0, header.directoryOffset + 4 * bucket) as UInt32 == UInt32(index.count) else {
                return "directory entry \(bucket) does not count its rows"
            }
            bucket += 1
        }
        return nil
    }
}

/// The id a segment being written claimed, shared by the part writer's thread and the final
/// commit (which runs after that thread has ended).
private final class SegmentClaim: @unchecked Sendable {
    private let lock = NSLock()
    private var claimed: UInt32?
    var segment: UInt32? {
        get { lock.withLock { claimed } }
        set { lock.withLock { claimed = newValue } }
    }
}

/// One live segment inside one snapshot: its index and its data parts, all pointing into the
/// map. Valid only while the transaction it was read in (or one of the same snapshot) is live.
struct SegmentView {
    let segment: UInt32
    let index: SegmentIndex
    /// Data parts 1…P (index 0 is part 1).
    let parts: [UnsafeRawBufferPointer]

    /// Reads part 0 and the data parts' locations: P + 1 lookups, no scan of rows.
    init(table: Table, segment: UInt32, in txn: borrowing Transaction) throws {
        guard let database = table.segments else { throw StoreError.corruptMetadata(table: table.name, reason: "it has no segments database") }
        self.segment = segment
        guard let part0 = try txn.unsafeValue(forKey: Store.segmentKey(segment, part: 0), in: database) else {
            throw StoreError.corruptMetadata(table: table.name, reason: "segment \(segment) has no part 0")
        }
        do {
            index = try SegmentIndex(part0: part0)
        } catch {
            throw StoreError.corruptMetadata(table: table.name, reason: "segment \(segment): \(error.reason)")
        }
        var parts: [UnsafeRawBufferPointer] = []
        parts.reserveCapacity(index.partCount)
        for p in 1...index.partCount {
            // Fixed kinds: the exact length. Sized kinds: the part's last record must end at its
            // end (one group of 16 size classes read per part).
            let last = min(p * Int(index.header.rowsPerPart), index.count) - 1
            guard let part = try txn.unsafeValue(forKey: Store.segmentKey(segment, part: p), in: database),
                  index.fixedPartLength(p).map({ $0 == part.count })
                    ?? index.record(ofRow: last, partLength: part.count).map({ $0.offset + $0.length == part.count }) ?? false else {
                throw StoreError.corruptMetadata(table: table.name, reason: "segment \(segment) part \(p) is missing or does not match its index")
            }
            parts.append(part)
        }
        self.parts = parts
    }

    /// The record of row `r`, or nil when the index does not fit the part (damage).
    @inline(__always)
    func record(ofRow r: Int) -> UnsafeRawBufferPointer? {
        index.record(ofRow: r, in: parts[index.part(ofRow: r) - 1])
    }
}
