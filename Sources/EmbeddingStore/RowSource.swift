import EmbeddingCodecs

/// Rows a bulk load reads: all of them in memory, or a file it reads a stretch at a time, so
/// that a load's memory is bounded by a stretch plus what its fits and policy keep, not by the
/// table.
public protocol RowSource: Sendable {
    var count: Int { get }
    var dimension: Int { get }
    /// Calls `body` with rows `range` as `range.count × dimension` floats, valid during the call.
    /// May be called from several threads at once.
    func withRows<R>(_ range: Range<Int>, _ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R
    /// Drops what the source keeps resident of rows read so far (a file map's pages); the rows
    /// can still be read, at the cost of reading them again.
    func release()
}

/// Rows in memory, `count × dimension` floats row-major, valid while the load runs.
public struct MemoryRows: RowSource, @unchecked Sendable {   // read, never written
    public let rows: UnsafeBufferPointer<Float>
    public let count: Int
    public let dimension: Int

    public init(_ rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int) {
        self.rows = rows
        self.count = count
        self.dimension = dimension
    }

    public func withRows<R>(_ range: Range<Int>, _ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R {
        try body(UnsafeBufferPointer(rebasing: rows[range.lowerBound * dimension..<range.upperBound * dimension]))
    }

    public func release() {}
}

extension RowSource {
    /// Rows read in stretches of about `stretchFloats` floats, the source released after each.
    func forEachStretch(stretchFloats: Int = 1 << 22, _ body: (Range<Int>, UnsafeBufferPointer<Float>) throws -> Void) throws {
        let step = max(1, stretchFloats / max(dimension, 1))
        var start = 0
        while start < count {
            let range = start..<min(count, start + step)
            try withRows(range) { try body(range, $0) }
            release()
            start = range.upperBound
        }
    }

    /// An even stride of at most `limit` rows (all of them when there are no more), copied: what
    /// codecs fit their parameters on.
    func sample(limit: Int) throws -> (rows: [Float], count: Int) {
        let take = max(1, min(count, RowSampling.limit(limit, dimension: dimension)))
        var sample = [Float]()
        sample.reserveCapacity(take * dimension)
        // Released every stretch of the table: rows a stride apart still bring in every page
        // between them (the kernel maps pages around a fault).
        let stretchRows = max(1, (1 << 22) / max(dimension, 1))
        var released = 0
        for j in 0..<take {
            let i = take == count ? j : Int((Double(j) * Double(count) / Double(take)).rounded(.down))
            try withRows(i..<i + 1) { sample.append(contentsOf: $0) }
            if i - released >= stretchRows {
                release()
                released = i
            }
        }
        release()
        return (sample, take)
    }
}

/// Some rows of another source, in its order: `rows` are its row indexes, ascending.
struct SubsetRows: RowSource {
    let base: any RowSource
    let rows: [Int]
    var count: Int { rows.count }
    var dimension: Int { base.dimension }

    init(_ base: any RowSource, rows: [Int]) {
        self.base = base
        self.rows = rows
    }

    func withRows<R>(_ range: Range<Int>, _ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R {
        guard let first = range.first.map({ rows[$0] }) else { return try body(UnsafeBufferPointer(start: nil, count: 0)) }
        if rows[range.upperBound - 1] - first == range.count - 1 {
            return try base.withRows(first..<first + range.count, body)
        }
        var gathered = [Float]()
        gathered.reserveCapacity(range.count * dimension)
        // Copies: what the base keeps resident of rows scattered over it can go as the gather
        // moves on, every stretch of the base (the kernel maps pages around each row read).
        let stretchRows = max(1, (1 << 22) / max(dimension, 1))
        var released = first
        for i in range {
            try base.withRows(rows[i]..<rows[i] + 1) { gathered.append(contentsOf: $0) }
            if rows[i] - released >= stretchRows {
                base.release()
                released = rows[i]
            }
        }
        base.release()
        return try gathered.withUnsafeBufferPointer { try body($0) }
    }

    func release() { base.release() }
}
