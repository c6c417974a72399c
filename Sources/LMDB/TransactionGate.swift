import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
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
///
/// The thread running an exclusive body may itself begin transactions inside it (every other
/// thread still waits), and may nest another exclusive operation once its own transactions have
/// ended, as a write inside `Environment.withExclusiveAccess` that must grow the map does.
///
/// Closing needs one more thing: a reset read transaction holds no snapshot (it neither stops the
/// map from growing nor keeps the environment open) but still owns an `MDB_txn` that
/// `mdb_txn_abort` frees later, through the environment. Freeing it races with `mdb_env_close`,
/// so it is bracketed by `enterFinishing`/`leaveFinishing`, which only a close waits for. Once
/// the environment is closed, `enterFinishing` fails and the handle is left alone (mdb_env_close
/// has already released this process's reader slots; the small `MDB_txn` allocation leaks).
final class TransactionGate: Sendable {
    private let active = Atomic<Int>(0)
    private let finishing = Atomic<Int>(0)
    /// Raised while an exclusive operation waits or runs: `enter` waits.
    private let closing = Atomic<Bool>(false)
    /// Raised while a close waits or runs: `enterFinishing` waits too.
    private let shuttingDown = Atomic<Bool>(false)
    private let closed = Atomic<Bool>(false)
    /// The thread running an exclusive body (0 when none).
    private let owner = Atomic<UInt>(0)
    private let exclusiveLock = Mutex<Void>(())

    /// Marks one more active transaction; waits while an exclusive operation runs on another
    /// thread. Returns false when the environment has been closed.
    func enter() -> Bool {
        enter(active, unless: closing)
    }

    /// Marks the end of an active transaction.
    func leave() {
        active.wrappingSubtract(1, ordering: .sequentiallyConsistent)
    }

    /// Announces that an inactive handle (a reset read transaction) is about to be freed through
    /// the environment; waits while a close is under way (not while the map grows).
    /// Returns false when the environment has been closed: then the handle must not be touched.
    func enterFinishing() -> Bool {
        enter(finishing, unless: shuttingDown)
    }

    func leaveFinishing() {
        finishing.wrappingSubtract(1, ordering: .sequentiallyConsistent)
    }

    private func enter(_ counter: borrowing Atomic<Int>, unless barrier: borrowing Atomic<Bool>) -> Bool {
        while true {
            if barrier.load(ordering: .sequentiallyConsistent) {
                if closed.load(ordering: .sequentiallyConsistent) { return false }
                if owner.load(ordering: .sequentiallyConsistent) == Self.currentThread {
                    // Inside this thread's own exclusive body: every other thread is held off.
                    counter.wrappingAdd(1, ordering: .sequentiallyConsistent)
                    return true
                }
                usleep(50)
                continue
            }
            counter.wrappingAdd(1, ordering: .sequentiallyConsistent)
            // Re-check after announcing ourselves: an exclusive operation that raised the barrier
            // before our increment will see it and wait; one that raises it after will wait too.
            if !barrier.load(ordering: .sequentiallyConsistent) { return true }
            counter.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        }
    }

    /// Runs `body` while no transaction of this process is active (with `close`, while no reset
    /// transaction is being freed either).
    ///
    /// Returns nil without running `body` when the gate is closed, or when active transactions
    /// do not finish within `timeout` seconds (typically because the calling thread itself holds
    /// one). The timeout covers waiting for another exclusive operation too.
    /// With `close` set, the gate stays shut afterwards: every later `enter` fails.
    func exclusive<R>(timeout: Double, close: Bool = false, _ body: () throws -> R) rethrows -> R? {
        if owner.load(ordering: .sequentiallyConsistent) == Self.currentThread {
            return try nestedExclusive(close: close, body)
        }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .microseconds(Int64((max(timeout, 0) * 1e6).rounded())))
        while true {
            // `withLockIfAvailable` rather than `withLock`: another exclusive operation may itself
            // be waiting out its timeout, and ours must not wait longer than `timeout` behind it.
            let outcome: R?? = try exclusiveLock.withLockIfAvailable { _ -> R? in
                if closed.load(ordering: .sequentiallyConsistent) { return nil }
                closing.store(true, ordering: .sequentiallyConsistent)
                if close { shuttingDown.store(true, ordering: .sequentiallyConsistent) }
                defer {
                    owner.store(0, ordering: .sequentiallyConsistent)
                    if !closed.load(ordering: .sequentiallyConsistent) {
                        shuttingDown.store(false, ordering: .sequentiallyConsistent)
                        closing.store(false, ordering: .sequentiallyConsistent)
                    }
                }
                while active.load(ordering: .sequentiallyConsistent) != 0
                        || (close && finishing.load(ordering: .sequentiallyConsistent) != 0) {
                    if clock.now >= deadline { return nil }
                    usleep(100)
                }
                owner.store(Self.currentThread, ordering: .sequentiallyConsistent)
                let result = try body()
                if close { closed.store(true, ordering: .sequentiallyConsistent) }
                return result
            }
            if let outcome { return outcome }
            if closed.load(ordering: .sequentiallyConsistent) || clock.now >= deadline { return nil }
            usleep(100)
        }
    }

    /// An exclusive operation requested from inside this thread's own exclusive body. Other
    /// threads are held off already; only this thread's transactions can be active, and they
    /// cannot end while it waits here, so it runs at once or not at all.
    private func nestedExclusive<R>(close: Bool, _ body: () throws -> R) rethrows -> R? {
        if closed.load(ordering: .sequentiallyConsistent) { return nil }
        if active.load(ordering: .sequentiallyConsistent) != 0 { return nil }
        if close {
            shuttingDown.store(true, ordering: .sequentiallyConsistent)
            guard finishing.load(ordering: .sequentiallyConsistent) == 0 else {
                shuttingDown.store(false, ordering: .sequentiallyConsistent)
                return nil
            }
        }
        let result = try body()
        if close { closed.store(true, ordering: .sequentiallyConsistent) }
        return result
    }

    var isClosed: Bool { closed.load(ordering: .sequentiallyConsistent) }

    /// An identifier of the calling OS thread.
    static var currentThread: UInt {
        #if canImport(Glibc)
        UInt(pthread_self())
        #else
        UInt(bitPattern: pthread_self())
        #endif
    }
}
