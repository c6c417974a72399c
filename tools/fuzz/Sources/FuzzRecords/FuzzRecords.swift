// Fuzz target: row records of every codec, decoded as a table's readers decode them, with
// their parameter records (PCA bases, tc bases and models) and bucket rows; and the metadata
// records (table schema, format header, load note).
//
// Input: byte 0 picks the dimension (`dimensions`); then chunks (FuzzSupport.Chunks): chunk 0
// is parameter record 100 of the table and is also parsed as every kind of parameter and
// metadata record, chunk 1 is bucket row 100, chunks 2… are row records. The table's other
// parameters are valid ones fitted at d = 16: PCA basis 1, tc basis 2, tc model 3 (its basis 2),
// bucket rows 0… Records are decoded grouped as a lookup groups them (by tag, and by model
// for tc), one at a time, and accumulated into a bag. A decoder must refuse bad bytes (return
// the count it decoded, explain the rest with `problem`), never crash, and every value it
// decodes must be finite (FORMAT.md, "Row records").
@testable import EmbeddingCodecs
@testable import EmbeddingStore
import Foundation
import FuzzSupport

let dimensions = [16, 1, 2, 3, 7, 8, 9, 15, 17, 31, 32, 33, 64, 100]
let fuzzedID: UInt32 = 100

/// Valid parameters and records of a table of dimension `dimension`, fitted on seeded rows.
final class Fixture: @unchecked Sendable {   // built once, then only read
    let dimension: Int
    var parameters: [UInt32: [UInt8]] = [:]
    var buckets: [UInt32: [UInt8]] = [:]
    /// Per codec spelling, records of a few rows.
    var records: [(codec: String, records: [[UInt8]])] = []
    private var nextParameter: UInt32 = 1
    private var nextBucket: UInt32 = 0

    init(dimension d: Int, codecs: [String]) {
        dimension = d
        let count = 400
        var state: UInt64 = 12345
        let rows = (0..<count * d).map { i -> Float in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let u = Float(state >> 40) / Float(1 << 24) - 0.5
            return u * Float(1 + (i % d)) / Float(d)   // a decaying spectrum, so PCA and tc have structure
        }
        for spelling in codecs {
            do {
                let codec = try Codec(parsing: spelling)
                var options = FitOptions()
                options.kMeansIterations = 4
                let plan = try rows.withUnsafeBufferPointer {
                    try codec.rowCodec.planLoad(codec, rows: $0, count: count, dimension: d, options: options)
                }
                var ids: [UInt32] = []
                for make in plan.parameterRecords {
                    let record = try make(ids)
                    parameters[nextParameter] = record
                    ids.append(nextParameter)
                    nextParameter += 1
                }
                var bucketIDs: Range<UInt32>?
                var storedBuckets: [Float] = []
                if let bucketCodec = plan.bucketCodec, !plan.bucketRows.isEmpty {
                    let bucketPlan = try plan.bucketRows.withUnsafeBufferPointer {
                        try bucketCodec.rowCodec.planLoad(bucketCodec, rows: $0, count: plan.bucketRows.count / d, dimension: d, options: options)
                    }
                    let encoder = try bucketPlan.makeEncoder([], nil, [])
                    let first = nextBucket
                    for b in 0..<plan.bucketRows.count / d {
                        let record = try Self.encode(encoder, Array(plan.bucketRows[b * d..<(b + 1) * d]))
                        buckets[nextBucket] = record
                        nextBucket += 1
                    }
                    bucketIDs = first..<nextBucket
                    storedBuckets = plan.bucketRows
                }
                let encoder = try plan.makeEncoder(ids, bucketIDs, storedBuckets)
                let encoded = try (0..<6).map { try Self.encode(encoder, Array(rows[$0 * d..<($0 + 1) * d]), index: $0) }
                records.append((spelling, encoded))
                // The same rows pointing at the fuzzed parameter record (chunk 0) instead.
                if let last = ids.last {
                    let redirected = try plan.makeEncoder(ids.dropLast() + [fuzzedID], bucketIDs, storedBuckets)
                    let encoded = try (0..<6).map { try Self.encode(redirected, Array(rows[$0 * d..<($0 + 1) * d]), index: $0) }
                    records.append((spelling + "@fuzzed", encoded))
                    _ = last
                }
            } catch {
                fatalError("fixture for \(spelling) at d = \(d): \(error)")
            }
        }
    }

