// Symmetric eigensolver for fitting PCA bases: Householder reduction to tridiagonal form, then
// the implicit QL algorithm with Wilkinson-style shifts on the tridiagonal matrix. Both are the
// classic dense method for "all eigenvalues, many eigenvectors" at the sizes the store needs
// (d ≤ ~1024); Jacobi would be simpler but is several times slower past d ≈ 100.
//
// Every hot loop is a plain axpy over contiguous memory (no reductions in the inner loop), so it
// auto-vectorises without fast-math: the matrix-vector product of the reduction walks rows of the
// symmetric matrix instead of columns, and QL rotations act on rows of the transposed
// eigenvector matrix.

/// Eigenvalues (all of them) and the leading eigenvectors of a real symmetric matrix.
struct SymmetricEigendecomposition {
    /// Matrix order n.
    let dimension: Int
    /// All n eigenvalues, descending (ties keep the solver's order, which is deterministic).
    let values: [Double]
    /// Eigenvectors of `values[0 ..< vectorCount]`, row-major `vectorCount × n`, orthonormal rows,
    /// each with its largest-magnitude entry (the first one, on a tie) positive.
    let vectors: [Double]
    /// Number of rows in `vectors`.
    let vectorCount: Int

    /// Decomposes `matrix` (row-major n × n; only symmetry is assumed, the upper triangle is read
    /// as the truth through row access).
    ///
    /// - Throws: `invalidParameter` if the QL iteration does not converge, which for a finite
    ///   symmetric matrix indicates a bug rather than bad input.
    init(symmetric matrix: [Double], dimension n: Int, vectorCount: Int) throws(CodecError) {
        precondition(n >= 1 && matrix.count == n * n, "matrix must be n × n")
        precondition(vectorCount >= 0 && vectorCount <= n, "vectorCount must be in 0...n")
        var reflectors = matrix
        var diagonal = [Double](repeating: 0, count: n)
        // offDiagonal[i] couples i and i + 1; the last entry is a zero sentinel the QL scan uses.
        var offDiagonal = [Double](repeating: 0, count: n)
        var betas = [Double](repeating: 0, count: n)
        Self.tridiagonalise(&reflectors, n: n, diagonal: &diagonal, offDiagonal: &offDiagonal, betas: &betas)

        // Rows of `rotated` are the columns of the accumulated rotation product, so each Givens
        // rotation updates two contiguous rows.
        var rotated = [Double](repeating: 0, count: n * n)
        for i in 0..<n { rotated[i * n + i] = 1 }
        try Self.diagonaliseTridiagonal(n: n, diagonal: &diagonal, offDiagonal: &offDiagonal, rotated: &rotated)

        // Sort by value, then by solver index, so equal eigenvalues keep a reproducible order.
        let order = (0..<n).sorted { lhs, rhs in
            diagonal[lhs] != diagonal[rhs] ? diagonal[lhs] > diagonal[rhs] : lhs < rhs
        }
        self.dimension = n
        self.values = order.map { diagonal[$0] }
        self.vectorCount = vectorCount
        self.vectors = Self.backTransform(
            rotated: rotated, order: Array(order.prefix(vectorCount)), reflectors: reflectors, betas: betas, n: n)
    }

    // MARK: - Householder tridiagonalisation

