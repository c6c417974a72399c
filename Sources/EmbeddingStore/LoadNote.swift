import EmbeddingCodecs
import Foundation
import LMDB

/// The note a bulk load leaves beside the segment it wrote (FORMAT.md, "Load notes"): its
/// policy and how it spent the bytes, in JSON, under `meta` key `load/<table id>/<segment id>`.
/// Informational: rows decode without it, and a reader may ignore it.
struct LoadNote: Codable {
    var version = 1
    var summary: PolicySummary

    init(summary: PolicySummary) { self.summary = summary }

    func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(self))
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) -> LoadNote? {
        try? JSONDecoder().decode(LoadNote.self, from: Data(bytes))
    }
}

/// Where a row lives and why it has its codec (`embstore get --why`).
public struct RowProvenance: Sendable, Equatable {
    /// The codec form of its record (`int8`, `tc:1.5`).
    public let codec: String
    /// Record bytes (tag + payload).
    public let recordBytes: Int
    /// The segment holding it, or nil for a row in the delta (written by `put`).
    public let segment: UInt32?
    /// The policy of the load that wrote it (nil for the delta, or a segment without a note).
    public let policy: PolicySummary?

    /// In words: the codec, the layer, and the policy's reason.
    public var reason: String {
        guard let segment else { return "\(codec): written by put (one key per row)" }
        guard let policy else { return "\(codec): segment \(segment), written before loads kept notes" }
        let share = policy.shares.first { $0.codec == codec }
        var text = "\(codec): segment \(segment), loaded with \(policy.policy)"
        if policy.shares.count <= 1 && policy.budgetBytes == nil { return text + ": every row of the load" }
        if let share, let ranks = share.rankRange {
            text += String(format: "; %@ rows took access ranks %.3g%%–%.3g%%", codec, 100 * ranks[0], 100 * ranks[1])
            if let lookups = share.lookupShare { text += String(format: " (%.3g%% of lookups)", 100 * lookups) }
        }
        if let lambda = policy.lambda {
            text += String(format: "; the budget gave each row the codec minimising weight × squared error + %.3g × bytes", lambda)
        }
        return text
    }
}

extension Store {
    /// The note of the load that wrote `segment` of `table`, nil when there is none.
    public func loadNote(_ table: Table, segment: UInt32) throws -> PolicySummary? {
        let (generation, table) = try resolved(table)
        return try translatingErrors {
            try generation.environment.read { txn in
                try withMetaRecord(StoreFormat.loadNoteKey(table.id, segment: segment), in: txn, table: table.name) { bytes in
                    bytes.flatMap(LoadNote.decode)?.summary
                }
            }
        }
    }

    /// The notes of the table's live segments, newest first: how each load spent its bytes and,
    /// when it had access counts, the share of them each codec form's rows held.
    public func loadNotes(_ table: Table) throws -> [(segment: UInt32, summary: PolicySummary)] {
        let (generation, table) = try resolved(table)
        return try translatingErrors {
            try generation.environment.read { txn in
                try segmentManifest(table, in: txn).compactMap { segment in
                    try withMetaRecord(StoreFormat.loadNoteKey(table.id, segment: segment), in: txn, table: table.name) { bytes in
                        bytes.flatMap(LoadNote.decode).map { (segment, $0.summary) }
                    }
                }
            }
        }
    }

    /// Where the live row `id` is and why it has its codec; nil when there is no such row.
    public func provenance(_ table: Table, id: UInt64) throws -> RowProvenance? {
        let (generation, table) = try resolved(table)
        return try translatingErrors {
            try generation.environment.read { txn -> RowProvenance? in
                let parameters = TableParameters(txn, table: table)
                func form(_ record: UnsafeRawBufferPointer) throws -> String {
                    let tag = record.first ?? 0
                    guard let codec = RowCodecs.codec(tag: tag) else { return RowCodecs.name(tag: tag) }
                    guard let parameter = codec.parameterID(of: record), let stored = try parameters.parameterRecord(parameter) else {
                        return codec.name
                    }
                    return codec.formName(parameter: stored)
                }
                if let value = try txn.unsafeValue(forKey: id, in: table.rows) {
                    let record = try table.deltaRecord(value, id: id)
                    if isTombstone(record) { return nil }
                    return RowProvenance(codec: try form(record), recordBytes: record.count, segment: nil, policy: nil)
                }
                for segment in try segmentManifest(table, in: txn) {
                    let view = try SegmentView(table: table, segment: segment, in: txn)
                    guard let row = view.index.row(of: id) else { continue }
                    guard let record = view.record(ofRow: row) else {
                        throw StoreError.corruptMetadata(table: table.name, reason: "segment \(segment) does not match its index at id \(id)")
                    }
                    let note = try withMetaRecord(StoreFormat.loadNoteKey(table.id, segment: segment), in: txn, table: table.name) { bytes in
                        bytes.flatMap(LoadNote.decode)?.summary
                    }
                    return RowProvenance(codec: try form(record), recordBytes: record.count, segment: segment, policy: note)
                }
                return nil
            }
        }
    }
}
