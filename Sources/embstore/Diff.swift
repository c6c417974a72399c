import ArgumentParser
import EmbeddingStore
import Foundation
import NPY

/// `embstore diff A B`: two stores' tables side by side (`AnyStore.diff`), and with `--source`
/// each scored against full precision (`AnyStore.evaluate`). README.md ("Diffing two stores")
/// defines every figure.
struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two stores (say production and a repacked candidate) table by table: rows, codecs, row errors, bytes and neighbour agreement.",
        discussion: """
            For each table both stores have (or --table): rows in one store only; rows whose codec \
            changed (from → to counts); per row, the cosine and the relative L2 error ‖a − b‖ / ‖a‖ \
            between A's and B's decoded rows (their distribution and the worst ids); bytes of each; \
            and how many of the top 10 neighbours (by cosine) of query rows drawn uniformly, and \
            with --freq by frequency, are the same among A's rows and among B's. With --freq, also \
            per popularity decile (1 = the hottest 10% of rows). With --source, both stores are \
            also scored against the full-precision rows, as embstore eval does.
            """)

    @Argument(help: "Store A (a store or a sharded store's directory), the reference: say, production.") var a: String
    @Argument(help: "Store B: say, the candidate.") var b: String
    @Option(help: "Only this table (default: every table both stores have).") var table: String?
    @Option(help: "float32 or float16 .npy [N, d] of the full-precision rows, to score both stores against (needs one table).")
    var source: String?
    @Option(help: "int64 or uint64 .npy of the ids to compare: the ids of the --source and --freq rows (default: every id; those of --source and --freq are 0, 1, ...).")
    var ids: String?
    @Option(help: "Access counts: a 1-D .npy of uint64, int64, float32 or float64, one per id of --ids (or of ids 0, 1, ...).")
    var freq: String?
    @Option(help: "Query rows drawn per set (capped at the rows both stores have).") var queryCount = 1000
    @Option(help: "Seed of the query draws.") var seed: UInt64 = 0
    @Option(help: "Worst rows (and ids in one store only) listed.") var worst = 10
    @Option(help: "Threads (default: the active processors).") var threads: Int?
    @Flag(help: "Print one JSON object instead of tables.") var json = false
    @Option(help: "Write an SVG chart: the error histogram per popularity decile, and the bytes of A and B side by side.")
    var plot: String?
    @Flag(help: "No progress lines on stderr.") var quiet = false

    func run() throws {
        guard queryCount >= 1 else { throw InputError("--query-count must be at least 1") }
        guard worst >= 0 else { throw InputError("--worst must be at least 0") }
        if let threads, threads < 1 { throw InputError("--threads must be at least 1") }
        let inputs = try DiffInputs(source: source, ids: ids, freq: freq)
        var options = DiffOptions()
        options.queryCount = queryCount
        options.seed = seed
        options.worstRows = worst
        if let threads { options.threads = threads }
        let storeA = try AnyStore.open(a), storeB = try AnyStore.open(b)
        let progress = ProgressLines(prefix: "diff", quiet: quiet)
        let result = try DiffResult.run(storeA, storeB, paths: (a, b), table: table, inputs: inputs, options: options, progress: progress)
        if let plot { try DiffPlot(result: result).write(to: plot) }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
        } else {
            print(result.text())
        }
    }
}

/// The files beside the stores: source rows, their ids, access counts.
struct DiffInputs {
    var source: SourceRows?
    /// The source rows' ids; without a source, the ids to compare.
    var ids: [UInt64]?
    var idsPath: String?
    var frequencies: [Double]?
    var freqPath: String?

    init(source: String?, ids: String?, freq: String?) throws {
        self.source = try source.map { try SourceRows(path: $0) }
        idsPath = ids
        freqPath = freq
        if let ids {
            let read = try NPYFile(path: ids).readIDs()
            if let source = self.source, read.count != source.count {
                throw InputError("\(ids) has \(read.count) ids but \(source.path) has \(source.count) rows")
            }
            self.ids = read
        }
        if let freq {
            let expected: (Int, String)? = self.source.map { ($0.count, "\($0.path) has \($0.count) rows") }
                ?? self.ids.map { ($0.count, "\(ids!) has \($0.count) ids") }
            frequencies = try readFrequencies(freq, ids: self.ids, expected: expected)
        }
    }

    /// The counts by id: of `ids`, or of ids 0, 1, ... in order.
    var counts: LookupCounts? {
        get throws {
            guard let frequencies else { return nil }
            return try LookupCounts(ids: ids ?? (0..<UInt64(frequencies.count)).map { $0 }, counts: frequencies)
        }
    }
}

/// What `embstore diff` prints: every table's diff, and with a source both stores' evaluations.
struct DiffResult: Codable {
    struct Entry: Codable {
        var diff: TableDiff
        /// With --source: A's and B's evaluation against it.
        var sourceA: EvaluationReport?
        var sourceB: EvaluationReport?

        enum CodingKeys: String, CodingKey { case diff, sourceA = "source_a", sourceB = "source_b" }
    }

