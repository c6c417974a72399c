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
    }

    /// Writes a compacted copy of this store into the new directory `path`: LMDB's compacting
    /// copy (`mdb_env_copy2` with `MDB_CP_COMPACT`) of one snapshot writes only the pages in use,
    /// renumbered, without the free ones; segment parts no manifest lists (left by a load killed
    /// part-way) are then removed from the copy, and the copy compacted once more if there were
    /// any (this store is not changed: such parts may belong to a load still running). The copy
    /// is verified before this returns; on any error nothing is left at `path`. Readers and
    /// writers of this store may go on meanwhile; the copy holds the snapshot it started from.
    @discardableResult
    public func compact(to path: String) throws -> CompactionReport {
        guard !FileManager.default.fileExists(atPath: path) else {
            throw StoreError.invalidArgument("\(path) exists: compact writes a new store and replaces nothing")
        }
        let generation = generation
        let before = generation.fileSize
        do {
            let orphans = try Store.writeCompactedCopy(of: generation.environment, to: path)
            let after = try Store.verifyCopy(at: path)
            return CompactionReport(bytesBefore: before, bytesAfter: after, orphanParts: orphans)
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            throw error
        }
    }

    /// Writes LMDB's compacting copy of `environment` into the new directory `path`: the
    /// snapshot of a read transaction the copy begins (every commit before it), only the pages
    /// in use, without the segment parts no manifest lists (removed from a first copy, which is
    /// then copied once more). Returns how many parts were left out. Leaves `data.mdb` alone in
    /// `path`, or nothing when it fails.
    static func writeCompactedCopy(of environment: Environment, to path: String) throws -> Int {
        let staging = path + ".compacting-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: staging) }
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        try translatingErrors { try environment.copy(to: staging, compact: true) }
        let orphans: Int
        do {
            let copy = try Store(path: staging)
            defer { copy.close() }
            orphans = try copy.removeOrphanParts()
            if orphans > 0 {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
                try translatingErrors { try copy.environment.copy(to: path, compact: true) }
            }
        }
        if orphans == 0 {
            try FileManager.default.removeItem(atPath: staging + "/lock.mdb")
            try FileManager.default.moveItem(atPath: staging, toPath: path)
        }
        return orphans
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
