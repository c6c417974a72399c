import Testing
@testable import NPY

/// Reading hand-built files: header variations, every rejection, and the typed accessors. No numpy needed.
@Suite struct NPYFileTests {
    let directory: TemporaryDirectory
    init() throws { directory = try TemporaryDirectory() }

    func write(_ bytes: [UInt8], _ name: String = "a.npy") throws -> String {
        let path = directory.file(name)
        try writeBytes(bytes, to: path)
        return path
    }

    static let floats: [Float] = [1, -2.5, 3, 0, .infinity, -0.0]

    @Test(arguments: [
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
        "{'shape':(2,3),'descr':'<f4','fortran_order':False}",
        "{ \"fortran_order\" : False ,\n 'shape' : ( 2 , 3 ) , 'descr' : \"<f4\" }",
        "{'descr': '=f4', 'fortran_order': False, 'shape': (2L, 3L)}",
        "{'descr': 'f4', 'fortran_order': False, 'shape': (2, 3,),}",
    ])
    func headerVariationsParse(header: String) throws {
        let path = try write(npyBytes(header: header, alignment: 16, data: bytes(of: Self.floats.map(\.bitPattern))))
        let file = try NPYFile(path: path)
        #expect(file.dtype == .float32)
        #expect(file.shape == [2, 3])
        #expect(file.count == 6)
        #expect(try file.matrixShape() == (2, 3))
        var out = [Float](repeating: .nan, count: 6)
        try out.withUnsafeMutableBufferPointer { try file.readFloatRows(0..<2, into: $0) }
        #expect(out.map(\.bitPattern) == Self.floats.map(\.bitPattern))
    }

    @Test(arguments: [(UInt8(2), UInt8(0)), (3, 0)])
    func versions2And3Parse(major: UInt8, minor: UInt8) throws {
        let header = "{'descr': '<u8', 'fortran_order': False, 'shape': (3,), }"
        let path = try write(npyBytes(header: header, version: (major, minor), data: bytes(of: [UInt64(7), 0, .max])))
        #expect(try NPYFile(path: path).readIDs() == [7, 0, .max])
    }

    @Test func unalignedDataIsReadable() throws {
        // Data starting at an odd offset must not trap on misaligned loads.
        let header = "{'descr': '<i8', 'fortran_order': False, 'shape': (2,)}"
        let path = try write(npyBytes(header: header, alignment: 3, data: bytes(of: [Int64(5), 9])))
        #expect(try NPYFile(path: path).readIDs() == [5, 9])
        let half = "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 2)}"
        let halfPath = try write(npyBytes(header: half, alignment: 7, data: bytes(of: [UInt16(0x3c00), 0xc000])), "h.npy")
        var out: [Float] = [0, 0]
        try out.withUnsafeMutableBufferPointer { try NPYFile(path: halfPath).readFloatRows(0..<1, into: $0) }
        #expect(out == [1, -2])
    }

    /// readValues: any 1-D dtype as Double (access counts), unaligned data included; 2-D refused.
    @Test func readValuesWidensEveryDtype() throws {
        func path(_ descr: String, _ data: [UInt8], _ name: String) throws -> String {
            try write(npyBytes(header: "{'descr': '\(descr)', 'fortran_order': False, 'shape': (3,)}", alignment: 3, data: data), name)
        }
        let f8 = try NPYFile(path: path("<f8", bytes(of: [Double(0.5).bitPattern, Double(-3).bitPattern, Double.nan.bitPattern]), "f8.npy"))
        #expect(f8.dtype == .float64 && f8.dtype.descr == "<f8")
        let doubles = try f8.readValues()
        #expect(doubles[0] == 0.5 && doubles[1] == -3 && doubles[2].isNaN)
        #expect(try NPYFile(path: path("<f4", bytes(of: [Float(1.5), 2, 1e30].map(\.bitPattern)), "f4.npy")).readValues() == [1.5, 2, Double(Float(1e30))])
        #expect(try NPYFile(path: path("<f2", bytes(of: [UInt16(0x3c00), 0xc000, 0x7bff]), "f2.npy")).readValues() == [1, -2, 65504])
        #expect(try NPYFile(path: path("<i8", bytes(of: [Int64(-4), 0, 1 << 40]), "i8.npy")).readValues() == [-4, 0, 0x1p40])
        #expect(try NPYFile(path: path("<u8", bytes(of: [UInt64(7), 0, .max]), "u8.npy")).readValues() == [7, 0, 0x1p64])
        let matrix = try write(npyBytes(header: "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2)}",
                                        data: bytes(of: [Double(1).bitPattern, Double(2).bitPattern])), "m.npy")
        expectError("expected a 1-D array", "2-D float64") { _ = try NPYFile(path: matrix).readValues() }
        expectError("float32 or float16 matrix", "float64") { _ = try NPYFile(path: matrix).matrixShape() }
    }

