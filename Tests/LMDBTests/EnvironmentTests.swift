import Foundation
import Synchronization
import Testing
@testable import LMDB

@Suite struct EnvironmentTests {
    let fixture: Fixture
    init() throws { fixture = try Fixture() }

    // MARK: Opening and closing

    @Test func opensAndCreatesInEmptyDirectory() throws {
        let env = try fixture.open(mapSize: 1 << 20)
        let path = fixture.directory + "/env"
        #expect(env.path == path)
        #expect(FileManager.default.fileExists(atPath: path + "/data.mdb"))
        #expect(FileManager.default.fileExists(atPath: path + "/lock.mdb"))
        #expect(!env.isReadOnly)
        #expect(env.pageSize == 4096)
        #expect(env.mapSize >= 1 << 20)
        // Debian's liblmdb is built with the default MDB_MAXKEYSIZE (511).
        #expect(env.maxKeySize == 511)
    }

    @Test func commitPersistsAcrossCloseAndReopen() throws {
        do {
            let env = try fixture.open()
            let ints = try env.database("ints", integerKeys: true)
            let strings = try env.database("strings")
            try env.write { txn throws in
                try txn.put(integer: 42, forKey: 7, in: ints)
                try txn.put("hello", forKey: "greeting", in: strings)
            }
            #expect(env.close())
        }
        let env = try fixture.open()
        let databases = try env.openDatabases(["ints", "strings"], flags: [])
        try env.read { txn throws in
            #expect(try txn.integer(forKey: 7, in: databases[0]) == 42)
            #expect(try txn.text(forKey: "greeting", in: databases[1]) == "hello")
        }
    }

    @Test func droppingTheEnvironmentClosesIt() throws {
        do {
            let env = try fixture.open()
            let db = try env.database("d")
            try env.write { txn throws in try txn.put("v", forKey: "k", in: db) }
            // No close(): deinit closes it.
        }
        let env = try fixture.open()
        let db = try env.openDatabases(["d"], flags: [])[0]
        #expect(try env.read { txn throws in try txn.text(forKey: "k", in: db) } == "v")
    }

    @Test func nonexistentDirectoryErrorNamesThePath() throws {
        let path = fixture.directory + "/does/not/exist"
        let error = #expect(throws: LMDBError.self) { try Environment(path: path) }
        #expect(error?.code == ENOENT)
        #expect(error?.description.contains(path) == true)
        #expect(error?.description.contains("No such file or directory") == true)
        #expect(error?.description.contains("the directory does not exist") == true)
    }

    @Test func outOfRangeConfigurationIsAnErrorNotATrap() throws {
        let path = try fixture.makeDirectory()
        for change: (inout Environment.Configuration) -> Void in [
            { $0.maxReaders = -1 }, { $0.maxReaders = 0 }, { $0.maxReaders = Int(UInt32.max) + 1 },
            { $0.maxDatabases = -5 }, { $0.mapSize = -1 },
        ] {
            var configuration = Environment.Configuration()
            change(&configuration)
            let error = #expect(throws: LMDBError.self) { try Environment(path: path, configuration: configuration) }
            #expect(error?.code == EINVAL)
        }
    }

    @Test func garbageFileIsNotAnLMDBEnvironment() throws {
        let path = try fixture.makeDirectory()
        let garbage = Data(pattern(16 << 10, seed: 99))
        try garbage.write(to: URL(fileURLWithPath: path + "/data.mdb"))
        let error = #expect(throws: LMDBError.invalid) { try Environment(path: path) }
        #expect(error?.description.contains("not an LMDB") == true)
        #expect(error?.description.contains(path) == true)
    }

