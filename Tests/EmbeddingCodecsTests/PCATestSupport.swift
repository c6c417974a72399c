// Seeded data generators and independent reference maths for the PCA, reduced(k) and k-means
// tests. Nothing here calls the code under test, so the references stay independent of it.

/// Seeded generator for test data (a 64-bit LCG with the high bits taken): reproducible on every
/// platform, unlike the system generator.
struct FitTestRandom {
    private var state: UInt64

    init(seed: UInt64) { state = seed &* 0x2545_F491_4F6C_DD1D &+ 1 }

    mutating func nextBits() -> UInt64 {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return state
    }

    /// Uniform in [0, 1).
    mutating func unit() -> Double { Double(nextBits() >> 11) * 0x1p-53 }

    /// Uniform in 0 ..< bound.
    mutating func index(below bound: Int) -> Int { Int(unit() * Double(bound)) }

    /// Standard normal by Box–Muller with a polar rejection step (no libm needed).
    mutating func gaussian() -> Double {
        while true {
            let u = 2 * unit() - 1, v = 2 * unit() - 1
            let s = u * u + v * v
            if s > 0, s < 1 {
                // ln(s) by the identity ln s = 2·atanh((s−1)/(s+1)), a fast-converging series.
                return u * (-2 * fitTestLog(s) / s).squareRoot()
            }
        }
    }
}

/// Natural logarithm for s in (0, 1) without Foundation: range-reduce by powers of 2, then the
/// atanh series.
func fitTestLog(_ s: Double) -> Double {
    var x = s
    var exponent = 0
    while x < 0.5 { x *= 2; exponent -= 1 }
    let y = (x - 1) / (x + 1)
    let y2 = y * y
    var term = y, sum = 0.0
    var n = 1.0
    while abs(term) > 1e-18 {
        sum += term / n
        term *= y2
        n += 2
    }
    return 2 * sum + Double(exponent) * 0.693_147_180_559_945_3
}

// MARK: - Matrices

/// Cyclic Jacobi eigenvalue algorithm on a symmetric matrix (row-major, Double): the test's
/// independent reference, slow but simple and unconditionally accurate. Returns eigenvalues,
/// descending.
func jacobiEigenvalues(_ matrix: [Double], n: Int) -> [Double] {
    var a = matrix
    for _ in 0..<100 {
        var off = 0.0
        for i in 0..<n { for j in (i + 1)..<max(n, i + 1) { off += a[i * n + j] * a[i * n + j] } }
        if off < 1e-30 { break }
        for p in 0..<n {
            for q in (p + 1)..<max(n, p + 1) {
                let apq = a[p * n + q]
                if abs(apq) < 1e-300 { continue }
                let theta = (a[q * n + q] - a[p * n + p]) / (2 * apq)
                let t = (theta >= 0 ? 1 : -1) / (abs(theta) + (theta * theta + 1).squareRoot())
                let c = 1 / (t * t + 1).squareRoot(), s = t * c
                // A ← Jᵀ A J for the rotation J in the (p, q) plane.
                for k in 0..<n {
                    let akp = a[k * n + p], akq = a[k * n + q]
                    a[k * n + p] = c * akp - s * akq
                    a[k * n + q] = s * akp + c * akq
                }
                for k in 0..<n {
                    let apk = a[p * n + k], aqk = a[q * n + k]
                    a[p * n + k] = c * apk - s * aqk
                    a[q * n + k] = s * apk + c * aqk
                }
            }
        }
    }
    return (0..<n).map { a[$0 * n + $0] }.sorted(by: >)
}

/// Population covariance (Σ (x − μ)(x − μ)ᵀ / n) of Float rows, in Double.
func referenceCovariance(_ rows: [Float], count: Int, dimension d: Int) -> [Double] {
    var mean = [Double](repeating: 0, count: d)
    for r in 0..<count { for i in 0..<d { mean[i] += Double(rows[r * d + i]) } }
    for i in 0..<d { mean[i] /= Double(count) }
    var covariance = [Double](repeating: 0, count: d * d)
    var centred = [Double](repeating: 0, count: d)
    for r in 0..<count {
        for i in 0..<d { centred[i] = Double(rows[r * d + i]) - mean[i] }
        for i in 0..<d {
            let ci = centred[i]
            for j in i..<d { covariance[i * d + j] += ci * centred[j] }
        }
    }
    for i in 0..<d {
        for j in i..<d {
            covariance[i * d + j] /= Double(count)
            covariance[j * d + i] = covariance[i * d + j]
        }
    }
    return covariance
}

