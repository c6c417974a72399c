#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A memory-mapped, read-only .npy file. Opening validates everything; reading never traps on bad files.
///
/// The map is private and read-only, so multi-GB files are paged in on demand rather than loaded.
/// As with any map, truncating the file while it is open is undefined (SIGBUS); offline jobs own their inputs.
/// Sendable because nothing changes after init and the mapping is read-only.
public final class NPYFile: @unchecked Sendable {
    /// The path the file was opened from.
    public let path: String
    /// The element type.
    public let dtype: NPYDType
    /// The array shape; empty for a 0-d array.
    public let shape: [Int]

    private let map: UnsafeMutableRawPointer
    private let mapSize: Int
    private let dataOffset: Int
    private let dataByteCount: Int

    /// Opens, maps and validates `path`. float64 arrays are refused unless `allowFloat64` (for
    /// `readCounts`). With `member`, the array is the one stored (uncompressed) at those bytes of
    /// the file, a member of an `.npz` (`NPZArchive`), and messages name it `path[name]`.
    public init(path: String, allowFloat64: Bool = false, member: (name: String, bytes: Range<Int>)? = nil) throws(NPYError) {
        let label = member.map { "\(path)[\($0.name)]" } ?? path
        self.path = label
        func fail(_ message: String) -> NPYError { NPYError(path: label, message: message) }

        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw fail("cannot open: \(errnoText())") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw fail("cannot stat: \(errnoText())") }
        switch info.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: throw fail("is a directory, not a .npy file")
        default: throw fail("not a regular file")
        }
        // A header always precedes the data, so a non-empty file never asks mmap for 0 bytes.
        guard info.st_size > 0 else { throw fail("empty file (0 bytes), not a .npy file") }
        let size = Int(info.st_size)
        guard let map = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), map != MAP_FAILED else {
            throw fail("cannot mmap \(size) bytes: \(errnoText())")
        }
        let header: NPYHeader
        do throws(NPYError) {
            let bytes = member?.bytes ?? 0..<size
            guard bytes.lowerBound >= 0, bytes.upperBound <= size else { throw fail("member bytes \(bytes) run past the file's \(size) bytes") }
            header = try NPYHeader(parsing: UnsafeRawBufferPointer(start: map + bytes.lowerBound, count: bytes.count), path: label,
                                   allowFloat64: allowFloat64)
        } catch {
            munmap(map, size)
            throw error
        }
        self.map = map
        mapSize = size
        dtype = header.dtype
        shape = header.shape
        dataOffset = (member?.bytes.lowerBound ?? 0) + header.dataOffset
        dataByteCount = header.dataByteCount
    }

    deinit { munmap(map, mapSize) }

    /// Drops the map's resident pages (`MADV_DONTNEED`): what a read has touched stops counting
    /// in the process's memory, and is read again (from the page cache, mostly) when touched.
    /// For jobs that stream a file larger than they want resident.
    public func releaseResidentPages() {
        _ = madvise(map, mapSize, MADV_DONTNEED)
    }

    /// The number of elements: the product of `shape` (1 for a 0-d array).
    public var count: Int { shape.reduce(1, *) }

    /// The array bytes inside the map, valid while this NPYFile lives; may be unaligned for old files.
    public var rawData: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: map + dataOffset, count: dataByteCount)
    }

    /// For a 2-D float32 or float16 array [n, d]: n and d. Throws for other dtypes/ranks, naming them.
    public func matrixShape() throws(NPYError) -> (rows: Int, columns: Int) {
        guard shape.count == 2, dtype == .float32 || dtype == .float16 else {
            throw NPYError(path: path, message: "expected a 2-D float32 or float16 matrix, found a "
                + "\(shape.count)-D \(dtype.rawValue) array of shape \(pythonShape(shape))")
        }
        return (shape[0], shape[1])
    }

    /// For a 2-D uint8 array [n, w] (FBGEMM's packed rows, `w` bytes each): n and w. Throws for
    /// other dtypes/ranks, naming them.
    public func byteMatrixShape() throws(NPYError) -> (rows: Int, columns: Int) {
        guard shape.count == 2, dtype == .uint8 else {
            throw NPYError(path: path, message: "expected a 2-D uint8 array of packed rows, found a "
                + "\(shape.count)-D \(dtype.rawValue) array of shape \(pythonShape(shape))")
        }
        return (shape[0], shape[1])
    }

    /// Copies rows `range` of a 2-D float32/float16 array into the first range.count × d floats of `into`,
    /// converting float16. Bounds-checked.
    public func readFloatRows(_ range: Range<Int>, into: UnsafeMutableBufferPointer<Float>) throws(NPYError) {
        let (rows, columns) = try matrixShape()
        guard range.lowerBound >= 0, range.upperBound <= rows else {
            throw NPYError(path: path, message: "rows \(range) are out of bounds for a matrix of \(rows) rows")
        }
        let valueCount = range.count * columns
        guard into.count >= valueCount else {
            throw NPYError(path: path, message: "destination holds \(into.count) floats but rows \(range) "
                + "need \(valueCount) (\(range.count) × \(columns))")
        }
        guard valueCount > 0, let destination = into.baseAddress else { return }
        let source = UnsafeRawPointer(map + dataOffset) + range.lowerBound * columns * dtype.itemSize
        switch dtype {
        case .float32:
            UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: valueCount * 4)
        default:
            for i in 0..<valueCount {
                destination[i] = floatFromHalfBits(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            }
        }
    }

    /// All values of a 1-D int64/uint64 array as UInt64; a negative int64 is an error naming its index and value.
    public func readIDs() throws(NPYError) -> [UInt64] {
        guard shape.count == 1, dtype == .int64 || dtype == .uint64 else {
            throw NPYError(path: path, message: "expected a 1-D int64 or uint64 id array, found a "
                + "\(shape.count)-D \(dtype.rawValue) array of shape \(pythonShape(shape))")
        }
        let data = rawData
        var ids: [UInt64] = []
        ids.reserveCapacity(count)
        for i in 0..<count {
            let id = data.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)
            if dtype == .int64 && Int64(bitPattern: id) < 0 {
                throw NPYError(path: path, message: "negative id \(Int64(bitPattern: id)) at index \(i); "
                    + "ids must be non-negative")
            }
            ids.append(id)
        }
        return ids
    }

    /// All values of a 1-D uint64, int64, float32 or float64 array as `Double` (counts, weights),
    /// unchecked: a negative int64 or a NaN comes back as it is, for the caller to judge. uint64
    /// and int64 values above 2^53 are rounded to the nearest `Double`.
    public func readCounts() throws(NPYError) -> [Double] {
        guard shape.count == 1, [.uint64, .int64, .float32, .float64].contains(dtype) else {
            throw NPYError(path: path, message: "expected a 1-D uint64, int64, float32 or float64 array of counts, found a "
                + "\(shape.count)-D \(dtype.rawValue) array of shape \(pythonShape(shape))")
        }
        let data = rawData
        return (0..<count).map { i in
            switch dtype {
            case .uint64: Double(data.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
            case .int64: Double(data.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))
            case .float32: Double(data.loadUnaligned(fromByteOffset: 4 * i, as: Float.self))
            default: data.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)
            }
        }
    }
}
