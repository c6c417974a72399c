import Foundation
import LMDB
import EmbeddingCodecs

/// Settings of a bulk load.
public struct LoadOptions: Sendable {
    /// The fits a codec runs first (sample size, k-means iterations, the bucket rows' codec).
    public var fit = FitOptions()
    /// Codec of the bucket rows that `bucket:B` creates.
    public var bucketCodec: Codec {
        get { fit.bucketCodec }
        set { fit.bucketCodec = newValue }
    }
    /// Rows per write transaction (LMDB caps the pages one transaction may dirty).
    public var rowsPerTransaction = 65_536
    /// Where the rows go: one new segment (the default), or one LMDB key per row, the delta
    /// layer that `put` writes (slower to read and about 19 bytes more per row; for tests and
    /// for comparing the two layers).
    public var layout: LoadLayout = .segment
    /// For budget policies: the most a lookup may take to decode on average, in nanoseconds of
    /// `DecodeCost`'s model; nil picks it: with counts, twice int8's, relaxed while it would
    /// make the mix worse than one tc rate; none without counts.
    public var maxDecodeNanoseconds: Double?
    /// Leave out rows with a NaN or infinite value (counted in `LoadReport.skippedRows`) instead
    /// of refusing the load.
    public var skipInvalid = false
    /// Called as the load goes (checking the rows, scoring them for a budget, writing them),
    /// at most once per stretch of rows, from the loading thread or one of its workers.
    public var progress: (@Sendable (WorkProgress) -> Void)?
    /// Approximate bytes per segment data part (one LMDB value each).
    public var segmentPartBytes = Store.segmentPartBytes
    /// Rows the codecs fit their parameters on (PCA bases, tc models, bucket rows), instead of
    /// an even stride of the load's own rows, and the table size they fit for (tc:P% rates,
    /// bucket counts) instead of the load's row count. A sharded build hands every shard the same
    /// sample and the whole table's size, so that every shard stores the same parameters, and a
    /// store loaded whole with them too holds the same records (single-codec policies; a budget
    /// shares its tc models and still chooses each shard's codecs from that shard's rows).
    public var fitSample: (any RowSource)?
    public var fitTableRows: Int?
    /// Repack's hook: revises the policy's decision (rows kept as they are stored) after the
    /// policy decided and before anything is written (`Repack.swift`).
    var revision: (@Sendable (inout LoadDecision) throws -> Void)?
    public init() {}
}

/// Where a bulk load writes its rows.
public enum LoadLayout: Sendable {
    /// One packed, indexed segment, made visible in one commit.
    case segment
    /// One LMDB key per row, in transactions of `LoadOptions.rowsPerTransaction` rows.
    case perKey
}

/// What a bulk load did.
public struct LoadReport: Sendable {
    public let table: String
    public let rows: Int
    /// The codec of every row for a single-codec load; for tiers and budgets, the finest codec used.
    public let codec: Codec
    /// The policy and how it spent the bytes (rows, bytes, lookups per codec form).
    public let summary: PolicySummary
    /// The parameter records the load stored first (a PCA basis for `reduced:K`, tc bases and models).
    public let parameterIDs: [UInt32]
    /// The bucket rows written for `bucket:B` (fewer than B when there were fewer rows).
    public let bucketIDs: Range<UInt32>?
    /// The PCA basis a `reduced:K` load made the table's current one.
    public let basisID: UInt32?
    /// Rows left out for a NaN or infinite value (`LoadOptions.skipInvalid`), and the first of
    /// them (its row in the input, and its id).
    public internal(set) var skippedRows = 0
    public internal(set) var firstSkipped: (row: Int, id: UInt64)?
}

/// What a load decided before it writes: its groups, the candidates, each row's choice (nil:
/// all the first) and the summary its note keeps.
struct LoadDecision {
    var groups: [LoadGroup]
    var candidates: [PolicyCandidate]
    var choice: [UInt8]?
    var summary: PolicySummary
    let input: PolicyInput
}

