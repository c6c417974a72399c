import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing

/// `embstore stats`: bytes per codec form adding up to the table's LMDB pages (checked against
/// `mdb_stat`), lookups from --freq and its errors, and the --plot chart as XML.
@Suite("stats")
struct StatsTests {
    static let d = 8

    /// A store with one table: int8 rows 0..<300 (one segment), fp16 rows 300..<400 (another).
    static func twoCodecStore(in dir: URL, table: String = "t") throws -> URL {
        let store = dir.appendingPathComponent("store")
        let a = dir.appendingPathComponent("a.npy"), b = dir.appendingPathComponent("b.npy")
        let bIDs = dir.appendingPathComponent("b-ids.npy")
        try writeFloat32(randomRows(300, d, seed: 1), to: a)
        try writeFloat32(randomRows(100, d, seed: 2), to: b)
        try writeInt64((300..<400).map { Int64($0) }, to: bIDs)
        try embstoreOK("ingest", store.path, "--table", table, "--vectors", a.path, "--codec", "int8")
        try embstoreOK("ingest", store.path, "--table", table, "--vectors", b.path, "--ids", bIDs.path, "--codec", "fp16")
        return store
    }

    static func json(_ run: Run) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "not a JSON object: \(run)")
    }

    @Test func jsonFormsAddUpToThePages() throws {
        try withTemporaryDirectory { dir in
            let store = try Self.twoCodecStore(in: dir)
            let report = try Self.json(try embstoreOK("stats", store.path, "--json"))
            let tables = try #require(report["tables"] as? [[String: Any]])
            #expect(tables.count == 1)
            let table = tables[0]
            #expect(table["table"] as? String == "t" && table["rows"] as? Int == 400 && table["dimension"] as? Int == Self.d)
            let forms = try #require(table["forms"] as? [[String: Any]])
            #expect(forms.map { $0["form"] as? String } == ["fp16", "int8"], "most bytes a row first")
            #expect(forms.map { $0["rows"] as? Int } == [100, 300])
            #expect(forms.map { $0["record_bytes"] as? Int } == [100 * (1 + 2 * Self.d), 300 * (1 + Self.d + 8)])
            #expect(forms.allSatisfy { $0["lookups"] == nil && $0["lookup_share"] == nil })
            let pages = try #require(table["pages"] as? Int), pageSize = try #require(table["page_size"] as? Int)
            let disk = forms.reduce(0) { $0 + ($1["disk_bytes"] as? Int ?? 0) }
                + (table["shared"] as? [[String: Any]] ?? []).reduce(0) { $0 + ($1["disk_bytes"] as? Int ?? 0) }
            #expect(disk == pages * pageSize)
            #expect(table["disk_bytes"] as? Int == pages * pageSize)
            let shares = forms.reduce(0.0) { $0 + ($1["byte_share"] as? Double ?? 0) }
            #expect(abs(shares - 1) < 1e-9)
            #expect(table["lookups"] == nil && table["curve"] == nil)
            let environment = try #require(report["environment"] as? [String: Any])
            #expect(environment["unaccounted_pages"] as? Int == 0)
            #expect((environment["table_pages"] as? [String: Int])?["t"] == pages)
        }
    }

    /// The figures of `--json` are the ones `mdb_stat -e -f -a` prints.
    @Test(.enabled(if: Tooling.hasMdbStat, "mdb_stat (lmdb-utils) is not installed; skipping"))
    func agreesWithMdbStat() throws {
        try withTemporaryDirectory { dir in
            let store = try Self.twoCodecStore(in: dir)
            // A second table, dropped by nothing: two tables' pages in the environment.
            let vectors = dir.appendingPathComponent("c.npy")
            try writeFloat32(randomRows(50, 4, seed: 3), to: vectors)
            try embstoreOK("ingest", store.path, "--table", "other", "--vectors", vectors.path, "--codec", "reduced:2", "--layout", "per-key")
            let report = try Self.json(try embstoreOK("stats", store.path, "--json"))
            let run = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["mdb_stat", "-e", "-f", "-a", store.path])
            #expect(run.status == 0, "\(run)")
            var sections: [String: [String: Int]] = [:]
            var current = ""
            for line in run.stdout.split(separator: "\n") {
                if !line.hasPrefix(" ") {
                    current = line.hasPrefix("Status of ") ? String(line.dropFirst("Status of ".count)) : String(line)
                    continue
                }
                let parts = line.trimmingCharacters(in: .whitespaces).components(separatedBy: ": ")
                if parts.count == 2, let value = Int(parts[1]) { sections[current, default: [:]][parts[0]] = value }
            }
            let environment = try #require(report["environment"] as? [String: Any])
            #expect(environment["pages_in_use"] as? Int == sections["Environment Info"]?["Number of pages used"])
            #expect(environment["map_size"] as? Int == sections["Environment Info"]?["Map size"])
            #expect(environment["page_size"] as? Int == sections["Environment Info"]?["Page size"])
            #expect(environment["transaction"] as? Int == sections["Environment Info"]?["Last transaction ID"])
            #expect(environment["free_pages"] as? Int == sections["Freelist Status"]?["Free pages"])
            func pages(_ section: [String: Int]?) -> Int? {
                guard let section, let leaf = section["Leaf pages"], let branch = section["Branch pages"],
                      let overflow = section["Overflow pages"] else { return nil }
                return leaf + branch + overflow
            }
            #expect((environment["free_list"] as? [String: Any])?["pages"] as? Int == pages(sections["Freelist Status"]))
            #expect((environment["main_database"] as? [String: Any])?["pages"] as? Int == pages(sections["Main DB"]))
            #expect((environment["meta_database"] as? [String: Any])?["pages"] as? Int == pages(sections["meta"]))
            for table in try #require(report["tables"] as? [[String: Any]]) {
                var total = 0
                for database in try #require(table["databases"] as? [[String: Any]]) {
                    let name = try #require(database["name"] as? String)
                    let stat = try #require(sections[name], "mdb_stat does not list \(name)")
                    #expect(database["leaf_pages"] as? Int == stat["Leaf pages"], "\(name)")
                    #expect(database["branch_pages"] as? Int == stat["Branch pages"], "\(name)")
                    #expect(database["overflow_pages"] as? Int == stat["Overflow pages"], "\(name)")
                    #expect(database["entries"] as? Int == stat["Entries"], "\(name)")
                    #expect(database["depth"] as? Int == stat["Tree depth"], "\(name)")
                    total += pages(stat) ?? 0
                }
                #expect(table["pages"] as? Int == total)
            }
            // Every page in use: 2 meta pages, LMDB's and embstore's databases, the tables, free.
            let used = try #require(sections["Environment Info"]?["Number of pages used"])
            let named = sections.filter { $0.key != "Environment Info" && $0.key != "Freelist Status" }.values.compactMap(pages).reduce(0, +)
            #expect(used == 2 + (pages(sections["Freelist Status"]) ?? 0) + named + (sections["Freelist Status"]?["Free pages"] ?? 0))
        }
    }

    @Test func freqGivesLookupsPerForm() throws {
        try withTemporaryDirectory { dir in
            let store = try Self.twoCodecStore(in: dir)
            // Counts for ids 0..<400 by position: int8 rows 1 each, fp16 rows 9 each.
            let freq = dir.appendingPathComponent("freq.npy")
            try npyFile(descr: "<u8", shape: [400], payload: littleEndianBytes((0..<400).map { UInt64($0 < 300 ? 1 : 9) })).write(to: freq)
            let report = try Self.json(try embstoreOK("stats", store.path, "--freq", freq.path, "--json"))
            let table = try #require((report["tables"] as? [[String: Any]])?.first)
            let forms = try #require(table["forms"] as? [[String: Any]])
            #expect(forms.map { $0["lookups"] as? Double } == [900, 300])
            #expect(forms.map { $0["lookup_share"] as? Double } == [0.75, 0.25])
            let lookups = try #require(table["lookups"] as? [String: Any])
            #expect(lookups["total"] as? Double == 1200 && lookups["rows_counted"] as? Int == 400)
            let curve = try #require(table["curve"] as? [[String: Any]])
            #expect(curve.last?["rows"] as? Int == 400 && curve.last?["lookups"] as? Double == 1200)
            #expect(curve.dropFirst().first?["form"] as? Int == 0, "the hottest rows are fp16, forms[0]")
            let milestones = try #require(table["milestones"] as? [[String: Any]])
            #expect(milestones.first?["lookup_share"] as? Double == 0.5)
            #expect(milestones.first?["rows"] as? Int == 67, "600 lookups need ⌈600 / 9⌉ fp16 rows")

            // The same counts with explicit ids, shuffled, as int64 and as float64.
            let order = (0..<400).map { ($0 * 97) % 400 }
            let ids = dir.appendingPathComponent("ids.npy"), freq8 = dir.appendingPathComponent("freq8.npy")
            try writeInt64(order.map { Int64($0) }, to: ids)
            try npyFile(descr: "<f8", shape: [400], payload: littleEndianBytes(order.map { Double($0 < 300 ? 1 : 9).bitPattern })).write(to: freq8)
            let again = try Self.json(try embstoreOK("stats", store.path, "--freq", freq8.path, "--ids", ids.path, "--json"))
            let againForms = try #require(((again["tables"] as? [[String: Any]])?.first)?["forms"] as? [[String: Any]])
            #expect(againForms.map { $0["lookups"] as? Double } == [900, 300])

            let human = try embstoreOK("stats", store.path, "--freq", freq.path)
            #expect(human.stdout.contains("lookups%"), "\(human.stdout)")
            #expect(human.stdout.contains("75.0%") && human.stdout.contains("25.0%"), "\(human.stdout)")
            #expect(human.stdout.contains("50% of lookups from"), "\(human.stdout)")
            #expect(human.stdout.contains("pages in use = 2 meta"), "\(human.stdout)")
        }
    }

    @Test func freqErrorsSayWhatIsWrong() throws {
        try withTemporaryDirectory { dir in
            let store = try Self.twoCodecStore(in: dir)
            func refused(_ arguments: [String], _ fragments: [String]) throws {
                let run = try embstore(["stats", store.path] + arguments)
                #expect(run.status != 0, "accepted: \(arguments) \(run)")
                for fragment in fragments { #expect(run.stderr.contains(fragment), "\(fragment): \(run)") }
                #expect(!run.stderr.contains("Fatal error"), "\(run)")
            }
            let short = dir.appendingPathComponent("short.npy"), ids = dir.appendingPathComponent("ids.npy")
            try writeInt64([1, 2, 3], to: short)
            try writeInt64([1, 2], to: ids)
            try refused(["--freq", short.path, "--ids", ids.path], ["has 3 counts but --ids", "has 2 ids"])
            let negative = dir.appendingPathComponent("negative.npy")
            try writeInt64([1, -4, 2, -1], to: negative)
            try refused(["--freq", negative.path], ["2 of 4 counts are negative, NaN or infinite", "-4.0 at index 1 (id 1)"])
            let nan = dir.appendingPathComponent("nan.npy")
            try npyFile(descr: "<f4", shape: [2], payload: float32Bytes([1, .nan])).write(to: nan)
            try refused(["--freq", nan.path], ["1 of 2 counts is negative, NaN or infinite", "at index 1 (id 1)"])
            // Ids 0..<450 by default: 50 are not in the table, the first 400.
            let long = dir.appendingPathComponent("long.npy")
            try writeInt64((0..<450).map { _ in Int64(1) }, to: long)
            try refused(["--freq", long.path], ["50 of the 450 counted ids are not in table 't'", "the first is id 400 at index 400"])
            let idsOut = dir.appendingPathComponent("ids-out.npy")
            try writeInt64([5, 1_000_000, 6, 2_000_000], to: idsOut)
            let four = dir.appendingPathComponent("four.npy")
            try writeInt64([1, 1, 1, 1], to: four)
            try refused(["--freq", four.path, "--ids", idsOut.path], ["2 of the 4 counted ids", "id 1000000 at index 1"])
            let zero = dir.appendingPathComponent("zero.npy")
            try writeInt64([0, 0], to: zero)
            try refused(["--freq", zero.path], ["add up to 0"])
            try refused(["--ids", ids.path], ["pass --freq too"])
            let matrix = dir.appendingPathComponent("matrix.npy")
            try writeFloat32([[1, 2]], to: matrix)
            try refused(["--freq", matrix.path], ["1-D uint64, int64, float32 or float64"])
            try refused(["--table", "nope"], ["no table named 'nope'"])
            // Two tables: --freq and --plot need --table.
            let vectors = dir.appendingPathComponent("v.npy")
            try writeFloat32(randomRows(5, 3, seed: 4), to: vectors)
            try embstoreOK("ingest", store.path, "--table", "u", "--vectors", vectors.path, "--codec", "fp32")
            try refused(["--plot", dir.appendingPathComponent("x.svg").path], ["2 tables", "--table"])
            try embstoreOK("stats", store.path, "--plot", dir.appendingPathComponent("x.svg").path, "--table", "u")
        }
    }

    // MARK: - The chart

    /// Text of every `<text>` element, and the names of every element.
    final class SVGText: NSObject, XMLParserDelegate {
        var texts: [String] = []
        var elements: [String] = []
        var rootAttributes: [String: String] = [:]
        private var current: String?

        func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]) {
            if elements.isEmpty { rootAttributes = attributes }
            elements.append(elementName)
            if elementName == "text" { current = "" }
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) { current? += string }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
            if elementName == "text", let text = current { texts.append(text) }
            current = nil
        }
    }

    static func parseSVG(_ url: URL) throws -> SVGText {
        let data = try Data(contentsOf: url)
        let parser = XMLParser(data: data)
        let reader = SVGText()
        parser.delegate = reader
        #expect(parser.parse(), "not well-formed XML: \(String(describing: parser.parserError))")
        return reader
    }

    @Test func plotWithCountsIsWellFormedAndLabelled() throws {
        try withTemporaryDirectory { dir in
            // A table name XML must escape.
            let store = try Self.twoCodecStore(in: dir, table: "a<b>&'c\"")
            let freq = dir.appendingPathComponent("freq.npy")
            try npyFile(descr: "<u8", shape: [400], payload: littleEndianBytes((0..<400).map { UInt64($0 < 300 ? 1 : 9) })).write(to: freq)
            let svg = dir.appendingPathComponent("chart.svg")
            let report = try Self.json(try embstoreOK("stats", store.path, "--freq", freq.path, "--plot", svg.path, "--json"))
            let chart = try Self.parseSVG(svg)
            #expect(chart.elements.first == "svg")
            #expect(!chart.elements.contains("script") && !chart.elements.contains("image") && !chart.elements.contains("foreignObject"))
            #expect(chart.rootAttributes["font-family"]?.hasSuffix("sans-serif") == true)
            #expect(Double(chart.rootAttributes["width"] ?? "") != nil && Double(chart.rootAttributes["height"] ?? "") != nil)
            let text = chart.texts.joined(separator: "\n")
            #expect(text.contains("Where the bytes of table 'a<b>&'c\"' go"), "\(text)")
            for label in ["fp16", "int8", "Bytes on disk", "Lookups served", "share of lookups served", "50%", "100%"] {
                #expect(chart.texts.contains { $0.contains(label) }, "no '\(label)' in \(chart.texts)")
            }
            // Every form's byte and lookup shares, as printed.
            let forms = try #require(((report["tables"] as? [[String: Any]])?.first)?["forms"] as? [[String: Any]])
            for form in forms {
                let bytes = String(format: "%.1f%%", (form["byte_share"] as? Double ?? 0) * 100)
                let lookups = String(format: "%.1f%%", (form["lookup_share"] as? Double ?? 0) * 100)
                #expect(chart.texts.contains { $0.hasPrefix(bytes + " · ") }, "no \(bytes) label in \(chart.texts)")
                #expect(chart.texts.contains { $0.hasPrefix(lookups + " · ") }, "no \(lookups) label in \(chart.texts)")
            }
            #expect(chart.texts.contains("75.0% · 900") && chart.texts.contains("25.0% · 300"), "\(chart.texts)")
            #expect(chart.texts.contains { $0.hasPrefix("50% of lookups from ") }, "\(chart.texts)")
            #expect(chart.elements.contains("polyline"))
        }
    }

    @Test func plotWithoutCountsSaysSo() throws {
        try withTemporaryDirectory { dir in
            let store = try Self.twoCodecStore(in: dir)
            let svg = dir.appendingPathComponent("chart.svg")
            let run = try embstoreOK("stats", store.path, "--plot", svg.path)
            #expect(run.stdout.contains("chart written to \(svg.path)"))
            let chart = try Self.parseSVG(svg)
            #expect(chart.texts.contains { $0.contains("Lookup counts were not given") }, "\(chart.texts)")
            #expect(!chart.texts.contains("Lookups served"))
            #expect(!chart.elements.contains("polyline"), "no curve without counts")
            #expect(chart.texts.contains { $0.contains("fp16") } && chart.texts.contains { $0.contains("int8") })
        }
    }

    /// Eight forms and shared lines, some with long names: every name and share still appears.
    @Test func plotWithManyForms() throws {
        try withTemporaryDirectory { dir in
            let store = dir.appendingPathComponent("store")
            let codecs = ["fp32", "fp16", "int8", "int4", "int4h", "int2h", "reduced:2", "bucket:4:scaled"]
            for (k, codec) in codecs.enumerated() {
                let vectors = dir.appendingPathComponent("x\(k).npy"), ids = dir.appendingPathComponent("i\(k).npy")
                try writeFloat32(randomRows(40, Self.d, seed: UInt64(k + 10)), to: vectors)
                try writeInt64((0..<40).map { Int64(k * 40 + $0) }, to: ids)
                try embstoreOK("ingest", store.path, "--table", "a-table-with-a-rather-long-name-for-a-chart-title-to-hold",
                               "--vectors", vectors.path, "--ids", ids.path, "--codec", codec)
            }
            let freq = dir.appendingPathComponent("freq.npy")
            try writeInt64((0..<320).map { Int64(1000 / ($0 + 1)) }, to: freq)
            let svg = dir.appendingPathComponent("chart.svg")
            try embstoreOK("stats", store.path, "--freq", freq.path, "--plot", svg.path)
            let chart = try Self.parseSVG(svg)
            for name in ["fp32", "fp16", "int8", "int4", "int4h", "int2h", "reduced", "bucket+scale", "shared parameters", "bucket rows"] {
                #expect(chart.texts.contains(name), "no '\(name)' in \(chart.texts)")
            }
            #expect(chart.texts.filter { $0.hasSuffix("% of lookups from") || $0.contains("% of lookups from ") }.count == 4,
                    "the 50, 80, 90 and 99% milestones: \(chart.texts)")
        }
    }
}
