#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The members of an `.npz` that `numpy.savez` wrote: a zip archive of `.npy` files stored
/// uncompressed, so each member is read in place (`NPYFile(path:member:)`). Compressed members
/// (`numpy.savez_compressed`) are refused with an error saying so.
///
/// Only what `savez` writes is read: the end-of-central-directory record (and its zip64 form),
/// the central directory's names, methods, sizes and local header offsets (zip64 extra fields
/// included, which numpy asks for), and each local header's name and extra lengths. All
/// little-endian (PKWARE APPNOTE 4.3).
public enum NPZArchive {
    /// The members: name (`table.npy`), and the bytes of its stored data in the file.
    public static func members(path: String) throws(NPYError) -> [(name: String, bytes: Range<Int>)] {
        func fail(_ message: String) -> NPYError { NPYError(path: path, message: message) }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw fail("cannot open: \(errnoText())") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_size >= 22 else {
            throw fail("not a regular file of at least 22 bytes (the end record of a zip archive)")
        }
        let size = Int(info.st_size)
        guard let map = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), map != MAP_FAILED else {
            throw fail("cannot mmap \(size) bytes: \(errnoText())")
        }
        defer { munmap(map, size) }
        let file = UnsafeRawBufferPointer(start: map, count: size)
        do throws(NPYError) {
            return try members(of: file)
        } catch {
            throw fail("not an .npz numpy.savez wrote: " + error.message)
        }
    }

    private static func members(of file: UnsafeRawBufferPointer) throws(NPYError) -> [(name: String, bytes: Range<Int>)] {
        func fail(_ message: String) -> NPYError { NPYError(path: "", message: message) }
        func u16(_ at: Int) throws(NPYError) -> Int {
            guard at >= 0, at + 2 <= file.count else { throw fail("a record runs past the end of the file") }
            return Int(UInt16(littleEndian: file.loadUnaligned(fromByteOffset: at, as: UInt16.self)))
        }
        func u32(_ at: Int) throws(NPYError) -> Int {
            guard at >= 0, at + 4 <= file.count else { throw fail("a record runs past the end of the file") }
            return Int(UInt32(littleEndian: file.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
        }
        func u64(_ at: Int) throws(NPYError) -> Int {
            guard at >= 0, at + 8 <= file.count else { throw fail("a record runs past the end of the file") }
            let value = UInt64(littleEndian: file.loadUnaligned(fromByteOffset: at, as: UInt64.self))
            guard value <= UInt64(file.count) else { throw fail("a size or offset of \(value) is beyond the file") }
            return Int(value)
        }
        // The end of central directory record: the last signature 0x06054b50 (a comment may follow).
        var end = file.count - 22
        while end >= max(0, file.count - 22 - 0xFFFF), try u32(end) != 0x0605_4b50 { end -= 1 }
        guard end >= 0, try u32(end) == 0x0605_4b50 else { throw fail("no zip end-of-central-directory record") }
        var entries = try u16(end + 10), directory = try u32(end + 16)
        if entries == 0xFFFF || directory == 0xFFFF_FFFF {
            // Zip64: the locator just before points at the zip64 end record.
            guard end >= 20, try u32(end - 20) == 0x0706_4b50 else { throw fail("no zip64 end-of-central-directory locator") }
            let record = try u64(end - 12)
            guard try u32(record) == 0x0606_4b50 else { throw fail("no zip64 end-of-central-directory record") }
            entries = try u64(record + 32)
            directory = try u64(record + 48)
        }
        var members: [(name: String, bytes: Range<Int>)] = []
        var at = directory
        for _ in 0..<entries {
            guard try u32(at) == 0x0201_4b50 else { throw fail("central directory entry \(members.count) has a bad signature") }
            let method = try u16(at + 10)
            var compressed = try u32(at + 20), uncompressed = try u32(at + 24), local = try u32(at + 42)
            let nameLength = try u16(at + 28), extraLength = try u16(at + 30), commentLength = try u16(at + 32)
            guard at + 46 + nameLength <= file.count else { throw fail("a member name runs past the end of the file") }
            let name = String(decoding: UnsafeRawBufferPointer(rebasing: file[at + 46..<at + 46 + nameLength]), as: UTF8.self)
            // The zip64 extra field holds, in this order, the values its 32-bit fields could not.
            var extra = at + 46 + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let id = try u16(extra), length = try u16(extra + 2)
                if id == 0x0001 {
                    var field = extra + 4
                    if uncompressed == 0xFFFF_FFFF { uncompressed = try u64(field); field += 8 }
                    if compressed == 0xFFFF_FFFF { compressed = try u64(field); field += 8 }
                    if local == 0xFFFF_FFFF { local = try u64(field) }
                }
                extra += 4 + length
            }
            guard method == 0, compressed == uncompressed else {
                throw fail("member '\(name)' is compressed (method \(method)); save with numpy.savez, not savez_compressed, or as a directory of .npy files")
            }
            guard try u32(local) == 0x0403_4b50 else { throw fail("member '\(name)' has no local header at \(local)") }
            let data = local + 30 + (try u16(local + 26)) + (try u16(local + 28))
            guard data + compressed <= file.count else { throw fail("member '\(name)' runs past the end of the file") }
            members.append((name, data..<data + compressed))
            at += 46 + nameLength + extraLength + commentLength
        }
        return members
    }
}
