import Foundation
import LMDB

extension Store {
    /// What `compact(to:)` did.
    public struct CompactionReport: Sendable {
        /// Bytes of `data.mdb` before, and of the compacted copy.
        public var bytesBefore: Int
        public var bytesAfter: Int
        /// Segment parts no manifest refers to (a load that crashed), left out of the copy.
        public var orphanParts: Int
        /// Tables a load was creating when it was killed (never visible), left out of the copy.
        public var abandonedTables: Int
    }

    /// Writes a compacted copy of this store into the new directory `path`: LMDB's compacting
    /// copy (`mdb_env_copy2` with `MDB_CP_COMPACT`) of one snapshot writes only the pages in use,
    /// renumbered, without the free ones; segment parts no manifest lists (left by a load killed
    /// part-way) and tables a killed load was creating (`creating/<name>`) are then removed from
    /// the copy, and the copy compacted once more if there were any (this store is not changed:
    /// they may belong to a load still running). The copy is built and verified in a staging
    /// directory beside `path` and renamed to `path` last, so `path` never holds a half-made
    /// store, even if this process is killed; a killed compaction's staging directory is removed
    /// by the next one to the same path. Readers and writers of this store may go on meanwhile;
    /// the copy holds the snapshot it started from.
    @discardableResult
    public func compact(to path: String) throws -> CompactionReport {
        let fileManager = FileManager.default
        guard !fileManager.fileExists(atPath: path) else {
            throw StoreError.invalidArgument("\(path) exists: compact writes a new store and replaces nothing")
        }
        Store.removeAbandonedStaging(for: path)
        let generation = generation
        let before = generation.fileSize
        let staging = path + Store.stagingSuffix + "\(getpid())"
        defer { try? fileManager.removeItem(atPath: staging) }
        let built = staging + "/store"
        let leftOut = try Store.writeCompactedCopy(of: generation.environment, to: built)
        let after = try Store.verifyCopy(at: built)
        try? fileManager.removeItem(atPath: built + "/lock.mdb")
        CrashPoints.reach("compact.before-publish")
        // rename(2) of a directory is atomic: `path` appears complete, or not at all.
        guard rename(built, path) == 0 else {
            throw StoreError.invalidArgument("cannot move the compacted copy to \(path): \(String(cString: strerror(errno)))")
        }
        return CompactionReport(bytesBefore: before, bytesAfter: after, orphanParts: leftOut.orphanParts, abandonedTables: leftOut.abandonedTables)
    }

    static let stagingSuffix = ".compacting-"

