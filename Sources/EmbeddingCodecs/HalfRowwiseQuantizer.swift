import CEmbeddingKernels
// The encoder half of the rowwise codecs with binary16 scale and bias (int4h, int2h: FBGEMM's
// "FusedNBitRowwiseQuantizedSBHalf" rows): choosing a row's scale and bias among the values a
// half can hold.
//
// Decoders widen the stored halves exactly to Float and compute x = Float(q) * scale + bias.
// So every candidate here is a pair of halves, and its codes and its error are those of the
// pair as stored: rounding the parameters is part of the search, never applied afterwards.
// The search is RowwiseQuantizer's (greedy clip, then alternating minimisation), with each
// refit rounded to halves, then a few steps to neighbouring halves (which matter when a row
// sits far from zero relative to its spread: there a half's step is coarse next to the codes'),
// then the exact comparison with the plain min/max rule on rounded parameters, which is kept
// unless the search beats it.
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

    /// Both parameters of `affine` rounded to the nearest halves (saturated); a negative scale
    /// becomes 0.
    init(rounding affine: RowwiseAffine) {
        scale = HalfBits(nearest: Double(Swift.max(affine.scale, 0)))
        bias = HalfBits(nearest: Double(affine.bias))
    }

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
    /// Rounds of steps to neighbouring halves after the refinement. Each round scores the 8
    /// neighbours (scale and bias one half up, down or kept) exactly and moves to the best.
    static let polishRounds = 2

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
    /// - Throws: `nonFinite` only.
    static func search(_ row: UnsafeBufferPointer<Float>, levels: Int) throws(CodecError) -> HalfRowwiseParameters {
        let (low, high) = try RowwiseQuantizer.finiteBounds(row)
        if low == high { return constant(row, low, levels: levels) }

        // Alternating minimisation from `start`, each refit rounded to halves; returns the
        // candidate with the lowest estimate.
        func refine(from start: HalfRowwiseParameters, _ moments: RowwiseQuantizer.Moments) -> HalfRowwiseParameters {
            var best = (parameters: start, error: Double.infinity)
            var current = start
            for _ in 0..<RowwiseQuantizer.refinePasses {
                let (estimate, refit) = RowwiseQuantizer.refitPass(row, current.affine, moments, levels: levels)
                guard estimate < best.error else { break }
                best = (current, estimate)
                guard let refit else { break }
                let next = HalfRowwiseParameters(rounding: refit)
                guard next != current else { break }
                current = next
            }
            return best.parameters
        }

        let (clipLow, clipHigh, moments) = RowwiseQuantizer.greedyClip(row, low: low, high: high, levels: levels)
        let refined = refine(from: HalfRowwiseParameters(lo: clipLow, hi: clipHigh, levels: levels), moments)
        let candidate = polish(row, refined, levels: levels)

        // As RowwiseQuantizer: the candidate must win by a relative 2^-30, more than any order of
        // summation could undo, so it is better in true squared error too.
        let minMax = HalfRowwiseParameters(lo: Double(low), hi: Double(high), levels: levels)
        if candidate.parameters != minMax,
           candidate.error < squaredError(row, minMax, levels: levels) * (1 - 0x1p-30) {
            return candidate.parameters
        }
        return minMax
    }

    /// Moves `start` to the best of its neighbouring halves (scale and bias each one half down,
    /// kept, or up; scale never negative) while that lowers the exact error, for `polishRounds`.
    static func polish(
        _ row: UnsafeBufferPointer<Float>, _ start: HalfRowwiseParameters, levels: Int
    ) -> (parameters: HalfRowwiseParameters, error: Double) {
        var best = (parameters: start, error: squaredError(row, start, levels: levels))
        for _ in 0..<polishRounds {
            let center = best.parameters
            for scaleStep in -1...1 {
                guard let scale = center.scale.stepped(by: scaleStep), scale.bits & 0x8000 == 0 else { continue }
                for biasStep in -1...1 where scaleStep != 0 || biasStep != 0 {
                    guard let bias = center.bias.stepped(by: biasStep) else { continue }
                    let neighbour = HalfRowwiseParameters(scale: scale, bias: bias)
                    let error = squaredError(row, neighbour, levels: levels)
                    if error < best.error { best = (neighbour, error) }
                }
            }
            if best.parameters == center { break }
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
