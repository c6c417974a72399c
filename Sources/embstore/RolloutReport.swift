import ArgumentParser
import EmbeddingStore
import Foundation

/// `embstore rollout report`: one self-contained HTML page to read before widening a stage
/// (README, "Staged rollout"): each candidate diffed (and with a source, evaluated) against the
/// baseline, the variants' live counters, and the rollout file's thresholds checked.
struct RolloutReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write a readiness report (one HTML page): each candidate against the baseline, live counters, and the rollout's thresholds checked.")

    @Argument(help: "The rollout file.") var file: String
    @Option(help: "Only this table (default: every table the baseline and a candidate both have).") var table: String?
    @Option(help: "float32 or float16 .npy [N, d] of the full-precision rows: scores every variant as embstore eval does (needs one table).")
    var source: String?
    @Option(help: "int64 or uint64 .npy of the ids to compare: those of the --source and --freq rows.") var ids: String?
    @Option(help: "Access counts: one per id of --ids (or of ids 0, 1, ...), for the popularity deciles.") var freq: String?
    @Option(help: "A variant router's counters (its metricsJSON, or embstore_rollout_metrics JSON); repeat for several processes, whose counters add up.")
    var metrics: [String] = []
    @Option(help: "Query rows drawn per set.") var queryCount = 1000
    @Option(help: "Seed of the query draws.") var seed: UInt64 = 0
    @Option(help: "Threads (default: the active processors).") var threads: Int?
    @Option(help: "The HTML file to write.") var out: String
    @Flag(help: "Also print the checklist as JSON.") var json = false
    @Flag(help: "No progress lines on stderr.") var quiet = false

    func run() throws {
        guard queryCount >= 1 else { throw InputError("--query-count must be at least 1") }
        if let threads, threads < 1 { throw InputError("--threads must be at least 1") }
        let rollout = try Rollout.read(from: file)
        let base = (file as NSString).deletingLastPathComponent
        let paths = rollout.variants.map { $0.store.hasPrefix("/") || base.isEmpty ? $0.store : (base as NSString).appendingPathComponent($0.store) }
        let counters = try Self.readCounters(metrics)
        let inputs = try DiffInputs(source: source, ids: ids, freq: freq)
        var options = DiffOptions()
        options.queryCount = queryCount
        options.seed = seed
        if let threads { options.threads = threads }
        let progress = ProgressLines(prefix: "report", quiet: quiet)
        let baseline = try AnyStore.open(paths[0])
        var candidates: [ReadinessReport.Candidate] = []
        for (i, variant) in rollout.variants.enumerated().dropFirst() {
            let result = try DiffResult.run(baseline, try AnyStore.open(paths[i]), paths: (paths[0], paths[i]), table: table, inputs: inputs,
                                            options: options, progress: progress)
            candidates.append(.init(name: variant.name, diff: result,
                                    checks: Readiness.checks(rollout: rollout, candidate: i, diff: result, counters: counters)))
        }
        let report = ReadinessReport(file: file, rollout: rollout, paths: paths, candidates: candidates, counters: counters,
                                     metricsFiles: metrics, generated: ISO8601DateFormatter().string(from: Date()))
        do {
            try Data(ReportPage(report: report).render().utf8).write(to: URL(fileURLWithPath: out), options: .atomic)
        } catch {
            throw InputError("cannot write \(out): \(error.localizedDescription)")
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(candidates.flatMap(\.checks)), as: UTF8.self))
        }
        for candidate in candidates {
            let failing = candidate.checks.filter { $0.status != .pass }
            print("\(candidate.name): \(candidate.checks.count - failing.count) of \(candidate.checks.count) checks pass"
                  + (failing.isEmpty ? "" : "; " + failing.map { "\($0.name) \($0.status.rawValue): \($0.detail)" }.joined(separator: "; ")))
        }
        print("\(report.ready ? "ready" : "NOT ready") to widen; report written to \(out)")
    }

    /// The counters of every --metrics file, added up by variant name.
    static func readCounters(_ files: [String]) throws -> [String: VariantCounters]? {
        guard !files.isEmpty else { return nil }
        var total: [String: VariantCounters] = [:]
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else { throw InputError("cannot read the metrics file \(file)") }
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let variants = object["variants"] as? [String: Any] else {
                throw InputError("\(file) is not a router's metrics JSON ({\"variants\": {name: {batches, ids, missing, latency_ns}}})")
            }
            for (name, value) in variants {
                guard let v = value as? [String: Any], let batches = v["batches"] as? Int, let ids = v["ids"] as? Int,
                      let missing = v["missing"] as? Int, let latency = v["latency_ns"] as? [String: Any],
                      let buckets = latency["buckets"] as? [[Any]] else {
                    throw InputError("\(file): variant '\(name)' lacks batches, ids, missing or latency_ns.buckets")
                }
                var counters = total[name] ?? VariantCounters()
                counters.batches += batches
                counters.ids += ids
                counters.missing += missing
                for bucket in buckets {
                    guard bucket.count == 2, let lowest = (bucket[0] as? NSNumber)?.uint64Value, let count = (bucket[1] as? NSNumber)?.intValue,
                          count >= 0 else {
                        throw InputError("\(file): variant '\(name)' has a latency bucket that is not [lowest_ns, count]: \(bucket)")
                    }
                    counters.latency.add(lowest, count: count)
                }
                total[name] = counters
            }
        }
        return total
    }
}

