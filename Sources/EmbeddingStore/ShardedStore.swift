import Foundation
import Synchronization

/// A sharded store opened for lookups: its manifest and every shard's `Store`
/// (FORMAT.md, "Sharded stores"). Lookups go through a `ShardedReader` per thread.
public final class ShardedStore: Sendable {
    public let path: String
    public let manifest: ShardManifest
    public let shards: [Store]

    /// Opens the manifest in `path` and every shard it names, with `options` (read-only ones
    /// for a serving process).
    public init(path: String, options: Store.Options = Store.Options()) throws {
        self.path = path
        manifest = try ShardManifest.read(from: path)
        var shards: [Store] = []
        for (i, shard) in manifest.shards.enumerated() {
            let shardPath = (path as NSString).appendingPathComponent(shard.path)
            // A missing shard is damage, never a new empty store (which a writable open would make).
            guard ["data.mdb", "CURRENT"].contains(where: { FileManager.default.fileExists(atPath: (shardPath as NSString).appendingPathComponent($0)) }) else {
                throw StoreError.corruptStore(path: path, reason: "shard \(i) (\(shard.path)) is missing: no store at \(shardPath)")
            }
            do {
                shards.append(try Store(path: shardPath, options: options))
            } catch let error as StoreError {
                throw StoreError.corruptStore(path: path, reason: "shard \(i) (\(shard.path)): \(error)")
            }
        }
        self.shards = shards
    }

    public var shardCount: Int { shards.count }

    /// The manifest's tables, in byte order of their names.
    public var tableNames: [String] { manifest.tables.keys.sorted() }

    /// The table `name` in every shard (a shard without it holds none of its rows).
    public func table(_ name: String) throws -> ShardedTable {
        guard let info = manifest.tables[name] else { throw StoreError.tableNotFound(name) }
        var handles: [Table?] = []
        for (i, shard) in shards.enumerated() {
            do {
                let handle = try shard.table(name)
                guard handle.dimension == info.dimension else {
                    throw StoreError.corruptStore(path: path, reason: "shard \(i) has table '\(name)' of dimension \(handle.dimension); the manifest says \(info.dimension)")
                }
                handles.append(handle)
            } catch StoreError.tableNotFound {
                handles.append(nil)
            }
        }
        return ShardedTable(name: name, dimension: info.dimension, handles: handles)
    }

    /// A reader: one `Reader` per shard. Like `Reader`, for one thread at a time.
    public func makeReader() throws -> ShardedReader {
        ShardedReader(readers: try shards.map { try $0.makeReader() })
    }

    /// Every row of `table` from every shard, in ascending id order, decoded.
    public func export(_ table: ShardedTable) throws -> (ids: [UInt64], values: [Float]) {
        var parts: [(ids: [UInt64], values: [Float])] = []
        for (i, (shard, handle)) in zip(shards, table.handles).enumerated() {
            guard let handle else { continue }
            var (ids, values) = try shard.export(handle)
            if manifest.shards[i].builtFor.map({ $0 != shardCount }) ?? false {   // leave out its stale rows
                let d = table.dimension
                let live = ids.indices.filter { ShardRule.shard(of: ids[$0], shardCount: shardCount) == i }
                values = live.flatMap { values[$0 * d..<($0 + 1) * d] }
                ids = live.map { ids[$0] }
            }
            parts.append((ids, values))
        }
        let d = table.dimension
        var order: [(id: UInt64, part: Int, row: Int)] = []
        order.reserveCapacity(parts.reduce(0) { $0 + $1.ids.count })
        for (p, part) in parts.enumerated() {
            for (row, id) in part.ids.enumerated() { order.append((id, p, row)) }
        }
        order.sort { $0.id < $1.id }
        var ids: [UInt64] = []
        var values: [Float] = []
        ids.reserveCapacity(order.count)
        values.reserveCapacity(order.count * d)
        for entry in order {
            ids.append(entry.id)
            values.append(contentsOf: parts[entry.part].values[entry.row * d..<(entry.row + 1) * d])
        }
        return (ids, values)
    }

