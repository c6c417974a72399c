import CEmbeddingKernels
import EmbeddingCodecs
/// Builds a segment as a stream of rows, and finds rows in one.
///
/// Pure bytes, no LMDB: `Store.writeSegment` writes each data part as soon as it is full and
/// part 0 at the end; lookups hand the parts' map pointers back to `SegmentIndex`.
struct SegmentWriter {
    let rowsPerPart: Int
    private(set) var rowCount = 0
    private var firstID: UInt64 = 0
    private var lastID: UInt64 = 0
    /// Ids are kept only once they stop being contiguous (dense segments need none).
    private var ids: [UInt64] = []
    /// The index of sized rows: group entries (kinds 5, 6), or size classes (kinds 2, 4, for
    /// tests of the segments of format versions 2–3).
    let sizeClassIndex: Bool
    private var sizes: [UInt32] = []
    private var classes: [UInt8] = []
    private var groupOffsets: [UInt32] = []
    /// Group entries: the size of every record so far while they are all the same (no index
    /// needed), then the entries, started when a second size arrives.
    private var uniformSize: Int?
    private var entries: GroupEntryBuilder?
    private let entryWidth: Int
    private var part: [UInt8] = []
    /// An empty buffer to build the next part in once this one is handed out (`recycle`).
    private var spare: [UInt8]?
    private let expectedPartBytes: Int
    private var checksum: SegmentChecksum
    private(set) var partsWritten = 0
    var checksumAlgorithm: SegmentChecksum.Algorithm { checksum.algorithm }

    /// `rowsPerPart` must be a positive multiple of 16; `expectedPartBytes` sizes the buffer.
    /// `maximumRecordSize` (when known) lets group entries use u16 ends; a larger record than
    /// it may then be refused. `checksum` is blockmix64 and sized rows get group entries
    /// (format version 4) unless a test asks for an older segment.
    init(rowsPerPart: Int, expectedPartBytes: Int = 0, maximumRecordSize: Int? = nil,
         checksum algorithm: SegmentChecksum.Algorithm = .blockMix64, sizeClassIndex: Bool = false) throws(SegmentFormatError) {
        checksum = SegmentChecksum(algorithm)
        self.sizeClassIndex = sizeClassIndex
        entryWidth = GroupEntryBuilder.width(maximumRecordSize: maximumRecordSize)
        guard rowsPerPart >= segmentGroupRows, rowsPerPart % segmentGroupRows == 0, rowsPerPart <= 1 << 30 else {
            throw SegmentFormatError(reason: "rows per part \(rowsPerPart) is not a positive multiple of \(segmentGroupRows)")
        }
        self.rowsPerPart = rowsPerPart
        self.expectedPartBytes = expectedPartBytes
        part.reserveCapacity(expectedPartBytes)
    }

    /// Rows per part for records of at most `recordSize` bytes: about `partBytes` per part.
    static func rowsPerPart(recordSize: Int, partBytes: Int) -> Int {
        max(segmentGroupRows, partBytes / max(1, recordSize) / segmentGroupRows * segmentGroupRows)
    }

    /// Appends the record (tag + payload) of `id`, which must exceed every id appended so far.
    /// Returns the finished data part when this row filled it; the caller writes it as part
    /// `partsWritten` (1-based, counted after the call).
    mutating func append(id: UInt64, record: UnsafeRawBufferPointer) throws(SegmentFormatError) -> [UInt8]? {
        guard !record.isEmpty, record.count <= Int(UInt32.max) else { throw SegmentFormatError(reason: "record of \(record.count) bytes") }
        if rowCount == 0 {
            firstID = id
        } else {
            guard id > lastID else { throw SegmentFormatError(reason: "ids must be strictly ascending: \(lastID) then \(id)") }
            if ids.isEmpty && id != lastID + 1 {
                ids.reserveCapacity(rowCount + 1)
                for i in 0..<UInt64(rowCount) { ids.append(firstID + i) }
            }
        }
        if !ids.isEmpty || (rowCount > 0 && id != lastID + 1) { ids.append(id) }
        lastID = id
        guard part.count <= Int(UInt32.max) - record.count else { throw SegmentFormatError(reason: "a data part of more than 4 GiB") }
        if sizeClassIndex {
            try addSizeClass(record.count)
        } else {
            if uniformSize == nil { uniformSize = record.count }
            if entries == nil && record.count != uniformSize {
                // The second record size: index every row so far (all of the first size).
                var builder = GroupEntryBuilder(width: entryWidth)
                let size = uniformSize!
                for r in 0..<rowCount {
                    let start = r % rowsPerPart * size
                    try builder.add(start: start, end: start + size, startsPart: r % rowsPerPart == 0)
                }
                entries = builder
            }
            try entries?.add(start: part.count, end: part.count + record.count, startsPart: rowCount % rowsPerPart == 0)
        }
        part.append(contentsOf: record)
        rowCount += 1
        return rowCount % rowsPerPart == 0 ? takePart() : nil
    }

