import EmbeddingCodecs
import Testing
import LMDB
@testable import EmbeddingStore

/// Segments written into and read back from a real LMDB environment.
@Suite struct SegmentStorageTests {
    /// Row values of dimension 2 that name their id: (id, id + 0.5), exact in fp32 for ids < 2²³.
    static func values(_ id: UInt64, generation: Float = 0) -> [Float] { [Float(id) + generation, Float(id) + 0.5] }

    /// fp32 records (tag 1) of `values`; with `mixed`, ids ≡ 0, 1 (mod 5) are fp16 (tag 2) instead,
    /// so the segment is of a sized kind. Both codecs hold these small values exactly.
    static func records(_ ids: [UInt64], generation: Float = 0, mixed: Bool = false) -> [[UInt8]] {
        ids.map { id in
            let row = values(id, generation: generation)
            if mixed && id % 5 < 2 {
                var bytes: [UInt8] = [2]
                for value in row { appendLE(Float16(value).bitPattern, to: &bytes) }
                return bytes
            }
            var bytes: [UInt8] = [1]
            for value in row { appendLE(value.bitPattern, to: &bytes) }
            return bytes
        }
    }

    /// Keys of the segments database, in order.
    static func segmentKeys(_ store: Store, _ table: Table) throws -> [UInt64] {
        try store.environment.read { txn in
            try txn.withCursor(table.segments!) { cursor in
                var keys: [UInt64] = []
                var entry = try cursor.first()
                while let current = entry {
                    keys.append(current.integerKey!)
                    entry = try cursor.next()
                }
                return keys
            }
        }
    }

    static func manifest(_ store: Store, _ table: Table) throws -> [UInt32] {
        try store.environment.read { txn in try store.segmentManifest(table, in: txn) }
    }

    /// Replaces part `part` of `segment` with `change` applied to its bytes.
    static func damage(_ store: Store, _ table: Table, segment: UInt32, part: Int, _ change: (inout [UInt8]) -> Void) throws {
        try store.environment.write { txn in
            let key = Store.segmentKey(segment, part: part)
            var bytes = try txn.withValue(forKey: key, in: table.segments!) { Array($0!) }
            change(&bytes)
            try bytes.withUnsafeBytes { try txn.put($0, forKey: key, in: table.segments!) }
        }
    }

