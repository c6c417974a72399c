#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes C-order little-endian .npy files that numpy loads directly.
///
/// Every writer goes through a temporary file in the same directory that is fsynced and then renamed,
/// so a crash never leaves a half-written file under the final name.
public enum NPYWriter {
    /// Writes a C-order little-endian float32 [rows, columns] array (format 1.0 header, or 2.0 if needed),
    /// via a temp file + rename so a crash never leaves a half file under the final name.
    public static func writeFloat32(
        path: String, rows: Int, columns: Int, values: UnsafeBufferPointer<Float>
    ) throws(NPYError) {
        try checkMatrix(path: path, rows: rows, columns: columns, count: values.count)
        try writeFile(path: path, dtype: .float32, shape: [rows, columns], data: UnsafeRawBufferPointer(values))
    }

    /// Writes a 1-D uint64 array.
    public static func writeUInt64(path: String, values: [UInt64]) throws(NPYError) {
        try writeArray(path: path, dtype: .uint64, shape: [values.count], values: values)
    }

    /// Writes a 1-D int64 array.
    public static func writeInt64(path: String, values: [Int64]) throws(NPYError) {
        try writeArray(path: path, dtype: .int64, shape: [values.count], values: values)
    }

    /// Writes a 1-D uint8 array.
    public static func writeUInt8(path: String, values: [UInt8]) throws(NPYError) {
        try writeArray(path: path, dtype: .uint8, shape: [values.count], values: values)
    }

    /// Writes a uint8 [rows, columns] array (FBGEMM's packed rows).
    public static func writeUInt8(path: String, rows: Int, columns: Int, values: UnsafeRawBufferPointer) throws(NPYError) {
        try checkMatrix(path: path, rows: rows, columns: columns, count: values.count)
        try writeFile(path: path, dtype: .uint8, shape: [rows, columns], data: values)
    }

    /// Writes a float16 [rows, columns] array, rounding each value to nearest-even as numpy does; for tests and tools.
    public static func writeFloat16(
        path: String, rows: Int, columns: Int, values: UnsafeBufferPointer<Float>
    ) throws(NPYError) {
        try checkMatrix(path: path, rows: rows, columns: columns, count: values.count)
        let halves = values.map(halfBitsFromFloat)
        try writeArray(path: path, dtype: .float16, shape: [rows, columns], values: halves)
    }

    private static func checkMatrix(path: String, rows: Int, columns: Int, count: Int) throws(NPYError) {
        guard rows >= 0, columns >= 0 else {
            throw NPYError(path: path, message: "negative matrix shape (\(rows), \(columns))")
        }
        let (expected, overflow) = rows.multipliedReportingOverflow(by: columns)
        guard !overflow, expected == count else {
            throw NPYError(path: path, message: "values.count \(count) does not match rows \(rows) × columns \(columns)")
        }
    }

    /// The magic, version, length and padded header dict. Version 1.0 unless the dict needs more than
    /// 65535 bytes; the data then starts on a 64-byte boundary as numpy's readers prefer.
    static func headerBytes(dtype: NPYDType, shape: [Int]) -> [UInt8] {
        let dict = Array("{'descr': '\(dtype.descr)', 'fortran_order': False, 'shape': \(pythonShape(shape)), }".utf8)
        var prefixSize = 10
        var length = (prefixSize + dict.count + 1 + 63) / 64 * 64 - prefixSize
        if length > 0xffff {
            prefixSize = 12
            length = (prefixSize + dict.count + 1 + 63) / 64 * 64 - prefixSize
        }
        var bytes = NPYHeader.magic + [prefixSize == 10 ? 1 : 2, 0]
        for i in 0..<(prefixSize - 8) { bytes.append(UInt8(truncatingIfNeeded: length >> (8 * i))) }
        bytes += dict
        bytes += Array(repeating: 0x20, count: length - dict.count - 1)
        bytes.append(0x0a)
        return bytes
    }

    private static func writeArray<Element>(
        path: String, dtype: NPYDType, shape: [Int], values: [Element]
    ) throws(NPYError) {
        // Array.withUnsafeBytes only rethrows untyped errors, so the error is carried out by value.
        let failure: NPYError? = values.withUnsafeBytes { bytes in
            do throws(NPYError) {
                try writeFile(path: path, dtype: dtype, shape: shape, data: bytes)
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
    }

    private static func writeFile(
        path: String, dtype: NPYDType, shape: [Int], data: UnsafeRawBufferPointer
    ) throws(NPYError) {
        let header = headerBytes(dtype: dtype, shape: shape)
        var status = stat()
        if stat(path, &status) == 0 && (status.st_mode & S_IFMT) != S_IFREG {
            // A device, pipe or terminal (`/dev/stdout`): written in place, never replaced by a
            // rename (which, run as root, would put a regular file where /dev/full was).
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { throw NPYError(path: path, message: "cannot open it for writing: \(errnoText())") }
            var failure = writeAll(fd, header: header, data: data)
            if close(fd) != 0 && failure == nil { failure = "close failed: \(errnoText())" }
            if let failure { throw NPYError(path: path, message: "cannot write it: \(failure)") }
            return
        }
        let temporary = path + ".tmp-\(getpid())-\(String(UInt32.random(in: .min ... .max), radix: 16))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw NPYError(path: path, message: "cannot create temporary file \(temporary): \(errnoText())")
        }
        var failure = writeAll(fd, header: header, data: data)
        if failure == nil && fsync(fd) != 0 { failure = "fsync failed: \(errnoText())" }
        if close(fd) != 0 && failure == nil { failure = "close failed: \(errnoText())" }
        if let failure {
            unlink(temporary)
            throw NPYError(path: path, message: "cannot write temporary file \(temporary): \(failure)")
        }
        guard rename(temporary, path) == 0 else {
            let reason = errnoText()
            unlink(temporary)
            throw NPYError(path: path, message: "cannot rename \(temporary) into place: \(reason)")
        }
        syncDirectory(containing: path)
    }

    /// Writes the header, then the data; returns the failure text, or nil.
    private static func writeAll(_ fd: Int32, header: [UInt8], data: UnsafeRawBufferPointer) -> String? {
        header.withUnsafeBytes { writeAll(fd, $0) } ?? writeAll(fd, data)
    }

    /// Writes every byte, retrying short writes and EINTR; returns the failure text, or nil.
    private static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> String? {
        var offset = 0
        while offset < bytes.count {
            // Linux transfers at most ~2 GiB per call anyway.
            let written = write(fd, bytes.baseAddress! + offset, min(bytes.count - offset, 1 << 30))
            if written < 0 {
                if errno == EINTR { continue }
                return errnoText()
            }
            if written == 0 { return "write made no progress" }
            offset += written
        }
        return nil
    }

    /// Makes the rename itself durable. Best effort: some file systems refuse fsync on directories,
    /// and the data is already safe under one name or the other.
    private static func syncDirectory(containing path: String) {
        let directory: String
        if let slash = path.lastIndex(of: "/") {
            directory = slash == path.startIndex ? "/" : String(path[..<slash])
        } else {
            directory = "."
        }
        let fd = open(directory, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        fsync(fd)
        close(fd)
    }
}
