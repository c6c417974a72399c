import EmbeddingCodecs
import Foundation

/// What `ShardedStore.grow` did.
public struct ShardGrowReport: Sendable {
    public let shardsBefore: Int
    public let shardsAfter: Int
    /// Rows copied into the new shards, per table.
    public let movedRows: [String: Int]
    /// Rows of every table before.
    public let totalRows: Int
    public let seconds: Double
}

extension ShardedStore {
    /// Grows the sharded store at `path` from its N shards to `newCount`: builds shards
    /// N ..< newCount from the rows that move to them (by the rule, about (newCount − N) /
    /// newCount of them, every one from an old shard to a new one), each record copied byte for
    /// byte, so that every lookup gives what it gave before. Each new shard is built and verified
    /// beside its final directory and renamed in; the manifest is then written atomically. The
    /// old shards' files are not touched: the moved rows stay in them as stale rows that the
    /// rule no longer routes to (FORMAT.md, "Sharded stores"), until a rebuild of the shard.
    ///
    /// Records of codecs with parameters (tc, reduced, bucket) move with the table's parameter
    /// records and bucket rows, copied under the same ids, when every old shard holds the same
    /// ones (as `tools/shard_build.py`'s shared fit makes them); otherwise the grow is refused.
    public static func grow(_ path: String, to newCount: Int) throws -> ShardGrowReport {
        let started = Date()
        let manifest = try ShardManifest.read(from: path)
        let oldCount = manifest.shards.count
        guard newCount > oldCount else {
            throw StoreError.invalidArgument("the sharded store at \(path) has \(oldCount) shards; growing needs more than that, not \(newCount)")
        }
        var options = Store.Options()
        options.readOnly = true
        let old = try ShardedStore(path: path, options: options)
        let building = (path as NSString).appendingPathComponent(".building")
        var entries = manifest.shards
        // The old shards' live rows now: those that stay.
        var moved: [String: Int] = [:]
        var totalRows = 0
        for (i, entry) in entries.enumerated() {
            if entries[i].builtFor == nil { entries[i].builtFor = oldCount }
            for (table, rows) in entry.rows { totalRows += rows; entries[i].rows[table] = rows }
        }
        for s in oldCount..<newCount {
            let name = String(format: "shard-%04d", s)
            let entry = try buildShard(name, in: path, from: old, shard: s, of: newCount) { table, copied in
                moved[table, default: 0] += copied.count
                for (o, count) in copied.perOldShard { entries[o].rows[table, default: 0] -= count }
            }
            entries.append(entry)
        }
        var next = manifest
        next.shards = entries
        next.generation += 1
        try next.write(to: path)
        try? FileManager.default.removeItem(atPath: building)
        return ShardGrowReport(shardsBefore: oldCount, shardsAfter: newCount, movedRows: moved, totalRows: totalRows,
                               seconds: Date().timeIntervalSince(started))
    }

    /// Builds shard `s` of `count` from the rows of `old` that hash to it (from `sources` only,
    /// when given), beside the sharded store in `.building`, verified, then renamed to `name`;
    /// returns its manifest entry. `copied(table, result)` hears what each table got.
    private static func buildShard(_ name: String, in path: String, from old: ShardedStore, shard s: Int, of count: Int,
                                   sources: [Int]? = nil,
                                   copied: (String, (count: Int, perOldShard: [Int: Int])) -> Void) throws -> ShardManifest.Shard {
        let building = (path as NSString).appendingPathComponent(".building")
        try FileManager.default.createDirectory(atPath: building, withIntermediateDirectories: true)
        let staging = (building as NSString).appendingPathComponent("\(name).\(getpid())")
        try? FileManager.default.removeItem(atPath: staging)
        var rows: [String: Int] = [:]
        do {
            let shard = try Store(path: staging)
            for tableName in old.tableNames {
                let table = try old.table(tableName)
                let result = try copyMovedRows(of: table, from: old, toShard: s, of: count, into: shard, sources: sources)
                rows[tableName] = result.count
                copied(tableName, result)
            }
            let problems = try shard.verify().problems
            guard problems.isEmpty else {
                throw StoreError.corruptStore(path: staging, reason: "the new shard does not verify: \(problems.prefix(3).joined(separator: "; "))")
            }
            try shard.sync()
        }
        let (checksum, bytes) = try shardFileChecksum(path: (staging as NSString).appendingPathComponent("data.mdb"))
        let final = (path as NSString).appendingPathComponent(name)
        try? FileManager.default.removeItem(atPath: final)   // a run that died after building it
        guard rename(staging, final) == 0 else { throw StoreError.fileSystem(path: final, operation: "rename onto", code: errno) }
        return ShardManifest.Shard(path: name, rows: rows, checksum: checksum, bytes: bytes, builtFor: count)
    }