    @Test(arguments: [false, true])
    func multiPartSegmentReadsBackAcrossReopen(mixed: Bool) throws {
        let dir = TemporaryDirectory()
        let ids = (0..<130).map { UInt64($0) * 3 + 1 }   // sparse: 1, 4, 7, …
        do {
            let store = try makeStore(dir)
            let table = try store.createTable("t", dimension: 2)
            #expect(try store.get(table, id: 1) == nil)
            let segment = try store.writeSegment(table, ids: ids, records: Self.records(ids, mixed: mixed), rowsPerPart: 16)
            #expect(segment == 1)
            store.close()
        }
        let store = try makeStore(dir)
        let table = try store.table("t")
        // 130 rows of 16 per part: parts 1…9 and part 0, plus the manifest (key 0 of segment 0).
        #expect(try Self.segmentKeys(store, table) == [0] + (0...9).map { Store.segmentKey(1, part: $0) })
        #expect(try Self.manifest(store, table) == [1])
        #expect(try store.verifySegments(table) == 1)
        for id in ids { #expect(try store.get(table, id: id) == Self.values(id), "id \(id)") }
        for id: UInt64 in [0, 2, 3, 5, 387, 389, 390, 391, 1 << 40, .max] { #expect(try store.get(table, id: id) == nil, "id \(id)") }
        let reader = try store.makeReader()
        let probe = ids.reversed() + [0, 2, .max]
        var found = [Bool](repeating: false, count: probe.count)
        var out = [Float](repeating: -1, count: 2 * probe.count)
        let count = try probe.withUnsafeBufferPointer { ids in
            try out.withUnsafeMutableBufferPointer { out in
                try found.withUnsafeMutableBufferPointer { try reader.lookup(table, ids: ids, into: out, found: $0) }
            }
        }
        #expect(count == ids.count)
        #expect(found == [Bool](repeating: true, count: ids.count) + [false, false, false])
        #expect(out == ids.reversed().flatMap { Self.values($0) } + [Float](repeating: 0, count: 6))
        let exported = try store.export(table)
        #expect(exported.ids == ids)
        #expect(exported.values == ids.flatMap { Self.values($0) })
        let stats = try store.statistics(table)
        #expect(stats.rows == 130 && stats.segments == 1 && stats.segmentRows == 130 && stats.deltaRows == 0 && stats.tombstones == 0)
        #expect(stats.codecs.map(\.rows).reduce(0, +) == 130)
        if mixed {
            #expect(stats.codecs == [CodecUsage(codec: "fp32", rows: 78, bytes: 78 * 9), CodecUsage(codec: "fp16", rows: 52, bytes: 52 * 5)])
        }
        store.close()
        // Read-only, the segment reads the same.
        var options = Store.Options()
        options.readOnly = true
        let readOnly = try Store(path: dir.file("store"), options: options)
        let again = try readOnly.table("t")
        #expect(try readOnly.verifySegments(again) == 1)
        #expect(try readOnly.makeReader().lookup(again, ids: ids) == ids.flatMap { Self.values($0) })
        #expect(try readOnly.get(again, id: 2) == nil)
    }

    /// One reader across writes: each call sees the newest snapshot (new segments, tombstones,
    /// delta rows), not what it cached of an older one.
    @Test func aReaderSeesEachNewSegmentAndTombstone() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("t", dimension: 2)
        let ids = (0..<20).map { UInt64($0) * 5 }
        try store.writeSegment(table, ids: ids, records: Self.records(ids), rowsPerPart: 16)
        let reader = try store.makeReader()
        #expect(try reader.lookup(table, ids: [5, 10]) == Self.values(5) + Self.values(10))
        try store.writeSegment(table, ids: [5, 7], records: Self.records([5, 7], generation: 1000, mixed: true), rowsPerPart: 16)
        #expect(try reader.lookup(table, ids: [5, 7, 10]) == Self.values(5, generation: 1000) + Self.values(7, generation: 1000) + Self.values(10))
        #expect(try store.delete(table, id: 10))
        #expect(try reader.lookup(table, ids: [5, 10]) == Self.values(5, generation: 1000) + [0, 0])
        try store.put(table, id: 10, vector: [3, 4], codec: .fp32)
        #expect(try reader.lookup(table, ids: [10]) == [3, 4])
        try store.writeSegment(table, ids: [10], records: Self.records([10], generation: 2000), rowsPerPart: 16)
        #expect(try reader.lookup(table, ids: [10, 5]) == Self.values(10, generation: 2000) + Self.values(5, generation: 1000))
    }

    /// Segments larger than the map: each part's write grows it, and a reader made before the
    /// growth reads the new map.
    @Test func segmentWritesGrowTheMapAndReadersFollow() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir, mapSize: 1 << 20)
        let d = 16
        var options = LoadOptions()
        options.segmentPartBytes = 1 << 16
        let first = embeddingRows(count: 1000, dimension: d, seed: 1)
        _ = try first.withUnsafeBufferPointer { try store.load(table: "t", rows: $0, count: 1000, dimension: d, codec: .fp32, options: options) }
        let table = try store.table("t")
        let reader = try store.makeReader()
        #expect(try reader.lookup(table, ids: [0, 999]) == Array(first[0..<d] + first[999 * d..<1000 * d]))
        // 40k fp32 rows of 65 bytes: 2.6 MB, several times the 1 MiB map.
        let second = embeddingRows(count: 40_000, dimension: d, seed: 2)
        _ = try second.withUnsafeBufferPointer {
            try store.load(table: "t", ids: (1000..<41_000).map(UInt64.init), rows: $0, count: 40_000, dimension: d, codec: .fp32, options: options)
        }
        #expect(store.environment.mapSize > 1 << 21)
        let got = try reader.lookup(table, ids: [0, 999, 1000, 20_000, 40_999])
        let expected = Array(first[0..<d] + first[999 * d..<1000 * d] + second[0..<d] + second[19_000 * d..<19_001 * d]
                             + second[39_999 * d..<40_000 * d])
        #expect(got == expected)
        #expect(try store.verifySegments(table) == 2)
        #expect(try store.statistics(table).rows == 41_000)
    }

    @Test func newerSegmentShadowsOlderForOverlappingIDs() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("t", dimension: 2)
        let older = (0..<40).map(UInt64.init)
        #expect(try store.writeSegment(table, ids: older, records: Self.records(older), rowsPerPart: 16) == 1)
        let newer: [UInt64] = [5, 6, 39, 50, 1 << 33]
        #expect(try store.writeSegment(table, ids: newer, records: Self.records(newer, generation: 1000, mixed: true), rowsPerPart: 16) == 2)
        #expect(try Self.manifest(store, table) == [2, 1])
        #expect(try store.verifySegments(table) == 2)
        func expected(_ id: UInt64) -> [Float]? {
            if newer.contains(id) { return Self.values(id, generation: 1000) }
            return older.contains(id) ? Self.values(id) : nil
        }
        let all = Set(older + newer + [40, 41, 49, 51, .max]).sorted()
        for id in all { #expect(try store.get(table, id: id) == expected(id), "id \(id)") }
        let exported = try store.export(table)
        let live = all.filter { expected($0) != nil }
        #expect(exported.ids == live)
        #expect(exported.values == live.flatMap { expected($0)! })
        let stats = try store.statistics(table)
        #expect(stats.rows == 42 && stats.segments == 2 && stats.segmentRows == 45)
        // A third segment over the first's range shadows both.
        #expect(try store.writeSegment(table, ids: [5], records: Self.records([5], generation: 2000), rowsPerPart: 16) == 3)
        #expect(try store.get(table, id: 5) == Self.values(5, generation: 2000))
        #expect(try Self.manifest(store, table) == [3, 2, 1])
    }

    @Test(arguments: [false, true])
    func corruptDataPartIsNamedByVerifyAndNeverAnswersAnotherRow(mixed: Bool) throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("t", dimension: 2)
        let ids = (0..<40).map { UInt64($0) * 2 }
        let segment = try #require(try store.writeSegment(table, ids: ids, records: Self.records(ids, mixed: mixed), rowsPerPart: 16))
        #expect(try store.verifySegments(table) == 1)
        #expect(try store.verify().problems.isEmpty)
        // Flip one bit of a value in part 2: same length, so only the checksum can tell.
        try Self.damage(store, table, segment: segment, part: 2) { $0[3] ^= 0x10 }
        #expect { try store.verifySegments(table) } throws: { error in
            guard case StoreError.corruptMetadata(let name, let reason) = error else { return false }
            return name == "t" && reason.contains("segment \(segment)") && reason.contains("checksum")
                && "\(error)".contains("table 't'")
        }
        let report = try store.verify()
        #expect(report.problems.count == 1)
        #expect(report.problems.first?.contains("table 't'") == true && report.problems.first?.contains("segment \(segment)") == true)
        // Lookups still answer every id with a row at its own place: the damaged row may differ
        // from what was written but is never another id's row.
        let rows = ids.map { Self.values($0) }
        let reader = try store.makeReader()
        let got = try reader.lookup(table, ids: ids)
        var changed = 0
        for (i, id) in ids.enumerated() {
            let row = Array(got[2 * i..<2 * i + 2])
            if row != rows[i] {
                changed += 1
                #expect(!rows.contains(row), "id \(id) answered with another id's row \(row)")
            }
        }
        #expect(changed == 1)
    }

    /// A segment of format versions 2–3 (FNV-1a 64, header u32 at 52 = 0, kind 4) beside a new
    /// one (blockmix64, kind 6 would it be mixed) in the same table: both are read and verified, each checksum catches a
    /// flipped bit, and the Python reader checks both. A version-2 store stays version 2 while
    /// only FNV segments are written, and becomes 4 with the first blockmix64 segment.
    @Test func olderFNVSegmentsStayReadableAndVerified() throws {
        let dir = TemporaryDirectory()
        // Created at version 2, as a version-2 writer made it: no record seals (a sealed store
        // with a version-2 header would be damaged: seals are exactly version 5's).
        let store = try makeStore(dir, formatVersion: 2)
        func version() throws -> UInt32 {
            try store.environment.read { txn in
                try txn.withValue(forKey: StoreFormat.formatKey, in: store.meta) { try StoreFormat.decodeHeader($0!, path: "") }
            }
        }
        let table = try store.createTable("t", dimension: 2)
        let old = (0..<40).map { UInt64($0) * 3 }, new = (0..<30).map { UInt64($0) * 3 + 1 }
        let oldSegment = try #require(try store.writeSegment(table, ids: old, records: Self.records(old, mixed: true), rowsPerPart: 16,
                                                             checksum: .fnv1a64, sizeClassIndex: true))
        #expect(try version() == 2)
        let newSegment = try #require(try store.writeSegment(table, ids: new, records: Self.records(new), rowsPerPart: 16))
        #expect(try version() == 4)
        #expect(try store.verifySegments(table) == 2)
        let all = (old + new).sorted()
        #expect(try store.makeReader().lookup(table, ids: all) == all.flatMap { Self.values($0) })
        let result = try PythonReader.run("""
            from embstore_reader import Store
            with Store(sys.argv[2]) as s:
                ids, x = s.export("t")
                json.dump({"ids": ids.tolist(), "rows": x.astype(float).ravel().tolist()}, open(sys.argv[1], "w"))
            """, [dir.file("store")])
        #expect(result["ids"] as? [Int] == all.map { Int($0) })
        #expect((result["rows"] as? [Double])?.map { Float($0) } == all.flatMap { Self.values($0) })
        for segment in [oldSegment, newSegment] {
            try Self.damage(store, table, segment: segment, part: 1) { $0[5] ^= 0x01 }
            #expect { try store.verifySegments(table) } throws: { "\($0)".contains("segment \(segment) checksum mismatch") }
            // export, an offline job, refuses it too rather than hand out the flipped bit.
            #expect { try store.export(table) } throws: { "\($0)".contains("segment \(segment) checksum mismatch") }
            let refused = try PythonReader.run("""
                from embstore_reader import Store, SegmentChecksumError
                try:
                    with Store(sys.argv[2]) as s:
                        s.export("t")
                    json.dump({"message": ""}, open(sys.argv[1], "w"))
                except SegmentChecksumError as e:
                    json.dump({"message": str(e)}, open(sys.argv[1], "w"))
                """, [dir.file("store")])
            #expect((refused["message"] as? String)?.contains("segment \(segment)") == true, "\(refused)")
            try Self.damage(store, table, segment: segment, part: 1) { $0[5] ^= 0x01 }
        }
        #expect(try store.verifySegments(table) == 2)
    }

    /// Any single flipped bit of part 0's 64-byte header is reported by `verifySegments`: the
    /// checksum covers the header (all but its own field, whose flips it catches by mismatch).
    @Test(arguments: [false, true])
    func everyHeaderBitFlipIsCaughtOrHarmless(sparse: Bool) throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("t", dimension: 2)
        let ids = (0..<40).map { sparse ? UInt64($0) * 37 + 1000 : UInt64($0) + 1000 }
        let segment = try #require(try store.writeSegment(table, ids: ids, records: Self.records(ids, mixed: true), rowsPerPart: 16))
        let probe = ids + [999, 1040, 1001, 2443, 1 << 40]
        let expected = try store.makeReader().lookup(table, ids: probe)   // (fp16 rounds x.5 above 1024)
        #expect(expected.filter { $0 != 0 }.count == 2 * probe.filter(ids.contains).count)
        var caught = 0
        for bit in 0..<(64 * 8) {
            try Self.damage(store, table, segment: segment, part: 0) { $0[bit / 8] ^= 1 << UInt8(bit % 8) }
            do {
                try store.verifySegments(table)
                let got = try store.makeReader().lookup(table, ids: probe)
                #expect(got == expected, "header bit \(bit) (byte \(bit / 8)) went unnoticed and changed lookups")
            } catch let error as StoreError {
                caught += 1
                #expect("\(error)".contains("table 't'"), "header bit \(bit): \(error)")
            }
            try Self.damage(store, table, segment: segment, part: 0) { $0[bit / 8] ^= 1 << UInt8(bit % 8) }
        }
        #expect(try store.verifySegments(table) == 1)
        #expect(caught == 512, "\(caught) of 512 flips caught")
        print("header bit flips caught by verify (\(sparse ? "sparse" : "dense") sized segment): \(caught) of 512")
    }

    /// A data part shorter than its index says: lookups of rows past its end throw naming the
    /// table (never read past the part), and verify names the segment.
    @Test(arguments: [false, true])
    func truncatedDataPartIsRefused(mixed: Bool) throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("t", dimension: 2)
        let ids = (0..<40).map(UInt64.init)
        let segment = try #require(try store.writeSegment(table, ids: ids, records: Self.records(ids, mixed: mixed), rowsPerPart: 16))
        try Self.damage(store, table, segment: segment, part: 3) { $0.removeLast() }
        #expect { try store.verifySegments(table) } throws: { error in
            "\(error)".contains("table 't'") && "\(error)".contains("segment \(segment)")
        }
        #expect { try store.get(table, id: 39) } throws: { error in
            guard case StoreError.corruptMetadata(let name, _) = error else { return false }
            return name == "t" && "\(error)".contains("segment \(segment)")
        }
        #expect(try store.verify().problems.count == 1)
    }

    /// `emit` throwing after some parts were written leaves the table as it was, and the
    /// segments database holds no part of the failed segment.
    @Test func failedWriteLeavesTableUnchangedWithoutOrphanParts() throws {
        struct Stop: Error {}
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("t", dimension: 2)
        let first = (0..<20).map(UInt64.init)
        try store.writeSegment(table, ids: first, records: Self.records(first), rowsPerPart: 16)
        try store.write { batch in
            for id: UInt64 in [100, 101, 150] { try batch.put(table, id: id, vector: Self.values(id, generation: 7), codec: .fp32) }
        }
        let keysBefore = try Self.segmentKeys(store, table)
        let exportBefore = try store.export(table)
        let statsBefore = try store.statistics(table)

        // Ids 100…199 would shadow the delta rows 100, 101 and 150; rows 64… never come.
        var emitted = 0
        #expect(throws: Stop.self) {
            try store.writeSegment(table, rowsPerPart: 16) { emit in
                for (id, record) in zip(UInt64(100)..<200, Self.records(Array(100..<200))) {
                    if emitted == 70 { throw Stop() }
                    try record.withUnsafeBytes { try emit(id, $0) }
                    emitted += 1
                }
            }
        }
        #expect(emitted == 70)   // four full parts were written before the failure
        // A row the writer refuses (ids going backwards) after two parts: same outcome.
        #expect { try store.writeSegment(table, ids: (200..<240).map(UInt64.init) + [5], records: Self.records((200..<240).map(UInt64.init) + [5]), rowsPerPart: 16) } throws: { error in
            guard case StoreError.invalidArgument(let text) = error else { return false }
            return text.contains("table 't'") && text.contains("strictly ascending")
        }
        #expect(try Self.segmentKeys(store, table) == keysBefore)
        #expect(try Self.manifest(store, table) == [1])
        let exportAfter = try store.export(table)
        #expect(exportAfter.ids == exportBefore.ids && exportAfter.values == exportBefore.values)
        #expect(try store.statistics(table) == statsBefore)
        #expect(try store.verifySegments(table) == 1)
        #expect(try store.get(table, id: 100) == Self.values(100, generation: 7))
        #expect(try store.get(table, id: 102) == nil)

        // Nothing emitted: no segment, nothing written.
        #expect(try store.writeSegment(table, rowsPerPart: 16) { _ in } == nil)
        #expect(try Self.segmentKeys(store, table) == keysBefore)
        // The next segment gets a fresh id and works.
        let next = try #require(try store.writeSegment(table, ids: [100, 102], records: Self.records([100, 102]), rowsPerPart: 16))
        #expect(next > 1)
        #expect(try Self.manifest(store, table) == [next, 1])
        #expect(try store.get(table, id: 100) == Self.values(100))
        #expect(try store.verifySegments(table) == 2)
    }

    @Test func badRowsPerPartIsRefusedNamingTheTable() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("t", dimension: 2)
        for rowsPerPart in [0, 7, 24] {
            #expect { try store.writeSegment(table, ids: [1], records: Self.records([1]), rowsPerPart: rowsPerPart) } throws: { error in
                guard case StoreError.invalidArgument(let text) = error else { return false }
                return text.contains("table 't'") && text.contains("rows per part \(rowsPerPart)")
            }
        }
        #expect(try Self.segmentKeys(store, table).isEmpty)
    }

    /// A segment load replaces the delta rows (and tombstones) of the ids it holds and leaves
    /// the others.
    @Test func loadedSegmentReplacesDeltaRowsOfTheSameIDs() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let d = 2
        let table = try store.createTable("t", dimension: d)
        try store.write { batch in
            for id in UInt64(0)..<10 { try batch.put(table, id: id, vector: Self.values(id, generation: 7), codec: .fp32) }
        }
        let loadIDs = (5..<20).map(UInt64.init)
        let rows = loadIDs.flatMap { Self.values($0) }
        _ = try rows.withUnsafeBufferPointer { try store.load(table: "t", ids: loadIDs, rows: $0, count: loadIDs.count, dimension: d, codec: .fp32) }
        var stats = try store.statistics(table)
        #expect(stats.deltaRows == 5 && stats.segmentRows == 15 && stats.rows == 20 && stats.segments == 1 && stats.tombstones == 0)
        for id in UInt64(0)..<5 { #expect(try store.get(table, id: id) == Self.values(id, generation: 7)) }
        for id in loadIDs { #expect(try store.get(table, id: id) == Self.values(id)) }
        // A tombstone over a segment row is replaced too: the newer load shows the row again.
        #expect(try store.delete(table, id: 12))
        #expect(try store.statistics(table).tombstones == 1)
        _ = try [Float(-1), -2].withUnsafeBufferPointer { try store.load(table: "t", ids: [12], rows: $0, count: 1, dimension: d, codec: .fp32) }
        stats = try store.statistics(table)
        #expect(stats.tombstones == 0 && stats.deltaRows == 5 && stats.rows == 20 && stats.segments == 2)
        #expect(try store.get(table, id: 12) == [-1, -2])
        // Delta rows written after the segment win over it.
        try store.put(table, id: 13, vector: [9, 9], codec: .fp32)
        #expect(try store.get(table, id: 13) == [9, 9])
        #expect(try store.statistics(table).deltaRows == 6)
    }

    @Test func droppingATableDropsItsSegments() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("t", dimension: 2)
        try store.writeSegment(table, ids: [1, 2], records: Self.records([1, 2]), rowsPerPart: 16)
        try store.dropTable("t")
        #expect(throws: LMDBError.self) { try store.environment.openDatabases([Store.segmentsDatabase(table.id)], flags: .integerKey) }
        // A new table of the same name starts with no segments.
        let again = try store.createTable("t", dimension: 2)
        #expect(try store.get(again, id: 1) == nil)
        #expect(try store.statistics(again).segments == 0)
    }

    /// A manifest that lists a segment twice (or segment 0) is damaged metadata, refused by
    /// lookups, export and verify alike (FORMAT.md, "Keys and the manifest").
    @Test func aManifestListingASegmentTwiceIsRefused() throws {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        let table = try store.createTable("t", dimension: 2)
        let ids = (0..<20).map { UInt64($0) }
        let segment = try #require(try store.writeSegment(table, ids: ids, records: Self.records(ids), rowsPerPart: 16))
        for listed in [[segment, segment], [0]] {
            var manifest: [UInt8] = []
            appendLE(UInt32(listed.count), to: &manifest)
            for id in listed { appendLE(id, to: &manifest) }
            try store.environment.write { txn in try table.sealing(manifest, key: 0).withUnsafeBytes { try txn.put($0, forKey: 0, in: table.segments!) } }
            #expect { _ = try store.makeReader().lookup(table, ids: [1]) } throws: { "\($0)".contains("segment manifest lists") }
            #expect { _ = try store.export(table) } throws: { "\($0)".contains("segment manifest lists") }
            #expect(try store.verify().problems.contains { $0.contains("segment manifest lists") })
        }
    }
}
