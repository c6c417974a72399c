import ArgumentParser
import EmbeddingStore
import Foundation
import NPY

// get, export, info and verify on a sharded store (a directory with shards.json, FORMAT.md
// "Sharded stores"): the same output as on a store, through ShardedStore.

func openShardedReadOnly(_ path: String) throws -> ShardedStore {
    var options = Store.Options()
    options.readOnly = true
    return try ShardedStore(path: path, options: options)
}

extension Get {
    func runSharded() throws {
        let store = try openShardedReadOnly(self.store)
        let handle = try store.table(table)
        let reader = try store.makeReader()
        try printRows(dimension: handle.dimension, lookup: { _ = try reader.lookup(handle, ids: $0, into: $1, found: $2) }) { id in
            let shard = ShardRule.shard(of: id, shardCount: store.shardCount)
            if why, let table = handle.handles[shard], let provenance = try store.shards[shard].provenance(table, id: id) {
                print("  codec " + provenance.reason + " (shard \(shard))")
            }
        }
    }
}

extension Export {
    func runSharded() throws {
        guard format == .float32 else { throw InputError("--format \(format.rawValue) is for a store; export a sharded store's shards one by one") }
        let store = try openShardedReadOnly(self.store)
        let handle = try store.table(table)
        let (ids, values) = try store.export(handle)
        try values.withUnsafeBufferPointer {
            try NPYWriter.writeFloat32(path: out, rows: ids.count, columns: handle.dimension, values: $0)
        }
        if let idsOut { try NPYWriter.writeUInt64(path: idsOut, values: ids) }
        print("exported \(ids.count) rows of dimension \(handle.dimension) from table '\(table)' of \(store.shardCount) shards to \(out)")
    }
}

extension Info {
    func runSharded() throws {
        let store = try openShardedReadOnly(self.store)
        let manifest = store.manifest
        if json {
            var shards: [[String: Any]] = []
            for (entry, shard) in zip(manifest.shards, store.shards) {
                shards.append(["path": entry.path, "rows": entry.rows, "checksum": entry.checksum, "bytes": entry.bytes,
                               "fileBytes": shard.fileSize])
            }
            let tables = manifest.tables.mapValues { ["dimension": $0.dimension, "policy": $0.policy] as [String: Any] }
            let object: [String: Any] = ["path": self.store, "sharded": true, "hash": manifest.hash, "generation": manifest.generation,
                                         "shards": shards, "tables": tables]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted]), as: UTF8.self))
            return
        }
        let bytes = store.shards.reduce(0) { $0 + $1.fileSize }
        print("sharded store \(self.store): \(store.shardCount) shard(s) by \(manifest.hash), manifest generation \(manifest.generation), "
              + "\(bytes) bytes in all")
        for name in store.tableNames {
            let info = manifest.tables[name]!
            let rows = manifest.shards.map { $0.rows[name] ?? 0 }
            print("table '\(name)': dimension \(info.dimension), \(rows.reduce(0, +)) rows, policy \(info.policy); "
                  + "rows per shard \(rows.min() ?? 0)–\(rows.max() ?? 0)")
        }
        for (entry, shard) in zip(manifest.shards, store.shards) {
            print("  \(entry.path): " + entry.rows.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value) rows" }.joined(separator: ", ")
                  + ", \(shard.fileSize) bytes, \(entry.checksum)")
        }
    }
}

extension Verify {
    func runSharded() throws {
        let store = try openShardedReadOnly(self.store)
        let problems = try store.verify()
        if json {
            let object: [String: Any] = ["store": self.store, "ok": problems.isEmpty, "shards": store.shardCount, "problems": problems]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
            if !problems.isEmpty { throw ExitCode(1) }
            return
        }
        print("\(store.shardCount) shard(s): each verified, its data file against the manifest's checksum, every row in the shard its id hashes to")
        if !problems.isEmpty {
            for problem in problems { print("damaged: \(problem)") }
            throw ExitCode(1)
        }
        print("ok")
    }
}

