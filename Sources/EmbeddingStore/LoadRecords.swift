import Foundation
import EmbeddingCodecs

// The write half of a bulk load: rows' records, made a batch at a time in id order, go into one
// new segment or one key a row. A float load makes them with its encoders (`EncodedLoadRecords`);
// an import of rows already encoded copies them (`CopiedLoadRecords`, EncodedRowSource.swift).
// Either way the load keeps the same invariants: one commit makes a segment (and a table the load
// creates) visible, the load's note goes with it, the store is raised to the records' format
// version in that commit, and the crash points are the same.

/// Makes the records (tag + payload) of a load's rows.
protocol LoadRecords: AnyObject {
    /// The largest record it makes.
    var maximumRecordSize: Int { get }
    /// Writes the records of rows `positions` (row indexes of the load, at most `loadRecordsBatchRows`):
    /// record r at `records[r · maximumRecordSize...]`, its length in `sizes[r]`.
    func make(_ positions: ArraySlice<Int>, into records: UnsafeMutableRawBufferPointer, sizes: UnsafeMutableBufferPointer<Int>) throws
    /// Drops what the rows' source keeps resident of rows read so far.
    func release()
}

/// Rows a `LoadRecords.make` call takes at most.
let loadRecordsBatchRows = 8192

extension LoadRecords {
    /// Calls `body` with each row of `positions` and its record, in that order, the records made
    /// `loadRecordsBatchRows` at a time; `batchDone` after each batch with the rows done so far.
    func forEach(_ positions: ArraySlice<Int>, batchDone: (Int) -> Void = { _ in },
                 _ body: (_ row: Int, _ record: UnsafeRawBufferPointer) throws -> Void) throws {
        let capacity = maximumRecordSize, batch = loadRecordsBatchRows
        let records = UnsafeMutableRawBufferPointer.allocate(byteCount: min(batch, positions.count) * capacity, alignment: 16)
        defer { records.deallocate() }
        let sizes = UnsafeMutableBufferPointer<Int>.allocate(capacity: batch)
        defer { sizes.deallocate() }
        var start = positions.startIndex
        while start < positions.endIndex {
            let end = min(positions.endIndex, start + batch)
            try make(positions[start..<end], into: records, sizes: sizes)
            for r in 0..<(end - start) {
                try body(positions[start + r], UnsafeRawBufferPointer(rebasing: records[r * capacity..<r * capacity + sizes[r]]))
            }
            batchDone(end - positions.startIndex)
            start = end
        }
    }
}

/// Records encoded from a load's float rows, each row with its candidate's encoder: a batch of
/// rows is encoded on every core (one encoder set a thread).
final class EncodedLoadRecords: LoadRecords {
    let source: any RowSource
    let encoderSets: [[(any RowEncoder)?]]
    let candidates: [PolicyCandidate]
    let choice: [UInt8]?
    let ids: [UInt64]
    let table: String
    let maximumRecordSize: Int
    private var gathered = [Float]()

    init(source: any RowSource, encoderSets: [[(any RowEncoder)?]], candidates: [PolicyCandidate], choice: [UInt8]?, ids: [UInt64], table: String) {
        self.source = source
        self.encoderSets = encoderSets
        self.candidates = candidates
        self.choice = choice
        self.ids = ids
        self.table = table
        maximumRecordSize = encoderSets[0].compactMap { $0?.maximumRecordSize }.max() ?? 1
    }