    /// Checks every shard (`Store.verify`), that each shard's `data.mdb` matches the manifest's
    /// checksum and length, that each row lies in the shard its id hashes to (or, in a shard a
    /// grow left behind, hashed to when it was built), and that the live rows per table are the
    /// manifest's. Problems name the shard.
    public func verify(checksums: Bool = true) throws -> [String] {
        var problems: [String] = []
        for (i, (shard, entry)) in zip(shards, manifest.shards).enumerated() {
            let name = "shard \(i) (\(entry.path))"
            problems += try shard.verify().problems.map { "\(name): \($0)" }
            if checksums {
                let file = shard.dataFilePath
                let (checksum, bytes) = try shardFileChecksum(path: file)
                if checksum != entry.checksum || bytes != entry.bytes {
                    problems.append("\(name): \(file) has \(checksum) over \(bytes) bytes; the manifest says \(entry.checksum) over \(entry.bytes)")
                }
            }
            // Rows are live where their id hashes to this shard; a row that hashes elsewhere is
            // stale when it hashed here for the count the file was built for (a grow moved it),
            // and misfiled otherwise.
            let builtFor = entry.builtFor ?? shardCount
            for tableName in tableNames {
                var rows = 0, misfiled: UInt64?
                if let handle = try? shard.table(tableName) {
                    for id in try shard.export(handle).ids {
                        if ShardRule.shard(of: id, shardCount: shardCount) == i {
                            rows += 1
                        } else if misfiled == nil && ShardRule.shard(of: id, shardCount: builtFor) != i {
                            misfiled = id
                        }
                    }
                }
                if let id = misfiled {
                    problems.append("\(name): table '\(tableName)' holds id \(id), which belongs to shard \(ShardRule.shard(of: id, shardCount: shardCount))")
                }
                let expected = entry.rows[tableName] ?? 0
                if rows != expected {
                    problems.append("\(name): table '\(tableName)' has \(rows) rows; the manifest says \(expected)")
                }
            }
        }
        return problems
    }
}

/// One table of a sharded store: its handle in each shard (nil where a shard lacks it).
public struct ShardedTable: Sendable {
    public let name: String
    public let dimension: Int
    public let handles: [Table?]
}

/// Lookups through a sharded store: a batch is split by shard, each part looked up in its
/// shard, and the rows scattered back in request order. Results equal, bit for bit, those of one
/// store holding the same rows: rows are decoded by the same decoders, and pooled bags are
/// added up in bag order as the pooled kernel adds them (acc + w·x, then × 1/n for a mean).
/// Not for concurrent use: make one per thread.
public final class ShardedReader {
    let readers: [Reader]
    /// A batch sorted by shard (reused across calls, grown with the batch): for sorted position
    /// k, the batch position it came from, its id, its row and whether it was found.
    private var order = ScratchBuffer<Int>()
    private var sortedIDs = ScratchBuffer<UInt64>()
    private var rows = ScratchBuffer<Float>()
    private var found = ScratchBuffer<Bool>()
    private var shardOf = ScratchBuffer<Int32>()
    private var gathered = ScratchBuffer<Float>()
    private var gatheredFound = ScratchBuffer<Bool>()
    private var starts: [Int]

    init(readers: [Reader]) {
        self.readers = readers
        starts = [Int](repeating: 0, count: readers.count + 1)
    }

    deinit {
        order.release()
        sortedIDs.release()
        rows.release()
        found.release()
        shardOf.release()
        gathered.release()
        gatheredFound.release()
    }

    /// Batches of at least this many ids are looked up in their shards on several threads.
    public var parallelThreshold = 16_384

