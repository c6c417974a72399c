import EmbeddingStore
import Foundation

/// The `embstore stats --plot` chart: a self-contained SVG (no scripts, no external fonts or
/// styles) built as plain strings.
///
/// Panel (a): per codec form, its share of the table's bytes on disk beside its share of the
/// lookups (two columns of horizontal bars, each labelled with the percentage and the absolute
/// figure), then the shared lines (parameters, bucket rows, superseded rows) in greys.
/// Panel (b), when counts are given: cumulative lookups served against cumulative bytes, rows
/// sorted by lookups (most first), with the milestones (50%, 80%, 90%, 99% of lookups) marked,
/// and under the x axis a strip coloured by the codec of those bytes. Without counts, panel (a)
/// shows bytes only and says that counts were not given.
///
/// Text widths are estimated (no font metrics in a string builder): generously, as for a wide
/// sans-serif such as DejaVu Sans, so that labels never run into each other.
struct StatsPlot: SVGTextLayout {
    let storage: TableStorage
    let storePath: String
    /// Where the counts came from, for the subtitle (e.g. the --freq file name).
    let countsSource: String?

    static let width = 980.0
    static let margin = 28.0
    static let fontFamily = "DejaVu Sans, Helvetica, Arial, sans-serif"
    /// Colours of codec forms, in the order of `storage.forms` (colour-blind-safe Tableau 10
    /// without its grey, then more).
    static let palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f",
                          "#ff9da7", "#17becf", "#bcbd22", "#8c564b"]
    static let sharedColours: [TableStorage.Shared.Kind: String] = [.parameters: "#7f7f7f", .bucketRows: "#a5a5a5", .superseded: "#cccccc"]
    static let ink = "#1f1f1f", muted = "#5f5f5f", grid = "#e3e3e3", axis = "#8a8a8a"

    static func colour(form index: Int) -> String { palette[index % palette.count] }

    var hasCounts: Bool { storage.lookups != nil && (storage.lookups?.total ?? 0) > 0 }

    // MARK: - The document

    func render() -> String {
        var svg = SVGCanvas()
        var y = Self.margin
        y = header(&svg, top: y)
        y = barsPanel(&svg, top: y + 18)
        if hasCounts { y = curvePanel(&svg, top: y + 30) }
        let height = (y + Self.margin).rounded(.up)
        return svg.document(width: Self.width, height: height, title: "embstore stats: table '\(storage.table)'")
    }

    /// Renders the chart into the file at `path` (`stats --plot`, and `demo`'s stats.svg).
    func write(to path: String) throws {
        do {
            try render().write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw InputError("cannot write \(path): \(error.localizedDescription)")
        }
    }

    private func header(_ svg: inout SVGCanvas, top: Double) -> Double {
        let usable = Self.width - 2 * Self.margin
        var y = top + 20
        // A long table name shrinks the title down to 15 px before it is cut.
        let title = "Where the bytes of table '\(storage.table)' go"
        var titleSize = 21.0
        while titleSize > 15 && textWidth(title, size: titleSize, bold: true) > usable { titleSize -= 1 }
        svg.text(Self.margin, y, fit(title, width: usable, size: titleSize, bold: true), size: titleSize, bold: true)
        y += 24
        let path = fitMiddle("store " + storePath, width: usable, size: 13)
        svg.text(Self.margin, y, path, size: 13, fill: Self.muted)
        y += 19
        var totals = "\(formatCount(storage.rows)) rows × \(storage.dimension) · \(formatBytes(Double(storage.diskBytes))) on disk "
            + "(\(formatCount(storage.pages)) pages of \(formatBytes(Double(storage.pageSize), binary: true)))"
        if let lookups = storage.lookups, hasCounts {
            totals += " · \(formatLookups(lookups.total)) lookups counted"
            if let countsSource { totals += " (\(URL(fileURLWithPath: countsSource).lastPathComponent))" }
        }
        svg.text(Self.margin, y, fit(totals, width: usable, size: 14), size: 14, fill: Self.ink)
        if !hasCounts {
            y += 20
            let note = storage.lookups == nil
                ? "Lookup counts were not given (embstore stats --freq F.npy), so lookups served are not shown."
                : "The lookup counts of this table's rows add up to zero, so lookups served are not shown."
            svg.text(Self.margin, y, fit(note, width: usable, size: 13), size: 13, fill: "#a23b00")
        }
        return y
    }

    // MARK: - Panel (a): bytes and lookups by codec form

    private struct BarRow {
        let name: String
        let detail: String
        let colour: String
        let bytes: Int
        let lookups: Double?
        let isShared: Bool
    }

    private func barsPanel(_ svg: inout SVGCanvas, top: Double) -> Double {
        if storage.forms.isEmpty && storage.shared.isEmpty {
            svg.text(Self.margin, top + 16, "The table holds no rows and takes no pages.", size: 14, fill: Self.ink)
            return top + 16
        }
        let totalBytes = Double(max(storage.diskBytes, 1))
        let totalLookups = storage.lookups?.total ?? 0
        var rows: [BarRow] = storage.forms.enumerated().map { index, form in
            BarRow(name: form.form,
                   detail: "\(formatCount(form.rows)) rows · \(formatBytesPerRow(form.diskBytesPerRow))/row",
                   colour: Self.colour(form: index), bytes: form.diskBytes, lookups: form.lookups, isShared: false)
        }
        for shared in storage.shared {
            let detail: String
            switch shared.kind {
            case .parameters: detail = "\(formatCount(shared.entries)) record\(shared.entries == 1 ? "" : "s"): bases, models"
            case .bucketRows: detail = "\(formatCount(shared.entries)) rows that codecs point at"
            case .superseded: detail = "\(formatCount(shared.entries)) entries no lookup reaches"
            }
            rows.append(BarRow(name: shared.label, detail: detail, colour: Self.sharedColours[shared.kind] ?? "#999999",
                               bytes: shared.diskBytes, lookups: nil, isShared: true))
        }

        var y = top + 16
        svg.text(Self.margin, y, hasCounts ? "Bytes on disk and lookups served, by codec" : "Bytes on disk, by codec",
                 size: 16, bold: true)
        y += 10

        // Columns: names, then one or two bar columns, each a bar area and room for its label.
        // The name cell: a swatch (16), the text, and 12 of space before the bars.
        let nameWidth = min(300, max(130, rows.map { max(textWidth($0.name, size: 13, bold: true), textWidth($0.detail, size: 11)) }.max()! + 28))
        let columns = hasCounts ? 2 : 1
        let gap = 28.0
        let columnWidth = (Self.width - 2 * Self.margin - nameWidth - gap * Double(columns - 1)) / Double(columns)
        let byteLabels = rows.map { "\(formatShare(Double($0.bytes) / totalBytes)) · \(formatBytes(Double($0.bytes)))" }
        let lookupLabels = rows.map { row in row.lookups.map { "\(formatShare($0 / totalLookups)) · \(formatLookups($0))" } ?? "" }
        let labelWidth = (byteLabels + lookupLabels).map { textWidth($0, size: 12) }.max()! + 10
        let barMax = max(80, columnWidth - labelWidth)
        let columnX = (0..<columns).map { Self.margin + nameWidth + Double($0) * (columnWidth + gap) }

        // Column headings.
        y += 22
        svg.text(columnX[0], y, "Bytes on disk", size: 13, bold: true)
        svg.text(columnX[0], y + 16, fit("share of the table's \(formatBytes(totalBytes))", width: columnWidth, size: 11),
                 size: 11, fill: Self.muted)
        if hasCounts {
            svg.text(columnX[1], y, "Lookups served", size: 13, bold: true)
            svg.text(columnX[1], y + 16, fit("share of \(formatLookups(totalLookups)) lookups", width: columnWidth, size: 11),
                     size: 11, fill: Self.muted)
        }
        y += 28

        let rowHeight = 38.0, barHeight = 18.0
        var previousShared = false
        for (i, row) in rows.enumerated() {
            if row.isShared && !previousShared {
                // A rule between the codec forms and the shared lines.
                svg.line(Self.margin, y + 3, Self.width - Self.margin, y + 3, stroke: Self.grid, width: 1)
                y += 8
            }
            previousShared = row.isShared
            let mid = y + rowHeight / 2
            svg.rect(Self.margin, mid - 14, 10, 10, fill: row.colour)
            svg.text(Self.margin + 16, mid - 4, fit(row.name, width: nameWidth - 28, size: 13, bold: true), size: 13, bold: !row.isShared,
                     fill: Self.ink)
            svg.text(Self.margin + 16, mid + 11, fit(row.detail, width: nameWidth - 28, size: 11), size: 11, fill: Self.muted)
            // Bytes.
            let byteWidth = barMax * Double(row.bytes) / totalBytes
            svg.rect(columnX[0], mid - barHeight / 2, max(byteWidth, row.bytes > 0 ? 1 : 0), barHeight, fill: row.colour)
            svg.text(columnX[0] + max(byteWidth, 1) + 6, mid + 4, byteLabels[i], size: 12, fill: Self.ink)
            // Lookups.
            if hasCounts {
                if let lookups = row.lookups {
                    let lookupWidth = barMax * lookups / totalLookups
                    svg.rect(columnX[1], mid - barHeight / 2, max(lookupWidth, lookups > 0 ? 1 : 0), barHeight, fill: row.colour)
                    svg.text(columnX[1] + max(lookupWidth, 1) + 6, mid + 4, lookupLabels[i], size: 12, fill: Self.ink)
                } else {
                    svg.text(columnX[1], mid + 4, "serves no lookups by itself", size: 11, fill: Self.muted, italic: true)
                }
            }
            y += rowHeight
        }
        // Baselines of the bar columns.
        for x in columnX { svg.line(x, top + 76, x, y, stroke: Self.axis, width: 1) }

        y += 8
        let note = "Bytes on disk are the LMDB pages of the table's databases: each row's record (tag + payload) and its share of "
            + "the index; page overhead is spread in proportion. Shares add up to 100% of the table."
        for line in wrap(note, width: Self.width - 2 * Self.margin, size: 11) {
            y += 15
            svg.text(Self.margin, y, line, size: 11, fill: Self.muted)
        }
        return y
    }

    // MARK: - Panel (b): the cumulative curve

    private func curvePanel(_ svg: inout SVGCanvas, top: Double) -> Double {
        guard let lookups = storage.lookups else { return top }
        let totalBytes = Double(max(storage.diskBytes, 1))
        var y = top + 16
        svg.text(Self.margin, y, "Lookups served against bytes, hottest rows first", size: 16, bold: true)
        y += 19
        let explain = "Rows sorted by lookups, most first: after x% of the table's bytes, y% of all lookups are served."
        svg.text(Self.margin, y, fit(explain, width: Self.width - 2 * Self.margin, size: 12), size: 12, fill: Self.muted)

        let left = Self.margin + 62, right = Self.width - Self.margin - 14
        // Above the plot, room for a milestone label next to a dot near 100%.
        let plotTop = y + 40, plotHeight = 330.0
        let bottom = plotTop + plotHeight
        let plotWidth = right - left
        func px(_ share: Double) -> Double { left + plotWidth * min(max(share, 0), 1) }
        func py(_ share: Double) -> Double { bottom - plotHeight * min(max(share, 0), 1) }

        // Grid, ticks and axes.
        for tick in stride(from: 0, through: 100, by: 10) {
            let share = Double(tick) / 100
            svg.line(px(share), plotTop, px(share), bottom, stroke: Self.grid, width: 1)
            svg.text(px(share), bottom + 36, "\(tick)%", size: 12, fill: Self.ink, anchor: "middle")
        }
        for tick in stride(from: 0, through: 100, by: 20) {
            let share = Double(tick) / 100
            svg.line(left, py(share), right, py(share), stroke: Self.grid, width: 1)
            svg.text(left - 8, py(share) + 4, "\(tick)%", size: 12, fill: Self.ink, anchor: "end")
        }
        svg.line(left, bottom, right, bottom, stroke: Self.axis, width: 1.2)
        svg.line(left, plotTop, left, bottom, stroke: Self.axis, width: 1.2)
        svg.text(left + plotWidth / 2, bottom + 56, "share of the table's bytes on disk (\(formatBytes(totalBytes)))",
                 size: 13, fill: Self.ink, anchor: "middle")
        let yLabelX = Self.margin + 10, yLabelY = plotTop + plotHeight / 2
        svg.text(yLabelX, yLabelY, "share of lookups served", size: 13, fill: Self.ink, anchor: "middle",
                 rotate: (-90, yLabelX, yLabelY))

        // Reference: lookups spread evenly over the bytes.
        svg.line(px(0), py(0), px(1), py(1), stroke: "#b9b9b9", width: 1, dash: "5 4")
        var placed: [Rect] = []
        let uniformLabel = "if every byte were looked up alike"
        let uniformWidth = textWidth(uniformLabel, size: 11)
        // Under the diagonal, ending near its top: the text's top clears the line at its left
        // end, where the line is lowest over the text.
        let diagonalLabelX = max(left + 4, px(0.97) - uniformWidth)
        let diagonalLabelY = py((diagonalLabelX - left) / plotWidth) + 15
        svg.text(diagonalLabelX, diagonalLabelY, uniformLabel, size: 11, fill: "#8a8a8a", italic: true)
        placed.append(Rect(x: diagonalLabelX, y: diagonalLabelY - 11, width: uniformWidth, height: 14))

        // The curve, and a flat tail over the bytes no row owns (shared and superseded).
        let total = max(lookups.total, 1e-300)
        var points = storage.curve.map { (px($0.diskBytes / totalBytes), py($0.lookups / total)) }
        if points.isEmpty { points = [(px(0), py(0))] }
        svg.polyline(points, stroke: Self.ink, width: 2.2)
        let rowsEnd = (storage.curve.last?.diskBytes ?? 0) / totalBytes
        let sharedBytes = storage.shared.reduce(0) { $0 + $1.diskBytes }
        if sharedBytes > 0 {
            svg.line(px(rowsEnd), py(1), px(1), py(1), stroke: Self.ink, width: 2.2, dash: "2 3")
        }

        // The strip under the axis: the codec of the bytes at each position.
        let stripTop = bottom + 5, stripHeight = 12.0
        var runStart = 0.0, runColour: String?
        var previousX = px(0)
        func flush(until x: Double) {
            if let colour = runColour, x > runStart { svg.rect(runStart, stripTop, x - runStart, stripHeight, fill: colour) }
        }
        for point in storage.curve.dropFirst() {
            let x = px(point.diskBytes / totalBytes)
            let colour = Self.colour(form: point.form)
            if colour != runColour {
                flush(until: previousX)
                runStart = previousX
                runColour = colour
            }
            previousX = x
        }
        flush(until: previousX)
        if sharedBytes > 0 {
            svg.rect(px(rowsEnd), stripTop, px(1) - px(rowsEnd), stripHeight, fill: Self.sharedColours[.superseded]!)
        }

        // Milestones: a dot on the curve and a label that stays off the curve: right and below
        // the dot (the curve rises to its right), or left and above (it lies below to its left).
        let shown = storage.milestones.filter { [0.5, 0.8, 0.9, 0.99].contains($0.lookupShare) }
        let dots = shown.map { (px($0.diskBytes / totalBytes), py($0.lookupShare)) }
        var unplaced: [String] = []
        let lines = [points, [(px(0), py(0)), (px(1), py(1))], [(px(rowsEnd), py(1)), (px(1), py(1))]]
        for (x, yDot) in dots { svg.circle(x, yDot, 4, fill: "#ffffff", stroke: Self.ink, width: 1.8) }
        for (milestone, (x, yDot)) in zip(shown, dots) {
            let bytesShare = milestone.diskBytes / totalBytes
            let label = "\(Int((milestone.lookupShare * 100).rounded()))% of lookups from \(formatShare(bytesShare)) of the bytes"
                + " (\(formatCount(milestone.rows)) rows)"
            let width = textWidth(label, size: 12)
            // Beside the dot first (right and below, left and above), then further away.
            var candidates: [Rect] = []
            for shift in [0.0, 18, 36, 54, 72] {
                candidates.append(Rect(x: x + 10, y: yDot + 6 + shift, width: width, height: 15))
                candidates.append(Rect(x: x - 10 - width, y: yDot - 21 - shift, width: width, height: 15))
                candidates.append(Rect(x: x - 10 - width, y: yDot + 6 + shift, width: width, height: 15))
                candidates.append(Rect(x: x + 10, y: yDot - 21 - shift, width: width, height: 15))
            }
            // Clear of everything; else clear of the curve, the dots and the other labels (the
            // label's white backing then covers the faint reference lines); else a short label
            // at the dot and the sentence in the list under the chart.
            func fits(_ c: Rect) -> Bool {
                c.x >= left + 2 && c.x + c.width <= right - 2 && c.y >= plotTop - 24 && c.y + c.height <= bottom - 2
                    && !placed.contains { $0.intersects(c) } && !c.crosses(points) && !dots.contains { c.crosses([$0]) }
            }
            let spot = candidates.first { c in fits(c) && !lines.dropFirst().contains { c.crosses($0) } } ?? candidates.first(where: fits)
            if let spot {
                placed.append(spot)
                svg.rect(spot.x - 3, spot.y, spot.width + 6, spot.height, fill: "#ffffff", opacity: 0.85)
                svg.text(spot.x, spot.y + 12, label, size: 12, fill: Self.ink)
                continue
            }
            let short = "\(Int((milestone.lookupShare * 100).rounded()))%"
            let shortWidth = textWidth(short, size: 12)
            let shortCandidates = [
                Rect(x: x + 8, y: yDot + 4, width: shortWidth, height: 15), Rect(x: x - 8 - shortWidth, y: yDot - 19, width: shortWidth, height: 15),
                Rect(x: x - 8 - shortWidth, y: yDot + 4, width: shortWidth, height: 15), Rect(x: x + 8, y: yDot - 19, width: shortWidth, height: 15),
            ]
            if let spot = shortCandidates.first(where: fits) ?? shortCandidates.first {
                placed.append(spot)
                svg.rect(spot.x - 2, spot.y, spot.width + 4, spot.height, fill: "#ffffff", opacity: 0.85)
                svg.text(spot.x, spot.y + 12, short, size: 12, bold: true, fill: Self.ink)
            }
            unplaced.append(label)
        }

        // Legend of the strip: the codec colours, wrapped to the width.
        let kinds = Set(storage.shared.filter { $0.diskBytes > 0 }.map(\.kind))
        let sharedLegend = kinds == [.superseded] ? "superseded & deleted rows"
            : kinds.contains(.superseded) ? "shared & superseded bytes (no row's own)" : "shared bytes (no row's own)"
        y = bottom + 80
        var x = left
        let entries: [(String, String)] = storage.forms.enumerated().map { (Self.colour(form: $0.offset), $0.element.form) }
            + (sharedBytes > 0 ? [(Self.sharedColours[.superseded]!, sharedLegend)] : [])
        svg.text(Self.margin, y, "strip under the axis, the codec with most bytes there:", size: 11, fill: Self.muted)
        x = Self.margin + textWidth("strip under the axis, the codec with most bytes there:", size: 11) + 10
        for (colour, name) in entries {
            let label = fit(name, width: 300, size: 12)
            let width = 16 + textWidth(label, size: 12) + 18
            if x + width > Self.width - Self.margin {
                x = Self.margin + textWidth("strip under the axis, the codec with most bytes there:", size: 11) + 10
                y += 20
            }
            svg.rect(x, y - 10, 11, 11, fill: colour)
            svg.text(x + 16, y, label, size: 12, fill: Self.ink)
            x += width
        }
        // Milestones without room beside their dot.
        for label in unplaced {
            y += 20
            svg.text(Self.margin, y, label, size: 12, fill: Self.ink)
        }
        return y
    }

}