    /// Rebuilds each shard that holds stale rows (a grow left them: `built_for` below the shard
    /// count) from its live rows alone, into a new directory (`shard-NNNN.gG`, G the manifest's
    /// next generation), then writes the manifest naming the new directories. Lookups give what
    /// they gave; the old directories stay for processes that still use the previous manifest
    /// and are returned, to remove once none does.
    public static func pruneStaleRows(_ path: String) throws -> (rebuilt: [String], oldDirectories: [String]) {
        let manifest = try ShardManifest.read(from: path)
        var options = Store.Options()
        options.readOnly = true
        let old = try ShardedStore(path: path, options: options)
        var entries = manifest.shards
        var rebuilt: [String] = [], oldDirectories: [String] = []
        for (o, entry) in manifest.shards.enumerated() where (entry.builtFor ?? old.shardCount) != old.shardCount {
            let name = String(format: "shard-%04d.g%d", o, manifest.generation + 1)
            entries[o] = try buildShard(name, in: path, from: old, shard: o, of: old.shardCount, sources: [o]) { _, _ in }
            entries[o].builtFor = nil
            rebuilt.append(name)
            oldDirectories.append(entry.path)
        }
        guard !rebuilt.isEmpty else { return ([], []) }
        var next = manifest
        next.shards = entries
        next.generation += 1
        try next.write(to: path)
        try? FileManager.default.removeItem(atPath: (path as NSString).appendingPathComponent(".building"))
        return (rebuilt, oldDirectories)
    }

    /// Copies the live rows of `table` that move to shard `target` of `newCount` from every old
    /// shard into `destination`, records as they are (one new segment). Returns how many, in all
    /// and per old shard.
    private static func copyMovedRows(of table: ShardedTable, from old: ShardedStore, toShard target: Int, of newCount: Int,
                                      into destination: Store, sources: [Int]? = nil) throws -> (count: Int, perOldShard: [Int: Int]) {
        var ids: [UInt64] = []
        var bytes: [UInt8] = []
        var starts: [Int] = [0]
        var perOldShard: [Int: Int] = [:]
        var formatVersion: UInt32 = 1
        var needsParameters = false
        for (o, (shard, handle)) in zip(old.shards, table.handles).enumerated() where sources?.contains(o) ?? true {
            guard let handle else { continue }
            try shard.environment.read { txn in
                try shard.forEachLiveRow(handle, in: txn) { id, record in
                    guard ShardRule.shard(of: id, shardCount: old.shardCount) == o,   // a live row of this shard
                          ShardRule.shard(of: id, shardCount: newCount) == target else { return }
                    guard let tag = record.first, let codec = RowCodecs.codec(tag: tag) else {
                        throw StoreError.corruptRecord(table: table.name, id: id, reason: "a record of \(record.count) bytes with an unknown tag")
                    }
                    if !codec.canStoreBucketRows { needsParameters = true }
                    formatVersion = max(formatVersion, codec.formatVersion)
                    ids.append(id)
                    bytes.append(contentsOf: record)
                    starts.append(bytes.count)
                    perOldShard[o, default: 0] += 1
                }
            }
        }
        guard !ids.isEmpty else {
            _ = try destination.createOrAdoptTable(table.name, dimension: table.dimension)
            return (0, perOldShard)
        }
        let order = try Store.sortedOrder(ids)
        let records = RecordsInMemory(bytes: bytes, starts: starts)
        let summary = PolicySummary(policy: "records copied from shards by a grow", shares: [])
        let parameters = needsParameters ? try sharedParameters(of: table, in: old) : nil
        try destination.writingInto(nil, table.name, dimension: table.dimension) { handle in
            if let parameters {
                // The records under the ids the rows name: a fresh table numbers parameter
                // records from 1 and bucket rows from 0.
                try destination.write { batch in
                    for (k, record) in parameters.records.enumerated() {
                        let id = try batch.addParameterRecord(record, to: handle, makeCurrentBasis: UInt32(k + 1) == parameters.currentBasis)
                        guard id == UInt32(k + 1) else {
                            throw StoreError.invalidArgument("the new shard numbered parameter record \(k + 1) as \(id)")
                        }
                    }
                    if !parameters.buckets.isEmpty {
                        let ids = try batch.addBucketRecords(handle, parameters.buckets)
                        guard ids.lowerBound == 0 else { throw StoreError.invalidArgument("the new shard numbered bucket row 0 as \(ids.lowerBound)") }
                    }
                }
            }
            try destination.writeRows(handle, ids: ids, order: order, records: records, formatVersion: formatVersion, summary: summary,
                                      options: LoadOptions())
        }
        return (ids.count, perOldShard)
    }

