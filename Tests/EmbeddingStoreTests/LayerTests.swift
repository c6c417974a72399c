import EmbeddingCodecs
import Testing
import LMDB
@testable import EmbeddingStore

/// The two layers of a table answer alike: every read through segments is bit-for-bit what the
/// per-key (delta) path gives for the same history of loads, puts and deletes; tombstones hide
/// segment rows until rewritten; version-1 tables still read; `verify` names damage.
@Suite struct LayerTests {
    /// One step of a table's history, applied alike to both stores of a `Twin`.
    enum Step {
        case load(ids: [UInt64], seed: UInt64, codec: Codec, partBytes: Int? = nil)
        case put(id: UInt64, seed: UInt64, codec: Codec)
        case delete(id: UInt64, expected: Bool)
    }

    /// Two stores that go through the same history: one loads per key (the delta layer only),
    /// the other loads segments. Puts and deletes go to both alike.
    final class Twin {
        let dir: TemporaryDirectory
        let perKey: Store
        let segment: Store
        let name = "t"
        let dimension: Int
        /// Ids a lookup must find, following the history.
        private(set) var live = Set<UInt64>()
        /// Every id the history mentioned (live or not).
        private(set) var touched = Set<UInt64>()
        /// The fp32 row last written for each live id (what the codecs approximate).
        private(set) var source: [UInt64: [Float]] = [:]

        init(dimension: Int) throws {
            self.dimension = dimension
            let dir = TemporaryDirectory()
            self.dir = dir
            perKey = try makeStore(dir, name: "per-key", mapSize: 1 << 26)
            segment = try makeStore(dir, name: "segment", mapSize: 1 << 26)
        }

        var stores: [(Store, LoadLayout)] { [(perKey, .perKey), (segment, .segment)] }

        func apply(_ steps: [Step], sourceLocation: SourceLocation = #_sourceLocation) throws {
            for step in steps { try apply(step, sourceLocation: sourceLocation) }
        }

        func apply(_ step: Step, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let d = dimension
            switch step {
            case .load(let ids, let seed, let codec, let partBytes):
                let rows = embeddingRows(count: ids.count, dimension: d, seed: seed)
                for (store, layout) in stores {
                    var options = LoadOptions()
                    options.layout = layout
                    if let partBytes { options.segmentPartBytes = partBytes }
                    let report = try rows.withUnsafeBufferPointer {
                        try store.load(table: name, ids: ids, rows: $0, count: ids.count, dimension: d, codec: codec, options: options)
                    }
                    #expect(report.rows == ids.count, sourceLocation: sourceLocation)
                }
                for (i, id) in ids.enumerated() { source[id] = Array(rows[i * d..<(i + 1) * d]) }
                live.formUnion(ids)
                touched.formUnion(ids)
            case .put(let id, let seed, let codec):
                let row = embeddingRows(count: 1, dimension: d, seed: seed)
                for (store, _) in stores { try store.put(try store.table(name), id: id, vector: row, codec: codec) }
                source[id] = row
                live.insert(id)
                touched.insert(id)
            case .delete(let id, let expected):
                for (store, layout) in stores {
                    #expect(try store.delete(try store.table(name), id: id) == expected, "delete \(id) in the \(layout) store",
                            sourceLocation: sourceLocation)
                }
                live.remove(id)
                source[id] = nil
                touched.insert(id)
            }
        }

        /// Records writes made outside `apply` (identical in both stores).
        func note(put id: UInt64, row: [Float]) {
            live.insert(id)
            touched.insert(id)
            source[id] = row
        }

        func note(deleted id: UInt64) {
            live.remove(id)
            touched.insert(id)
            source[id] = nil
        }

