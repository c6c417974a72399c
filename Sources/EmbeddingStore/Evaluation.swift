import CEmbeddingKernels
import Dispatch
import EmbeddingCodecs
import Foundation
import Synchronization

// `Store.evaluate`: what compression cost a table, measured against its full-precision source
// rows — row errors, dot-product errors and neighbour recall, overall, per codec form and per
// popularity decile. README.md ("Evaluating a table against its source") defines every figure;
// the names here are the JSON keys `embstore eval --json` prints.

/// Settings of `Store.evaluate`.
public struct EvaluationOptions: Sendable {
    /// Query rows drawn per set (by frequency, and uniformly), capped at the rows available.
    public var queryCount = 1000
    /// Seeds the query draws and the dot-product sample: the same seed draws the same rows.
    public var seed: UInt64 = 0
    /// Query rows (positions into the source rows) to use instead of drawn ones: one set, "given".
    public var queries: [Int]?
    /// Rows y of the dot-product sample (drawn uniformly without replacement, capped at the rows).
    public var dotSampleRows = 2000
    /// The k of recall@k.
    public var neighbours = 10
    /// Threads for the neighbour search and the dot products.
    public var threads = ProcessInfo.processInfo.activeProcessorCount
    public init() {}
}

/// Where a running evaluation is: `done` of `total` `unit` of stage `stage`.
/// Progress of an evaluation (`WorkProgress`).
public typealias EvaluationProgress = WorkProgress

/// What `Store.evaluate` found. Encodes to the JSON object of `embstore eval --json`.
public struct EvaluationReport: Sendable, Codable {
    /// Row errors of a group of rows (every row, a codec form, a decile). Means over the rows
    /// of the group; the weighted means weight each row by its frequency, and are nil without
    /// frequencies or when the group's frequencies sum to zero.
    public struct Errors: Sendable, Codable, Equatable {
        public var rows: Int
        /// Mean of ‖x − x̂‖² / d.
        public var mse: Double?
        /// Mean of cos(x, x̂): 1 when both rows are zero, 0 when one of them is.
        public var meanCosine: Double?
        /// Mean of ‖x − x̂‖ / ‖x‖ over the rows whose source row is not zero.
        public var meanRelativeL2: Double?
        /// Source rows that are zero (left out of `meanRelativeL2`).
        public var zeroSourceRows: Int
        public var weightedMSE: Double?
        public var weightedMeanCosine: Double?
        public var weightedMeanRelativeL2: Double?

        enum CodingKeys: String, CodingKey {
            case rows, mse, meanCosine = "mean_cosine", meanRelativeL2 = "mean_relative_l2"
            case zeroSourceRows = "zero_source_rows", weightedMSE = "weighted_mse"
            case weightedMeanCosine = "weighted_mean_cosine", weightedMeanRelativeL2 = "weighted_mean_relative_l2"
        }
    }

    /// Query figures of the queries of one set that fall in a group (a codec form by the query
    /// row's form, a decile by the query row's decile).
    public struct QueryGroup: Sendable, Codable, Equatable {
        /// The set's name: "hot", "uniform" or "given".
        public var set: String
        public var queries: Int
        /// Mean recall@k over the queries; nil when there are none.
        public var recall: Double?
        /// RMS over the pairs (q, y) of ⟨x_q, x_y⟩ − ⟨x̂_q, x̂_y⟩.
        public var dotRMSError: Double?
        /// `dotRMSError` divided by the RMS of ⟨x_q, x_y⟩ over the same pairs.
        public var dotRelativeError: Double?

        enum CodingKeys: String, CodingKey {
            case set, queries, recall, dotRMSError = "dot_rms_error", dotRelativeError = "dot_relative_error"
        }
    }

