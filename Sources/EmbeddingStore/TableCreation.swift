import LMDB

// A load that creates its table makes it visible in the commit of its last rows, not before:
// until then the table's schema record is `creating/<name>`, which readers do not look at, so
// a load that fails or is killed part-way leaves no table (issue 9 found an empty one in 12 of
// 24 SIGKILLs of a first load). FORMAT.md, "`meta` records".

extension StoreFormat {
    /// `creating/<name>`: the schema record of a table a load is creating, moved to
    /// `table/<name>` in the commit of its last rows. Readers ignore it.
    static let creatingKeyPrefix = "creating/"
}

extension Store {
    /// The table a load of `name` writes into (`Generation.tableForLoad` in the current
    /// generation, followed across swaps). Returns it and whether this call made it.
    func tableForLoad(_ name: String, dimension: Int) throws -> (table: Table, created: Bool) {
        try checkNewTable(name, dimension: dimension)
        return try followingSwaps { try generation.tableForLoad(name, dimension: dimension) }
    }

    /// After a load that created `table` failed: `Generation.dropIfStillBeingCreated` in the
    /// generation the table was made in, when that is still the store's (a swap leaves tables
    /// being created out of the new generation).
    func dropIfStillBeingCreated(_ table: Table) throws {
        let generation = generation
        guard table.isBeingCreated, table.generationID == generation.id else { return }
        try generation.dropIfStillBeingCreated(table)
    }

    static func tooManyTables(_ name: String, tables: Int, maxTables: Int) -> StoreError {
        .invalidArgument("cannot create table '\(name)': the store holds \(tables) tables, the most it is opened for (Store.Options.maxTables = \(maxTables)); drop one, or open the store with a larger maxTables")
    }
}

extension Generation {
    /// The table a load of `name` writes into: the existing table; when there is none, the table
    /// another load is creating (under `creating/<name>`, with this dimension); otherwise a new
    /// one, committed under `creating/<name>` with its databases. Returns it and whether this call
    /// made it. A table being created becomes visible in the load's last commit
    /// (`publishIfBeingCreated`); two loads creating one table write into the same one and both
    /// succeed. A marker of another dimension, or with rows in its delta (a per-key load's first
    /// transactions), is replaced by a new table: the load it belongs to, if it still runs, then
    /// fails with an error that says to run it again.
    func tableForLoad(_ name: String, dimension: Int) throws -> (table: Table, created: Bool) {
        let made = try translatingErrors {
            try environment.write { txn -> (Table, Bool)? in
                try requireCurrent(txn)
                if try txn.withValue(forKey: StoreFormat.tableKeyPrefix + name, in: meta, { $0 != nil }) { return nil }
                let markerKey = StoreFormat.creatingKeyPrefix + name
                if let marker = try schema(at: markerKey, table: name, in: txn), marker.dimension == UInt32(dimension) {
                    let table = try openTableDatabases(name, schema: marker, beingCreated: true, in: txn)
                    // Rows in its delta are a per-key load's first transactions, of a load that
                    // was killed (or still runs): taken over, they would appear with this load's
                    // rows. Start afresh instead (that load, if it runs, fails and says to run it
                    // again). Segment loads leave nothing visible before their last commit.
                    if try txn.statistics(table.rows).entries == 0 { return (table, false) }
                }
                let table = try makeTable(name, dimension: dimension, schemaKey: markerKey, in: txn)
                return (table, true)
            }
        }
        if let made { return made }
        let existing = try table(named: name)
        guard existing.dimension == dimension else {
            throw StoreError.dimensionMismatch(table: name, expected: existing.dimension, actual: dimension)
        }
        return (existing, false)
    }

    /// In a write transaction: a new table with the next table id, its databases, and its
    /// schema under `schemaKey` (`table/<name>`, or `creating/<name>` for a load's).
    func makeTable(_ name: String, dimension: Int, schemaKey: String, in txn: borrowing Transaction) throws -> Table {
        // Each table takes up to five of LMDB's named databases, sized when the environment
        // opened: one more would be created here, then fail to open elsewhere.
        let tables = try tableNames(in: txn).count
        guard tables < maxTables else { throw Store.tooManyTables(name, tables: tables, maxTables: maxTables) }
        let tableID = try withMetaRecord(StoreFormat.nextTableIDKey, in: txn) { bytes -> UInt32 in
            guard let bytes, bytes.count == 4 else {
                throw StoreError.corruptStore(path: directory, reason: "'meta' record 'next_table_id' is missing or not 4 bytes")
            }
            return UInt32(littleEndian: bytes.loadUnaligned(as: UInt32.self))
        }
        let schema = TableSchema(tableID: tableID, dimension: UInt32(dimension))
        let table = try openTableDatabases(name, schema: schema, beingCreated: schemaKey.hasPrefix(StoreFormat.creatingKeyPrefix), in: txn)
        try putMetaRecord(schema.encode(), key: schemaKey, in: txn)
        try putMetaRecord(withUnsafeBytes(of: (tableID + 1).littleEndian) { Array($0) }, key: StoreFormat.nextTableIDKey, in: txn)
        return table
    }

