import CEmbStore
import EmbeddingCodecs
import EmbeddingStore
import Foundation
import LMDB

// The C API (Sources/CEmbStore/include/embstore.h): each function converts its arguments,
// calls the library, and turns a thrown error into a status code and the thread's message. No
// Swift type crosses it: handles are retained Swift objects passed as opaque pointers.

// MARK: - Errors

/// Runs `body`; a thrown error becomes its status code and the calling thread's message.
@inline(__always)
private func status(_ body: () throws -> Void) -> Int32 {
    do {
        try body()
        embstore_set_error(nil)
        return Int32(EMBSTORE_OK.rawValue)
    } catch {
        embstore_set_error("\(error)")
        return code(of: error)
    }
}

private struct APIError: Error, CustomStringConvertible {
    let status: embstore_status
    let description: String
    static func invalid(_ text: String) -> APIError { APIError(status: EMBSTORE_ERR_INVALID_ARGUMENT, description: text) }
}

private func code(of error: any Error) -> Int32 {
    let status: embstore_status
    switch error {
    case let error as APIError: status = error.status
    case let error as StoreError:
        switch error {
        case .invalidArgument, .invalidTableName, .dimensionMismatch, .encoding, .nonFiniteValue, .missingCodecParameters:
            status = EMBSTORE_ERR_INVALID_ARGUMENT
        case .tableNotFound, .rowNotFound: status = EMBSTORE_ERR_NOT_FOUND
        case .tableExists: status = EMBSTORE_ERR_EXISTS
        case .readOnly: status = EMBSTORE_ERR_READ_ONLY
        case .corruptStore, .corruptRecord, .corruptMetadata: status = EMBSTORE_ERR_CORRUPT
        case .notAStore, .unsupportedFormatVersion: status = EMBSTORE_ERR_NOT_A_STORE
        case .fileSystem: status = EMBSTORE_ERR_IO
        case .generationRetired, .storeChangedSinceStaging: status = EMBSTORE_ERR_RETRY
        case .lmdb(let error):
            status = error.meansDamagedFile ? EMBSTORE_ERR_CORRUPT : EMBSTORE_ERR_IO
        }
    case is CodecError: status = EMBSTORE_ERR_INVALID_ARGUMENT
    case is CocoaError, is POSIXError: status = EMBSTORE_ERR_IO
    default: status = EMBSTORE_ERR_INTERNAL
    }
    return Int32(status.rawValue)
}

private func required<T>(_ pointer: T?, _ name: String) throws -> T {
    guard let pointer else { throw APIError.invalid("\(name) is NULL") }
    return pointer
}

private func string(_ pointer: UnsafePointer<CChar>?, _ name: String) throws -> String {
    String(cString: try required(pointer, name))
}

/// A library-allocated copy of `text` for the caller (freed with embstore_free_string).
private func give(_ text: String, to out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) {
    out?.pointee = strdup(text)
}

// MARK: - Handles

/// The object behind a handle (retained when the handle was made), checked to be of the kind
/// asked for: a store handle given where a table's is expected is an error, not a crash.
private func object<T: AnyObject>(_ handle: OpaquePointer?, _ name: String) throws -> T {
    let object = Unmanaged<AnyObject>.fromOpaque(UnsafeRawPointer(try required(handle, name))).takeUnretainedValue()
    guard let typed = object as? T else { throw APIError.invalid("\(name) is a handle of another kind (\(type(of: object)))") }
    return typed
}

/// A table of a sharded store behind a handle (`ShardedTable` is a value).
private final class ShardedTableHandle {
    let table: ShardedTable
    init(_ table: ShardedTable) { self.table = table }
}

/// What a store handle names: a store, or a sharded store (read through its router).
private func storeObject(_ handle: OpaquePointer?) throws -> AnyStore {
    let value: AnyObject = try object(handle, "store")
    if let store = value as? Store { return .single(store) }
    if let sharded = value as? ShardedStore { return .sharded(sharded) }
    throw APIError.invalid("store is a handle of another kind (\(type(of: value)))")
}

/// A store handle for a write: a sharded store's is refused (its shards are stores to write).
private func writableStore(_ handle: OpaquePointer?) throws -> Store {
    switch try storeObject(handle) {
    case .single(let store): return store
    case .sharded(let sharded):
        throw APIError(status: EMBSTORE_ERR_READ_ONLY, description: "\(sharded.path) is a sharded store, read through its router: writes and statistics are for its shards (each a store); rebuild it with tools/shard_build.py")
    }
}

