import EmbeddingCodecs
import Foundation

// The budget policy: each row's codec, and for tc its rate, chosen to minimise Σ wᵢ·‖xᵢ − x̂ᵢ‖²
// subject to the bytes the load takes on disk.
//
// Rows are scored under the candidates: the self-contained codecs (fp32, fp16, int8, int4h,
// int2h) exactly, by encoding and decoding them; tc at a ladder of rates on one shared basis by
// estimate (one projection and the measured residual; see `TransformCodedLadder.Estimator`).
// Once a price λ is put on a byte the problem separates by row: each row takes the candidate
// minimising wᵢ·eᵢ(c) + λ·bᵢ(c), which is a point of the lower convex hull of its candidates in
// (bytes, weighted error). So every row starts at its cheapest hull point and hull steps are taken
// in order of error saved per byte while they fit: the Lagrangian choice at every price (Everett),
// filled to within one step. The bytes counted are those of the row's record, its share of the
// index (the store's measured overhead per row), the pages of the parameter records it needs (the
// tc basis and the model of each rate some row uses), and a fixed allowance for the pages every
// store has.
//
// A large table is not scored under all 29 candidates: a sample is (its heaviest rows, and a
// stride of the others standing for the rest), which settles which rates pay for their model's
// pages (for `retrieval` the one rate), the decode cap and the candidates rows use; the whole
// table is then scored under those only and chosen again.
//
// Decode cost can be capped: rows, coldest first, may take tc while the lookups they serve times
// tc's extra decode time fit the cap; the others choose among the fixed-size codecs.
//
// Finally the mix is compared with every single candidate that fits the same budget: if one of
// them has a lower weighted error, every row gets that one. So the policy is never worse than
// the best single codec, on the errors it measured.

/// One choice a budget or tier policy can give a row.
struct PolicyCandidate {
    /// The codec, for errors, the format version and the report (`tc:1.5` for a ladder rate).
    let codec: Codec
    let label: String
    /// Record bytes when every record of it has one size; nil for tc (per row).
    let fixedBytes: Int?
}

/// What a policy decided: the candidates, each row's, and what it expects.
struct PolicyDecision {
    var candidates: [PolicyCandidate]
    /// Per row (input order), its index in `candidates`.
    var choice: [UInt8]
    /// The tc ladder the choice uses, and which of its rates (indexes in `candidates`).
    var ladder: TransformCodedLadder?
    var ladderCandidates: [Int] = []
    /// Report figures.
    var summary: PolicySummary
}

/// How a policy spent the bytes, recorded with the load (FORMAT.md, "Load notes") and shown by
/// `get`, `stats` and the ingest report.
public struct PolicySummary: Sendable, Codable, Equatable {
    public struct Share: Sendable, Codable, Equatable {
        /// Codec form (`int8`, `tc:1.5`).
        public var codec: String
        public var rows: Int
        /// Record bytes (tag + payload).
        public var bytes: Int
        /// Share of the access counts the rows of this form hold (nil without counts).
        public var lookupShare: Double?
        /// Access ranks (0 = hottest) its rows span, as fractions of the rows; nil without counts.
        public var rankRange: [Double]?
    }
    /// The policy as `--codec`, `--tiers` or `--budget` spelled it.
    public var policy: String
    public var weighting: String?
    /// Bytes the budget allowed, and the load's estimated bytes on disk.
    public var budgetBytes: Double?
    public var estimatedBytes: Double?
    /// Σ wᵢ·‖xᵢ − x̂ᵢ‖² of the mix (estimated for tc rows) and of the best single candidate that
    /// fits the budget.
    public var weightedError: Double?
    public var bestSingle: String?
    public var bestSingleWeightedError: Double?
    /// The byte price of the choice: a row takes a finer codec when its weighted error falls by
    /// more than λ per byte.
    public var lambda: Double?
    /// Expected decode time of a lookup (rows weighted by their counts, or alike without them),
    /// from `DecodeCost`'s model; and the cap the choice was held to, if any.
    public var expectedDecodeNanoseconds: Double?
    public var decodeCapNanoseconds: Double?
    public var shares: [Share]
}

/// Decode time per row of a codec at a width, in nanoseconds: a model fitted to `embstore bench
/// --decode-only` on this project's 2-core machine (int8 6.1 ns at d = 64 and 26 ns at 384; tc
/// 340–830 ns at 64, more at higher rates, and 3.4–4.9 µs at 384), used to weigh decode cost,
/// not to predict it. In a lookup a tc row also costs a sized segment's index walk.
public enum DecodeCost {
    public static func nanoseconds(_ codec: Codec, dimension d: Int) -> Double {
        let width = Double(d)
        if codec.tag == Codec.transformCoded(bitsPerValue: 2).tag { return 0.02 * width * width + 8 * width }
        return 0.07 * width + 1.5
    }
}

/// Inputs shared by the policies.
struct PolicyInput: Sendable {
    let source: any RowSource
    /// An even stride of the rows, what codecs fit their parameters on (`sampleCount` rows).
    let sample: [Float]
    let sampleCount: Int
    var count: Int { source.count }
    var dimension: Int { source.dimension }
    /// Access counts in input order, or nil (rows count equally).
    let counts: [Double]?
    let fit: FitOptions
    /// Bytes on disk per row beyond its record.
    let overheadBytesPerRow: Double
    /// The table size the parameters are fitted for (`LoadOptions.fitTableRows`, else `count`).
    let fitTableRows: Int
    /// Whether `sample` is every row of the load in order (`FitOptions.fitRowsAreLoadRows`).
    let sampleIsLoad: Bool
    let progress: (@Sendable (WorkProgress) -> Void)?

