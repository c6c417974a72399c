import CLMDB

/// One key/value pair seen by a cursor; both buffers point into the map (valid only inside the
/// transaction, and only until the cursor moves or the transaction writes).
public struct CursorEntry {
    public let key: UnsafeRawBufferPointer
    public let value: UnsafeRawBufferPointer
    /// The key as an `MDB_INTEGERKEY` integer, or nil when it is not 8 bytes.
    public var integerKey: UInt64? {
        key.count == 8 ? key.loadUnaligned(as: UInt64.self) : nil
    }
    /// The key as UTF-8 text.
    public var stringKey: String { String(decoding: key, as: UTF8.self) }
}

/// A position in a database, for walking its keys in order. Closed when dropped.
/// The corresponding LMDB functions are `mdb_cursor_open`, `mdb_cursor_get`, `mdb_cursor_close`.
public struct Cursor: ~Copyable {
    let handle: OpaquePointer
    let database: Database
    let bounds: MapBounds

    init(transaction: OpaquePointer, dbi: MDB_dbi, database: Database, bounds: MapBounds) throws(LMDBError) {
        var cursor: OpaquePointer?
        try check(mdb_cursor_open(transaction, dbi, &cursor), "opening a cursor on \(database.name ?? "?")")
        self.handle = cursor!
        self.database = database
        self.bounds = bounds
    }

    deinit { mdb_cursor_close(handle) }

    private func get(_ op: MDB_cursor_op, key: inout MDB_val) throws(LMDBError) -> CursorEntry? {
        var data = MDB_val()
        let rc = mdb_cursor_get(handle, &key, &data, op)
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "moving a cursor on \(database.name ?? "?")")
        // Keys live in the node itself (at most 511 bytes, on the page); values may not.
        return CursorEntry(key: UnsafeRawBufferPointer(key), value: try bounds.checked(data, database))
    }

    /// The first entry (`MDB_FIRST`), or nil when the database is empty.
    public func first() throws(LMDBError) -> CursorEntry? {
        var key = MDB_val()
        return try get(MDB_FIRST, key: &key)
    }

    /// The last entry (`MDB_LAST`).
    public func last() throws(LMDBError) -> CursorEntry? {
        var key = MDB_val()
        return try get(MDB_LAST, key: &key)
    }

    /// The next entry (`MDB_NEXT`), or nil at the end.
    public func next() throws(LMDBError) -> CursorEntry? {
        var key = MDB_val()
        return try get(MDB_NEXT, key: &key)
    }

    /// The first entry whose integer key is ≥ `key` (`MDB_SET_RANGE`).
    public func seek(atLeast key: UInt64) throws(LMDBError) -> CursorEntry? {
        try withIntegerKey(key) { (keyVal) throws(LMDBError) in try get(MDB_SET_RANGE, key: &keyVal) }
    }

    /// The first entry whose byte-string key is ≥ `key` (`MDB_SET_RANGE`).
    public func seek(atLeast key: String) throws(LMDBError) -> CursorEntry? {
        try withStringKey(key) { (keyVal) throws(LMDBError) in try get(MDB_SET_RANGE, key: &keyVal) }
    }
}
