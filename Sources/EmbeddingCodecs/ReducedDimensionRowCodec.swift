// `reduced:K` as a registered codec (FORMAT.md, tag 5): a u32 basis id, then K f32
// coefficients on that PCA basis of the table.

extension ReducedDimensionCodec {
    static let tag: UInt8 = 5
    /// The registered codec.
    public static let descriptor: any RowCodec = ReducedRowCodec()
}

extension Codec {
    /// `k` float32 coefficients on the table's PCA basis (a load fits a rank-k basis first).
    public static func reduced(k: Int) -> Codec {
        Codec(tag: ReducedDimensionCodec.tag, description: "reduced:\(k)", arguments: [Double(k)])
    }
}

struct ReducedRowCodec: RowCodec {
    var tag: UInt8 { ReducedDimensionCodec.tag }
    var name: String { "reduced" }
    var spelling: String { "reduced:K" }
    var canStoreBucketRows: Bool { false }

    func forms(dimension: Int) -> [CodecForm] {
        let ks = Set([dimension / 16, dimension / 8, dimension / 4, dimension / 2].filter { $0 >= 1 && $0 < dimension }).sorted()
        return ks.map {
            CodecForm(codec: "reduced:\($0)", bytesPerRow: Double(5 + ReducedDimensionCodec.payloadSize(k: $0)),
                      summary: "\($0) f32 coefficients on the table's PCA basis")
        }
    }

    func parse(_ parts: [Substring]) throws(CodecError) -> Codec? {
        guard parts.first == "reduced" else { return nil }
        let text = parts.joined(separator: ":")
        guard parts.count == 2 else { throw .invalidParameter("codec '\(text)': expected reduced:K") }
        return .reduced(k: try RowCodecs.positiveInteger(parts[1], of: text))
    }

    func makeDecoder(dimension: Int) -> any RowDecoder { ReducedDecoder(dimension: dimension) }

    func planLoad(_ codec: Codec, rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int, options: FitOptions) throws -> LoadPlan {
        let k = Int(codec.arguments[0])
        guard k < dimension else { throw CodecError.invalidParameter("reduced:\(k) needs k < dimension \(dimension)") }
        try PCABasis.checkFitDimension(dimension, codec: "reduced:\(k)")
        // PCA on a sample stays within a few percent of the optimum only with ~100·d rows or more
        // (within the sample's memory bound: 16·d rows at d = 2048).
        let limit = RowSampling.limit(max(options.sampleLimit, 100 * dimension), dimension: dimension)
        let basis = try RowSampling.withSample(rows, count: count, dimension: dimension, limit: limit) { sample, sampleCount in
            try PCABasis.fit(rows: sample, count: sampleCount, dimension: dimension, rank: k)
        }
        var plan = LoadPlan { ids, _, _ in ReducedEncoder(k: min(k, basis.rank), basisID: ids[0], basis: basis) }
        plan.parameterRecords = [{ _ in basis.record }]
        plan.makesCurrentBasis = true
        return plan
    }

    func putEncoder(_ codec: Codec, table: any CodecTableState) throws -> any RowEncoder {
        let k = Int(codec.arguments[0])
        let basisID = table.currentBasisID
        guard basisID != 0, let record = try table.parameterRecord(basisID) else {
            throw CodecError.missingParameters("reduced rows need a PCA basis; fit one with WriteBatch.addBasis or load with codec reduced:K")
        }
        let basis = try PCABasis(record: record)
        guard k >= 1, k <= basis.rank, k < table.dimension else {
            throw CodecError.invalidParameter("reduced:\(k): k must be in 1...\(min(basis.rank, table.dimension - 1)) (basis rank \(basis.rank), dimension \(table.dimension))")
        }
        return ReducedEncoder(k: k, basisID: basisID, basis: basis)
    }
}

final class ReducedEncoder: RowEncoder {
    let k: Int
    let basisID: UInt32
    let basis: PCABasis
    var maximumRecordSize: Int { 5 + ReducedDimensionCodec.payloadSize(k: k) }

    init(k: Int, basisID: UInt32, basis: PCABasis) {
        self.k = k
        self.basisID = basisID
        self.basis = basis
    }