    /// Fits `codec`'s parameters on the sample.
    func planLoad(_ codec: Codec) throws -> LoadPlan {
        var options = fit
        options.tableRows = fitTableRows
        options.fitRowsAreLoadRows = sampleIsLoad
        return try sample.withUnsafeBufferPointer {
            try codec.rowCodec.planLoad(codec, rows: $0, count: sampleCount, dimension: dimension, options: options)
        }
    }

    /// Row indexes hottest first (ties in input order).
    func accessOrder() -> [Int] {
        guard let counts else { return Array(0..<count) }
        return (0..<count).sorted { counts[$0] > counts[$1] || (counts[$0] == counts[$1] && $0 < $1) }
    }
}

enum BudgetPolicy {
    /// Self-contained codecs the budget may give a row, finest first.
    static let plainLadder: [Codec] = [.fp32, .fp16, .int8, .int4h, .int2h]
    /// tc rates: a geometric ladder of models between these bits a value. 24 rates, 16% apart
    /// (12 left 37% between neighbours; on npm at 6.25% 24 measured +0.001 hot and +0.002
    /// uniform recall, 5,000 queries a set), and the rate that spends the budget on every row
    /// (`TransformCodedLadder(budget:)`); a rate's model is stored only when rows use it.
    static let tcLowestBits = 0.25, tcHighestBits = 8.0, tcModels = 24
    static let page = 4096.0
    /// A candidate the sample's choice gives less than this share of the rows and of their
    /// weight is not scored on the whole table (its rows take their next best candidate).
    static let rareShare = 0.002

    /// Pages every store has beside a table's values (meta, free list, database leaves, the
    /// pages a load leaves free): `TransformCodedRowCodec.storePages`, which `tc:P%` counts too.
    static func fixedAllowance(budget: Double) -> Double { TransformCodedRowCodec.storePages * page }
    /// Pages of a parameter record on its own LMDB overflow pages (a 16-byte page header).
    static func pages(_ bytes: Double) -> Double { ((bytes + 16) / page).rounded(.up) * page }

    /// What a budget load chooses among, and what the table's rows share.
    struct Setting {
        let candidates: [PolicyCandidate]
        let firstTC: Int
        let ladder: TransformCodedLadder
        let budgetBytes: Double
        /// Store pages and the index share of every row of the table.
        let fixed: Double
        /// Pages of each rate's model, and of the basis as the finest rate some row uses keeps it.
        let modelBytes: [Double], basisBytes: [Double]
        var count: Int { candidates.count }

        /// Pages of the models and the basis the candidates `used` need.
        func sharedBytes(_ used: [Bool]) -> Double {
            var total = 0.0, basis = 0.0
            for r in 0..<ladder.rates.count where used[firstTC + r] {
                total += modelBytes[r]
                basis = max(basis, basisBytes[r])
            }
            return total + basis
        }
    }

    /// Rows to choose for: their scores, error weights and shares of the table's lookups, and
    /// for a sample how many rows of the table each stands for (nil: one, the whole table).
    struct Rows {
        let scores: PolicyScores
        let weights: [Double]
        let traffic: [Double]
        let multiplicity: [Double]?
        var count: Int { scores.count }
        @inline(__always) func stands(_ i: Int) -> Double { multiplicity?[i] ?? 1 }
    }

    /// A choice for some rows.
    struct Solution {
        /// Per row, its candidate.
        var choice: [UInt8]
        var recordBytes: Double
        var weightedError: Double
        /// Error saved per byte by the last step taken.
        var lambda: Double
    }
    struct Infeasible: Error {}

    /// A single candidate for every row of the table: its weighted error and bytes on disk.
    struct Single {
        let candidate: Int
        let error: Double
        let bytes: Double
    }

