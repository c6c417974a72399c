import EmbeddingCodecs
import Foundation
import LMDB

// `Store.repack(to:)`: rebuild tables under a policy and fresh access counts into a new, fully
// compacted store, built in a staging directory beside it, verified, then put in place.

// MARK: - Inputs

/// Where repack takes each row's access counts from (what tiers rank and budgets weigh by).
public enum RepackCounts: Sendable {
    /// None: rows weigh alike (tiers refuse this).
    case none
    /// The counts kept in the store (`AccessCounter.flush`, `embstore bench --track-every`), each
    /// table its own; ids counted that are not rows of the table are left out. A table without
    /// kept counts is an error.
    case tracked
    /// Counts by table name; a counted id that is neither a row of the table nor a new row of its
    /// source is an error, and rows without a count count 0.
    case given([String: LookupCounts])
}

/// Full-precision rows of one table for repack to encode from.
public struct RepackSource: Sendable {
    /// The rows, `rows.dimension` equal to the table's.
    public var rows: any RowSource
    /// Their ids, in the order of `rows`; nil: `0..<rows.count`.
    public var ids: [UInt64]?

    public init(rows: any RowSource, ids: [UInt64]? = nil) {
        self.rows = rows
        self.ids = ids
    }
}

/// Settings of a repack.
public struct RepackOptions: Sendable {
    /// The fits, the decode cap, the bucket rows' codec and progress, as for a load (rows always
    /// go to one segment per table).
    public var load = LoadOptions()
    /// Source ids that are not rows of the store: added to the table as new rows (true), or an
    /// error (false, the default: a source for another table is a mistake worth hearing about).
    public var addingNewRows = false
    public init() {}
}

// MARK: - Report

/// What `Store.repack(to:)` did.
public struct RepackReport: Sendable, Codable {
    /// Live rows and record bytes of one codec form (`int8`, `tc:1.5`) of a table.
    public struct FormCount: Sendable, Codable, Equatable {
        public let form: String
        public let rows: Int
        public let recordBytes: Int
    }

    /// One table of the new store.
    public struct TableReport: Sendable, Codable {
        public let table: String
        /// False: copied as it was — the same records, parameter records, bucket rows and access
        /// counts, bit for bit, its layers folded into one segment.
        public let repacked: Bool
        public let rowsBefore: Int
        public let rowsAfter: Int
        /// Every LMDB page of the table's databases, in bytes (`storageStatistics(_:).diskBytes`).
        public let diskBytesBefore: Int
        public let diskBytesAfter: Int
        public let formsBefore: [FormCount]
        public let formsAfter: [FormCount]
        /// The policy and where the counts came from ("tracked", "given", "none"); nil when copied.
        public let policy: String?
        public let counts: String?
        /// For tracked counts: how many rows were counted, and what the others weigh.
        public let countsDetail: String?
        /// Rows encoded from the full-precision source, rows of the source new to the table (in
        /// both counts), and rows without a source row: their values are the stored rows decoded.
        public let rowsFromSource: Int
        public let rowsAdded: Int
        public let rowsWithoutSource: Int
        /// Rows that had a record and now have a codec of more (promoted) or fewer (demoted)
        /// bits a value (`CodecPrecision`). Promotions are only made from the source.
        public let promoted: Int
        public let demoted: Int
        /// Rows without a source row that the policy gave a more precise codec: their records
        /// are kept as they were (and their ids listed), since a decoded row re-encoded with more
        /// bits is no more precise than it was.
        public let promotionsRefused: Int
        public let refusedIDs: [UInt64]
        /// Rows without a source row whose record is kept because the policy gave them a codec
        /// as precise as theirs (re-encoding would only add error).
        public let keptAtSamePrecision: Int
        /// The load's summary: the policy's choice, with the kept rows as forms `int8 (kept)`.
        public let summary: PolicySummary?

