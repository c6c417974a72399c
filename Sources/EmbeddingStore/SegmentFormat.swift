import CEmbeddingKernels
import EmbeddingCodecs
/// Bytes of a packed segment, the read-optimised layer of a table (FORMAT.md, "Segments"):
/// part 0 holds a header and the id index, parts 1…P hold row records back to back.
///
/// Part 0 (little-endian, no alignment):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | magic `ESEG` |
/// | 4 | 4 | kind: 1 dense fixed, 2 dense sized, 3 sparse fixed, 4 sparse sized, 5 dense grouped, 6 sparse grouped |
/// | 8 | 8 | row count N (≥ 1) |
/// | 16 | 8 | first id |
/// | 24 | 8 | last id |
/// | 32 | 4 | stride: the record size (fixed kinds), 0 (sized kinds) |
/// | 36 | 4 | part count P = ⌈N / R⌉ |
/// | 40 | 4 | rows per part R (a multiple of 16) |
/// | 44 | 4 | size classes C: 1…255 (kinds 2, 4); end width W: 2 or 4 (kinds 5, 6); 0 (fixed kinds) |
/// | 48 | 4 | directory shift s, 0…63 (sparse kinds), 0 (dense kinds) |
/// | 52 | 4 | checksum algorithm: 0 FNV-1a 64 (format versions 2–3), 1 blockmix64 (version 4) |
/// | 56 | 8 | checksum over parts 1…P in order, then part 0's bytes 0..<56 and 64..<end |
/// | 64 | … | index, in this order: |
///
/// - sparse kinds: N × u64 ids, strictly ascending; then the directory, (B + 1) × u32 with
///   B = ((last − first) >> s) + 1: entry b is the number of rows whose id has
///   (id − first) >> s < b (so entry 0 is 0 and entry B is N);
/// - kinds 2, 4: C × u32 record sizes; N × u8 size class per row; ⌈N / 16⌉ × u32 group
///   offsets, the offset of row 16g's record within its part.
/// - kinds 5, 6 (format version 4): zero padding to an offset ≡ 48 (mod 64), then 64-byte group
///   entries, one per G rows of a part (G = 29 when W = 2, 14 when W = 4): u32 base (the part
///   offset of the group's first record), G × uW ends (each row's end, relative to base; 0 for
///   rows the group lacks), padding, and a u16 check making the XOR of the entry's 32 u16 words
///   the entry's number mod 2¹⁶.
///
/// Row r (id order) is in part 1 + r / R. Fixed kinds: its record starts at (r mod R) · stride.
/// Kinds 2, 4: at the offset of its group plus the sizes of the rows before it in the group.
/// Kinds 5, 6: at base + the end of the row before it in its group (0 for the first), one entry
/// (one cache line, as LMDB places a large value 16 bytes into a page) read per row.
enum SegmentKind: UInt32, Sendable {
    case denseFixed = 1
    case denseSized = 2
    case sparseFixed = 3
    case sparseSized = 4
    /// Sized kinds whose index is one 64-byte entry of record ends per group of rows (version 4).
    case denseGrouped = 5
    case sparseGrouped = 6

    /// The kind a writer uses: sized rows get group entries, unless `sizeClasses` asks for the
    /// index of format versions 2–3 (tests of older segments).
    init(sparse: Bool, sized: Bool, sizeClasses: Bool = false) {
        switch (sparse, sized) {
        case (false, false): self = .denseFixed
        case (false, true): self = sizeClasses ? .denseSized : .denseGrouped
        case (true, false): self = .sparseFixed
        case (true, true): self = sizeClasses ? .sparseSized : .sparseGrouped
        }
    }

    var isSparse: Bool { self == .sparseFixed || self == .sparseSized || self == .sparseGrouped }
    var isSized: Bool { self != .denseFixed && self != .sparseFixed }
    /// Kinds 2 and 4: a size class byte per row and an offset per 16 rows.
    var hasSizeClasses: Bool { self == .denseSized || self == .sparseSized }
    /// Kinds 5 and 6: 64-byte entries of record ends.
    var hasGroupEntries: Bool { self == .denseGrouped || self == .sparseGrouped }
}

