import EmbeddingCodecs
import Foundation
import LMDB
import Synchronization

/// Online access counting: which ids lookups ask for, learned while serving, kept in the store
/// (`t<T>/counts`, FORMAT.md "Access counts") for `stats` and for rebuilding a table to match.
///
/// Opt in per reader (`Reader.counter`). A reader counts every `sampleEvery`-th id it is asked
/// for (a stride through its stream of ids, so each sampled lookup stands for `sampleEvery`)
/// into a table of its own: no lock and no shared cache line in the lookup path. It hands its
/// counts to the counter when that table fills, when it is deinitialised, and at its next
/// lookup after `requestHandover()`. `flush(to:)` adds what was handed over into the store in
/// one write transaction (any number of processes may flush: each adds its own). A reader idle
/// since a handover request keeps its counts until its next lookup.
public final class AccessCounter: Sendable {
    /// One id counted in this many looked up; each counts as this many.
    public let sampleEvery: Int
    private let pending = Mutex<[UInt32: CountTable]>([:])
    /// Raised by `requestHandover`; readers compare it with the value they last saw.
    let epoch = Atomic<Int>(0)

    public init(sampleEvery: Int = 64) {
        self.sampleEvery = max(1, sampleEvery)
    }

    /// Asks every reader counting into this counter to hand its counts over at its next lookup.
    public func requestHandover() {
        epoch.add(1, ordering: .releasing)
    }

    /// Counts handed over and not yet flushed: per table id, per id.
    public var pendingCounts: [UInt32: [UInt64: UInt64]] {
        pending.withLock { pending in
            pending.mapValues { table in
                var counts: [UInt64: UInt64] = [:]
                table.forEach { counts[$0] = $1 }
                return counts
            }
        }
    }

    func merge(table: UInt32, _ local: CountTable, scale: Int? = nil) {
        let every = UInt64(scale ?? sampleEvery)
        pending.withLock { pending in
            let shared: CountTable
            if let existing = pending[table] { shared = existing } else { shared = CountTable(); pending[table] = shared }
            shared.add(contentsOf: local, times: every)
        }
    }

    /// Adds the counts handed over so far to the store's counts (creating a table's counts
    /// database on first use), in one write transaction; returns how many ids it wrote. Counts
    /// of a table dropped meanwhile are discarded.
    @discardableResult
    public func flush(to store: Store) throws -> Int {
        let taken = pending.withLock { pending in
            let taken = pending
            pending = [:]
            return taken
        }
        guard !taken.isEmpty else { return 0 }
        do {
            return try store.addAccessCounts(taken.mapValues { $0.sorted() })
        } catch {
            // Not lost: back into the pending counts for the next flush.
            for (table, counts) in taken { merge(table: table, counts, scale: 1) }
            throw error
        }
    }

    /// Flushes into `store` every `seconds` on a thread of its own, after asking readers to hand
    /// over, until the returned timer is stopped (and once more then). Errors are passed to
    /// `onError` and the counts kept for the next flush.
    public func startFlushing(to store: Store, every seconds: Double,
                              onError: @escaping @Sendable (any Error) -> Void = { _ in }) -> FlushTimer {
        FlushTimer(counter: self, store: store, interval: seconds, onError: onError)
    }

    /// A thread that flushes a counter periodically.
    public final class FlushTimer: Sendable {
        private final class State: Sendable {
            let stopped = Atomic<Bool>(false)
            let wake = DispatchSemaphore(value: 0)
            let finished = DispatchSemaphore(value: 0)
        }
        private let state = State()

        init(counter: AccessCounter, store: Store, interval: Double, onError: @escaping @Sendable (any Error) -> Void) {
            let state = state
            let thread = Thread {
                while true {
                    _ = state.wake.wait(timeout: .now() + max(0.01, interval))
                    // Read before flushing: a stop during this flush wakes the next wait at once,
                    // so what was handed over until `stop` is always flushed.
                    let last = state.stopped.load(ordering: .acquiring)
                    counter.requestHandover()
                    do { try counter.flush(to: store) } catch { onError(error) }
                    if last { break }
                }
                state.finished.signal()
            }
            thread.name = "embstore access counts"
            thread.start()
        }

        /// Stops the thread after one last flush, and waits for it.
        public func stop() {
            guard !state.stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
            state.wake.signal()
            state.finished.wait()
        }

