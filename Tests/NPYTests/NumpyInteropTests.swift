import Foundation
import Testing
@testable import NPY

/// One numpy-written file to read back: its dtype and shape.
struct ReadCase: CustomStringConvertible {
    let descr: String
    let shape: [Int]
    var description: String { "\(descr) \(pythonShape(shape))" }
}

/// Files written by numpy read back exactly, and files we write load in numpy unchanged.
@Suite(.enabled(if: Python.hasNumpy, Python.skipMessage))
struct NumpyInteropTests {
    let directory: TemporaryDirectory
    init() throws { directory = try TemporaryDirectory() }

    // For each "descr/shape" argument, saves a random array as DIR/descr_shape.npy (with specials and
    // extremes first), plus its raw bytes (.raw) and its values widened to float32 or uint64 (.expected),
    // which is what our accessors return. One process for all cases: importing numpy dominates.
    static let makeArrays = """
        import sys, numpy as np
        rng = np.random.default_rng(7)
        for case in sys.argv[2:]:
            descr, shape_text = case.split('/')
            shape = tuple(int(n) for n in shape_text.split(',') if n)
            path = sys.argv[1] + '/' + case.replace('/', '_') + '.npy'
            if descr[1] == 'f':
                a = (rng.standard_normal(shape) * 1000).astype(descr)
                specials = [0.0, -0.0, np.inf, -np.inf, 6.1e-5, 1e-7, 65504.0, -3.0e38]
                n = min(a.size, len(specials))
                a.reshape(-1)[:n] = np.array(specials[:n]).astype(descr)
                expected = a.astype('<f4')
            else:
                info = np.iinfo(descr)
                a = rng.integers(0, info.max, size=shape, dtype=descr, endpoint=True)
                a.reshape(-1)[:2] = [info.max, 0][:a.size]
                expected = a.astype('<u8')
            np.save(path, a)
            open(path + '.raw', 'wb').write(a.tobytes())
            open(path + '.expected', 'wb').write(expected.tobytes())
        """

    static let readCases: [ReadCase] = ["<f4", "<f2"].flatMap { descr in
        [[0, 4], [1, 1], [7, 3], [1000, 64]].map { ReadCase(descr: descr, shape: $0) }
    } + ["<i8", "<u8"].flatMap { descr in
        [[0], [1], [5], [1000]].map { ReadCase(descr: descr, shape: $0) }
    } + [
        ReadCase(descr: "<f4", shape: [6]), ReadCase(descr: "<f2", shape: [2, 3, 4]),
        ReadCase(descr: "<i8", shape: [7, 3]), ReadCase(descr: "<u8", shape: [0, 4]),
    ]

    @Test func readsNumpyFiles() throws {
        let names = Self.readCases.map { "\($0.descr)/\($0.shape.map(String.init).joined(separator: ","))" }
        try Python.run(Self.makeArrays, [directory.path] + names)
        for (c, name) in zip(Self.readCases, names) {
            do {
                try check(c, path: directory.file(name.replacingOccurrences(of: "/", with: "_") + ".npy"))
            } catch {
                Issue.record(error, "\(c)")
            }
        }
    }

    func check(_ c: ReadCase, path: String) throws {
        let file = try NPYFile(path: path)
        let isFloat = c.descr.hasSuffix("f4") || c.descr.hasSuffix("f2")
        #expect(file.dtype.descr == c.descr, "\(c)")
        #expect(file.shape == c.shape, "\(c)")
        #expect(Array(file.rawData) == (try readBytes(path + ".raw")), "\(c)")

        let expected = try readBytes(path + ".expected")
        switch (isFloat, c.shape.count) {
        case (true, 2):
            let (rows, columns) = try file.matrixShape()
            var all = [Float](repeating: .nan, count: rows * columns)
            try all.withUnsafeMutableBufferPointer { try file.readFloatRows(0..<rows, into: $0) }
            #expect(all.map(\.bitPattern) == decode(expected, as: UInt32.self), "\(c)")
            // A slice from the middle lands at the right offset.
            var tail = [Float](repeating: .nan, count: (rows - rows / 2) * columns)
            try tail.withUnsafeMutableBufferPointer { try file.readFloatRows(rows / 2..<rows, into: $0) }
            #expect(tail.map(\.bitPattern) == Array(all[(rows / 2 * columns)...]).map(\.bitPattern), "\(c)")
        case (false, 1):
            #expect(try file.readIDs() == decode(expected, as: UInt64.self), "\(c)")
        default:
            #expect(throws: NPYError.self, "\(c)") { try file.matrixShape() }
            #expect(throws: NPYError.self, "\(c)") { try file.readIDs() }
        }
    }

