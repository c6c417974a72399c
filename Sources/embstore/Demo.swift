import ArgumentParser
import Dispatch
import EmbeddingCodecs
import EmbeddingStore
import Foundation
import NPY

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `embstore demo`: the main job on a generated table, in a few lines and well under a minute:
/// generate rows, counts and ids and write them as .npy files; load them under a byte budget
/// (and an int8 copy as the baseline); where the bytes went, with the chart; what compression
/// cost; lookup throughput of both tables; and the commands that repeat each step by hand.
///
/// Every figure comes from the code the other commands run: `Store.load`, `storageStatistics`
/// and `StatsPlot` (`stats --plot`), `Store.evaluate` (`eval`), `Bench.measureLookups` (`bench`).
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the main job on a generated table: ingest under a byte budget, stats with the chart, eval, lookup throughput.",
        discussion: """
            Generates a table shaped like trained embeddings (rows around cluster centres, mixed by a random \
            rotation with a decaying spectrum, with varying norms), Zipf access counts and sparse random 64-bit \
            ids, and writes them to --dir as vectors.npy, ids.npy, freq.npy and lookups.npy (an id stream drawn \
            from the counts). Loads the rows into the table 'demo' with a byte budget (each row gets the codec \
            that minimises its weighted error within the budget) and into 'demo_int8' with int8 rows, the \
            baseline; prints rows, bytes and lookups per codec form (and writes stats.svg), row errors and \
            recall@10 against the generated rows, and the lookup throughput of both tables; then the \
            commands that repeat each step on the files. The default budget, 25% of the float32 payload, is \
            less than an int8 row takes on disk at d = 64 (73 bytes and ~9 of index, 32%): the budget has \
            to mix codecs, which is what it is for.
            """)

    @Option(help: ArgumentHelp("Directory for the files and the store: new or empty (default: a new directory under the system's temporary directory).",
                               valueName: "dir"))
    var dir: String?
    @Option(help: "Rows of the generated table.") var rows = 200_000
    @Option(help: "Values a row.") var dimension = 64
    @Option(help: ArgumentHelp("The load's byte budget, a share of the rows' float32 payload on disk (0.25 or 25%).", valueName: "fraction"))
    var budget = "0.25"
    @Option(help: "Seed of the generator: the same seed, rows and dimension write the same files.") var seed: UInt64 = 1
    @Option(help: "The budget's weighting: traffic (the default here: a serving table, whose decode time per lookup is held to twice int8's) or retrieval.")
    var weighting: CodecPolicy.Weighting = .traffic

    static let table = "demo", baselineTable = "demo_int8"
    /// Below 2,000 rows of 64 values the pages every store has take more than a 25% budget; the
    /// generator's basis costs O(d³) and its rows O(N·d²).
    static let minimumRows = 2_000
    static let dimensions = 8...1024
    /// The lookup measurement: `bench`'s defaults but for shorter repetitions.
    static let batch = 512, reps = 5, repSeconds = 0.25

    func run() throws {
        let started = Date()
        guard rows >= Self.minimumRows else {
            throw InputError("--rows must be at least \(formatCount(Self.minimumRows)) (got \(rows)): below that the pages every "
                + "store has take most of a budget")
        }
        guard Self.dimensions.contains(dimension) else {
            throw InputError("--dimension must be in \(Self.dimensions.lowerBound)...\(Self.dimensions.upperBound) (got \(dimension))")
        }
        let fraction: Double
        do {
            fraction = try CodecPolicy.parseBudgetFraction(budget)
        } catch {
            throw InputError("--budget: \(error)")
        }
        let directory = try prepareDirectory()
        let files = Files(directory: directory)
        let n = rows, d = dimension
        let payload = Double(n) * Double(d) * 4
        let policy = CodecPolicy.budget(.fraction(fraction), weighting: weighting)
        let budgetText = "budget " + String(format: "%.4g%%", fraction * 100)
        print("embstore demo: \(formatCount(n)) rows × \(d), \(budgetText) of the float32 payload, seed \(seed); files in \(directory)")
        flush()

        // 1. Generate and write the files.
        var clock = Date()
        let generated = DemoTable(rows: n, dimension: d, seed: seed)
        try generated.vectors.withUnsafeBufferPointer {
            try NPYWriter.writeFloat32(path: files.vectors, rows: n, columns: d, values: $0)
        }
        try NPYWriter.writeUInt64(path: files.ids, values: generated.ids)
        try NPYWriter.writeUInt64(path: files.freq, values: generated.counts)
        try NPYWriter.writeUInt64(path: files.lookups, values: generated.lookups)
        let generateSeconds = Date().timeIntervalSince(clock)
        let totalLookups = generated.counts.reduce(0.0) { $0 + Double($1) }
        let hottest = generated.counts.sorted(by: >).prefix(max(1, n / 100)).reduce(0.0) { $0 + Double($1) }
        let neverLooked = generated.counts.filter { $0 == 0 }.count
        step("generate", [
            "\(formatCount(n)) rows × \(d) around \(formatCount(generated.clusters)) cluster centres, random 64-bit ids"
                + String(format: " (%.1f s)", generateSeconds),
            "Zipf(\(DemoTable.zipfExponent)) counts: \(formatLookups(totalLookups)) lookups, \(formatShare(hottest / totalLookups)) of them "
                + "on the hottest 1% of rows; \(formatCount(neverLooked)) rows never looked up",
            "vectors.npy (\(formatBytes(payload)) float32), ids.npy, freq.npy; lookups.npy: \(formatCount(DemoTable.lookupBatches)) "
                + "batches of \(Self.batch) ids drawn from the counts",
        ])

        // 2. Ingest: the budget, then the int8 baseline.
        let store = try Store(path: files.store)
        let counts = generated.counts.map { Double($0) }   // not `map(Double.init)`: that picks init(bitPattern:)
        clock = Date()
        do {
            try generated.vectors.withUnsafeBufferPointer {
                _ = try store.load(table: Self.table, ids: generated.ids, rows: $0, count: n, dimension: d, policy: policy, counts: counts)
            }
        } catch {
            throw InputError("ingest with \(policy): \(error)")
        }
        try store.sync()
        let ingestSeconds = Date().timeIntervalSince(clock)
        clock = Date()
        try generated.vectors.withUnsafeBufferPointer {
            _ = try store.load(table: Self.baselineTable, ids: generated.ids, rows: $0, count: n, dimension: d, codec: .int8)
        }
        try store.sync()
        let baselineSeconds = Date().timeIntervalSince(clock)
        let handle = try store.table(Self.table), baseline = try store.table(Self.baselineTable)
        clock = Date()
        let storage = try store.storageStatistics(handle, counts: try LookupCounts(ids: generated.ids, counts: counts))
        let baselineStorage = try store.storageStatistics(baseline)
        var statsSeconds = Date().timeIntervalSince(clock)
        func ingestLine(_ table: String, _ what: String, seconds: Double, diskBytes: Int) -> [String] {
            [table, what, "\(formatCount(n)) rows in " + String(format: "%.2f s", seconds), "(\(formatRate(Double(n) / seconds)) rows/s)",
             formatBytes(Double(diskBytes)) + " on disk", String(format: "%.1f%%", 100 * Double(diskBytes) / payload) + " of float32"]
        }
        step("ingest", align([
            ingestLine(Self.table, budgetText, seconds: ingestSeconds, diskBytes: storage.diskBytes),
            ingestLine(Self.baselineTable, "int8", seconds: baselineSeconds, diskBytes: baselineStorage.diskBytes),
        ], right: [2, 4, 5]) + ["float32: \(formatBytes(payload)); on disk: the table's LMDB pages, its index and tc model included"])

        // 3. Stats: per codec form, and the chart.
        clock = Date()
        try StatsPlot(storage: storage, storePath: files.store, countsSource: files.freq).write(to: files.chart)
        statsSeconds += Date().timeIntervalSince(clock)
        let diskTotal = Double(max(storage.diskBytes, 1))
        let lookupTotal = storage.lookups?.total ?? 0
        var statRows = [["form", "rows", "of rows", "of bytes", "of lookups"]]
        for form in storage.forms {
            statRows.append([form.form, formatCount(form.rows), percent(Double(form.rows), Double(storage.rows)),
                             percent(Double(form.diskBytes), diskTotal), percent(form.lookups ?? 0, lookupTotal)])
        }
        for shared in storage.shared where shared.diskBytes > 0 {
            statRows.append([shared.label, "", "", percent(Double(shared.diskBytes), diskTotal), ""])
        }
        var statLines = align(statRows, right: [1, 2, 3, 4])
        if let milestone = storage.milestones.first(where: { $0.lookupShare == 0.8 }) {
            statLines.append("80% of lookups come from \(formatShare(milestone.diskBytes / diskTotal)) of the bytes "
                             + "(the \(formatCount(milestone.rows)) hottest rows)")
        }
        statLines.append("chart: \(files.chart)")
        step("stats", statLines)

        // 4. Eval against the generated rows, both tables.
        clock = Date()
        // A line every 10 s, so only a long eval (many rows) breaks into the demo's lines.
        let progress = ProgressLines(prefix: "demo: eval", quiet: false, interval: 10)
        let (report, baselineReport) = try generated.vectors.withUnsafeBufferPointer { source in
            let evaluate = { (table: Table) in
                try store.evaluate(table, rows: source, count: n, dimension: d, ids: generated.ids, frequencies: counts,
                                   options: EvaluationOptions()) { progress.report($0) }
            }
            return (try evaluate(handle), try evaluate(baseline))
        }
        let evalSeconds = Date().timeIntervalSince(clock)
        func recall(_ report: EvaluationReport, _ set: String) -> String {
            fixed(report.querySets.first { $0.name == set }?.recall, 4)
        }
        var evalRows = [["form", "rows", "mean cos", "recall@10 hot", "recall@10 uniform"]]
        evalRows.append([Self.table, formatCount(report.overall.rows), fixed(report.overall.meanCosine, 5), recall(report, "hot"),
                         recall(report, "uniform")])
        for name in storage.forms.map(\.form) {
            guard let form = report.forms.first(where: { $0.form == name }) else { continue }
            func cell(_ set: String) -> String {
                guard let group = form.queries.first(where: { $0.set == set }), group.queries > 0 else { return "-" }
                return fixed(group.recall, 4) + " (\(formatCount(group.queries)))"
            }
            evalRows.append(["  " + name, formatCount(form.errors.rows), fixed(form.errors.meanCosine, 5), cell("hot"), cell("uniform")])
        }
        evalRows.append([Self.baselineTable, formatCount(baselineReport.overall.rows), fixed(baselineReport.overall.meanCosine, 5),
                         recall(baselineReport, "hot"), recall(baselineReport, "uniform")])
        step("eval", align(evalRows, right: [1, 2, 3, 4]) + [
            "recall@10: the share of a query row's 10 nearest rows (cosine) that the decoded rows give too, over 1,000 queries",
            "drawn ∝ counts (hot) and 1,000 uniformly; (n) = the queries whose row has that form" + String(format: " (%.1f s)", evalSeconds),
        ])

        // 5. Lookup throughput: batches of 512 ids drawn from the counts, one thread.
        clock = Date()
        let rate = try Self.lookupRate(store: store, table: handle, stream: generated.lookups)
        let baselineRate = try Self.lookupRate(store: store, table: baseline, stream: generated.lookups)
        let lookupSeconds = Date().timeIntervalSince(clock)
        step("lookups", align([
            [Self.table, formatRate(rate) + " rows/s", ""],
            [Self.baselineTable, formatRate(baselineRate) + " rows/s",
             String(format: "%.2f× %@'s speed with %.2f× its bytes", baselineRate / rate, Self.table,
                    Double(baselineStorage.diskBytes) / diskTotal)],
        ], right: [1]) + ["batches of \(Self.batch) ids from lookups.npy, 1 thread, median of \(Self.reps) runs of ~\(Self.repSeconds) s"])

        // 6. The same steps with the command line.
        let binary = Self.shellQuoted(CommandLine.arguments.first ?? "embstore")
        let q = Self.shellQuoted
        let commands = [
            "\(binary) ingest \(q(files.store)) --table \(Self.table) --vectors \(q(files.vectors)) --ids \(q(files.ids)) --freq \(q(files.freq)) --budget \(q(budget)) --weighting \(weighting.rawValue)",
            "\(binary) ingest \(q(files.store)) --table \(Self.baselineTable) --vectors \(q(files.vectors)) --ids \(q(files.ids)) --codec int8",
            "\(binary) stats \(q(files.store)) --table \(Self.table) --freq \(q(files.freq)) --ids \(q(files.ids)) --plot \(q(files.chart))",
            "\(binary) eval \(q(files.store)) --table \(Self.table) --source \(q(files.vectors)) --ids \(q(files.ids)) --freq \(q(files.freq))",
            "\(binary) bench \(q(files.store)) --table \(Self.table) --ids \(q(files.lookups)) --rep-seconds \(Self.repSeconds)",
            "\(binary) bench \(q(files.store)) --table \(Self.baselineTable) --ids \(q(files.lookups)) --rep-seconds \(Self.repSeconds)",
        ]
        step("by hand", ["the same steps with the command line (the ingest lines build the store anew: remove \(q(files.store)) first):"])
        for command in commands { print("  " + command) }
        print(String(format: "done in %.1f s: generate %.1f s, ingest %.1f s, stats and chart %.1f s, eval %.1f s, lookups %.1f s",
                     Date().timeIntervalSince(started), generateSeconds, ingestSeconds + baselineSeconds, statsSeconds, evalSeconds,
                     lookupSeconds))
    }

    /// The directory given (made when missing; refused when it is a file or not empty), or a
    /// new one under the temporary directory.
    private func prepareDirectory() throws -> String {
        let manager = FileManager.default
        guard let dir else {
            var template = Array((NSTemporaryDirectory() as NSString).appendingPathComponent("embstore-demo-XXXXXX").utf8CString)
            guard let made = mkdtemp(&template) else {
                throw InputError("cannot make a directory under \(NSTemporaryDirectory()): \(String(cString: strerror(errno)))")
            }
            return String(cString: made)
        }
        var isDirectory: ObjCBool = false
        if manager.fileExists(atPath: dir, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw InputError("--dir \(dir) is a file, not a directory") }
            let entries = (try? manager.contentsOfDirectory(atPath: dir)) ?? []
            guard entries.isEmpty else {
                throw InputError("--dir \(dir) is not empty (\(entries.count) entr\(entries.count == 1 ? "y" : "ies")): the demo writes "
                    + "vectors.npy, ids.npy, freq.npy, lookups.npy, stats.svg and store/ there; give a new or empty directory")
            }
            return dir
        }
        do {
            try manager.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw InputError("cannot make --dir \(dir): \(error.localizedDescription)")
        }
        return dir
    }

    struct Files {
        let vectors, ids, freq, lookups, store, chart: String
        init(directory: String) {
            func path(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }
            vectors = path("vectors.npy"); ids = path("ids.npy"); freq = path("freq.npy"); lookups = path("lookups.npy")
            store = path("store"); chart = path("stats.svg")
        }
    }

    /// Median rows/s of `bench`'s lookup workload on `stream`, one thread.
    static func lookupRate(store: Store, table: Table, stream: [UInt64]) throws -> Double {
        let measured = try Bench.measureLookups(store: store, table: table, stream: stream, batch: batch, threads: 1, reps: reps,
                                                repSeconds: repSeconds)
        guard let rate = measured["rows_per_s"] as? Double else { throw InputError("the lookup measurement gave no rate") }
        return rate
    }

    // MARK: - Output

    /// A step: its name, then its lines, aligned under one another.
    private func step(_ name: String, _ lines: [String]) {
        let width = 10
        for (i, line) in lines.enumerated() {
            let label = i == 0 ? name : ""
            print(label + String(repeating: " ", count: max(1, width - label.count)) + line)
        }
        flush()
    }

    /// Cells padded to their column's widest, two spaces apart; columns in `right` right-aligned;
    /// no trailing blanks.
    private func align(_ rows: [[String]], right: Set<Int>) -> [String] {
        let columns = rows.map(\.count).max() ?? 0
        let widths = (0..<columns).map { c in rows.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
        return rows.map { row in
            var line = ""
            for (c, cell) in row.enumerated() {
                let pad = String(repeating: " ", count: widths[c] - cell.count)
                line += (c > 0 ? "  " : "") + (right.contains(c) ? pad + cell : cell + pad)
            }
            while line.last == " " { line.removeLast() }
            return line
        }
    }

    private func fixed(_ value: Double?, _ digits: Int) -> String {
        value.map { String(format: "%.\(digits)f", $0) } ?? "-"
    }

    private func percent(_ part: Double, _ whole: Double) -> String {
        whole > 0 ? String(format: "%.1f%%", 100 * part / whole) : "-"
    }

    private func flush() { fflush(nil) }   // all output streams: each step shows as it ends, even through a pipe

    /// 43.4 k, 1.38 M.
    private func formatRate(_ rate: Double) -> String {
        if rate >= 1e6 { return String(format: "%.2f M", rate / 1e6) }
        if rate >= 1e3 { return String(format: "%.1f k", rate / 1e3) }
        return String(format: "%.0f", rate)
    }

    /// `text` as one shell word.
    static func shellQuoted(_ text: String) -> String {
        let plain = text.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) && $0.isASCII || "@%+=:,./-_".unicodeScalars.contains($0) }
        return plain && !text.isEmpty ? text : "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}

