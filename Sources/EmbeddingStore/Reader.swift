import CEmbeddingKernels
import EmbeddingCodecs
import LMDB

/// What a lookup does with an id that is not in the table.
public enum MissingRows: Sendable {
    /// Fill its output row with zeros.
    case zeros
    /// Throw `StoreError.rowNotFound` naming the first missing id.
    case error
}

/// How a pooled lookup combines the rows of one bag.
public enum Pooling: Sendable {
    /// Σ wᵢ·xᵢ (wᵢ = 1 without weights).
    case sum
    /// Σ wᵢ·xᵢ / (number of ids in the bag); an empty bag gives zeros.
    case mean
}

/// Batched lookups for one thread.
///
/// A reader owns one LMDB read transaction that it renews for each call and resets after it,
/// so each call sees one consistent snapshot and no snapshot is pinned between calls. It is
/// not `Sendable`: make one per thread (each holds an LMDB reader slot while it lives).
///
/// A call is two passes over the batch. The first finds every id's record (delta first when the
/// table has one, then segments newest first), prefetching index entries `prefetchDistance`
/// ids ahead and touching no record. The second, in C (`emb_decode_records`, `emb_pool_bags`),
/// decodes or pools the records, prefetching them ahead; it leaves records of codecs with
/// parameters or bucket rows to their decoders. A table that is one dense segment with an empty
/// delta skips the first pass: the second finds records from the ids. What a reader learned
/// about a table's segments (map pointers) is kept while the snapshot stays the same, so a call
/// on an unchanged store reads no metadata and allocates nothing.
public final class Reader {
    let store: Store
    /// The store's generation this reader reads, and `store.generationSerial` when it moved
    /// there; it moves to the store's next one at a batch boundary (Reader+Generations.swift).
    var generation: Generation
    var generationSerial: Int
    var txn: Transaction
    var views: [UInt32: TableView] = [:]
    /// Per id of the current batch: its record, or `missingRecord` (a nil base address).
    private var located: UnsafeMutablePointer<UnsafeRawBufferPointer>
    private var locatedCapacity = 0
    /// Records of codecs that decode faster in batches (tc), set aside while a batch is decoded:
    /// their positions in the batch with their grouping keys, and the gathered records, ids and
    /// decoded rows. Grown with the batch, never shrunk (no allocation per call once warm).
    private var deferred = DeferredRows()
    /// For tests: the instruction set `emb_pool_bags_isa` pools with and `emb_decode_records_isa`
    /// decodes with (nil: the best this CPU has).
    var poolInstructionSet: Int32?
    var decodeInstructionSet: Int32?
    /// The records of one run a pooled lookup hands to their decoder.
    private var runRecords = RecordRun()
    private var counting: ReaderCounting?

    /// Counts the ids this reader looks up (a sample of them) into `counter`, for
    /// `AccessCounter.flush` to keep in the store; nil (the default) counts nothing. Setting it
    /// hands over what the reader counted for the previous counter.
    public var counter: AccessCounter? {
        get { counting?.counter }
        set {
            counting?.handOver()
            counting = newValue.map { ReaderCounting(counter: $0) }
        }
    }

    init(store: Store) throws {
        self.store = store
        generationSerial = store.generationSerial.load(ordering: .acquiring)
        generation = store.generation
        var txn = try generation.environment.beginRead()
        txn.reset()
        self.txn = txn
        located = .allocate(capacity: 1)
        locatedCapacity = 1
    }

    deinit {
        counting?.handOver()
        located.deallocate()
        deferred.deallocate()
        runRecords.deallocate()
    }

    /// Decodes the rows of `ids` into `out` (`ids.count × table.dimension` floats, row i at
    /// `i * dimension`), straight from the memory map. Missing ids follow `missing`.
    /// Returns how many ids were found.
    @discardableResult
    public func lookup(_ table: Table, ids: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableBufferPointer<Float>,
                       missing: MissingRows = .zeros) throws -> Int {
        try lookup(table, ids: ids, into: out, found: nil, missing: missing)
    }

    /// Like `lookup(_:ids:into:missing:)`, also writing `found[i]` for each id (missing rows are
    /// zero-filled).
    @discardableResult
    public func lookup(_ table: Table, ids: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableBufferPointer<Float>,
                       found: UnsafeMutableBufferPointer<Bool>) throws -> Int {
        guard found.count >= ids.count else {
            throw StoreError.invalidArgument("found mask has \(found.count) entries for \(ids.count) ids")
        }
        return try lookup(table, ids: ids, into: out, found: found, missing: .zeros)
    }

    /// Convenience: the rows of `ids` as a new array of `ids.count × dimension` floats.
    public func lookup(_ table: Table, ids: [UInt64], missing: MissingRows = .zeros) throws -> [Float] {
        var out = [Float](repeating: 0, count: ids.count * table.dimension)
        try ids.withUnsafeBufferPointer { ids in
            try out.withUnsafeMutableBufferPointer { out in _ = try lookup(table, ids: ids, into: out, missing: missing) }
        }
        return out
    }

