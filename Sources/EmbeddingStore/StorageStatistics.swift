import EmbeddingCodecs
import LMDB

// Where a table's bytes go and what they buy: rows and bytes on disk per codec form, from LMDB's
// page counts, and (given lookup counts) the share of lookups each form serves.
//
// Attribution rule (README, "embstore stats"). Every page of a table's four databases is counted
// once (branch, leaf and overflow pages, as `mdb_stat` reports them):
//
// - `t<T>/buckets` and `t<T>/bases` are shared by many rows: each is a line of its own (bucket
//   rows; shared parameters: PCA bases, tc bases and models), with all of its pages.
// - The pages of the two databases that hold rows, `t<T>/segments` and `t<T>/rows` (the delta),
//   are divided database by database in proportion to a weight per entry:
//   - a segment row: its record bytes (tag + payload) plus its share of the segment's index,
//     part 0's bytes / the segment's rows;
//   - a delta row: its record bytes plus LMDB's cost of a key, `perKeyOverhead` bytes (an 8-byte
//     node header, the 8-byte key and a 2-byte slot in the page).
//   Rows no lookup can reach weigh the same way and make the "superseded & deleted" line: segment
//   rows replaced by newer writes or deleted, tombstones, and parts of segments that never became
//   visible (a crashed load). What no entry owns (branch pages, page headers, free space inside
//   pages, the segment manifest) is thereby spread in proportion to the weights.
// - Per line, the fractional bytes are rounded by largest remainder, so the lines add up to the
//   table's pages × page size exactly.

/// How many times ids were looked up: from a log, a benchmark's id stream, or counts kept at
/// ingest. Passed to `Store.storageStatistics` to see the share of lookups each codec serves.
public struct LookupCounts: Sendable, Equatable {
    /// The ids, in the order given, each once.
    public let ids: [UInt64]
    /// `counts[i]` is how often `ids[i]` was looked up: finite and ≥ 0 (fractions allowed, for
    /// weights or estimates).
    public let counts: [Double]
    /// Positions of `ids` in ascending id order.
    let ascending: [Int]

    /// Pairs `ids[i]` with `counts[i]`. Throws when the lengths differ, when a count is negative,
    /// NaN or infinite, or when an id appears twice; the message says how many and the first.
    public init(ids: [UInt64], counts: [Double]) throws(StoreError) {
        guard ids.count == counts.count else {
            throw .invalidArgument("\(ids.count) ids but \(counts.count) counts: each id needs exactly one count")
        }
        var bad = 0
        var firstBad: Int?
        for (i, count) in counts.enumerated() where !(count.isFinite && count >= 0) {
            bad += 1
            if firstBad == nil { firstBad = i }
        }
        if let i = firstBad {
            throw .invalidArgument("\(bad) of \(counts.count) counts \(bad == 1 ? "is" : "are") negative, NaN or infinite; "
                + "the first is \(counts[i]) at index \(i) (id \(ids[i]))")
        }
        let ascending = ids.indices.sorted { ids[$0] < ids[$1] || (ids[$0] == ids[$1] && $0 < $1) }
        var repeated = 0
        var firstRepeat: Int?   // the earliest position that repeats an id seen before it
        for k in ascending.indices.dropFirst() where ids[ascending[k]] == ids[ascending[k - 1]] {
            repeated += 1
            if firstRepeat.map({ ascending[k] < $0 }) ?? true { firstRepeat = ascending[k] }
        }
        if let i = firstRepeat {
            throw .invalidArgument("\(repeated) id\(repeated == 1 ? "" : "s") repeat an earlier one; the first is id \(ids[i]) at index \(i)")
        }
        self.ids = ids
        self.counts = counts
        self.ascending = ascending
    }

    /// Counts by id.
    public init(_ counts: [UInt64: Double]) throws(StoreError) {
        let ids = counts.keys.sorted()
        try self.init(ids: ids, counts: ids.map { counts[$0]! })
    }