    @Test func pathThatIsAFileIsNotADirectory() throws {
        let file = fixture.directory + "/plain-file"
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: file))
        let error = #expect(throws: LMDBError.self) { try Environment(path: file) }
        #expect(error?.code == ENOTDIR)
        #expect(error?.description.contains(file) == true)
    }

    @Test func closedEnvironmentRefusesEverythingWithoutCrashing() throws {
        let env = try fixture.open()
        let db = try env.database("d")
        let pageSize = env.pageSize
        #expect(env.close())

        let error = #expect(throws: LMDBError.self) { _ = try env.beginRead() }
        #expect(error?.code == EINVAL)
        #expect(error?.description.contains("closed") == true)
        #expect(throws: LMDBError.self) { _ = try env.beginWrite() }
        #expect(throws: LMDBError.self) { try env.read { _ in } }
        #expect(throws: LMDBError.self) { try env.write { txn throws in try txn.put("v", forKey: "k", in: db) } }
        #expect(throws: LMDBError.self) { _ = try env.openDatabases(["d"], flags: []) }
        #expect(throws: LMDBError.self) { try env.sync() }
        let copyTarget = try fixture.makeDirectory("copy")
        #expect(throws: LMDBError.self) { try env.copy(to: copyTarget) }
        let growError = #expect(throws: LMDBError.self) { try env.growMap(to: 1 << 30) }
        #expect(growError != .resizeBlocked, "a closed environment is not a blocked resize")
        // Properties stay readable (they must not touch the freed handle).
        #expect(env.pageSize == pageSize)
        #expect(env.maxKeySize == 511)
        _ = env.mapSize
        #expect(!env.close(timeout: 0.01), "closing twice reports that nothing was closed")
    }

    @Test func closeWaitsForAnOpenReadTransaction() throws {
        let env = try fixture.open()
        let db = try env.database("d")
        try env.write { txn throws in try txn.put("v", forKey: "k", in: db) }
        let txn = try env.beginRead()
        #expect(!env.close(timeout: 0.05), "an active transaction keeps the environment open")
        #expect(try txn.text(forKey: "k", in: db) == "v")
        _ = consume txn
        #expect(env.close())
    }

    /// A reset read transaction holds no snapshot, so it does not keep the environment open; but
    /// it still owns an MDB_txn, which must not be aborted into the freed environment afterwards.
    @Test func closeWithAResetReadTransactionOutstanding() throws {
        let env = try fixture.open()
        let db = try env.database("d", integerKeys: true)
        var first = try env.beginRead()
        first.reset()
        var second = try env.beginRead()
        second.reset()
        #expect(env.close(timeout: patience))
        let error = #expect(throws: LMDBError.self) { try first.renew() }
        #expect(error?.code == EINVAL)
        #expect(first.isActive == false)
        #expect(throws: LMDBError.self) { _ = try first.integer(forKey: 1, in: db) }
        _ = consume first   // dropped after close: no crash
        try second.commit() // committed after close: no crash
    }

    @Test func closeFromAnotherThreadWaitsForReader() throws {
        let env = try fixture.open()
        let released = Atomic<Bool>(false)
        let txn = try env.beginRead()
        let closer = TestThread {
            #expect(env.close(timeout: patience))
            #expect(released.load(ordering: .sequentiallyConsistent) == true)
        }
        usleep(100_000)   // lets the closer start waiting; the outcome does not depend on it
        released.store(true, ordering: .sequentiallyConsistent)
        _ = consume txn
        #expect(closer.join())
        #expect(throws: LMDBError.self) { _ = try env.beginRead() }
    }

    @Test func readOnlyEnvironmentRefusesWrites() throws {
        do {
            let env = try fixture.open()
            let db = try env.database("d", integerKeys: true)
            try env.write { txn throws in try txn.put(integer: 1, forKey: 1, in: db) }
        }
        let env = try fixture.open(flags: .readOnly)
        #expect(env.isReadOnly)
        let db = try env.openDatabases(["d"], flags: [.integerKey])[0]
        // The handle was opened in a read transaction that committed: still valid.
        #expect(try env.read { txn throws in try txn.integer(forKey: 1, in: db) } == 1)
        #expect(try env.read { txn throws in try txn.integer(forKey: 1, in: db) } == 1)

        let error = #expect(throws: LMDBError.self) { try env.write { txn throws in try txn.put(integer: 2, forKey: 2, in: db) } }
        #expect(error?.code == EACCES)
        #expect(error?.description.contains("read-only") == true)
        #expect(throws: LMDBError(code: EACCES)) { _ = try env.beginWrite() }
        #expect(throws: LMDBError.self) { _ = try env.openDatabases(["new"], flags: [.create]) }
    }

    @Test func readersFullHasAHint() throws {
        let env = try fixture.open(maxReaders: 2)
        let first = try env.beginRead()
        let second = try env.beginRead()
        let error = #expect(throws: LMDBError.readersFull) { _ = try env.beginRead() }
        #expect(error?.description.contains("maxReaders") == true)
        _ = consume first
        // A freed slot is usable again.
        let third = try env.beginRead()
        _ = consume second
        _ = consume third
    }

    @Test func copyProducesAnOpenableEnvironment() throws {
        let env = try fixture.open()
        let db = try env.database("d")
        try env.write { txn throws in try txn.put("v", forKey: "k", in: db) }
        let target = try fixture.makeDirectory("copy")
        try env.copy(to: target, compact: true)
        try env.sync()
        let copy = try fixture.open("copy")
        let copied = try copy.openDatabases(["d"], flags: [])[0]
        #expect(try copy.read { txn throws in try txn.text(forKey: "k", in: copied) } == "v")
    }

    // MARK: Map growth

    /// 8 MB written through `write` into a 64 KiB map: the wrapper grows it silently.
    @Test func tinyMapGrowsWhileWriting() throws {
        let transactions = 32, perTransaction = 64, valueSize = 4000
        do {
            let env = try fixture.open(mapSize: 64 << 10, flags: .noSync)
            let initialMapSize = env.mapSize
            #expect(initialMapSize < 1 << 20)
            let db = try env.database("d", integerKeys: true)
            for t in 0..<transactions {
                try env.write { txn throws in
                    for i in 0..<perTransaction {
                        let key = UInt64(t * perTransaction + i)
                        try txn.put(bytes: pattern(valueSize, seed: key), forKey: key, in: db)
                    }
                }
            }
            #expect(env.mapSize >= transactions * perTransaction * valueSize)
            try env.sync()
            #expect(env.close())
        }
        // Reopening with the same tiny configured size: LMDB keeps at least the data size.
        let env = try fixture.open(mapSize: 64 << 10)
        let db = try env.openDatabases(["d"], flags: [.integerKey])[0]
        try env.read { txn throws in
            #expect(try txn.statistics(db).entries == transactions * perTransaction)
            for key in 0..<UInt64(transactions * perTransaction) {
                let value = try txn.bytes(forKey: key, in: db)
                guard value == pattern(valueSize, seed: key) else {
                    Issue.record("value \(key) differs after reopening")
                    return
                }
            }
        }
    }

    /// One transaction larger than the map: it is aborted, the map doubled and the body rerun.
    @Test func singleTransactionLargerThanTheMapIsRetried() throws {
        let env = try fixture.open(mapSize: 64 << 10, flags: .noSync)
        let db = try env.database("d", integerKeys: true)
        var runs = 0
        let total = try env.write { txn throws in
            runs += 1
            for key in UInt64(0)..<1024 { try txn.put(bytes: pattern(4000, seed: key), forKey: key, in: db) }
            return 1024
        }
        #expect(total == 1024)
        #expect(runs > 1)
        #expect(env.mapSize >= 4 << 20)
        try env.read { txn throws in
            #expect(try txn.statistics(db).entries == 1024)
            #expect(try txn.bytes(forKey: 1023, in: db) == pattern(4000, seed: 1023))
        }
    }

    @Test func growMapWaitsForAReaderOnAnotherThread() throws {
        let env = try fixture.open(mapSize: 1 << 20)
        let db = try env.database("d")
        try env.write { txn throws in try txn.put("before", forKey: "k", in: db) }
        let reading = DispatchSemaphore(value: 0)
        let readerDone = Atomic<Bool>(false)
        let reader = TestThread {
            do {
                let txn = try env.beginRead()
                reading.signal()
                usleep(300_000)   // lets growMap start waiting; the outcome does not depend on it
                // Still the old mapping: growMap has not pulled it out from under us.
                #expect(try txn.text(forKey: "k", in: db) == "before")
                readerDone.store(true, ordering: .sequentiallyConsistent)
            } catch {
                Issue.record(error)
                reading.signal()
            }
        }
        reading.wait()
        try env.growMap(to: 8 << 20)
        #expect(readerDone.load(ordering: .sequentiallyConsistent) == true, "growMap returned while a reader was active")
        #expect(env.mapSize >= 8 << 20)
        #expect(reader.join())
        #expect(try env.read { txn throws in try txn.text(forKey: "k", in: db) } == "before")
    }

    @Test func growMapToASmallerSizeIsANoOp() throws {
        let env = try fixture.open(mapSize: 4 << 20)
        try env.growMap(to: 1 << 20)
        #expect(env.mapSize == 4 << 20)
    }

    /// The calling thread holds a read transaction, so the growth it needs can never happen:
    /// `write` must give up after `growthTimeout`, not deadlock.
    @Test func writeNeedingGrowthUnderOwnReaderThrowsResizeBlocked() throws {
        let env = try fixture.open(mapSize: 64 << 10, growthTimeout: 0.2, flags: .noSync)
        let db = try env.database("d", integerKeys: true)
        let reader = try env.beginRead()
        var error: LMDBError?
        let elapsed = seconds {
            error = #expect(throws: LMDBError.resizeBlocked) {
                try env.write { txn throws in
                    for key in UInt64(0)..<256 { try txn.put(bytes: pattern(4000, seed: key), forKey: key, in: db) }
                }
            }
        }
        #expect(elapsed >= 0.2, "gave up before the growth timeout")
        #expect(error?.description.contains("read transactions") == true)
        #expect(error?.hint != nil)
        _ = consume reader
        try env.write { txn throws in
            for key in UInt64(0)..<256 { try txn.put(bytes: pattern(4000, seed: key), forKey: key, in: db) }
        }
        #expect(try env.read { txn throws in try txn.statistics(db).entries } == 256)
    }

    /// A writer on another thread that needs growth waits for this process's readers and then
    /// succeeds once they finish.
    @Test func writerOnAnotherThreadGrowsAfterReadersFinish() throws {
        let env = try fixture.open(mapSize: 64 << 10, growthTimeout: patience, flags: .noSync)
        let db = try env.database("d", integerKeys: true)
        let reader = try env.beginRead()
        let writer = TestThread {
            do {
                try env.write { txn throws in
                    for key in UInt64(0)..<256 { try txn.put(bytes: pattern(4000, seed: key), forKey: key, in: db) }
                }
            } catch {
                Issue.record(error)
            }
        }
        usleep(150_000)   // lets the writer start waiting; the outcome does not depend on it
        #expect(try reader.statistics(db).entries == 0)
        _ = consume reader
        #expect(writer.join())
        #expect(try env.read { txn throws in try txn.statistics(db).entries } == 256)
    }

    /// Readers on other threads keep renewing snapshots while the writer grows a 64 KiB map to
    /// several MB: no reader may ever read through a mapping that was replaced under it.
    @Test func readersKeepReadingWhileTheMapGrows() throws {
        let env = try fixture.open(mapSize: 64 << 10, growthTimeout: patience, flags: .noSync)
        let db = try env.database("d", integerKeys: true)
        try env.write { txn throws in
            try txn.put(integer: 0, forKey: 0, in: db)
            try txn.put(bytes: pattern(3000, seed: 0), forKey: 1, in: db)
        }
        let stop = Atomic<Bool>(false)
        let bad = Atomic<Int>(0)
        let reads = Atomic<Int>(0)
        let readers = (0..<3).map { _ in
            TestThread {
                do {
                    var txn = try env.beginRead()
                    while !stop.load(ordering: .relaxed) {
                        // Key 0 holds the round; key 1 the pattern of that round.
                        let round = try txn.integer(forKey: 0, in: db) ?? .max
                        if try txn.bytes(forKey: 1, in: db) != pattern(3000, seed: round) { bad.add(1, ordering: .relaxed) }
                        reads.add(1, ordering: .relaxed)
                        txn.reset()
                        try txn.renew()
                    }
                } catch {
                    Issue.record(error)
                    bad.add(1, ordering: .relaxed)
                }
            }
        }
        let initialMapSize = env.mapSize
        for round in UInt64(1)...40 {
            try env.write { txn throws in
                try txn.put(integer: round, forKey: 0, in: db)
                try txn.put(bytes: pattern(3000, seed: round), forKey: 1, in: db)
                for i in UInt64(0)..<25 { try txn.put(bytes: pattern(4000, seed: i), forKey: 100 + round * 100 + i, in: db) }
            }
        }
        stop.store(true, ordering: .relaxed)
        for reader in readers { #expect(reader.join()) }
        #expect(bad.load(ordering: .relaxed) == 0)
        #expect(reads.load(ordering: .relaxed) > 0)
        #expect(env.mapSize >= 4 << 20)
        #expect(env.mapSize > initialMapSize)
    }

    /// Closing while other threads keep starting transactions: they get errors, never a crash,
    /// and close does not wait forever for newcomers.
    @Test func closeWhileOtherThreadsKeepReading() throws {
        let env = try fixture.open()
        let db = try env.database("d", integerKeys: true)
        try env.write { txn throws in try txn.put(integer: 1, forKey: 1, in: db) }
        let started = DispatchSemaphore(value: 0)
        let errors = Atomic<Int>(0)
        let threads = (0..<3).map { _ in
            TestThread {
                started.signal()
                while true {
                    do {
                        var txn = try env.beginRead()
                        _ = try txn.integer(forKey: 1, in: db)
                        txn.reset()
                        try txn.renew()
                        _ = try txn.integer(forKey: 1, in: db)
                    } catch let error as LMDBError {
                        if error.code == EINVAL { errors.add(1, ordering: .relaxed) }
                        return
                    } catch {
                        return
                    }
                }
            }
        }
        for _ in threads { started.wait() }
        usleep(20_000)   // lets the readers loop; the outcome does not depend on it
        #expect(env.close(timeout: patience))
        for thread in threads { #expect(thread.join()) }
        #expect(errors.load(ordering: .relaxed) == 3, "every thread ended with the closed-environment error")
    }

    // MARK: Exclusive access

    /// The thread holding exclusive access may begin transactions itself (a regression here
    /// deadlocks, so the body runs on a thread joined with a timeout).
    @Test func withExclusiveAccessAllowsTheCallersOwnTransactions() throws {
        let env = try fixture.open()
        let db = try env.database("d", integerKeys: true)
        let succeeded = Atomic<Bool>(false)
        let thread = TestThread {
            do {
                let value = try env.withExclusiveAccess {
                    try env.write { txn throws in try txn.put(integer: 7, forKey: 1, in: db) }
                    return try env.read { txn throws in try txn.integer(forKey: 1, in: db) }
                }
                succeeded.store(value == 7, ordering: .sequentiallyConsistent)
            } catch { Issue.record(error) }
        }
        #expect(thread.join(), "withExclusiveAccess deadlocked on its own transactions")
        #expect(succeeded.load(ordering: .sequentiallyConsistent) == true)
    }

    @Test func withExclusiveAccessHoldsOffOtherThreads() throws {
        let env = try fixture.open()
        let db = try env.database("d", integerKeys: true)
        let inside = DispatchSemaphore(value: 0)
        let bodyDone = Atomic<Bool>(false)
        let sawBodyDone = Atomic<Bool>(false)
        let exclusive = TestThread {
            do {
                try env.withExclusiveAccess {
                    inside.signal()
                    usleep(150_000)   // lets the reader start waiting; the outcome does not depend on it
                    try env.write { txn throws in try txn.put(integer: 1, forKey: 1, in: db) }
                    bodyDone.store(true, ordering: .sequentiallyConsistent)
                }
            } catch { Issue.record(error) }
        }
        inside.wait()
        let reader = TestThread {
            do {
                let value = try env.read { txn throws in try txn.integer(forKey: 1, in: db) }
                sawBodyDone.store(bodyDone.load(ordering: .sequentiallyConsistent) && value == 1, ordering: .sequentiallyConsistent)
            } catch { Issue.record(error) }
        }
        #expect(exclusive.join())
        #expect(reader.join())
        #expect(sawBodyDone.load(ordering: .sequentiallyConsistent) == true, "a reader ran inside another thread's exclusive body")
    }

    /// A write inside exclusive access that fills the map grows it (a nested exclusive operation).
    @Test func withExclusiveAccessWriteThatNeedsGrowth() throws {
        let env = try fixture.open(mapSize: 64 << 10, growthTimeout: patience, flags: .noSync)
        let db = try env.database("d", integerKeys: true)
        let succeeded = Atomic<Bool>(false)
        let thread = TestThread {
            do {
                try env.withExclusiveAccess {
                    try env.write { txn throws in
                        for key in UInt64(0)..<256 { try txn.put(bytes: pattern(4000, seed: key), forKey: key, in: db) }
                    }
                }
                succeeded.store(true, ordering: .sequentiallyConsistent)
            } catch { Issue.record(error) }
        }
        #expect(thread.join())
        #expect(succeeded.load(ordering: .sequentiallyConsistent) == true)
        #expect(try env.read { txn throws in try txn.statistics(db).entries } == 256)
    }

    @Test func withExclusiveAccessUnderOwnReaderTimesOut() throws {
        let env = try fixture.open(growthTimeout: 0.1)
        let reader = try env.beginRead()
        var ran = false
        #expect(throws: LMDBError.resizeBlocked) { try env.withExclusiveAccess { ran = true } }
        #expect(!ran)
        _ = consume reader
        try env.withExclusiveAccess { ran = true }
        #expect(ran)
        #expect(env.close())
        #expect(throws: LMDBError(code: EINVAL)) { try env.withExclusiveAccess {} }
    }

    @Test func retryingWhenMapFullGrowsForHandWrittenTransactions() throws {
        let env = try fixture.open(mapSize: 64 << 10, flags: .noSync)
        let db = try env.database("d", integerKeys: true)
        var attempts = 0
        try env.retryingWhenMapFull {
            attempts += 1
            let txn = try env.beginWrite()
            for key in UInt64(0)..<256 { try txn.put(bytes: pattern(4000, seed: key), forKey: key, in: db) }
            try txn.commit()
        }
        #expect(attempts > 1)
        #expect(try env.read { txn throws in try txn.bytes(forKey: 255, in: db) } == pattern(4000, seed: 255))
    }

    // MARK: Another process grows the map (MDB_MAP_RESIZED)

    @Test(.enabled(if: pythonWithLMDB != nil, "needs python3 with py-lmdb (pip install lmdb)"))
    func adoptsAMapGrownByAnotherProcess() throws {
        let python = try #require(pythonWithLMDB)
        let env = try fixture.open(mapSize: 256 << 10)
        let swiftDB = try env.database("swift", integerKeys: true)
        try env.write { txn throws in try txn.put(integer: 1, forKey: 1, in: swiftDB) }
        let initialMapSize = env.mapSize
        #expect(initialMapSize < 1 << 20)

        // The other process grows the map to 32 MiB and writes far beyond our 256 KiB mapping.
        func pythonWrites(round: Int) throws {
            let script = """
            import lmdb, sys
            env = lmdb.open(sys.argv[1], map_size=32 << 20, max_dbs=16)
            db = env.open_db(b"py")
            with env.begin(write=True, db=db) as txn:
                for i in range(1000):
                    txn.put(b"r%d-%04d" % (int(sys.argv[2]), i), bytes([i % 251]) * 4000)
            env.close()
            """
            let result = try run(python, ["-c", script, env.path, String(round)])
            try #require(result.status == 0, "python failed: \(result.output)")
        }

        // A snapshot taken before the other process writes stays readable afterwards.
        let longLived = try env.beginRead()
        try pythonWrites(round: 1)
        #expect(try longLived.integer(forKey: 1, in: swiftDB) == 1)
        _ = consume longLived

        // Round 1: the next write transaction meets MDB_MAP_RESIZED and adopts the new size.
        try env.write { txn throws in try txn.put(integer: 2, forKey: 2, in: swiftDB) }
        #expect(env.mapSize >= 32 << 20)
        let pyDB = try env.openDatabases(["py"], flags: [])[0]
        try env.read { txn throws in
            #expect(try txn.statistics(pyDB).entries == 1000)
            #expect(try txn.bytes(forKey: "r1-0999", in: pyDB) == [UInt8](repeating: UInt8(999 % 251), count: 4000))
        }

        // Round 2: a reset read transaction renews into the grown map.
        var reader = try env.beginRead()
        reader.reset()
        try pythonWrites(round: 2)
        try reader.renew()
        #expect(try reader.statistics(pyDB).entries == 2000)
        #expect(try reader.bytes(forKey: "r2-0500", in: pyDB) == [UInt8](repeating: UInt8(500 % 251), count: 4000))
        _ = consume reader

        // And we keep writing well past the other process's data.
        try env.write { txn throws in
            for key in UInt64(10)..<1010 { try txn.put(bytes: pattern(4000, seed: key), forKey: key, in: swiftDB) }
        }
        #expect(env.close())
        let reopened = try fixture.open(mapSize: 256 << 10)
        let dbs = try reopened.openDatabases(["swift", "py"], flags: [])
        try reopened.read { txn throws in
            #expect(try txn.statistics(dbs[0]).entries == 1002)
            #expect(try txn.statistics(dbs[1]).entries == 2000)
            #expect(try txn.bytes(forKey: 1009, in: dbs[0]) == pattern(4000, seed: 1009))
        }
    }

    // MARK: Huge pages

    /// The VmFlags of this process's mapping that starts at `address` (/proc/self/smaps);
    /// "hg" among them means MADV_HUGEPAGE was given. (Read to its end through a FileHandle:
    /// String(contentsOfFile:) stops after the first page of a /proc file, whose size is 0.)
    static func mappingFlags(at address: UInt) throws -> [String] {
        guard let handle = FileHandle(forReadingAtPath: "/proc/self/smaps") else { throw TestFailure() }
        defer { try? handle.close() }
        let smaps = String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
        var inMapping = false
        for line in smaps.split(separator: "\n") {
            if let dash = line.firstIndex(of: "-"), let start = UInt(line[..<dash], radix: 16), line.contains(" ") {
                inMapping = start == address
            } else if inMapping, line.hasPrefix("VmFlags:") {
                return line.dropFirst("VmFlags:".count).split(separator: " ").map(String.init)
            }
        }
        return []
    }

    @Test(arguments: [(Environment.HugePages.off, false), (.on, true), (.whenFileFitsInMemory, true)])
    func theMapIsAdvisedToHugePagesAsConfigured(setting: Environment.HugePages, advised: Bool) throws {
        let env = try fixture.open(mapSize: 1 << 22, hugePages: setting)
        #expect(env.adviseHugePages == advised)   // a new file of a few pages fits in memory
        let address = env.mapAddress.load(ordering: .relaxed)
        try #require(address != 0)
        #expect(try Self.mappingFlags(at: address).contains("hg") == advised)
        // After the map grows (a remap), the advice is given again.
        try env.growMap(to: 1 << 24)
        let moved = env.mapAddress.load(ordering: .relaxed)
        #expect(try Self.mappingFlags(at: moved).contains("hg") == advised)
    }
}