private func handle(_ object: AnyObject) -> OpaquePointer {
    OpaquePointer(Unmanaged.passRetained(object).toOpaque())
}

private func release(_ handle: OpaquePointer?) {
    guard let handle else { return }
    Unmanaged<AnyObject>.fromOpaque(UnsafeRawPointer(handle)).release()
}

// MARK: - Library

@_cdecl("embstore_version")
public func embstoreVersion() -> UnsafePointer<CChar> {
    UnsafePointer(versionString)
}

nonisolated(unsafe) private let versionString: UnsafeMutablePointer<CChar> = strdup("0.1.0 (API \(EMBSTORE_API_VERSION))")

@_cdecl("embstore_free_string")
public func embstoreFreeString(_ string: UnsafeMutablePointer<CChar>?) {
    free(string)
}

// MARK: - Stores

@_cdecl("embstore_open")
public func embstoreOpen(_ path: UnsafePointer<CChar>?, _ flags: UInt32, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        let out = try required(out, "store")
        out.pointee = nil
        let path = try string(path, "path")
        let readOnly = flags & EMBSTORE_OPEN_READ_ONLY != 0
        if ShardManifest.exists(in: path) {
            // A sharded store: lookups through its router; writes go to its shards, one by one.
            var options = Store.Options()
            options.readOnly = true
            out.pointee = handle(try ShardedStore(path: path, options: options))
            return
        }
        if flags & EMBSTORE_OPEN_CREATE == 0 || readOnly {
            let fileManager = FileManager.default
            guard fileManager.fileExists(atPath: path + "/data.mdb") || fileManager.fileExists(atPath: path + "/CURRENT") else {
                throw APIError(status: EMBSTORE_ERR_NOT_A_STORE,
                               description: "\(path) holds no store (no data.mdb nor CURRENT); open it with EMBSTORE_OPEN_CREATE to make one")
            }
        }
        var options = Store.Options()
        options.readOnly = readOnly
        out.pointee = handle(try Store(path: path, options: options))
    }
}

@_cdecl("embstore_close")
public func embstoreClose(_ store: OpaquePointer?) {
    release(store)
}

@_cdecl("embstore_refresh")
public func embstoreRefresh(_ store: OpaquePointer?, _ moved: UnsafeMutablePointer<Int32>?) -> Int32 {
    status {
        guard case .single(let store) = try storeObject(store) else {
            moved?.pointee = 0   // a sharded store's manifest is read when it is opened
            return
        }
        let didMove = try store.refresh()
        moved?.pointee = didMove ? 1 : 0
    }
}

@_cdecl("embstore_table_names")
public func embstoreTableNames(_ store: OpaquePointer?, _ names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    status {
        let names = try required(names, "names")
        give(try storeObject(store).tableNames.joined(separator: "\n"), to: names)
    }
}

@_cdecl("embstore_stats_json")
public func embstoreStatsJSON(_ store: OpaquePointer?, _ table: UnsafePointer<CChar>?,
                              _ json: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    status {
        let store = try writableStore(store)   // (statistics are a store's; a shard's are its own)
        let json = try required(json, "json")
        let names = try table.map { [String(cString: $0)] } ?? store.tableNames()
        let tables = try names.map { try store.storageStatistics(store.table($0)) }
        give(try StatsReport(store: store.path, environment: try store.environmentStatistics(), tables: tables).json(), to: json)
    }
}

// MARK: - Tables

@_cdecl("embstore_table_open")
public func embstoreTableOpen(_ store: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        let out = try required(out, "table")
        out.pointee = nil
        switch try storeObject(store) {
        case .single(let store): out.pointee = handle(try store.table(try string(name, "name")))
        case .sharded(let sharded): out.pointee = handle(ShardedTableHandle(try sharded.table(try string(name, "name"))))
        }
    }
}

@_cdecl("embstore_create_table")
public func embstoreCreateTable(_ store: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ dimension: Int,
                                _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        let store = try writableStore(store)
        out?.pointee = nil
        let table = try store.createTable(try string(name, "name"), dimension: dimension)
        out?.pointee = handle(table)
    }
}

