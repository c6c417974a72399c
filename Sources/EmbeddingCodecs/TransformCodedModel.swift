import CEmbeddingKernels

// The parameter records of `tc` rows (FORMAT.md, "Transform-coded rows"): a tc basis (mean and
// rotation) and a tc model (steps and rANS frequency tables), each a typed parameter record of
// the table, and their decoded form that the C kernels read.

/// The kinds of typed parameter records (FORMAT.md): a first u32 of 0, then the kind.
public enum TypedParameterKind: UInt32 {
    case transformBasis = 1
    case transformModel = 2

    /// True when `record` is a typed parameter record (its first u32 is 0), which FORMAT.md
    /// puts in version 3; false for a PCA basis record.
    public static func isTyped(_ record: [UInt8]) -> Bool {
        record.count >= 4 && record[0..<4].allSatisfy { $0 == 0 }
    }

    /// The kind of a typed record, nil for a PCA basis record (first u32 ≥ 1) or an unknown kind.
    public static func of(_ record: UnsafeRawBufferPointer) -> UInt32? {
        guard record.count >= 8, record.loadUnaligned(as: UInt32.self) == 0 else { return nil }
        return UInt32(littleEndian: record.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
    }
}

/// The rotation of `tc` rows: the mean row μ and K orthonormal basis rows, stored as f32 or f16
/// and held decoded as f32 (64-byte aligned, which the synthesis kernel runs fastest on).
public final class TransformBasis: @unchecked Sendable {
    /// How basis rows are stored on disk.
    public enum Precision: UInt32, Sendable {
        case float32 = 1
        case float16 = 2
        /// Each row an int8 rowwise payload (d codes, f32 scale, f32 bias), decoded as int8 rows are.
        case int8Rowwise = 3

        func bytes(dimension d: Int) -> Int {
            switch self {
            case .float32: 4 * d
            case .float16: 2 * d
            case .int8Rowwise: Int8RowwiseCodec.payloadSize(dimension: d)
            }
        }
    }

    public let dimension: Int
    public let rank: Int
    public let precision: Precision
    /// `dimension` floats.
    let mean: UnsafeMutablePointer<Float>
    /// `rank × dimension` floats, row-major, exactly the values the record stores.
    let rows: UnsafeMutablePointer<Float>
    /// The rows as the record stores them.
    private var storedRows: [UInt8] = []

    /// A basis from a fit: the first `rank` components of `pca`, as `precision` stores them.
    public init(_ pca: PCABasis, rank: Int, precision: Precision) throws(CodecError) {
        guard rank >= 1, rank <= pca.rank else {
            throw .invalidParameter("a tc basis of \(rank) rows from a PCA basis of rank \(pca.rank)")
        }
        dimension = pca.dimension
        self.rank = rank
        self.precision = precision
        mean = Self.allocate(dimension)
        rows = Self.allocate(rank * dimension)
        for i in 0..<dimension { mean[i] = pca.mean[i] }
        let d = dimension
        var payload = [UInt8](repeating: 0, count: precision.bytes(dimension: d))
        for j in 0..<rank {
            try Self.storeRow(pca.components, j, d, precision, into: &payload)
            payload.withUnsafeBytes { Self.load($0, precision, into: UnsafeMutableBufferPointer(start: rows + j * d, count: d)) }
            storedRows += payload
        }
    }

    /// Encodes row `j` of `components` as `precision` stores it into `payload`.
    private static func storeRow(_ components: [Float], _ j: Int, _ d: Int, _ precision: Precision, into payload: inout [UInt8]) throws(CodecError) {
        let row = Array(components[j * d..<(j + 1) * d])
        var failure: CodecError?
        row.withUnsafeBufferPointer { source in
            payload.withUnsafeMutableBytes { bytes in
                do { try store(source, precision, into: bytes) } catch let error as CodecError { failure = error } catch {}
            }
        }
        if let failure { throw failure }
    }

    /// The first `rank` rows of `basis` (a model that codes fewer coefficients needs no more).
    init(_ basis: TransformBasis, keeping rank: Int) {
        precondition(rank >= 1 && rank <= basis.rank)
        dimension = basis.dimension
        self.rank = rank
        precision = basis.precision
        mean = Self.allocate(dimension)
        mean.update(from: basis.mean, count: dimension)
        rows = Self.allocate(rank * dimension)
        rows.update(from: basis.rows, count: rank * dimension)
        storedRows = Array(basis.storedRows[0..<rank * precision.bytes(dimension: dimension)])
    }