    static func decide(_ input: PolicyInput, budget: CodecPolicy.Budget, weighting: CodecPolicy.Weighting,
                       maxDecodeNanoseconds: Double? = nil) throws -> PolicyDecision {
        let n = input.count, d = input.dimension
        let budgetBytes = budget.bytes(rows: n, dimension: d)
        let weights: [Double] = input.counts.map { $0.map { weighting.weight($0) } } ?? [Double](repeating: 1, count: n)
        let traffic = input.counts.map { counts -> [Double] in
            let total = counts.reduce(0, +)
            return total > 0 ? counts.map { $0 / total } : [Double](repeating: 1 / Double(n), count: n)
        } ?? [Double](repeating: 1 / Double(n), count: n)

        // Candidates: the plain ladder, then the tc rates.
        let plainEncoders = try plainLadder.map { try input.planLoad($0).makeEncoder([], nil, []) }
        var candidates = zip(plainLadder, plainEncoders).map { PolicyCandidate(codec: $0, label: $0.description, fixedBytes: $1.maximumRecordSize) }
        var ladderOptions = input.fit
        ladderOptions.tableRows = input.fitTableRows
        let ladder = try input.sample.withUnsafeBufferPointer { sample in
            try TransformCodedLadder(rows: sample, count: input.sampleCount, dimension: d, lowestBits: tcLowestBits, highestBits: tcHighestBits,
                                     models: tcModels, budget: budgetBytes / (Double(n) * Double(d) * 4), options: ladderOptions)
        }
        let firstTC = candidates.count
        for rate in ladder.rates {
            let bits = (rate * 1000).rounded() / 1000
            // Labelled as the rows' form will be named (stats, eval, get --why), from the model's float32 rate.
            candidates.append(PolicyCandidate(codec: .transformCoded(bitsPerValue: bits), label: TransformCodedRowCodec.formName(bits: Float(rate)),
                                              fixedBytes: nil))
        }
        // The basis keeps the rows the finest rate some row uses needs (`keeping(rates:)`).
        let basisRowBytes = Double(ladder.basis.record.count - 20 - 4 * d) / Double(ladder.basis.rank)
        let setting = Setting(candidates: candidates, firstTC: firstTC, ladder: ladder, budgetBytes: budgetBytes,
                              fixed: fixedAllowance(budget: budgetBytes) + Double(n) * input.overheadBytesPerRow,
                              modelBytes: try ladder.modelRecordBytes().map { pages(Double($0)) },
                              basisBytes: ladder.ranks.map { pages(Double(20 + 4 * d) + Double($0) * basisRowBytes) })
        let c = setting.count
        let fast = DecodeCost.nanoseconds(.int8, dimension: d), slow = DecodeCost.nanoseconds(.transformCoded(bitsPerValue: 2), dimension: d)
        let decode = DecodeRule(fast: fast, slow: slow, cap: maxDecodeNanoseconds,
                                defaultCap: input.counts != nil ? 2 * fast : nil)

        // Every candidate scored on a sample of the rows (all of them when there are few), and
        // the choice made for it.
        let limit = max(2, input.fit.policySampleRows)
        let sampled = n > limit
        let (sampleRows, multiplicity) = sampled ? policySample(weights: weights, heavy: input.counts == nil ? 0 : limit / 2, limit: limit) : ([], [])
        let sampleSource: any RowSource = sampled ? SubsetRows(input.source, rows: sampleRows) : input.source
        let sample = Rows(scores: try scoreRows(input, source: sampleSource, setting: setting, columns: Array(0..<c),
                                                stage: sampled ? "scoring a sample" : "scoring"),
                          weights: sampled ? sampleRows.map { weights[$0] } : weights,
                          traffic: sampled ? sampleRows.map { traffic[$0] } : traffic,
                          multiplicity: sampled ? multiplicity : nil)
        let plan = try choose(sample, setting: setting, weighting: weighting, decode: decode, startCap: decode.cap ?? decode.defaultCap)

        var rows = sample
        var solution = plan.solution
        var bestSingle = plan.bestSingle
        var decodeCap = plan.decodeCap
        if sampled {
            // The whole table under the candidates the sample's choice uses (each for at least
            // `rareShare` of the rows or of their weight), with the rates it settled on; the
            // decode cap is checked again from where the sample left it.
            var rowsOf = [Double](repeating: 0, count: c), weightOf = [Double](repeating: 0, count: c)
            for (i, k) in plan.solution.choice.enumerated() {
                rowsOf[Int(k)] += sample.stands(i)
                weightOf[Int(k)] += sample.stands(i) * sample.weights[i]
            }
            let totalWeight = weightOf.reduce(0, +)
            var keep = (0..<c).filter { plan.allowed[$0] && (rowsOf[$0] >= rareShare * Double(n) || weightOf[$0] >= rareShare * totalWeight) }
            if keep.isEmpty { keep = [Int(plan.solution.choice[0])] }
            func chooseAll(_ columns: [Int]) throws -> (Rows, Plan) {
                let all = Rows(scores: try scoreRows(input, source: input.source, setting: setting, columns: columns, stage: "scoring"),
                               weights: weights, traffic: traffic, multiplicity: nil)
                var allowed = [Bool](repeating: false, count: c)
                for k in columns { allowed[k] = true }
                return (all, try choose(all, setting: setting, weighting: weighting, decode: decode, allowed: allowed,
                                        startCap: plan.decodeCap, oneRateHint: plan.oneRateError))
            }
            // Should the sample mislead, every candidate it allowed.
            let (all, full) = try (try? chooseAll(keep)) ?? chooseAll((0..<c).filter { plan.allowed[$0] })
            rows = all
            solution = full.solution
            decodeCap = full.decodeCap
            // The single candidates, exactly where scored on every row; one the sample says beats
            // the mix is scored on every row before it is taken.
            bestSingle = best(full.singles + plan.singles.filter { single in !full.singles.contains { $0.candidate == single.candidate } },
                              setting: setting)
            if let single = bestSingle, single.error < solution.weightedError, all.scores.columnOf[single.candidate] < 0 {
                rows = Rows(scores: try scoreRows(input, source: input.source, setting: setting, columns: all.scores.columns + [single.candidate],
                                                  stage: "scoring"),
                            weights: weights, traffic: traffic, multiplicity: nil)
                bestSingle = best(singles(rows, setting: setting), setting: setting)
            }
        }
        // The mix is never worse than the best single candidate that fits.
        var summaryBytes = solution.recordBytes + setting.sharedBytes(usedCandidates(solution.choice, count: c)) + setting.fixed
        if let single = bestSingle, single.error < solution.weightedError {
            solution.choice = [UInt8](repeating: UInt8(single.candidate), count: rows.count)
            solution.weightedError = single.error
            summaryBytes = single.bytes
        }
        let choice = solution.choice
        let bytes = { (i: Int, k: Int) in Double(rows.scores.bytes(i, column: rows.scores.columnOf[k])) }
        var decision = PolicyDecision(candidates: candidates, choice: choice, ladder: nil, summary: PolicySummary(
            policy: CodecPolicy.budget(budget, weighting: weighting).description, weighting: weighting.rawValue,
            budgetBytes: budgetBytes, estimatedBytes: summaryBytes, weightedError: solution.weightedError,
            bestSingle: bestSingle.map { candidates[$0.candidate].label }, bestSingleWeightedError: bestSingle?.error,
            lambda: solution.lambda, shares: []))
        if choice.contains(where: { Int($0) >= firstTC }) {
            decision.ladder = ladder.keeping(rates: Set(choice.filter { Int($0) >= firstTC }.map { Int($0) - firstTC }).sorted())
            decision.ladderCandidates = Array(firstTC..<c)
        }
        decision.summary.shares = shares(decision, input: input, bytes: bytes)
        decision.summary.expectedDecodeNanoseconds = zip(choice, traffic).reduce(0.0) {
            $0 + $1.1 * DecodeCost.nanoseconds(candidates[Int($1.0)].codec, dimension: d)
        }
        decision.summary.decodeCapNanoseconds = decodeCap
        return decision
    }

