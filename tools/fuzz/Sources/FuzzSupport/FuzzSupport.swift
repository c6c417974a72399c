import CFuzzDriver
import Foundation

// What the fuzz targets share: the input split into chunks, each copied into an allocation of
// its own exact size (so AddressSanitizer sees a read one byte past a chunk), and writing a
// target's seed corpus (`EMBSTORE_FUZZ_WRITE_SEEDS=DIR`, from tools/fuzz.sh --seeds).

/// Fuzz input as chunks: each a little-endian u16 length, then that many bytes (a last chunk
/// cut short takes what is left). Every chunk is its own allocation, freed with the value.
public final class Chunks {
    public private(set) var buffers: [UnsafeRawBufferPointer] = []

    public init(_ bytes: UnsafeRawBufferPointer, limit: Int = 64) {
        var at = 0
        while at + 2 <= bytes.count, buffers.count < limit {
            let length = min(Int(bytes[at]) | Int(bytes[at + 1]) << 8, bytes.count - at - 2)
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 1)
            copy.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[at + 2..<at + 2 + length]))
            buffers.append(UnsafeRawBufferPointer(copy))
            at += 2 + length
        }
    }

    deinit {
        for buffer in buffers { UnsafeMutableRawBufferPointer(mutating: buffer).deallocate() }
    }

    public var count: Int { buffers.count }
    public subscript(i: Int) -> UnsafeRawBufferPointer { buffers[i] }

    /// Chunks as fuzz input bytes (the inverse of `init`).
    public static func encode(_ chunks: [[UInt8]]) -> [UInt8] {
        var bytes: [UInt8] = []
        for chunk in chunks {
            precondition(chunk.count <= 0xffff, "a chunk of \(chunk.count) bytes")
            bytes += [UInt8(chunk.count & 0xff), UInt8(chunk.count >> 8)] + chunk
        }
        return bytes
    }
}

/// Stops the fuzzer: a decoder broke a promise (a non-finite value decoded, a record outside
/// its part). libFuzzer reports the input as a crash.
public func promiseBroken(_ what: String) -> Never {
    fatalError("promise broken: \(what)")
}

/// When `EMBSTORE_FUZZ_WRITE_SEEDS` names a directory: writes `seeds` there (one file each,
/// named by the seed's index and label) and exits. Called from `LLVMFuzzerInitialize`.
public func writeSeedsIfAsked(_ seeds: () throws -> [(label: String, bytes: [UInt8])]) {
    guard let directory = ProcessInfo.processInfo.environment["EMBSTORE_FUZZ_WRITE_SEEDS"], !directory.isEmpty else { return }
    do {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (i, seed) in try seeds().enumerated() {
            try Data(seed.bytes).write(to: URL(fileURLWithPath: directory).appendingPathComponent(String(format: "seed-%02d-%@", i, seed.label)))
        }
        exit(0)
    } catch {
        fatalError("cannot write the seeds to \(directory): \(error)")
    }
}

/// Runs libFuzzer on `testOneInput` (a target's `LLVMFuzzerTestOneInput`).
public func runFuzzer(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>,
                      _ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt {
    embstore_fuzz_main(argc, argv, testOneInput)
}
