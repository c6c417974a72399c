/// `reduced(k)` rows: k little-endian float32 PCA coefficients, 4·k bytes, decoded to full width
/// on the table's `PCABasis` as x̂ = μ + Σ_{j<k} c_j v_j.
///
/// The coefficient count is the payload length / 4, so a table can mix rows of different k on
/// one basis (the mixed-dimension idea, post-training, with the optimal linear basis).
public enum ReducedDimensionCodec {
    /// Codec name used in errors.
    static let name = "reduced"

    /// Payload bytes for k coefficients: 4·k.
    @inlinable
    public static func payloadSize(k: Int) -> Int { 4 * k }

    /// Projects `row` onto the first `k` directions of `basis` and writes the coefficients.
    ///
    /// Coefficients are computed in Double from the centred row, then rounded once to Float.
    ///
    /// - Parameters:
    ///   - row: `basis.dimension` values.
    ///   - k: 1 ≤ k ≤ `basis.rank` and k < `basis.dimension` (at k = d, fp32 stores the row
    ///     exactly in the same bytes).
    ///   - payload: exactly `payloadSize(k: k)` bytes, any alignment.
    /// - Throws: `invalidParameter` for a bad k or row width, `badPayloadSize`, `nonFinite` for
    ///   NaN or infinity in the row, and `outOfRange` if the row is so large (~1e38) that a
    ///   coefficient or the decoded row would overflow Float. On a throw the payload's contents
    ///   are unspecified.
    public static func encode(
        _ row: UnsafeBufferPointer<Float>, basis: PCABasis, k: Int, into payload: UnsafeMutableRawBufferPointer
    ) throws(CodecError) {
        guard k >= 1, k <= basis.rank, k < basis.dimension else {
            throw .invalidParameter(
                "reduced(k) needs 1 ≤ k ≤ rank (\(basis.rank)) and k < dimension (\(basis.dimension)), got k = \(k)")
        }
        guard row.count == basis.dimension else {
            throw .invalidParameter("row has \(row.count) values but the PCA basis has dimension \(basis.dimension)")
        }
        try CodecChecks.requirePayloadSize(payload, expected: payloadSize(k: k), codec: name)
        try CodecChecks.requireFinite(row)

        let d = basis.dimension
        // Bounds every partial sum of the decoder: |x̂_i| ≤ |μ_i| + Σ|c_j| because |v_j[i]| ≤ 1.
        var magnitude = Double(basis.mean.lazy.map { abs($0) }.max() ?? 0)
        for j in 0..<k {
            var sums = (0.0, 0.0, 0.0, 0.0)
            basis.mean.withUnsafeBufferPointer { mean in
                basis.components.withUnsafeBufferPointer { components in
                    let v = j * d
                    var i = 0
                    // Four partial sums: independent add chains instead of one latency-bound one.
                    while i + 4 <= d {
                        sums.0 += Double(components[v + i]) * (Double(row[i]) - Double(mean[i]))
                        sums.1 += Double(components[v + i + 1]) * (Double(row[i + 1]) - Double(mean[i + 1]))
                        sums.2 += Double(components[v + i + 2]) * (Double(row[i + 2]) - Double(mean[i + 2]))
                        sums.3 += Double(components[v + i + 3]) * (Double(row[i + 3]) - Double(mean[i + 3]))
                        i += 4
                    }
                    while i < d {
                        sums.0 += Double(components[v + i]) * (Double(row[i]) - Double(mean[i]))
                        i += 1
                    }
                }
            }
            let coefficient = Float((sums.0 + sums.1) + (sums.2 + sums.3))
            magnitude += Double(abs(coefficient))
            guard coefficient.isFinite, magnitude <= Double(Float.greatestFiniteMagnitude) / 2 else {
                throw .outOfRange(codec: name, index: j, value: coefficient)
            }
            payload.storeBytes(of: coefficient.bitPattern.littleEndian, toByteOffset: 4 * j, as: UInt32.self)
        }
    }