    static func encode(_ encoder: any RowEncoder, _ row: [Float], index: Int? = nil) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: encoder.maximumRecordSize)
        let size = try row.withUnsafeBufferPointer { row in
            try out.withUnsafeMutableBytes { try encoder.encode(row, index: index, into: $0) }
        }
        return Array(out[0..<size])
    }
}

let fixedCodecs = ["fp32", "fp16", "int8", "int4", "int4h", "int2h"]
nonisolated(unsafe) let fixture = Fixture(dimension: 16, codecs: fixedCodecs + ["reduced:4", "bucket:4", "bucket:4:scaled", "tc:2"])

/// The table's parameters: the fixture's, copied into allocations of their exact size, and
/// the fuzzed ones (id 100).
struct Parameters: CodecParameterSource {
    let records: [UInt32: UnsafeRawBufferPointer]
    let buckets: [UInt32: UnsafeRawBufferPointer]
    func parameterRecord(_ id: UInt32) throws -> UnsafeRawBufferPointer? { records[id] }
    func bucketRecord(_ id: UInt32) throws -> UnsafeRawBufferPointer? { buckets[id] }
}

func exactCopies(_ values: [UInt32: [UInt8]]) -> [UInt32: UnsafeRawBufferPointer] {
    values.mapValues { bytes in
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        copy.copyBytes(from: bytes)
        return UnsafeRawBufferPointer(copy)
    }
}

nonisolated(unsafe) let fixtureParameters = exactCopies(fixture.parameters)
nonisolated(unsafe) let fixtureBuckets = exactCopies(fixture.buckets)

/// Decodes `records` (all of one codec) the ways a reader does; checks what it promises.
func decode(_ records: [UnsafeRawBufferPointer], tag: UInt8, dimension d: Int, parameters: Parameters) {
    guard let codec = RowCodecs.codec(tag: tag) else { return }
    let decoder = codec.makeDecoder(dimension: d)
    let out = UnsafeMutableBufferPointer<Float>.allocate(capacity: records.count * d)
    defer { out.deallocate() }
    records.withUnsafeBufferPointer { records in
        let decoded: Int
        do {
            decoded = try decoder.decode(records.baseAddress!, count: records.count, into: out.baseAddress!, parameters: parameters)
        } catch {
            return   // only what the parameter source throws, and it throws nothing
        }
        guard decoded >= 0, decoded <= records.count else { promiseBroken("\(codec.name) decoded \(decoded) of \(records.count)") }
        for i in 0..<decoded * d where !out[i].isFinite {
            promiseBroken("\(codec.name) decoded the non-finite value \(out[i]) in row \(i / d) at d = \(d)")
        }
        if decoded < records.count { _ = decoder.problem(with: records[decoded], parameters: parameters) }
        let weights = (0..<records.count).map { Float($0) - 1.5 }
        let accumulator = UnsafeMutableBufferPointer<Float>.allocate(capacity: d)
        defer { accumulator.deallocate() }
        accumulator.initialize(repeating: 0)
        _ = try? weights.withUnsafeBufferPointer {
            try decoder.accumulate(records.baseAddress!, weights: $0.baseAddress!, count: records.count, into: accumulator.baseAddress!,
                                   parameters: parameters)
        }
        _ = try? decoder.accumulate(records.baseAddress!, weights: nil, count: records.count, into: accumulator.baseAddress!,
                                    parameters: parameters)
    }
    _ = codec.parameterID(of: records[0])
}

