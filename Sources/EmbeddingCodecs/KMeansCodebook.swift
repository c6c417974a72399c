/// Shared bucket rows for the `bucket` codec: `count` k-means centroids of dimension
/// `dimension`, with fitting and (scaled) assignment of rows to them.
///
/// The store keeps the centroids as rows of their own; a `bucket` row stores only a centroid id
/// (and optionally a scale), see `BucketCodec`.
public struct KMeansCodebook: Sendable, Equatable {
    /// Row width d.
    public let dimension: Int
    /// Number of centroids (buckets).
    public let count: Int
    /// Centroids, row-major `count × dimension`.
    public let centroids: [Float]

    /// Creates a codebook from stored centroids (used when loading one from disk).
    ///
    /// - Throws: `invalidParameter` for a count or dimension below 1, more than 2³² buckets, or
    ///   a centroid array of the wrong size; `nonFinite` (index into `centroids`) for NaN or
    ///   infinity.
    public init(dimension: Int, count: Int, centroids: [Float]) throws(CodecError) {
        guard dimension >= 1 else {
            throw .invalidParameter("k-means codebook dimension must be at least 1, got \(dimension)")
        }
        guard count >= 1, count <= Int(UInt32.max) + 1 else {
            throw .invalidParameter("k-means codebook needs 1...2³² centroids (ids are uint32), got \(count)")
        }
        guard centroids.count == count * dimension else {
            throw .invalidParameter(
                "k-means codebook has \(centroids.count) centroid values, expected count × dimension = \(count * dimension)")
        }
        try centroids.withUnsafeBufferPointer { buffer throws(CodecError) in try CodecChecks.requireFinite(buffer) }
        self.init(unchecked: dimension, count: count, centroids: centroids)
    }

    private init(unchecked dimension: Int, count: Int, centroids: [Float]) {
        self.dimension = dimension
        self.count = count
        self.centroids = centroids
    }

    // MARK: - Fitting

    /// Fits `buckets` centroids to `count` rows with Lloyd's k-means.
    ///
    /// Steps, all driven by one SplitMix64 stream from `seed`:
    /// 1. If `count > sampleLimit`, a uniform sample of `sampleLimit` rows (selection sampling, in
    ///    table order) stands in for the rows.
    /// 2. k-means++ seeding (D² sampling) on a random subset of the sample of
    ///    `max(8 × buckets, 4096)` rows: seeding is sequential over the centroids, so seeding on
    ///    the whole sample would cost as much as several Lloyd rounds for no measurable gain.
    /// 3. Up to `iterations` rounds of assign-to-nearest then move-to-mean, stopping early when
    ///    no assignment changes (further rounds would reproduce the same centroids). A bucket
    ///    left empty takes the sample row farthest from its own centroid (among buckets with more
    ///    than one row), so no centroid is wasted.
    ///
    /// Cost is about `iterations × sample × buckets × d × 2` flops in the blocked kernel of
    /// `assign` (release build, one thread: ~55 s for the default 20 rounds on a 262,144-row
    /// sample at d = 64 with 1024 buckets; 4× that with 4096). The result is a pure function of
    /// the arguments.
    ///
    /// - Parameters:
    ///   - rows: row-major `count × dimension` values (at least that many).
    ///   - buckets: centroids to fit, 1 ≤ buckets ≤ min(count, sampleLimit).
    ///   - iterations: maximum Lloyd rounds; 0 returns the k-means++ seeds.
    /// - Throws: `invalidParameter` for a bad size or count (more buckets than rows is refused,
    ///   not padded, because duplicate centroids would waste bucket ids); `nonFinite` with the
    ///   index into `rows` of the first NaN or infinity.
    public static func fit(
        rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int, buckets: Int,
        iterations: Int = 20, sampleLimit: Int = 262_144, seed: UInt64 = 0x5EED
    ) throws(CodecError) -> KMeansCodebook {
        guard dimension >= 1 else {
            throw .invalidParameter("k-means fit needs dimension ≥ 1, got \(dimension)")
        }
        guard count >= 1 else {
            throw .invalidParameter("k-means fit needs at least one row, got count = \(count)")
        }
        guard buckets >= 1, buckets <= Int(UInt32.max) + 1 else {
            throw .invalidParameter("k-means fit needs 1...2³² buckets (ids are uint32), got \(buckets)")
        }
        guard buckets <= count else {
            throw .invalidParameter("k-means fit asked for \(buckets) buckets from only \(count) rows; use at most \(count) buckets")
        }
        guard sampleLimit >= buckets else {
            throw .invalidParameter("k-means sampleLimit \(sampleLimit) is below the bucket count \(buckets); each bucket needs a sample row")
        }
        guard iterations >= 0 else {
            throw .invalidParameter("k-means iterations must be ≥ 0, got \(iterations)")
        }
        let (valueCount, overflow) = count.multipliedReportingOverflow(by: dimension)
        guard !overflow, rows.count >= valueCount else {
            throw .invalidParameter(
                "k-means fit rows buffer holds \(rows.count) values, fewer than count × dimension = \(count) × \(dimension)")
        }
        let values = UnsafeBufferPointer(rebasing: rows[0..<valueCount])
        try CodecChecks.requireFinite(values)

        var random = KMeansRandom(seed: seed)
        func run(_ sample: UnsafePointer<Float>, rows sampleCount: Int) -> [Float] {
            var fitter = KMeansFitter(sample: sample, count: sampleCount, dimension: dimension)
            var centroids = fitter.seed(buckets: buckets, random: &random)
            for _ in 0..<iterations {
                guard fitter.lloydRound(centroids: &centroids, buckets: buckets) else { break }
            }
            return centroids
        }
        let centroids: [Float]
        if count > sampleLimit {
            let chosen = random.sortedSample(count: sampleLimit, from: count)
            var sample = [Float](repeating: 0, count: sampleLimit * dimension)
            for (slot, row) in chosen.enumerated() {
                for t in 0..<dimension { sample[slot * dimension + t] = values[row * dimension + t] }
            }
            // Non-nil: sampleLimit ≥ buckets ≥ 1 rows of dimension ≥ 1.
            centroids = sample.withUnsafeBufferPointer { run($0.baseAddress!, rows: sampleLimit) }
        } else {
            // Non-nil: valueCount ≥ 1. The rows are only read, never copied.
            centroids = run(values.baseAddress!, rows: count)
        }
        return KMeansCodebook(unchecked: dimension, count: buckets, centroids: centroids)
    }