    /// The rows of `ids` into `out` (`ids.count × dimension` floats); `found` (optional) gets
    /// whether each id was found. Missing ids follow `missing`. Returns how many were found.
    @discardableResult
    public func lookup(_ table: ShardedTable, ids: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableBufferPointer<Float>,
                       found: UnsafeMutableBufferPointer<Bool>? = nil, missing: MissingRows = .zeros) throws -> Int {
        let d = table.dimension, shardCount = readers.count, n = ids.count
        guard out.count >= n * d else {
            throw StoreError.invalidArgument("output buffer holds \(out.count) floats; \(n) ids × dimension \(d) need \(n * d)")
        }
        if let found, found.count < n {
            throw StoreError.invalidArgument("found mask has \(found.count) entries for \(n) ids")
        }
        guard n > 0 else { return 0 }
        if shardCount == 1 {
            guard let handle = table.handles[0] else {
                if missing == .error { throw StoreError.rowNotFound(table: table.name, id: ids[0]) }
                out.update(repeating: 0)
                if let found { UnsafeMutableBufferPointer(rebasing: found[0..<n]).update(repeating: false) }
                return 0
            }
            return try found.map { try readers[0].lookup(handle, ids: ids, into: out, found: $0) }
                ?? readers[0].lookup(handle, ids: ids, into: out, missing: missing)
        }
        // Sort the batch by shard (a counting sort), keeping where each id came from.
        let shardOf = self.shardOf.reserve(n), order = self.order.reserve(n), sortedIDs = self.sortedIDs.reserve(n)
        let rows = self.rows.reserve(n * d), rowFound = self.found.reserve(n)
        for s in 0...shardCount { starts[s] = 0 }
        for i in 0..<n {
            let s = ShardRule.shard(of: ids[i], shardCount: shardCount)
            shardOf[i] = Int32(s)
            starts[s + 1] += 1
        }
        for s in 0..<shardCount { starts[s + 1] += starts[s] }
        var next = starts
        for i in 0..<n {
            let s = Int(shardOf[i])
            let k = next[s]
            next[s] = k + 1
            order[k] = i
            sortedIDs[k] = ids[i]
        }
        // Each shard's part of the sorted batch, looked up in its shard.
        var total = 0
        if n >= parallelThreshold {
            let results = Mutex<[Result<Int, Error>?]>(Array(repeating: nil, count: shardCount))
            nonisolated(unsafe) let job = ShardJob(readers: readers, table: table, starts: starts, ids: sortedIDs, rows: rows, found: rowFound)
            DispatchQueue.concurrentPerform(iterations: shardCount) { s in
                let result = Result { try job.run(shard: s) }
                results.withLock { $0[s] = result }
            }
            for result in results.withLock({ $0 }) { total += try result!.get() }
        } else {
            let job = ShardJob(readers: readers, table: table, starts: starts, ids: sortedIDs, rows: rows, found: rowFound)
            for s in 0..<shardCount { total += try job.run(shard: s) }
        }
        // Scatter back, in request order.
        if missing == .error && total < n {
            for k in 0..<n where !rowFound[k] { throw StoreError.rowNotFound(table: table.name, id: sortedIDs[k]) }
        }
        let destination = out.baseAddress!
        for k in 0..<n {
            let i = order[k]
            (destination + i * d).update(from: rows + k * d, count: d)
            found?[i] = rowFound[k]
        }
        return total
    }

    /// Pooled lookup ("embedding bag"), as `Reader.lookupPooled`: bag `b` is
    /// `ids[offsets[b] ..< offsets[b + 1]]`, pooled into row `b` of `out` (`stride` floats
    /// apart, the table's dimension by default).
    @discardableResult
    public func lookupPooled(_ table: ShardedTable, ids: UnsafeBufferPointer<UInt64>, offsets: UnsafeBufferPointer<Int>,
                             weights: UnsafeBufferPointer<Float>? = nil, pooling: Pooling = .sum,
                             into out: UnsafeMutableBufferPointer<Float>, stride: Int? = nil, missing: MissingRows = .zeros) throws -> Int {
        try PooledFeature.checkBags(ids: ids, offsets: offsets, weights: weights, name: "table '\(table.name)'")
        let d = table.dimension, stride = stride ?? d
        let bags = max(offsets.count - 1, 0)
        guard bags == 0 || out.count >= (bags - 1) * stride + d else {
            throw StoreError.invalidArgument("output buffer holds \(out.count) floats; \(bags) bags × dimension \(d) need \(bags * d)")
        }
        guard bags > 0 else { return 0 }
        let first = offsets[0], used = UnsafeBufferPointer(rebasing: ids[first..<offsets[bags]])
        let gathered = self.gathered.reserve(used.count * d), gatheredFound = self.gatheredFound.reserve(used.count)
        let found = try lookup(table, ids: used, into: UnsafeMutableBufferPointer(start: gathered, count: used.count * d),
                               found: UnsafeMutableBufferPointer(start: gatheredFound, count: used.count), missing: missing)
        for b in 0..<bags {
            let acc = out.baseAddress! + b * stride
            for j in 0..<d { acc[j] = 0 }
            for p in offsets[b]..<offsets[b + 1] where gatheredFound[p - first] {
                let row = (p - first) * d
                if let weights {
                    let w = weights[p]
                    for j in 0..<d { acc[j] = acc[j] + w * gathered[row + j] }
                } else {
                    for j in 0..<d { acc[j] = acc[j] + gathered[row + j] }
                }
            }
            let count = offsets[b + 1] - offsets[b]
            if pooling == .mean && count > 0 {
                let inverse = 1 / Float(count)
                for j in 0..<d { acc[j] *= inverse }
            }
        }
        return found
    }