/// Text measured and cut to fit, for charts built as strings.
protocol SVGTextLayout {}

extension SVGTextLayout {
    /// An estimate of the rendered width: DejaVu Sans (the widest common sans-serif) averages
    /// about 0.6 em for lower case and digits; capitals and bold are wider.
    func textWidth(_ text: String, size: Double, bold: Bool = false) -> Double {
        var em = 0.0
        for scalar in text.unicodeScalars {
            switch scalar {
            case "i", "l", "j", "'", "|", ".", ",", ":", ";", "!", " ": em += 0.34
            case "f", "t", "r", "(", ")", "[", "]", "-": em += 0.45
            case "m", "w", "M", "W", "%", "@": em += 0.95
            case "A"..."Z", "&", "×", "…": em += 0.72
            default: em += 0.62
            }
        }
        return em * size * (bold ? 1.08 : 1)
    }

    /// `text`, cut with an ellipsis at the end to fit `width`.
    func fit(_ text: String, width: Double, size: Double, bold: Bool = false) -> String {
        guard textWidth(text, size: size, bold: bold) > width else { return text }
        var cut = text
        while !cut.isEmpty && textWidth(cut + "…", size: size, bold: bold) > width { cut.removeLast() }
        return cut + "…"
    }

    /// `text`, cut with an ellipsis in the middle to fit `width` (for paths).
    func fitMiddle(_ text: String, width: Double, size: Double) -> String {
        guard textWidth(text, size: size) > width else { return text }
        var head = String(text.prefix(text.count / 2)), tail = String(text.suffix(text.count - text.count / 2))
        while textWidth(head + "…" + tail, size: size) > width && (head.count > 4 || tail.count > 4) {
            if head.count > tail.count { head.removeLast() } else { tail.removeFirst() }
        }
        return head + "…" + tail
    }