    /// Reduces `a` to tridiagonal form T = Qᵀ A Q with Q = H₀ H₁ ⋯ H_{n−3},
    /// H_k = I − β_k u_k u_kᵀ acting on indices k+1 ..< n.
    ///
    /// On return row k of `a`, columns k+1 ..< n, holds u_k (the only part of row k the later
    /// steps never read again), and `betas[k]` holds β_k (0 where column k was already reduced).
    private static func tridiagonalise(
        _ a: inout [Double], n: Int, diagonal: inout [Double], offDiagonal: inout [Double], betas: inout [Double]
    ) {
        var product = [Double](repeating: 0, count: n)
        var correction = [Double](repeating: 0, count: n)
        a.withUnsafeMutableBufferPointer { matrix in
            product.withUnsafeMutableBufferPointer { productBuffer in
                correction.withUnsafeMutableBufferPointer { correctionBuffer in
                    // Non-nil: all three buffers hold n ≥ 1 elements.
                    let base = matrix.baseAddress!
                    let p = productBuffer.baseAddress!
                    let w = correctionBuffer.baseAddress!
                    for k in 0..<max(n - 2, 0) {
                        let m = n - k - 1
                        // Row k right of the diagonal equals column k below it (symmetry), and rows
                        // are contiguous.
                        let u = base + (k * n + k + 1)
                        diagonal[k] = base[k * n + k]
                        var tail = 0.0
                        for i in 1..<m { tail += u[i] * u[i] }
                        if tail == 0 {
                            offDiagonal[k] = u[0]
                            betas[k] = 0
                            continue
                        }
                        let norm = (u[0] * u[0] + tail).squareRoot()
                        // Reflect onto −sign(u₀)‖x‖ e₁ so that u₀ − α never cancels.
                        let alpha = u[0] > 0 ? -norm : norm
                        u[0] -= alpha
                        let beta = 2 / (u[0] * u[0] + tail)
                        betas[k] = beta
                        offDiagonal[k] = alpha

                        // p = β B u, accumulated as a sum of rows of B (B is symmetric).
                        let trailing = base + ((k + 1) * n + k + 1)
                        for i in 0..<m { p[i] = 0 }
                        for j in 0..<m {
                            let coefficient = beta * u[j]
                            if coefficient == 0 { continue }
                            let row = trailing + j * n
                            for i in 0..<m { p[i] += coefficient * row[i] }
                        }
                        var up = 0.0
                        for i in 0..<m { up += u[i] * p[i] }
                        let half = 0.5 * beta * up
                        for i in 0..<m { w[i] = p[i] - half * u[i] }
                        // B ← B − u wᵀ − w uᵀ, the two-sided application of H_k.
                        for i in 0..<m {
                            let ui = u[i], wi = w[i]
                            let row = trailing + i * n
                            for j in 0..<m { row[j] -= ui * w[j] + wi * u[j] }
                        }
                    }
                    if n >= 2 {
                        diagonal[n - 2] = base[(n - 2) * n + n - 2]
                        offDiagonal[n - 2] = base[(n - 2) * n + n - 1]
                    }
                    diagonal[n - 1] = base[(n - 1) * n + n - 1]
                    offDiagonal[n - 1] = 0
                }
            }
        }
    }

    // MARK: - Implicit QL on the tridiagonal matrix

    /// Diagonalises the tridiagonal matrix in place (eigenvalues end up in `diagonal`) and applies
    /// every rotation to the rows of `rotated`.
    private static func diagonaliseTridiagonal(
        n: Int, diagonal d: inout [Double], offDiagonal e: inout [Double], rotated: inout [Double]
    ) throws(CodecError) {
        // Far more than the 2–3 sweeps per eigenvalue QL needs in practice; hitting it means a bug.
        let maximumSweeps = 64
        var failed = false
        rotated.withUnsafeMutableBufferPointer { rotatedBuffer in
            // Non-nil: n ≥ 1.
            let z = rotatedBuffer.baseAddress!
            for l in 0..<n {
                var sweeps = 0
                while true {
                    // Split the matrix where an off-diagonal entry is negligible next to its
                    // neighbours; the block l...m is then unreduced.
                    var m = l
                    while m < n - 1 {
                        let scale = abs(d[m]) + abs(d[m + 1])
                        if abs(e[m]) <= Double.ulpOfOne * scale { break }
                        m += 1
                    }
                    if m == l { break }
                    sweeps += 1
                    if sweeps > maximumSweeps {
                        failed = true
                        return
                    }
                    // Shift from the eigenvalue of the leading 2×2 block closer to d[l].
                    var g = (d[l + 1] - d[l]) / (2 * e[l])
                    var r = (g * g + 1).squareRoot()
                    g = d[m] - d[l] + e[l] / (g + (g >= 0 ? r : -r))
                    var sine = 1.0, cosine = 1.0, shift = 0.0
                    var i = m - 1
                    var deflated = false
                    while i >= l {
                        let f = sine * e[i]
                        let b = cosine * e[i]
                        r = hypot(f, g)
                        e[i + 1] = r
                        if r == 0 {
                            // Exact underflow: the matrix split at i; restart on the smaller block.
                            d[i + 1] -= shift
                            e[m] = 0
                            deflated = true
                            break
                        }
                        sine = f / r
                        cosine = g / r
                        g = d[i + 1] - shift
                        r = (d[i] - g) * sine + 2 * cosine * b
                        shift = sine * r
                        d[i + 1] = g + shift
                        g = cosine * r - b
                        let lower = z + i * n
                        let upper = lower + n
                        for k in 0..<n {
                            let zi = lower[k], zj = upper[k]
                            upper[k] = sine * zi + cosine * zj
                            lower[k] = cosine * zi - sine * zj
                        }
                        i -= 1
                    }
                    if deflated { continue }
                    d[l] -= shift
                    e[l] = g
                    e[m] = 0
                }
            }
        }
        if failed {
            throw .invalidParameter("symmetric eigensolver did not converge in \(maximumSweeps) sweeps (order \(n))")
        }
    }

