// The descriptor shared by the self-contained codecs whose records have one size per dimension
// (fp32, fp16, int8, int4, int4h, int2h): each supplies its kernels through `FixedSizeKernels`, and
// `FixedSizeRowCodec` turns them into a registered codec.

/// The kernels of a self-contained, fixed-size codec, as plain function values made in the
/// codec's own (non-generic) file: calls through them are direct, specialised code, which the
/// per-run calls of lookups and embedding bags need.
struct FixedSizeKernels: Sendable {
    let tag: UInt8
    let name: String
    let summary: String
    /// The first format version with this tag (FORMAT.md).
    var formatVersion: UInt32 = 1
    let payloadSize: @Sendable (_ dimension: Int) -> Int
    let encode: @Sendable (_ row: UnsafeBufferPointer<Float>, _ payload: UnsafeMutableRawBufferPointer) throws(CodecError) -> Void
    /// Refuses a row the codec cannot hold; nil for the codecs that hold every finite row (a
    /// load then skips its pass of checks over the rows).
    var check: (@Sendable (_ row: UnsafeBufferPointer<Float>) throws(CodecError) -> Void)?
    /// Decodes `count` payloads of `dimension` values into consecutive rows at `out`; false when
    /// one of them would decode to a non-finite value (the rows are then unspecified).
    let decodeRows: @Sendable (_ payloads: UnsafePointer<UnsafeRawPointer?>, _ count: Int, _ dimension: Int,
                               _ out: UnsafeMutablePointer<Float>) -> Bool
    /// `acc[i] + weight × x[i]` in one pass; false as for `decodeRows` (`acc` then unspecified).
    let accumulate: @Sendable (_ payload: UnsafeRawPointer, _ dimension: Int, _ weight: Float, _ acc: UnsafeMutablePointer<Float>) -> Bool
    /// Decodes one payload without any check (to name the value that made a decode fail).
    let decode: @Sendable (_ payload: UnsafeRawBufferPointer, _ row: UnsafeMutableBufferPointer<Float>) -> Void
    /// The payload layout `emb_pool_bags` adds (an `EMB_ROW_KIND_` value): the same values as
    /// `accumulate`, refused in the same cases.
    let pooledRowKind: Int
}

/// A registered codec made from `FixedSizeKernels`.
struct FixedSizeRowCodec: RowCodec {
    let kernels: FixedSizeKernels
    var tag: UInt8 { kernels.tag }
    var name: String { kernels.name }
    var spelling: String { kernels.name }
    var canStoreBucketRows: Bool { true }
    var formatVersion: UInt32 { kernels.formatVersion }
    var pooledRowKind: UInt8 { UInt8(kernels.pooledRowKind) }

    /// The codec value of this codec (it takes no arguments).
    var codec: Codec { Codec(tag: kernels.tag, description: kernels.name) }

    func forms(dimension: Int) -> [CodecForm] {
        [CodecForm(codec: name, bytesPerRow: Double(1 + kernels.payloadSize(dimension)), summary: kernels.summary)]
    }

    func parse(_ parts: [Substring]) throws(CodecError) -> Codec? {
        guard parts.first == Substring(name) else { return nil }
        guard parts.count == 1 else { throw .invalidParameter("codec '\(parts.joined(separator: ":"))': \(name) takes no arguments") }
        return codec
    }

    func makeDecoder(dimension: Int) -> any RowDecoder { FixedSizeDecoder(kernels, dimension: dimension) }

    func planLoad(_ codec: Codec, rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int, options: FitOptions) throws -> LoadPlan {
        var plan = LoadPlan.plain(FixedSizeEncoder(kernels, dimension: dimension))
        if kernels.check == nil { plan.checkRow = nil }   // every finite row fits: no pass over the rows
        return plan
    }

    func putEncoder(_ codec: Codec, table: any CodecTableState) throws -> any RowEncoder {
        FixedSizeEncoder(kernels, dimension: table.dimension)
    }
}

final class FixedSizeEncoder: RowEncoder {
    let kernels: FixedSizeKernels
    let maximumRecordSize: Int

    init(_ kernels: FixedSizeKernels, dimension: Int) {
        self.kernels = kernels
        maximumRecordSize = 1 + kernels.payloadSize(dimension)
    }

    func check(_ row: UnsafeBufferPointer<Float>) throws(CodecError) { try kernels.check?(row) }