    /// Kinds 2, 4: the record's size class, and a group offset every 16 rows.
    private mutating func addSizeClass(_ count: Int) throws(SegmentFormatError) {
        let size = UInt32(count)
        let sizeClass: Int
        if let existing = sizes.firstIndex(of: size) {
            sizeClass = existing
        } else {
            guard sizes.count < 255 else { throw SegmentFormatError(reason: "more than 255 record sizes in one segment") }
            sizes.append(size)
            sizeClass = sizes.count - 1
        }
        if rowCount % segmentGroupRows == 0 { groupOffsets.append(UInt32(part.count)) }
        classes.append(UInt8(sizeClass))
    }

    private mutating func takePart() -> [UInt8] {
        let full = part
        full.withUnsafeBytes { checksum.update($0) }
        // The next part goes into a returned buffer, not a fresh one (16 MiB of page faults).
        part = spare ?? []
        spare = nil
        part.reserveCapacity(expectedPartBytes)
        partsWritten += 1
        return full
    }

    /// Gives back a part's buffer once it is written, to build a later part in.
    mutating func recycle(_ buffer: [UInt8]) {
        var buffer = buffer
        buffer.removeAll(keepingCapacity: true)
        spare = buffer
    }

    /// Ends the segment: returns the last, partly filled data part (if any) and part 0.
    mutating func finish() throws(SegmentFormatError) -> (lastPart: [UInt8]?, part0: [UInt8]) {
        guard rowCount >= 1 else { throw SegmentFormatError(reason: "a segment needs at least one row") }
        let lastPart = part.isEmpty ? nil : takePart()
        let sparse = !ids.isEmpty
        let sized = sizeClassIndex ? sizes.count > 1 : entries != nil
        let kind = SegmentKind(sparse: sparse, sized: sized, sizeClasses: sizeClassIndex)
        var header = SegmentHeader(kind: kind, rowCount: UInt64(rowCount),
                                   firstID: firstID, lastID: lastID, stride: sized ? 0 : UInt32(sizeClassIndex ? Int(sizes[0]) : uniformSize!),
                                   partCount: UInt32(partsWritten), rowsPerPart: UInt32(rowsPerPart),
                                   sizeClasses: kind.hasSizeClasses ? UInt32(sizes.count) : kind.hasGroupEntries ? UInt32(entryWidth) : 0,
                                   directoryShift: sparse ? SegmentHeader.directoryShift(count: rowCount, first: firstID, last: lastID) : 0,
                                   checksumAlgorithm: checksum.algorithm, checksum: 0)
        var index: [UInt8] = []
        index.reserveCapacity(header.part0Size - SegmentHeader.size)
        if sparse {
            for id in ids { appendLE(id, to: &index) }
            let shift = UInt64(header.directoryShift)
            let buckets = header.directoryEntries - 1
            var row = 0
            for b in 0...buckets {
                while row < rowCount && Int((ids[row] - firstID) >> shift) < b { row += 1 }
                appendLE(UInt32(row), to: &index)
            }
        }
        if kind.hasSizeClasses {
            for size in sizes { appendLE(size, to: &index) }
            index.append(contentsOf: classes)
            for offset in groupOffsets { appendLE(offset, to: &index) }
        }
        if kind.hasGroupEntries, let entries {
            index.append(contentsOf: repeatElement(0, count: header.groupsOffset - SegmentHeader.size - index.count))
            index.append(contentsOf: entries.finished())
        }
        var part0: [UInt8] = []
        part0.reserveCapacity(header.part0Size)
        header.encode(into: &part0)
        part0.withUnsafeBytes { checksum.update(UnsafeRawBufferPointer(rebasing: $0[0..<SegmentHeader.checksumOffset])) }
        index.withUnsafeBytes { checksum.update($0) }
        header.checksum = checksum.value
        part0.removeAll(keepingCapacity: true)
        header.encode(into: &part0)
        part0.append(contentsOf: index)
        return (lastPart, part0)
    }
}

