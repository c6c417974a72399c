import CEmbeddingKernels
import Testing
@testable import EmbeddingStore

/// The brute-force kernels behind `Store.evaluate` and the exact top-k search built on them.
@Suite struct NeighbourSearchTests {
    /// Deterministic values in ±1, with some exact zeros.
    static func values(_ count: Int, seed: UInt64) -> [Float] {
        var random = SeededRandom(seed: seed)
        return (0..<count).map { i in i % 13 == 0 ? 0 : Float(Double(random.next() >> 11) * 0x1p-52 - 1) }
    }

    static func dot(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
        zip(a, b).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }

    /// Every score of both paths is within the header's bound (γ_d · Σ|q_k r_k|) of the double
    /// product, and `scores_above` emits exactly the scores of `scores` above each threshold
    /// (they share the tile), at widths and counts that leave partial panels and query tiles.
    @Test(arguments: [1, 3, 8, 17, 64, 100, 384])
    func kernelScoresAreWithinTheBound(d: Int) {
        for (queries, rows) in [(1, 1), (5, 16), (7, 33), (13, 50)] {
            let q = Self.values(queries * d, seed: UInt64(d * 100 + queries))
            let r = Self.values(rows * d, seed: UInt64(d * 1000 + rows))
            let padded = (rows + 15) / 16 * 16
            var panels = [Float](repeating: .nan, count: padded * d)
            emb_knn_pack(r, rows, d, nil, &panels)
            for portable in [false, true] {
                var scores = [Float](repeating: .nan, count: queries * rows)
                if portable {
                    emb_knn_scores_portable(q, queries, d, panels, rows, &scores, rows)
                } else {
                    emb_knn_scores(q, queries, d, panels, rows, &scores, rows)
                }
                let u = 0x1p-24
                for i in 0..<queries {
                    for j in 0..<rows {
                        let qs = q[i * d..<(i + 1) * d], rs = r[j * d..<(j + 1) * d]
                        let bound = Double(d) * u / (1 - Double(d) * u) * zip(qs, rs).reduce(0) { $0 + abs(Double($1.0) * Double($1.1)) }
                        #expect(abs(Double(scores[i * rows + j]) - Self.dot(qs, rs)) <= bound, "d \(d) query \(i) row \(j) portable \(portable)")
                    }
                }
                // Thresholds: -inf for query 0 (everything), a middle score for the others.
                let threshold = (0..<queries).map { i in i == 0 ? -Float.infinity : scores[i * rows + (i % rows)] }
                let capacity = queries * rows
                var outQuery = [UInt32](repeating: 0, count: capacity), outRow = outQuery
                var outScore = [Float](repeating: 0, count: capacity)
                let emitted = portable
                    ? emb_knn_scores_above_portable(q, queries, d, panels, rows, threshold, &outQuery, &outRow, &outScore)
                    : emb_knn_scores_above(q, queries, d, panels, rows, threshold, &outQuery, &outRow, &outScore)
                var got: [[Int]] = []
                for e in 0..<emitted {
                    got.append([Int(outQuery[e]), Int(outRow[e])])
                    #expect(outScore[e] == scores[Int(outQuery[e]) * rows + Int(outRow[e])])
                }
                var expected: [[Int]] = []
                for i in 0..<queries { for j in 0..<rows where scores[i * rows + j] > threshold[i] { expected.append([i, j]) } }
                #expect(got.sorted { $0.lexicographicallyPrecedes($1) } == expected, "d \(d), \(queries) × \(rows), portable \(portable)")
            }
        }
    }

    /// Packing scales each row by its inverse norm in double, zero-pads the last panel.
    @Test func packScalesRowsAndPads() {
        let rows: [Float] = [3, 4, 1e-30, 0, 5, 12]
        var panels = [Float](repeating: .nan, count: 16 * 2)
        emb_knn_pack(rows, 3, 2, [0.2, 1e30, 1.0 / 13], &panels)
        #expect(panels[0] == 0.6 && panels[16] == 0.8)                  // row 0, values k = 0 and 1
        #expect(panels[1] == Float(1e-30 * 1e30) && panels[17] == 0)    // row 1: a tiny row reaches unit scale
        #expect(panels[2] == Float(5.0 / 13) && panels[18] == Float(12.0 / 13))
        #expect(panels[3..<16].allSatisfy { $0 == 0 } && panels[19..<32].allSatisfy { $0 == 0 })
    }

    @Test func doubleDotMatchesAtEveryWidth() {
        for d in [0, 1, 5, 8, 9, 31, 384] {
            let a = Self.values(d, seed: 1), b = Self.values(d, seed: 2)
            let reference = Self.dot(a[...], b[...])
            for value in [emb_dot_f64(a, b, d), emb_dot_f64_portable(a, b, d)] {
                #expect(abs(value - reference) <= 1e-13 * max(1, abs(reference)), "d \(d)")
            }
        }
    }

