/// Builds a segment's parts from sorted rows, and finds a row's record in them.
///
/// Pure bytes, no LMDB: the store layer (still to come) writes part 0 and the data parts as
/// LMDB values and hands their bytes back here for lookups.
struct SegmentBuilder {
    /// Part 0 (header + index) and the data parts 1…P of one segment.
    struct Parts {
        var part0: [UInt8]
        var dataParts: [[UInt8]]
    }

    /// Packs `records` (row records: tag + payload) of strictly ascending `ids`.
    /// Picks kind 1 when ids are contiguous and every record has one size, kind 2 when ids are
    /// contiguous, else kind 3: the smallest index that still finds every row.
    static func build(ids: [UInt64], records: [[UInt8]], rowsPerPart: Int) throws(SegmentFormatError) -> Parts {
        let n = ids.count
        guard n >= 1, records.count == n else { throw SegmentFormatError(reason: "a segment needs ≥ 1 row and one record per id") }
        guard rowsPerPart >= 1, rowsPerPart <= Int(UInt32.max) else { throw SegmentFormatError(reason: "rows per part \(rowsPerPart) is out of range") }
        for i in 1..<max(1, n) where ids[i] <= ids[i - 1] {
            throw SegmentFormatError(reason: "ids must be strictly ascending: \(ids[i - 1]) then \(ids[i])")
        }
        guard records.allSatisfy({ !$0.isEmpty }) else { throw SegmentFormatError(reason: "empty row record") }
        let dense = ids[n - 1] - ids[0] == UInt64(n - 1)
        let fixed = records.allSatisfy { $0.count == records[0].count }
        let kind: SegmentKind = dense ? (fixed ? .denseFixed : .denseOffsets) : .sparse

        var dataParts: [[UInt8]] = []
        var offsets: [UInt32] = []
        offsets.reserveCapacity(kind == .denseFixed ? 0 : n)
        var start = 0
        while start < n {
            let end = min(n, start + rowsPerPart)
            var part: [UInt8] = []
            part.reserveCapacity(records[start..<end].reduce(0) { $0 + $1.count })
            for r in start..<end {
                guard part.count <= Int(UInt32.max) else { throw SegmentFormatError(reason: "part of more than 4 GiB") }
                if kind != .denseFixed { offsets.append(UInt32(part.count)) }
                part.append(contentsOf: records[r])
            }
            dataParts.append(part)
            start = end
        }

        var index: [UInt8] = []
        if kind == .sparse { for id in ids { appendLE(id, to: &index) } }
        for offset in offsets { appendLE(offset, to: &index) }
        var header = SegmentHeader(kind: kind, rowCount: UInt64(n), firstID: ids[0], lastID: ids[n - 1],
                                   stride: kind == .denseFixed ? UInt32(records[0].count) : 0,
                                   partCount: UInt32(dataParts.count), rowsPerPart: UInt32(rowsPerPart), checksum: 0)
        var part0: [UInt8] = []
        header.encode(into: &part0)
        part0.append(contentsOf: index)
        header.checksum = part0.withUnsafeBytes { p0 in
            withParts(dataParts) { SegmentChecksum.of(part0: p0, dataParts: $0) }
        }
        part0.removeAll(keepingCapacity: true)
        header.encode(into: &part0)
        part0.append(contentsOf: index)
        return Parts(part0: part0, dataParts: dataParts)
    }

    private static func withParts<R>(_ parts: [[UInt8]], _ body: ([UnsafeRawBufferPointer]) -> R) -> R {
        // Arrays are contiguous and outlive the call; the pointers are used only inside `body`.
        var pointers: [UnsafeRawBufferPointer] = []
        func nest(_ i: Int) -> R {
            if i == parts.count { return body(pointers) }
            return parts[i].withUnsafeBytes { pointers.append($0); return nest(i + 1) }
        }
        return nest(0)
    }
}

/// A parsed part 0: answers "which part, and where in it" for an id without reading data parts.
struct SegmentIndex {
    let header: SegmentHeader
    let part0: UnsafeRawBufferPointer

    /// Parses and checks `part0`; the bytes must stay valid while the index is used.
    init(part0: UnsafeRawBufferPointer) throws(SegmentFormatError) {
        header = try SegmentHeader.decode(part0)
        self.part0 = part0
    }

    var rowCount: Int { Int(header.rowCount) }

    /// The row number (0…N−1, id order) of `id`, or nil when the segment does not hold it.
    func row(of id: UInt64) -> Int? {
        guard id >= header.firstID, id <= header.lastID else { return nil }
        if header.kind != .sparse { return Int(id - header.firstID) }
        var low = 0, high = rowCount   // binary search over the sorted u64 ids
        while low < high {
            let mid = (low + high) / 2
            if self.id(atRow: mid) < id { low = mid + 1 } else { high = mid }
        }
        return low < rowCount && self.id(atRow: low) == id ? low : nil
    }

    /// The id of row `r`.
    func id(atRow r: Int) -> UInt64 {
        header.kind == .sparse ? loadLE(part0, SegmentHeader.size + 8 * r) : header.firstID + UInt64(r)
    }

    /// Data part number (1…P) of row `r`.
    func part(ofRow r: Int) -> Int { 1 + r / Int(header.rowsPerPart) }

    /// Rows held by data part `p` (1…P).
    func rows(inPart p: Int) -> Int {
        let per = Int(header.rowsPerPart)
        return min(per, rowCount - (p - 1) * per)
    }

    /// Byte range of row `r`'s record within its part, whose length is `partLength`; nil when
    /// the stored offsets are inconsistent (corruption: never return some other row's bytes).
    func recordRange(ofRow r: Int, partLength: Int) -> Range<Int>? {
        let per = Int(header.rowsPerPart)
        let inPart = r % per
        let p = part(ofRow: r)
        if header.kind == .denseFixed {
            let stride = Int(header.stride)
            guard partLength == rows(inPart: p) * stride else { return nil }
            return inPart * stride..<(inPart + 1) * stride
        }
        let offsetsAt = SegmentHeader.size + (header.kind == .sparse ? 8 * rowCount : 0)
        let start = Int(loadLE(part0, offsetsAt + 4 * r) as UInt32)
        let end = inPart + 1 < rows(inPart: p) ? Int(loadLE(part0, offsetsAt + 4 * (r + 1)) as UInt32) : partLength
        if inPart == 0 && start != 0 { return nil }
        guard start < end, end <= partLength else { return nil }
        return start..<end
    }
}
