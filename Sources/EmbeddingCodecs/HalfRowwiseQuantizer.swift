import CEmbeddingKernels
// The encoder half of the rowwise codecs with binary16 scale and bias (int4h, int2h: FBGEMM's
// "FusedNBitRowwiseQuantizedSBHalf" rows): choosing a row's scale and bias among the values a
// half can hold.
//
// Decoders widen the stored halves exactly to Float and compute x = Float(q) * scale + bias.
// So every candidate here is a pair of halves, and its codes and its error are those of the
// pair as stored: rounding the parameters is part of the search, never applied afterwards.
//
//  1. RowwiseQuantizer's range search (greedy clip, alternating minimisation, never worse than
//     min/max) gives the best Float scale and bias.
//  2. Its bias is replaced by each of the two halves around it. A half's step is 2^-11 of its
//     magnitude, so for a row far from zero relative to its spread (values 40 ± 0.1: a half's
//     step there is 1/32, three times the 4-bit code step) the bias cannot follow the range, and
//     refitting scale and bias together then rounding lands far off (measured: 6× int4's
//     relative L2 error on such rows). With the bias fixed, alternating nearest codes and the
//     least-squares scale for them (rounded to a half) lets the codes absorb the offset: a squared
//     error within 6% of a brute-force search over nearby halves on those rows, and the same
//     error as int4's on centred rows.
//  3. The best pair is compared exactly with the plain min/max rule on rounded parameters, which
//     is kept unless the search beats it.
//
// Stepping to neighbouring halves of the result afterwards was measured too: 0.07% lower error
// on the benchmark table at 50% more encoding time; not done.
//
// Range: a finite half is at most 65504, and a row wider than fp16 cannot keep bias = min. The
// rounding saturates instead (bias and scale never beyond ±65504), which clips such rows, as
// RowwiseQuantizer clips rows beyond Float's range: values below −65504 decode to at least
// −65504, and values above bias + levels · 65504 to at most that. Every stored pair is finite,
// and every finite pair decodes to values within ±16 · 65504, so every decoded value is finite.

/// A binary16 value by its bits: the scale or the bias of a half-parameter row.
struct HalfBits: Equatable, Sendable {
    var bits: UInt16

    init(bits: UInt16) { self.bits = bits }

    static let zero = HalfBits(bits: 0)
    /// 65504, the largest finite half.
    static let largestFinite = HalfBits(bits: 0x7BFF)

    /// The half nearest to `x` (ties to even bits), saturated to ±65504 where the nearest would be
    /// infinite; `x` must not be NaN.
    init(nearest x: Double) {
        guard x.magnitude < 65504 else {
            self.bits = (x < 0 ? 0x8000 : 0) | Self.largestFinite.bits
            return
        }
        // Through Float (exact for every half, and the C kernel rounds Float to half), then the
        // neighbours, so that the double rounding Double → Float → half cannot pick the wrong one.
        var single = Float(x)
        var rounded: UInt16 = 0
        emb_f16_encode(&single, &rounded, 1)
        var best = HalfBits(bits: rounded)
        let first = best
        for step in stride(from: -1, through: 1, by: 2) {
            guard let candidate = first.stepped(by: step) else { continue }
            let distance = (Double(candidate.value) - x).magnitude, bestDistance = (Double(best.value) - x).magnitude
            if distance < bestDistance || (distance == bestDistance && candidate.bits & 1 == 0) { best = candidate }
        }
        self = best
    }

    /// Its exact Float value (every half is a Float); NaN comes out quiet, as F16C's does.
    var value: Float { Self.widen(bits) }

    /// Binary16 bits to Float, exactly, by bit manipulation: the reference the C kernels (F16C
    /// and portable) are compared with.
    static func widen(_ bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let exponent = UInt32(bits >> 10) & 0x1F
        let mantissa = UInt32(bits & 0x3FF)
        switch exponent {
        case 0x1F:
            return Float(bitPattern: sign | 0x7F80_0000 | mantissa << 13 | (mantissa != 0 ? 0x0040_0000 : 0))
        case 0:
            // Zero or subnormal: mantissa · 2^-24, exact in Float.
            return Float(bitPattern: sign | (Float(mantissa) * 0x1p-24).bitPattern)
        default:
            return Float(bitPattern: sign | (exponent + (127 - 15)) << 23 | mantissa << 13)
        }
    }