    /// Writes one basis row as `precision` stores it.
    private static func store(_ row: UnsafeBufferPointer<Float>, _ precision: Precision, into bytes: UnsafeMutableRawBufferPointer) throws(CodecError) {
        switch precision {
        case .float32: try Float32Codec.encode(row, into: bytes)
        case .float16: try Float16Codec.encode(row, into: bytes)
        case .int8Rowwise: try Int8RowwiseCodec.encode(row, into: bytes)
        }
    }

    /// Reads one stored basis row.
    private static func load(_ bytes: UnsafeRawBufferPointer, _ precision: Precision, into row: UnsafeMutableBufferPointer<Float>) {
        switch precision {
        case .float32: Float32Codec.decodeReference(bytes, into: row)
        case .float16: Float16Codec.decode(bytes, into: row)
        case .int8Rowwise: Int8RowwiseCodec.decodeReference(bytes, into: row)
        }
    }

    /// Reads a tc basis record, checking every field.
    public init(record bytes: UnsafeRawBufferPointer) throws(CodecError) {
        guard TypedParameterKind.of(bytes) == TypedParameterKind.transformBasis.rawValue, bytes.count >= 20 else {
            throw .invalidParameter("not a tc basis record")
        }
        let d = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        let k = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
        let code = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
        guard let precision = Precision(rawValue: code) else { throw .invalidParameter("tc basis has unknown precision \(code)") }
        guard d >= 1, d <= 1 << 20, k >= 1, k <= d else { throw .invalidParameter("tc basis has dimension \(d) and \(k) rows") }
        let rowBytes = precision.bytes(dimension: d)
        let expected = 20 + 4 * d + rowBytes * k
        guard bytes.count == expected else {
            throw .invalidParameter("tc basis record has \(bytes.count) bytes, expected \(expected) for dimension \(d), \(k) rows")
        }
        dimension = d
        rank = k
        self.precision = precision
        mean = Self.allocate(d)
        rows = Self.allocate(k * d)
        for i in 0..<d { mean[i] = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 20 + 4 * i, as: UInt32.self))) }
        let base = 20 + 4 * d
        for j in 0..<k {
            Self.load(UnsafeRawBufferPointer(rebasing: bytes[(base + j * rowBytes)..<(base + (j + 1) * rowBytes)]), precision,
                      into: UnsafeMutableBufferPointer(start: rows + j * d, count: d))
        }
        storedRows = Array(bytes[base...])
        for i in 0..<d where !mean[i].isFinite { throw .invalidParameter("tc basis mean[\(i)] is \(mean[i])") }
        for i in 0..<k * d where !rows[i].isFinite { throw .invalidParameter("tc basis value \(i) is \(rows[i])") }
    }

    deinit {
        mean.deallocate()
        rows.deallocate()
    }

    /// The record (FORMAT.md, tc basis), with the rows' bytes as they were first stored.
    public var record: [UInt8] {
        var writer = ByteWriter(capacity: 20 + 4 * dimension + precision.bytes(dimension: dimension) * rank)
        for field in [0, TypedParameterKind.transformBasis.rawValue, UInt32(dimension), UInt32(rank), precision.rawValue] {
            writer.append(field)
        }
        for i in 0..<dimension { writer.append(mean[i]) }
        var bytes = writer.bytes
        bytes += storedRows
        return bytes
    }

    private static func allocate(_ count: Int) -> UnsafeMutablePointer<Float> {
        UnsafeMutableRawPointer.allocate(byteCount: 4 * max(count, 1), alignment: 64)
            .initializeMemory(as: Float.self, repeating: 0, count: max(count, 1))
    }
}

/// One static frequency table of a tc model: symbols for the values lo … lo + n − 1 and an
/// escape, with frequencies summing to 4096, and the reconstruction offset θ.
public struct FrequencyTable: Sendable, Equatable {
    public var lo: Int32
    /// n + 1 frequencies: the n value symbols, then the escape.
    public var frequencies: [UInt16]
    public var theta: Float

    public init(lo: Int32, frequencies: [UInt16], theta: Float) {
        self.lo = lo
        self.frequencies = frequencies
        self.theta = theta
    }

