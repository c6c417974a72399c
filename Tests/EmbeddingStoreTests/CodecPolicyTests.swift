import EmbeddingCodecs
import Foundation
import Synchronization
import Testing
@testable import EmbeddingStore

/// Zipf access counts (P(rank r) ∝ r^−1.05) over a fixed random permutation of the rows, like
/// `../shared/bench`'s `freq.npy`: the hottest 1% take most lookups, many rows have a handful.
func zipfCounts(_ count: Int, total: Double = 1e7, seed: UInt64 = 5) -> [Double] {
    var random = SeededRandom(seed: seed)
    let ranks = Array(0..<count).shuffled(using: &random)
    let norm = (1...count).reduce(0.0) { $0 + pow(Double($1), -1.05) }
    return ranks.map { (total * pow(Double($0 + 1), -1.05) / norm).rounded(.down) }
}

@Suite struct CodecPolicyParsingTests {
    @Test func tiersParseHottestFirstAndTheLastMayTakeTheRest() throws {
        let tiers = try CodecPolicy.parseTiers("fp16:1%,int8:9%,tc:2:40%,int2h")
        #expect(tiers.map(\.codec.description) == ["fp16", "int8", "tc:2", "int2h"])
        #expect(tiers.map(\.fraction) == [0.01, 0.09, 0.4, nil])
        #expect(try CodecPolicy.parseTiers("int8:50%,int4:50%").count == 2)
    }

    @Test func malformedTierSpecsNameWhatIsWrong() {
        let cases: [(String, String)] = [
            ("int8:50%,int4:40%", "add up to 90%"),
            ("int8:70%,int4:40%,int2h", "before the last"),
            ("int8,int4:10%", "only the last tier"),
            ("int8:0%,int4", "percentage in (0, 100]"),
            ("int8:abc%,int4", "percentage"),
            ("int9:10%,int4", "int9"),
            ("int8:10%,,int4", "comma-separated"),
            ("int8:10%,tc:6%:20%,int4", "tc:B, not a budget"),
            ("bucket:16:10%,int4", "bucket codecs"),
        ]
        for (spec, expected) in cases {
            #expect(throws: StoreError.self, "\(spec)") { try CodecPolicy.parseTiers(spec) }
            do {
                _ = try CodecPolicy.parseTiers(spec)
            } catch {
                #expect("\(error)".contains(expected), "\(spec): \(error)")
            }
        }
    }

    /// A large table's policy sample: its heaviest rows each stand for themselves, a stride of
    /// the others for all of them, so weighted totals over it estimate the table's.
    @Test func policySampleKeepsTheHeaviestRowsAndStandsForTheRest() {
        let counts = zipfCounts(50_000)
        let weights = counts.map { CodecPolicy.Weighting.traffic.weight($0) }
        let (rows, multiplicity) = BudgetPolicy.policySample(weights: weights, heavy: 1_000, limit: 4_000)
        #expect(rows.count == 4_000 && multiplicity.count == 4_000)
        #expect(zip(rows, rows.dropFirst()).allSatisfy { $0 < $1 }, "ascending and distinct")
        #expect(abs(multiplicity.reduce(0, +) - 50_000) < 1e-6 * 50_000)
        let heaviest = Set((0..<weights.count).sorted { weights[$0] > weights[$1] }.prefix(1_000))
        #expect(heaviest.isSubset(of: Set(rows)))
        for (row, stands) in zip(rows, multiplicity) where heaviest.contains(row) { #expect(stands == 1) }
        // The weighted total it estimates: within 2% (the heavy rows carry most of the weight).
        let estimate = zip(rows, multiplicity).reduce(0.0) { $0 + weights[$1.0] * $1.1 }
        let total = weights.reduce(0, +)
        #expect(abs(estimate - total) <= 0.02 * total, "\(estimate) vs \(total)")
        // Without counts: an even stride, every row standing for the same share.
        let even = BudgetPolicy.policySample(weights: [Double](repeating: 1, count: 10_000), heavy: 0, limit: 1_000)
        #expect(even.rows.count == 1_000 && Set(even.multiplicity) == [10])
        #expect(even.rows.first == 0 && even.rows.last == 9_990)
    }

    @Test func budgetsAreFractionsOrPercentages() throws {
        #expect(try CodecPolicy.parseBudgetFraction("0.125") == 0.125)
        #expect(try CodecPolicy.parseBudgetFraction("12.5%") == 0.125)
        for bad in ["0", "-0.1", "1.5", "abc", "nan%"] {
            #expect(throws: StoreError.self, "\(bad)") { try CodecPolicy.parseBudgetFraction(bad) }
        }
    }
}

@Suite struct CodecPolicyLoadTests {
    /// Σ wᵢ‖xᵢ − x̂ᵢ‖² of the table as it decodes, against `rows` (ids 0..<count).
    static func weightedError(_ store: Store, rows: [Float], weights: [Double], dimension d: Int) throws -> Double {
        let (ids, values) = try store.export(try store.table("t"))
        #expect(ids == (0..<UInt64(weights.count)).map { $0 })
        var total = 0.0
        for i in 0..<weights.count {
            var e = 0.0
            for j in 0..<d {
                let diff = Double(values[i * d + j]) - Double(rows[i * d + j])
                e += diff * diff
            }
            total += weights[i] * e
        }
        return total
    }