    /// The choice for scored rows, as `decide` describes, and what it settled on.
    struct Plan {
        var solution: Solution
        /// The candidates allowed: rates that pay for their model (one, for retrieval weighting).
        var allowed: [Bool]
        var decodeCap: Double?
        /// Every single candidate that can store every row, and the best that fits.
        var singles: [Single]
        var bestSingle: Single?
        /// What one tc rate for every row would give the table (interpolated).
        var oneRateError: Double
    }

    /// How decode cost bounds the choice: a tc row decodes about fifty to two hundred times
    /// slower than an int8 row, so under a cap the rows that serve most lookups keep fast codecs.
    /// Rows, coldest first, may take tc while the lookups they serve, times tc's extra decode time,
    /// stay within the cap's margin over the fast codecs: then the mix decodes a lookup in at most
    /// the cap on average. With counts the default cap is twice int8's decode time; it is doubled
    /// while it would make the mix worse than one tc rate for every row (and dropped once it
    /// reaches tc's decode time), so quality comes first where the budget leaves hot rows no fast
    /// codec. A cap that is given is an error when the budget cannot meet it.
    struct DecodeRule {
        let fast: Double, slow: Double
        let cap: Double?
        let defaultCap: Double?

        /// Which of `rows` may take tc under `cap`: the coldest, whose shares of the lookups (a
        /// sample's rows each counted as the rows it stands for) add up to at most the cap's
        /// margin over the fast codecs; of rows with equal shares, the first in order.
        func slowRows(_ rows: Rows, cap: Double) -> [Bool] {
            let extra = max(0, cap - fast) / (slow - fast)
            let coldestFirst: [Int]
            if rows.multiplicity == nil {
                // Without a sample: sort the shares, not the rows (ties keep row order below).
                let sorted = rows.traffic.sorted()
                var served = 0.0, taken = 0
                while taken < sorted.count && served + sorted[taken] <= extra {
                    served += sorted[taken]
                    taken += 1
                }
                guard taken > 0 else { return [Bool](repeating: false, count: rows.count) }
                let threshold = sorted[taken - 1]
                var atThreshold = taken - (sorted[..<taken].firstIndex(of: threshold) ?? 0)
                return rows.traffic.map { share in
                    if share < threshold { return true }
                    if share == threshold && atThreshold > 0 { atThreshold -= 1; return true }
                    return false
                }
            }
            coldestFirst = (0..<rows.count).sorted { rows.traffic[$0] < rows.traffic[$1] || (rows.traffic[$0] == rows.traffic[$1] && $0 < $1) }
            var allowed = [Bool](repeating: false, count: rows.count)
            var served = 0.0
            for i in coldestFirst {
                served += rows.stands(i) * rows.traffic[i]
                guard served <= extra else { break }
                allowed[i] = true
            }
            return allowed
        }
    }