        deinit { stop() }
    }
}

/// Counts by id: open addressing on the id (a count of 0 marks an empty slot), growing at half
/// full. Readers count into small ones of their own, which stay in the core's cache.
final class CountTable: @unchecked Sendable {   // used under a lock, or by one reader
    private var keys: UnsafeMutablePointer<UInt64>
    private var counts: UnsafeMutablePointer<UInt64>
    private var capacity: Int
    private(set) var count = 0

    init(capacity: Int = 1 << 12) {
        self.capacity = capacity
        keys = .allocate(capacity: capacity)
        counts = .allocate(capacity: capacity)
        keys.initialize(repeating: 0, count: capacity)
        counts.initialize(repeating: 0, count: capacity)
    }

    deinit {
        keys.deallocate()
        counts.deallocate()
    }

    @inline(__always)
    private static func slot(_ id: UInt64, _ mask: Int) -> Int {
        Int(truncatingIfNeeded: (id &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    /// Adds `amount` (> 0) to the count of `id`, saturating.
    @inline(__always)
    func add(_ id: UInt64, _ amount: UInt64 = 1) {
        if 2 * (count + 1) > capacity { grow() }
        let mask = capacity - 1
        var s = Self.slot(id, mask)
        while true {
            if counts[s] == 0 {
                keys[s] = id
                counts[s] = amount
                count += 1
                return
            }
            if keys[s] == id {
                let (sum, overflow) = counts[s].addingReportingOverflow(amount)
                counts[s] = overflow ? .max : sum
                return
            }
            s = (s + 1) & mask
        }
    }

    /// Adds every count of `other`, times `scale`. The table is grown first to hold them all,
    /// and the slots a few entries ahead are prefetched: a reader hands its table over into a
    /// large shared one, where nearly every slot is a cache miss.
    func add(contentsOf other: CountTable, times scale: UInt64) {
        while 2 * (count + other.count + 1) > capacity { grow() }
        let ahead = 8
        var pending: [(UInt64, UInt64)] = []
        pending.reserveCapacity(other.count)
        other.forEach { pending.append(($0, $1)) }
        let mask = capacity - 1
        for i in pending.indices {
            if i + ahead < pending.count {
                let s = Self.slot(pending[i + ahead].0, mask)
                prefetchForReading(UnsafeRawPointer(keys + s))
                prefetchForReading(UnsafeRawPointer(counts + s))
            }
            let (sum, overflow) = pending[i].1.multipliedReportingOverflow(by: scale)
            add(pending[i].0, overflow ? .max : sum)
        }
    }

    private func grow() {
        let oldKeys = keys, oldCounts = counts, oldCapacity = capacity
        capacity *= 2
        keys = .allocate(capacity: capacity)
        counts = .allocate(capacity: capacity)
        keys.initialize(repeating: 0, count: capacity)
        counts.initialize(repeating: 0, count: capacity)
        let mask = capacity - 1
        for i in 0..<oldCapacity where oldCounts[i] != 0 {
            var s = Self.slot(oldKeys[i], mask)
            while counts[s] != 0 { s = (s + 1) & mask }
            keys[s] = oldKeys[i]
            counts[s] = oldCounts[i]
        }
        oldKeys.deallocate()
        oldCounts.deallocate()
    }

    func forEach(_ body: (UInt64, UInt64) -> Void) {
        for i in 0..<capacity where counts[i] != 0 { body(keys[i], counts[i]) }
    }

    /// The counts in ascending id order.
    func sorted() -> [(id: UInt64, count: UInt64)] {
        var pairs: [(id: UInt64, count: UInt64)] = []
        pairs.reserveCapacity(count)
        forEach { pairs.append(($0, $1)) }
        pairs.sort { $0.id < $1.id }
        return pairs
    }

    func removeAll() {
        counts.update(repeating: 0, count: capacity)
        count = 0
    }
}

/// What a reader counts for its `AccessCounter`.
struct ReaderCounting {
    let counter: AccessCounter
    var tables: [UInt32: CountTable] = [:]
    /// The table of the last batch, so a reader serving one table looks nothing up.
    var lastTable: UInt32 = .max
    var last: CountTable?
    /// Position, in the reader's stream of ids, of the next id sampled, counted from the start
    /// of the next batch.
    var nextSample = 0
    var epochSeen: Int
    /// Distinct ids at which a reader hands its table over: it stays within 64 KiB.
    static let handoverCount = 1 << 11

    init(counter: AccessCounter) {
        self.counter = counter
        epochSeen = counter.epoch.load(ordering: .acquiring)
    }

    /// Counts the sampled ids of a batch of lookups of table `table`.
    @inline(__always)
    mutating func record(_ ids: UnsafeBufferPointer<UInt64>, table: UInt32) {
        if nextSample < ids.count {
            if table != lastTable || last == nil {
                if let existing = tables[table] { last = existing } else { let made = CountTable(); tables[table] = made; last = made }
                lastTable = table
            }
            let local = last!
            let every = counter.sampleEvery
            var i = nextSample
            while i < ids.count {
                local.add(ids[i])
                i += every
            }
            nextSample = i - ids.count
            if local.count >= Self.handoverCount { handOver() }
        } else {
            nextSample -= ids.count
        }
        let epoch = counter.epoch.load(ordering: .acquiring)
        if epoch != epochSeen {
            epochSeen = epoch
            handOver()
        }
    }

    /// Gives every table's counts to the counter.
    func handOver() {
        for (table, local) in tables where local.count > 0 {
            counter.merge(table: table, local)
            local.removeAll()
        }
    }
}

extension Store {
    /// Where a table's access counts are kept (FORMAT.md, "Access counts").
    static func countsDatabase(_ tableID: UInt32) -> String { "t\(tableID)/counts" }

    /// The access counts kept for `table` (`AccessCounter.flush`), by id; empty when none were
    /// flushed.
    public func accessCounts(_ table: Table) throws -> [UInt64: UInt64] {
        let table = try resolve(table)
        return try translatingErrors {
            let database: Database
            do {
                database = try environment.openDatabases([Store.countsDatabase(table.id)], flags: .integerKey)[0]
            } catch let error as LMDBError where error == .notFound {
                return [:]
            }
            return try environment.read { txn in
                var counts: [UInt64: UInt64] = [:]
                try txn.withCursor(database) { cursor in
                    var entry = try cursor.first()
                    while let current = entry {
                        guard let id = current.integerKey else {
                            throw StoreError.corruptMetadata(table: table.name, reason: "an access count record has a \(current.key.count)-byte key, not 8")
                        }
                        counts[id] = try Store.decodeCount(current.value, id: id, table: table)
                        entry = try cursor.next()
                    }
                }
                return counts
            }
        }
    }

    /// Adds `counts` (per table id, ascending ids) to the tables' counts databases in one write
    /// transaction; counts of tables that no longer exist are dropped. Returns the ids written.
    func addAccessCounts(_ counts: [UInt32: [(id: UInt64, count: UInt64)]]) throws -> Int {
        try requireWritable()
        return try followingSwaps {
            let tables = Dictionary(try tableNames().compactMap { try? table($0) }.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
            return try translatingErrors {
                try writeTransaction { txn in
                    var written = 0
                    for (tableID, tableCounts) in counts {
                        guard let table = tables[tableID] else { continue }
                        let database = try txn.openDatabase(Store.countsDatabase(tableID), flags: [.create, .integerKey])
                        for (id, count) in tableCounts {
                            // A damaged count is replaced, not added to: counts only inform a policy.
                            let existing = try txn.withValue(forKey: id, in: database) { bytes -> UInt64 in
                                guard let bytes else { return 0 }
                                return (try? Store.decodeCount(bytes, id: id, table: table)) ?? 0
                            }
                            let (sum, overflow) = existing.addingReportingOverflow(count)
                            let value = withUnsafeBytes(of: (overflow ? UInt64.max : sum).littleEndian) { Array($0) }
                            try table.sealing(value, key: id).withUnsafeBytes { try txn.put($0, forKey: id, in: database) }
                            written += 1
                        }
                    }
                    return written
                }
            }
        }
    }

    /// The count of a `t<T>/counts` value (FORMAT.md "Access counts"), its seal checked (version 5).
    static func decodeCount(_ value: UnsafeRawBufferPointer, id: UInt64, table: Table) throws -> UInt64 {
        let bytes = try table.unsealed(value, key: id, what: "the access count of id \(id)")
        guard bytes.count == 8 else {
            throw StoreError.corruptMetadata(table: table.name, reason: "the access count of id \(id) has \(bytes.count) bytes, not 8")
        }
        return UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
    }
}
