import CEmbeddingKernels
import Foundation

// `tc:B` as a registered codec (FORMAT.md, "Transform-coded rows", tag 9): the row rotated onto
// the table's PCA basis, its coefficients quantised with tilted steps and rANS-coded, about B
// bits a value plus 6 bytes of framing a row. Low-variance coefficients quantise to nothing and past the model's K are
// not stored, so it is also the mixed-dimension codec.

extension Codec {
    /// Transform-coded rows of about `bitsPerValue` bits a value (record bytes ≈ 6 + B·d/8), a model
    /// fitted on the table's rows by a load.
    public static func transformCoded(bitsPerValue: Double) -> Codec {
        Codec(tag: TransformCodedRowCodec.tag, description: "tc:" + TransformCodedRowCodec.spell(bitsPerValue),
              arguments: [bitsPerValue])
    }

    /// Transform-coded rows at the rate that makes the table's bytes on disk (records, index,
    /// model) about `fraction` of its float32 bytes, fitted by a load. Puts use the table's
    /// newest tc model.
    public static func transformCoded(budget fraction: Double) -> Codec {
        Codec(tag: TransformCodedRowCodec.tag, description: "tc:" + TransformCodedRowCodec.spell(fraction * 100) + "%",
              arguments: [0, fraction])
    }
}

public struct TransformCodedRowCodec: RowCodec {
    static let tag: UInt8 = 9
    /// The registered codec.
    public static let descriptor: any RowCodec = TransformCodedRowCodec()
    /// The rates `embstore codecs` lists (any B in `bitRange` is accepted).
    static let ladder: [Double] = [1, 1.125, 1.25, 1.375, 1.5, 1.625, 1.75, 1.875, 2, 2.25, 2.5, 2.75, 3, 3.25, 3.5, 3.75, 4, 5, 6, 8]
    /// The framing of every record: tag, a one-byte model id, the 4-byte rANS state.
    static let framingBytes = 6.0

    /// The mean record bytes `tc:bits` aims at for rows of `dimension` values: B bits a value
    /// for the coded coefficients, plus the framing (as int4 is 4 bits a value plus its scale
    /// and bias).
    static func targetRecordBytes(bits: Double, dimension: Int) -> Double {
        framingBytes + bits * Double(dimension) / 8
    }
    static let bitRange = 0.25...16.0

    public var tag: UInt8 { Self.tag }
    public var name: String { "tc" }
    public var spelling: String { "tc:B" }
    /// The smallest budget `tc:P%` takes, as a fraction of float32 bytes.
    static let budgetRange = 0.0001...1.0
    public var canStoreBucketRows: Bool { false }
    public var formatVersion: UInt32 { 3 }
    public var decodesInBatches: Bool { true }

    static func spell(_ bits: Double) -> String {
        // Whole numbers without ".0"; others (and a damaged model's huge or non-finite target,
        // which `Int(_:)` traps on: found by fuzzing) as `Double` spells them.
        bits == bits.rounded() && abs(bits) < 1e15 ? String(Int(bits)) : String(bits)
    }

    /// The name of the form of rows coded by a model fitted for `bits` bits a value (the float32
    /// a model record holds): `tc:1.5`, `tc:6.845`, to three decimals, so that a rate a load
    /// fitted (a budget's ladder, `tc:P%`) reads as the policy's report spells it.
    public static func formName(bits: Float) -> String {
        "tc:" + spell((Double(bits) * 1000).rounded() / 1000)
    }

    /// The budgets `embstore codecs` lists (any percentage in `budgetRange` is accepted).
    static let budgets: [Double] = [0.25, 0.125, 0.0625]

    public func forms(dimension: Int) -> [CodecForm] {
        // Listed where the budget leaves a tc row more than its framing and a sparse index entry.
        let budgets = Self.budgets.filter { $0 * 4 * Double(dimension) >= 24 }.map { fraction in
            CodecForm(codec: Codec.transformCoded(budget: fraction).description, bytesPerRow: fraction * 4 * Double(dimension),
                      summary: "tc at the rate that keeps the table within \(Self.spell(fraction * 100))% of float32 on disk (records, index, model)")
        }
        return budgets + Self.ladder.map { bits in
            CodecForm(codec: "tc:" + Self.spell(bits), bytesPerRow: Self.targetRecordBytes(bits: bits, dimension: dimension),
                      summary: "PCA-rotated, rANS-coded coefficients: about \(Self.spell(bits)) bits a value and 6 bytes a row (model fitted per table)")
        }
    }

