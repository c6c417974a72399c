import Dispatch
import Foundation

// `AnyStore.diff`: two stores' copies of a table side by side (say, production's and a repacked
// candidate's): which rows each has, how their codecs changed, how far apart their decoded rows
// are, overall, per popularity decile and at the worst rows, their bytes, and whether the
// nearest neighbours of query rows stay the same. README.md ("Diffing two stores") defines every
// figure; the names here are the JSON keys `embstore diff --json` prints.

/// Settings of `AnyStore.diff`.
public struct DiffOptions: Sendable {
    /// Query rows drawn per set (by frequency, and uniformly), capped at the rows both have.
    public var queryCount = 1000
    /// Seeds the query draws: the same seed draws the same rows.
    public var seed: UInt64 = 0
    /// The k of the top-k neighbour agreement.
    public var neighbours = 10
    /// Worst rows listed overall (and per decile).
    public var worstRows = 10
    /// Only these ids (those either store has); nil: every id of either store.
    public var ids: [UInt64]?
    /// Threads for the neighbour searches.
    public var threads = ProcessInfo.processInfo.activeProcessorCount
    public init() {}
}

/// What `AnyStore.diff` found. Encodes to one table's object of `embstore diff --json`.
public struct TableDiff: Sendable, Codable {
    /// Quantiles of one figure over a group of rows (linear interpolation between the two
    /// nearest ranks, as NumPy's `quantile`); nil when the group has no rows.
    public struct Distribution: Sendable, Codable, Equatable {
        public var rows: Int
        public var mean: Double?
        public var min: Double?
        public var p0_1: Double?
        public var p1: Double?
        public var p10: Double?
        public var p50: Double?
        public var p90: Double?
        public var p99: Double?
        public var p99_9: Double?
        public var max: Double?

        enum CodingKeys: String, CodingKey { case rows, mean, min, p0_1 = "p0.1", p1, p10, p50, p90, p99, p99_9 = "p99.9", max }

        init(_ values: [Double]) {
            rows = values.count
            guard !values.isEmpty else { return }
            let sorted = values.sorted()
            func quantile(_ q: Double) -> Double {
                let position = q * Double(sorted.count - 1)
                let low = Int(position.rounded(.down)), high = Swift.min(low + 1, sorted.count - 1)
                return sorted[low] + (sorted[high] - sorted[low]) * (position - Double(low))
            }
            mean = values.reduce(0, +) / Double(values.count)
            (min, p0_1, p1, p10, p50) = (sorted[0], quantile(0.001), quantile(0.01), quantile(0.1), quantile(0.5))
            (p90, p99, p99_9, max) = (quantile(0.9), quantile(0.99), quantile(0.999), sorted[sorted.count - 1])
        }
    }

    /// Relative L2 errors counted in bins a twentieth of a decade wide (each 12.2% above the
    /// last), from 10⁻⁷ to 10.
    public struct Histogram: Sendable, Codable, Equatable {
        /// 161 edges, 10^(−7 + i/20).
        public var edges: [Double]
        /// 162 counts: (0, edges[0]), then [edges[i − 1], edges[i]) for i = 1 … 160, then ≥ edges[160].
        public var counts: [Int]
        /// Rows whose error is exactly 0 (in no bin).
        public var zeroRows: Int

        enum CodingKeys: String, CodingKey { case edges, counts, zeroRows = "zero_rows" }

        public static let binsPerDecade = 20
        public static let edges = (0...8 * binsPerDecade).map { pow(10, -7 + Double($0) / Double(binsPerDecade)) }

        init(_ values: [Double]) {
            edges = Self.edges
            counts = [Int](repeating: 0, count: Self.edges.count + 1)
            zeroRows = 0
            for value in values {
                if value == 0 { zeroRows += 1; continue }
                var bin = min(max(Int((log10(value) + 7) * Double(Self.binsPerDecade) + 1), 0), counts.count - 1)
                // log10 may land a hair off an edge: settle against the edges themselves.
                while bin > 0 && value < edges[bin - 1] { bin -= 1 }
                while bin < edges.count && value >= edges[bin] { bin += 1 }
                counts[bin] += 1
            }
        }
    }