/// What a load stores before its rows, for one or more of the encoders the rows choose from.
struct LoadGroup {
    var codec: Codec
    var plan: LoadPlan
    /// The encoders, each with the index of the candidate it encodes, once the plan is stored.
    var makeEncoders: (_ parameterIDs: [UInt32], _ bucketIDs: Range<UInt32>?, _ storedBucketRows: [Float]) throws -> [(Int, any RowEncoder)]
}

extension Store {
    /// Loads `count` rows (`rows` is `count × dimension` floats, row-major) into the table
    /// `name`, creating it with this dimension when it does not exist, every row with `codec`.
    @discardableResult
    public func load(table name: String, ids: [UInt64]? = nil, rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int,
                     codec: Codec, options: LoadOptions = LoadOptions()) throws -> LoadReport {
        try load(table: name, ids: ids, rows: rows, count: count, dimension: dimension, policy: .single(codec), options: options)
    }

    /// Loads `count` rows (`rows` is `count × dimension` floats, row-major) into the table
    /// `name`, creating it with this dimension when it does not exist, each row with the codec
    /// `policy` gives it. `counts` are the rows' access counts (input order), which tiers rank by
    /// and budgets weigh by; without them rows count equally.
    ///
    /// `ids` defaults to `0..<count`. Everything is checked before anything is written: the
    /// shape, the ids (no duplicates), the counts (finite, not negative), that every value is
    /// finite, and that every row fits its codec; the first bad row is named in the error. Codec
    /// parameters (PCA basis, tc models, k-means bucket rows) are fitted on these rows.
    ///
    /// Rows become one new segment, which shadows older segments and replaces the table's delta
    /// rows of the same ids; it becomes visible in one commit, so a crash part-way leaves the
    /// table's rows as they were, and an error removes what was written. With
    /// `options.layout = .perKey` rows go to the delta instead, in transactions of
    /// `options.rowsPerTransaction` rows, and a crash keeps the ones committed. A table the load
    /// creates becomes visible in its last commit, with its rows: a load that fails or is killed
    /// leaves no table (the next load of the name takes over what it left).
    @discardableResult
    public func load(table name: String, ids: [UInt64]? = nil, rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int,
                     policy: CodecPolicy, counts: [Double]? = nil, options: LoadOptions = LoadOptions()) throws -> LoadReport {
        guard dimension >= 1 else {
            throw StoreError.invalidArgument("rows for table '\(name)' have dimension \(dimension); it must be at least 1")
        }
        guard count >= 0, rows.count == count * dimension else {
            throw StoreError.invalidArgument("rows hold \(rows.count) floats, not \(count) rows × \(dimension)")
        }
        return try load(table: name, ids: ids, source: MemoryRows(rows, count: count, dimension: dimension), policy: policy,
                        counts: counts, options: options)
    }

