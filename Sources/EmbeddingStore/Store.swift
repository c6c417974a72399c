import EmbeddingCodecs
import Foundation
import LMDB
import Synchronization

/// An embedding store: one LMDB environment holding any number of tables of embedding rows,
/// each row stored with its own codec.
///
/// `Store` is `Sendable`: share one per process. Reads go through a `Reader` per thread;
/// writes through `write { batch in ... }`, which may be called from any thread (LMDB runs one
/// write transaction at a time and each stays on the thread that called `write`).
/// Errors thrown are `StoreError`s.
public final class Store: Sendable {
    /// How to open a store.
    public struct Options: Sendable {
        /// Open read-only: every write fails with `StoreError.readOnly`.
        public var readOnly = false
        /// Initial size of the memory map; it doubles whenever it is full.
        public var initialMapSize = 1 << 28
        /// Tables the store can hold at once (each uses up to four LMDB databases).
        public var maxTables = 100
        /// Concurrent `Reader`s across all processes.
        public var maxReaders = 126
        /// Flush to disk on every commit (LMDB's default). Off for offline builds: a crash may
        /// then lose the last commits but never corrupts the store; `sync()` flushes.
        public var durable = true
        public init() {}
    }

    /// The store's directory.
    public let path: String
    let environment: Environment
    let meta: Database
    /// The most tables this store object opens (`Options.maxTables`): LMDB's named databases
    /// are sized for them when the environment opens.
    let maxTables: Int
    private let openTables = Mutex<[String: Table]>([:])

