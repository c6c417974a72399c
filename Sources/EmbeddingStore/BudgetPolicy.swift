import EmbeddingCodecs
import Foundation

// The budget policy: each row's codec, and for tc its rate, chosen to minimise Σ wᵢ·‖xᵢ − x̂ᵢ‖²
// subject to the bytes the load takes on disk.
//
// Every row is scored under every candidate: the self-contained codecs (fp32, fp16, int8, int4h,
// int2h) exactly, by encoding and decoding it; tc at a ladder of rates on one shared basis by
// estimate (one projection; see `TransformCodedLadder.Estimator`). The problem separates by row
// once a price λ is put on a byte: each row takes the candidate minimising wᵢ·eᵢ(c) + λ·bᵢ(c),
// and λ is bisected to the smallest price whose choice fits the budget (Everett's theorem: such
// a choice is optimal among all that take no more bytes). The bytes counted are those of the
// row's record, its share of the index (the store's measured overhead per row), the pages of the
// parameter records its candidates need (the tc basis and the model of each rate some row uses),
// and a fixed allowance for the pages every store has. A rate used by too few rows to pay for
// its model's pages is dropped and the choice made again.
//
// Under the retrieval weighting, rows choose between the plain codecs and one tc rate only, the
// rate whose mix has the lowest weighted error (`oneRateChoice`): rows of different tc rates
// rank unevenly against each other in a cosine search, which costs more neighbour recall than
// their lower squared error buys.
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
    public var shares: [Share]
}

/// Inputs shared by the policies.
struct PolicyInput: @unchecked Sendable {   // rows are read, never written
    let rows: UnsafeBufferPointer<Float>
    let count: Int
    let dimension: Int
    /// Access counts in input order, or nil (rows count equally).
    let counts: [Double]?
    let fit: FitOptions
    /// Bytes on disk per row beyond its record.
    let overheadBytesPerRow: Double