    var a: String
    var b: String
    var source: String?
    var freq: String?
    var tablesOnlyA: [String]
    var tablesOnlyB: [String]
    var tables: [Entry]

    enum CodingKeys: String, CodingKey {
        case a, b, source, freq, tablesOnlyA = "tables_only_a", tablesOnlyB = "tables_only_b", tables
    }

    /// Diffs `table`, or every table both stores have, and with a source evaluates both.
    static func run(_ a: AnyStore, _ b: AnyStore, paths: (String, String), table: String?, inputs: DiffInputs,
                    options: DiffOptions, progress: ProgressLines) throws -> DiffResult {
        let namesA = try a.tableNames, namesB = try b.tableNames
        var names: [String]
        if let table {
            guard namesA.contains(table) else { throw InputError("\(paths.0) has no table '\(table)' (it has: \(namesA.joined(separator: ", ")))") }
            guard namesB.contains(table) else { throw InputError("\(paths.1) has no table '\(table)' (it has: \(namesB.joined(separator: ", ")))") }
            names = [table]
        } else {
            names = namesA.filter { namesB.contains($0) }
            guard !names.isEmpty else { throw InputError("\(paths.0) and \(paths.1) have no table in common") }
        }
        if inputs.source != nil || inputs.ids != nil || inputs.frequencies != nil, names.count > 1 {
            throw InputError("--source, --ids and --freq describe one table; name it with --table (both stores have \(names.joined(separator: ", ")))")
        }
        var options = options
        options.ids = inputs.ids
        let counts = try inputs.counts
        let started = Date()
        var entries: [Entry] = []
        for name in names {
            var entry = Entry(diff: try a.diff(b, table: name, counts: counts, options: options) { progress.report($0) })
            if let source = inputs.source {
                let d = try a.dimension(of: name)
                guard d == source.dimension else {
                    throw InputError("\(source.path) has rows of dimension \(source.dimension), but table '\(name)' has dimension \(d)")
                }
                var evaluation = EvaluationOptions()
                evaluation.queryCount = options.queryCount
                evaluation.seed = options.seed
                evaluation.threads = options.threads
                func evaluate(_ store: AnyStore, _ side: String) throws -> EvaluationReport {
                    try source.withRows { rows in
                        try store.evaluate(name, rows: rows, count: source.count, dimension: d, ids: inputs.ids,
                                           frequencies: inputs.frequencies, options: evaluation) {
                            progress.report(WorkProgress(stage: "\(side): \($0.stage)", done: $0.done, total: $0.total, unit: $0.unit))
                        }
                    }
                }
                entry.sourceA = try evaluate(a, "A")
                entry.sourceB = try evaluate(b, "B")
            }
            entries.append(entry)
        }
        progress.finish(String(format: "done in %.2f s", Date().timeIntervalSince(started)))
        return DiffResult(a: paths.0, b: paths.1, source: inputs.source?.path, freq: inputs.freqPath,
                          tablesOnlyA: namesA.filter { !namesB.contains($0) }, tablesOnlyB: namesB.filter { !namesA.contains($0) },
                          tables: entries)
    }

    // MARK: - The text report

    func text() -> String {
        var out = ["A = \(a)", "B = \(b)"]
        if !tablesOnlyA.isEmpty { out.append("tables only in A: " + tablesOnlyA.joined(separator: ", ")) }
        if !tablesOnlyB.isEmpty { out.append("tables only in B: " + tablesOnlyB.joined(separator: ", ")) }
        for entry in tables { out += [""] + Self.text(entry, freq: freq) }
        return out.joined(separator: "\n")
    }

