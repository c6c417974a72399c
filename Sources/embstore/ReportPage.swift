import EmbeddingStore
import Foundation

/// The readiness report as one self-contained HTML page: inline styles and SVG, no scripts, no
/// external fonts, images or styles. Sections (each an element id): verdict, split, checklist,
/// one per candidate (candidate-N: quality by decile, against the source, codecs, bytes, worst
/// rows, the diff chart), counters, inputs. Pass and fail are words as well as colours.
struct ReportPage {
    let report: ReadinessReport

    func render() -> String {
        var html = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <title>\(e("Readiness of rollout \(report.file)"))</title>
            <style>
            body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; color: #1f1f1f; margin: 28px auto; max-width: 1040px; padding: 0 20px; font-size: 15px; line-height: 1.45; }
            h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 30px 0 8px; border-bottom: 1px solid #e3e3e3; padding-bottom: 4px; }
            h3 { font-size: 16px; margin: 18px 0 6px; } .muted { color: #5f5f5f; } code { font-size: 13px; }
            table { border-collapse: collapse; margin: 6px 0 10px; font-size: 14px; }
            th, td { padding: 4px 10px; border-bottom: 1px solid #e3e3e3; text-align: right; vertical-align: top; }
            th { background: #f4f4f4; } th:first-child, td:first-child, td.text, th.text { text-align: left; }
            td { white-space: nowrap; } td.text { white-space: normal; }
            .verdict { font-size: 20px; font-weight: bold; padding: 12px 16px; border-radius: 4px; margin: 16px 0; }
            .ready { background: #e3f2e1; border: 2px solid #3a7d34; } .notready { background: #fbe4e4; border: 2px solid #b3261e; }
            .status { font-weight: bold; padding: 1px 8px; border-radius: 3px; white-space: nowrap; }
            .pass { background: #e3f2e1; color: #245c20; } .fail { background: #fbe4e4; color: #8f1d17; } .nodata { background: #eeeeee; color: #444444; }
            .worse { color: #8f1d17; font-weight: bold; }
            svg { max-width: 100%; height: auto; border: 1px solid #e3e3e3; }
            </style></head><body>
            """
        let stage = report.rollout.history.count + 1
        html += "<h1>Readiness of rollout <code>\(e(report.file))</code></h1>"
        html += "<p class=\"muted\">Stage \(stage) since \(e(report.rollout.since)) · salt <code>\(e(report.rollout.salt))</code> · report made \(e(report.generated))</p>"
        html += verdict() + split() + checklist()
        for (i, candidate) in report.candidates.enumerated() { html += candidateSection(candidate, index: i + 1) }
        html += counters() + inputs()
        return html + "</body></html>\n"
    }

    func e(_ text: String) -> String { SVGCanvas.escape(text) }

    func statusCell(_ status: Readiness.Status) -> String {
        let cls = status == .pass ? "pass" : status == .fail ? "fail" : "nodata"
        return "<span class=\"status \(cls)\">\(status.rawValue.uppercased())</span>"
    }

    func verdict() -> String {
        let checks = report.candidates.flatMap(\.checks)
        let failing = checks.filter { $0.status == .fail }.count, missing = checks.filter { $0.status == .noData }.count
        let text: String
        if checks.isEmpty {
            text = "NOT READY: the rollout file sets no thresholds (embstore rollout thresholds FILE --set NAME=VALUE)"
        } else if report.ready {
            text = "READY to widen: all \(checks.count) checks pass"
        } else {
            text = "NOT READY: \(failing) of \(checks.count) checks fail" + (missing > 0 ? ", \(missing) lack the data they need" : "")
        }
        return "<div id=\"verdict\" class=\"verdict \(report.ready && !checks.isEmpty ? "ready" : "notready")\">\(e(text))</div>"
    }

    func split() -> String {
        var html = "<h2 id=\"split\">Current split</h2><table><tr><th>variant</th><th>share of units</th><th class=\"text\">store</th></tr>"
        for (variant, path) in zip(report.rollout.variants, report.paths) {
            html += "<tr><td>\(e(variant.name))</td><td>\(String(format: "%.3f%%", 100 * variant.fraction))</td><td class=\"text\"><code>\(e(path))</code></td></tr>"
        }
        html += "</table>"
        if let previous = report.rollout.history.last {
            html += "<p>Rollback returns to stage \(report.rollout.history.count): "
                + e(previous.fractions.map { String(format: "%.3f%%", 100 * $0) }.joined(separator: ", ")) + " since \(e(previous.since)).</p>"
        } else {
            html += "<p>This is the first stage: there is no earlier stage to roll back to.</p>"
        }
        return html
    }

    func checklist() -> String {
        var html = "<h2 id=\"checklist\">Checklist</h2>"
        html += "<p class=\"muted\">Thresholds from the rollout file; each check takes the worst figure found (per decile, query set or table).</p>"
        html += "<table><tr><th>candidate</th><th class=\"text\">check</th><th class=\"text\">bound</th><th>threshold</th><th>measured (worst)</th><th>status</th><th class=\"text\">where</th></tr>"
        let meanings = Dictionary(uniqueKeysWithValues: Rollout.thresholdNames.map { ($0.key, $0.value) })
        for check in report.candidates.flatMap(\.checks) {
            html += "<tr><td>\(e(check.candidate))</td><td class=\"text\"><code>\(e(check.name))</code></td>"
                + "<td class=\"text\">\(e(meanings[check.name] ?? ""))</td><td>\(number(check.threshold))</td>"
                + "<td>\(check.measured.map(number) ?? "–")</td><td>\(statusCell(check.status))</td><td class=\"text\">\(e(check.detail))</td></tr>"
        }
        return html + "</table>"
    }

    func number(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e12 ? String(Int(value)) : String(format: abs(value) < 0.01 ? "%.5f" : "%.4f", value)
    }

    func candidateSection(_ candidate: ReadinessReport.Candidate, index: Int) -> String {
        var html = "<h2 id=\"candidate-\(index)\">Candidate '\(e(candidate.name))' against the baseline</h2>"
        html += "<p class=\"muted\">A (baseline) <code>\(e(candidate.diff.a))</code><br>B (candidate) <code>\(e(candidate.diff.b))</code></p>"
        for entry in candidate.diff.tables {
            let diff = entry.diff
            html += "<h3>Table '\(e(diff.table))' (dimension \(diff.dimension))</h3>"
            html += "<p>Rows: baseline \(formatCount(diff.rowsA)), candidate \(formatCount(diff.rowsB)), in both \(formatCount(diff.common)); "
                + "<span class=\"\(diff.onlyA > 0 ? "worse" : "")\">\(formatCount(diff.onlyA)) only in the baseline</span>, \(formatCount(diff.onlyB)) only in the candidate.</p>"
            html += bytesTable(diff) + qualityTable(diff)
            if let a = entry.sourceA, let b = entry.sourceB { html += sourceTable(a, b) }
            html += codecTable(diff) + worstTable(diff)
            let svg = DiffPlot(result: DiffResult(a: candidate.diff.a, b: candidate.diff.b, source: nil, freq: candidate.diff.freq,
                                                  tablesOnlyA: [], tablesOnlyB: [], tables: [entry])).render()
            html += "<div class=\"chart\">" + svg.split(separator: "\n").dropFirst().joined(separator: "\n") + "</div>"
        }
        return html
    }

    func bytesTable(_ diff: TableDiff) -> String {
        let ratio = diff.bytesA.diskBytes > 0 ? Double(diff.bytesB.diskBytes) / Double(diff.bytesA.diskBytes) : .nan
        var html = "<table class=\"bytes\"><tr><th>bytes</th><th>on disk</th><th>per row</th><th>record bytes</th></tr>"
        for (side, bytes) in [("baseline", diff.bytesA), ("candidate", diff.bytesB)] {
            html += "<tr><td>\(side)</td><td>\(formatBytes(Double(bytes.diskBytes)))</td><td>\(formatBytesPerRow(bytes.bytesPerRow))</td><td>\(formatBytes(Double(bytes.recordBytes)))</td></tr>"
        }
        html += "</table><p>The candidate takes <b>\(String(format: "%.3f", ratio))×</b> the baseline's bytes"
            + (ratio < 1 ? " (saves \(formatShare(1 - ratio)))." : ".") + "</p>"
        return html
    }

    func qualityTable(_ diff: TableDiff) -> String {
        var html = "<table class=\"quality\"><tr><th>group</th><th>rows</th><th>identical</th><th>mean cos</th><th>cos p1</th><th>rel L2 p50</th><th>rel L2 p99</th><th>rel L2 max</th>"
        for set in diff.neighbours { html += "<th>top-\(diff.k) agreement, \(e(set.name))</th>" }
        html += "</tr>"
        func row(_ label: String, _ errors: TableDiff.RowErrors, _ agreement: [Double?]) -> String {
            var cells = "<tr><td>\(label)</td><td>\(formatCount(errors.rows))</td><td>\(formatCount(errors.identicalRows))</td>"
                + "<td>\(Eval.fixed(errors.cosine.mean, 5))</td><td>\(Eval.fixed(errors.cosine.p1, 5))</td>"
                + "<td>\(Eval.scientific(errors.relativeL2.p50))</td><td>\(Eval.scientific(errors.relativeL2.p99))</td><td>\(Eval.scientific(errors.relativeL2.max))</td>"
            for value in agreement { cells += "<td>\(Eval.fixed(value, 3))</td>" }
            return cells + "</tr>"
        }
        html += row("all", diff.errors, diff.neighbours.map(\.agreement))
        for decile in diff.deciles {
            html += row("decile \(decile.decile)", decile.errors, diff.neighbours.map { set in decile.neighbours.first { $0.set == set.name }?.agreement })
        }
        html += "</table>"
        html += diff.deciles.isEmpty ? "<p class=\"muted\">No popularity deciles: give --freq.</p>"
            : "<p class=\"muted\">Deciles by lookup count: 1 holds the hottest 10% of rows. Agreement: shared rows of the top \(diff.k) by cosine among the baseline's rows and among the candidate's.</p>"
        return html
    }

    func sourceTable(_ a: EvaluationReport, _ b: EvaluationReport) -> String {
        var html = "<h3>Against the full-precision rows</h3><table class=\"source\"><tr><th>group</th>"
        for set in a.querySets { html += "<th>recall@\(a.k) \(e(set.name)), baseline</th><th>candidate</th><th>change</th>" }
        html += "<th>mean cos, baseline</th><th>candidate</th></tr>"
        func change(_ ra: Double?, _ rb: Double?) -> String {
            guard let ra, let rb else { return "–" }
            return "<span class=\"\(rb < ra ? "worse" : "")\">\(String(format: "%+.4f", rb - ra))</span>"
        }
        html += "<tr><td>all</td>"
        for (sa, sb) in zip(a.querySets, b.querySets) { html += "<td>\(Eval.fixed(sa.recall, 4))</td><td>\(Eval.fixed(sb.recall, 4))</td><td>\(change(sa.recall, sb.recall))</td>" }
        html += "<td>\(Eval.fixed(a.overall.meanCosine, 5))</td><td>\(Eval.fixed(b.overall.meanCosine, 5))</td></tr>"
        for (da, db) in zip(a.deciles, b.deciles) {
            html += "<tr><td>decile \(da.decile)</td>"
            for (ga, gb) in zip(da.queries, db.queries) {
                html += "<td>\(Eval.fixed(ga.recall, 4)) <span class=\"muted\">(\(ga.queries))</span></td><td>\(Eval.fixed(gb.recall, 4))</td><td>\(change(ga.recall, gb.recall))</td>"
            }
            html += "<td>\(Eval.fixed(da.errors.meanCosine, 5))</td><td>\(Eval.fixed(db.errors.meanCosine, 5))</td></tr>"
        }
        return html + "</table><p class=\"muted\">Recall as embstore eval measures it; in brackets, the queries whose row is in the decile.</p>"
    }

    func codecTable(_ diff: TableDiff) -> String {
        var html = "<h3>Codecs, baseline → candidate</h3><table class=\"codecs\"><tr><th>baseline</th><th>candidate</th><th>rows</th><th>share</th></tr>"
        for change in diff.codecChanges {
            html += "<tr><td>\(e(change.from))</td><td>\(e(change.to))\(change.from == change.to ? " (same)" : "")</td><td>\(formatCount(change.rows))</td>"
                + "<td>\(String(format: "%.2f%%", 100 * Double(change.rows) / Double(max(diff.common, 1))))</td></tr>"
        }
        return html + "</table>"
    }

    func worstTable(_ diff: TableDiff) -> String {
        guard !diff.worst.isEmpty else { return "" }
        var html = "<h3>Worst rows</h3><table class=\"worst\"><tr><th>id</th><th>rel L2</th><th>cosine</th><th>baseline</th><th>candidate</th><th>count</th><th>decile</th></tr>"
        for row in diff.worst {
            html += "<tr><td>\(row.id)</td><td>\(Eval.scientific(row.relativeL2))</td><td>\(Eval.fixed(row.cosine, 5))</td><td>\(e(row.codecA))</td>"
                + "<td>\(e(row.codecB))</td><td>\(row.frequency.map(Eval.compact) ?? "–")</td><td>\(row.decile.map(String.init) ?? "–")</td></tr>"
        }
        return html + "</table>"
    }

    func counters() -> String {
        var html = "<h2 id=\"counters\">Live counters</h2>"
        guard let counters = report.counters else {
            return html + "<p>No counters were given: pass the routers' metrics JSON with --metrics (one file per process; they add up).</p>"
        }
        html += "<table><tr><th>variant</th><th>batches</th><th>ids</th><th>ids not found</th><th>p50</th><th>p99</th><th>p99.9</th><th>p99 / baseline</th></tr>"
        let baseline = counters[report.rollout.variants[0].name]
        for name in report.rollout.variants.map(\.name) + counters.keys.sorted().filter({ key in !report.rollout.variants.contains { $0.name == key } }) {
            guard let c = counters[name] else {
                html += "<tr><td>\(e(name))</td><td colspan=\"7\" class=\"text muted\">no batches</td></tr>"
                continue
            }
            let ratio = baseline.flatMap { b in b.latency.count > 0 && b.latency.percentile(0.99) > 0 && c.latency.count > 0
                ? String(format: "%.3f×", Double(c.latency.percentile(0.99)) / Double(b.latency.percentile(0.99))) : nil } ?? "–"
            html += "<tr><td>\(e(name))</td><td>\(formatCount(c.batches))</td><td>\(formatCount(c.ids))</td>"
                + "<td>\(formatCount(c.missing)) (\(String(format: "%.4f%%", c.ids > 0 ? 100 * Double(c.missing) / Double(c.ids) : 0)))</td>"
                + "<td>\(formatNanoseconds(c.latency.percentile(0.5)))</td><td>\(formatNanoseconds(c.latency.percentile(0.99)))</td>"
                + "<td>\(formatNanoseconds(c.latency.percentile(0.999)))</td><td>\(ratio)</td></tr>"
        }
        return html + "</table><p class=\"muted\">Latencies per batch, within 6.25% (the histogram's buckets), from \(report.metricsFiles.map { "<code>\(e($0))</code>" }.joined(separator: ", ")).</p>"
    }

    func inputs() -> String {
        let first = report.candidates.first?.diff
        var items = ["rollout file <code>\(e(report.file))</code>"]
        if let source = first?.source { items.append("source rows <code>\(e(source))</code>") } else { items.append("no source rows (--source): recall against full precision not measured") }
        if let freq = first?.freq { items.append("lookup counts <code>\(e(freq))</code>") }
        return "<h2 id=\"inputs\">Inputs</h2><ul>" + items.map { "<li>\($0)</li>" }.joined() + "</ul>"
    }
}