    /// The half `steps` places away in value order (−0 and +0 count as one place), nil past
    /// ±65504. Only for finite halves.
    func stepped(by steps: Int) -> HalfBits? {
        let magnitude = Int(bits & 0x7FFF)
        let ordinal = (bits & 0x8000 != 0 ? -magnitude : magnitude) + steps
        guard ordinal.magnitude <= Int(Self.largestFinite.bits) else { return nil }
        return HalfBits(bits: ordinal < 0 ? 0x8000 | UInt16(-ordinal) : UInt16(ordinal))
    }
}

/// The stored scale and bias of a half-parameter row.
struct HalfRowwiseParameters: Equatable {
    var scale: HalfBits
    var bias: HalfBits

    /// The map the decoders apply: the halves widened exactly.
    var affine: RowwiseAffine { RowwiseAffine(scale: scale.value, bias: bias.value) }

    init(scale: HalfBits, bias: HalfBits) {
        self.scale = scale
        self.bias = bias
    }

    /// bias = the half nearest `lo`, scale = the half nearest (hi − bias) / levels (0 if that is
    /// negative): the plain rule on rounded parameters. Computed in Double, as RowwiseAffine does.
    init(lo: Double, hi: Double, levels: Int) {
        bias = HalfBits(nearest: lo)
        scale = HalfBits(nearest: Swift.max(0, (hi - Double(bias.value)) / Double(levels)))
    }
}

enum HalfRowwiseQuantizer {
    /// The plain min/max rule on rounded parameters (bias = half(min), scale = half((max −
    /// bias) / levels)), codes against those: the baseline the search never loses to.
    ///
    /// - Throws: `nonFinite` only.
    static func minMax(_ row: UnsafeBufferPointer<Float>, levels: Int) throws(CodecError) -> HalfRowwiseParameters {
        let (low, high) = try RowwiseQuantizer.finiteBounds(row)
        return HalfRowwiseParameters(lo: Double(low), hi: Double(high), levels: levels)
    }

    /// Exact squared error of `row` stored with `parameters` (RowwiseQuantizer.squaredError on
    /// the widened halves: the codes and the decode are the stored row's).
    static func squaredError(_ row: UnsafeBufferPointer<Float>, _ parameters: HalfRowwiseParameters, levels: Int) -> Double {
        RowwiseQuantizer.squaredError(row, parameters.affine, levels: levels)
    }

    /// Scale and bias for `row` with the smallest squared error among the candidates described
    /// at the top of this file; never worse than `minMax`, always finite.
    ///
    /// The C kernel's answer (rowwise_search.c), which is `searchReference`'s bit for bit, or
    /// `searchReference`'s own for the rows the kernel leaves undecided.
    ///
    /// - Throws: `nonFinite` only.
    static func search(_ row: UnsafeBufferPointer<Float>, levels: Int) throws(CodecError) -> HalfRowwiseParameters {
        guard let base = row.baseAddress else { return try searchReference(row, levels: levels) }
        var scaleAndBias: (UInt16, UInt16) = (0, 0)
        var badIndex = 0
        let status = withUnsafeMutablePointer(to: &scaleAndBias) {
            $0.withMemoryRebound(to: UInt16.self, capacity: 2) {
                emb_rowwise_sbhalf_search(base, row.count, Int32(levels), $0, &badIndex)
            }
        }
        switch Int(status) {
        case EMB_ROWWISE_DECIDED:
            return HalfRowwiseParameters(scale: HalfBits(bits: scaleAndBias.0), bias: HalfBits(bits: scaleAndBias.1))
        case EMB_ROWWISE_NONFINITE:
            throw .nonFinite(index: badIndex, value: row[badIndex])
        default:
            return try searchReference(row, levels: levels)
        }
    }