@_cdecl("embstore_drop_table")
public func embstoreDropTable(_ store: OpaquePointer?, _ name: UnsafePointer<CChar>?) -> Int32 {
    status {
        let store = try writableStore(store)
        try store.dropTable(try string(name, "name"))
    }
}

@_cdecl("embstore_table_release")
public func embstoreTableRelease(_ table: OpaquePointer?) {
    release(table)
}

@_cdecl("embstore_table_dimension")
public func embstoreTableDimension(_ table: OpaquePointer?) -> Int {
    (try? object(table, "table") as Table)?.dimension ?? (try? object(table, "table") as ShardedTableHandle)?.table.dimension ?? 0
}

// MARK: - Lookups

@_cdecl("embstore_reader_open")
public func embstoreReaderOpen(_ store: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        let out = try required(out, "reader")
        out.pointee = nil
        switch try storeObject(store) {
        case .single(let store): out.pointee = handle(try store.makeReader())
        case .sharded(let sharded): out.pointee = handle(try sharded.makeReader())
        }
    }
}

@_cdecl("embstore_reader_close")
public func embstoreReaderClose(_ reader: OpaquePointer?) {
    release(reader)
}

private func missingMode(_ missing: Int32) throws -> MissingRows {
    switch missing {
    case EMBSTORE_MISSING_ZEROS: return .zeros
    case EMBSTORE_MISSING_ERROR: return .error
    default: throw APIError.invalid("missing is \(missing); expected EMBSTORE_MISSING_ZEROS (0) or EMBSTORE_MISSING_ERROR (1)")
    }
}

private func poolingMode(_ pooling: Int32) throws -> Pooling {
    switch pooling {
    case EMBSTORE_POOL_SUM: return .sum
    case EMBSTORE_POOL_MEAN: return .mean
    default: throw APIError.invalid("pooling is \(pooling); expected EMBSTORE_POOL_SUM (0) or EMBSTORE_POOL_MEAN (1)")
    }
}

/// `count` elements at `pointer` (which may be NULL only when `count` is 0).
private func buffer<T>(_ pointer: UnsafePointer<T>?, _ count: Int, _ name: String) throws -> UnsafeBufferPointer<T> {
    guard count > 0 else { return UnsafeBufferPointer(start: pointer, count: 0) }
    return UnsafeBufferPointer(start: try required(pointer, name), count: count)
}

private func mutableBuffer<T>(_ pointer: UnsafeMutablePointer<T>?, _ count: Int, _ name: String) throws -> UnsafeMutableBufferPointer<T> {
    guard count > 0 else { return UnsafeMutableBufferPointer(start: pointer, count: 0) }
    return UnsafeMutableBufferPointer(start: try required(pointer, name), count: count)
}

/// C's int64_t offsets as Swift's Int (the same 64-bit integer on the platforms Swift builds for).
private func offsetBuffer(_ pointer: UnsafePointer<Int64>?, _ count: Int) throws -> UnsafeBufferPointer<Int> {
    let offsets = try buffer(pointer, count, "offsets")
    return offsets.withMemoryRebound(to: Int.self) { $0 }
}

@_cdecl("embstore_lookup")
public func embstoreLookup(_ reader: OpaquePointer?, _ table: OpaquePointer?, _ ids: UnsafePointer<UInt64>?, _ count: Int,
                           _ out: UnsafeMutablePointer<Float>?, _ found: UnsafeMutablePointer<UInt8>?, _ missing: Int32,
                           _ foundCount: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let readerObject: AnyObject = try object(reader, "reader")
        if let router = readerObject as? ShardedReader {
            let table = (try object(table, "table") as ShardedTableHandle).table
            let ids = try buffer(ids, count, "ids")
            let out = try mutableBuffer(out, count * table.dimension, "out")
            let mode = try missingMode(missing)
            if found != nil, mode != .zeros {
                throw APIError.invalid("a found mask is for EMBSTORE_MISSING_ZEROS; with EMBSTORE_MISSING_ERROR every row is found or the call fails")
            }
            // (Not `foundCount?.pointee = try …`: optional chaining would skip the call when
            // found_count is NULL.)
            let rows = try found.map { found in
                try found.withMemoryRebound(to: Bool.self, capacity: count) {
                    try router.lookup(table, ids: ids, into: out, found: UnsafeMutableBufferPointer(start: $0, count: count))
                }
            } ?? router.lookup(table, ids: ids, into: out, missing: mode)
            foundCount?.pointee = rows
            return
        }
        let reader: Reader = try object(reader, "reader")
        let table: Table = try object(table, "table")
        let ids = try buffer(ids, count, "ids")
        let out = try mutableBuffer(out, count * table.dimension, "out")
        let rows: Int
        if let found {
            guard try missingMode(missing) == .zeros else {
                throw APIError.invalid("a found mask is for EMBSTORE_MISSING_ZEROS; with EMBSTORE_MISSING_ERROR every row is found or the call fails")
            }
            rows = try found.withMemoryRebound(to: Bool.self, capacity: count) {
                try reader.lookup(table, ids: ids, into: out, found: UnsafeMutableBufferPointer(start: $0, count: count))
            }
        } else {
            rows = try reader.lookup(table, ids: ids, into: out, missing: try missingMode(missing))
        }
        foundCount?.pointee = rows
    }
}