    /// Words of `text` in lines no wider than `width`.
    func wrap(_ text: String, width: Double, size: Double) -> [String] {
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ") {
            let candidate = line.isEmpty ? String(word) : line + " " + word
            if textWidth(candidate, size: size) > width && !line.isEmpty {
                lines.append(line)
                line = String(word)
            } else {
                line = candidate
            }
        }
        if !line.isEmpty { lines.append(line) }
        return lines
    }
}

// MARK: - Numbers for people

/// 12,345,678.
func formatCount(_ n: Int) -> String {
    let digits = String(n.magnitude)
    var out = ""
    for (i, ch) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { out += "," }
        out.append(ch)
    }
    return (n < 0 ? "-" : "") + out
}

/// 12.4 MB (decimal units), or 4 KiB with `binary`.
func formatBytes(_ bytes: Double, binary: Bool = false) -> String {
    let base = binary ? 1024.0 : 1000.0
    let units = binary ? ["bytes", "KiB", "MiB", "GiB", "TiB"] : ["bytes", "kB", "MB", "GB", "TB"]
    var value = bytes
    var unit = 0
    while value >= base && unit < units.count - 1 {
        value /= base
        unit += 1
    }
    if unit == 0 { return "\(Int(bytes.rounded())) bytes" }
    if binary && value == value.rounded() { return "\(Int(value)) \(units[unit])" }
    return String(format: value >= 100 ? "%.0f %@" : "%.1f %@", value, units[unit])
}