    /// The choice for `rows`, every candidate scored: which rates pay for their model's pages
    /// (for `retrieval`, the one rate whose mix is best), under the decode cap.
    /// Given `allowed`, the rates are settled already; the decode cap starts at `startCap` (nil:
    /// none), and `oneRateHint` is a known one-rate error for the table (the sample's).
    static func choose(_ rows: Rows, setting: Setting, weighting: CodecPolicy.Weighting, decode: DecodeRule,
                       allowed given: [Bool]? = nil, startCap: Double?, oneRateHint: Double = .infinity) throws -> Plan {
        let c = setting.count, firstTC = setting.firstTC
        func recordBudget(_ allowed: [Bool]) -> Double {
            setting.budgetBytes - setting.fixed - setting.sharedBytes(allowed)
        }
        // Which tc rates pay for their model's pages: solve with every rate allowed, drop the
        // rates whose model costs more than a tenth of the record bytes of the rows choosing
        // them, solve again.
        var allowed = given ?? [Bool](repeating: true, count: c)
        for _ in 0..<(given == nil ? 4 : 0) {
            guard let trial = try? solve(rows, setting: setting, allowed: allowed, recordBudget: recordBudget(allowed)) else { break }
            var recordBytes = [Double](repeating: 0, count: c)
            for (i, k) in trial.choice.enumerated() where Int(k) >= firstTC {
                recordBytes[Int(k)] += rows.stands(i) * Double(rows.scores.bytes(i, column: rows.scores.columnOf[Int(k)]))
            }
            var dropped = false
            for r in 0..<setting.ladder.rates.count where allowed[firstTC + r] && setting.modelBytes[r] > 0.1 * recordBytes[firstTC + r] {
                allowed[firstTC + r] = false
                dropped = true
            }
            if !dropped { break }
        }
        if !(firstTC..<c).contains(where: { allowed[$0] }) {
            // No rate pays on its own: keep the one the smallest rows need.
            allowed[firstTC] = true
        }
        var solution: Solution
        do {
            solution = try solve(rows, setting: setting, allowed: allowed, recordBudget: recordBudget(allowed))
        } catch {
            // The models of every allowed rate do not fit beside the rows: keep the lowest.
            for k in firstTC + 1..<c { allowed[k] = false }
            allowed[firstTC] = true
            guard let lowest = try? solve(rows, setting: setting, allowed: allowed, recordBudget: recordBudget(allowed)) else {
                throw tooSmall(rows, setting: setting, allowed: allowed)
            }
            solution = lowest
        }
        // Every single candidate's totals, and what one tc rate fitted to this budget would give
        // (`tc:P%`: interpolated between the ladder's rates around it, log error linear in bytes):
        // the mix must not be worse than the best of them.
        let allSingles = singles(rows, setting: setting)
        let bestSingle = best(allSingles, setting: setting)
        var oneRateError = min(bestSingle?.error ?? .infinity, oneRateHint)
        let rates = allSingles.filter { $0.candidate >= firstTC }
        for (low, high) in zip(rates, rates.dropFirst()) where low.bytes <= setting.budgetBytes && setting.budgetBytes < high.bytes && low.error > 0 && high.error > 0 {
            let t = (setting.budgetBytes - low.bytes) / (high.bytes - low.bytes)
            oneRateError = min(oneRateError, exp(log(low.error) + t * (log(high.error) - log(low.error))))
        }

        // Retrieval: the fixed-size codecs and ONE tc rate, the rate whose mix has the lowest
        // weighted error. Rows of different tc rates rank unevenly against each other in a
        // cosine search: on npm at 6.25% a mix of rates had 6% less weighted squared error than
        // one rate but recall@10 0.905 hot / 0.867 uniform against 0.903 / 0.890 (at 12.5%,
        // 0.979 / 0.968 against 0.976 / 0.971). Rates are tried from the finest every row can
        // take within the budget, coarser and finer, each way until two in a row are no better.
        let rateCandidates = (firstTC..<c).filter { allowed[$0] }
        if weighting == .retrieval && rateCandidates.count > 1 {
            func only(_ k: Int) -> [Bool] {
                var only = allowed
                for r in firstTC..<c where r != k { only[r] = false }
                return only
            }
            var start = 0
            for (position, k) in rateCandidates.enumerated() where allSingles.contains(where: { $0.candidate == k && $0.bytes <= setting.budgetBytes }) {
                start = position
            }
            var best: (k: Int, solution: Solution)?
            for direction in [-1, 1] {
                var position = direction < 0 ? start : start + 1
                var worse = 0
                while position >= 0 && position < rateCandidates.count && worse < 2 {
                    let k = rateCandidates[position]
                    if let trial = try? solve(rows, setting: setting, allowed: only(k), recordBudget: recordBudget(only(k))),
                       trial.weightedError < (best?.solution.weightedError ?? .infinity) {
                        best = (k, trial)
                        worse = 0
                    } else {
                        worse += 1
                    }
                    position += direction
                }
            }
            if let best {
                solution = best.solution
                allowed = only(best.k)
            }
        }

        // The decode cap (see `DecodeRule`).
        var decodeCap = startCap
        if var cap = decodeCap {
            while true {
                // The default cap holds only while the mix stays at or below one codec's error.
                if let restricted = try? solve(rows, setting: setting, allowed: allowed, recordBudget: recordBudget(allowed),
                                               slowAllowed: decode.slowRows(rows, cap: cap)),
                   decode.cap != nil || restricted.weightedError <= max(oneRateError, solution.weightedError) {
                    solution = restricted
                    decodeCap = cap
                    break
                }
                if decode.cap == nil && cap >= decode.slow {
                    decodeCap = nil   // the mix without a cap
                    break
                }
                guard decode.cap == nil else {
                    throw StoreError.invalidArgument(String(format: "no mix within the budget decodes a lookup in %.4g ns on average: the fast codecs the hot rows would need do not fit. Allow more (--max-decode-ns) or give a larger budget", cap))
                }
                cap *= 2
            }
        }
        return Plan(solution: solution, allowed: allowed, decodeCap: decodeCap, singles: allSingles, bestSingle: bestSingle,
                    oneRateError: oneRateError)
    }

    /// The rows a budget scores every candidate on (ascending) and how many rows of the table
    /// each stands for: the `heavy` rows of largest weight, each for itself, and an even stride
    /// of the others, each for its share of them. A stride alone would let a few heavy rows (with
    /// access counts, the hot ids) sway the sample's weighted totals by the stride.
    static func policySample(weights: [Double], heavy: Int, limit: Int) -> (rows: [Int], multiplicity: [Double]) {
        let n = weights.count
        var isHeavy = [Bool](repeating: false, count: n)
        var heavyCount = 0
        if heavy > 0 {
            let threshold = weights.sorted()[n - min(heavy, n)]
            for i in 0..<n where weights[i] > threshold {
                isHeavy[i] = true
                heavyCount += 1
            }
            for i in 0..<n where heavyCount < heavy && weights[i] == threshold {
                isHeavy[i] = true
                heavyCount += 1
            }
        }
        let rest = n - heavyCount, light = min(rest, max(1, limit - heavyCount))
        let stands = Double(rest) / Double(light)
        var rows: [Int] = [], multiplicity: [Double] = []
        rows.reserveCapacity(heavyCount + light)
        multiplicity.reserveCapacity(heavyCount + light)
        var lightSeen = 0, lightTaken = 0
        for i in 0..<n {
            if isHeavy[i] {
                rows.append(i)
                multiplicity.append(1)
                continue
            }
            if lightTaken < light && lightSeen == Int(Double(lightTaken) * Double(rest) / Double(light)) {
                rows.append(i)
                multiplicity.append(stands)
                lightTaken += 1
            }
            lightSeen += 1
        }
        return (rows, multiplicity)
    }

