import EmbeddingCodecs
import Foundation

// The budget policy: each row's codec, and for tc its rate, chosen to minimise Σ wᵢ·‖xᵢ − x̂ᵢ‖²
// subject to the bytes the load takes on disk.
//
// Every row is scored under every candidate: the self-contained codecs (fp32, fp16, int8, int4h,
// int2h) exactly, by encoding and decoding it; tc at a ladder of rates on one shared basis by
// estimate (one projection and the measured residual; see `TransformCodedLadder.Estimator`).
// Once a price λ is put on a byte the problem separates by row: each row takes the candidate
// minimising wᵢ·eᵢ(c) + λ·bᵢ(c), which is a point of the lower convex hull of its candidates in
// (bytes, weighted error). So every row starts at its cheapest hull point and hull steps are taken
// in order of error saved per byte while they fit: the Lagrangian choice at every price (Everett),
// filled to within one step. The bytes counted are those of the row's record, its share of the
// index (the store's measured overhead per row), the pages of the parameter records it needs (the
// tc basis and the model of each rate some row uses), and a fixed allowance for the pages every
// store has. Which rates pay for their model's pages is decided on a sample of the rows.
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
    let progress: (@Sendable (WorkProgress) -> Void)?

    /// Fits `codec`'s parameters on the sample.
    func planLoad(_ codec: Codec) throws -> LoadPlan {
        var options = fit
        options.tableRows = count
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

    /// Pages every store has beside a table's values (meta, free list, database leaves, the
    /// pages a load leaves free): `TransformCodedRowCodec.storePages`, which `tc:P%` counts too.
    static func fixedAllowance(budget: Double) -> Double { TransformCodedRowCodec.storePages * page }
    /// Pages of a parameter record on its own LMDB overflow pages (a 16-byte page header).
    static func pages(_ bytes: Double) -> Double { ((bytes + 16) / page).rounded(.up) * page }

    static func decide(_ input: PolicyInput, budget: CodecPolicy.Budget, weighting: CodecPolicy.Weighting,
                       maxDecodeNanoseconds: Double? = nil) throws -> PolicyDecision {
        let n = input.count, d = input.dimension
        let budgetBytes = budget.bytes(rows: n, dimension: d)
        let weights: [Double] = input.counts.map { $0.map { weighting.weight($0) } } ?? [Double](repeating: 1, count: n)

        // Candidates: the plain ladder, then the tc rates.
        let plainEncoders = try plainLadder.map { try input.planLoad($0).makeEncoder([], nil, []) }
        var candidates = zip(plainLadder, plainEncoders).map { PolicyCandidate(codec: $0, label: $0.description, fixedBytes: $1.maximumRecordSize) }
        var ladderOptions = input.fit
        ladderOptions.tableRows = n
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
        let c = candidates.count
        let modelBytes = try ladder.modelRecordBytes().map { pages(Double($0)) }
        // The basis keeps the rows the finest rate some row uses needs (`keeping(rates:)`).
        let basisRowBytes = Double(ladder.basis.record.count - 20 - 4 * d) / Double(ladder.basis.rank)
        let basisBytes = ladder.ranks.map { pages(Double(20 + 4 * d) + Double($0) * basisRowBytes) }

        // Score every row under every candidate (errors; bytes for tc).
        var errors = [Float](repeating: 0, count: n * c)
        var tcBytes = [UInt16](repeating: 0, count: n * ladder.rates.count)
        try scoreRows(input, plain: plainLadder, ladder: ladder, errors: &errors, tcBytes: &tcBytes, candidates: c)

        let fixed = fixedAllowance(budget: budgetBytes) + Double(n) * input.overheadBytesPerRow
        func bytes(_ i: Int, _ k: Int) -> Double {
            k < firstTC ? Double(candidates[k].fixedBytes!) : Double(tcBytes[i * ladder.rates.count + k - firstTC])
        }

        /// The best choice for `rows` within `recordBudget` record bytes: each row's candidates
        /// reduced to their lower convex hull in (bytes, weighted error); every row starts at its
        /// cheapest point, then hull steps are taken in order of error saved per byte, largest
        /// first, while they fit (a row's later steps wait for its earlier ones). This is the
        /// Lagrangian choice at every price, and fills the budget to within one step.
        struct Solution {
            var choice: [UInt8]
            var recordBytes: Double
            var weightedError: Double
            /// Error saved per byte by the last step taken.
            var lambda: Double
        }
        struct Infeasible: Error {}
        func solve(rows: [Int], allowed: [Bool], recordBudget: Double, slowAllowed: [Bool]? = nil) throws -> Solution {
            let m = rows.count
            // Hull points per row, cheapest first: candidate index, bytes, weighted error.
            var hullStart = [Int32](repeating: 0, count: m + 1)
            var hullCandidate: [UInt8] = [], hullBytes: [Float] = [], hullError: [Float] = []
            hullCandidate.reserveCapacity(m * 4)
            hullBytes.reserveCapacity(m * 4)
            hullError.reserveCapacity(m * 4)
            var points: [(k: Int, b: Double, e: Double)] = []
            var total = 0.0
            for (position, i) in rows.enumerated() {
                points.removeAll(keepingCapacity: true)
                let slow = slowAllowed?[i] ?? true
                for k in 0..<c where allowed[k] && (slow || k < firstTC) {
                    let e = Double(errors[i * c + k])
                    if e.isFinite { points.append((k, bytes(i, k), weights[i] * e)) }
                }
                points.sort { $0.b < $1.b || ($0.b == $1.b && $0.e < $1.e) }
                // Lower convex hull, error falling as bytes rise.
                var hull: [(k: Int, b: Double, e: Double)] = []
                for point in points {
                    if let last = hull.last, point.e >= last.e { continue }
                    while hull.count >= 2 {
                        let a = hull[hull.count - 2], b = hull[hull.count - 1]
                        // b is above the segment a → point: drop it.
                        if (b.e - a.e) * (point.b - a.b) >= (point.e - a.e) * (b.b - a.b) { hull.removeLast() } else { break }
                    }
                    hull.append(point)
                }
                guard let first = hull.first else { throw Infeasible() }
                total += first.b
                for point in hull {
                    hullCandidate.append(UInt8(point.k))
                    hullBytes.append(Float(point.b))
                    hullError.append(Float(point.e))
                }
                hullStart[position + 1] = Int32(hullCandidate.count)
            }
            guard total <= recordBudget else { throw Infeasible() }
            // Steps keyed by saving per byte (descending: the complement of a positive Float's
            // bits) and row position.
            var steps: [UInt64] = []
            steps.reserveCapacity(hullCandidate.count - m)
            for position in 0..<m {
                for h in Int(hullStart[position]) + 1..<Int(hullStart[position + 1]) {
                    let saving = max(0, (hullError[h - 1] - hullError[h]) / (hullBytes[h] - hullBytes[h - 1]))   // ≥ 0: its bits sort as numbers
                    steps.append(UInt64(~saving.bitPattern) << 32 | UInt64(position))
                }
            }
            steps.sort()
            var at = hullStart.dropLast().map { $0 }   // each row's current hull point
            var blocked = [Bool](repeating: false, count: m)
            var lambda = 0.0
            for step in steps {
                let position = Int(step & 0xFFFF_FFFF)
                guard !blocked[position] else { continue }
                let h = Int(at[position])
                let extra = Double(hullBytes[h + 1] - hullBytes[h])
                if total + extra <= recordBudget {
                    total += extra
                    at[position] += 1
                    lambda = Double(Float(bitPattern: ~UInt32(step >> 32)))
                } else {
                    blocked[position] = true
                }
            }
            var choice = [UInt8](repeating: 0, count: m)
            var error = 0.0
            for position in 0..<m {
                choice[position] = hullCandidate[Int(at[position])]
                error += Double(hullError[Int(at[position])])
            }
            return Solution(choice: choice, recordBytes: total, weightedError: error, lambda: lambda)
        }

        func sharedBytes(_ used: [Bool]) -> Double {
            var total = 0.0, basis = 0.0
            for r in 0..<ladder.rates.count where used[firstTC + r] {
                total += modelBytes[r]
                basis = max(basis, basisBytes[r])
            }
            return total + basis
        }
        func usedCandidates(_ choice: [UInt8]) -> [Bool] {
            var used = [Bool](repeating: false, count: c)
            for k in choice { used[Int(k)] = true }
            return used
        }

        // Which tc rates pay for their model's pages is decided on a sample of the rows (every
        // row when there are few): solve with every rate allowed, drop the rates whose model
        // costs more than a tenth of the record bytes of the rows choosing them, solve again.
        var allowed = [Bool](repeating: true, count: c)
        let sampleStride = max(1, n / 65_536)
        let sample = Array(stride(from: 0, to: n, by: sampleStride))
        let sampleScale = Double(sample.count) / Double(n)
        for _ in 0..<4 {
            let shared = sharedBytes(allowed)
            guard let trial = try? solve(rows: sample, allowed: allowed,
                                         recordBudget: (budgetBytes - fixed - shared) * sampleScale) else { break }
            var dropped = false
            for r in 0..<ladder.rates.count where allowed[firstTC + r] {
                var recordBytes = 0.0
                for (position, i) in sample.enumerated() where Int(trial.choice[position]) == firstTC + r { recordBytes += bytes(i, firstTC + r) }
                if modelBytes[r] * sampleScale > 0.1 * recordBytes {
                    allowed[firstTC + r] = false
                    dropped = true
                }
            }
            if !dropped { break }
        }
        if !(firstTC..<c).contains(where: { allowed[$0] }) {
            // No rate pays on its own: keep the one the smallest rows need.
            allowed[firstTC] = true
        }
        let all = Array(0..<n)
        var solution: Solution
        do {
            do {
                solution = try solve(rows: all, allowed: allowed, recordBudget: budgetBytes - fixed - sharedBytes(allowed))
            } catch {
                // The models of every allowed rate do not fit beside the rows: keep the lowest.
                for k in firstTC + 1..<c { allowed[k] = false }
                allowed[firstTC] = true
                solution = try solve(rows: all, allowed: allowed, recordBudget: budgetBytes - fixed - sharedBytes(allowed))
            }
        } catch {
            // Too small: say what the smallest choice takes.
            let smallest = (0..<n).reduce(0.0) { total, i in
                total + (0..<c).filter { allowed[$0] && errors[i * c + $0].isFinite }.map { bytes(i, $0) }.min()!
            }
            let total = smallest + fixed + sharedBytes(allowed)
            throw StoreError.invalidArgument(String(format: "a budget of %.0f bytes (%.4g%% of the float32 payload) is too small for %d rows of dimension %d: the smallest codecs take about %.0f bytes on disk (%.4g%%)",
                                                    budgetBytes, 100 * budgetBytes / (Double(n) * Double(d) * 4), n, d, total,
                                                    100 * total / (Double(n) * Double(d) * 4)))
        }
        // Every single candidate's totals, and what one tc rate fitted to this budget would give
        // (`tc:P%`: interpolated between the ladder's rates around it, log error linear in bytes):
        // the mix must not be worse than the best of them.
        var singles: [(k: Int, error: Double, bytes: Double)] = []
        for k in 0..<c {
            var e = 0.0, b = 0.0
            var feasible = true
            for i in 0..<n {
                let error = Double(errors[i * c + k])
                guard error.isFinite else { feasible = false; break }
                e += weights[i] * error
                b += bytes(i, k)
            }
            if feasible { singles.append((k, e, b + (k >= firstTC ? modelBytes[k - firstTC] + basisBytes[k - firstTC] : 0) + fixed)) }
        }
        var bestSingle: (k: Int, error: Double)?
        for single in singles where single.bytes <= budgetBytes {
            if bestSingle.map({ single.error < $0.error }) ?? true { bestSingle = (single.k, single.error) }
        }
        var oneRateError = bestSingle?.error ?? .infinity
        let rates = singles.filter { $0.k >= firstTC }
        for (low, high) in zip(rates, rates.dropFirst()) where low.bytes <= budgetBytes && budgetBytes < high.bytes && low.error > 0 && high.error > 0 {
            let t = (budgetBytes - low.bytes) / (high.bytes - low.bytes)
            oneRateError = min(oneRateError, exp(log(low.error) + t * (log(high.error) - log(low.error))))
        }

        // Retrieval (without a decode cap): the fixed-size codecs and ONE tc rate, the rate whose
        // mix has the lowest weighted error. Rows of different tc rates rank unevenly against
        // each other in a cosine search: on npm at 6.25% a mix of rates had 6% less weighted
        // squared error than one rate but recall@10 0.905 hot / 0.867 uniform against 0.903 /
        // 0.890 (at 12.5%, 0.979 / 0.968 against 0.976 / 0.971). Rates are tried from the finest
        // every row can take within the budget, coarser and finer, each way until two in a row are
        // no better.
        if weighting == .retrieval && maxDecodeNanoseconds == nil {
            let rates = (firstTC..<c).filter { allowed[$0] }
            func oneRate(_ k: Int) -> Solution? {
                var only = allowed
                for r in firstTC..<c where r != k { only[r] = false }
                return try? solve(rows: all, allowed: only, recordBudget: budgetBytes - fixed - sharedBytes(only))
            }
            var start = 0
            for (position, k) in rates.enumerated() where singles.contains(where: { $0.k == k && $0.bytes <= budgetBytes }) { start = position }
            var best: Solution?
            for direction in [-1, 1] {
                var position = direction < 0 ? start : start + 1
                var worse = 0
                while position >= 0 && position < rates.count && worse < 2 {
                    if let trial = oneRate(rates[position]), trial.weightedError < (best?.weightedError ?? .infinity) {
                        best = trial
                        worse = 0
                    } else {
                        worse += 1
                    }
                    position += direction
                }
            }
            if let best { solution = best }
        }

        // Decode cost: a tc row decodes about fifty to two hundred times slower than an int8 row,
        // so under a cap the rows that serve most lookups keep fast codecs. Rows, coldest first,
        // may take tc while the lookups they serve, times tc's extra decode time, stay within
        // the cap's margin over the fast codecs: then the mix decodes a lookup in at most the
        // cap on average. The default cap, for `traffic` weighting with counts (a serving path:
        // lookups at int8's speed matter), is twice int8's decode time; `retrieval` weighting
        // has none by default (quality first), and reports the expected decode time either way.
        // A cap the budget cannot meet is doubled until it can, for the default, and is an
        // error when given.
        let traffic = input.counts.map { counts -> [Double] in
            let total = counts.reduce(0, +)
            return total > 0 ? counts.map { $0 / total } : [Double](repeating: 1 / Double(n), count: n)
        } ?? [Double](repeating: 1 / Double(n), count: n)
        let fast = DecodeCost.nanoseconds(.int8, dimension: d), slow = DecodeCost.nanoseconds(.transformCoded(bitsPerValue: 2), dimension: d)
        let recordBudget = budgetBytes - fixed - sharedBytes(allowed)
        var decodeCap = maxDecodeNanoseconds ?? (weighting == .traffic && input.counts != nil ? 2 * fast : nil)
        if var cap = decodeCap {
            let coldestFirst = (0..<n).sorted { traffic[$0] < traffic[$1] }
            func slowRows(extra: Double) -> [Bool] {
                var allowedRows = [Bool](repeating: false, count: n)
                var served = 0.0
                for i in coldestFirst {
                    served += traffic[i]
                    guard served * (slow - fast) <= extra else { break }
                    allowedRows[i] = true
                }
                return allowedRows
            }
            while true {
                // The default cap holds only while the mix stays at or below one codec's error.
                if let restricted = try? solve(rows: all, allowed: allowed, recordBudget: recordBudget, slowAllowed: slowRows(extra: max(0, cap - fast))),
                   maxDecodeNanoseconds != nil || restricted.weightedError <= max(oneRateError, solution.weightedError) {
                    solution = restricted
                    decodeCap = cap
                    break
                }
                if maxDecodeNanoseconds == nil && cap >= slow {
                    decodeCap = nil   // the mix without a cap
                    break
                }
                guard maxDecodeNanoseconds == nil else {
                    throw StoreError.invalidArgument(String(format: "no mix within the budget decodes a lookup in %.4g ns on average: the fast codecs the hot rows would need do not fit. Allow more (--max-decode-ns) or give a larger budget", cap))
                }
                cap *= 2
            }
        }
        var choice = solution.choice
        var result = (bytes: solution.recordBytes, error: solution.weightedError)
        let lambda = solution.lambda

        var summaryBytes = result.bytes + sharedBytes(usedCandidates(choice)) + fixed

        if let single = bestSingle, single.error < result.error {
            choice = [UInt8](repeating: UInt8(single.k), count: n)
            result.error = single.error
            summaryBytes = (0..<n).reduce(0.0) { $0 + bytes($1, single.k) } + sharedBytes(usedCandidates(choice)) + fixed
        }

        var decision = PolicyDecision(candidates: candidates, choice: choice, ladder: nil, summary: PolicySummary(
            policy: CodecPolicy.budget(budget, weighting: weighting).description, weighting: weighting.rawValue,
            budgetBytes: budgetBytes, estimatedBytes: summaryBytes, weightedError: result.error,
            bestSingle: bestSingle.map { candidates[$0.k].label }, bestSingleWeightedError: bestSingle?.error,
            lambda: lambda, shares: []))
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

    /// Scores every row under every candidate, on all cores: exact squared errors of the plain
    /// codecs (infinite where a codec cannot store the row), tc estimates.
    static func scoreRows(_ input: PolicyInput, plain: [Codec], ladder: TransformCodedLadder, errors: inout [Float],
                          tcBytes: inout [UInt16], candidates c: Int) throws {
        let n = input.count, d = input.dimension
        let rates = ladder.rates.count
        let idBytes = TransformCodedRowCodec.modelIDBytes(UInt32(2 + rates))
        let threads = max(1, min(ProcessInfo.processInfo.activeProcessorCount, n / 4096 + 1))
        let failure = LockedError()
        errors.withUnsafeMutableBufferPointer { errors in
            tcBytes.withUnsafeMutableBufferPointer { tcBytes in
                let errorsBase = errors.baseAddress!, tcBase = tcBytes.baseAddress!
                nonisolated(unsafe) let errorsOut = errorsBase, tcOut = tcBase
                DispatchQueue.concurrentPerform(iterations: threads) { t in
                    do {
                        let encoders = try plain.map { try input.planLoad($0).makeEncoder([], nil, []) }
                        let decoders = plain.map { $0.rowCodec.makeDecoder(dimension: d) }
                        let parameters = InMemoryCodecTable(dimension: d)
                        let estimator = TransformCodedLadder.Estimator(ladder)
                        var record = [UInt8](repeating: 0, count: encoders.map(\.maximumRecordSize).max() ?? 1)
                        var decoded = [Float](repeating: 0, count: d)
                        let rateBytes = UnsafeMutableBufferPointer<Float>.allocate(capacity: rates)
                        defer { rateBytes.deallocate() }
                        let start = n * t / threads, end = n * (t + 1) / threads
                        let stretch = max(1, (1 << 20) / d)
                        try record.withUnsafeMutableBytes { record in
                            try decoded.withUnsafeMutableBufferPointer { decoded in
                                for first in stride(from: start, to: end, by: stretch) {
                                  let rows = first..<min(end, first + stretch)
                                  try input.source.withRows(rows) { stretchRows in
                                  for i in rows {
                                    let row = UnsafeBufferPointer(rebasing: stretchRows[(i - first) * d..<(i - first + 1) * d])
                                    for (k, encoder) in encoders.enumerated() {
                                        var error = Float.infinity
                                        if (try? encoder.check(row)) != nil, let size = try? encoder.encode(row, index: nil, into: record) {
                                            var view = UnsafeRawBufferPointer(rebasing: record[0..<size])
                                            if try decoders[k].decode(&view, count: 1, into: decoded.baseAddress!, parameters: parameters) == 1 {
                                                var sum: Float = 0
                                                for j in 0..<d {
                                                    let e = decoded[j] - row[j]
                                                    sum += e * e
                                                }
                                                error = sum
                                            }
                                        }
                                        errorsOut[i * c + k] = error
                                    }
                                    estimator.estimate(row.baseAddress!, idBytes: idBytes, errors: errorsOut + i * c + plain.count,
                                                       bytes: rateBytes.baseAddress!)
                                    for r in 0..<rates { tcOut[i * rates + r] = UInt16(min(65_535, rateBytes[r])) }
                                  }
                                  }
                                  input.source.release()
                                  // Thread 0 speaks for all: they run at about one speed.
                                  if t == 0 { input.progress?(WorkProgress(stage: "scoring", done: min(n, (rows.upperBound - start) * threads), total: n, unit: "rows")) }
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
        if input.counts != nil {
            for (rank, i) in input.accessOrder().enumerated() {
                let k = Int(decision.choice[i])
                let at = Double(rank) / Double(max(input.count, 1))
                ranks[k] = (min(ranks[k].0, at), max(ranks[k].1, Double(rank + 1) / Double(max(input.count, 1))))
            }
        }
        return (0..<c).filter { rows[$0] > 0 }.map { k in
            PolicySummary.Share(codec: decision.candidates[k].label, rows: rows[k], bytes: Int(recordBytes[k].rounded()),
                                lookupShare: input.counts == nil ? nil : (total > 0 ? lookups[k] / total : 0),
                                rankRange: input.counts == nil ? nil : [ranks[k].0, ranks[k].1])
        }
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
