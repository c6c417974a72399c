import CEmbeddingKernels
import EmbeddingCodecs
import Testing
@testable import EmbeddingStore

/// The pure byte layout of segments (no LMDB): the four kinds, multi-part segments, sparse ids
/// over huge ranges, header checks, writer misuse and the checksum.
@Suite struct SegmentFormatTests {
    /// A built segment: data parts 1…P in order, then part 0.
    struct Built {
        var parts: [[UInt8]]
        var part0: [UInt8]
    }

    /// Streams `records` through a `SegmentWriter`, checking that each finished part is numbered
    /// in order and that a part is handed out exactly when it holds `rowsPerPart` rows.
    func build(_ ids: [UInt64], _ records: [[UInt8]], rowsPerPart: Int, sizeClassIndex: Bool = false,
               maximumRecordSize: Int? = nil) throws -> Built {
        var writer = try SegmentWriter(rowsPerPart: rowsPerPart, maximumRecordSize: maximumRecordSize ?? records.map(\.count).max(),
                                       sizeClassIndex: sizeClassIndex)
        var parts: [[UInt8]] = []
        for (r, (id, record)) in zip(ids, records).enumerated() {
            let full = try record.withUnsafeBytes { try writer.append(id: id, record: $0) }
            #expect((full != nil) == ((r + 1) % rowsPerPart == 0), "row \(r) of \(rowsPerPart) per part")
            if let full {
                parts.append(full)
                #expect(writer.partsWritten == parts.count)
            }
        }
        let (last, part0) = try writer.finish()
        if let last { parts.append(last) }
        #expect(writer.partsWritten == parts.count)
        return Built(parts: parts, part0: part0)
    }

    /// Records whose bytes spell their id (so a wrong row is visible), of one size or of a few
    /// codec-like sizes picked by a hash of the id.
    func records(_ ids: [UInt64], sizes: [Int]) -> [[UInt8]] {
        ids.map { id in
            let size = sizes[Int((id &* 0x9E37_79B9_7F4A_7C15) >> 61) % sizes.count]
            return (0..<size).map { UInt8(truncatingIfNeeded: (id &* 31) &+ (id >> 56) &+ UInt64($0) &* 7) }
        }
    }

    /// Independent FNV-1a 64 (offset basis 14695981039346656037, prime 1099511628211).
    static func fnv1a(_ chunks: [[UInt8]]) -> UInt64 {
        var hash: UInt64 = 14_695_981_039_346_656_037
        for chunk in chunks {
            for byte in chunk { hash = (hash ^ UInt64(byte)) &* 1_099_511_628_211 }
        }
        return hash
    }

    /// Little-endian field of `bytes` at `offset`, read independently of the code under test.
    static func field(_ bytes: [UInt8], _ offset: Int, _ size: Int) -> UInt64 {
        (0..<size).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
    }

