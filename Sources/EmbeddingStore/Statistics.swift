import LMDB

/// Rows and bytes of one codec in a table.
public struct CodecUsage: Sendable, Equatable, Codable {
    public let codec: String
    public let rows: Int
    /// Record bytes (tag + payload), without LMDB's per-key overhead.
    public let bytes: Int
}

/// What a table holds.
public struct TableStatistics: Sendable, Equatable, Codable {
    public let name: String
    public let dimension: Int
    public let rows: Int
    /// Per codec, in tag order; codecs with no rows are left out.
    public let codecs: [CodecUsage]
    public let bucketRows: Int
    public let bucketBytes: Int
    public let bases: Int
}

extension Store {
    /// Counts a table's rows and bytes per codec (a scan of its records).
    public func statistics(_ table: Table) throws -> TableStatistics {
        try table.requireLive()
        return try translatingErrors {
            try environment.read { txn in
                var rows = [Int](repeating: 0, count: 256)
                var bytes = [Int](repeating: 0, count: 256)
                var total = 0
                try txn.withCursor(table.rows) { cursor in
                    var entry = try cursor.first()
                    while let current = entry {
                        let tag = Int(current.value.first ?? 0)
                        rows[tag] += 1
                        bytes[tag] += current.value.count
                        total += 1
                        entry = try cursor.next()
                    }
                }
                var usage: [CodecUsage] = []
                for tag in 0..<256 where rows[tag] > 0 {
                    let name = RecordTag(rawValue: UInt8(tag))?.description ?? "unknown tag \(tag)"
                    usage.append(CodecUsage(codec: name, rows: rows[tag], bytes: bytes[tag]))
                }
                var bucketRows = 0
                var bucketBytes = 0
                try txn.withCursor(table.buckets) { cursor in
                    var entry = try cursor.first()
                    while let current = entry {
                        bucketRows += 1
                        bucketBytes += current.value.count
                        entry = try cursor.next()
                    }
                }
                let bases = try txn.statistics(table.bases).entries
                return TableStatistics(name: table.name, dimension: table.dimension, rows: total, codecs: usage,
                                       bucketRows: bucketRows, bucketBytes: bucketBytes, bases: bases)
            }
        }
    }

    /// Every row of `table` decoded, in ascending id order: the ids and `ids.count × dimension` floats.
    public func export(_ table: Table) throws -> (ids: [UInt64], values: [Float]) {
        try table.requireLive()
        return try translatingErrors {
            try environment.read { txn in
                let d = table.dimension
                let count = try txn.statistics(table.rows).entries
                var ids = [UInt64]()
                ids.reserveCapacity(count)
                var values = [Float](repeating: 0, count: count * d)
                var decoder = RecordDecoder(table: table)
                try values.withUnsafeMutableBufferPointer { out in
                    try txn.withCursor(table.rows) { cursor in
                        var entry = try cursor.first()
                        while let current = entry {
                            guard let id = current.integerKey else {
                                throw StoreError.corruptMetadata(table: table.name, reason: "a row key is \(current.key.count) bytes, not 8")
                            }
                            let i = ids.count
                            guard i < count else { break }
                            try decoder.decode(current.value, id: id, in: txn,
                                               into: UnsafeMutableBufferPointer(rebasing: out[i * d..<(i + 1) * d]))
                            ids.append(id)
                            entry = try cursor.next()
                        }
                    }
                }
                return (ids, values)
            }
        }
    }
}
