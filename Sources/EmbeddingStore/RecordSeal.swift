import CEmbeddingKernels
import LMDB

/// A record's seal (format version 5, FORMAT.md "Record seals"): the last 4 bytes of every value
/// the store writes outside segment parts hold the CRC-32 of the value's key bytes followed by
/// the rest of the value, little-endian. A flipped byte in the value, or in the key (which would
/// file a row under another id), no longer matches.
///
/// Stores below version 5 have no seals; `Store.sealed` and `Table.sealed` say which kind a
/// store is, and everything that reads or writes a record goes through the functions here.
enum RecordSeal {
    static let size = 4

    static func checksum(key: UInt64, _ payload: UnsafeRawBufferPointer) -> UInt32 {
        withUnsafeBytes(of: key.littleEndian) { key in
            emb_crc32(emb_crc32(0, key.baseAddress, key.count), payload.baseAddress, payload.count)
        }
    }

    static func checksum(key: String, _ payload: UnsafeRawBufferPointer) -> UInt32 {
        var key = key
        return key.withUTF8 { key in
            emb_crc32(emb_crc32(0, key.baseAddress, key.count), payload.baseAddress, payload.count)
        }
    }

    /// `payload` followed by its seal under `key`.
    static func sealed(_ payload: [UInt8], key: UInt64) -> [UInt8] {
        payload + littleEndianBytes(payload.withUnsafeBytes { checksum(key: key, $0) })
    }

    static func sealed(_ payload: [UInt8], key: String) -> [UInt8] {
        payload + littleEndianBytes(payload.withUnsafeBytes { checksum(key: key, $0) })
    }

    /// Writes the seal of the `count` payload bytes at `buffer` right after them (the buffer
    /// must have room for `size` more bytes); returns the sealed length.
    static func seal(_ buffer: UnsafeMutableRawBufferPointer, count: Int, key: UInt64) -> Int {
        let crc = checksum(key: key, UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        buffer.storeBytes(of: crc.littleEndian, toByteOffset: count, as: UInt32.self)
        return count + size
    }

    /// The payload of a sealed value, or why it is not one.
    static func open(_ value: UnsafeRawBufferPointer, key: UInt64) -> Result<UnsafeRawBufferPointer, Broken> {
        guard value.count >= size else { return .failure(.short(value.count)) }
        let payload = UnsafeRawBufferPointer(rebasing: value[0..<(value.count - size)])
        let stored = UInt32(littleEndian: value.loadUnaligned(fromByteOffset: payload.count, as: UInt32.self))
        let actual = checksum(key: key, payload)
        return stored == actual ? .success(payload) : .failure(.mismatch(stored: stored, actual: actual))
    }

    static func open(_ value: UnsafeRawBufferPointer, key: String) -> Result<UnsafeRawBufferPointer, Broken> {
        guard value.count >= size else { return .failure(.short(value.count)) }
        let payload = UnsafeRawBufferPointer(rebasing: value[0..<(value.count - size)])
        let stored = UInt32(littleEndian: value.loadUnaligned(fromByteOffset: payload.count, as: UInt32.self))
        let actual = checksum(key: key, payload)
        return stored == actual ? .success(payload) : .failure(.mismatch(stored: stored, actual: actual))
    }

    enum Broken: Error, CustomStringConvertible {
        case short(Int)
        case mismatch(stored: UInt32, actual: UInt32)

        var description: String {
            switch self {
            case .short(let count): "a sealed value of \(count) bytes has no room for its 4-byte seal"
            case .mismatch(let stored, let actual):
                "its seal does not match (stored CRC-32 0x\(hex8(stored)), computed 0x\(hex8(actual))): the bytes or the key changed after it was written"
            }
        }

        private func hex8(_ value: UInt32) -> String {
            let digits = String(value, radix: 16)
            return String(repeating: "0", count: 8 - digits.count) + digits
        }
    }

    private static func littleEndianBytes(_ value: UInt32) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }
}