    /// Pooled lookup ("embedding bag"): bag `b` is `ids[offsets[b] ..< offsets[b + 1]]`, and
    /// `out[b]` (row `b` of `offsets.count − 1` rows of `table.dimension` floats) becomes the
    /// pooled rows of its ids, with optional per-id `weights` (parallel to `ids`). Rows of any
    /// codec mix; an empty bag gives zeros; missing ids follow `missing` (`.zeros` adds nothing).
    /// Returns how many ids were found.
    @discardableResult
    public func lookupPooled(_ table: Table, ids: UnsafeBufferPointer<UInt64>, offsets: UnsafeBufferPointer<Int>,
                             weights: UnsafeBufferPointer<Float>? = nil, pooling: Pooling = .sum,
                             into out: UnsafeMutableBufferPointer<Float>, missing: MissingRows = .zeros) throws -> Int {
        let feature = PooledFeature(table: table, ids: ids, offsets: offsets, weights: weights, pooling: pooling)
        try feature.check(name: "table '\(table.name)'")
        let bags = max(offsets.count - 1, 0)
        guard out.count >= bags * table.dimension else {
            throw StoreError.invalidArgument("output buffer holds \(out.count) floats; \(bags) bags × dimension \(table.dimension) need \(bags * table.dimension)")
        }
        return try withSnapshot(of: table) { view in
            try pool(feature, in: view, into: out.baseAddress!, stride: table.dimension, missing: missing)
        }
    }

    /// A multi-table pooled request, as TorchRec's KeyedJaggedTensor lays one out: for each of
    /// `features` (a table, its ids, `batchSize + 1` bag offsets, optional weights, a pooling),
    /// bag `b` of the feature is sample `b`'s. Row `b` of `out` (`batchSize` rows of D floats, D
    /// the features' dimensions added up) becomes the pooled bags of sample `b`, feature after
    /// feature, as TorchRec's pooled embeddings (a KeyedTensor) are. Every feature is read from
    /// one snapshot. Returns how many ids were found.
    @discardableResult
    public func lookupPooled(_ features: [PooledFeature], batchSize: Int, into out: UnsafeMutableBufferPointer<Float>,
                             missing: MissingRows = .zeros) throws -> Int {
        guard batchSize >= 0 else { throw StoreError.invalidArgument("batch size \(batchSize) is negative") }
        var width = 0
        for (f, feature) in features.enumerated() {
            try feature.check(name: "feature \(f) (table '\(feature.table.name)')")
            guard feature.offsets.count == batchSize + 1 else {
                throw StoreError.invalidArgument("feature \(f) (table '\(feature.table.name)') has \(feature.offsets.count) offsets; a batch of \(batchSize) needs \(batchSize + 1)")
            }
            width += feature.table.dimension
        }
        guard out.count >= batchSize * width else {
            throw StoreError.invalidArgument("output buffer holds \(out.count) floats; \(batchSize) samples × \(width) (the features' dimensions) need \(batchSize * width)")
        }
        guard let first = features.first else { return 0 }
        followStoreIfMoved()
        // Views first (they may open the tables), then one snapshot for all of them.
        var views: [TableView] = []
        views.reserveCapacity(features.count)
        for feature in features { views.append(try view(of: feature.table)) }
        return try withSnapshot(of: first.table) { _ in
            var found = 0, column = 0
            for (f, feature) in features.enumerated() {
                if f > 0 { try translatingErrors { try views[f].refresh(store: store, txn: txn) } }
                found += try pool(feature, in: views[f], into: out.baseAddress! + column, stride: width, missing: missing)
                column += feature.table.dimension
            }
            return found
        }
    }

