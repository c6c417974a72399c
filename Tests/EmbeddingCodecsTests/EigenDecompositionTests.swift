@testable import EmbeddingCodecs
import Testing

@Suite("Symmetric eigensolver")
struct EigenDecompositionTests {
    /// Random symmetric matrix with entries ~N(0, 1).
    private func randomSymmetric(_ n: Int, seed: UInt64) -> [Double] {
        var random = FitTestRandom(seed: seed)
        var a = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in i..<n {
                let value = random.gaussian()
                a[i * n + j] = value
                a[j * n + i] = value
            }
        }
        return a
    }

    /// Largest |A v − λ v| entry and largest |VVᵀ − I| entry over all returned pairs.
    private func residuals(_ a: [Double], _ e: SymmetricEigendecomposition) -> (pair: Double, orthogonality: Double) {
        let n = e.dimension
        var pair = 0.0, orthogonality = 0.0
        for k in 0..<e.vectorCount {
            for i in 0..<n {
                var sum = 0.0
                for j in 0..<n { sum += a[i * n + j] * e.vectors[k * n + j] }
                pair = max(pair, abs(sum - e.values[k] * e.vectors[k * n + i]))
            }
            for l in k..<e.vectorCount {
                var dot = 0.0
                for i in 0..<n { dot += e.vectors[k * n + i] * e.vectors[l * n + i] }
                orthogonality = max(orthogonality, abs(dot - (k == l ? 1 : 0)))
            }
        }
        return (pair, orthogonality)
    }

    @Test("random symmetric matrices: residual, orthonormality, order, trace, signs",
          arguments: [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100])
    func randomMatrices(n: Int) throws {
        let a = randomSymmetric(n, seed: UInt64(n))
        let e = try SymmetricEigendecomposition(symmetric: a, dimension: n, vectorCount: n)
        let (pair, orthogonality) = residuals(a, e)
        // Backward-stable solver: errors are a modest multiple of n·ε·‖A‖ (‖A‖ ≈ 2√n here).
        let scale = Double(n) * Double.ulpOfOne * 2 * Double(n).squareRoot()
        #expect(pair <= 100 * scale, "max |Av − λv| = \(pair)")
        #expect(orthogonality <= 100 * Double(n) * Double.ulpOfOne, "max |VVᵀ − I| = \(orthogonality)")
        #expect(zip(e.values, e.values.dropFirst()).allSatisfy { $0 >= $1 })
        let trace = (0..<n).reduce(0.0) { $0 + a[$1 * n + $1] }
        #expect(abs(e.values.reduce(0, +) - trace) <= 100 * scale)
        for k in 0..<n {
            let row = e.vectors[(k * n)..<((k + 1) * n)]
            let largest = row.max { abs($0) < abs($1) }!
            #expect(largest > 0, "largest-magnitude entry of vector \(k) must be positive")
        }
        // Independent check of the spectrum itself.
        let reference = jacobiEigenvalues(a, n: n)
        for k in 0..<n { #expect(abs(reference[k] - e.values[k]) <= 100 * scale) }
    }

    @Test("only the leading vectors are returned when asked")
    func leadingVectors() throws {
        let n = 33
        let a = randomSymmetric(n, seed: 99)
        let all = try SymmetricEigendecomposition(symmetric: a, dimension: n, vectorCount: n)
        let some = try SymmetricEigendecomposition(symmetric: a, dimension: n, vectorCount: 5)
        #expect(some.vectorCount == 5 && some.vectors.count == 5 * n)
        #expect(Array(all.vectors.prefix(5 * n)) == some.vectors)
        #expect(all.values == some.values)
    }

    @Test("zero, identity and repeated eigenvalues give an orthonormal basis without NaN")
    func degenerateSpectra() throws {
        for n in [1, 2, 5, 16] {
            let zero = [Double](repeating: 0, count: n * n)
            var identity = zero
            for i in 0..<n { identity[i * n + i] = 3 }
            // Rank one: all-ones matrix, eigenvalues n and 0 (n − 1 times).
            let ones = [Double](repeating: 1, count: n * n)
            for (name, a) in [("zero", zero), ("3·I", identity), ("ones", ones)] {
                let e = try SymmetricEigendecomposition(symmetric: a, dimension: n, vectorCount: n)
                #expect(e.values.allSatisfy(\.isFinite) && e.vectors.allSatisfy(\.isFinite), "\(name), n = \(n)")
                let (pair, orthogonality) = residuals(a, e)
                #expect(pair <= 1e-12 * Double(n), "\(name), n = \(n): residual \(pair)")
                #expect(orthogonality <= 1e-12 * Double(n), "\(name), n = \(n): orthogonality \(orthogonality)")
            }
            let e = try SymmetricEigendecomposition(symmetric: ones, dimension: n, vectorCount: 1)
            #expect(abs(e.values[0] - Double(n)) <= 1e-12 * Double(n))
        }
    }

    @Test("deterministic: the same matrix gives bit-identical output")
    func deterministic() throws {
        let a = randomSymmetric(40, seed: 5)
        let first = try SymmetricEigendecomposition(symmetric: a, dimension: 40, vectorCount: 40)
        let second = try SymmetricEigendecomposition(symmetric: a, dimension: 40, vectorCount: 40)
        #expect(first.values == second.values && first.vectors == second.vectors)
    }

    @Test("graded and already-diagonal matrices")
    func gradedAndDiagonal() throws {
        let n = 20
        var diagonal = [Double](repeating: 0, count: n * n)
        var graded = diagonal
        for i in 0..<n {
            diagonal[i * n + i] = Double(i) - 7.5
            for j in 0..<n { graded[i * n + j] = 1 / Double(i + j + 1) }  // Hilbert: eigenvalues down to ~1e-28
        }
        let d = try SymmetricEigendecomposition(symmetric: diagonal, dimension: n, vectorCount: n)
        #expect(d.values == (0..<n).map { Double($0) - 7.5 }.sorted(by: >))
        let h = try SymmetricEigendecomposition(symmetric: graded, dimension: n, vectorCount: n)
        let (pair, orthogonality) = residuals(graded, h)
        #expect(pair <= 1e-14 && orthogonality <= 1e-13, "Hilbert: residual \(pair), orthogonality \(orthogonality)")
    }
}