    @Test func readsEveryFloat16BitPattern() throws {
        let path = directory.file("all.npy")
        try Python.run("""
            import sys, numpy as np
            a = np.arange(65536, dtype='<u2').view('<f2').reshape(256, 256)
            np.save(sys.argv[1], a)
            open(sys.argv[1] + '.expected', 'wb').write(a.astype('<f4').tobytes())
            """, path)
        var values = [Float](repeating: 0, count: 65536)
        try values.withUnsafeMutableBufferPointer { try NPYFile(path: path).readFloatRows(0..<256, into: $0) }
        let expected = decode(try readBytes(path + ".expected"), as: UInt32.self).map(Float.init(bitPattern:))
        // NaN payload handling differs between numpy's hardware and software paths; NaN-ness must match.
        let mismatches = zip(values, expected).enumerated().filter { _, pair in
            pair.0.isNaN ? !pair.1.isNaN : pair.0.bitPattern != pair.1.bitPattern
        }
        #expect(mismatches.isEmpty, "first mismatches (index, ours, numpy): \(mismatches.prefix(5))")
    }

    @Test func readsOtherNumpyLayouts() throws {
        let path = directory.file("a")
        try Python.run("""
            import sys, numpy as np
            p = sys.argv[1]
            a = np.arange(12, dtype='<f4').reshape(3, 4)
            for version in [(2, 0), (3, 0)]:
                with open(p + '-v%d.npy' % version[0], 'wb') as f:
                    np.lib.format.write_array(f, a, version=version)
            np.save(p + '-scalar.npy', np.float32(3.5))
            """, path)
        for version in [2, 3] {
            let file = try NPYFile(path: path + "-v\(version).npy")
            var values = [Float](repeating: 0, count: 12)
            try values.withUnsafeMutableBufferPointer { try file.readFloatRows(0..<3, into: $0) }
            #expect(values == (0..<12).map(Float.init))
        }
        let scalar = try NPYFile(path: path + "-scalar.npy")
        #expect(scalar.shape == [] && scalar.count == 1)
        #expect(scalar.rawData.loadUnaligned(as: Float.self) == 3.5)
    }

    @Test func rejectsUnsupportedNumpyFiles() throws {
        let p = directory.file("bad")
        try Python.run("""
            import sys, numpy as np
            p = sys.argv[1]
            a = np.arange(12, dtype='<f4').reshape(3, 4)
            np.save(p + '-be.npy', a.astype('>f4'))
            np.save(p + '-f8.npy', a.astype('<f8'))
            np.save(p + '-i4.npy', np.arange(5, dtype='<i4'))
            np.save(p + '-object.npy', np.array([1, 'x'], dtype=object), allow_pickle=True)
            np.save(p + '-struct.npy', np.zeros(3, dtype=[('a', '<f4'), ('b', '<i8')]))
            np.save(p + '-fortran.npy', np.asfortranarray(a))
            np.save(p + '-cut.npy', a)
            data = open(p + '-cut.npy', 'rb').read()
            open(p + '-cut.npy', 'wb').write(data[:-3])
            """, p)
        let supported = "supported: '<f4' (float32), '<f2' (float16), '<i8' (int64), '<u8' (uint64)"
        expectOpenError(p + "-be.npy", "big-endian dtype '>f4'", supported)
        expectOpenError(p + "-f8.npy", "unsupported dtype '<f8' (float64)", supported)
        expectOpenError(p + "-i4.npy", "unsupported dtype '<i4' (int32)", supported)
        expectOpenError(p + "-object.npy", "unsupported dtype '|O' (object)", supported)
        expectOpenError(p + "-struct.npy", "structured dtypes are not supported", supported)
        expectOpenError(p + "-fortran.npy", "Fortran-order arrays are not supported; save with np.ascontiguousarray")
        expectOpenError(p + "-cut.npy", "truncated: expected 48 bytes of data, found 45")
    }