    @Test func emptyAndZeroDimensionalArrays() throws {
        let empty = try NPYFile(path: write(npyBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4)}")))
        #expect(try empty.matrixShape() == (0, 4))
        #expect(empty.count == 0 && empty.rawData.isEmpty)
        try empty.readFloatRows(0..<0, into: UnsafeMutableBufferPointer(start: nil, count: 0))
        expectError("out of bounds") { try empty.readFloatRows(0..<1, into: UnsafeMutableBufferPointer(start: nil, count: 0)) }

        let noIDs = try NPYFile(path: write(npyBytes(header: "{'descr': '<i8', 'fortran_order': False, 'shape': (0,)}"), "i.npy"))
        #expect(try noIDs.readIDs() == [])

        let scalar = try NPYFile(path: write(
            npyBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': ()}", data: bytes(of: [Float(3.5).bitPattern])),
            "s.npy"))
        #expect(scalar.shape == [] && scalar.count == 1 && scalar.rawData.count == 4)
        #expect(scalar.rawData.loadUnaligned(as: Float.self) == 3.5)
        expectError("0-D float32", "shape ()") { _ = try scalar.matrixShape() }
    }

    @Test func fortranOrderIsHarmlessBelowTwoDimensions() throws {
        let header = "{'descr': '<i8', 'fortran_order': True, 'shape': (2,)}"
        #expect(try NPYFile(path: write(npyBytes(header: header, data: bytes(of: [Int64(1), 2])))).readIDs() == [1, 2])
    }