/// A parsed part 0: finds the row of an id, and where its record lies, in O(1) expected time.
/// Reads index entries lazily (opening a segment reads only the header) and never trusts them
/// for memory safety: a damaged index can make a row missing but never reads out of bounds
/// or answers with another id's row for a sparse segment.
///
/// A class, not a struct: lookups reach it through a table view's `HotSegment`s in unsafe
/// memory, and a struct of this size was copied (memcpy) on every probe, a tenth of a pooled
/// lookup's time. Every property is a constant.
final class SegmentIndex {
    let header: SegmentHeader
    let part0: UnsafeRawPointer
    // Copied out of the header once, so that a probe is plain arithmetic on stored values.
    private let firstID: UInt64
    private let lastID: UInt64
    let isSparse: Bool
    private let isSized: Bool
    private let hasGroupEntries: Bool
    private let endWidth: Int
    private let entriesPerPart: Int
    private let rowCount: Int
    private let rowsPerPart: Int
    /// A row's part by a multiply, not a 64-bit division (which alone took a third of a pooled
    /// lookup's probe time).
    private let partDivider: PartDivider
    private let stride: Int
    private let shift: UInt64
    private let idsOffset: Int
    private let directoryOffset: Int
    private let classSizesOffset: Int
    private let classesOffset: Int
    private let groupsOffset: Int
    private let sizeClasses: Int

    /// Parses and checks `part0`; the bytes must stay valid while the index is used.
    init(part0 bytes: UnsafeRawBufferPointer) throws(SegmentFormatError) {
        header = try SegmentHeader.decode(bytes)
        part0 = bytes.baseAddress!
        firstID = header.firstID
        lastID = header.lastID
        isSparse = header.kind.isSparse
        isSized = header.kind.isSized
        hasGroupEntries = header.kind.hasGroupEntries
        endWidth = hasGroupEntries ? header.endWidth : 0
        entriesPerPart = hasGroupEntries ? header.entriesPerPart : 0
        rowCount = Int(header.rowCount)
        rowsPerPart = Int(header.rowsPerPart)
        partDivider = PartDivider(rowsPerPart: rowsPerPart)   // ≥ 16: the header checks it
        stride = Int(header.stride)
        shift = UInt64(header.directoryShift)
        idsOffset = header.idsOffset
        directoryOffset = header.directoryOffset
        classSizesOffset = header.classSizesOffset
        classesOffset = header.classesOffset
        groupsOffset = header.groupsOffset
        sizeClasses = Int(header.sizeClasses)
    }

    var count: Int { rowCount }
    var partCount: Int { Int(header.partCount) }

    @inline(__always)
    private func load<I: FixedWidthInteger>(_ offset: Int, as: I.Type = I.self) -> I {
        I(littleEndian: part0.loadUnaligned(fromByteOffset: offset, as: I.self))
    }

    /// The address an index probe for `id` reads first (for prefetching), or nil if none.
    @inline(__always)
    func probeAddress(of id: UInt64) -> UnsafeRawPointer? {
        guard id >= firstID, id <= lastID else { return nil }
        let r = id - firstID
        if isSparse { return part0 + directoryOffset + 4 * Int(r >> shift) }
        if hasGroupEntries { return part0 + entryOffset(ofRow: Int(r)).offset }
        if isSized { return part0 + classesOffset + Int(r) }
        return nil
    }

    /// The address in the ids that a probe of a sparse segment for `id` reads first (the row
    /// below its bucket, which `checkedRow` reads too), for prefetching: it reads the directory
    /// entry `probeAddress` gave. Nil for dense segments and ids outside the segment.
    @inline(__always)
    func searchAddress(of id: UInt64) -> UnsafeRawPointer? {
        guard isSparse, id >= firstID, id <= lastID else { return nil }
        let low = min(Int(load(directoryOffset + 4 * Int((id - firstID) >> shift), as: UInt32.self)), rowCount)
        return part0 + idsOffset + 8 * max(low - 1, 0)
    }

