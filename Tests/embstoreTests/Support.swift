import Foundation
import Synchronization
import Testing

// End-to-end helpers: run the `embstore` binary and python3 as a user would, and make or read
// small .npy files. The .npy writer and reader here are deliberately independent of the NPY
// module, so that these tests check the CLI against the file format, not against itself.

/// Output of one finished process.
struct Run: CustomStringConvertible {
    let status: Int32
    let stdout: String
    let stderr: String
    /// The signal that ended the process (`status` is then its number too), nil when it exited.
    var signal: Int32? = nil

    var description: String {
        (signal.map { "killed by signal \($0)" } ?? "exit \(status)") + "\n--- stdout:\n\(stdout)\n--- stderr:\n\(stderr)"
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs `executable` with `arguments`; stdout and stderr go to temporary files, so a chatty
/// child can never block on a full pipe.
func runProcess(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil) throws -> Run {
    let scratch = FileManager.default.temporaryDirectory
        .appendingPathComponent("embstore-run-" + UUID().uuidString)
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    let outURL = scratch.appendingPathComponent("stdout")
    let errURL = scratch.appendingPathComponent("stderr")
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    let out = try FileHandle(forWritingTo: outURL)
    let err = try FileHandle(forWritingTo: errURL)
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    if let environment { process.environment = environment }
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    try out.close()
    try err.close()
    return Run(status: process.terminationStatus,
               stdout: String(decoding: try Data(contentsOf: outURL), as: UTF8.self),
               stderr: String(decoding: try Data(contentsOf: errURL), as: UTF8.self),
               signal: process.terminationReason == .uncaughtSignal ? process.terminationStatus : nil)
}

enum Tooling {
    /// The repository root (this file is Tests/embstoreTests/Support.swift).
    static let repoRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let toolsDirectory: URL = repoRoot.appendingPathComponent("tools")

    /// The executable `name` on the PATH, if any.
    static func executable(named name: String) -> URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { URL(fileURLWithPath: String($0)).appendingPathComponent(name) }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    /// The `embstore` executable SwiftPM built next to this test bundle: walk up from the test
    /// bundle / test process to the `.build/<triple>/<config>` directory that holds it.
    static let embstoreBinary: URL? = {
        let fm = FileManager.default
        var starts = [Bundle.main.bundleURL, Bundle.main.executableURL,
                      URL(fileURLWithPath: CommandLine.arguments.first ?? "")]
        for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
            starts.append(bundle.bundleURL)
        }
        for case let start? in starts {
            var dir = start.resolvingSymlinksInPath()
            for _ in 0..<6 {
                let candidate = dir.appendingPathComponent("embstore")
                var isDirectory: ObjCBool = false
                if fm.fileExists(atPath: candidate.path, isDirectory: &isDirectory), !isDirectory.boolValue,
                   fm.isExecutableFile(atPath: candidate.path) {
                    return candidate
                }
                dir = dir.deletingLastPathComponent()
            }
        }
        return nil
    }()

    static func envCommandSucceeds(_ arguments: [String]) -> Bool {
        guard let run = try? runProcess(URL(fileURLWithPath: "/usr/bin/env"), arguments) else { return false }
        return run.status == 0
    }

    static let hasNumpy: Bool = envCommandSucceeds(["python3", "-c", "import numpy"])
    static let hasPyLMDB: Bool = envCommandSucceeds(["python3", "-c", "import numpy, lmdb"])
    static let hasMdbStat: Bool = envCommandSucceeds(["sh", "-c", "command -v mdb_stat"])
}

/// Runs the `embstore` CLI.
func embstore(_ arguments: String...) throws -> Run {
    try embstore(arguments)
}

/// Runs the `embstore` CLI; `environment` adds to (or replaces) this process's variables.
func embstore(_ arguments: [String], environment: [String: String] = [:]) throws -> Run {
    guard let binary = Tooling.embstoreBinary else {
        throw TestFailure("cannot find the embstore executable next to the test bundle (\(Bundle.main.bundleURL.path))")
    }
    return try runProcess(binary, arguments,
                          environment: environment.isEmpty ? nil : ProcessInfo.processInfo.environment.merging(environment) { $1 })
}

/// Runs the CLI `copies` times at once, as separate processes; their runs (a failure to start
/// one is a run with status -1).
func embstoreAtOnce(_ copies: Int, _ arguments: String...) -> [Run] {
    let runs = Mutex<[Run]>([])
    DispatchQueue.concurrentPerform(iterations: copies) { _ in
        let run = (try? embstore(arguments)) ?? Run(status: -1, stdout: "", stderr: "did not run")
        runs.withLock { $0.append(run) }
    }
    return runs.withLock { $0 }
}

/// Runs the CLI and requires exit status 0.
@discardableResult
func embstoreOK(_ arguments: String...) throws -> Run {
    try embstoreOK(arguments)
}

@discardableResult
func embstoreOK(_ arguments: [String]) throws -> Run {
    let run = try embstore(arguments)
    guard run.status == 0 else {
        throw TestFailure("embstore \(arguments.joined(separator: " ")) failed: \(run)")
    }
    return run
}

/// Runs a python3 snippet with `tools/` on sys.path and `arguments` in sys.argv[1...]; requires
/// exit status 0 and returns stdout.
@discardableResult
func python(_ script: String, _ arguments: [String] = []) throws -> String {
    let prelude = "import sys; sys.path.insert(0, \(pythonLiteral(Tooling.toolsDirectory.path)))\n"
    let run = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", prelude + script] + arguments)
    guard run.status == 0 else { throw TestFailure("python3 failed: \(run)") }
    return run.stdout
}

/// Runs a python3 snippet whose last stdout line is a JSON object, and returns that object.
func pythonJSON(_ script: String, _ arguments: [String] = []) throws -> [String: Any] {
    let out = try python(script, arguments)
    guard let line = out.split(separator: "\n").last,
          let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
        throw TestFailure("python3 printed no JSON object: \(out)")
    }
    return object
}

