import ArgumentParser
import EmbeddingStore
import Foundation
import NPY
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `embstore eval`: reads the files, calls `Store.evaluate` and prints its report. Every figure
/// is defined in the library (Sources/EmbeddingStore/Evaluation.swift) and in README.md.
struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure what compression cost a table: row errors, dot-product errors and recall@10 against the source rows.",
        discussion: """
            Compares every source row with the row the store returns for its id: MSE, mean cosine and \
            relative L2 error (frequency-weighted too with --freq), overall and per codec form; the \
            RMS error of dot products between query rows and a sample of 2,000 rows; and recall@10 of \
            each query row's nearest neighbours by cosine among the decoded rows against the exact \
            ones among the source rows. Query rows: --query-count drawn with p ∝ freq ("hot", needs \
            --freq) and as many uniformly ("uniform"), or the rows of --queries ("given"). With --freq, \
            also per popularity decile (1 = the hottest 10% of rows).
            """)

    @Argument(help: "The store directory.") var store: String
    @Option(help: "Table name.") var table: String
    @Option(help: "float32 or float16 .npy file [N, d]: the full-precision rows.") var source: String
    @Option(help: "int64 or uint64 .npy file of the N ids of the source rows (default 0..N-1).") var ids: String?
    @Option(help: "Access counts of the source rows, in their order: a 1-D .npy of uint64, int64, float32 or float64.")
    var freq: String?
    @Option(help: "int64 .npy of query rows (positions into the source rows) to use instead of drawn ones.")
    var queries: String?
    @Option(help: "Query rows drawn per set (capped at N).") var queryCount = 1000
    @Option(help: "Seed of the query draws and of the dot-product sample.") var seed: UInt64 = 0
    @Option(help: "Rows in the dot-product sample (capped at N).") var dotSample = 2000
    @Option(help: "Threads (default: the active processors).") var threads: Int?
    @Flag(help: "Print one JSON object instead of tables.") var json = false
    @Flag(help: "No progress lines on stderr.") var quiet = false

    func run() throws {
        guard queryCount >= 1 else { throw InputError("--query-count must be at least 1") }
        guard dotSample >= 1 else { throw InputError("--dot-sample must be at least 1") }
        if let threads, threads < 1 { throw InputError("--threads must be at least 1") }

        let file = try SourceRows(path: source)
        let (count, dimension) = (file.count, file.dimension)
        var idValues: [UInt64]?
        if let ids {
            let read = try NPYFile(path: ids).readIDs()
            guard read.count == count else { throw InputError("\(ids) has \(read.count) ids but \(source) has \(count) rows") }
            idValues = read
        }
        let frequencies = try freq.map { try readFrequencies($0, ids: idValues, expected: (count, "\(source) has \(count) rows")) }
        var options = EvaluationOptions()
        options.queryCount = queryCount
        options.seed = seed
        options.dotSampleRows = dotSample
        if let threads { options.threads = threads }
        if let queries { options.queries = try readQueryRows(queries, rows: count) }

        let storeHandle = try openReadOnly(store)
        let handle = try storeHandle.table(table)
        guard handle.dimension == dimension else {
            throw InputError("\(source) has rows of dimension \(dimension), but table '\(table)' has dimension \(handle.dimension)")
        }
        let progress = ProgressLines(prefix: "eval", quiet: quiet)
        let started = Date()
        let evaluate = { (rows: UnsafeBufferPointer<Float>) in
            try storeHandle.evaluate(handle, rows: rows, count: count, dimension: dimension, ids: idValues,
                                     frequencies: frequencies, options: options) { progress.report($0) }
        }
        let report = try file.withRows(evaluate)
        progress.finish(String(format: "done in %.2f s", Date().timeIntervalSince(started)))
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(Self.text(report, source: source, freq: freq))
        }
    }

    /// A 1-D int64 (or uint64) .npy of row positions, each in 0..<rows.
    func readQueryRows(_ path: String, rows: Int) throws -> [Int] {
        let file = try NPYFile(path: path)
        guard file.shape.count == 1, file.dtype == .int64 || file.dtype == .uint64 else {
            throw InputError("\(path) must be a 1-D int64 array of row positions, not a \(file.shape.count)-D \(file.dtype.rawValue) array")
        }
        guard file.count > 0 else { throw InputError("\(path) holds no query rows") }
        var result: [Int] = []
        var seen = Set<Int64>()
        for i in 0..<file.count {
            let raw = file.rawData.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)
            let value = file.dtype == .int64 ? Int64(bitPattern: raw) : Int64(clamping: raw)
            guard value >= 0, value < Int64(rows) else {
                throw InputError("\(path): query \(i) is row \(file.dtype == .int64 ? String(value) : String(raw)), "
                    + "outside the \(rows) source rows (0...\(rows - 1))")
            }
            guard seen.insert(value).inserted else { throw InputError("\(path): row \(value) is a query twice (the second time at index \(i))") }
            result.append(Int(value))
        }
        return result
    }

    // MARK: - The text report

    static func text(_ report: EvaluationReport, source: String, freq: String?) -> String {
        var out: [String] = []
        out.append("table '\(report.table)': \(grouped(report.rows)) rows of \(source) (dimension \(report.dimension)) against "
            + "the store's \(grouped(report.storeRows)) live rows")
        out.append("")
        let weighted = report.frequencyWeighted
        var header = ["form", "rows", "bytes/row", "MSE", "mean cos", "rel L2"]
        if weighted { header += ["w. MSE", "w. mean cos", "w. rel L2"] }
        func errorCells(_ e: EvaluationReport.Errors) -> [String] {
            var cells = [grouped(e.rows)]
            cells += [scientific(e.mse), fixed(e.meanCosine, 6), fixed(e.meanRelativeL2, 4)]
            if weighted { cells += [scientific(e.weightedMSE), fixed(e.weightedMeanCosine, 6), fixed(e.weightedMeanRelativeL2, 4)] }
            return cells
        }
        let totalBytes = report.forms.reduce(0.0) { $0 + $1.bytesPerRow * Double($1.errors.rows) }
        var rows = [["all"] + [grouped(report.rows), String(format: "%.1f", totalBytes / Double(max(report.rows, 1)))]
                    + errorCells(report.overall).dropFirst()]
        for form in report.forms {
            rows.append([form.form, grouped(form.errors.rows), String(format: "%.1f", form.bytesPerRow)] + errorCells(form.errors).dropFirst())
        }
        out.append("row errors (x = source row, x̂ = decoded row\(weighted ? "; w. = weighted by \(freq ?? "freq")" : "")):")
        out.append(columns(header, rows))
        out.append("")

        out.append("queries: recall@\(report.k) = shared neighbours of the exact top \(report.k) (source rows) and the decoded top \(report.k) "
            + "(decoded rows), by cosine, query row excluded; dot products against \(grouped(report.dotSampleRows)) sampled rows:")
        rows = report.querySets.map { set in
            [set.name, set.drawn, grouped(set.queries), fixed(set.recall, 4), scientific(set.dotRMSError), fixed(set.dotRelativeError, 5)]
        }
        out.append(columns(["set", "drawn", "queries", "recall@\(report.k)", "dot RMS err", "dot rel err"], rows))
        if report.forms.count > 1 {
            out.append("")
            out.append("queries by the codec form of the query row:")
            rows = report.forms.flatMap { form in
                form.queries.map { [form.form, $0.set, grouped($0.queries), fixed($0.recall, 4), scientific($0.dotRMSError), fixed($0.dotRelativeError, 5)] }
            }
            out.append(columns(["form", "set", "queries", "recall@\(report.k)", "dot RMS err", "dot rel err"], rows))
        }
        if !report.deciles.isEmpty {
            out.append("")
            out.append("popularity deciles (1 = the hottest 10% of rows by freq):")
            var header = ["decile", "rows", "freq min", "freq max", "freq share", "MSE", "mean cos"]
            for set in report.querySets { header += ["\(set.name) queries", "recall@\(report.k)"] }
            rows = report.deciles.map { decile in
                var cells = [String(decile.decile), grouped(decile.errors.rows), compact(decile.freqMin), compact(decile.freqMax),
                             String(format: "%.4f", decile.freqShare), scientific(decile.errors.mse), fixed(decile.errors.meanCosine, 6)]
                for group in decile.queries { cells += [grouped(group.queries), fixed(group.recall, 4)] }
                return cells
            }
            out.append(columns(header, rows))
        }
        let rescans = report.querySets.reduce(0) { $0 + $1.exactRescans }
        var notes = report.notes
        if rescans > 0 {
            notes.append("\(rescans) neighbour searches had near-ties in float32 and were settled in float64 over every row")
        }
        if !notes.isEmpty {
            out.append("")
            for note in notes { out.append("note: \(note)") }
        }
        return out.joined(separator: "\n")
    }

    /// Left-aligned first column, right-aligned others, two spaces apart.
    static func columns(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { c in all.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { c, cell in
                let pad = String(repeating: " ", count: widths[c] - cell.count)
                return c == 0 ? cell + pad : pad + cell
            }.joined(separator: "  ")
        }.map { "  " + $0 }.joined(separator: "\n")
    }

    static func fixed(_ value: Double?, _ digits: Int) -> String {
        value.map { String(format: "%.\(digits)f", $0) } ?? "-"
    }

    static func scientific(_ value: Double?) -> String {
        value.map { String(format: "%.3e", $0) } ?? "-"
    }

    static func compact(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? grouped(Int(value)) : String(format: "%.4g", value)
    }
}

