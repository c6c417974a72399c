import Foundation
import LMDB

/// What a swap did: `Store.compactInPlace()` or `Store.installGeneration(at:)`.
public struct GenerationSwapReport: Sendable {
    /// The generation replaced (nil: the store directory's own environment, a plain store) and
    /// the one the store's pointer names now.
    public var previous: String?
    public var current: String
    /// Bytes of the replaced generation's `data.mdb`, and of the new one's.
    public var bytesBefore: Int
    public var bytesAfter: Int
    /// Segment parts no manifest listed (a killed load's), left out of a compacted generation.
    public var orphanParts: Int
    /// Tables loads were creating (not yet visible), left out of a compacted generation: a load
    /// still running then fails and says to run it again.
    public var abandonedTables: Int
    /// Generations the pointer has moved past that were removed now, and those some process
    /// still has open: the last process to let go of one removes it (or the next swap does).
    public var removed: [String]
    public var inUse: [String]
}

/// A point in a store's history: a generation and the last transaction committed to it.
/// `installGeneration(at:expecting:)` refuses to install an environment built from a store that
/// has moved on since (a row written meanwhile would be lost).
public struct StoreVersion: Sendable, Hashable, CustomStringConvertible {
    /// The generation (nil: the store directory's own environment).
    public let generation: String?
    /// LMDB's id of the last committed transaction (`mdb_txn_id` of a read snapshot).
    public let transaction: Int

    public var description: String { "\(generation ?? "plain store"), transaction \(transaction)" }
}

extension Store {
    // MARK: - Following the pointer

    /// The generation this store uses now (nil: the store directory itself, a plain store).
    public var generationName: String? { generation.name }

    /// The directory of the `data.mdb` this store uses now.
    public var generationPath: String { generation.directory }

    /// Where the store is now: its generation and last committed transaction.
    public func version() throws -> StoreVersion {
        let generation = generation
        let transaction = try translatingErrors { try generation.environment.read { txn in txn.snapshotID } }
        return StoreVersion(generation: generation.name, transaction: transaction)
    }

    /// Moves this store to the generation its directory's pointer names, when a swap changed it;
    /// returns whether it moved. Its readers follow at their next batch (each lookup in flight
    /// finishes on the snapshot it began with); later operations use the new generation, table
    /// handles from before included. The old environment closes when its last user in this
    /// process lets go. Readers call this themselves when they see the swap; a writer whose
    /// write was refused does too.
    @discardableResult
    public func refresh() throws -> Bool {
        try moving.withLock { _ in
            let old = generation
            guard try GenerationDirectory(root: path).readPointer() != old.name else { return false }
            let next = try translatingErrors { try Generation.open(root: path, configuration: configuration, maxTables: maxTables) }
            guard next !== old else { return false }
            // Open the tables in use ahead of the readers: opening a database takes the writer
            // lock, which a batch should not wait for.
            for name in old.openTableNames { _ = try? next.table(named: name) }
            old.markRetired()
            setGeneration(next)
            generationSerial.add(1, ordering: .releasing)
            return true
        }
    }

    /// Moves to the generation the pointer names if it is not this store's, ignoring errors (the
    /// store then stays where it is and the next look tries again). Costs one read of a small
    /// file: called where an operation starts, and by readers every `Reader.pointerCheckInterval`
    /// batches.
    func followPointer() {
        if (try? GenerationDirectory(root: path).readPointer()) != generation.name { _ = try? refresh() }
    }

    /// How often, at most, the readers of a store have it read its pointer: a swap made by
    /// another `Store` or process is noticed by readers within this time (a swap made through
    /// this store, at their next batch).
    static let pointerCheckInterval: Duration = .milliseconds(100)