    /// The sum of the counts.
    public var total: Double { counts.reduce(0, +) }
}

/// What `Store.storageStatistics` does with counted ids that are not live rows of the table.
public enum UnknownCountedIDs: Sendable {
    /// Throw, saying how many there are and the first (the default: a counts file for another
    /// table is a mistake worth hearing about).
    case error
    /// Leave them out, and report them in `TableStorage.Lookups.unknownIDCount`.
    case ignore
}

/// LMDB page counts of one database (`mdb_stat`).
public struct DatabasePages: Sendable, Codable, Equatable {
    /// The database's LMDB name (`t1/rows`, `meta`), or `(main)` / `(free)` for LMDB's own.
    public let name: String
    /// What it holds: `segments`, `rows` (the delta), `buckets`, `bases`, `meta`, `main`, `free`.
    public let role: String
    public let depth: Int
    public let branchPages: Int
    public let leafPages: Int
    public let overflowPages: Int
    public let entries: Int
    /// Branch + leaf + overflow pages.
    public var pages: Int { branchPages + leafPages + overflowPages }

    init(name: String, role: String, _ stats: DatabaseStatistics) {
        self.name = name
        self.role = role
        depth = stats.depth
        branchPages = stats.branchPages
        leafPages = stats.leafPages
        overflowPages = stats.overflowPages
        entries = stats.entries
    }
}

/// Where one table's bytes go (`Store.storageStatistics`).
public struct TableStorage: Sendable, Codable, Equatable {
    /// The live rows of one codec form (`int8`, `tc:1.5`; forms that share a name are one line).
    public struct Form: Sendable, Codable, Equatable {
        public let form: String
        /// The codec's name (`tc` for `tc:1.5`).
        public let codec: String
        public let rows: Int
        /// Record bytes: tag + payload.
        public let recordBytes: Int
        /// Bytes of LMDB pages attributed to these rows (see the attribution rule above).
        public let diskBytes: Int
        /// How often its rows were looked up; nil when no counts were given.
        public let lookups: Double?

        /// On-disk bytes per row.
        public var diskBytesPerRow: Double { rows > 0 ? Double(diskBytes) / Double(rows) : 0 }
    }

    /// Bytes that no live row owns alone.
    public struct Shared: Sendable, Codable, Equatable {
        public enum Kind: String, Sendable, Codable {
            /// `t<T>/bases`: PCA bases, tc bases and models.
            case parameters
            /// `t<T>/buckets`: the rows bucket codecs point at.
            case bucketRows = "bucket_rows"
            /// Rows no lookup reaches: replaced or deleted segment rows, tombstones, leftover parts.
            case superseded
        }
        public let kind: Kind
        /// A label for people: "shared parameters", "bucket rows", "superseded & deleted".
        public let label: String
        /// Records: parameter records, bucket rows, or unreachable rows, tombstones and parts.
        public let entries: Int
        /// Bytes of those records (values as stored).
        public let recordBytes: Int
        public let diskBytes: Int
    }

    /// Lookups the counts describe.
    public struct Lookups: Sendable, Codable, Equatable {
        /// Sum of the counts of the table's live rows.
        public let total: Double
        /// Live rows with a count above zero.
        public let rowsCounted: Int
        /// Counted ids that are not live rows (left out with `.ignore`), and their counts' sum.
        public let unknownIDCount: Int
        public let unknownLookups: Double
    }

    /// A point of the cumulative curve: rows sorted by count, descending (ties by id), the first
    /// `rows` of them take `diskBytes` on disk and serve `lookups`.
    public struct CurvePoint: Sendable, Codable, Equatable {
        public let rows: Int
        public let diskBytes: Double
        public let lookups: Double
        /// Index in `forms` of the form holding most of the bytes since the previous point.
        public let form: Int
    }

    /// The fewest hottest rows that serve a share of the lookups, and the bytes they take.
    public struct Milestone: Sendable, Codable, Equatable {
        /// 0.5, 0.8, 0.9, 0.95, 0.99.
        public let lookupShare: Double
        public let rows: Int
        public let diskBytes: Double
    }

