// `bucket` and `bucket+scale` as registered codecs (FORMAT.md, tags 6 and 7): a row that points
// at one of the table's shared bucket rows, optionally with a per-row scale.

extension BucketCodec {
    static let tag: UInt8 = 6
    static let scaledTag: UInt8 = 7
    /// The registered codecs.
    public static let descriptor: any RowCodec = BucketRowCodec(scaled: false)
    public static let scaledDescriptor: any RowCodec = BucketRowCodec(scaled: true)

    /// The record of a row pointing at bucket row `bucket`, scaled by `scale` when given.
    public static func record(bucket: UInt32, scale: Float?) throws(CodecError) -> [UInt8] {
        if let scale, !scale.isFinite { throw .invalidParameter("bucket scale must be finite, got \(scale)") }
        var record: [UInt8] = [scale == nil ? tag : scaledTag]
        appendLE(bucket, to: &record)
        if let scale { appendLE(scale.bitPattern, to: &record) }
        return record
    }
}

extension Codec {
    /// A pointer to the nearest of the table's bucket rows (for puts into a table that has them).
    public static let bucket = Codec(tag: BucketCodec.tag, description: "bucket")
    /// A pointer to a bucket row with a least-squares per-row scale (for puts).
    public static let scaledBucket = Codec(tag: BucketCodec.scaledTag, description: "bucket:scaled")
    /// A load that fits `count` bucket rows with k-means and points every row at the nearest.
    public static func bucket(count: Int, scaled: Bool) -> Codec {
        Codec(tag: scaled ? BucketCodec.scaledTag : BucketCodec.tag,
              description: scaled ? "bucket:\(count):scaled" : "bucket:\(count)", arguments: [Double(count)])
    }
}

struct BucketRowCodec: RowCodec {
    let scaled: Bool
    var tag: UInt8 { scaled ? BucketCodec.scaledTag : BucketCodec.tag }
    var name: String { scaled ? "bucket+scale" : "bucket" }
    var spelling: String { scaled ? "bucket:B:scaled" : "bucket:B" }
    var canStoreBucketRows: Bool { false }

    func forms(dimension: Int) -> [CodecForm] {
        [256, 1024, 4096].map { count in
            CodecForm(codec: Codec.bucket(count: count, scaled: scaled).description,
                      bytesPerRow: Double(1 + (scaled ? BucketCodec.scaledPayloadSize : BucketCodec.payloadSize)),
                      summary: "pointer to the nearest of \(count) k-means bucket rows" + (scaled ? ", with an f32 scale" : ""))
        }
    }

    func parse(_ parts: [Substring]) throws(CodecError) -> Codec? {
        guard parts.first == "bucket", (parts.count == 3 && parts[2] == "scaled") == scaled else { return nil }
        let text = parts.joined(separator: ":")
        guard parts.count == (scaled ? 3 : 2) else { throw .invalidParameter("codec '\(text)': expected bucket:B or bucket:B:scaled") }
        return .bucket(count: try RowCodecs.positiveInteger(parts[1], of: text), scaled: scaled)
    }

    func makeDecoder(dimension: Int) -> any RowDecoder { BucketDecoder(dimension: dimension, scaled: scaled) }

    func planLoad(_ codec: Codec, rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int, options: FitOptions) throws -> LoadPlan {
        guard let requested = codec.arguments.first.map(Int.init) else {
            throw CodecError.invalidParameter("a load with bucket rows needs their count: bucket:B or bucket:B:scaled")
        }
        guard options.bucketCodec.rowCodec.canStoreBucketRows else {
            throw CodecError.invalidParameter("bucket rows must use a codec without table parameters (\(RowCodecs.bucketRowCodecNames)), not \(options.bucketCodec)")
        }
        let bucketCount = max(1, min(requested, options.tableRows ?? count))
        // At least one sample row a bucket (the bucket rows themselves take as much).
        let limit = max(RowSampling.limit(options.sampleLimit, dimension: dimension), bucketCount)
        let codebook = try RowSampling.withSample(rows, count: count, dimension: dimension, limit: limit) { sample, sampleCount in
            try KMeansCodebook.fit(rows: sample, count: sampleCount, dimension: dimension, buckets: bucketCount,
                                   iterations: options.kMeansIterations)
        }
        let scaled = scaled, assignAhead = options.fitRowsAreLoadRows
        var plan = LoadPlan { _, bucketIDs, storedRows in
            // Assign against the bucket rows as stored, so a lossy bucket codec is accounted for.
            let stored = try KMeansCodebook(dimension: dimension, count: codebook.count, centroids: storedRows)
            let encoder = BucketEncoder(scaled: scaled, ids: Array(bucketIDs!), codebook: stored)
            // Only when the rows fitted are the rows loaded: `encode` finds a row's bucket by its
            // index among them. (Before, a sample of a table above the sample limit was assigned
            // ahead too, and its first rows got the buckets of the sample's rows.)
            if assignAhead { encoder.assignAll(rows, count: count) }
            return encoder
        }
        plan.bucketRows = codebook.centroids
        plan.bucketCodec = options.bucketCodec
        return plan
    }

