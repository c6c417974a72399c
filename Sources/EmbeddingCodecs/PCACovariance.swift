// Streaming covariance of a row sample, the expensive half of a PCA fit (count · d² / 2
// multiply-adds; the eigensolver is O(d³) once).
//
// Products are summed in Float over blocks of `blockRows` centred rows, then added into the Double
// covariance. A Float block sum of 128 products carries a relative error (against the sum of their
// magnitudes) of at most ~128 ulp and typically ~11, far below the Float precision of the basis
// the fit returns, and Float tiles run twice as wide as Double ones on the SSE baseline this
// package compiles for; all totals across blocks are Double, so the error does not grow with the
// sample size.

/// Accumulates Σ (x − μ)(x − μ)ᵀ over rows for a fixed mean μ.
struct PCACovarianceAccumulator {
    /// Rows centred per block. Larger blocks flush the Float tiles into the Double sums less often
    /// (the flush misses cache at d = 1024, where Σ is 8 MiB); 128 rows × 1024 floats keeps each
    /// of the two copies of the block at 512 KiB.
    static let blockRows = 128

    let dimension: Int
    /// Dimension rounded up to a whole number of tile columns, so tiles never need a remainder
    /// path; the padding columns are zero and add nothing.
    let paddedDimension: Int
    private let mean: [Double]
    /// Upper-triangle tiles of the padded Σ; `finish` mirrors and trims it.
    private var sums: [Double]
    /// The tile kernel's right operand: the block in panels of 8 columns, each panel
    /// `blockRows × 8` contiguous, so the kernel walks memory sequentially (a row-major block
    /// would be read at a stride of 4 KiB at d = 1024, which aliases in the caches).
    private var panels: [Float]
    /// The tile kernel's left operand: the block dimension-major (`dimension × blockRows`, whole
    /// tiles of 4 dimensions, zero past d).
    private var byDimension: [Float]
    private(set) var rowCount = 0

    init(mean: [Double]) {
        dimension = mean.count
        let columns = KMeansDotTile.columns, tileRows = KMeansDotTile.rows
        paddedDimension = (mean.count + columns - 1) / columns * columns
        self.mean = mean
        sums = [Double](repeating: 0, count: paddedDimension * paddedDimension)
        panels = [Float](repeating: 0, count: Self.blockRows * paddedDimension)
        byDimension = [Float](repeating: 0, count: (mean.count + tileRows - 1) / tileRows * tileRows * Self.blockRows)
    }

    /// Adds `count` rows (row-major, `count × dimension`).
    mutating func add(rows: UnsafePointer<Float>, count: Int) {
        var start = 0
        while start < count {
            let block = min(Self.blockRows, count - start)
            centre(rows + start * dimension, count: block)
            accumulateBlock(rows: block)
            start += block
        }
        rowCount += count
    }

    /// The covariance Σ / rowCount (population normalisation, so `count ·` the sum of the trailing
    /// eigenvalues is exactly the rank-k reconstruction error of the fitted rows), full and
    /// symmetric, `dimension × dimension`.
    func finish() -> [Double] {
        let d = dimension, p = paddedDimension
        let scale = rowCount > 0 ? 1 / Double(rowCount) : 0
        var result = [Double](repeating: 0, count: d * d)
        for i in 0..<d {
            for j in i..<d {
                let value = sums[i * p + j] * scale
                result[i * d + j] = value
                result[j * d + i] = value
            }
        }
        return result
    }

    // MARK: - Kernels

    private mutating func centre(_ rows: UnsafePointer<Float>, count: Int) {
        let d = dimension, block = Self.blockRows, width = KMeansDotTile.columns
        mean.withUnsafeBufferPointer { meanBuffer in
            panels.withUnsafeMutableBufferPointer { panelBuffer in
                byDimension.withUnsafeMutableBufferPointer { dimensionBuffer in
                    // Padding dimensions stay zero from init; rows past `count` are never read
                    // (the kernel's depth is `count`).
                    for r in 0..<count {
                        let source = rows + r * d
                        for i in 0..<d {
                            let value = Float(Double(source[i]) - meanBuffer[i])
                            panelBuffer[(i / width) * (block * width) + r * width + i % width] = value
                            dimensionBuffer[i * block + r] = value
                        }
                    }
                }
            }
        }
    }

    /// Adds the Gram matrix of the first `rows` centred rows to the upper-triangle tiles.
    private mutating func accumulateBlock(rows: Int) {
        let d = dimension, p = paddedDimension
        let tileRows = KMeansDotTile.rows, tileColumns = KMeansDotTile.columns
        let block = Self.blockRows
        panels.withUnsafeBufferPointer { panelBuffer in
            byDimension.withUnsafeBufferPointer { dimensionBuffer in
                sums.withUnsafeMutableBufferPointer { sumBuffer in
                    // Non-nil: every array holds at least 8 elements.
                    let right = panelBuffer.baseAddress!
                    let left = dimensionBuffer.baseAddress!
                    let total = sumBuffer.baseAddress!
                    var i0 = 0
                    while i0 < d {
                        let liveRows = min(tileRows, d - i0)
                        // Whole column tiles from the one holding the diagonal: a few entries below
                        // the diagonal are computed and ignored, which keeps the tile loop uniform.
                        var j0 = i0 / tileColumns * tileColumns
                        while j0 < d {
                            let tile = KMeansDotTile.multiplyAccumulate(
                                left: left + i0 * block, leftRowStride: block,
                                right: right + j0 * block, rightStep: tileColumns, depth: rows)
                            for a in 0..<liveRows {
                                let row = total + (i0 + a) * p + j0
                                for b in 0..<tileColumns { row[b] += Double(tile[a &* tileColumns &+ b]) }
                            }
                            j0 += tileColumns
                        }
                        i0 += tileRows
                    }
                }
            }
        }
    }
}
