import CEmbeddingKernels
import Foundation

// A sharded store (FORMAT.md, "Sharded stores"): a directory of ordinary stores, one per shard,
// and a manifest, `shards.json`, naming them. An id's shard is a stable hash of its 64-bit value
// mapped to the shard count by jump consistent hashing, so that growing the count from N to M
// moves only the ids that land on the new shards (about (M − N) / M of them).

/// The rule that maps an id to its shard: `jump(splitmix64(id), shardCount)`.
public enum ShardRule {
    /// The manifest's name for the rule.
    public static let name = "jump-splitmix64"

    /// SplitMix64's output function of `id + 0x9E3779B97F4A7C15` (FORMAT.md gives each step):
    /// spreads consecutive ids over the 64 bits jump hashing reads.
    @inline(__always)
    public static func mix(_ id: UInt64) -> UInt64 {
        var z = id &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Jump consistent hashing (Lamping and Veach, 2014) of `key` into `buckets` buckets: a
    /// linear congruential step per jump, and the next candidate bucket computed in IEEE double.
    @inline(__always)
    public static func jump(_ key: UInt64, buckets: Int) -> Int {
        var key = key
        var b: Int64 = -1, j: Int64 = 0
        while j < Int64(buckets) {
            b = j
            key = key &* 2_862_933_555_777_941_757 &+ 1
            j = Int64(Double(b + 1) * (Double(Int64(1) << 31) / Double((key >> 33) + 1)))
        }
        return Int(b)
    }

    /// The shard of `id` among `shardCount` shards.
    @inline(__always)
    public static func shard(of id: UInt64, shardCount: Int) -> Int {
        jump(mix(id), buckets: shardCount)
    }
}

/// `shards.json`: what a sharded store holds (FORMAT.md, "Sharded stores").
public struct ShardManifest: Codable, Sendable, Equatable {
    public static let fileName = "shards.json"
    public static let formatName = "embstore-shards"
    public static let currentVersion = 1

    public struct Shard: Codable, Sendable, Equatable {
        /// The shard's store directory, relative to the manifest's directory.
        public var path: String
        /// Rows per table.
        public var rows: [String: Int]
        /// `crc32:` and 8 hex digits: CRC-32 (zlib's) of the shard's `data.mdb` as built.
        public var checksum: String
        /// Bytes of that `data.mdb`.
        public var bytes: Int
        /// The shard count the shard's file was built for (nil: the manifest's). After a grow,
        /// the rows of an older shard that now hash to a newer one are stale: still in the
        /// file, no longer routed to.
        public var builtFor: Int?

        public init(path: String, rows: [String: Int], checksum: String, bytes: Int, builtFor: Int? = nil) {
            self.path = path
            self.rows = rows
            self.checksum = checksum
            self.bytes = bytes
            self.builtFor = builtFor
        }

        enum CodingKeys: String, CodingKey {
            case path, rows, checksum, bytes
            case builtFor = "built_for"
        }
    }

    public struct TableInfo: Codable, Sendable, Equatable {
        public var dimension: Int
        /// The codec policy every shard was loaded with (`embstore ingest`'s spelling).
        public var policy: String

        public init(dimension: Int, policy: String) {
            self.dimension = dimension
            self.policy = policy
        }
    }

    public var format: String
    public var version: Int
    public var hash: String
    public var shards: [Shard]
    public var tables: [String: TableInfo]
    /// Raised by each rebuild or rebalance that writes a new manifest.
    public var generation: Int

    public init(shards: [Shard], tables: [String: TableInfo], generation: Int = 1) {
        format = Self.formatName
        version = Self.currentVersion
        hash = ShardRule.name
        self.shards = shards
        self.tables = tables
        self.generation = generation
    }

    /// Whether `directory` holds a manifest (is a sharded store rather than a store).
    public static func exists(in directory: String) -> Bool {
        FileManager.default.fileExists(atPath: (directory as NSString).appendingPathComponent(fileName))
    }

    /// The manifest of the sharded store at `directory`, checked: its format, version, hash
    /// rule, at least one shard, and shard paths inside the directory.
    public static func read(from directory: String) throws -> ShardManifest {
        let path = (directory as NSString).appendingPathComponent(fileName)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StoreError.notAStore(path: directory, reason: "it has no \(fileName)")
        }
        let manifest: ShardManifest
        do {
            manifest = try JSONDecoder().decode(ShardManifest.self, from: data)
        } catch {
            throw StoreError.corruptStore(path: directory, reason: "\(fileName) is not a shard manifest: \(error)")
        }
        func bad(_ reason: String) -> StoreError { .corruptStore(path: directory, reason: "\(fileName): \(reason)") }
        guard manifest.format == formatName else { throw bad("format is '\(manifest.format)', not '\(formatName)'") }
        guard (1...currentVersion).contains(manifest.version) else {
            throw bad("version \(manifest.version); this embstore reads versions 1...\(currentVersion)")
        }
        guard manifest.hash == ShardRule.name else { throw bad("hash rule '\(manifest.hash)' is not '\(ShardRule.name)'") }
        guard !manifest.shards.isEmpty else { throw bad("it names no shards") }
        for (i, shard) in manifest.shards.enumerated() {
            guard !shard.path.isEmpty, !shard.path.hasPrefix("/"), !shard.path.split(separator: "/").contains("..") else {
                throw bad("shard \(i)'s path '\(shard.path)' is not a directory inside the sharded store")
            }
            guard shard.checksum.hasPrefix("crc32:"), shard.checksum.count == 14, UInt32(shard.checksum.dropFirst(6), radix: 16) != nil else {
                throw bad("shard \(i)'s checksum '\(shard.checksum)' is not crc32: and 8 hex digits")
            }
        }
        for (i, shard) in manifest.shards.enumerated() {
            if let builtFor = shard.builtFor, !(i < builtFor && builtFor <= manifest.shards.count) {
                throw bad("shard \(i)'s built_for \(builtFor) is not a shard count between \(i + 1) and \(manifest.shards.count)")
            }
        }
        for (name, table) in manifest.tables where table.dimension <= 0 {
            throw bad("table '\(name)' has dimension \(table.dimension)")
        }
        return manifest
    }

    /// Writes the manifest to `directory` atomically (beside, then renamed over the old one).
    public func write(to directory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(self)
        let path = (directory as NSString).appendingPathComponent(Self.fileName)
        try replaceFile(path, with: Array(data), through: path + ".writing-\(getpid())")
    }
}

/// CRC-32 (zlib's) and length of the file at `path`, as a manifest's `crc32:xxxxxxxx`.
public func shardFileChecksum(path: String) throws -> (checksum: String, bytes: Int) {
    guard let handle = FileHandle(forReadingAtPath: path) else {
        throw StoreError.fileSystem(path: path, operation: "open", code: errno)
    }
    defer { try? handle.close() }
    var crc: UInt32 = 0
    var bytes = 0
    while true {
        let chunk = try handle.read(upToCount: 1 << 22) ?? Data()
        if chunk.isEmpty { break }
        crc = chunk.withUnsafeBytes { emb_crc32(crc, $0.baseAddress, $0.count) }
        bytes += chunk.count
    }
    return ("crc32:" + String(format: "%08x", crc), bytes)
}
