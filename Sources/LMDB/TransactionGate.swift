import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Lets many transactions run at once, and lets the rare operation that must see none of them
/// (growing the map, closing the environment) wait for them to finish.
///
/// > mdb_env_set_mapsize: This function may only be called ... if no transactions are active
/// > in this process.
///
/// Growing the map remaps it, so a reader still holding a pointer into the old mapping would read
/// freed memory. Every transaction of the process therefore "enters" the gate while it is active
/// (begin/renew → commit/abort/reset); `exclusive` closes the gate to newcomers, waits for the
/// active ones to leave, and runs its body alone. Entering costs two uncontended atomic
/// operations, which matters on the lookup path.
final class TransactionGate: Sendable {
    private let active = Atomic<Int>(0)
    private let closing = Atomic<Bool>(false)
    private let closed = Atomic<Bool>(false)
    private let exclusiveLock = Mutex<Void>(())

    /// Marks one more active transaction; waits while an exclusive operation runs.
    /// Returns false when the environment has been closed.
    func enter() -> Bool {
        while true {
            if closing.load(ordering: .sequentiallyConsistent) {
                if closed.load(ordering: .sequentiallyConsistent) { return false }
                usleep(50)
                continue
            }
            active.wrappingAdd(1, ordering: .sequentiallyConsistent)
            // Re-check after announcing ourselves: an exclusive operation that set `closing`
            // before our increment will see it and wait; one that sets it after will wait too.
            if !closing.load(ordering: .sequentiallyConsistent) { return true }
            active.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        }
    }

    /// Marks the end of an active transaction.
    func leave() {
        active.wrappingSubtract(1, ordering: .sequentiallyConsistent)
    }

    /// Runs `body` while no transaction of this process is active.
    ///
    /// Returns nil without running `body` when active transactions do not finish within
    /// `timeout` seconds (typically because the calling thread itself holds one).
    /// With `close` set, the gate stays shut afterwards: every later `enter` fails.
    func exclusive<R>(timeout: Double, close: Bool = false, _ body: () throws -> R) rethrows -> R? {
        try exclusiveLock.withLock { _ in
            if closed.load(ordering: .sequentiallyConsistent) { return nil }
            closing.store(true, ordering: .sequentiallyConsistent)
            var keepClosed = false
            defer { if !keepClosed { closing.store(false, ordering: .sequentiallyConsistent) } }
            var waited = 0.0
            while active.load(ordering: .sequentiallyConsistent) != 0 {
                if waited >= timeout { return nil }
                usleep(100)
                waited += 0.0001
            }
            let result = try body()
            if close {
                closed.store(true, ordering: .sequentiallyConsistent)
                keepClosed = true
            }
            return result
        }
    }

    var isClosed: Bool { closed.load(ordering: .sequentiallyConsistent) }
}
