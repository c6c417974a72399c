import CEmbeddingKernels

// The encoder half of the rowwise int8 / int4 codecs: choosing a row's scale and bias.
//
// Both codecs decode x = Float(q) * scale + bias with q in 0...levels (255 or 15). The plain
// FBGEMM rule spans [min, max]; a tighter range often has a lower mean squared error, because
// the few values it clips cost less than the rounding error it saves on all the others (Guan et
// al. 2019, "Post-training 4-bit quantization on embedding tables"). The search below:
//
//  1. walks a greedy shrink of [min, max] over a 32-bin histogram, scoring each range in O(1)
//     with an estimate (exact clipping error per bin + uniform rounding noise scale²/12 inside),
//  2. refines the best range by alternating minimisation: for fixed codes the best (scale, bias)
//     is a least-squares line fit, and for a fixed (scale, bias) the best codes are the nearest
//     ones; each step is one O(d) pass that also estimates the previous step's error,
//  3. scores the result and the plain min/max rule exactly, by their actual decode (the same
//     Float multiply-then-add as the decoders), and keeps the rule unless the result beats it:
//     the encoder is never worse than min/max by construction,
//  4. falls back, for rows whose min/max decode overflows Float, to a narrower window (and, as
//     a last resort never reached in tests, a constant row), so every decoded value is finite.
//
// The Swift code below (`searchReference`) is the definition. `search` runs the same search in
// C (rowwise_search.c: AVX2 with a portable twin), which returns exactly the reference's scale
// and bias, or, for the rare row it cannot certify, hands it back to `searchReference`.

/// Affine code map of one rowwise-quantised row: x ≈ Float(q) * scale + bias.
struct RowwiseAffine: Equatable {
    var scale: Float
    var bias: Float

    init(scale: Float, bias: Float) {
        self.scale = scale
        self.bias = bias
    }

    /// The map whose code 0 is `lo` (rounded to Float) and whose code `levels` is about `hi`.
    ///
    /// Computed in Double because `hi - lo` overflows Float for rows spanning ±3e38.
    init(lo: Double, hi: Double, levels: Int) {
        let bias = Float(lo)
        self.bias = bias
        self.scale = hi > Double(bias) ? Float((hi - Double(bias)) / Double(levels)) : 0
    }

    /// What the decoders produce for code `q`: a Float multiply, then a Float add, never fused.
    @inline(__always)
    func decoded(_ q: Float) -> Float {
        q * scale + bias
    }

    /// This map with its scale lowered by a few ulps where needed so that every code decodes
    /// to a finite value, or nil if that does not suffice.
    ///
    /// Decoding is monotone in the code (scale ≥ 0, round-to-nearest is monotone), so codes
    /// 0...levels are finite exactly when code `levels` is; near Float's limit the roundings
    /// of scale and decode can push it one or two ulps over, and each step back removes about one.
    func loweredToFinite(levels: Int) -> RowwiseAffine? {
        var candidate = self
        for _ in 0..<8 {
            if candidate.decoded(Float(levels)).isFinite { return candidate }
            candidate.scale = candidate.scale.nextDown
        }
        return nil
    }
}

/// Assigns codes for one `RowwiseAffine`: q = clamp(round((x − bias) · (1/scale)), 0, levels).
///
/// Works in Double, where x − bias (up to 6.9e38) and 1/scale (up to 7e44 for the smallest
/// subnormal scale) stay finite and exact enough. Multiplying by the reciprocal instead of
/// dividing differs from the exact quotient only within a few Double ulps of a rounding tie,
/// and keeps a division out of every encoder pass.
struct RowwiseCoder {
    let bias: Double
    let inverseScale: Double
    let levels: Double

    init(_ affine: RowwiseAffine, levels: Int) {
        bias = Double(affine.bias)
        inverseScale = affine.scale > 0 ? 1 / Double(affine.scale) : 0 // scale 0: every code is 0
        self.levels = Double(levels)
    }

    /// Nearest code for `x` as an integral Float (exact, and what the decoders multiply).
    @inline(__always)
    func code(for x: Float) -> Float {
        let t = Swift.min(Swift.max((Double(x) - bias) * inverseScale, 0), levels)
        // For 0 ≤ t < 2^52, adding and removing 2^52 rounds to the nearest integer, ties to even
        // (the default FP mode); `rounded(.toNearestOrEven)` is a `rint` call on baseline x86_64.
        return Float((t + 0x1p52) - 0x1p52)
    }
}