    static func text(_ entry: Entry, freq: String?) -> [String] {
        let diff = entry.diff
        var out = ["table '\(diff.table)' (dimension \(diff.dimension))"]
        func ids(_ list: [UInt64], of total: Int) -> String {
            list.isEmpty ? "" : " (ids " + list.map(String.init).joined(separator: ", ") + (total > list.count ? ", …)" : ")")
        }
        out.append("  rows: A \(grouped(diff.rowsA)), B \(grouped(diff.rowsB)), both \(grouped(diff.common)); only in A \(grouped(diff.onlyA))"
            + ids(diff.onlyAIDs, of: diff.onlyA) + "; only in B \(grouped(diff.onlyB))" + ids(diff.onlyBIDs, of: diff.onlyB))
        out.append("  codecs A → B (\(grouped(diff.changedCodecRows)) rows changed):")
        out.append(Eval.columns(["A", "B", "rows", "share"], diff.codecChanges.map {
            [$0.from, $0.from == $0.to ? "\($0.to) (same)" : $0.to, grouped($0.rows), String(format: "%.2f%%", 100 * Double($0.rows) / Double(max(diff.common, 1)))]
        }))
        let ratio = diff.bytesA.diskBytes > 0 ? Double(diff.bytesB.diskBytes) / Double(diff.bytesA.diskBytes) : .nan
        out.append(String(format: "  bytes on disk: A %@ (%@/row), B %@ (%@/row): B is %.3f× A", formatBytes(Double(diff.bytesA.diskBytes)),
                          formatBytesPerRow(diff.bytesA.bytesPerRow), formatBytes(Double(diff.bytesB.diskBytes)),
                          formatBytesPerRow(diff.bytesB.bytesPerRow), ratio))
        var byteRows: [[String]] = []
        for (side, bytes) in [("A", diff.bytesA), ("B", diff.bytesB)] {
            for form in bytes.forms {
                byteRows.append([side, form.form, grouped(form.rows), formatBytes(Double(form.diskBytes)),
                                 formatBytesPerRow(form.rows > 0 ? Double(form.diskBytes) / Double(form.rows) : 0)])
            }
            if bytes.sharedDiskBytes > 0 { byteRows.append([side, "shared", "", formatBytes(Double(bytes.sharedDiskBytes)), ""]) }
        }
        out.append(Eval.columns(["store", "form", "rows", "on disk", "per row"], byteRows))

        out.append("  B against A, rows both have (cos = cosine; rel L2 = ‖a − b‖ / ‖a‖):")
        let header = ["group", "rows", "identical", "cos mean", "cos p1", "cos min", "rel L2 mean", "p50", "p90", "p99", "p99.9", "max"]
        func cells(_ name: String, _ e: TableDiff.RowErrors) -> [String] {
            [name, grouped(e.rows), grouped(e.identicalRows), Eval.fixed(e.cosine.mean, 6), Eval.fixed(e.cosine.p1, 6), Eval.fixed(e.cosine.min, 6),
             Eval.scientific(e.relativeL2.mean), Eval.scientific(e.relativeL2.p50), Eval.scientific(e.relativeL2.p90),
             Eval.scientific(e.relativeL2.p99), Eval.scientific(e.relativeL2.p99_9), Eval.scientific(e.relativeL2.max)]
        }
        out.append(Eval.columns(header, [cells("all", diff.errors)] + diff.deciles.map { cells("decile \($0.decile)", $0.errors) }))
        if !diff.deciles.isEmpty { out.append("  (deciles by \(freq ?? "freq"): 1 = the hottest 10% of rows)") }

        if !diff.neighbours.isEmpty {
            out.append("  top-\(diff.k) neighbour agreement (by cosine, among A's rows and among B's, query row excluded):")
            var header = ["set", "drawn", "queries", "agreement"]
            for d in diff.deciles { header.append("d\(d.decile)") }
            out.append(Eval.columns(header, diff.neighbours.map { set in
                [set.name, set.drawn, grouped(set.queries), Eval.fixed(set.agreement, 4)]
                    + diff.deciles.map { d in Eval.fixed(d.neighbours.first { $0.set == set.name }?.agreement, 3) }
            }))
        }
        if !diff.worst.isEmpty {
            out.append("  worst rows (largest relative L2):")
            out.append(Eval.columns(["id", "rel L2", "cos", "A", "B", "freq", "decile"], diff.worst.map {
                [String($0.id), Eval.scientific($0.relativeL2), Eval.fixed($0.cosine, 6), $0.codecA, $0.codecB,
                 $0.frequency.map(Eval.compact) ?? "-", $0.decile.map(String.init) ?? "-"]
            }))
        }
        if let sourceA = entry.sourceA, let sourceB = entry.sourceB {
            out.append("  against the source (as embstore eval; recall@\(sourceA.k) of the exact neighbours):")
            var rows: [[String]] = []
            for (side, report) in [("A", sourceA), ("B", sourceB)] {
                var row = [side, Eval.fixed(report.overall.meanCosine, 6), Eval.fixed(report.overall.meanRelativeL2, 4)]
                for set in sourceA.querySets.map(\.name) {
                    row.append(Eval.fixed(report.querySets.first { $0.name == set }?.recall, 4))
                }
                rows.append(row)
            }
            out.append(Eval.columns(["store", "mean cos", "rel L2"] + sourceA.querySets.map { "recall \($0.name)" }, rows))
            if !sourceA.deciles.isEmpty {
                out.append("  recall@\(sourceA.k) by decile of the query row, A → B:")
                let rowsByDecile = zip(sourceA.deciles, sourceB.deciles).map { da, db -> [String] in
                    var row = [String(da.decile)]
                    for (ga, gb) in zip(da.queries, db.queries) {
                        row += [Eval.fixed(ga.recall, 4), Eval.fixed(gb.recall, 4),
                                ga.recall.flatMap { ra in gb.recall.map { String(format: "%+.4f", $0 - ra) } } ?? "-"]
                    }
                    return row
                }
                out.append(Eval.columns(["decile"] + sourceA.querySets.flatMap { ["\($0.name) A", "B", "change"] }, rowsByDecile))
            }
        }
        let rescans = diff.neighbours.reduce(0) { $0 + $1.exactRescans }
        var notes = diff.notes
        if rescans > 0 { notes.append("\(rescans) neighbour searches had near-ties in float32 and were settled in float64 over every row") }
        out += notes.map { "  note: \($0)" }
        return out
    }
}