    /// One set of query rows.
    public struct QuerySet: Sendable, Codable, Equatable {
        public var name: String
        /// "frequency" (p ∝ freq, without replacement), "uniform" (without replacement) or "given".
        public var drawn: String
        public var queries: Int
        public var recall: Double?
        public var dotRMSError: Double?
        public var dotRelativeError: Double?
        /// Pairs (q, y) behind the dot-product errors (y ≠ q).
        public var dotPairs: Int
        /// Queries of the neighbour searches (exact and decoded) that were settled by scoring
        /// every row in double because too many rows tied in float32 (see `NeighbourSearch`).
        public var exactRescans: Int
        /// The query rows (positions into the source rows), in the order drawn.
        public var rows: [Int]

        enum CodingKeys: String, CodingKey {
            case name, drawn, queries, recall, dotRMSError = "dot_rms_error", dotRelativeError = "dot_relative_error"
            case dotPairs = "dot_pairs", exactRescans = "exact_rescans", rows
        }
    }

    /// The rows stored with one codec form (`LiveRowCodecs.Form.name`: `int8`, `tc:1.5`).
    public struct Form: Sendable, Codable, Equatable {
        public var form: String
        /// Mean record bytes (tag + payload) of its rows.
        public var bytesPerRow: Double
        public var errors: Errors
        public var queries: [QueryGroup]

        enum CodingKeys: String, CodingKey { case form, bytesPerRow = "bytes_per_row", errors, queries }
    }

    /// A tenth of the rows by frequency: decile 1 holds the hottest 10%.
    public struct Decile: Sendable, Codable, Equatable {
        public var decile: Int
        public var freqMin: Double
        public var freqMax: Double
        /// The decile's share of the sum of all frequencies.
        public var freqShare: Double
        public var errors: Errors
        public var queries: [QueryGroup]

        enum CodingKeys: String, CodingKey {
            case decile, freqMin = "freq_min", freqMax = "freq_max", freqShare = "freq_share", errors, queries
        }
    }

    public var table: String
    public var dimension: Int
    /// Source rows evaluated.
    public var rows: Int
    /// Live rows of the table (rows the source does not have are not evaluated).
    public var storeRows: Int
    /// The k of recall@k: min(`EvaluationOptions.neighbours`, rows − 1).
    public var k: Int
    /// Rows y of the dot-product sample.
    public var dotSampleRows: Int
    public var seed: UInt64
    /// Whether frequencies were given (weighted errors, the "hot" set and deciles need them).
    public var frequencyWeighted: Bool
    public var overall: Errors
    public var querySets: [QuerySet]
    /// In tag order, then by name.
    public var forms: [Form]
    /// Ten deciles with frequencies, else empty.
    public var deciles: [Decile]
    /// Things a reader should know (caps on query counts, sets not drawn).
    public var notes: [String]

    enum CodingKeys: String, CodingKey {
        case table, dimension, rows, storeRows = "store_rows", k, dotSampleRows = "dot_sample_rows", seed
        case frequencyWeighted = "frequency_weighted", overall, querySets = "query_sets", forms, deciles, notes
    }
}

extension Store {
    /// Compares the rows `table` returns with their full-precision source: `count` rows of
    /// `dimension` floats at `rows` (row-major) with ids `ids` (default `0..<count`) and, when
    /// given, access frequencies `frequencies` (one per row, ≥ 0).
    ///
    /// Checks first, naming the problem: the dimension against the table's, the lengths of
    /// `ids` and `frequencies`, duplicate ids, negative or NaN frequencies, non-finite source
    /// values (row and id), source ids the table does not have (how many, and the first), and
    /// given query rows out of range or repeated. Store rows that the source lacks are ignored.
    /// The codec forms come from `liveRowCodecs` and the rows from `Reader` lookups (batches of
    /// 16,384 ids), separate read transactions: run it on a table no one writes meanwhile (a
    /// row deleted in between is reported as not found). Memory is the decoded rows (count ×
    /// dimension floats) plus a few arrays per row; the neighbour searches and the dot products
    /// run on `options.threads` threads.
    public func evaluate(_ table: Table, rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int,
                         ids givenIDs: [UInt64]? = nil, frequencies: [Double]? = nil,
                         options: EvaluationOptions = EvaluationOptions(),
                         progress: (@Sendable (EvaluationProgress) -> Void)? = nil) throws -> EvaluationReport {
        try self.rows(of: table).evaluate(source: rows, count: count, dimension: dimension, ids: givenIDs, frequencies: frequencies,
                                     options: options, progress: progress)
    }
}