/// Bytes a row: "782 B", "94.3 B", "1.5 kB".
func formatBytesPerRow(_ bytes: Double) -> String {
    if bytes >= 10_000 { return formatBytes(bytes) }
    return bytes >= 100 ? String(format: "%.0f B", bytes) : String(format: "%.1f B", bytes)
}

/// 12,345, 1.2 M, 469.2 bn.
func formatLookups(_ count: Double) -> String {
    if count < 100_000 {
        return count == count.rounded() ? formatCount(Int(count)) : String(format: "%.1f", count)
    }
    for (scale, unit) in [(1e12, "tn"), (1e9, "bn"), (1e6, "M"), (1e3, "k")] where count >= scale {
        return String(format: "%.1f %@", count / scale, unit)
    }
    return String(format: "%.0f", count)
}

/// 63.2%, <0.1%, 0%.
func formatShare(_ share: Double) -> String {
    if share <= 0 { return "0%" }
    if share < 0.001 { return "<0.1%" }
    if share > 0.999 && share < 1 { return ">99.9%" }
    return String(format: "%.1f%%", share * 100)
}

// MARK: - SVG

struct Rect {
    var x, y, width, height: Double
    func intersects(_ other: Rect) -> Bool {
        x < other.x + other.width && other.x < x + width && y < other.y + other.height && other.y < y + height
    }

