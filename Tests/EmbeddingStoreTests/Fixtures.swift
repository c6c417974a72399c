import EmbeddingCodecs
import Foundation
@testable import EmbeddingStore

/// A fresh directory under the system temp dir, removed when the fixture goes away.
final class TemporaryDirectory {
    let path: String

    init() {
        path = NSTemporaryDirectory() + "embstore-test-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// A path inside the directory (not created).
    func file(_ name: String) -> String { path + "/" + name }
}

/// Deterministic pseudo-random numbers (SplitMix64) so failures reproduce.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A standard normal sample (Box–Muller).
    mutating func gaussian() -> Float {
        let u1 = max(Double.random(in: 0..<1, using: &self), 1e-300)
        let u2 = Double.random(in: 0..<1, using: &self)
        return Float((-2 * log(u1)).squareRoot() * cos(2 * .pi * u2))
    }
}

/// Rows shaped like trained embeddings: clustered, with a decaying spectrum and varying norms.
func embeddingRows(count: Int, dimension d: Int, clusters: Int = 16, seed: UInt64 = 1) -> [Float] {
    var random = SeededRandom(seed: seed)
    var centres = [Float](repeating: 0, count: clusters * d)
    for i in centres.indices { centres[i] = random.gaussian() }
    var rows = [Float](repeating: 0, count: count * d)
    for i in 0..<count {
        let c = Int(random.next() % UInt64(clusters))
        let norm = Float(exp(0.35 * Double(random.gaussian())))
        for j in 0..<d {
            let decay = Float(pow(Double(j + 1), -0.6))
            rows[i * d + j] = 0.1 * norm * decay * (0.6 * centres[c * d + j] + 0.8 * random.gaussian())
        }
    }
    return rows
}

/// Sum of squared differences.
func squaredError(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
    zip(a, b).reduce(0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
}

func squaredError(_ a: [Float], _ b: [Float]) -> Double { squaredError(a[...], b[...]) }

func squaredNorm(_ a: [Float]) -> Double { a.reduce(0) { $0 + Double($1) * Double($1) } }

/// Opens a writable store in `directory`.
/// A new (or reopened) store in `directory`; `formatVersion` is the version a new one is created
/// at (below 5: no record seals, as a writer of that version made it).
func makeStore(_ directory: TemporaryDirectory, name: String = "store", mapSize: Int = 1 << 24,
               formatVersion: UInt32 = StoreFormat.version) throws -> Store {
    var options = Store.Options()
    options.initialMapSize = mapSize
    options.formatVersion = formatVersion
    return try Store(path: directory.file(name), options: options)
}

/// A value behind an NSLock: what test threads share when ThreadSanitizer runs over them
/// (tools/sanitizers.sh thread). TSan sees NSLock but not Synchronization.Mutex on Linux, so
/// state kept under a Mutex and touched by several threads is reported as a race.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