        // `refusedIds`, so that a snake-case encoder writes `refused_ids`.
        enum CodingKeys: String, CodingKey {
            case table, repacked, rowsBefore, rowsAfter, diskBytesBefore, diskBytesAfter, formsBefore, formsAfter, policy, counts,
                 countsDetail, rowsFromSource, rowsAdded, rowsWithoutSource, promoted, demoted, promotionsRefused,
                 refusedIDs = "refusedIds", keptAtSamePrecision, summary
        }
    }

    /// The store repacked, and the new store.
    public let store: String
    public let path: String
    /// Bytes of `data.mdb` of each.
    public let bytesBefore: Int
    public let bytesAfter: Int
    /// Every table of the new store, in name order.
    public let tables: [TableReport]

    /// Why rows are refused promotion, in words.
    public static let refusalReason =
        "no full-precision row to encode it from (give --source): re-encoding the decoded row with more bits would not make it more precise, so its record is kept"
}

// MARK: - Repack

extension Store {
    /// Writes a new store at `path` (a directory that must not exist) holding every table of
    /// this one: the tables in `tables` (default: all) rebuilt under `policy`, the others copied
    /// as they are. The new store is built in a directory beside `path`, copied compacted (only
    /// the pages in use) into another, verified there and renamed into place; on any error nothing
    /// is left at `path`. This store is only read (one snapshot), and may be read and written
    /// meanwhile.
    ///
    /// A rebuilt table becomes one segment holding its live rows (delta folded in, replaced
    /// segments and deleted rows gone), each row with the codec `policy` gives it under `counts`.
    /// Rows of `sources[table]` are encoded from those full-precision values; every other row has
    /// only its decoded value, so it moves only to a codec of fewer bits a value than it has
    /// (`CodecPrecision`) and otherwise keeps its record bit for bit: a promotion the policy asks
    /// for is refused and reported (`RepackReport.TableReport.refusedIDs`). Parameter records and
    /// bucket rows that kept records point at are carried over under the same ids. Source ids that
    /// are not rows of the table are an error unless `options.addingNewRows`.
    ///
    /// Access counts kept in the store (`t<T>/counts`) are carried over to the new store for
    /// every table; counts given in `counts` only weigh the policy (and its load note). Kept
    /// counts are samples: with `.tracked`, rows never counted weigh what Good–Turing gives the
    /// rows a sample missed (`TableCopy.shareOfUncountedRows`), not 0.
    @discardableResult
    public func repack(to path: String, tables names: [String]? = nil, policy: CodecPolicy, counts: RepackCounts = .none,
                       sources: [String: RepackSource] = [:], options: RepackOptions = RepackOptions()) throws -> RepackReport {
        var path = path
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }   // the staging directories go beside it
        guard !FileManager.default.fileExists(atPath: path) else {
            throw StoreError.invalidArgument("\(path) exists: repack writes a new store and replaces nothing")
        }
        let all = try tableNames()
        let rebuilt = names ?? all
        for name in rebuilt where !all.contains(name) { throw StoreError.tableNotFound(name) }
        guard Set(rebuilt).count == rebuilt.count else { throw StoreError.invalidArgument("repack: a table is named twice in \(rebuilt)") }
        for name in sources.keys where !rebuilt.contains(name) {
            throw StoreError.invalidArgument("a source is given for table '\(name)', which is not repacked")
        }
        if case .given(let given) = counts {
            for name in given.keys where !rebuilt.contains(name) {
                throw StoreError.invalidArgument("counts are given for table '\(name)', which is not repacked")
            }
        }
        // Built table by table in one directory, then copied compacted (only the pages in use)
        // into another, which is verified and renamed to `path`.
        let build = path + Store.repackBuildSuffix + "\(getpid())", staging = path + Store.repackStagingSuffix + "\(getpid())"
        // A killed repack's: of this process id (an earlier one), and of processes that have ended.
        for directory in [build, staging] { try? FileManager.default.removeItem(atPath: directory) }
        Store.removeAbandonedStaging(for: path, suffixes: [Store.repackBuildSuffix, Store.repackStagingSuffix])
        defer { try? FileManager.default.removeItem(atPath: build) }
        do {
            let report = try repack(building: build, into: staging, publishedAt: path, tables: all, rebuilt: Set(rebuilt), policy: policy,
                                    counts: counts, sources: sources, options: options)
            CrashPoints.reach("repack.verified")
            try Store.publish(staging, at: path)
            return report
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw error
        }
    }

    static let repackBuildSuffix = ".repacking-", repackStagingSuffix = ".repacked-"

    /// Puts the verified store built in `staging` at `path`, which must not exist: one rename of
    /// the directory, so `path` holds the whole new store or nothing. (Swapping it in under
    /// live readers, `--in-place`, is another function of this shape.)
    static func publish(_ staging: String, at path: String) throws {
        // No process has the staging store open: its lock file is stale.
        try? FileManager.default.removeItem(atPath: staging + "/lock.mdb")
        guard !FileManager.default.fileExists(atPath: path) else {
            throw StoreError.invalidArgument("\(path) appeared while the repack ran; the new store is not put there")
        }
        do {
            try FileManager.default.moveItem(atPath: staging, toPath: path)
        } catch {
            throw StoreError.invalidArgument("cannot move the repacked store from \(staging) to \(path): \(error.localizedDescription)")
        }
        // The rename is durable once the directory holding both names is.
        syncDirectory(parentDirectory(of: path))
    }

    /// The directory holding `path`'s last component: "." for a bare name. (Foundation's
    /// `NSString.deletingLastPathComponent` traps on a one-character path such as `o`, which
    /// made `repack --out o` die by SIGILL after putting the new store in place.)
    static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// Builds the new store in `build` from one snapshot of this one, then writes its compacting
    /// copy into `staging` and verifies that.
    private func repack(building build: String, into staging: String, publishedAt path: String, tables all: [String],
                        rebuilt: Set<String>, policy: CodecPolicy, counts: RepackCounts, sources: [String: RepackSource],
                        options: RepackOptions) throws -> RepackReport {
        let bytesBefore = fileSize
        // Handles first: opening a database takes a transaction of its own.
        let tables = try all.map { try table($0) }
        let before = try tables.map { try storageStatistics($0) }
        let countDatabases = try tables.map { try openCountsDatabase($0) }
        var targetOptions = Options()
        targetOptions.durable = false   // an offline build: one sync at the end
        targetOptions.maxTables = max(maxTables, all.count)
        let target = try Store(path: build, options: targetOptions)
        defer { target.close() }
        let snapshot = try translatingErrors { try RepackSnapshot(environment) }
        var outcomes: [RebuildOutcome?] = []
        var written: [Int] = []
        for (index, table) in tables.enumerated() {
            // An offline job reads a damaged store loudly, as export does.
            try translatingErrors { _ = try verifySegments(table, in: snapshot.txn) }
            let copy = TableCopy(source: self, table: table, counts: countDatabases[index], snapshot: snapshot, target: target)
            let new = try copy.createTable()
            if rebuilt.contains(table.name) {
                let outcome = try copy.rebuild(into: new, policy: policy, counts: counts, source: sources[table.name], options: options,
                                               liveRows: before[index].rows)
                outcomes.append(outcome)
                written.append(outcome.rows)
            } else {
                outcomes.append(nil)
                written.append(try copy.copyRows(into: new))
            }
        }
        try target.sync()
        CrashPoints.reach("repack.built")
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        try translatingErrors { try target.environment.copy(to: staging, compact: true) }
        var readOnly = Options()
        readOnly.readOnly = true
        readOnly.maxTables = targetOptions.maxTables
        let copy = try Store(path: staging, options: readOnly)
        defer { copy.close() }
        let verified = try copy.verify()
        guard verified.problems.isEmpty else {
            throw StoreError.invalidArgument("the repacked store failed verify (removed): \(verified.problems.joined(separator: "; "))")
        }
        guard verified.tables.map(\.rows) == written else {
            throw StoreError.invalidArgument("the repacked store decodes \(verified.tables.map(\.rows)) rows where \(written) were written (removed)")
        }
        let reports = try tables.indices.map { index in
            try tableReport(tables[index].name, before: before[index], after: copy.storageStatistics(copy.table(tables[index].name)),
                            outcome: outcomes[index])
        }
        return RepackReport(store: self.path, path: path, bytesBefore: bytesBefore, bytesAfter: copy.fileSize, tables: reports)
    }

    private func tableReport(_ name: String, before: TableStorage, after: TableStorage, outcome: RebuildOutcome? = nil) -> RepackReport.TableReport {
        func forms(_ storage: TableStorage) -> [RepackReport.FormCount] {
            storage.forms.map { RepackReport.FormCount(form: $0.form, rows: $0.rows, recordBytes: $0.recordBytes) }
        }
        return RepackReport.TableReport(
            table: name, repacked: outcome != nil, rowsBefore: before.rows, rowsAfter: after.rows,
            diskBytesBefore: before.diskBytes, diskBytesAfter: after.diskBytes, formsBefore: forms(before), formsAfter: forms(after),
            policy: outcome?.policy, counts: outcome?.counts, countsDetail: outcome?.countsDetail, rowsFromSource: outcome?.rowsFromSource ?? 0,
            rowsAdded: outcome?.rowsAdded ?? 0, rowsWithoutSource: outcome?.rowsWithoutSource ?? 0,
            promoted: outcome?.promoted ?? 0, demoted: outcome?.demoted ?? 0,
            promotionsRefused: outcome?.refusedIDs.count ?? 0, refusedIDs: outcome?.refusedIDs ?? [],
            keptAtSamePrecision: outcome?.keptAtSamePrecision ?? 0, summary: outcome?.summary)
    }

    /// The table's access counts database, nil when no counts were ever kept for it.
    func openCountsDatabase(_ table: Table) throws -> Database? {
        do {
            return try translatingErrors { try environment.openDatabases([Store.countsDatabase(table.id)], flags: .integerKey)[0] }
        } catch StoreError.lmdb(let error) where error == .notFound {
            return nil
        }
    }
}