    /// Pools the bags of `feature` in the snapshot `view` was refreshed in: bag `b` into the
    /// `dimension` floats at `out + b * stride`.
    ///
    /// Two passes: every id's record is found first (index entries prefetched ahead, records
    /// not touched), then `emb_pool_bags` runs the embedding-bag loop over the located records,
    /// prefetching records ahead across bags, as FBGEMM's kernel does over its table. Records it
    /// does not take (codecs with parameters or bucket rows, or a size that is not the codec's)
    /// go to their decoders, each run of one tag in one call, and the loop goes on after them.
    private func pool(_ feature: PooledFeature, in view: TableView, into out: UnsafeMutablePointer<Float>, stride: Int,
                      missing: MissingRows) throws -> Int {
        let (ids, offsets, weights) = (feature.ids, feature.offsets, feature.weights)
        let bags = max(offsets.count - 1, 0)
        guard bags > 0 else { return 0 }
        let first = offsets[0]
        let used = UnsafeBufferPointer(rebasing: ids[first..<offsets[bags]])
        defer { counting?.record(used, table: view.table.id) }
        let parameters = TableParameters(txn, table: view.table)
        let decoders = view.decoders
        if missing == .zeros, let dense = view.denseRows {
            // One dense segment: the kernel finds each record from its id (see TableView.denseRows).
            return try offsets.withMemoryRebound(to: Int64.self) { offsets64 in try withUnsafePointer(to: dense) { densePointer in
                var job = emb_pool_job(
                    records: nil, ids: ids.baseAddress, dense: densePointer, offsets: offsets64.baseAddress!,
                    weights: weights?.baseAddress, bags: bags, first: first, d: view.table.dimension, stride: stride, out: out,
                    kinds: decoders.pooledRowKinds, mean: feature.pooling == .mean ? 1 : 0, missed: 0)
                try runPoolJob(&job, ids: ids, weights: weights, record: { position in
                    let r = ids[position] &- dense.first_id
                    guard r < dense.rows, let found = view.hotSegments[0].record(ofRow: Int(r)) else { return missingRecord }
                    return found
                }, parameters: parameters, decoders: decoders)
                return used.count - job.missed
            } }
        }
        let (located, foundCount) = try locateAll(used, in: view, missing: missing)
        try offsets.withMemoryRebound(to: Int64.self) { offsets64 in
            var job = emb_pool_job(
                records: UnsafeRawPointer(located).assumingMemoryBound(to: emb_record.self), ids: nil, dense: nil,
                offsets: offsets64.baseAddress!, weights: weights?.baseAddress, bags: bags, first: first, d: view.table.dimension,
                stride: stride, out: out, kinds: decoders.pooledRowKinds, mean: feature.pooling == .mean ? 1 : 0, missed: 0)
            try runPoolJob(&job, ids: ids, weights: weights, record: { located[$0 - first] }, parameters: parameters, decoders: decoders)
        }
        return foundCount
    }

    /// Runs `emb_pool_bags` to the end of `job`: each record it stops at goes to its decoder
    /// (with the rest of its run of one tag in the bag), or is refused with the decoder's reason.
    /// `record(p)` is the record of position p (a nil base address when missing).
    private func runPoolJob(_ job: inout emb_pool_job, ids: UnsafeBufferPointer<UInt64>, weights: UnsafeBufferPointer<Float>?,
                            record: (Int) -> UnsafeRawBufferPointer, parameters: TableParameters, decoders: TableDecoders) throws {
        let offsets = job.offsets!
        var bag = 0, position = Int(job.first)
        while true {
            let status = Int(poolInstructionSet.map { emb_pool_bags_isa(&job, &bag, &position, $0) } ?? emb_pool_bags(&job, &bag, &position))
            if status == EMB_POOL_DONE { return }
            guard status > 0 else { throw StoreError.invalidArgument("this CPU lacks the pooled kernel's instruction set \(poolInstructionSet ?? -1)") }
            let first = record(position)
            if status == EMB_POOL_REFUSED { throw decoders.refusal(first, id: ids[position], parameters: parameters) }
            // The run of records of this tag in the bag, gathered for one decoder call.
            let tag = TableDecoders.tag(of: first)
            let bagEnd = Int(offsets[bag + 1])
            var count = 0
            while position + count < bagEnd {
                let next = record(position + count)
                guard next.baseAddress != nil, TableDecoders.tag(of: next) == tag, count == 0 || !decoders.poolsInKernel(tag) else { break }
                runRecords.reserve(count + 1)
                runRecords.records[count] = next
                count += 1
            }
            try decoders.accumulate(runRecords.records, tag: tag, ids: ids.baseAddress! + position,
                                    weights: weights.map { $0.baseAddress! + position }, count: count,
                                    into: job.out + bag * job.stride, parameters: parameters)
            position += count
        }
    }

    private func lookup(_ table: Table, ids: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableBufferPointer<Float>,
                        found: UnsafeMutableBufferPointer<Bool>?, missing: MissingRows) throws -> Int {
        try table.requireLive()
        let d = table.dimension
        guard out.count >= ids.count * d else {
            throw StoreError.invalidArgument("output buffer holds \(out.count) floats; \(ids.count) ids × dimension \(d) need \(ids.count * d)")
        }
        defer { counting?.record(ids, table: table.id) }
        return try withSnapshot(of: table) { view in
            guard !ids.isEmpty else { return 0 }
            let parameters = TableParameters(txn, table: view.table)
            if missing == .zeros, let dense = view.denseRows {
                // One dense segment: the kernel finds each record from its id (see TableView.denseRows).
                let missed = try withUnsafePointer(to: dense) { densePointer in
                    var job = emb_decode_job(records: nil, ids: ids.baseAddress, dense: densePointer, count: ids.count, d: d,
                                             out: out.baseAddress, kinds: view.decoders.pooledRowKinds, missed: 0)
                    try runDecodeJob(&job, ids: ids, record: { position in
                        let r = ids[position] &- dense.first_id
                        guard r < dense.rows, let found = view.hotSegments[0].record(ofRow: Int(r)) else { return missingRecord }
                        return found
                    }, parameters: parameters, decoders: view.decoders)
                    return job.missed
                }
                if let found {
                    for i in 0..<ids.count { found[i] = ids[i] &- dense.first_id < dense.rows }
                }
                return ids.count - missed
            }
            // Every id's record first (index entries prefetched ahead), then the decoding pass.
            let (located, foundCount) = try locateAll(ids, in: view, missing: missing)
            var job = emb_decode_job(records: UnsafeRawPointer(located).assumingMemoryBound(to: emb_record.self), ids: nil, dense: nil,
                                     count: ids.count, d: d, out: out.baseAddress, kinds: view.decoders.pooledRowKinds, missed: 0)
            try runDecodeJob(&job, ids: ids, record: { located[$0] }, parameters: parameters, decoders: view.decoders)
            if let found {
                for i in 0..<ids.count { found[i] = located[i].baseAddress != nil }
            }
            return foundCount
        }
    }

