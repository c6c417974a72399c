import Foundation
import Testing
@testable import NPY

/// Runs python3 snippets so tests can create and check files with real numpy.
enum Python {
    /// False when python3 or numpy is missing; tests that need them are then skipped.
    static let hasNumpy: Bool = (try? run("import numpy")) != nil

    static let skipMessage: Comment = "python3 with numpy is not installed; skipping numpy interoperability tests"

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Runs `script` with `arguments` in sys.argv[1...]; throws with the combined output on a non-zero exit.
    @discardableResult
    static func run(_ script: String, _ arguments: String...) throws -> String {
        try run(script, arguments)
    }

    @discardableResult
    static func run(_ script: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script] + arguments
        // One pipe for both streams, drained before waiting, so a chatty script cannot deadlock us.
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(description: "python3 exited with \(process.terminationStatus):\n\(output)")
        }
        return output
    }
}

/// A scratch directory removed when the test lets go of it.
final class TemporaryDirectory {
    let path: String

    init() throws {
        path = (NSTemporaryDirectory() as NSString).appendingPathComponent("npy-tests-" + UUID().uuidString)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String) -> String { path + "/" + name }

    func contents() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: path).sorted() }
}

func writeBytes(_ bytes: [UInt8], to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func readBytes(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// Decodes little-endian fixed-width values, e.g. a numpy `tobytes()` dump.
func decode<T: FixedWidthInteger>(_ bytes: [UInt8], as type: T.Type) -> [T] {
    bytes.withUnsafeBytes { raw in
        (0..<(raw.count / MemoryLayout<T>.size)).map { raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self) }
    }
}

/// Builds a .npy file by hand, so malformed variants need no numpy.
func npyBytes(
    header: String, version: (UInt8, UInt8) = (1, 0), alignment: Int = 64, data: [UInt8] = []
) -> [UInt8] {
    let lengthSize = version.0 == 1 ? 2 : 4
    var dict = Array(header.utf8)
    while (8 + lengthSize + dict.count + 1) % alignment != 0 { dict.append(0x20) }
    dict.append(0x0a)
    var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [version.0, version.1]
    for i in 0..<lengthSize { bytes.append(UInt8(truncatingIfNeeded: dict.count >> (8 * i))) }
    return bytes + dict + data
}

/// Little-endian bytes of `values`.
func bytes<T: FixedWidthInteger>(of values: [T]) -> [UInt8] {
    values.withUnsafeBytes { Array($0) }
}

/// Runs `body`, expecting an NPYError whose message contains every fragment.
func expectError(
    _ fragments: String..., sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) {
    do {
        try body()
        Issue.record("expected an NPYError mentioning \(fragments)", sourceLocation: sourceLocation)
    } catch let error as NPYError {
        for fragment in fragments {
            #expect(error.message.contains(fragment), "\(error)", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected an NPYError, got \(error)", sourceLocation: sourceLocation)
    }
}

/// Opening must fail with a message containing every fragment.
func expectOpenError(_ path: String, _ fragments: String..., sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        _ = try NPYFile(path: path)
        Issue.record("expected opening \(path) to fail mentioning \(fragments)", sourceLocation: sourceLocation)
    } catch {
        #expect(error.path == path, sourceLocation: sourceLocation)
        #expect(error.description.hasPrefix(path + ": "), sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(error.message.contains(fragment), "\(error)", sourceLocation: sourceLocation)
        }
    }
}