    /// This segment as `emb_segment_locate` reads it, with its data parts at `parts`; nil for
    /// the kinds it does not take (dense fixed-size rows, which the lookup kernels find from
    /// their ids themselves, and the size classes of format versions 2–3). For fixed-size
    /// records the parts must be exactly `fixedPartLength` long: the caller checks.
    func segmentRows(parts: UnsafePointer<emb_record>) -> emb_segment_rows? {
        guard header.kind == .sparseFixed || hasGroupEntries else { return nil }
        return emb_segment_rows(
            first_id: firstID, last_id: lastID, rows: UInt64(rowCount), sparse: isSparse ? 1 : 0, shift: shift,
            buckets: isSparse ? ((lastID - firstID) >> shift) + 1 : 0,
            directory: isSparse ? (part0 + directoryOffset).assumingMemoryBound(to: UInt8.self) : nil,
            ids: isSparse ? (part0 + idsOffset).assumingMemoryBound(to: UInt8.self) : nil,
            grouped: hasGroupEntries ? 1 : 0, end_width: UInt64(endWidth), entries_per_part: UInt64(entriesPerPart),
            entries: hasGroupEntries ? (part0 + groupsOffset).assumingMemoryBound(to: UInt8.self) : nil,
            rows_per_part: UInt64(rowsPerPart), stride: UInt64(stride), parts: parts)
    }

    /// The row number (0…N−1, id order) of `id`, or nil when the segment does not hold it.
    @inline(__always)
    func row(of id: UInt64) -> Int? {
        guard id >= firstID, id <= lastID else { return nil }
        if !isSparse { return Int(id - firstID) }
        let b = Int((id - firstID) >> shift)
        var low = min(Int(load(directoryOffset + 4 * b, as: UInt32.self)), rowCount)
        var high = min(Int(load(directoryOffset + 4 * (b + 1), as: UInt32.self)), rowCount)
        let idsAt = idsOffset
        while high - low > 8 {   // binary search down to a few ids (one cache line)
            let mid = (low + high) / 2
            let candidate: UInt64 = load(idsAt + 8 * mid)
            if candidate < id { low = mid + 1 } else if candidate > id { high = mid } else {
                if let r = checkedRow(mid, id) { return r }
                break   // out of order around mid (damaged): look through what is left
            }
        }
        while low < high {
            let candidate: UInt64 = load(idsAt + 8 * low)
            if candidate == id, let r = checkedRow(low, id) { return r }
            if candidate > id { return nil }   // damage past here can hide a row, never swap one
            low += 1
        }
        return nil
    }

    /// Row `r`, whose stored id is `id`, when its neighbours are below and above it; nil when
    /// not: a damaged id equal to another row's id must not hand out its own row for that id.
    @inline(__always)
    private func checkedRow(_ r: Int, _ id: UInt64) -> Int? {
        if r > 0 && load(idsOffset + 8 * (r - 1), as: UInt64.self) >= id { return nil }
        if r + 1 < rowCount && load(idsOffset + 8 * (r + 1), as: UInt64.self) <= id { return nil }
        return r
    }

    /// The id of row `r`.
    @inline(__always)
    func id(atRow r: Int) -> UInt64 {
        isSparse ? load(idsOffset + 8 * r) : firstID + UInt64(r)
    }

    /// Data part number (1…P) of row `r`.
    @inline(__always)
    func part(ofRow r: Int) -> Int { 1 + partIndex(ofRow: r) }

    /// ⌊r / rowsPerPart⌋ for a row r ≥ 0.
    @inline(__always)
    private func partIndex(ofRow r: Int) -> Int { partDivider.quotient(r) }

    /// Rows held by data part `p` (1…P).
    func rows(inPart p: Int) -> Int { min(rowsPerPart, rowCount - (p - 1) * rowsPerPart) }

    /// The expected byte length of data part `p` when records have one size, else nil.
    func fixedPartLength(_ p: Int) -> Int? {
        isSized ? nil : rows(inPart: p) * stride
    }

    /// The record of row `r` within `part`, which must be that row's data part
    /// (`part(ofRow: r)`); nil when the index does not fit the part (damage).
    @inline(__always)
    func record(ofRow r: Int, in part: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard let (offset, length) = record(ofRow: r, partLength: part.count) else { return nil }
        return UnsafeRawBufferPointer(start: part.baseAddress! + offset, count: length)
    }

