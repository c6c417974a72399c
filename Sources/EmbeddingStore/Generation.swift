import Dispatch
import Foundation
import LMDB
import Synchronization

/// One LMDB environment of a store, as this process has it open: the store directory itself (a
/// plain store) or the generation directory its pointer names (FORMAT.md, "Generations").
///
/// One object per environment per process, shared by every `Store` and `Reader` that uses it:
/// > Do not have open an LMDB database twice in the same process at the same time. Not even
/// > from a plain open() call - close()ing it breaks flock() advisory locking.
/// Its environment closes when the last of them lets go; a generation a swap retired is then
/// removed from the disk, unless another process still has it open.
final class Generation: Sendable {
    /// The store directory (what `Store(path:)` was given).
    let root: String
    /// The generation's name (`gen-000002`), nil when the store directory itself is the environment.
    let name: String?
    /// The directory of `data.mdb` and `lock.mdb`.
    let directory: String
    let environment: Environment
    let meta: Database
    /// Whether its records end with a seal (format version 5 on, `RecordSeal`).
    let sealed: Bool
    /// Names this generation in `Table.generationID`; never reused in the process.
    let id: Int
    /// The most tables its environment was opened for (`Store.Options.maxTables`).
    let maxTables: Int
    private let tables = Mutex<[String: Table]>([:])
    /// Set once this process knows that a swap replaced this generation.
    private let retired = Atomic<Bool>(false)
    private static let identities = Atomic<Int>(0)

    private init(root: String, name: String?, directory: String, environment: Environment, meta: Database, sealed: Bool, maxTables: Int) {
        self.root = root
        self.name = name
        self.directory = directory
        self.environment = environment
        self.meta = meta
        self.sealed = sealed
        self.maxTables = maxTables
        id = Generation.identities.add(1, ordering: .relaxed).newValue
    }

    deinit {
        // The last user in this process let go of a generation a swap replaced: close it now
        // (not whenever its last transaction object happens to be freed), then remove it unless
        // another process still has it open. A reader's batch may end here: the close waits for
        // nothing (an operation still in a transaction of it keeps it open, and it closes when
        // that ends), and the files are removed on another thread.
        guard isRetired else { return }
        environment.close(timeout: 0)
        let directory = GenerationDirectory(root: root)
        DispatchQueue.global(qos: .utility).async { _ = try? directory.removeRetired() }
    }

    /// What the messages call this generation.
    var label: String { name ?? GenerationDirectory.rootEnvironmentName }

    var isRetired: Bool { retired.load(ordering: .acquiring) }

    func markRetired() { retired.store(true, ordering: .releasing) }

    /// Size in bytes of its data file.
    var fileSize: Int {
        (try? FileManager.default.attributesOfItem(atPath: directory + "/data.mdb")[.size] as? Int) ?? 0
    }

    // MARK: - Opening

    /// Opens the generation the store directory `root` holds now: the one its pointer names, or
    /// the directory itself when it has none.
    ///
    /// A process that read the pointer just before a swap may find that generation gone, or
    /// half removed, by the time it opens it: it then reads the pointer again and opens the new
    /// one. Every failure while the pointer moves is taken as that; a failure with the pointer
    /// unchanged is the store's own and is thrown.
    /// `newVersion` is the format version an environment this creates starts at.
    static func open(root: String, configuration: Environment.Configuration, maxTables: Int,
                     newVersion: UInt32 = StoreFormat.version) throws -> Generation {
        let layout = GenerationDirectory(root: root)
        for _ in 0..<64 {
            let name = try layout.readPointer()
            do {
                return try shared(root: root, name: name, configuration: configuration, maxTables: maxTables, newVersion: newVersion)
            } catch {
                if try layout.readPointer() == name, !isRetiredError(error) { throw error }
            }
        }
        throw StoreError.invalidArgument("\(root): its \(GenerationDirectory.pointerName) changed 64 times while this process was opening it")
    }

    private static func isRetiredError(_ error: any Error) -> Bool {
        if case StoreError.generationRetired = error { return true }
        return false
    }

    private struct Weak {
        weak var generation: Generation?
    }

    /// Generations open in this process, by their directory's real path.
    private static let registry = Mutex<[String: Weak]>([:])

    private static func key(_ directory: String) -> String {
        URL(fileURLWithPath: directory).resolvingSymlinksInPath().standardizedFileURL.path
    }

    /// Runs `body` with a test for "this process has the environment in this directory open",
    /// while no generation of the process opens (so the answer holds until `body` returns).
    static func withProcessRegistry<R>(_ body: (_ isOpenHere: (String) -> Bool) throws -> R) rethrows -> R {
        try registry.withLock { open in
            try body { directory in
                guard let generation = open[key(directory)]?.generation else { return false }
                return !generation.environment.isClosed
            }
        }
    }