@_cdecl("embstore_lookup_pooled")
public func embstoreLookupPooled(_ reader: OpaquePointer?, _ table: OpaquePointer?, _ ids: UnsafePointer<UInt64>?, _ idCount: Int,
                                 _ offsets: UnsafePointer<Int64>?, _ bagCount: Int, _ weights: UnsafePointer<Float>?,
                                 _ pooling: Int32, _ out: UnsafeMutablePointer<Float>?, _ missing: Int32,
                                 _ foundCount: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        if let router = (try object(reader, "reader") as AnyObject) as? ShardedReader {
            let table = (try object(table, "table") as ShardedTableHandle).table
            let rows = try router.lookupPooled(
                table, ids: try buffer(ids, idCount, "ids"), offsets: try offsetBuffer(offsets, bagCount + 1),
                weights: try weights.map { try buffer($0, idCount, "weights") }, pooling: try poolingMode(pooling),
                into: try mutableBuffer(out, bagCount * table.dimension, "out"), missing: try missingMode(missing))
            foundCount?.pointee = rows
            return
        }
        let reader: Reader = try object(reader, "reader")
        let table: Table = try object(table, "table")
        let rows = try reader.lookupPooled(
            table, ids: try buffer(ids, idCount, "ids"), offsets: try offsetBuffer(offsets, bagCount + 1),
            weights: try weights.map { try buffer($0, idCount, "weights") }, pooling: try poolingMode(pooling),
            into: try mutableBuffer(out, bagCount * table.dimension, "out"), missing: try missingMode(missing))
        foundCount?.pointee = rows
    }
}

@_cdecl("embstore_lookup_multi")
public func embstoreLookupMulti(_ reader: OpaquePointer?, _ features: UnsafePointer<embstore_feature>?, _ featureCount: Int,
                                _ batchSize: Int, _ out: UnsafeMutablePointer<Float>?, _ missing: Int32,
                                _ foundCount: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        if let router = (try object(reader, "reader") as AnyObject) as? ShardedReader {
            let (request, width) = try pooledRequest(features, featureCount, batchSize) { (try object($0, $1) as ShardedTableHandle).table }
            // Not `foundCount?.pointee = try …`: with foundCount NULL that would never look up.
            let rows = try router.lookupPooled(request, batchSize: batchSize, into: try mutableBuffer(out, batchSize * width, "out"),
                                               missing: try missingMode(missing))
            foundCount?.pointee = rows
            return
        }
        let reader: Reader = try object(reader, "reader")
        let (request, width) = try pooledRequest(features, featureCount, batchSize) { try object($0, $1) as Table }
        let rows = try reader.lookupPooled(request, batchSize: batchSize, into: try mutableBuffer(out, batchSize * width, "out"),
                                           missing: try missingMode(missing))
        foundCount?.pointee = rows
    }
}

/// The features of a multi-table request, with tables from `table(handle, name for errors)`,
/// and the width of a sample's row (the sum of their dimensions).
private func pooledRequest<T: PooledTable>(_ features: UnsafePointer<embstore_feature>?, _ featureCount: Int, _ batchSize: Int,
                                           table: (OpaquePointer?, String) throws -> T) throws -> ([PooledFeatureOf<T>], Int) {
    var request: [PooledFeatureOf<T>] = []
    request.reserveCapacity(featureCount)
    var width = 0
    for (f, feature) in try buffer(features, featureCount, "features").enumerated() {
        let handle = try table(feature.table, "features[\(f)].table")
        request.append(PooledFeatureOf(
            table: handle, ids: try buffer(feature.ids, feature.id_count, "features[\(f)].ids"),
            offsets: try offsetBuffer(feature.offsets, batchSize + 1),
            weights: try feature.weights.map { try buffer($0, feature.id_count, "features[\(f)].weights") },
            pooling: try poolingMode(feature.pooling)))
        width += handle.dimension
    }
    return (request, width)
}

