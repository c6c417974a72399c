import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The files of a store directory that holds generations (FORMAT.md, "Generations"): the
/// pointer `CURRENT`, whose content names the generation in use (`gen-000002` and a newline),
/// and the generation directories, each an LMDB environment of its own. A directory without
/// `CURRENT` is a plain store: the directory itself is the environment.
///
/// Every change here is a rename, so that the path holds a complete store at every instant:
/// a generation is written under a staging name and renamed into place, then `CURRENT` is
/// replaced by renaming a new file over it. Removing generations is the one change that is
/// not a rename; it only ever touches generations the pointer has moved past.
struct GenerationDirectory {
    /// The store directory.
    let root: String

    static let pointerName = "CURRENT"
    static let temporaryPointerName = "CURRENT.tmp"
    static let namePrefix = "gen-"
    /// A generation being written is `gen-NNNNNN.staging` until it is complete.
    static let stagingSuffix = ".staging"
    /// An in-place repack (`Store.repackInPlace`) builds in `repack-<pid>` in the store directory
    /// (and in `repack-<pid>.repacking-<pid>` and `.repacked-<pid>` on the way).
    static let repackPrefix = "repack-"

    /// The name of generation `number`: `gen-` and at least six decimal digits.
    static func name(_ number: Int) -> String {
        let digits = String(number)
        return namePrefix + String(repeating: "0", count: max(0, 6 - digits.count)) + digits
    }

    /// The number of a generation name (`gen-000002` → 2), nil for anything else.
    static func number(_ name: String) -> Int? {
        guard name.hasPrefix(namePrefix) else { return nil }
        let digits = name.dropFirst(namePrefix.count)
        guard digits.count >= 6, digits.count <= 18, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(digits)
    }

    func path(_ name: String) -> String { root + "/" + name }

    // MARK: - The pointer

    /// The generation `CURRENT` names, or nil when there is no `CURRENT` (a plain store).
    /// Refuses a pointer that is not a generation name and a newline.
    func readPointer() throws(StoreError) -> String? {
        let fd = open(path(Self.pointerName), O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw .fileSystem(path: path(Self.pointerName), operation: "opening", code: errno)
        }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 { throw .fileSystem(path: path(Self.pointerName), operation: "reading", code: errno) }
        let text = String(decoding: buffer[0..<count], as: UTF8.self)
        guard text.hasSuffix("\n"), Self.number(String(text.dropLast())) != nil else {
            throw .notAStore(path: root, reason: "its \(Self.pointerName) file holds \(text.debugDescription), not a generation name (gen-NNNNNN) and a newline")
        }
        return String(text.dropLast())
    }

    /// Points `CURRENT` at generation `name`, atomically: the content goes to `CURRENT.tmp`,
    /// which is flushed and renamed over `CURRENT`, and the directory is flushed so that the
    /// rename itself is durable. Before the rename `CURRENT` names the old generation, after it
    /// the new one; nothing ever sees a partial file.
    func writePointer(_ name: String) throws(StoreError) {
        try replaceFile(path(Self.pointerName), with: Array((name + "\n").utf8), through: path(Self.temporaryPointerName))
    }

    // MARK: - Generations

    /// What the directory holds besides the pointer.
    struct Listing {
        /// Generation directories by number.
        var generations: [Int: String] = [:]
        /// Staging directories (`gen-NNNNNN.staging` and what a compacting copy stages beside it),
    /// the pointer's temporary file.
        var leftovers: [String] = []
        /// The directory itself holds an environment (`data.mdb` or `lock.mdb`): generation 0.
        var hasRootEnvironment = false
        /// What in-place repacks build in (`repack-<pid>…`), with their process ids.
        var repacks: [(entry: String, process: pid_t)] = []
    }