    /// True when the polyline through `points` passes through this rectangle (grown by 3 on
    /// every side, so that text keeps clear of the line). A single point tests as a dot.
    func crosses(_ points: [(Double, Double)]) -> Bool {
        let box = Rect(x: x - 3, y: y - 3, width: width + 6, height: height + 6)
        func inside(_ p: (Double, Double)) -> Bool { p.0 >= box.x && p.0 <= box.x + box.width && p.1 >= box.y && p.1 <= box.y + box.height }
        if points.contains(where: inside) { return true }
        guard points.count >= 2 else { return false }
        // Liang–Barsky clipping of each segment against the box.
        for (a, b) in zip(points, points.dropFirst()) {
            var t0 = 0.0, t1 = 1.0
            let dx = b.0 - a.0, dy = b.1 - a.1
            var hit = true
            for (p, q) in [(-dx, a.0 - box.x), (dx, box.x + box.width - a.0), (-dy, a.1 - box.y), (dy, box.y + box.height - a.1)] {
                if p == 0 {
                    if q < 0 { hit = false; break }
                } else {
                    let r = q / p
                    if p < 0 { t0 = max(t0, r) } else { t1 = min(t1, r) }
                    if t0 > t1 { hit = false; break }
                }
            }
            if hit { return true }
        }
        return false
    }
}

