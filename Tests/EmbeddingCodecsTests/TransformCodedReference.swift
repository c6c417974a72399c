import CEmbeddingKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A tc model in C memory: the `emb_tc_model` at `pointer` holds raw pointers into arrays this
/// object owns, so it is valid exactly as long as the object is alive. Also carries the Swift
/// reference implementations the kernels are checked against, written from the header's
/// description of the format rather than from tc.c.
final class TransformCodedModel {
    struct Table {
        var lo: Int32
        var theta: Float
        /// count + 1 frequencies summing to 4096; the last one is the escape's.
        var freq: [UInt16]
        var count: Int { freq.count - 1 }
        var cum: [UInt32] { freq.reduce(into: [0]) { $0.append($0.last! + UInt32($1)) } }
    }

    let d: Int, k: Int
    let tables: [Table]
    let tableOf: [Int]
    let mean: [Float], basis: [Float], step: [Float]
    let pointer: UnsafeMutablePointer<emb_tc_model>
    private var allocations: [UnsafeMutableRawPointer] = []

    init(d: Int, k: Int, tables: [Table], tableOf: [Int], mean: [Float], basis: [Float], step: [Float]) {
        precondition(tableOf.count == k && mean.count == d && basis.count == k * d && step.count == k)
        (self.d, self.k, self.tables, self.tableOf, self.mean, self.basis, self.step) = (d, k, tables, tableOf, mean, basis, step)
        let cTables = UnsafeMutablePointer<emb_tc_table>.allocate(capacity: tables.count)
        pointer = .allocate(capacity: 1)
        allocations += [UnsafeMutableRawPointer(cTables), UnsafeMutableRawPointer(pointer)]
        for (i, table) in tables.enumerated() {
            let freq = copy(table.freq)
            let cum = copy([UInt16](repeating: 0, count: table.freq.count + 1))
            let slots = copy([UInt8](repeating: 0, count: 4096))
            precondition(emb_tc_table_build(freq, table.freq.count, cum, slots) == 1, "table \(i) is invalid")
            cTables[i] = emb_tc_table(count: UInt32(table.count), lo: table.lo, theta: table.theta,
                                      freq: freq, cum: cum, slot_symbol: slots)
        }
        pointer.initialize(to: emb_tc_model(d: d, k: k, table_count: tables.count, mean: copy(mean), basis: copy(basis),
                                            step: copy(step), table_of: copy(tableOf.map(UInt8.init)), tables: cTables))
    }

    deinit { for allocation in allocations { allocation.deallocate() } }

    private func copy<T>(_ values: [T]) -> UnsafeMutablePointer<T> {
        let p = UnsafeMutablePointer<T>.allocate(capacity: max(values.count, 1))
        p.initialize(from: values, count: values.count)
        allocations.append(UnsafeMutableRawPointer(p))
        return p
    }

    // MARK: - Kernel calls on Swift arrays

    func encode(_ q: [Int32], capacity: Int? = nil) -> [UInt8]? {
        var out = [UInt8](repeating: 0xEE, count: capacity ?? emb_tc_max_stream_bytes(pointer))
        let n = out.withUnsafeMutableBytes { emb_tc_encode(pointer, q, $0.baseAddress, $0.count) }
        return n == 0 ? nil : Array(out[..<n])
    }

