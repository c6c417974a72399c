import Foundation
import EmbeddingCodecs
import Testing
@testable import EmbeddingStore

/// The sharding rule and the router (FORMAT.md, "Sharded stores"): ids spread evenly, growing
/// the shard count moves only ids to the new shards, and lookups through a sharded store equal
/// those of one store holding the same rows, bit for bit.
@Suite struct ShardingTests {
    /// Values of the rule from an independent implementation (Python integers and floats, the
    /// definition in FORMAT.md): SplitMix64's mix of 0 is its well-known first output.
    @Test func theRuleGivesTheReferenceValues() {
        let reference: [(id: UInt64, mix: UInt64, shards: [Int])] = [
            (0, 0xE220_A839_7B1D_CDAF, [0, 1, 7, 8, 258]),
            (1, 0x910A_2DEC_8902_5CC1, [0, 0, 3, 9, 527]),
            (2, 0x9758_35DE_1C97_56CE, [0, 0, 0, 0, 19]),
            (3, 0x1D0B_14E4_DB01_8FED, [0, 1, 4, 4, 473]),
            (42, 0xBDD7_3226_2FEB_6E95, [0, 0, 0, 0, 151]),
            (1_000_000, 0x680D_1CCE_9CFF_45E7, [0, 1, 3, 3, 570]),
            (1 << 63, 0x481E_C0A2_12A9_F3DB, [0, 0, 0, 8, 994]),
            (.max, 0xE4D9_7177_1B65_2C20, [0, 0, 3, 3, 650]),
        ]
        for (id, mix, shards) in reference {
            #expect(ShardRule.mix(id) == mix, "mix(\(id))")
            #expect([1, 2, 8, 12, 1000].map { ShardRule.shard(of: id, shardCount: $0) } == shards, "id \(id)")
        }
    }

    /// 1,000,000 consecutive ids and 1,000,000 random ones over 8 shards: each shard's share
    /// within 0.2 percentage points of 1/8 (the binomial's standard deviation is 0.033 points).
    /// Growing to 12 shards moves a third of them (±0.5 points), every one to a new shard.
    @Test func idsSpreadEvenlyAndGrowingMovesOnlyToTheNewShards() {
        var random = SplitMix(seed: 7)
        for kind in ["consecutive", "random"] {
            var counts = [Int](repeating: 0, count: 8)
            var moved = 0, movedToOld = 0
            let n = 1_000_000
            for i in 0..<n {
                let id = kind == "consecutive" ? UInt64(i) : random.next()
                let before = ShardRule.shard(of: id, shardCount: 8)
                counts[before] += 1
                let after = ShardRule.shard(of: id, shardCount: 12)
                if after != before {
                    moved += 1
                    if after < 8 { movedToOld += 1 }
                }
            }
            for (s, count) in counts.enumerated() {
                #expect(abs(Double(count) / Double(n) - 0.125) < 0.002, "\(kind): shard \(s) holds \(count)")
            }
            #expect(movedToOld == 0, "\(kind)")
            #expect(abs(Double(moved) / Double(n) - 1.0 / 3.0) < 0.005, "\(kind): \(moved) moved")
        }
    }

