import LMDB
import Synchronization

/// A handle on one table of an open store: its name, dimension and LMDB databases.
///
/// Handles are immutable and `Sendable`; get one from `Store.table(_:)` or `createTable`.
/// A handle of a dropped table fails with `tableNotFound` when used. A handle stays usable
/// after its store was swapped to a new generation: the store and its readers use the table of
/// the same name there.
public final class Table: Sendable, CustomStringConvertible {
    /// The table's name.
    public let name: String
    /// Values per row.
    public let dimension: Int
    /// The id that names its databases (`t<id>/...`); never reused within a store.
    public let id: UInt32
    /// The generation (`Generation.id`) whose environment opened its databases.
    let generationID: Int
    let rows: Database
    let buckets: Database
    let bases: Database
    /// `t<T>/segments`; nil only for a table of a version-1 store opened read-only.
    let segments: Database?
    /// Whether its records end with a seal (`RecordSeal`, format version 5 on).
    let sealed: Bool
    /// True for the handle of a load creating the table: its schema may still be the
    /// `creating/<name>` record that readers do not see (`Generation.tableForLoad`).
    let isBeingCreated: Bool
    private let dropped = Atomic<Bool>(false)

    init(name: String, schema: TableSchema, generationID: Int, rows: Database, buckets: Database, bases: Database, segments: Database?,
         sealed: Bool, beingCreated: Bool = false) {
        self.name = name
        self.dimension = Int(schema.dimension)
        self.id = schema.tableID
        self.generationID = generationID
        self.rows = rows
        self.buckets = buckets
        self.bases = bases
        self.segments = segments
        self.sealed = sealed
        self.isBeingCreated = beingCreated
    }

    /// True once `Store.dropTable` removed this table in this process.
    public var isDropped: Bool { dropped.load(ordering: .acquiring) }

    func markDropped() { dropped.store(true, ordering: .releasing) }

    /// Throws when the handle belongs to a dropped table: LMDB may have handed its database
    /// handles to another table since.
    @inline(__always)
    func requireLive() throws(StoreError) {
        if isDropped { throw .tableNotFound(name) }
    }

    public var description: String { "table '\(name)' (d=\(dimension))" }
}
