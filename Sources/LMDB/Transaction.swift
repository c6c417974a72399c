import CLMDB
#if canImport(Glibc)
import Glibc
#endif

/// An LMDB transaction that cannot be misused: it cannot be copied, `commit` consumes it, and
/// dropping it without committing aborts it.
///
/// A read-only transaction sees one consistent snapshot. It can be `reset` (releasing the
/// snapshot but keeping its reader slot) and `renew`ed for the next batch, which is ~5× cheaper
/// than beginning a new one. Byte buffers handed to closures point into the memory map:
/// > Values returned from the database are valid only until a subsequent update operation,
/// > or the end of the transaction.
/// so they must not escape the closure.
public struct Transaction: ~Copyable {
    let handle: OpaquePointer
    /// The environment the transaction belongs to.
    public let environment: Environment
    /// True for a read-only transaction.
    public let isReadOnly: Bool
    /// False after `reset` (no snapshot held) until `renew`.
    public private(set) var isActive: Bool
    private var finished = false
    /// Where values read from the map may lie (`MapBounds`); set at begin and at each renew.
    var bounds: MapBounds

    init(environment: Environment, readOnly: Bool) throws(LMDBError) {
        // LMDB's writer lock is not reentrant: a second write transaction begun on the thread
        // that holds one blocks in mdb_txn_begin forever. Refuse it instead.
        if !readOnly && environment.writerThread.load(ordering: .sequentiallyConsistent) == TransactionGate.currentThread {
            throw LMDBError(code: EDEADLK, context: "beginning a write transaction on a thread that already has one open")
        }
        var attempts = 0
        while true {
            guard environment.gate.enter() else { throw environment.closedError }
            var txn: OpaquePointer?
            let rc = mdb_txn_begin(environment.handle, nil, readOnly ? UInt32(MDB_RDONLY) : 0, &txn)
            if rc == 0, let txn {
                if !readOnly { environment.writerThread.store(TransactionGate.currentThread, ordering: .sequentiallyConsistent) }
                self.handle = txn
                self.environment = environment
                self.isReadOnly = readOnly
                self.isActive = true
                self.bounds = MapBounds(environment)
                return
            }
            environment.gate.leave()
            // > MDB_MAP_RESIZED: another process wrote data beyond this MDB_env's mapsize and this
            // > environment's map must be resized as well. See mdb_env_set_mapsize().
            if rc == MDB_MAP_RESIZED && attempts < 3 {
                attempts += 1
                try environment.adoptForeignMapSize()
                continue
            }
            throw LMDBError(code: rc, context: readOnly ? "beginning a read transaction" : "beginning a write transaction")
        }
    }

    deinit {
        if !finished { end() }
    }

    /// Forgets this thread as the writer, while it still holds LMDB's writer lock: cleared after
    /// the commit or abort released the lock, it could erase the next writer's mark.
    private func releaseWriter() {
        environment.writerThread.store(0, ordering: .sequentiallyConsistent)
    }

    /// Aborts the transaction inside the gate: an active one is already inside; a reset one
    /// enters just for the abort, so that `Environment.close` cannot free the environment under
    /// it. After the environment is closed a reset transaction is left alone:
    /// > mdb_env_close: Only a single thread may call this function. All transactions, databases,
    /// > and cursors must already be closed before calling this function.
    /// and mdb_env_close has already released this process's reader slots.
    private func end() {
        if isActive {
            if !isReadOnly { releaseWriter() }
            mdb_txn_abort(handle)
            environment.gate.leave()
        } else if environment.gate.enterFinishing() {
            mdb_txn_abort(handle)
            environment.gate.leaveFinishing()
        }
    }

    /// Commits the transaction. The corresponding LMDB function is `mdb_txn_commit`.
    /// Whether or not it succeeds, the transaction is over.
    public consuming func commit() throws(LMDBError) {
        // > mdb_txn_commit: ... The transaction handle is freed. It and its cursors must not be
        // > used again after this call, except with mdb_cursor_renew().
        let rc: Int32
        if isActive {
            if !isReadOnly { releaseWriter() }
            rc = mdb_txn_commit(handle)
            environment.gate.leave()
        } else {
            end()
            rc = 0
        }
        finished = true
        if (rc == EIO || rc == ENOSPC), let free = environment.freeBytesIfFull() {
            // LMDB reports a write cut short by a full disk as EIO.
            throw LMDBError(code: ENOSPC, context: "committing a transaction: the file system holding \(environment.path) is full (\(free) bytes free); nothing of this transaction was written")
        }
        try check(rc, "committing a transaction")
    }