    /// `load` from a `RowSource`, read a stretch at a time: the load keeps in memory the ids,
    /// the counts, a sample for the fits and what the policy scores per row (for a budget, a
    /// few bytes per row and candidate), never the table.
    @discardableResult
    public func load(table name: String, ids: [UInt64]? = nil, source: any RowSource, policy: CodecPolicy, counts: [Double]? = nil,
                     options: LoadOptions = LoadOptions()) throws -> LoadReport {
        let count = source.count, dimension = source.dimension
        let ids = try startLoad(table: name, ids: ids, count: count, dimension: dimension)
        if let counts {
            guard counts.count == count else {
                throw StoreError.invalidArgument("\(counts.count) access counts for \(count) rows")
            }
            if let bad = counts.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
                throw StoreError.invalidArgument("the access count of row \(bad) (id \(ids[bad])) is \(counts[bad]); counts must be finite and not negative")
            }
        }
        switch policy {
        case .tiers(let tiers):
            try CodecPolicy.validate(tiers)
            if counts == nil { throw StoreError.invalidArgument("tiers rank rows by access count: give the counts (--freq)") }
        case .budget(let budget, _):
            if case .fraction(let fraction) = budget, !(fraction > 0 && fraction <= 1) {
                throw StoreError.invalidArgument("a budget of \(fraction) of the float32 payload: it must be in (0, 1]")
            }
            if case .bytes(let bytes) = budget, bytes <= 0 {
                throw StoreError.invalidArgument("a budget of \(bytes) bytes: it must be positive")
            }
        case .single: break
        }
        let order = try Self.sortedOrder(ids)
        var skipped: [Int] = []
        try source.forEachStretch { range, rows in
            if options.skipInvalid {
                for r in 0..<range.count where rows[r * dimension..<(r + 1) * dimension].contains(where: { !$0.isFinite }) {
                    skipped.append(range.lowerBound + r)
                }
            } else {
                try Self.checkFinite(rows, dimension: dimension, ids: ids, first: range.lowerBound, table: name)
            }
            options.progress?(WorkProgress(stage: "checking", done: range.upperBound, total: count, unit: "rows"))
        }
        if !skipped.isEmpty {
            // Load the other rows, and say which were left out.
            guard skipped.count < count else {
                throw StoreError.invalidArgument("every one of the \(count) rows has a NaN or infinite value; nothing was written")
            }
            var keep = [Int]()
            keep.reserveCapacity(count - skipped.count)
            var next = 0
            for i in 0..<count {
                if next < skipped.count && skipped[next] == i { next += 1 } else { keep.append(i) }
            }
            var inner = options
            inner.skipInvalid = false
            var report = try load(table: name, ids: keep.map { ids[$0] }, source: SubsetRows(source, rows: keep), policy: policy,
                                  counts: counts.map { counts in keep.map { counts[$0] } }, options: inner)
            report.skippedRows = skipped.count
            report.firstSkipped = (skipped[0], ids[skipped[0]])
            return report
        }

