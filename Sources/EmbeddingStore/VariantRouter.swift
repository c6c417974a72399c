import Foundation
import Synchronization

/// Lookups routed by a rollout (README, "Staged rollout"): each unit's lookups go to its
/// variant's store. The rollout file is read again on `reload()`, or by itself when it changed
/// (checked at most every `checkInterval` seconds, at a batch boundary): a new stage or a
/// rollback takes effect for the next batch, and a batch under way finishes on the store it
/// began on, so no lookup fails. Per-variant counters: batches, ids, ids missing, and a latency
/// histogram, as JSON or in Prometheus's text format.
public final class VariantRouter: Sendable {
    public let path: String
    /// Seconds between checks of the rollout file's modification (0: every batch).
    public let checkInterval: Double

    struct State: Sendable {
        let rollout: Rollout
        /// Per variant of the rollout, its store (stores of the same path are opened once).
        let stores: [AnyStore]
        let modified: Date?
    }

    private let state: Mutex<State>
    private let nextCheck = Mutex<Date>(.distantPast)
    /// Counters by variant name (a rollback keeps them).
    private let counters = Mutex<[String: VariantCounters]>([:])

    public init(path: String, checkInterval: Double = 1) throws {
        self.path = path
        self.checkInterval = checkInterval
        state = Mutex(try Self.load(path, reusing: []))
    }

    /// The rollout in effect.
    public var rollout: Rollout { state.withLock { $0.rollout } }