    /// Aborts the transaction, discarding its writes. Dropping it does the same.
    public consuming func abort() {}

    /// Releases a read-only transaction's snapshot, keeping the handle for `renew`.
    /// The corresponding LMDB function is `mdb_txn_reset`.
    public mutating func reset() {
        precondition(isReadOnly, "only read-only transactions can be reset")
        guard isActive else { return }
        mdb_txn_reset(handle)
        isActive = false
        environment.gate.leave()
    }

    /// Takes a fresh snapshot for a reset read-only transaction.
    /// The corresponding LMDB function is `mdb_txn_renew`.
    public mutating func renew() throws(LMDBError) {
        precondition(isReadOnly, "only read-only transactions can be renewed")
        guard !isActive else { return }
        var attempts = 0
        while true {
            guard environment.gate.enter() else { throw environment.closedError }
            let rc = mdb_txn_renew(handle)
            if rc == 0 {
                isActive = true
                bounds = MapBounds(environment)
                return
            }
            environment.gate.leave()
            if rc == MDB_MAP_RESIZED && attempts < 3 {
                attempts += 1
                try environment.adoptForeignMapSize()
                continue
            }
            throw LMDBError(code: rc, context: "renewing a read transaction")
        }
    }

    // MARK: - Databases

    /// Opens (or with `.create`, creates) a named database; the handle becomes usable by other
    /// transactions once this one commits. Prefer `Environment.openDatabases`.
    /// The corresponding LMDB function is `mdb_dbi_open`.
    public func openDatabase(_ name: String?, flags: DatabaseFlags = []) throws(LMDBError) -> Database {
        var dbi: MDB_dbi = 0
        try check(mdb_dbi_open(handle, name, flags.rawValue, &dbi), "opening database \(name ?? "(main)")")
        return Database(handle: dbi, name: name, environmentID: environment.identity)
    }

    /// Deletes every entry of `database`, and with `delete` the database itself.
    /// The corresponding LMDB function is `mdb_drop`.
    ///
    /// With `delete`, LMDB closes the handle at once, for every transaction of the process, and
    /// not when this transaction commits: even if it then aborts (the database and its entries
    /// survive) the handle is gone and must be opened again with `Environment.openDatabases`.
    /// > mdb_drop: del: 0 to empty the DB, 1 to delete it from the environment and close the DB
    /// > handle.
    /// Only drop with `delete` when no other transaction will use the handle any more
    /// (> mdb_dbi_close: This call is not mutex protected.)
    public func drop(_ database: Database, delete: Bool) throws(LMDBError) {
        try check(mdb_drop(handle, try dbi(database), delete ? 1 : 0), "dropping database \(database.name ?? "?")")
    }

    /// B-tree statistics. The corresponding LMDB function is `mdb_stat`.
    public func statistics(_ database: Database) throws(LMDBError) -> DatabaseStatistics {
        var stat = MDB_stat()
        try check(mdb_stat(handle, try dbi(database), &stat), "mdb_stat \(database.name ?? "?")")
        return DatabaseStatistics(stat)
    }

    // MARK: - Reading

    /// Calls `body` with the value stored under an integer key, or nil when there is none.
    /// The buffer points into the map and must not escape. The corresponding LMDB function is `mdb_get`.
    @inlinable
    public func withValue<R>(forKey key: UInt64, in database: Database, _ body: (UnsafeRawBufferPointer?) throws -> R) throws -> R {
        try body(value(forKey: key, in: database))
    }

