// encode-bench: times the rowwise encoders on a .npy table or on synthetic rows, and optionally
// writes every payload to a file (for byte-for-byte comparisons between two builds).
//
//   encode-bench npy <table.npy> [--codecs int8,int4,int4h,int2h] [--reps R] [--dump DIR] [--rows N]
//   encode-bench synthetic [--codecs ...] [--dump DIR]
//   encode-bench stress [--rows TOTAL] [--codecs ...] [--dump DIR]
//
// Prints one line per codec: rows, dimension, best-of-R ns/row and rows/s (thread CPU time), and an FNV-1a hash
// of all payloads.
import EmbeddingCodecs
import Foundation

typealias Encoder = (UnsafeBufferPointer<Float>, UnsafeMutableRawBufferPointer) throws(CodecError) -> Void

let encoders: [String: (size: (Int) -> Int, encode: Encoder)] = [
    "int8": ({ Int8RowwiseCodec.payloadSize(dimension: $0) }, { r, p throws(CodecError) in try Int8RowwiseCodec.encode(r, into: p) }),
    "int4": ({ Int4RowwiseCodec.payloadSize(dimension: $0) }, { r, p throws(CodecError) in try Int4RowwiseCodec.encode(r, into: p) }),
    "int4h": ({ Int4HalfRowwiseCodec.payloadSize(dimension: $0) }, { r, p throws(CodecError) in try Int4HalfRowwiseCodec.encode(r, into: p) }),
    "int2h": ({ Int2HalfRowwiseCodec.payloadSize(dimension: $0) }, { r, p throws(CodecError) in try Int2HalfRowwiseCodec.encode(r, into: p) }),
]

func fail(_ message: String) -> Never {
    FileHandle.standardError.write((message + "\n").data(using: .utf8)!)
    exit(2)
}

/// Rows of a float32 or float16 C-order .npy file, widened to Float.
func loadNPY(_ path: String, maxRows: Int?) -> (rows: [Float], count: Int, dimension: Int) {
    guard let data = FileManager.default.contents(atPath: path) else { fail("cannot read \(path)") }
    let bytes = [UInt8](data)
    guard bytes.count > 10, bytes[0] == 0x93 else { fail("\(path): not a .npy file") }
    let major = bytes[6]
    let headerLength: Int, headerStart: Int
    if major == 1 {
        headerLength = Int(bytes[8]) | Int(bytes[9]) << 8; headerStart = 10
    } else {
        headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24; headerStart = 12
    }
    let header = String(decoding: bytes[headerStart..<headerStart + headerLength], as: UTF8.self)
    let isHalf = header.contains("'<f2'")
    guard isHalf || header.contains("'<f4'") else { fail("\(path): need <f4 or <f2, got \(header)") }
    guard let open = header.firstIndex(of: "("), let close = header.firstIndex(of: ")") else { fail("no shape") }
    let shape = header[header.index(after: open)..<close].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    guard shape.count == 2 else { fail("\(path): need a 2-D array") }
    let count = min(shape[0], maxRows ?? shape[0]), dimension = shape[1]
    let start = headerStart + headerLength
    var rows = [Float](repeating: 0, count: count * dimension)
    bytes.withUnsafeBytes { raw in
        for i in 0..<rows.count {
            if isHalf {
                rows[i] = Float(Float16(bitPattern: raw.loadUnaligned(fromByteOffset: start + 2 * i, as: UInt16.self)))
            } else {
                rows[i] = Float(bitPattern: raw.loadUnaligned(fromByteOffset: start + 4 * i, as: UInt32.self))
            }
        }
    }
    return (rows, count, dimension)
}

/// SplitMix64.
struct Generator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func gaussian(_ g: inout Generator) -> Float {
    let u1 = Double.random(in: Double.ulpOfOne..<1, using: &g), u2 = Double.random(in: 0..<1, using: &g)
    return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
}

/// Rows of many shapes (a row set per dimension): Gaussian, heavy-tailed, uniform far from zero,
/// constant, two-valued, huge (±3e38), subnormal, mixed magnitudes, integer-valued, halves.
func syntheticRows(dimension d: Int, count: Int, seed: UInt64, shapes: Int = 12) -> [Float] {
    var g = Generator(state: seed)
    var rows: [Float] = []
    rows.reserveCapacity(d * count)
    let huge = Float.greatestFiniteMagnitude
    for r in 0..<count {
        var row: [Float]
        switch r % shapes {
        case 0, 1: row = (0..<d).map { _ in gaussian(&g) }
        case 2:
            row = (0..<d).map { _ in gaussian(&g) / Float.random(in: 0.05...1, using: &g) }
            row[Int.random(in: 0..<d, using: &g)] *= 10
        case 3:
            let low = Float.random(in: -100...100, using: &g), width = Float.random(in: 0.001...10, using: &g)
            row = (0..<d).map { _ in low + width * Float.random(in: 0...1, using: &g) }
        case 4: row = [Float](repeating: Float.random(in: -5...5, using: &g), count: d)
        case 5:
            let a = gaussian(&g), b = gaussian(&g)
            row = (0..<d).map { _ in Bool.random(using: &g) ? a : b }
        case 6: row = (0..<d).map { _ in min(max(gaussian(&g) * 2e38, -huge), huge) }
        case 7: row = (0..<d).map { _ in Float(bitPattern: UInt32.random(in: 0...0x007F_FFFF, using: &g)) * (Bool.random(using: &g) ? 1 : -1) }
        case 8: row = (0..<d).map { _ in gaussian(&g) * Float(sign: .plus, exponent: Int.random(in: -40...40, using: &g), significand: 1) }
        case 9: row = (0..<d).map { _ in Float(Int.random(in: -8...8, using: &g)) }
        case 10: row = (0..<d).map { _ in Float(Float16(gaussian(&g) * 0.05)) }
        case 11:
            row = (0..<d).map { _ in 40 + gaussian(&g) * 0.1 }
            if d > 1 { row[0] = Bool.random(using: &g) ? huge : -3e38 }
        case 12: // ReLU outputs: nonnegative, exact zeros of either sign
            row = (0..<d).map { _ in let x = gaussian(&g); return x > 0 ? x : (Bool.random(using: &g) ? 0 : -0.0) }
        case 13: // nearly constant
            let c = gaussian(&g) * 100
            row = (0..<d).map { _ in c + Float(Int.random(in: -2...2, using: &g)) * c.ulp }
        case 14: // all zero (padding rows)
            row = [Float](repeating: 0, count: d)
        default: // a few large values among small ones
            row = (0..<d).map { _ in gaussian(&g) * 0.01 }
            for _ in 0..<Swift.max(1, d / 32) { row[Int.random(in: 0..<d, using: &g)] = gaussian(&g) * 50 }
        }
        rows += row
    }
    return rows
}