    /// The search as defined above, in Swift: the reference the C kernel reproduces.
    ///
    /// - Throws: `nonFinite` only.
    static func searchReference(_ row: UnsafeBufferPointer<Float>, levels: Int) throws(CodecError) -> HalfRowwiseParameters {
        let (low, high) = try RowwiseQuantizer.finiteBounds(row)
        if low == high { return constant(row, low, levels: levels) }

        // Step 1: the Float search; its map is finite whatever the row (RowwiseQuantizer clips
        // rows beyond Float's range), and its top end is what the scale should reach.
        let single = try RowwiseQuantizer.searchReference(row, levels: levels)
        let top = Double(single.bias) + Double(levels) * Double(single.scale)
        // Step 2: the halves at or below and above its bias (one of them missing only beyond
        // ±65504, where the rounding saturates).
        let nearest = HalfBits(nearest: Double(single.bias))
        let below = nearest.value <= single.bias ? nearest : nearest.stepped(by: -1)
        let above = nearest.value <= single.bias ? nearest.stepped(by: 1) : nearest
        var candidate = (parameters: HalfRowwiseParameters(scale: .zero, bias: nearest), error: Double.infinity)
        for bias in [below, above] {
            guard let bias else { continue }
            let scale = HalfBits(nearest: Swift.max(0, (top - Double(bias.value)) / Double(levels)))
            let fitted = fitScale(row, bias: bias, from: scale, levels: levels)
            if fitted.error < candidate.error { candidate = fitted }
        }

        // As RowwiseQuantizer: the candidate must win by a relative 2^-30, more than any order of
        // summation could undo, so it is better in true squared error too.
        let minMax = HalfRowwiseParameters(lo: Double(low), hi: Double(high), levels: levels)
        if candidate.parameters != minMax,
           candidate.error < squaredError(row, minMax, levels: levels) * (1 - 0x1p-30) {
            return candidate.parameters
        }
        return minMax
    }

    /// For a fixed `bias`, alternates nearest codes and the least-squares scale for them (rounded
    /// to a half) from `scale`; returns the best pair seen with its exact error. Each pass scores
    /// the current pair exactly and gathers the sums of the next scale.
    static func fitScale(
        _ row: UnsafeBufferPointer<Float>, bias: HalfBits, from scale: HalfBits, levels: Int
    ) -> (parameters: HalfRowwiseParameters, error: Double) {
        var current = HalfRowwiseParameters(scale: scale, bias: bias)
        var best = (parameters: current, error: Double.infinity)
        let b = Double(bias.value)
        for _ in 0..<RowwiseQuantizer.refinePasses {
            let affine = current.affine
            let coder = RowwiseCoder(affine, levels: levels)
            var error = 0.0, sumQQ = 0.0, sumQY = 0.0
            for index in row.indices {
                let x = row[index]
                let q = coder.code(for: x)
                let difference = Double(affine.decoded(q)) - Double(x)
                error += difference * difference
                sumQQ += Double(q) * Double(q)
                sumQY += Double(q) * (Double(x) - b)
            }
            guard error < best.error else { break }
            best = (current, error)
            guard sumQQ > 0 else { break }
            let next = HalfBits(nearest: Swift.max(0, sumQY / sumQQ))
            guard next != current.scale else { break }
            current.scale = next
        }
        return best
    }

    /// A constant row: exact (scale 0, bias = the value) when the value is a half. Otherwise the
    /// better of the nearest half as bias and, with the half below as bias, a code q and scale
    /// half((value − bias) / q) that land closer (and reach values beyond 65504).
    static func constant(_ row: UnsafeBufferPointer<Float>, _ value: Float, levels: Int) -> HalfRowwiseParameters {
        let nearest = HalfBits(nearest: Double(value))
        var best = (parameters: HalfRowwiseParameters(scale: .zero, bias: nearest), error: Double.infinity)
        if nearest.value == value { return best.parameters }
        best.error = squaredError(row, best.parameters, levels: levels)
        let below = nearest.value < value ? nearest : nearest.stepped(by: -1)
        guard let below, below.value < value else { return best.parameters }
        let residual = Double(value) - Double(below.value)
        for code in 1...levels {
            let candidate = HalfRowwiseParameters(scale: HalfBits(nearest: residual / Double(code)), bias: below)
            let error = squaredError(row, candidate, levels: levels)
            if error < best.error { best = (candidate, error) }
        }
        return best.parameters
    }
}