    /// Removes the staging directories beside `path` that compactions (or, with other
    /// `suffixes`, repacks) killed part-way left: `<path><suffix><pid>` of a process that no
    /// longer runs.
    static func removeAbandonedStaging(for path: String, suffixes: [String] = [stagingSuffix]) {
        let url = URL(fileURLWithPath: path)
        let parent = url.deletingLastPathComponent().path
        for name in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] {
            for suffix in suffixes {
                let prefix = url.lastPathComponent + suffix
                guard name.hasPrefix(prefix), let pid = pid_t(name.dropFirst(prefix.count)),
                      GenerationDirectory.processHasEnded(pid) else { continue }
                try? FileManager.default.removeItem(atPath: parent + "/" + name)
            }
        }
    }

    /// Removes, in one write transaction, every table a load was creating (`creating/<name>`:
    /// its marker and databases) and the databases of tables no schema names (a marker replaced
    /// by a later load's); returns how many tables. Only for a copy no load writes to.
    func removeTablesBeingCreated() throws -> Int {
        let generation = generation
        return try translatingErrors {
            try writeTransaction { txn in
                var markers: [String] = []
                try txn.withCursor(generation.meta) { cursor in
                    var entry = try cursor.seek(atLeast: StoreFormat.creatingKeyPrefix)
                    while let current = entry, current.stringKey.hasPrefix(StoreFormat.creatingKeyPrefix) {
                        markers.append(current.stringKey)
                        entry = try cursor.next()
                    }
                }
                let live = Set(try generation.tableNames(in: txn).map { try generation.readSchema($0, in: txn).tableID })
                // Named databases are the main database's keys: `t<T>/<role>`.
                var unreachable: [(name: String, tableID: UInt32)] = []
                try txn.withCursor(try txn.openDatabase(nil)) { cursor in
                    var entry = try cursor.first()
                    while let current = entry {
                        let name = current.stringKey
                        if name.hasPrefix("t"), let slash = name.firstIndex(of: "/"), let id = UInt32(name[name.index(after: name.startIndex)..<slash]),
                           !live.contains(id) {
                            unreachable.append((name, id))
                        }
                        entry = try cursor.next()
                    }
                }
                for (name, _) in unreachable {
                    try txn.drop(try txn.openDatabase(name, flags: .integerKey), delete: true)   // every t<T>/ database is
                }
                for tableID in Set(unreachable.map(\.tableID)) { try generation.deleteLoadNotes(tableID, in: txn) }
                for key in markers { _ = try txn.delete(key, in: generation.meta) }
                return markers.count
            }
        }
    }

    /// What a compacting copy left out: segment parts no manifest lists, and tables a load was
    /// creating (`creating/<name>`).
    struct CopyLeftovers {
        var orphanParts = 0
        var abandonedTables = 0
    }

    /// Writes LMDB's compacting copy of `environment` into the new directory `path`: the
    /// snapshot of a read transaction the copy begins (every commit before it), only the pages
    /// in use, without the segment parts no manifest lists nor the tables loads were creating
    /// (removed from a first copy, which is then copied once more). Returns what it left out.
    /// Leaves `data.mdb` alone in `path`, or nothing when it fails.
    static func writeCompactedCopy(of environment: Environment, to path: String) throws -> CopyLeftovers {
        let staging = path + ".copying-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: staging) }
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        try translatingErrors { try environment.copy(to: staging, compact: true) }
        CrashPoints.reach("compact.copied")
        var leftOut = CopyLeftovers()
        do {
            let copy = try Store(path: staging)
            defer { copy.close() }
            leftOut.orphanParts = try copy.removeOrphanParts()
            leftOut.abandonedTables = try copy.removeTablesBeingCreated()
            if leftOut.orphanParts + leftOut.abandonedTables > 0 {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
                try translatingErrors { try copy.environment.copy(to: path, compact: true) }
            }
        }
        if leftOut.orphanParts + leftOut.abandonedTables == 0 {
            try FileManager.default.removeItem(atPath: staging + "/lock.mdb")
            try FileManager.default.moveItem(atPath: staging, toPath: path)
        }
        return leftOut
    }

    /// Verifies the store copied to `path`, opened read-only, and returns its data file's size;
    /// throws, naming the problems, when it is damaged.
    static func verifyCopy(at path: String) throws -> Int {
        var readOnly = Options()
        readOnly.readOnly = true
        let copy = try Store(path: path, options: readOnly)
        defer { copy.close() }
        let report = try copy.verify()
        guard report.problems.isEmpty else {
            throw StoreError.invalidArgument("the compacted copy at \(path) failed verify (removed): \(report.problems.joined(separator: "; "))")
        }
        return copy.fileSize
    }

    /// Deletes, in one write transaction, every segment part whose segment no manifest lists;
    /// returns how many.
    func removeOrphanParts() throws -> Int {
        let tables = try tableNames().map { try table($0) }
        return try translatingErrors {
            try writeTransaction { txn in
                var removed = 0
                for table in tables {
                    guard let database = table.segments else { continue }
                    let live = Set(try segmentManifest(table, in: txn))
                    var orphans: Set<UInt32> = []
                    try txn.withCursor(database) { cursor in
                        var entry = try cursor.seek(atLeast: Store.segmentKey(1, part: 0))
                        while let current = entry, let key = current.integerKey {
                            let segment = UInt32(key >> 32)
                            if !live.contains(segment) { orphans.insert(segment) }
                            entry = try cursor.seek(atLeast: Store.segmentKey(segment + 1, part: 0))
                        }
                    }
                    for segment in orphans {
                        removed += try Store.deleteParts(of: segment, in: database, txn)
                    }
                }
                return removed
            }
        }
    }
}