    /// The error saying what the smallest candidates take, estimated from `rows`.
    static func tooSmall(_ rows: Rows, setting: Setting, allowed: [Bool]) -> StoreError {
        let n = (0..<rows.count).reduce(0.0) { $0 + rows.stands($1) }, d = Double(setting.ladder.basis.dimension)
        var smallest = 0.0
        for i in 0..<rows.count {
            var least = Float.infinity
            for (column, k) in rows.scores.columns.enumerated() where allowed[k] && rows.scores.error(i, column: column).isFinite {
                least = min(least, rows.scores.bytes(i, column: column))
            }
            if least.isFinite { smallest += rows.stands(i) * Double(least) }
        }
        let total = smallest + setting.fixed + setting.sharedBytes(allowed)
        return StoreError.invalidArgument(String(format: "a budget of %.0f bytes (%.4g%% of the float32 payload) is too small for %.0f rows of dimension %.0f: the smallest codecs take about %.0f bytes on disk (%.4g%%)",
                                                 setting.budgetBytes, 100 * setting.budgetBytes / (n * d * 4), n, d, total, 100 * total / (n * d * 4)))
    }

    /// Each scored candidate's weighted error and bytes on disk as the only codec of the table
    /// (a sample's rows each counted as the rows it stands for), where it can store every row.
    static func singles(_ rows: Rows, setting: Setting) -> [Single] {
        var result: [Single] = []
        for (column, k) in rows.scores.columns.enumerated() {
            var e = 0.0, b = 0.0
            var feasible = true
            for i in 0..<rows.count {
                let error = Double(rows.scores.error(i, column: column))
                guard error.isFinite else { feasible = false; break }
                e += rows.stands(i) * rows.weights[i] * error
                b += rows.stands(i) * Double(rows.scores.bytes(i, column: column))
            }
            guard feasible else { continue }
            var used = [Bool](repeating: false, count: setting.count)
            used[k] = true
            result.append(Single(candidate: k, error: e, bytes: b + setting.sharedBytes(used) + setting.fixed))
        }
        return result.sorted { $0.candidate < $1.candidate }
    }

    /// The single candidate with the lowest error among those that fit the budget.
    static func best(_ singles: [Single], setting: Setting) -> Single? {
        singles.filter { $0.bytes <= setting.budgetBytes }.min { $0.error < $1.error }
    }

    static func usedCandidates(_ choice: [UInt8], count: Int) -> [Bool] {
        var used = [Bool](repeating: false, count: count)
        for k in choice { used[Int(k)] = true }
        return used
    }

    static func normalised(_ shares: [Double]) -> [Double] {
        let total = shares.reduce(0, +)
        return total > 0 ? shares.map { $0 / total } : [Double](repeating: 1 / Double(max(1, shares.count)), count: shares.count)
    }

    /// The best choice for `rows` within `recordBudget` record bytes: each row's candidates
    /// reduced to their lower convex hull in (bytes, weighted error); every row starts at its
    /// cheapest point, then hull steps are taken in order of error saved per byte, largest
    /// first, while they fit (a row's later steps wait for its earlier ones). This is the
    /// Lagrangian choice at every price, and fills the budget to within one step. Rows with
    /// `slowAllowed` false choose among the fixed-size candidates.
    static func solve(_ rows: Rows, setting: Setting, allowed: [Bool], recordBudget: Double, slowAllowed: [Bool]? = nil) throws -> Solution {
        let m = rows.count, scores = rows.scores
        let columns = scores.columns.count
        // Hull points per row, cheapest first: candidate, bytes, weighted error.
        var hullStart = [Int](repeating: 0, count: m + 1)
        var hullCandidate: [UInt8] = [], hullBytes: [Float] = [], hullError: [Float] = []
        hullCandidate.reserveCapacity(m * 3)
        hullBytes.reserveCapacity(m * 3)
        hullError.reserveCapacity(m * 3)
        var total = 0.0
        var stepCount = 0
        withUnsafeTemporaryAllocation(of: (k: Int, b: Float, e: Float).self, capacity: 2 * max(1, columns)) { buffer in
            let points = buffer.baseAddress!, hull = points + columns
            for i in 0..<m {
                let slow = slowAllowed?[i] ?? true
                let stands = rows.stands(i)
                var count = 0
                for column in 0..<columns {
                    let k = scores.columns[column]
                    guard allowed[k] && (slow || k < setting.firstTC) else { continue }
                    let e = scores.error(i, column: column)
                    guard e.isFinite else { continue }
                    // Insertion by (bytes, error).
                    let point = (k: k, b: Float(stands) * scores.bytes(i, column: column), e: Float(stands * rows.weights[i] * Double(e)))
                    var at = count
                    while at > 0 && (points[at - 1].b > point.b || (points[at - 1].b == point.b && points[at - 1].e > point.e)) {
                        points[at] = points[at - 1]
                        at -= 1
                    }
                    points[at] = point
                    count += 1
                }
                // Lower convex hull, error falling as bytes rise.
                var size = 0
                for p in 0..<count {
                    let point = points[p]
                    if size > 0 && point.e >= hull[size - 1].e { continue }
                    while size >= 2 {
                        let a = hull[size - 2], b = hull[size - 1]
                        // b is above the segment a → point: drop it.
                        if Double(b.e - a.e) * Double(point.b - a.b) >= Double(point.e - a.e) * Double(b.b - a.b) { size -= 1 } else { break }
                    }
                    hull[size] = point
                    size += 1
                }
                if size > 0 { total += Double(hull[0].b) } else { total = .infinity }
                for h in 0..<size {
                    hullCandidate.append(UInt8(hull[h].k))
                    hullBytes.append(hull[h].b)
                    hullError.append(hull[h].e)
                }
                stepCount += max(0, size - 1)
                hullStart[i + 1] = hullCandidate.count
            }
        }
        guard total <= recordBudget else { throw Infeasible() }
        // Steps keyed by saving per byte, descending (the complement of a non-negative Float's
        // bits), rows in order within a key: a stable radix sort of the keys.
        var keys = [UInt32](), owners = [UInt32]()
        keys.reserveCapacity(stepCount)
        owners.reserveCapacity(stepCount)
        for i in 0..<m {
            for h in hullStart[i] + 1..<hullStart[i + 1] {
                let saving = max(0, (hullError[h - 1] - hullError[h]) / (hullBytes[h] - hullBytes[h - 1]))
                keys.append(~saving.bitPattern)
                owners.append(UInt32(i))
            }
        }
        radixSort(&keys, &owners)
        var at = Array(hullStart.dropLast())   // each row's current hull point
        var blocked = [Bool](repeating: false, count: m)
        var lambda = 0.0
        for (key, owner) in zip(keys, owners) {
            let i = Int(owner)
            guard !blocked[i] else { continue }
            let h = at[i]
            let extra = Double(hullBytes[h + 1] - hullBytes[h])
            if total + extra <= recordBudget {
                total += extra
                at[i] += 1
                lambda = Double(Float(bitPattern: ~key))
            } else {
                blocked[i] = true
            }
        }
        var choice = [UInt8](repeating: 0, count: m)
        var error = 0.0
        for i in 0..<m {
            choice[i] = hullCandidate[at[i]]
            error += Double(hullError[at[i]])
        }
        return Solution(choice: choice, recordBytes: total, weightedError: error, lambda: lambda)
    }

