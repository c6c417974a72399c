import CEmbeddingKernels
import Foundation

// Fitting a tc model on a sample of a table's rows. The choices were measured on the npm table
// (30,000 sentence embeddings, 384-d; recall@10 against exact neighbours, bytes on disk):
// - a PCA rotation with its rows stored int8 rowwise: the same recall as f32 rows, a quarter of
//   the bytes (0.95 points of fp32 saved at d = 384, spent on coefficient bits);
// - steps tilted towards the high-variance coefficients, Δ_j = a·σ̄·(σ_j/σ̄)^(−0.75): a neighbour
//   ranking weights coefficient j's error by about σ_j², so uniform steps (MSE-optimal) are not
//   recall-optimal; the tilt gave +0.03 recall at 6.25% and +0.011 at 12.5% of fp32;
// - plain rounding, midpoint reconstruction (θ = 0): rate-distortion rounding and MSE-optimal
//   reconstruction offsets lowered MSE but not recall once the steps were tilted;
// - 32 frequency tables shared by coefficients of similar σ_j/Δ_j: 0.1% more bits than one
//   table per coefficient, 35 kB fewer table bytes, and fewer escapes when fitted on a sample.
// - coefficients coded only while σ_j ≥ 0.6·Δ_j (`codedSpread`): +0.015 hot and +0.013 uniform
//   recall at 6.25% of fp32, +0.002 / +0.003 at 12.5%, against coding every coefficient that
//   is ever non-zero (measured later, in `embstore`, with 5,000 queries a set).

/// A PCA rotation and the coefficients of a sample on it, from which tc models of any rate
/// are made.
struct TransformCodedFit {
    /// β of the step tilt Δ_j = a·σ̄·(σ_j/σ̄)^(−β).
    static let tilt = 0.75
    /// Frequency tables per model, at most.
    static let tableGroups = 32
    /// Sample rows for the steps and tables: 10,000 measured as good as all 30,000 on npm; at
    /// most 20,000, and fewer for wide rows, whose projection costs d² a row (2,048 at d = 2048).
    static func modelSampleRows(dimension d: Int) -> Int {
        max(1_000, min(20_000, (1 << 33) / max(d * d, 1)))
    }
    /// Coefficients are coded up to the last whose spread is at least this many steps, σ_j ≥ 0.6·Δ_j
    /// (on npm K = 223 of 384 at 6.25% of fp32, 326 at 12.5%, 99 at 3%, where coding every
    /// coefficient ever non-zero gave about 350 at 6.25%); the others quantise to ±1 now and then,
    /// at several bits each, for little, and their basis rows cost bytes too. Measured on npm (`embstore eval`, 5,000 queries a
    /// set): recall@10 hot / uniform at 6.25% 0.889 / 0.872 coding every coefficient that is ever
    /// non-zero, 0.901 / 0.882 at 0.4, 0.903 / 0.884 at 0.5, 0.904 / 0.885 at 0.6, 0.903 / 0.883
    /// at 0.7, 0.898 / 0.879 at 0.85; at 12.5% 0.975 / 0.969, then 0.977 / 0.971–0.973 from 0.4
    /// to 0.85. (A fixed K does worse: 256 gave 0.898 / 0.880 at 6.25% but 0.968 / 0.963 at 12.5%.)
    static let codedSpread = 0.6
    /// Largest value symbol magnitude a table codes; larger values are escaped.
    static let largestSymbol = 127

    let dimension: Int
    let basis: TransformBasis
    /// `sampleCount × basis.rank` coefficients of the sample on the stored basis.
    let coefficients: [Float]
    let sampleCount: Int
    /// Standard deviation of each coefficient over the sample, and their root mean square.
    let sigma: [Double]
    let sigmaBar: Double