// MARK: - The generated table

/// A table shaped like trained embeddings, its access counts, ids and a lookup stream, all
/// from one seed (the same seed, rows and dimension give the same values on every run).
///
/// Rows: `0.1 · sᵢ · (0.6·c[kᵢ] + 0.8·zᵢ) · M`, as `../shared/bench/make_workload.py` makes
/// them: c are cluster centres and zᵢ noise, both standard normal, kᵢ a uniform cluster, sᵢ a
/// log-normal norm factor (σ = 0.35), and M = diag(σ) · Qᵀ a random orthonormal basis Q with a
/// decaying spectrum σⱼ ∝ j^−0.6 (mean σ² = 1), so PCA and the tc codec have structure to find.
/// Counts: P(rank r) ∝ r^−1.05 over a random permutation of the rows, each row's count Poisson
/// with mean 100·N·P(its rank) (a multinomial draw of about 100·N lookups, row by row; some
/// cold rows get 0). Ids: distinct random 64-bit values. Lookups: `lookupBatches` × 512 ids
/// drawn with replacement, P(row) ∝ its count.
struct DemoTable {
    static let zipfExponent = 1.05
    static let lookupsPerRow = 100.0
    static let lookupBatches = 2_000
    static let maximumClusters = 1_024

    let rows: Int
    let dimension: Int
    let clusters: Int
    /// rows × dimension, row-major.
    let vectors: [Float]
    let ids: [UInt64]
    let counts: [UInt64]
    let lookups: [UInt64]