extension Bench {
    /// The lookup and pooled workloads through a `ShardedReader` per thread, with the JSON
    /// fields of a store's (and "shards"); the decode-only, multi-table and tracking workloads
    /// are a store's only.
    func runSharded(stream: [UInt64]) throws {
        guard !decodeOnly, features == nil, trackEvery == nil else {
            throw InputError("--decode-only, --features and --track-every are for a store, not a sharded store")
        }
        let opening = DispatchTime.now().uptimeNanoseconds
        let store = try openShardedReadOnly(self.store)
        let handle = try store.table(table)
        let d = handle.dimension
        var firstOut = [Float](repeating: 0, count: batch * d)
        try stream.withUnsafeBufferPointer { stream in
            try firstOut.withUnsafeMutableBufferPointer { out in
                _ = try store.makeReader().lookup(handle, ids: UnsafeBufferPointer(rebasing: stream[0..<batch]), into: out)
            }
        }
        let openSeconds = Double(DispatchTime.now().uptimeNanoseconds - opening) / 1e9
        let rows = store.manifest.shards.reduce(0) { $0 + ($1.rows[table] ?? 0) }
        let common: [String: Any] = ["system": "embstore", "codec": store.manifest.tables[table]?.policy ?? "mixed",
                                     "bytes": store.shards.reduce(0) { $0 + $1.fileSize }, "N": rows, "d": d, "shards": store.shardCount]
        var open = common
        open.merge(["workload": "open_first_batch", "seconds": openSeconds, "batch": batch, "rows_per_s": Double(batch) / openSeconds]) { $1 }
        try Self.emit(open)
        var lookup = common
        lookup.merge(try Self.measureBatches(stream: stream, batch: batch, dimension: d, threads: threads, reps: reps, repSeconds: repSeconds) {
            let reader = try store.makeReader()
            return { ids, out in try reader.lookup(handle, ids: ids, into: out) }
        }) { $1 }
        lookup.merge(["workload": "lookup", "txn": "renew", "batch": batch, "ids": idsName ?? Self.streamName(ids), "threads": threads]) { $1 }
        if threads > 1 { lookup["variant"] = "threads=\(threads)" }
        try Self.emit(lookup)
        guard let (bagIDs, bagOffsets) = try readBags() else { return }
        try Self.emit(try Self.pooledLine(common: common, bagIDs: bagIDs, bagOffsets: bagOffsets, bagBatch: bagBatch, dimension: d,
                                          threads: threads, reps: reps, repSeconds: repSeconds) {
            let reader = try store.makeReader()
            return { ids, offsets, out in try reader.lookupPooled(handle, ids: ids, offsets: offsets, into: out) }
        })
    }
}

struct GrowShards: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grow-shards",
        abstract: "Grow a sharded store to more shards: build the new shards from the rows that move to them, then write the manifest.",
        discussion: """
            By the rule (FORMAT.md, "Sharded stores") about (M − N) / M of the rows move, each from \
            an old shard to a new one; their records are copied as they are, so every lookup gives \
            what it gave before (tc and reduced rows with the parameter records every shard \
            shares; bucket rows are refused). The old shards' files are left as they were: the moved rows stay \
            in them, stale, never routed to. Processes that have the sharded store open see the new \
            shards when they open it again.
            """)

    @Argument(help: "The sharded store's directory.") var store: String
    @Option(help: "The shard count to grow to.") var to: Int

    func run() throws {
        let report = try ShardedStore.grow(store, to: to)
        let moved = report.movedRows.values.reduce(0, +)
        print("grew \(store) from \(report.shardsBefore) to \(report.shardsAfter) shards: \(moved) of \(report.totalRows) rows moved"
              + String(format: " (%.1f%%)", 100 * Double(moved) / Double(max(report.totalRows, 1)))
              + String(format: " in %.2f s; ", report.seconds)
              + report.movedRows.sorted { $0.key < $1.key }.map { "table '\($0.key)' \($0.value)" }.joined(separator: ", "))
    }
}

struct PruneShards: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune-shards",
        abstract: "Rebuild the shards a grow left stale rows in from their live rows, into new directories, then write the manifest.",
        discussion: """
            Lookups give what they gave. The old directories are left for processes that still \
            use the previous manifest: remove them once none does.
            """)

    @Argument(help: "The sharded store's directory.") var store: String

    func run() throws {
        let (rebuilt, old) = try ShardedStore.pruneStaleRows(store)
        guard !rebuilt.isEmpty else { return print("\(store): no shard holds stale rows") }
        print("rebuilt \(rebuilt.count) shard(s) without their stale rows: \(rebuilt.joined(separator: ", "))")
        print("left for processes that still use the previous manifest (remove once none does): \(old.joined(separator: ", "))")
    }
}
