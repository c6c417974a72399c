import EmbeddingStore
import Foundation
import Testing

/// `embstore rollout`: files changed atomically stage by stage, and `assign` gives every unit
/// the same variant in every process.
@Suite struct RolloutCommandTests {
    @Test func stagesAndAnAuditThatTwoProcessesAgreeOn() throws {
        try withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("r.json").path
            let create = try embstoreOK("rollout", "create", file, "--baseline", "A", "--candidate", "B", "--fraction", "0.05")
            #expect(create.stdout.contains("candidate") && create.stdout.contains("5.000%"), "\(create.stdout)")
            #expect(try embstore("rollout", "create", file, "--baseline", "A", "--candidate", "B", "--fraction", "0.05").status != 0)
            let units = directory.appendingPathComponent("u.npy")
            try writeUInt64((0..<1_000_000).map { UInt64($0) &* 2_654_435_761 }, to: units)
            func assign(_ name: String) throws -> (Data, String) {
                let out = directory.appendingPathComponent(name)
                let run = try embstoreOK("rollout", "assign", file, "--units", units.path, "--out", out.path)
                return (try Data(contentsOf: out), run.stdout)
            }
            let (first, line) = try assign("v1.npy")
            let (second, _) = try assign("v2.npy")   // another process
            #expect(first == second)
            let share = line.split(separator: "(").dropFirst(2).first.flatMap { Double($0.prefix { $0 != "%" }) } ?? -1
            #expect(abs(share - 5) < 0.2, "\(line)")
            try embstoreOK("rollout", "advance", file, "--fraction", "0.25")
            let (wider, _) = try assign("v3.npy")
            let header = 128   // numpy's version 1.0 header for a 1-D uint8 array
            #expect(zip(first.dropFirst(header), wider.dropFirst(header)).allSatisfy { $0 == 0 || $1 == 1 })
            let show = try embstoreOK("rollout", "show", file).stdout
            #expect(show.contains("25.000%") && show.contains("previous stage") && show.contains("5.000%"), "\(show)")
            try embstoreOK("rollout", "rollback", file)
            let (back, _) = try assign("v4.npy")
            #expect(back == first)
            #expect(try embstore("rollout", "rollback", file).stderr.contains("no earlier stage"))
            #expect(try embstore("rollout", "advance", file, "--fraction", "1.5").status != 0)
            #expect(Set(try FileManager.default.contentsOfDirectory(atPath: directory.path)).filter { $0.contains("writing") }.isEmpty)
        }
    }

    @Test func thresholdsAreCheckedNamedAndKeptOutOfTheSplit() throws {
        try withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("r.json").path
            try embstoreOK("rollout", "create", file, "--baseline", "A", "--candidate", "B", "--fraction", "0.05", "--threshold", "agreement_min=0.9")
            let rollout = try Rollout.read(from: file)
            #expect(rollout.thresholds == Rollout.defaultThresholds.merging(["agreement_min": 0.9]) { $1 })
            let shown = try embstoreOK("rollout", "thresholds", file, "--set", "recall_drop=0.02", "--unset", "rows_missing_max").stdout
            #expect(shown.contains("recall_drop = 0.02") && !shown.contains("rows_missing_max"), "\(shown)")
            #expect(try Rollout.read(from: file).candidateFractions == [0.05])
            for bad in ["recall=0.1", "recall_drop=x", "recall_drop=nan"] {
                let run = try embstore("rollout", "thresholds", file, "--set", bad)
                #expect(run.status != 0 && (run.stderr.contains("unknown threshold 'recall'") || run.stderr.contains("is not NAME=NUMBER")), "\(bad): \(run)")
            }
            // A hand-edited file with a misspelt threshold is refused when read.
            let text = try String(contentsOfFile: file, encoding: .utf8).replacingOccurrences(of: "\"recall_drop\"", with: "\"recal_drop\"")
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            #expect(try embstore("rollout", "show", file).stderr.contains("unknown threshold 'recal_drop'"))
        }
    }

    /// The readiness report of an int4 candidate against an int8 baseline, with live counters
    /// from two routers (two "processes"), renders in headless Chromium with every section, and
    /// the threshold the candidate misses is shown failing.
    @Test func readinessReportRendersInChromiumWithAFailingThresholdShownFailing() throws {
        try withTemporaryDirectory { directory in
            try makeTable(in: directory, n: 1_500, d: 16, seed: 9)
            let table = directory.appendingPathComponent("table.npy").path
            for (name, codec) in [("A", "int8"), ("B", "int4")] {
                try embstoreOK("ingest", directory.appendingPathComponent(name).path, "--table", "t", "--vectors", table, "--codec", codec)
            }
            try python("import numpy as np; np.save(sys.argv[1], (np.arange(1500) * 7919 % 1009).astype(np.int64))",
                       [directory.appendingPathComponent("freq.npy").path])
            let file = directory.appendingPathComponent("r.json").path
            try embstoreOK("rollout", "create", file, "--baseline", "A", "--candidate", "B", "--fraction", "0.5",
                           "--threshold", "agreement_min=0.999", "--threshold", "recall_drop=0.5", "--threshold", "bytes_ratio_max=2",
                           "--threshold", "p99_latency_ratio=1000", "--threshold", "miss_rate_increase=0.5", "--threshold", "mean_cosine_min=0.9")
            // Live counters from two routers, as two serving processes would export them.
            var batches = 0
            var metrics: [String] = []
            for process in 0..<2 {
                let router = try VariantRouter(path: file)
                let reader = router.makeReader()
                var out = [Float](repeating: 0, count: 64 * 16)
                for unit in UInt64(0)..<200 {
                    let ids = (0..<64).map { UInt64((Int(unit) * 131 + $0 * 17 + process) % 1_600) }   // some missing
                    try ids.withUnsafeBufferPointer { ids in
                        try out.withUnsafeMutableBufferPointer { _ = try reader.lookup(unit: unit, table: "t", ids: ids, into: $0) }
                    }
                    batches += 1
                }
                let path = directory.appendingPathComponent("metrics\(process).json").path
                try router.metricsJSON().write(toFile: path, atomically: true, encoding: .utf8)
                metrics += ["--metrics", path]
            }
            let html = directory.appendingPathComponent("report.html").path
            let run = try embstoreOK(["rollout", "report", file, "--source", table, "--freq", directory.appendingPathComponent("freq.npy").path,
                                      "--query-count", "150", "--out", html, "--json"] + metrics)
            #expect(run.stdout.contains("NOT ready to widen"), "\(run.stdout)")
            let checks = try JSONSerialization.jsonObject(with: Data((run.stdout.split(separator: "\n").first ?? "").utf8)) as? [[String: Any]] ?? []
            var status: [String: String] = [:]
            for check in checks { status[check["name"] as? String ?? ""] = check["status"] as? String }
            #expect(status == ["agreement_min": "fail", "recall_drop": "pass", "bytes_ratio_max": "pass", "p99_latency_ratio": "pass",
                               "miss_rate_increase": "pass", "mean_cosine_min": "pass", "rows_missing_max": "pass"], "\(checks)")

            // Too few queries for any decile: recall_drop checks each query set whole (it still has data).
            let few = try embstoreOK(["rollout", "report", file, "--source", table, "--freq", directory.appendingPathComponent("freq.npy").path,
                                      "--query-count", "5", "--out", directory.appendingPathComponent("few.html").path, "--json"])
            let fewChecks = try JSONSerialization.jsonObject(with: Data((few.stdout.split(separator: "\n").first ?? "").utf8)) as? [[String: Any]] ?? []
            let recall = fewChecks.first { $0["name"] as? String == "recall_drop" }
            #expect(recall?["status"] as? String == "pass" && (recall?["detail"] as? String ?? "").contains(" queries: "), "\(recall ?? [:])")

            // Chromium's DOM of the page, and a screenshot of it.
            guard let chromium = ["chromium", "chromium-browser", "google-chrome"].lazy.compactMap(Tooling.executable(named:)).first else {
                Issue.record("no Chromium to render the report: apt-get install chromium (.ci/run and tools/quickstart.sh install it)")
                return
            }
            let profile = directory.appendingPathComponent("profile").path
            let flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--user-data-dir=\(profile)"]
            let dom = try runProcess(chromium, flags + ["--dump-dom", "file://\(html)"])
            #expect(dom.status == 0, "\(dom)")
            for section in ["verdict", "split", "checklist", "candidate-1", "counters", "inputs"] {
                #expect(dom.stdout.contains("id=\"\(section)\""), "Chromium's DOM lacks the section \(section)")
            }
            #expect(dom.stdout.contains("NOT READY: 1 of 7 checks fail"), "\(dom.stdout.prefix(3000))")
            // The failing row: its check name, then FAIL in the same row.
            let row = dom.stdout.components(separatedBy: "<tr>").first { $0.contains("<code>agreement_min</code>") } ?? ""
            #expect(row.contains("status fail") && row.contains(">FAIL<"), "\(row)")
            let counters = dom.stdout.components(separatedBy: "id=\"counters\"").last ?? ""
            let served = counters.components(separatedBy: "<tr>").dropFirst(2).compactMap { row -> Int? in
                let cells = row.components(separatedBy: "<td>").dropFirst(2)
                return cells.first.flatMap { Int($0.prefix { $0 != "<" }.replacingOccurrences(of: ",", with: "")) }
            }
            #expect(served.reduce(0, +) == batches, "batches of both routers add up: \(served)")
            let png = directory.appendingPathComponent("report.png").path
            let shot = try runProcess(chromium, flags + ["--window-size=1100,2400", "--screenshot=\(png)", "file://\(html)"])
            let size = (try? FileManager.default.attributesOfItem(atPath: png)[.size] as? Int) ?? 0
            #expect(size > 50_000, "the screenshot is \(size) bytes: \(shot)")
        }
    }
}