/// What the page shows.
struct ReadinessReport {
    struct Candidate {
        let name: String
        let diff: DiffResult
        let checks: [Readiness.Check]
    }
    let file: String
    let rollout: Rollout
    /// Each variant's store, as opened.
    let paths: [String]
    let candidates: [Candidate]
    let counters: [String: VariantCounters]?
    let metricsFiles: [String]
    let generated: String

    var ready: Bool { candidates.allSatisfy { $0.checks.allSatisfy { $0.status == .pass } } }
}

/// The rollout file's thresholds, checked against a candidate's diff and the live counters.
enum Readiness {
    enum Status: String, Codable { case pass, fail, noData = "no data" }

    struct Check: Codable {
        var candidate: String
        var name: String
        var threshold: Double
        /// The worst figure found (nil without the data it needs).
        var measured: Double?
        var status: Status
        /// Where the worst figure is, or what data is missing.
        var detail: String
    }

    /// Deciles with fewer query rows than this are shown but not checked for recall.
    static let minimumDecileQueries = 20

    static func checks(rollout: Rollout, candidate: Int, diff result: DiffResult, counters: [String: VariantCounters]?) -> [Check] {
        let name = rollout.variants[candidate].name, baseline = rollout.variants[0].name
        return rollout.thresholds.sorted { $0.key < $1.key }.map { threshold, limit in
            var check = Check(candidate: name, name: threshold, threshold: limit, measured: nil, status: .noData, detail: "")
            /// The worst of (figure, where) by `worse`; pass when `within`.
            func settle(_ figures: [(Double, String)], worse: (Double, Double) -> Bool, within: (Double) -> Bool, missing: String) {
                guard let worst = figures.min(by: { worse($0.0, $1.0) }) else { check.detail = missing; return }
                check.measured = worst.0
                check.status = within(worst.0) ? .pass : .fail
                check.detail = worst.1
            }
            let tables = result.tables
            func at(_ table: String) -> String { tables.count > 1 ? "table '\(table)', " : "" }
            switch threshold {
            case "recall_drop":
                var drops: [(Double, String)] = []
                var skipped = 0
                for entry in tables {
                    guard let a = entry.sourceA, let b = entry.sourceB else { continue }
                    var checked = 0
                    for (da, db) in zip(a.deciles, b.deciles) {
                        let (ra, qa) = pooledRecall(da.queries), (rb, _) = pooledRecall(db.queries)
                        guard qa >= minimumDecileQueries, let ra, let rb else { skipped += 1; continue }
                        drops.append((ra - rb, "\(at(entry.diff.table))decile \(da.decile): \(fixed4(ra)) → \(fixed4(rb)) over \(qa) queries"))
                        checked += 1
                    }
                    // Without deciles (no --freq), or none with enough queries: each query set whole.
                    if checked == 0 {
                        for (sa, sb) in zip(a.querySets, b.querySets) {
                            if let ra = sa.recall, let rb = sb.recall { drops.append((ra - rb, "\(at(entry.diff.table))\(sa.name) queries: \(fixed4(ra)) → \(fixed4(rb))")) }
                        }
                    }
                }
                settle(drops, worse: { $0 > $1 }, within: { $0 <= limit }, missing: "needs --source (recall against the full-precision rows)")
                if skipped > 0 && check.measured != nil { check.detail += "; \(skipped) decile(s) with < \(minimumDecileQueries) queries not checked" }
            case "agreement_min":
                settle(tables.flatMap { entry in entry.diff.neighbours.compactMap { set in
                    set.agreement.map { ($0, "\(at(entry.diff.table))\(set.name) queries (\(set.queries))") } } },
                       worse: { $0 < $1 }, within: { $0 >= limit }, missing: "no rows in common")
            case "mean_cosine_min":
                settle(tables.flatMap { entry -> [(Double, String)] in
                    let diff = entry.diff
                    if diff.deciles.isEmpty { return diff.errors.cosine.mean.map { [($0, "\(at(diff.table))all rows")] } ?? [] }
                    return diff.deciles.compactMap { d in d.errors.cosine.mean.map { ($0, "\(at(diff.table))decile \(d.decile)") } }
                }, worse: { $0 < $1 }, within: { $0 >= limit }, missing: "no rows in common")
            case "rows_missing_max":
                settle(tables.map { (Double($0.diff.onlyA), "\(at($0.diff.table))\($0.diff.onlyA) of the baseline's \($0.diff.rowsA) rows") },
                       worse: { $0 > $1 }, within: { $0 <= limit }, missing: "no table")
            case "bytes_ratio_max":
                let a = tables.reduce(0) { $0 + $1.diff.bytesA.diskBytes }, b = tables.reduce(0) { $0 + $1.diff.bytesB.diskBytes }
                settle(a > 0 ? [(Double(b) / Double(a), "\(formatBytes(Double(b))) against \(formatBytes(Double(a)))")] : [],
                       worse: { $0 > $1 }, within: { $0 <= limit }, missing: "the baseline has no bytes")
            case "p99_latency_ratio", "p999_latency_ratio":
                let q = threshold == "p99_latency_ratio" ? 0.99 : 0.999
                guard let counters else { check.detail = "needs --metrics (the routers' counters)"; return check }
                guard let c = counters[name], let base = counters[baseline], c.latency.count > 0, base.latency.count > 0 else {
                    check.detail = "the counters have no batches of '\(baseline)' and '\(name)' both"
                    return check
                }
                let (pc, pb) = (c.latency.percentile(q), base.latency.percentile(q))
                settle(pb > 0 ? [(Double(pc) / Double(pb), "\(formatNanoseconds(pc)) against \(formatNanoseconds(pb)) over \(c.latency.count) and \(base.latency.count) batches")] : [],
                       worse: { $0 > $1 }, within: { $0 <= limit }, missing: "the baseline's latency is 0")
            case "miss_rate_increase":
                guard let counters else { check.detail = "needs --metrics (the routers' counters)"; return check }
                guard let c = counters[name], let base = counters[baseline], c.ids > 0, base.ids > 0 else {
                    check.detail = "the counters have no ids of '\(baseline)' and '\(name)' both"
                    return check
                }
                let (rc, rb) = (Double(c.missing) / Double(c.ids), Double(base.missing) / Double(base.ids))
                settle([(rc - rb, String(format: "%.4f%% of ids against %.4f%%", 100 * rc, 100 * rb))], worse: { $0 > $1 },
                       within: { $0 <= limit }, missing: "")
            default:
                check.detail = "unknown threshold"
            }
            return check
        }
    }

    /// Recall over every query of a decile's sets (each set's recall weighted by its queries).
    static func pooledRecall(_ groups: [EvaluationReport.QueryGroup]) -> (Double?, Int) {
        let queries = groups.reduce(0) { $0 + ($1.recall == nil ? 0 : $1.queries) }
        guard queries > 0 else { return (nil, 0) }
        return (groups.reduce(0.0) { $0 + ($1.recall ?? 0) * Double($1.queries) } / Double(queries), queries)
    }
}

func fixed4(_ value: Double) -> String { String(format: "%.4f", value) }

/// 840 ns, 12.5 µs, 3.20 ms.
func formatNanoseconds(_ ns: UInt64) -> String {
    ns < 1_000 ? "\(ns) ns" : ns < 1_000_000 ? String(format: "%.1f µs", Double(ns) / 1e3) : String(format: "%.2f ms", Double(ns) / 1e6)
}