    func encode(_ row: UnsafeBufferPointer<Float>, index: Int?, into record: UnsafeMutableRawBufferPointer) throws(CodecError) -> Int {
        record.storeBytes(of: ReducedDimensionCodec.tag, toByteOffset: 0, as: UInt8.self)
        record.storeBytes(of: basisID.littleEndian, toByteOffset: 1, as: UInt32.self)
        try ReducedDimensionCodec.encode(row, basis: basis, k: k, into: UnsafeMutableRawBufferPointer(rebasing: record[5..<maximumRecordSize]))
        return maximumRecordSize
    }
}

/// Decodes reduced records; bases are immutable once written (ids are never reused), so each
/// one is read once per decoder.
final class ReducedDecoder: AccumulatingByDecoding {
    let dimension: Int
    private var bases: [UInt32: PCABasis] = [:]
    /// One decoded row, for embedding bags.
    var scratch: [Float]

    init(dimension: Int) {
        self.dimension = dimension
        scratch = [Float](repeating: 0, count: dimension)
    }

    /// The basis and coefficients of a record, nil when it cannot be decoded.
    private func parts<P: CodecParameterSource>(_ record: UnsafeRawBufferPointer, _ parameters: P) throws -> (PCABasis, UnsafeRawBufferPointer)? {
        guard record.count >= 9, (record.count - 5) % 4 == 0 else { return nil }
        let basisID = UInt32(littleEndian: record.loadUnaligned(fromByteOffset: 1, as: UInt32.self))
        guard let basis = try basis(basisID, parameters) else { return nil }
        let coefficients = UnsafeRawBufferPointer(rebasing: record[5...])
        guard coefficients.count / 4 <= basis.rank, coefficients.count / 4 < dimension else { return nil }
        return (basis, coefficients)
    }

    private func basis<P: CodecParameterSource>(_ id: UInt32, _ parameters: P) throws -> PCABasis? {
        if let basis = bases[id] { return basis }
        guard let record = try parameters.parameterRecord(id), let basis = try? PCABasis(record: record),
              basis.dimension == dimension else { return nil }
        bases[id] = basis
        return basis
    }

    func decode<P: CodecParameterSource>(_ records: UnsafePointer<UnsafeRawBufferPointer>, count: Int,
                                         into out: UnsafeMutablePointer<Float>, parameters: P) throws -> Int {
        for i in 0..<count {
            guard let (basis, coefficients) = try parts(records[i], parameters) else { return i }
            let row = UnsafeMutableBufferPointer(start: out + i * dimension, count: dimension)
            ReducedDimensionCodec.decode(coefficients, basis: basis, into: row)
            guard RowDecoding.allFinite(row.baseAddress!, count: dimension) else { return i }
        }
        return count
    }

    func problem<P: CodecParameterSource>(with record: UnsafeRawBufferPointer, parameters: P) -> String {
        guard record.count >= 9, (record.count - 5) % 4 == 0 else {
            return "reduced payload of \(record.count - 1) bytes is not a basis id and whole float32 coefficients"
        }
        let basisID = UInt32(littleEndian: record.loadUnaligned(fromByteOffset: 1, as: UInt32.self))
        let stored: UnsafeRawBufferPointer?
        do {
            stored = try parameters.parameterRecord(basisID)
        } catch {
            return "its PCA basis \(basisID) cannot be read: \(error)"
        }
        guard let stored else { return "points at PCA basis \(basisID), which does not exist" }
        let basis: PCABasis
        do {
            basis = try PCABasis(record: stored)
        } catch {
            return "its PCA basis \(basisID) is damaged: \(error)"
        }
        guard basis.dimension == dimension else { return "its PCA basis \(basisID) has dimension \(basis.dimension), not \(dimension)" }
        let k = (record.count - 5) / 4
        guard k <= basis.rank, k < dimension else {
            return "reduced row has \(k) coefficients; basis \(basisID) has rank \(basis.rank) at dimension \(dimension)"
        }
        var row = [Float](repeating: 0, count: dimension)
        row.withUnsafeMutableBufferPointer {
            ReducedDimensionCodec.decode(UnsafeRawBufferPointer(rebasing: record[5...]), basis: basis, into: $0)
        }
        return RowDecoding.nonFiniteProblem(row) ?? "reduced record cannot be decoded"
    }
}