    /// Runs `emb_decode_records` to the end of `job`: each record it stops at is set aside (codecs
    /// that decode faster in batches, decoded together at the end) or goes to its decoder with the
    /// rest of its run of one tag, or is refused with the decoder's reason. `record(p)` is the
    /// record of position p (a nil base address when missing).
    private func runDecodeJob(_ job: inout emb_decode_job, ids: UnsafeBufferPointer<UInt64>, record: (Int) -> UnsafeRawBufferPointer,
                              parameters: TableParameters, decoders: TableDecoders) throws {
        let d = Int(job.d)
        let out = job.out!
        var position = 0, setAside = 0
        while true {
            let status = Int(decodeInstructionSet.map { emb_decode_records_isa(&job, &position, $0) } ?? emb_decode_records(&job, &position))
            if status == EMB_POOL_DONE { break }
            guard status > 0 else { throw StoreError.invalidArgument("this CPU lacks the lookup kernel's instruction set \(decodeInstructionSet ?? -1)") }
            let first = record(position)
            if status == EMB_POOL_REFUSED { throw decoders.refusal(first, id: ids[position], parameters: parameters) }
            let tag = TableDecoders.tag(of: first)
            if decoders.decodesInBatches(tag) {
                if setAside == 0 { deferred.reserve(ids.count, dimension: d) }   // before the first is kept
                deferred.positions[setAside] = (decoders.batchKey(first), position)
                setAside += 1
                position += 1
                continue
            }
            // The run of records of this tag, gathered for one decoder call.
            var count = 0
            while position + count < ids.count {
                let next = record(position + count)
                guard next.baseAddress != nil, TableDecoders.tag(of: next) == tag, count == 0 || !decoders.poolsInKernel(tag) else { break }
                runRecords.reserve(count + 1)
                runRecords.records[count] = next
                count += 1
            }
            try decoders.decode(runRecords.records, tag: tag, ids: ids.baseAddress! + position, count: count, into: out + position * d,
                                parameters: parameters)
            position += count
        }
        if setAside > 0 {
            try decodeSetAside(setAside, record: record, ids: ids, into: out, decoders: decoders, parameters: parameters)
        }
    }

    /// Decodes the `count` records set aside in `deferred.positions` (each a key and a position
    /// in the batch): sorted by key, so that each run of one codec and parameter record goes to
    /// its decoder in one call, into scratch rows, then copied to their places in `out`.
    /// (Measured on a mixed table: tc rows one at a time, among int8 and fp16 rows, cost about
    /// four times their decode-only time; see README "Two layers per table".)
    private func decodeSetAside(_ count: Int, record: (Int) -> UnsafeRawBufferPointer, ids: UnsafeBufferPointer<UInt64>,
                                into out: UnsafeMutablePointer<Float>, decoders: TableDecoders, parameters: TableParameters) throws {
        let d = decoders.table.dimension
        let positions = deferred.positions
        // Insertion sort: a batch sets aside a few rows (Zipf streams) to a few hundred (uniform);
        // no allocation, and stable, so rows keep their order within a group.
        for a in 1..<max(count, 1) {
            let item = positions[a]
            var b = a
            while b > 0 && positions[b - 1].key > item.key {
                positions[b] = positions[b - 1]
                b -= 1
            }
            positions[b] = item
        }
        for r in 0..<count {
            deferred.records[r] = record(positions[r].position)
            deferred.ids[r] = ids[positions[r].position]
        }
        var start = 0
        while start < count {
            let tag = UInt8(truncatingIfNeeded: positions[start].key >> 32)
            var stop = start + 1
            while stop < count && UInt8(truncatingIfNeeded: positions[stop].key >> 32) == tag { stop += 1 }
            try decoders.decode(deferred.records + start, tag: tag, ids: deferred.ids + start, count: stop - start,
                                into: deferred.rows + start * d, parameters: parameters)
            start = stop
        }
        for r in 0..<count {
            (out + positions[r].position * d).update(from: deferred.rows + r * d, count: d)
        }
    }