/// A table of a store or of a sharded store: what a request's row width needs.
private protocol PooledTable { var dimension: Int { get } }
extension Table: PooledTable {}
extension ShardedTable: PooledTable {}

// MARK: - Writes

@_cdecl("embstore_put")
public func embstorePut(_ store: OpaquePointer?, _ table: OpaquePointer?, _ id: UInt64, _ vector: UnsafePointer<Float>?, _ dimension: Int,
                        _ codec: UnsafePointer<CChar>?) -> Int32 {
    status {
        let store = try writableStore(store)
        let table: Table = try object(table, "table")
        guard dimension == table.dimension else {
            throw StoreError.dimensionMismatch(table: table.name, expected: table.dimension, actual: dimension)
        }
        let vector = try buffer(vector, dimension, "vector")
        let codec = try RowCodecs.parse(try string(codec, "codec"))
        try store.write { batch in try batch.put(table, id: id, vector: vector, codec: codec) }
    }
}

@_cdecl("embstore_delete")
public func embstoreDelete(_ store: OpaquePointer?, _ table: OpaquePointer?, _ id: UInt64, _ existed: UnsafeMutablePointer<Int32>?) -> Int32 {
    status {
        let store = try writableStore(store)
        let table: Table = try object(table, "table")
        // Deleted first, then reported: `existed?.pointee = try store.delete(…)` skipped the delete
        // itself when existed was NULL (optional chaining does not evaluate the right-hand side).
        let deleted = try store.delete(table, id: id)
        existed?.pointee = deleted ? 1 : 0
    }
}

/// The policy a C caller spells: a codec, `tiers=SPEC`, `budget=FRACTION` or `budget-bytes=N`.
private func codecPolicy(_ text: String) throws -> CodecPolicy {
    if let spec = text.dropPrefix("tiers=") { return .tiers(try CodecPolicy.parseTiers(spec)) }
    if let fraction = text.dropPrefix("budget=") { return .budget(.fraction(try CodecPolicy.parseBudgetFraction(fraction)), weighting: .retrieval) }
    if let bytes = text.dropPrefix("budget-bytes=") {
        guard let bytes = Int(bytes), bytes > 0 else { throw APIError.invalid("budget-bytes=\(bytes): not a positive number of bytes") }
        return .budget(.bytes(bytes), weighting: .retrieval)
    }
    return .single(try RowCodecs.parse(text))
}

private extension String {
    func dropPrefix(_ prefix: String) -> String? { hasPrefix(prefix) ? String(dropFirst(prefix.count)) : nil }
}

@_cdecl("embstore_ingest")
public func embstoreIngest(_ store: OpaquePointer?, _ table: UnsafePointer<CChar>?, _ vectors: UnsafePointer<Float>?, _ count: Int,
                           _ dimension: Int, _ ids: UnsafePointer<UInt64>?, _ counts: UnsafePointer<Double>?, _ policyText: UnsafePointer<CChar>?,
                           _ report: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    status {
        let store = try writableStore(store)
        let name = try string(table, "table")
        guard count >= 0, dimension >= 1 else { throw APIError.invalid("count \(count) and dimension \(dimension): a count of 0 or more rows of dimension 1 or more") }
        let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
        guard !overflow else { throw APIError.invalid("count \(count) × dimension \(dimension) overflows") }
        let rows = try buffer(vectors, product, "vectors")
        let policy = try codecPolicy(policyText.map { String(cString: $0) } ?? "fp32")
        if case .tiers = policy, counts == nil { throw APIError.invalid("a tiers policy ranks rows by access count: give counts") }
        let loaded = try store.load(table: name, ids: try ids.map { Array(try buffer($0, count, "ids")) }, rows: rows, count: count,
                                    dimension: dimension, policy: policy, counts: try counts.map { Array(try buffer($0, count, "counts")) })
        struct Share: Encodable { let codec: String; let rows: Int; let bytes: Int }
        struct Report: Encodable { let table: String; let rows: Int; let policy: String; let codec: String; let codecs: [Share] }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = try encoder.encode(Report(table: loaded.table, rows: loaded.rows, policy: loaded.summary.policy, codec: "\(loaded.codec)",
                                             codecs: loaded.summary.shares.map { Share(codec: $0.codec, rows: $0.rows, bytes: $0.bytes) }))
        give(String(decoding: json, as: UTF8.self), to: report)
    }
}