    /// How far B's rows are from A's, over a group of rows both have.
    public struct RowErrors: Sendable, Codable, Equatable {
        public var rows: Int
        /// Rows whose decoded floats are the same bit for bit.
        public var identicalRows: Int
        /// cos(a, b): 1 when both rows are zero, 0 when one of them is.
        public var cosine: Distribution
        /// ‖a − b‖ / ‖a‖, over the rows whose A row is not zero.
        public var relativeL2: Distribution
        /// Rows whose A row is zero (left out of `relativeL2`).
        public var zeroRowsA: Int
        public var histogram: Histogram

        enum CodingKeys: String, CodingKey {
            case rows, identicalRows = "identical_rows", cosine, relativeL2 = "relative_l2", zeroRowsA = "zero_rows_a", histogram
        }
    }

    /// One of the rows furthest apart.
    public struct WorstRow: Sendable, Codable, Equatable {
        public var id: UInt64
        public var cosine: Double
        /// Nil when A's row is zero (such rows rank first when B's is not).
        public var relativeL2: Double?
        public var codecA: String
        public var codecB: String
        public var frequency: Double?
        public var decile: Int?

        enum CodingKeys: String, CodingKey {
            case id, cosine, relativeL2 = "relative_l2", codecA = "codec_a", codecB = "codec_b", frequency, decile
        }
    }

    /// Rows whose codec form went from `from` (in A) to `to` (in B); `from == to` counts the unchanged.
    public struct CodecChange: Sendable, Codable, Equatable {
        public var from: String
        public var to: String
        public var rows: Int
    }

    /// The table's bytes in one store.
    public struct Bytes: Sendable, Codable, Equatable {
        public struct Form: Sendable, Codable, Equatable {
            public var form: String
            public var rows: Int
            /// Record bytes (tag + payload) of its rows.
            public var recordBytes: Int
            /// LMDB pages attributed to its rows (`embstore stats`).
            public var diskBytes: Int

            enum CodingKeys: String, CodingKey { case form, rows, recordBytes = "record_bytes", diskBytes = "disk_bytes" }
        }
        /// Live rows.
        public var rows: Int
        /// Every page of the table's databases (a sharded store's: summed over its shards).
        public var diskBytes: Int
        public var recordBytes: Int
        /// `diskBytes / rows`.
        public var bytesPerRow: Double
        /// Pages no row owns alone: shared parameters, bucket rows, superseded rows.
        public var sharedDiskBytes: Int
        /// Most on-disk bytes first.
        public var forms: [Form]

        enum CodingKeys: String, CodingKey {
            case rows, diskBytes = "disk_bytes", recordBytes = "record_bytes", bytesPerRow = "bytes_per_row"
            case sharedDiskBytes = "shared_disk_bytes", forms
        }
    }

    /// Top-k neighbour agreement of one set of query rows (or of its queries in a decile).
    public struct Agreement: Sendable, Codable, Equatable {
        /// "hot" or "uniform".
        public var set: String
        public var queries: Int
        /// Mean over the queries of |top-k among A's rows ∩ top-k among B's rows| / k; nil without queries.
        public var agreement: Double?
    }

    /// A set of query rows.
    public struct QuerySet: Sendable, Codable, Equatable {
        public var name: String
        /// "frequency" (p ∝ frequency, without replacement) or "uniform" (without replacement).
        public var drawn: String
        public var queries: Int
        public var agreement: Double?
        /// Queries whose top k was settled by scoring every row in double (in A's or B's search).
        public var exactRescans: Int
        /// The query rows' ids, in the order drawn.
        public var ids: [UInt64]

        enum CodingKeys: String, CodingKey { case name, drawn, queries, agreement, exactRescans = "exact_rescans", ids }
    }