    func row(_ i: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(rebasing: rows[i * dimension..<(i + 1) * dimension])
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
    /// tc rates: a geometric ladder of models between these bits a value.
    /// 24 rates, 16% apart (12 left 37% between neighbours; on npm at 6.25% 24 measured +0.001
    /// hot and +0.002 uniform recall, 5,000 queries a set), and the rate that spends the budget
    /// on every row (`TransformCodedLadder(budget:)`); a rate's model is stored only when rows
    /// use it.
    static let tcLowestBits = 0.25, tcHighestBits = 8.0, tcModels = 24
    static let page = 4096.0

    /// Pages every store has beside a table's values (meta, free list, database leaves, the
    /// pages a load leaves free): `TransformCodedRowCodec.storePages`, which `tc:P%` counts too.
    static func fixedAllowance(budget: Double) -> Double { TransformCodedRowCodec.storePages * page }
    /// Pages of a parameter record on its own LMDB overflow pages (a 16-byte page header).
    static func pages(_ bytes: Double) -> Double { ((bytes + 16) / page).rounded(.up) * page }

    static func decide(_ input: PolicyInput, budget: CodecPolicy.Budget, weighting: CodecPolicy.Weighting) throws -> PolicyDecision {
        let n = input.count, d = input.dimension
        let budgetBytes = budget.bytes(rows: n, dimension: d)
        let weights: [Double] = input.counts.map { $0.map { weighting.weight($0) } } ?? [Double](repeating: 1, count: n)

        // Candidates: the plain ladder, then the tc rates.
        let plainEncoders = try plainLadder.map { codec in try codec.rowCodec.planLoad(codec, rows: input.rows, count: n, dimension: d, options: input.fit).makeEncoder([], nil, []) }
        var candidates = zip(plainLadder, plainEncoders).map { PolicyCandidate(codec: $0, label: $0.description, fixedBytes: $1.maximumRecordSize) }
        let ladder = try TransformCodedLadder(rows: input.rows, count: n, dimension: d, lowestBits: tcLowestBits,
                                              highestBits: tcHighestBits, models: tcModels,
                                              budget: budgetBytes / (Double(n) * Double(d) * 4), options: input.fit)
        let firstTC = candidates.count
        for rate in ladder.rates {
            let bits = (rate * 1000).rounded() / 1000
            candidates.append(PolicyCandidate(codec: .transformCoded(bitsPerValue: bits), label: "tc:" + String(format: "%.3g", bits), fixedBytes: nil))
        }
        let c = candidates.count
        let modelBytes = try ladder.modelRecordBytes().map { pages(Double($0)) }
        // The basis keeps the rows the finest rate some row uses needs (`keeping(rates:)`).
        let basisRowBytes = Double(ladder.basis.record.count - 20 - 4 * d) / Double(ladder.basis.rank)
        let basisBytes = ladder.ranks.map { pages(Double(20 + 4 * d) + Double($0) * basisRowBytes) }

        // Score every row under every candidate (errors; bytes for tc).
        var errors = [Float](repeating: 0, count: n * c)
        var tcBytes = [Float](repeating: 0, count: n * ladder.rates.count)
        try scoreRows(input, plain: plainLadder, ladder: ladder, errors: &errors, tcBytes: &tcBytes, candidates: c)

        let fixed = fixedAllowance(budget: budgetBytes) + Double(n) * input.overheadBytesPerRow
        func bytes(_ i: Int, _ k: Int) -> Double {
            k < firstTC ? Double(candidates[k].fixedBytes!) : Double(tcBytes[i * ladder.rates.count + k - firstTC])
        }

        // The choice at price λ among `allowed` candidates, its record bytes and weighted error.
        func choose(_ lambda: Double, allowed: [Bool], into choice: inout [UInt8]) -> (bytes: Double, error: Double) {
            var totalBytes = 0.0, totalError = 0.0
            for i in 0..<n {
                var best = -1
                var bestCost = Double.infinity, bestBytes = 0.0, bestError = 0.0
                for k in 0..<c where allowed[k] {
                    let e = Double(errors[i * c + k])
                    guard e.isFinite else { continue }
                    let b = bytes(i, k)
                    let cost = lambda.isInfinite ? b : weights[i] * e + lambda * b
                    if cost < bestCost || (cost == bestCost && b < bestBytes) {
                        best = k
                        bestCost = cost
                        bestBytes = b
                        bestError = weights[i] * e
                    }
                }
                choice[i] = UInt8(best)
                totalBytes += bestBytes
                totalError += bestError
            }
            return (totalBytes, totalError)
        }
        func sharedBytes(_ choice: [UInt8]) -> Double {
            var used = [Bool](repeating: false, count: ladder.rates.count)
            for k in choice where Int(k) >= firstTC { used[Int(k) - firstTC] = true }
            let models = zip(used, modelBytes).reduce(0.0) { $0 + ($1.0 ? $1.1 : 0) }
            var basis = 0.0
            for (r, bytes) in basisBytes.enumerated() where used[r] { basis = Swift.max(basis, bytes) }
            return models + basis
        }

        var allowed = [Bool](repeating: true, count: c)
        var choice = [UInt8](repeating: 0, count: n)
        var lambda = 0.0
        var result = (bytes: 0.0, error: 0.0)
        // The smallest the table can be: every row its smallest candidate.
        let smallest = choose(.infinity, allowed: allowed, into: &choice)
        let smallestTotal = smallest.bytes + sharedBytes(choice) + fixed
        guard smallestTotal <= budgetBytes else {
            throw StoreError.invalidArgument(String(format: "a budget of %.0f bytes (%.4g%% of the float32 payload) is too small for %d rows of dimension %d: the smallest codecs take about %.0f bytes on disk (%.4g%%)",
                                                    budgetBytes, 100 * budgetBytes / (Double(n) * Double(d) * 4), n, d, smallestTotal,
                                                    100 * smallestTotal / (Double(n) * Double(d) * 4)))
        }
        for _ in 0..<4 {
            // Bisect λ on a log scale between a price at which the largest candidates win and one
            // at which the smallest do.
            let meanWeight = max(weights.reduce(0, +) / Double(max(n, 1)), 1e-30)
            var low = 1e-12 * meanWeight, high = 1e6 * meanWeight
            var best = choice
            var bestResult = choose(high, allowed: allowed, into: &best)
            // Skewed weights (traffic) can need a far higher price before the smallest codecs win.
            while bestResult.bytes + sharedBytes(best) + fixed > budgetBytes && high < 1e300 {
                high *= 1e6
                bestResult = choose(high, allowed: allowed, into: &best)
            }
            var trial = choice
            for _ in 0..<60 {
                let middle = (low * high).squareRoot()
                let r = choose(middle, allowed: allowed, into: &trial)
                if r.bytes + sharedBytes(trial) + fixed <= budgetBytes {
                    high = middle
                    best = trial
                    bestResult = r
                } else {
                    low = middle
                }
                if high / low < 1.0001 { break }
            }
            choice = best
            result = bestResult
            lambda = high
            // Drop rates whose rows do not pay for their model's pages, and choose again.
            var rowsOf = [Int](repeating: 0, count: c)
            for k in choice { rowsOf[Int(k)] += 1 }
            var dropped = false
            for (r, bytes) in modelBytes.enumerated() where allowed[firstTC + r] && rowsOf[firstTC + r] > 0 {
                // A rate pays when its rows would cost more than its model at the next rate's bytes:
                // roughly, when its model is under a tenth of their record bytes.
                var recordBytes = 0.0
                for i in 0..<n where Int(choice[i]) == firstTC + r { recordBytes += Double(tcBytes[i * ladder.rates.count + r]) }
                if bytes > 0.1 * recordBytes {
                    allowed[firstTC + r] = false
                    dropped = true
                }
            }
            if !dropped { break }
        }
        if weighting == .retrieval, let one = oneRateChoice(errors: errors, candidates: c, rows: n, firstTC: firstTC, weights: weights,
                                                             allowed: allowed, bytes: bytes,
                                                             fits: { $0 + sharedBytes($1) + fixed <= budgetBytes }) {
            (choice, result, lambda) = (one.choice, (one.bytes, one.error), one.lambda)
        }
        var summaryBytes = result.bytes + sharedBytes(choice) + fixed

        // Never worse than one candidate for every row, when one fits.
        var bestSingle: (k: Int, error: Double)?
        for k in 0..<c {
            var e = 0.0, b = 0.0
            var feasible = true
            for i in 0..<n {
                let error = Double(errors[i * c + k])
                guard error.isFinite else { feasible = false; break }
                e += weights[i] * error
                b += bytes(i, k)
            }
            let shared = k >= firstTC ? modelBytes[k - firstTC] + basisBytes[k - firstTC] : 0
            guard feasible, b + shared + fixed <= budgetBytes else { continue }
            if bestSingle.map({ e < $0.error }) ?? true { bestSingle = (k, e) }
        }
        if let single = bestSingle, single.error < result.error {
            choice = [UInt8](repeating: UInt8(single.k), count: n)
            result.error = single.error
            summaryBytes = (0..<n).reduce(0.0) { $0 + bytes($1, single.k) } + sharedBytes(choice) + fixed
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
        return decision
    }

    /// The retrieval weighting's choice: the plain codecs and ONE tc rate, the rate whose mix has
    /// the lowest weighted error (each mix by the same λ bisection as `decide`), searched from the
    /// finest rate every row can take within the budget, coarser and finer, each way until two
    /// rates in a row are no better; nil when none fits. On npm at 6.25% a mix of rates (0.97 to
    /// 2 bits) had 6% less weighted squared error than one rate but recall@10 0.905 hot / 0.867
    /// uniform against one rate's 0.903 / 0.890; at 12.5%, 0.979 / 0.968 against 0.976 / 0.971.
    /// Probably rows of different rates rank unevenly against each other in a cosine search: a
    /// coarser rate drops more of a row's energy (more coefficients round to zero, fewer are
    /// coded), so its rows' decoded norms shrink more.
    static func oneRateChoice(errors: [Float], candidates c: Int, rows n: Int, firstTC: Int, weights: [Double], allowed: [Bool],
                              bytes: (Int, Int) -> Double, fits: (Double, [UInt8]) -> Bool)
        -> (choice: [UInt8], bytes: Double, error: Double, lambda: Double)? {
        let meanWeight = max(weights.reduce(0, +) / Double(max(n, 1)), 1e-30)
        var best: (choice: [UInt8], bytes: Double, error: Double, lambda: Double)?
        var choice = [UInt8](repeating: 0, count: n)
        func mix(_ rate: Int) -> (choice: [UInt8], bytes: Double, error: Double, lambda: Double)? {
            let options = (0..<c).filter { allowed[$0] && ($0 < firstTC || $0 == rate) }
            func choose(_ lambda: Double) -> (bytes: Double, error: Double) {
                var totalBytes = 0.0, totalError = 0.0
                for i in 0..<n {
                    var pick = -1
                    var bestCost = Double.infinity, bestBytes = 0.0, bestError = 0.0
                    for k in options {
                        let e = Double(errors[i * c + k])
                        guard e.isFinite else { continue }
                        let b = bytes(i, k)
                        let cost = lambda.isInfinite ? b : weights[i] * e + lambda * b
                        if cost < bestCost || (cost == bestCost && b < bestBytes) {
                            (pick, bestCost, bestBytes, bestError) = (k, cost, b, weights[i] * e)
                        }
                    }
                    choice[i] = UInt8(pick)
                    totalBytes += bestBytes
                    totalError += bestError
                }
                return (totalBytes, totalError)
            }
            // The cheapest this rate's mix can be; then λ bisected as in `decide`.
            guard fits(choose(.infinity).bytes, choice) else { return nil }
            var low = 1e-12 * meanWeight, high = 1e6 * meanWeight
            var found = choose(high)
            while !fits(found.bytes, choice) && high < 1e300 {
                high *= 1e6
                found = choose(high)
            }
            var kept = choice
            for _ in 0..<60 {
                let middle = (low * high).squareRoot()
                let r = choose(middle)
                if fits(r.bytes, choice) {
                    (high, found, kept) = (middle, r, choice)
                } else {
                    low = middle
                }
                if high / low < 1.0001 { break }
            }
            return fits(found.bytes, kept) ? (kept, found.bytes, found.error, high) : nil
        }
        // From the finest rate every row can take within the budget, coarser rates and finer
        // ones (their rows mixed with cheaper codecs), each way until two in a row are no better.
        let rates = (firstTC..<c).filter { allowed[$0] }
        guard !rates.isEmpty else { return nil }
        var start = 0
        for (position, rate) in rates.enumerated() {
            for i in 0..<n { choice[i] = UInt8(rate) }
            if fits((0..<n).reduce(0.0) { $0 + bytes($1, rate) }, choice) { start = position }
        }
        for sweep in [Array(rates[...start].reversed()), Array(rates[(start + 1)...])] {
            var worse = 0
            for rate in sweep where worse < 2 {
                guard let found = mix(rate) else { continue }
                if best.map({ found.error < $0.error }) ?? true {
                    best = found
                    worse = 0
                } else {
                    worse += 1
                }
            }
        }
        return best
    }

    /// Scores every row under every candidate, on all cores: exact squared errors of the plain
    /// codecs (infinite where a codec cannot store the row), tc estimates.
    static func scoreRows(_ input: PolicyInput, plain: [Codec], ladder: TransformCodedLadder, errors: inout [Float],
                          tcBytes: inout [Float], candidates c: Int) throws {
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
                        let encoders = try plain.map { codec in
                            try codec.rowCodec.planLoad(codec, rows: input.rows, count: min(n, 1), dimension: d, options: input.fit).makeEncoder([], nil, [])
                        }
                        let decoders = plain.map { $0.rowCodec.makeDecoder(dimension: d) }
                        let parameters = InMemoryCodecTable(dimension: d)
                        let estimator = TransformCodedLadder.Estimator(ladder)
                        var record = [UInt8](repeating: 0, count: encoders.map(\.maximumRecordSize).max() ?? 1)
                        var decoded = [Float](repeating: 0, count: d)
                        let start = n * t / threads, end = n * (t + 1) / threads
                        try record.withUnsafeMutableBytes { record in
                            try decoded.withUnsafeMutableBufferPointer { decoded in
                                for i in start..<end {
                                    let row = input.row(i)
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
                                                       bytes: tcOut + i * rates)
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
