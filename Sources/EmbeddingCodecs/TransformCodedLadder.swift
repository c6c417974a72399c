import Foundation

/// tc models at several rates on one shared basis, for a codec policy that gives each row its
/// own rate: one PCA fit, one basis record, one model record per rate.
///
/// The rates are not bisected one by one: the step scale `a` of each model is a point of a
/// geometric grid between the scales whose records average `lowestBits` and `highestBits` a
/// value on the fit's sample, so the ladder costs about as much to fit as one `tc:B`. Each
/// model records the rate its sample measured.
public final class TransformCodedLadder: @unchecked Sendable {
    /// Bits a value of each model on the fit's sample, ascending.
    public let rates: [Double]
    /// The shared basis: the rows the finest model codes.
    public let basis: TransformBasis
    let drafts: [TransformCodedFit.Draft]
    /// The models, once their basis has an id (`models(basisID:)`).
    private let fitDimension: Int

    /// Fits a basis on (a sample of) `rows` and `count` models from about `lowestBits` to
    /// `highestBits` bits a value.
    /// With `budget` (a fraction of the rows' float32 bytes), one more model: the rate `tc:P%`
    /// would give every row for that budget (a hair under it), so a policy can weigh the mix
    /// against one rate that spends the budget exactly.
    public init(rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int, lowestBits: Double, highestBits: Double,
                models: Int, budget: Double? = nil, options: FitOptions) throws {
        precondition(models >= 2 && lowestBits > 0 && highestBits > lowestBits)
        let fit = try TransformCodedFit(rows: rows, count: count, dimension: dimension, options: options, codec: "tc")
        fitDimension = dimension
        func scale(forBits bits: Double) -> Double {
            let target = TransformCodedRowCodec.targetRecordBytes(bits: bits, dimension: dimension)
            // The ends need not be exact: a 1% step in a moves the rate by well under 1%.
            var low = log(1e-4), high = log(1e3)
            for _ in 0..<11 {
                let middle = (low + high) / 2
                if fit.draft(exp(middle)).meanRecordBytes > target { low = middle } else { high = middle }
            }
            return exp(high)
        }
        let coarsest = scale(forBits: lowestBits), finest = scale(forBits: highestBits)
        var drafts: [TransformCodedFit.Draft] = []
        for m in 0..<models {
            let a = exp(log(finest) + (log(coarsest) - log(finest)) * Double(m) / Double(models - 1))
            drafts.append(fit.draft(a))
        }
        if let budget, let exact = try? TransformCodedRowCodec.budgetDraft(fit, budget: budget * 0.999, rows: rows, count: count,
                                                                         tableRows: options.tableRows ?? count, options: options,
                                                                         codec: .transformCoded(budget: budget)),
           (exact.meanRecordBytes - TransformCodedRowCodec.framingBytes) * 8 / Double(dimension) <= highestBits {
            // Only within the ladder's span: past 8 bits the int8 basis's own error, which the
            // estimates leave out, is larger than the coefficients'.
            drafts.append(exact)
        }
        drafts.sort { $0.meanRecordBytes < $1.meanRecordBytes }   // ascending rate
        self.drafts = drafts
        rates = drafts.map { ($0.meanRecordBytes - TransformCodedRowCodec.framingBytes) * 8 / Double(dimension) }
        basis = TransformBasis(fit.basis, keeping: drafts.map(\.k).max() ?? 1)
    }

    /// The basis rows each rate's model codes (its K), ascending with the rate.
    public var ranks: [Int] { drafts.map(\.k) }

    private init(_ ladder: TransformCodedLadder, rank: Int) {
        rates = ladder.rates
        drafts = ladder.drafts
        fitDimension = ladder.fitDimension
        basis = TransformBasis(ladder.basis, keeping: rank)
    }

    /// The same ladder with a basis of the rows the rates `used` (indexes into `rates`) need and
    /// no more: the ladder is fitted before rows choose their rates, and its finest rates code
    /// more coefficients. The models of other rates are cut to that basis; they are never stored.
    public func keeping(rates used: [Int]) -> TransformCodedLadder {
        let rank = used.map { drafts[$0].k }.max() ?? basis.rank
        return rank >= basis.rank ? self : TransformCodedLadder(self, rank: rank)
    }

    /// The models, their basis stored as parameter record `basisID`.
    public func models(basisID: UInt32) throws -> [TransformModel] {
        try zip(drafts, rates).map { draft, bits in
            let k = min(draft.k, basis.rank)
            return try TransformModel(basisID: basisID, basis: basis, k: k, targetBits: Float(bits), steps: Array(draft.steps[0..<k]),
                                      tableOf: Array(draft.tableOf[0..<k]), tables: draft.tables)
        }
    }

    /// Bytes of each model's record (to charge a rate's shared bytes to the rows that use it).
    public func modelRecordBytes() throws -> [Int] { try models(basisID: 1).map(\.record.count) }

    /// An encoder of rate `index`'s model, stored as parameter record `modelID`.
    public func encoder(_ model: TransformModel, modelID: UInt32) -> any RowEncoder {
        TransformCodedEncoder(model: model, modelID: modelID)
    }

