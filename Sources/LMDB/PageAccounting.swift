import CLMDB

/// What `mdb_env_info` reports about an environment: its map and its last committed state.
public struct EnvironmentInfo: Sendable, Hashable {
    /// Size of the memory map in bytes (`me_mapsize`).
    public let mapSize: Int
    /// Number of the highest page in use (`me_last_pgno`); pages 0 and 1 are the meta pages.
    public let lastPage: Int
    /// Id of the last committed write transaction (`me_last_txnid`).
    public let lastTransaction: Int
    /// Reader slots in the lock table, and how many are in use.
    public let maxReaders: Int
    public let readersUsed: Int

    /// Pages in use: the last page + 1, as `mdb_stat -e` prints "Number of pages used". The data
    /// file may be longer (LMDB grows it ahead of use), never shorter.
    public var pagesInUse: Int { lastPage + 1 }
}

/// LMDB's free list (database 0, `FREE_DBI`): its own B-tree pages, and the pages it lists as
/// free for reuse.
public struct FreeListStatistics: Sendable, Hashable {
    /// The B-tree of the free list itself (`mdb_stat` on database 0).
    public let database: DatabaseStatistics
    /// Pages listed as free, counted as `mdb_stat -f` counts them: every entry's value is an ID
    /// list whose first `size_t` is the number of page numbers that follow.
    public let freePages: Int
}

extension Transaction {
    /// The environment's map size, last page and last transaction (`mdb_env_info`).
    ///
    /// They describe the newest committed transaction, which is this transaction's snapshot only
    /// when `info.lastTransaction == snapshotID` (a writer may have committed since a read
    /// transaction began; a write transaction sees the state before its own changes). Read while
    /// this transaction is active, so the map cannot be remapped under the call.
    public func environmentInfo() -> EnvironmentInfo {
        var info = MDB_envinfo()
        mdb_env_info(environment.handle, &info)
        return EnvironmentInfo(mapSize: info.me_mapsize, lastPage: info.me_last_pgno, lastTransaction: info.me_last_txnid,
                               maxReaders: Int(info.me_maxreaders), readersUsed: Int(info.me_numreaders))
    }

    /// B-tree statistics of the unnamed main database (database 1), which holds one record per
    /// named database. The corresponding LMDB function is `mdb_stat`.
    public func mainDatabaseStatistics() throws(LMDBError) -> DatabaseStatistics {
        var stat = MDB_stat()
        try check(mdb_stat(handle, 1, &stat), "mdb_stat (main database)")
        return DatabaseStatistics(stat)
    }

    /// The free list as this transaction sees it: the pages of its B-tree, and the free pages its
    /// entries list. Walks every entry (as `mdb_stat -f` does).
    public func freeListStatistics() throws(LMDBError) -> FreeListStatistics {
        var stat = MDB_stat()
        try check(mdb_stat(handle, 0, &stat), "mdb_stat (free list)")
        var cursor: OpaquePointer?
        try check(mdb_cursor_open(handle, 0, &cursor), "opening a cursor on the free list")
        defer { mdb_cursor_close(cursor) }
        var pages = 0
        var key = MDB_val()
        var data = MDB_val()
        var op = MDB_FIRST
        while true {
            let rc = mdb_cursor_get(cursor, &key, &data, op)
            if rc == MDB_NOTFOUND { break }
            try check(rc, "walking the free list")
            op = MDB_NEXT
            // > An IDL is an ID List, a sorted array of IDs. The first element of the array is a
            // > counter for how many actual page-numbers are in the list.
            guard data.mv_size >= MemoryLayout<Int>.size, let bytes = data.mv_data else {
                throw LMDBError(code: MDB_CORRUPTED, context: "a free list entry of \(data.mv_size) bytes")
            }
            pages += UnsafeRawPointer(bytes).loadUnaligned(as: Int.self)
        }
        return FreeListStatistics(database: DatabaseStatistics(stat), freePages: pages)
    }
}

extension DatabaseStatistics {
    /// Every page the database owns: branch, leaf and overflow.
    public var pages: Int { branchPages + leafPages + overflowPages }
}