/// SVG elements as strings; numbers with at most two decimals.
struct SVGCanvas {
    private(set) var body: [String] = []

    static func number(_ value: Double) -> String {
        let rounded = (value * 100).rounded() / 100
        return rounded == rounded.rounded() ? String(Int(rounded)) : String(format: "%.2f", rounded)
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for ch in text {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(ch)
            }
        }
        return out
    }

    mutating func text(_ x: Double, _ y: Double, _ content: String, size: Double, bold: Bool = false, fill: String = StatsPlot.ink,
                       anchor: String = "start", italic: Bool = false, rotate: (Double, Double, Double)? = nil) {
        var attributes = "x=\"\(Self.number(x))\" y=\"\(Self.number(y))\" font-size=\"\(Self.number(size))\" fill=\"\(fill)\""
        if bold { attributes += " font-weight=\"bold\"" }
        if italic { attributes += " font-style=\"italic\"" }
        if anchor != "start" { attributes += " text-anchor=\"\(anchor)\"" }
        if let (angle, cx, cy) = rotate {
            attributes += " transform=\"rotate(\(Self.number(angle)) \(Self.number(cx)) \(Self.number(cy)))\""
        }
        body.append("<text \(attributes)>\(Self.escape(content))</text>")
    }

    mutating func rect(_ x: Double, _ y: Double, _ width: Double, _ height: Double, fill: String, opacity: Double? = nil) {
        var element = "<rect x=\"\(Self.number(x))\" y=\"\(Self.number(y))\" width=\"\(Self.number(max(width, 0)))\" "
            + "height=\"\(Self.number(max(height, 0)))\" fill=\"\(fill)\""
        if let opacity { element += " fill-opacity=\"\(Self.number(opacity))\"" }
        body.append(element + "/>")
    }

    mutating func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, stroke: String, width: Double, dash: String? = nil) {
        var element = "<line x1=\"\(Self.number(x1))\" y1=\"\(Self.number(y1))\" x2=\"\(Self.number(x2))\" y2=\"\(Self.number(y2))\" "
            + "stroke=\"\(stroke)\" stroke-width=\"\(Self.number(width))\""
        if let dash { element += " stroke-dasharray=\"\(dash)\"" }
        body.append(element + "/>")
    }

    mutating func polyline(_ points: [(Double, Double)], stroke: String, width: Double) {
        let list = points.map { "\(Self.number($0.0)),\(Self.number($0.1))" }.joined(separator: " ")
        body.append("<polyline points=\"\(list)\" fill=\"none\" stroke=\"\(stroke)\" stroke-width=\"\(Self.number(width))\" "
                    + "stroke-linejoin=\"round\" stroke-linecap=\"round\"/>")
    }

    mutating func circle(_ cx: Double, _ cy: Double, _ r: Double, fill: String, stroke: String, width: Double) {
        body.append("<circle cx=\"\(Self.number(cx))\" cy=\"\(Self.number(cy))\" r=\"\(Self.number(r))\" fill=\"\(fill)\" "
                    + "stroke=\"\(stroke)\" stroke-width=\"\(Self.number(width))\"/>")
    }

    func document(width: Double, height: Double, title: String) -> String {
        var lines = [
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Self.number(width))\" height=\"\(Self.number(height))\" "
                + "viewBox=\"0 0 \(Self.number(width)) \(Self.number(height))\" font-family=\"\(StatsPlot.fontFamily)\">",
            "<title>\(Self.escape(title))</title>",
            "<rect x=\"0\" y=\"0\" width=\"\(Self.number(width))\" height=\"\(Self.number(height))\" fill=\"#ffffff\"/>",
        ]
        lines.append(contentsOf: body)
        lines.append("</svg>")
        return lines.joined(separator: "\n") + "\n"
    }
}