    /// A growable buffer of records, never shrunk.
struct RecordRun {
    private(set) var records = UnsafeMutablePointer<UnsafeRawBufferPointer>.allocate(capacity: 16)
    private var capacity = 16

    mutating func reserve(_ count: Int) {
        guard count > capacity else { return }
        let grown = UnsafeMutablePointer<UnsafeRawBufferPointer>.allocate(capacity: max(count, 2 * capacity))
        grown.update(from: records, count: capacity)
        records.deallocate()
        records = grown
        capacity = max(count, 2 * capacity)
    }

    func deallocate() { records.deallocate() }
}

/// One batch in flight: its ids, where their records are, and what finding them needs.
    /// A batch is one pass: before decoding id i, the lookup finds id i + `prefetchDistance`
    /// and prefetches its record, having prefetched that id's index entries one distance
    /// earlier (so index probe, row fetch and decode overlap for different ids).
    private struct Batch {
        let ids: UnsafeBufferPointer<UInt64>
        let located: UnsafeMutablePointer<UnsafeRawBufferPointer>
        let segments: UnsafeMutableBufferPointer<HotSegment>
        let rows: Database
        let prefetchIndex: Bool
        /// Sparse segments: their ids are prefetched one stage after their directory entries.
        let prefetchSearch: Bool
        let searchDelta: Bool
        let filter: DeltaFilter
        let missing: MissingRows
        let view: TableView
        /// Whether `resolve` prefetches the record it finds (not when a later pass does).
        let prefetchRecords: Bool
        var found = 0
    }

    /// Every id's record (nil base address when missing) and how many were found: in a table
    /// that is one indexed segment by `emb_segment_locate`, else id by id (`resolve`), index
    /// entries prefetched ahead. Missing ids follow `missing`.
    private func locateAll(_ ids: UnsafeBufferPointer<UInt64>, in view: TableView,
                           missing: MissingRows) throws -> (UnsafeMutablePointer<UnsafeRawBufferPointer>, Int) {
        if var segment = view.segmentRows {
            reserveLocated(ids.count)
            let found = emb_segment_locate(&segment, ids.baseAddress, ids.count,
                                           UnsafeMutableRawPointer(located).assumingMemoryBound(to: emb_record.self))
            if missing == .error && found < ids.count, let i = (0..<ids.count).first(where: { located[$0].baseAddress == nil }) {
                throw StoreError.rowNotFound(table: view.table.name, id: ids[i])
            }
            return (located, found)
        }
        var batch = try startBatch(ids, in: view, missing: missing, prefetchRecords: false)
        for i in prefetchDistance..<max(ids.count, prefetchDistance) { try resolve(i, &batch) }
        return (batch.located, batch.found)
    }

    private func reserveLocated(_ count: Int) {
        if locatedCapacity < count {
            located.deallocate()
            locatedCapacity = max(count, 2 * locatedCapacity)
            located = .allocate(capacity: locatedCapacity)
        }
    }

    /// Sets up a batch and finds its first `prefetchDistance` ids.
    private func startBatch(_ ids: UnsafeBufferPointer<UInt64>, in view: TableView, missing: MissingRows,
                            prefetchRecords: Bool = true) throws -> Batch {
        reserveLocated(ids.count)
        let searchDelta = view.deltaCount > 0
        // The filter costs a scan of the delta per snapshot: worth it for batches, not for one id.
        let filter = searchDelta && ids.count >= 32 ? try view.deltaFilter(txn: txn) : DeltaFilter()
        var batch = Batch(ids: ids, located: located, segments: view.hotSegments, rows: view.table.rows,
                          prefetchIndex: view.segmentsHaveIndex, prefetchSearch: view.segmentsAreSparse, searchDelta: searchDelta,
                          filter: filter, missing: missing, view: view, prefetchRecords: prefetchRecords)
        if batch.prefetchIndex {
            for i in 0..<min(ids.count, prefetchDistance + indexDistance(batch)) { prefetchIndex(ids[i], batch.segments) }
        }
        if batch.prefetchSearch {
            for i in 0..<min(ids.count, 2 * prefetchDistance) { prefetchSearch(ids[i], batch.segments) }
        }
        for i in 0..<min(ids.count, prefetchDistance) { try resolve(i, &batch) }
        return batch
    }

    /// How far ahead of finding an id its index entries are prefetched: one distance, or two
    /// for sparse segments, whose ids are prefetched in between (directory, ids, then record:
    /// each stage reads what the one before prefetched).
    @inline(__always)
    private func indexDistance(_ batch: Batch) -> Int { batch.prefetchSearch ? 2 * prefetchDistance : prefetchDistance }

