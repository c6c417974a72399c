/// Bytes of a packed segment (issue 3, read-optimised layer): a header plus id index in
/// part 0, and row records packed back to back in parts 1…P.
///
/// This file is only the pure byte layout (build, parse, locate, checksum); it is not yet
/// wired into `load` or lookups, and FORMAT.md still describes version 1 until it is.
/// Layout of part 0 (little-endian, no alignment):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | magic `ESEG` |
/// | 4 | 4 | kind: 1 dense+fixed stride, 2 dense+u32 offsets, 3 sparse: u64 ids then u32 offsets |
/// | 8 | 8 | row count N (≥ 1) |
/// | 16 | 8 | first id |
/// | 24 | 8 | last id |
/// | 32 | 4 | stride: the record size for kind 1, 0 otherwise |
/// | 36 | 4 | part count P = ⌈N / rows per part⌉ |
/// | 40 | 4 | rows per part (≥ 1) |
/// | 44 | 4 | reserved, 0 |
/// | 48 | 8 | checksum: FNV-1a 64 over parts 1…P in order, then part 0 from byte 56 |
/// | 56 | … | index: none (kind 1); N × u32 (kind 2); N × u64 ids, N × u32 offsets (kind 3) |
///
/// An offset is relative to the start of the row's part; a record ends at the next row's
/// offset in the same part, or at the end of the part.
enum SegmentKind: UInt32, Sendable {
    case denseFixed = 1
    case denseOffsets = 2
    case sparse = 3
}

/// What is wrong with a segment's bytes.
struct SegmentFormatError: Error, CustomStringConvertible, Equatable {
    let reason: String
    var description: String { reason }
}

/// The fixed 56-byte header of part 0.
struct SegmentHeader: Equatable, Sendable {
    static let magic: [UInt8] = Array("ESEG".utf8)
    static let size = 56

    var kind: SegmentKind
    var rowCount: UInt64
    var firstID: UInt64
    var lastID: UInt64
    var stride: UInt32
    var partCount: UInt32
    var rowsPerPart: UInt32
    var checksum: UInt64

    func encode(into bytes: inout [UInt8]) {
        bytes.append(contentsOf: Self.magic)
        appendLE(kind.rawValue, to: &bytes)
        appendLE(rowCount, to: &bytes)
        appendLE(firstID, to: &bytes)
        appendLE(lastID, to: &bytes)
        appendLE(stride, to: &bytes)
        appendLE(partCount, to: &bytes)
        appendLE(rowsPerPart, to: &bytes)
        appendLE(UInt32(0), to: &bytes)
        appendLE(checksum, to: &bytes)
    }

    /// Parses and sanity-checks the header; does not look at the index.
    static func decode(_ bytes: UnsafeRawBufferPointer) throws(SegmentFormatError) -> SegmentHeader {
        guard bytes.count >= size else { throw SegmentFormatError(reason: "part 0 has \(bytes.count) bytes, less than the \(size)-byte header") }
        guard Array(bytes[0..<4]) == magic else { throw SegmentFormatError(reason: "part 0 does not start with magic ESEG") }
        let rawKind: UInt32 = loadLE(bytes, 4)
        guard let kind = SegmentKind(rawValue: rawKind) else { throw SegmentFormatError(reason: "unknown segment kind \(rawKind)") }
        let header = SegmentHeader(kind: kind, rowCount: loadLE(bytes, 8), firstID: loadLE(bytes, 16), lastID: loadLE(bytes, 24),
                                   stride: loadLE(bytes, 32), partCount: loadLE(bytes, 36), rowsPerPart: loadLE(bytes, 40),
                                   checksum: loadLE(bytes, 48))
        let n = header.rowCount
        guard n >= 1, n <= UInt64(UInt32.max) * 64 else { throw SegmentFormatError(reason: "row count \(n) is out of range") }
        guard header.rowsPerPart >= 1 else { throw SegmentFormatError(reason: "rows per part is 0") }
        let parts = (n + UInt64(header.rowsPerPart) - 1) / UInt64(header.rowsPerPart)
        guard UInt64(header.partCount) == parts else {
            throw SegmentFormatError(reason: "part count \(header.partCount) does not match \(n) rows of \(header.rowsPerPart) per part")
        }
        guard header.firstID <= header.lastID else { throw SegmentFormatError(reason: "first id \(header.firstID) > last id \(header.lastID)") }
        if kind != .sparse, header.lastID - header.firstID != n - 1 {
            throw SegmentFormatError(reason: "dense segment ids \(header.firstID)…\(header.lastID) do not span \(n) rows")
        }
        if kind == .sparse, header.lastID - header.firstID < n - 1 {
            throw SegmentFormatError(reason: "sparse segment ids \(header.firstID)…\(header.lastID) cannot hold \(n) distinct rows")
        }
        if (kind == .denseFixed) != (header.stride > 0) { throw SegmentFormatError(reason: "stride \(header.stride) does not fit kind \(kind.rawValue)") }
        let expected = size + Int(n) * (kind == .denseFixed ? 0 : kind == .denseOffsets ? 4 : 12)
        guard bytes.count == expected else { throw SegmentFormatError(reason: "part 0 has \(bytes.count) bytes, kind \(kind.rawValue) with \(n) rows needs \(expected)") }
        return header
    }
}

/// FNV-1a 64: simple enough to reimplement from FORMAT.md in any language. Word-wise variants
/// are faster; speed is for later, and changing the hash changes the format.
struct SegmentChecksum {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        var h = value
        for byte in bytes { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        value = h
    }

    /// The checksum a header stores: data parts in order, then part 0's index.
    static func of(part0: UnsafeRawBufferPointer, dataParts: [UnsafeRawBufferPointer]) -> UInt64 {
        var sum = SegmentChecksum()
        for part in dataParts { sum.update(part) }
        sum.update(UnsafeRawBufferPointer(rebasing: part0[min(part0.count, SegmentHeader.size)...]))
        return sum.value
    }
}