    /// A tenth of the rows both have, by frequency: decile 1 holds the hottest 10%.
    public struct Decile: Sendable, Codable, Equatable {
        public var decile: Int
        public var freqMin: Double
        public var freqMax: Double
        /// The decile's share of the frequencies of the rows both have.
        public var freqShare: Double
        public var errors: RowErrors
        /// Its query rows' agreement, per set.
        public var neighbours: [Agreement]
        public var worst: [WorstRow]

        enum CodingKeys: String, CodingKey {
            case decile, freqMin = "freq_min", freqMax = "freq_max", freqShare = "freq_share", errors, neighbours, worst
        }
    }

    public var table: String
    public var dimension: Int
    /// Live rows of A and of B (within `DiffOptions.ids` when given).
    public var rowsA: Int
    public var rowsB: Int
    /// Rows both have: every figure below but `bytes` is over them.
    public var common: Int
    public var onlyA: Int
    public var onlyB: Int
    /// The first (smallest) ids only A has, and only B has: at most `worstRows` each.
    public var onlyAIDs: [UInt64]
    public var onlyBIDs: [UInt64]
    /// Most rows first; `from == to` entries are rows whose codec did not change.
    public var codecChanges: [CodecChange]
    public var changedCodecRows: Int
    public var errors: RowErrors
    /// Largest relative L2 first.
    public var worst: [WorstRow]
    public var k: Int
    public var seed: UInt64
    public var neighbours: [QuerySet]
    public var frequencyWeighted: Bool
    /// Ten deciles with frequencies, else empty.
    public var deciles: [Decile]
    /// Whole table (every live row, whatever `DiffOptions.ids` says).
    public var bytesA: Bytes
    public var bytesB: Bytes
    public var notes: [String]

    enum CodingKeys: String, CodingKey {
        case table, dimension, rowsA = "rows_a", rowsB = "rows_b", common, onlyA = "only_a", onlyB = "only_b"
        case onlyAIDs = "only_a_ids", onlyBIDs = "only_b_ids", codecChanges = "codec_changes"
        case changedCodecRows = "changed_codec_rows", errors, worst, k, seed, neighbours
        case frequencyWeighted = "frequency_weighted", deciles, bytesA = "bytes_a", bytesB = "bytes_b", notes
    }
}

extension AnyStore {
    /// Compares table `table` of `self` (A, say production) with the table of the same name in
    /// `other` (B, say a candidate). `counts`, when given, are lookup frequencies by id (ids
    /// without a count count 0; counted ids neither store has are ignored): they weight the hot
    /// query set and give the deciles.
    ///
    /// Both tables must exist with the same dimension. Memory: the rows both have, decoded from
    /// each store (2 × rows × dimension floats), and a few arrays per row. Runs on a snapshot of
    /// each store per step (census, decoding): diff tables no one writes meanwhile.
    public func diff(_ other: AnyStore, table: String, counts: LookupCounts? = nil, options: DiffOptions = DiffOptions(),
                     progress: (@Sendable (WorkProgress) -> Void)? = nil) throws -> TableDiff {
        guard options.queryCount >= 1, options.neighbours >= 1, options.threads >= 1, options.worstRows >= 0 else {
            throw StoreError.invalidArgument("query count, neighbours and threads must be at least 1, and worst rows at least 0")
        }
        func open(_ store: AnyStore, _ side: String) throws -> TableRows {
            do { return try store.rows(of: table) } catch StoreError.tableNotFound {
                throw StoreError.invalidArgument("store \(side) has no table '\(table)'")
            }
        }
        let a = try open(self, "A"), b = try open(other, "B")
        guard a.dimension == b.dimension else {
            throw StoreError.invalidArgument("table '\(table)' has dimension \(a.dimension) in store A and \(b.dimension) in store B")
        }
        return try StoreDiff(a: a, b: b, counts: counts, options: options, progress: progress).run()
    }
}

/// The work of one `diff`.
struct StoreDiff {
    let a: TableRows, b: TableRows
    let counts: LookupCounts?
    let options: DiffOptions
    let progress: (@Sendable (WorkProgress) -> Void)?

    func report(_ stage: String, _ done: Int, _ total: Int, _ unit: String) {
        progress?(WorkProgress(stage: stage, done: done, total: total, unit: unit))
    }

