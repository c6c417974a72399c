import CEmbeddingKernels
import EmbeddingCodecs
import Testing
@testable import EmbeddingStore

/// The embedding-bag loop (`emb_pool_bags`) against decoding each row and adding it: at the
/// dimensions whose int8 and int4h bags stay in registers (16, 32, 64) and others, over bags
/// that mix those codecs with the per-row kernels' codecs and the codecs left to their decoders.
@Suite struct PooledKernelTests {
    /// Rows 0..<40 int8 and 40..<60 int4h (two segments), 60..<70 reduced and 70..<80 bucket
    /// (decoded by their codecs, not the loop), 80..<100 put one by one in the delta with
    /// fp32, fp16, int8, int4, int4h, int2h in turn.
    func mixedTable(_ dir: TemporaryDirectory, d: Int) throws -> (Store, Table) {
        let store = try makeStore(dir, mapSize: 1 << 26)
        let rows = embeddingRows(count: 100, dimension: d, seed: UInt64(d))
        try rows.withUnsafeBufferPointer { buffer in
            func load(_ range: Range<Int>, _ codec: Codec) throws {
                _ = try store.load(table: "t", ids: range.map { UInt64($0) },
                                   rows: UnsafeBufferPointer(rebasing: buffer[range.lowerBound * d..<range.upperBound * d]),
                                   count: range.count, dimension: d, codec: codec)
            }
            try load(0..<40, .int8)
            try load(40..<60, .int4h)
            try load(60..<70, .reduced(k: 3))
            try load(70..<80, .bucket(count: 4, scaled: true))
        }
        let table = try store.table("t")
        let codecs: [Codec] = [.fp32, .fp16, .int8, .int4, .int4h, .int2h]
        try store.write { batch in
            for i in 80..<100 { try batch.put(table, id: UInt64(i), vector: Array(rows[i * d..<(i + 1) * d]), codec: codecs[i % codecs.count]) }
        }
        return (store, table)
    }

    /// Bag b of `offsets` pooled as the loop must: Σ in position order of acc + w·x (x the row as
    /// lookup decodes it, missing ids adding nothing), then × 1/n for the mean.
    func expectedBags(rows: [Float], found: [Bool], offsets: [Int], weights: [Float]?, pooling: Pooling, d: Int) -> [Float] {
        var out = [Float](repeating: 0, count: (offsets.count - 1) * d)
        for b in 0..<(offsets.count - 1) {
            for p in offsets[b]..<offsets[b + 1] where found[p] {
                let w = weights?[p] ?? 1
                for j in 0..<d { out[b * d + j] = out[b * d + j] + w * rows[p * d + j] }
            }
            let n = offsets[b + 1] - offsets[b]
            if pooling == .mean && n > 0 {
                let inverse = 1 / Float(n)
                for j in 0..<d { out[b * d + j] *= inverse }
            }
        }
        return out
    }

    /// Pools `ids` in the bags of `offsets` on each instruction set the CPU has (portable, AVX2,
    /// AVX-512, then the default choice), sum and mean, with and without `weights`, and expects
    /// the found count and every value bit for bit as `expectedBags` gives them from `rows`.
    func expectPooledBagsOnEveryInstructionSet(_ reader: Reader, _ table: Table, ids: [UInt64], offsets: [Int], weights: [Float],
                                               rows: [Float], found: [Bool], d: Int, label: String) throws {
        for isa: Int32? in [0, 1, 2, nil] {
            reader.poolInstructionSet = isa
            for pooling in [Pooling.sum, .mean] {
                for weighted in [false, true] {
                    var out = [Float](repeating: .nan, count: (offsets.count - 1) * d)
                    let pooled = Result { try ids.withUnsafeBufferPointer { ids in
                        try offsets.withUnsafeBufferPointer { offsets in
                            try weights.withUnsafeBufferPointer { weights in
                                try out.withUnsafeMutableBufferPointer {
                                    try reader.lookupPooled(table, ids: ids, offsets: offsets, weights: weighted ? weights : nil,
                                                            pooling: pooling, into: $0)
                                }
                            }
                        }
                    } }
                    if case .failure(let error) = pooled, "\(error)".contains("lacks the pooled kernel's instruction set") { continue }
                    #expect(try pooled.get() == found.filter { $0 }.count)
                    let expected = expectedBags(rows: rows, found: found, offsets: offsets, weights: weighted ? weights : nil,
                                                pooling: pooling, d: d)
                    let differing = zip(out, expected).filter { $0.bitPattern != $1.bitPattern }.count
                    #expect(differing == 0, "\(label) \(pooling) weighted \(weighted) instruction set \(isa ?? -1): \(differing) values differ")
                }
            }
        }
        reader.poolInstructionSet = nil
    }

