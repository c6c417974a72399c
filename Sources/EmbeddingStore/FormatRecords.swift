import EmbeddingCodecs

/// The store's metadata records, byte for byte as FORMAT.md describes them.
enum StoreFormat {
    /// The format this code writes and the newest it reads.
    static let version: UInt32 = 5
    /// The first version with segments and tombstones.
    static let segmentsVersion: UInt32 = 2
    /// The first version with typed parameter records (tc bases and models) and tc rows.
    static let typedParametersVersion: UInt32 = 3
    /// The first version with blockmix64 segment checksums (header u32 at offset 52 = 1) and
    /// segments of kinds 5 and 6 (group entries).
    static let blockChecksumVersion: UInt32 = 4
    /// The first version whose records (every value outside segment parts) end with a seal
    /// (`RecordSeal`). A store is created sealed or not and stays so: no writer raises an
    /// older store to 5.
    static let sealedVersion: UInt32 = 5

    /// The version a segment with this header needs.
    static func version(of segment: SegmentHeader) -> UInt32 {
        segment.checksumAlgorithm == .fnv1a64 && !segment.kind.hasGroupEntries ? segmentsVersion : blockChecksumVersion
    }
    static let magic = "EMBSTORE"
    static let metaDatabase = "meta"
    static let formatKey = "format"
    static let nextTableIDKey = "next_table_id"
    static let tableKeyPrefix = "table/"
    /// `load/<table id>/<segment id>`: the note of the load that wrote a segment (JSON).
    static func loadNoteKey(_ tableID: UInt32, segment: UInt32) -> String { "load/\(tableID)/\(segment)" }
    static func loadNotePrefix(_ tableID: UInt32) -> String { "load/\(tableID)/" }

    static func rowsDatabase(_ tableID: UInt32) -> String { "t\(tableID)/rows" }
    static func bucketsDatabase(_ tableID: UInt32) -> String { "t\(tableID)/buckets" }
    static func basesDatabase(_ tableID: UInt32) -> String { "t\(tableID)/bases" }

    /// `format`: 8 ASCII bytes "EMBSTORE", u32 version, u32 reserved (0); sealed from version 5.
    static func encodeHeader(version: UInt32 = version) -> [UInt8] {
        var writer = ByteWriter(capacity: 20)
        writer.append(ascii: magic)
        writer.append(version)
        writer.append(UInt32(0))
        return version >= sealedVersion ? RecordSeal.sealed(writer.bytes, key: formatKey) : writer.bytes
    }

    /// Returns the version of a `format` record; throws when it is not one.
    static func decodeHeader(_ bytes: UnsafeRawBufferPointer, path: String) throws(StoreError) -> UInt32 {
        guard bytes.count >= 12, String(decoding: bytes[0..<8], as: UTF8.self) == magic else {
            throw .notAStore(path: path, reason: "the meta record 'format' does not start with \(magic)")
        }
        let version = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        guard version >= 1, version <= StoreFormat.version else {
            throw .unsupportedFormatVersion(path: path, found: version, supported: StoreFormat.version)
        }
        let expected = version >= sealedVersion ? 16 + RecordSeal.size : 16
        guard bytes.count == expected else {
            throw .corruptStore(path: path, reason: "the meta record 'format' of a version-\(version) store has \(bytes.count) bytes, not \(expected)")
        }
        if version >= sealedVersion, case .failure(let broken) = RecordSeal.open(bytes, key: formatKey) {
            throw .corruptStore(path: path, reason: "the meta record 'format': \(broken)")
        }
        return version
    }
}

/// A table's schema record, `meta` key `table/<name>` (24 bytes, FORMAT.md "Table schema").
struct TableSchema: Equatable, Sendable {
    static let size = 24
    /// The widest row a table may have (FORMAT.md, "Tables").
    static let maximumDimension: UInt32 = 1 << 20
    var tableID: UInt32
    var dimension: UInt32
    var flags: UInt32 = 0
    /// The basis that new `reduced` rows use; 0 when the table has none.
    var currentBasisID: UInt32 = 0
    /// The next unused basis id (ids start at 1 and are never reused).
    var nextBasisID: UInt32 = 1
    /// The next unused bucket id (ids start at 0 and are never reused).
    var nextBucketID: UInt32 = 0

    func encode() -> [UInt8] {
        var writer = ByteWriter(capacity: Self.size)
        for field in [tableID, dimension, flags, currentBasisID, nextBasisID, nextBucketID] { writer.append(field) }
        return writer.bytes
    }

    static func decode(_ bytes: UnsafeRawBufferPointer, table: String) throws(StoreError) -> TableSchema {
        guard bytes.count == size else {
            throw .corruptMetadata(table: table, reason: "schema record has \(bytes.count) bytes, expected \(size)")
        }
        var reader = ByteReader(bytes)
        do {
            let schema = TableSchema(
                tableID: try reader.uint32("table_id"), dimension: try reader.uint32("dimension"),
                flags: try reader.uint32("flags"), currentBasisID: try reader.uint32("current_basis_id"),
                nextBasisID: try reader.uint32("next_basis_id"), nextBucketID: try reader.uint32("next_bucket_id"))
            // What `createTable` allows: a flipped byte must not ask a lookup for gigabytes a row.
            guard (1...TableSchema.maximumDimension).contains(schema.dimension) else {
                throw StoreError.corruptMetadata(table: table, reason: "dimension \(schema.dimension) is outside 1...\(TableSchema.maximumDimension)")
            }
            guard schema.flags == 0 else {
                throw StoreError.corruptMetadata(table: table, reason: "unknown schema flags 0x\(String(schema.flags, radix: 16))")
            }
            return schema
        } catch let error as StoreError {
            throw error
        } catch {
            throw .corruptMetadata(table: table, reason: "\(error)")
        }
    }
}