    static func modification(_ path: String) -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
    }

    static func load(_ path: String, reusing open: [(String, AnyStore)]) throws -> State {
        let modified = modification(path)
        let rollout = try Rollout.read(from: path)
        let base = (path as NSString).deletingLastPathComponent
        var opened = open
        var stores: [AnyStore] = []
        for variant in rollout.variants {
            let storePath = variant.store.hasPrefix("/") ? variant.store : (base as NSString).appendingPathComponent(variant.store)
            if let existing = opened.first(where: { $0.0 == storePath }) {
                stores.append(existing.1)
            } else {
                let store = try AnyStore.open(storePath)
                opened.append((storePath, store))
                stores.append(store)
            }
        }
        return State(rollout: rollout, stores: stores, modified: modified)
    }

    /// Reads the rollout file again; returns whether the split changed. A bad file is refused
    /// (the error says why) and the rollout in effect stays.
    @discardableResult
    public func reload() throws -> Bool {
        let current = state.withLock { $0 }
        let base = (path as NSString).deletingLastPathComponent
        let open = zip(current.rollout.variants, current.stores).map { variant, store in
            (variant.store.hasPrefix("/") ? variant.store : (base as NSString).appendingPathComponent(variant.store), store)
        }
        let next = try Self.load(path, reusing: open)
        state.withLock { $0 = next }
        return next.rollout != current.rollout
    }

    /// The state for a batch: the rollout file read again first when it changed since.
    func currentState() -> State {
        let now = Date()
        let due = nextCheck.withLock { next -> Bool in
            guard now >= next else { return false }
            next = now.addingTimeInterval(checkInterval)
            return true
        }
        if due {
            let known = state.withLock { $0.modified }
            if Self.modification(path) != known { _ = try? reload() }
        }
        return state.withLock { $0 }
    }

    /// A reader for one thread.
    public func makeReader() -> VariantReader { VariantReader(router: self) }

    /// The dimension of `table` in the baseline's store.
    public func dimension(of table: String) throws -> Int {
        try state.withLock { $0.stores[0] }.dimension(of: table)
    }

    func record(variant: String, ids: Int, missing: Int, nanoseconds: UInt64) {
        // In place (a copy of the counters out of the dictionary would copy the histogram too).
        counters.withLock { $0[variant, default: VariantCounters()].record(ids: ids, missing: missing, nanoseconds: nanoseconds) }
    }

    /// The counters of every variant that served a batch.
    public var counterSnapshot: [String: VariantCounters] { counters.withLock { $0 } }

    /// `{"variants": {name: {batches, ids, missing, latency_ns: {p50, p99, p999, count, buckets}}}}`,
    /// `buckets` the histogram's non-empty buckets as `[lowest value, count]` pairs, so that
    /// counters of several processes add up (`embstore rollout report --metrics`).
    public func metricsJSON() throws -> String {
        let variants = counterSnapshot.mapValues { c -> [String: Any] in
            ["batches": c.batches, "ids": c.ids, "missing": c.missing,
             "latency_ns": ["count": c.latency.count, "p50": c.latency.percentile(0.5), "p99": c.latency.percentile(0.99),
                            "p999": c.latency.percentile(0.999), "buckets": c.latency.buckets.map { [$0.lowest, UInt64($0.count)] }]]
        }
        let data = try JSONSerialization.data(withJSONObject: ["variants": variants], options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    /// Prometheus's text format: counters and a latency summary per variant.
    public func prometheusText() -> String {
        var lines = ["# TYPE embstore_variant_batches_total counter", "# TYPE embstore_variant_ids_total counter",
                     "# TYPE embstore_variant_missing_total counter", "# TYPE embstore_variant_latency_seconds summary"]
        for (name, c) in counterSnapshot.sorted(by: { $0.key < $1.key }) {
            let label = "variant=\"\(name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\""))\""
            lines.append("embstore_variant_batches_total{\(label)} \(c.batches)")
            lines.append("embstore_variant_ids_total{\(label)} \(c.ids)")
            lines.append("embstore_variant_missing_total{\(label)} \(c.missing)")
            for q in [0.5, 0.99, 0.999] {
                lines.append("embstore_variant_latency_seconds{\(label),quantile=\"\(q)\"} \(Double(c.latency.percentile(q)) / 1e9)")
            }
            lines.append("embstore_variant_latency_seconds_count{\(label)} \(c.latency.count)")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// One variant's counters.
public struct VariantCounters: Sendable {
    public init() {}
    public var batches = 0
    public var ids = 0
    public var missing = 0
    public var latency = LatencyHistogram()

    mutating func record(ids: Int, missing: Int, nanoseconds: UInt64) {
        batches += 1
        self.ids += ids
        self.missing += missing
        latency.add(nanoseconds)
    }
}

/// Latencies in nanoseconds, in buckets 1/16 of a power of two wide (a value is reported
/// within 6.25% of its true one, HdrHistogram-style with 4 bits below the leading one).
public struct LatencyHistogram: Sendable {
    private var counts = [Int](repeating: 0, count: 64 * 16)
    public private(set) var count = 0

    static func bucket(_ value: UInt64) -> Int {
        guard value >= 16 else { return Int(value) }
        let exponent = 63 - value.leadingZeroBitCount
        return exponent * 16 + Int((value >> (exponent - 4)) & 15)
    }

    /// The smallest value of bucket `b`.
    static func lowest(_ b: Int) -> UInt64 {
        guard b >= 16 else { return UInt64(b) }
        let exponent = b / 16
        return (UInt64(16 + b % 16)) << (exponent - 4)
    }

    public init() {}

    public mutating func add(_ nanoseconds: UInt64, count n: Int = 1) {
        counts[Self.bucket(nanoseconds)] += n
        count += n
    }

    /// The non-empty buckets: each one's lowest value and its count (what `add(_:count:)` of
    /// those values gives back).
    public var buckets: [(lowest: UInt64, count: Int)] {
        counts.indices.filter { counts[$0] > 0 }.map { (Self.lowest($0), counts[$0]) }
    }

    /// The value at quantile `q` (0 ... 1): the lowest value of its bucket; 0 when empty.
    public func percentile(_ q: Double) -> UInt64 {
        guard count > 0 else { return 0 }
        let rank = max(1, Int((q * Double(count)).rounded(.up)))
        var seen = 0
        for (b, n) in counts.enumerated() where n > 0 {
            seen += n
            if seen >= rank { return Self.lowest(b) }
        }
        return Self.lowest(counts.count - 1)
    }
}

/// Lookups of one thread through a `VariantRouter`: one reader per store, made when first used.
public final class VariantReader {
    let router: VariantRouter
    private var singles: [ObjectIdentifier: Reader] = [:]
    private var shardeds: [ObjectIdentifier: ShardedReader] = [:]
    /// Table handles by store and name, opened on first use.
    private struct TableKey: Hashable {
        let store: ObjectIdentifier
        let name: String
    }
    private var tables: [TableKey: Table] = [:]
    private var shardedTables: [TableKey: ShardedTable] = [:]

    init(router: VariantRouter) { self.router = router }

    /// The rows of `ids` of table `table` from `unit`'s variant, into `out` (`ids.count ×
    /// dimension` floats; `dimension`, when given, must be the table's in that variant).
    /// Returns the variant's index in the rollout and how many were found.
    @discardableResult
    public func lookup(unit: UInt64, table: String, ids: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableBufferPointer<Float>,
                       found: UnsafeMutableBufferPointer<Bool>? = nil, missing: MissingRows = .zeros,
                       dimension: Int? = nil) throws -> (variant: Int, found: Int) {
        let state = router.currentState()
        let v = state.rollout.variant(for: unit)
        let started = DispatchTime.now().uptimeNanoseconds
        func check(_ actual: Int) throws {
            if let dimension, dimension != actual { throw StoreError.dimensionMismatch(table: table, expected: actual, actual: dimension) }
        }
        let n: Int
        switch state.stores[v] {
        case .single(let store):
            let reader = try cached(&singles, ObjectIdentifier(store)) { try store.makeReader() }
            let handle = try cached(&tables, TableKey(store: ObjectIdentifier(store), name: table)) { try store.table(table) }
            try check(handle.dimension)
            n = try found.map { try reader.lookup(handle, ids: ids, into: out, found: $0) } ?? reader.lookup(handle, ids: ids, into: out, missing: missing)
        case .sharded(let store):
            let reader = try cached(&shardeds, ObjectIdentifier(store)) { try store.makeReader() }
            let handle = try cached(&shardedTables, TableKey(store: ObjectIdentifier(store), name: table)) { try store.table(table) }
            try check(handle.dimension)
            n = try reader.lookup(handle, ids: ids, into: out, found: found, missing: missing)
        }
        router.record(variant: state.rollout.variants[v].name, ids: ids.count, missing: ids.count - n,
                      nanoseconds: DispatchTime.now().uptimeNanoseconds - started)
        return (v, n)
    }

    /// `cache[key]`, made by `make` on first use.
    private func cached<Key: Hashable, Value>(_ cache: inout [Key: Value], _ key: Key, _ make: () throws -> Value) rethrows -> Value {
        if let value = cache[key] { return value }
        let value = try make()
        cache[key] = value
        return value
    }
}
