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
        let d = handle.dimension
        var out = [Float](repeating: 0, count: ids.count * d)
        var found = [Bool](repeating: false, count: ids.count)
        try ids.withUnsafeBufferPointer { ids in
            try out.withUnsafeMutableBufferPointer { out in
                try found.withUnsafeMutableBufferPointer { _ = try reader.lookup(handle, ids: ids, into: out, found: $0) }
            }
        }
        var missing = 0
        for (i, id) in ids.enumerated() {
            if found[i] {
                print("\(id): " + out[i * d..<(i + 1) * d].map { "\($0)" }.joined(separator: " "))
            } else {
                print("\(id): not found")
                missing += 1
            }
        }
        if missing > 0 { throw ExitCode(1) }
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