extension AnyStore {
    /// `Store.evaluate` of table `table` of a store or a sharded store.
    public func evaluate(_ table: String, rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int,
                         ids givenIDs: [UInt64]? = nil, frequencies: [Double]? = nil,
                         options: EvaluationOptions = EvaluationOptions(),
                         progress: (@Sendable (EvaluationProgress) -> Void)? = nil) throws -> EvaluationReport {
        try self.rows(of: table).evaluate(source: rows, count: count, dimension: dimension, ids: givenIDs, frequencies: frequencies,
                                          options: options, progress: progress)
    }
}

extension TableRows {
    func evaluate(source rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int, ids givenIDs: [UInt64]?, frequencies: [Double]?,
                  options: EvaluationOptions, progress: (@Sendable (EvaluationProgress) -> Void)?) throws -> EvaluationReport {
        let table = self
        let d = table.dimension
        guard dimension == d else {
            throw StoreError.invalidArgument("the source rows have dimension \(dimension), but table '\(table.name)' has dimension \(d)")
        }
        guard count >= 1 else { throw StoreError.invalidArgument("the source has no rows") }
        guard rows.count >= count * d else {
            throw StoreError.invalidArgument("source rows hold \(rows.count) floats, not \(count) rows × \(d)")
        }
        guard options.queryCount >= 1, options.dotSampleRows >= 1, options.neighbours >= 1, options.threads >= 1 else {
            throw StoreError.invalidArgument("query count, dot sample rows, neighbours and threads must be at least 1")
        }
        let ids = givenIDs ?? (0..<count).map { UInt64($0) }
        guard ids.count == count else {
            throw StoreError.invalidArgument("\(ids.count) ids for \(count) source rows")
        }
        if let frequencies {
            guard frequencies.count == count else {
                throw StoreError.invalidArgument("\(frequencies.count) frequencies for \(count) source rows")
            }
            if let bad = frequencies.firstIndex(where: { !($0 >= 0) || $0.isInfinite }) {
                let what = frequencies[bad].isNaN ? "NaN" : frequencies[bad] < 0 ? "negative" : "infinite"
                throw StoreError.invalidArgument("frequency of row \(bad) (id \(ids[bad])) is \(what) (\(frequencies[bad])); counts must be finite and ≥ 0")
            }
            guard frequencies.contains(where: { $0 > 0 }) else {
                throw StoreError.invalidArgument("every frequency is 0: nothing to weight by or draw hot queries from")
            }
        }
        if let given = options.queries {
            guard !given.isEmpty else { throw StoreError.invalidArgument("the given query set is empty") }
            if let bad = given.firstIndex(where: { $0 < 0 || $0 >= count }) {
                throw StoreError.invalidArgument("query \(bad) is row \(given[bad]), outside the \(count) source rows (0..<\(count))")
            }
            var seen = [Int: Int]()
            for (i, row) in given.enumerated() {
                if let first = seen.updateValue(i, forKey: row) {
                    throw StoreError.invalidArgument("query row \(row) is given twice (queries \(first) and \(i))")
                }
            }
        }
        let report: @Sendable (String, Int, Int, String) -> Void = { stage, done, total, unit in
            progress?(EvaluationProgress(stage: stage, done: done, total: total, unit: unit))
        }

        // The source: finite values, distinct ids.
        let source = rows.baseAddress!
        let checkBlock = 1 << 16
        for first in stride(from: 0, to: count, by: checkBlock) {
            let n = min(checkBlock, count - first)
            if let bad = UnsafeBufferPointer(start: source + first * d, count: n * d).firstIndex(where: { !$0.isFinite }) {
                let row = first + bad / d
                throw StoreError.invalidArgument("source row \(row) (id \(ids[row])) has the non-finite value \(source[first * d + bad]) at column \(bad % d)")
            }
            report("checking source", first + n, count, "rows")
        }
        let idOrder = ids.indices.sorted { ids[$0] != ids[$1] ? ids[$0] < ids[$1] : $0 < $1 }
        for position in idOrder.indices.dropFirst() where ids[idOrder[position]] == ids[idOrder[position - 1]] {
            throw StoreError.invalidArgument("source id \(ids[idOrder[position]]) appears twice (rows \(idOrder[position - 1]) and \(idOrder[position]))")
        }

        // Each source row's codec form, and the rows the table does not have.
        let census = try table.census()
        // Report forms in tag order, then by name; census forms of one name (two tc models
        // fitted for one rate) become one.
        var formNames: [String] = []
        var formOfCensus = [Int](repeating: 0, count: census.forms.count)
        for index in census.forms.indices.sorted(by: {
            (census.forms[$0].tag, census.forms[$0].name) < (census.forms[$1].tag, census.forms[$1].name)
        }) {
            if formNames.last != census.forms[index].name { formNames.append(census.forms[index].name) }
            formOfCensus[index] = formNames.count - 1
        }
        var formOfRow = [Int](repeating: 0, count: count)
        var bytesOfRow = [UInt32](repeating: 0, count: count)
        var missing = 0
        var firstMissing: Int?
        for row in 0..<count {
            var low = 0, high = census.ids.count
            while low < high {
                let mid = (low + high) / 2
                if census.ids[mid] < ids[row] { low = mid + 1 } else { high = mid }
            }
            guard low < census.ids.count, census.ids[low] == ids[row] else {
                missing += 1
                if firstMissing == nil { firstMissing = row }
                continue
            }
            formOfRow[row] = formOfCensus[Int(census.form[low])]
            bytesOfRow[row] = census.recordBytes[low]
        }
        if let firstMissing {
            throw StoreError.invalidArgument("\(missing) source id\(missing == 1 ? " is" : "s are") not in table '\(table.name)' "
                + "(first: id \(ids[firstMissing]) at source row \(firstMissing))")
        }

        // The decoded rows, in source order.
        var decoded = [Float](repeating: 0, count: count * d)
        try ids.withUnsafeBufferPointer { ids in
            try decoded.withUnsafeMutableBufferPointer { out in
                try table.decode(ids, into: out) { report("decoding", $0, count, "rows") }
            }
        }

        // Row errors.
        var sourceNorm = [Double](repeating: 0, count: count)
        var decodedNorm = [Double](repeating: 0, count: count)
        var squaredError = [Double](repeating: 0, count: count)
        var cosine = [Double](repeating: 0, count: count)
        decoded.withUnsafeBufferPointer { decoded in
            let x̂ = decoded.baseAddress!
            for row in 0..<count {
                let x = source + row * d, y = x̂ + row * d
                var xx = 0.0, yy = 0.0, xy = 0.0, ee = 0.0
                for j in 0..<d {
                    let a = Double(x[j]), b = Double(y[j])
                    xx += a * a
                    yy += b * b
                    xy += a * b
                    ee += (a - b) * (a - b)
                }
                sourceNorm[row] = xx.squareRoot()
                decodedNorm[row] = yy.squareRoot()
                squaredError[row] = ee
                cosine[row] = xx > 0 && yy > 0 ? xy / (sourceNorm[row] * decodedNorm[row]) : (xx == 0 && yy == 0 ? 1 : 0)
                if row % 65_536 == 65_535 || row == count - 1 { report("row errors", row + 1, count, "rows") }
            }
        }

        // Query sets.
        var notes: [String] = []
        var sets: [(name: String, drawn: String, rows: [Int])] = []
        if let given = options.queries {
            sets.append(("given", "given", given))
        } else {
            if let frequencies {
                let weighted = frequencies.reduce(0) { $0 + ($1 > 0 ? 1 : 0) }
                let n = min(options.queryCount, weighted)
                if n < options.queryCount {
                    notes.append("hot queries capped at \(n): only \(n) rows have a non-zero frequency")
                }
                var random = EvaluationRandom(seed: options.seed, stream: 1)
                sets.append(("hot", "frequency", random.weightedSample(count: n, weights: frequencies)))
            } else {
                notes.append("no frequencies: uniform queries only, and no weighted errors or deciles")
            }
            let n = min(options.queryCount, count)
            if n < options.queryCount { notes.append("uniform queries capped at the \(count) source rows") }
            var random = EvaluationRandom(seed: options.seed, stream: 2)
            sets.append(("uniform", "uniform", random.sample(count: n, from: count)))
        }
        // Each query row once, whatever sets it is in.
        let queryRows = Array(Set(sets.flatMap(\.rows))).sorted()
        var queryIndex = [Int: Int]()
        for (i, row) in queryRows.enumerated() { queryIndex[row] = i }

        // Neighbours among the source rows (exact) and among the decoded rows.
        let k = min(options.neighbours, count - 1)
        let exact = NeighbourSearch.run(rows: source, count: count, dimension: d, norms: sourceNorm, queries: queryRows,
                                        k: k, threads: options.threads) { report("exact neighbours", $0, count, "rows") }
        let found = decoded.withUnsafeBufferPointer { decoded in
            NeighbourSearch.run(rows: decoded.baseAddress!, count: count, dimension: d, norms: decodedNorm, queries: queryRows,
                                k: k, threads: options.threads) { report("decoded neighbours", $0, count, "rows") }
        }
        // Per query, the neighbours both searches found (recall = hits / k).
        let hits: [Int] = queryRows.indices.map { i in Set(exact.neighbours[i]).intersection(found.neighbours[i]).count }

        // Dot-product errors against a uniform sample of rows.
        var random = EvaluationRandom(seed: options.seed, stream: 3)
        let sample = random.sample(count: min(options.dotSampleRows, count), from: count).sorted()
        let dots = decoded.withUnsafeBufferPointer { decoded in
            DotErrors.run(source: source, decoded: decoded.baseAddress!, dimension: d, queries: queryRows, sample: sample,
                          threads: options.threads) { report("dot products", $0, queryRows.count, "queries") }
        }

        // Groups: every row, per form, per decile.
        var overall = ErrorSums()
        var perForm = [ErrorSums](repeating: ErrorSums(), count: formNames.count)
        var decileOfRow: [Int]?
        var perDecile = [ErrorSums](repeating: ErrorSums(), count: 10)
        var decileFrequencies = [(min: Double, max: Double, sum: Double)](repeating: (.infinity, -.infinity, 0), count: 10)
        if let frequencies {
            // Hottest first; ties by smaller row index.
            let order = (0..<count).sorted { frequencies[$0] != frequencies[$1] ? frequencies[$0] > frequencies[$1] : $0 < $1 }
            var decile = [Int](repeating: 0, count: count)
            for (rank, row) in order.enumerated() { decile[row] = rank * 10 / count }
            decileOfRow = decile
        }
        for row in 0..<count {
            let weight = frequencies?[row]
            let relative: Double? = sourceNorm[row] > 0 ? squaredError[row].squareRoot() / sourceNorm[row] : nil
            let mse = squaredError[row] / Double(d)
            overall.add(mse: mse, cosine: cosine[row], relative: relative, weight: weight)
            perForm[formOfRow[row]].add(mse: mse, cosine: cosine[row], relative: relative, weight: weight)
            if let decileOfRow, let weight {
                let decile = decileOfRow[row]
                perDecile[decile].add(mse: mse, cosine: cosine[row], relative: relative, weight: weight)
                decileFrequencies[decile].min = min(decileFrequencies[decile].min, weight)
                decileFrequencies[decile].max = max(decileFrequencies[decile].max, weight)
                decileFrequencies[decile].sum += weight
            }
        }
        func queryGroup(_ set: (name: String, drawn: String, rows: [Int]), where keep: (Int) -> Bool) -> QuerySums {
            var sums = QuerySums(k: k)
            for row in set.rows where keep(row) {
                let i = queryIndex[row]!
                sums.add(hits: hits[i], error: dots.squaredError[i], base: dots.squaredBase[i], pairs: dots.pairs[i])
            }
            return sums
        }

        let querySets = sets.map { set in
            let sums = queryGroup(set) { _ in true }
            let rescans = set.rows.reduce(0) { total, row in
                total + (exact.rescanned.contains(queryIndex[row]!) ? 1 : 0) + (found.rescanned.contains(queryIndex[row]!) ? 1 : 0)
            }
            return EvaluationReport.QuerySet(name: set.name, drawn: set.drawn, queries: set.rows.count, recall: sums.recall,
                                             dotRMSError: sums.rmsError, dotRelativeError: sums.relativeError,
                                             dotPairs: sums.pairs, exactRescans: rescans, rows: set.rows)
        }
        let forms = formNames.indices.map { form in
            let rowsOfForm = (0..<count).filter { formOfRow[$0] == form }
            let bytes = rowsOfForm.reduce(0.0) { $0 + Double(bytesOfRow[$1]) }
            return EvaluationReport.Form(
                form: formNames[form], bytesPerRow: rowsOfForm.isEmpty ? 0 : bytes / Double(rowsOfForm.count),
                errors: perForm[form].errors(dimension: d, weighted: frequencies != nil),
                queries: sets.map { queryGroup($0) { formOfRow[$0] == form }.group(set: $0.name) })
        }.filter { $0.errors.rows > 0 }
        var deciles: [EvaluationReport.Decile] = []
        if let decileOfRow, let frequencies {
            let total = frequencies.reduce(0, +)
            for decile in 0..<10 where perDecile[decile].rows > 0 {
                deciles.append(EvaluationReport.Decile(
                    decile: decile + 1, freqMin: decileFrequencies[decile].min, freqMax: decileFrequencies[decile].max,
                    freqShare: decileFrequencies[decile].sum / total,
                    errors: perDecile[decile].errors(dimension: d, weighted: true),
                    queries: sets.map { queryGroup($0) { decileOfRow[$0] == decile }.group(set: $0.name) }))
            }
        }
        return EvaluationReport(table: table.name, dimension: d, rows: count, storeRows: census.ids.count, k: k,
                                dotSampleRows: sample.count, seed: options.seed, frequencyWeighted: frequencies != nil,
                                overall: overall.errors(dimension: d, weighted: frequencies != nil),
                                querySets: querySets, forms: forms, deciles: deciles, notes: notes)
    }
}

