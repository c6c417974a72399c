import Foundation
import Testing

/// `embstore demo`: the files it writes, the figures it prints, and the commands it prints to
/// repeat each step, run as printed.
@Suite("demo")
struct DemoCommandTests {
    static let rows = 5000, d = 64

    /// The lines of a step: its first line without the label, then the lines indented under it.
    static func step(_ name: String, in output: String) throws -> [String] {
        let lines = output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let start = try #require(lines.firstIndex { $0.hasPrefix(name + " ") }, "no step '\(name)' in:\n\(output)")
        var block = [String(lines[start].dropFirst(name.count)).trimmingCharacters(in: .whitespaces)]
        for line in lines[(start + 1)...] {
            guard line.hasPrefix("          ") else { break }
            block.append(line.trimmingCharacters(in: .whitespaces))
        }
        return block
    }

    /// The whitespace-separated cells of the line of `block` whose first cell is `first`.
    static func cells(_ first: String, in block: [String]) throws -> [String] {
        let line = try #require(block.first { $0.split(separator: " ").first.map(String.init) == first }, "no line '\(first)' in \(block)")
        return line.split(separator: " ").map(String.init)
    }

    static func number(_ text: String) throws -> Double {
        let cleaned = text.replacingOccurrences(of: ",", with: "").replacingOccurrences(of: "%", with: "")
        return try #require(Double(cleaned), "not a number: '\(text)'")
    }

    /// "1.75 M rows/s", "405.6 k rows/s" in `cells` after position `index`.
    static func rate(_ cells: [String], at index: Int) throws -> Double {
        let value = try number(cells[index])
        switch cells[index + 1] {
        case "M": return value * 1e6
        case "k": return value * 1e3
        default: return value
        }
    }

    /// Runs the CLI with `arguments`, requiring exit status 0.
    @discardableResult
    static func ok(_ arguments: [String]) throws -> Run {
        let run = try embstore(arguments)
        guard run.status == 0 else { throw TestFailure("embstore \(arguments.joined(separator: " ")) failed: \(run)") }
        return run
    }