    public func parse(_ parts: [Substring]) throws(CodecError) -> Codec? {
        guard parts.first == "tc" else { return nil }
        let text = parts.joined(separator: ":")
        if parts.count == 2, parts[1].hasSuffix("%") {
            guard let percent = Double(parts[1].dropLast()), percent.isFinite, Self.budgetRange.contains(percent / 100) else {
                throw .invalidParameter("codec '\(text)': expected tc:P% with P, the bytes on disk as a percentage of float32, in 0.01...100")
            }
            return .transformCoded(budget: percent / 100)
        }
        guard parts.count == 2, let bits = Double(parts[1]), bits.isFinite, Self.bitRange.contains(bits) else {
            throw .invalidParameter("codec '\(text)': expected tc:B with B, the bits a value, in \(Self.bitRange.lowerBound)...\(Self.bitRange.upperBound)")
        }
        return .transformCoded(bitsPerValue: bits)
    }

    public func makeDecoder(dimension: Int) -> any RowDecoder { TransformCodedDecoder(dimension: dimension) }

    public func planLoad(_ codec: Codec, rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int,
                         options: FitOptions) throws -> LoadPlan {
        let fit = try TransformCodedFit(rows: rows, count: count, dimension: dimension, options: options, codec: codec.description)
        let draft: TransformCodedFit.Draft
        if codec.arguments.count == 2 {
            draft = try Self.budgetDraft(fit, budget: codec.arguments[1], rows: rows, count: count, tableRows: options.tableRows ?? count,
                                         options: options, codec: codec)
        } else {
            draft = fit.draft(meanRecordBytes: Self.targetRecordBytes(bits: codec.arguments[0], dimension: dimension))
        }
        // The model records the rate asked for (puts of tc:B find it by it), or the one a budget gave.
        let bits = codec.arguments.count == 2 ? (draft.meanRecordBytes - Self.framingBytes) * 8 / Double(dimension) : codec.arguments[0]
        // The basis keeps the rows the model codes, and no more.
        let basis = TransformBasis(fit.basis, keeping: draft.k)
        func model(basisID: UInt32) throws -> TransformModel {
            try TransformModel(basisID: basisID, basis: basis, k: draft.k, targetBits: Float(bits), steps: draft.steps,
                               tableOf: draft.tableOf, tables: draft.tables)
        }
        var plan = LoadPlan { ids, _, _ in TransformCodedEncoder(model: try model(basisID: ids[0]), modelID: ids[1]) }
        plan.parameterRecords = [{ _ in basis.record }, { ids in try model(basisID: ids[0]).record }]
        return plan
    }

    /// Pages a new store has beside the values of its table's parameters and segment: the two
    /// meta pages, the leaves of the main, `meta`, `bases` and `segments` databases and of the
    /// free list, and the pages a load leaves free (6 after a one-segment load of npm's 30,000
    /// rows, 7 of 1,000,000): 13.
    public static let storePages = 13.0

    /// Pages of an LMDB value of `bytes` bytes on its own overflow pages (a 16-byte page header).
    static func overflowPages(_ bytes: Double, page: Double = 4096) -> Double { ((bytes + 16) / page).rounded(.up) * page }

    /// The draft whose table fits `budget` × the float32 bytes of `rows` rows: the records, the
    /// store's overhead per row (its segment's index, measured exactly by the load), the basis
    /// and model records in whole pages, and the pages every store has (`storePages`). The
    /// records' mean size is measured on the fit's sample, which the rows match to well under
    /// 0.1%: the table lands within a few pages of the budget.
    static func draft(_ fit: TransformCodedFit, budget: Double, rows: Int, options: FitOptions, codec: Codec,
                      recordExcess: Double = 0) throws -> TransformCodedFit.Draft {
        let page = 4096.0
        func pages(_ bytes: Double) -> Double { overflowPages(bytes, page: page) }
        let d = Double(fit.dimension)
        let total = budget * 4 * d * Double(rows)
        let fixed = storePages * page
        var modelBytes = pages(20 + 4 * d + Double(fit.basis.rank) * (d + 8)) + pages(28 + 5 * Double(fit.basis.rank) + 32 * 100)
        var best: TransformCodedFit.Draft?
        for _ in 0..<4 {
            let perRow = (total - fixed - modelBytes) / Double(rows) - options.overheadBytesPerRow
            guard perRow >= framingBytes else {
                throw CodecError.invalidParameter("\(codec): a budget of \(String(format: "%.4g", budget * 100))% of float32 leaves \(String(format: "%.1f", perRow)) bytes a row for records of \(rows) rows; tc needs at least \(Int(framingBytes)) (a larger budget, or more rows to share the model)")
            }
            let draft = fit.draft(meanRecordBytes: perRow - recordExcess)
            let k = Double(draft.k)
            let tables = draft.tables.reduce(0.0) { $0 + 12 + 2 * Double($1.frequencies.count) }
            let exact = pages(20 + 4 * d + k * (d + 8)) + pages(28 + 5 * k + tables)
            if exact <= modelBytes { best = draft }
            if exact == modelBytes { break }
            modelBytes = exact
        }
        return try best ?? draft(fit, budget: budget * 0.98, rows: rows, options: options, codec: codec, recordExcess: recordExcess)
    }