/// Sums behind `EvaluationReport.Errors`.
struct ErrorSums {
    var rows = 0
    var mse = 0.0, cosine = 0.0
    var relativeRows = 0, relative = 0.0
    var weight = 0.0, weightedMSE = 0.0, weightedCosine = 0.0
    var relativeWeight = 0.0, weightedRelative = 0.0

    mutating func add(mse rowMSE: Double, cosine rowCosine: Double, relative rowRelative: Double?, weight w: Double?) {
        rows += 1
        mse += rowMSE
        cosine += rowCosine
        if let rowRelative {
            relativeRows += 1
            relative += rowRelative
        }
        guard let w else { return }
        weight += w
        weightedMSE += w * rowMSE
        weightedCosine += w * rowCosine
        if let rowRelative {
            relativeWeight += w
            weightedRelative += w * rowRelative
        }
    }

    func errors(dimension: Int, weighted: Bool) -> EvaluationReport.Errors {
        func ratio(_ a: Double, _ b: Double) -> Double? { b > 0 ? a / b : nil }
        return EvaluationReport.Errors(
            rows: rows, mse: ratio(mse, Double(rows)), meanCosine: ratio(cosine, Double(rows)),
            meanRelativeL2: ratio(relative, Double(relativeRows)), zeroSourceRows: rows - relativeRows,
            weightedMSE: weighted ? ratio(weightedMSE, weight) : nil,
            weightedMeanCosine: weighted ? ratio(weightedCosine, weight) : nil,
            weightedMeanRelativeL2: weighted ? ratio(weightedRelative, relativeWeight) : nil)
    }
}