    public let table: String
    public let dimension: Int
    /// Live rows.
    public let rows: Int
    public let pageSize: Int
    /// Every page of the table's databases.
    public let pages: Int
    /// Codec forms, most on-disk bytes per row first.
    public let forms: [Form]
    /// Shared lines with any entries or bytes, in the order parameters, bucket rows, superseded.
    public let shared: [Shared]
    /// The table's databases: segments (when it has that database), rows, buckets, bases.
    public let databases: [DatabasePages]
    /// Nil without counts.
    public let lookups: Lookups?
    /// The cumulative lookups against bytes curve, thinned to a point every 0.25% of bytes or
    /// lookups (the first point is 0, 0; the last, all rows); empty without counts.
    public let curve: [CurvePoint]
    /// Empty without counts, or when the counts sum to zero.
    public let milestones: [Milestone]

    /// Bytes of every page of the table: the forms' and shared lines' `diskBytes` add up to it.
    public var diskBytes: Int { pages * pageSize }
    public var recordBytes: Int { forms.reduce(0) { $0 + $1.recordBytes } }
}

/// The environment as LMDB keeps it, and how its pages add up.
public struct EnvironmentStorage: Sendable, Codable, Equatable {
    public struct TablePages: Sendable, Codable, Equatable {
        public let table: String
        public let pages: Int
    }
    public let pageSize: Int
    /// Last page + 1 (`mdb_stat -e`: "Number of pages used").
    public let pagesInUse: Int
    /// Pages the free list holds for reuse (`mdb_stat -f`: "Free pages").
    public let freePages: Int
    public let mapSize: Int
    /// Size of `data.mdb`: LMDB grows it ahead of the pages in use.
    public let fileBytes: Int
    /// The snapshot these figures describe.
    public let transaction: Int
    /// The two meta pages at the start of the file.
    public let metaPages: Int
    /// LMDB's free list, main database (one record per named database), and embstore's `meta`.
    public let freeList: DatabasePages
    public let mainDatabase: DatabasePages
    public let metaDatabase: DatabasePages
    public let tables: [TablePages]
    /// Pages in use that none of the above owns: 0 when the snapshot is consistent (the figures
    /// are read in one transaction; see `Store.environmentStatistics`).
    public var unaccountedPages: Int {
        pagesInUse - metaPages - freeList.pages - mainDatabase.pages - metaDatabase.pages - freePages
            - tables.reduce(0) { $0 + $1.pages }
    }
}

extension Store {
    /// LMDB's cost of one key of the delta beyond its record, for the attribution weights: an
    /// 8-byte node header, the 8-byte key, and a 2-byte slot in the page's offset array.
    public static let perKeyOverhead = 18

    /// Rows, record bytes and on-disk bytes of `table` per codec form, its shared lines and LMDB
    /// databases, all from one snapshot; with `counts`, the lookups each form serves and the
    /// cumulative lookups against bytes curve. A scan of every live row.
    ///
    /// Counted ids that are not live rows of the table throw (`unknownIDs: .error`), or are left
    /// out and reported (`.ignore`). Live rows without a count count 0.
    public func storageStatistics(_ table: Table, counts: LookupCounts? = nil,
                                  unknownIDs: UnknownCountedIDs = .error) throws -> TableStorage {
        let (generation, table) = try resolved(table)
        return try translatingErrors {
            try generation.environment.read { txn in
                try storageStatistics(table, counts: counts, unknownIDs: unknownIDs, in: txn)
            }
        }
    }

