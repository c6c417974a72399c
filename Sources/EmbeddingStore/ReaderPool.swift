import Dispatch
import Synchronization

/// Readers shared by many threads or tasks: each call checks one out, uses it synchronously and
/// returns it, so no transaction is ever held across an `await` or between calls.
///
/// The `Sendable` story: `Store` and `Table` are immutable handles and `Sendable`. A `Reader`
/// is not `Sendable` — it is used by one thread at a time — but between calls its LMDB read
/// transaction is reset and, because the environment is opened with `MDB_NOTLS`, not tied to
/// the thread that began it; so the pool may hand an idle reader to any thread. Each reader
/// holds one LMDB reader slot while it lives: `capacity` bounds them.
public final class ReaderPool: Sendable {
    /// A reader parked in the pool; only ever touched by the thread that checked it out.
    private struct Parked: @unchecked Sendable {
        let reader: Reader
    }

    private let store: Store
    private let idle = Mutex<[Parked]>([])
    /// `store.generationSerial` when the idle readers last moved to the store's generation.
    private let idleSerial = Atomic<Int>(0)
    private let created = Atomic<Int>(0)
    /// Most readers this pool creates; callers beyond it wait for one to come back.
    public let capacity: Int
    private let available: DispatchSemaphore

    public init(store: Store, capacity: Int = 16) {
        self.store = store
        self.capacity = max(1, capacity)
        self.available = DispatchSemaphore(value: max(1, capacity))
    }

    /// Runs `body` with a reader of its own, on the calling thread.
    public func withReader<R>(_ body: (Reader) throws -> R) throws -> R {
        available.wait()
        defer { available.signal() }
        let reader = try checkOut()
        defer { idle.withLock { $0.append(Parked(reader: reader)) } }
        return try body(reader)
    }

    private func checkOut() throws -> Reader {
        if let parked = idle.withLock({ idle -> Parked? in
            // After a swap, idle readers move at once rather than at their next use (the pool
            // hands out the last one parked first): each keeps the old generation open meanwhile.
            let serial = store.generationSerial.load(ordering: .acquiring)
            if idleSerial.exchange(serial, ordering: .relaxed) != serial {
                for parked in idle { parked.reader.moveToStoreGeneration() }
            }
            return idle.popLast()
        }) { return parked.reader }
        created.wrappingAdd(1, ordering: .relaxed)
        return try store.makeReader()
    }

    /// The rows of `ids` (`ids.count × dimension` floats). Suspends nowhere while a
    /// transaction is open: the lookup itself runs synchronously inside.
    public func lookup(_ table: Table, ids: [UInt64], missing: MissingRows = .zeros) async throws -> [Float] {
        try withReader { try $0.lookup(table, ids: ids, missing: missing) }
    }

    /// Splits one large batch into `parts` slices looked up on as many threads at once, each with
    /// its own reader (so each slice sees its own snapshot; with a concurrent writer the slices
    /// may differ in age). Returns how many ids were found.
    @discardableResult
    public func lookupSplit(_ table: Table, ids: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableBufferPointer<Float>,
                            parts: Int, missing: MissingRows = .zeros) throws -> Int {
        let d = table.dimension
        guard out.count >= ids.count * d else {
            throw StoreError.invalidArgument("output buffer holds \(out.count) floats; \(ids.count) ids × dimension \(d) need \(ids.count * d)")
        }
        let parts = max(1, min(parts, ids.count, capacity))
        let results = Mutex<(found: Int, error: (any Error)?)>((0, nil))
        // Each part writes only its own slice of `out`.
        nonisolated(unsafe) let (ids, out) = (ids, out)
        DispatchQueue.concurrentPerform(iterations: parts) { part in
            let start = ids.count * part / parts, end = ids.count * (part + 1) / parts
            do {
                let found = try withReader { reader in
                    try reader.lookup(table, ids: UnsafeBufferPointer(rebasing: ids[start..<end]),
                                      into: UnsafeMutableBufferPointer(rebasing: out[start * d..<end * d]), missing: missing)
                }
                results.withLock { $0.found += found }
            } catch {
                results.withLock { if $0.error == nil { $0.error = error } }
            }
        }
        let (found, error) = results.withLock { ($0.found, $0.error) }
        if let error { throw error }
        return found
    }

    /// Readers created so far (each holds an LMDB reader slot).
    public var readerCount: Int { created.load(ordering: .relaxed) }
}