    init(rows n: Int, dimension d: Int, seed: UInt64) {
        rows = n
        dimension = d
        // About 64 rows a cluster or more, at most 1,024 clusters (make_workload.py's).
        clusters = min(Self.maximumClusters, max(1, n / 64))
        vectors = Self.makeRows(n, d, clusters: clusters, seed: seed)
        ids = Self.makeIDs(n, seed: seed)
        counts = Self.makeCounts(n, seed: seed)
        lookups = Self.makeLookups(counts, ids: ids, count: Self.lookupBatches * Demo.batch, seed: seed)
    }

    /// The basis: Gram–Schmidt (twice) on standard normal vectors, in Double; row j of the
    /// result is σⱼ · qⱼ, so a latent row z maps to Σⱼ zⱼ σⱼ qⱼ.
    static func mixing(_ d: Int, random: inout DemoRandom) -> [Float] {
        var basis = [Double](repeating: 0, count: d * d)
        for j in 0..<d {
            for k in 0..<d { basis[j * d + k] = random.gaussian() }
            for _ in 0..<2 {
                for i in 0..<j {
                    var dot = 0.0
                    for k in 0..<d { dot += basis[j * d + k] * basis[i * d + k] }
                    for k in 0..<d { basis[j * d + k] -= dot * basis[i * d + k] }
                }
            }
            var norm = 0.0
            for k in 0..<d { norm += basis[j * d + k] * basis[j * d + k] }
            norm = norm.squareRoot()
            for k in 0..<d { basis[j * d + k] /= norm }
        }
        var spectrum = (1...d).map { pow(Double($0), -0.6) }
        let rms = (spectrum.reduce(0) { $0 + $1 * $1 } / Double(d)).squareRoot()
        spectrum = spectrum.map { $0 / rms }
        return (0..<d * d).map { Float(spectrum[$0 / d] * basis[$0]) }
    }

