import LMDB

/// What a lookup does with an id that is not in the table.
public enum MissingRows: Sendable {
    /// Fill its output row with zeros.
    case zeros
    /// Throw `StoreError.rowNotFound` naming the first missing id.
    case error
}

/// Batched lookups for one thread.
///
/// A reader owns one LMDB read transaction that it renews for each call and resets after it,
/// so each call sees one consistent snapshot and no snapshot is pinned between calls. It is
/// not `Sendable`: make one per thread (each holds an LMDB reader slot while it lives).
public final class Reader {
    let store: Store
    private var txn: Transaction
    private var decoders: [UInt32: RecordDecoder] = [:]

    init(store: Store) throws {
        self.store = store
        var txn = try store.environment.beginRead()
        txn.reset()
        self.txn = txn
    }

    /// Decodes the rows of `ids` into `out` (`ids.count × table.dimension` floats, row i at
    /// `i * dimension`), straight from the memory map. Missing ids follow `missing`.
    /// Returns how many ids were found.
    @discardableResult
    public func lookup(_ table: Table, ids: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableBufferPointer<Float>,
                       missing: MissingRows = .zeros) throws -> Int {
        try lookup(table, ids: ids, into: out, found: nil, missing: missing)
    }

    /// Like `lookup(_:ids:into:missing:)`, also writing `found[i]` for each id (missing rows are
    /// zero-filled).
    @discardableResult
    public func lookup(_ table: Table, ids: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableBufferPointer<Float>,
                       found: UnsafeMutableBufferPointer<Bool>) throws -> Int {
        guard found.count >= ids.count else {
            throw StoreError.invalidArgument("found mask has \(found.count) entries for \(ids.count) ids")
        }
        return try lookup(table, ids: ids, into: out, found: found, missing: .zeros)
    }

    /// Convenience: the rows of `ids` as a new array of `ids.count × dimension` floats.
    public func lookup(_ table: Table, ids: [UInt64], missing: MissingRows = .zeros) throws -> [Float] {
        var out = [Float](repeating: 0, count: ids.count * table.dimension)
        try ids.withUnsafeBufferPointer { ids in
            try out.withUnsafeMutableBufferPointer { out in _ = try lookup(table, ids: ids, into: out, missing: missing) }
        }
        return out
    }

    private func lookup(_ table: Table, ids: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableBufferPointer<Float>,
                        found: UnsafeMutableBufferPointer<Bool>?, missing: MissingRows) throws -> Int {
        try table.requireLive()
        let d = table.dimension
        guard out.count >= ids.count * d else {
            throw StoreError.invalidArgument("output buffer holds \(out.count) floats; \(ids.count) ids × dimension \(d) need \(ids.count * d)")
        }
        var decoder = decoders.removeValue(forKey: table.id) ?? RecordDecoder(table: table)
        defer { decoders[table.id] = decoder }
        try translatingErrors { try txn.renew() }
        defer { txn.reset() }
        var foundCount = 0
        for i in 0..<ids.count {
            let id = ids[i]
            let row = UnsafeMutableBufferPointer(rebasing: out[i * d..<(i + 1) * d])
            let hit = try txn.withValue(forKey: id, in: table.rows) { record -> Bool in
                guard let record else { return false }
                try decoder.decode(record, id: id, in: txn, into: row)
                return true
            }
            if hit {
                foundCount += 1
            } else {
                if missing == .error { throw StoreError.rowNotFound(table: table.name, id: id) }
                row.update(repeating: 0)
            }
            found?[i] = hit
        }
        return foundCount
    }
}