    /// `policySampleRows` below the row count makes a budget score every candidate on a sample
    /// and the rest of the rows under the candidates the sample's choice used, as large tables do.
    static func load(_ rows: [Float], count: Int, dimension: Int, policy: CodecPolicy, counts: [Double]?,
                     policySampleRows: Int = FitOptions().policySampleRows) throws -> (TemporaryDirectory, Store, LoadReport) {
        let dir = TemporaryDirectory()
        let store = try makeStore(dir, mapSize: 1 << 26)
        var options = LoadOptions()
        options.fit.policySampleRows = policySampleRows
        let report = try rows.withUnsafeBufferPointer {
            try store.load(table: "t", rows: $0, count: count, dimension: dimension, policy: policy, counts: counts, options: options)
        }
        try store.sync()
        return (dir, store, report)
    }

    /// The issue's invariant: at every budget the mix's traffic-weighted error is no higher than
    /// that of the best single codec whose table fits the same budget on disk, and the store's
    /// file stays within the budget plus 1%.
    /// (3% is checked on a large table by `tools/policy_curve.py`: on one of 12,000 rows the
    /// pages every store has take more than that, and the load says so.) Each budget with the
    /// whole table scored under every candidate, and with a sample of 2,500 rows deciding.
    @Test(arguments: [0.0625, 0.125, 0.25, 0.45, 0.70], [65_536, 2_500])
    func budgetMixIsNeverWorseThanTheBestSingleCodecThatFits(budget: Double, sampleRows: Int) throws {
        let d = 64, count = 12_000
        let rows = embeddingRows(count: count, dimension: d, seed: 11)
        let counts = zipfCounts(count)
        let limit = budget * Double(count * d * 4)
        let (mixDirectory, mixStore, report) = try Self.load(rows, count: count, dimension: d, policy: .budget(.fraction(budget), weighting: .traffic), counts: counts,
                                                             policySampleRows: sampleRows)
        let mixBytes = Double(mixStore.fileSize)
        #expect(mixBytes <= limit * 1.01, "budget \(budget): \(mixBytes) bytes on disk > \(limit) + 1%")
        let mixError = try Self.weightedError(mixStore, rows: rows, weights: counts, dimension: d)
        #expect(try mixStore.verify().problems.isEmpty)
        var singles: [(String, Double)] = []
        for codec in BudgetPolicy.plainLadder + [.transformCoded(budget: budget)] {
            guard let (directory, store, _) = try? Self.load(rows, count: count, dimension: d, policy: .single(codec), counts: nil),
                  Double(store.fileSize) <= limit * 1.01 else { continue }
            singles.append((codec.description, try Self.weightedError(store, rows: rows, weights: counts, dimension: d)))
            withExtendedLifetime(directory) {}
        }
        withExtendedLifetime(mixDirectory) {}
        let best = singles.min { $0.1 < $1.1 }
        print("[policy] budget \(budget), sample \(min(sampleRows, count)): mix \(mixError) at \(Int(mixBytes)) bytes (\(report.summary.shares.map { "\($0.codec) \($0.rows)" })); best single \(best.map { "\($0.0) \($0.1)" } ?? "none")")
        if let best {
            #expect(mixError <= best.1 * 1.0001, "budget \(budget): mix \(mixError) > \(best.0) \(best.1)")
        }
        #expect(report.summary.shares.reduce(0) { $0 + $1.rows } == count)
    }

