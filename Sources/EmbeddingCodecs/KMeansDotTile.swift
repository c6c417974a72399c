// The register-tiled multiply-accumulate shared by the k-means distance kernel and the PCA
// covariance (both are a matrix product): a 4 × 8 tile of Float sums, each step broadcasting four
// "left" values against eight contiguous "right" values.
//
// Written as plain indexed loops over pointers. With the tile in an InlineArray and constant trip
// counts, LLVM unrolls both loops, keeps the 32 sums in eight SSE registers and vectorises the
// eight-wide right-hand side (checked with `perf annotate`: mulps/addps and no stack traffic in
// the loop). On the build machine that ran 1.5–2× faster than the same loops accumulating in a
// memory buffer. A 5 × 8 tile was faster in a stand-alone benchmark but spilled three
// accumulators to the stack once inlined into the distance kernel; 4 × 8 leaves registers to
// spare on the 16-register SSE baseline this package compiles for.

/// Sums of products for a 4 × 8 tile.
enum KMeansDotTile {
    /// Rows (broadcast values) per tile.
    static let rows = 4
    /// Columns (vector lanes) per tile.
    static let columns = 8

    /// Returns tile[a·8 + b] = Σ_{s < depth} left[a·leftRowStride + s] · right[b + s·rightStep]
    /// for a < 4, b < 8, summed in order of s.
    ///
    /// The left operand advances by one element per step: a variable step there cost enough
    /// registers to spill accumulators, so callers lay the left side out contiguously instead.
    ///
    /// - Precondition: every address named above is readable.
    @inline(__always)
    static func multiplyAccumulate(
        left: UnsafePointer<Float>, leftRowStride: Int,
        right: UnsafePointer<Float>, rightStep: Int, depth: Int
    ) -> InlineArray<32, Float> {
        var tile = InlineArray<32, Float>(repeating: 0)
        var leftColumn = left
        var rightRow = right
        // Literal trip counts (= rows, columns) so that the loops unroll fully.
        for _ in 0..<depth {
            for a in 0..<4 {
                let value = leftColumn[a &* leftRowStride]
                for b in 0..<8 {
                    tile[a &* 8 &+ b] += value * rightRow[b]
                }
            }
            leftColumn += 1
            rightRow += rightStep
        }
        return tile
    }
}