    // Loads a file we wrote and compares it, byte for byte, with the sidecar raw values; also checks
    // the header numpy sees and the 64-byte data alignment.
    static let checkWritten = """
        import sys, numpy as np
        path, descr, shape = sys.argv[1], sys.argv[2], tuple(int(n) for n in sys.argv[3].split(',') if n)
        a = np.load(path)
        with open(path, 'rb') as f:
            version = np.lib.format.read_magic(f)
            assert version == (1, 0), version
            np.lib.format.read_array_header_1_0(f)
            offset = f.tell()
        assert offset % 64 == 0, offset
        assert a.dtype == np.dtype(descr), a.dtype
        assert a.shape == shape, a.shape
        assert a.flags.c_contiguous
        if descr == '<f2':
            with np.errstate(over='ignore'):
                e = np.frombuffer(open(path + '.raw', 'rb').read(), dtype='<f4').astype('<f2').reshape(shape)
            nan = np.isnan(e)
            assert (np.isnan(a) == nan).all(), 'NaN mismatch'
            bad = np.nonzero(a.view('<u2')[~nan] != e.view('<u2')[~nan])[0]
            assert bad.size == 0, [(float(e[~nan][i]), hex(int(a.view('<u2')[~nan][i])), hex(int(e.view('<u2')[~nan][i]))) for i in bad[:5]]
        else:
            e = np.frombuffer(open(path + '.raw', 'rb').read(), dtype=descr).reshape(shape)
            assert a.tobytes() == e.tobytes() and np.array_equal(a, e, equal_nan=True)
        print('ok')
        """

    func checkInNumpy(_ path: String, descr: String, shape: [Int], raw: [UInt8]) throws {
        try writeBytes(raw, to: path + ".raw")
        #expect(try Python.run(Self.checkWritten, path, descr, shape.map(String.init).joined(separator: ",")) == "ok\n")
    }

    @Test(arguments: [[7, 3], [0, 5], [1, 1], [1000, 64]])
    func writtenFloat32LoadsInNumpy(shape: [Int]) throws {
        let values = (0..<(shape[0] * shape[1])).map { Float(sin(Double($0)) * 1000) }
        var specials = values
        if specials.count >= 4 { specials.replaceSubrange(0..<4, with: [.infinity, -0.0, .nan, .leastNonzeroMagnitude]) }
        let path = directory.file("w.npy")
        try specials.withUnsafeBufferPointer {
            try NPYWriter.writeFloat32(path: path, rows: shape[0], columns: shape[1], values: $0)
        }
        try checkInNumpy(path, descr: "<f4", shape: shape, raw: bytes(of: specials.map(\.bitPattern)))

        let file = try NPYFile(path: path)
        var back = [Float](repeating: 0, count: specials.count)
        try back.withUnsafeMutableBufferPointer { try file.readFloatRows(0..<shape[0], into: $0) }
        #expect(back.map(\.bitPattern) == specials.map(\.bitPattern))
        // Only the final file remains: no temporary left behind.
        #expect(try directory.contents() == ["w.npy", "w.npy.raw"])
    }

    @Test func writtenFloat16MatchesNumpyRounding() throws {
        // Every half value, the midpoints between neighbours (ties), one float ulp either side of them,
        // and random bit patterns covering overflow, underflow and NaN.
        var values: [Float] = []
        for h in 0..<UInt16(0x7c00) {
            let low = floatFromHalfBits(h), high = floatFromHalfBits(h + 1)
            let middle = Float((Double(low) + Double(high)) / 2)
            values += [low, middle, middle.nextUp, middle.nextDown]
        }
        values += values.map { -$0 }
        var generator = SystemRandomNumberGenerator()
        values += (0..<100_000).map { _ in Float(bitPattern: generator.next()) }
        values += [.infinity, -.infinity, .nan, 65504, 65519.99, 65520, 1e-8, 2.9802322e-8, 2.9802326e-8]
        let columns = 4
        values += [Float](repeating: 0, count: (columns - values.count % columns) % columns)
        let rows = values.count / columns
        let path = directory.file("h.npy")
        try values.withUnsafeBufferPointer {
            try NPYWriter.writeFloat16(path: path, rows: rows, columns: columns, values: $0)
        }
        try checkInNumpy(path, descr: "<f2", shape: [rows, columns], raw: bytes(of: values.map(\.bitPattern)))
    }