    /// Under the retrieval weighting the tc rows of a budget load share one rate (rows of
    /// different rates rank unevenly against each other in a cosine search), the mix is still
    /// no worse than the best single codec that fits, and the store lands within its budget.
    @Test(arguments: [0.0625, 0.125, 0.25], [65_536, 2_500])
    func retrievalBudgetsGiveTCRowsOneRate(budget: Double, sampleRows: Int) throws {
        let d = 64, count = 12_000
        let rows = embeddingRows(count: count, dimension: d, seed: 11)
        let counts = zipfCounts(count)
        let weights = counts.map { CodecPolicy.Weighting.retrieval.weight($0) }
        let limit = budget * Double(count * d * 4)
        let (directory, store, report) = try Self.load(rows, count: count, dimension: d, policy: .budget(.fraction(budget), weighting: .retrieval), counts: counts,
                                                       policySampleRows: sampleRows)
        let tcForms = report.summary.shares.filter { $0.codec.hasPrefix("tc:") }
        #expect(tcForms.count <= 1, "budget \(budget): \(report.summary.shares.map(\.codec))")
        #expect(Double(store.fileSize) <= limit * 1.01, "budget \(budget): \(store.fileSize) bytes on disk > \(limit) + 1%")
        let mixError = try Self.weightedError(store, rows: rows, weights: weights, dimension: d)
        let (singleDirectory, single, _) = try Self.load(rows, count: count, dimension: d, policy: .single(.transformCoded(budget: budget)), counts: nil)
        let singleError = try Self.weightedError(single, rows: rows, weights: weights, dimension: d)
        print("[retrieval] budget \(budget), sample \(min(sampleRows, count)): mix \(mixError) (\(report.summary.shares.map { "\($0.codec) \($0.rows)" })), tc:P% \(singleError)")
        #expect(mixError <= singleError * 1.02, "budget \(budget): mix \(mixError) > tc:P% \(singleError)")
        #expect(try store.verify().problems.isEmpty)
        withExtendedLifetime((directory, singleDirectory)) {}
    }

    @Test func aBudgetBelowTheSmallestCodecIsAClearErrorAndWritesNothing() throws {
        let d = 32, count = 2000
        let rows = embeddingRows(count: count, dimension: d)
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        #expect {
            try rows.withUnsafeBufferPointer {
                _ = try store.load(table: "t", rows: $0, count: count, dimension: d, policy: .budget(.fraction(0.03), weighting: .retrieval))
            }
        } throws: { "\($0)".contains("too small") && "\($0)".contains("smallest") }
        #expect(try store.tableNames().isEmpty, "a failed first load leaves no table")
    }

    @Test func tiersGiveRowsTheirCodecByAccessRankAndSayWhy() throws {
        let d = 32, count = 5000
        let rows = embeddingRows(count: count, dimension: d, seed: 4)
        let counts = zipfCounts(count, seed: 9)
        let tiers = try CodecPolicy.parseTiers("fp16:2%,int8:18%,int4h:30%,tc:2")
        let (_, store, report) = try Self.load(rows, count: count, dimension: d, policy: .tiers(tiers), counts: counts)
        let table = try store.table("t")
        let census = try store.liveRowCodecs(table)
        let order = (0..<count).sorted { counts[$0] > counts[$1] || (counts[$0] == counts[$1] && $0 < $1) }
        let expected = ["fp16": 100, "int8": 900, "int4h": 1500, "tc:2": 2500]
        for (name, rowsOfTier) in expected {
            let formRows = census.form.filter { census.forms[Int($0)].name == name }.count
            #expect(formRows == rowsOfTier, "\(name): \(formRows) rows")
            #expect(report.summary.shares.first { $0.codec == name }?.rows == rowsOfTier)
        }
        // The hottest row is fp16, the coldest tc; the reason names the load's tiers.
        let hottest = try #require(try store.provenance(table, id: UInt64(order[0])))
        #expect(hottest.codec == "fp16")
        #expect(hottest.reason.contains("fp16:2%,int8:18%,int4h:30%,tc:2"), "\(hottest.reason)")
        let coldest = try #require(try store.provenance(table, id: UInt64(order[count - 1])))
        #expect(coldest.codec == "tc:2")
        #expect(coldest.reason.contains("access ranks 50%–100%"), "\(coldest.reason)")
        let lookups = report.summary.shares.reduce(0.0) { $0 + ($1.lookupShare ?? 0) }
        #expect(abs(lookups - 1) < 1e-9)
        #expect(try store.verify().problems.isEmpty)
        // A row put afterwards is explained as a put.
        try store.put(table, id: UInt64(order[0]), vector: Array(rows[0..<d]), codec: .int8)
        #expect(try store.provenance(table, id: UInt64(order[0]))?.reason.contains("put") == true)
        #expect(try store.provenance(table, id: 1 << 40) == nil)
    }