    func encode(_ row: UnsafeBufferPointer<Float>, index: Int?, into record: UnsafeMutableRawBufferPointer) throws(CodecError) -> Int {
        record.storeBytes(of: kernels.tag, toByteOffset: 0, as: UInt8.self)
        try kernels.encode(row, UnsafeMutableRawBufferPointer(rebasing: record[1..<maximumRecordSize]))
        return maximumRecordSize
    }
}

final class FixedSizeDecoder: RowDecoder {
    let kernels: FixedSizeKernels
    let dimension: Int
    let recordSize: Int
    /// Payload pointers of one run, grown to the longest run seen.
    private var payloads = UnsafeMutablePointer<UnsafeRawPointer?>.allocate(capacity: 8)
    private var capacity = 8

    init(_ kernels: FixedSizeKernels, dimension: Int) {
        self.kernels = kernels
        self.dimension = dimension
        recordSize = 1 + kernels.payloadSize(dimension)
    }

    deinit { payloads.deallocate() }

    func decode<P: CodecParameterSource>(_ records: UnsafePointer<UnsafeRawBufferPointer>, count: Int,
                                         into out: UnsafeMutablePointer<Float>, parameters: P) -> Int {
        if capacity < count {
            payloads.deallocate()
            capacity = max(count, 2 * capacity)
            payloads = .allocate(capacity: capacity)
        }
        for i in 0..<count {
            let record = records[i]
            guard record.count == recordSize else { return decodeOneByOne(records, count: i, into: out) ?? i }
            payloads[i] = UnsafeRawPointer(record.baseAddress! + 1)   // non-nil: recordSize ≥ 2
        }
        if kernels.decodeRows(payloads, count, dimension, out) { return count }
        return decodeOneByOne(records, count: count, into: out) ?? count
    }

    /// Decodes the first `count` records one at a time; the index of the first that fails, or
    /// nil when none does.
    private func decodeOneByOne(_ records: UnsafePointer<UnsafeRawBufferPointer>, count: Int, into out: UnsafeMutablePointer<Float>) -> Int? {
        for i in 0..<count {
            payloads[0] = UnsafeRawPointer(records[i].baseAddress! + 1)
            if !kernels.decodeRows(payloads, 1, dimension, out + i * dimension) { return i }
        }
        return nil
    }

    func accumulate<P: CodecParameterSource>(_ records: UnsafePointer<UnsafeRawBufferPointer>, weights: UnsafePointer<Float>?,
                                             count: Int, into acc: UnsafeMutablePointer<Float>, parameters: P) -> Int {
        for r in 0..<count {
            let record = records[r]
            guard record.count == recordSize,
                  kernels.accumulate(record.baseAddress! + 1, dimension, weights?[r] ?? 1, acc) else { return r }
        }
        return count
    }

    func problem<P: CodecParameterSource>(with record: UnsafeRawBufferPointer, parameters: P) -> String {
        let payload = UnsafeRawBufferPointer(rebasing: record[1...])
        let expected = recordSize - 1
        guard payload.count == expected else {
            return "\(kernels.name) payload has \(payload.count) bytes, expected \(expected) for dimension \(dimension)"
                + (payload.count < expected ? " (truncated)" : "")
        }
        var row = [Float](repeating: 0, count: dimension)
        row.withUnsafeMutableBufferPointer { kernels.decode(payload, $0) }
        return RowDecoding.nonFiniteProblem(row) ?? "\(kernels.name) record decodes to a non-finite value"
    }
}

/// Helpers every decoder uses to check and describe decoded rows.
public enum RowDecoding {
    /// Names the first non-finite value of `row`, nil when every value is finite.
    public static func nonFiniteProblem(_ row: some Collection<Float>) -> String? {
        for (column, value) in row.enumerated() where !value.isFinite {
            return "decodes to the non-finite value \(value) at column \(column)"
        }
        return nil
    }

    /// True when the `count` floats at `row` are all finite (one pass, no early exit, vectorises).
    @inline(__always)
    public static func allFinite(_ row: UnsafePointer<Float>, count: Int) -> Bool {
        var largest: Float = 0
        var nan = false
        for i in 0..<count {
            let magnitude = row[i].magnitude
            largest = max(largest, magnitude)
            nan = nan || magnitude != magnitude
        }
        return !nan && largest <= .greatestFiniteMagnitude
    }

    /// Adds `weight × row` to `acc` (the float operations of decoding, then adding).
    @inline(__always)
    public static func add(_ row: UnsafePointer<Float>, weight: Float, into acc: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { acc[i] = acc[i] + weight * row[i] }
    }
}