    /// The draft whose table of `count` rows fits `budget` × their float32 bytes on disk
    /// (`draft(_:budget:rows:options:codec:recordExcess:)`), aimed by the coder's sizes on rows
    /// outside the fit's sample.
    static func budgetDraft(_ fit: TransformCodedFit, budget: Double, rows: UnsafeBufferPointer<Float>, count: Int, tableRows: Int,
                            options: FitOptions, codec: Codec) throws -> TransformCodedFit.Draft {
        let first = try draft(fit, budget: budget, rows: tableRows, options: options, codec: codec)
        // The formula the draft measures its sample with is off from the coder by a fraction of
        // a byte, and the sample's records are a little smaller than the other rows' (its tables
        // were fitted on it): rows between the sample's are encoded, and the draft aimed again by
        // the difference (0.06 bytes a row at 1,000,000 × 64). Rows' sizes vary, so the more rows
        // the better: as many as about 2³¹ multiply-adds project.
        guard count > fit.sampleCount else { return first }
        let measured = min(count, max(fit.sampleCount, (1 << 31) / max(fit.dimension * fit.dimension, 1)))
        let heldOut = (0..<measured).map { j in min(count - 1, Int(((Double(j) + 0.5) * Double(count) / Double(measured)).rounded(.down))) }
        let excess = try meanEncodedBytes(fit, first, rows: rows, indexes: heldOut) - first.meanRecordBytes
        guard abs(excess) > 0.001 * first.meanRecordBytes else { return first }
        return try draft(fit, budget: budget, rows: tableRows, options: options, codec: codec, recordExcess: excess)
    }

    /// The mean size of the records `draft` encodes the rows `indexes` of `rows` into.
    static func meanEncodedBytes(_ fit: TransformCodedFit, _ draft: TransformCodedFit.Draft, rows: UnsafeBufferPointer<Float>,
                                 indexes: [Int]) throws -> Double {
        let basis = TransformBasis(fit.basis, keeping: draft.k)
        let model = try TransformModel(basisID: 1, basis: basis, k: draft.k, targetBits: 0, steps: draft.steps,
                                       tableOf: draft.tableOf, tables: draft.tables)
        let encoder = TransformCodedEncoder(model: model, modelID: 2)
        var record = [UInt8](repeating: 0, count: encoder.maximumRecordSize)
        var total = 0
        try record.withUnsafeMutableBytes { record in
            for i in indexes {
                total += try encoder.encode(UnsafeBufferPointer(rebasing: rows[i * fit.dimension..<(i + 1) * fit.dimension]), index: i, into: record)
            }
        }
        return Double(total) / Double(max(indexes.count, 1))
    }

    public func parameterID(of record: UnsafeRawBufferPointer) -> UInt32? { ModelIDVarint.decode(record)?.id }

    /// `tc:B`, B the bits a value the model was fitted for.
    public func formName(parameter: UnsafeRawBufferPointer) -> String {
        guard TypedParameterKind.of(parameter) == TypedParameterKind.transformModel.rawValue, parameter.count >= 20 else { return name }
        let bits = Float(bitPattern: UInt32(littleEndian: parameter.loadUnaligned(fromByteOffset: 16, as: UInt32.self)))
        return Self.formName(bits: bits)
    }