    /// Calls `body` with the value stored under a byte-string key, or nil when there is none.
    public func withValue<R>(forKey key: String, in database: Database, _ body: (UnsafeRawBufferPointer?) throws -> R) throws -> R {
        var data = MDB_val()
        let dbi = try dbi(database)
        let rc = withStringKey(key) { mdb_get(handle, dbi, &$0, &data) }
        if rc == MDB_NOTFOUND { return try body(nil) }
        try check(rc, "reading \(key) in \(database.name ?? "?")")
        return try body(try bounds.checked(data, database))
    }

    /// The value under an integer key, pointing into the map, or nil. The pointer stays valid
    /// while this snapshot is live: until the transaction ends, is reset, or (read-only) while
    /// later transactions see the same `snapshotID` and `Environment.mapGeneration` is unchanged.
    /// Prefer `withValue`, which scopes it.
    @inlinable
    public func unsafeValue(forKey key: UInt64, in database: Database) throws(LMDBError) -> UnsafeRawBufferPointer? {
        try value(forKey: key, in: database)
    }

    /// A copyable view of this transaction for reading values by integer key, for code that
    /// cannot borrow the transaction (objects that decode records and fetch what they point
    /// at). It is valid exactly while the transaction is active: using it after `reset`,
    /// `commit` or the end of the transaction is undefined behaviour, as is every pointer it
    /// returns (the same lifetime as `unsafeValue`).
    public var unsafeView: TransactionView { TransactionView(handle: handle, environmentID: environment.identity, bounds: bounds) }

    /// `database`'s handle, when this transaction's environment opened it.
    @inline(__always)
    func dbi(_ database: Database) throws(LMDBError) -> MDB_dbi {
        try database.handle(in: environment.identity)
    }

    /// The id of the snapshot a read transaction sees (the last committed write transaction's
    /// id), or of a write transaction. The corresponding LMDB function is `mdb_txn_id`.
    public var snapshotID: Int { mdb_txn_id(handle) }

    /// The value under an integer key, pointing into the map, or nil. Only for code that keeps
    /// the pointer strictly inside the transaction's lifetime (use `withValue` otherwise).
    @usableFromInline
    func value(forKey key: UInt64, in database: Database) throws(LMDBError) -> UnsafeRawBufferPointer? {
        var data = MDB_val()
        let dbi = try dbi(database)
        let rc = withIntegerKey(key) { mdb_get(handle, dbi, &$0, &data) }
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "reading key \(key) in \(database.name ?? "?")")
        return try bounds.checked(data, database)
    }

    // MARK: - Writing

    /// Stores `value` under an integer key. The corresponding LMDB function is `mdb_put`.
    public func put(_ value: UnsafeRawBufferPointer, forKey key: UInt64, in database: Database, flags: PutFlags = []) throws(LMDBError) {
        let dbi = try dbi(database)
        let rc = withIntegerKey(key) { keyVal in
            withBytesValue(value) { mdb_put(handle, dbi, &keyVal, &$0, flags.rawValue) }
        }
        try check(rc, "writing key \(key) in \(database.name ?? "?")")
    }

    /// Stores `value` under a byte-string key.
    public func put(_ value: UnsafeRawBufferPointer, forKey key: String, in database: Database, flags: PutFlags = []) throws(LMDBError) {
        let dbi = try dbi(database)
        let rc = withStringKey(key) { keyVal in
            withBytesValue(value) { mdb_put(handle, dbi, &keyVal, &$0, flags.rawValue) }
        }
        try check(rc, "writing \(key) in \(database.name ?? "?")")
    }

    /// Reserves `count` bytes under an integer key and lets `fill` write them in place, saving a
    /// copy (`MDB_RESERVE`). `fill` must write every byte; the buffer is only 2-byte aligned.
    public func reserve(count: Int, forKey key: UInt64, in database: Database, flags: PutFlags = [],
                        _ fill: (UnsafeMutableRawBufferPointer) throws -> Void) throws {
        var data = MDB_val(mv_size: count, mv_data: nil)
        let dbi = try dbi(database)
        let rc = withIntegerKey(key) { mdb_put(handle, dbi, &$0, &data, flags.rawValue | UInt32(MDB_RESERVE)) }
        try check(rc, "reserving key \(key) in \(database.name ?? "?")")
        try fill(UnsafeMutableRawBufferPointer(start: data.mv_data, count: count))
    }

    /// Deletes an integer key; returns false when it was not there.
    /// The corresponding LMDB function is `mdb_del`.
    @discardableResult
    public func delete(_ key: UInt64, in database: Database) throws(LMDBError) -> Bool {
        let dbi = try dbi(database)
        let rc = withIntegerKey(key) { mdb_del(handle, dbi, &$0, nil) }
        if rc == MDB_NOTFOUND { return false }
        try check(rc, "deleting key \(key) in \(database.name ?? "?")")
        return true
    }

    /// Deletes a byte-string key; returns false when it was not there.
    @discardableResult
    public func delete(_ key: String, in database: Database) throws(LMDBError) -> Bool {
        let dbi = try dbi(database)
        let rc = withStringKey(key) { mdb_del(handle, dbi, &$0, nil) }
        if rc == MDB_NOTFOUND { return false }
        try check(rc, "deleting \(key) in \(database.name ?? "?")")
        return true
    }

    // MARK: - Cursors

    /// Runs `body` with a cursor over `database`, closed when `body` returns.
    public func withCursor<R>(_ database: Database, _ body: (inout Cursor) throws -> R) throws -> R {
        var cursor = try Cursor(transaction: handle, dbi: try dbi(database), database: database, bounds: bounds)
        return try body(&cursor)
    }
}

