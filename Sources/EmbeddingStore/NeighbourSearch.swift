import CEmbeddingKernels
import Dispatch
import Synchronization

/// Exact top-k neighbours by cosine among the rows of one matrix, for a set of query rows of the
/// same matrix (each query's own row excluded): what `Store.evaluate` scores recall with.
///
/// "Exact" means what NumPy gives in float64 (`../shared/data/npm/README.md`): rows divided by
/// their norms, cosine with every other row, sorted descending with ties by smaller row index.
/// Computing every cosine in double would be slow, so the search runs in two steps:
///
/// 1. A float32 pass over all rows (`emb_knn_scores_above`, blocked and vectorised) keeps each
///    query's `candidates` best rows. Rows are packed, scaled to unit length, a chunk at a time
///    (about 192 KiB, so a chunk stays in L2 while every query runs over it); a query's running
///    list only takes scores above its current worst, so after the first chunks almost no score
///    leaves the kernel. Threads take chunks in turn, each with lists of its own, merged at the end.
/// 2. The candidates are scored again in double and sorted with ties by row index. A float32
///    score is within ε = (d + 8)·2⁻²³ of the exact cosine (the kernel's bound, twice over), so
///    every row of the exact top k has a float32 score ≥ s₍ₖ₎ − 2ε, where s₍ₖ₎ is the k-th best
///    float32 score. When the worst kept candidate scores below s₍ₖ₎ − 2ε, the candidates hold
///    the exact top k, ties included; otherwise (many rows within 2ε of each other, such as
///    duplicate rows) the query is scored in double against every row (an "exact rescan").
struct NeighbourSearch {
    /// Rows kept per query by the float32 pass.
    static let candidates = 32
    /// Queries per kernel call; the kernel tiles them by six.
    static let queryBlock = 48

    /// The result for each query, in the order of `queries`: its `k` nearest rows, best first.
    var neighbours: [[Int]]
    /// Queries (indices into `queries`) whose candidates could not settle the top k, and that
    /// were scored against every row in double.
    var rescanned: Set<Int>