    struct SplitMix {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            return ShardRule.mix(state &- 0x9E37_79B9_7F4A_7C15)
        }
    }

    /// One store holding tables "items" (d = 16) and "users" (d = 8), and the same rows in
    /// `shardCount` shards with a manifest; rows loaded as int8, then some rewritten as fp16
    /// and fp32 and one deleted, in both.
    static func makeStores(_ directory: TemporaryDirectory, shardCount: Int) throws -> (single: Store, sharded: ShardedStore) {
        let single = try makeStore(directory, name: "single")
        let root = directory.file("sharded")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let shards = try (0..<shardCount).map { s in try makeStore(directory, name: "sharded/shard-\(s)") }
        var random = SplitMix(seed: 11)
        var tables: [String: ShardManifest.TableInfo] = [:]
        for (name, d, count) in [("items", 16, 3_000), ("users", 8, 700)] {
            let ids = (0..<count).map { _ in random.next() >> 20 }
            let rows = embeddingRows(count: count, dimension: d, seed: UInt64(d))
            try rows.withUnsafeBufferPointer { try single.load(table: name, ids: ids, rows: $0, count: count, dimension: d, codec: .int8) }
            for s in 0..<shardCount {
                let mine = ids.indices.filter { ShardRule.shard(of: ids[$0], shardCount: shardCount) == s }
                let part = mine.flatMap { rows[$0 * d..<($0 + 1) * d] }
                try part.withUnsafeBufferPointer {
                    try shards[s].load(table: name, ids: mine.map { ids[$0] }, rows: $0, count: mine.count, dimension: d, codec: .int8)
                }
            }
            // Rewrites in other codecs and a delete, routed by the rule.
            for (k, codec) in [(3, Codec.fp16), (4, .fp32), (5, .int4h)] {
                let vector = Array(rows[k * d..<(k + 1) * d]).map { $0 * 1.5 }
                for store in [single, shards[ShardRule.shard(of: ids[k], shardCount: shardCount)]] {
                    let table = try store.table(name)
                    try store.write { batch in try batch.put(table, id: ids[k], vector: vector, codec: codec) }
                }
            }
            for store in [single, shards[ShardRule.shard(of: ids[6], shardCount: shardCount)]] {
                let table = try store.table(name)
                try store.write { batch in _ = try batch.delete(table, id: ids[6]) }
            }
            tables[name] = ShardManifest.TableInfo(dimension: d, policy: "int8")
        }
        var entries: [ShardManifest.Shard] = []
        for (s, shard) in shards.enumerated() {
            try shard.sync()
            let (checksum, bytes) = try shardFileChecksum(path: shard.dataFilePath)
            var rows: [String: Int] = [:]
            for name in try shard.tableNames() { rows[name] = try shard.export(try shard.table(name)).ids.count }
            entries.append(ShardManifest.Shard(path: "shard-\(s)", rows: rows, checksum: checksum, bytes: bytes))
        }
        try ShardManifest(shards: entries, tables: tables).write(to: root)
        return (single, try ShardedStore(path: root))
    }

    @Test(arguments: [1, 4]) func lookupsThroughShardsEqualOneStoreBitForBit(shardCount: Int) throws {
        let directory = TemporaryDirectory()
        let (single, sharded) = try Self.makeStores(directory, shardCount: shardCount)
        #expect(try sharded.verify().isEmpty)
        try Self.expectSameLookups(single, sharded)
    }

    /// Growing 8 shards to 12 copies about a third of the rows, each to a new shard, leaves the
    /// old shards' files as they were, and every lookup gives what it gave before.
    /// A sharded store read whole (diff, evaluate) is its single copy: the same rows, codec
    /// forms and figures; a diff of the two finds every row identical.
    @Test func diffAndEvaluateReadAShardedStoreAsItsSingleCopy() throws {
        let directory = TemporaryDirectory()
        let (single, sharded) = try Self.makeStores(directory, shardCount: 4)
        let census = try sharded.liveRowCodecs(try sharded.table("items"))
        let expected = try single.liveRowCodecs(try single.table("items"))
        #expect(census.ids == expected.ids && census.recordBytes == expected.recordBytes)
        #expect(census.form.map { census.forms[Int($0)].name } == expected.form.map { expected.forms[Int($0)].name })

        var options = DiffOptions()
        options.queryCount = 50
        let counts = try LookupCounts(ids: expected.ids, counts: expected.ids.map { Double($0 % 97) })
        let diff = try AnyStore.single(single).diff(.sharded(sharded), table: "items", counts: counts, options: options)
        #expect(diff.common == expected.ids.count && diff.onlyA == 0 && diff.onlyB == 0 && diff.changedCodecRows == 0)
        #expect(diff.errors.identicalRows == diff.common && diff.errors.relativeL2.max == 0 && diff.errors.histogram.zeroRows == diff.common)
        #expect(diff.neighbours.map(\.name) == ["hot", "uniform"] && diff.neighbours.allSatisfy { $0.agreement == 1 })
        #expect(diff.deciles.count == 10 && diff.bytesB.rows == diff.bytesA.rows)
        #expect(diff.bytesA.forms.map(\.form).sorted() == diff.bytesB.forms.map(\.form).sorted())

        // Evaluation against the rows as loaded: the same report from either.
        let (ids, rows) = try single.export(try single.table("items"))
        var evaluation = EvaluationOptions()
        evaluation.queryCount = 40
        let reports = try [AnyStore.single(single), .sharded(sharded)].map { store in
            try rows.withUnsafeBufferPointer {
                try store.evaluate("items", rows: $0, count: ids.count, dimension: 16, ids: ids, frequencies: counts.counts, options: evaluation)
            }
        }
        #expect(reports[0].overall == reports[1].overall && reports[0].querySets == reports[1].querySets && reports[0].forms == reports[1].forms)
        #expect(reports[0].overall.mse == 0)
    }

    @Test func growingFrom8To12ShardsMovesAThirdAndChangesNoLookup() throws {
        let directory = TemporaryDirectory()
        let (single, before) = try Self.makeStores(directory, shardCount: 8)
        let root = before.path
        let oldChecksums = before.manifest.shards.map(\.checksum)
        let report = try ShardedStore.grow(root, to: 12)
        #expect(report.shardsBefore == 8 && report.shardsAfter == 12)
        let moved = report.movedRows.values.reduce(0, +)
        #expect(abs(Double(moved) / Double(report.totalRows) - 1.0 / 3.0) < 0.04, "\(moved) of \(report.totalRows) moved")
        let after = try ShardedStore(path: root)
        #expect(after.shardCount == 12 && after.manifest.generation == 2)
        #expect(after.manifest.shards.prefix(8).map(\.checksum) == oldChecksums)
        #expect(after.manifest.shards.prefix(8).allSatisfy { $0.builtFor == 8 } && after.manifest.shards.suffix(4).allSatisfy { $0.builtFor == 12 })
        for name in ["items", "users"] {
            let rows = after.manifest.shards.reduce(0) { $0 + ($1.rows[name] ?? 0) }
            #expect(rows == (try single.export(try single.table(name)).ids.count), "\(name)")
            // Every row in a new shard came from an old one and hashes to it now.
            for s in 8..<12 {
                let ids = try after.shards[s].export(try after.shards[s].table(name)).ids
                #expect(ids.allSatisfy { ShardRule.shard(of: $0, shardCount: 12) == s && ShardRule.shard(of: $0, shardCount: 8) < 8 })
            }
        }
        #expect(try after.verify() == [])
        try Self.expectSameLookups(single, after)
        #expect(throws: StoreError.self) { try ShardedStore.grow(root, to: 12) }
        #expect(!FileManager.default.fileExists(atPath: root + "/.building"))

        // Pruning rebuilds the 8 old shards from their live rows into new directories; the
        // new shards, without stale rows, stay as they are.
        let (rebuilt, oldDirectories) = try ShardedStore.pruneStaleRows(root)
        #expect(rebuilt == (0..<8).map { String(format: "shard-%04d.g3", $0) } && oldDirectories == (0..<8).map { "shard-\($0)" })
        let pruned = try ShardedStore(path: root)
        #expect(pruned.manifest.generation == 3 && pruned.manifest.shards.allSatisfy { $0.builtFor == nil || $0.builtFor == 12 })
        #expect(pruned.manifest.shards.suffix(4).map(\.checksum) == after.manifest.shards.suffix(4).map(\.checksum))
        for (s, shard) in pruned.shards.enumerated() {
            for name in ["items", "users"] {
                let ids = try shard.export(try shard.table(name)).ids   // every row in the file is live
                #expect(ids.count == pruned.manifest.shards[s].rows[name] && ids.allSatisfy { ShardRule.shard(of: $0, shardCount: 12) == s })
            }
        }
        #expect(try pruned.verify() == [])
        try Self.expectSameLookups(single, pruned)
        #expect(try ShardedStore.pruneStaleRows(root).rebuilt.isEmpty)   // nothing left to prune
    }

    /// Batched, pooled (sum and mean, weighted or not) and multi-table lookups, and exports,
    /// through `sharded` equal `single`'s bit for bit.
    static func expectSameLookups(_ single: Store, _ sharded: ShardedStore) throws {
        let reader = try single.makeReader(), router = try sharded.makeReader()
        for name in ["items", "users"] {
            let table = try single.table(name), shardedTable = try sharded.table(name)
            let d = table.dimension
            let (allIDs, allValues) = try single.export(table)
            let exported = try sharded.export(shardedTable)
            #expect(exported.ids == allIDs && exported.values == allValues, "\(name): export")
            // A batch of present ids, repeated ones and missing ones (the deleted one among them).
            var random = SplitMix(seed: 3)
            let ids = (0..<2_000).map { i -> UInt64 in i % 7 == 0 ? random.next() : allIDs[Int(random.next() % UInt64(allIDs.count))] }
            for threshold in [16_384, 1] {   // shard by shard, and on several threads
                router.parallelThreshold = threshold
                var expected = [Float](repeating: .nan, count: ids.count * d), got = expected
                var expectedFound = [Bool](repeating: false, count: ids.count), gotFound = expectedFound
                let n1 = try ids.withUnsafeBufferPointer { ids in
                    try expected.withUnsafeMutableBufferPointer { out in
                        try expectedFound.withUnsafeMutableBufferPointer { try reader.lookup(table, ids: ids, into: out, found: $0) }
                    }
                }
                let n2 = try ids.withUnsafeBufferPointer { ids in
                    try got.withUnsafeMutableBufferPointer { out in
                        try gotFound.withUnsafeMutableBufferPointer { try router.lookup(shardedTable, ids: ids, into: out, found: $0) }
                    }
                }
                #expect(n1 == n2 && n1 < ids.count && expectedFound == gotFound, "\(name), threshold \(threshold)")
                #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "\(name), threshold \(threshold)")
            }
            // Pooled: sum and mean, with and without weights, bags of 0 to 40 ids.
            var offsets = [0]
            while offsets.last! < ids.count { offsets.append(min(ids.count, offsets.last! + Int(random.next() % 41))) }
            let weights = (0..<ids.count).map { Float(Int($0 % 13) - 6) * 0.37 }
            for pooling in [Pooling.sum, .mean] {
                for weighted in [false, true] {
                    let bags = offsets.count - 1
                    var expected = [Float](repeating: .nan, count: bags * d), got = expected
                    try ids.withUnsafeBufferPointer { ids in
                        try offsets.withUnsafeBufferPointer { offsets in
                            try weights.withUnsafeBufferPointer { w in
                                try expected.withUnsafeMutableBufferPointer {
                                    _ = try reader.lookupPooled(table, ids: ids, offsets: offsets, weights: weighted ? w : nil, pooling: pooling, into: $0)
                                }
                                try got.withUnsafeMutableBufferPointer {
                                    _ = try router.lookupPooled(shardedTable, ids: ids, offsets: offsets, weights: weighted ? w : nil, pooling: pooling, into: $0)
                                }
                            }
                        }
                    }
                    #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "\(name) \(pooling) weighted \(weighted)")
                }
            }
            var missing = [Float](repeating: 0, count: d)
            #expect(throws: StoreError.self) {
                try [ids[0], 12345].withUnsafeBufferPointer { ids in
                    try missing.withUnsafeMutableBufferPointer { _ = try router.lookup(shardedTable, ids: UnsafeBufferPointer(rebasing: ids[1...]), into: $0, missing: .error) }
                }
            }
        }
        // A multi-table request: the two tables side by side per sample.
        let items = try single.export(try single.table("items")).ids, users = try single.export(try single.table("users")).ids
        let batch = 50
        let itemIDs = (0..<(batch * 3)).map { items[($0 * 37) % items.count] }, itemOffsets = (0...batch).map { $0 * 3 }
        let userIDs = (0..<batch).map { users[($0 * 11) % users.count] }, userOffsets = Array(0...batch)
        var expected = [Float](repeating: .nan, count: batch * 24), got = expected
        try itemIDs.withUnsafeBufferPointer { itemIDs in try itemOffsets.withUnsafeBufferPointer { itemOffsets in
            try userIDs.withUnsafeBufferPointer { userIDs in try userOffsets.withUnsafeBufferPointer { userOffsets in
                try expected.withUnsafeMutableBufferPointer {
                    _ = try reader.lookupPooled([PooledFeature(table: try single.table("items"), ids: itemIDs, offsets: itemOffsets),
                                                 PooledFeature(table: try single.table("users"), ids: userIDs, offsets: userOffsets, pooling: .mean)],
                                                batchSize: batch, into: $0)
                }
                try got.withUnsafeMutableBufferPointer {
                    _ = try router.lookupPooled([ShardedFeature(table: try sharded.table("items"), ids: itemIDs, offsets: itemOffsets),
                                                 ShardedFeature(table: try sharded.table("users"), ids: userIDs, offsets: userOffsets, pooling: .mean)],
                                                batchSize: batch, into: $0)
                }
            } }
        } }
        #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "multi-table")
    }

    @Test func verifyFindsAChangedShardAStrayRowAndABadManifest() throws {
        let directory = TemporaryDirectory()
        let (_, sharded) = try Self.makeStores(directory, shardCount: 3)
        let root = sharded.path
        #expect(try sharded.verify().isEmpty)
        // A row written into a shard its id does not hash to, and the shard then differs from
        // its checksum: both reported, naming the shard.
        var stray: UInt64 = 1
        while ShardRule.shard(of: stray, shardCount: 3) == 0 { stray += 1 }
        let users = try sharded.shards[0].table("users")
        let firstUser = try sharded.shards[0].export(users).ids[0]
        try sharded.shards[0].write { batch in
            try batch.put(users, id: stray, vector: [Float](repeating: 1, count: 8), codec: .fp32)
            _ = try batch.delete(users, id: firstUser)   // one live row fewer than the manifest says
        }
        try sharded.shards[0].sync()
        let problems = try sharded.verify()
        #expect(problems.contains { $0.hasPrefix("shard 0 (shard-0)") && $0.contains("holds id \(stray)") }, "\(problems)")
        #expect(problems.contains { $0.hasPrefix("shard 0 (shard-0)") && $0.contains("the manifest says crc32:") }, "\(problems)")
        #expect(problems.contains { $0.contains("table 'users' has") && $0.contains("rows; the manifest says") }, "\(problems)")
        #expect(!problems.contains { $0.hasPrefix("shard 1") || $0.hasPrefix("shard 2") }, "\(problems)")
        // Manifests that are not right are refused with what is wrong.
        let path = root + "/" + ShardManifest.fileName
        let good = try String(contentsOfFile: path, encoding: .utf8)
        for (change, words) in [("\"jump-splitmix64\"", ["\"modulo\"", "hash rule 'modulo'"]), ("\"version\" : 1", ["\"version\" : 9", "version 9"]),
                                ("\"shard-1\"", ["\"../elsewhere\"", "not a directory inside"])] {
            try good.replacingOccurrences(of: change, with: words[0]).write(toFile: path, atomically: true, encoding: .utf8)
            #expect(good.contains(change))
            do {
                _ = try ShardedStore(path: root)
                Issue.record("a manifest with \(words[0]) opened")
            } catch {
                #expect("\(error)".contains(words[1]), "\(error)")
            }
        }
        // A shard directory gone: refused, naming it, and nothing is created in its place.
        try good.write(toFile: path, atomically: true, encoding: .utf8)
        try FileManager.default.moveItem(atPath: root + "/shard-2", toPath: root + "/elsewhere")
        do {
            _ = try ShardedStore(path: root)
            Issue.record("a sharded store with a shard missing opened")
        } catch {
            #expect("\(error)".contains("shard 2 (shard-2) is missing"), "\(error)")
        }
        #expect(!FileManager.default.fileExists(atPath: root + "/shard-2"))
        try "{".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: StoreError.self) { _ = try ShardedStore(path: root) }
        try FileManager.default.removeItem(atPath: path)
        #expect(!ShardManifest.exists(in: root))
    }

    /// tc, bucket and reduced rows move with their parameter records and bucket rows when every
    /// shard holds the same ones, and a grow is refused, with nothing written, when the shards
    /// fitted their own.
    @Test(arguments: [("tc:2", true), ("tc:2", false), ("bucket:256", true), ("reduced:8", true)])
    func rowsWithParametersMoveOnlyWithSharedParameters(codecName: String, shared: Bool) throws {
        let codec = try Codec(parsing: codecName)
        let directory = TemporaryDirectory()
        let single = try makeStore(directory, name: "single")
        let root = directory.file("sharded")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let d = 16, count = 4_000
        let rows = embeddingRows(count: count, dimension: d, seed: 9)
        let ids = (0..<count).map { UInt64($0) * 7_919 }
        let fitRows = UnsafeMutableBufferPointer<Float>.allocate(capacity: rows.count)
        _ = fitRows.initialize(from: rows)
        defer { fitRows.deallocate() }
        var options = LoadOptions()
        if shared {
            options.fitSample = MemoryRows(UnsafeBufferPointer(fitRows), count: count, dimension: d)
            options.fitTableRows = count
        }
        try rows.withUnsafeBufferPointer {
            try single.load(table: "t", ids: ids, rows: $0, count: count, dimension: d, policy: .single(codec), options: options)
        }
        var entries: [ShardManifest.Shard] = []
        for s in 0..<2 {
            let shard = try makeStore(directory, name: "sharded/shard-\(s)")
            let mine = ids.indices.filter { ShardRule.shard(of: ids[$0], shardCount: 2) == s }
            let part = mine.flatMap { rows[$0 * d..<($0 + 1) * d] }
            try part.withUnsafeBufferPointer {
                try shard.load(table: "t", ids: mine.map { ids[$0] }, rows: $0, count: mine.count, dimension: d,
                               policy: .single(codec), options: options)
            }
            try shard.sync()
            let (checksum, bytes) = try shardFileChecksum(path: shard.dataFilePath)
            entries.append(ShardManifest.Shard(path: "shard-\(s)", rows: ["t": mine.count], checksum: checksum, bytes: bytes))
        }
        try ShardManifest(shards: entries, tables: ["t": .init(dimension: d, policy: codecName)]).write(to: root)
        if shared {
            do {   // the shards, fitted on one sample, hold the single store's rows before the grow too
                let before = try ShardedStore(path: root)
                let e0 = try before.export(try before.table("t")), e1 = try single.export(try single.table("t"))
                #expect(e0.values.map(\.bitPattern) == e1.values.map(\.bitPattern), "\(codecName) before the grow")
            }
            _ = try ShardedStore.grow(root, to: 3)
            let grown = try ShardedStore(path: root)
            #expect(try grown.verify() == [])
            let exported = try grown.export(try grown.table("t"))
            let expected = try single.export(try single.table("t"))
            #expect(exported.ids == expected.ids && exported.values.map(\.bitPattern) == expected.values.map(\.bitPattern))
        } else {
            do {
                _ = try ShardedStore.grow(root, to: 3)
                Issue.record("a grow moved tc rows between shards of different parameters")
            } catch {
                #expect("\(error)".contains("hold different parameter records"), "\(error)")
            }
            #expect(try ShardManifest.read(from: root).shards.count == 2)
            #expect(!FileManager.default.fileExists(atPath: root + "/shard-0002"))
        }
    }
}