/// Sums behind `EvaluationReport.QueryGroup`.
struct QuerySums {
    /// The k of recall@k.
    let k: Int
    var queries = 0
    var hits = 0
    var error = 0.0, base = 0.0
    var pairs = 0

    mutating func add(hits h: Int, error e: Double, base b: Double, pairs p: Int) {
        queries += 1
        hits += h
        error += e
        base += b
        pairs += p
    }

    /// Shared neighbours over all neighbours asked for, as `../shared/data/npm/README.md` scores.
    var recall: Double? { queries > 0 && k > 0 ? Double(hits) / Double(k * queries) : nil }
    var rmsError: Double? { pairs > 0 ? (error / Double(pairs)).squareRoot() : nil }
    var relativeError: Double? { pairs > 0 && base > 0 ? (error / base).squareRoot() : nil }

    func group(set: String) -> EvaluationReport.QueryGroup {
        EvaluationReport.QueryGroup(set: set, queries: queries, recall: recall, dotRMSError: rmsError, dotRelativeError: relativeError)
    }
}

/// Per query row q: Σ_y e², Σ_y ⟨x_q, x_y⟩² and the number of pairs, over the sample rows y ≠ q,
/// where e = ⟨x_q, x_y⟩ − ⟨x̂_q, x̂_y⟩.
///
/// e is computed as ⟨δ_q, x_y⟩ + ⟨x̂_q, δ_y⟩ with δ = x − x̂ (the same number), one float32
/// product of two 2d-wide rows: its rounding is relative to the error itself (about √d·2⁻²⁴ of
/// |δ|·|x|), not to ⟨x_q, x_y⟩, so even fp16 rows' tiny errors come out accurate; an fp32 row
/// pair gives exactly 0.
struct DotErrors {
    var squaredError: [Double]
    var squaredBase: [Double]
    var pairs: [Int]