func pythonLiteral(_ s: String) -> String {
    "'" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
}

/// Runs tools/make_table.py into `directory` (table.npy, ids.npy).
func makeTable(in directory: URL, n: Int, d: Int, seed: Int) throws {
    try python("import make_table; make_table.main(sys.argv[1:])",
               ["--out", directory.path, "--n", "\(n)", "--d", "\(d)", "--seed", "\(seed)"])
}

/// A scratch directory that is removed when `body` returns.
func withTemporaryDirectory<T>(_ body: (URL) throws -> T) throws -> T {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("embstore-tests-" + UUID().uuidString)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: url) }
    return try body(url)
}

// MARK: - .npy files

/// Bytes of a version 1.0 .npy file.
func npyFile(descr: String, shape: [Int], fortranOrder: Bool = false, payload: [UInt8]) -> Data {
    let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    var header = "{'descr': '\(descr)', 'fortran_order': \(fortranOrder ? "True" : "False"), 'shape': \(shapeText), }"
    while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
    header += "\n"
    var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
    let length = UInt16(header.utf8.count)
    data.append(contentsOf: [UInt8(length & 0xff), UInt8(length >> 8)])
    data.append(contentsOf: Array(header.utf8))
    data.append(contentsOf: payload)
    return data
}

func littleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    values.flatMap { value in withUnsafeBytes(of: value.littleEndian) { Array($0) } }
}

func float32Bytes(_ values: [Float]) -> [UInt8] { littleEndianBytes(values.map(\.bitPattern)) }

/// Writes a float32 [rows, d] C-order .npy file.
func writeFloat32(_ rows: [[Float]], to url: URL) throws {
    let d = rows.first?.count ?? 0
    try npyFile(descr: "<f4", shape: [rows.count, d], payload: float32Bytes(rows.flatMap { $0 })).write(to: url)
}

