/// A table's parameter records and bucket rows held in memory: encoding and decoding through
/// the codec descriptors without a store (benchmarks, tests, round trips). It stores what a
/// `LoadPlan` asks for the way a store does, with ids counted the same way.
public final class InMemoryCodecTable: CodecTableState {
    public let dimension: Int
    public private(set) var currentBasisID: UInt32 = 0
    /// Records in allocations of their own, so the buffers handed out stay put.
    private var parameters: [UInt32: UnsafeMutableRawBufferPointer] = [:]
    private var buckets: [UInt32: UnsafeMutableRawBufferPointer] = [:]
    private var nextParameterID: UInt32 = 1
    private var nextBucketID: UInt32 = 0

    public init(dimension: Int) { self.dimension = dimension }

    deinit {
        for record in parameters.values { record.deallocate() }
        for record in buckets.values { record.deallocate() }
    }

    public func parameterRecord(_ id: UInt32) -> UnsafeRawBufferPointer? { parameters[id].map { UnsafeRawBufferPointer($0) } }
    public func bucketRecord(_ id: UInt32) -> UnsafeRawBufferPointer? { buckets[id].map { UnsafeRawBufferPointer($0) } }
    public func parameterIDs() -> [UInt32] { parameters.keys.sorted() }
    public func bucketIDs() -> [UInt32] { buckets.keys.sorted() }

    private static func copy(_ bytes: [UInt8]) -> UnsafeMutableRawBufferPointer {
        let stored = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
        bytes.withUnsafeBytes { stored.copyMemory(from: $0) }
        return UnsafeMutableRawBufferPointer(rebasing: stored[0..<bytes.count])
    }

    /// Stores a parameter record under the next id and returns the id.
    @discardableResult
    public func addParameterRecord(_ bytes: [UInt8], makeCurrentBasis: Bool = false) -> UInt32 {
        let id = nextParameterID
        nextParameterID += 1
        parameters[id] = Self.copy(bytes)
        if makeCurrentBasis { currentBasisID = id }
        return id
    }

    /// Stores `rows` (row-major) as bucket rows encoded with `codec` and returns their ids.
    public func addBucketRows(_ rows: [Float], codec: Codec) throws -> Range<UInt32> {
        guard codec.rowCodec.canStoreBucketRows else {
            throw CodecError.invalidParameter("bucket rows cannot use \(codec)")
        }
        let encoder = try codec.rowCodec.putEncoder(codec, table: self)
        let first = nextBucketID
        var record = [UInt8](repeating: 0, count: encoder.maximumRecordSize)
        try rows.withUnsafeBufferPointer { rows in
            for i in 0..<rows.count / dimension {
                let row = UnsafeBufferPointer(rebasing: rows[i * dimension..<(i + 1) * dimension])
                try encoder.check(row)
                let size = try record.withUnsafeMutableBytes { try encoder.encode(row, index: nil, into: $0) }
                buckets[nextBucketID] = Self.copy(Array(record[0..<size]))
                nextBucketID += 1
            }
        }
        return first..<nextBucketID
    }

    /// Stores what `plan` asks for and returns its encoder.
    public func apply(_ plan: LoadPlan) throws -> any RowEncoder {
        var ids: [UInt32] = []
        for (index, record) in plan.parameterRecords.enumerated() {
            ids.append(addParameterRecord(try record(ids), makeCurrentBasis: plan.makesCurrentBasis && index == plan.parameterRecords.count - 1))
        }
        var bucketIDs: Range<UInt32>?
        var stored: [Float] = []
        if let codec = plan.bucketCodec, !plan.bucketRows.isEmpty {
            let range = try addBucketRows(plan.bucketRows, codec: codec)
            bucketIDs = range
            stored = [Float](repeating: 0, count: range.count * dimension)
            let decoder = codec.rowCodec.makeDecoder(dimension: dimension)
            try stored.withUnsafeMutableBufferPointer { out in
                for (i, id) in range.enumerated() {
                    var record = bucketRecord(id)!
                    guard try decoder.decode(&record, count: 1, into: out.baseAddress! + i * dimension, parameters: self) == 1 else {
                        throw CodecError.invalidParameter("bucket row \(id) does not decode")
                    }
                }
            }
        }
        return try plan.makeEncoder(ids, bucketIDs, stored)
    }
}
