// The two phases of a k-means fit on a sample held in memory: k-means++ seeding and Lloyd
// rounds. `KMeansCodebook.fit` validates the arguments and chooses the sample.

/// k-means state over a borrowed sample (row-major `count × dimension`), valid only while the
/// sample's storage is.
struct KMeansFitter {
    let sample: UnsafePointer<Float>
    let count: Int
    let dimension: Int
    /// Assignment of the previous Lloyd round; empty before the first.
    private var previous: [UInt32] = []
    private var current: [UInt32]
    private var scores: [Float]

    init(sample: UnsafePointer<Float>, count: Int, dimension: Int) {
        self.sample = sample
        self.count = count
        self.dimension = dimension
        current = [UInt32](repeating: 0, count: count)
        scores = [Float](repeating: 0, count: count)
    }

    // MARK: - k-means++ seeding

    /// Distances from one new centre are computed over this many pool rows at a time, so the
    /// running sums (4 KiB) stay in L1 while the transposed pool streams past.
    private static let seedingChunk = 1024

    /// Picks `buckets` initial centroids by D² sampling (Arthur & Vassilvitskii 2007) from a
    /// random pool of at most max(8 × buckets, 4096) sample rows.
    func seed(buckets: Int, random: inout KMeansRandom) -> [Float] {
        let d = dimension
        let poolSize = min(count, max(8 * buckets, 4096))
        let pool = poolSize == count ? Array(0..<count) : random.sortedSample(count: poolSize, from: count)
        // Dimension-major copy of the pool: the distance from one centre to every pool row is then
        // an axpy-shaped loop over rows, which vectorises, instead of one reduction per row.
        var transposed = [Float](repeating: 0, count: d * poolSize)
        for (slot, row) in pool.enumerated() {
            let source = sample + row * d
            for t in 0..<d { transposed[t * poolSize + slot] = source[t] }
        }
        var nearest = [Float](repeating: .infinity, count: poolSize)
        var partial = [Float](repeating: 0, count: Self.seedingChunk)
        var centroids = [Float](repeating: 0, count: buckets * d)
        var total = 0.0
        transposed.withUnsafeBufferPointer { transposedBuffer in
            nearest.withUnsafeMutableBufferPointer { nearestBuffer in
                partial.withUnsafeMutableBufferPointer { partialBuffer in
                    // Non-nil: poolSize ≥ 1, d ≥ 1.
                    let columns = transposedBuffer.baseAddress!
                    let minimum = nearestBuffer.baseAddress!
                    let sums = partialBuffer.baseAddress!
                    for centre in 0..<buckets {
                        let slot = centre == 0 ? random.index(below: poolSize)
                            : Self.drawProportional(minimum, count: poolSize, total: total, random: &random)
                        let source = sample + pool[slot] * d
                        for t in 0..<d { centroids[centre * d + t] = source[t] }
                        total = 0
                        var start = 0
                        while start < poolSize {
                            let length = min(Self.seedingChunk, poolSize - start)
                            for p in 0..<length { sums[p] = 0 }
                            for t in 0..<d {
                                let value = source[t]
                                let column = columns + t * poolSize + start
                                for p in 0..<length {
                                    let difference = column[p] - value
                                    sums[p] += difference * difference
                                }
                            }
                            let target = minimum + start
                            for p in 0..<length { target[p] = min(target[p], sums[p]) }
                            for p in 0..<length { total += Double(target[p]) }
                            start += length
                        }
                    }
                }
            }
        }
        return centroids
    }

    /// A pool slot drawn with probability proportional to its squared distance to the nearest
    /// centre so far; uniform when every distance is zero (all remaining rows duplicate a centre).
    private static func drawProportional(
        _ weights: UnsafePointer<Float>, count: Int, total: Double, random: inout KMeansRandom
    ) -> Int {
        guard total > 0, total.isFinite else { return random.index(below: count) }
        let target = random.unit() * total
        var running = 0.0
        var lastPositive = 0
        for slot in 0..<count where weights[slot] > 0 {
            running += Double(weights[slot])
            lastPositive = slot
            if running > target { return slot }
        }
        // Rounding left `running` a hair below `total`: the last row with weight is the answer.
        return lastPositive
    }

    // MARK: - Lloyd rounds

    /// One round: assign every sample row to its nearest centroid, then move each centroid to the
    /// mean of its rows (re-seeding empty ones from the farthest rows).
    ///
    /// - Returns: `false` when the assignment equals the previous round's, i.e. the centroids are
    ///   already the means of their rows and further rounds change nothing.
    mutating func lloydRound(centroids: inout [Float], buckets: Int) -> Bool {
        let d = dimension
        centroids.withUnsafeBufferPointer { centroidBuffer in
            current.withUnsafeMutableBufferPointer { idBuffer in
                scores.withUnsafeMutableBufferPointer { scoreBuffer in
                    // Non-nil: buckets ≥ 1, count ≥ 1, d ≥ 1.
                    let panels = KMeansCentroidPanels(centroids: centroidBuffer.baseAddress!, count: buckets, dimension: d)
                    panels.scanConcurrently(
                        rows: sample, count: count, nearest: idBuffer.baseAddress!,
                        nearestScore: scoreBuffer.baseAddress!, projected: nil)
                }
            }
        }
        if current == previous { return false }

        var sums = [Double](repeating: 0, count: buckets * d)
        var members = [Int](repeating: 0, count: buckets)
        for r in 0..<count {
            let bucket = Int(current[r])
            members[bucket] += 1
            let row = sample + r * d
            for t in 0..<d { sums[bucket * d + t] += Double(row[t]) }
        }
        let empty = (0..<buckets).filter { members[$0] == 0 }
        if !empty.isEmpty {
            reseed(empty, sums: &sums, members: &members)
        }
        for bucket in 0..<buckets where members[bucket] > 0 {
            let scale = 1 / Double(members[bucket])
            for t in 0..<d { centroids[bucket * d + t] = Float(sums[bucket * d + t] * scale) }
        }
        previous = current
        return true
    }

    /// Moves the rows farthest from their centroids into the empty buckets, taking only from
    /// buckets that keep at least one row. Because buckets ≤ rows, some bucket always has two or
    /// more rows while any bucket is empty, so every empty bucket gets a row.
    private mutating func reseed(_ empty: [Int], sums: inout [Double], members: inout [Int]) {
        let d = dimension
        var distance = [Float](repeating: 0, count: count)
        for r in 0..<count {
            let row = sample + r * d
            var squaredNorm: Float = 0
            for t in 0..<d { squaredNorm += row[t] * row[t] }
            // The kernel's score is ‖c‖² − 2x·c; rounding can push the sum slightly negative.
            distance[r] = max(0, squaredNorm + scores[r])
        }
        let farthest = (0..<count).sorted { lhs, rhs in
            distance[lhs] != distance[rhs] ? distance[lhs] > distance[rhs] : lhs < rhs
        }
        var cursor = 0
        for bucket in empty {
            while cursor < count, members[Int(current[farthest[cursor]])] <= 1 { cursor += 1 }
            guard cursor < count else { return }
            let r = farthest[cursor]
            cursor += 1
            let old = Int(current[r])
            let row = sample + r * d
            members[old] -= 1
            members[bucket] = 1
            for t in 0..<d {
                sums[old * d + t] -= Double(row[t])
                sums[bucket * d + t] = Double(row[t])
            }
            current[r] = UInt32(truncatingIfNeeded: bucket)
        }
    }
}
