// Fuzz target: segments (FORMAT.md, "Segments"): part 0 (header and index) parsed, and rows
// found and their records located the ways lookups, export and verify do.
//
// Input: chunks (FuzzSupport.Chunks): chunk 0 is part 0, chunks 1… are data parts 1…, and the
// bytes of the last chunk also give ids to look up. A segment whose part 0 parses must answer
// every lookup without a crash: `row(of:)` a row of the segment or nil, `record(ofRow:in:)` a
// record inside the part or nil, for any part bytes (a damaged part is refused, not read past).
// With all its parts present, verify's checks (checksum, sparse ids and directory, group
// entries, sized parts) run too.
@testable import EmbeddingStore
import Foundation
import FuzzSupport

/// What `SegmentView` requires of data part `p` before a reader uses it.
func usable(_ index: SegmentIndex, _ p: Int, _ part: UnsafeRawBufferPointer) -> Bool {
    let last = min(p * Int(index.header.rowsPerPart), index.count) - 1
    return index.fixedPartLength(p).map { $0 == part.count }
        ?? index.record(ofRow: last, partLength: part.count).map { $0.offset + $0.length == part.count } ?? false
}

/// Looks `r` up as a reader does, and checks the record lies in its part.
func locate(_ index: SegmentIndex, row r: Int, parts: [UnsafeRawBufferPointer]) {
    let id = index.id(atRow: r)
    if let found = index.row(of: id), found < 0 || found >= index.count { promiseBroken("row(of: \(id)) = \(found) of \(index.count)") }
    _ = index.probeAddress(of: id)
    let p = index.part(ofRow: r)
    guard p >= 1, p <= parts.count else { return }
    let part = parts[p - 1]
    if let record = index.record(ofRow: r, in: part) {
        let start = record.baseAddress.map { $0 - part.baseAddress! } ?? 0
        guard start >= 0, start + record.count <= part.count else {
            promiseBroken("row \(r)'s record at \(start) of \(record.count) bytes is outside part \(p) of \(part.count)")
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    let chunks = Chunks(UnsafeRawBufferPointer(start: data, count: size), limit: 17)
    guard chunks.count >= 1, chunks[0].count > 0, let index = try? SegmentIndex(part0: chunks[0]) else { return 0 }
    let parts = (1..<chunks.count).map { chunks[$0] }
    let n = index.count
    // The first and last rows, and rows at part boundaries.
    var rows = Set((0..<min(n, 300)).map { $0 })
    rows.formUnion((max(0, n - 40)..<n))
    let perPart = Int(index.header.rowsPerPart)
    for p in 1...min(index.partCount, 20) { rows.formUnion([(p - 1) * perPart, p * perPart - 1, p * perPart].filter { $0 < n }) }
    for r in rows.sorted() { locate(index, row: r, parts: parts) }
    // Ids in and around the range, and ids from the input's last bytes.
    let header = index.header
    var ids: [UInt64] = [header.firstID, header.lastID, header.firstID &- 1, header.lastID &+ 1, header.firstID / 2 + header.lastID / 2]
    if let tail = parts.last ?? Optional(chunks[0]) {
        let span = header.lastID &- header.firstID &+ 2   // 0 or 1 only when the range is all of u64
        for at in stride(from: 0, to: tail.count - 7, by: 8) {
            let value = tail.loadUnaligned(fromByteOffset: at, as: UInt64.self)
            ids.append(span > 1 ? header.firstID &+ value % span : value)
        }
    }
    for id in ids {
        if let r = index.row(of: id) {
            guard r >= 0, r < n else { promiseBroken("row(of: \(id)) = \(r) of \(n)") }
            guard index.id(atRow: r) == id else { promiseBroken("row(of: \(id)) = \(r), which holds id \(index.id(atRow: r))") }
            locate(index, row: r, parts: parts)
        }
    }
    // Verify's checks, once every part is there as a reader would accept it.
    guard index.partCount == parts.count, (1...parts.count).allSatisfy({ usable(index, $0, parts[$0 - 1]) }) else { return 0 }
    _ = SegmentChecksum.of(parts: parts, part0: chunks[0], algorithm: header.checksumAlgorithm)
    if header.kind.isSparse { _ = Store.sparseIndexProblem(index) }
    if header.kind.hasGroupEntries { _ = Store.groupEntriesProblem(index, parts: parts) }
    if header.kind.isSized {
        for p in 1...index.partCount {
            _ = index.record(ofRow: min(p * perPart, n) - 1, partLength: parts[p - 1].count)
        }
    }
    // Export walks every row in order.
    for r in 0..<min(n, 2_000) { locate(index, row: r, parts: parts) }
    return 0
}

/// Segments of every kind: records of `sizes` bytes (tag + filler), one per id.
func segment(ids: [UInt64], sizes: [Int], rowsPerPart: Int, checksum: SegmentChecksum.Algorithm = .blockMix64,
             sizeClassIndex: Bool = false) throws -> [UInt8] {
    var writer = try SegmentWriter(rowsPerPart: rowsPerPart, maximumRecordSize: sizes.max(), checksum: checksum, sizeClassIndex: sizeClassIndex)
    var parts: [[UInt8]] = []
    for (i, id) in ids.enumerated() {
        let record = [UInt8(3)] + (1..<sizes[i % sizes.count]).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ i) }
        if let full = try record.withUnsafeBytes({ try writer.append(id: id, record: $0) }) { parts.append(full) }
    }
    let (last, part0) = try writer.finish()
    if let last { parts.append(last) }
    return Chunks.encode([part0] + parts)
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked {
        let dense = (1000..<1040).map { UInt64($0) }
        var sparse: [UInt64] = []
        var id: UInt64 = 7
        for i in 0..<40 { id += UInt64(1 + (i * 7919) % 97); sparse.append(id) }
        let wide = (0..<30).map { UInt64($0) << 35 | UInt64($0) }
        return [
            ("dense_fixed", try segment(ids: dense, sizes: [9], rowsPerPart: 16)),
            ("sparse_fixed", try segment(ids: sparse, sizes: [9], rowsPerPart: 16)),
            ("dense_grouped", try segment(ids: dense, sizes: [9, 13, 5], rowsPerPart: 32)),
            ("sparse_grouped", try segment(ids: sparse, sizes: [9, 13, 5], rowsPerPart: 32)),
            ("sparse_grouped_wide_ends", try segment(ids: wide, sizes: [3000, 5], rowsPerPart: 16)),
            ("dense_sized_v3", try segment(ids: dense, sizes: [9, 13], rowsPerPart: 16, checksum: .fnv1a64, sizeClassIndex: true)),
            ("sparse_sized_v3", try segment(ids: sparse, sizes: [9, 13, 21], rowsPerPart: 16, checksum: .fnv1a64, sizeClassIndex: true)),
            ("one_row", try segment(ids: [42], sizes: [5], rowsPerPart: 16)),
        ].map { ($0.0, $0.1) }
    }
    return 0
}

@_cdecl("FuzzSegments_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runFuzzer(argc, argv, fuzzOne)
}