    /// Searches `count` rows of `dimension` floats at `rows` (row r at `r * dimension`), with
    /// `norms[r]` = ‖row r‖ computed in double. A zero row has cosine 0 with every row.
    /// `progress` is called with the rows searched so far (from any thread, one call at a time).
    static func run(rows: UnsafePointer<Float>, count: Int, dimension d: Int, norms: [Double], queries: [Int],
                    k wanted: Int, threads: Int, progress: @Sendable (Int) -> Void) -> NeighbourSearch {
        let k = min(wanted, count - 1)
        guard k > 0, !queries.isEmpty else {
            return NeighbourSearch(neighbours: queries.map { _ in [] }, rescanned: [])
        }
        let inverse = norms.map { $0 > 0 ? 1 / $0 : 0 }
        let q = queries.count
        // The query rows at unit length, in float32, as the kernel reads them.
        var queryRows = [Float](repeating: 0, count: q * d)
        for (i, row) in queries.enumerated() {
            for j in 0..<d { queryRows[i * d + j] = Float(Double(rows[row * d + j]) * inverse[row]) }
        }
        let panel = Int(EMB_KNN_PANEL)
        // About 192 KiB of packed rows a chunk, at most 4,096 rows (the candidate buffers hold
        // `queryBlock` × chunk entries).
        let chunkRows = min(4096, max(panel, (192 * 1024 / (4 * d)) / panel * panel))
        let chunkCount = (count + chunkRows - 1) / chunkRows
        let workers = max(1, min(threads, chunkCount))
        let nextChunk = Atomic<Int>(0)
        let progressLock = Mutex<Int>(0)
        var lists = [CandidateLists](repeating: CandidateLists(queries: 0), count: workers)

        lists.withUnsafeMutableBufferPointer { lists in
            nonisolated(unsafe) let lists = lists
            queryRows.withUnsafeBufferPointer { queryRows in
                inverse.withUnsafeBufferPointer { inverse in
                    nonisolated(unsafe) let queryRows = queryRows.baseAddress!, inverse = inverse.baseAddress!
                    nonisolated(unsafe) let rows = rows
                    DispatchQueue.concurrentPerform(iterations: workers) { worker in
                        var mine = CandidateLists(queries: q)
                        let panels = UnsafeMutablePointer<Float>.allocate(capacity: chunkRows * d)
                        let capacity = queryBlock * chunkRows
                        let outQuery = UnsafeMutablePointer<UInt32>.allocate(capacity: capacity)
                        let outRow = UnsafeMutablePointer<UInt32>.allocate(capacity: capacity)
                        let outScore = UnsafeMutablePointer<Float>.allocate(capacity: capacity)
                        defer {
                            panels.deallocate(); outQuery.deallocate(); outRow.deallocate(); outScore.deallocate()
                        }
                        while true {
                            let chunk = nextChunk.add(1, ordering: .relaxed).oldValue
                            guard chunk < chunkCount else { break }
                            let first = chunk * chunkRows
                            let n = min(chunkRows, count - first)
                            emb_knn_pack(rows + first * d, n, d, inverse + first, panels)
                            for q0 in stride(from: 0, to: q, by: queryBlock) {
                                let block = min(queryBlock, q - q0)
                                let emitted = mine.threshold.withUnsafeBufferPointer { threshold in
                                    emb_knn_scores_above(queryRows + q0 * d, block, d, panels, n, threshold.baseAddress! + q0,
                                                         outQuery, outRow, outScore)
                                }
                                for e in 0..<emitted {
                                    let query = q0 + Int(outQuery[e])
                                    let row = first + Int(outRow[e])
                                    if row != queries[query] { mine.insert(query: query, row: row, score: outScore[e]) }
                                }
                            }
                            progressLock.withLock { done in
                                done += n
                                progress(done)
                            }
                        }
                        lists[worker] = mine
                    }
                }
            }
        }

        // Merge each query's lists, then settle its top k in double.
        let epsilon = Double(d + 8) * 0x1p-23
        var neighbours = [[Int]](repeating: [], count: q)
        let rescans = Mutex<Set<Int>>([])
        neighbours.withUnsafeMutableBufferPointer { neighbours in
            nonisolated(unsafe) let neighbours = neighbours
            nonisolated(unsafe) let rows = rows
            let lists = lists
            DispatchQueue.concurrentPerform(iterations: min(max(1, threads), q)) { part in
                for query in stride(from: part, to: q, by: min(max(1, threads), q)) {
                    var merged: [(score: Float, row: Int)] = []
                    for list in lists { merged += list.entries(of: query) }
                    merged.sort { $0.score != $1.score ? $0.score > $1.score : $0.row < $1.row }
                    let complete = merged.count == count - 1   // every other row is a candidate
                    if merged.count > candidates { merged.removeLast(merged.count - candidates) }
                    let settled = complete
                        || Double(merged[merged.count - 1].score) < Double(merged[k - 1].score) - 2 * epsilon
                    let own = queries[query]
                    func cosine(_ row: Int) -> Double {
                        guard norms[own] > 0, norms[row] > 0 else { return 0 }
                        return emb_dot_f64(rows + own * d, rows + row * d, d) / (norms[own] * norms[row])
                    }
                    var scored: [(cosine: Double, row: Int)]
                    if settled {
                        scored = merged.map { (cosine($0.row), $0.row) }
                    } else {
                        rescans.withLock { _ = $0.insert(query) }
                        scored = (0..<count).filter { $0 != own }.map { (cosine($0), $0) }
                    }
                    scored.sort { $0.cosine != $1.cosine ? $0.cosine > $1.cosine : $0.row < $1.row }
                    neighbours[query] = scored.prefix(k).map(\.row)
                }
            }
        }
        return NeighbourSearch(neighbours: neighbours, rescanned: rescans.withLock { $0 })
    }
}

/// One thread's running best `NeighbourSearch.candidates` rows of each query, unordered.
struct CandidateLists {
    static let width = NeighbourSearch.candidates
    var scores: [Float]
    var rows: [Int32]
    var filled: [Int]
    /// Per query: -infinity until its list is full, then its worst score (what the kernel must beat).
    var threshold: [Float]
    /// Per query: the slot of its worst score, once full.
    var worst: [Int]

    init(queries: Int) {
        scores = [Float](repeating: 0, count: queries * Self.width)
        rows = [Int32](repeating: 0, count: queries * Self.width)
        filled = [Int](repeating: 0, count: queries)
        threshold = [Float](repeating: -.infinity, count: queries)
        worst = [Int](repeating: 0, count: queries)
    }

    mutating func insert(query: Int, row: Int, score: Float) {
        let base = query * Self.width
        if filled[query] < Self.width {
            scores[base + filled[query]] = score
            rows[base + filled[query]] = Int32(row)
            filled[query] += 1
            if filled[query] < Self.width { return }
        } else {
            guard score > threshold[query] else { return }
            scores[base + worst[query]] = score
            rows[base + worst[query]] = Int32(row)
        }
        var slot = 0
        for s in 1..<Self.width where scores[base + s] < scores[base + slot] { slot = s }
        worst[query] = slot
        threshold[query] = scores[base + slot]
    }

    func entries(of query: Int) -> [(score: Float, row: Int)] {
        let base = query * Self.width
        return (0..<filled[query]).map { (scores[base + $0], Int(rows[base + $0])) }
    }
}