    @Test func writtenIDsLoadInNumpy() throws {
        let unsigned: [UInt64] = [0, 1, 42, .max, 1 << 63, 123_456_789_012]
        let signed: [Int64] = [.min, -1, 0, 1, .max, 987_654_321]
        let u = directory.file("u.npy"), i = directory.file("i.npy"), e = directory.file("e.npy")
        try NPYWriter.writeUInt64(path: u, values: unsigned)
        try NPYWriter.writeInt64(path: i, values: signed)
        try NPYWriter.writeUInt64(path: e, values: [])
        try checkInNumpy(u, descr: "<u8", shape: [6], raw: bytes(of: unsigned))
        try checkInNumpy(i, descr: "<i8", shape: [6], raw: bytes(of: signed))
        try checkInNumpy(e, descr: "<u8", shape: [0], raw: [])
        #expect(try NPYFile(path: u).readIDs() == unsigned)
        #expect(try NPYFile(path: e).readIDs() == [])
        expectError("negative id -9223372036854775808 at index 0") { _ = try NPYFile(path: i).readIDs() }
    }
}

/// Writer behaviour that needs no numpy.
@Suite struct NPYWriterTests {
    let directory: TemporaryDirectory
    init() throws { directory = try TemporaryDirectory() }

    @Test func rejectsBadArguments() throws {
        let path = directory.file("x.npy")
        let values: [Float] = [1, 2, 3]
        values.withUnsafeBufferPointer { buffer in
            expectError("values.count 3 does not match rows 2 × columns 2") {
                try NPYWriter.writeFloat32(path: path, rows: 2, columns: 2, values: buffer)
            }
            expectError("negative matrix shape (-1, 3)") {
                try NPYWriter.writeFloat16(path: path, rows: -1, columns: 3, values: buffer)
            }
            expectError("cannot create temporary file", "No such file or directory") {
                try NPYWriter.writeFloat32(path: directory.file("no/such/dir.npy"), rows: 1, columns: 3, values: buffer)
            }
            expectError("cannot open it for writing", "Is a directory") {
                try NPYWriter.writeFloat32(path: directory.path, rows: 1, columns: 3, values: buffer)
            }
            // A device is written in place, and its write error is the writer's: /dev/full
            // takes nothing (and is still a device afterwards, not a file renamed over it).
            expectError("cannot write it", "No space left on device") {
                try NPYWriter.writeFloat32(path: "/dev/full", rows: 1, columns: 3, values: buffer)
            }
        }
        var status = stat()
        #expect(stat("/dev/full", &status) == 0 && (status.st_mode & S_IFMT) == S_IFCHR)
        #expect(try directory.contents() == [])
    }

    @Test func writesThroughAPipe() throws {
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        let values: [UInt64] = [7, 8, 9]
        try NPYWriter.writeUInt64(path: "/proc/self/fd/\(ends[1])", values: values)
        close(ends[1])
        var bytes = [UInt8](repeating: 0, count: 4096)
        var total = 0
        while case let n = read(ends[0], &bytes[total], bytes.count - total), n > 0 { total += n }
        close(ends[0])
        let path = directory.file("piped.npy")
        try Data(bytes[0..<total]).write(to: URL(fileURLWithPath: path))
        #expect(try NPYFile(path: path).readIDs() == values)
    }

    @Test func replacesAnExistingFile() throws {
        let path = directory.file("ids.npy")
        try NPYWriter.writeUInt64(path: path, values: [1, 2, 3])
        try NPYWriter.writeUInt64(path: path, values: [4])
        #expect(try NPYFile(path: path).readIDs() == [4])
        #expect(try directory.contents() == ["ids.npy"])
    }

    @Test func headersAreAlignedAndSwitchToVersion2WhenLong() throws {
        for shape in [[0], [3, 4], [Int.max, 1]] {
            let header = NPYWriter.headerBytes(dtype: .float32, shape: shape)
            #expect(header.count % 64 == 0 && header[6] == 1 && header.last == 0x0a)
        }
        let manyDimensions = [Int](repeating: 1, count: 22_000)
        let header = NPYWriter.headerBytes(dtype: .int64, shape: manyDimensions)
        #expect(header.count % 64 == 0 && header[6] == 2 && header.count > 65_535)
        let path = directory.file("v2.npy")
        try writeBytes(header + bytes(of: [Int64(5)]), to: path)
        let file = try NPYFile(path: path)
        #expect(file.shape == manyDimensions && file.count == 1)
    }
}