    private static func shared(root: String, name: String?, configuration: Environment.Configuration, maxTables: Int,
                               newVersion: UInt32) throws -> Generation {
        let directory = name.map { root + "/" + $0 } ?? root
        let key = key(directory)
        let readOnly = configuration.flags.contains(.readOnly)
        let requested = configuration
        var configuration = configuration
        if name != nil && readOnly && access(directory, W_OK) == 0 && access(directory + "/data.mdb", W_OK) == 0 {
            // A generation opened by a read-only store first and by a writable one later (a
            // swap it makes, a write it retries) must be one environment: open it writable when
            // the files allow; the read-only `Store` refuses writes itself.
            configuration.flags.remove(.readOnly)
        }
        return try registry.withLock { open in
            if let existing = open[key]?.generation, !existing.environment.isClosed {
                if existing.environment.isReadOnly && !readOnly {
                    throw StoreError.invalidArgument("\(root) is already open read-only in this process; close that Store before opening it for writing")
                }
                return existing
            }
            // A generation directory always has its data file (LMDB would create an empty one).
            if (name != nil || readOnly) && !FileManager.default.fileExists(atPath: directory + "/data.mdb") {
                throw StoreError.notAStore(path: directory, reason: "it has no data.mdb")
            }
            let environment: Environment
            do {
                do {
                    environment = try Environment(path: directory, configuration: configuration)
                } catch let error as LMDBError where readOnly && (error.code == EACCES || error.code == EROFS) {
                    // A directory (or lock file) this process may not write: read without LMDB's
                    // lock file. Its readers then do not register, so no writer may run meanwhile
                    // (README, "Read-only stores").
                    var unlocked = requested
                    unlocked.flags.insert(.noLock)
                    environment = try Environment(path: directory, configuration: unlocked)
                }
            } catch let error as LMDBError where error == .invalid || error == .versionMismatch {
                throw StoreError.notAStore(path: directory, reason: error.description)
            }
            // Never write into a generation the pointer has left (a new store's header included).
            guard try GenerationDirectory(root: root).readPointer() == name else {
                throw StoreError.generationRetired(path: root, generation: name ?? GenerationDirectory.rootEnvironmentName)
            }
            let (meta, sealed) = try translatingErrors { try Store.openMeta(environment, path: directory, newVersion: newVersion) }
            let generation = Generation(root: root, name: name, directory: directory, environment: environment, meta: meta,
                                        sealed: sealed, maxTables: maxTables)
            open = open.filter { $0.value.generation != nil }
            open[key] = Weak(generation: generation)
            return generation
        }
    }

    // MARK: - Retirement

    /// Throws `generationRetired` unless this generation is still the store's: its `meta` has no
    /// `retired` record and the pointer names it (a plain store: there is no pointer). Called
    /// inside every write transaction, where it is final: a swap holds this generation's writer
    /// lock from the snapshot it copies until the pointer has moved, so a writer that passes
    /// this check commits before the swap's snapshot, and one that comes after fails it. The
    /// pointer is read too because the swap marks the old generation only after moving the
    /// pointer (a swap killed in between leaves no mark).
    func requireCurrent(_ txn: borrowing Transaction) throws {
        if try isMarkedRetired(txn) || (try GenerationDirectory(root: root).readPointer()) != name {
            markRetired()
            throw StoreError.generationRetired(path: root, generation: label)
        }
    }

    /// True when the snapshot of `txn` holds the `retired` record a swap leaves in the generation
    /// it replaced (FORMAT.md, "Generations").
    func isMarkedRetired(_ txn: borrowing Transaction) throws -> Bool {
        try translatingErrors { try txn.withValue(forKey: StoreFormat.retiredKey, in: meta) { $0 != nil } }
    }

    // MARK: - Tables

    /// Names of all tables, in byte order.
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

    func readSchema(_ name: String, in txn: borrowing Transaction) throws -> TableSchema {
        try withMetaRecord(StoreFormat.tableKeyPrefix + name, in: txn, table: name) { bytes in
            guard let bytes else { throw StoreError.tableNotFound(name) }
            return try TableSchema.decode(bytes, table: name)
        }
    }

    func writeSchema(_ schema: TableSchema, name: String, in txn: borrowing Transaction) throws {
        try putMetaRecord(schema.encode(), key: StoreFormat.tableKeyPrefix + name, in: txn)
    }

    /// The table called `name` in this generation; throws `tableNotFound` when there is none.
    func table(named name: String) throws -> Table {
        try translatingErrors {
            let schema = try environment.read { txn in try readSchema(name, in: txn) }
            if let cached = tables.withLock({ $0[name] }), cached.id == schema.tableID { return cached }
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
            let table = Table(name: name, schema: schema, generationID: id, rows: databases[0], buckets: databases[1],
                              bases: databases[2], segments: try openSegments(schema.tableID), sealed: sealed)
            remember(table)
            return table
        }
    }

    /// This generation's handle of `table`, which may come from an older generation (a handle
    /// kept across a swap): the table of the same name, which must have the same dimension.
    /// A table a load was creating does not cross a swap (the new generation leaves it out):
    /// its load is told so, with `creationCutBySwap`.
    func local(_ table: Table) throws -> Table {
        try table.requireLive()
        if table.generationID == id { return table }
        if table.isBeingCreated { throw creationCutBySwap(table) }
        let local = try self.table(named: table.name)
        guard local.dimension == table.dimension else {
            throw StoreError.dimensionMismatch(table: table.name, expected: local.dimension, actual: table.dimension)
        }
        return local
    }

    func remember(_ table: Table) {
        tables.withLock { $0[table.name] = table }
    }

    func forget(_ name: String) {
        tables.withLock { $0[name] = nil }
    }

    /// Names of the tables opened so far (a new generation opens them ahead of its readers).
    var openTableNames: [String] { tables.withLock { Array($0.keys) } }

    /// The table's segments database. Tables of version-1 stores have none: it is created when
    /// the store is writable, and left out (no segments) when it is read-only.
    private func openSegments(_ tableID: UInt32) throws -> Database? {
        let name = Store.segmentsDatabase(tableID)
        do {
            return try environment.openDatabases([name], flags: .integerKey)[0]
        } catch let error as LMDBError where error == .notFound {
            if environment.isReadOnly { return nil }
            return try environment.write { txn in
                try requireCurrent(txn)
                return try txn.openDatabase(name, flags: [.create, .integerKey])
            }
        }
    }
}

extension StoreFormat {
    /// `meta` key of the record a swap leaves in the generation it replaced: the new
    /// generation's name (FORMAT.md, "Generations").
    static let retiredKey = "retired"
}