/// A borrowed, copyable reading view of an active transaction (see `Transaction.unsafeView`).
public struct TransactionView {
    let handle: OpaquePointer
    let environmentID: Int
    let bounds: MapBounds

    /// The value under an integer key, pointing into the map, or nil. The corresponding LMDB
    /// function is `mdb_get`.
    public func unsafeValue(forKey key: UInt64, in database: Database) throws(LMDBError) -> UnsafeRawBufferPointer? {
        var data = MDB_val()
        let dbi = try database.handle(in: environmentID)
        let rc = withIntegerKey(key) { mdb_get(handle, dbi, &$0, &data) }
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "reading key \(key) in \(database.name ?? "?")")
        return try bounds.checked(data, database)
    }
}

/// Where a value LMDB hands out may lie. A value in the map must end within the pages the data
/// file holds (`me_last_pgno`): a damaged node whose size field was flipped would otherwise
/// point past the end of the file, and reading it would end the process with SIGBUS (the map
/// is larger than the file). Values outside the map (a write transaction's dirty pages, in
/// memory) are not checked. Computed when a transaction begins or renews: the newest
/// committed state's last page bounds every snapshot at or before it.
struct MapBounds {
    let start: UInt
    let mapEnd: UInt
    let fileEnd: UInt

    /// Call with the environment's gate entered (no remap under way).
    init(_ environment: Environment) {
        var info = MDB_envinfo()
        mdb_env_info(environment.handle, &info)
        start = environment.mapAddress.load(ordering: .relaxed)
        mapEnd = start == 0 ? 0 : start &+ UInt(info.me_mapsize)
        fileEnd = start &+ UInt(info.me_last_pgno + 1) &* UInt(environment.pageSize)
    }

    /// `data` as a buffer, or `MDB_CORRUPTED` naming the database when it runs past the file.
    @inline(__always)
    func checked(_ data: MDB_val, _ database: Database) throws(LMDBError) -> UnsafeRawBufferPointer {
        let address = UInt(bitPattern: data.mv_data)
        if address >= start && address < mapEnd {
            let (end, overflow) = address.addingReportingOverflow(UInt(data.mv_size))
            if overflow || end > fileEnd {
                throw LMDBError(code: MDB_CORRUPTED,
                                context: "a value of \(data.mv_size) bytes in \(database.name ?? "the main database") runs past the end of the data file (its page is damaged)")
            }
        }
        return UnsafeRawBufferPointer(data)
    }
}

extension Database {
    /// The handle, when the environment `identity` opened it; `foreignDatabase` otherwise.
    @inline(__always)
    func handle(in identity: Int) throws(LMDBError) -> MDB_dbi {
        guard environmentID == identity else {
            throw LMDBError(code: LMDBError.foreignDatabase.code, context: "using database \(name ?? "(main)")")
        }
        return handle
    }
}