    func run() throws -> TableDiff {
        let d = a.dimension
        var notes: [String] = []
        report("reading rows", 0, 2, "stores")
        var censusA = try a.census(), censusB = try b.census()
        report("reading rows", 2, 2, "stores")
        let bytesA = Self.bytes(try a.storage(), rows: censusA.ids.count)
        let bytesB = Self.bytes(try b.storage(), rows: censusB.ids.count)
        if let wanted = options.ids {
            let keep = Set(wanted)
            censusA = Self.keeping(censusA, keep)
            censusB = Self.keeping(censusB, keep)
            let absent = keep.count - Set(censusA.ids).union(censusB.ids).count
            if absent > 0 { notes.append("\(absent) of the \(keep.count) ids asked for are in neither store") }
        }

        // Rows in both, in A only, in B only (the censuses are sorted by id).
        var common: [UInt64] = [], rowA: [Int] = [], rowB: [Int] = []
        var onlyA: [UInt64] = [], onlyB: [UInt64] = []
        var i = 0, j = 0
        while i < censusA.ids.count || j < censusB.ids.count {
            if j == censusB.ids.count || (i < censusA.ids.count && censusA.ids[i] < censusB.ids[j]) {
                onlyA.append(censusA.ids[i]); i += 1
            } else if i == censusA.ids.count || censusB.ids[j] < censusA.ids[i] {
                onlyB.append(censusB.ids[j]); j += 1
            } else {
                common.append(censusA.ids[i]); rowA.append(i); rowB.append(j); i += 1; j += 1
            }
        }
        let n = common.count
        let formA = rowA.map { censusA.forms[Int(censusA.form[$0])].name }
        let formB = rowB.map { censusB.forms[Int(censusB.form[$0])].name }
        var changes: [String: [String: Int]] = [:]
        for r in 0..<n { changes[formA[r], default: [:]][formB[r], default: 0] += 1 }
        let codecChanges = changes.flatMap { from, tos in tos.map { TableDiff.CodecChange(from: from, to: $0.key, rows: $0.value) } }
            .sorted { ($0.rows, $1.from, $1.to) > ($1.rows, $0.from, $0.to) }

        // Decoded rows of both, in id order.
        var rowsA = [Float](repeating: 0, count: n * d), rowsB = [Float](repeating: 0, count: n * d)
        try common.withUnsafeBufferPointer { ids in
            try rowsA.withUnsafeMutableBufferPointer { try a.decode(ids, into: $0) { report("decoding A", $0, n, "rows") } }
            try rowsB.withUnsafeMutableBufferPointer { try b.decode(ids, into: $0) { report("decoding B", $0, n, "rows") } }
        }

        // Per row: cosine, relative L2 (nil for a zero A row), bit-identical.
        var cosine = [Double](repeating: 0, count: n), relative = [Double?](repeating: nil, count: n)
        var identical = [Bool](repeating: false, count: n)
        var normA = [Double](repeating: 0, count: n), normB = [Double](repeating: 0, count: n)
        for r in 0..<n {
            var aa = 0.0, bb = 0.0, ab = 0.0, ee = 0.0, same = true
            for c in r * d..<(r + 1) * d {
                let x = Double(rowsA[c]), y = Double(rowsB[c])
                aa += x * x; bb += y * y; ab += x * y; ee += (x - y) * (x - y)
                same = same && rowsA[c].bitPattern == rowsB[c].bitPattern
            }
            normA[r] = aa.squareRoot(); normB[r] = bb.squareRoot()
            cosine[r] = aa > 0 && bb > 0 ? ab / (normA[r] * normB[r]) : (aa == 0 && bb == 0 ? 1 : 0)
            relative[r] = aa > 0 ? ee.squareRoot() / normA[r] : nil
            identical[r] = same
            if r % 65_536 == 65_535 || r == n - 1 { report("row errors", r + 1, n, "rows") }
        }

        // Frequencies and deciles of the rows both have.
        var frequency: [Double]?
        var decileOf: [Int]?
        if let counts {
            var byID = [UInt64: Double](minimumCapacity: counts.ids.count)
            for (id, count) in zip(counts.ids, counts.counts) { byID[id] = count }
            let f = common.map { byID[$0] ?? 0 }
            if n > 0 && f.contains(where: { $0 > 0 }) {
                frequency = f
                let order = (0..<n).sorted { f[$0] != f[$1] ? f[$0] > f[$1] : $0 < $1 }   // hottest first, ties by id
                var decile = [Int](repeating: 0, count: n)
                for (rank, r) in order.enumerated() { decile[r] = rank * 10 / n }
                decileOf = decile
            } else {
                notes.append("no row both stores have is counted: no hot queries or deciles")
            }
        }

        func errors(_ rows: [Int]) -> TableDiff.RowErrors {
            let rel = rows.compactMap { relative[$0] }
            return TableDiff.RowErrors(rows: rows.count, identicalRows: rows.reduce(0) { $0 + (identical[$1] ? 1 : 0) },
                                       cosine: .init(rows.map { cosine[$0] }), relativeL2: .init(rel),
                                       zeroRowsA: rows.count - rel.count, histogram: .init(rel))
        }
        func worst(_ rows: [Int]) -> [TableDiff.WorstRow] {
            // A zero A row with a non-zero B row ranks first; then by relative L2, ties by id.
            func key(_ r: Int) -> Double { relative[r] ?? (identical[r] ? 0 : .infinity) }
            let picked = rows.sorted { key($0) != key($1) ? key($0) > key($1) : $0 < $1 }.prefix(options.worstRows)
            return picked.map { r in
                TableDiff.WorstRow(id: common[r], cosine: cosine[r], relativeL2: relative[r], codecA: formA[r], codecB: formB[r],
                                   frequency: frequency?[r], decile: decileOf.map { $0[r] + 1 })
            }
        }

        // Query sets, and the top k of each query among A's rows and among B's.
        var sets: [(name: String, drawn: String, rows: [Int])] = []
        if let frequency {
            let positive = frequency.reduce(0) { $0 + ($1 > 0 ? 1 : 0) }
            let count = min(options.queryCount, positive)
            if count < options.queryCount { notes.append("hot queries capped at \(count): only \(count) rows both have are counted") }
            var random = EvaluationRandom(seed: options.seed, stream: 1)
            sets.append(("hot", "frequency", random.weightedSample(count: count, weights: frequency)))
        }
        if n > 0 {
            let count = min(options.queryCount, n)
            if count < options.queryCount { notes.append("uniform queries capped at the \(n) rows both have") }
            var random = EvaluationRandom(seed: options.seed, stream: 2)
            sets.append(("uniform", "uniform", random.sample(count: count, from: n)))
        }
        let queryRows = Array(Set(sets.flatMap(\.rows))).sorted()
        var queryIndex = [Int: Int]()
        for (q, r) in queryRows.enumerated() { queryIndex[r] = q }
        let k = max(0, min(options.neighbours, n - 1))
        if k < options.neighbours { notes.append("top-\(k) agreement: the stores have \(n) rows in common") }
        var overlap = [Int](repeating: 0, count: queryRows.count)
        var rescans = Set<Int>()
        if k > 0 {
            let progress = self.progress
            let report: @Sendable (String, Int) -> Void = { progress?(WorkProgress(stage: $0, done: $1, total: n, unit: "rows")) }
            let nearA = rowsA.withUnsafeBufferPointer { rows in
                NeighbourSearch.run(rows: rows.baseAddress!, count: n, dimension: d, norms: normA, queries: queryRows, k: k,
                                    threads: options.threads) { report("neighbours in A", $0) }
            }
            let nearB = rowsB.withUnsafeBufferPointer { rows in
                NeighbourSearch.run(rows: rows.baseAddress!, count: n, dimension: d, norms: normB, queries: queryRows, k: k,
                                    threads: options.threads) { report("neighbours in B", $0) }
            }
            overlap = queryRows.indices.map { Set(nearA.neighbours[$0]).intersection(nearB.neighbours[$0]).count }
            rescans = nearA.rescanned.union(nearB.rescanned)
        }
        func agreement(_ set: (name: String, drawn: String, rows: [Int]), where keep: (Int) -> Bool) -> TableDiff.Agreement {
            let picked = set.rows.filter(keep)
            let hits = picked.reduce(0) { $0 + overlap[queryIndex[$1]!] }
            return TableDiff.Agreement(set: set.name, queries: picked.count,
                                       agreement: picked.isEmpty || k == 0 ? nil : Double(hits) / Double(k * picked.count))
        }
        let neighbours = sets.map { set in
            TableDiff.QuerySet(name: set.name, drawn: set.drawn, queries: set.rows.count, agreement: agreement(set) { _ in true }.agreement,
                               exactRescans: set.rows.filter { rescans.contains(queryIndex[$0]!) }.count, ids: set.rows.map { common[$0] })
        }

        var deciles: [TableDiff.Decile] = []
        if let frequency, let decileOf {
            var members = [[Int]](repeating: [], count: 10)
            for r in 0..<n { members[decileOf[r]].append(r) }
            let total = frequency.reduce(0, +)
            for decile in 0..<10 where !members[decile].isEmpty {
                let f = members[decile].map { frequency[$0] }
                deciles.append(TableDiff.Decile(
                    decile: decile + 1, freqMin: f.min()!, freqMax: f.max()!, freqShare: f.reduce(0, +) / total,
                    errors: errors(members[decile]),
                    neighbours: sets.map { agreement($0) { decileOf[$0] == decile } },
                    worst: worst(members[decile])))
            }
        }
        let all = Array(0..<n)
        return TableDiff(
            table: a.name, dimension: d, rowsA: censusA.ids.count, rowsB: censusB.ids.count, common: n,
            onlyA: onlyA.count, onlyB: onlyB.count,
            onlyAIDs: Array(onlyA.prefix(options.worstRows)), onlyBIDs: Array(onlyB.prefix(options.worstRows)),
            codecChanges: codecChanges, changedCodecRows: codecChanges.reduce(0) { $0 + ($1.from != $1.to ? $1.rows : 0) },
            errors: errors(all), worst: worst(all), k: k, seed: options.seed, neighbours: neighbours,
            frequencyWeighted: frequency != nil, deciles: deciles, bytesA: bytesA, bytesB: bytesB, notes: notes)
    }

