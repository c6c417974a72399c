import CLMDB
import CLMDBGuard
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// LMDB checks its pages as it walks them, and aborts the process when one is not what it
/// expects (a page zeroed or overwritten on disk). It still ends the process (LMDB aborts when
/// this returns, and nothing can unwind through it), but says what happened and exits with
/// status 3 instead of dying by SIGABRT: the file is damaged, and `verify` or a copy is what helps.
private func lmdbFoundDamage(_ env: OpaquePointer?, _ message: UnsafePointer<CChar>?) {
    var path: UnsafePointer<CChar>?
    if let env { _ = mdb_env_get_path(env, &path) }
    let place = path.map { String(cString: $0) } ?? "an LMDB environment"
    let text = message.map { String(cString: $0) } ?? "an internal check failed"
    let line = "Error: LMDB found a damaged page in \(place) (\(text)); the store is damaged: restore it from a copy\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(3)
}

extension Environment {
    /// Makes a SIGSEGV or SIGBUS raised inside liblmdb's code end the process with a message and
    /// exit status 3, as LMDB's failed checks do (`lmdbFoundDamage`): LMDB trusts its pages, and
    /// a damaged one can send it through a wild pointer. Faults elsewhere go on to the handlers
    /// installed before. For processes that only work on stores (the embstore command); it
    /// replaces the process's handlers of the two signals. Returns false if liblmdb's code was
    /// not found.
    @discardableResult
    public static func installDamageGuard() -> Bool {
        emb_lmdb_guard_install() == 0
    }

    /// For the test of `installDamageGuard`: makes liblmdb read through a wild pointer, as a
    /// damaged page can (mdb_env_get_path of a bogus environment). Never returns normally.
    public static func faultInsideLMDBForTesting() -> Never {
        var path: UnsafePointer<CChar>?
        _ = mdb_env_get_path(OpaquePointer(bitPattern: 0x40), &path)
        fatalError("liblmdb read through a wild pointer and went on")
    }
}