    static func setField(_ bytes: inout [UInt8], _ offset: Int, _ size: Int, _ value: UInt64) {
        for i in 0..<size { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }

    /// Part 0's expected size from FORMAT.md, computed here rather than by `SegmentHeader`.
    /// Grouped kinds: padding to 48 mod 64, then ⌈rows / G⌉ 64-byte entries per part.
    static func expectedPart0Size(ids: [UInt64], sizeClasses: Int, sparse: Bool, shift: Int, grouped: Bool = false,
                                  endWidth: Int = 2, rowsPerPart: Int = 16) -> Int {
        let n = ids.count
        var size = 64
        if sparse { size += 8 * n + 4 * (Int((ids.last! - ids.first!) >> UInt64(shift)) + 2) }
        if grouped {
            while size % 64 != 48 { size += 1 }
            let g = endWidth == 2 ? 29 : 14
            for start in stride(from: 0, to: n, by: rowsPerPart) { size += 64 * ((min(rowsPerPart, n - start) + g - 1) / g) }
        } else if sizeClasses > 1 {
            size += 4 * sizeClasses + n + 4 * ((n + 15) / 16)
        }
        return size
    }

    /// Every id finds exactly its own record, part boundaries follow rows per part, the parts
    /// hold the records back to back, and every id in `absent` is reported missing.
    func check(_ built: Built, ids: [UInt64], records: [[UInt8]], absent: [UInt64], rowsPerPart: Int,
               kind: SegmentKind, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let n = ids.count
        #expect(built.parts.count == (n + rowsPerPart - 1) / rowsPerPart, sourceLocation: sourceLocation)
        for (p, part) in built.parts.enumerated() {
            let rows = records[(p * rowsPerPart)..<min(n, (p + 1) * rowsPerPart)]
            #expect(part == Array(rows.joined()), "part \(p + 1) is not its rows' records back to back", sourceLocation: sourceLocation)
        }
        try built.part0.withUnsafeBytes { p0 in
            let index = try SegmentIndex(part0: p0)
            let header = index.header
            #expect(header.kind == kind, sourceLocation: sourceLocation)
            #expect(index.count == n && index.partCount == built.parts.count, sourceLocation: sourceLocation)
            #expect(header.firstID == ids.first! && header.lastID == ids.last!, sourceLocation: sourceLocation)
            let sizes = Set(records.map(\.count))
            if kind.hasGroupEntries {
                #expect(header.sizeClasses == 2 || header.sizeClasses == 4, sourceLocation: sourceLocation)
            } else {
                #expect(Int(header.sizeClasses) == (sizes.count > 1 ? sizes.count : 0), sourceLocation: sourceLocation)
            }
            #expect(Int(header.stride) == (sizes.count > 1 ? 0 : records[0].count), sourceLocation: sourceLocation)
            #expect(p0.count == Self.expectedPart0Size(ids: ids, sizeClasses: sizes.count, sparse: kind.isSparse,
                                                        shift: Int(header.directoryShift), grouped: kind.hasGroupEntries,
                                                        endWidth: Int(header.sizeClasses), rowsPerPart: rowsPerPart),
                    sourceLocation: sourceLocation)
            if kind.isSparse {
                // About one directory entry per four rows, as FORMAT.md promises.
                #expect(header.directoryEntries - 1 <= max(1, (n + 3) / 4), sourceLocation: sourceLocation)
            } else {
                #expect(header.directoryShift == 0, sourceLocation: sourceLocation)
            }
            let range = UInt(bitPattern: p0.baseAddress!)..<UInt(bitPattern: p0.baseAddress! + p0.count)
            for (r, id) in ids.enumerated() {
                guard let row = index.row(of: id) else {
                    Issue.record("id \(id) (row \(r)) not found", sourceLocation: sourceLocation)
                    continue
                }
                #expect(row == r, sourceLocation: sourceLocation)
                #expect(index.id(atRow: row) == id, sourceLocation: sourceLocation)
                let p = index.part(ofRow: row)
                #expect(p == 1 + r / rowsPerPart, sourceLocation: sourceLocation)
                let part = built.parts[p - 1]
                let location = try #require(index.record(ofRow: row, partLength: part.count), sourceLocation: sourceLocation)
                #expect(Array(part[location.offset..<location.offset + location.length]) == records[r],
                        "record of id \(id)", sourceLocation: sourceLocation)
                if let fixed = index.fixedPartLength(p) {
                    #expect(fixed == part.count, sourceLocation: sourceLocation)
                }
                // The probe address is inside part 0 for indexed kinds, nil for dense fixed ones.
                let probe = index.probeAddress(of: id)
                if kind == .denseFixed {
                    #expect(probe == nil, sourceLocation: sourceLocation)
                } else {
                    let address = try #require(probe, sourceLocation: sourceLocation)
                    #expect(range.contains(UInt(bitPattern: address)), sourceLocation: sourceLocation)
                }
            }
            let stored = Set(ids)
            for id in absent where !stored.contains(id) {
                #expect(index.row(of: id) == nil, "id \(id) must be missing", sourceLocation: sourceLocation)
            }
            #expect(index.probeAddress(of: ids.first! &- 1) == nil || ids.first! == 0, sourceLocation: sourceLocation)
            #expect(index.probeAddress(of: ids.last! &+ 1) == nil || ids.last! == .max, sourceLocation: sourceLocation)
            // Checksum: blockmix64 over the data parts in order, then part 0's bytes 0..<56 and 64...
            let expected = FormatDocTests.blockMix64(built.parts + [Array(built.part0[..<56]), Array(built.part0[64...])])
            #expect(Self.field(built.part0, 52, 4) == 1, sourceLocation: sourceLocation)
            #expect(Self.field(built.part0, 56, 8) == expected, sourceLocation: sourceLocation)
            #expect(header.checksum == expected, sourceLocation: sourceLocation)
        }
    }

    /// Ids a segment of `ids` must not find: just outside both ends, each neighbour and the
    /// midpoint of every gap, and the extremes of the id space.
    func absentCandidates(_ ids: [UInt64]) -> [UInt64] {
        var result: [UInt64] = [0, 1, .max, .max - 1, ids.first! &- 1, ids.last! &+ 1]
        for (a, b) in zip(ids, ids.dropFirst()) where b - a > 1 {
            result += [a + 1, b - 1, a + (b - a) / 2]
        }
        return result
    }

    // MARK: - Kinds

    static let fixedSizes = [73]                 // int8 at d = 64
    static let mixedSizes = [73, 41, 129, 5]     // int8, int4, fp16 at d = 64; bucket

    @Test(arguments: [16, 32, 4096])
    func denseFixedHasNoIndex(rowsPerPart: Int) throws {
        let ids = (1000..<1137).map(UInt64.init)
        let recs = records(ids, sizes: Self.fixedSizes)
        let built = try build(ids, recs, rowsPerPart: rowsPerPart)
        #expect(built.part0.count == 64)
        try check(built, ids: ids, records: recs, absent: absentCandidates(ids) + [999, 1137, 5000],
                  rowsPerPart: rowsPerPart, kind: .denseFixed)
    }

    @Test(arguments: [16, 32, 4096])
    func denseMixedSizesUseGroupEntries(rowsPerPart: Int) throws {
        let ids = (0..<203).map(UInt64.init)
        let recs = records(ids, sizes: Self.mixedSizes)
        let built = try build(ids, recs, rowsPerPart: rowsPerPart)
        // Padding from 64 to 112 (≡ 48 mod 64), then ⌈rows / 29⌉ entries per part.
        let entries = stride(from: 0, to: 203, by: rowsPerPart).reduce(0) { $0 + (min(rowsPerPart, 203 - $1) + 28) / 29 }
        #expect(built.part0.count == 112 + 64 * entries)
        try check(built, ids: ids, records: recs, absent: absentCandidates(ids) + [203, 1 << 40],
                  rowsPerPart: rowsPerPart, kind: .denseGrouped)
    }

    /// The index of format versions 2–3 (size classes), which tests still write to check that
    /// such segments stay readable.
    @Test(arguments: [16, 32, 4096])
    func denseMixedSizesUseClassesAndGroups(rowsPerPart: Int) throws {
        let ids = (0..<203).map(UInt64.init)
        let recs = records(ids, sizes: Self.mixedSizes)
        #expect(Set(recs.map(\.count)).count == 4)
        let built = try build(ids, recs, rowsPerPart: rowsPerPart, sizeClassIndex: true)
        // 4 class sizes, one class byte per row, one group offset per 16 rows.
        #expect(built.part0.count == 64 + 4 * 4 + 203 + 4 * 13)
        try check(built, ids: ids, records: recs, absent: absentCandidates(ids) + [203, 1 << 40],
                  rowsPerPart: rowsPerPart, kind: .denseSized)
    }

    /// Sparse id sets: random 64-bit, crowded at the top of the id space, clustered runs
    /// separated by huge gaps, a dense run with one far outlier, both extremes of the id space.
    static let sparseSets: [String] = ["random64", "nearMax", "clustered", "runThenOutlier", "extremes", "smallGaps"]

    static func sparseIDs(_ name: String) -> [UInt64] {
        var random = SeededRandom(seed: 0x5EED)
        switch name {
        case "random64":
            return Array(Set((0..<300).map { _ in random.next() })).sorted()
        case "nearMax":
            return Array(Set((0..<150).map { _ in UInt64.max - random.next() % 1000 } + [.max])).sorted()
        case "clustered":
            var ids: [UInt64] = []
            for c in 0..<6 {
                let base = UInt64(c) << 58 | random.next() % (1 << 40)
                ids += (0..<UInt64(20 + c * 7)).map { base + $0 }
            }
            return ids
        case "runThenOutlier":
            return (0..<120).map(UInt64.init) + [1 << 50]
        case "extremes":
            return [0, 1, 2, 1 << 32, 1 << 63, .max - 1, .max]
        default:
            return (0..<180).map { UInt64($0) * 3 + UInt64($0 % 3) }
        }
    }

    /// A damaged id equal to another row's id: a lookup of that id finds its own row or none,
    /// never the damaged row (every slot, every other id, in segments of 5 and 40 rows).
    @Test(arguments: [5, 40])
    func aDamagedIDNeverHandsOutItsRowForAnotherID(count: Int) throws {
        let ids = (0..<count).map { UInt64(10 * $0 + 10) }
        let recs = records(ids, sizes: Self.fixedSizes)
        let built = try build(ids, recs, rowsPerPart: 16)
        for slot in 0..<count {
            for target in 0..<count where target != slot {
                var part0 = built.part0
                let at = SegmentHeader.size + 8 * slot
                withUnsafeBytes(of: ids[target].littleEndian) { for k in 0..<8 { part0[at + k] = $0[k] } }
                try part0.withUnsafeBytes { bytes in
                    let index = try SegmentIndex(part0: bytes)
                    let found = index.row(of: ids[target])
                    #expect(found == nil || found == target, "slot \(slot) damaged into id \(ids[target]): found row \(found.map(String.init) ?? "none")")
                }
            }
        }
    }

    @Test(arguments: sparseSets, [16, 32])
    func sparseFixedFindsEveryIDAndNoGap(set: String, rowsPerPart: Int) throws {
        let ids = Self.sparseIDs(set)
        let recs = records(ids, sizes: Self.fixedSizes)
        let built = try build(ids, recs, rowsPerPart: rowsPerPart)
        var random = SeededRandom(seed: 99)
        try check(built, ids: ids, records: recs, absent: absentCandidates(ids) + (0..<500).map { _ in random.next() },
                  rowsPerPart: rowsPerPart, kind: .sparseFixed)
    }

    @Test(arguments: sparseSets, [(16, false), (32, false), (16, true), (32, true)])
    func sparseMixedFindsEveryIDAndNoGap(set: String, layout: (rowsPerPart: Int, sizeClasses: Bool)) throws {
        let ids = Self.sparseIDs(set)
        var recs = records(ids, sizes: Self.mixedSizes)
        recs[0] = [UInt8](repeating: 3, count: 73)
        recs[1] = [UInt8](repeating: 4, count: 41)   // at least two sizes, whatever the hash picks
        let built = try build(ids, recs, rowsPerPart: layout.rowsPerPart, sizeClassIndex: layout.sizeClasses)
        var random = SeededRandom(seed: 98)
        try check(built, ids: ids, records: recs, absent: absentCandidates(ids) + (0..<500).map { _ in random.next() },
                  rowsPerPart: layout.rowsPerPart, kind: layout.sizeClasses ? .sparseSized : .sparseGrouped)
    }

    /// Random mixed segments, dense and sparse, with u16 and u32 ends, parts of awkward row
    /// counts: every row is found at exactly its bytes, and FORMAT.md's reading (`DocSegment`)
    /// places it at the same offset.
    @Test(arguments: [(16, 2), (48, 2), (96, 4), (4096, 2), (4096, 4)])
    func groupEntriesPlaceEveryRowOfRandomMixedSegments(rowsPerPart: Int, width: Int) throws {
        var random = SeededRandom(seed: UInt64(rowsPerPart * 10 + width))
        for trial in 0..<6 {
            let n = 1 + Int(random.next() % 700)
            let sparse = trial % 2 == 1
            var ids: [UInt64] = []
            var id = random.next() % 1000
            for _ in 0..<n {
                ids.append(id)
                id += sparse ? 1 + random.next() % 50 : 1
            }
            // Sizes 1…300 (u16 ends) or up to 6,000 (u32 ends: 29 of them overflow u16).
            let largest = width == 2 ? 300 : 6000
            var recs = ids.map { id in (0..<(1 + Int(random.next() % UInt64(largest)))).map { UInt8(truncatingIfNeeded: id &+ UInt64($0)) } }
            if n > 1 && recs[0].count == recs[1].count { recs[1].append(7) }   // two sizes at least
            let built = try build(ids, recs, rowsPerPart: rowsPerPart, maximumRecordSize: width == 2 ? 300 : 6001)
            try check(built, ids: ids, records: recs, absent: absentCandidates(ids), rowsPerPart: rowsPerPart,
                      kind: n == 1 ? .denseFixed : sparse ? .sparseGrouped : .denseGrouped)
            guard n > 1 else { continue }
            let doc = DocSegment(part0: built.part0)
            #expect(doc.end == built.part0.count && Int(doc.classes) == width)
            try built.part0.withUnsafeBytes { p0 in
                let index = try SegmentIndex(part0: p0)
                for r in 0..<n {
                    let location = doc.location(ofRow: r)
                    let code = index.record(ofRow: r, partLength: built.parts[location.part - 1].count)
                    #expect(code?.offset == location.offset && code?.length == location.length, "row \(r)")
                }
            }
        }
    }

    /// The writer picks u16 ends when a group of the largest records fits them, and refuses a
    /// record larger than it was told that would overflow them.
    @Test func groupEntryWidthFollowsTheLargestRecord() throws {
        #expect(GroupEntryBuilder.width(maximumRecordSize: 2259) == 2)   // 29 × 2259 = 65511
        #expect(GroupEntryBuilder.width(maximumRecordSize: 2260) == 4)
        #expect(GroupEntryBuilder.width(maximumRecordSize: nil) == 4)
        var writer = try SegmentWriter(rowsPerPart: 64, maximumRecordSize: 100)
        let small = [UInt8](repeating: 1, count: 10), large = [UInt8](repeating: 2, count: 70_000)
        _ = try small.withUnsafeBytes { try writer.append(id: 1, record: $0) }
        #expect(throws: SegmentFormatError.self) { _ = try large.withUnsafeBytes { try writer.append(id: 2, record: $0) } }
    }

    /// Any flipped bit in the group entries makes the rows of that entry refuse (their check
    /// fails), and never gives any row another row's bytes; a re-checked entry with a wrong
    /// base is caught by `groupEntriesProblem`.
    @Test func damagedGroupEntryNeverGivesAnotherRow() throws {
        let ids = (0..<140).map { UInt64($0) * 3 }
        let recs = records(ids, sizes: Self.mixedSizes)
        let built = try build(ids, recs, rowsPerPart: 64)
        let header = try built.part0.withUnsafeBytes { try SegmentHeader.decode($0) }
        #expect(header.kind == .sparseGrouped)
        let entriesStart = header.groupsOffset
        for bit in 8 * entriesStart..<8 * built.part0.count {
            var part0 = built.part0
            part0[bit / 8] ^= 1 << (bit % 8)
            let damaged = (bit / 8 - entriesStart) / 64
            try part0.withUnsafeBytes { p0 in
                let index = try SegmentIndex(part0: p0)
                for r in 0..<ids.count {
                    let p = index.part(ofRow: r)
                    let part = built.parts[p - 1]
                    let location = index.record(ofRow: r, partLength: part.count)
                    if index.entryOffset(ofRow: r).entry == damaged {
                        #expect(location == nil, "bit \(bit): row \(r) of the damaged entry answered")
                    } else if let location {
                        #expect(Array(part[location.offset..<location.offset + location.length]) == recs[r], "bit \(bit): row \(r)")
                    }
                }
            }
        }
        // A base moved by one record with its check word recomputed: lookups cannot tell, the
        // whole-index check can.
        var part0 = built.part0
        let second = entriesStart + 64
        Self.setField(&part0, second, 4, Self.field(part0, second, 4) + 73)
        Self.setField(&part0, second + 62, 2, 0)
        let check = stride(from: 0, to: 64, by: 2).reduce(UInt64(0)) { $0 ^ Self.field(part0, second + $1, 2) } ^ 1
        Self.setField(&part0, second + 62, 2, check)
        let parts = built.parts
        try part0.withUnsafeBytes { p0 in
            let index = try SegmentIndex(part0: p0)
            try parts[0].withUnsafeBytes { first in
                try parts[1].withUnsafeBytes { second in
                    try parts[2].withUnsafeBytes { third in
                        let problem = Store.groupEntriesProblem(index, parts: [first, second, third])
                        #expect(problem == "group entry 1 does not start where the previous one ended", "\(problem as Any)")
                        _ = try SegmentIndex(part0: p0)
                    }
                }
            }
        }
        try built.part0.withUnsafeBytes { p0 in
            let index = try SegmentIndex(part0: p0)
            try parts[0].withUnsafeBytes { first in
                try parts[1].withUnsafeBytes { second in
                    try parts[2].withUnsafeBytes { third in
                        #expect(Store.groupEntriesProblem(index, parts: [first, second, third]) == nil)
                    }
                }
            }
        }
    }

    @Test func singleRowSegmentsOfEveryExtremeID() throws {
        for id: UInt64 in [0, 1, 1 << 63, .max] {
            let built = try build([id], [[1, 2, 3]], rowsPerPart: 16)
            try check(built, ids: [id], records: [[1, 2, 3]], absent: [id &- 1, id &+ 1, 0, .max], rowsPerPart: 16, kind: .denseFixed)
        }
    }

    /// The directory entries hold, for bucket b, the number of rows whose id is in a lower bucket.
    @Test func directoryEntriesCountRowsOfLowerBuckets() throws {
        let ids = Self.sparseIDs("clustered")
        let built = try build(ids, records(ids, sizes: [9]), rowsPerPart: 64)
        let header = try built.part0.withUnsafeBytes { try SegmentHeader.decode($0) }
        let shift = UInt64(Self.field(built.part0, 48, 4))
        #expect(shift == UInt64(header.directoryShift))
        let buckets = Int((ids.last! - ids.first!) >> shift) + 1
        let start = 64 + 8 * ids.count
        for b in 0...buckets {
            let below = ids.filter { Int(($0 - ids.first!) >> shift) < b }.count
            #expect(Self.field(built.part0, start + 4 * b, 4) == UInt64(below), "directory entry \(b)")
        }
        #expect(start + 4 * (buckets + 1) == built.part0.count)
    }

    /// `emb_segment_locate` (the batched probe of lookups in one segment) gives every id the
    /// record `SegmentIndex.row(of:)` and `record(ofRow:)` give it, or none when they give none.
    func expectLocateAgrees(_ part0: [UInt8], parts: [[UInt8]], probes: [UInt64], _ what: String) throws {
        try part0.withUnsafeBytes { p0 in
            let index = try SegmentIndex(part0: p0)
            let buffers = parts.map { part in
                let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(part.count, 1), alignment: 8)
                copy.copyBytes(from: part)
                return UnsafeRawBufferPointer(start: copy.baseAddress, count: part.count)
            }
            defer { buffers.forEach { UnsafeMutableRawBufferPointer(mutating: $0).deallocate() } }
            let records = buffers.map { emb_record(start: $0.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                                   end: ($0.baseAddress! + $0.count).assumingMemoryBound(to: UInt8.self)) }
            try records.withUnsafeBufferPointer { records in
                guard var rows = index.segmentRows(parts: records.baseAddress!) else {
                    Issue.record("\(what): a segment of kind \(index.header.kind), which emb_segment_locate does not take")
                    return
                }
                var out = [emb_record](repeating: emb_record(start: nil, end: nil), count: probes.count)
                let found = emb_segment_locate(&rows, probes, probes.count, &out)
                var expected = 0
                for (i, id) in probes.enumerated() {
                    let swift = index.row(of: id).flatMap { r in index.record(ofRow: r, in: buffers[index.part(ofRow: r) - 1]) }
                    if swift != nil { expected += 1 }
                    #expect(out[i].start.map(UnsafeRawPointer.init) == swift?.baseAddress && (swift == nil || out[i].end - out[i].start == swift!.count),
                            "\(what): id \(id)")
                }
                #expect(found == expected, "\(what)")
            }
        }
    }

    @Test(arguments: sparseSets)
    func batchedSparseLocateAgreesWithTheIndex(set: String) throws {
        let ids = Self.sparseIDs(set)
        let built = try build(ids, records(ids, sizes: [9]), rowsPerPart: 16)
        var random = SeededRandom(seed: 42)
        var probes = ids + absentCandidates(ids) + (0..<500).map { _ in random.next() }
        probes.shuffle(using: &random)
        try expectLocateAgrees(built.part0, parts: built.parts, probes: probes, set)
        // Damaged ids and directory entries: the batched probe loses or keeps exactly what the index does.
        let directory = 64 + 8 * ids.count
        for round in 0..<20 {
            var part0 = built.part0
            let field = round % 2 == 0 ? 64 + 8 * Int(random.next() % UInt64(ids.count)) : directory + 4 * Int(random.next() % UInt64((part0.count - directory) / 4))
            Self.setField(&part0, field, round % 2 == 0 ? 8 : 4, round % 2 == 0 ? ids[Int(random.next() % UInt64(ids.count))] : random.next() % 1000)
            try expectLocateAgrees(part0, parts: built.parts, probes: probes, "\(set), damage round \(round)")
        }
    }

    /// Group entries (mixed record sizes), dense and sparse ids, W = 2 and 4: the batched probe
    /// finds what the index finds, also when entry bytes are damaged (every 7th bit of the entries).
    @Test(arguments: [false, true], [nil, 70_000])
    func batchedLocateOfGroupedRowsAgreesWithTheIndex(sparse: Bool, largestRecord: Int?) throws {
        let ids = sparse ? Self.sparseIDs("random64") : (0..<300).map { UInt64($0) + 1_000 }
        let built = try build(ids, records(ids, sizes: Self.mixedSizes), rowsPerPart: 64, maximumRecordSize: largestRecord)
        let header = try built.part0.withUnsafeBytes { try SegmentHeader.decode($0) }
        #expect(header.kind == (sparse ? .sparseGrouped : .denseGrouped) && header.endWidth == (largestRecord == nil ? 2 : 4))
        var random = SeededRandom(seed: 7)
        let probes = (ids + absentCandidates(ids) + (0..<300).map { _ in random.next() }).shuffled(using: &random)
        try expectLocateAgrees(built.part0, parts: built.parts, probes: probes, "undamaged")
        for bit in stride(from: 8 * header.groupsOffset, to: 8 * built.part0.count, by: 7) {
            var part0 = built.part0
            part0[bit / 8] ^= 1 << (bit % 8)
            try expectLocateAgrees(part0, parts: built.parts, probes: probes, "bit \(bit)")
        }
    }

    // MARK: - Damage

    /// A damaged sparse index may lose rows but never answers with a row that holds another id.
    @Test func damagedDirectoryNeverAnswersAnotherID() throws {
        let ids = Self.sparseIDs("random64")
        let built = try build(ids, records(ids, sizes: [9]), rowsPerPart: 32)
        let start = 64 + 8 * ids.count
        let entries = (built.part0.count - start) / 4
        var random = SeededRandom(seed: 5)
        for _ in 0..<20 {
            var part0 = built.part0
            for _ in 0..<4 { Self.setField(&part0, start + 4 * Int(random.next() % UInt64(entries)), 4, random.next() % 1000) }
            try part0.withUnsafeBytes { p0 in
                let index = try SegmentIndex(part0: p0)
                for id in ids + (0..<200).map({ _ in random.next() }) {
                    if let row = index.row(of: id) { #expect(row < ids.count && ids[row] == id) }
                }
            }
        }
    }

    /// Group offsets or size classes that do not fit the part give no record, never bytes
    /// outside it.
    @Test func damagedSizedIndexGivesNoRecordOutsideThePart() throws {
        let ids = (0..<40).map(UInt64.init)
        let recs = records(ids, sizes: Self.mixedSizes)
        let built = try build(ids, recs, rowsPerPart: 48, sizeClassIndex: true)
        let header = try built.part0.withUnsafeBytes { try SegmentHeader.decode($0) }
        let partLength = built.parts[0].count
        var offsets = built.part0
        Self.setField(&offsets, header.groupsOffset + 4, 4, UInt64(partLength))   // group 1 starts at the end
        try offsets.withUnsafeBytes { p0 in
            let index = try SegmentIndex(part0: p0)
            for r in 16..<32 { #expect(index.record(ofRow: r, partLength: partLength) == nil) }
            #expect(index.record(ofRow: 3, partLength: partLength) != nil)
        }
        var classes = built.part0
        classes[header.classesOffset + 20] = 200   // class 200 of 4
        try classes.withUnsafeBytes { p0 in
            let index = try SegmentIndex(part0: p0)
            for r in 20..<32 { #expect(index.record(ofRow: r, partLength: partLength) == nil) }
            #expect(index.record(ofRow: 19, partLength: partLength) != nil)
        }
        // A part shorter than the index says: the rows past its end are refused.
        try built.part0.withUnsafeBytes { p0 in
            let index = try SegmentIndex(part0: p0)
            #expect(index.record(ofRow: 39, partLength: partLength - 1) == nil)
            #expect(index.record(ofRow: 0, partLength: partLength - 1) != nil)
        }
    }

    // MARK: - Header checks

    /// Decoding refuses each kind of bad header with a message that says what is wrong.
    @Test func headerDecodeRefusesBadHeadersWithReasons() throws {
        let sparseIDs = (0..<50).map { UInt64($0) * 10 }
        let sparse = try build(sparseIDs, records(sparseIDs, sizes: Self.mixedSizes), rowsPerPart: 16).part0
        let denseIDs = (0..<50).map(UInt64.init)
        let dense = try build(denseIDs, records(denseIDs, sizes: [9]), rowsPerPart: 16).part0
        func reason(_ bytes: [UInt8]) -> String? {
            bytes.withUnsafeBytes { p0 in
                do {
                    _ = try SegmentIndex(part0: p0)
                    return nil
                } catch let error as SegmentFormatError {
                    return error.reason
                } catch {
                    return "unexpected \(error)"
                }
            }
        }
        func mutated(_ base: [UInt8], _ change: (inout [UInt8]) -> Void) -> [UInt8] {
            var bytes = base
            change(&bytes)
            return bytes
        }
        #expect(reason(sparse) == nil)
        #expect(reason(dense) == nil)
        let cases: [(String, [UInt8], String)] = [
            ("short", Array(sparse.prefix(63)), "less than the 64-byte header"),
            ("magic", mutated(sparse) { $0[0] = UInt8(ascii: "X") }, "magic ESEG"),
            ("kind 0", mutated(sparse) { Self.setField(&$0, 4, 4, 0) }, "unknown segment kind 0"),
            ("kind 7", mutated(sparse) { Self.setField(&$0, 4, 4, 7) }, "unknown segment kind 7"),
            ("kind 5", mutated(sparse) { Self.setField(&$0, 4, 4, 5) }, "dense segment ids 0…490 do not span 50 rows"),
            ("algorithm 2", mutated(sparse) { Self.setField(&$0, 52, 4, 2) }, "unknown checksum algorithm 2"),
            ("end width 3", mutated(sparse) { Self.setField(&$0, 44, 4, 3) }, "grouped segment with stride 0 and end width 3 (2 or 4)"),
            ("rows 0", mutated(sparse) { Self.setField(&$0, 8, 8, 0) }, "row count 0"),
            ("part count", mutated(sparse) { Self.setField(&$0, 36, 4, 3) }, "part count 3 does not match 50 rows of 16"),
            ("rows per part 24", mutated(sparse) { Self.setField(&$0, 40, 4, 24) }, "rows per part 24 is not a positive multiple of 16"),
            ("rows per part 0", mutated(dense) { Self.setField(&$0, 40, 4, 0) }, "rows per part 0"),
            ("part 0 longer", sparse + [0], "part 0 has \(sparse.count + 1) bytes"),
            ("part 0 shorter", Array(sparse.dropLast()), "part 0 has \(sparse.count - 1) bytes"),
            ("dense part 0 longer", dense + [0, 0, 0, 0], "needs 64"),
            ("dense span", mutated(dense) { Self.setField(&$0, 24, 8, 60) }, "do not span 50 rows"),
            ("first > last", mutated(dense) { Self.setField(&$0, 16, 8, 100) }, "first id 100 > last id 49"),
            ("sparse span", mutated(sparse) { Self.setField(&$0, 24, 8, 20) }, "cannot hold 50 distinct rows"),
            ("shift", mutated(sparse) { Self.setField(&$0, 48, 4, 0) }, "directory shift 0 gives more buckets than rows"),
            ("dense shift", mutated(dense) { Self.setField(&$0, 48, 4, 2) }, "dense segment with directory shift 2"),
            ("grouped stride", mutated(sparse) { Self.setField(&$0, 32, 4, 9) }, "grouped segment with stride 9"),
            ("sized stride", mutated(sparse) { Self.setField(&$0, 4, 4, 4); Self.setField(&$0, 32, 4, 9) }, "sized segment with stride 9"),
            ("fixed classes", mutated(dense) { Self.setField(&$0, 44, 4, 2) }, "fixed segment with stride 9 and 2 size classes"),
            ("fixed stride 0", mutated(dense) { Self.setField(&$0, 32, 4, 0) }, "fixed segment with stride 0"),
        ]
        for (name, bytes, expected) in cases {
            let got = reason(bytes)
            #expect(got?.contains(expected) == true, "\(name): got \(got ?? "no error"), expected \(expected)")
        }
    }

    // MARK: - Writer misuse

    @Test func writerRefusesBadInput() throws {
        func appendError(_ ids: [UInt64], _ records: [[UInt8]], sizeClasses: Bool = false) -> String? {
            do {
                var writer = try SegmentWriter(rowsPerPart: 16, sizeClassIndex: sizeClasses)
                for (id, record) in zip(ids, records) { _ = try record.withUnsafeBytes { try writer.append(id: id, record: $0) } }
                _ = try writer.finish()
                return nil
            } catch let error as SegmentFormatError {
                return error.reason
            } catch {
                return "unexpected \(error)"
            }
        }
        #expect(appendError([2, 1], [[1], [1]])?.contains("strictly ascending: 2 then 1") == true)
        #expect(appendError([5, 5], [[1], [1]])?.contains("strictly ascending: 5 then 5") == true)
        #expect(appendError([.max, 0], [[1], [1]])?.contains("strictly ascending") == true)
        #expect(appendError([1, 2], [[1], []])?.contains("record of 0 bytes") == true)
        #expect(appendError([], [])?.contains("at least one row") == true)
        #expect(appendError([1, 2, 3], [[1], [1, 2], [1, 2, 3]]) == nil)
        // 256 distinct record sizes cannot fit the u8 size classes of kinds 2 and 4; group
        // entries have no such limit.
        let many = (0..<256).map(UInt64.init)
        #expect(appendError(many, many.map { [UInt8](repeating: 1, count: Int($0) + 1) }, sizeClasses: true)?.contains("more than 255 record sizes") == true)
        #expect(appendError(Array(many.prefix(255)), many.prefix(255).map { [UInt8](repeating: 1, count: Int($0) + 1) }, sizeClasses: true) == nil)
        #expect(appendError(many, many.map { [UInt8](repeating: 1, count: Int($0) + 1) }) == nil)
        for rowsPerPart in [0, 8, 24, 100, -16] {
            #expect(throws: SegmentFormatError.self, "rows per part \(rowsPerPart)") { try SegmentWriter(rowsPerPart: rowsPerPart) }
        }
    }

    /// A refused append leaves the writer as it was: later rows still build a correct segment.
    @Test func refusedAppendLeavesTheWriterUsable() throws {
        var writer = try SegmentWriter(rowsPerPart: 16)
        let record: [UInt8] = [7, 7]
        _ = try record.withUnsafeBytes { try writer.append(id: 10, record: $0) }
        #expect(throws: SegmentFormatError.self) { _ = try record.withUnsafeBytes { try writer.append(id: 9, record: $0) } }
        _ = try record.withUnsafeBytes { try writer.append(id: 11, record: $0) }
        let (last, part0) = try writer.finish()
        #expect(last == [7, 7, 7, 7])
        try check(Built(parts: [try #require(last)], part0: part0), ids: [10, 11], records: [record, record],
                  absent: [9, 12], rowsPerPart: 16, kind: .denseFixed)
    }

    // MARK: - Checksum

    @Test func fnv1aChecksumOfOlderSegments() throws {
        // Published FNV-1a 64 vectors check the independent implementation, and the store's.
        #expect(Self.fnv1a([]) == 0xcbf2_9ce4_8422_2325)
        #expect(Self.fnv1a([Array("a".utf8)]) == 0xaf63_dc4c_8601_ec8c)
        #expect(Self.fnv1a([Array("foobar".utf8)]) == 0x8594_4171_f739_67e8)
        var sum = SegmentChecksum(.fnv1a64)
        Array("foo".utf8).withUnsafeBytes { sum.update($0) }
        Array("bar".utf8).withUnsafeBytes { sum.update($0) }   // pieces run on as one stream
        #expect(sum.value == 0x8594_4171_f739_67e8)

        // A writer asked for an older segment names algorithm 0 and sums as versions 2–3 did.
        let ids = (0..<70).map { UInt64($0) * 5 }
        let recs = records(ids, sizes: Self.mixedSizes)
        var writer = try SegmentWriter(rowsPerPart: 16, checksum: .fnv1a64)
        var parts: [[UInt8]] = []
        for (id, record) in zip(ids, recs) {
            if let full = try record.withUnsafeBytes({ try writer.append(id: id, record: $0) }) { parts.append(full) }
        }
        let (last, part0) = try writer.finish()
        parts += last.map { [$0] } ?? []
        #expect(Self.field(part0, 52, 4) == 0)
        #expect(Self.field(part0, 56, 8) == Self.fnv1a(parts + [Array(part0[..<56]), Array(part0[64...])]))
        let header = try part0.withUnsafeBytes { try SegmentHeader.decode($0) }
        #expect(header.checksumAlgorithm == .fnv1a64)
    }

    @Test func blockMix64KernelMatchesTheDefinition() throws {
        // The C kernel (eight blocks side by side), its scalar twin and FORMAT.md's definition
        // written out in Swift agree on lengths around the 8-byte word, the 1 KiB block and the
        // eight-block stride, and on piece numbers up to 2³² − 1.
        var rng = SeededRandom(seed: 7)
        for length in [0, 1, 7, 8, 9, 1023, 1024, 1025, 2047, 8 * 1024 - 1, 8 * 1024, 8 * 1024 + 1, 9 * 1024 + 5, 17 * 1024 + 3, 40_000] {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            for piece: UInt32 in [0, 1, 7, .max] {
                let expected = FormatDocTests.blockMix64Piece(bytes, piece: UInt64(piece))
                bytes.withUnsafeBytes { raw in
                    let base = raw.baseAddress ?? UnsafeRawPointer(bitPattern: 16)!
                    #expect(emb_checksum_piece(base, length, piece) == expected, "length \(length), piece \(piece)")
                    #expect(emb_checksum_piece_reference(base, length, piece) == expected, "length \(length), piece \(piece)")
                }
            }
        }
        // An empty piece adds nothing; pieces are numbered in the order they are given.
        var sum = SegmentChecksum(.blockMix64)
        [UInt8]().withUnsafeBytes { sum.update($0) }
        #expect(sum.value == 0)
        Array("foobar".utf8).withUnsafeBytes { sum.update($0) }
        #expect(sum.value == FormatDocTests.blockMix64Piece(Array("foobar".utf8), piece: 1))
        // Zero bytes past the end are not the same piece: the length seeds every block.
        #expect(FormatDocTests.blockMix64Piece([1, 2, 3], piece: 0) != FormatDocTests.blockMix64Piece([1, 2, 3, 0], piece: 0))
    }

    @Test func blockMix64CatchesEveryFlippedBit() throws {
        // Every bit of every data part and of part 0 but the checksum field, flipped one at a
        // time, changes the checksum (each step of a block's chain is a bijection, so this holds
        // by construction; the test checks the implementation keeps it).
        let ids = (0..<70).map { UInt64($0) * 5 }
        let built = try build(ids, records(ids, sizes: Self.mixedSizes), rowsPerPart: 16)
        #expect(built.parts.count == 5)
        func checksum(_ parts: [[UInt8]], _ part0: [UInt8]) -> UInt64 {
            let pointers = parts.map { part in UnsafeRawBufferPointer(start: part.withUnsafeBytes { UnsafeRawPointer($0.baseAddress!) }, count: part.count) }
            return part0.withUnsafeBytes { SegmentChecksum.of(parts: pointers, part0: $0, algorithm: .blockMix64) }
        }
        let stored = Self.field(built.part0, 56, 8)
        #expect(checksum(built.parts, built.part0) == stored)
        var missed: [String] = []
        for p in built.parts.indices {
            for bit in 0..<8 * built.parts[p].count {
                var parts = built.parts
                parts[p][bit / 8] ^= 1 << (bit % 8)
                if checksum(parts, built.part0) == stored { missed.append("part \(p + 1) bit \(bit)") }
            }
        }
        for bit in 0..<8 * built.part0.count where !(56 * 8..<64 * 8).contains(bit) {
            var part0 = built.part0
            part0[bit / 8] ^= 1 << (bit % 8)
            if checksum(built.parts, part0) == stored { missed.append("part 0 bit \(bit)") }
        }
        #expect(missed.isEmpty, "\(missed.prefix(10))")
        // Order matters: the same parts swapped give another value.
        #expect(checksum([built.parts[1], built.parts[0]] + built.parts[2...], built.part0) != stored)

        // A part larger than eight blocks (the kernel's interleaved path): random flips.
        var rng = SeededRandom(seed: 11)
        let large = (0..<(64 * 1024 + 77)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let clean = large.withUnsafeBytes { emb_checksum_piece($0.baseAddress!, $0.count, 3) }
        for _ in 0..<2000 {
            var flipped = large
            let bit = Int.random(in: 0..<8 * large.count, using: &rng)
            flipped[bit / 8] ^= 1 << (bit % 8)
            #expect(flipped.withUnsafeBytes { emb_checksum_piece($0.baseAddress!, $0.count, 3) } != clean, "bit \(bit)")
        }
    }
}
