import ArgumentParser
import EmbeddingCodecs
import EmbeddingStore
import LMDB
import Foundation
import NPY

@main
struct EmbStore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embstore",
        abstract: "An embedded store for compressed embedding tables, on LMDB.",
        subcommands: [Ingest.self, Export.self, Get.self, Info.self, Stats.self, Verify.self, Compact.self, Repack.self, Eval.self, Diff.self, Bench.self, Codecs.self, Demo.self, GrowShards.self, PruneShards.self, RolloutCommand.self]
    )

    static func main() {
        // A damaged page that sends LMDB through a wild pointer ends the command with a message
        // and status 3, as LMDB's own failed checks do, instead of a crash.
        Environment.installDamageGuard()
        // The test of that guard (CrashTests): EMBSTORE_CRASH_AT=lmdb.fault faults inside liblmdb.
        if ProcessInfo.processInfo.environment["EMBSTORE_CRASH_AT"] == "lmdb.fault" { Environment.faultInsideLMDBForTesting() }
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}

/// A problem with the command's input: printed as "Error: ..." without the usage text.
struct InputError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension CodecPolicy.Weighting: ExpressibleByArgument {}

/// A policy's summary in lines: bytes, error against the best single codec, and per codec form
/// its rows, bytes and lookups.
func describe(_ summary: PolicySummary, rows: Int, dimension: Int) -> String {
    let payload = Double(rows) * Double(dimension) * 4
    var lines: [String] = []
    if let budget = summary.budgetBytes, let estimated = summary.estimatedBytes {
        lines.append(String(format: "  budget %.0f bytes (%.4g%% of float32); estimated on disk %.0f bytes (%.4g%%)",
                            budget, 100 * budget / payload, estimated, 100 * estimated / payload))
    }
    if let error = summary.weightedError {
        var line = String(format: "  weighted squared error %.6g", error)
        if let single = summary.bestSingle, let singleError = summary.bestSingleWeightedError {
            line += String(format: "; best single codec within the budget: %@ at %.6g (%.3gx)", single, singleError,
                           error > 0 ? singleError / error : 1)
        }
        lines.append(line)
    }
    if let decode = summary.expectedDecodeNanoseconds {
        lines.append(String(format: "  expected decode time %.1f ns a lookup", decode)
                     + (summary.decodeCapNanoseconds.map { String(format: " (held to %.1f ns)", $0) } ?? " (no cap held)"))
    }
    let width = max(8, summary.shares.map(\.codec.count).max() ?? 0)
    for share in summary.shares {
        var line = "  " + share.codec.padding(toLength: width, withPad: " ", startingAt: 0)
            + String(format: " %10d rows %6.2f%%  %12d record bytes (%.1f a row)", share.rows, 100 * Double(share.rows) / Double(max(rows, 1)),
                     share.bytes, Double(share.bytes) / Double(max(share.rows, 1)))
        if let lookups = share.lookupShare { line += String(format: "  %6.2f%% of lookups", 100 * lookups) }
        lines.append(line)
    }
    return lines.joined(separator: "\n")
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write every row of a table in ascending id order: decoded to float32, or as FBGEMM's fused rows.")

    @Argument(help: "The store directory, or a sharded store's.") var store: String
    @Option(help: "Table name.") var table: String
    @Option(help: "Output .npy file: float32 [N, d], or uint8 [N, row bytes] for --format fbgemm-*.") var out: String
    @Option(help: "Output uint64 .npy file of the N ids.") var idsOut: String?
    @Option(help: "float32 (rows decoded), or FBGEMM's fused rows as torch's embedding_bag_byte_prepack (fbgemm-int8) and embedding_bag_4bit_prepack (fbgemm-int4) return them: int8 / int4h records copied byte for byte, other rows decoded and quantized by FBGEMM's rule.")
    var format: Format = .float32

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case float32
        case fbgemmInt8 = "fbgemm-int8"
        case fbgemmInt4 = "fbgemm-int4"
    }

    func run() throws {
        if ShardManifest.exists(in: self.store) { return try runSharded() }
        let store = try openReadOnly(self.store)
        let handle = try store.table(table)
        let d = handle.dimension
        let fused: FBGEMMFusedRows
        switch format {
        case .float32:
            let (ids, values) = try store.export(handle)
            try values.withUnsafeBufferPointer {
                try NPYWriter.writeFloat32(path: out, rows: ids.count, columns: d, values: $0)
            }
            if let idsOut { try NPYWriter.writeUInt64(path: idsOut, values: ids) }
            print("exported \(ids.count) rows of dimension \(d) from table '\(table)' to \(out)")
            return
        case .fbgemmInt8: fused = .int8
        case .fbgemmInt4: fused = .int4
        }
        let rowBytes = fused.rowBytes(dimension: d)
        let (ids, payloads, copied) = try store.exportPayloads(handle, codec: fused.codec, payloadSize: rowBytes) { row, payload in
            try fused.quantize(row, into: payload)
        }
        try payloads.withUnsafeBytes { try NPYWriter.writeUInt8(path: out, rows: ids.count, columns: rowBytes, values: $0) }
        if let idsOut { try NPYWriter.writeUInt64(path: idsOut, values: ids) }
        print("exported \(ids.count) rows of dimension \(d) from table '\(table)' to \(out) as \(format.rawValue) rows of \(rowBytes) bytes: "
              + "\(copied) \(fused.codec) records copied, \(ids.count - copied) rows quantized by FBGEMM's rule")
        if fused == .int4 && d % 2 == 1 {
            print("note: dimension \(d) is odd; torch's 4-bit ops read \(rowBytes)-byte rows as \(d + 1) values, the last (code 0) decoding to the row's bias")
        }
    }
}

struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print decoded rows, one line per id.")

    @Argument(help: "The store directory.") var store: String
    @Option(help: "Table name.") var table: String
    @Argument(help: "Row ids.") var ids: [UInt64]
    @Flag(help: "After each row, its codec and why it has it (the policy of the load that wrote it).") var why = false

    func run() throws {
        if ShardManifest.exists(in: self.store) { return try runSharded() }
        let store = try openReadOnly(self.store)
        let handle = try store.table(table)
        let reader = try store.makeReader()
        try printRows(dimension: handle.dimension, lookup: { _ = try reader.lookup(handle, ids: $0, into: $1, found: $2) }) { id in
            if why, let provenance = try store.provenance(handle, id: id) { print("  codec " + provenance.reason) }
        }
    }

    /// The ids' rows (`dimension` values each) and found mask from `lookup`, then one line per
    /// id: its values, or "not found" (then exit status 1); `after(id)` after a found row's line.
    func printRows(dimension d: Int,
                   lookup: (UnsafeBufferPointer<UInt64>, UnsafeMutableBufferPointer<Float>, UnsafeMutableBufferPointer<Bool>) throws -> Void,
                   after: (UInt64) throws -> Void) throws {
        var out = [Float](repeating: 0, count: ids.count * d)
        var found = [Bool](repeating: false, count: ids.count)
        try ids.withUnsafeBufferPointer { ids in
            try out.withUnsafeMutableBufferPointer { out in try found.withUnsafeMutableBufferPointer { try lookup(ids, out, $0) } }
        }
        var missing = 0
        for (i, id) in ids.enumerated() {
            if found[i] {
                print("\(id): " + out[i * d..<(i + 1) * d].map { "\($0)" }.joined(separator: " "))
                try after(id)
            } else {
                print("\(id): not found")
                missing += 1
            }
        }
        if missing > 0 { throw ExitCode(1) }
    }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List tables with their dimension, rows and bytes per codec, and the file size.")

    @Argument(help: "The store directory.") var store: String
    @Flag(help: "Print JSON.") var json = false

    struct Report: Codable {
        let path: String
        /// The generation in use (nil: a plain store, the directory itself holds data.mdb).
        let generation: String?
        let fileBytes: Int
        let tables: [TableStatistics]
    }

    func run() throws {
        if ShardManifest.exists(in: self.store) { return try runSharded() }
        let store = try openReadOnly(self.store)
        let tables = try store.tableNames().map { try store.statistics(store.table($0)) }
        let report = Report(path: self.store, generation: store.generationName, fileBytes: store.fileSize, tables: tables)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        print("store \(report.path): \(report.fileBytes) bytes in "
              + (report.generation.map { "\($0)/data.mdb (generation)" } ?? "data.mdb") + ", \(tables.count) table(s)")
        for table in tables {
            print("table '\(table.name)': dimension \(table.dimension), \(table.rows) rows")
            for usage in table.codecs {
                let perRow = usage.rows > 0 ? Double(usage.bytes) / Double(usage.rows) : 0
                let name = usage.codec.padding(toLength: max(14, usage.codec.count), withPad: " ", startingAt: 0)
                print("  \(name) " + String(format: "%10d rows %14d bytes (%.1f bytes/row)", usage.rows, usage.bytes, perRow))
            }
            if table.bucketRows > 0 { print("  bucket rows    \(table.bucketRows) rows, \(table.bucketBytes) bytes") }
            if table.bases > 0 { print("  parameters     \(table.bases) record(s) (PCA bases, tc bases and models)") }
            print("  layers         \(table.segments) segment(s) with \(table.segmentRows) rows; delta \(table.deltaRows) rows"
                  + " (\(table.tombstones) tombstones)")
        }
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check everything a store holds (every seal and checksum, every record, every row); exit 1 on damage, listing each problem.")

    @Argument(help: "The store directory.") var store: String
    @Flag(help: "Print one JSON object: {store, ok, tables: [{name, segments, rows, bucketRows, parameterRecords, counts}], problems: [{table, location, problem}], moreProblems}.")
    var json = false

    func run() throws {
        if ShardManifest.exists(in: self.store) { return try runSharded() }
        let store = try openReadOnly(self.store)
        let report = try store.verify()
        if json {
            let object: [String: Any] = [
                "store": self.store, "ok": report.isSound, "moreProblems": report.moreProblems,
                "problems": report.findings.map { ["table": $0.table ?? NSNull(), "location": $0.location, "problem": $0.problem] as [String: Any] },
                "tables": report.tables.map {
                    ["name": $0.name, "segments": $0.segments, "rows": $0.rows, "bucketRows": $0.bucketRows,
                     "parameterRecords": $0.parameterRecords, "counts": $0.counts] as [String: Any]
                }]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
            if !report.isSound { throw ExitCode(1) }
            return
        }
        for table in report.tables {
            print("table '\(table.name)': \(table.segments) segment(s) checksummed, \(table.rows) live rows decoded, "
                  + "\(table.bucketRows) bucket row(s), \(table.parameterRecords) parameter record(s), \(table.counts) access count(s) checked")
        }
        if !report.isSound {
            for problem in report.findings { print("damaged: \(problem)") }
            if report.moreProblems > 0 { print("damaged: \(report.moreProblems) more problem(s) not listed") }
            throw ExitCode(1)
        }
        print("ok")
    }
}