    @inline(__always)
    private func prefetchSearch(_ id: UInt64, _ segments: UnsafeMutableBufferPointer<HotSegment>) {
        for s in segments.indices {   // by index: see prefetchIndex
            if let address = segments[s].withIndex({ $0.searchAddress(of: id) }) {
                prefetchForReading(address)
                prefetchForReading(address + 56)   // a bucket of a few ids may cross into the next line
            }
        }
    }

    @inline(__always)
    private func prefetchIndex(_ id: UInt64, _ segments: UnsafeMutableBufferPointer<HotSegment>) {
        // By index, not `for segment in`: the iterator copies each HotSegment (its index and
        // header, a few hundred bytes) per id, which measured a tenth of a pooled lookup.
        for s in segments.indices {
            if let address = segments[s].withIndex({ $0.probeAddress(of: id) }) { prefetchForReading(address) }
        }
    }

    /// Finds the record of id `i` of the batch (nil when missing) and prefetches it; prefetches
    /// the index entries of id `i + indexDistance` and, for sparse segments, the ids of
    /// `i + prefetchDistance`. Does nothing past the end of the batch.
    @inline(__always)
    private func resolve(_ i: Int, _ batch: inout Batch) throws {
        let ids = batch.ids
        guard i < ids.count else { return }
        if batch.prefetchIndex && i + indexDistance(batch) < ids.count { prefetchIndex(ids[i + indexDistance(batch)], batch.segments) }
        if batch.prefetchSearch && i + prefetchDistance < ids.count { prefetchSearch(ids[i + prefetchDistance], batch.segments) }
        let id = ids[i]
        var record: UnsafeRawBufferPointer?
        var inDelta = false
        if batch.searchDelta, batch.filter.mayContain(id), let value = try txn.unsafeValue(forKey: id, in: batch.rows) {
            inDelta = true
            let delta = try batch.view.table.deltaRecord(value, id: id)
            record = isTombstone(delta) ? nil : delta
        }
        if !inDelta {
            let segments = batch.segments
            for s in segments.indices {   // by index: see prefetchIndex
                guard let row = segments[s].withIndex({ $0.row(of: id) }) else { continue }
                guard let found = segments[s].record(ofRow: row) else {
                    throw StoreError.corruptMetadata(table: batch.view.table.name, reason: "segment \(segments[s].segment) does not match its index at id \(id)")
                }
                record = found
                break
            }
        }
        if record != nil {
            batch.found += 1
            if batch.prefetchRecords { prefetchRecord(record) }
        } else if batch.missing == .error {
            throw StoreError.rowNotFound(table: batch.view.table.name, id: id)
        }
        batch.located[i] = record.map(presentRecord) ?? missingRecord
    }

    /// Runs `body` inside one snapshot (the transaction renewed, then reset) with the table's
    /// view, refreshed when the snapshot or the map changed since its last use.
    private func withSnapshot<R>(of table: Table, _ body: (TableView) throws -> R) throws -> R {
        followStoreIfMoved()
        let view = try self.view(of: table)
        try translatingErrors { try txn.renew() }
        defer { txn.reset() }
        try translatingErrors { try view.refresh(store: store, txn: txn) }
        return try body(view)
    }

    /// This reader's view of `table` in its generation, made on first use of the handle.
    private func view(of table: Table) throws -> TableView {
        try table.requireLive()
        if let existing = views[table.id], existing.caller === table { return existing }
        let view = TableView(table: try generation.local(table), caller: table)
        views[table.id] = view
        return view
    }
}

/// One feature of a multi-table pooled request (`Reader.lookupPooled(_:batchSize:into:missing:)`,
/// and `ShardedReader`'s): a table, its ids, bag offsets (bag `b` is
/// `ids[offsets[b] ..< offsets[b + 1]]`), optional per-id weights parallel to `ids`, and how its
/// bags are pooled.
public struct PooledFeatureOf<TableHandle> {
    public var table: TableHandle
    public var ids: UnsafeBufferPointer<UInt64>
    public var offsets: UnsafeBufferPointer<Int>
    public var weights: UnsafeBufferPointer<Float>?
    public var pooling: Pooling

    public init(table: TableHandle, ids: UnsafeBufferPointer<UInt64>, offsets: UnsafeBufferPointer<Int>,
                weights: UnsafeBufferPointer<Float>? = nil, pooling: Pooling = .sum) {
        self.table = table
        self.ids = ids
        self.offsets = offsets
        self.weights = weights
        self.pooling = pooling
    }

    /// Refuses weights shorter than the ids and offsets that are negative, decrease or run
    /// past the ids; `name` says which feature in the error.
    func check(name: String) throws {
        try Self.checkBags(ids: ids, offsets: offsets, weights: weights, name: name)
    }