    private func storageStatistics(_ table: Table, counts: LookupCounts?, unknownIDs: UnknownCountedIDs,
                                   in txn: borrowing Transaction) throws -> TableStorage {
        let pageSize = environment.pageSize
        var databases: [DatabasePages] = []
        var segmentPages = 0
        if let segmentsDatabase = table.segments {
            let stats = try txn.statistics(segmentsDatabase)
            databases.append(DatabasePages(name: segmentsDatabase.name ?? "", role: "segments", stats))
            segmentPages = stats.pages
        }
        let deltaStats = try txn.statistics(table.rows)
        let bucketStats = try txn.statistics(table.buckets)
        let basesStats = try txn.statistics(table.bases)
        databases.append(DatabasePages(name: table.rows.name ?? "", role: "rows", deltaStats))
        databases.append(DatabasePages(name: table.buckets.name ?? "", role: "buckets", bucketStats))
        databases.append(DatabasePages(name: table.bases.name ?? "", role: "bases", basesStats))

        // One pass over the live rows: per form, rows, record bytes and weights; per segment,
        // the live rows and bytes it still serves; per row (with counts) what the curve needs.
        let segments = try segmentManifest(table, in: txn).map { try SegmentView(table: table, segment: $0, in: txn) }
        let indexShare = segments.map { Double($0.index.header.part0Size) / Double($0.index.count) }
        var classifier = FormClassifier(parameters: TableParameters(txn, table: table))
        var formRows: [Int] = [], formRecordBytes: [Int] = []
        var formSegmentWeight: [Double] = [], formDeltaWeight: [Double] = [], formLookups: [Double] = []
        var segmentLiveRows = [Int](repeating: 0, count: segments.count)
        var segmentLiveBytes = [Int](repeating: 0, count: segments.count)
        var liveDeltaRows = 0
        // Per row, only with counts: form, weight, in the delta?, count, id.
        var rowForm: [UInt16] = [], rowWeight: [Double] = [], rowInDelta: [Bool] = [], rowCount: [Double] = [], rowID: [UInt64] = []
        var nextCounted = 0               // position in counts.ascending
        var unknown = 0, unknownLookups = 0.0
        var firstUnknown: Int?            // the earliest position in `counts` of an unknown id
        func skipUnknown(below id: UInt64?, _ counts: LookupCounts) {
            while nextCounted < counts.ascending.count {
                let position = counts.ascending[nextCounted]
                if let id, counts.ids[position] >= id { return }
                unknown += 1
                unknownLookups += counts.counts[position]
                if firstUnknown.map({ position < $0 }) ?? true { firstUnknown = position }
                nextCounted += 1
            }
        }
        let perKey = Double(Store.perKeyOverhead)
        try forEachLiveRow(table, segments: segments, in: txn) { id, record, source in
            let form = Int(try classifier.form(of: record))
            if form == formRows.count {
                formRows.append(0); formRecordBytes.append(0)
                formSegmentWeight.append(0); formDeltaWeight.append(0); formLookups.append(0)
            }
            formRows[form] += 1
            formRecordBytes[form] += record.count
            let weight: Double
            if let s = source {
                weight = Double(record.count) + indexShare[s]
                formSegmentWeight[form] += weight
                segmentLiveRows[s] += 1
                segmentLiveBytes[s] += record.count
            } else {
                weight = Double(record.count) + perKey
                formDeltaWeight[form] += weight
                liveDeltaRows += 1
            }
            if let counts {
                skipUnknown(below: id, counts)
                var count = 0.0
                if nextCounted < counts.ascending.count, counts.ids[counts.ascending[nextCounted]] == id {
                    count = counts.counts[counts.ascending[nextCounted]]
                    nextCounted += 1
                }
                formLookups[form] += count
                rowForm.append(UInt16(form)); rowWeight.append(weight); rowInDelta.append(source == nil)
                rowCount.append(count); rowID.append(id)
            }
        }
        if let counts {
            skipUnknown(below: nil, counts)
            if unknown > 0, unknownIDs == .error, let first = firstUnknown {
                throw StoreError.invalidArgument("\(unknown) of the \(counts.ids.count) counted ids \(unknown == 1 ? "is" : "are") not "
                    + "in table '\(table.name)'; the first is id \(counts.ids[first]) at index \(first)")
            }
        }

        // Unreachable entries: what each live segment holds beyond its live rows, parts of
        // segments not in the manifest, and the delta's tombstones.
        var deadSegmentWeight = 0.0, deadRecordBytes = 0, deadEntries = 0
        for (s, segment) in segments.enumerated() {
            let dataBytes = segment.parts.reduce(0) { $0 + $1.count }
            let deadRows = segment.index.count - segmentLiveRows[s]
            deadSegmentWeight += Double(dataBytes - segmentLiveBytes[s]) + indexShare[s] * Double(deadRows)
            deadRecordBytes += dataBytes - segmentLiveBytes[s]
            deadEntries += deadRows
        }
        if let segmentsDatabase = table.segments {
            let live = Set(segments.map(\.segment))
            try txn.withCursor(segmentsDatabase) { cursor in
                var entry = try cursor.first()
                while let current = entry {
                    if let key = current.integerKey, key != 0, !live.contains(UInt32(truncatingIfNeeded: key >> 32)) {
                        deadSegmentWeight += Double(current.value.count)
                        deadRecordBytes += current.value.count
                        deadEntries += 1
                    }
                    entry = try cursor.next()
                }
            }
        }
        let tombstones = deltaStats.entries - liveDeltaRows
        let deadDeltaWeight = Double(tombstones) * (1 + perKey)
        deadRecordBytes += tombstones
        deadEntries += tombstones

        // Bytes per unit of weight in each of the two row databases. A database with pages but no
        // weight (nothing in it a row owns) goes to the superseded line whole.
        let segmentBytes = Double(segmentPages * pageSize), deltaBytes = Double(deltaStats.pages * pageSize)
        let segmentWeight = formSegmentWeight.reduce(0, +) + deadSegmentWeight
        let deltaWeight = formDeltaWeight.reduce(0, +) + deadDeltaWeight
        let segmentScale = segmentWeight > 0 ? segmentBytes / segmentWeight : 0
        let deltaScale = deltaWeight > 0 ? deltaBytes / deltaWeight : 0
        let unweighted = (segmentWeight > 0 ? 0 : segmentBytes) + (deltaWeight > 0 ? 0 : deltaBytes)

        // Forms that share a name are one line; lines are ordered by bytes per row, then name.
        let forms = classifier.forms
        var names: [String] = []
        var group = [Int](repeating: 0, count: forms.count)
        for (f, form) in forms.enumerated() {
            if let existing = names.firstIndex(of: form.name) { group[f] = existing } else {
                group[f] = names.count
                names.append(form.name)
            }
        }
        var lineRows = [Int](repeating: 0, count: names.count), lineRecord = lineRows
        var lineExact = [Double](repeating: 0, count: names.count), lineLookups = lineExact
        var lineCodec = [String](repeating: "", count: names.count)
        for f in forms.indices {
            let g = group[f]
            lineRows[g] += formRows[f]
            lineRecord[g] += formRecordBytes[f]
            lineExact[g] += formSegmentWeight[f] * segmentScale + formDeltaWeight[f] * deltaScale
            lineLookups[g] += formLookups[f]
            lineCodec[g] = RowCodecs.name(tag: forms[f].tag)
        }
        let deadExact = deadSegmentWeight * segmentScale + deadDeltaWeight * deltaScale + unweighted
        let rounded = apportion(lineExact + [deadExact], total: segmentPages * pageSize + deltaStats.pages * pageSize)
        let order = names.indices.sorted { a, b in
            let perRowA = lineExact[a] / Double(max(lineRows[a], 1)), perRowB = lineExact[b] / Double(max(lineRows[b], 1))
            return perRowA != perRowB ? perRowA > perRowB : names[a] < names[b]
        }
        var position = [Int](repeating: 0, count: names.count)
        for (p, g) in order.enumerated() { position[g] = p }
        let lines = order.map { g in
            TableStorage.Form(form: names[g], codec: lineCodec[g], rows: lineRows[g], recordBytes: lineRecord[g],
                              diskBytes: rounded[g], lookups: counts == nil ? nil : lineLookups[g])
        }

        var shared: [TableStorage.Shared] = []
        if basesStats.entries > 0 || basesStats.pages > 0 {
            shared.append(.init(kind: .parameters, label: "shared parameters", entries: basesStats.entries,
                                recordBytes: try valueBytes(table.bases, in: txn), diskBytes: basesStats.pages * pageSize))
        }
        if bucketStats.entries > 0 || bucketStats.pages > 0 {
            shared.append(.init(kind: .bucketRows, label: "bucket rows", entries: bucketStats.entries,
                                recordBytes: try valueBytes(table.buckets, in: txn), diskBytes: bucketStats.pages * pageSize))
        }
        if deadEntries > 0 || rounded[names.count] > 0 {
            shared.append(.init(kind: .superseded, label: "superseded & deleted", entries: deadEntries,
                                recordBytes: deadRecordBytes, diskBytes: rounded[names.count]))
        }

        var lookups: TableStorage.Lookups?
        var curve: [TableStorage.CurvePoint] = []
        var milestones: [TableStorage.Milestone] = []
        if counts != nil {
            let total = rowCount.reduce(0, +)
            lookups = .init(total: total, rowsCounted: rowCount.reduce(0) { $0 + ($1 > 0 ? 1 : 0) },
                            unknownIDCount: unknown, unknownLookups: unknownLookups)
            let rowBytes = rowWeight.indices.map { rowWeight[$0] * (rowInDelta[$0] ? deltaScale : segmentScale) }
            let hottest = rowCount.indices.sorted { rowCount[$0] != rowCount[$1] ? rowCount[$0] > rowCount[$1] : rowID[$0] < rowID[$1] }
            (curve, milestones) = lookupCurve(hottest: hottest, rowBytes: rowBytes, rowCount: rowCount,
                                              rowForm: rowForm.map { position[group[Int($0)]] }, lines: lines.count,
                                              totalLookups: total)
        }
        return TableStorage(table: table.name, dimension: table.dimension, rows: formRows.reduce(0, +), pageSize: pageSize,
                            pages: databases.reduce(0) { $0 + $1.pages }, forms: lines, shared: shared, databases: databases,
                            lookups: lookups, curve: curve, milestones: milestones)
    }