    @Test(arguments: [16, 32, 64, 24, 9])
    func bagsEqualDecodeThenAddBitForBit(d: Int) throws {
        let dir = TemporaryDirectory()
        let (store, table) = try mixedTable(dir, d: d)
        let reader = try store.makeReader()
        var random = SeededRandom(seed: 77)
        // 300 bags of 0…40 ids: runs of one codec (ids in one load's range), mixes, missing ids.
        var ids: [UInt64] = [], offsets = [0]
        for b in 0..<300 {
            let length = Int(random.next() % 41)
            let base = UInt64(b % 5 * 20)
            for _ in 0..<length {
                let id = random.next() % 8 == 0 ? random.next() % 110 : base + random.next() % 20
                ids.append(id)   // ids 100..<110 are missing
            }
            offsets.append(ids.count)
        }
        let weights = (0..<ids.count).map { _ in Float(Int(random.next() % 9) - 4) / 4 }
        let rows = try reader.lookup(table, ids: ids)
        var found = [Bool](repeating: false, count: ids.count)
        var decoded = [Float](repeating: 0, count: ids.count * d)
        try ids.withUnsafeBufferPointer { ids in
            try decoded.withUnsafeMutableBufferPointer { out in
                try found.withUnsafeMutableBufferPointer { _ = try reader.lookup(table, ids: ids, into: out, found: $0) }
            }
        }
        #expect(decoded == rows)
        try expectPooledBagsOnEveryInstructionSet(reader, table, ids: ids, offsets: offsets, weights: weights, rows: rows,
                                                  found: found, d: d, label: "d \(d)")
    }