    // MARK: - Back to the original coordinates

    /// How many eigenvectors share one pass over the reflectors: 8 doubles (64 bytes) per matrix
    /// row keep the block of vectors in L1 while the reflectors stream past once per block.
    private static let vectorBlock = 8

    /// Returns Q z for each selected eigenvector z of T, as sign-normalised rows.
    private static func backTransform(
        rotated: [Double], order: [Int], reflectors: [Double], betas: [Double], n: Int
    ) -> [Double] {
        let count = order.count
        var result = [Double](repeating: 0, count: count * n)
        guard count > 0 else { return result }
        let width = vectorBlock
        // Vectors of one block interleaved: block[i * width + b] is entry i of vector b.
        var block = [Double](repeating: 0, count: n * width)
        var dots = [Double](repeating: 0, count: width)
        rotated.withUnsafeBufferPointer { z in
            reflectors.withUnsafeBufferPointer { reflectorBuffer in
                block.withUnsafeMutableBufferPointer { blockBuffer in
                    dots.withUnsafeMutableBufferPointer { dotBuffer in
                        // Non-nil: every buffer holds at least n ≥ 1 or width elements.
                        let y = blockBuffer.baseAddress!
                        let dot = dotBuffer.baseAddress!
                        var first = 0
                        while first < count {
                            let live = min(width, count - first)
                            for i in 0..<(n * width) { y[i] = 0 }
                            for b in 0..<live {
                                let source = order[first + b] * n
                                for i in 0..<n { y[i * width + b] = z[source + i] }
                            }
                            // Q z = H₀(H₁(⋯ H_{n−3} z)): apply the last reflector first.
                            var k = n - 3
                            while k >= 0 {
                                let beta = betas[k]
                                if beta != 0 {
                                    let u = reflectorBuffer.baseAddress! + (k * n + k + 1)
                                    let m = n - k - 1
                                    let tail = y + (k + 1) * width
                                    for b in 0..<width { dot[b] = 0 }
                                    for i in 0..<m {
                                        let ui = u[i]
                                        let row = tail + i * width
                                        for b in 0..<width { dot[b] += ui * row[b] }
                                    }
                                    for b in 0..<width { dot[b] *= beta }
                                    for i in 0..<m {
                                        let ui = u[i]
                                        let row = tail + i * width
                                        for b in 0..<width { row[b] -= ui * dot[b] }
                                    }
                                }
                                k -= 1
                            }
                            for b in 0..<live {
                                let target = (first + b) * n
                                for i in 0..<n { result[target + i] = y[i * width + b] }
                            }
                            first += live
                        }
                    }
                }
            }
        }
        normaliseSigns(&result, rows: count, n: n)
        return result
    }

    /// Eigenvectors are defined up to sign; fixing it makes fits reproducible across solvers and
    /// builds (the largest-magnitude entry, first on a tie, becomes positive).
    private static func normaliseSigns(_ vectors: inout [Double], rows: Int, n: Int) {
        for row in 0..<rows {
            let start = row * n
            var largest = start
            for i in start..<(start + n) where abs(vectors[i]) > abs(vectors[largest]) { largest = i }
            if vectors[largest] < 0 {
                for i in start..<(start + n) { vectors[i] = -vectors[i] }
            }
        }
    }
}

/// √(a² + b²) without overflow or destructive underflow for the QL rotations.
@inline(__always)
private func hypot(_ a: Double, _ b: Double) -> Double {
    let x = abs(a), y = abs(b)
    let big = max(x, y), small = min(x, y)
    if big == 0 { return 0 }
    let ratio = small / big
    return big * (1 + ratio * ratio).squareRoot()
}