/// A float32 or float16 .npy file of source rows [N, d], read as Float rows.
struct SourceRows {
    let path: String
    let file: NPYFile
    let count: Int
    let dimension: Int

    init(path: String) throws {
        self.path = path
        file = try NPYFile(path: path)
        (count, dimension) = try file.matrixShape()
        guard count >= 1 else { throw InputError("\(path) has no rows") }
    }

    /// Calls `body` with every row: straight from the memory-mapped file when it holds aligned
    /// float32, else converted into an array.
    func withRows<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R {
        let data = file.rawData
        if file.dtype == .float32, let base = data.baseAddress, Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0 {
            return try withExtendedLifetime(file) {
                try body(UnsafeBufferPointer(start: base.assumingMemoryBound(to: Float.self), count: count * dimension))
            }
        }
        var values = [Float](repeating: 0, count: count * dimension)
        try values.withUnsafeMutableBufferPointer { try file.readFloatRows(0..<count, into: $0) }
        return try values.withUnsafeBufferPointer { try body($0) }
    }
}

/// Access counts from a 1-D .npy of uint64, int64, float32 or float64, each finite and ≥ 0;
/// with `expected`, exactly `expected.count` of them (`expected.what` says whose count, for the
/// error). An error names the row and its id (`ids[row]`, or the row's position).
func readFrequencies(_ path: String, ids: [UInt64]?, expected: (count: Int, what: String)?) throws -> [Double] {
    let values = try NPYFile(path: path, allowFloat64: true).readCounts()
    if let expected, values.count != expected.count {
        throw InputError("\(path) has \(values.count) counts but \(expected.what)")
    }
    if let bad = values.firstIndex(where: { !($0 >= 0) || $0.isInfinite }) {
        let id = ids?[bad] ?? UInt64(bad)
        let what = values[bad].isNaN ? "NaN" : values[bad] < 0 ? "negative (\(values[bad]))" : "infinite"
        throw InputError("\(path): the count of row \(bad) (id \(id)) is \(what); counts must be finite and ≥ 0")
    }
    return values
}