    func list() -> Listing {
        var listing = Listing()
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] {
            if let number = Self.number(entry) {
                listing.generations[number] = entry
            } else if entry == Self.temporaryPointerName || Self.leadingNumber(entry) != nil {
                listing.leftovers.append(entry)
            } else if entry == "data.mdb" || entry == "lock.mdb" {
                listing.hasRootEnvironment = true
            } else if let process = Self.repackProcess(entry) {
                listing.repacks.append((entry, process))
            }
        }
        return listing
    }

    /// The name the next generation gets: one more than every generation present (crashed
    /// swaps' leftovers included), so no name is ever used twice while anything may remember it.
    func nextName(after current: String?) -> String {
        let listing = list()
        let highest = ([current.flatMap(Self.number) ?? 0] + listing.generations.keys + listing.leftovers.compactMap(Self.leadingNumber)).max() ?? 0
        return Self.name(highest + 1)
    }

    /// The number of a name that starts like a generation's and goes on (`gen-000003.staging`).
    private static func leadingNumber(_ entry: String) -> Int? {
        guard entry.hasPrefix(namePrefix), number(entry) == nil else { return nil }
        let digits = entry.dropFirst(namePrefix.count).prefix { $0.isASCII && $0.isNumber }
        return digits.count >= 6 && digits.count <= 18 ? Int(digits) : nil
    }

    /// The process id of an in-place repack's directory (`repack-<pid>`, `repack-<pid>.…`), nil for
    /// anything else.
    static func repackProcess(_ entry: String) -> pid_t? {
        guard entry.hasPrefix(repackPrefix) else { return nil }
        let rest = entry.dropFirst(repackPrefix.count)
        let digits = rest.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits.count <= 9, digits.endIndex == rest.endIndex || rest[digits.endIndex] == "." else { return nil }
        return pid_t(digits)
    }

    /// True when no process has id `process` (it ended): what it left is nobody's. A process
    /// of another user counts as running.
    static func processHasEnded(_ process: pid_t) -> Bool {
        process > 0 && process != getpid() && kill(process, 0) != 0 && errno == ESRCH
    }

    /// Size in bytes of generation `name`'s data file.
    func size(of name: String) -> Int {
        (try? FileManager.default.attributesOfItem(atPath: path(name) + "/data.mdb")[.size] as? Int) ?? 0
    }

    /// Moves the complete environment in `staging` (its `data.mdb`, nothing else) into place as
    /// generation `name`: flushes the file, renames the directory, flushes the store directory.
    func publish(_ staging: String, as name: String) throws(StoreError) {
        try flush(staging + "/data.mdb")
        try flush(staging)
        let target = path(name)
        if Glibc.rename(staging, target) != 0 {
            throw .fileSystem(path: target, operation: errno == EXDEV ? "moving \(staging) (on another file system) to" : "renaming \(staging) to", code: errno)
        }
        try flush(root)
    }

    // MARK: - Removing

    /// Removes what a swap that died left: staging directories, the pointer's temporary file,
    /// and generations numbered above the current one (renamed into place, never pointed at);
    /// and what in-place repacks killed part-way left (`repack-<pid>…` of a process that has
    /// ended: a repack still running keeps its directories). Only for the holder of the current
    /// generation's writer lock, which every swap holds.
    func removeLeftovers(current: String?) {
        let listing = list()
        for entry in listing.leftovers { try? FileManager.default.removeItem(atPath: path(entry)) }
        for (entry, process) in listing.repacks where Self.processHasEnded(process) {
            try? FileManager.default.removeItem(atPath: path(entry))
        }
        let currentNumber = current.flatMap(Self.number) ?? 0
        for (number, name) in listing.generations where number > currentNumber {
            _ = removeIfUnused(path(name), wholeDirectory: true)
        }
    }

    /// Removes every generation the pointer has moved past that no process has open; returns the
    /// names removed and those still in use (removed later: by the last process to let go, or the
    /// next swap). The store directory's own environment counts as generation 0 once there is a
    /// pointer; its `data.mdb` and `lock.mdb` are removed, not the directory.
    func removeRetired() throws(StoreError) -> (removed: [String], inUse: [String]) {
        guard let current = try readPointer() else { return ([], []) }
        // One removal at a time in the process: a reader's last release and a swap may both try.
        Self.removing.lock()
        defer { Self.removing.unlock() }
        var removed: [String] = [], inUse: [String] = []
        for (name, directory, whole) in retired(below: current) {
            if removeIfUnused(directory, wholeDirectory: whole) { removed.append(name) } else { inUse.append(name) }
        }
        return (removed, inUse)
    }

    /// What the messages call the store directory's own environment once it is retired.
    static let rootEnvironmentName = "the plain store's data.mdb"

    /// The generations numbered below `current` present now (the store directory's own
    /// environment first): names, directories, and whether the whole directory goes.
    func retired(below current: String) -> [(name: String, directory: String, wholeDirectory: Bool)] {
        let currentNumber = Self.number(current) ?? 0
        let listing = list()
        var retired = listing.generations.filter { $0.key < currentNumber }.sorted { $0.key < $1.key }.map { ($0.value, path($0.value), true) }
        if listing.hasRootEnvironment { retired.insert((Self.rootEnvironmentName, root, false), at: 0) }
        return retired
    }

    /// Removes the environment in `directory` unless a process has it open; true when removed.
    ///
    /// LMDB holds a shared `fcntl` lock on the first byte of `lock.mdb` for as long as a process
    /// has the environment open (`mdb_env_open` takes it, `mdb_env_close` drops it), so an
    /// exclusive lock on that byte is granted only when none does. It is taken as an
    /// open-file-description lock, which conflicts with those locks even when they belong to
    /// this process. While it is held, an opener waits in `mdb_env_open`; it then finds the files
    /// gone (or creates new empty ones, which it abandons when it sees that the pointer moved:
    /// leftovers that a later removal takes). A directory this process has open is skipped
    /// without probing: closing any descriptor of `lock.mdb` would drop this process's own
    /// locks on it.
    private func removeIfUnused(_ directory: String, wholeDirectory: Bool) -> Bool {
        Generation.withProcessRegistry { isOpenHere in
            if isOpenHere(directory) { return false }
            guard FileManager.default.fileExists(atPath: directory) else { return true }
            let lock = directory + "/lock.mdb"
            guard let probe = Self.lockIfUnused(lock) else { return false }
            defer { if probe >= 0 { close(probe) } }
            unlink(directory + "/data.mdb")
            unlink(lock)
            if wholeDirectory {
                // Anything else in it (a stray file an opener created) stays for the next removal.
                return rmdir(directory) == 0 || errno == ENOENT
            }
            return true
        }
    }

    private static let removing = NSLock()

    /// `fcntl` command of open-file-description locks (Linux 3.15; glibc's <fcntl.h> declares it
    /// only under _GNU_SOURCE, which Swift's Glibc module does not set):
    /// > #define F_OFD_SETLK	37
    private static let setOpenFileDescriptionLock: Int32 = 37

    /// An exclusive open-file-description lock on the first byte of the lock file `lock`, when
    /// no process has its environment open: the descriptor holding it (-1 when there is no lock
    /// file, so no process can have the environment open with locking), or nil when in use.
    private static func lockIfUnused(_ lock: String) -> Int32? {
        let fd = open(lock, O_RDWR | O_CLOEXEC)
        if fd < 0 { return errno == ENOENT ? -1 : nil }
        var region = flock()
        region.l_type = Int16(F_WRLCK)
        region.l_whence = Int16(SEEK_SET)
        region.l_start = 0
        region.l_len = 1
        guard fcntl(fd, setOpenFileDescriptionLock, &region) == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    /// True when some process, this one included, has the environment in `directory` open.
    static func isOpen(_ directory: String) -> Bool {
        Generation.withProcessRegistry { isOpenHere in
            if isOpenHere(directory) { return true }
            guard let probe = lockIfUnused(directory + "/lock.mdb") else { return true }
            if probe >= 0 { close(probe) }
            return false
        }
    }

    // MARK: - Durability

    /// `fsync` of a file or a directory (a directory's flush makes the renames in it durable).
    func flush(_ path: String) throws(StoreError) {
        try flushFile(path)
    }
}