    /// A budget's tc rates are fitted (tc:4.970437…): the load's report, the forms stats and eval
    /// count, and `get --why` spell each one the same way, to three decimals, so a tc row's
    /// reason finds its share of the load.
    @Test func budgetRatesAreNamedAlikeInTheReportTheFormsAndTheReasons() throws {
        let d = 32, count = 6000
        let rows = embeddingRows(count: count, dimension: d, seed: 6)
        let counts = zipfCounts(count, seed: 3)
        let (_, store, report) = try Self.load(rows, count: count, dimension: d, policy: .budget(.fraction(0.2), weighting: .retrieval), counts: counts)
        let table = try store.table("t")
        let census = try store.liveRowCodecs(table)
        let tcShares = report.summary.shares.filter { $0.codec.hasPrefix("tc:") }
        try #require(!tcShares.isEmpty, "no tc rows at 20%: \(report.summary.shares.map(\.codec))")
        for share in report.summary.shares {
            let formRows = census.form.filter { census.forms[Int($0)].name == share.codec }.count
            #expect(formRows == share.rows, "\(share.codec): the summary has \(share.rows) rows, the census \(formRows)")
            if share.codec.hasPrefix("tc:") {
                let decimals = share.codec.split(separator: ".").dropFirst().first?.count ?? 0
                #expect(decimals <= 3, "\(share.codec)")
            }
        }
        let storage = try store.storageStatistics(table)
        #expect(Set(storage.forms.map(\.form)) == Set(report.summary.shares.map(\.codec)))
        #expect(census.ids == (0..<UInt64(count)).map { $0 })
        let tcRow = try #require(census.form.firstIndex { census.forms[Int($0)].name.hasPrefix("tc:") })
        let provenance = try #require(try store.provenance(table, id: census.ids[tcRow]))
        #expect(provenance.reason.contains("\(provenance.codec) rows took access ranks"), "\(provenance.reason)")
    }

    @Test func countsAreCheckedBeforeAnythingIsWritten() throws {
        let d = 8, count = 100
        let rows = embeddingRows(count: count, dimension: d)
        let dir = TemporaryDirectory()
        let store = try makeStore(dir)
        var counts = [Double](repeating: 1, count: count)
        counts[7] = -1
        for (bad, expected) in [(counts, "row 7"), ([Double](repeating: 1, count: 99), "99 access counts"),
                                ([Double](repeating: .nan, count: count), "row 0")] {
            #expect {
                try rows.withUnsafeBufferPointer {
                    _ = try store.load(table: "t", rows: $0, count: count, dimension: d, policy: .budget(.fraction(0.5), weighting: .traffic), counts: bad)
                }
            } throws: { "\($0)".contains(expected) }
        }
        #expect {
            try rows.withUnsafeBufferPointer {
                _ = try store.load(table: "t", rows: $0, count: count, dimension: d, policy: .tiers([.init(codec: .int8, fraction: nil)]))
            }
        } throws: { "\($0)".contains("--freq") }
        for (policy, expected) in [(CodecPolicy.tiers([]), "at least one"),
                                   (.tiers([.init(codec: .int8, fraction: nil), .init(codec: .int4h, fraction: 0.5)]), "only the last"),
                                   (.budget(.fraction(0), weighting: .traffic), "(0, 1]"), (.budget(.bytes(-5), weighting: .traffic), "positive")] {
            #expect {
                try rows.withUnsafeBufferPointer {
                    _ = try store.load(table: "t", rows: $0, count: count, dimension: d, policy: policy, counts: [Double](repeating: 1, count: count))
                }
            } throws: { "\($0)".contains(expected) }
        }
        #expect(try store.tableNames().isEmpty)
    }

    /// A load reports its stages as it goes, ending each with every row done.
    @Test func loadsReportProgressByStage() throws {
        let d = 16, count = 40_000
        let rows = embeddingRows(count: count, dimension: d, seed: 8)
        let dir = TemporaryDirectory()
        let store = try makeStore(dir, mapSize: 1 << 26)
        let seen = Mutex<[WorkProgress]>([])
        var options = LoadOptions()
        options.progress = { progress in seen.withLock { $0.append(progress) } }
        _ = try rows.withUnsafeBufferPointer {
            try store.load(table: "t", rows: $0, count: count, dimension: d, policy: .budget(.fraction(0.3), weighting: .traffic),
                           counts: zipfCounts(count), options: options)
        }
        let reports = seen.withLock { $0 }
        for stage in ["checking", "scoring", "writing"] {
            let stageReports = reports.filter { $0.stage == stage }
            #expect(!stageReports.isEmpty, "no \(stage) progress")
            #expect(stageReports.allSatisfy { $0.total == count && $0.done <= count && $0.unit == "rows" })
            #expect(stageReports.map(\.done).max() == count || stage == "scoring", "\(stage) ends at every row")
        }
        let writing = reports.filter { $0.stage == "writing" }.map(\.done)
        #expect(writing == writing.sorted(), "writing progress only grows")
    }
}