/// The 64-byte group entries of kinds 5 and 6 (FORMAT.md "Group entries").
enum GroupEntry {
    static let size = 64
    /// Entries start at a part-0 offset ≡ 48 (mod 64): a value of more than a page sits 16 bytes
    /// (LMDB's page header) past a page boundary, so each entry is then one cache line.
    static let alignmentOffset = 48
    /// Rows per entry for an end width of `width` bytes (2 or 4).
    static func rows(width: Int) -> Int { width == 2 ? 29 : 14 }
    /// The largest end a `width`-byte field holds.
    static func largestEnd(width: Int) -> Int { width == 2 ? Int(UInt16.max) : Int(UInt32.max) }
    /// Where the check word sits.
    static let checkOffset = 62

    /// The check word of an entry whose other bytes are `entry` (its bytes 62–63 taken as 0):
    /// the XOR of all 32 u16 words of the entry must be its number mod 2¹⁶.
    @inline(__always)
    static func xorOfWords(_ entry: UnsafeRawPointer) -> UInt16 {
        var x = entry.loadUnaligned(as: UInt64.self) ^ entry.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
            ^ entry.loadUnaligned(fromByteOffset: 16, as: UInt64.self) ^ entry.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
            ^ entry.loadUnaligned(fromByteOffset: 32, as: UInt64.self) ^ entry.loadUnaligned(fromByteOffset: 40, as: UInt64.self)
            ^ entry.loadUnaligned(fromByteOffset: 48, as: UInt64.self) ^ entry.loadUnaligned(fromByteOffset: 56, as: UInt64.self)
        x = UInt64(littleEndian: x)
        x ^= x >> 32
        x ^= x >> 16
        return UInt16(truncatingIfNeeded: x)
    }

    /// Entries for data part p's `rows` rows.
    static func count(rows: Int, width: Int) -> Int { (rows + Self.rows(width: width) - 1) / Self.rows(width: width) }
}

/// What is wrong with a segment's bytes.
struct SegmentFormatError: Error, CustomStringConvertible, Equatable {
    let reason: String
    var description: String { reason }
}

/// Rows in one group of a sized segment: one u32 offset per group, one size class byte per row.
let segmentGroupRows = 16

/// The fixed 64-byte header of part 0, and where each index array starts.
struct SegmentHeader: Equatable, Sendable {
    static let magic: [UInt8] = Array("ESEG".utf8)
    static let size = 64
    /// Where the checksum field starts; the checksum covers the header bytes before it.
    static let checksumOffset = 56

    var kind: SegmentKind
    var rowCount: UInt64
    var firstID: UInt64
    var lastID: UInt64
    var stride: UInt32
    var partCount: UInt32
    var rowsPerPart: UInt32
    /// Field 44: the number of size classes C (kinds 2, 4), the end width W in bytes (kinds 5, 6).
    var sizeClasses: UInt32
    var directoryShift: UInt32
    var checksumAlgorithm: SegmentChecksum.Algorithm = .blockMix64
    var checksum: UInt64

    /// Directory entries B + 1 (sparse kinds), else 0.
    var directoryEntries: Int {
        kind.isSparse ? Int((lastID - firstID) >> UInt64(directoryShift)) + 2 : 0
    }
    var idsOffset: Int { Self.size }
    var directoryOffset: Int { idsOffset + (kind.isSparse ? 8 * Int(rowCount) : 0) }
    var classSizesOffset: Int { directoryOffset + 4 * directoryEntries }
    var classesOffset: Int { classSizesOffset + (kind.hasSizeClasses ? 4 * Int(sizeClasses) : 0) }
    /// Kinds 2, 4: the u32 group offsets. Kinds 5, 6: the first group entry, after the padding.
    var groupsOffset: Int {
        if kind.hasGroupEntries {
            let end = classSizesOffset
            return end + (GroupEntry.alignmentOffset - end % GroupEntry.size + GroupEntry.size) % GroupEntry.size
        }
        return classesOffset + (kind.hasSizeClasses ? Int(rowCount) : 0)
    }
    /// Kinds 5, 6: the end width W and rows per entry G.
    var endWidth: Int { Int(sizeClasses) }
    var rowsPerGroup: Int { GroupEntry.rows(width: endWidth) }
    /// Kinds 5, 6: entries per full data part, and in all.
    var entriesPerPart: Int { GroupEntry.count(rows: Int(rowsPerPart), width: endWidth) }
    var groupEntries: Int {
        let last = Int(rowCount) - (Int(partCount) - 1) * Int(rowsPerPart)
        return (Int(partCount) - 1) * entriesPerPart + GroupEntry.count(rows: last, width: endWidth)
    }
    var part0Size: Int {
        if kind.hasGroupEntries { return groupsOffset + GroupEntry.size * groupEntries }
        return groupsOffset + (kind.hasSizeClasses ? 4 * ((Int(rowCount) + segmentGroupRows - 1) / segmentGroupRows) : 0)
    }

