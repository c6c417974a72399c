import CEmbeddingKernels
import Testing
@testable import EmbeddingCodecs

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The C range search (rowwise_search.c) against the Swift reference it reproduces: on rows of
/// every shape and many sizes, the dispatched kernel and its portable twin choose exactly the
/// reference's scale and bias (or hand the row back, rarely), name the same bad value, and the
/// code writers pack exactly RowwiseCoder's codes; so every encoder writes the bytes the Swift
/// code alone would.
@Suite struct RowwiseSearchKernelTests {
    typealias Fixtures = CodecFixtures
    typealias Search = @Sendable (UnsafePointer<Float>, Int, Int32, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Int>) -> Int32
    typealias HalfSearch = @Sendable (UnsafePointer<Float>, Int, Int32, UnsafeMutablePointer<UInt16>, UnsafeMutablePointer<Int>) -> Int32

    static let searches: [(String, Search)] = [
        ("dispatched", { emb_rowwise_search($0, $1, $2, $3, $4) }),
        ("portable", { emb_rowwise_search_portable($0, $1, $2, $3, $4) }),
    ]
    static let halfSearches: [(String, HalfSearch)] = [
        ("dispatched", { emb_rowwise_sbhalf_search($0, $1, $2, $3, $4) }),
        ("portable", { emb_rowwise_sbhalf_search_portable($0, $1, $2, $3, $4) }),
    ]