    /// A multi-table pooled request, as `Reader.lookupPooled(_:batchSize:into:missing:)`:
    /// row `b` of `out` holds sample `b`'s pooled bags, feature after feature.
    @discardableResult
    public func lookupPooled(_ features: [ShardedFeature], batchSize: Int, into out: UnsafeMutableBufferPointer<Float>,
                             missing: MissingRows = .zeros) throws -> Int {
        let width = features.reduce(0) { $0 + $1.table.dimension }
        for (f, feature) in features.enumerated() where feature.offsets.count != batchSize + 1 {
            throw StoreError.invalidArgument("feature \(f) (table '\(feature.table.name)') has \(feature.offsets.count) offsets; a batch of \(batchSize) needs \(batchSize + 1)")
        }
        guard out.count >= batchSize * width else {
            throw StoreError.invalidArgument("output buffer holds \(out.count) floats; \(batchSize) samples × \(width) (the features' dimensions) need \(batchSize * width)")
        }
        var found = 0, column = 0
        for feature in features {
            let part = UnsafeMutableBufferPointer(rebasing: out[column..<out.count])
            found += try lookupPooled(feature.table, ids: feature.ids, offsets: feature.offsets, weights: feature.weights,
                                      pooling: feature.pooling, into: part, stride: width, missing: missing)
            column += feature.table.dimension
        }
        return found
    }
}

/// The lookups of one sorted batch, shard by shard: shard s's ids are `ids[starts[s] ..<
/// starts[s + 1]]`, its rows and found flags go to the same positions of `rows` and `found`.
private struct ShardJob {
    let readers: [Reader]
    let table: ShardedTable
    let starts: [Int]
    let ids: UnsafeMutablePointer<UInt64>
    let rows: UnsafeMutablePointer<Float>
    let found: UnsafeMutablePointer<Bool>

    func run(shard s: Int) throws -> Int {
        let d = table.dimension, range = starts[s]..<starts[s + 1]
        guard !range.isEmpty else { return 0 }
        let part = UnsafeMutableBufferPointer(start: rows + range.lowerBound * d, count: range.count * d)
        let partFound = UnsafeMutableBufferPointer(start: found + range.lowerBound, count: range.count)
        guard let handle = table.handles[s] else {
            part.update(repeating: 0)
            partFound.update(repeating: false)
            return 0
        }
        return try readers[s].lookup(handle, ids: UnsafeBufferPointer(start: ids + range.lowerBound, count: range.count),
                                     into: part, found: partFound)
    }
}

/// A buffer a reader keeps across calls, grown (never shrunk) to what a call needs.
struct ScratchBuffer<Element> {
    private var raw: UnsafeMutablePointer<Element>?
    private var capacity = 0

    func release() { raw?.deallocate() }

    /// The buffer, with room for at least `count` elements (uninitialised beyond what was written).
    mutating func reserve(_ count: Int) -> UnsafeMutablePointer<Element> {
        if let raw, capacity >= count { return raw }
        raw?.deallocate()
        capacity = max(count, capacity * 2, 16)
        raw = .allocate(capacity: capacity)
        return raw!
    }
}
