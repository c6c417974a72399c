import EmbeddingStore
import Foundation

/// The `embstore diff --plot` chart: a self-contained SVG, one block per table.
///
/// Panel (a): the distribution of the relative L2 error ‖a − b‖ / ‖a‖ of the rows both stores
/// have, one histogram per popularity decile (hottest on top) or one for all rows without
/// counts, on a shared logarithmic axis; bars are shares of their row's rows, scaled to the
/// row's tallest bar, and identical rows (error 0) get a bar of their own at the left. Each row
/// is labelled with its median and p99. Panel (b): the table's bytes on disk in A and in B,
/// side by side as bars split by codec form (one colour per form in both bars), with the total
/// and bytes per row.
struct DiffPlot: SVGTextLayout {
    let result: DiffResult

    static let width = StatsPlot.width, margin = StatsPlot.margin
    static let ink = StatsPlot.ink, muted = StatsPlot.muted, grid = StatsPlot.grid, axis = StatsPlot.axis
    static let bar = "#4e79a7", identical = "#59a14f"

    func render() -> String {
        var svg = SVGCanvas()
        var y = Self.margin
        for (i, entry) in result.tables.enumerated() {
            if i > 0 {
                svg.line(Self.margin, y + 10, Self.width - Self.margin, y + 10, stroke: Self.grid, width: 1)
                y += 24
            }
            y = header(&svg, entry.diff, top: y)
            y = histograms(&svg, entry.diff, top: y + 16)
            y = bytes(&svg, entry.diff, top: y + 26)
        }
        return svg.document(width: Self.width, height: (y + Self.margin).rounded(.up), title: "embstore diff: \(result.a) against \(result.b)")
    }

    func write(to path: String) throws {
        do {
            try render().write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw InputError("cannot write \(path): \(error.localizedDescription)")
        }
    }

    private func header(_ svg: inout SVGCanvas, _ diff: TableDiff, top: Double) -> Double {
        let usable = Self.width - 2 * Self.margin
        var y = top + 20
        let title = "Table '\(diff.table)': store B against store A"
        svg.text(Self.margin, y, fit(title, width: usable, size: 20, bold: true), size: 20, bold: true)
        for (side, path) in [("A", result.a), ("B", result.b)] {
            y += 19
            svg.text(Self.margin, y, fitMiddle("\(side)  \(path)", width: usable, size: 13), size: 13, fill: Self.muted)
        }
        y += 21
        var summary = "\(formatCount(diff.common)) rows in both × \(diff.dimension)"
        if diff.onlyA > 0 || diff.onlyB > 0 { summary += " · \(formatCount(diff.onlyA)) only in A · \(formatCount(diff.onlyB)) only in B" }
        summary += " · codec changed in \(formatCount(diff.changedCodecRows))"
        if let agreement = diff.neighbours.last?.agreement { summary += String(format: " · top-%d agreement %.3f (%@)", diff.k, agreement, diff.neighbours.last!.name) }
        svg.text(Self.margin, y, fit(summary, width: usable, size: 14), size: 14)
        return y
    }

