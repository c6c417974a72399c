import EmbeddingCodecs
import Foundation
import LMDB

/// Everything that can go wrong in the store, each naming what is wrong and where.
public enum StoreError: Error, Sendable, CustomStringConvertible {
    /// The directory holds something that is not an embstore store.
    case notAStore(path: String, reason: String)
    /// The store was written by a newer (or unknown) format version.
    case unsupportedFormatVersion(path: String, found: UInt32, supported: UInt32)
    /// A store-wide record (not one table's) is damaged.
    case corruptStore(path: String, reason: String)
    case tableNotFound(String)
    case tableExists(String)
    case invalidTableName(String, reason: String)
    case dimensionMismatch(table: String, expected: Int, actual: Int)
    /// A record that is truncated, too long, or has an unknown tag.
    case corruptRecord(table: String, id: UInt64, reason: String)
    /// The table's metadata (schema, basis, bucket rows) is damaged.
    case corruptMetadata(table: String, reason: String)
    /// An id asked for with `MissingRows.error` is absent.
    case rowNotFound(table: String, id: UInt64)
    /// A row could not be encoded with the codec asked for.
    case encoding(table: String, id: UInt64, codec: String, underlying: CodecError)
    /// A row to be written has NaN or infinity.
    case nonFiniteValue(table: String, row: Int, id: UInt64, column: Int, value: Float)
    /// The codec needs parameters the table does not have yet.
    case missingCodecParameters(table: String, reason: String)
    case invalidArgument(String)
    case readOnly(path: String)
    /// A write reached a generation of the store that a swap (`compact --in-place`, an installed
    /// repack) has replaced: nothing of it was kept. Retryable: `Store.write` and the other
    /// one-transaction writes retry by themselves in the new generation; a load must run again.
    case generationRetired(path: String, generation: String)
    /// `installGeneration(at:expecting:)` was given a version the store has moved on from.
    case storeChangedSinceStaging(path: String, staged: StoreVersion, now: StoreVersion)
    /// A file operation on the store's directory failed (`code` is the errno).
    case fileSystem(path: String, operation: String, code: Int32)
    case lmdb(LMDBError)

    public var description: String {
        switch self {
        case .notAStore(let path, let reason):
            "\(path) is not an embstore store: \(reason)"
        case .corruptStore(let path, let reason):
            "the store at \(path) is damaged: \(reason)"
        case .unsupportedFormatVersion(let path, let found, let supported):
            "\(path) has store format version \(found), but this embstore reads versions 1...\(supported); "
                + (found > supported ? "open it with a newer embstore" : "the header is damaged")
        case .tableNotFound(let name): "no table named '\(name)'"
        case .tableExists(let name): "a table named '\(name)' already exists"
        case .invalidTableName(let name, let reason): "invalid table name '\(name)': \(reason)"
        case .dimensionMismatch(let table, let expected, let actual):
            "table '\(table)' has dimension \(expected), but the rows given have \(actual) values"
        case .corruptRecord(let table, let id, let reason):
            "corrupt record for id \(id) in table '\(table)': \(reason)"
        case .corruptMetadata(let table, let reason):
            "corrupt metadata in table '\(table)': \(reason)"
        case .rowNotFound(let table, let id): "id \(id) is not in table '\(table)'"
        case .encoding(let table, let id, let codec, let underlying):
            "cannot encode id \(id) of table '\(table)' as \(codec): \(underlying)"
        case .nonFiniteValue(let table, let row, let id, let column, let value):
            "row \(row) (id \(id)) for table '\(table)' has the non-finite value \(value) at column \(column); nothing was written"
        case .missingCodecParameters(let table, let reason): "table '\(table)': \(reason)"
        case .invalidArgument(let text): text
        case .readOnly(let path): "the store at \(path) is open read-only"
        case .generationRetired(let path, let generation):
            "the store at \(path) was swapped to a new generation (compact or repack --in-place) while this write "
                + "was going to \(generation); nothing of it was kept: run it again"
        case .storeChangedSinceStaging(let path, let staged, let now):
            "the store at \(path) changed since the environment to install was staged (\(staged); now \(now)): "
                + "it would lose what was written meanwhile; stage it again"
        case .fileSystem(let path, let operation, let code):
            "\(operation) \(path): \(String(cString: strerror(code)))"
        case .lmdb(let error): "LMDB: \(error)"
        }
    }
}