    public func putEncoder(_ codec: Codec, table: any CodecTableState) throws -> any RowEncoder {
        let bits = Float(codec.arguments[0])
        let anyRate = codec.arguments.count == 2
        for id in try table.parameterIDs().reversed() {
            guard let record = try table.parameterRecord(id), TypedParameterKind.of(record) == TypedParameterKind.transformModel.rawValue,
                  record.count >= 20,
                  anyRate || Float(bitPattern: UInt32(littleEndian: record.loadUnaligned(fromByteOffset: 16, as: UInt32.self))) == bits
            else { continue }
            let model = try TransformModel(record: record) { basisID in
                guard let stored = try table.parameterRecord(basisID) else {
                    throw CodecError.invalidParameter("tc model \(id) points at basis \(basisID), which does not exist")
                }
                return try TransformBasis(record: stored)
            }
            guard model.basis.dimension == table.dimension else {
                throw CodecError.invalidParameter("tc model \(id) has dimension \(model.basis.dimension), not \(table.dimension)")
            }
            return TransformCodedEncoder(model: model, modelID: id)
        }
        throw CodecError.missingParameters(anyRate
            ? "\(codec) rows need a tc model; load the table with codec \(codec) first"
            : "\(codec) rows need a tc model fitted for \(TransformCodedRowCodec.spell(Double(bits))) bits a value; load the table with codec \(codec) first")
    }
}

/// Unsigned LEB128 of the model id (FORMAT.md): 7 bits a byte, low first, shortest form.
enum ModelIDVarint {
    static func encode(_ value: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        var rest = value
        repeat {
            let low = UInt8(rest & 0x7F)
            rest >>= 7
            bytes.append(rest == 0 ? low : low | 0x80)
        } while rest != 0
        return bytes
    }

    /// The id and the bytes it took after the tag, nil when malformed (longer than 5 bytes,
    /// beyond 2³² − 1, not the shortest form, or running off the record).
    @inline(__always)
    static func decode(_ record: UnsafeRawBufferPointer) -> (id: UInt32, end: Int)? {
        var value: UInt64 = 0
        var offset = 1
        while offset < record.count, offset <= 5 {
            let byte = record[offset]
            value |= UInt64(byte & 0x7F) << (7 * UInt64(offset - 1))
            offset += 1
            if byte & 0x80 == 0 {
                guard value <= UInt64(UInt32.max), byte != 0 || offset == 2 else { return nil }
                return (UInt32(value), offset)
            }
        }
        return nil
    }
}

final class TransformCodedEncoder: RowEncoder {
    let model: TransformModel
    let idBytes: [UInt8]
    let maximumRecordSize: Int
    var acceptsZeroPadding: Bool { true }
    private var coefficients: [Float]
    private var symbols: [Int32]

    init(model: TransformModel, modelID: UInt32) {
        self.model = model
        idBytes = ModelIDVarint.encode(modelID)
        var kernel = model.kernelModel
        maximumRecordSize = 1 + idBytes.count + emb_tc_max_stream_bytes(&kernel)
        coefficients = [Float](repeating: 0, count: model.k)
        symbols = [Int32](repeating: 0, count: model.k)
    }

    func encode(_ row: UnsafeBufferPointer<Float>, index: Int?, into record: UnsafeMutableRawBufferPointer) throws(CodecError) -> Int {
        let k = model.k
        coefficients.withUnsafeMutableBufferPointer { TransformCodedFit.project(row.baseAddress!, basis: model.basis, k: k, into: $0.baseAddress!) }
        for j in 0..<k { symbols[j] = TransformCodedFit.quantize(coefficients[j], step: model.steps[j]) }
        record[0] = TransformCodedRowCodec.tag
        for (i, byte) in idBytes.enumerated() { record[1 + i] = byte }
        let start = 1 + idBytes.count
        var kernel = model.kernelModel
        let length = symbols.withUnsafeBufferPointer { symbols in
            emb_tc_encode(&kernel, symbols.baseAddress!, record.baseAddress! + start, maximumRecordSize - start)
        }
        guard length > 0 else { throw .invalidParameter("tc encoder could not code the row with its model") }
        return start + length
    }
}

/// Decodes tc records: runs of records of one model go to the kernel together (four rANS
/// chains in lockstep). Models and bases are immutable once written, so each is read once.
final class TransformCodedDecoder: RowDecoder {
    let dimension: Int
    private var models: [UInt32: TransformModel] = [:]
    private var bases: [UInt32: TransformBasis] = [:]
    private var streams = UnsafeMutablePointer<UnsafeRawPointer?>.allocate(capacity: 8)
    private var lengths = UnsafeMutablePointer<Int>.allocate(capacity: 8)
    private var capacity = 8
    private var scratch = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    private var scratchCount = 1

    init(dimension: Int) { self.dimension = dimension }

