import CEmbeddingKernels
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
        @Sendable func scale(forBits bits: Double) -> Double {
            let target = TransformCodedRowCodec.targetRecordBytes(bits: bits, dimension: dimension)
            // The ends need not be exact: a 1% step in a moves the rate by well under 1%.
            var low = log(1e-4), high = log(1e3)
            for _ in 0..<11 {
                let middle = (low + high) / 2
                if fit.draft(exp(middle)).meanRecordBytes > target { low = middle } else { high = middle }
            }
            return exp(high)
        }
        // The two ends, then the models between them and the budget's, on every core.
        var ends = [Double](repeating: 0, count: 2)
        ends.withUnsafeMutableBufferPointer { ends in
            nonisolated(unsafe) let out = ends.baseAddress!
            DispatchQueue.concurrentPerform(iterations: 2) { out[$0] = scale(forBits: $0 == 0 ? lowestBits : highestBits) }
        }
        let coarsest = ends[0], finest = ends[1]
        var slots = [TransformCodedFit.Draft?](repeating: nil, count: models + 1)
        nonisolated(unsafe) let rows = rows
        slots.withUnsafeMutableBufferPointer { slots in
            nonisolated(unsafe) let out = slots.baseAddress!
            DispatchQueue.concurrentPerform(iterations: models + 1) { m in
                if m < models {
                    let a = exp(log(finest) + (log(coarsest) - log(finest)) * Double(m) / Double(models - 1))
                    out[m] = fit.draft(a)
                } else if let budget,
                          let exact = try? TransformCodedRowCodec.budgetDraft(fit, budget: budget * 0.999, rows: rows, count: count,
                                                                             tableRows: options.tableRows ?? count, options: options,
                                                                             codec: .transformCoded(budget: budget)),
                          (exact.meanRecordBytes - TransformCodedRowCodec.framingBytes) * 8 / Double(dimension) <= highestBits {
                    // Only within the ladder's span: past 8 bits the int8 basis's own error, which
                    // the estimates leave out, is larger than the coefficients'.
                    out[m] = exact
                }
            }
        }
        var drafts = slots.compactMap { $0 }
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
            estimate(row, rates: allRates, idBytes: idBytes, errors: errors, bytes: bytes)
        }

        private lazy var allRates = Array(ladder.rates.indices)

        /// The same for the rates `rates` (indexes into the ladder's), written in their order.
        public func estimate(_ row: UnsafePointer<Float>, rates: [Int], idBytes: Int, errors: UnsafeMutablePointer<Float>,
                             bytes: UnsafeMutablePointer<Float>) {
            let basis = ladder.basis
            let rank = basis.rank
            // Only the coefficients the finest of these rates codes: the rest count as outside.
            var coded = 0
            for r in rates { coded = max(coded, ladder.drafts[r].k) }
            coded = min(coded, rank)
            // The energy the basis leaves out, measured: (x − μ) − B̂ᵀc, B̂ the stored (int8)
            // rows, which are not exactly orthonormal, so ‖x − μ‖² − ‖c‖² would be off by a
            // floor the size of a fine rate's whole error.
            let outside = coefficients.withUnsafeMutableBufferPointer { c in
                TransformCodedFit.projectMeasuringOutside(row, basis: basis, k: coded, into: c.baseAddress!)
            }
            coefficients.withUnsafeMutableBufferPointer { c in
                // Energy of the coefficients from j on, so a rate's dropped tail is one lookup (the
                // sum a chain in a register).
                tailEnergy.withUnsafeMutableBufferPointer { tail in
                var energy: Float = 0
                tail[coded] = 0
                for j in stride(from: coded - 1, through: 0, by: -1) {
                    energy += c[j] * c[j]
                    tail[j] = energy
                }
                inverseSteps.withUnsafeBufferPointer { inverse in
                steps.withUnsafeBufferPointer { step in
                costStart.withUnsafeBufferPointer { start in
                lowest.withUnsafeBufferPointer { low in
                valueCount.withUnsafeBufferPointer { count in
                costs.withUnsafeBufferPointer { cost in
                    for (slot, r) in rates.enumerated() {
                        let draft = ladder.drafts[r]
                        let base = r * rank
                        var error = outside + tail[draft.k]
                        var bits: Float = 0, escapes: Float = 0
                        emb_tc_estimate_rate(c.baseAddress!, draft.k, inverse.baseAddress! + base, step.baseAddress! + base,
                                             start.baseAddress! + base, low.baseAddress! + base, count.baseAddress! + base,
                                             cost.baseAddress!, &error, &bits, &escapes)
                        errors[slot] = error
                        bytes[slot] = Float(1 + idBytes) + 2 * ((bits + 16) / 16).rounded(.up) + 2 * escapes
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