    /// Decodes the `payload.count / 4` coefficients into the full-width `row` (the hot path).
    ///
    /// Sums in Float, four directions per pass over the row; matches `decodeReference` to within
    /// 1e-5 of the magnitude of the summed terms, |μ_i| + Σ_j |c_j·v_j[i]|, per element (tests
    /// measure at most 6e-7, at d = 1024).
    ///
    /// - Precondition: `payload.count` is a multiple of 4 with `payload.count / 4 ≤ basis.rank`,
    ///   and `row.count == basis.dimension`; checked by debug `assert`s only, the store validates
    ///   records before decoding. The payload may have any alignment.
    public static func decode(_ payload: UnsafeRawBufferPointer, basis: PCABasis, into row: UnsafeMutableBufferPointer<Float>) {
        let k = payload.count / 4
        let d = basis.dimension
        assert(payload.count % 4 == 0 && k <= basis.rank, "reduced payload does not fit the PCA basis")
        assert(row.count == d, "row width does not match the PCA basis")
        guard let output = row.baseAddress else { return }
        basis.mean.withUnsafeBufferPointer { meanBuffer in
            basis.components.withUnsafeBufferPointer { componentBuffer in
                // Non-nil: a basis has dimension ≥ 1 and rank ≥ 1.
                let mean = meanBuffer.baseAddress!
                let components = componentBuffer.baseAddress!
                for i in 0..<d { output[i] = mean[i] }
                var j = 0
                while j + 4 <= k {
                    let c0 = coefficient(payload, j), c1 = coefficient(payload, j + 1)
                    let c2 = coefficient(payload, j + 2), c3 = coefficient(payload, j + 3)
                    let v0 = components + j * d
                    let v1 = v0 + d, v2 = v1 + d, v3 = v2 + d
                    for i in 0..<d {
                        output[i] += (c0 * v0[i] + c1 * v1[i]) + (c2 * v2[i] + c3 * v3[i])
                    }
                    j += 4
                }
                // The last 1–3 directions in one more pass, not one pass each.
                let v0 = components + j * d
                let v1 = v0 + d, v2 = v1 + d
                switch k - j {
                case 3:
                    let c0 = coefficient(payload, j), c1 = coefficient(payload, j + 1), c2 = coefficient(payload, j + 2)
                    for i in 0..<d { output[i] += (c0 * v0[i] + c1 * v1[i]) + c2 * v2[i] }
                case 2:
                    let c0 = coefficient(payload, j), c1 = coefficient(payload, j + 1)
                    for i in 0..<d { output[i] += c0 * v0[i] + c1 * v1[i] }
                case 1:
                    let c0 = coefficient(payload, j)
                    for i in 0..<d { output[i] += c0 * v0[i] }
                default:
                    break
                }
            }
        }
    }

    /// Scalar reference twin of `decode`: one coefficient at a time, each element summed in
    /// Double and rounded once, so it is also the accuracy yardstick for the fast path.
    public static func decodeReference(_ payload: UnsafeRawBufferPointer, basis: PCABasis, into row: UnsafeMutableBufferPointer<Float>) {
        let k = payload.count / 4
        let d = basis.dimension
        assert(payload.count % 4 == 0 && k <= basis.rank, "reduced payload does not fit the PCA basis")
        assert(row.count == d, "row width does not match the PCA basis")
        for i in 0..<d {
            var sum = Double(basis.mean[i])
            for j in 0..<k {
                sum += Double(coefficient(payload, j)) * Double(basis.components[j * d + i])
            }
            row[i] = Float(sum)
        }
    }

    /// Coefficient `j` of a payload: an unaligned little-endian load (LMDB values are only 2-byte
    /// aligned).
    @inline(__always)
    static func coefficient(_ payload: UnsafeRawBufferPointer, _ j: Int) -> Float {
        Float(bitPattern: UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: 4 * j, as: UInt32.self)))
    }
}
