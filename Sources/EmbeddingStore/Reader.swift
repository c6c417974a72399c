import LMDB

/// What a lookup does with an id that is not in the table.
public enum MissingRows: Sendable {
    /// Fill its output row with zeros.
    case zeros
    /// Throw `StoreError.rowNotFound` naming the first missing id.
    case error
}

/// How a pooled lookup combines the rows of one bag.
public enum Pooling: Sendable {
    /// Σ wᵢ·xᵢ (wᵢ = 1 without weights).
    case sum
    /// Σ wᵢ·xᵢ / (number of ids in the bag); an empty bag gives zeros.
    case mean
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
    /// One decoded row for pooled lookups, grown to the widest table seen.
    private var scratch: [Float] = []

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

    /// Pooled lookup ("embedding bag"): bag `b` is `ids[offsets[b] ..< offsets[b + 1]]`, and
    /// `out[b]` (row `b` of `offsets.count − 1` rows of `table.dimension` floats) becomes the
    /// pooled rows of its ids, with optional per-id `weights` (parallel to `ids`). Rows of any
    /// codec mix; an empty bag gives zeros; missing ids follow `missing` (`.zeros` adds nothing).
    /// Returns how many ids were found.
    @discardableResult
    public func lookupPooled(_ table: Table, ids: UnsafeBufferPointer<UInt64>, offsets: UnsafeBufferPointer<Int>,
                             weights: UnsafeBufferPointer<Float>? = nil, pooling: Pooling = .sum,
                             into out: UnsafeMutableBufferPointer<Float>, missing: MissingRows = .zeros) throws -> Int {
        try table.requireLive()
        let d = table.dimension
        let bags = max(offsets.count - 1, 0)
        guard out.count >= bags * d else {
            throw StoreError.invalidArgument("output buffer holds \(out.count) floats; \(bags) bags × dimension \(d) need \(bags * d)")
        }
        if let weights, weights.count < ids.count {
            throw StoreError.invalidArgument("\(weights.count) weights for \(ids.count) ids")
        }
        for b in 0..<bags where offsets[b] < 0 || offsets[b] > offsets[b + 1] || offsets[b + 1] > ids.count {
            throw StoreError.invalidArgument("bag \(b) spans offsets \(offsets[b])..<\(offsets[b + 1]), outside 0...\(ids.count) or decreasing")
        }
        if scratch.count < d { scratch = [Float](repeating: 0, count: d) }
        var foundCount = 0
        try scratch.withUnsafeMutableBufferPointer { scratch in
            try withSnapshot(of: table) { decoder in
                let row = UnsafeMutableBufferPointer(rebasing: scratch[0..<d])
                for b in 0..<bags {
                    let pooled = UnsafeMutableBufferPointer(rebasing: out[b * d..<(b + 1) * d])
                    pooled.update(repeating: 0)
                    for position in offsets[b]..<offsets[b + 1] {
                        let id = ids[position]
                        guard try readRow(id, of: table, with: &decoder, into: row) else {
                            if missing == .error { throw StoreError.rowNotFound(table: table.name, id: id) }
                            continue
                        }
                        foundCount += 1
                        let weight = weights?[position] ?? 1
                        for j in 0..<d { pooled[j] += weight * row[j] }
                    }
                    let length = offsets[b + 1] - offsets[b]
                    if pooling == .mean && length > 0 {
                        let inverse = 1 / Float(length)
                        for j in 0..<d { pooled[j] *= inverse }
                    }
                }
            }
        }
        return foundCount
    }

    private func lookup(_ table: Table, ids: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableBufferPointer<Float>,
                        found: UnsafeMutableBufferPointer<Bool>?, missing: MissingRows) throws -> Int {
        try table.requireLive()
        let d = table.dimension
        guard out.count >= ids.count * d else {
            throw StoreError.invalidArgument("output buffer holds \(out.count) floats; \(ids.count) ids × dimension \(d) need \(ids.count * d)")
        }
        return try withSnapshot(of: table) { decoder in
            var foundCount = 0
            for i in 0..<ids.count {
                let id = ids[i]
                let row = UnsafeMutableBufferPointer(rebasing: out[i * d..<(i + 1) * d])
                let hit = try readRow(id, of: table, with: &decoder, into: row)
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

    /// Runs `body` inside one snapshot (the transaction renewed, then reset) with the table's
    /// decoder, which keeps what it resolved (PCA bases) from call to call.
    private func withSnapshot<R>(of table: Table, _ body: (inout RecordDecoder) throws -> R) throws -> R {
        var decoder = decoders.removeValue(forKey: table.id) ?? RecordDecoder(table: table)
        defer { decoders[table.id] = decoder }
        try translatingErrors { try txn.renew() }
        defer { txn.reset() }
        return try body(&decoder)
    }

    /// Decodes row `id` into `row`, straight from the map; false when the table has no such row.
    @inline(__always)
    private func readRow(_ id: UInt64, of table: Table, with decoder: inout RecordDecoder,
                         into row: UnsafeMutableBufferPointer<Float>) throws -> Bool {
        try txn.withValue(forKey: id, in: table.rows) { record -> Bool in
            guard let record else { return false }
            try decoder.decode(record, id: id, in: txn, into: row)
            return true
        }
    }
}