    /// Runs `body` on a copy of `bytes` in a heap block that ends exactly where the stream
    /// ends and starts at an odd address, so an overread leaves the allocation (and any
    /// multi-byte field is misaligned).
    func withExactBuffer<R>(_ bytes: [UInt8], _ body: (UnsafeRawPointer, Int) -> R) -> R {
        let block = UnsafeMutableRawPointer.allocate(byteCount: bytes.count + 1, alignment: 16)
        defer { block.deallocate() }
        let start = block + 1
        bytes.withUnsafeBytes { start.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return body(UnsafeRawPointer(start), bytes.count)
    }

    func decodeSymbols(_ bytes: [UInt8]) -> [Int32]? {
        var q = [Int32](repeating: 0, count: k)
        let ok = withExactBuffer(bytes) { p, n in emb_tc_decode_symbols(pointer, p, n, &q) }
        return ok == 1 ? q : nil
    }

    func decodeCoefficients(_ bytes: [UInt8]) -> [Float]? {
        var coef = [Float](repeating: .nan, count: k)
        let ok = withExactBuffer(bytes) { p, n in emb_tc_decode_coefficients(pointer, p, n, &coef) }
        return ok == 1 ? coef : nil
    }

    func synthesize(_ coef: [Float], portable: Bool) -> [Float] {
        var out = [Float](repeating: .nan, count: d)
        if portable { emb_tc_synthesize_portable(pointer, coef, &out) } else { emb_tc_synthesize(pointer, coef, &out) }
        return out
    }

    /// emb_tc_decode_rows on copies of the streams, each in its own exact-size block.
    func decodeRows(_ streams: [[UInt8]]) -> (result: Int, rows: [Float]) {
        let blocks = streams.map { bytes -> UnsafeMutableRawPointer in
            let block = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 1)
            bytes.withUnsafeBytes { block.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            return block
        }
        defer { for block in blocks { block.deallocate() } }
        var out = [Float](repeating: .nan, count: streams.count * d)
        var scratch = [Float](repeating: .nan, count: 4 * k)
        let pointers: [UnsafeRawPointer?] = blocks.map { UnsafeRawPointer($0) }
        let result = emb_tc_decode_rows(pointer, pointers, streams.map(\.count), streams.count, &out, &scratch)
        return (result, out)
    }

    /// emb_tc_accumulate (or its portable twin) into a copy of `acc`; nil when refused, after
    /// checking that `acc` was left untouched.
    func accumulate(_ bytes: [UInt8], into acc: [Float], weight: Float, portable: Bool) -> [Float]? {
        var result = acc
        var scratch = [Float](repeating: .nan, count: k + d)
        let ok = withExactBuffer(bytes) { p, n in
            portable ? emb_tc_accumulate_portable(pointer, p, n, &result, weight, &scratch)
                     : emb_tc_accumulate(pointer, p, n, &result, weight, &scratch)
        }
        if ok == 1 { return result }
        precondition(result.map(\.bitPattern) == acc.map(\.bitPattern), "a refused accumulate wrote acc")
        return nil
    }

    // MARK: - Reference implementations, from the header's description

    /// c = +0 for q = 0, step · (q − θ) for q > 0, step · (q + θ) for q < 0, in Float.
    func dequantize(_ q: [Int32]) -> [Float] {
        q.indices.map { j in
            let theta = tables[tableOf[j]].theta, v = Float(q[j])
            return q[j] == 0 ? 0 : q[j] > 0 ? step[j] * (v - theta) : step[j] * (v + theta)
        }
    }

    /// out = mean, then out[i] = out[i] + c_j * basis[j][i] for each c_j != 0 in ascending j.
    func synthesizeReference(_ coef: [Float]) -> [Float] {
        var out = mean
        for j in 0..<k where coef[j] != 0 {
            for i in 0..<d { out[i] = out[i] + coef[j] * basis[j * d + i] }
        }
        return out
    }

    /// The rANS encoder as the format describes it; nil where the kernel must return 0.
    func encodeReference(_ q: [Int32]) -> [UInt8]? {
        var x: UInt64 = 1 << 16
        var words: [UInt16] = []                       // in encoding order: the decoder reads them reversed
        var escapes: [Int16] = []
        for j in (0..<k).reversed() {
            let table = tables[tableOf[j]]
            let offset = Int(q[j]) - Int(table.lo)
            let s = (0..<table.count).contains(offset) ? offset : table.count
            let f = UInt64(table.freq[s])
            guard f > 0 else { return nil }
            if s == table.count {
                guard let value = Int16(exactly: q[j]) else { return nil }
                escapes.append(value)
            }
            if x >= f << 20 { words.append(UInt16(x & 0xFFFF)); x >>= 16 }
            x = (x / f) << 12 + x % f + UInt64(table.cum[s])
        }
        var bytes = withUnsafeBytes(of: UInt32(x).littleEndian, Array.init)
        for word in words.reversed() { bytes += withUnsafeBytes(of: word.littleEndian, Array.init) }
        for value in escapes.reversed() { bytes += withUnsafeBytes(of: value.littleEndian, Array.init) }
        return bytes
    }

    /// The rANS decoder as the format describes it, with every check; nil for a corrupt stream.
    func decodeReference(_ bytes: [UInt8]) -> [Int32]? {
        func u16(_ at: Int) -> UInt32? { at + 2 <= bytes.count ? UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 : nil }
        guard bytes.count >= 4 else { return nil }
        var x = UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24
        guard x >= 1 << 16 else { return nil }
        var at = 4
        var symbols: [Int] = []
        for j in 0..<k {
            let table = tables[tableOf[j]], cum = table.cum
            let slot = x & 4095
            let s = cum.lastIndex { $0 <= slot }!       // the s with cum[s] <= slot < cum[s+1]
            x = UInt32(table.freq[s]) * (x >> 12) + slot - cum[s]
            if x < 1 << 16 {
                guard let word = u16(at) else { return nil }
                x = x << 16 | word
                at += 2
            }
            symbols.append(s)
        }
        guard x == 1 << 16 else { return nil }
        var q: [Int32] = []
        for j in 0..<k {
            let table = tables[tableOf[j]]
            if symbols[j] < table.count {
                q.append(table.lo + Int32(symbols[j]))
            } else {
                guard let word = u16(at) else { return nil }
                q.append(Int32(Int16(bitPattern: UInt16(word))))
                at += 2
            }
        }
        return bytes[at...].allSatisfy { $0 == 0 } ? q : nil
    }

    // MARK: - Seeded models and rows

    /// A discrete Laplacian of the given scale over lo = −radius ... radius, every value and
    /// the escape at least `floor` of 4096, the rest to the most likely symbol.
    static func laplaceTable(scale: Double, radius: Int, theta: Float, escape: UInt16 = 4, floor: UInt16 = 1) -> Table {
        let weights = (-radius...radius).map { exp(-Double(abs($0)) / scale) }
        let total = weights.reduce(0, +)
        var freq = weights.map { max(floor, UInt16(Double(4096 - Int(escape) - (2 * radius + 1) * Int(floor)) * $0 / total)) }
        freq.append(escape)
        freq[radius] += UInt16(4096 - freq.reduce(0) { $0 + Int($1) })
        return Table(lo: Int32(-radius), theta: theta, freq: freq)
    }

    /// A random model: mean and basis in ±1 with some exact and negative zeros, positive steps,
    /// the first half of the coefficients on a wide table and the rest on a narrow one.
    static func random(d: Int, k: Int, tables: [Table]? = nil, using generator: inout CodecFixtures.Generator) -> TransformCodedModel {
        func value() -> Float {
            switch Int.random(in: 0..<20, using: &generator) {
            case 0: return 0
            case 1: return -0.0
            default: return Float.random(in: -1...1, using: &generator)
            }
        }
        let tables = tables ?? [laplaceTable(scale: 4, radius: 40, theta: 0.25), laplaceTable(scale: 0.7, radius: 12, theta: 0.125)]
        let tableOf = (0..<k).map { j in min(tables.count - 1, j * tables.count / k) }
        return TransformCodedModel(d: d, k: k, tables: tables, tableOf: tableOf,
                                   mean: (0..<d).map { _ in value() }, basis: (0..<k * d).map { _ in value() },
                                   step: (0..<k).map { _ in Float.random(in: 0.001...0.5, using: &generator) })
    }

    /// Values drawn from each coefficient's own table, with escapes drawn as values just
    /// outside its range or far out (up to ±32767).
    func randomValues(using generator: inout CodecFixtures.Generator) -> [Int32] {
        (0..<k).map { j in
            let table = tables[tableOf[j]], cum = table.cum
            let slot = UInt32.random(in: 0..<4096, using: &generator)
            let s = cum.lastIndex { $0 <= slot }!
            if s < table.count { return table.lo + Int32(s) }
            let below = Int(table.lo) - 1, above = Int(table.lo) + table.count
            let far = Bool.random(using: &generator)
            let magnitude = far ? Int.random(in: 1000...32767, using: &generator) : 0
            return Int32(Bool.random(using: &generator) ? (far ? -magnitude : below) : (far ? magnitude : above))
        }
    }
}