    /// Fits the rotation on (a sample of) `rows` and projects a sample onto it.
    init(rows: UnsafeBufferPointer<Float>, count: Int, dimension d: Int, options: FitOptions, codec: String) throws {
        try PCABasis.checkFitDimension(d, codec: codec)
        guard count >= 1 else { throw CodecError.invalidParameter("\(codec) needs at least one row to fit on") }
        dimension = d
        // Enough rows for the trailing directions (about 30·d), within the sample's memory bound.
        let pcaLimit = RowSampling.limit(min(options.sampleLimit, max(10_000, 30 * d)), dimension: d)
        let pca = try RowSampling.withSample(rows, count: count, dimension: d, limit: pcaLimit) { sample, sampleCount in
            try PCABasis.fit(rows: sample, count: sampleCount, dimension: d, rank: d)
        }
        let basis = try TransformBasis(pca, rank: pca.rank, precision: .int8Rowwise)
        self.basis = basis
        let rank = basis.rank
        let (coefficients, sampleCount) = try RowSampling.withSample(rows, count: count, dimension: d,
                                                                      limit: Self.modelSampleRows(dimension: d)) { sample, sampleCount in
            var out = [Float](repeating: 0, count: sampleCount * rank)
            out.withUnsafeMutableBufferPointer { out in
                for r in 0..<sampleCount {
                    Self.project(sample.baseAddress! + r * d, basis: basis, k: rank, into: out.baseAddress! + r * rank)
                }
            }
            return (out, sampleCount)
        }
        self.coefficients = coefficients
        self.sampleCount = sampleCount
        var sigma = [Double](repeating: 0, count: rank)
        for r in 0..<sampleCount {
            for j in 0..<rank { sigma[j] += Double(coefficients[r * rank + j]) * Double(coefficients[r * rank + j]) }
        }
        sigma = sigma.map { ($0 / Double(sampleCount)).squareRoot() }
        self.sigma = sigma
        sigmaBar = (sigma.reduce(0) { $0 + $1 * $1 } / Double(max(rank, 1))).squareRoot()
    }