enum RowwiseQuantizer {
    /// Histogram resolution of the greedy range search. After refinement 32 bins gave the same
    /// errors as 64 (measured on Gaussian, heavy-tailed and uniform rows, d = 8…1024), faster.
    static let histogramBins = 32
    /// The greedy walk may shrink the range by up to this many bins in total (half the range;
    /// 4-bit Gaussian rows of d = 1024 want about 40%).
    static let maxShrinkSteps = 16
    /// Cap on alternating-minimisation passes. They stop as soon as the estimate stops
    /// improving: about 4 run at d = 64 and 7–8 at d = 1024; the last ones gain under 1%.
    static let refinePasses = 8

    // MARK: - Plain min/max rule

    /// Smallest and largest value of a non-empty row; throws `nonFinite` for NaN or ±infinity.
    static func finiteBounds(_ row: UnsafeBufferPointer<Float>) throws(CodecError) -> (min: Float, max: Float) {
        var low = row[0], high = row[0]
        for index in row.indices {
            let value = row[index]
            guard value.isFinite else { throw .nonFinite(index: index, value: value) }
            low = Swift.min(low, value)
            high = Swift.max(high, value)
        }
        return (low, high)
    }

    /// The plain FBGEMM rule: bias = min, scale = (max − min) / levels; scale 0 for a constant row.
    ///
    /// - Throws: `nonFinite`, or `outOfRange(codec:)` naming the first value whose decode would
    ///   overflow Float (rows spanning more than about 3.4e38).
    static func minMaxAffine(_ row: UnsafeBufferPointer<Float>, levels: Int, codec: String) throws(CodecError) -> RowwiseAffine {
        let (low, high) = try finiteBounds(row)
        let affine = RowwiseAffine(lo: Double(low), hi: Double(high), levels: levels)
        // With |x| ≤ 1e38 every decoded value is within about 3e38 of zero: no check needed.
        guard Swift.max(low.magnitude, high.magnitude) > 1e38 else { return affine }
        let coder = RowwiseCoder(affine, levels: levels)
        for index in row.indices where !affine.decoded(coder.code(for: row[index])).isFinite {
            throw .outOfRange(codec: codec, index: index, value: row[index])
        }
        return affine
    }

    // MARK: - Scoring

    /// Exact sum of squared errors of `row` coded with `affine` and decoded as the decoders do
    /// (Float multiply, then Float add), summed in Double in index order; +infinity when any
    /// decoded value overflows Float.
    static func squaredError(_ row: UnsafeBufferPointer<Float>, _ affine: RowwiseAffine, levels: Int) -> Double {
        let coder = RowwiseCoder(affine, levels: levels)
        var sum = 0.0
        for index in row.indices {
            let x = row[index]
            let error = Double(affine.decoded(coder.code(for: x))) - Double(x)
            sum += error * error
        }
        return sum
    }

    /// Sums over y = x − origin that do not depend on the candidate, for `refitPass`.
    struct Moments {
        var count: Double
        var origin: Double
        var sumY: Double
        var sumYY: Double
    }

    /// One O(d) pass over the codes that `affine` assigns: their squared error estimated from
    /// code moments (exact but for the Float rounding of the decode, which is far below the
    /// quantisation error), and the least-squares refit of (scale, bias) to those codes (nil when
    /// the codes do not determine a line or the fit is unusable).
    static func refitPass(
        _ row: UnsafeBufferPointer<Float>, _ affine: RowwiseAffine, _ moments: Moments, levels: Int
    ) -> (estimatedError: Double, refit: RowwiseAffine?) {
        let origin = moments.origin
        let coder = RowwiseCoder(affine, levels: levels)
        var sumQ = 0.0, sumQQ = 0.0, sumQY = 0.0
        for index in row.indices {
            let x = row[index]
            let q = Double(coder.code(for: x))
            sumQ += q
            sumQQ += q * q
            sumQY += q * (Double(x) - origin)
        }
        let n = moments.count, sumY = moments.sumY
        // Σ(q·s + β − y)² expanded, with β = bias − origin.
        let s = Double(affine.scale), beta = Double(affine.bias) - origin
        let estimate = s * s * sumQQ + 2 * s * beta * sumQ + n * beta * beta
            - 2 * s * sumQY - 2 * beta * sumY + moments.sumYY
        let determinant = n * sumQQ - sumQ * sumQ
        guard determinant > 0 else { return (estimate, nil) }
        let slope = (n * sumQY - sumQ * sumY) / determinant
        let refit = RowwiseAffine(scale: Float(slope), bias: Float(origin + (sumY - slope * sumQ) / n))
        guard refit.scale > 0, refit.scale.isFinite, refit.bias.isFinite else { return (estimate, nil) }
        return (estimate, refit)
    }