    public var valueCount: Int { frequencies.count - 1 }
}

/// A tc model: the steps and frequency tables of one rate on one basis, held with the arrays
/// the C kernels read (`emb_tc_model`).
public final class TransformModel: @unchecked Sendable {
    public let basisID: UInt32
    public let basis: TransformBasis
    /// Coefficients coded per row.
    public let k: Int
    public let targetBits: Float
    public let steps: [Float]
    public let tableOf: [UInt8]
    public let tables: [FrequencyTable]
    private let stepStorage: UnsafeMutablePointer<Float>
    private let tableOfStorage: UnsafeMutablePointer<UInt8>
    private let tableStorage: UnsafeMutablePointer<emb_tc_table>
    private var allocations: [UnsafeMutableRawPointer] = []
    /// What the kernels read; its pointers live as long as this object.
    public private(set) var kernelModel: emb_tc_model

    public init(basisID: UInt32, basis: TransformBasis, k: Int, targetBits: Float, steps: [Float], tableOf: [UInt8],
                tables: [FrequencyTable]) throws(CodecError) {
        guard k >= 1, k <= basis.rank else { throw .invalidParameter("tc model codes \(k) coefficients; its basis has \(basis.rank) rows") }
        guard steps.count == k, tableOf.count == k else { throw .invalidParameter("tc model has \(steps.count) steps and \(tableOf.count) table indexes for \(k) coefficients") }
        guard (1...255).contains(tables.count) else { throw .invalidParameter("tc model has \(tables.count) frequency tables (1...255)") }
        for (j, step) in steps.enumerated() where !(step.isFinite && step > 0) {
            throw .invalidParameter("tc model step[\(j)] is \(step)")
        }
        for (j, table) in tableOf.enumerated() where Int(table) >= tables.count {
            throw .invalidParameter("tc model coefficient \(j) uses table \(table) of \(tables.count)")
        }
        self.basisID = basisID
        self.basis = basis
        self.k = k
        self.targetBits = targetBits
        self.steps = steps
        self.tableOf = tableOf
        self.tables = tables
        stepStorage = .allocate(capacity: k)
        stepStorage.initialize(from: steps, count: k)
        tableOfStorage = .allocate(capacity: k)
        tableOfStorage.initialize(from: tableOf, count: k)
        tableStorage = .allocate(capacity: tables.count)
        kernelModel = emb_tc_model()
        for (t, table) in tables.enumerated() {
            let symbols = table.frequencies.count
            guard (1...256).contains(symbols), table.theta.isFinite, table.theta >= 0, table.theta < 1 else {
                throw .invalidParameter("tc frequency table \(t) has \(symbols) symbols and θ = \(table.theta)")
            }
            let freq = UnsafeMutablePointer<UInt16>.allocate(capacity: symbols)
            freq.initialize(from: table.frequencies, count: symbols)
            let cum = UnsafeMutablePointer<UInt16>.allocate(capacity: symbols + 1)
            let slots = UnsafeMutablePointer<UInt8>.allocate(capacity: 4096)
            allocations += [UnsafeMutableRawPointer(freq), UnsafeMutableRawPointer(cum), UnsafeMutableRawPointer(slots)]
            guard emb_tc_table_build(freq, symbols, cum, slots) != 0 else {
                throw .invalidParameter("tc frequency table \(t): frequencies sum to \(table.frequencies.reduce(0) { $0 + Int($1) }), not 4096")
            }
            tableStorage[t] = emb_tc_table(count: UInt32(symbols - 1), lo: table.lo, theta: table.theta, freq: freq, cum: cum,
                                           slot_symbol: slots)
        }
        kernelModel = emb_tc_model(d: basis.dimension, k: k, table_count: tables.count, mean: basis.mean, basis: basis.rows,
                                   step: stepStorage, table_of: tableOfStorage, tables: tableStorage)
        if let column = Self.columnThatCanOverflow(basis: basis, k: k, steps: steps, tableOf: tableOf, tables: tables) {
            throw .invalidParameter("tc model: rows could decode to values beyond float32's range in column \(column) (steps up to \(steps.max() ?? 0))")
        }
    }