    @Test func readFloatRowsChecksBounds() throws {
        let values = (0..<12).map { Float($0) }
        let path = try write(npyBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 3)}",
                                      data: bytes(of: values.map(\.bitPattern))))
        let file = try NPYFile(path: path)
        var out = [Float](repeating: -1, count: 7)
        try out.withUnsafeMutableBufferPointer { try file.readFloatRows(2..<4, into: $0) }
        #expect(out == [6, 7, 8, 9, 10, 11, -1])
        out.withUnsafeMutableBufferPointer { buffer in
            expectError("rows 3..<5", "out of bounds", "4 rows") { try file.readFloatRows(3..<5, into: buffer) }
            expectError("rows -1..<1", "out of bounds") { try file.readFloatRows(-1..<1, into: buffer) }
            expectError("holds 7 floats", "need 9") { try file.readFloatRows(0..<3, into: buffer) }
        }
    }

    @Test func readIDsRejectsNegativeInt64NamingTheIndex() throws {
        let path = try write(npyBytes(header: "{'descr': '<i8', 'fortran_order': False, 'shape': (4,)}",
                                      data: bytes(of: [Int64(1), 2, -7, 4])))
        expectError("negative id -7 at index 2") { _ = try NPYFile(path: path).readIDs() }
    }

    @Test func accessorsRejectWrongDTypeAndRank() throws {
        let ids = try NPYFile(path: write(npyBytes(header: "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 1)}",
                                                   data: bytes(of: [Int64(1), 2]))))
        expectError("2-D int64", "(2, 1)") { _ = try ids.matrixShape() }
        expectError("1-D int64 or uint64", "2-D int64") { _ = try ids.readIDs() }
        let cube = try NPYFile(path: write(npyBytes(header: "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 1, 1)}",
                                                    data: [0, 0]), "c.npy"))
        expectError("3-D float16", "(1, 1, 1)") { _ = try cube.matrixShape() }
        let vector = try NPYFile(path: write(npyBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
                                                      data: [0, 0, 0, 0]), "v.npy"))
        expectError("1-D float32", "(1,)") { _ = try vector.readIDs() }
    }

    @Test func fileSystemErrors() throws {
        expectOpenError(directory.file("missing.npy"), "cannot open", "No such file or directory")
        expectOpenError(directory.path, "is a directory")
        expectOpenError(try write([], "empty.npy"), "empty file")
    }

    @Test(arguments: [
        ("{'descr': '>f4', 'fortran_order': False, 'shape': (1,)}", ["big-endian", "'>f4'", "'<f4' (float32)"]),
        ("{'descr': '<c8', 'fortran_order': False, 'shape': (1,)}", ["'<c8' (complex64)", "supported: '<f4'"]),
        ("{'descr': '<i4', 'fortran_order': False, 'shape': (1,)}", ["'<i4' (int32)", "supported"]),
        ("{'descr': '|O', 'fortran_order': False, 'shape': (1,)}", ["'|O' (object)", "supported"]),
        ("{'descr': [('a', '<f4'), ('b', '<i8')], 'fortran_order': False, 'shape': (1,)}",
         ["structured dtypes are not supported", "[('a', '<f4'), ('b', '<i8')]", "supported"]),
        ("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2)}",
         ["Fortran-order arrays are not supported; save with np.ascontiguousarray"]),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (3, -1)}", ["shape (3, -1) has a negative dimension"]),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': 3}", ["'shape' must be a tuple", "got 3"]),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (3.5,)}", ["does not parse", "expected ',' or ')' at byte 52"]),
        ("{'descr': '<f4', 'fortran_order': 0, 'shape': (3,)}", ["'fortran_order' must be True or False"]),
        ("{'descr': '<f4', 'shape': (3,)}", ["missing 'fortran_order'"]),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'extra': 1}", ["unexpected key 'extra'"]),
        ("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (3,)}", ["repeats key 'descr'"]),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4}", ["does not parse", "expected ',' or ')'"]),
        ("{'descr': '<f4, 'fortran_order': False, 'shape': (3,)}", ["does not parse"]),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (3,)", ["does not parse", "expected ',' or '}'"]),
        ("['descr', '<f4']", ["does not parse", "expected '{'"]),
        ("{'descr': '<f4', 'fortran_order': Flase, 'shape': (3,)}", ["unexpected name 'Flase'"]),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", ["integer too large"]),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4)}", ["too large"]),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk", ["unexpected text after the dict"]),
        ("{'descr': " + String(repeating: "(", count: 100), ["nesting deeper"]),
    ])
    func rejectedHeaders(header: String, fragments: [String]) throws {
        let path = try write(npyBytes(header: header, data: [UInt8](repeating: 0, count: 64)))
        do {
            _ = try NPYFile(path: path)
            Issue.record("expected \(header) to be rejected")
        } catch {
            for fragment in fragments { #expect(error.message.contains(fragment), "\(error)") }
        }
    }

    @Test func rejectedPrefixes() throws {
        expectOpenError(try write(Array("hello, world\n".utf8), "text.npy"), "not a .npy file", "\\x93NUMPY")
        expectOpenError(try write([0x93, 0x4e, 0x55], "short.npy"), "not a .npy file")
        expectOpenError(try write([0x93] + Array("NUMPY".utf8) + [1], "cut.npy"), "truncated header")
        let header = npyBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", version: (4, 0))
        expectOpenError(try write(header, "v4.npy"), "unsupported .npy format version 4.0", "1.0, 2.0, 3.0")
        let longHeader = [0x93] + Array("NUMPY".utf8) + [1, 0, 0xff, 0x7f] + Array("{'descr'".utf8)
        expectOpenError(try write(longHeader, "long.npy"), "truncated header", "32767")
        // Garbage where the header should be, with a plausible length.
        let garbage: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, 6, 0, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x0a]
        expectOpenError(try write(garbage, "garbage.npy"), "does not parse", "\\xde")
    }

    @Test func truncatedData() throws {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)}"
        expectOpenError(try write(npyBytes(header: header, data: [UInt8](repeating: 0, count: 45))),
                        "truncated: expected 48 bytes of data, found 45")
        expectOpenError(try write(npyBytes(header: header), "nodata.npy"), "truncated: expected 48 bytes of data, found 0")
    }

    @Test func errorDescription() {
        #expect(NPYError(path: "/x.npy", message: "bad").description == "/x.npy: bad")
    }
}