struct Options {
    var codecs = ["int8", "int4", "int4h", "int2h"]
    var reps = 3
    var dump: String?
    var maxRows: Int?
}

func parse(_ args: ArraySlice<String>) -> (positional: [String], options: Options) {
    var options = Options(), positional: [String] = []
    var i = args.startIndex
    while i < args.endIndex {
        let a = args[i]
        func value() -> String { i += 1; guard i < args.endIndex else { fail("\(a) needs a value") }; return args[i] }
        switch a {
        case "--codecs": options.codecs = value().split(separator: ",").map(String.init)
        case "--reps": options.reps = Int(value()) ?? 3
        case "--dump": options.dump = value()
        case "--rows": options.maxRows = Int(value())
        default: positional.append(a)
        }
        i += 1
    }
    return (positional, options)
}

/// This thread's CPU time: steadier than the wall clock on a shared machine.
func cpuNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

func fnv1a(_ bytes: UnsafeRawBufferPointer, _ hash: inout UInt64) {
    for b in bytes { hash = (hash ^ UInt64(b)) &* 0x100_0000_01B3 }
}

/// Encodes all rows with `codec` `reps` times; prints the best time and the hash, dumps the payloads.
@MainActor func run(label: String, rows: [Float], count: Int, dimension d: Int, options: Options) {
    for codec in options.codecs {
        guard let encoder = encoders[codec] else { fail("unknown codec \(codec)") }
        let size = encoder.size(d)
        var out = [UInt8](repeating: 0, count: count * size)
        var best = Double.infinity
        for _ in 0..<max(1, options.reps) {
            let start = cpuNanoseconds()
            rows.withUnsafeBufferPointer { rows in
                out.withUnsafeMutableBytes { out in
                    for i in 0..<count {
                        do {
                            try encoder.encode(UnsafeBufferPointer(rebasing: rows[i * d..<(i + 1) * d]),
                                               UnsafeMutableRawBufferPointer(rebasing: out[i * size..<(i + 1) * size]))
                        } catch { fail("row \(i): \(error)") }
                    }
                }
            }
            best = min(best, Double(cpuNanoseconds() - start))
        }
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        out.withUnsafeBytes { fnv1a($0, &hash) }
        let nsPerRow = best / Double(count)
        print("\(label) \(codec) rows=\(count) d=\(d) ns/row=\(String(format: "%.1f", nsPerRow)) rows/s=\(String(format: "%.0f", 1e9 / nsPerRow)) hash=\(String(hash, radix: 16))")
        if let dir = options.dump {
            try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: "\(dir)/\(label)-\(codec).bin", contents: Data(out))
        }
    }
}

let arguments = CommandLine.arguments
guard arguments.count >= 2 else { fail("usage: encode-bench npy <file> | synthetic  [--codecs a,b] [--reps R] [--dump DIR] [--rows N]") }
let (positional, options) = parse(arguments.dropFirst(2))
switch arguments[1] {
case "npy":
    guard let path = positional.first else { fail("npy needs a file") }
    let (rows, count, d) = loadNPY(path, maxRows: options.maxRows)
    let label = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent + "_d\(d)"
    run(label: label, rows: rows, count: count, dimension: d, options: options)
case "synthetic":
    for d in [1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 255, 256, 384, 1000, 1024] {
        let count = max(1200, 1_000_000 / d)
        let rows = syntheticRows(dimension: d, count: count, seed: 0x5EED &+ UInt64(d))
        run(label: "synthetic_d\(d)", rows: rows, count: count, dimension: d, options: options)
    }
case "stress":
    // More rows and shapes than `synthetic` (and other seeds): for comparing two builds' dumps.
    let total = options.maxRows ?? 2_000_000
    for d in [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 96, 100, 127, 128, 129, 200,
              255, 256, 257, 300, 384, 500, 512, 768, 1000, 1024, 1536, 2048] {
        let count = max(800, total / 16 / d)
        let rows = syntheticRows(dimension: d, count: count, seed: 0xA11CE &+ UInt64(d) &* 31, shapes: 16)
        run(label: "stress_d\(d)", rows: rows, count: count, dimension: d, options: options)
    }
default:
    fail("unknown mode \(arguments[1])")
}