    /// A column some row of this model could decode to an infinite value in, nil when none can
    /// (FORMAT.md: every decoded value is finite). A coefficient's code is at most
    /// max(|lo|, |lo + n − 1|) of its table, or 32,768 as an escape, so
    /// |x̂[i]| ≤ |μ[i]| + Σ_j step[j] · (q_max[j] + θ) · |v[j][i]|, partial sums included; the
    /// bound, in Float64, must stay below half of float32's largest value (room for rounding).
    /// Checked once per model, so decoding checks nothing per row.
    private static func columnThatCanOverflow(basis: TransformBasis, k: Int, steps: [Float], tableOf: [UInt8],
                                             tables: [FrequencyTable]) -> Int? {
        let d = basis.dimension
        let largest = Double(Float.greatestFiniteMagnitude) / 2
        let reach: [Double] = (0..<k).map { j in
            let table = tables[Int(tableOf[j])]
            let lo = Double(table.lo), hi = Double(table.lo) + Double(max(table.valueCount - 1, 0))
            return Double(steps[j]) * (max(abs(lo), abs(hi), 32_768) + Double(table.theta))
        }
        for i in 0..<d {
            var bound = abs(Double(basis.mean[i]))
            for j in 0..<k { bound += reach[j] * abs(Double(basis.rows[j * d + i])) }
            if !(bound < largest) { return i }
        }
        return nil
    }

    deinit {
        stepStorage.deallocate()
        tableOfStorage.deallocate()
        tableStorage.deallocate()
        for allocation in allocations { allocation.deallocate() }
    }

    /// Reads a tc model record; `basis` gives the tc basis of the id the record names.
    public convenience init(record bytes: UnsafeRawBufferPointer, basis: (UInt32) throws -> TransformBasis) throws {
        guard TypedParameterKind.of(bytes) == TypedParameterKind.transformModel.rawValue else {
            throw CodecError.invalidParameter("not a tc model record")
        }
        var reader = ByteReader(bytes)
        do {
            _ = try reader.uint32("marker")
            _ = try reader.uint32("kind")
            let basisID = try reader.uint32("basis id")
            let k = Int(try reader.uint32("K"))
            let target = try reader.float("target bits")
            guard k >= 1, k <= 1 << 20 else { throw CodecError.invalidParameter("tc model codes \(k) coefficients") }
            let steps = try reader.floats(k, "steps")
            let tableOf = Array(try reader.raw(k, "table indexes"))
            let count = Int(try reader.uint32("table count"))
            guard (1...255).contains(count) else { throw CodecError.invalidParameter("tc model has \(count) frequency tables (1...255)") }
            var tables: [FrequencyTable] = []
            for _ in 0..<count {
                let lo = Int32(bitPattern: try reader.uint32("lo"))
                let n = Int(try reader.uint32("symbol count"))
                guard n <= 255 else { throw CodecError.invalidParameter("tc frequency table has \(n) value symbols (at most 255)") }
                let theta = try reader.float("theta")
                let raw = try reader.raw(2 * (n + 1), "frequencies")
                let frequencies = (0...n).map { UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)) }
                tables.append(FrequencyTable(lo: lo, frequencies: frequencies, theta: theta))
            }
            guard reader.remaining == 0 else { throw CodecError.invalidParameter("tc model record has \(reader.remaining) trailing bytes") }
            try self.init(basisID: basisID, basis: try basis(basisID), k: k, targetBits: target, steps: steps, tableOf: tableOf,
                          tables: tables)
        } catch let error as ByteReaderError {
            throw CodecError.invalidParameter("tc model record: \(error)")
        }
    }

    /// The record (FORMAT.md, tc model).
    public var record: [UInt8] {
        var writer = ByteWriter(capacity: 28 + 5 * k + tables.count * 16)
        for field in [0, TypedParameterKind.transformModel.rawValue, basisID, UInt32(k)] { writer.append(field) }
        writer.append(targetBits)
        writer.append(steps)
        var bytes = writer.bytes
        bytes += tableOf
        appendLE(UInt32(tables.count), to: &bytes)
        for table in tables {
            appendLE(UInt32(bitPattern: table.lo), to: &bytes)
            appendLE(UInt32(table.valueCount), to: &bytes)
            appendLE(table.theta.bitPattern, to: &bytes)
            for frequency in table.frequencies { appendLE(frequency, to: &bytes) }
        }
        return bytes
    }
}