func writeInt64(_ values: [Int64], to url: URL) throws {
    try npyFile(descr: "<i8", shape: [values.count], payload: littleEndianBytes(values)).write(to: url)
}

func writeUInt64(_ values: [UInt64], to url: URL) throws {
    try npyFile(descr: "<u8", shape: [values.count], payload: littleEndianBytes(values)).write(to: url)
}

/// A small .npy reader for what `embstore export` writes: '<f4' [N, d] or '<u8' [N], C order.
struct NPYArray {
    let descr: String
    let shape: [Int]
    let payload: Data

    init(contentsOf url: URL) throws {
        let data = try Data(contentsOf: url)
        let bytes = [UInt8](data)
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1...5]) == Array("NUMPY".utf8) else {
            throw TestFailure("\(url.path): not a .npy file")
        }
        let major = bytes[6]
        let headerStart = major == 1 ? 10 : 12
        let headerLength = major == 1
            ? Int(bytes[8]) | Int(bytes[9]) << 8
            : Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
        let header = String(decoding: bytes[headerStart..<headerStart + headerLength], as: UTF8.self)
        func field(_ name: String, open: Character, close: Character) throws -> String {
            guard let key = header.range(of: "'\(name)':"),
                  let start = header[key.upperBound...].firstIndex(of: open),
                  let end = header[header.index(after: start)...].firstIndex(of: close) else {
                throw TestFailure("\(url.path): no \(name) in header \(header)")
            }
            return String(header[header.index(after: start)..<end])
        }
        descr = try field("descr", open: "'", close: "'")
        shape = try field("shape", open: "(", close: ")").split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.map { Int($0)! }
        guard header.contains("'fortran_order': False") else { throw TestFailure("\(url.path): Fortran order") }
        payload = data.subdata(in: headerStart + headerLength..<data.count)
    }

    var floats: [Float] {
        precondition(descr == "<f4")
        return stride(from: 0, to: payload.count, by: 4).map { i in
            Float(bitPattern: payload[payload.startIndex + i..<payload.startIndex + i + 4]
                .enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * $1.offset) })
        }
    }

    var uint64s: [UInt64] {
        precondition(descr == "<u8")
        return stride(from: 0, to: payload.count, by: 8).map { i in
            payload[payload.startIndex + i..<payload.startIndex + i + 8]
                .enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * $1.offset) }
        }
    }

    /// Float rows of a [N, d] array.
    var rows: [[Float]] {
        let all = floats
        let d = shape.count == 2 ? shape[1] : 1
        return stride(from: 0, to: all.count, by: max(d, 1)).map { Array(all[$0..<$0 + d]) }
    }
}

/// SplitMix64: deterministic pseudo-random numbers, so failures reproduce.
struct SplitMix {
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

/// Deterministic pseudo-random rows in [-1, 1) (SplitMix64), for tests that need no numpy.
func randomRows(_ n: Int, _ d: Int, seed: UInt64) -> [[Float]] {
    var random = SplitMix(seed: seed)
    return (0..<n).map { _ in (0..<d).map { _ in Float(Double(random.next() >> 11) / Double(1 << 53) * 2 - 1) } }
}

/// Export a table and return (ids, rows) read back from the files.
func exportTable(_ store: URL, _ table: String, in directory: URL) throws -> (ids: [UInt64], rows: [[Float]]) {
    let out = directory.appendingPathComponent("export-\(table)-\(UUID().uuidString).npy")
    let idsOut = directory.appendingPathComponent("export-\(table)-\(UUID().uuidString).ids.npy")
    try embstoreOK("export", store.path, "--table", table, "--out", out.path, "--ids-out", idsOut.path)
    return (try NPYArray(contentsOf: idsOut).uint64s, try NPYArray(contentsOf: out).rows)
}
