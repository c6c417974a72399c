/// A table's PCA basis for the `reduced(k)` codec: the mean row μ and the top `rank` principal
/// directions v₀ … v_{rank−1} of the table's rows, in descending order of variance.
///
/// A `reduced(k)` row keeps the first k coefficients c_j = v_j · (x − μ) and decodes to
/// x̂ = μ + Σ_{j<k} c_j v_j, which is the best rank-k linear reconstruction of the rows the basis
/// was fitted on.
public struct PCABasis: Sendable, Equatable {
    /// Row width d.
    public let dimension: Int
    /// Number of principal directions stored, 1 ≤ rank ≤ dimension.
    public let rank: Int
    /// The mean row μ, `dimension` values.
    public let mean: [Float]
    /// Principal directions, row-major `rank × dimension`; rows are orthonormal.
    public let components: [Float]
    /// Variance of the fitted rows along each direction (eigenvalues of the covariance),
    /// non-negative and non-increasing.
    public let variances: [Float]

    /// Largest deviation of a component's squared norm from 1 that `init` accepts: Float storage
    /// of a unit vector is off by ~d·ulp, so this only catches corrupt or foreign data.
    static let normTolerance: Float = 1e-3

    /// Creates a basis from stored parts, checking counts, finiteness, variance order and unit
    /// norms (used when loading a basis from disk).
    ///
    /// Orthogonality between components is not re-checked here (it costs rank²·d); `fit` produces
    /// it, and the unit-norm check catches corrupt data cheaply.
    ///
    /// - Throws: `invalidParameter` naming the first inconsistency.
    public init(dimension: Int, rank: Int, mean: [Float], components: [Float], variances: [Float]) throws(CodecError) {
        guard dimension >= 1 else {
            throw .invalidParameter("PCA basis dimension must be at least 1, got \(dimension)")
        }
        guard rank >= 1, rank <= dimension else {
            throw .invalidParameter("PCA basis rank must be in 1...\(dimension) (the dimension), got \(rank)")
        }
        guard mean.count == dimension else {
            throw .invalidParameter("PCA basis mean has \(mean.count) values, expected \(dimension)")
        }
        guard components.count == rank * dimension else {
            throw .invalidParameter(
                "PCA basis components have \(components.count) values, expected rank × dimension = \(rank * dimension)")
        }
        guard variances.count == rank else {
            throw .invalidParameter("PCA basis has \(variances.count) variances, expected rank = \(rank)")
        }
        if let index = mean.firstIndex(where: { !$0.isFinite }) {
            throw .invalidParameter("PCA basis mean[\(index)] = \(mean[index]) is not finite")
        }
        if let index = components.firstIndex(where: { !$0.isFinite }) {
            throw .invalidParameter("PCA basis component value at \(index) = \(components[index]) is not finite")
        }
        for (index, variance) in variances.enumerated() {
            guard variance.isFinite, variance >= 0 else {
                throw .invalidParameter("PCA basis variance[\(index)] = \(variance) must be finite and non-negative")
            }
            if index > 0, variance > variances[index - 1] {
                throw .invalidParameter(
                    "PCA basis variances must not increase: variance[\(index)] = \(variance) > variance[\(index - 1)] = \(variances[index - 1])")
            }
        }
        for component in 0..<rank {
            var squaredNorm: Float = 0
            for i in 0..<dimension {
                let value = components[component * dimension + i]
                squaredNorm += value * value
            }
            guard abs(squaredNorm - 1) <= Self.normTolerance else {
                throw .invalidParameter("PCA basis component \(component) has squared norm \(squaredNorm), expected 1")
            }
        }
        self.init(unchecked: dimension, rank: rank, mean: mean, components: components, variances: variances)
    }

    private init(unchecked dimension: Int, rank: Int, mean: [Float], components: [Float], variances: [Float]) {
        self.dimension = dimension
        self.rank = rank
        self.mean = mean
        self.components = components
        self.variances = variances
    }

    // MARK: - Fitting

    /// Fits the mean and the top-`rank` principal directions of `count` rows.
    ///
    /// Pass a sample of the table; memory is O(d²) whatever `count` is, and time is
    /// O(count·d² + d³) (release build, one thread: ~0.07 s at d = 64 and ~11 s at d = 1024 for
    /// 100k rows, of which ~2 s is the eigensolver). The covariance is normalised by `count`
    /// (not `count − 1`), so `count · Σ_{j≥k} variances[j]` over a full-rank fit is exactly the
    /// squared reconstruction error of `reduced(k)` on the fitted rows.
    ///
    /// Sample size: on rows with a slowly decaying spectrum the trailing directions have nearly
    /// equal variances and need many rows to pin down. Measured on such rows (d = 16…64): a
    /// 10·d-row sample kept `reduced(k)` within 3% of the optimal error of the whole table for
    /// k ≤ d/4 but was ~20% over at k = d − 1; 40·d rows were 5–6% over at k = d − 1; 100·d rows
    /// stayed within 2.5% at every k. Sample at least ~100·d rows.
    ///
    /// - Parameters:
    ///   - rows: row-major `count × dimension` values (at least that many).
    ///   - rank: directions to keep; clamped to `dimension` because a d-dimensional space has no
    ///     more. It is not clamped to `count`: with fewer rows than dimensions the directions of
    ///     zero variance are still a valid orthonormal completion, so every k ≤ rank stays usable.
    /// - Returns: a basis with `rank == min(rank, dimension)`. The result is a pure function of
    ///   the input: same rows, same basis, bit for bit.
    /// - Throws: `invalidParameter` for `dimension < 1`, `count < 1`, `rank < 1` or a short
    ///   buffer; `nonFinite` with the index into `rows` of the first NaN or infinity.
    public static func fit(
        rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int, rank: Int
    ) throws(CodecError) -> PCABasis {
        guard dimension >= 1 else {
            throw .invalidParameter("PCA fit needs dimension ≥ 1, got \(dimension)")
        }
        guard count >= 1 else {
            throw .invalidParameter("PCA fit needs at least one row, got count = \(count)")
        }
        guard rank >= 1 else {
            throw .invalidParameter("PCA fit needs rank ≥ 1, got \(rank)")
        }
        let (valueCount, overflow) = count.multipliedReportingOverflow(by: dimension)
        guard !overflow, rows.count >= valueCount else {
            throw .invalidParameter(
                "PCA fit rows buffer holds \(rows.count) values, fewer than count × dimension = \(count) × \(dimension)")
        }
        let values = UnsafeBufferPointer(rebasing: rows[0..<valueCount])
        try CodecChecks.requireFinite(values)
        // Non-nil: valueCount ≥ 1.
        let base = values.baseAddress!

        var mean = [Double](repeating: 0, count: dimension)
        for r in 0..<count {
            let row = base + r * dimension
            for i in 0..<dimension { mean[i] += Double(row[i]) }
        }
        for i in 0..<dimension { mean[i] /= Double(count) }

        var accumulator = PCACovarianceAccumulator(mean: mean)
        accumulator.add(rows: base, count: count)
        let keep = min(rank, dimension)
        let eigen = try SymmetricEigendecomposition(
            symmetric: accumulator.finish(), dimension: dimension, vectorCount: keep)

        return PCABasis(
            unchecked: dimension, rank: keep,
            mean: mean.map { Float($0) },
            components: eigen.vectors.map { Float($0) },
            // Rounding can leave the smallest eigenvalues slightly negative; a variance cannot be.
            variances: eigen.values.prefix(keep).map { Float(max($0, 0)) })
    }
}