    static func run(source: UnsafePointer<Float>, decoded: UnsafePointer<Float>, dimension d: Int, queries: [Int],
                    sample: [Int], threads: Int, progress: @Sendable (Int) -> Void) -> DotErrors {
        let s = sample.count, w = 2 * d
        // Sample rows packed twice: [x_y] for the base products, [x_y, δ_y] for the errors.
        var plain = [Float](repeating: 0, count: d * s)
        var wide = [Float](repeating: 0, count: w * s)
        for (i, row) in sample.enumerated() {
            for j in 0..<d {
                plain[i * d + j] = source[row * d + j]
                wide[i * w + j] = source[row * d + j]
                wide[i * w + d + j] = source[row * d + j] - decoded[row * d + j]
            }
        }
        let panel = Int(EMB_KNN_PANEL)
        let padded = (s + panel - 1) / panel * panel
        var plainPanels = [Float](repeating: 0, count: padded * d)
        var widePanels = [Float](repeating: 0, count: padded * w)
        emb_knn_pack(plain, s, d, nil, &plainPanels)
        emb_knn_pack(wide, s, w, nil, &widePanels)

        var result = DotErrors(squaredError: .init(repeating: 0, count: queries.count),
                               squaredBase: .init(repeating: 0, count: queries.count), pairs: .init(repeating: 0, count: queries.count))
        let block = 48
        let blocks = (queries.count + block - 1) / block
        let done = Mutex<Int>(0)
        result.squaredError.withUnsafeMutableBufferPointer { squaredError in
            result.squaredBase.withUnsafeMutableBufferPointer { squaredBase in
                result.pairs.withUnsafeMutableBufferPointer { pairs in
                    nonisolated(unsafe) let (squaredError, squaredBase, pairs) = (squaredError, squaredBase, pairs)
                    nonisolated(unsafe) let (source, decoded) = (source, decoded)
                    let (plainPanels, widePanels) = (plainPanels, widePanels)
                    DispatchQueue.concurrentPerform(iterations: min(threads, max(blocks, 1))) { part in
                        var a = [Float](repeating: 0, count: block * d)
                        var b = [Float](repeating: 0, count: block * w)
                        var base = [Float](repeating: 0, count: block * s)
                        var error = [Float](repeating: 0, count: block * s)
                        for blockIndex in stride(from: part, to: blocks, by: min(threads, max(blocks, 1))) {
                            let first = blockIndex * block, n = min(block, queries.count - first)
                            for i in 0..<n {
                                let row = queries[first + i]
                                for j in 0..<d {
                                    let x = source[row * d + j], x̂ = decoded[row * d + j]
                                    a[i * d + j] = x
                                    b[i * w + j] = x - x̂
                                    b[i * w + d + j] = x̂
                                }
                            }
                            emb_knn_scores(a, n, d, plainPanels, s, &base, s)
                            emb_knn_scores(b, n, w, widePanels, s, &error, s)
                            for i in 0..<n {
                                let row = queries[first + i]
                                var e2 = 0.0, b2 = 0.0, count = 0
                                for (y, sampleRow) in sample.enumerated() where sampleRow != row {
                                    e2 += Double(error[i * s + y]) * Double(error[i * s + y])
                                    b2 += Double(base[i * s + y]) * Double(base[i * s + y])
                                    count += 1
                                }
                                squaredError[first + i] = e2
                                squaredBase[first + i] = b2
                                pairs[first + i] = count
                            }
                            done.withLock { done in
                                done += n
                                progress(done)
                            }
                        }
                    }
                }
            }
        }
        return result
    }
}

