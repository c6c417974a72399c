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
        /// The format version a new store is created at (FORMAT.md "Format versions"): the
        /// newest by default; 4 makes a store that readers of versions 1–4 can read (no record
        /// seals). Existing stores keep their version.
        public var formatVersion: UInt32 = StoreFormat.version
        /// Huge pages for the memory map (`Environment.HugePages`): by default when the data
        /// file fits in half the available memory. `EMBSTORE_HUGEPAGES=on|off|auto` in the
        /// environment overrides it for every store a process opens.
        public var hugePages: Environment.HugePages = .whenFileFitsInMemory
        public init() {}
    }

    /// `EMBSTORE_HUGEPAGES` (on, off or auto), read once; nil when unset.
    static let hugePagesOverride: Environment.HugePages? = {
        switch getenv("EMBSTORE_HUGEPAGES").map({ String(cString: $0).lowercased() }) {
        case "on", "1": .on
        case "off", "0": .off
        case "auto": .whenFileFitsInMemory
        default: nil
        }
    }()

    /// The store's directory.
    public let path: String
    /// The generation this store uses now (FORMAT.md, "Generations"); a plain store has one.
    private let current: Mutex<Generation>
    /// Raised each time this store moves to a new generation: readers compare it with the
    /// value they last saw at every batch, and move when it changed.
    let generationSerial = Atomic<Int>(0)
    /// One move at a time.
    let moving = Mutex<Void>(())
    /// When (coarse monotonic clock, ns) a reader next has the pointer read (`pointerCheckDue`).
    let nextPointerCheck = Atomic<Int>(0)
    let configuration: Environment.Configuration
    /// The most tables this store object opens (`Options.maxTables`): LMDB's named databases
    /// are sized for them when the environment opens.
    let maxTables: Int

    /// Opens the store at `path`, creating the directory and an empty store if needed
    /// (unless read-only). Refuses directories that hold something else and stores written
    /// by a newer format version. A store directory with a pointer (`CURRENT`) opens the
    /// generation it names; a writable open also removes generations a swap retired that no
    /// process has open any more.
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
        }
        var configuration = Environment.Configuration()
        configuration.mapSize = max(options.initialMapSize, 1 << 20)
        configuration.maxDatabases = 5 * options.maxTables + 1   // rows, buckets, bases, segments, counts
        configuration.maxReaders = options.maxReaders
        configuration.flags = [.noReadahead]
        configuration.hugePages = Self.hugePagesOverride ?? options.hugePages
        if options.readOnly { configuration.flags.insert(.readOnly) }
        if !options.durable { configuration.flags.insert(.noSync) }
        self.configuration = configuration
        self.isReadOnly = options.readOnly
        guard (1...StoreFormat.version).contains(options.formatVersion) else {
            throw StoreError.invalidArgument("format version \(options.formatVersion): this embstore writes versions 1...\(StoreFormat.version)")
        }
        let generation = try translatingErrors {
            try Generation.open(root: path, configuration: configuration, maxTables: options.maxTables, newVersion: options.formatVersion)
        }
        current = Mutex(generation)
        if !options.readOnly { _ = try? GenerationDirectory(root: path).removeRetired() }
    }

    /// The generation in use: where `environment` and `meta` are.
    var generation: Generation { current.withLock { $0 } }

    func setGeneration(_ generation: Generation) {
        current.withLock { $0 = generation }
    }
    /// The current generation's environment. An operation reads it once and keeps it: after a
    /// move the next read gives the new one (a `Database` of the other is then refused).
    var environment: Environment { generation.environment }
    /// The data file of the generation in use (`data.mdb` of the store or of its generation).
    public var dataFilePath: String { (generation.directory as NSString).appendingPathComponent("data.mdb") }
    var meta: Database { generation.meta }
    /// True when the current generation's records end with a seal (format version 5 on,
    /// `RecordSeal`); fixed when a store is created, kept by compaction.
    var sealed: Bool { generation.sealed }

    /// Opens the `meta` database and checks (or, for a new store, writes) the format header.
    static func openMeta(_ environment: Environment, path: String, newVersion: UInt32) throws -> (Database, sealed: Bool) {
        if environment.isReadOnly {
            let meta: Database
            do {
                meta = try environment.openDatabases([StoreFormat.metaDatabase], flags: [])[0]
            } catch let error as LMDBError where error == .notFound {
                throw StoreError.notAStore(path: path, reason: "it has no 'meta' database")
            }
            let version = try environment.read { txn in
                try txn.withValue(forKey: StoreFormat.formatKey, in: meta) { bytes in
                    guard let bytes else { throw StoreError.notAStore(path: path, reason: "'meta' has no 'format' record") }
                    return try StoreFormat.decodeHeader(bytes, path: path)
                }
            }
            return (meta, version >= StoreFormat.sealedVersion)
        }
        if let existing = try existingMeta(environment, path: path) { return existing }
        return try environment.write { txn in
            let main = try txn.openDatabase(nil)
            let existing = try txn.withValue(forKey: StoreFormat.metaDatabase, in: main) { $0 != nil }
            if try !existing && txn.statistics(main).entries > 0 {
                throw StoreError.notAStore(path: path, reason: "the LMDB environment has databases but no 'meta'")
            }
            let meta = try txn.openDatabase(StoreFormat.metaDatabase, flags: .create)
            let existingVersion = try txn.withValue(forKey: StoreFormat.formatKey, in: meta) { bytes -> UInt32? in
                guard let bytes else { return nil }
                return try StoreFormat.decodeHeader(bytes, path: path)
            }
            if let existingVersion { return (meta, existingVersion >= StoreFormat.sealedVersion) }
            if try txn.statistics(meta).entries > 0 {
                throw StoreError.notAStore(path: path, reason: "'meta' has no 'format' record")
            }
            try StoreFormat.encodeHeader(version: newVersion).withUnsafeBytes { try txn.put($0, forKey: StoreFormat.formatKey, in: meta) }
            let nextTableID = withUnsafeBytes(of: UInt32(1).littleEndian) { Array($0) }
            let sealed = newVersion >= StoreFormat.sealedVersion
            try (sealed ? RecordSeal.sealed(nextTableID, key: StoreFormat.nextTableIDKey) : nextTableID).withUnsafeBytes {
                try txn.put($0, forKey: StoreFormat.nextTableIDKey, in: meta)
            }
            return (meta, sealed)
        }
    }

    /// `meta` of a store that has one with a valid header, opened in a read transaction that
    /// commits (so the handle stays open): no writer lock, which a swap may hold for a while.
    /// Nil when the writer must create or check more.
    private static func existingMeta(_ environment: Environment, path: String) throws -> (Database, sealed: Bool)? {
        let txn = try environment.beginRead()
        guard let meta = try databaseIfPresent(StoreFormat.metaDatabase, in: txn) else { return nil }
        let version = try txn.withValue(forKey: StoreFormat.formatKey, in: meta) { bytes -> UInt32? in
            guard let bytes else { return nil }
            return try StoreFormat.decodeHeader(bytes, path: path)
        }
        guard let version else { return nil }
        try txn.commit()
        return (meta, version >= StoreFormat.sealedVersion)
    }

    /// The named database, or nil when the environment has none of that name.
    private static func databaseIfPresent(_ name: String, in txn: borrowing Transaction) throws -> Database? {
        do {
            return try txn.openDatabase(name)
        } catch let error where error == .notFound {
            return nil
        }
    }

    /// True when opened read-only.
    public let isReadOnly: Bool

    /// Flushes committed data to disk (needed only when opened with `durable = false`).
    public func sync() throws {
        try translatingErrors { try environment.sync(force: true) }
    }

    /// Size in bytes of the current generation's data file.
    public var fileSize: Int { generation.fileSize }

    /// Closes the store once its in-flight transactions finish. Using it afterwards throws.
    /// Other `Store`s of the same directory in this process share its environment and are
    /// closed with it.
    public func close() {
        environment.close()
    }

    // MARK: - Tables

    /// Names of all tables, in byte order.
    public func tableNames() throws -> [String] {
        followPointer()
        let generation = generation
        return try translatingErrors { try generation.environment.read { txn in try generation.tableNames(in: txn) } }
    }

    /// Creates an empty table of `dimension` values per row.
    public func createTable(_ name: String, dimension: Int) throws -> Table {
        try checkNewTable(name, dimension: dimension)
        return try followingSwaps {
            let generation = generation
            let table = try translatingErrors {
                try generation.environment.write { txn -> Table in
                    try generation.requireCurrent(txn)
                    let key = StoreFormat.tableKeyPrefix + name
                    if try txn.withValue(forKey: key, in: generation.meta, { $0 != nil }) { throw StoreError.tableExists(name) }
                    return try generation.makeTable(name, dimension: dimension, schemaKey: key, in: txn)
                }
            }
            generation.remember(table)
            return table
        }
    }

    /// Refuses a table name or dimension that `createTable` would, and a read-only store.
    func checkNewTable(_ name: String, dimension: Int) throws {
        try Store.validateTableName(name)
        guard dimension >= 1, dimension <= Int(TableSchema.maximumDimension) else {
            throw StoreError.invalidArgument("dimension \(dimension) for table '\(name)' is outside 1...\(TableSchema.maximumDimension)")
        }
        try requireWritable()
    }

    /// The table called `name`; throws `tableNotFound` when there is none.
    public func table(_ name: String) throws -> Table {
        followPointer()
        return try generation.table(named: name)
    }

    /// This store's current handle of `table` (a handle may come from before a swap), checked
    /// not to be dropped: what every operation on a table starts with.
    func resolve(_ table: Table) throws -> Table {
        try generation.local(table)
    }

    /// `resolve`, with the generation it resolved in: what a read of the table must use (the
    /// store may move to another generation meanwhile, whose environment the handle is not of).
    func resolved(_ table: Table) throws -> (Generation, Table) {
        let generation = generation
        return (generation, try generation.local(table))
    }

    /// Deletes a table and all its rows. Waits for this process's in-flight lookups to finish,
    /// since LMDB frees a deleted database's handle at once.
    public func dropTable(_ name: String) throws {
        try requireWritable()
        try followingSwaps {
            let generation = generation
            let table = try generation.table(named: name)
            try translatingErrors {
                try generation.environment.withExclusiveAccess {
                    try generation.environment.write { txn in
                        try generation.requireCurrent(txn)
                        _ = try generation.readSchema(name, in: txn)
                        for database in [table.rows, table.buckets, table.bases] + (table.segments.map { [$0] } ?? []) {
                            try txn.drop(database, delete: true)
                        }
                        do {
                            try txn.drop(try txn.openDatabase(Store.countsDatabase(table.id), flags: .integerKey), delete: true)
                        } catch let error as LMDBError where error == .notFound {}   // no counts kept
                        try txn.delete(StoreFormat.tableKeyPrefix + name, in: generation.meta)
                        try generation.deleteLoadNotes(table.id, in: txn)
                    }
                    generation.forget(name)
                    table.markDropped()
                }
            }
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
    ///
    /// When a swap replaced the store's generation (`compact --in-place`, an installed repack),
    /// the batch is refused there and `body` runs again in the new generation; table handles
    /// from before the swap name the same tables there.
    public func write<R>(_ body: (inout WriteBatch) throws -> R) throws -> R {
        try requireWritable()
        return try followingSwaps { try write(in: generation, body) }
    }

    /// One attempt of `write` in `generation`.
    private func write<R>(in generation: Generation, _ body: (inout WriteBatch) throws -> R) throws -> R {
        try translatingErrors {
            try generation.environment.retryingWhenMapFull {
                var batch = WriteBatch(store: self, generation: generation, transaction: try generation.environment.beginWrite())
                try generation.requireCurrent(batch.txn)
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