extension Table {
    /// The row record (or tombstone) of a delta value under `id`: the value itself below
    /// version 5, the value less its checked seal from 5 on. Not inlined: the lookup loop
    /// calls it only for ids the delta holds, and its CRC code inlined there cost segment
    /// lookups (which never reach it) about 7% on the Zipf stream.
    @inline(never)
    func deltaRecord(_ value: UnsafeRawBufferPointer, id: UInt64) throws(StoreError) -> UnsafeRawBufferPointer {
        guard sealed else { return value }
        switch RecordSeal.open(value, key: id) {
        case .success(let payload): return payload
        case .failure(let broken): throw .corruptRecord(table: name, id: id, reason: "\(broken)")
        }
    }

    /// A value of one of this table's other integer-keyed databases (bucket rows, parameter
    /// records, the manifest, counts), its seal checked from version 5 on. `what` names the
    /// record in the error: "bucket row 3", "parameter record 2", "the segment manifest".
    func unsealed(_ value: UnsafeRawBufferPointer, key: UInt64, what: @autoclosure () -> String) throws(StoreError) -> UnsafeRawBufferPointer {
        guard sealed else { return value }
        switch RecordSeal.open(value, key: key) {
        case .success(let payload): return payload
        case .failure(let broken): throw .corruptMetadata(table: name, reason: "\(what()): \(broken)")
        }
    }

    /// `payload`, sealed under `key` when this table's store seals records.
    func sealing(_ payload: [UInt8], key: UInt64) -> [UInt8] {
        sealed ? RecordSeal.sealed(payload, key: key) : payload
    }
}

extension Generation {
    /// The payload of `meta` record `key` (its seal checked from version 5 on), or nil when the
    /// store has no such record. A broken seal names `table` when the record is one table's.
    func withMetaRecord<R>(_ key: String, in txn: borrowing Transaction, table: String? = nil,
                           _ body: (UnsafeRawBufferPointer?) throws -> R) throws -> R {
        try txn.withValue(forKey: key, in: meta) { value in
            guard sealed, let value else { return try body(value) }
            switch RecordSeal.open(value, key: key) {
            case .success(let payload): return try body(payload)
            case .failure(let broken):
                if let table { throw StoreError.corruptMetadata(table: table, reason: "meta record '\(key)': \(broken)") }
                throw StoreError.corruptStore(path: directory, reason: "meta record '\(key)': \(broken)")
            }
        }
    }

    /// Writes `meta` record `key`, sealed when the generation seals records.
    func putMetaRecord(_ payload: [UInt8], key: String, in txn: borrowing Transaction) throws {
        try (sealed ? RecordSeal.sealed(payload, key: key) : payload).withUnsafeBytes { try txn.put($0, forKey: key, in: meta) }
    }
}

extension Store {
    /// `Generation.withMetaRecord` in the current generation.
    func withMetaRecord<R>(_ key: String, in txn: borrowing Transaction, table: String? = nil,
                           _ body: (UnsafeRawBufferPointer?) throws -> R) throws -> R {
        try generation.withMetaRecord(key, in: txn, table: table, body)
    }

    /// `Generation.putMetaRecord` in the current generation.
    func putMetaRecord(_ payload: [UInt8], key: String, in txn: borrowing Transaction) throws {
        try generation.putMetaRecord(payload, key: key, in: txn)
    }
}

extension Store {
    /// A table's schema in the current generation (`Generation.readSchema`).
    func readSchema(_ name: String, in txn: borrowing Transaction) throws -> TableSchema {
        try generation.readSchema(name, in: txn)
    }

    /// Writes a table's schema in the current generation (`Generation.writeSchema`).
    func writeSchema(_ schema: TableSchema, name: String, in txn: borrowing Transaction) throws {
        try generation.writeSchema(schema, name: name, in: txn)
    }
}
