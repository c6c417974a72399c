import Foundation
import Testing
@testable import NPY

/// uint8 matrices (FBGEMM's packed rows) and the members of a numpy.savez archive.
@Suite("uint8 matrices and .npz archives")
struct NPZArchiveTests {
    @Test func uint8MatricesRoundTrip() throws {
        let directory = try TemporaryDirectory()
        let bytes = (0..<15).map { UInt8($0 * 17 % 256) }
        try bytes.withUnsafeBytes { try NPYWriter.writeUInt8(path: directory.file("p.npy"), rows: 3, columns: 5, values: $0) }
        let file = try NPYFile(path: directory.file("p.npy"))
        #expect(file.dtype == .uint8)
        let shape = try file.byteMatrixShape()
        #expect(shape.rows == 3 && shape.columns == 5)
        #expect(Array(file.rawData) == bytes)
        #expect(throws: NPYError.self) { try file.matrixShape() }   // not a float matrix
    }

    @Test(.enabled(if: Python.hasNumpy, Python.skipMessage))
    func membersOfSavezAreReadInPlace() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("s.npz"), compressed = directory.file("c.npz")
        try Python.run("""
            import sys, numpy as np
            np.savez(sys.argv[1], user=np.arange(12, dtype=np.float32).reshape(3, 4), packed=np.arange(6, dtype=np.uint8).reshape(2, 3))
            np.savez_compressed(sys.argv[2], user=np.zeros((2, 2), np.float32))
            """, path, compressed)
        let members = try NPZArchive.members(path: path).sorted { $0.name < $1.name }
        try #require(members.map(\.name) == ["packed.npy", "user.npy"])
        let user = try NPYFile(path: path, member: members[1])
        #expect(user.path == path + "[user.npy]")
        var values = [Float](repeating: 0, count: 12)
        try values.withUnsafeMutableBufferPointer { try user.readFloatRows(0..<3, into: $0) }
        #expect(values == (0..<12).map(Float.init))
        let packed = try NPYFile(path: path, member: members[0])
        #expect(Array(packed.rawData) == [0, 1, 2, 3, 4, 5])
        #expect { try NPZArchive.members(path: compressed) } throws: { "\($0)".contains("compressed") }
        #expect { try NPZArchive.members(path: directory.file("nothing")) } throws: { "\($0)".contains("cannot open") }
        try Data(repeating: 7, count: 100).write(to: URL(fileURLWithPath: directory.file("junk.npz")))
        #expect { try NPZArchive.members(path: directory.file("junk.npz")) } throws: { "\($0)".contains("end-of-central-directory") }
    }
}