    /// The cumulative curve over rows in `hottest` order, thinned to a point every 0.25% of the
    /// bytes or the lookups, and the milestones (rows and bytes to serve 50%, 80%, … of lookups).
    private func lookupCurve(hottest: [Int], rowBytes: [Double], rowCount: [Double], rowForm: [Int], lines: Int,
                             totalLookups: Double) -> ([TableStorage.CurvePoint], [TableStorage.Milestone]) {
        let totalBytes = rowBytes.reduce(0, +)
        let step = 0.0025
        var points = [TableStorage.CurvePoint(rows: 0, diskBytes: 0, lookups: 0, form: hottest.first.map { rowForm[$0] } ?? 0)]
        guard !hottest.isEmpty else { return (points, []) }
        var milestones: [TableStorage.Milestone] = []
        var targets = totalLookups > 0 ? [0.5, 0.8, 0.9, 0.95, 0.99] : []
        var bytes = 0.0, served = 0.0
        var formBytes = [Double](repeating: 0, count: lines)
        var lastBytes = 0.0, lastServed = 0.0
        for (k, row) in hottest.enumerated() {
            bytes += rowBytes[row]
            served += rowCount[row]
            formBytes[rowForm[row]] += rowBytes[row]
            // A share is reached when the running sum is within rounding of it.
            while let target = targets.first, served >= target * totalLookups * (1 - 1e-12) {
                milestones.append(.init(lookupShare: target, rows: k + 1, diskBytes: bytes))
                targets.removeFirst()
            }
            let isLast = k == hottest.count - 1
            if isLast || (totalBytes > 0 && bytes - lastBytes >= step * totalBytes)
                || (totalLookups > 0 && served - lastServed >= step * totalLookups) {
                let dominant = formBytes.indices.max { formBytes[$0] < formBytes[$1] } ?? 0
                points.append(.init(rows: k + 1, diskBytes: bytes, lookups: served, form: dominant))
                formBytes = [Double](repeating: 0, count: lines)
                lastBytes = bytes
                lastServed = served
            }
        }
        return (points, milestones)
    }