    /// Opens the store at `path`, creating the directory and an empty store if needed
    /// (unless read-only). Refuses directories that hold something else and stores written
    /// by a newer format version.
    public init(path: String, options: Options = Options()) throws {
        self.path = path
        self.maxTables = options.maxTables
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        if exists && !isDirectory.boolValue {
            throw StoreError.notAStore(path: path, reason: "it is a file, not a directory")
        }
        if !exists {
            if options.readOnly { throw StoreError.notAStore(path: path, reason: "the directory does not exist") }
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            } catch {
                throw StoreError.invalidArgument("cannot create the store directory \(path): \(error.localizedDescription)")
            }
        } else if options.readOnly && !FileManager.default.fileExists(atPath: path + "/data.mdb") {
            throw StoreError.notAStore(path: path, reason: "it has no data.mdb")
        }
        var configuration = Environment.Configuration()
        configuration.mapSize = max(options.initialMapSize, 1 << 20)
        configuration.maxDatabases = 5 * options.maxTables + 1   // rows, buckets, bases, segments, counts
        configuration.maxReaders = options.maxReaders
        configuration.flags = [.noReadahead]
        if options.readOnly { configuration.flags.insert(.readOnly) }
        if !options.durable { configuration.flags.insert(.noSync) }
        do {
            let environment: Environment
            do {
                environment = try Store.sharedEnvironment(path: path, configuration: configuration)
            } catch let error as LMDBError where options.readOnly && (error.code == EACCES || error.code == EROFS) {
                // A directory (or lock file) this process may not write: read without LMDB's
                // lock file. Its readers then do not register, so no writer may run meanwhile
                // (README, "Read-only stores").
                configuration.flags.insert(.noLock)
                environment = try Store.sharedEnvironment(path: path, configuration: configuration)
            }
            self.environment = environment
            self.isReadOnly = options.readOnly
            self.meta = try Store.openMeta(environment, path: path)
        } catch let error as LMDBError where error == .invalid || error == .versionMismatch {
            throw StoreError.notAStore(path: path, reason: error.description)
        } catch let error as LMDBError {
            throw StoreError.lmdb(error)
        }
    }

    /// Environments open in this process, by the store directory's real path.
    ///
    /// > Do not have open an LMDB database twice in the same process at the same time. Not even
    /// > from a plain open() call - close()ing it breaks flock() advisory locking.
    ///
    /// So a second `Store` of the same directory shares the first one's environment.
    private static let openEnvironments = Mutex<[String: WeakEnvironment]>([:])

    private struct WeakEnvironment {
        weak var environment: Environment?
    }

    private static func sharedEnvironment(path: String, configuration: Environment.Configuration) throws -> Environment {
        let key = URL(fileURLWithPath: path).resolvingSymlinksInPath().standardizedFileURL.path
        return try openEnvironments.withLock { open in
            if let existing = open[key]?.environment, !existing.isClosed {
                if existing.isReadOnly && !configuration.flags.contains(.readOnly) {
                    throw StoreError.invalidArgument("\(path) is already open read-only in this process; close that Store before opening it for writing")
                }
                return existing
            }
            let environment = try Environment(path: path, configuration: configuration)
            open = open.filter { $0.value.environment != nil }
            open[key] = WeakEnvironment(environment: environment)
            return environment
        }
    }

    /// Opens the `meta` database and checks (or, for a new store, writes) the format header.
    private static func openMeta(_ environment: Environment, path: String) throws -> Database {
        if environment.isReadOnly {
            let meta: Database
            do {
                meta = try environment.openDatabases([StoreFormat.metaDatabase], flags: [])[0]
            } catch let error as LMDBError where error == .notFound {
                throw StoreError.notAStore(path: path, reason: "it has no 'meta' database")
            }
            try environment.read { txn in
                try txn.withValue(forKey: StoreFormat.formatKey, in: meta) { bytes in
                    guard let bytes else { throw StoreError.notAStore(path: path, reason: "'meta' has no 'format' record") }
                    _ = try StoreFormat.decodeHeader(bytes, path: path)
                }
            }
            return meta
        }
        return try environment.write { txn in
            let main = try txn.openDatabase(nil)
            let existing = try txn.withValue(forKey: StoreFormat.metaDatabase, in: main) { $0 != nil }
            if try !existing && txn.statistics(main).entries > 0 {
                throw StoreError.notAStore(path: path, reason: "the LMDB environment has databases but no 'meta'")
            }
            let meta = try txn.openDatabase(StoreFormat.metaDatabase, flags: .create)
            let hasHeader = try txn.withValue(forKey: StoreFormat.formatKey, in: meta) { bytes -> Bool in
                guard let bytes else { return false }
                _ = try StoreFormat.decodeHeader(bytes, path: path)
                return true
            }
            if !hasHeader {
                if try txn.statistics(meta).entries > 0 {
                    throw StoreError.notAStore(path: path, reason: "'meta' has no 'format' record")
                }
                try StoreFormat.encodeHeader().withUnsafeBytes { try txn.put($0, forKey: StoreFormat.formatKey, in: meta) }
                try withUnsafeBytes(of: UInt32(1).littleEndian) { try txn.put($0, forKey: StoreFormat.nextTableIDKey, in: meta) }
            }
            return meta
        }
    }

    /// True when opened read-only.
    public let isReadOnly: Bool

    /// Flushes committed data to disk (needed only when opened with `durable = false`).
    public func sync() throws {
        try translatingErrors { try environment.sync(force: true) }
    }

    /// Size in bytes of the store's data file.
    public var fileSize: Int {
        (try? FileManager.default.attributesOfItem(atPath: path + "/data.mdb")[.size] as? Int) ?? 0
    }

    /// Closes the store once its in-flight transactions finish. Using it afterwards throws.
    /// Other `Store`s of the same directory in this process share its environment and are
    /// closed with it.
    public func close() {
        environment.close()
    }

    // MARK: - Tables

    /// Names of all tables, in byte order.
    public func tableNames() throws -> [String] {
        try translatingErrors { try environment.read { txn in try tableNames(in: txn) } }
    }

    func tableNames(in txn: borrowing Transaction) throws -> [String] {
        try txn.withCursor(meta) { cursor in
            var names: [String] = []
            var entry = try cursor.seek(atLeast: StoreFormat.tableKeyPrefix)
            while let current = entry, current.stringKey.hasPrefix(StoreFormat.tableKeyPrefix) {
                names.append(String(current.stringKey.dropFirst(StoreFormat.tableKeyPrefix.count)))
                entry = try cursor.next()
            }
            return names
        }
    }

    /// Creates an empty table of `dimension` values per row.
    public func createTable(_ name: String, dimension: Int) throws -> Table {
        try checkNewTable(name, dimension: dimension)
        let table = try translatingErrors {
            try environment.write { txn -> Table in
                let key = StoreFormat.tableKeyPrefix + name
                if try txn.withValue(forKey: key, in: meta, { $0 != nil }) { throw StoreError.tableExists(name) }
                return try makeTable(name, dimension: dimension, schemaKey: key, in: txn)
            }
        }
        openTables.withLock { $0[name] = table }
        return table
    }

    /// Refuses a table name or dimension that `createTable` would, and a read-only store.
    func checkNewTable(_ name: String, dimension: Int) throws {
        try Store.validateTableName(name)
        guard dimension >= 1, dimension <= Int(TableSchema.maximumDimension) else {
            throw StoreError.invalidArgument("dimension \(dimension) for table '\(name)' is outside 1...\(TableSchema.maximumDimension)")
        }
        try requireWritable()
    }

    /// In a write transaction: a new table with the next table id, its databases, and its
    /// schema under `schemaKey` (`table/<name>`, or `creating/<name>` for a load's).
    func makeTable(_ name: String, dimension: Int, schemaKey: String, in txn: borrowing Transaction) throws -> Table {
        // Each table takes up to five of LMDB's named databases, sized when the environment
        // opened: one more would be created here, then fail to open elsewhere.
        let tables = try tableNames(in: txn).count
        guard tables < maxTables else { throw Store.tooManyTables(name, tables: tables, maxTables: maxTables) }
        let tableID = try txn.withValue(forKey: StoreFormat.nextTableIDKey, in: meta) { bytes -> UInt32 in
            guard let bytes, bytes.count == 4 else {
                throw StoreError.notAStore(path: path, reason: "'meta' record 'next_table_id' is missing or not 4 bytes")
            }
            return UInt32(littleEndian: bytes.loadUnaligned(as: UInt32.self))
        }
        let schema = TableSchema(tableID: tableID, dimension: UInt32(dimension))
        let table = try openTableDatabases(name, schema: schema, beingCreated: schemaKey.hasPrefix(StoreFormat.creatingKeyPrefix), in: txn)
        try schema.encode().withUnsafeBytes { try txn.put($0, forKey: schemaKey, in: meta) }
        try withUnsafeBytes(of: (tableID + 1).littleEndian) { try txn.put($0, forKey: StoreFormat.nextTableIDKey, in: meta) }
        return table
    }

    /// The table called `name`; throws `tableNotFound` when there is none.
    public func table(_ name: String) throws -> Table {
        try translatingErrors {
            let schema = try environment.read { txn in try readSchema(name, in: txn) }
            if let cached = openTables.withLock({ $0[name] }), cached.id == schema.tableID { return cached }
            let databases: [Database]
            do {
                databases = try environment.openDatabases(
                    [StoreFormat.rowsDatabase(schema.tableID), StoreFormat.bucketsDatabase(schema.tableID), StoreFormat.basesDatabase(schema.tableID)],
                    flags: .integerKey)
            } catch let error as LMDBError where error == .notFound {
                throw StoreError.corruptMetadata(table: name, reason: "its databases t\(schema.tableID)/* are missing")
            } catch let error as LMDBError where error == .databasesFull {
                throw StoreError.invalidArgument("cannot open table '\(name)': the store holds more tables than it is opened for (Store.Options.maxTables = \(maxTables)); open it with a larger maxTables")
            }
            let table = Table(name: name, schema: schema, rows: databases[0], buckets: databases[1], bases: databases[2],
                              segments: try openSegments(schema.tableID))
            openTables.withLock { $0[name] = table }
            return table
        }
    }

    /// Deletes a table and all its rows. Waits for this process's in-flight lookups to finish,
    /// since LMDB frees a deleted database's handle at once.
    public func dropTable(_ name: String) throws {
        try requireWritable()
        let table = try self.table(name)
        try translatingErrors {
            try environment.withExclusiveAccess {
                try environment.write { txn in
                    _ = try readSchema(name, in: txn)
                    for database in [table.rows, table.buckets, table.bases] + (table.segments.map { [$0] } ?? []) {
                        try txn.drop(database, delete: true)
                    }
                    do {
                        try txn.drop(try txn.openDatabase(Store.countsDatabase(table.id), flags: .integerKey), delete: true)
                    } catch let error as LMDBError where error == .notFound {}   // no counts kept
                    try txn.delete(StoreFormat.tableKeyPrefix + name, in: meta)
                    try deleteLoadNotes(table.id, in: txn)
                }
                openTables.withLock { $0[name] = nil }
                table.markDropped()
            }
        }
    }

    /// Removes every load note of table `tableID`.
    func deleteLoadNotes(_ tableID: UInt32, in txn: borrowing Transaction) throws {
        let prefix = StoreFormat.loadNotePrefix(tableID)
        var keys: [String] = []
        try txn.withCursor(meta) { cursor in
            var entry = try cursor.seek(atLeast: prefix)
            while let current = entry, current.stringKey.hasPrefix(prefix) {
                keys.append(current.stringKey)
                entry = try cursor.next()
            }
        }
        for key in keys { _ = try txn.delete(key, in: meta) }
    }

    /// The table's segments database. Tables of version-1 stores have none: it is created when
    /// the store is writable, and left out (no segments) when it is read-only.
    private func openSegments(_ tableID: UInt32) throws -> Database? {
        let name = Store.segmentsDatabase(tableID)
        do {
            return try environment.openDatabases([name], flags: .integerKey)[0]
        } catch let error as LMDBError where error == .notFound {
            if isReadOnly { return nil }
            return try environment.write { txn in try txn.openDatabase(name, flags: [.create, .integerKey]) }
        }
    }

    func readSchema(_ name: String, in txn: borrowing Transaction) throws -> TableSchema {
        try txn.withValue(forKey: StoreFormat.tableKeyPrefix + name, in: meta) { bytes in
            guard let bytes else { throw StoreError.tableNotFound(name) }
            return try TableSchema.decode(bytes, table: name)
        }
    }

    static func validateTableName(_ name: String) throws(StoreError) {
        if name.isEmpty { throw .invalidTableName(name, reason: "it is empty") }
        if name.utf8.count > 200 { throw .invalidTableName(name, reason: "it is longer than 200 bytes") }
        if name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw .invalidTableName(name, reason: "it contains control characters")
        }
    }

    func requireWritable() throws(StoreError) {
        if isReadOnly { throw .readOnly(path: path) }
    }

    // MARK: - Writing

    /// Runs `body` in one write transaction and commits it; nothing of it is visible if it
    /// throws. If the map fills up, the transaction is rolled back, the map grown and `body` run
    /// again, so `body` should not have effects outside the batch.
    public func write<R>(_ body: (inout WriteBatch) throws -> R) throws -> R {
        try requireWritable()
        return try translatingErrors {
            try environment.retryingWhenMapFull {
                var batch = WriteBatch(store: self, transaction: try environment.beginWrite())
                let result = try body(&batch)
                try batch.commit()
                return result
            }
        }
    }

    /// Stores one row with an explicit codec (a one-row `write`).
    public func put(_ table: Table, id: UInt64, vector: [Float], codec: Codec) throws {
        try write { batch in try batch.put(table, id: id, vector: vector, codec: codec) }
    }

    /// Deletes one row; returns false when it was not there.
    @discardableResult
    public func delete(_ table: Table, id: UInt64) throws -> Bool {
        try write { batch in try batch.delete(table, id: id) }
    }

    // MARK: - Reading

    /// A reader for batched lookups on the calling thread.
    public func makeReader() throws -> Reader {
        try translatingErrors { try Reader(store: self) }
    }

    /// One decoded row, or nil when the id is absent. For many rows use a `Reader`.
    public func get(_ table: Table, id: UInt64) throws -> [Float]? {
        let reader = try makeReader()
        var row = [Float](repeating: 0, count: table.dimension)
        var found = false
        try withUnsafePointer(to: id) { idPointer in
            try row.withUnsafeMutableBufferPointer { out in
                try withUnsafeMutablePointer(to: &found) { foundPointer in
                    _ = try reader.lookup(table, ids: UnsafeBufferPointer(start: idPointer, count: 1), into: out,
                                          found: UnsafeMutableBufferPointer(start: foundPointer, count: 1))
                }
            }
        }
        return found ? row : nil
    }
}

/// Runs `body`, turning LMDB's errors into `StoreError.lmdb`.
@inline(__always)
func translatingErrors<R>(_ body: () throws -> R) throws -> R {
    do {
        return try body()
    } catch let error as LMDBError {
        throw StoreError.lmdb(error)
    }
}