/// 12345678 as "12,345,678".
func grouped(_ n: Int) -> String {
    let digits = String(n.magnitude)
    var out = ""
    for (i, c) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return (n < 0 ? "-" : "") + out
}

/// Progress lines on stderr for long commands: "eval: decoded neighbours 40% (12,000 of 30,000
/// rows)". On a terminal at most two lines a second; otherwise (a log file, a pipe) one line
/// every 5 seconds; none with `--quiet`. A command that ends quickly prints none.
final class ProgressLines: Sendable {
    let prefix: String
    let enabled: Bool
    let interval: Double
    /// On a terminal, one line redrawn in place as a bar; otherwise a plain line every `interval`.
    let bar: Bool
    private let state: Mutex<(started: Double, last: Double, printed: Bool, stage: String, stageStarted: Double)>

    /// `interval`: seconds between lines (default: 0.5 on a terminal, else 5).
    init(prefix: String, quiet: Bool, interval: Double? = nil) {
        self.prefix = prefix
        enabled = !quiet
        bar = isatty(STDERR_FILENO) != 0
        self.interval = interval ?? (bar ? 0.5 : 5)
        let now = Date().timeIntervalSinceReferenceDate
        state = Mutex((now, now, false, "", now))
    }

    func report(_ progress: WorkProgress) {
        guard enabled else { return }
        let now = Date().timeIntervalSinceReferenceDate
        let stageStarted = state.withLock { state -> Double? in
            if state.stage != progress.stage {
                state.stage = progress.stage
                state.stageStarted = now
            }
            guard now - state.last >= interval else { return nil }
            state.last = now
            state.printed = true
            return state.stageStarted
        }
        guard let stageStarted else { return }
        let percent = progress.total > 0 ? 100 * progress.done / progress.total : 100
        var line = "\(prefix): \(progress.stage) \(percent)% (\(grouped(progress.done)) of \(grouped(progress.total)) \(progress.unit))"
        let elapsed = now - stageStarted
        if elapsed > 0.2, progress.done > 0 {
            let rate = Double(progress.done) / elapsed
            line += String(format: ", %@ %@/s", Self.compact(rate), progress.unit)
            if progress.total > progress.done { line += String(format: ", ETA %.0f s", Double(progress.total - progress.done) / rate) }
        }
        if bar {
            let width = 24, filled = min(width, width * percent / 100)
            let gauge = "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + gauge + line).utf8))
        } else {
            write(line + "...")
        }
    }

    static func compact(_ value: Double) -> String {
        value >= 1e6 ? String(format: "%.2f M", value / 1e6) : value >= 1e3 ? String(format: "%.1f k", value / 1e3) : String(format: "%.0f", value)
    }

    /// A last line, only when progress lines were printed.
    func finish(_ text: String) {
        guard enabled, state.withLock({ $0.printed }) else { return }
        if bar { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        write("\(prefix): \(text)")
    }

    private func write(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