    /// Panel (a).
    private func histograms(_ svg: inout SVGCanvas, _ diff: TableDiff, top: Double) -> Double {
        var y = top + 18
        svg.text(Self.margin, y, "(a) Relative L2 error of B's rows against A's, per popularity decile", size: 15, bold: true)
        let groups: [(label: String, errors: TableDiff.RowErrors)] = diff.deciles.isEmpty
            ? [("all rows", diff.errors)]
            : diff.deciles.map { ("decile \($0.decile)", $0.errors) }
        if diff.deciles.isEmpty {
            y += 18
            svg.text(Self.margin, y, "Lookup counts were not given (--freq), so all rows are one histogram.", size: 12.5, fill: Self.muted, italic: true)
        }
        // The bins with rows, widened to whole decades (bin b ≥ 1 starts at edges[b − 1]).
        let edges = TableDiff.Histogram.edges, perDecade = TableDiff.Histogram.binsPerDecade
        let used = groups.flatMap { g in g.errors.histogram.counts.indices.filter { g.errors.histogram.counts[$0] > 0 } }
        let lowest = max((used.min() ?? 5 * perDecade) - 1, 0), highest = min(used.max() ?? 6 * perDecade, edges.count)
        let first = lowest / perDecade * perDecade + 1
        let last = min(max((highest + perDecade - 1) / perDecade * perDecade, first + perDecade - 1), edges.count)
        let bins = Array(min(first, max(lowest, 0))...last)
        let anyIdentical = groups.contains { $0.errors.histogram.zeroRows > 0 }

        let labelWidth = 86.0, statsWidth = 190.0
        let left = Self.margin + labelWidth + (anyIdentical ? 48 : 0)
        let right = Self.width - Self.margin - statsWidth
        let binWidth = (right - left) / Double(bins.count)
        let rowHeight = groups.count > 1 ? 30.0 : 90.0
        y += 14
        for group in groups {
            let histogram = group.errors.histogram
            let top = y + 4, bottom = y + rowHeight
            let tallest = Double(max(histogram.counts.max() ?? 0, histogram.zeroRows, 1))
            svg.line(left, bottom, right, bottom, stroke: Self.axis, width: 1)
            svg.text(Self.margin, bottom - 6, group.label, size: 12.5)
            if anyIdentical && histogram.zeroRows > 0 {
                let h = (bottom - top) * Double(histogram.zeroRows) / tallest
                svg.rect(left - 44, bottom - h, 22, max(h, 1), fill: Self.identical)
            }
            for (i, bin) in bins.enumerated() where histogram.counts[bin] > 0 {
                let h = max((bottom - top) * Double(histogram.counts[bin]) / tallest, 1)
                svg.rect(left + Double(i) * binWidth + 0.5, bottom - h, binWidth - 1, h, fill: Self.bar)
            }
            let stats = "median \(Self.short(group.errors.relativeL2.p50)) · p99 \(Self.short(group.errors.relativeL2.p99))"
            svg.text(right + 10, bottom - 6, fit(stats, width: statsWidth - 10, size: 12), size: 12, fill: Self.muted)
            y = bottom
        }
        // The axis: decades at bin edges (bin b ≥ 1 starts at edges[b − 1]; the last ends at edges[last]).
        y += 16
        for (i, bin) in (bins + [last + 1]).enumerated() where bin >= 1 && bin <= edges.count + 1 && (bin - 1) % perDecade == 0 {
            let x = left + Double(i) * binWidth
            svg.line(x, y - 16, x, y - 11, stroke: Self.axis, width: 1)
            let exponent = -7 + (bin - 1) / perDecade
            svg.text(x, y, exponent == 0 ? "1" : exponent == 1 ? "10" : "1e\(exponent)", size: 12, fill: Self.muted, anchor: "middle")
        }
        if anyIdentical { svg.text(left - 33, y, "0", size: 12, fill: Self.muted, anchor: "middle") }
        y += 18
        var legend = "relative L2 error ‖a − b‖ / ‖a‖ (log scale; bars a twentieth of a decade wide, each row scaled to its tallest bar)"
        if anyIdentical { legend += "; green: rows identical in A and B" }
        for line in wrap(legend, width: Self.width - 2 * Self.margin, size: 12) {
            svg.text(Self.margin, y, line, size: 12, fill: Self.muted)
            y += 16
        }
        return y
    }

    /// Panel (b).
    private func bytes(_ svg: inout SVGCanvas, _ diff: TableDiff, top: Double) -> Double {
        var y = top
        svg.text(Self.margin, y, "(b) Bytes on disk of the table, by codec form", size: 15, bold: true)
        // One colour per form name, in the order they first appear (A's forms, then B's).
        var formNames: [String] = []
        for form in diff.bytesA.forms + diff.bytesB.forms where !formNames.contains(form.form) { formNames.append(form.form) }
        func colour(_ form: String) -> String { StatsPlot.colour(form: formNames.firstIndex(of: form) ?? 0) }
        let largest = Double(max(diff.bytesA.diskBytes, diff.bytesB.diskBytes, 1))
        let left = Self.margin + 30, labelWidth = 250.0
        let full = Self.width - Self.margin - labelWidth - left
        y += 14
        for (side, bytes) in [("A", diff.bytesA), ("B", diff.bytesB)] {
            let barTop = y + 4, height = 26.0
            svg.text(Self.margin, barTop + 18, side, size: 14, bold: true)
            var x = left
            for form in bytes.forms {
                let w = full * Double(form.diskBytes) / largest
                svg.rect(x, barTop, w, height, fill: colour(form.form))
                x += w
            }
            let w = full * Double(bytes.sharedDiskBytes) / largest
            svg.rect(x, barTop, w, height, fill: "#a5a5a5")
            x += w
            let label = "\(formatBytes(Double(bytes.diskBytes))) · \(formatBytesPerRow(bytes.bytesPerRow))/row"
            svg.text(x + 8, barTop + 18, fit(label, width: labelWidth - 8, size: 13), size: 13)
            y = barTop + height
        }
        y += 22
        if diff.bytesA.diskBytes > 0 {
            let ratio = Double(diff.bytesB.diskBytes) / Double(diff.bytesA.diskBytes)
            svg.text(Self.margin, y, String(format: "B takes %.3f× A's bytes (%@ %@)", ratio, ratio <= 1 ? "saves" : "adds",
                                              formatShare(abs(1 - ratio))), size: 13)
            y += 20
        }
        // Legend, wrapped.
        var x = Self.margin
        let entries = formNames.map { ($0, colour($0)) } + (diff.bytesA.sharedDiskBytes + diff.bytesB.sharedDiskBytes > 0 ? [("shared and superseded", "#a5a5a5")] : [])
        for (name, fill) in entries {
            let width = 18 + textWidth(name, size: 12.5) + 18
            if x + width > Self.width - Self.margin {
                x = Self.margin
                y += 20
            }
            svg.rect(x, y - 10, 12, 12, fill: fill)
            svg.text(x + 17, y, name, size: 12.5)
            x += width
        }
        return y
    }

    static func short(_ value: Double?) -> String {
        guard let value else { return "-" }
        return value == 0 ? "0" : String(format: "%.2g", value)
    }
}