    deinit {
        streams.deallocate()
        lengths.deallocate()
        scratch.deallocate()
    }

    /// Model `id` of this table, nil when it is missing or damaged (`problem` says which).
    private func model<P: CodecParameterSource>(_ id: UInt32, _ parameters: P) throws -> TransformModel? {
        if let model = models[id] { return model }
        guard let record = try parameters.parameterRecord(id) else { return nil }
        guard let model = try? loadModel(record, parameters), model.basis.dimension == dimension else { return nil }
        models[id] = model
        let needed = max(4 * model.k, model.k + dimension)
        if scratchCount < needed {
            scratch.deallocate()
            scratch = .allocate(capacity: needed)
            scratchCount = needed
        }
        return model
    }

    private func loadModel<P: CodecParameterSource>(_ record: UnsafeRawBufferPointer, _ parameters: P) throws -> TransformModel {
        try TransformModel(record: record) { basisID in
            if let basis = bases[basisID] { return basis }
            guard let stored = try parameters.parameterRecord(basisID) else {
                throw CodecError.invalidParameter("its basis \(basisID) does not exist")
            }
            let basis = try TransformBasis(record: stored)
            bases[basisID] = basis
            return basis
        }
    }

    func decode<P: CodecParameterSource>(_ records: UnsafePointer<UnsafeRawBufferPointer>, count: Int,
                                         into out: UnsafeMutablePointer<Float>, parameters: P) throws -> Int {
        if capacity < count {
            streams.deallocate()
            lengths.deallocate()
            capacity = max(count, 2 * capacity)
            streams = .allocate(capacity: capacity)
            lengths = .allocate(capacity: capacity)
        }
        var i = 0
        while i < count {
            guard let (id, _) = ModelIDVarint.decode(records[i]), let model = try model(id, parameters) else { return i }
            var j = i
            while j < count, let (other, start) = ModelIDVarint.decode(records[j]), other == id {
                streams[j - i] = UnsafeRawPointer(records[j].baseAddress! + start)
                lengths[j - i] = records[j].count - start
                j += 1
            }
            var kernel = model.kernelModel
            let decoded = emb_tc_decode_rows(&kernel, streams, lengths, j - i, out + i * dimension, scratch)
            if decoded < j - i { return i + decoded }
            for r in i..<j where !RowDecoding.allFinite(out + r * dimension, count: dimension) { return r }
            i = j
        }
        return count
    }

    func accumulate<P: CodecParameterSource>(_ records: UnsafePointer<UnsafeRawBufferPointer>, weights: UnsafePointer<Float>?,
                                             count: Int, into acc: UnsafeMutablePointer<Float>, parameters: P) throws -> Int {
        for r in 0..<count {
            guard let (id, start) = ModelIDVarint.decode(records[r]), let model = try model(id, parameters) else { return r }
            var kernel = model.kernelModel
            guard emb_tc_accumulate(&kernel, records[r].baseAddress! + start, records[r].count - start, acc, weights?[r] ?? 1,
                                    scratch) != 0,
                  RowDecoding.allFinite(acc, count: dimension) else { return r }
        }
        return count
    }

    func problem<P: CodecParameterSource>(with record: UnsafeRawBufferPointer, parameters: P) -> String {
        guard let (id, start) = ModelIDVarint.decode(record) else {
            return "tc record's model id is not a shortest-form LEB128 of at most 5 bytes below 2³²"
        }
        let stored: UnsafeRawBufferPointer?
        do {
            stored = try parameters.parameterRecord(id)
        } catch {
            return "its tc model \(id) cannot be read: \(error)"
        }
        guard let stored else { return "points at tc model \(id), which does not exist" }
        let model: TransformModel
        do {
            model = try loadModel(stored, parameters)
        } catch {
            return "its tc model \(id) is damaged: \(error)"
        }
        guard model.basis.dimension == dimension else { return "its tc model \(id) has dimension \(model.basis.dimension), not \(dimension)" }
        var kernel = model.kernelModel
        var row = [Float](repeating: 0, count: dimension)
        var coefficients = [Float](repeating: 0, count: model.k)
        guard emb_tc_decode_coefficients(&kernel, record.baseAddress! + start, record.count - start, &coefficients) != 0 else {
            return "tc stream of \(record.count - start) bytes does not decode with model \(id) (truncated, damaged, or non-zero padding)"
        }
        emb_tc_synthesize(&kernel, coefficients, &row)
        return RowDecoding.nonFiniteProblem(row) ?? "tc record cannot be decoded"
    }
}