struct Compact: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compact a store: only the pages in use, without segment parts a killed load left, verified; into a new directory, or in place.",
        discussion: """
            --in-place writes the compacted store as the store's next generation and swaps it in \
            atomically: readers go on and move to it, writers wait for the swap and then write to it. \
            The old generation is removed once no process has it open.
            """)

    @Argument(help: "The store directory.") var store: String
    @Option(help: "The new store directory (must not exist).") var out: String?
    @Flag(help: "Swap the compacted store in as the store's next generation instead.") var inPlace = false

    func validate() throws {
        guard (out != nil) != inPlace else { throw ValidationError("give either --out NEW or --in-place") }
    }

    func run() throws {
        if inPlace {
            let report = try Store(path: self.store).compactInPlace()
            print("compacted \(self.store) in place: \(report.previous ?? "plain store") (\(report.bytesBefore) bytes) -> "
                  + "\(report.current) (\(report.bytesAfter) bytes" + percent(report.bytesAfter, of: report.bytesBefore) + ")"
                  + leftOut(orphanParts: report.orphanParts, abandonedTables: report.abandonedTables) + "; verified")
            if !report.removed.isEmpty { print("removed \(report.removed.joined(separator: ", "))") }
            if !report.inUse.isEmpty {
                print("still open elsewhere, removed when the last process lets go: \(report.inUse.joined(separator: ", "))")
            }
            return
        }
        let store = try openReadOnly(self.store)
        let report = try store.compact(to: out!)
        print("compacted \(self.store) (\(report.bytesBefore) bytes) into \(out!): \(report.bytesAfter) bytes"
              + percent(report.bytesAfter, of: report.bytesBefore)
              + leftOut(orphanParts: report.orphanParts, abandonedTables: report.abandonedTables) + "; verified")
    }

    private func percent(_ after: Int, of before: Int) -> String {
        String(format: " (%.1f%%)", 100 * Double(after) / Double(max(before, 1)))
    }

    private func leftOut(orphanParts: Int, abandonedTables: Int) -> String {
        (orphanParts > 0 ? ", \(orphanParts) orphan segment part(s) left out" : "")
            + (abandonedTables > 0 ? ", \(abandonedTables) table(s) a killed load was creating left out" : "")
    }
}

struct Codecs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List every spelling --codec accepts, with the bytes a row costs at a dimension.")

    @Option(help: "Row width the byte counts are for.") var dimension = 128
    @Flag(help: "Print a JSON array of {codec, bytes_per_row, summary}.") var json = false

    func run() throws {
        guard dimension >= 1 else { throw InputError("--dimension must be at least 1") }
        let forms = RowCodecs.forms(dimension: dimension)
        if json {
            let objects = forms.map { ["codec": $0.codec, "bytes_per_row": $0.bytesPerRow, "summary": $0.summary] as [String: Any] }
            let data = try JSONSerialization.data(withJSONObject: objects, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        let width = forms.map(\.codec.count).max() ?? 0
        for form in forms {
            let bytes = form.bytesPerRow == form.bytesPerRow.rounded() ? String(Int(form.bytesPerRow)) : String(format: "%.1f", form.bytesPerRow)
            print(form.codec.padding(toLength: width + 2, withPad: " ", startingAt: 0)
                  + bytes.padding(toLength: 8, withPad: " ", startingAt: 0) + "bytes/row  " + form.summary)
        }
    }
}

/// `--codec` and `--bucket-codec`: the descriptor's error (which lists every codec) on a bad spelling.
func parseCodec(_ text: String) throws -> Codec {
    do {
        return try Codec(parsing: text)
    } catch {
        throw ValidationError("\(error)")
    }
}

func openReadOnly(_ path: String) throws -> Store {
    var options = Store.Options()
    options.readOnly = true
    return try Store(path: path, options: options)
}