    func make(_ positions: ArraySlice<Int>, into records: UnsafeMutableRawBufferPointer, sizes: UnsafeMutableBufferPointer<Int>) throws {
        guard let first = positions.first else { return }
        let d = source.dimension, capacity = maximumRecordSize
        let contiguous = positions.last! - first == positions.count - 1 && zip(positions, positions.dropFirst()).allSatisfy { $1 == $0 + 1 }
        func encode(_ rows: UnsafeBufferPointer<Float>) throws {
            let failure = LockedError()
            // Each thread has its own encoders and writes its own slots of `records`.
            nonisolated(unsafe) let out = records, outSizes = sizes, batchRows = rows, sets = encoderSets
            let choice = choice, positions = positions, n = positions.count, ids = ids, table = table, candidates = candidates
            DispatchQueue.concurrentPerform(iterations: sets.count) { t in
                for r in n * t / sets.count..<n * (t + 1) / sets.count {
                    let i = positions[positions.startIndex + r]
                    let k = Int(choice?[i] ?? 0)
                    do {
                        outSizes[r] = try sets[t][k]!.encode(UnsafeBufferPointer(rebasing: batchRows[r * d..<(r + 1) * d]), index: i,
                                                            into: UnsafeMutableRawBufferPointer(rebasing: out[r * capacity..<(r + 1) * capacity]))
                    } catch let error as CodecError {
                        failure.set(StoreError.encoding(table: table, id: ids[i], codec: candidates[k].label, underlying: error))
                        return
                    } catch {
                        failure.set(error)
                        return
                    }
                }
            }
            if let error = failure.error { throw error }
        }
        if contiguous {
            try source.withRows(first..<first + positions.count) { try encode($0) }
        } else {
            gathered.removeAll(keepingCapacity: true)
            for i in positions { try source.withRows(i..<i + 1) { gathered.append(contentsOf: $0) } }
            try gathered.withUnsafeBufferPointer { try encode($0) }
        }
    }

    func release() { source.release() }
}

extension Store {
    /// Writes the load's rows, `records` in id order (`order`), as one new segment or one key a
    /// row (`options.layout`), raising the store to `formatVersion`; the segment carries the
    /// load's note (`summary`). A table the load is creating becomes visible in the last commit.
    func writeRows(_ table: Table, ids: [UInt64], order: [Int], records: any LoadRecords, formatVersion: UInt32,
                   summary: PolicySummary, options: LoadOptions) throws {
        if options.layout == .segment {
            try writeSegment(table, ids: ids, order: order, records: records, formatVersion: formatVersion, summary: summary,
                             partBytes: options.segmentPartBytes, progress: options.progress)
            return
        }
        // Write in id order; MDB_APPEND when every id of a transaction sorts after the table's
        // last one, checked in that transaction (in the generation it writes to: a swap may
        // have moved the store since the load began).
        var start = 0
        while start < ids.count {
            let end = min(ids.count, start + max(1, options.rowsPerTransaction))
            try write { batch in
                let rows = try batch.generation.local(table).rows
                let canAppend = try batch.txn.withCursor(rows) { cursor in
                    guard let last = try cursor.last()?.integerKey else { return true }
                    return last < ids[order[start]]
                }
                try records.forEach(order[start..<end]) { i, record in
                    try batch.putRecord(table, id: ids[i], record: record, formatVersion: formatVersion, flags: canAppend ? .append : [])
                }
                if end == ids.count { try batch.generation.publishIfBeingCreated(table, in: batch.txn) }
            }
            records.release()
            CrashPoints.reach("perkey.committed")
            start = end
            options.progress?(WorkProgress(stage: "writing", done: end, total: ids.count, unit: "rows"))
        }
    }

    /// The records in id order into one new segment, its parts written as they fill.
    private func writeSegment(_ table: Table, ids: [UInt64], order: [Int], records: any LoadRecords, formatVersion: UInt32,
                              summary: PolicySummary, partBytes: Int, progress: (@Sendable (WorkProgress) -> Void)?) throws {
        let capacity = records.maximumRecordSize
        let rowsPerPart = SegmentWriter.rowsPerPart(recordSize: capacity, partBytes: partBytes)
        let note = try LoadNote(summary: summary).encoded()
        let batch = loadRecordsBatchRows
        try writeSegment(table, rowsPerPart: rowsPerPart, expectedPartBytes: min(rowsPerPart, order.count) * capacity,
                         formatVersion: formatVersion, note: note, maximumRecordSize: capacity) { emit in
            // Group entries (kinds 5, 6) take any number of record sizes: no padding.
            try records.forEach(order[...], batchDone: { done in
                if done / batch % 8 == 0 { records.release() }
                progress?(WorkProgress(stage: "writing", done: done, total: order.count, unit: "rows"))
            }) { i, record in try emit(ids[i], record) }
            records.release()
        }
    }
}