    /// 1 to 1024 values: every vector-body / tail combination, and the sizes embeddings have.
    static let dimensions = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129,
                             255, 256, 384, 511, 512, 513, 768, 1000, 1024]

    /// Row shapes: the fixtures' three, and the ones that stress the search's corners.
    enum Shape: CaseIterable {
        case gaussian, heavyTailed, uniform
        /// Every value the same; every value one of two.
        case constant, twoValued
        /// Spanning most of Float's range (±3e38), so that min/max decodes overflow.
        case huge
        /// Subnormal and tiny values, both signs.
        case subnormal
        /// Magnitudes over 80 binades.
        case mixedMagnitudes
        /// Small integers (exact codes, ties), and values that are halves.
        case integers, halves
        /// Nonnegative with many exact zeros of either sign (ReLU outputs).
        case relu
        /// Far from zero relative to the spread, with one value at ±3e38.
        case offsetWithOutlier
    }

    static func row(_ shape: Shape, dimension d: Int, using g: inout Fixtures.Generator) -> [Float] {
        let huge = Float.greatestFiniteMagnitude
        switch shape {
        case .gaussian: return Fixtures.row(.gaussian, dimension: d, using: &g)
        case .heavyTailed: return Fixtures.row(.heavyTailed, dimension: d, using: &g)
        case .uniform: return Fixtures.row(.uniform, dimension: d, using: &g)
        case .constant: return [Float](repeating: Float.random(in: -5...5, using: &g), count: d)
        case .twoValued:
            let a = Fixtures.gaussian(using: &g), b = Fixtures.gaussian(using: &g)
            return (0..<d).map { _ in Bool.random(using: &g) ? a : b }
        case .huge:
            return (0..<d).map { _ in Swift.min(Swift.max(Fixtures.gaussian(using: &g) * 2e38, -huge), huge) }
        case .subnormal:
            return (0..<d).map { _ in
                Float(bitPattern: UInt32.random(in: 0...0x00FF_FFFF, using: &g)) * (Bool.random(using: &g) ? 1 : -1)
            }
        case .mixedMagnitudes:
            return (0..<d).map { _ in
                Fixtures.gaussian(using: &g) * Float(sign: .plus, exponent: Int.random(in: -40...40, using: &g), significand: 1)
            }
        case .integers: return (0..<d).map { _ in Float(Int.random(in: -8...8, using: &g)) }
        case .halves: return (0..<d).map { _ in Float(Float16(Fixtures.gaussian(using: &g) * 0.05)) }
        case .relu:
            return (0..<d).map { _ in
                let x = Fixtures.gaussian(using: &g)
                return x > 0 ? x : (Bool.random(using: &g) ? 0 : -0.0)
            }
        case .offsetWithOutlier:
            var row = (0..<d).map { _ in 40 + Fixtures.gaussian(using: &g) * 0.1 }
            row[Int.random(in: 0..<d, using: &g)] = Bool.random(using: &g) ? huge : -3e38
            return row
        }
    }

    /// Rows for one dimension: each shape a few times (fewer for the widest rows: the Swift
    /// reference is slow in debug builds).
    static func rows(dimension d: Int, seed: UInt64) -> [[Float]] { shapedRows(dimension: d, seed: seed).map(\.1) }

    /// Shapes the kernels hand back to the reference by design: rows whose min/max decode
    /// overflows Float (the reference's window).
    static func mayBeUndecided(_ shape: Shape) -> Bool {
        shape == .huge || shape == .offsetWithOutlier
    }

    /// Rows for one dimension, tagged with their shape.
    static func shapedRows(dimension d: Int, seed: UInt64) -> [(Shape, [Float])] {
        var g = Fixtures.Generator(seed: seed &+ UInt64(d) &* 0x9E37)
        let perShape = d >= 512 ? 6 : d >= 100 ? 12 : 30
        return Shape.allCases.flatMap { shape in (0..<perShape).map { _ in (shape, row(shape, dimension: d, using: &g)) } }
    }

    @Test("float search: the reference's scale and bias, bit for bit", arguments: dimensions)
    func floatSearch(dimension d: Int) throws {
        for levels in [255, 15, 3] {
            for (shape, row) in Self.shapedRows(dimension: d, seed: 0x5EA) {
                try row.withUnsafeBufferPointer { row in
                    let reference = try RowwiseQuantizer.searchReference(row, levels: levels)
                    let viaSwift = try RowwiseQuantizer.search(row, levels: levels)
                    #expect(viaSwift.scale.bitPattern == reference.scale.bitPattern
                            && viaSwift.bias.bitPattern == reference.bias.bitPattern,
                            "search differs from the reference, levels \(levels), row \(Array(row.prefix(6)))")
                    for (name, search) in Self.searches {
                        var out: [Float] = [0, 0]
                        var bad = -1
                        let status = search(row.baseAddress!, d, Int32(levels), &out, &bad)
                        if Int(status) == EMB_ROWWISE_UNDECIDED {
                            #expect(Self.mayBeUndecided(shape), "\(name) kernel left a \(shape) row undecided, levels \(levels)")
                            continue
                        }
                        #expect(Int(status) == EMB_ROWWISE_DECIDED)
                        #expect(out[0].bitPattern == reference.scale.bitPattern && out[1].bitPattern == reference.bias.bitPattern,
                                "\(name) kernel: (\(out[0]), \(out[1])) for the reference's (\(reference.scale), \(reference.bias)), levels \(levels), row \(Array(row.prefix(6)))")
                    }
                }
            }
        }
    }

    @Test("half search: the reference's halves, bit for bit", arguments: dimensions)
    func halfSearch(dimension d: Int) throws {
        for levels in [15, 3] {
            for (shape, row) in Self.shapedRows(dimension: d, seed: 0x4A1F) {
                try row.withUnsafeBufferPointer { row in
                    let reference = try HalfRowwiseQuantizer.searchReference(row, levels: levels)
                    let viaSwift = try HalfRowwiseQuantizer.search(row, levels: levels)
                    #expect(viaSwift == reference, "search differs from the reference, levels \(levels), row \(Array(row.prefix(6)))")
                    for (name, search) in Self.halfSearches {
                        var out: [UInt16] = [0, 0]
                        var bad = -1
                        let status = search(row.baseAddress!, d, Int32(levels), &out, &bad)
                        if Int(status) == EMB_ROWWISE_UNDECIDED {
                            #expect(Self.mayBeUndecided(shape), "\(name) kernel left a \(shape) row undecided, levels \(levels)")
                            continue
                        }
                        #expect(Int(status) == EMB_ROWWISE_DECIDED)
                        #expect(out[0] == reference.scale.bits && out[1] == reference.bias.bits,
                                "\(name) kernel: \(out) for the reference's \([reference.scale.bits, reference.bias.bits]), levels \(levels), row \(Array(row.prefix(6)))")
                    }
                }
            }
        }
    }

    @Test("ordinary rows are decided by the kernel, not handed back")
    func ordinaryRowsDecided() throws {
        var g = Fixtures.Generator(seed: 0xDEC1DE)
        var undecided = 0, total = 0
        for d in [16, 64, 128, 384] {
            for _ in 0..<100 {
                let row = Fixtures.row(.gaussian, dimension: d, using: &g)
                row.withUnsafeBufferPointer { row in
                    for levels in [255, 15] {
                        var out: [Float] = [0, 0]
                        var bad = 0
                        undecided += Int(emb_rowwise_search(row.baseAddress!, d, Int32(levels), &out, &bad)) == EMB_ROWWISE_UNDECIDED ? 1 : 0
                        total += 1
                    }
                    for levels in [15, 3] {
                        var out: [UInt16] = [0, 0]
                        var bad = 0
                        undecided += Int(emb_rowwise_sbhalf_search(row.baseAddress!, d, Int32(levels), &out, &bad)) == EMB_ROWWISE_UNDECIDED ? 1 : 0
                        total += 1
                    }
                }
            }
        }
        #expect(undecided == 0, "\(undecided) of \(total) Gaussian rows undecided")
    }

    @Test("NaN and infinities: the first one's index, from every kernel")
    func nonFinite() {
        for d in [1, 5, 8, 9, 64, 100] {
            for bad in [Float.nan, .infinity, -.infinity] {
                for position in Set([0, d / 2, d - 1]) {
                    var row = (0..<d).map { Float($0) * 0.25 - 3 }
                    row[position] = bad
                    if position + 1 < d { row[d - 1] = .nan } // a later bad value must not be the one named
                    row.withUnsafeBufferPointer { row in
                        for (name, search) in Self.searches {
                            var out: [Float] = [0, 0]
                            var index = -1
                            #expect(Int(search(row.baseAddress!, d, 255, &out, &index)) == EMB_ROWWISE_NONFINITE, "\(name)")
                            #expect(index == position, "\(name): index \(index) for \(position)")
                        }
                        for (name, search) in Self.halfSearches {
                            var out: [UInt16] = [0, 0]
                            var index = -1
                            #expect(Int(search(row.baseAddress!, d, 15, &out, &index)) == EMB_ROWWISE_NONFINITE, "\(name)")
                            #expect(index == position, "\(name): index \(index) for \(position)")
                        }
                    }
                }
            }
        }
    }

    @Test("zeros of either sign at the ends: the reference's (first minimum, last maximum)")
    func signedZeros() throws {
        let rows: [[Float]] = [
            [-0.0, 0, 1, 2, 3, 4, 5, 6, 7], [0, -0.0, 1, 2, 3, 4, 5, 6, 7],
            [-1, -2, 0, -3, -0.0, -4, -5, -6, -7], [-1, -2, -0.0, -3, 0, -4, -5, -6, -7],
            [0, -0.0, 0, -0.0, 0, -0.0, 0, -0.0, 0], [-0.0, 0, -0.0, 0, -0.0, 0, -0.0, 0, -0.0],
            [0, 0, 0, 0, 0, 0, 0, 0, .leastNonzeroMagnitude], [-.leastNonzeroMagnitude, -0.0, -0.0, 0, 0, 0, 0, 0, 0],
        ]
        for row in rows {
            try row.withUnsafeBufferPointer { row in
                for levels in [255, 15] {
                    let reference = try RowwiseQuantizer.searchReference(row, levels: levels)
                    let fast = try RowwiseQuantizer.search(row, levels: levels)
                    #expect(fast.scale.bitPattern == reference.scale.bitPattern && fast.bias.bitPattern == reference.bias.bitPattern,
                            "\(Array(row)): (\(fast.scale), \(fast.bias)) for (\(reference.scale), \(reference.bias))")
                }
                for levels in [15, 3] {
                    #expect(try HalfRowwiseQuantizer.search(row, levels: levels) == HalfRowwiseQuantizer.searchReference(row, levels: levels))
                }
            }
        }
    }

    @Test("emb_half_nearest is HalfBits(nearest:)")
    func halfNearest() {
        var g = Fixtures.Generator(seed: 0x4A1F)
        var values: [Double] = [0, -0.0, 65504, -65504, 65519.99, 65520, 1e300, -1e300, 0x1p-25, 0x1p-26, 0x1p-24, 0x1p-14]
        // Every finite half's midpoints with its neighbours, and just either side of them.
        for magnitude in stride(from: UInt16(0), to: 0x7BFF, by: 7) {
            for sign: UInt16 in [0, 0x8000] {
                let a = Double(HalfBits(bits: sign | magnitude).value), b = Double(HalfBits(bits: sign | (magnitude + 1)).value)
                let midpoint = (a + b) / 2
                values += [a, midpoint, midpoint.nextUp, midpoint.nextDown]
            }
        }
        for _ in 0..<20_000 {
            values.append(Double(bitPattern: UInt64.random(in: 0...UInt64.max, using: &g) & 0xBFFF_FFFF_FFFF_FFFF)) // |x| < 2
            values.append(Double.random(in: -70_000...70_000, using: &g))
            values.append(Double(Float.random(in: -1...1, using: &g)) * 0x1p-20)
        }
        for x in values where !x.isNaN {
            #expect(emb_half_nearest(x) == HalfBits(nearest: x).bits, "\(x)")
        }
    }

    @Test("code writers pack RowwiseCoder's codes", arguments: [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 1024])
    func writeCodes(dimension d: Int) {
        var g = Fixtures.Generator(seed: 0xC0DE &+ UInt64(d))
        let writers: [(String, (UnsafePointer<Float>, Int, Float, Float, Int32, Int32, UnsafeMutableRawPointer) -> Void)] = [
            ("dispatched", { emb_rowwise_write_codes($0, $1, $2, $3, $4, $5, $6) }),
            ("portable", { emb_rowwise_write_codes_portable($0, $1, $2, $3, $4, $5, $6) }),
        ]
        for shape in Shape.allCases where shape != .huge {
            let row = Self.row(shape, dimension: d, using: &g)
            let low = row.min()!, high = row.max()!
            for (levels, bits) in [(255, 8), (15, 4), (3, 2), (15, 8)] {
                // Maps that clip, cover, and overshoot the row, and one of scale 0.
                let span = Double(high) - Double(low)
                let maps = [RowwiseAffine(lo: Double(low), hi: Double(high), levels: levels),
                            RowwiseAffine(lo: Double(low) + span / 5, hi: Double(high) - span / 7, levels: levels),
                            RowwiseAffine(lo: Double(low) - span, hi: Double(high) + span / 3, levels: levels),
                            RowwiseAffine(scale: 0, bias: low)]
                for affine in maps where affine.scale.isFinite && affine.bias.isFinite {
                    let coder = RowwiseCoder(affine, levels: levels)
                    let perByte = 8 / bits
                    var expected = [UInt8](repeating: 0, count: (d * bits + 7) / 8)
                    for index in 0..<d {
                        expected[index / perByte] |= UInt8(coder.code(for: row[index])) << (bits * (index % perByte))
                    }
                    for (name, write) in writers {
                        var out = [UInt8](repeating: 0xA5, count: expected.count + 8)
                        row.withUnsafeBufferPointer { row in
                            out.withUnsafeMutableBytes { write(row.baseAddress!, d, affine.scale, affine.bias, Int32(levels), Int32(bits), $0.baseAddress!) }
                        }
                        #expect(Array(out[..<expected.count]) == expected, "\(name), \(bits) bits, levels \(levels), \(shape)")
                        #expect(out[expected.count...].allSatisfy { $0 == 0xA5 }, "\(name) wrote past the codes")
                    }
                }
            }
        }
    }

    @Test("encoders write the bytes of the Swift reference encoders", arguments: [1, 3, 8, 17, 64, 100, 384])
    func encodersMatchReference(dimension d: Int) throws {
        for row in Self.rows(dimension: d, seed: 0xE4C) {
            try row.withUnsafeBufferPointer { row in
                for (levels, bits, encode, size) in [
                    (255, 8, { (r: UnsafeBufferPointer<Float>, p: UnsafeMutableRawBufferPointer) throws(CodecError) in try Int8RowwiseCodec.encode(r, into: p) }, Int8RowwiseCodec.payloadSize(dimension: d)),
                    (15, 4, { (r: UnsafeBufferPointer<Float>, p: UnsafeMutableRawBufferPointer) throws(CodecError) in try Int4RowwiseCodec.encode(r, into: p) }, Int4RowwiseCodec.payloadSize(dimension: d)),
                ] {
                    var payload = [UInt8](repeating: 0, count: size)
                    try payload.withUnsafeMutableBytes { try encode(row, $0) }
                    let affine = try RowwiseQuantizer.searchReference(row, levels: levels)
                    var expected = Self.referenceCodes(row, affine, levels: levels, bits: bits)
                    withUnsafeBytes(of: affine.scale.bitPattern.littleEndian) { expected += $0 }
                    withUnsafeBytes(of: affine.bias.bitPattern.littleEndian) { expected += $0 }
                    #expect(payload == expected, "levels \(levels), row \(Array(row.prefix(6)))")
                }
                for (levels, bits, encode, size) in [
                    (15, 4, { (r: UnsafeBufferPointer<Float>, p: UnsafeMutableRawBufferPointer) throws(CodecError) in try Int4HalfRowwiseCodec.encode(r, into: p) }, Int4HalfRowwiseCodec.payloadSize(dimension: d)),
                    (3, 2, { (r: UnsafeBufferPointer<Float>, p: UnsafeMutableRawBufferPointer) throws(CodecError) in try Int2HalfRowwiseCodec.encode(r, into: p) }, Int2HalfRowwiseCodec.payloadSize(dimension: d)),
                ] {
                    var payload = [UInt8](repeating: 0, count: size)
                    try payload.withUnsafeMutableBytes { try encode(row, $0) }
                    let parameters = try HalfRowwiseQuantizer.searchReference(row, levels: levels)
                    var expected = Self.referenceCodes(row, parameters.affine, levels: levels, bits: bits)
                    withUnsafeBytes(of: parameters.scale.bits.littleEndian) { expected += $0 }
                    withUnsafeBytes(of: parameters.bias.bits.littleEndian) { expected += $0 }
                    #expect(payload == expected, "levels \(levels) (half), row \(Array(row.prefix(6)))")
                }
            }
        }
    }

    /// RowwiseCoder's codes packed `bits` a code, low bits first: the code bytes the encoders
    /// wrote before the C writer.
    static func referenceCodes(_ row: UnsafeBufferPointer<Float>, _ affine: RowwiseAffine, levels: Int, bits: Int) -> [UInt8] {
        let coder = RowwiseCoder(affine, levels: levels)
        let perByte = 8 / bits
        var bytes = [UInt8](repeating: 0, count: (row.count + perByte - 1) / perByte)
        for index in row.indices {
            bytes[index / perByte] |= UInt8(coder.code(for: row[index])) << (bits * (index % perByte))
        }
        return bytes
    }
}
