import CLMDB

/// A named database inside an environment (an LMDB `MDB_dbi`).
///
/// Handles are plain numbers, valid only for the environment that opened them: another
/// environment may use the same number for another database. So a handle remembers its
/// environment, and a transaction of any other refuses it (`LMDBError.foreignDatabase`)
/// instead of reading or writing whatever that number names there.
public struct Database: Sendable, Hashable {
    public let handle: UInt32
    /// The name it was opened with (nil for the unnamed main database).
    public let name: String?
    /// `Environment.identity` of the environment that opened it.
    public let environmentID: Int

    init(handle: MDB_dbi, name: String?, environmentID: Int) {
        self.handle = handle
        self.name = name
        self.environmentID = environmentID
    }
}

/// Flags for opening a database. The corresponding LMDB argument is `mdb_dbi_open`'s `flags`.
public struct DatabaseFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Create the database if it does not exist (`MDB_CREATE`).
    public static let create = DatabaseFlags(rawValue: UInt32(MDB_CREATE))
    /// Keys are native-endian unsigned integers of equal size, compared numerically (`MDB_INTEGERKEY`).
    public static let integerKey = DatabaseFlags(rawValue: UInt32(MDB_INTEGERKEY))
}

/// Flags for `put`. The corresponding LMDB argument is `mdb_put`'s `flags`.
public struct PutFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Fail with `LMDBError.keyExists` if the key is present (`MDB_NOOVERWRITE`).
    public static let noOverwrite = PutFlags(rawValue: UInt32(MDB_NOOVERWRITE))
    /// The key sorts after every key in the database; a fast path for sorted bulk loads (`MDB_APPEND`).
    public static let append = PutFlags(rawValue: UInt32(MDB_APPEND))
}

/// B-tree statistics of one database. The corresponding LMDB function is `mdb_stat`.
public struct DatabaseStatistics: Sendable, Hashable {
    public let pageSize: Int
    public let depth: Int
    public let branchPages: Int
    public let leafPages: Int
    public let overflowPages: Int
    public let entries: Int

    init(_ stat: MDB_stat) {
        pageSize = Int(stat.ms_psize)
        depth = Int(stat.ms_depth)
        branchPages = stat.ms_branch_pages
        leafPages = stat.ms_leaf_pages
        overflowPages = stat.ms_overflow_pages
        entries = stat.ms_entries
    }
}