    static func checkBags(ids: UnsafeBufferPointer<UInt64>, offsets: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>?,
                          name: String) throws {
        if let weights, weights.count < ids.count {
            throw StoreError.invalidArgument("\(name): \(weights.count) weights for \(ids.count) ids")
        }
        let bags = max(offsets.count - 1, 0)
        for b in 0..<bags where offsets[b] < 0 || offsets[b] > offsets[b + 1] || offsets[b + 1] > ids.count {
            throw StoreError.invalidArgument("\(name): bag \(b) spans offsets \(offsets[b])..<\(offsets[b + 1]), outside 0...\(ids.count) or decreasing")
        }
    }
}

/// A feature of a store's table.
public typealias PooledFeature = PooledFeatureOf<Table>
/// A feature of a sharded store's table.
public typealias ShardedFeature = PooledFeatureOf<ShardedTable>

/// How many ids ahead a lookup finds records (prefetching their index entries one distance
/// further); the records themselves are prefetched by the decoding pass (`emb_decode_records`,
/// `emb_pool_bags`), EMB_POOL_PREFETCH_DISTANCE positions ahead.
let prefetchDistance = 8

/// A missing row in a batch's located records.
nonisolated(unsafe) let missingRecord = UnsafeRawBufferPointer(start: nil, count: 0)

/// A found record as the batch keeps it: never with a nil base address, even when empty.
@inline(__always)
func presentRecord(_ record: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
    record.baseAddress != nil ? record : UnsafeRawBufferPointer(start: emptyRecordByte, count: 0)
}

/// Where an empty record points when LMDB gave it no address; never read (its count is 0).
nonisolated(unsafe) private let emptyRecordByte = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1))

/// Prefetches the cache lines of a record: every 64 bytes of its first 256, and its last byte.
@inline(__always)
func prefetchRecord(_ record: UnsafeRawBufferPointer?) {
    guard let record, let start = record.baseAddress else { return }
    var offset = 0
    while offset < min(record.count, 256) {
        prefetchForReading(start + offset)
        offset += 64
    }
    prefetchForReading(start + (record.count - 1))
}

/// The record of a deleted id in the delta: it hides the id's rows in segments.
let tombstoneTag: UInt8 = 8

@inline(__always)
func isTombstone(_ record: UnsafeRawBufferPointer) -> Bool {
    record.count == 1 && record[0] == tombstoneTag
}

/// A segment as the lookup loop sees it: no references, so iterating costs no reference
/// counting. Its pointers are owned by the `TableView` that made it.
struct HotSegment {
    let segment: UInt32
    /// Owned by the table view (`segmentIndexes`), which rebuilds its hot segments with it.
    let index: Unmanaged<SegmentIndex>
    let parts: UnsafePointer<UnsafeRawBufferPointer>

    /// Runs `body` on the index without reference counting (a strong or unowned reference
    /// loaded from unsafe memory is retained and released around every call).
    @inline(__always)
    func withIndex<R>(_ body: (SegmentIndex) -> R) -> R {
        index._withUnsafeGuaranteedRef(body)
    }

    /// The record of row `r`, or nil when the index does not fit the part (damage).
    @inline(__always)
    func record(ofRow r: Int) -> UnsafeRawBufferPointer? {
        withIndex { $0.record(ofRow: r, in: parts[$0.part(ofRow: r) - 1]) }
    }
}

/// A one-hash bit filter of the delta's ids, rebuilt per snapshot, so that a lookup pays an
/// LMDB B-tree descent only for ids that may be in the delta (about 1 in 16 of the others).
/// With no filter (`shift` 64, an empty delta or one too large to scan) every id may be there.
struct DeltaFilter {
    var words: UnsafeMutablePointer<UInt64>?
    var shift: UInt64 = 64

    /// Deltas up to this size are scanned into a filter; larger ones are searched id by id.
    static let maximumEntries = 1 << 16

    @inline(__always)
    func mayContain(_ id: UInt64) -> Bool {
        guard let words else { return true }
        let bit = (id &* 0x9E37_79B9_7F4A_7C15) >> shift
        return words[Int(bit >> 6)] & (1 << (bit & 63)) != 0
    }
}

/// What one reader knows about one table in its current snapshot.
final class TableView {
    /// The table in the reader's generation, and the handle the caller gave (from the same
    /// generation, or one before a swap).
    let table: Table
    let caller: Table
    let decoders: TableDecoders
    private var snapshot = -1
    private var mapGeneration = -1
    private(set) var deltaCount = 0
    /// Live segments, newest first, and the data-part pointers they point into.
    private(set) var hotSegments = UnsafeMutableBufferPointer<HotSegment>(start: nil, count: 0)
    private var partPointers = UnsafeMutableBufferPointer<UnsafeRawBufferPointer>(start: nil, count: 0)
    /// The indexes `hotSegments` point at (unowned), kept alive with them.
    private var segmentIndexes: [SegmentIndex] = []
    private(set) var segmentsHaveIndex = false
    private(set) var segmentsAreSparse = false
    /// Set when the table's rows are one dense segment of fixed-size records, its parts of the
    /// lengths its header implies, with an empty delta: pooled lookups then find records from
    /// ids inside `emb_pool_bags`, with no pass of their own.
    private(set) var denseRows: emb_dense_rows?
    /// Set when the table's rows are one segment of a kind `emb_segment_locate` takes (sparse
    /// fixed-size records, its parts of the lengths its header implies, or group entries), with
    /// an empty delta: lookups find its records in C, each index read prefetched a stage ahead.
    private(set) var segmentRows: emb_segment_rows?
    private var filter = DeltaFilter()
    private var filterSnapshot = -1
    private var filterStorage = UnsafeMutableBufferPointer<UInt64>(start: nil, count: 0)