    // MARK: - Assignment

    /// Nearest centroid (squared L2) for each row: writes `count` bucket ids into `ids`.
    ///
    /// Uses the blocked ‖x‖² − 2x·c + ‖c‖² kernel in Float, so two centroids within ~1e-6
    /// relative distance of each other may be ordered either way; ties go to the lower id.
    /// Packs the centroids on every call: meant for batches, not single rows. Rows with NaN get
    /// bucket 0 (encoders reject them before this point).
    ///
    /// - Precondition: `rows.count ≥ count × dimension`, `ids.count ≥ count`.
    public func assign(rows: UnsafeBufferPointer<Float>, count: Int, into ids: UnsafeMutableBufferPointer<UInt32>) {
        precondition(count >= 0 && rows.count >= count * dimension, "rows buffer is shorter than count × dimension")
        precondition(ids.count >= count, "ids buffer is shorter than count")
        guard count > 0, let rowBase = rows.baseAddress, let idBase = ids.baseAddress else { return }
        centroids.withUnsafeBufferPointer { centroidBuffer in
            // Non-nil: a codebook has count ≥ 1 and dimension ≥ 1.
            let panels = KMeansCentroidPanels(centroids: centroidBuffer.baseAddress!, count: self.count, dimension: dimension)
            panels.scanConcurrently(rows: rowBase, count: count, nearest: idBase, nearestScore: nil, projected: nil)
        }
    }

    /// Best (bucket, scale) per row, minimising ‖x − s·c‖² with the least-squares scale
    /// s = x·c / c·c.
    ///
    /// Each row's result is never worse than `assign`'s nearest centroid with s = 1: both
    /// candidates are re-measured exactly as `BucketCodec.decode` reconstructs them (Float s·c,
    /// error summed in Double), and the scaled one is kept only if it is strictly better. That
    /// fallback also covers c·c == 0 and a non-finite scale.
    ///
    /// - Precondition: `rows.count ≥ count × dimension`, `ids.count ≥ count`,
    ///   `scales.count ≥ count`.
    public func assignScaled(
        rows: UnsafeBufferPointer<Float>, count: Int,
        into ids: UnsafeMutableBufferPointer<UInt32>, scales: UnsafeMutableBufferPointer<Float>
    ) {
        precondition(count >= 0 && rows.count >= count * dimension, "rows buffer is shorter than count × dimension")
        precondition(ids.count >= count && scales.count >= count, "ids or scales buffer is shorter than count")
        guard count > 0, let rowBase = rows.baseAddress, let idBase = ids.baseAddress else { return }
        let d = dimension
        var projected = [UInt32](repeating: 0, count: count)
        centroids.withUnsafeBufferPointer { centroidBuffer in
            projected.withUnsafeMutableBufferPointer { projectedBuffer in
                // Non-nil: a codebook has count ≥ 1 and dimension ≥ 1; count > 0 rows.
                let c = centroidBuffer.baseAddress!
                let panels = KMeansCentroidPanels(centroids: c, count: self.count, dimension: d)
                panels.scanConcurrently(rows: rowBase, count: count, nearest: idBase, nearestScore: nil, projected: projectedBuffer.baseAddress!)
                for r in 0..<count {
                    let x = rowBase + r * d
                    let unitCentroid = c + Int(idBase[r]) * d
                    var unitError = 0.0
                    for t in 0..<d {
                        let difference = Double(x[t]) - Double(unitCentroid[t])
                        unitError += difference * difference
                    }
                    scales[r] = 1
                    let candidate = Int(projectedBuffer[r])
                    guard candidate < self.count else { continue }
                    let scaledCentroid = c + candidate * d
                    var dot = 0.0, squaredNorm = 0.0
                    for t in 0..<d {
                        dot += Double(x[t]) * Double(scaledCentroid[t])
                        squaredNorm += Double(scaledCentroid[t]) * Double(scaledCentroid[t])
                    }
                    guard squaredNorm > 0 else { continue }
                    let scale = Float(dot / squaredNorm)
                    guard scale.isFinite else { continue }
                    var scaledError = 0.0
                    for t in 0..<d {
                        let difference = Double(x[t]) - Double(scale * scaledCentroid[t])
                        scaledError += difference * difference
                    }
                    if scaledError < unitError {
                        idBase[r] = projectedBuffer[r]
                        scales[r] = scale
                    }
                }
            }
        }
    }
}
