import CLMDB

// Every conversion between `MDB_val` and Swift buffers lives in this file.

extension UnsafeRawBufferPointer {
    /// The bytes an `MDB_val` points at. For values returned by LMDB:
    /// > Values returned from the database are valid only until a subsequent
    /// > update operation, or the end of the transaction.
    @inline(__always)
    init(_ value: MDB_val) {
        self.init(start: value.mv_data, count: value.mv_size)
    }
}

/// Calls `body` with an `MDB_val` that views the 8 bytes of `key` in native byte order, as
/// `MDB_INTEGERKEY` databases expect.
@inline(__always)
func withIntegerKey<R, E: Error>(_ key: UInt64, _ body: (inout MDB_val) throws(E) -> R) throws(E) -> R {
    var key = key
    return try withUnsafeMutablePointer(to: &key) { (pointer) throws(E) -> R in
        var value = MDB_val(mv_size: 8, mv_data: pointer)
        return try body(&value)
    }
}

/// Calls `body` with an `MDB_val` viewing `bytes` (not copied).
@inline(__always)
func withBytesValue<R, E: Error>(_ bytes: UnsafeRawBufferPointer, _ body: (inout MDB_val) throws(E) -> R) throws(E) -> R {
    var value = MDB_val(mv_size: bytes.count, mv_data: UnsafeMutableRawPointer(mutating: bytes.baseAddress))
    return try body(&value)
}

/// Calls `body` with an `MDB_val` viewing the UTF-8 bytes of `key`.
@inline(__always)
func withStringKey<R, E: Error>(_ key: String, _ body: (inout MDB_val) throws(E) -> R) throws(E) -> R {
    // Array's closure APIs are untyped `rethrows`; an explicitly allocated copy keeps `E` typed.
    let utf8 = Array(key.utf8)
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(utf8.count, 1), alignment: 1)
    defer { buffer.deallocate() }
    buffer.copyBytes(from: utf8)
    var value = MDB_val(mv_size: utf8.count, mv_data: buffer.baseAddress)
    return try body(&value)
}

/// Reads an `MDB_INTEGERKEY` key back as `UInt64`; nil when the key is not 8 bytes.
@inline(__always)
func integerKey(_ value: MDB_val) -> UInt64? {
    guard value.mv_size == 8, let data = value.mv_data else { return nil }
    return UnsafeRawPointer(data).loadUnaligned(as: UInt64.self)
}