    /// Opens (creating them when missing) the four databases of table `schema.tableID` in a
    /// write transaction, which must commit for the handles to stay open.
    func openTableDatabases(_ name: String, schema: TableSchema, beingCreated: Bool, in txn: borrowing Transaction) throws -> Table {
        let databases = try [StoreFormat.rowsDatabase, StoreFormat.bucketsDatabase, StoreFormat.basesDatabase, Store.segmentsDatabase].map {
            try txn.openDatabase($0(schema.tableID), flags: [.create, .integerKey])
        }
        return Table(name: name, schema: schema, generationID: id, rows: databases[0], buckets: databases[1], bases: databases[2],
                     segments: databases[3], sealed: sealed, beingCreated: beingCreated)
    }

    /// In the commit of a load's last rows: moves the schema of a table the load is creating from
    /// `creating/<name>` to `table/<name>`, making the table and its rows visible together.
    /// Nothing to do when another load of it did so first. Throws, so that the commit fails and
    /// the load leaves nothing visible, when the table was created otherwise meanwhile.
    func publishIfBeingCreated(_ table: Table, in txn: borrowing Transaction) throws {
        guard table.isBeingCreated else { return }
        let (key, schema) = try schemaRecord(of: table, in: txn)
        guard key.hasPrefix(StoreFormat.creatingKeyPrefix) else { return }
        let tables = try tableNames(in: txn).count
        guard tables < maxTables else { throw Store.tooManyTables(table.name, tables: tables, maxTables: maxTables) }
        try putMetaRecord(schema.encode(), key: StoreFormat.tableKeyPrefix + table.name, in: txn)
        _ = try txn.delete(key, in: meta)
    }

    /// After a load that created `table` failed: removes the table (its marker and databases),
    /// unless another load of it made it visible meanwhile or took its name over.
    func dropIfStillBeingCreated(_ table: Table) throws {
        guard table.isBeingCreated else { return }
        try translatingErrors {
            try environment.withExclusiveAccess {
                let dropped = try environment.write { txn -> Bool in
                    try requireCurrent(txn)
                    guard let (key, _) = try? schemaRecord(of: table, in: txn), key.hasPrefix(StoreFormat.creatingKeyPrefix) else { return false }
                    for database in [table.rows, table.buckets, table.bases] + (table.segments.map { [$0] } ?? []) {
                        try txn.drop(database, delete: true)
                    }
                    _ = try txn.delete(key, in: meta)
                    try deleteLoadNotes(table.id, in: txn)
                    return true
                }
                if dropped { table.markDropped() }
            }
        }
    }

    /// The `meta` key that holds `table`'s schema in this transaction (`table/<name>`, or
    /// `creating/<name>` while a load creates it) and the schema. Throws `tableNotFound` when
    /// neither holds this table's id (it was dropped, or its name given to another table), and
    /// when the handle is another generation's (a load that created a table across a swap).
    func schemaRecord(of table: Table, in txn: borrowing Transaction) throws -> (key: String, schema: TableSchema) {
        if table.generationID == id {
            let keys = [StoreFormat.tableKeyPrefix + table.name] + (table.isBeingCreated ? [StoreFormat.creatingKeyPrefix + table.name] : [])
            for key in keys {
                if let schema = try schema(at: key, table: table.name, in: txn), schema.tableID == table.id { return (key, schema) }
            }
        }
        if table.isBeingCreated {
            if table.generationID != id { throw creationCutBySwap(table) }
            throw StoreError.invalidArgument("table '\(table.name)' was created by another load, or dropped, while this load created it; nothing of this load was written: run it again")
        }
        throw StoreError.tableNotFound(table.name)
    }

    /// The error for a load whose table, still being created, belongs to an older generation:
    /// the swap left the table out of this one, and with it everything the load had written.
    /// Not retryable in the new generation (`StoreError.isSwapRetryable`): the load must start again.
    func creationCutBySwap(_ table: Table) -> StoreError {
        .invalidArgument("the store at \(root) was swapped to a new generation (compact or repack --in-place) while this load was creating table '\(table.name)'; the new generation leaves the table out and nothing of this load was kept: run it again")
    }

    /// The schema record under `key` of `meta`, nil when there is none.
    private func schema(at key: String, table name: String, in txn: borrowing Transaction) throws -> TableSchema? {
        try withMetaRecord(key, in: txn, table: name) { bytes in try bytes.map { try TableSchema.decode($0, table: name) } }
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
}