    /// Damaged records in a bag: the pooled lookup names the id and what is wrong, in the loop's
    /// own kinds (int8 NaN scale, int4h infinite half scale, fp32 NaN, fp16 infinity, a truncated
    /// int8) and in the records it leaves to the decoders (an unknown tag); batched lookups refuse
    /// them alike on every instruction set; bags of good rows still pool.
    @Test func aDamagedRecordInABagIsNamed() throws {
        let dir = TemporaryDirectory()
        let d = 16
        let (store, table) = try mixedTable(dir, d: d)
        let nan: [UInt8] = [0, 0, 0xC0, 0x7F]
        let one: [UInt8] = [0, 0, 0x80, 0x3F]
        let damaged: [(UInt64, [UInt8], String)] = [
            (200, [Codec.int8.tag] + [UInt8](repeating: 1, count: d) + nan + one, "non-finite"),
            (201, [Codec.int4h.tag] + [UInt8](repeating: 0x11, count: d / 2) + [0, 0x7C, 0, 0x3C], "non-finite"),
            (202, [Codec.fp32.tag] + [UInt8](repeating: 0, count: 4 * (d - 1)) + nan, "non-finite"),
            (203, [Codec.int8.tag] + [UInt8](repeating: 1, count: d), "truncated"),
            (204, [0x63] + [UInt8](repeating: 1, count: d + 8), "unknown codec tag 99"),
            (205, [Codec.fp16.tag] + [UInt8](repeating: 0, count: 2 * (d - 1)) + [0, 0x7C], "non-finite"),
        ]
        try store.environment.write { txn in
            for (id, bytes, _) in damaged {
                try table.sealing(bytes, key: id).withUnsafeBytes { try txn.put($0, forKey: id, in: table.rows) }
            }
        }
        let reader = try store.makeReader()
        func pool(_ ids: [UInt64], _ offsets: [Int]) throws -> [Float] {
            var out = [Float](repeating: 0, count: (offsets.count - 1) * d)
            try ids.withUnsafeBufferPointer { ids in
                try offsets.withUnsafeBufferPointer { offsets in
                    try out.withUnsafeMutableBufferPointer { _ = try reader.lookupPooled(table, ids: ids, offsets: offsets, into: $0) }
                }
            }
            return out
        }
        for (id, _, reason) in damaged {
            // In the middle of a run of int8 rows, in a later bag.
            #expect {
                _ = try pool([1, 2, 3, 4, 5, id, 6], [0, 2, 7])
            } throws: { error in
                "\(error)".contains("id \(id)") && "\(error)".contains(reason)
            }
        }
        // Batched lookups refuse them alike, on every instruction set this CPU has.
        for isa: Int32 in [0, 1, 2] {
            reader.decodeInstructionSet = isa
            for (id, _, reason) in damaged {
                #expect {
                    _ = try reader.lookup(table, ids: [1, 2, id, 3])
                } throws: { error in
                    "\(error)".contains("lacks the lookup kernel's instruction set") || ("\(error)".contains("id \(id)") && "\(error)".contains(reason))
                }
            }
        }
        reader.decodeInstructionSet = nil
        let good = try pool([1, 2, 3, 41, 42], [0, 3, 5])
        let rows = try reader.lookup(table, ids: [1, 2, 3, 41, 42])
        #expect(good == expectedBags(rows: rows, found: [Bool](repeating: true, count: 5), offsets: [0, 3, 5], weights: nil, pooling: .sum, d: d))
    }

    /// The multiply that finds a row's part equals the division, at every divisor a segment
    /// header allows and rows up to a 2⁴⁰-row segment's, around the reciprocal's limit too.
    @Test func partDividerEqualsDivision() {
        var random = SeededRandom(seed: 5)
        for p in [16, 48, 112, 229_824, 1 << 24, (1 << 24) + 16, (1 << 31) - 16, (1 << 32) - 16] {
            let divider = PartDivider(rowsPerPart: p)
            let limit = Int(UInt64.max / UInt64(p))
            var rows = [0, 1, p - 1, p, p + 1, 2 * p - 1, (1 << 32) - 1, 1 << 32, (1 << 40) - 1, limit - 1, limit, limit + 1]
            for _ in 0..<2000 { rows.append(Int(random.next() % (1 << 40))) }
            for r in rows where r >= 0 {
                #expect(divider.quotient(r) == r / p, "\(r) / \(p)")
            }
        }
    }

    /// A table of one dense segment and an empty delta (what a load of contiguous ids, or a
    /// compaction, leaves): the loop finds records from the ids itself. Ids past the segment and
    /// below it are missing; weights and mean as above; every instruction set.
    @Test(arguments: [(Codec.int8, 64), (Codec.int4h, 64), (Codec.int8, 16), (Codec.int4h, 32), (Codec.fp16, 64), (Codec.int8, 9)])
    func denseSegmentBagsEqualDecodeThenAdd(codec: Codec, d: Int) throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir, mapSize: 1 << 26)
        let n = 5000
        let rows = embeddingRows(count: n, dimension: d, seed: 3)
        try rows.withUnsafeBufferPointer { buffer in
            _ = try store.load(table: "t", ids: (0..<n).map { UInt64(1000 + $0) }, rows: buffer, count: n, dimension: d, codec: codec)
        }
        let table = try store.table("t")
        let reader = try store.makeReader()
        var random = SeededRandom(seed: 9)
        var ids: [UInt64] = [], offsets = [0]
        for _ in 0..<400 {
            for _ in 0..<Int(random.next() % 50) { ids.append(random.next() % 16 == 0 ? random.next() % 7000 : 1000 + random.next() % UInt64(n)) }
            offsets.append(ids.count)
        }
        let weights = (0..<ids.count).map { _ in Float(Int(random.next() % 9) - 4) / 4 }
        let looked = try reader.lookup(table, ids: ids)
        let found = ids.map { $0 >= 1000 && $0 < 1000 + UInt64(n) }
        try expectPooledBagsOnEveryInstructionSet(reader, table, ids: ids, offsets: offsets, weights: weights, rows: looked,
                                                  found: found, d: d, label: "\(codec) d \(d)")
    }

    /// Batched lookups decode through `emb_decode_records` on each instruction set alike (portable,
    /// AVX2, AVX-512 where the CPU has them), for a
    /// mixed table (records located first; tc-free codecs left to their decoders) and a dense
    /// one (records found from ids), with missing ids zero-filled and the found mask right.
    @Test(arguments: [16, 64, 9])
    func lookupsAgreeOnEveryInstructionSet(d: Int) throws {
        let dir = TemporaryDirectory()
        let (mixed, mixedTable) = try mixedTable(dir, d: d)
        let denseStore = try makeStore(TemporaryDirectory(), mapSize: 1 << 26)
        let rows = embeddingRows(count: 3000, dimension: d, seed: 4)
        try rows.withUnsafeBufferPointer { _ = try denseStore.load(table: "t", rows: $0, count: 3000, dimension: d, codec: .fp32) }
        let denseTable = try denseStore.table("t")
        var random = SeededRandom(seed: 12)
        for (store, table, range) in [(mixed, mixedTable, UInt64(110)), (denseStore, denseTable, 3100)] {
            let ids = (0..<700).map { _ in random.next() % range }
            let reader = try store.makeReader()
            var reference: [Float]?
            for isa: Int32? in [nil, 0, 1, 2] {
                reader.decodeInstructionSet = isa
                var out = [Float](repeating: .nan, count: ids.count * d)
                var found = [Bool](repeating: false, count: ids.count)
                let looked = Result { try ids.withUnsafeBufferPointer { ids in
                    try out.withUnsafeMutableBufferPointer { out in
                        try found.withUnsafeMutableBufferPointer { try reader.lookup(table, ids: ids, into: out, found: $0) }
                    }
                } }
                if case .failure(let error) = looked, "\(error)".contains("lacks the lookup kernel's instruction set") { continue }
                let count = try looked.get()
                #expect(count == found.filter { $0 }.count)
                for (i, id) in ids.enumerated() where !found[i] {
                    #expect(out[i * d..<(i + 1) * d].allSatisfy { $0.bitPattern == 0 }, "missing id \(id) is zeros")
                }
                if store === denseStore {
                    #expect(found == ids.map { $0 < 3000 })
                    for (i, id) in ids.enumerated() where id < 3000 {
                        #expect(Array(out[i * d..<(i + 1) * d]) == Array(rows[Int(id) * d..<(Int(id) + 1) * d]), "fp32 row \(id) as loaded")
                    }
                }
                if let reference {
                    #expect(zip(out, reference).allSatisfy { $0.bitPattern == $1.bitPattern }, "instruction set \(isa ?? -1)")
                } else {
                    reference = out
                }
            }
        }
    }

    /// The passes read the batch's located records (Swift's `UnsafeRawBufferPointer`, a frozen
    /// struct of a start and an end pointer) as C's `emb_record`: the layouts must agree.
    @Test func locatedRecordsAreCRecords() {
        #expect(MemoryLayout<UnsafeRawBufferPointer>.size == MemoryLayout<emb_record>.size)
        #expect(MemoryLayout<UnsafeRawBufferPointer>.stride == MemoryLayout<emb_record>.stride)
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
        defer { bytes.deallocate() }
        var records = [UnsafeRawBufferPointer(start: bytes + 3, count: 9), UnsafeRawBufferPointer(start: nil, count: 0)]
        records.withUnsafeMutableBytes { raw in
            let c = raw.bindMemory(to: emb_record.self)
            #expect(UnsafeRawPointer(c[0].start) == UnsafeRawPointer(bytes + 3))
            #expect(UnsafeRawPointer(c[0].end) == UnsafeRawPointer(bytes + 12))
            #expect(c[1].start == nil && c[1].end == nil)
        }
    }
}
