// A PCA basis as a parameter record of a table (FORMAT.md, "PCA basis records"), and the
// bounds every basis fit respects.

extension PCABasis {
    /// Widest rows a basis is fitted for: the fit holds a d × d covariance in Double (32 MiB at
    /// 2048) and its eigensolver takes O(d³) time (about 90 s at 2048 on one core), so wider
    /// tables get an error naming the limit instead of an allocation of d² doubles.
    public static let maximumFitDimension = 2048

    /// Throws the error a fit at `dimension` gets when it is too wide.
    public static func checkFitDimension(_ dimension: Int, codec: String) throws(CodecError) {
        guard dimension > maximumFitDimension else { return }
        let gigabytes = Double(dimension) * Double(dimension) * 8 / 1e9
        throw .invalidParameter("\(codec) fits a PCA basis on a \(dimension) × \(dimension) covariance "
            + "(\(String(format: "%.1f", gigabytes)) GB and O(d³) time); embstore fits bases up to dimension "
            + "\(maximumFitDimension): use int8, int4 or fp16 for this table")
    }

    /// The basis as a parameter record: u32 dimension, u32 rank, f32 mean[d], f32 components[rank × d],
    /// f32 variances[rank], little-endian.
    public var record: [UInt8] {
        var writer = ByteWriter(capacity: 8 + 4 * (dimension + rank * dimension + rank))
        writer.append(UInt32(dimension))
        writer.append(UInt32(rank))
        writer.append(mean)
        writer.append(components)
        writer.append(variances)
        return writer.bytes
    }

    /// Reads a basis parameter record, checking its length and contents.
    public init(record bytes: UnsafeRawBufferPointer) throws(CodecError) {
        var reader = ByteReader(bytes)
        do {
            let d = Int(try reader.uint32("dimension"))
            let rank = Int(try reader.uint32("rank"))
            // d at most a table's widest row (FORMAT.md, "Table schema"), so that the length
            // below cannot overflow (a damaged record gave d = rank ≈ 2³²: a trap, found by fuzzing).
            guard d >= 1, d <= 1 << 20, rank >= 1, rank <= d else {
                throw CodecError.invalidParameter("basis has dimension \(d) and rank \(rank)")
            }
            guard bytes.count == 8 + 4 * (d + rank * d + rank) else {
                throw CodecError.invalidParameter("basis record has \(bytes.count) bytes, expected \(8 + 4 * (d + rank * d + rank)) for dimension \(d) and rank \(rank)")
            }
            let mean = try reader.floats(d, "mean")
            let components = try reader.floats(rank * d, "components")
            let variances = try reader.floats(rank, "variances")
            try self.init(dimension: d, rank: rank, mean: mean, components: components, variances: variances)
        } catch let error as CodecError {
            throw error
        } catch {
            throw .invalidParameter("basis record: \(error)")
        }
    }
}

/// Fits on a sample: at most `limit` rows taken at an even stride (all rows when fewer).
public enum RowSampling {
    /// Floats a fit's sample may copy at most: 256 MiB (32,768 rows at d = 2048).
    public static let maximumSampleFloats = 1 << 26

    /// `requested` rows, bounded so the sample stays within `maximumSampleFloats`.
    public static func limit(_ requested: Int, dimension: Int) -> Int {
        max(1, min(requested, maximumSampleFloats / max(dimension, 1)))
    }

    public static func withSample<R>(_ rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int, limit: Int,
                                     _ fit: (UnsafeBufferPointer<Float>, Int) throws -> R) throws -> R {
        guard count > limit, limit > 0 else { return try fit(rows, count) }
        var sample = [Float]()
        sample.reserveCapacity(limit * dimension)
        for j in 0..<limit {
            let i = Int((Double(j) * Double(count) / Double(limit)).rounded(.down))
            sample.append(contentsOf: rows[i * dimension..<(i + 1) * dimension])
        }
        return try sample.withUnsafeBufferPointer { try fit($0, limit) }
    }
}