    /// The parameter records of `table` (ids 1 ..< next, unsealed) and its current basis, which
    /// every old shard holding the table must hold alike.
    private typealias SharedParameters = (records: [[UInt8]], currentBasis: UInt32, buckets: [[UInt8]])

    private static func sharedParameters(of table: ShardedTable, in old: ShardedStore) throws -> SharedParameters {
        var shared: SharedParameters?
        for (o, (shard, handle)) in zip(old.shards, table.handles).enumerated() {
            guard let handle else { continue }
            let mine = try shard.environment.read { txn -> SharedParameters in
                let schema = try shard.generation.schemaRecord(of: handle, in: txn).schema
                let parameters = TableParameters(txn, table: handle)
                var records: [[UInt8]] = []
                for id in 1..<max(schema.nextBasisID, 1) {
                    guard let record = try parameters.parameterRecord(id) else {
                        throw StoreError.corruptMetadata(table: table.name, reason: "shard \(o) has no parameter record \(id) below its next id \(schema.nextBasisID)")
                    }
                    records.append(Array(record))
                }
                var buckets: [[UInt8]] = []
                for id in 0..<schema.nextBucketID {
                    guard let record = try parameters.bucketRecord(id) else {
                        throw StoreError.corruptMetadata(table: table.name, reason: "shard \(o) has no bucket row \(id) below its next id \(schema.nextBucketID)")
                    }
                    buckets.append(Array(record))
                }
                return (records, schema.currentBasisID, buckets)
            }
            if let shared, shared.records != mine.records || shared.currentBasis != mine.currentBasis || shared.buckets != mine.buckets {
                throw StoreError.invalidArgument("the shards of table '\(table.name)' hold different parameter records (shard \(o) differs), so rows with parameters cannot move between them; rebuild with tools/shard_build.py, which fits them once for every shard")
            }
            shared = mine
        }
        return shared ?? ([], 0, [])
    }
}

/// Records held in memory, record i at `bytes[starts[i] ..< starts[i + 1]]`, for a load.
private final class RecordsInMemory: LoadRecords {
    let bytes: [UInt8]
    let starts: [Int]
    let maximumRecordSize: Int

    init(bytes: [UInt8], starts: [Int]) {
        self.bytes = bytes
        self.starts = starts
        maximumRecordSize = zip(starts.dropFirst(), starts).map { $0 - $1 }.max() ?? 1
    }

    func make(_ positions: ArraySlice<Int>, into records: UnsafeMutableRawBufferPointer, sizes: UnsafeMutableBufferPointer<Int>) throws {
        bytes.withUnsafeBytes { source in
            for (r, i) in positions.enumerated() {
                let size = starts[i + 1] - starts[i]
                UnsafeMutableRawBufferPointer(rebasing: records[r * maximumRecordSize..<r * maximumRecordSize + size])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: source[starts[i]..<starts[i + 1]]))
                sizes[r] = size
            }
        }
    }

    func release() {}
}