    // MARK: - Search

    /// Scale and bias for `row` with the smallest squared decode error among the candidates
    /// described at the top of this file; never worse than `minMaxAffine`, always finite.
    ///
    /// The C kernel's answer, which is `searchReference`'s bit for bit, or `searchReference`'s
    /// own for the rows the kernel leaves undecided.
    ///
    /// - Throws: `nonFinite` only.
    static func search(_ row: UnsafeBufferPointer<Float>, levels: Int) throws(CodecError) -> RowwiseAffine {
        guard let base = row.baseAddress else { return try searchReference(row, levels: levels) }
        var scaleAndBias: (Float, Float) = (0, 0)
        var badIndex = 0
        let status = withUnsafeMutablePointer(to: &scaleAndBias) {
            $0.withMemoryRebound(to: Float.self, capacity: 2) {
                emb_rowwise_search(base, row.count, Int32(levels), $0, &badIndex)
            }
        }
        switch Int(status) {
        case EMB_ROWWISE_DECIDED:
            return RowwiseAffine(scale: scaleAndBias.0, bias: scaleAndBias.1)
        case EMB_ROWWISE_NONFINITE:
            throw .nonFinite(index: badIndex, value: row[badIndex])
        default:
            return try searchReference(row, levels: levels)
        }
    }

    /// The search as defined above, in Swift: the reference the C kernel reproduces.
    ///
    /// - Throws: `nonFinite` only.
    static func searchReference(_ row: UnsafeBufferPointer<Float>, levels: Int) throws(CodecError) -> RowwiseAffine {
        let (low, high) = try finiteBounds(row)
        if low == high { return RowwiseAffine(scale: 0, bias: low) } // exact for constant rows

        // Alternating minimisation from `start`; returns the candidate with the lowest estimate.
        func refine(from start: RowwiseAffine, _ moments: Moments) -> RowwiseAffine {
            var best = (affine: start, error: Double.infinity)
            var current = start
            for _ in 0..<refinePasses {
                let (estimate, refit) = refitPass(row, current, moments, levels: levels)
                // Exact alternating minimisation never gets worse; stop once rounding makes it.
                guard estimate < best.error else { break }
                best = (current, estimate)
                guard let refit, refit != current else { break }
                current = refit
            }
            return best.affine
        }

        let (clipLow, clipHigh, moments) = greedyClip(row, low: low, high: high, levels: levels)
        let candidate = refine(from: RowwiseAffine(lo: clipLow, hi: clipHigh, levels: levels), moments)

        // Exact comparison with the plain rule. The candidate must win by a relative 2^-30, far
        // more than the rounding error of summing even millions of terms in Double, so it is
        // also better in true mean squared error, whatever order anyone sums the errors in.
        let minMax = RowwiseAffine(lo: Double(low), hi: Double(high), levels: levels)
        let minMaxError = squaredError(row, minMax, levels: levels)
        if candidate != minMax, squaredError(row, candidate, levels: levels) < minMaxError * (1 - 0x1p-30) {
            return candidate
        }
        if minMaxError.isFinite { return minMax }

        // Min/max decodes some value to infinity: the row spans more than Float can step across
        // (or ends so close to ±3.4e38 that rounding overflows). Use the window around the
        // midpoint, at most 2^127·0.98 wide on each side so that levels·scale stays below
        // Float.greatestFiniteMagnitude (clipping both ends evenly costs the least), with its
        // scale nudged down until its top code decodes finitely.
        let middle = (Double(low) + Double(high)) / 2
        let halfWidth = Swift.min((Double(high) - Double(low)) / 2, 0x1p127 * 0.98)
        if let window = RowwiseAffine(lo: middle - halfWidth, hi: middle + halfWidth, levels: levels)
            .loweredToFinite(levels: levels) {
            let refined = refine(from: window, moments)
            return squaredError(row, refined, levels: levels) < squaredError(row, window, levels: levels) ? refined : window
        }
        // Not reached in practice (the window above always decodes finitely); finite by
        // construction: every value decodes to the midpoint.
        return RowwiseAffine(scale: 0, bias: Float(middle))
    }