    /// c_j = v_j · (x − μ) for j < k, in float32 (AVX2 and FMA where the CPU has them: the
    /// encoder's arithmetic is the writer's choice).
    static func project(_ row: UnsafePointer<Float>, basis: TransformBasis, k: Int, into out: UnsafeMutablePointer<Float>) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: basis.dimension) { centred in
            emb_tc_project(basis.mean, basis.rows, k, basis.dimension, row, centred.baseAddress!, out)
        }
    }

    /// `project`, and the energy of the row the k coefficients leave out, measured against the
    /// stored basis rows: ‖(x − μ) − B̂ᵀc‖².
    static func projectMeasuringOutside(_ row: UnsafePointer<Float>, basis: TransformBasis, k: Int, into out: UnsafeMutablePointer<Float>) -> Float {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: basis.dimension) { centred in
            emb_tc_project(basis.mean, basis.rows, k, basis.dimension, row, centred.baseAddress!, out)
            return emb_tc_outside_energy(basis.rows, k, basis.dimension, centred.baseAddress!, out)
        }
    }

    /// The steps for tilt scale `a`.
    func steps(_ a: Double) -> [Float] {
        guard sigmaBar > 0 else { return [Float](repeating: 1, count: sigma.count) }
        return sigma.map { s in
            let ratio = max(s / sigmaBar, 1e-6)
            return Float(a * sigmaBar * pow(ratio, -Self.tilt))
        }
    }

    /// q = round(c / Δ), within ±32767 (what an escape can hold).
    @inline(__always)
    static func quantize(_ c: Float, step: Float) -> Int32 {
        let q = (c / step).rounded()
        return Int32(max(-32767, min(32767, q.isFinite ? q : 0)))
    }

    /// A model's coding choices at tilt scale `a`, and the mean record bytes it would write for
    /// the sample.
    struct Draft {
        var k: Int
        var steps: [Float]
        var tableOf: [UInt8]
        var tables: [FrequencyTable]
        var meanRecordBytes: Double
    }

    func draft(_ a: Double) -> Draft {
        let rank = basis.rank
        let steps = steps(a)
        let span = 2 * Self.largestSymbol + 1
        // Per coefficient: counts of the values −127…127 (index value + 127) and of the others.
        var histograms = [Int](repeating: 0, count: rank * span)
        var outside = [Int32: Int]()
        var quantized = [Int32](repeating: 0, count: sampleCount * rank)
        var k = 1
        // Coefficients past the last with σ_j ≥ codedSpread·Δ_j are not coded.
        let cap = max(1, (0..<rank).last { sigma[$0] >= Self.codedSpread * Double(steps[$0]) }.map { $0 + 1 } ?? 1)
        quantized.withUnsafeMutableBufferPointer { quantized in
            histograms.withUnsafeMutableBufferPointer { histograms in
                for r in 0..<sampleCount {
                    for j in 0..<rank {
                        let q = j < cap ? Self.quantize(coefficients[r * rank + j], step: steps[j]) : 0
                        quantized[r * rank + j] = q
                        if q != 0 && j >= k { k = j + 1 }
                        if abs(q) <= Int32(Self.largestSymbol) {
                            histograms[j * span + Int(q) + Self.largestSymbol] += 1
                        } else {
                            outside[q, default: 0] += 1
                        }
                    }
                }
            }
        }
        // Tables: equal-width bins of log(σ_j/Δ_j), empty bins dropped.
        let spread = (0..<k).map { j in log(max(sigma[j] / Double(steps[j]), 1e-9)) }
        let low = spread.min() ?? 0, high = spread.max() ?? 0
        let width = max((high - low) / Double(Self.tableGroups), 1e-12)
        let bins = spread.map { min(Self.tableGroups - 1, Int(($0 - low) / width)) }
        let used = Array(Set(bins)).sorted()
        let tableOf = bins.map { UInt8(used.firstIndex(of: $0)!) }
        var tables: [FrequencyTable] = []
        for bin in used {
            var counts = [Int](repeating: 0, count: span)
            for j in 0..<k where bins[j] == bin {
                for v in 0..<span { counts[v] += histograms[j * span + v] }
            }
            tables.append(Self.table(counts))
        }
        // Bytes a row would take: tag, a one-byte model id, the rANS stream (words and the
        // 4-byte state: 2·⌈(info + 16)/16⌉, measured exact on average), 2 per escape.
        let cost = tables.map { table in table.frequencies.map { log2(4096 / Double(max($0, 1))) } }
        var total = 0.0
        for r in 0..<sampleCount {
            var bits = 0.0
            var escapes = 0
            for j in 0..<k {
                let t = Int(tableOf[j])
                var symbol = Int(quantized[r * rank + j]) - Int(tables[t].lo)
                if symbol < 0 || symbol >= tables[t].valueCount {
                    symbol = tables[t].valueCount
                    escapes += 1
                }
                bits += cost[t][symbol]
            }
            total += 2 + 2 * ((bits + 16) / 16).rounded(.up) + 2 * Double(escapes)
        }
        return Draft(k: k, steps: Array(steps[0..<k]), tableOf: tableOf, tables: tables,
                     meanRecordBytes: total / Double(max(sampleCount, 1)))
    }

    /// A frequency table for the counts of the values −127…127 (`counts[v + 127]`): the values
    /// from the smallest to the largest seen, each and the escape at least 1 of 4096, the rest
    /// shared in proportion to the counts.
    static func table(_ counts: [Int]) -> FrequencyTable {
        let seen = counts.indices.filter { counts[$0] > 0 }
        let first = seen.first ?? largestSymbol, last = seen.last ?? largestSymbol
        let weights = Array(counts[first...last])
        let n = weights.count
        let total = max(weights.reduce(0, +), 1)
        let spare = 4096 - (n + 1)
        var frequencies = weights.map { UInt16(1 + spare * $0 / total) }
        frequencies.append(1)   // the escape
        // Whatever rounding left goes to the most frequent value.
        let short = 4096 - frequencies.reduce(0) { $0 + Int($1) }
        let top = weights.indices.max { weights[$0] < weights[$1] } ?? 0
        frequencies[top] += UInt16(short)
        return FrequencyTable(lo: Int32(first - largestSymbol), frequencies: frequencies, theta: 0)
    }

    /// The draft whose records average closest to `bytes`, by bisection on log a (the mean size
    /// falls as a grows).
    func draft(meanRecordBytes bytes: Double) -> Draft {
        var low = log(1e-4), high = log(1e3)
        var best = draft(exp(high))
        if best.meanRecordBytes >= bytes { return best }   // even the coarsest steps are too big
        for _ in 0..<40 {
            let middle = (low + high) / 2
            let candidate = draft(exp(middle))
            if candidate.meanRecordBytes > bytes {
                low = middle
            } else {
                high = middle
                best = candidate
            }
            if high - low < 1e-3 { break }
        }
        return best
    }
}