    static func makeRows(_ n: Int, _ d: Int, clusters: Int, seed: UInt64) -> [Float] {
        var random = DemoRandom(seed: seed, stream: 1)
        let mix = mixing(d, random: &random)
        var centres = [Float](repeating: 0, count: clusters * d)
        for i in centres.indices { centres[i] = Float(0.6 * random.gaussian()) }
        var out = [Float](repeating: 0, count: n * d)
        // Chunks of rows, each with its own stream: the same values on any number of threads.
        let chunk = 4096
        let chunks = (n + chunk - 1) / chunk
        out.withUnsafeMutableBufferPointer { out in
            nonisolated(unsafe) let out = out
            mix.withUnsafeBufferPointer { mix in
                nonisolated(unsafe) let mix = mix
                centres.withUnsafeBufferPointer { centres in
                    nonisolated(unsafe) let centres = centres
                    DispatchQueue.concurrentPerform(iterations: chunks) { c in
                        var random = DemoRandom(seed: seed, stream: 0x100 + UInt64(c))
                        var latent = [Float](repeating: 0, count: d)
                        for row in c * chunk..<min(n, (c + 1) * chunk) {
                            let cluster = Int(random.next() % UInt64(clusters))
                            let scale = Float(0.1 * exp(0.35 * random.gaussian()))
                            for j in 0..<d { latent[j] = centres[cluster * d + j] + Float(0.8 * random.gaussian()) }
                            let target = out.baseAddress! + row * d
                            for k in 0..<d { target[k] = 0 }
                            for j in 0..<d {
                                let z = latent[j] * scale
                                let basisRow = mix.baseAddress! + j * d
                                for k in 0..<d { target[k] += z * basisRow[k] }
                            }
                        }
                    }
                }
            }
        }
        return out
    }