// MARK: - Data with a decaying spectrum

/// Applies three fixed Householder reflections to `vector`: a cheap (O(d)) orthogonal map that
/// mixes every coordinate, so test spectra are not axis-aligned.
struct FitTestRotation {
    let dimension: Int
    private let reflectors: [[Double]]

    init(dimension: Int, random: inout FitTestRandom) {
        self.dimension = dimension
        reflectors = (0..<3).map { _ in
            var v = (0..<dimension).map { _ in random.gaussian() }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            for i in v.indices { v[i] /= norm }
            return v
        }
    }

    func apply(_ vector: inout [Double]) {
        for v in reflectors {
            var dot = 0.0
            for i in 0..<dimension { dot += v[i] * vector[i] }
            for i in 0..<dimension { vector[i] -= 2 * dot * v[i] }
        }
    }
}

/// σ_j ∝ (j + 1)^−0.6, the decaying spectrum of the project's error rule.
func decayingScales(_ d: Int) -> [Double] {
    // (j + 1)^−0.6 = exp(0.6 · ln(1 / (j + 1))), with the helpers below instead of Foundation.
    (0..<d).map { j in fitTestExp(0.6 * fitTestLog(1 / Double(j + 1))) }
}

/// e^x for moderate x (Taylor series after halving).
func fitTestExp(_ x: Double) -> Double {
    var halvings = 0
    var y = x
    while abs(y) > 0.5 { y /= 2; halvings += 1 }
    var term = 1.0, sum = 1.0
    for n in 1..<30 {
        term *= y / Double(n)
        sum += term
    }
    for _ in 0..<halvings { sum *= sum }
    return sum
}

/// Sylvester–Hadamard entry H[r][c] = (−1)^popcount(r & c).
@inline(__always)
func walshSign(_ r: Int, _ c: Int) -> Double { (r & c).nonzeroBitCount & 1 == 0 ? 1 : -1 }

/// Rows x_r = μ + R(σ ⊙ g_r) whose sample covariance is known exactly: g_r[j] = H[r][j + 1] over
/// `count` = a power of two > d rows, so the columns of G are orthogonal with zero mean and
/// GᵀG = count·I. The covariance is then R diag(σ²) Rᵀ, and the optimal rank-k squared error
/// over the rows is count · Σ_{j≥k} σ_j² (up to the Float rounding of the rows).
func walshRows(dimension d: Int, seed: UInt64) -> (rows: [Float], count: Int, scales: [Double]) {
    var count = 1
    while count <= d { count *= 2 }
    count = max(count, 16)
    var random = FitTestRandom(seed: seed)
    let rotation = FitTestRotation(dimension: d, random: &random)
    let mean = (0..<d).map { _ in random.gaussian() }
    let scales = decayingScales(d)
    var rows = [Float](repeating: 0, count: count * d)
    var vector = [Double](repeating: 0, count: d)
    for r in 0..<count {
        for j in 0..<d { vector[j] = scales[j] * walshSign(r, j + 1) }
        rotation.apply(&vector)
        for i in 0..<d { rows[r * d + i] = Float(mean[i] + vector[i]) }
    }
    return (rows, count, scales)
}

/// Gaussian rows with the decaying spectrum in a rotated basis plus isotropic noise of standard
/// deviation `noise` (the sample covariance is only approximately the population one).
func spectrumRows(dimension d: Int, count: Int, noise: Double, seed: UInt64) -> [Float] {
    var random = FitTestRandom(seed: seed)
    let rotation = FitTestRotation(dimension: d, random: &random)
    let mean = (0..<d).map { _ in 3 * random.gaussian() }
    let scales = decayingScales(d)
    var rows = [Float](repeating: 0, count: count * d)
    var vector = [Double](repeating: 0, count: d)
    for r in 0..<count {
        for j in 0..<d { vector[j] = scales[j] * random.gaussian() }
        rotation.apply(&vector)
        for i in 0..<d { rows[r * d + i] = Float(mean[i] + vector[i] + noise * random.gaussian()) }
    }
    return rows
}