    /// Sum of the value sizes of every entry of `database`.
    private func valueBytes(_ database: Database, in txn: borrowing Transaction) throws -> Int {
        try txn.withCursor(database) { cursor in
            var bytes = 0
            var entry = try cursor.first()
            while let current = entry {
                bytes += current.value.count
                entry = try cursor.next()
            }
            return bytes
        }
    }

    /// The environment's page size, pages in use and free, map and file size, and the pages of
    /// LMDB's own databases, `meta` and every table. Read in one transaction; when a writer
    /// commits between it and `mdb_env_info`, it is read again (up to five times), so that
    /// `unaccountedPages` is 0 unless the store is written to without pause.
    public func environmentStatistics() throws -> EnvironmentStorage {
        let tables = try tableNames().map { try table($0) }
        return try translatingErrors {
            var attempt = 0
            while true {
                attempt += 1
                let result = try environment.read { txn -> EnvironmentStorage? in
                    let info = txn.environmentInfo()
                    if info.lastTransaction != txn.snapshotID && attempt < 5 { return nil }
                    let free = try txn.freeListStatistics()
                    var tablePages: [EnvironmentStorage.TablePages] = []
                    for table in tables where !table.isDropped {
                        var pages = 0
                        for database in [table.rows, table.buckets, table.bases] + (table.segments.map { [$0] } ?? []) {
                            pages += try txn.statistics(database).pages
                        }
                        // Access counts, when kept (FORMAT.md "Access counts").
                        if let counts = try? txn.openDatabase(Store.countsDatabase(table.id), flags: .integerKey) {
                            pages += try txn.statistics(counts).pages
                        }
                        tablePages.append(.init(table: table.name, pages: pages))
                    }
                    return EnvironmentStorage(
                        pageSize: environment.pageSize, pagesInUse: info.pagesInUse, freePages: free.freePages,
                        mapSize: info.mapSize, fileBytes: fileSize, transaction: txn.snapshotID, metaPages: 2,
                        freeList: DatabasePages(name: "(free)", role: "free", free.database),
                        mainDatabase: DatabasePages(name: "(main)", role: "main", try txn.mainDatabaseStatistics()),
                        metaDatabase: DatabasePages(name: meta.name ?? "meta", role: "meta", try txn.statistics(meta)),
                        tables: tablePages)
                }
                if let result { return result }
            }
        }
    }
}

/// Integers that add up to `total`, each the floor of its exact share or one more (largest
/// remainder, ties to the earlier line). `exact` must add up to `total` up to rounding.
func apportion(_ exact: [Double], total: Int) -> [Int] {
    var result = exact.map { max(0, Int($0.rounded(.down))) }
    var missing = total - result.reduce(0, +)
    let byRemainder = exact.indices.sorted { a, b in
        let ra = exact[a] - exact[a].rounded(.down), rb = exact[b] - exact[b].rounded(.down)
        return ra != rb ? ra > rb : a < b
    }
    var k = 0
    while missing > 0 && !byRemainder.isEmpty {
        result[byRemainder[k % byRemainder.count]] += 1
        missing -= 1
        k += 1
    }
    // Floating rounding can leave the floors one over: take it back from the largest lines.
    while missing < 0, let largest = result.indices.max(by: { result[$0] < result[$1] }), result[largest] > 0 {
        result[largest] -= 1
        missing += 1
    }
    return result
}
