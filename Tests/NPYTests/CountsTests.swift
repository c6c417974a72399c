import Testing
@testable import NPY

/// `readCounts`: the lookup counts of `embstore stats --freq`, from any of four dtypes, and
/// float64 only when asked for.
@Suite struct CountsTests {
    let directory: TemporaryDirectory
    init() throws { directory = try TemporaryDirectory() }

    func write(_ descr: String, _ data: [UInt8], count: Int, _ name: String) throws -> String {
        let path = directory.file(name)
        try writeBytes(npyBytes(header: "{'descr': '\(descr)', 'fortran_order': False, 'shape': (\(count),)}", data: data), to: path)
        return path
    }

    @Test func everyCountTypeReadsAsDouble() throws {
        let u8 = try write("<u8", bytes(of: [UInt64(0), 7, 1 << 40]), count: 3, "u8.npy")
        #expect(try NPYFile(path: u8).readCounts() == [0, 7, Double(1 << 40)])
        let i8 = try write("<i8", bytes(of: [Int64(3), -2]), count: 2, "i8.npy")
        #expect(try NPYFile(path: i8).readCounts() == [3, -2], "negative counts come back for the caller to judge")
        let f4 = try write("<f4", bytes(of: [Float(1.5).bitPattern, Float.nan.bitPattern]), count: 2, "f4.npy")
        let floats = try NPYFile(path: f4).readCounts()
        #expect(floats[0] == 1.5 && floats[1].isNaN)
        let f8 = try write("<f8", bytes(of: [Double(0.25).bitPattern, Double(1e12).bitPattern]), count: 2, "f8.npy")
        #expect(try NPYFile(path: f8, allowFloat64: true).readCounts() == [0.25, 1e12])
    }

    @Test func float64IsRefusedUnlessAllowed() throws {
        let f8 = try write("<f8", bytes(of: [Double(1).bitPattern]), count: 1, "f8.npy")
        expectOpenError(f8, "unsupported dtype '<f8' (float64)")
        #expect(throws: NPYError.self) { _ = try NPYFile(path: f8, allowFloat64: true).readIDs() }
        #expect(throws: NPYError.self) { _ = try NPYFile(path: f8, allowFloat64: true).matrixShape() }
    }

    @Test func countsMustBeOneDimensional() throws {
        let path = directory.file("m.npy")
        try writeBytes(npyBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2)}",
                                data: bytes(of: [Float(1).bitPattern, Float(2).bitPattern])), to: path)
        expectError("1-D uint64, int64, float32 or float64", "(1, 2)") { _ = try NPYFile(path: path).readCounts() }
        let half = try write("<f2", [0, 0x3c], count: 1, "h.npy")
        expectError("1-D uint64, int64, float32 or float64", "float16") { _ = try NPYFile(path: half).readCounts() }
    }
}
