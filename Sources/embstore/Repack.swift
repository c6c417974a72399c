import ArgumentParser
import EmbeddingStore
import Foundation
import NPY

/// `embstore repack`: rebuild tables under a policy and fresh access counts into a new,
/// compacted, verified store (`Store.repack(to:)`).
struct Repack: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rebuild tables under a codec policy and fresh access counts into a new, compacted, verified store.",
        discussion: """
            Rows of --source are encoded from those full-precision values. Every other row has only \
            its decoded value: it moves to a codec of fewer bits a value, or keeps its record as it \
            is; a promotion the policy asks for is refused and reported. Tables not repacked are \
            copied as they are. Access counts kept in the store are carried over.
            """)

    @Argument(help: "The store directory (only read).") var store: String
    @Option(help: "The new store directory (must not exist).") var out: String?
    @Flag(help: "Repack into the store's next generation and swap it in atomically under live readers (instead of --out).")
    var inPlace = false
    @Option(help: "Only this table (default: every table); the others are copied as they are.") var table: String?
    @OptionGroup var policyOptions: PolicyOptions
    @Option(help: "Access counts (.npy uint64, int64, float32 or float64): in the order of --source, or of --ids without --source.")
    var freq: String?
    @Flag(help: "Access counts: those kept in the store (embstore bench --track-every, AccessCounter), instead of --freq.")
    var tracked = false
    @Option(help: "Full-precision rows to encode from: a float32 or float16 .npy [N, d]. Without it rows are only re-encoded to fewer bits.")
    var source: String?
    @Option(help: "int64 or uint64 .npy of the ids of --source's rows, or of --freq's counts without --source (default 0..N-1).")
    var ids: String?
    @Flag(help: "Add the rows of --source whose ids are not in the table (by default they are an error).") var addNew = false
    @Option(help: "Write the ids of the rows refused promotion to this uint64 .npy (one table).") var refusedOut: String?
    @Flag(help: "Print the report as one JSON object (refused ids included).") var json = false
    @Flag(help: "No progress on stderr.") var quiet = false

    func run() throws {
        let started = Date()
        guard (out != nil) != inPlace else { throw InputError("give one of --out NEW and --in-place") }
        if tracked && freq != nil { throw InputError("--tracked and --freq are two sources of counts: give one") }
        if ids != nil && source == nil && freq == nil { throw InputError("--ids gives the ids of --source's rows or --freq's counts; pass one of them") }
        let policy = try policyOptions.policy(counts: tracked ? "--tracked" : freq, countOptions: "--freq or --tracked")
        var options = RepackOptions()
        try policyOptions.apply(to: &options.load)
        options.addingNewRows = addNew
        let progress = ProgressLines(prefix: "repack", quiet: quiet || json)
        options.load.progress = { progress.report($0) }

        if inPlace && !FileManager.default.fileExists(atPath: store) { throw InputError("\(store) does not exist") }
        let storeHandle = inPlace ? try Store(path: store) : try openReadOnly(store)
        var tables: [String]?
        if let table {
            guard try storeHandle.tableNames().contains(table) else { throw InputError("no table named '\(table)' in \(store)") }
            tables = [table]
        }
        // A source, counts of one table, or its refused ids need that one table.
        let names = try storeHandle.tableNames()
        let single = table ?? (names.count == 1 ? names[0] : nil)
        if source != nil || freq != nil || refusedOut != nil {
            guard single != nil else {
                throw InputError("\(store) has several tables: name the one --source, --freq or --refused-out belong to with --table")
            }
        }
        var sources: [String: RepackSource] = [:]
        var sourceIDs: [UInt64]?
        var sourceRows: Int?
        if let source, let name = single {
            let file = try NPYFile(path: source)
            let rows = try NPYRows(file)
            if let ids {
                sourceIDs = try NPYFile(path: ids).readIDs()
                guard sourceIDs?.count == rows.count else { throw InputError("\(ids) has \(sourceIDs?.count ?? 0) ids but \(source) has \(rows.count) rows") }
            }
            sources[name] = RepackSource(rows: rows, ids: sourceIDs)
            sourceRows = rows.count
        }
        var counts = RepackCounts.none
        if tracked { counts = .tracked }
        if let freq, let name = single {
            let values = try NPYFile(path: freq, allowFloat64: true).readCounts()
            if let sourceRows, values.count != sourceRows {
                throw InputError("\(freq) has \(values.count) counts but \(source ?? "") has \(sourceRows) rows: the counts go in the order of --source")
            }
            let countIDs = try sourceIDs ?? ids.map { try NPYFile(path: $0).readIDs() } ?? (0..<UInt64(values.count)).map { $0 }
            guard countIDs.count == values.count else {
                throw InputError("\(freq) has \(values.count) counts but \(ids ?? "") has \(countIDs.count) ids: they must pair up one to one")
            }
            do {
                counts = .given([name: try LookupCounts(ids: countIDs, counts: values)])
            } catch {
                throw InputError("--freq \(freq): \(error)")
            }
        }

        var swap: GenerationSwapReport?
        let report: RepackReport
        if let out {
            report = try storeHandle.repack(to: out, tables: tables, policy: policy, counts: counts, sources: sources, options: options)
        } else {
            (report, swap) = try storeHandle.repackInPlace(tables: tables, policy: policy, counts: counts, sources: sources, options: options)
        }
        progress.finish(String(format: "done in %.2f s", Date().timeIntervalSince(started)))
        if let refusedOut {
            try NPYWriter.writeUInt64(path: refusedOut, values: report.tables.first { $0.table == single }?.refusedIDs ?? [])
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        print(Self.describe(report, seconds: Date().timeIntervalSince(started)))
        if let swap {
            print("swapped in as \(swap.current) of \(store) (was \(swap.previous ?? "the plain store")): "
                  + "\(swap.bytesBefore) → \(swap.bytesAfter) bytes" + (swap.inUse.isEmpty ? "" : "; \(swap.inUse.joined(separator: ", ")) still open elsewhere"))
        }
    }

    /// The report in lines: the stores' bytes, then per table its rows, bytes and forms.
    static func describe(_ report: RepackReport, seconds: Double) -> String {
        var lines = ["repacked \(report.store) (\(report.bytesBefore) bytes) into \(report.path): \(report.bytesAfter) bytes"
                     + String(format: " (%.1f%%), verified, in %.2f s", 100 * Double(report.bytesAfter) / Double(max(report.bytesBefore, 1)), seconds)]
        for table in report.tables {
            let disk = "\(table.diskBytesBefore) → \(table.diskBytesAfter) bytes on disk"
            guard table.repacked else {
                lines.append("table '\(table.table)': copied as it was, \(table.rowsAfter) rows, \(disk)")
                continue
            }
            lines.append("table '\(table.table)': repacked as \(table.policy ?? "?") with counts \(table.counts ?? "none"), "
                         + "\(table.rowsBefore) → \(table.rowsAfter) rows, \(disk)")
            lines.append("  rows from the source \(table.rowsFromSource) (added \(table.rowsAdded)), without a source row \(table.rowsWithoutSource); "
                         + "promoted \(table.promoted), demoted \(table.demoted), kept as stored at the same precision \(table.keptAtSamePrecision)")
            if let detail = table.countsDetail { lines.append("  tracked counts: \(detail)") }
            if table.promotionsRefused > 0 {
                lines.append("  \(table.promotionsRefused) rows not promoted: \(RepackReport.refusalReason); their ids: --json or --refused-out")
            }
            let width = max(12, (table.formsBefore + table.formsAfter).map(\.form.count).max() ?? 0)
            lines.append("  " + "form".padding(toLength: width, withPad: " ", startingAt: 0) + "   rows before  record bytes    rows after  record bytes")
            var names = table.formsBefore.map(\.form)
            for form in table.formsAfter where !names.contains(form.form) { names.append(form.form) }
            for name in names {
                let before = table.formsBefore.first { $0.form == name }, after = table.formsAfter.first { $0.form == name }
                lines.append("  " + name.padding(toLength: width, withPad: " ", startingAt: 0)
                             + String(format: " %13d %13d %13d %13d", before?.rows ?? 0, before?.recordBytes ?? 0, after?.rows ?? 0, after?.recordBytes ?? 0))
            }
        }
        return lines.joined(separator: "\n")
    }
}
