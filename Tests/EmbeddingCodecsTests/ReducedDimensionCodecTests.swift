import EmbeddingCodecs
import Testing

@Suite("reduced(k) codec")
struct ReducedDimensionCodecTests {
    /// An orthonormal basis without fitting (rotated unit vectors), so large d stays cheap in a
    /// debug build.
    private func syntheticBasis(dimension d: Int, rank: Int, seed: UInt64) throws -> PCABasis {
        var random = FitTestRandom(seed: seed)
        let rotation = FitTestRotation(dimension: d, random: &random)
        let mean = (0..<d).map { _ in Float(random.gaussian()) }
        var components = [Float]()
        components.reserveCapacity(rank * d)
        for j in 0..<rank {
            var unit = [Double](repeating: 0, count: d)
            unit[j] = 1
            rotation.apply(&unit)
            components += unit.map { Float($0) }
        }
        let variances = (0..<rank).map { Float(1 / Double($0 + 1)) }
        return try PCABasis(dimension: d, rank: rank, mean: mean, components: components, variances: variances)
    }

    private func encode(_ row: [Float], basis: PCABasis, k: Int) throws(CodecError) -> [UInt8] {
        var payload = [UInt8](repeating: 0, count: ReducedDimensionCodec.payloadSize(k: k))
        // withUnsafeMutableBytes is untyped-rethrows; carry the typed error out by hand.
        var outcome: Result<Void, CodecError> = .success(())
        row.withUnsafeBufferPointer { source in
            payload.withUnsafeMutableBytes { bytes in
                do throws(CodecError) {
                    try ReducedDimensionCodec.encode(source, basis: basis, k: k, into: bytes)
                } catch {
                    outcome = .failure(error)
                }
            }
        }
        try outcome.get()
        return payload
    }