    /// True for the one caller that finds the store's next pointer check due (then scheduled
    /// `pointerCheckInterval` later). Costs a read of the coarse monotonic clock (vDSO, no
    /// system call) and one atomic load.
    @inline(__always)
    func pointerCheckDue() -> Bool {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &now)
        let nanoseconds = Int(now.tv_sec) &* 1_000_000_000 &+ Int(now.tv_nsec)
        let due = nextPointerCheck.load(ordering: .relaxed)
        guard nanoseconds >= due else { return false }
        let interval = Int(Store.pointerCheckInterval.components.attoseconds / 1_000_000_000)
            + Int(Store.pointerCheckInterval.components.seconds) * 1_000_000_000
        return nextPointerCheck.compareExchange(expected: due, desired: nanoseconds &+ interval, ordering: .relaxed).exchanged
    }

    /// Runs `attempt` and, when it was refused because a swap retired the generation it used
    /// (or the store moved under it), moves to the new generation and runs it again.
    func followingSwaps<R>(_ attempt: () throws -> R) throws -> R {
        var moves = 0
        while true {
            do {
                return try attempt()
            } catch let error as StoreError where moves < 64 && error.isSwapRetryable {
                moves += 1
                _ = try refresh()
            }
        }
    }

    /// One write transaction on the current generation, refused with `generationRetired` when a
    /// swap replaced it (not retried: for writes that are one step of several).
    func writeTransaction<R>(_ body: (borrowing Transaction) throws -> R) throws -> R {
        let generation = generation
        return try generation.environment.write { txn in
            try generation.requireCurrent(txn)
            return try body(txn)
        }
    }

    // MARK: - Swapping

    /// Compacts the store into a new generation and swaps it in: LMDB's compacting copy of the
    /// store as it is (only the pages in use, without segment parts a killed load left), verified,
    /// then made the generation the pointer names. Readers go on throughout and move at their
    /// next batch; writers wait for the swap (it holds the writer lock from the copy's snapshot
    /// until the pointer has moved) and then write to the new generation, so nothing committed
    /// is lost. A plain store becomes a store with generations. The old generation is removed
    /// once no process has it open.
    @discardableResult
    public func compactInPlace() throws -> GenerationSwapReport {
        try swapGeneration(expecting: nil) { old, name in
            let staging = GenerationDirectory(root: path).path(name + GenerationDirectory.stagingSuffix)
            do {
                let leftOut = try Store.writeCompactedCopy(of: old.environment, to: staging)
                _ = try Store.verifyCopy(at: staging)
                try FileManager.default.removeItem(atPath: staging + "/lock.mdb")   // the copy is closed; its next opener makes one
                return (staging, leftOut)
            } catch {
                try? FileManager.default.removeItem(atPath: staging)
                throw error
            }
        }
    }

    /// Installs the LMDB environment in `stagingPath` (a directory holding its `data.mdb`, closed,
    /// complete, verified by whoever built it, on the store's file system) as the next
    /// generation of the store at `storePath`, with the same atomic swap as `compactInPlace`.
    /// With `expecting`, refuses when the store has changed since that version (take it before
    /// reading what the staged environment was built from): a write committed meanwhile would
    /// not be in it. The directory is moved, not copied. Stage it under a name a swap does not
    /// take for its own (not `gen-…` nor `CURRENT…` in the store directory, whose leftovers a
    /// swap removes): beside the store, or `STORE/repack-<pid>` with this process's id (a swap
    /// removes those of processes that have ended).
    @discardableResult
    public static func installGeneration(at stagingPath: String, into storePath: String,
                                         expecting version: StoreVersion? = nil) throws -> GenerationSwapReport {
        try Store(path: storePath).installGeneration(at: stagingPath, expecting: version)
    }

    /// `installGeneration(at:into:expecting:)` into this store.
    @discardableResult
    public func installGeneration(at stagingPath: String, expecting version: StoreVersion? = nil) throws -> GenerationSwapReport {
        try Store.checkStaged(stagingPath)
        return try swapGeneration(expecting: version) { _, _ in (stagingPath, CopyLeftovers()) }
    }

    /// Removes the generations the pointer has moved past that no process has open (what a
    /// swap and a writable open do by themselves); returns the names removed and in use.
    @discardableResult
    public func removeRetiredGenerations() throws -> (removed: [String], inUse: [String]) {
        try requireWritable()
        return try GenerationDirectory(root: path).removeRetired()
    }

    /// The swap: under the current generation's writer lock, `stage` writes the new generation
    /// (returning its directory and what it left out), which is moved into place and
    /// named by the pointer; the old generation gets its `retired` record in the same write
    /// transaction, which then ends. If the generation was retired before the lock was had,
    /// this store moves and it starts again there.
    private func swapGeneration(expecting version: StoreVersion?,
                                _ stage: (_ old: Generation, _ name: String) throws -> (directory: String, leftOut: CopyLeftovers)) throws -> GenerationSwapReport {
        try requireWritable()
        for _ in 0..<64 {
            if var report = try swap(from: generation, expecting: version, stage) {
                // `removed` lists what the pointer had moved past when the swap ended: removed
                // here, or by the release of its last user in this process, unless still in use.
                let retired = report.removed
                report.inUse = (try? GenerationDirectory(root: path).removeRetired().inUse) ?? retired
                report.removed = retired.filter { !report.inUse.contains($0) }
                return report
            }
            _ = try refresh()
        }
        throw StoreError.invalidArgument("\(path): other swaps kept replacing the generation this one was to replace (64 times)")
    }

    /// One attempt of `swapGeneration` from `old`; nil when `old` turned out to be retired.
    private func swap(from old: Generation, expecting version: StoreVersion?,
                      _ stage: (_ old: Generation, _ name: String) throws -> (directory: String, leftOut: CopyLeftovers)) throws -> GenerationSwapReport? {
        let layout = GenerationDirectory(root: path)
        // Held from before the snapshot the new generation is made of until the pointer names
        // it: no write can commit to the old generation in between (ended on this thread).
        let txn = try Store.beginWrite(old.environment)
        do {
            try old.requireCurrent(txn)
        } catch StoreError.generationRetired {
            return nil
        }
        if let version, version != StoreVersion(generation: old.name, transaction: txn.snapshotID - 1) {
            throw StoreError.storeChangedSinceStaging(path: path, staged: version,
                                                      now: StoreVersion(generation: old.name, transaction: txn.snapshotID - 1))
        }
        let name = layout.nextName(after: old.name)
        layout.removeLeftovers(current: old.name)
        let bytesBefore = old.fileSize
        let (directory, leftOut) = try stage(old, name)
        CrashPoints.reach("swap.staged")
        try layout.publish(directory, as: name)
        // Killed from here until the pointer is written: the old generation is still the store,
        // the new one a leftover numbered above it (removed by the next swap).
        CrashPoints.reach("swap.published")
        try layout.writePointer(name)
        // Killed from here on: the new generation is the store, the old one without its
        // `retired` mark (writers see the pointer moved instead; removed by the next swap or open).
        CrashPoints.reach("swap.pointer-written")
        // The swap is done: the path holds the new generation. Mark the old one in the
        // transaction that kept it still; writers waiting for its lock find the mark.
        _ = try? old.putMetaRecord(Array(name.utf8), key: StoreFormat.retiredKey, in: txn)
        try? txn.commit()
        CrashPoints.reach("swap.retired")
        old.markRetired()
        _ = try? refresh()
        // Listed while `old` is still held here (its release may remove it).
        let retired = layout.retired(below: name).map(\.name)
        return GenerationSwapReport(previous: old.name, current: name, bytesBefore: bytesBefore,
                                    bytesAfter: layout.size(of: name), orphanParts: leftOut.orphanParts, abandonedTables: leftOut.abandonedTables,
                                    removed: retired, inUse: [])
    }

    /// A write transaction of `environment`, LMDB's errors made `StoreError`s.
    private static func beginWrite(_ environment: Environment) throws(StoreError) -> Transaction {
        do {
            return try environment.beginWrite()
        } catch {
            throw .lmdb(error)
        }
    }

    /// Refuses a staged environment that is not a closed, plain embstore environment.
    private static func checkStaged(_ stagingPath: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: stagingPath, isDirectory: &isDirectory), isDirectory.boolValue,
              FileManager.default.fileExists(atPath: stagingPath + "/data.mdb") else {
            throw StoreError.notAStore(path: stagingPath, reason: "it is not a directory holding data.mdb")
        }
        guard try GenerationDirectory(root: stagingPath).readPointer() == nil else {
            throw StoreError.invalidArgument("\(stagingPath) is a store with generations; stage a single environment")
        }
        guard !GenerationDirectory.isOpen(stagingPath) else {
            throw StoreError.invalidArgument("\(stagingPath) is open (in this process or another): close it before installing it")
        }
        do {
            var readOnly = Options()
            readOnly.readOnly = true
            let staged = try Store(path: stagingPath, options: readOnly)
            _ = try staged.tableNames()
            staged.close()
        }
        try? FileManager.default.removeItem(atPath: stagingPath + "/lock.mdb")
    }
}

extension StoreError {
    /// Errors that a retry in the store's new generation resolves.
    var isSwapRetryable: Bool {
        switch self {
        case .generationRetired: true
        case .lmdb(let error): error.code == LMDBError.foreignDatabase.code
        default: false
        }
    }
}
