/// Builds the 64-byte group entries of a kind 5 or 6 segment (FORMAT.md "Group entries") as its
/// rows are appended: an entry per `GroupEntry.rows(width:)` rows of a data part, each holding
/// the part offset of its first record and every row's end relative to it.
struct GroupEntryBuilder {
    /// Bytes per end: 2 (29 rows an entry) or 4 (14 rows an entry).
    let width: Int
    let rowsPerGroup: Int
    private(set) var bytes: [UInt8] = []
    /// Rows in the open entry; `rowsPerGroup` when none is open.
    private var filled: Int
    private var base = 0
    private var entryStart = 0

    init(width: Int) {
        self.width = width
        rowsPerGroup = GroupEntry.rows(width: width)
        filled = rowsPerGroup
    }

    /// The width for records of at most `maximumRecordSize` bytes: 2 when a full group of them
    /// fits u16 ends, else 4.
    static func width(maximumRecordSize: Int?) -> Int {
        guard let maximumRecordSize, maximumRecordSize <= GroupEntry.largestEnd(width: 2) / GroupEntry.rows(width: 2) else { return 4 }
        return 2
    }

    /// Adds the row whose record lies at `start ..< end` of its data part; `startsPart` when it
    /// is the part's first row (entries never span two parts).
    mutating func add(start: Int, end: Int, startsPart: Bool) throws(SegmentFormatError) {
        if startsPart || filled == rowsPerGroup {
            entryStart = bytes.count
            bytes.append(contentsOf: repeatElement(0, count: GroupEntry.size))
            store(start, at: entryStart, width: 4)
            base = start
            filled = 0
        }
        let relative = end - base
        guard relative <= GroupEntry.largestEnd(width: width) else {
            throw SegmentFormatError(reason: "\(filled + 1) records of a group span \(relative) bytes, more than \(width)-byte ends hold")
        }
        store(relative, at: entryStart + 4 + width * filled, width: width)
        filled += 1
    }

    /// The entries with their check words: the XOR of an entry's 32 u16 words is its number.
    func finished() -> [UInt8] {
        var sealed = bytes
        sealed.withUnsafeMutableBytes { raw in
            for e in 0..<raw.count / GroupEntry.size {
                let entry = raw.baseAddress! + e * GroupEntry.size
                let check = GroupEntry.xorOfWords(UnsafeRawPointer(entry)) ^ UInt16(truncatingIfNeeded: e)
                entry.storeBytes(of: check.littleEndian, toByteOffset: GroupEntry.checkOffset, as: UInt16.self)
            }
        }
        return sealed
    }

    private mutating func store(_ value: Int, at offset: Int, width: Int) {
        for k in 0..<width { bytes[offset + k] = UInt8(truncatingIfNeeded: value >> (8 * k)) }
    }
}