    /// Distinct random 64-bit ids, in the order drawn.
    static func makeIDs(_ n: Int, seed: UInt64) -> [UInt64] {
        var random = DemoRandom(seed: seed, stream: 2)
        var seen = Set<UInt64>(minimumCapacity: n)
        var ids: [UInt64] = []
        ids.reserveCapacity(n)
        while ids.count < n {
            let id = random.next()
            if seen.insert(id).inserted { ids.append(id) }
        }
        return ids
    }

    /// Row i's count: Poisson with mean 100·N·P(rank of row i), P(r) ∝ r^−1.05.
    static func makeCounts(_ n: Int, seed: UInt64) -> [UInt64] {
        var random = DemoRandom(seed: seed, stream: 3)
        var rowOfRank = Array(0..<n)
        for i in stride(from: n - 1, to: 0, by: -1) { rowOfRank.swapAt(i, Int(random.next() % UInt64(i + 1))) }
        let harmonic = (1...n).reduce(0.0) { $0 + pow(Double($1), -zipfExponent) }
        let total = lookupsPerRow * Double(n)
        var counts = [UInt64](repeating: 0, count: n)
        for rank in 0..<n {
            counts[rowOfRank[rank]] = random.poisson(total * pow(Double(rank + 1), -zipfExponent) / harmonic)
        }
        return counts
    }

