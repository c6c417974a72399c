import CEmbeddingKernels
import Testing

/// tc rows: rANS-coded integer coefficients, dequantised, then synthesised from a basis. The
/// kernels must write and read the stream exactly as the header describes it (checked against
/// a Swift encoder and decoder written from that description), give the floats of a plain
/// Swift loop in the stated order on every path (dispatched, portable, four rows in lockstep,
/// accumulate), and refuse a damaged stream without reading outside it.
@Suite struct TransformCodedKernelTests {
    typealias Model = TransformCodedModel

    static let dimensions = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 384, 1024]

    func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

    // MARK: - Tables

    @Test func tableBuildFillsCumulativeAndSlotTablesAndRefusesBadOnes() {
        var cum = [UInt16](repeating: 0, count: 258)
        var slots = [UInt8](repeating: 0xFF, count: 4096)
        #expect(emb_tc_table_build([1000, 0, 3000, 96], 4, &cum, &slots) == 1)
        #expect(Array(cum[..<5]) == [0, 1000, 1000, 4000, 4096])
        #expect(slots[0] == 0 && slots[999] == 0 && slots[1000] == 2 && slots[3999] == 2)
        #expect(slots[4000] == 3 && slots[4095] == 3)
        #expect(emb_tc_table_build([4096], 1, &cum, &slots) == 1, "escape only")
        let uniform = [UInt16](repeating: 16, count: 256)
        #expect(emb_tc_table_build(uniform, 256, &cum, &slots) == 1, "256 symbols, the most a byte indexes")
        #expect(slots[4095] == 255)
        #expect(emb_tc_table_build(uniform + [0], 257, &cum, &slots) == 0, "257 symbols")
        #expect(emb_tc_table_build([4095, 0], 2, &cum, &slots) == 0, "sum 4095")
        #expect(emb_tc_table_build([4096, 1], 2, &cum, &slots) == 0, "sum 4097")
        #expect(emb_tc_table_build([65535, 65535, 4098], 3, &cum, &slots) == 0, "sum 4096 only modulo 2^16")
        #expect(emb_tc_table_build(uniform, 0, &cum, &slots) == 0, "no symbols")
    }

    // MARK: - Round trips

    /// Table shapes the coder must handle.
    enum TableShape: String, CaseIterable, Sendable, CustomStringConvertible {
        /// Two Laplacians, wide for the low half of the coefficients, narrow for the rest.
        case laplacian
        /// One symbol (0) at 4094/4096: a fraction of a bit per value, long runs without a word.
        case nearlyCertain
        /// count = 0: every value is an escape, the rANS part codes nothing but escape symbols.
        case escapesOnly
        /// 255 values and the escape: the largest table a byte of slot_symbol indexes.
        case widest
        /// A range far from zero and a large reconstruction offset.
        case offCentre
        /// Eight tables, coefficient j on table j % 8.
        case eightTables

        var description: String { rawValue }

        func model(d: Int, k: Int, using generator: inout CodecFixtures.Generator) -> Model {
            var tables: [Model.Table]?
            switch self {
            case .laplacian: tables = nil
            case .nearlyCertain: tables = [Model.Table(lo: -1, theta: 0.5, freq: [1, 4094, 0, 1])]
            case .escapesOnly: tables = [Model.Table(lo: 0, theta: 0.3, freq: [4096])]
            case .widest: tables = [Model.Table(lo: -127, theta: 0.1, freq: [UInt16](repeating: 16, count: 256))]
            case .offCentre: tables = [Model.Table(lo: -30_000, theta: 0.999, freq: [UInt16](repeating: 20, count: 204) + [16])]
            case .eightTables:
                tables = (0..<8).map { Model.laplaceTable(scale: 0.3 + Double($0), radius: 3 + 5 * $0, theta: Float($0) / 9) }
            }
            let model = Model.random(d: d, k: k, tables: tables, using: &generator)
            guard self == .eightTables else { return model }
            return Model(d: d, k: k, tables: model.tables, tableOf: (0..<k).map { $0 % 8 },
                         mean: model.mean, basis: model.basis, step: model.step)
        }
    }

    @Test(arguments: TableShape.allCases, [(d: 1, k: 1), (d: 5, k: 3), (d: 64, k: 64), (d: 100, k: 97)])
    func encodeMatchesTheFormatAndDecodesBack(shape: TableShape, size: (d: Int, k: Int)) throws {
        var generator = CodecFixtures.Generator(seed: 0x7C &+ UInt64(size.k) &* 31)
        let model = shape.model(d: size.d, k: size.k, using: &generator)
        for row in 0..<40 {
            var q = model.randomValues(using: &generator)
            if row == 0 { q = [Int32](repeating: 0, count: model.k).map { model.tables.first!.count == 0 ? 7 : $0 } }
            let stream = try #require(model.encode(q), "row \(row)")
            #expect(stream == model.encodeReference(q), "row \(row): bytes differ from the format's encoder")
            #expect(stream.count <= emb_tc_max_stream_bytes(model.pointer))
            #expect(model.decodeSymbols(stream) == q, "row \(row)")
            #expect(model.decodeReference(stream) == q, "row \(row)")
            let coefficients = try #require(model.decodeCoefficients(stream), "row \(row)")
            #expect(bits(coefficients) == bits(model.dequantize(q)), "row \(row)")
            // Exactly the stream length is enough; one byte less is refused, not overrun.
            #expect(model.encode(q, capacity: stream.count) == stream)
            #expect(model.encode(q, capacity: stream.count - 1) == nil)
        }
    }

    @Test func encodeRefusesValuesItCannotCode() {
        var generator = CodecFixtures.Generator(seed: 0xE5C)
        // Value 1 is in range but has frequency 0; values outside need the escape.
        let model = TableShape.nearlyCertain.model(d: 4, k: 4, using: &generator)
        #expect(model.encode([0, -1, 5, -32768]) != nil)
        #expect(model.encode([0, 1, 0, 0]) == nil, "in range, frequency 0")
        #expect(model.encodeReference([0, 1, 0, 0]) == nil)
        #expect(model.encode([0, 0, 32768, 0]) == nil, "escape outside int16")
        let noEscape = Model(d: 1, k: 1, tables: [Model.Table(lo: 0, theta: 0, freq: [4096, 0])], tableOf: [0],
                             mean: [0], basis: [1], step: [1])
        #expect(noEscape.encode([0]) == [0x00, 0x00, 0x01, 0x00], "a certain symbol costs nothing")
        #expect(noEscape.encode([1]) == nil, "escape of frequency 0")
    }

    /// A worked example by hand: k = 2, table {0: 2048, 1: 2047, escape: 1}, q = (1, -5).
    /// Encoding j = 1 (escape, f = 1, cum = 4095) from x = 65536: 65536 >= 1 << 20 is false,
    /// x = (65536 << 12) + 0 + 4095 = 268439551. j = 0 (value 1, f = 2047, cum = 2048):
    /// 268439551 >= 2047 << 20 = 2146435072 is false; 268439551 = 131138 * 2047 + 65, so
    /// x = (131138 << 12) + 65 + 2048 = 537143361 = 0x2004_2841. No words; the escape
    /// -5 = 0xFFFB follows the state.
    @Test func streamOfTheWorkedExample() throws {
        let model = Model(d: 2, k: 2, tables: [Model.Table(lo: 0, theta: 0.25, freq: [2048, 2047, 1])], tableOf: [0, 0],
                          mean: [1, -1], basis: [0.5, 0.25, -2, 4], step: [0.5, 2])
        let stream = try #require(model.encode([1, -5]))
        #expect(stream == [0x41, 0x28, 0x04, 0x20, 0xFB, 0xFF])
        let coefficients = try #require(model.decodeCoefficients(stream))
        #expect(coefficients == [0.375, -9.5])                          // 0.5 (1 - 0.25), 2 (-5 + 0.25)
        let expected: [Float] = [20.1875, -38.90625]                      // 1 + 0.1875 + 19, -1 + 0.09375 - 38
        #expect(model.synthesize(coefficients, portable: false) == expected)
    }

    /// k = 0: the stream is the bare final state, the row is the mean.
    @Test func zeroCoefficientsDecodeToTheMean() throws {
        let model = Model(d: 3, k: 0, tables: [Model.laplaceTable(scale: 1, radius: 2, theta: 0)], tableOf: [],
                          mean: [1, -0.0, 3], basis: [], step: [])
        let stream = try #require(model.encode([]))
        #expect(stream == [0x00, 0x00, 0x01, 0x00])
        let coefficients = try #require(model.decodeCoefficients(stream))
        #expect(bits(model.synthesize(coefficients, portable: false)) == bits(model.mean))
        #expect(model.decodeRows([stream, stream + [0]]).result == 2)
        #expect(verdicts(model, [0x01, 0x00, 0x01, 0x00]) == [Bool](repeating: false, count: 6))
    }

    // MARK: - Synthesis

    /// Every path writes the floats of the plain loop, at widths that hit each tile shape (8
    /// full vectors, 0-7 full vectors plus a masked part) and with more than 256 non-zero
    /// coefficients (several compaction chunks) at d = 384 and 1024.
    @Test(arguments: dimensions)
    func synthesisMatchesThePlainLoop(d: Int) throws {
        var generator = CodecFixtures.Generator(seed: 0x5157 &+ UInt64(d))
        for k in Set([1, (d + 1) / 2, d]).sorted() {
            let model = Model.random(d: d, k: k, using: &generator)
            let q = model.randomValues(using: &generator)
            let stream = try #require(model.encode(q))
            let decoded = try #require(model.decodeCoefficients(stream))
            #expect(bits(decoded) == bits(model.dequantize(q)), "decode d=\(d) k=\(k)")
            // Also arbitrary coefficients: negative zeros (skipped like zeros), subnormals, all zero.
            let arbitrary = (0..<k).map { j -> Float in
                [0, -0.0, .leastNonzeroMagnitude, Float.random(in: -3...3, using: &generator)][j % 4]
            }
            for coef in [decoded, arbitrary, [Float](repeating: 0, count: k)] {
                let expected = bits(model.synthesizeReference(coef))
                #expect(bits(model.synthesize(coef, portable: false)) == expected, "dispatched d=\(d) k=\(k)")
                #expect(bits(model.synthesize(coef, portable: true)) == expected, "portable d=\(d) k=\(k)")
            }
        }
    }

    // MARK: - Runs of rows

    /// 1 ... 9 rows (full lockstep groups of 4 and every remainder), of mixed lengths: all-zero
    /// rows, escapes, zero padding; at odd addresses, each in its own exact-size block.
    @Test(arguments: [1, 9, 64, 100])
    func decodeRowsMatchesRowByRow(d: Int) throws {
        var generator = CodecFixtures.Generator(seed: 0x4055 &+ UInt64(d))
        let model = Model.random(d: d, k: max(1, d - d / 4), using: &generator)
        for count in 1...9 {
            var streams: [[UInt8]] = []
            var expected: [Float] = []
            for row in 0..<count {
                var q = model.randomValues(using: &generator)
                if row % 3 == 1 { q = q.map { _ in 0 } }
                if row % 4 == 2 { q[q.count / 2] = 3000 }
                let stream = try #require(model.encode(q)) + [UInt8](repeating: 0, count: (row * 5) % 7)
                expected += model.synthesize(try #require(model.decodeCoefficients(stream)), portable: false)
                streams.append(stream)
            }
            let (result, rows) = model.decodeRows(streams)
            #expect(result == count && bits(rows) == bits(expected), "d=\(d) count=\(count)")

            // The first corrupt row is named; the rows before it are decoded.
            for bad in Set([0, count / 2, count - 1]) {
                var damaged = streams
                damaged[bad].append(1)                                   // trailing garbage
                if count > bad + 1 { damaged[count - 1].append(9) }        // a later bad row does not win
                let (first, partial) = model.decodeRows(damaged)
                #expect(first == bad, "d=\(d) count=\(count) bad=\(bad)")
                #expect(bits(Array(partial[..<(bad * d)])) == bits(Array(expected[..<(bad * d)])))
            }
        }
    }

    /// Bases too large for L1, where the AVX2 kernel synthesises the rows of a run together,
    /// span of j by span (16 ... 64 j, by d), tile of 64 columns by tile: several spans and a
    /// short last one, partial last tiles of 1, 8, 9 and 36 columns, d < 64, and d = 512,
    /// where no span fits L1 and the rows go one at a time. Zero patterns a shared pass could
    /// get wrong: a j zero in every row of the run (whole spans of them), a row zero where the
    /// others are not, all-zero rows (which must give the mean bit for bit, -0 included: the
    /// random means hold some).
    @Test(arguments: [(d: 100, k: 130), (d: 384, k: 100), (d: 136, k: 90), (d: 257, k: 40), (d: 768, k: 48),
                      (d: 9, k: 1000), (d: 512, k: 20)])
    func decodeRowsInSpansMatchesRowByRow(size: (d: Int, k: Int)) throws {
        let (d, k) = size
        var generator = CodecFixtures.Generator(seed: 0x5BA4 &+ UInt64(d &* 1000 &+ k))
        let model = Model.random(d: d, k: k, using: &generator)
        for count in [1, 2, 3, 4, 5, 8] {
            for pattern in 0..<4 {
                var streams: [[UInt8]] = []
                var expected: [Float] = []
                for row in 0..<count {
                    var q = model.randomValues(using: &generator)
                    switch pattern {
                    case 0: break
                    case 1:                                             // j in [16, 48) and j >= k / 2 zero in every row
                        for j in q.indices where (16..<48).contains(j) || j >= k / 2 { q[j] = 0 }
                    case 2:                                             // every other j zero in every row, odd rows all zero
                        for j in q.indices where j % 2 == 1 || row % 2 == 1 { q[j] = 0 }
                    default:                                            // one non-zero per row, at a j of its own
                        q = q.indices.map { $0 == (row * 37) % k ? 5 : 0 }
                    }
                    let stream = try #require(model.encode(q))
                    let coefficients = try #require(model.decodeCoefficients(stream))
                    let one = model.synthesize(coefficients, portable: false)
                    #expect(bits(one) == bits(model.synthesizeReference(coefficients)), "d=\(d) k=\(k) reference")
                    expected += one
                    streams.append(stream)
                }
                let (result, rows) = model.decodeRows(streams)
                #expect(result == count && bits(rows) == bits(expected), "d=\(d) k=\(k) count=\(count) pattern=\(pattern)")
            }
        }
    }

    // MARK: - Accumulate

    @Test(arguments: dimensions)
    func accumulateMatchesDecodeThenAdd(d: Int) throws {
        var generator = CodecFixtures.Generator(seed: 0xACC &+ UInt64(d))
        let model = Model.random(d: d, k: (d + 1) / 2, using: &generator)
        let stream = try #require(model.encode(model.randomValues(using: &generator)))
        let row = model.synthesize(try #require(model.decodeCoefficients(stream)), portable: true)
        let start = (0..<d).map { _ in Float.random(in: -2...2, using: &generator) }
        for weight: Float in [1, 0.37, -2.5] {
            let expected = bits(zip(start, row).map { $0 + weight * $1 })
            for portable in [false, true] {
                let acc = try #require(model.accumulate(stream, into: start, weight: weight, portable: portable))
                #expect(bits(acc) == expected, "d=\(d) weight=\(weight) portable=\(portable)")
                // A refused stream leaves acc as it was (checked inside accumulate).
                #expect(model.accumulate(stream + [0x80], into: start, weight: weight, portable: portable) == nil)
            }
        }
    }

    // MARK: - Damaged streams

    /// Every decoder's verdict on `bytes`; they must agree, and agree with the reference.
    func verdicts(_ model: Model, _ bytes: [UInt8]) -> [Bool] {
        let zeros = [Float](repeating: 0, count: model.d)
        return [
            model.decodeReference(bytes) != nil,
            model.decodeSymbols(bytes) != nil,
            model.decodeCoefficients(bytes) != nil,
            model.decodeRows([bytes]).result == 1,
            model.accumulate(bytes, into: zeros, weight: 1, portable: false) != nil,
            model.accumulate(bytes, into: zeros, weight: 1, portable: true) != nil,
        ]
    }

    static let damageSizes = [(d: 1, k: 1), (d: 16, k: 16), (d: 64, k: 48)]

    @Test(arguments: damageSizes)
    func everyTruncationIsRefused(size: (d: Int, k: Int)) throws {
        var generator = CodecFixtures.Generator(seed: 0x7A11 &+ UInt64(size.k))
        for shape in [TableShape.laplacian, .escapesOnly, .nearlyCertain] {
            let model = shape.model(d: size.d, k: size.k, using: &generator)
            for _ in 0..<4 {
                let stream = try #require(model.encode(model.randomValues(using: &generator)))
                for length in 0..<stream.count {
                    #expect(verdicts(model, Array(stream[..<length])) == [Bool](repeating: false, count: 6),
                            "\(shape) k=\(size.k): \(length) of \(stream.count) bytes")
                }
            }
        }
    }

    /// One flipped bit anywhere. A flip in an escape value gives another valid stream (any
    /// int16 is a value); elsewhere it changes the rANS state, which then ends at exactly
    /// 2^16 only by coincidence, so all but a handful must be refused. Whatever the verdict,
    /// the decoders agree, and an accepted stream decodes consistently.
    @Test(arguments: damageSizes)
    func flippedBitsAreRefusedOrDecodeConsistently(size: (d: Int, k: Int)) throws {
        var generator = CodecFixtures.Generator(seed: 0xF11B &+ UInt64(size.k))
        let model = TableShape.laplacian.model(d: size.d, k: size.k, using: &generator)
        var flips = 0, refused = 0, escapeBits = 0
        for _ in 0..<6 {
            let q = model.randomValues(using: &generator)
            let stream = try #require(model.encode(q))
            let escapes = q.indices.filter { j in
                let t = model.tables[model.tableOf[j]]
                return !(Int(t.lo)..<Int(t.lo) + t.count).contains(Int(q[j]))
            }.count
            escapeBits += 16 * escapes
            for bit in 0..<(8 * stream.count) {
                var damaged = stream
                damaged[bit / 8] ^= UInt8(1 << (bit % 8))
                let verdict = verdicts(model, damaged)
                #expect(Set(verdict).count == 1, "k=\(size.k) bit \(bit): decoders disagree \(verdict)")
                flips += 1
                if !verdict[0] { refused += 1; continue }
                let symbols = try #require(model.decodeSymbols(damaged))
                #expect(bits(try #require(model.decodeCoefficients(damaged))) == bits(model.dequantize(symbols)))
            }
        }
        #expect(refused >= flips - escapeBits - 2, "k=\(size.k): \(refused) of \(flips) flips refused, \(escapeBits) in escape values")
    }

    @Test(arguments: damageSizes)
    func paddingMustBeZeroAndNothingMayTrail(size: (d: Int, k: Int)) throws {
        var generator = CodecFixtures.Generator(seed: 0xBAD &+ UInt64(size.k))
        let model = TableShape.laplacian.model(d: size.d, k: size.k, using: &generator)
        let q = model.randomValues(using: &generator)
        let stream = try #require(model.encode(q))
        for padding in [1, 2, 3, 17] {
            let padded = stream + [UInt8](repeating: 0, count: padding)
            #expect(model.decodeSymbols(padded) == q && verdicts(model, padded) == [Bool](repeating: true, count: 6))
            for at in stream.count..<padded.count {
                var dirty = padded
                dirty[at] = UInt8.random(in: 1...255, using: &generator)
                #expect(verdicts(model, dirty) == [Bool](repeating: false, count: 6), "padding byte \(at - stream.count)")
            }
        }
        for _ in 0..<8 {
            let garbage = (0..<Int.random(in: 1...9, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let expected = garbage.allSatisfy { $0 == 0 }
            #expect(verdicts(model, stream + garbage) == [Bool](repeating: expected, count: 6), "trailing \(garbage)")
        }
        // A state below 2^16 never comes from the encoder.
        var low = stream
        low[2] = 0; low[3] = 0
        #expect(verdicts(model, low) == [Bool](repeating: false, count: 6))
    }
}