/// An LMDB environment: one memory-mapped file holding any number of named databases.
///
/// `Environment` is `Sendable`: it is always opened with `MDB_NOTLS`, so a read transaction
/// belongs to the `Transaction` value that began it rather than to an OS thread, and any thread
/// may use the environment. Each transaction must still stay on the thread that began it (a
/// write transaction's mutex is owned by that thread) and must never be held across an `await`.
///
/// The map grows by itself: when a write fails with `MDB_MAP_FULL`, `write` aborts it, waits for
/// this process's other transactions to finish, doubles the map and runs the body again.
public final class Environment: @unchecked Sendable {
    /// Environment flags. The corresponding LMDB argument is `mdb_env_open`'s `flags`.
    public struct Flags: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// The path names the data file itself, not a directory (`MDB_NOSUBDIR`).
        public static let noSubdirectory = Flags(rawValue: UInt32(MDB_NOSUBDIR))
        /// Open read-only; writes fail (`MDB_RDONLY`).
        public static let readOnly = Flags(rawValue: UInt32(MDB_RDONLY))
        /// Do not fsync on commit: a crash may lose the last commits, never consistency (`MDB_NOSYNC`).
        public static let noSync = Flags(rawValue: UInt32(MDB_NOSYNC))
        /// Do not fsync the meta page on commit (`MDB_NOMETASYNC`).
        public static let noMetaSync = Flags(rawValue: UInt32(MDB_NOMETASYNC))
        /// Use no lock file (`MDB_NOLOCK`): readers do not register, so the caller must make sure
        /// nothing writes the environment while it is open (a store in a read-only directory).
        public static let noLock = Flags(rawValue: UInt32(MDB_NOLOCK))
        /// Turn off OS read-ahead; better for random access to a map larger than RAM (`MDB_NORDAHEAD`).
        public static let noReadahead = Flags(rawValue: UInt32(MDB_NORDAHEAD))
    }

    /// How to open an environment.
    public struct Configuration: Sendable {
        /// Initial map size in bytes; it grows by doubling when full. Rounded up by LMDB to pages.
        public var mapSize: Int = 1 << 28
        /// Named databases the environment can hold (`mdb_env_set_maxdbs`).
        public var maxDatabases: Int = 128
        /// Concurrent read transactions across all processes (`mdb_env_set_maxreaders`).
        public var maxReaders: Int = 126
        public var flags: Flags = []
        /// File mode for newly created files.
        public var fileMode: mode_t = 0o644
        /// Seconds `write` waits for this process's open transactions before growing the map.
        public var growthTimeout: Double = 10
        /// Whether the map is advised to be backed by huge pages (`HugePages`).
        public var hugePages: HugePages = .off
        public init() {}
    }

    /// Huge pages for the map (Linux; `madvise(MADV_HUGEPAGE)` on it, where transparent huge
    /// pages are "always" or "madvise"). Pages the process then faults in are read into the
    /// page cache 2 MiB at a time and mapped with one TLB entry per 2 MiB instead of per 4 KiB;
    /// pages already cached stay as they were. Random lookups over a map of tens of MB and more
    /// then miss the TLB far less (README, "Performance": int8 lookups +19%, pooled +29% on a
    /// store read from disk). The cost: 2 MiB read for each first touch of an uncached stretch
    /// (the first batch after a cold start took twice as long), which a store much larger than
    /// memory, read at random, cannot afford.
    public enum HugePages: Sendable, Hashable {
        /// No advice: the kernel's default (4 KiB pages unless THP is "always").
        case off
        /// Advised.
        case on
        /// Advised when the data file takes at most half the memory the system reports
        /// available (`MemAvailable`) at open, so that the whole file can stay cached.
        case whenFileFitsInMemory
    }

    let handle: OpaquePointer
    /// Tells this environment from every other one this process opens (never reused), so that
    /// a `Database` handle can name the environment it belongs to.
    public let identity = Environment.identities.add(1, ordering: .relaxed).newValue
    private static let identities = Atomic<Int>(0)
    let gate = TransactionGate()
    /// The thread holding this process's write transaction (0 when none), to refuse a nested
    /// `beginWrite` on it that would deadlock on LMDB's writer lock.
    let writerThread = Atomic<UInt>(0)
    /// > mdb_dbi_open: This function must not be called from multiple concurrent transactions
    /// > in the same process.
    let databaseOpenLock = Mutex<Void>(())
    public let path: String
    public let configuration: Configuration
    /// The map size, kept here because `mdb_env_info` reads the meta pages through the map:
    /// calling it while another thread remaps (growMap) or after `close` reads unmapped memory.
    /// Only written at init and inside the gate's exclusive section, right after resizing.
    private let currentMapSize: Atomic<Int>
    /// Where this process maps the data file (0 when unknown): LMDB does not say
    /// (`me_mapaddr` is set only for `MDB_FIXEDMAP`), so it is read from `/proc/self/maps`
    /// at open and after each remap. Bounds the values transactions hand out (`MapBounds`).
    let mapAddress = Atomic<UInt>(0)
    private let fixedPageSize: Int
    private let fixedMaxKeySize: Int

    /// Opens (and creates, unless read-only) the environment at `path`.
    /// The corresponding LMDB functions are `mdb_env_create`, `mdb_env_set_*` and `mdb_env_open`.
    public init(path: String, configuration: Configuration = Configuration()) throws(LMDBError) {
        // Out-of-range settings are an error, not a trap in the integer conversions below.
        guard let maxDatabases = MDB_dbi(exactly: configuration.maxDatabases),
              let maxReaders = UInt32(exactly: configuration.maxReaders), configuration.mapSize >= 0 else {
            throw LMDBError(code: EINVAL, context: "opening LMDB environment at \(path): maxDatabases "
                + "\(configuration.maxDatabases), maxReaders \(configuration.maxReaders) or mapSize "
                + "\(configuration.mapSize) is out of range")
        }
        var env: OpaquePointer?
        try check(mdb_env_create(&env), "mdb_env_create")
        guard let env else { throw LMDBError(code: ENOMEM, context: "mdb_env_create") }
        do {
            try check(mdb_env_set_maxdbs(env, maxDatabases), "mdb_env_set_maxdbs")
            try check(mdb_env_set_maxreaders(env, maxReaders), "mdb_env_set_maxreaders")
            try check(mdb_env_set_mapsize(env, configuration.mapSize), "mdb_env_set_mapsize")
            try check(mdb_env_set_assert(env, lmdbFoundDamage), "mdb_env_set_assert")
            let flags = configuration.flags.rawValue | UInt32(MDB_NOTLS)
            try check(mdb_env_open(env, path, flags, configuration.fileMode), "opening LMDB environment at \(path)")
            try Environment.checkLength(env, path: path)
        } catch {
            mdb_env_close(env)
            throw error
        }
        self.handle = env
        self.path = path
        self.configuration = configuration
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        self.currentMapSize = Atomic(info.me_mapsize)
        var stat = MDB_stat()
        mdb_env_stat(env, &stat)
        self.fixedPageSize = Int(stat.ms_psize)
        self.fixedMaxKeySize = Int(mdb_env_get_maxkeysize(env))
        adviseHugePages = Environment.wantsHugePages(env, configuration.hugePages)
        mapAddress.store(Environment.mappedAddress(env), ordering: .sequentiallyConsistent)
        adviseMap()
    }

    /// Whether this environment advises its map to huge pages (`Configuration.hugePages`,
    /// decided at open).
    public let adviseHugePages: Bool

    /// Advises the map (at open and after each remap), when `adviseHugePages`. Errors are
    /// ignored: the advice is an optimisation (EINVAL where the kernel has no THP).
    private func adviseMap() {
        #if os(Linux)
        guard adviseHugePages, let start = UnsafeMutableRawPointer(bitPattern: mapAddress.load(ordering: .sequentiallyConsistent)) else { return }
        _ = madvise(start, currentMapSize.load(ordering: .sequentiallyConsistent), MADV_HUGEPAGE)
        #endif
    }

    static func wantsHugePages(_ env: OpaquePointer, _ setting: HugePages) -> Bool {
        switch setting {
        case .off: return false
        case .on: return true
        case .whenFileFitsInMemory:
            var fd: Int32 = -1
            var status = stat()
            guard mdb_env_get_fd(env, &fd) == 0, fstat(fd, &status) == 0, let available = availableMemory() else { return false }
            return Int(status.st_size) <= available / 2
        }
    }

    /// `MemAvailable` of /proc/meminfo in bytes; nil where there is none.
    static func availableMemory() -> Int? {
        guard let file = fopen("/proc/meminfo", "r") else { return nil }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let fields = String(cString: line).split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 2, fields[0] == "MemAvailable:", let kilobytes = Int(fields[1]) { return kilobytes * 1024 }
        }
        return nil
    }

    /// The address at which the data file is mapped, from `/proc/self/maps` (the mapping of the
    /// file's device and inode at offset 0); 0 where there is no such file (not Linux) or no
    /// such line.
    static func mappedAddress(_ env: OpaquePointer) -> UInt {
        var fd: Int32 = -1
        var status = stat()
        guard mdb_env_get_fd(env, &fd) == 0, fstat(fd, &status) == 0, let maps = fopen("/proc/self/maps", "r") else { return 0 }
        defer { fclose(maps) }
        let device = UInt64(status.st_dev)
        let major = (device >> 8) & 0xfff | (device >> 32) & ~0xfff, minor = device & 0xff | (device >> 12) & ~0xff
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, maps) > 0, let line {
            // start-end perms offset major:minor inode path
            let fields = String(cString: line).split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 5, UInt64(fields[2], radix: 16) == 0, UInt64(fields[4]) == UInt64(status.st_ino) else { continue }
            let dev = fields[3].split(separator: ":")
            guard dev.count == 2, UInt64(dev[0], radix: 16) == major, UInt64(dev[1], radix: 16) == minor,
                  let start = fields[0].split(separator: "-").first.flatMap({ UInt(String($0), radix: 16) }) else { continue }
            return start
        }
        return 0
    }

    deinit {
        if !gate.isClosed { mdb_env_close(handle) }
    }

    /// The bytes free on the file system holding the environment when it is full, or nearly (less
    /// than 1 MiB or a thousandth of it free, what a write cut short leaves); nil otherwise.
    func freeBytesIfFull() -> Int? {
        var status = statvfs()
        guard statvfs(path, &status) == 0 else { return nil }
        let free = Int(status.f_bavail) * Int(status.f_frsize), size = Int(status.f_blocks) * Int(status.f_frsize)
        return free < max(1 << 20, size / 1000) ? free : nil
    }

    /// Refuses a data file shorter than the pages its newest meta page says are in use, before
    /// anything reads a page through the map: a read past the end of a mapped file is SIGBUS,
    /// not an error. LMDB has read the meta pages with `pread` when `mdb_env_open` returns, but
    /// `mdb_env_info` and `mdb_env_stat` read them through the map, so the file must first hold
    /// them (two pages).
    static func checkLength(_ env: OpaquePointer, path: String) throws(LMDBError) {
        var fd: Int32 = -1
        try check(mdb_env_get_fd(env, &fd), "mdb_env_get_fd")
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw LMDBError(code: errno, context: "fstat of the data file at \(path)") }
        let length = Int(status.st_size)
        let osPage = max(4096, sysconf(Int32(_SC_PAGESIZE)))
        func truncated(_ needed: Int) -> LMDBError {
            LMDBError(code: MDB_CORRUPTED, context: "the data file at \(path) is truncated: it has \(length) bytes, but its pages in use need \(needed)")
        }
        guard length >= 2 * osPage else { throw truncated(2 * osPage) }
        var stat = MDB_stat()
        try check(mdb_env_stat(env, &stat), "mdb_env_stat")
        var info = MDB_envinfo()
        try check(mdb_env_info(env, &info), "mdb_env_info")
        let needed = (info.me_last_pgno + 1) * Int(stat.ms_psize)
        guard length >= needed else { throw truncated(needed) }
    }

    /// The error every use of a closed environment throws.
    var closedError: LMDBError {
        LMDBError(code: EINVAL, context: "the environment at \(path) is closed")
    }

    /// Runs `body` with the environment handle while it is open: `close` waits for it.
    private func withOpenHandle<R>(_ body: (OpaquePointer) throws(LMDBError) -> R) throws(LMDBError) -> R {
        guard gate.enter() else { throw closedError }
        defer { gate.leave() }
        return try body(handle)
    }

    /// Re-reads the map size after `mdb_env_set_mapsize`; call only inside `gate.exclusive`.
    private func refreshMapSize() {
        var info = MDB_envinfo()
        mdb_env_info(handle, &info)
        currentMapSize.store(info.me_mapsize, ordering: .sequentiallyConsistent)
        mapAddress.store(Environment.mappedAddress(handle), ordering: .sequentiallyConsistent)
        adviseMap()
        generation.add(1, ordering: .sequentiallyConsistent)
    }

    private let generation = Atomic<Int>(0)

    /// Changes whenever this process may have moved the memory map (`mdb_env_set_mapsize`):
    /// pointers into the map kept across transactions are valid only while it stays the same.
    public var mapGeneration: Int { generation.load(ordering: .sequentiallyConsistent) }

    /// Closes the environment after waiting for its active transactions; later use fails with
    /// `EINVAL` (a reset read transaction can no longer be renewed, and dropping it is safe).
    /// Waits at most `timeout` seconds; returns false (and leaves it open) on timeout, or when it
    /// was already closed.
    @discardableResult
    public func close(timeout: Double = 10) -> Bool {
        gate.exclusive(timeout: timeout, close: true) { mdb_env_close(handle) } != nil
    }

    /// True once `close()` has closed the environment.
    public var isClosed: Bool { gate.isClosed }

    public var isReadOnly: Bool { configuration.flags.contains(.readOnly) }

    /// The current map size in bytes (the last one this process set or adopted; after `close`,
    /// the size it had). The corresponding LMDB function is `mdb_env_info`.
    public var mapSize: Int { currentMapSize.load(ordering: .sequentiallyConsistent) }

    /// Database page size in bytes.
    public var pageSize: Int { fixedPageSize }

    /// Flushes buffers to disk. The corresponding LMDB function is `mdb_env_sync`.
    public func sync(force: Bool = true) throws(LMDBError) {
        try withOpenHandle { (env) throws(LMDBError) in try check(mdb_env_sync(env, force ? 1 : 0), "mdb_env_sync") }
    }

    /// Grows the map to at least `size` bytes once this process's transactions have finished.
    public func growMap(to size: Int) throws(LMDBError) {
        let done = gate.exclusive(timeout: configuration.growthTimeout) { () -> Int32 in
            var info = MDB_envinfo()
            mdb_env_info(handle, &info)
            guard size > info.me_mapsize else { return 0 }
            let rc = mdb_env_set_mapsize(handle, size)
            refreshMapSize()
            return rc
        }
        guard let rc = done else { throw gate.isClosed ? closedError : .resizeBlocked }
        try check(rc, "mdb_env_set_mapsize(\(size))")
    }

    /// Runs `body` while no other transaction of this process is active (new ones wait), for
    /// operations that invalidate what concurrent transactions rely on, such as deleting a
    /// named database (`mdb_drop` closes its handle at once). Transactions this thread begins
    /// inside `body` are allowed. Throws `.resizeBlocked` if others do not finish in
    /// `growthTimeout` seconds.
    public func withExclusiveAccess<R>(_ body: () throws -> R) throws -> R {
        guard let result = try gate.exclusive(timeout: configuration.growthTimeout, body) else {
            throw gate.isClosed ? closedError : LMDBError.resizeBlocked
        }
        return result
    }

    /// Adopts a map size set by another process (after `MDB_MAP_RESIZED`).
    func adoptForeignMapSize() throws(LMDBError) {
        let done = gate.exclusive(timeout: configuration.growthTimeout) { () -> Int32 in
            let rc = mdb_env_set_mapsize(handle, 0)
            refreshMapSize()
            return rc
        }
        guard let rc = done else { throw gate.isClosed ? closedError : .resizeBlocked }
        try check(rc, "mdb_env_set_mapsize(0)")
    }

    // MARK: - Transactions

    /// Begins a read-only transaction: a consistent snapshot until it ends.
    public func beginRead() throws(LMDBError) -> Transaction {
        try Transaction(environment: self, readOnly: true)
    }

    /// Begins a write transaction. Only one is active at a time across all processes; this call
    /// blocks until the previous one ends. It must commit or abort on this same thread.
    public func beginWrite() throws(LMDBError) -> Transaction {
        try Transaction(environment: self, readOnly: false)
    }

    /// Runs `body` in a read transaction that ends when `body` returns.
    public func read<R>(_ body: (borrowing Transaction) throws -> R) throws -> R {
        let txn = try beginRead()
        return try body(txn)
    }

    /// Runs `body` in a write transaction and commits it; aborts if `body` throws.
    ///
    /// When the map is full the transaction is aborted, the map doubled and `body` run again,
    /// so `body` may run more than once: it must not have effects outside the transaction
    /// that cannot be repeated. `LMDBError.mapFull` is never thrown unless growing fails.
    public func write<R>(_ body: (borrowing Transaction) throws -> R) throws -> R {
        try retryingWhenMapFull {
            let txn = try beginWrite()
            let result = try body(txn)
            try txn.commit()
            return result
        }
    }

    /// Runs `attempt` — which must begin, fill and commit one write transaction, aborting it
    /// on any error — again after doubling the map whenever it fails with `MDB_MAP_FULL`.
    /// For callers that wrap a `Transaction` in a type of their own.
    public func retryingWhenMapFull<R>(_ attempt: () throws -> R) throws -> R {
        while true {
            do {
                return try attempt()
            } catch let error as LMDBError where error.code == MDB_MAP_FULL {
                try growMap(to: mapSize * 2)
            }
        }
    }

    /// Opens named databases, creating them when `flags` contains `.create`, in a transaction
    /// that commits.
    ///
    /// > mdb_dbi_open: A transaction that uses this function must finish (either commit or abort)
    /// > before any other transaction in the process may use this function.
    ///
    /// Write transactions are serialised by LMDB itself, so a writable environment always opens
    /// databases in one; a read-only environment has no writers and uses a committed read
    /// transaction under a process-wide lock.
    public func openDatabases(_ names: [String], flags: DatabaseFlags) throws -> [Database] {
        if isReadOnly {
            return try databaseOpenLock.withLock { _ in
                let txn = try beginRead()
                let databases = try names.map { name throws(LMDBError) in try txn.openDatabase(name, flags: flags) }
                try txn.commit()
                return databases
            }
        }
        return try write { txn in
            try names.map { name throws(LMDBError) in try txn.openDatabase(name, flags: flags) }
        }
    }

    /// Largest key size in bytes. The corresponding LMDB function is `mdb_env_get_maxkeysize`.
    public var maxKeySize: Int { fixedMaxKeySize }

    /// Copies the environment to `path` (a directory that must exist), optionally compacting.
    /// The corresponding LMDB function is `mdb_env_copy2`.
    public func copy(to path: String, compact: Bool = false) throws(LMDBError) {
        // Inside the gate: the copy reads the map, which must not be remapped or closed under it.
        try withOpenHandle { (env) throws(LMDBError) in
            try check(mdb_env_copy2(env, path, compact ? UInt32(MDB_CP_COMPACT) : 0), "mdb_env_copy2 \(path)")
        }
    }
}