    /// The directory shift for `count` sparse ids spanning `first…last`: the smallest that
    /// leaves at most ⌈count / 4⌉ directory buckets (about one u32 per four rows).
    static func directoryShift(count: Int, first: UInt64, last: UInt64) -> UInt32 {
        let buckets = UInt64(max(1, (count + 3) / 4))
        var shift: UInt32 = 0
        // B = (span >> shift) + 1 > buckets, written without the + 1 that overflows when the
        // ids span the whole id space (0…UInt64.max).
        while shift < 63 && (last - first) >> UInt64(shift) >= buckets { shift += 1 }
        return shift
    }

    func encode(into bytes: inout [UInt8]) {
        bytes.append(contentsOf: Self.magic)
        appendLE(kind.rawValue, to: &bytes)
        appendLE(rowCount, to: &bytes)
        appendLE(firstID, to: &bytes)
        appendLE(lastID, to: &bytes)
        appendLE(stride, to: &bytes)
        appendLE(partCount, to: &bytes)
        appendLE(rowsPerPart, to: &bytes)
        appendLE(sizeClasses, to: &bytes)
        appendLE(directoryShift, to: &bytes)
        appendLE(checksumAlgorithm.rawValue, to: &bytes)
        appendLE(checksum, to: &bytes)
    }