    /// Estimates, per row, each rate's squared error and record bytes without coding the row:
    /// one projection, then per rate the quantisation error of the coded coefficients, the
    /// energy of the ones it drops and of the row outside the basis (exact for an orthonormal
    /// basis; the int8-stored rows are within about 1% of it), and the bytes the model's
    /// frequency tables give (within a byte or two of the coded record). Not thread-safe: one
    /// per thread.
    public final class Estimator {
        let ladder: TransformCodedLadder
        private var coefficients: [Float]
        /// Energy of the coefficients from j on (the last entry 0), so a rate's dropped tail is one read.
        private var tailEnergy: [Float]
        private var residual: [Float]
        private var outsideEnergy: Float = 0
        /// Per rate r, coefficient j: 1/Δ_j and Δ_j at `r * rank + j`.
        private let inverseSteps: [Float], steps: [Float]
        /// Per rate r, coefficient j: where its table's symbol costs start in `costs`, the table's
        /// lowest value and its value count (the escape's cost follows the values).
        private let costStart: [Int32], lowest: [Int32], valueCount: [Int32]
        /// Bits of each symbol of every table of every rate, back to back.
        private let costs: [Float]

        public init(_ ladder: TransformCodedLadder) {
            self.ladder = ladder
            let rank = ladder.basis.rank
            coefficients = [Float](repeating: 0, count: rank)
            tailEnergy = [Float](repeating: 0, count: rank + 1)
            residual = [Float](repeating: 0, count: ladder.basis.dimension)
            var inverseSteps = [Float](repeating: 0, count: ladder.drafts.count * rank)
            var steps = inverseSteps
            var costStart = [Int32](repeating: 0, count: ladder.drafts.count * rank)
            var lowest = costStart, valueCount = costStart
            var costs: [Float] = []
            for (r, draft) in ladder.drafts.enumerated() {
                var tableStart: [Int32] = []
                for table in draft.tables {
                    tableStart.append(Int32(costs.count))
                    costs += table.frequencies.map { Float(log2(4096 / Double(max($0, 1)))) }
                }
                for j in 0..<draft.k {
                    let table = draft.tables[Int(draft.tableOf[j])]
                    steps[r * rank + j] = draft.steps[j]
                    inverseSteps[r * rank + j] = 1 / draft.steps[j]
                    costStart[r * rank + j] = tableStart[Int(draft.tableOf[j])]
                    lowest[r * rank + j] = table.lo
                    valueCount[r * rank + j] = Int32(table.valueCount)
                }
            }
            (self.inverseSteps, self.steps, self.costStart, self.lowest, self.valueCount, self.costs) =
                (inverseSteps, steps, costStart, lowest, valueCount, costs)
        }

        /// Writes rate r's squared error to `errors[r]` and its record bytes (tag, a model id of
        /// `idBytes` bytes, the coded stream) to `bytes[r]`. Values are rounded half away from
        /// zero as the encoder does, through a multiply by 1/Δ (an estimate may differ from the
        /// encoder's division at an exact tie).
        public func estimate(_ row: UnsafePointer<Float>, idBytes: Int, errors: UnsafeMutablePointer<Float>,
                             bytes: UnsafeMutablePointer<Float>) {
            let basis = ladder.basis
            let d = basis.dimension, rank = basis.rank
            coefficients.withUnsafeMutableBufferPointer { c in
                TransformCodedFit.project(row, basis: basis, k: rank, into: c.baseAddress!)
                // The energy the basis leaves out, measured: (x − μ) − B̂ᵀc, B̂ the stored (int8)
                // rows, which are not exactly orthonormal, so ‖x − μ‖² − ‖c‖² would be off by a
                // floor the size of a fine rate's whole error.
                residual.withUnsafeMutableBufferPointer { r in
                    for i in 0..<d { r[i] = row[i] - basis.mean[i] }
                    for j in 0..<rank {
                        let coefficient = c[j], basisRow = basis.rows + j * d
                        for i in 0..<d { r[i] -= coefficient * basisRow[i] }
                    }
                    var energy: Float = 0
                    for i in 0..<d { energy += r[i] * r[i] }
                    outsideEnergy = energy
                }
            }
            let outside = outsideEnergy
            coefficients.withUnsafeMutableBufferPointer { c in
                // Energy of the coefficients from j on, so a rate's dropped tail is one lookup.
                tailEnergy.withUnsafeMutableBufferPointer { tail in
                for j in stride(from: rank - 1, through: 0, by: -1) { tail[j] = tail[j + 1] + c[j] * c[j] }
                inverseSteps.withUnsafeBufferPointer { inverse in
                steps.withUnsafeBufferPointer { step in
                costStart.withUnsafeBufferPointer { start in
                lowest.withUnsafeBufferPointer { low in
                valueCount.withUnsafeBufferPointer { count in
                costs.withUnsafeBufferPointer { cost in
                    for (r, draft) in ladder.drafts.enumerated() {
                        var error = outside + tail[draft.k]
                        var bits: Float = 0
                        var escapes: Float = 0
                        let base = r * rank
                        for j in 0..<draft.k {
                            let scaled = c[j] * inverse[base + j]
                            // Clamped as the encoder clamps; a truncating conversion, no libm call.
                            let clamped = max(-32767.4, min(32767.4, scaled))
                            let qi = Int32(clamped + (clamped < 0 ? -0.5 : 0.5))
                            let e = c[j] - Float(qi) * step[base + j]
                            error += e * e
                            let symbol = qi - low[base + j]
                            let n = count[base + j]
                            let inside = symbol >= 0 && symbol < n
                            bits += cost[Int(start[base + j] + (inside ? symbol : n))]
                            escapes += inside ? 0 : 1
                        }
                        errors[r] = error
                        bytes[r] = Float(1 + idBytes) + 2 * ((bits + 16) / 16).rounded(.up) + 2 * escapes
                    }
                }}}}}}}
            }
        }
    }
}

extension TransformCodedRowCodec {
    /// Bytes of the model-id varint of parameter record `id`.
    public static func modelIDBytes(_ id: UInt32) -> Int { ModelIDVarint.encode(id).count }
}