/// Flushes a directory's entries (a rename in it) to disk; best effort.
private func syncDirectory(_ path: String) {
    let directory = open(path, O_RDONLY)
    guard directory >= 0 else { return }
    _ = fsync(directory)
    _ = close(directory)
}

/// One read transaction of the store being repacked, held for the whole repack, so that every
/// table, parameter record and count comes from one snapshot.
final class RepackSnapshot: @unchecked Sendable {   // used by the repacking thread only
    let txn: Transaction
    init(_ environment: Environment) throws { txn = try environment.beginRead() }
}

extension Store {
    /// `repack(to:…)` into this store's next generation, swapped in atomically under live
    /// readers (`installGeneration(at:expecting:)`, as `compactInPlace` does): at every instant
    /// the store directory holds the complete old store or the complete, verified new one.
    /// The new generation is built in `STORE/repack-<pid>` (on the store's file system, a name
    /// no swap takes for its own; what a killed repack left there, the next swap removes). A
    /// write committed to the store while the repack ran would not be in the new generation:
    /// the swap then refuses, leaving the store as it was, and the repack can be run again.
    public func repackInPlace(tables names: [String]? = nil, policy: CodecPolicy, counts: RepackCounts = .none,
                              sources: [String: RepackSource] = [:],
                              options: RepackOptions = RepackOptions()) throws -> (repack: RepackReport, swap: GenerationSwapReport) {
        try requireWritable()
        let version = try self.version()
        let staged = path + "/" + GenerationDirectory.repackPrefix + "\(getpid())"
        try? FileManager.default.removeItem(atPath: staged)   // a killed repack's
        defer { try? FileManager.default.removeItem(atPath: staged) }
        let report = try repack(to: staged, tables: names, policy: policy, counts: counts, sources: sources, options: options)
        CrashPoints.reach("repack.staged")
        let swap = try installGeneration(at: staged, expecting: version)
        return (report, swap)
    }
}