// MARK: - Staged rollouts

@_cdecl("embstore_rollout_open")
public func embstoreRolloutOpen(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        let out = try required(out, "rollout")
        out.pointee = nil
        out.pointee = handle(try VariantRouter(path: try string(path, "path")))
    }
}

@_cdecl("embstore_rollout_close")
public func embstoreRolloutClose(_ rollout: OpaquePointer?) {
    release(rollout)
}

@_cdecl("embstore_rollout_reload")
public func embstoreRolloutReload(_ rollout: OpaquePointer?, _ changed: UnsafeMutablePointer<Int32>?) -> Int32 {
    status {
        let router: VariantRouter = try object(rollout, "rollout")
        let didChange = try router.reload()
        changed?.pointee = didChange ? 1 : 0
    }
}

@_cdecl("embstore_rollout_dimension")
public func embstoreRolloutDimension(_ rollout: OpaquePointer?, _ table: UnsafePointer<CChar>?, _ dimension: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let router: VariantRouter = try object(rollout, "rollout")
        let d = try router.dimension(of: try string(table, "table"))
        try required(dimension, "dimension").pointee = d
    }
}

@_cdecl("embstore_rollout_variant")
public func embstoreRolloutVariant(_ rollout: OpaquePointer?, _ unit: UInt64, _ variant: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let router: VariantRouter = try object(rollout, "rollout")
        let index = router.rollout.variant(for: unit)
        try required(variant, "variant").pointee = index
    }
}

@_cdecl("embstore_rollout_reader_open")
public func embstoreRolloutReaderOpen(_ rollout: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        let router: VariantRouter = try object(rollout, "rollout")
        let out = try required(out, "reader")
        out.pointee = handle(router.makeReader())
    }
}

@_cdecl("embstore_rollout_reader_close")
public func embstoreRolloutReaderClose(_ reader: OpaquePointer?) {
    release(reader)
}

@_cdecl("embstore_rollout_lookup")
public func embstoreRolloutLookup(_ reader: OpaquePointer?, _ unit: UInt64, _ table: UnsafePointer<CChar>?, _ ids: UnsafePointer<UInt64>?,
                                  _ count: Int, _ out: UnsafeMutablePointer<Float>?, _ dimension: Int, _ found: UnsafeMutablePointer<UInt8>?,
                                  _ missing: Int32, _ variant: UnsafeMutablePointer<Int>?, _ foundCount: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let reader: VariantReader = try object(reader, "reader")
        let ids = try buffer(ids, count, "ids")
        let out = try mutableBuffer(out, count * dimension, "out")
        let mode = try missingMode(missing)
        if found != nil, mode != .zeros {
            throw APIError.invalid("a found mask is for EMBSTORE_MISSING_ZEROS; with EMBSTORE_MISSING_ERROR every row is found or the call fails")
        }
        // (The result is kept first: `variant?.pointee = try …` would skip the call when NULL.)
        let result = try found.map { found in
            try found.withMemoryRebound(to: Bool.self, capacity: count) {
                try reader.lookup(unit: unit, table: try string(table, "table"), ids: ids, into: out,
                                  found: UnsafeMutableBufferPointer(start: $0, count: count), dimension: dimension)
            }
        } ?? reader.lookup(unit: unit, table: try string(table, "table"), ids: ids, into: out, missing: mode, dimension: dimension)
        variant?.pointee = result.variant
        foundCount?.pointee = result.found
    }
}

@_cdecl("embstore_rollout_metrics")
public func embstoreRolloutMetrics(_ rollout: OpaquePointer?, _ prometheus: Int32, _ text: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    status {
        let router: VariantRouter = try object(rollout, "rollout")
        let text = try required(text, "text")
        give(prometheus != 0 ? router.prometheusText() : try router.metricsJSON(), to: text)
    }
}