    /// Sorts `keys` ascending, `values` alongside, stably (two passes of 16 bits).
    static func radixSort(_ keys: inout [UInt32], _ values: inout [UInt32]) {
        let n = keys.count
        guard n > 1 else { return }
        var keysOut = [UInt32](repeating: 0, count: n), valuesOut = [UInt32](repeating: 0, count: n)
        var offsets = [Int](repeating: 0, count: 1 << 16)
        for shift: UInt32 in [0, 16] {
            for k in offsets.indices { offsets[k] = 0 }
            for key in keys { offsets[Int((key >> shift) & 0xFFFF)] += 1 }
            var sum = 0
            for k in offsets.indices {
                let c = offsets[k]
                offsets[k] = sum
                sum += c
            }
            for j in 0..<n {
                let digit = Int((keys[j] >> shift) & 0xFFFF)
                keysOut[offsets[digit]] = keys[j]
                valuesOut[offsets[digit]] = values[j]
                offsets[digit] += 1
            }
            swap(&keys, &keysOut)
            swap(&values, &valuesOut)
        }
    }

    /// Scores the rows of `source` under the candidates `columns`, on all cores: exact squared
    /// errors of the plain codecs (infinite where a codec cannot store the row), tc estimates.
    static func scoreRows(_ input: PolicyInput, source: any RowSource, setting: Setting, columns: [Int], stage: String) throws -> PolicyScores {
        var scores = PolicyScores(count: source.count, columns: columns, setting: setting)
        let n = source.count, d = source.dimension
        let plainColumns = columns.enumerated().filter { $0.element < setting.firstTC }
        let tcColumns = columns.enumerated().filter { $0.element >= setting.firstTC }
        let rates = tcColumns.map { $0.element - setting.firstTC }
        let width = columns.count, tcWidth = rates.count
        let idBytes = TransformCodedRowCodec.modelIDBytes(UInt32(2 + setting.ladder.rates.count))
        let threads = max(1, min(ProcessInfo.processInfo.activeProcessorCount, n / 4096 + 1))
        let failure = LockedError()
        let progress = input.progress
        scores.errors.withUnsafeMutableBufferPointer { errors in
            scores.tcBytes.withUnsafeMutableBufferPointer { tcBytes in
                nonisolated(unsafe) let errorsOut = errors.baseAddress!, tcOut = tcBytes.baseAddress
                DispatchQueue.concurrentPerform(iterations: threads) { t in
                    do {
                        let encoders = try plainColumns.map { try input.planLoad(setting.candidates[$0.element].codec).makeEncoder([], nil, []) }
                        let decoders = plainColumns.map { setting.candidates[$0.element].codec.rowCodec.makeDecoder(dimension: d) }
                        let parameters = InMemoryCodecTable(dimension: d)
                        let estimator = TransformCodedLadder.Estimator(setting.ladder)
                        var record = [UInt8](repeating: 0, count: encoders.map(\.maximumRecordSize).max() ?? 1)
                        var decoded = [Float](repeating: 0, count: d)
                        let rateErrors = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, tcWidth))
                        let rateBytes = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, tcWidth))
                        defer { rateErrors.deallocate(); rateBytes.deallocate() }
                        let start = n * t / threads, end = n * (t + 1) / threads
                        let stretch = max(1, (1 << 20) / d)
                        try record.withUnsafeMutableBytes { record in
                            try decoded.withUnsafeMutableBufferPointer { decoded in
                                for first in stride(from: start, to: end, by: stretch) {
                                    let range = first..<min(end, first + stretch)
                                    try source.withRows(range) { stretchRows in
                                        for i in range {
                                            let row = UnsafeBufferPointer(rebasing: stretchRows[(i - first) * d..<(i - first + 1) * d])
                                            for (e, (column, _)) in plainColumns.enumerated() {
                                                errorsOut[i * width + column] = squaredError(row, encoder: encoders[e], decoder: decoders[e],
                                                                                             parameters: parameters, record: record, decoded: decoded)
                                            }
                                            guard tcWidth > 0 else { continue }
                                            estimator.estimate(row.baseAddress!, rates: rates, idBytes: idBytes, errors: rateErrors.baseAddress!,
                                                               bytes: rateBytes.baseAddress!)
                                            for (slot, (column, _)) in tcColumns.enumerated() {
                                                errorsOut[i * width + column] = rateErrors[slot]
                                                tcOut![i * tcWidth + slot] = UInt16(min(65_535, rateBytes[slot]))
                                            }
                                        }
                                    }
                                    source.release()
                                    // Thread 0 speaks for all: they run at about one speed.
                                    if t == 0 { progress?(WorkProgress(stage: stage, done: min(n, (range.upperBound - start) * threads), total: n, unit: "rows")) }
                                }
                            }
                        }
                    } catch {
                        failure.set(error)
                    }
                }
            }
        }
        if let error = failure.error { throw error }
        return scores
    }

    /// ‖row − decode(encode(row))‖², infinite when the codec cannot store the row.
    @inline(__always)
    static func squaredError(_ row: UnsafeBufferPointer<Float>, encoder: any RowEncoder, decoder: any RowDecoder, parameters: InMemoryCodecTable,
                             record: UnsafeMutableRawBufferPointer, decoded: UnsafeMutableBufferPointer<Float>) -> Float {
        guard (try? encoder.check(row)) != nil, let size = try? encoder.encode(row, index: nil, into: record) else { return .infinity }
        var view = UnsafeRawBufferPointer(rebasing: record[0..<size])
        guard (try? decoder.decode(&view, count: 1, into: decoded.baseAddress!, parameters: parameters)) == 1 else { return .infinity }
        var sum: Float = 0
        for j in 0..<row.count {
            let e = decoded[j] - row[j]
            sum += e * e
        }
        return sum
    }

    /// Rows, bytes and lookup share per candidate the decision uses.
    static func shares(_ decision: PolicyDecision, input: PolicyInput, bytes: (Int, Int) -> Double) -> [PolicySummary.Share] {
        let c = decision.candidates.count
        var rows = [Int](repeating: 0, count: c), recordBytes = [Double](repeating: 0, count: c), lookups = [Double](repeating: 0, count: c)
        for (i, k) in decision.choice.enumerated() {
            rows[Int(k)] += 1
            recordBytes[Int(k)] += bytes(i, Int(k))
            lookups[Int(k)] += input.counts?[i] ?? 0
        }
        let total = input.counts?.reduce(0, +) ?? 0
        var ranks: [(Double, Double)] = Array(repeating: (1, 0), count: c)
        if let counts = input.counts {
            // Access ranks (hottest first, ties in row order) of each form's hottest and coldest
            // rows: the span of its rows, without sorting the table.
            var hottest = [Int](repeating: -1, count: c), coldest = [Int](repeating: -1, count: c)
            for (i, k) in decision.choice.enumerated() {
                let k = Int(k)
                if hottest[k] < 0 || counts[i] > counts[hottest[k]] { hottest[k] = i }
                if coldest[k] < 0 || counts[i] <= counts[coldest[k]] { coldest[k] = i }
            }
            func rank(_ i: Int) -> Int {
                var above = 0
                for j in 0..<counts.count where counts[j] > counts[i] || (counts[j] == counts[i] && j < i) { above += 1 }
                return above
            }
            let n = Double(max(input.count, 1))
            for k in 0..<c where hottest[k] >= 0 {
                ranks[k] = (Double(rank(hottest[k])) / n, Double(rank(coldest[k]) + 1) / n)
            }
        }
        return (0..<c).filter { rows[$0] > 0 }.map { k in
            PolicySummary.Share(codec: decision.candidates[k].label, rows: rows[k], bytes: Int(recordBytes[k].rounded()),
                                lookupShare: input.counts == nil ? nil : (total > 0 ? lookups[k] / total : 0),
                                rankRange: input.counts == nil ? nil : [ranks[k].0, ranks[k].1])
        }
    }
}