/// `fsync` of a file or a directory (a directory's flush makes the renames in it durable).
func flushFile(_ path: String) throws(StoreError) {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw .fileSystem(path: path, operation: "opening", code: errno) }
    defer { close(fd) }
    if fsync(fd) != 0 { throw .fileSystem(path: path, operation: "flushing", code: errno) }
}

/// Replaces the file at `path` with `bytes`, atomically and durably: they go to `temporary`
/// (in the same directory), which is flushed and renamed over `path`, and the directory is
/// flushed so that the rename itself is durable. Readers see the old file or the new one, whole.
/// (The generation pointer, a shard manifest, a rollout file.)
func replaceFile(_ path: String, with bytes: [UInt8], through temporary: String) throws(StoreError) {
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    if fd < 0 { throw .fileSystem(path: temporary, operation: "creating", code: errno) }
    let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    let writeError = written == bytes.count ? 0 : (written < 0 ? errno : EIO)
    let syncError = writeError == 0 && fsync(fd) != 0 ? errno : 0
    close(fd)
    if writeError != 0 || syncError != 0 {
        unlink(temporary)
        throw .fileSystem(path: temporary, operation: "writing", code: writeError != 0 ? writeError : syncError)
    }
    if Glibc.rename(temporary, path) != 0 {
        let code = errno
        unlink(temporary)
        throw .fileSystem(path: path, operation: "renaming \((temporary as NSString).lastPathComponent) to", code: code)
    }
    try flushFile((path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent)
}