    /// Offset and length of row `r`'s record within its part of `partLength` bytes; nil when the
    /// index does not fit the part (damage).
    @inline(__always)
    func record(ofRow r: Int, partLength: Int) -> (offset: Int, length: Int)? {
        if hasGroupEntries { return groupedRecord(ofRow: r, partLength: partLength) }
        let inPart = r - partIndex(ofRow: r) * rowsPerPart
        if !isSized {
            let stride = stride
            let offset = inPart * stride
            return offset + stride <= partLength ? (offset, stride) : nil
        }
        let group = r / segmentGroupRows
        var offset = Int(load(groupsOffset + 4 * group, as: UInt32.self))
        let classes = classesOffset
        let classCount = sizeClasses
        var length = 0
        for row in group * segmentGroupRows...r {
            let sizeClass = Int(load(classes + row, as: UInt8.self))
            guard sizeClass < classCount else { return nil }
            offset += length
            length = Int(load(classSizesOffset + 4 * sizeClass, as: UInt32.self))
        }
        return offset + length <= partLength ? (offset, length) : nil
    }

    /// Kinds 5, 6: the part-0 offset of row `r`'s group entry, the entry's number and the row's
    /// place in it. (The group sizes 29 and 14 are constants in each branch, so the divisions
    /// compile to multiplications.)
    @inline(__always)
    func entryOffset(ofRow r: Int) -> (offset: Int, entry: Int, slot: Int) {
        let part = partIndex(ofRow: r)
        let inPart = r - part * rowsPerPart
        let group: Int, slot: Int
        if endWidth == 2 {
            (group, slot) = (inPart / 29, inPart % 29)
        } else {
            (group, slot) = (inPart / 14, inPart % 14)
        }
        let entry = part * entriesPerPart + group
        return (groupsOffset + GroupEntry.size * entry, entry, slot)
    }

    /// Kinds 5, 6: one 64-byte entry read. nil when the entry fails its check, its ends do not
    /// rise, or the record is not inside the part (damage).
    @inline(__always)
    private func groupedRecord(ofRow r: Int, partLength: Int) -> (offset: Int, length: Int)? {
        let (offset, entryNumber, slot) = entryOffset(ofRow: r)
        let entry = part0 + offset
        guard GroupEntry.xorOfWords(entry) == UInt16(truncatingIfNeeded: entryNumber) else { return nil }
        let base = Int(UInt32(littleEndian: entry.loadUnaligned(as: UInt32.self)))
        let start: Int, end: Int
        if endWidth == 2 {
            end = Int(UInt16(littleEndian: entry.loadUnaligned(fromByteOffset: 4 + 2 * slot, as: UInt16.self)))
            start = slot == 0 ? 0 : Int(UInt16(littleEndian: entry.loadUnaligned(fromByteOffset: 2 + 2 * slot, as: UInt16.self)))
        } else {
            end = Int(UInt32(littleEndian: entry.loadUnaligned(fromByteOffset: 4 + 4 * slot, as: UInt32.self)))
            start = slot == 0 ? 0 : Int(UInt32(littleEndian: entry.loadUnaligned(fromByteOffset: 4 * slot, as: UInt32.self)))
        }
        guard start < end, base + end <= partLength else { return nil }
        return (base + start, end - start)
    }
}

/// ⌊r / p⌋ for a fixed divisor p ≥ 2 and r ≥ 0, by a multiply: with m = ⌊(2⁶⁴−1)/p⌋ + 1 =
/// ⌈2⁶⁴/p⌉, e = m·p − 2⁶⁴ < p and r·m/2⁶⁴ = r/p + r·e/(p·2⁶⁴), whose second term is below 1/p
/// when r·e < 2⁶⁴, which r ≤ (2⁶⁴−1)/p ensures: the high word of r·m is then ⌊r/p⌋. Larger r
/// (parts of more than 2²⁴ rows of a 2⁴⁰-row segment) are divided, out of line.
struct PartDivider {
    let divisor: Int
    private let reciprocal: UInt64
    private let limit: UInt64

    init(rowsPerPart p: Int) {
        precondition(p >= 2, "a part divider needs a divisor of at least 2")
        divisor = p
        limit = UInt64.max / UInt64(p)
        reciprocal = limit + 1
    }

    @inline(__always)
    func quotient(_ r: Int) -> Int {
        let row = UInt64(truncatingIfNeeded: r)
        guard row <= limit else { return divided(r) }
        return Int(truncatingIfNeeded: row.multipliedFullWidth(by: reciprocal).high)
    }

    /// Kept out of line, so that the probe stays small enough to inline.
    @inline(never)
    private func divided(_ r: Int) -> Int { r / divisor }
}