    /// Parses and checks the header and the size of part 0 in O(1): it reads no index entry.
    static func decode(_ bytes: UnsafeRawBufferPointer) throws(SegmentFormatError) -> SegmentHeader {
        guard bytes.count >= size else { throw SegmentFormatError(reason: "part 0 has \(bytes.count) bytes, less than the \(size)-byte header") }
        guard bytes[0] == magic[0], bytes[1] == magic[1], bytes[2] == magic[2], bytes[3] == magic[3] else {
            throw SegmentFormatError(reason: "part 0 does not start with magic ESEG")
        }
        let rawKind: UInt32 = loadLE(bytes, 4)
        guard let kind = SegmentKind(rawValue: rawKind) else { throw SegmentFormatError(reason: "unknown segment kind \(rawKind)") }
        let rawAlgorithm: UInt32 = loadLE(bytes, 52)
        guard let algorithm = SegmentChecksum.Algorithm(rawValue: rawAlgorithm) else {
            throw SegmentFormatError(reason: "unknown checksum algorithm \(rawAlgorithm)")
        }
        let header = SegmentHeader(kind: kind, rowCount: loadLE(bytes, 8), firstID: loadLE(bytes, 16), lastID: loadLE(bytes, 24),
                                   stride: loadLE(bytes, 32), partCount: loadLE(bytes, 36), rowsPerPart: loadLE(bytes, 40),
                                   sizeClasses: loadLE(bytes, 44), directoryShift: loadLE(bytes, 48), checksumAlgorithm: algorithm,
                                   checksum: loadLE(bytes, 56))
        let n = header.rowCount
        guard n >= 1, n <= 1 << 40 else { throw SegmentFormatError(reason: "row count \(n) is out of range") }
        let per = UInt64(header.rowsPerPart)
        guard per >= 1, per % UInt64(segmentGroupRows) == 0 else {
            throw SegmentFormatError(reason: "rows per part \(per) is not a positive multiple of \(segmentGroupRows)")
        }
        guard UInt64(header.partCount) == (n + per - 1) / per else {
            throw SegmentFormatError(reason: "part count \(header.partCount) does not match \(n) rows of \(per) per part")
        }
        guard header.firstID <= header.lastID else { throw SegmentFormatError(reason: "first id \(header.firstID) > last id \(header.lastID)") }
        if !kind.isSparse, header.lastID - header.firstID != n - 1 {
            throw SegmentFormatError(reason: "dense segment ids \(header.firstID)…\(header.lastID) do not span \(n) rows")
        }
        if kind.isSparse {
            guard header.lastID - header.firstID >= n - 1 else {
                throw SegmentFormatError(reason: "sparse segment ids \(header.firstID)…\(header.lastID) cannot hold \(n) distinct rows")
            }
            guard header.directoryShift < 64, (header.lastID - header.firstID) >> UInt64(header.directoryShift) < n else {
                throw SegmentFormatError(reason: "directory shift \(header.directoryShift) gives more buckets than rows")
            }
        } else if header.directoryShift != 0 {
            throw SegmentFormatError(reason: "dense segment with directory shift \(header.directoryShift)")
        }
        if !kind.isSized, UInt64(header.stride) * per > UInt64(UInt32.max) {
            throw SegmentFormatError(reason: "stride \(header.stride) × \(per) rows per part exceeds a 4 GiB part")
        }
        if kind.hasGroupEntries {
            guard header.stride == 0, header.sizeClasses == 2 || header.sizeClasses == 4 else {
                throw SegmentFormatError(reason: "grouped segment with stride \(header.stride) and end width \(header.sizeClasses) (2 or 4)")
            }
        } else if kind.isSized {
            guard header.stride == 0, (1...255).contains(header.sizeClasses) else {
                throw SegmentFormatError(reason: "sized segment with stride \(header.stride) and \(header.sizeClasses) size classes")
            }
        } else {
            guard header.stride > 0, header.sizeClasses == 0 else {
                throw SegmentFormatError(reason: "fixed segment with stride \(header.stride) and \(header.sizeClasses) size classes")
            }
        }
        guard bytes.count == header.part0Size else {
            throw SegmentFormatError(reason: "part 0 has \(bytes.count) bytes; kind \(kind.rawValue) with \(n) rows needs \(header.part0Size)")
        }
        return header
    }
}

/// A segment's checksum, fed its pieces in order: data parts 1…P, then part 0's header up to
/// the checksum field, then part 0's index (FORMAT.md "Checksum").
struct SegmentChecksum {
    /// Named by the header's u32 at offset 52.
    enum Algorithm: UInt32, Sendable {
        /// FNV-1a 64 over the pieces' bytes as one stream: one multiply per byte in one chain
        /// (about 0.4 GB/s). Segments of format versions 2 and 3.
        case fnv1a64 = 0
        /// The sum over 1 KiB blocks of an independent multiply–xorshift chain per block, seeded
        /// by the piece's length, the piece's number and the block's: runs at memory speed (the C
        /// kernel hashes eight blocks side by side) and vectorises in NumPy. Format version 4.
        case blockMix64 = 1
    }

    let algorithm: Algorithm
    private(set) var value: UInt64
    private var pieces: UInt32 = 0

    init(_ algorithm: Algorithm) {
        self.algorithm = algorithm
        value = algorithm == .fnv1a64 ? 0xcbf2_9ce4_8422_2325 : 0
    }

    /// Adds the next piece.
    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        switch algorithm {
        case .fnv1a64:
            var h = value
            for byte in bytes { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
            value = h
        case .blockMix64:
            // An empty piece has no blocks and adds nothing.
            if let base = bytes.baseAddress { value &+= emb_checksum_piece(base, bytes.count, pieces) }
        }
        pieces += 1
    }

    /// The checksum of a segment: its data parts, then part 0 around the checksum field.
    static func of(parts: [UnsafeRawBufferPointer], part0: UnsafeRawBufferPointer, algorithm: Algorithm) -> UInt64 {
        var sum = SegmentChecksum(algorithm)
        for part in parts { sum.update(part) }
        sum.update(UnsafeRawBufferPointer(rebasing: part0[0..<SegmentHeader.checksumOffset]))
        sum.update(UnsafeRawBufferPointer(rebasing: part0[SegmentHeader.size...]))
        return sum.value
    }
}