    func putEncoder(_ codec: Codec, table: any CodecTableState) throws -> any RowEncoder {
        let ids = try table.bucketIDs()
        guard !ids.isEmpty else {
            throw CodecError.missingParameters("bucket rows need shared bucket rows; add them with WriteBatch.addBucketRows or load with codec bucket:B")
        }
        let d = table.dimension
        let decoder = BucketDecoder(dimension: d, scaled: false)
        var centroids = [Float](repeating: 0, count: ids.count * d)
        for (i, id) in ids.enumerated() {
            let decoded = try centroids.withUnsafeMutableBufferPointer { try decoder.bucketRow(id, table, into: $0.baseAddress! + i * d) }
            guard decoded else {
                throw CodecError.invalidParameter("bucket row \(id) is damaged: \(decoder.bucketProblem(id, table))")
            }
        }
        return BucketEncoder(scaled: scaled, ids: ids, codebook: try KMeansCodebook(dimension: d, count: ids.count, centroids: centroids))
    }
}

/// Points rows at the nearest bucket row; a load assigns all its rows at once (blocked, on
/// every core) before encoding them one by one.
final class BucketEncoder: RowEncoder {
    let scaled: Bool
    let ids: [UInt32]
    let codebook: KMeansCodebook
    private var assigned: [UInt32] = []
    private var scales: [Float] = []
    var maximumRecordSize: Int { 1 + (scaled ? BucketCodec.scaledPayloadSize : BucketCodec.payloadSize) }

    init(scaled: Bool, ids: [UInt32], codebook: KMeansCodebook) {
        self.scaled = scaled
        self.ids = ids
        self.codebook = codebook
    }

    func assignAll(_ rows: UnsafeBufferPointer<Float>, count: Int) {
        (assigned, scales) = assign(rows, count: count)
    }

    private func assign(_ rows: UnsafeBufferPointer<Float>, count: Int) -> ([UInt32], [Float]) {
        var assigned = [UInt32](repeating: 0, count: count)
        var scales = [Float](repeating: 1, count: scaled ? count : 0)
        assigned.withUnsafeMutableBufferPointer { buffer in
            if scaled {
                scales.withUnsafeMutableBufferPointer { codebook.assignScaled(rows: rows, count: count, into: buffer, scales: $0) }
            } else {
                codebook.assign(rows: rows, count: count, into: buffer)
            }
        }
        return (assigned, scales)
    }

    func encode(_ row: UnsafeBufferPointer<Float>, index: Int?, into record: UnsafeMutableRawBufferPointer) throws(CodecError) -> Int {
        let bucket: UInt32, scale: Float
        if let index, index < assigned.count {
            bucket = assigned[index]
            scale = scaled ? scales[index] : 1
        } else {
            let (one, oneScale) = assign(row, count: 1)
            bucket = one[0]
            scale = scaled ? oneScale[0] : 1
        }
        let payload = UnsafeMutableRawBufferPointer(rebasing: record[1..<maximumRecordSize])
        if scaled {
            record[0] = BucketCodec.scaledTag
            try BucketCodec.encodeScaled(bucket: ids[Int(bucket)], scale: scale, into: payload)
        } else {
            record[0] = BucketCodec.tag
            try BucketCodec.encode(bucket: ids[Int(bucket)], into: payload)
        }
        return maximumRecordSize
    }
}

