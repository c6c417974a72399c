// Fuzz target: the .npy reader (Sources/NPY): the header parsed from memory, then the bytes
// written to a file and opened, mapped and read as `ingest`, `stats` and `eval` read their
// inputs (a float matrix, ids, counts). Every read must throw a clear error or return what the
// header says, never crash or read outside the file.
import Foundation
import FuzzSupport
@testable import NPY

let scratch = (FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory())
    + "/embstore-fuzz-npy-\(getpid()).npy"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    for allowFloat64 in [false, true] {
        if let header = try? NPYHeader(parsing: bytes, path: "fuzz", allowFloat64: allowFloat64) {
            guard header.dataOffset >= 0, header.dataOffset + header.dataByteCount <= size else {
                promiseBroken("header says data at \(header.dataOffset) of \(header.dataByteCount) bytes in a file of \(size)")
            }
        }
    }
    guard FileManager.default.createFile(atPath: scratch, contents: Data(bytes)) else { fatalError("cannot write \(scratch)") }
    for allowFloat64 in [false, true] {
        guard let file = try? NPYFile(path: scratch, allowFloat64: allowFloat64) else { continue }
        _ = file.count
        _ = file.rawData.count
        if let (rows, columns) = try? file.matrixShape() {
            let take = min(rows, 64)
            let into = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, take * columns))
            defer { into.deallocate() }
            try? file.readFloatRows(0..<take, into: into)
            if rows > 0 { try? file.readFloatRows(rows - 1..<rows, into: into) }
            try? file.readFloatRows(rows..<rows + 1, into: into)   // out of range: an error
        }
        _ = try? file.readIDs()
        _ = try? file.readCounts()
        file.releaseResidentPages()
    }
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked {
        func npy(_ header: String, major: UInt8 = 1, payload: [UInt8]) -> [UInt8] {
            var text = header
            let prefix = major == 1 ? 10 : 12
            while (prefix + text.utf8.count + 1) % 64 != 0 { text += " " }
            text += "\n"
            let length = text.utf8.count
            let lengthBytes: [UInt8] = major == 1 ? [UInt8(length & 0xff), UInt8(length >> 8)]
                : [UInt8(length & 0xff), UInt8((length >> 8) & 0xff), UInt8((length >> 16) & 0xff), UInt8(length >> 24)]
            return [0x93] + Array("NUMPY".utf8) + [major, 0] + lengthBytes + Array(text.utf8) + payload
        }
        let floats = (0..<12).flatMap { i in withUnsafeBytes(of: Float(i) * 0.5) { Array($0) } }
        let halves: [UInt8] = (0..<12).flatMap { i in withUnsafeBytes(of: Float16(Float(i) * 0.25).bitPattern.littleEndian) { Array($0) } }
        let longs = (0..<6).flatMap { i in withUnsafeBytes(of: UInt64(i * 1000).littleEndian) { Array($0) } }
        let doubles = (0..<6).flatMap { i in withUnsafeBytes(of: Double(i) * 1.5) { Array($0) } }
        return [
            ("f4_3x4", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", payload: floats)),
            ("f2_3x4", npy("{'descr': '<f2', 'fortran_order': False, 'shape': (3, 4), }", payload: halves)),
            ("u8_ids", npy("{'descr': '<u8', 'fortran_order': False, 'shape': (6,), }", payload: longs)),
            ("i8_ids", npy("{'descr': '<i8', 'fortran_order': False, 'shape': (6,), }", payload: longs)),
            ("f8_counts", npy("{'descr': '<f8', 'fortran_order': False, 'shape': (6,), }", payload: doubles)),
            ("f4_counts", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (12,), }", payload: floats)),
            ("v2_header", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 6), }", major: 2, payload: floats)),
            ("fortran", npy("{'descr': '<f4', 'fortran_order': True, 'shape': (4, 3), }", payload: floats)),
            ("big_endian", npy("{'descr': '>f4', 'fortran_order': False, 'shape': (3, 4), }", payload: floats)),
            ("zero_rows", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }", payload: [])),
            ("scalar", npy("{'descr': '<u8', 'fortran_order': False, 'shape': (), }", payload: Array(longs[0..<8]))),
        ]
    }
    return 0
}

@_cdecl("FuzzNPY_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runFuzzer(argc, argv, fuzzOne)
}