    /// Greedy range shrink (in the spirit of FBGEMM's and Guan et al.'s search): starting from
    /// [low, high], repeatedly move whichever end lowers the estimated error more by one
    /// histogram bin, and return the best range seen.
    ///
    /// The estimate is exact for the clipped values (per-bin sums of y and y²) and uses the
    /// uniform-noise model scale²/12 for the values inside; the caller scores the result exactly.
    static func greedyClip(
        _ row: UnsafeBufferPointer<Float>, low: Float, high: Float, levels: Int
    ) -> (lo: Double, hi: Double, moments: Moments) {
        let bins = histogramBins
        let origin = Double(low)
        let span = Double(high) - origin // > 0, finite in Double
        let binWidth = span / Double(bins)
        return withUnsafeTemporaryAllocation(of: BinSums.self, capacity: bins) { histogram in
            histogram.initialize(repeating: BinSums())
            let binsPerUnit = Double(bins) / span
            for index in row.indices {
                let y = Double(row[index]) - origin
                // y ∈ [0, span], so the bin is in 0...bins (bins only for y == span).
                histogram[Swift.min(Int(y * binsPerUnit), bins - 1)].add(y)
            }
            let count = Double(row.count)
            let noisePerValue = 1.0 / (12.0 * Double(levels) * Double(levels))

            // Estimated squared error with `lower` bins clipped at the bottom and `upper` at the
            // top, whose values' sums are `below` and `above`. Σ(lo − y)² = c·lo² − 2·lo·Σy + Σy².
            func estimate(lower: Int, upper: Int, below: BinSums, above: BinSums) -> Double {
                let lo = binWidth * Double(lower)
                let hi = span - binWidth * Double(upper)
                let width = hi - lo
                let inside = count - below.count - above.count
                let clippedBelow = (below.count * lo - 2 * below.sum) * lo + below.sumOfSquares
                let clippedAbove = (above.count * hi - 2 * above.sum) * hi + above.sumOfSquares
                return inside * width * width * noisePerValue + clippedBelow + clippedAbove
            }

            var lower = 0, upper = 0
            var below = BinSums(), above = BinSums()
            var best = (lower: 0, upper: 0, error: estimate(lower: 0, upper: 0, below: below, above: above))
            while lower + upper < maxShrinkSteps {
                // Clip one more bin at the bottom, or one more at the top, whichever is better.
                let raised = below + histogram[lower], lowered = above + histogram[bins - 1 - upper]
                let raiseError = estimate(lower: lower + 1, upper: upper, below: raised, above: above)
                let lowerError = estimate(lower: lower, upper: upper + 1, below: below, above: lowered)
                let error: Double
                if raiseError <= lowerError {
                    lower += 1
                    below = raised
                    error = raiseError
                } else {
                    upper += 1
                    above = lowered
                    error = lowerError
                }
                if error < best.error { best = (lower, upper, error) }
            }
            var total = BinSums()
            for bin in 0..<bins { total = total + histogram[bin] }
            let moments = Moments(count: count, origin: origin, sumY: total.sum, sumYY: total.sumOfSquares)
            return (origin + binWidth * Double(best.lower), origin + (span - binWidth * Double(best.upper)), moments)
        }
    }

    /// Count, Σy and Σy² of the values in one histogram bin (or a run of bins).
    struct BinSums {
        var count = 0.0
        var sum = 0.0
        var sumOfSquares = 0.0

        @inline(__always)
        mutating func add(_ y: Double) {
            count += 1
            sum += y
            sumOfSquares += y * y
        }

        @inline(__always)
        static func + (a: BinSums, b: BinSums) -> BinSums {
            BinSums(count: a.count + b.count, sum: a.sum + b.sum, sumOfSquares: a.sumOfSquares + b.sumOfSquares)
        }
    }
}