/// Decodes bucket records: the bucket row (decoded once, then cached: bucket rows are immutable)
/// times the row's scale.
final class BucketDecoder: AccumulatingByDecoding {
    let dimension: Int
    let scaled: Bool
    /// Decoded bucket rows, up to `cacheLimit` floats in all.
    private var cache: [UInt32: [Float]] = [:]
    private var cachedFloats = 0
    static let cacheLimit = 1 << 24
    private var recordSize: Int { 1 + (scaled ? BucketCodec.scaledPayloadSize : BucketCodec.payloadSize) }
    /// One decoded row, for embedding bags.
    var scratch: [Float]

    init(dimension: Int, scaled: Bool) {
        self.dimension = dimension
        self.scaled = scaled
        scratch = [Float](repeating: 0, count: dimension)
    }

    /// Decodes bucket row `id` into `row`; false when it is missing or damaged.
    func bucketRow<P: CodecParameterSource>(_ id: UInt32, _ parameters: P, into row: UnsafeMutablePointer<Float>) throws -> Bool {
        if let cached = cache[id] {
            cached.withUnsafeBufferPointer { row.update(from: $0.baseAddress!, count: dimension) }
            return true
        }
        guard var record = try parameters.bucketRecord(id), let tag = record.first,
              let codec = RowCodecs.codec(tag: tag), codec.canStoreBucketRows,
              try codec.makeDecoder(dimension: dimension).decode(&record, count: 1, into: row, parameters: parameters) == 1
        else { return false }
        if cachedFloats + dimension <= Self.cacheLimit {
            cache[id] = Array(UnsafeBufferPointer(start: row, count: dimension))
            cachedFloats += dimension
        }
        return true
    }

    /// Why bucket row `id` cannot be decoded.
    func bucketProblem<P: CodecParameterSource>(_ id: UInt32, _ parameters: P) -> String {
        let stored: UnsafeRawBufferPointer?
        do {
            stored = try parameters.bucketRecord(id)
        } catch {
            return "its bucket \(id) cannot be read: \(error)"
        }
        guard let stored else { return "points at bucket \(id), which does not exist" }
        guard let tag = stored.first else { return "its bucket \(id) is damaged: the record is empty" }
        guard let codec = RowCodecs.codec(tag: tag) else { return "its bucket \(id) is damaged: unknown codec tag \(tag)" }
        guard codec.canStoreBucketRows else { return "its bucket \(id) has codec \(codec.name), which bucket rows cannot use" }
        return "its bucket \(id) is damaged: " + codec.makeDecoder(dimension: dimension).problem(with: stored, parameters: parameters)
    }

    func decode<P: CodecParameterSource>(_ records: UnsafePointer<UnsafeRawBufferPointer>, count: Int,
                                         into out: UnsafeMutablePointer<Float>, parameters: P) throws -> Int {
        for i in 0..<count {
            let record = records[i]
            let row = out + i * dimension
            guard record.count == recordSize else { return i }
            let payload = UnsafeRawBufferPointer(rebasing: record[1...])
            guard try bucketRow(BucketCodec.bucketID(payload), parameters, into: row) else { return i }
            if scaled {
                let scale = BucketCodec.scale(payload)
                for j in 0..<dimension { row[j] *= scale }
                guard RowDecoding.allFinite(row, count: dimension) else { return i }
            }
        }
        return count
    }

    func problem<P: CodecParameterSource>(with record: UnsafeRawBufferPointer, parameters: P) -> String {
        let expected = recordSize - 1
        guard record.count == recordSize else {
            return "\(scaled ? "bucket+scale" : "bucket") payload has \(record.count - 1) bytes, expected \(expected)"
                + (record.count - 1 < expected ? " (truncated)" : "")
        }
        let payload = UnsafeRawBufferPointer(rebasing: record[1...])
        let id = BucketCodec.bucketID(payload)
        var row = [Float](repeating: 0, count: dimension)
        let decoded = (try? row.withUnsafeMutableBufferPointer { try bucketRow(id, parameters, into: $0.baseAddress!) }) ?? false
        guard decoded else { return bucketProblem(id, parameters) }
        if scaled {
            let scale = BucketCodec.scale(payload)
            guard scale.isFinite else { return "bucket scale is \(scale)" }
            for j in 0..<dimension { row[j] *= scale }
        }
        return RowDecoding.nonFiniteProblem(row) ?? "bucket record cannot be decoded"
    }
}