/// Squared errors (and for tc rates record bytes) of some rows under some of a budget's
/// candidates: a few bytes a row and candidate scored.
struct PolicyScores {
    let count: Int
    /// The candidates scored, one column each.
    let columns: [Int]
    /// Per candidate, its column, or -1 when not scored.
    let columnOf: [Int]
    /// Per column, a fixed-size codec's record bytes, or -1 for a tc rate (bytes per row).
    private let fixedBytes: [Float]
    /// Per column, its slot among the tc columns, or -1.
    private let tcSlot: [Int]
    private let tcWidth: Int
    /// `count × columns.count`, row-major.
    var errors: [Float]
    /// `count × tc columns`, row-major.
    var tcBytes: [UInt16]

    init(count: Int, columns: [Int], setting: BudgetPolicy.Setting) {
        self.count = count
        self.columns = columns
        var columnOf = [Int](repeating: -1, count: setting.count)
        for (column, k) in columns.enumerated() { columnOf[k] = column }
        self.columnOf = columnOf
        fixedBytes = columns.map { setting.candidates[$0].fixedBytes.map(Float.init) ?? -1 }
        var slot = 0
        tcSlot = columns.map { k in
            guard setting.candidates[k].fixedBytes == nil else { return -1 }
            slot += 1
            return slot - 1
        }
        tcWidth = slot
        errors = [Float](repeating: 0, count: count * columns.count)
        tcBytes = [UInt16](repeating: 0, count: count * slot)
    }

    @inline(__always) func error(_ i: Int, column: Int) -> Float { errors[i * columns.count + column] }

    @inline(__always) func bytes(_ i: Int, column: Int) -> Float {
        let fixed = fixedBytes[column]
        return fixed >= 0 ? fixed : Float(tcBytes[i * tcWidth + tcSlot[column]])
    }
}

/// The first error thrown on any thread of a parallel loop.
final class LockedError: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var error: (any Error)? {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); defer { lock.unlock() }; if stored == nil { stored = newValue } }
    }
    private var stored: (any Error)?
    func set(_ error: any Error) { self.error = error }
}

