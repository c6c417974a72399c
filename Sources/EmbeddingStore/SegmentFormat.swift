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
/// | 4 | 4 | kind: 1 dense fixed, 2 dense sized, 3 sparse fixed, 4 sparse sized |
/// | 8 | 8 | row count N (≥ 1) |
/// | 16 | 8 | first id |
/// | 24 | 8 | last id |
/// | 32 | 4 | stride: the record size (fixed kinds), 0 (sized kinds) |
/// | 36 | 4 | part count P = ⌈N / R⌉ |
/// | 40 | 4 | rows per part R (a multiple of 16) |
/// | 44 | 4 | size classes C: 1…255 (sized kinds), 0 (fixed kinds) |
/// | 48 | 4 | directory shift s, 0…63 (sparse kinds), 0 (dense kinds) |
/// | 52 | 4 | checksum algorithm: 0 FNV-1a 64 (format versions 2–3), 1 blockmix64 (version 4) |
/// | 56 | 8 | checksum over parts 1…P in order, then part 0's bytes 0..<56 and 64..<end |
/// | 64 | … | index, in this order: |
///
/// - sparse kinds: N × u64 ids, strictly ascending; then the directory, (B + 1) × u32 with
///   B = ((last − first) >> s) + 1: entry b is the number of rows whose id has
///   (id − first) >> s < b (so entry 0 is 0 and entry B is N);
/// - sized kinds: C × u32 record sizes; N × u8 size class per row; ⌈N / 16⌉ × u32 group
///   offsets, the offset of row 16g's record within its part.
///
/// Row r (id order) is in part 1 + r / R. Fixed kinds: its record starts at (r mod R) · stride.
/// Sized kinds: at the offset of its group plus the sizes of the rows before it in the group.
enum SegmentKind: UInt32, Sendable {
    case denseFixed = 1
    case denseSized = 2
    case sparseFixed = 3
    case sparseSized = 4

    init(sparse: Bool, sized: Bool) {
        switch (sparse, sized) {
        case (false, false): self = .denseFixed
        case (false, true): self = .denseSized
        case (true, false): self = .sparseFixed
        case (true, true): self = .sparseSized
        }
    }

    var isSparse: Bool { self == .sparseFixed || self == .sparseSized }
    var isSized: Bool { self == .denseSized || self == .sparseSized }
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
    var classesOffset: Int { classSizesOffset + 4 * Int(sizeClasses) }
    var groupsOffset: Int { classesOffset + (kind.isSized ? Int(rowCount) : 0) }
    var part0Size: Int { groupsOffset + (kind.isSized ? 4 * ((Int(rowCount) + segmentGroupRows - 1) / segmentGroupRows) : 0) }

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
        if kind.isSized {
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
