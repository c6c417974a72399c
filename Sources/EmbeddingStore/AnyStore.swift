import Foundation

/// A store or a sharded store, for the jobs that read either the same way: a rollout's
/// variants, `diff` and `evaluate`.
public enum AnyStore: Sendable {
    case single(Store)
    case sharded(ShardedStore)

    /// Opens the sharded store (a directory with `shards.json`) or the store at `path`, read-only.
    public static func open(_ path: String) throws -> AnyStore {
        var options = Store.Options()
        options.readOnly = true
        return ShardManifest.exists(in: path) ? .sharded(try ShardedStore(path: path, options: options))
                                              : .single(try Store(path: path, options: options))
    }

    /// Table names, in byte order.
    public var tableNames: [String] {
        get throws {
            switch self {
            case .single(let store): return try store.tableNames().sorted()
            case .sharded(let store): return store.tableNames
            }
        }
    }

    public func dimension(of table: String) throws -> Int {
        switch self {
        case .single(let store): return try store.table(table).dimension
        case .sharded(let store): return try store.table(table).dimension
        }
    }

    /// Table `name` read whole: its live rows' codec forms, its rows decoded, its bytes.
    func rows(of name: String) throws -> TableRows {
        switch self {
        case .single(let store): return try store.rows(of: store.table(name))
        case .sharded(let store): return try store.rows(of: store.table(name))
        }
    }
}

/// A table of a store or of a sharded store, as the whole-table jobs (`evaluate`, `diff`) read it.
struct TableRows {
    let name: String
    let dimension: Int
    /// Every live row's id (ascending), codec form and record bytes.
    let census: () throws -> LiveRowCodecs
    /// A decoder for one thread: looks ids up (each must be there) into rows.
    let makeDecoder: () throws -> (UnsafeBufferPointer<UInt64>, UnsafeMutableBufferPointer<Float>) throws -> Void
    /// Where its bytes go: one entry per store (a sharded store's shards holding the table).
    let storage: () throws -> [TableStorage]

    /// Rows of `ids` decoded into `out` (`ids.count × dimension` floats), 16,384 ids a lookup;
    /// `progress` gets the ids done.
    func decode(_ ids: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableBufferPointer<Float>,
                progress: (Int) -> Void) throws {
        let decoder = try makeDecoder()
        let d = dimension, block = 16_384
        for first in stride(from: 0, to: ids.count, by: block) {
            let n = min(block, ids.count - first)
            try decoder(UnsafeBufferPointer(rebasing: ids[first..<first + n]),
                        UnsafeMutableBufferPointer(rebasing: out[first * d..<(first + n) * d]))
            progress(first + n)
        }
    }
}

extension Store {
    func rows(of table: Table) throws -> TableRows {
        let table = try resolve(table)
        return TableRows(
            name: table.name, dimension: table.dimension,
            census: { try self.liveRowCodecs(table) },
            makeDecoder: {
                let reader = try self.makeReader()
                return { ids, out in try reader.lookup(table, ids: ids, into: out, missing: .error) }
            },
            storage: { [try self.storageStatistics(table)] })
    }
}

extension ShardedStore {
    func rows(of table: ShardedTable) throws -> TableRows {
        TableRows(
            name: table.name, dimension: table.dimension,
            census: { try self.liveRowCodecs(table) },
            makeDecoder: {
                let reader = try self.makeReader()
                return { ids, out in try reader.lookup(table, ids: ids, into: out, missing: .error) }
            },
            storage: { try zip(self.shards, table.handles).compactMap { shard, handle in try handle.map { try shard.storageStatistics($0) } } })
    }

    /// Every live row of `table` in every shard (a shard's stale rows, left by a grow, are not
    /// live): ids ascending. Forms of one name in several shards are one form.
    public func liveRowCodecs(_ table: ShardedTable) throws -> LiveRowCodecs {
        var merged: [(id: UInt64, form: Int, bytes: UInt32)] = []
        var forms: [LiveRowCodecs.Form] = []
        var formIndex: [String: Int] = [:]
        for (i, (shard, handle)) in zip(shards, table.handles).enumerated() {
            guard let handle else { continue }
            let census = try shard.liveRowCodecs(handle)
            let mapped = census.forms.map { form -> Int in
                if let index = formIndex[form.name] { return index }
                forms.append(LiveRowCodecs.Form(name: form.name, tag: form.tag, parameterID: nil))
                formIndex[form.name] = forms.count - 1
                return forms.count - 1
            }
            for (row, id) in census.ids.enumerated() where ShardRule.shard(of: id, shardCount: shardCount) == i {
                merged.append((id, mapped[Int(census.form[row])], census.recordBytes[row]))
            }
        }
        merged.sort { $0.id < $1.id }
        return LiveRowCodecs(ids: merged.map(\.id), form: merged.map { UInt16($0.form) }, recordBytes: merged.map(\.bytes), forms: forms)
    }
}