        /// Touched ids, ids never written, and a few repeats, in a seeded shuffled order.
        func probe(seed: UInt64, extra: Int = 60) -> [UInt64] {
            var random = SeededRandom(seed: seed)
            var ids = Array(touched).sorted()
            for _ in 0..<extra { ids.append(random.next()) }
            for id in touched.sorted().prefix(extra) { ids += [id &+ 1, id &- 1] }
            ids += [0, .max]
            ids += ids.prefix(10)   // repeats
            ids.shuffle(using: &random)
            return ids
        }
    }

    // MARK: - Comparing the two stores

    /// The index and values of the first difference of two float arrays, compared by bits.
    static func firstDifference(_ a: [Float], _ b: [Float]) -> String? {
        guard a.count == b.count else { return "\(a.count) vs \(b.count) values" }
        guard let i = a.indices.first(where: { a[$0].bitPattern != b[$0].bitPattern }) else { return nil }
        return "value \(i): \(a[i]) (0x\(String(a[i].bitPattern, radix: 16))) vs \(b[i]) (0x\(String(b[i].bitPattern, radix: 16)))"
    }

    struct LookupResult {
        var count = 0
        var values: [Float] = []
        var found: [Bool] = []
    }

    static func lookup(_ store: Store, _ table: Table, _ ids: [UInt64]) throws -> LookupResult {
        let reader = try store.makeReader()
        var result = LookupResult()
        result.values = [Float](repeating: .nan, count: ids.count * table.dimension)   // every value must be written
        result.found = [Bool](repeating: false, count: ids.count)
        result.count = try ids.withUnsafeBufferPointer { ids in
            try result.values.withUnsafeMutableBufferPointer { out in
                try result.found.withUnsafeMutableBufferPointer { try reader.lookup(table, ids: ids, into: out, found: $0) }
            }
        }
        return result
    }

    /// Bags of sizes cycling through 0, 1, 4, 0, 7, 2, 13, 3 over `count` ids (the last bag takes
    /// what is left), as offsets.
    static func bagOffsets(_ count: Int) -> [Int] {
        let sizes = [0, 1, 4, 0, 7, 2, 13, 3]
        var offsets = [0]
        var b = 0
        while offsets.last! < count {
            offsets.append(min(count, offsets.last! + sizes[b % sizes.count]))
            b += 1
        }
        offsets.append(count)   // a trailing empty bag
        return offsets
    }

    static func pooled(_ store: Store, _ table: Table, _ ids: [UInt64], offsets: [Int], weights: [Float]?,
                       pooling: Pooling) throws -> (Int, [Float]) {
        let reader = try store.makeReader()
        var out = [Float](repeating: .nan, count: (offsets.count - 1) * table.dimension)
        let count = try ids.withUnsafeBufferPointer { ids in
            try offsets.withUnsafeBufferPointer { offsets in
                try out.withUnsafeMutableBufferPointer { out in
                    if let weights {
                        return try weights.withUnsafeBufferPointer { weights in
                            try reader.lookupPooled(table, ids: ids, offsets: offsets, weights: weights, pooling: pooling, into: out)
                        }
                    }
                    return try reader.lookupPooled(table, ids: ids, offsets: offsets, pooling: pooling, into: out)
                }
            }
        }
        return (count, out)
    }

    /// Every read of the table through `twin.segment` equals, bit for bit, the same read
    /// through `twin.perKey`; and both agree with the history (which ids are live).
    static func expectSameReads(_ twin: Twin, seed: UInt64, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let a = try twin.perKey.table(twin.name)
        let b = try twin.segment.table(twin.name)
        let d = a.dimension
        let ids = twin.probe(seed: seed)
        let expectedFound = ids.map { twin.live.contains($0) }

        // Batched lookup with a found mask.
        let la = try lookup(twin.perKey, a, ids)
        let lb = try lookup(twin.segment, b, ids)
        #expect(la.found == expectedFound, "per-key found mask", sourceLocation: sourceLocation)
        #expect(lb.found == expectedFound, "segment found mask", sourceLocation: sourceLocation)
        #expect(la.count == expectedFound.filter { $0 }.count && lb.count == la.count, sourceLocation: sourceLocation)
        #expect(firstDifference(la.values, lb.values) == nil, "lookup: \(firstDifference(la.values, lb.values) ?? "")",
                sourceLocation: sourceLocation)
        for (i, found) in expectedFound.enumerated() {
            let row = lb.values[i * d..<(i + 1) * d]
            if found {
                // A found row is a real decoded row: finite and not all zeros.
                #expect(row.allSatisfy(\.isFinite) && row.contains { $0 != 0 }, "id \(ids[i])", sourceLocation: sourceLocation)
            } else {
                #expect(row.allSatisfy { $0.bitPattern == 0 }, "missing id \(ids[i]) is zero-filled", sourceLocation: sourceLocation)
            }
        }

        // Missing rows as errors: both name the same first missing id.
        if let firstMissing = ids.first(where: { !twin.live.contains($0) }) {
            for (store, table) in [(twin.perKey, a), (twin.segment, b)] {
                let reader = try store.makeReader()
                #expect(sourceLocation: sourceLocation) { try reader.lookup(table, ids: ids, missing: .error) } throws: { error in
                    guard case StoreError.rowNotFound(let name, let id) = error else { return false }
                    return name == twin.name && id == firstMissing
                }
            }
        }

        // Pooled lookups: sum and mean, with and without weights, empty bags included.
        let offsets = bagOffsets(ids.count)
        var random = SeededRandom(seed: seed ^ 0xBA65)
        let weights = ids.map { _ in Float(Double.random(in: -2...2, using: &random)) }
        for pooling in [Pooling.sum, .mean] {
            for w in [nil, weights] {
                let (ca, pa) = try pooled(twin.perKey, a, ids, offsets: offsets, weights: w, pooling: pooling)
                let (cb, pb) = try pooled(twin.segment, b, ids, offsets: offsets, weights: w, pooling: pooling)
                #expect(ca == cb && ca == la.count, sourceLocation: sourceLocation)
                #expect(firstDifference(pa, pb) == nil, "pooled \(pooling) weighted \(w != nil): \(firstDifference(pa, pb) ?? "")",
                        sourceLocation: sourceLocation)
                // Sanity against the batched lookup: the bag is the (weighted) sum of its rows.
                // Tolerance 1e-4 relative to the sum of magnitudes: float rounding of ≤ 13 terms.
                for bag in 0..<offsets.count - 1 {
                    let range = offsets[bag]..<offsets[bag + 1]
                    for j in 0..<d {
                        var sum: Double = 0, magnitude: Double = 0
                        for i in range {
                            let term = Double(w?[i] ?? 1) * Double(lb.values[i * d + j])
                            sum += term
                            magnitude += abs(term)
                        }
                        if pooling == .mean && !range.isEmpty { sum /= Double(range.count); magnitude /= Double(range.count) }
                        let got = Double(pb[bag * d + j])
                        if abs(got - sum) > 1e-4 * magnitude + 1e-30 {
                            Issue.record("bag \(bag) column \(j): \(got) vs \(sum)", sourceLocation: sourceLocation)
                        }
                    }
                }
            }
        }

        // Store.get, for a slice of the probe (each call makes a reader).
        for id in ids.prefix(120) {
            let ga = try twin.perKey.get(a, id: id)
            let gb = try twin.segment.get(b, id: id)
            #expect((ga == nil) == !twin.live.contains(id) && (gb == nil) == (ga == nil), "get \(id)", sourceLocation: sourceLocation)
            if let ga, let gb { #expect(firstDifference(ga, gb) == nil, "get \(id)", sourceLocation: sourceLocation) }
        }

        // Export and statistics.
        let ea = try twin.perKey.export(a)
        let eb = try twin.segment.export(b)
        #expect(ea.ids == twin.live.sorted(), "per-key export ids", sourceLocation: sourceLocation)
        #expect(eb.ids == ea.ids, "segment export ids", sourceLocation: sourceLocation)
        #expect(firstDifference(ea.values, eb.values) == nil, "export: \(firstDifference(ea.values, eb.values) ?? "")",
                sourceLocation: sourceLocation)
        let sa = try twin.perKey.statistics(a)
        let sb = try twin.segment.statistics(b)
        #expect(sa.rows == twin.live.count && sb.rows == sa.rows, sourceLocation: sourceLocation)
        #expect(sa.codecs == sb.codecs, sourceLocation: sourceLocation)
        #expect(sa.bucketRows == sb.bucketRows && sa.bases == sb.bases, sourceLocation: sourceLocation)
        #expect(sa.segments == 0 && sa.tombstones == 0, "the per-key store never writes segments", sourceLocation: sourceLocation)
        #expect(try twin.segment.verify().problems.isEmpty, sourceLocation: sourceLocation)
    }

    // MARK: - One codec per table

    static let codecs: [Codec] = [.fp32, .fp16, .int8, .int4, .reduced(k: 5), .bucket(count: 24, scaled: false), .bucket(count: 24, scaled: true)]

    /// Dense ids 1000…, or random 64-bit ids (given in shuffled order either way).
    static func ids(count: Int, sparse: Bool, seed: UInt64) -> [UInt64] {
        var random = SeededRandom(seed: seed)
        var ids = sparse ? Array(Set((0..<count).map { _ in random.next() })) : (0..<UInt64(count)).map { 1000 + $0 }
        while ids.count < count { ids.append(random.next()) }   // (a collision is vanishingly unlikely)
        ids.shuffle(using: &random)
        return ids
    }

    @Test(arguments: codecs, [false, true])
    func everyCodecReadsTheSameThroughBothLayers(codec: Codec, sparse: Bool) throws {
        let twin = try Twin(dimension: 17)
        let ids = Self.ids(count: 600, sparse: sparse, seed: 11)
        // Small parts: the segment spans many data parts.
        try twin.apply(.load(ids: ids, seed: 3, codec: codec, partBytes: 2048))
        let stats = try twin.segment.statistics(try twin.segment.table("t"))
        #expect(stats.segments == 1 && stats.segmentRows == 600 && stats.deltaRows == 0)
        try Self.expectSameReads(twin, seed: 1)
        if codec == .fp32 {
            // fp32 is lossless: both layers give back exactly the rows loaded.
            let table = try twin.segment.table("t")
            let got = try Self.lookup(twin.segment, table, ids)
            #expect(Self.firstDifference(got.values, ids.flatMap { twin.source[$0]! }) == nil)
        }
    }

    // MARK: - Mixed codecs

    /// Several loads of different codecs over disjoint and overlapping ids, single-row puts of
    /// other codecs on top, deletes and re-puts: every read still matches bit for bit.
    @Test(arguments: [false, true])
    func mixedCodecTableReadsTheSameThroughBothLayers(sparse: Bool) throws {
        let twin = try Twin(dimension: 13)
        // Sparse: a bijection of UInt64 that scatters ids over the whole id space.
        func f(_ i: Int) -> UInt64 { sparse ? UInt64(i) &* 0x9E37_79B9_7F4A_7C15 : 1000 + UInt64(i) }
        func f(_ range: Range<Int>) -> [UInt64] { range.map(f) }
        try twin.apply([
            .load(ids: f(0..<300), seed: 1, codec: .fp32, partBytes: 4096),
            .put(id: f(5), seed: 101, codec: .fp16),
            .put(id: f(1000), seed: 102, codec: .int8),
            .load(ids: Array(f(200..<500).reversed()), seed: 2, codec: .int8),
        ])
        try Self.expectSameReads(twin, seed: 2)
        try twin.apply([
            .load(ids: f(600..<900), seed: 3, codec: .reduced(k: 4), partBytes: 2048),
            .put(id: f(250), seed: 103, codec: .int4),
            .put(id: f(650), seed: 104, codec: .reduced(k: 3)),
            .put(id: f(2000), seed: 105, codec: .reduced(k: 4)),
            .load(ids: f(100..<150) + f(850..<880), seed: 4, codec: .bucket(count: 16, scaled: true)),
            .put(id: f(120), seed: 106, codec: .bucket),
            .put(id: f(3000), seed: 107, codec: .scaledBucket),
            .put(id: f(5), seed: 108, codec: .fp32),
            .load(ids: f(1000..<1100), seed: 5, codec: .int4, partBytes: 1024),
            .load(ids: f(50..<60) + [f(255)], seed: 6, codec: .fp16),
            .load(ids: f(1200..<1300), seed: 7, codec: .bucket(count: 8, scaled: false)),
        ])
        try Self.expectSameReads(twin, seed: 3)
        try twin.apply([
            .delete(id: f(10), expected: true),      // in a segment
            .delete(id: f(1050), expected: true),    // in a later segment
            .delete(id: f(3000), expected: true),    // delta only
            .delete(id: f(9999), expected: false),   // nowhere
            .delete(id: f(10), expected: false),     // already deleted
            .put(id: f(10), seed: 109, codec: .int8),
            .put(id: f(1210), seed: 110, codec: .scaledBucket),
        ])
        try Self.expectSameReads(twin, seed: 4)
        let stats = try twin.segment.statistics(try twin.segment.table("t"))
        #expect(stats.segments == 7)
        #expect(stats.tombstones == 1)   // f(1050); f(10) was re-put
        #expect(stats.codecs.count == 7, "\(stats.codecs)")
    }

    // MARK: - Deletes over segments

    @Test func deleteHidesSegmentRowsUntilRewritten() throws {
        let twin = try Twin(dimension: 8)
        let ids = (0..<100).map { UInt64($0) * 7 }
        try twin.apply([.load(ids: ids, seed: 1, codec: .fp32), .put(id: 5, seed: 2, codec: .int8)])
        let store = twin.segment
        let table = try store.table("t")
        func stats() throws -> TableStatistics { try store.statistics(table) }
        #expect(try stats().rows == 101 && stats().deltaRows == 1 && stats().tombstones == 0)

        // Delete of an id a segment holds: a tombstone hides it everywhere.
        try twin.apply(.delete(id: 49, expected: true))
        #expect(try store.get(table, id: 49) == nil)
        let hidden = try Self.lookup(store, table, [42, 49, 56])
        #expect(hidden.found == [true, false, true] && hidden.count == 2)
        #expect(hidden.values[8..<16].allSatisfy { $0 == 0 })
        #expect(try !store.export(table).ids.contains(49))
        var s = try stats()
        #expect(s.rows == 100 && s.tombstones == 1 && s.deltaRows == 2 && s.segmentRows == 100)
        let (pooledCount, _) = try Self.pooled(store, table, [42, 49, 56], offsets: [0, 3], weights: nil, pooling: .sum)
        #expect(pooledCount == 2)
        try Self.expectSameReads(twin, seed: 1)

        // Deleting it again finds nothing; so does deleting an id that was never there.
        try twin.apply([.delete(id: 49, expected: false), .delete(id: 50, expected: false)])
        #expect(try stats().tombstones == 1)
        // A delta-only row is removed outright, no tombstone.
        try twin.apply(.delete(id: 5, expected: true))
        s = try stats()
        #expect(s.rows == 99 && s.tombstones == 1 && s.deltaRows == 1)

        // Re-put after delete shows the new row, replacing the tombstone.
        try twin.apply(.put(id: 49, seed: 3, codec: .fp32))
        #expect(try store.get(table, id: 49) == twin.source[49])
        s = try stats()
        #expect(s.rows == 100 && s.tombstones == 0 && s.deltaRows == 1)
        try Self.expectSameReads(twin, seed: 2)

        // Delete of a re-put id still covered by a segment: a tombstone again, not a bare delete.
        try twin.apply(.delete(id: 49, expected: true))
        #expect(try store.get(table, id: 49) == nil)
        #expect(try stats().tombstones == 1)

        // Puts and deletes of one id in one batch: the last one wins.
        for (each, _) in twin.stores {
            let t = try each.table("t")
            try each.write { batch in
                try batch.put(t, id: 63, vector: [Float](repeating: 1, count: 8), codec: .fp32)
                #expect(try batch.delete(t, id: 63))
                #expect(try !batch.delete(t, id: 63))
                try batch.put(t, id: 70, vector: [Float](repeating: 2, count: 8), codec: .fp32)
            }
        }
        #expect(try store.get(table, id: 63) == nil)
        #expect(try store.get(table, id: 70) == [Float](repeating: 2, count: 8))
        twin.note(deleted: 63)
        twin.note(put: 70, row: [Float](repeating: 2, count: 8))
        try Self.expectSameReads(twin, seed: 3)
    }

    /// A later load of a deleted id un-hides it: its segment replaces the tombstone.
    @Test func laterLoadUnhidesADeletedID() throws {
        let twin = try Twin(dimension: 8)
        try twin.apply([.load(ids: (0..<50).map(UInt64.init), seed: 1, codec: .int8), .delete(id: 20, expected: true),
                        .delete(id: 21, expected: true)])
        let store = twin.segment
        let table = try store.table("t")
        #expect(try store.statistics(table).tombstones == 2)
        try twin.apply(.load(ids: [20, 99], seed: 2, codec: .fp16))
        let s = try store.statistics(table)
        #expect(s.tombstones == 1 && s.deltaRows == 1 && s.rows == 50 && s.segments == 2)
        #expect(try store.get(table, id: 20) != nil)
        #expect(try store.get(table, id: 21) == nil)
        try Self.expectSameReads(twin, seed: 5)
    }

    // MARK: - Version-1 tables

    /// A store written before segments existed (format version 1, no `t<T>/segments`): it reads
    /// read-only and writable, and the first segment upgrades it (to version 4: a blockmix64 checksum).
    @Test func versionOneStoreStillReads() throws {
        let dir = TemporaryDirectory()
        let d = 6
        let ids = (0..<200).map { UInt64($0) * 3 }
        let rows = embeddingRows(count: 200, dimension: d, seed: 9)
        var before: (ids: [UInt64], values: [Float])
        var beforeLookup = LookupResult()
        let probe: [UInt64] = [0, 1, 2, 3, 597, 598]
        do {
            let store = try makeStore(dir, formatVersion: 4)   // no seals: version 1 had none
            var options = LoadOptions()
            options.layout = .perKey
            _ = try rows.withUnsafeBufferPointer {
                try store.load(table: "t", ids: ids, rows: $0, count: 200, dimension: d, codec: .int8, options: options)
            }
            let table = try store.table("t")
            try store.put(table, id: 1, vector: Array(rows[0..<d]), codec: .fp32)
            before = try store.export(table)
            beforeLookup = try Self.lookup(store, table, probe)
            // Turn it into what version 1 wrote: header version 1, no segments database.
            let header = StoreFormat.encodeHeader(version: 1)
            try store.environment.write { txn in
                try header.withUnsafeBytes { try txn.put($0, forKey: StoreFormat.formatKey, in: store.meta) }
                try txn.drop(table.segments!, delete: true)
            }
            store.close()
        }
        func version(_ store: Store) throws -> UInt8 {
            try store.environment.read { txn in try txn.withValue(forKey: StoreFormat.formatKey, in: store.meta) { $0![8] } }
        }
        do {
            var options = Store.Options()
            options.readOnly = true
            let store = try Store(path: dir.file("store"), options: options)
            let table = try store.table("t")
            #expect(table.segments == nil)
            #expect(try version(store) == 1)
            let exported = try store.export(table)
            #expect(exported.ids == before.ids && Self.firstDifference(exported.values, before.values) == nil)
            let got = try Self.lookup(store, table, probe)
            #expect(got.found == [true, true, false, true, true, false])
            #expect(got.found == beforeLookup.found && Self.firstDifference(got.values, beforeLookup.values) == nil)
            let s = try store.statistics(table)
            #expect(s.rows == 201 && s.segments == 0 && s.deltaRows == 201 && s.tombstones == 0)
            #expect(try store.verify().problems.isEmpty)
            store.close()
        }
        let store = try makeStore(dir)
        let table = try store.table("t")
        #expect(table.segments != nil)   // created on a writable open
        let exported = try store.export(table)
        #expect(exported.ids == before.ids && Self.firstDifference(exported.values, before.values) == nil)
        #expect(try store.delete(table, id: 3))       // no segment: a plain delete
        #expect(try store.statistics(table).tombstones == 0)
        #expect(try version(store) == 1)
        _ = try [Float](repeating: 0.25, count: 2 * d).withUnsafeBufferPointer {
            try store.load(table: "t", ids: [0, 1000], rows: $0, count: 2, dimension: d, codec: .fp32)
        }
        #expect(try version(store) == 4, "its first segment (blockmix64) makes the store version 4")
        #expect(try store.get(table, id: 0) == [Float](repeating: 0.25, count: d))
        #expect(try store.get(table, id: 6) != nil)
        #expect(try store.get(table, id: 3) == nil)
        let s = try store.statistics(table)
        #expect(s.rows == 201 && s.segments == 1 && s.deltaRows == 199)
    }

    // MARK: - Verify

    @Test func verifyReportsASoundStoreAndNamesADamagedTable() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let d = 8
        for name in ["good", "bad"] {
            let rows = embeddingRows(count: 300, dimension: d, seed: 4)
            _ = try rows.withUnsafeBufferPointer {
                try store.load(table: name, rows: $0, count: 300, dimension: d, codec: .int4)
            }
            try store.put(try store.table(name), id: 1000, vector: Array(rows[0..<d]), codec: .fp16)
            try store.delete(try store.table(name), id: 7)
        }
        let sound = try store.verify()
        #expect(sound.problems.isEmpty)
        #expect(sound.tables.map(\.name) == ["bad", "good"])
        #expect(sound.tables.allSatisfy { $0.rows == 300 && $0.segments == 1 })

        // One byte of a row in data part 1 of "bad"'s segment.
        let bad = try store.table("bad")
        let segment = try #require(try store.environment.read { txn in try store.segmentManifest(bad, in: txn) }.first)
        try store.environment.write { txn in
            let key = Store.segmentKey(segment, part: 1)
            var part = try txn.withValue(forKey: key, in: bad.segments!) { Array($0!) }
            part[20] ^= 0x01
            try part.withUnsafeBytes { try txn.put($0, forKey: key, in: bad.segments!) }
        }
        let damaged = try store.verify()
        #expect(damaged.problems.count == 1)
        let problem = try #require(damaged.problems.first)
        #expect(problem.contains("table 'bad'") && problem.contains("segment \(segment)"), "\(problem)")
        // One bad segment hides neither another table nor the rest of its own: "bad" still has
        // its delta row checked, "good" all 300 rows.
        #expect(damaged.tables.map { "\($0.name) \($0.rows)" } == ["bad 1", "good 300"])

        // A damaged delta record is named too (tag 0 is never written).
        let good = try store.table("good")
        try store.environment.write { txn in
            try good.sealing([UInt8](repeating: 0, count: 5), key: 1000).withUnsafeBytes { try txn.put($0, forKey: 1000, in: good.rows) }
        }
        let both = try store.verify()
        #expect(both.problems.count == 2)
        #expect(both.problems.contains { $0.contains("table 'good'") && $0.contains("id 1000") })
        #expect(both.tables.map { "\($0.name) \($0.rows)" } == ["bad 1", "good 299"])
    }
}