        let existing = try existingTable(name, dimension: dimension)
        let firstCodec: Codec
        switch policy {
        case .single(let codec): firstCodec = codec
        case .tiers(let tiers): firstCodec = tiers[0].codec
        case .budget: firstCodec = .fp32
        }
        guard count > 0 else {
            if existing == nil { _ = try createOrAdoptTable(name, dimension: dimension) }
            return LoadReport(table: name, rows: 0, codec: firstCodec, summary: PolicySummary(policy: policy.description, shares: []),
                              parameterIDs: [], bucketIDs: nil, basisID: nil)
        }
        // Decide each row's codec and fit the codecs' parameters on (a sample of) the rows, and
        // check every row fits its codec, all before the table is created or anything is written.
        var fit = options.fit
        fit.overheadBytesPerRow = Self.overheadBytesPerRow(ids: ids, order: order, layout: options.layout)
        // The fits' sample: k-means (buckets) takes up to `sampleLimit` rows; PCA and tc models
        // no more than 30·d and 20,000; self-contained codecs none.
        let needsSample: Bool, needsBuckets: Bool
        switch policy {
        case .single(let codec):
            needsSample = !codec.rowCodec.canStoreBucketRows
            needsBuckets = codec.rowCodec.name.hasPrefix("bucket")
        case .tiers: needsSample = false; needsBuckets = false   // each tier samples its own rows
        case .budget: needsSample = true; needsBuckets = false
        }
        if let fitSample = options.fitSample, fitSample.dimension != dimension {
            throw StoreError.invalidArgument("the fit sample's rows have \(fitSample.dimension) values, the table's \(dimension)")
        }
        if let rows = options.fitTableRows, rows < 1 { throw StoreError.invalidArgument("fitTableRows is \(rows); it must be at least 1") }
        let (sample, sampleCount) = needsSample
            ? try (options.fitSample ?? source).sample(limit: needsBuckets ? fit.sampleLimit : min(fit.sampleLimit, max(20_000, 30 * dimension)))
            : ([Float](), 0)
        let input = PolicyInput(source: source, sample: sample, sampleCount: sampleCount, counts: counts, fit: fit,
                                overheadBytesPerRow: fit.overheadBytesPerRow, fitTableRows: options.fitTableRows ?? count,
                                sampleIsLoad: options.fitSample == nil && sampleCount == count, progress: options.progress)
        let (groups, candidates, choice, summary) = try plan(policy, input: input, table: name, ids: ids,
                                                             maxDecodeNanoseconds: options.maxDecodeNanoseconds)
        var decision = LoadDecision(groups: groups, candidates: candidates, choice: choice, summary: summary, input: input)
        try options.revision?(&decision)
        return try writingInto(existing, name, dimension: dimension) { table in
            try write(into: table, groups: decision.groups, candidates: decision.candidates, choice: decision.choice,
                      summary: decision.summary, ids: ids, order: order, source: source, options: options)
        }
    }

    /// The checks every bulk load starts with: the store is writable (and followed to the
    /// generation a swap made), the name and the dimension are valid, and the ids (defaulting
    /// to `0..<count`) are `count`. Returns the ids.
    func startLoad(table name: String, ids: [UInt64]?, count: Int, dimension: Int) throws -> [UInt64] {
        try requireWritable()
        followPointer()   // a load started after a swap goes to the new generation
        try Store.validateTableName(name)
        guard dimension >= 1 else {
            throw StoreError.invalidArgument("rows for table '\(name)' have dimension \(dimension); it must be at least 1")
        }
        let ids = ids ?? (0..<UInt64(count)).map { $0 }
        guard ids.count == count else {
            throw StoreError.invalidArgument("\(ids.count) ids for \(count) rows")
        }
        return ids
    }

    /// The table `name` when it exists, nil when not; throws when it has another dimension.
    func existingTable(_ name: String, dimension: Int) throws -> Table? {
        let existing = try? table(name)
        if let existing, existing.dimension != dimension {
            throw StoreError.dimensionMismatch(table: name, expected: existing.dimension, actual: dimension)
        }
        return existing
    }

    /// Runs a load's writes (`body`) into `existing`, or into the table the load creates
    /// (`tableForLoad`: visible in the load's last commit), which is dropped when `body` throws.
    func writingInto<R>(_ existing: Table?, _ name: String, dimension: Int, _ body: (Table) throws -> R) throws -> R {
        let (table, createdTable) = try existing.map { ($0, false) } ?? tableForLoad(name, dimension: dimension)
        if createdTable { CrashPoints.reach("load.table-created") }
        do {
            return try body(table)
        } catch {
            if createdTable { try? dropIfStillBeingCreated(table) }
            throw error
        }
    }

    /// Creates table `name`, or, when another process created it since this one looked, takes
    /// that one if its dimension matches: two loads creating one table both succeed. Returns
    /// the table and whether this call created it.
    func createOrAdoptTable(_ name: String, dimension: Int) throws -> (Table, Bool) {
        do {
            return (try createTable(name, dimension: dimension), true)
        } catch StoreError.tableExists {
            let table = try table(name)
            guard table.dimension == dimension else {
                throw StoreError.dimensionMismatch(table: name, expected: table.dimension, actual: dimension)
            }
            return (table, false)
        }
    }

    /// The load groups, the candidates rows choose from, each row's choice (nil: all the first)
    /// and the summary, for `policy`.
    private func plan(_ policy: CodecPolicy, input: PolicyInput, table name: String, ids: [UInt64], maxDecodeNanoseconds: Double?) throws
        -> ([LoadGroup], [PolicyCandidate], [UInt8]?, PolicySummary) {
        let count = input.count, dimension = input.dimension
        func planned(_ codec: Codec) throws -> LoadPlan {
            do {
                return try input.planLoad(codec)
            } catch let error as CodecError {
                throw StoreError(error, table: name, codec: codec)
            }
        }
        // Every row is checked against its codec's plan (fp16's range) in one pass.
        func check(_ plans: [Int: (LoadPlan, Codec)], choice: [UInt8]?) throws {
            guard plans.values.contains(where: { $0.0.checkRow != nil }) else { return }
            try input.source.forEachStretch { range, rows in
                for i in range {
                    guard let (plan, codec) = plans[Int(choice?[i] ?? 0)], let check = plan.checkRow else { continue }
                    do {
                        try check(UnsafeBufferPointer(rebasing: rows[(i - range.lowerBound) * dimension..<(i - range.lowerBound + 1) * dimension]))
                    } catch let error as CodecError {
                        throw StoreError.encoding(table: name, id: ids[i], codec: "\(codec) (row \(i))", underlying: error)
                    }
                }
            }
        }
        func group(_ codec: Codec, _ plan: LoadPlan, candidate: Int) -> LoadGroup {
            LoadGroup(codec: codec, plan: plan) { p, b, s in [(candidate, try plan.makeEncoder(p, b, s))] }
        }
        switch policy {
        case .single(let codec):
            let plan = try planned(codec)
            try check([0: (plan, codec)], choice: nil)
            let summary = PolicySummary(policy: policy.description, shares: [])
            return ([group(codec, plan, candidate: 0)], [PolicyCandidate(codec: codec, label: codec.description, fixedBytes: nil)], nil, summary)

        case .tiers(let tiers):
            // Rows by access count, hottest first; tier t takes the next ⌈fraction × count⌉ rows.
            let byRank = input.accessOrder()
            var choice = [UInt8](repeating: 0, count: count)
            var start = 0
            var tierRows: [ArraySlice<Int>] = []
            for (t, tier) in tiers.enumerated() {
                let end = t == tiers.count - 1 ? count : min(count, start + Int((tier.fraction! * Double(count)).rounded()))
                tierRows.append(byRank[start..<end])
                for i in byRank[start..<end] { choice[i] = UInt8(t) }
                start = end
            }
            var groups: [LoadGroup] = []
            var candidates: [PolicyCandidate] = []
            var plans: [Int: (LoadPlan, Codec)] = [:]
            for (t, tier) in tiers.enumerated() {
                candidates.append(PolicyCandidate(codec: tier.codec, label: tier.codec.description, fixedBytes: nil))
                guard !tierRows[t].isEmpty else { continue }
                // A tier's parameters are fitted on (an even stride of) its own rows.
                let plan: LoadPlan
                if tier.codec.rowCodec.canStoreBucketRows {
                    plan = try planned(tier.codec)
                } else {
                    let members = tierRows[t].sorted()
                    let take = min(members.count, RowSampling.limit(input.fit.sampleLimit, dimension: dimension))
                    var rows = [Float]()
                    rows.reserveCapacity(take * dimension)
                    for j in 0..<take {
                        let i = members[take == members.count ? j : j * members.count / take]
                        try input.source.withRows(i..<i + 1) { rows.append(contentsOf: $0) }
                    }
                    input.source.release()
                    var options = input.fit
                    options.tableRows = members.count
                    plan = try rows.withUnsafeBufferPointer { rows in
                        do {
                            return try tier.codec.rowCodec.planLoad(tier.codec, rows: rows, count: take, dimension: dimension, options: options)
                        } catch let error as CodecError {
                            throw StoreError(error, table: name, codec: tier.codec)
                        }
                    }
                }
                plans[t] = (plan, tier.codec)
                groups.append(group(tier.codec, plan, candidate: t))
            }
            try check(plans, choice: choice)
            var summary = PolicySummary(policy: policy.description, shares: [])
            let decision = PolicyDecision(candidates: candidates, choice: choice, summary: summary)
            summary.shares = BudgetPolicy.shares(decision, input: input) { _, _ in 0 }
            return (groups, candidates, choice, summary)

        case .budget(let budget, let weighting):
            let decision: PolicyDecision
            do {
                decision = try BudgetPolicy.decide(input, budget: budget, weighting: weighting,
                                                   maxDecodeNanoseconds: maxDecodeNanoseconds)
            } catch let error as CodecError {
                throw StoreError.invalidArgument("budget policy for table '\(name)': \(error)")
            }
            var groups: [LoadGroup] = []
            let used = Set(decision.choice.map(Int.init))
            for (k, candidate) in decision.candidates.enumerated() where used.contains(k) && !decision.ladderCandidates.contains(k) {
                groups.append(group(candidate.codec, try planned(candidate.codec), candidate: k))
            }
            if let ladder = decision.ladder {
                let rates = decision.ladderCandidates.filter(used.contains)
                var plan = LoadPlan { _, _, _ in preconditionFailure("the ladder makes its encoders itself") }
                plan.parameterRecords = [{ _ in ladder.basis.record }] + rates.map { k in
                    { ids in try ladder.models(basisID: ids[0])[k - decision.ladderCandidates[0]].record }
                }
                let first = decision.ladderCandidates[0]
                groups.append(LoadGroup(codec: decision.candidates[first].codec, plan: plan) { ids, _, _ in
                    let models = try ladder.models(basisID: ids[0])
                    return rates.enumerated().map { position, k in (k, ladder.encoder(models[k - first], modelID: ids[1 + position])) }
                })
            }
            return (groups, decision.candidates, decision.choice, decision.summary)
        }
    }

    /// Stores the groups' parameters, then the rows, each with its candidate's encoder.
    private func write(into table: Table, groups: [LoadGroup], candidates: [PolicyCandidate], choice: [UInt8]?,
                       summary: PolicySummary, ids: [UInt64], order: [Int], source: any RowSource,
                       options: LoadOptions) throws -> LoadReport {
        // Store what the rows point at, then make the encoders.
        let stored = try write { batch in
            try groups.map { group -> ([UInt32], Range<UInt32>?, [Float]) in
                var parameterIDs: [UInt32] = []
                for (index, record) in group.plan.parameterRecords.enumerated() {
                    parameterIDs.append(try batch.addParameterRecord(try record(parameterIDs), to: table,
                                                                     makeCurrentBasis: group.plan.makesCurrentBasis && index == group.plan.parameterRecords.count - 1))
                }
                guard let bucketCodec = group.plan.bucketCodec, !group.plan.bucketRows.isEmpty else {
                    return (parameterIDs, Range<UInt32>?.none, [Float]())
                }
                let range = try group.plan.bucketRows.withUnsafeBufferPointer { try batch.addBucketRows(table, rows: $0, codec: bucketCodec) }
                return (parameterIDs, range, try batch.decodeBucketRows(table, range))
            }
        }
        CrashPoints.reach("load.parameters-stored")
        // Encoders keep scratch space: one set per encoding thread.
        func makeEncoders() throws -> [(any RowEncoder)?] {
            var encoders = [(any RowEncoder)?](repeating: nil, count: candidates.count)
            for (group, (parameterIDs, bucketIDs, bucketRows)) in zip(groups, stored) {
                do {
                    for (k, encoder) in try group.makeEncoders(parameterIDs, bucketIDs, bucketRows) { encoders[k] = encoder }
                } catch let error as CodecError {
                    throw StoreError(error, table: table.name, codec: group.codec)
                }
            }
            return encoders
        }
        let encoders = try makeEncoders()
        let allParameterIDs = stored.flatMap(\.0)
        let report = LoadReport(table: table.name, rows: ids.count, codec: candidates[Int(choice?.min() ?? 0)].codec, summary: summary,
                                parameterIDs: allParameterIDs, bucketIDs: stored.compactMap(\.1).first,
                                basisID: Array(zip(groups, stored)).last(where: { $0.0.plan.makesCurrentBasis })?.1.0.last)
        let formatVersion = zip(candidates, encoders).filter { $0.1 != nil }.map { $0.0.codec.rowCodec.formatVersion }.max() ?? 1
        let threads = options.layout == .segment ? max(1, min(ProcessInfo.processInfo.activeProcessorCount, ids.count / 16_384)) : 1
        let encoderSets = [encoders] + (try (1..<threads).map { _ in try makeEncoders() })
        try writeRows(table, ids: ids, order: order,
                      records: EncodedLoadRecords(source: source, encoderSets: encoderSets, candidates: candidates, choice: choice,
                                                  ids: ids, table: table.name),
                      formatVersion: formatVersion, summary: summary, options: options)
        return report
    }

    /// Bytes on disk a row of this load costs beyond its record. Per-key rows: one LMDB key a
    /// row, as measured from page counts (`SegmentSizeTests`). A segment: its part 0 as FORMAT.md
    /// sizes it for these ids (a sized segment: 64-byte group entries of 29 rows, and at most
    /// 63 bytes of padding before them; a part boundary's partly filled entry is not counted),
    /// one LMDB overflow run (16-byte page header) in whole pages, and a page more for the
    /// rounding of the last data part (half a page on average: counting half put a 4,000-row
    /// tc:25% table 2 KB over its budget once the index grew), shared by the rows.
    static func overheadBytesPerRow(ids: [UInt64], order: [Int], layout: LoadLayout) -> Double {
        guard layout == .segment else { return 21 }
        guard let first = order.first.map({ ids[$0] }), let last = order.last.map({ ids[$0] }) else { return 0 }
        let n = order.count
        var index = SegmentHeader.size + GroupEntry.size - 1 + GroupEntry.size * GroupEntry.count(rows: n, width: 2)
        if last - first != UInt64(n - 1) {
            let shift = SegmentHeader.directoryShift(count: n, first: first, last: last)
            index += 8 * n + 4 * (Int((last - first) >> UInt64(shift)) + 2)
        }
        let page = 4096
        let pages = Double((index + 16 + page - 1) / page) + 1   // the last data part's rounding: at most a page
        return pages * Double(page) / Double(n)
    }

    /// Positions of `ids` in ascending id order; throws on a duplicate, naming both rows.
    static func sortedOrder(_ ids: [UInt64]) throws(StoreError) -> [Int] {
        let order = ids.indices.sorted { ids[$0] < ids[$1] || (ids[$0] == ids[$1] && $0 < $1) }
        for position in order.indices.dropFirst() where ids[order[position]] == ids[order[position - 1]] {
            throw .invalidArgument("id \(ids[order[position]]) appears twice (rows \(order[position - 1]) and \(order[position])); nothing was written")
        }
        return order
    }

    /// Finds the first row with a non-finite value in `rows`, rows `first…` of the load.
    static func checkFinite(_ rows: UnsafeBufferPointer<Float>, dimension: Int, ids: [UInt64], first: Int = 0, table: String) throws(StoreError) {
        if let bad = firstNonFinite(rows) {
            let row = first + bad / dimension
            throw .nonFiniteValue(table: table, row: row, id: ids[row], column: bad % dimension, value: rows[bad])
        }
    }
}

extension WriteBatch {
    /// Bucket rows `range` of `table` as they decode from this transaction, row-major.
    func decodeBucketRows(_ table: Table, _ range: Range<UInt32>) throws -> [Float] {
        let d = table.dimension
        let decoders = TableDecoders(table: table)
        let parameters = TableParameters(txn, table: table)
        var rows = [Float](repeating: 0, count: range.count * d)
        try rows.withUnsafeMutableBufferPointer { out in
            for (i, bucket) in range.enumerated() {
                guard let record = try parameters.bucketRecord(bucket) else {
                    throw StoreError.corruptMetadata(table: table.name, reason: "bucket row \(bucket) was not written")
                }
                try decoders.decode(record, id: UInt64(bucket), into: out.baseAddress! + i * d, parameters: parameters)
            }
        }
        return rows
    }
}
