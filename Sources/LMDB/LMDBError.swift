import CLMDB
#if canImport(Glibc)
import Glibc
#endif

/// An error returned by LMDB, or by this wrapper around it.
///
/// Unknown codes are preserved in `code`; the description is LMDB's own text (`mdb_strerror`)
/// followed by a hint for what to do about it where there is one.
public struct LMDBError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The LMDB (negative) or errno (positive) code.
    public let code: Int32
    /// What the wrapper was doing when LMDB failed, e.g. `"mdb_env_open /tmp/x"`.
    public let context: String

    public init(code: Int32, context: String = "") {
        self.code = code
        self.context = context
    }

    public static func == (lhs: LMDBError, rhs: LMDBError) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    public static let keyExists = LMDBError(code: MDB_KEYEXIST)
    public static let notFound = LMDBError(code: MDB_NOTFOUND)
    public static let corrupted = LMDBError(code: MDB_CORRUPTED)
    public static let panic = LMDBError(code: MDB_PANIC)
    public static let versionMismatch = LMDBError(code: MDB_VERSION_MISMATCH)
    public static let invalid = LMDBError(code: MDB_INVALID)
    public static let mapFull = LMDBError(code: MDB_MAP_FULL)
    public static let databasesFull = LMDBError(code: MDB_DBS_FULL)
    public static let readersFull = LMDBError(code: MDB_READERS_FULL)
    public static let transactionFull = LMDBError(code: MDB_TXN_FULL)
    public static let mapResized = LMDBError(code: MDB_MAP_RESIZED)
    public static let incompatible = LMDBError(code: MDB_INCOMPATIBLE)
    public static let badReaderSlot = LMDBError(code: MDB_BAD_RSLOT)
    public static let badTransaction = LMDBError(code: MDB_BAD_TXN)
    public static let badValueSize = LMDBError(code: MDB_BAD_VALSIZE)
    public static let badDatabase = LMDBError(code: MDB_BAD_DBI)
    /// The wrapper could not grow the map because read transactions of this process stayed open.
    public static let resizeBlocked = LMDBError(code: -1_000_001)
    /// A database handle used in a transaction of another environment than the one that opened it.
    public static let foreignDatabase = LMDBError(code: -1_000_002)

    /// True when LMDB found the file damaged (`MDB_CORRUPTED`, `MDB_PAGE_NOTFOUND`).
    public var meansDamagedFile: Bool { code == MDB_CORRUPTED || code == MDB_PAGE_NOTFOUND }

    public var description: String {
        let text: String
        if code == LMDBError.resizeBlocked.code {
            text = "the map is full and could not be grown: read transactions of this process stayed open"
        } else if code == LMDBError.foreignDatabase.code {
            text = "the database handle belongs to another environment"
        } else {
            text = String(cString: mdb_strerror(code))
        }
        var result = context.isEmpty ? text : "\(context): \(text)"
        if let hint { result += " (\(hint))" }
        return result
    }

    /// What a caller can do about the error, where LMDB's text alone does not say.
    public var hint: String? {
        switch code {
        case MDB_MAP_FULL: return "the environment needs a larger map size"
        case MDB_READERS_FULL: return "too many open read transactions; close readers or open the environment with more maxReaders"
        case MDB_DBS_FULL: return "too many named databases; open the environment with a larger maxDatabases"
        case MDB_VERSION_MISMATCH, MDB_INVALID: return "the file is not an LMDB environment of a version this library reads"
        case MDB_CORRUPTED, MDB_PAGE_NOTFOUND: return "the file is damaged; restore it from a copy"
        case MDB_BAD_VALSIZE: return "key is empty or longer than the maximum key size (511 bytes)"
        case MDB_INCOMPATIBLE: return "the database was created with different flags"
        case EACCES: return "the environment or transaction is read-only, or the file is not writable"
        case ENOENT: return "the directory does not exist"
        case MDB_BAD_TXN: return "the transaction failed earlier and must be aborted"
        case EDEADLK: return "LMDB's writer lock is not reentrant: use the write transaction this thread already has open"
        case -1_000_001: return "finish open lookups on this thread before writing, or open with a larger map size"
        case -1_000_002: return "open the database again in this environment"
        default: return nil
        }
    }
}

/// Throws an `LMDBError` for a non-zero return code.
@inline(__always)
func check(_ rc: Int32, _ context: @autoclosure () -> String) throws(LMDBError) {
    if rc != 0 { throw LMDBError(code: rc, context: context()) }
}