/// SplitMix64, seeded per stream, for the query draws and the dot-product sample.
struct EvaluationRandom {
    private var core: SplitMix64

    init(seed: UInt64, stream: UInt64) { core = SplitMix64(seed: seed, stream: stream) }

    mutating func next() -> UInt64 { core.next() }

    /// Uniform in (0, 1].
    mutating func unit() -> Double { Double((next() >> 11) + 1) * 0x1p-53 }

    /// `count` distinct values of 0..<n, uniformly, in the order drawn (a partial Fisher–Yates).
    mutating func sample(count: Int, from n: Int) -> [Int] {
        var pool = Array(0..<n)
        for i in 0..<count {
            let j = i + Int(next() % UInt64(n - i))
            pool.swapAt(i, j)
        }
        return Array(pool.prefix(count))
    }

    /// `count` distinct indices of `weights`, drawn one after another with probability
    /// proportional to the weight among those not drawn yet (as NumPy's
    /// `choice(n, count, replace=False, p=w/w.sum())`, though not the same stream): the
    /// Efraimidis–Spirakis keys log(u)/w, largest first. Zero weights are never drawn; `count`
    /// must not exceed the number of positive weights.
    mutating func weightedSample(count: Int, weights: [Double]) -> [Int] {
        var keyed: [(key: Double, index: Int)] = []
        keyed.reserveCapacity(weights.count)
        for (i, w) in weights.enumerated() {
            let u = unit()
            if w > 0 { keyed.append((log(u) / w, i)) }
        }
        // The `count` largest keys: a min-heap of the best so far.
        var heap: [(key: Double, index: Int)] = []
        heap.reserveCapacity(count)
        func less(_ a: (key: Double, index: Int), _ b: (key: Double, index: Int)) -> Bool {
            a.key != b.key ? a.key < b.key : a.index > b.index
        }
        func siftDown(_ start: Int) {
            var i = start
            while true {
                let l = 2 * i + 1, r = l + 1
                var smallest = i
                if l < heap.count, less(heap[l], heap[smallest]) { smallest = l }
                if r < heap.count, less(heap[r], heap[smallest]) { smallest = r }
                if smallest == i { return }
                heap.swapAt(i, smallest)
                i = smallest
            }
        }
        for item in keyed where count > 0 {
            if heap.count < count {
                heap.append(item)
                var i = heap.count - 1
                while i > 0, less(heap[i], heap[(i - 1) / 2]) {
                    heap.swapAt(i, (i - 1) / 2)
                    i = (i - 1) / 2
                }
            } else if less(heap[0], item) {
                heap[0] = item
                siftDown(0)
            }
        }
        return heap.sorted { less($1, $0) }.map(\.index)
    }
}