    /// `count` ids drawn with replacement, P(row) ∝ its count.
    static func makeLookups(_ counts: [UInt64], ids: [UInt64], count: Int, seed: UInt64) -> [UInt64] {
        var random = DemoRandom(seed: seed, stream: 4)
        var cumulative: [UInt64] = []
        cumulative.reserveCapacity(counts.count)
        var sum: UInt64 = 0
        for c in counts {
            sum += c
            cumulative.append(sum)
        }
        guard sum > 0 else { return [] }
        return (0..<count).map { _ in
            // The first row whose cumulative count exceeds a uniform draw in 0..<sum.
            let draw = UInt64.random(in: 0..<sum, using: &random)
            var low = 0, high = cumulative.count - 1
            while low < high {
                let middle = (low + high) / 2
                if cumulative[middle] > draw { high = middle } else { low = middle + 1 }
            }
            return ids[low]
        }
    }
}

/// SplitMix64 with Box–Muller normals: small, fast, and the same stream everywhere.
struct DemoRandom: RandomNumberGenerator {
    private var core: SplitMix64
    private var spare: Double?

    init(seed: UInt64, stream: UInt64) {
        core = SplitMix64(seed: seed, stream: stream)
        _ = next()
    }

    mutating func next() -> UInt64 { core.next() }

    /// Uniform in (0, 1).
    mutating func uniform() -> Double { (Double(next() >> 11) + 0.5) * 0x1p-53 }

    mutating func gaussian() -> Double {
        if let value = spare {
            spare = nil
            return value
        }
        let radius = (-2 * log(uniform())).squareRoot(), angle = 2 * Double.pi * uniform()
        spare = radius * sin(angle)
        return radius * cos(angle)
    }

    /// Poisson(mean): by multiplying uniforms below 30, by the normal approximation above.
    mutating func poisson(_ mean: Double) -> UInt64 {
        if mean < 30 {
            let limit = exp(-mean)
            var k: UInt64 = 0
            var product = uniform()
            while product > limit {
                k += 1
                product *= uniform()
            }
            return k
        }
        return UInt64(max(0, (mean + mean.squareRoot() * gaussian()).rounded()))
    }
}