    init(table: Table, caller: Table) {
        self.table = table
        self.caller = caller
        decoders = TableDecoders(table: table)
    }

    deinit {
        hotSegments.deallocate()
        partPointers.deallocate()
        filterStorage.deallocate()
    }

    /// The delta filter of the current snapshot, built on first use: 16 bits per delta entry,
    /// rounded up to a power of two. No filter (every id may be in the delta) above
    /// `DeltaFilter.maximumEntries`.
    func deltaFilter(txn: borrowing Transaction) throws -> DeltaFilter {
        if filterSnapshot != snapshot {
            try rebuildDeltaFilter(txn: txn)
            filterSnapshot = snapshot
        }
        return filter
    }

    private func rebuildDeltaFilter(txn: borrowing Transaction) throws {
        guard deltaCount > 0, deltaCount <= DeltaFilter.maximumEntries else {
            filter = DeltaFilter()
            return
        }
        var logBits: UInt64 = 10
        while 1 << logBits < 16 * deltaCount { logBits += 1 }
        let words = 1 << (logBits - 6)
        if filterStorage.count < words {
            filterStorage.deallocate()
            filterStorage = .allocate(capacity: words)
        }
        filterStorage.update(repeating: 0)
        let built = DeltaFilter(words: filterStorage.baseAddress, shift: 64 - logBits)
        let storage = filterStorage.baseAddress!
        try txn.withCursor(table.rows) { cursor in
            var entry = try cursor.first()
            while let current = entry {
                guard let id = current.integerKey else {
                    throw StoreError.corruptMetadata(table: table.name, reason: "a row key is \(current.key.count) bytes, not 8")
                }
                let bit = (id &* 0x9E37_79B9_7F4A_7C15) >> built.shift
                storage[Int(bit >> 6)] |= 1 << (bit & 63)
                entry = try cursor.next()
            }
        }
        filter = built
    }

    /// Re-reads the delta size and the segments' locations when the snapshot or map changed.
    func refresh(store: Store, txn: borrowing Transaction) throws {
        let generation = txn.environment.mapGeneration
        let id = txn.snapshotID
        guard id != snapshot || generation != mapGeneration else { return }
        snapshot = -1
        deltaCount = try txn.statistics(table.rows).entries
        let views = try store.segmentManifest(table, in: txn).map { try SegmentView(table: table, segment: $0, in: txn) }
        hotSegments.deallocate()
        partPointers.deallocate()
        hotSegments = .allocate(capacity: views.count)
        segmentIndexes = views.map(\.index)
        partPointers = .allocate(capacity: views.reduce(0) { $0 + $1.parts.count })
        var next = 0
        for (s, view) in views.enumerated() {
            let parts = partPointers.baseAddress! + next
            for (p, part) in view.parts.enumerated() { parts[p] = part }
            next += view.parts.count
            hotSegments[s] = HotSegment(segment: view.segment, index: .passUnretained(view.index), parts: UnsafePointer(parts))
        }
        segmentsHaveIndex = views.contains { $0.index.header.kind != .denseFixed }
        segmentsAreSparse = views.contains { $0.index.isSparse }
        denseRows = nil
        if deltaCount == 0, views.count == 1, let only = views.first, only.index.header.kind == .denseFixed,
           only.parts.indices.allSatisfy({ only.parts[$0].count == only.index.fixedPartLength($0 + 1) }) {
            let header = only.index.header
            denseRows = emb_dense_rows(first_id: header.firstID, rows: header.rowCount, rows_per_part: UInt64(header.rowsPerPart),
                                       stride: UInt64(header.stride),
                                       parts: UnsafeRawPointer(partPointers.baseAddress!).assumingMemoryBound(to: emb_record.self))
        }
        segmentRows = nil
        if deltaCount == 0, views.count == 1, let only = views.first,
           only.parts.indices.allSatisfy({ only.index.fixedPartLength($0 + 1).map { [count = only.parts[$0].count] in $0 == count } ?? true }) {
            segmentRows = only.index.segmentRows(parts: UnsafeRawPointer(partPointers.baseAddress!).assumingMemoryBound(to: emb_record.self))
        }
        snapshot = id
        mapGeneration = generation
    }
}