    /// Decodes `payload` placed at byte `offset` of a larger buffer (LMDB values are only 2-byte
    /// aligned; odd offsets are stricter still).
    private func decode(_ payload: [UInt8], basis: PCABasis, offset: Int, reference: Bool) -> [Float] {
        var storage = [UInt8](repeating: 0xEE, count: payload.count + offset + 3)
        storage.replaceSubrange(offset..<(offset + payload.count), with: payload)
        var row = [Float](repeating: .nan, count: basis.dimension)
        storage.withUnsafeBytes { all in
            let bytes = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + payload.count)])
            row.withUnsafeMutableBufferPointer { target in
                if reference {
                    ReducedDimensionCodec.decodeReference(bytes, basis: basis, into: target)
                } else {
                    ReducedDimensionCodec.decode(bytes, basis: basis, into: target)
                }
            }
        }
        return row
    }

    private func littleEndianBytes(_ values: [Float]) -> [UInt8] {
        values.flatMap { value in (0..<4).map { UInt8(truncatingIfNeeded: value.bitPattern >> (8 * $0)) } }
    }

    @Test("payload size is 4 bytes per coefficient")
    func payloadSize() {
        #expect(ReducedDimensionCodec.payloadSize(k: 1) == 4)
        #expect(ReducedDimensionCodec.payloadSize(k: 48) == 192)
    }

    @Test("byte layout: k little-endian float32 coefficients v_j·(x − μ)")
    func byteLayout() throws {
        // Identity directions make the coefficients the centred coordinates themselves.
        let basis = try PCABasis(
            dimension: 4, rank: 4, mean: [1, 2, 3, 4],
            components: [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], variances: [4, 3, 2, 1])
        let payload = try encode([2, 1.5, 3, 4], basis: basis, k: 2)
        #expect(payload == [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xBF])  // 1.0, −0.5
        #expect(decode(payload, basis: basis, offset: 0, reference: false) == [2, 1.5, 3, 4])
        #expect(decode([], basis: basis, offset: 1, reference: false) == [1, 2, 3, 4])  // k = 0: the mean
    }

    /// Fast decode sums in Float, four directions at a time; the reference sums in Double. Stated
    /// bound: |fast − reference| ≤ 1e-5 · (|μ_i| + Σ_j |c_j v_j[i]|) per element.
    @Test("fast decode matches the reference at awkward sizes and misaligned offsets",
          arguments: [2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 1024])
    func fastMatchesReference(d: Int) throws {
        let basis = try syntheticBasis(dimension: d, rank: d, seed: UInt64(d))
        var random = FitTestRandom(seed: 0xC0FFEE &+ UInt64(d))
        var worst = 0.0
        for k in Array(Set([1, 2, 3, 4, 5, d / 4, d - 1]).filter { $0 >= 1 && $0 < d }).sorted() {
            let coefficients = (0..<k).map { _ in Float(random.gaussian() * 10) }
            let payload = littleEndianBytes(coefficients)
            let reference = decode(payload, basis: basis, offset: 0, reference: true)
            for offset in 0..<4 {
                #expect(decode(payload, basis: basis, offset: offset, reference: true) == reference)
                let fast = decode(payload, basis: basis, offset: offset, reference: false)
                for i in 0..<d {
                    var magnitude = Double(abs(basis.mean[i]))
                    for j in 0..<k { magnitude += abs(Double(coefficients[j]) * Double(basis.components[j * d + i])) }
                    let error = abs(Double(fast[i]) - Double(reference[i]))
                    worst = max(worst, error / magnitude)
                    #expect(error <= 1e-5 * magnitude, "d = \(d), k = \(k), i = \(i)")
                    #expect(fast[i].isFinite)
                }
            }
        }
        // Measured worst: 1.2e-7 for d ≤ 100, 5.5e-7 at d = 1024 (k = 1023), inside the stated 1e-5.
        #expect(worst < 1e-5)
    }

    @Test("rows in the span of the first k directions survive a round trip",
          arguments: [2, 9, 33, 100])
    func roundTripInSpan(d: Int) throws {
        let basis = try syntheticBasis(dimension: d, rank: d, seed: 7 &+ UInt64(d))
        var random = FitTestRandom(seed: UInt64(d))
        for k in Array(Set([1, d / 2, d - 1]).filter { $0 >= 1 }).sorted() {
            var row = basis.mean.map(Double.init)
            for j in 0..<k {
                let a = random.gaussian()
                for i in 0..<d { row[i] += a * Double(basis.components[j * d + i]) }
            }
            let input = row.map { Float($0) }
            let decoded = decode(try encode(input, basis: basis, k: k), basis: basis, offset: 2, reference: false)
            for i in 0..<d {
                // Float rounding of the row, coefficients and sums: a few ulps of values ~O(√k).
                #expect(abs(decoded[i] - input[i]) <= 1e-5 * Float(k).squareRoot() * 4, "d = \(d), k = \(k), i = \(i)")
            }
        }
    }

    @Test("encode refuses bad k, row width, payload size and non-finite rows")
    func encodeErrors() throws {
        let basis = try syntheticBasis(dimension: 8, rank: 6, seed: 1)
        let row = [Float](repeating: 1, count: 8)
        for k in [0, 7, 8, 9] {  // 0, above rank, = d, above d
            #expect(throws: CodecError.self) { try encode(row, basis: basis, k: k) }
        }
        #expect(throws: CodecError.self) { try encode([1, 2, 3], basis: basis, k: 2) }
        var small = [UInt8](repeating: 0, count: 7)
        #expect(throws: CodecError.badPayloadSize(codec: "reduced", expected: 8, actual: 7)) {
            try row.withUnsafeBufferPointer { source in
                try small.withUnsafeMutableBytes { try ReducedDimensionCodec.encode(source, basis: basis, k: 2, into: $0) }
            }
        }
        var withInfinity = row
        withInfinity[5] = .infinity
        #expect(throws: CodecError.nonFinite(index: 5, value: .infinity)) { try encode(withInfinity, basis: basis, k: 3) }
        var withNaN = row
        withNaN[2] = .nan
        do {
            _ = try encode(withNaN, basis: basis, k: 3)
            Issue.record("NaN must be refused")
        } catch let .nonFinite(index, value) {
            #expect(index == 2 && value.isNaN)
        } catch {
            Issue.record("expected nonFinite, got \(error)")
        }
    }

    @Test("rows too large for Float coefficients are refused; large finite rows decode finite")
    func overflow() throws {
        let basis = try syntheticBasis(dimension: 16, rank: 16, seed: 4)
        let huge = [Float](repeating: 3e38, count: 16)
        do {
            _ = try encode(huge, basis: basis, k: 8)
            Issue.record("a row whose decode would overflow must be refused")
        } catch {
            guard case .outOfRange(codec: "reduced", _, _) = error else {
                Issue.record("expected outOfRange, got \(error)")
                return
            }
        }
        let large = (0..<16).map { Float($0 % 2 == 0 ? 1e35 : -1e35) }
        let decoded = decode(try encode(large, basis: basis, k: 15), basis: basis, offset: 1, reference: false)
        #expect(decoded.allSatisfy { $0.isFinite })
    }
}