/// Parses bytes as every kind of parameter and metadata record.
func parseAsRecords(_ bytes: UnsafeRawBufferPointer, parameters: Parameters) {
    _ = try? PCABasis(record: bytes)
    _ = try? TransformBasis(record: bytes)
    _ = try? TransformModel(record: bytes) { id in
        guard let record = try parameters.parameterRecord(id == fuzzedID ? 2 : id) else { throw CodecError.invalidParameter("no basis \(id)") }
        return try TransformBasis(record: record)
    }
    _ = TypedParameterKind.of(bytes)
    for codec in RowCodecs.all { _ = codec.formName(parameter: bytes) }
    _ = try? TableSchema.decode(bytes, table: "fuzz")
    _ = try? StoreFormat.decodeHeader(bytes, path: "fuzz")
    _ = LoadNote.decode(bytes)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    guard size >= 1 else { return 0 }
    let d = dimensions[Int(data[0]) % dimensions.count]
    let chunks = Chunks(UnsafeRawBufferPointer(start: data + 1, count: size - 1), limit: 34)
    var records = fixtureParameters, buckets = fixtureBuckets
    if chunks.count > 0 { records[fuzzedID] = chunks[0] }
    if chunks.count > 1 { buckets[fuzzedID] = chunks[1] }
    let parameters = Parameters(records: records, buckets: buckets)
    if chunks.count > 0 { parseAsRecords(chunks[0], parameters: parameters) }
    guard chunks.count > 2 else { return 0 }
    let rows = (2..<chunks.count).map { chunks[$0] }
    // As a lookup groups them: by tag, then (tc) by the parameter record they name.
    var groups: [UInt64: [UnsafeRawBufferPointer]] = [:]
    for record in rows where !record.isEmpty {
        let tag = record[0]
        groups[UInt64(tag) << 32 | UInt64(RowCodecs.codec(tag: tag)?.parameterID(of: record) ?? 0), default: []].append(record)
    }
    for (key, group) in groups.sorted(by: { $0.key < $1.key }) {
        decode(group, tag: UInt8(key >> 32), dimension: d, parameters: parameters)
        if group.count > 1 {
            for record in group { decode([record], tag: UInt8(key >> 32), dimension: d, parameters: parameters) }
        }
    }
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked {
        var seeds: [(String, [UInt8])] = []
        func seed(_ label: String, dimension: Int, parameter: [UInt8], bucket: [UInt8], records: [[UInt8]]) {
            seeds.append((label, [UInt8(dimensions.firstIndex(of: dimension)!)] + Chunks.encode([parameter, bucket] + records)))
        }
        let model = fixture.parameters[3]!, basis = fixture.parameters[2]!, pca = fixture.parameters[1]!
        for (codec, records) in fixture.records {
            let name = codec.replacingOccurrences(of: ":", with: "_")
            if codec == "tc:2@fuzzed" {
                seed(name, dimension: 16, parameter: model, bucket: fixture.buckets[0]!, records: records)
            } else if codec == "reduced:4@fuzzed" {
                seed(name, dimension: 16, parameter: pca, bucket: fixture.buckets[0]!, records: records)
            } else if codec.hasPrefix("bucket") {
                // Records pointing at bucket row 100 (the fuzzed one, here a copy of row 0).
                let redirected = records.map { record -> [UInt8] in
                    var record = record
                    record.replaceSubrange(1..<5, with: withUnsafeBytes(of: fuzzedID.littleEndian) { Array($0) })
                    return record
                }
                seed(name, dimension: 16, parameter: basis, bucket: fixture.buckets[0]!, records: records + redirected)
            } else if !codec.hasSuffix("@fuzzed") {
                seed(name, dimension: 16, parameter: basis, bucket: fixture.buckets[0]!, records: records)
            }
        }
        // Fixed-size codecs at awkward widths (odd nibble and crumb counts).
        for d in [1, 3, 17, 33] {
            let odd = Fixture(dimension: d, codecs: fixedCodecs)
            seed("fixed_d\(d)", dimension: d, parameter: TableSchema(tableID: 1, dimension: UInt32(d)).encode(),
                 bucket: [], records: odd.records.flatMap { $0.records.prefix(2) })
        }
        seed("format_header", dimension: 16, parameter: StoreFormat.encodeHeader(), bucket: [], records: [])
        seed("load_note", dimension: 16, parameter: Array(#"{"summary":{"policy":"int8","shares":[{"bytes":73,"codec":"int8","rows":1}]},"version":1}"#.utf8),
             bucket: [], records: [])
        return seeds
    }
    return 0
}

@_cdecl("FuzzRecords_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runFuzzer(argc, argv, fuzzOne)
}