    /// The census's rows whose ids are in `keep`.
    static func keeping(_ census: LiveRowCodecs, _ keep: Set<UInt64>) -> LiveRowCodecs {
        let rows = census.ids.indices.filter { keep.contains(census.ids[$0]) }
        return LiveRowCodecs(ids: rows.map { census.ids[$0] }, form: rows.map { census.form[$0] },
                             recordBytes: rows.map { census.recordBytes[$0] }, forms: census.forms)
    }

    /// A table's bytes summed over its stores (one, or a sharded store's shards).
    static func bytes(_ storage: [TableStorage], rows: Int) -> TableDiff.Bytes {
        var forms: [String: TableDiff.Bytes.Form] = [:]
        var disk = 0, shared = 0
        for part in storage {
            disk += part.diskBytes
            shared += part.shared.reduce(0) { $0 + $1.diskBytes }
            for form in part.forms {
                forms[form.form, default: .init(form: form.form, rows: 0, recordBytes: 0, diskBytes: 0)].rows += form.rows
                forms[form.form]!.recordBytes += form.recordBytes
                forms[form.form]!.diskBytes += form.diskBytes
            }
        }
        let sorted = forms.values.sorted { $0.diskBytes != $1.diskBytes ? $0.diskBytes > $1.diskBytes : $0.form < $1.form }
        return TableDiff.Bytes(rows: rows, diskBytes: disk, recordBytes: sorted.reduce(0) { $0 + $1.recordBytes },
                               bytesPerRow: rows > 0 ? Double(disk) / Double(rows) : 0, sharedDiskBytes: shared, forms: sorted)
    }
}
