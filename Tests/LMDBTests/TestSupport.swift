import Foundation
import Testing
@testable import LMDB

/// A fresh temporary directory per test (GRDB's `GRDBTestCase` idea): every suite stores one as a
/// property, so it lives exactly as long as the test and is removed afterwards.
final class Fixture: @unchecked Sendable {
    let directory: String

    init() throws {
        var template = Array((NSTemporaryDirectory() + "/lmdbtests-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        directory = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// Creates (if needed) and returns an environment directory inside the fixture.
    @discardableResult
    func makeDirectory(_ name: String = "env") throws -> String {
        let path = directory + "/" + name
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Opens (creating) the environment `name` inside the fixture.
    func open(_ name: String = "env", mapSize: Int = 1 << 24, growthTimeout: Double = 10,
              flags: Environment.Flags = [], maxReaders: Int = 126, maxDatabases: Int = 16,
              hugePages: Environment.HugePages = .off) throws -> Environment {
        var configuration = Environment.Configuration()
        configuration.hugePages = hugePages
        configuration.mapSize = mapSize
        configuration.growthTimeout = growthTimeout
        configuration.flags = flags
        configuration.maxReaders = maxReaders
        configuration.maxDatabases = maxDatabases
        return try Environment(path: makeDirectory(name), configuration: configuration)
    }
}

struct TestFailure: Error, Equatable {}

extension Transaction {
    func put(bytes: [UInt8], forKey key: UInt64, in database: Database, flags: PutFlags = []) throws {
        try bytes.withUnsafeBytes { try put($0, forKey: key, in: database, flags: flags) }
    }

    func put(bytes: [UInt8], forKey key: String, in database: Database, flags: PutFlags = []) throws {
        try bytes.withUnsafeBytes { try put($0, forKey: key, in: database, flags: flags) }
    }

    func put(_ text: String, forKey key: String, in database: Database, flags: PutFlags = []) throws {
        try put(bytes: Array(text.utf8), forKey: key, in: database, flags: flags)
    }

    func put(integer value: UInt64, forKey key: UInt64, in database: Database, flags: PutFlags = []) throws {
        try withUnsafeBytes(of: value) { try put($0, forKey: key, in: database, flags: flags) }
    }

    func bytes(forKey key: UInt64, in database: Database) throws -> [UInt8]? {
        try withValue(forKey: key, in: database) { $0.map { Array($0) } }
    }

    func bytes(forKey key: String, in database: Database) throws -> [UInt8]? {
        try withValue(forKey: key, in: database) { $0.map { Array($0) } }
    }

    func text(forKey key: String, in database: Database) throws -> String? {
        try withValue(forKey: key, in: database) { $0.map { String(decoding: $0, as: UTF8.self) } }
    }

    func integer(forKey key: UInt64, in database: Database) throws -> UInt64? {
        try withValue(forKey: key, in: database) { buffer in
            guard let buffer else { return nil }
            // > Values are only 2-byte aligned (DESIGN.md): never `load`, always `loadUnaligned`.
            return buffer.count == 8 ? buffer.loadUnaligned(as: UInt64.self) : nil
        }
    }
}

extension Environment {
    /// Opens one database (creating it) in a committed transaction.
    func database(_ name: String, integerKeys: Bool = false) throws -> Database {
        try openDatabases([name], flags: integerKeys ? [.create, .integerKey] : [.create])[0]
    }
}

/// A deterministic generator (SplitMix64) so "random" inputs are the same on every run.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// `count` bytes derived from `seed`, so a value can be re-derived to check it.
func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var generator = SeededGenerator(seed: seed)
    var bytes = [UInt8](repeating: 0, count: count)
    var index = 0
    while index < count {
        var word = generator.next()
        for _ in 0..<8 where index < count {
            bytes[index] = UInt8(truncatingIfNeeded: word)
            word >>= 8
            index += 1
        }
    }
    return bytes
}

/// A dedicated OS thread (not a cooperative-pool thread: LMDB calls block, and the pool has as
/// few threads as cores), joined with a timeout so a deadlock fails the test instead of hanging it.
final class TestThread: @unchecked Sendable {
    private let finished = DispatchSemaphore(value: 0)

    init(_ body: @escaping @Sendable () -> Void) {
        let finished = finished
        let thread = Thread {
            body()
            finished.signal()
        }
        thread.start()
    }

    /// True when the thread finished within `timeout` seconds.
    func join(timeout: Double = patience) -> Bool {
        finished.wait(timeout: .now() + timeout) == .success
    }
}

/// How long a test waits for something that must happen: a guard against a deadlock only, which
/// a busy machine never reaches (no test asserts how fast anything happens).
let patience = 600.0

/// Seconds taken by `body`.
func seconds(_ body: () throws -> Void) rethrows -> Double {
    let clock = ContinuousClock()
    let elapsed = try clock.measure(body)
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

/// Runs an executable and returns its exit status and output.
func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// The path of an executable on PATH, or nil.
func executable(_ name: String) -> String? {
    let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
    return paths.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// python3 with py-lmdb importable, for the tests that need a second process.
let pythonWithLMDB: String? = {
    guard let python = executable("python3"),
          let result = try? run(python, ["-c", "import lmdb"]), result.status == 0 else { return nil }
    return python
}()