    @Test func demoRunsTheMainJobAndItsCommandsRepeatIt() throws {
        try withTemporaryDirectory { scratch in
            let dir = scratch.appendingPathComponent("demo")   // made by the demo
            let run = try embstoreOK("demo", "--dir", dir.path, "--rows", "\(Self.rows)")
            let out = run.stdout
            let payload = Double(Self.rows * Self.d * 4)

            // The files: the table, ids, counts and lookup stream as .npy, the chart and the store.
            let vectors = try NPYArray(contentsOf: dir.appendingPathComponent("vectors.npy"))
            #expect(vectors.descr == "<f4" && vectors.shape == [Self.rows, Self.d])
            let ids = try NPYArray(contentsOf: dir.appendingPathComponent("ids.npy"))
            #expect(ids.descr == "<u8" && ids.shape == [Self.rows])
            #expect(Set(ids.uint64s).count == Self.rows, "ids are distinct")
            #expect(ids.uint64s.contains { $0 > UInt64(UInt32.max) }, "ids are sparse 64-bit values")
            let freq = try NPYArray(contentsOf: dir.appendingPathComponent("freq.npy"))
            #expect(freq.descr == "<u8" && freq.shape == [Self.rows])
            let counts = freq.uint64s
            let total = Double(counts.reduce(0, +))
            #expect(abs(total / Double(100 * Self.rows) - 1) < 0.05, "about 100 lookups a row: \(total)")
            let hottest = Double(counts.sorted(by: >).prefix(Self.rows / 100).reduce(0, +))
            #expect(hottest / total > 0.4, "Zipf: the hottest 1% of rows take \(hottest / total) of the lookups")
            let lookups = try NPYArray(contentsOf: dir.appendingPathComponent("lookups.npy"))
            #expect(lookups.descr == "<u8" && lookups.shape[0] % 512 == 0 && lookups.shape[0] > 0)
            let known = Set(ids.uint64s)
            #expect(lookups.uint64s.allSatisfy(known.contains), "lookups draw the table's ids")
            let chart = try String(contentsOf: dir.appendingPathComponent("stats.svg"), encoding: .utf8)
            #expect(chart.hasPrefix("<?xml") && chart.contains("<svg") && chart.contains("Where the bytes of table &apos;demo&apos; go"))
            #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("store/data.mdb").path))

            // Ingest: both tables; the budget table within 25% of the float32 payload (+1%).
            let ingest = try Self.step("ingest", in: out)
            let budgetLine = try Self.cells("demo", in: ingest)
            #expect(Array(budgetLine[1...5]) == ["budget", "25%", "5,000", "rows", "in"], "\(budgetLine)")
            let share = try Self.number(try #require(budgetLine.first { $0.hasSuffix("%") && $0 != "25%" }))
            #expect(share > 0 && share <= 25 * 1.01, "\(budgetLine)")
            let rateAt = try #require(budgetLine.firstIndex { $0.hasPrefix("(") })
            #expect(try Self.rate(budgetLine.map { $0.replacingOccurrences(of: "(", with: "") }, at: rateAt) > 0, "\(budgetLine)")
            let report = try #require(try JSONSerialization.jsonObject(with: Data(try embstoreOK("stats", dir.appendingPathComponent("store").path,
                                                                                               "--table", "demo", "--json").stdout.utf8)) as? [String: Any])
            let diskBytes = try #require((report["tables"] as? [[String: Any]])?.first?["disk_bytes"] as? Int)
            #expect(Double(diskBytes) <= 0.25 * 1.01 * payload, "\(diskBytes) bytes on disk, budget \(0.25 * payload)")
            #expect(abs(Double(diskBytes) / payload * 100 - share) < 0.051, "printed \(share)%, stats \(diskBytes) bytes")
            let baselineLine = try Self.cells("demo_int8", in: ingest)
            #expect(baselineLine[1] == "int8")

            // Stats: per form, rows and shares that add up; the 80% line; the chart's path.
            let stats = try Self.step("stats", in: out)
            #expect(stats[0].split(separator: " ").map(String.init) == ["form", "rows", "of", "rows", "of", "bytes", "of", "lookups"])
            var formRows = 0, byteShare = 0.0, lookupShare = 0.0
            for line in stats.dropFirst() {
                let cells = line.split(separator: " ").map(String.init)
                if cells.count == 5 {
                    formRows += Int(try Self.number(cells[1]))
                    byteShare += try Self.number(cells[3])
                    lookupShare += try Self.number(cells[4])
                } else if cells.first == "shared", let last = cells.last, last.hasSuffix("%") {
                    byteShare += try Self.number(last)   // the tc basis and models: bytes, no lookups
                }
            }
            #expect(formRows == Self.rows)
            #expect(abs(lookupShare - 100) < 0.5, "\(stats)")
            #expect(abs(byteShare - 100) < 0.5, "\(stats)")
            #expect(stats.contains { $0.hasPrefix("80% of lookups come from ") })
            #expect(stats.contains("chart: " + dir.appendingPathComponent("stats.svg").path))

            // Eval: mean cosine and recalls in [0, 1], for the budget table and the int8 copy.
            let eval = try Self.step("eval", in: out)
            var printedRecall: [String: [Double]] = [:]
            for table in ["demo", "demo_int8"] {
                let cells = try Self.cells(table, in: eval)
                #expect(Int(try Self.number(cells[1])) == Self.rows)
                let values = try cells[2...4].map(Self.number)
                #expect(values.allSatisfy { $0 >= 0 && $0 <= 1 }, "\(cells)")
                #expect(values[0] > 0.9, "mean cosine \(values[0])")
                printedRecall[table] = Array(values[1...2])
            }

            // Lookups: both rates positive, and their ratio as printed.
            let lookupStep = try Self.step("lookups", in: out)
            let demoRate = try Self.rate(try Self.cells("demo", in: lookupStep), at: 1)
            let baselineCells = try Self.cells("demo_int8", in: lookupStep)
            let baselineRate = try Self.rate(baselineCells, at: 1)
            #expect(demoRate > 0 && baselineRate > 0)
            let ratio = try Self.number(try #require(baselineCells.first { $0.hasSuffix("×") }).replacingOccurrences(of: "×", with: ""))
            #expect(abs(ratio - baselineRate / demoRate) <= 0.02 * ratio + 0.01, "\(baselineCells)")

            // The commands it printed, run as printed: the ingests into a new store give the same
            // forms; stats and eval give the demo's figures; bench measures both tables.
            let binary = try #require(Tooling.embstoreBinary).path
            let commands = out.split(separator: "\n").filter { $0.hasPrefix("  " + binary + " ") }
                .map { $0.dropFirst(2 + binary.count + 1).split(separator: " ").map(String.init) }
            #expect(commands.map { $0[0] } == ["ingest", "ingest", "stats", "eval", "bench", "bench"], "\(out)")
            let store = dir.appendingPathComponent("store").path, again = scratch.appendingPathComponent("again").path
            for command in commands where command[0] == "ingest" {
                #expect(command[1] == store)
                try Self.ok(["ingest", again] + command.dropFirst(2))
            }
            func forms(_ store: String) throws -> [String: Int] {
                let report = try #require(try JSONSerialization.jsonObject(with: Data(try embstoreOK("stats", store, "--json").stdout.utf8)) as? [String: Any])
                var forms: [String: Int] = [:]
                for table in try #require(report["tables"] as? [[String: Any]]) {
                    for form in try #require(table["forms"] as? [[String: Any]]) {
                        forms["\(table["table"] ?? "")/\(form["form"] ?? "")"] = form["rows"] as? Int
                    }
                }
                return forms
            }
            #expect(try forms(again) == forms(store), "the ingest commands give the demo's tables")

            let statsRun = try Self.ok(commands[2])
            #expect(statsRun.stdout.contains("table 'demo': 5,000 rows × 64"))
            #expect(try String(contentsOf: dir.appendingPathComponent("stats.svg"), encoding: .utf8) == chart, "the same chart")

            let evalRun = try Self.ok(commands[3] + ["--quiet"])
            for (set, printed) in zip(["hot", "uniform"], printedRecall["demo"]!) {
                let line = try #require(evalRun.stdout.split(separator: "\n").first { $0.hasPrefix("  \(set) ") }, "\(evalRun.stdout)")
                let recall = try Self.number(String(line.split(separator: " ")[3]))
                #expect(abs(recall - printed) < 1e-9, "eval's \(set) recall \(recall), the demo printed \(printed)")
            }

            for command in commands where command[0] == "bench" {
                let bench = try Self.ok(command + ["--reps", "1", "--rep-seconds", "0.05"])
                let lookup = try #require(bench.stdout.split(separator: "\n").first { $0.contains("\"workload\": \"lookup\"") })
                let object = try #require(try JSONSerialization.jsonObject(with: Data(lookup.utf8)) as? [String: Any])
                #expect((object["rows_per_s"] as? Double ?? 0) > 0)
            }
        }
    }

    /// Bad options are errors that say what is wrong, before anything is written.
    @Test func badOptionsAreClearErrors() throws {
        try withTemporaryDirectory { scratch in
            let file = scratch.appendingPathComponent("a-file")
            try Data("x".utf8).write(to: file)
            let full = scratch.appendingPathComponent("full")
            try FileManager.default.createDirectory(at: full, withIntermediateDirectories: true)
            try Data("x".utf8).write(to: full.appendingPathComponent("something"))
            let fresh = scratch.appendingPathComponent("fresh").path
            for (arguments, expected) in [
                (["--rows", "0", "--dir", fresh], "--rows must be at least 2,000 (got 0)"),
                (["--rows", "1999", "--dir", fresh], "--rows must be at least 2,000 (got 1999)"),
                (["--dimension", "4", "--dir", fresh], "--dimension must be in 8...1024 (got 4)"),
                (["--budget", "0", "--dir", fresh], "--budget: budget '0'"),
                (["--budget", "150%", "--dir", fresh], "(0, 1]"),
                (["--dir", file.path], "--dir \(file.path) is a file, not a directory"),
                (["--dir", full.path], "--dir \(full.path) is not empty"),
            ] {
                let run = try embstore(["demo"] + arguments)
                #expect(run.status != 0, "\(arguments): \(run)")
                #expect(run.stderr.contains("Error: " + expected) || run.stderr.contains(expected), "\(arguments): \(run.stderr)")
                #expect(!run.stderr.contains("Usage:"), "\(arguments): an input error, not a usage text")
            }
            #expect(!FileManager.default.fileExists(atPath: fresh), "nothing written")
        }
    }

    /// The generator is deterministic: the same seed writes the same files, another seed others.
    /// (A budget too small for the rows stops the demo after the files are written, with the
    /// library's error naming the share the smallest codecs need.)
    @Test func theSameSeedWritesTheSameFiles() throws {
        try withTemporaryDirectory { scratch in
            func files(seed: Int, name: String) throws -> [Data] {
                let dir = scratch.appendingPathComponent(name)
                let run = try embstore("demo", "--dir", dir.path, "--rows", "2000", "--dimension", "16", "--budget", "0.05", "--seed", "\(seed)")
                #expect(run.status != 0)
                #expect(run.stderr.contains("too small") && run.stderr.contains("the smallest codecs take about"), "\(run.stderr)")
                return try ["vectors.npy", "ids.npy", "freq.npy", "lookups.npy"].map { try Data(contentsOf: dir.appendingPathComponent($0)) }
            }
            let first = try files(seed: 7, name: "a"), second = try files(seed: 7, name: "b"), other = try files(seed: 8, name: "c")
            #expect(first == second)
            for (a, b) in zip(first, other) { #expect(a != b) }
        }
    }
}