    /// The top k in double with ties by smaller index, the query excluded: NumPy's
    /// `argsort(-sim, kind="stable")` over rows divided by their norms.
    static func reference(_ rows: [Float], d: Int, query: Int, k: Int) -> [Int] {
        let count = rows.count / d
        func norm(_ r: Int) -> Double { Self.dot(rows[r * d..<(r + 1) * d], rows[r * d..<(r + 1) * d]).squareRoot() }
        let nq = norm(query)
        let scored = (0..<count).filter { $0 != query }.map { r -> (Double, Int) in
            let nr = norm(r)
            return (nq > 0 && nr > 0 ? Self.dot(rows[query * d..<(query + 1) * d], rows[r * d..<(r + 1) * d]) / (nq * nr) : 0, r)
        }
        return scored.sorted { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 < $1.1 }.prefix(k).map(\.1)
    }

    /// Against the double reference: random rows (settled from the float32 candidates); 40 copies
    /// of one row and 45 near-copies of another (more rows within float32 rounding of each other
    /// than the 32 candidates, so those queries are rescanned; copies are ordered by index, and
    /// near-copies by their double cosines); and zero rows. On 1 and 3 threads, with chunks that
    /// split the rows unevenly.
    @Test(arguments: [1, 3])
    func searchMatchesTheDoubleReference(threads: Int) {
        let d = 24, count = 5000
        var rows = Self.values(count * d, seed: 9)
        for copy in stride(from: 100, to: 4100, by: 100) {          // 40 copies of row 7
            for j in 0..<d { rows[copy * d + j] = rows[7 * d + j] }
        }
        // 45 near-copies of row 8, each value off by up to 1e-4 of itself: their cosines with
        // row 8 and with each other differ by about 1e-9, below float32's resolution (~1e-6
        // here) and far above double's (~1e-16), so only the double scores can order them.
        var random = SeededRandom(seed: 4)
        for copy in stride(from: 150, to: 4650, by: 100) {
            for j in 0..<d {
                let wiggle = Float(Double(random.next() >> 11) * 0x1p-52 - 1) * 1e-4
                rows[copy * d + j] = rows[8 * d + j] * (1 + wiggle)
            }
        }
        for zero in [3, 4999] { for j in 0..<d { rows[zero * d + j] = 0 } }
        let norms = (0..<count).map { Self.dot(rows[$0 * d..<($0 + 1) * d], rows[$0 * d..<($0 + 1) * d]).squareRoot() }
        let queries = [0, 7, 100, 3, 1234, 4999, 4100, 2500, 8, 150] + stride(from: 11, to: 5000, by: 397).map { $0 }
        let search = rows.withUnsafeBufferPointer {
            NeighbourSearch.run(rows: $0.baseAddress!, count: count, dimension: d, norms: norms, queries: queries,
                                k: 10, threads: threads) { _ in }
        }
        for (i, query) in queries.enumerated() {
            #expect(search.neighbours[i] == Self.reference(rows, d: d, query: query, k: 10), "query row \(query)")
        }
        // Queries 7 and 100 have 39 or 40 exact ties at cosine 1: more than the 32 candidates.
        #expect(search.rescanned.isSuperset(of: [1, 2, 8, 9]), "\(search.rescanned)")
        #expect(search.rescanned.count < queries.count / 2, "most queries settle from candidates: \(search.rescanned)")
        // The zero row's neighbours are all at cosine 0: the first rows by index.
        #expect(search.neighbours[3] == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10])
    }

    /// Fewer rows than candidates, and k larger than the other rows.
    @Test func tinyTables() {
        let rows: [Float] = [1, 0, 0.9, 0.1, -1, 0, 0, 1]
        let norms = (0..<4).map { Self.dot(rows[$0 * 2..<$0 * 2 + 2], rows[$0 * 2..<$0 * 2 + 2]).squareRoot() }
        let search = rows.withUnsafeBufferPointer {
            NeighbourSearch.run(rows: $0.baseAddress!, count: 4, dimension: 2, norms: norms, queries: [0, 2], k: 10, threads: 2) { _ in }
        }
        #expect(search.neighbours == [[1, 3, 2], [3, 1, 0]])
        let one = [Float](repeating: 1, count: 3).withUnsafeBufferPointer {
            NeighbourSearch.run(rows: $0.baseAddress!, count: 1, dimension: 3, norms: [Double(3).squareRoot()], queries: [0], k: 10, threads: 1) { _ in }
        }
        #expect(one.neighbours == [[]])
    }
}
