import Foundation
import Synchronization
import Testing
@testable import LMDB

@Suite struct TransactionTests {
    let fixture: Fixture
    init() throws { fixture = try Fixture() }

    // MARK: Put, get, delete

    @Test func integerKeysPutGetDelete() throws {
        let env = try fixture.open()
        let db = try env.database("ints", integerKeys: true)
        let keys: [UInt64] = [1, 2, 10, 256, 1 << 40, .max, 0]
        try env.write { txn throws in
            for key in keys { try txn.put(integer: key &* 3, forKey: key, in: db) }
            // Visible inside the writing transaction already.
            #expect(try txn.integer(forKey: 256, in: db) == 768)
        }
        try env.read { txn throws in
            for key in keys { #expect(try txn.integer(forKey: key, in: db) == key &* 3) }
            #expect(try txn.integer(forKey: 3, in: db) == nil)
            #expect(try txn.integer(forKey: (1 << 40) + 1, in: db) == nil)
        }
        try env.write { txn throws in
            #expect(try txn.delete(10, in: db))
            #expect(try !txn.delete(10, in: db), "deleting an absent key reports false")
            #expect(try !txn.delete(11, in: db))
            #expect(try txn.integer(forKey: 10, in: db) == nil)
        }
        try env.read { txn throws in
            #expect(try txn.integer(forKey: 10, in: db) == nil)
            #expect(try txn.statistics(db).entries == keys.count - 1)
        }
    }

    @Test func stringKeysPutGetDelete() throws {
        let env = try fixture.open()
        let db = try env.database("strings")
        let pairs = ["a": "1", "ab": "2", "b": "3", "ключ": "4", "🔑": "5", String(repeating: "x", count: 511): "6"]
        try env.write { txn throws in
            for (key, value) in pairs { try txn.put(value, forKey: key, in: db) }
        }
        try env.read { txn throws in
            for (key, value) in pairs { #expect(try txn.text(forKey: key, in: db) == value) }
            #expect(try txn.text(forKey: "c", in: db) == nil)
            #expect(try txn.text(forKey: "A", in: db) == nil)
        }
        try env.write { txn throws in
            #expect(try txn.delete("ab", in: db))
            #expect(try !txn.delete("ab", in: db))
        }
        try env.read { txn throws in
            #expect(try txn.text(forKey: "ab", in: db) == nil)
            #expect(try txn.text(forKey: "a", in: db) == "1")
        }
    }

    @Test func overwriteReplacesValue() throws {
        let env = try fixture.open()
        let db = try env.database("d")
        try env.write { txn throws in try txn.put("short", forKey: "k", in: db) }
        try env.write { txn throws in try txn.put(String(repeating: "long", count: 1000), forKey: "k", in: db) }
        try env.write { txn throws in try txn.put("s", forKey: "k", in: db) }
        #expect(try env.read { txn throws in try txn.text(forKey: "k", in: db) } == "s")
    }

    @Test func emptyValueIsStoredAndIsNotNil() throws {
        let env = try fixture.open()
        let db = try env.database("d", integerKeys: true)
        try env.write { txn throws in try txn.put(bytes: [], forKey: 5, in: db) }
        #expect(try env.read { txn throws in try txn.bytes(forKey: 5, in: db) } == [])
    }

    // MARK: Commit, abort, rollback

    @Test func droppedWriteTransactionLeavesNothing() throws {
        let env = try fixture.open()
        let db = try env.database("d", integerKeys: true)
        do {
            let txn = try env.beginWrite()
            try txn.put(integer: 1, forKey: 1, in: db)
            #expect(try txn.integer(forKey: 1, in: db) == 1)
            // Dropped here without commit.
        }
        #expect(try env.read { txn throws in try txn.integer(forKey: 1, in: db) } == nil)
        do {
            let txn = try env.beginWrite()
            try txn.put(integer: 2, forKey: 2, in: db)
            txn.abort()
        }
        #expect(try env.read { txn throws in try txn.integer(forKey: 2, in: db) } == nil)
        // The writer lock was released both times.
        let txn = try env.beginWrite()
        try txn.put(integer: 3, forKey: 3, in: db)
        try txn.commit()
        #expect(try env.read { txn throws in try txn.integer(forKey: 3, in: db) } == 3)
    }

    @Test func throwingWriteBodyRollsBack() throws {
        let env = try fixture.open()
        let db = try env.database("d", integerKeys: true)
        try env.write { txn throws in try txn.put(integer: 1, forKey: 1, in: db) }
        #expect(throws: TestFailure()) {
            try env.write { txn throws in
                try txn.put(integer: 100, forKey: 1, in: db)
                try txn.put(integer: 2, forKey: 2, in: db)
                throw TestFailure()
            }
        }
        try env.read { txn throws in
            #expect(try txn.integer(forKey: 1, in: db) == 1)
            #expect(try txn.integer(forKey: 2, in: db) == nil)
        }
        // And the environment is still writable (no writer lock left behind).
        #expect(try env.write { txn throws in try txn.put(integer: 2, forKey: 2, in: db); return "done" } == "done")
    }

    @Test func throwingReadBodyEndsTheTransaction() throws {
        let env = try fixture.open(maxReaders: 1)
        #expect(throws: TestFailure()) { try env.read { _ in throw TestFailure() } }
        // The only reader slot was given back.
        try env.read { _ in }
        try env.read { _ in }
    }

    @Test func commitOfAResetReadTransactionIsHarmless() throws {
        let env = try fixture.open()
        var txn = try env.beginRead()
        #expect(txn.isReadOnly == true && txn.isActive == true)
        txn.reset()
        #expect(txn.isActive == false)
        txn.reset()
        try txn.commit()
        #expect(env.close(timeout: patience))
    }

    @Test func twoReadTransactionsOnOneThread() throws {
        // MDB_NOTLS: read transactions belong to the value, not the thread.
        let env = try fixture.open()
        let db = try env.database("d", integerKeys: true)
        try env.write { txn throws in try txn.put(integer: 1, forKey: 1, in: db) }
        let first = try env.beginRead()
        try env.write { txn throws in try txn.put(integer: 2, forKey: 1, in: db) }
        let second = try env.beginRead()
        #expect(try first.integer(forKey: 1, in: db) == 1)
        #expect(try second.integer(forKey: 1, in: db) == 2)
    }

    // MARK: Snapshots

    @Test func longLivedReaderKeepsItsSnapshotWhileAWriterCommits() throws {
        let env = try fixture.open()
        let db = try env.database("d", integerKeys: true)
        try env.write { txn throws in try txn.put(integer: 1, forKey: 1, in: db) }
        let reader = try env.beginRead()
        let writer = TestThread {
            do {
                for value in UInt64(2)...50 {
                    try env.write { txn throws in
                        try txn.put(integer: value, forKey: 1, in: db)
                        try txn.put(integer: value, forKey: value, in: db)
                    }
                }
            } catch { Issue.record(error) }
        }
        #expect(writer.join())
        #expect(try reader.integer(forKey: 1, in: db) == 1)
        #expect(try reader.integer(forKey: 50, in: db) == nil)
        #expect(try reader.statistics(db).entries == 1)
        _ = consume reader
        #expect(try env.read { txn throws in try txn.integer(forKey: 1, in: db) } == 50)
    }

    @Test func renewSeesNewCommitsAndNotBefore() throws {
        let env = try fixture.open()
        let db = try env.database("d", integerKeys: true)
        try env.write { txn throws in try txn.put(integer: 1, forKey: 1, in: db) }
        var reader = try env.beginRead()
        #expect(try reader.integer(forKey: 1, in: db) == 1)
        try env.write { txn throws in try txn.put(integer: 2, forKey: 1, in: db) }
        #expect(try reader.integer(forKey: 1, in: db) == 1, "not before renew")
        reader.reset()
        // A reset transaction has no snapshot: using it is an error, not a crash.
        #expect(throws: LMDBError.self) { _ = try reader.integer(forKey: 1, in: db) }
        #expect(throws: LMDBError.self) { try reader.withCursor(db) { _ in } }
        try env.write { txn throws in try txn.put(integer: 3, forKey: 1, in: db) }
        try reader.renew()
        #expect(reader.isActive == true)
        try reader.renew() // renewing an active transaction is a no-op
        #expect(try reader.integer(forKey: 1, in: db) == 3, "after renew")
        for expected in UInt64(4)...20 {
            try env.write { txn throws in try txn.put(integer: expected, forKey: 1, in: db) }
            reader.reset()
            try reader.renew()
            #expect(try reader.integer(forKey: 1, in: db) == expected)
        }
    }

    @Test func readersOnManyThreadsSeeConsistentSnapshots() throws {
        let env = try fixture.open(flags: .noSync)
        let db = try env.database("d")
        try env.write { txn throws in
            try txn.put(bytes: withUnsafeBytes(of: UInt64(0)) { Array($0) }, forKey: "A", in: db)
            try txn.put(bytes: withUnsafeBytes(of: UInt64(0)) { Array($0) }, forKey: "B", in: db)
        }
        let stop = Atomic<Bool>(false)
        let inconsistent = Atomic<Int>(0)
        let wentBackwards = Atomic<Int>(0)
        let reads = Atomic<Int>(0)
        let readerThreads = (0..<4).map { _ in
            TestThread {
                do {
                    var txn = try env.beginRead()
                    var last: UInt64 = 0
                    while !stop.load(ordering: .relaxed) {
                        let a = try txn.withValue(forKey: "A", in: db) { $0!.loadUnaligned(as: UInt64.self) }
                        let b = try txn.withValue(forKey: "B", in: db) { $0!.loadUnaligned(as: UInt64.self) }
                        if a != b { inconsistent.add(1, ordering: .relaxed) }
                        if a < last { wentBackwards.add(1, ordering: .relaxed) }
                        last = a
                        reads.add(1, ordering: .relaxed)
                        txn.reset()
                        try txn.renew()
                    }
                } catch {
                    Issue.record(error)
                }
            }
        }
        let writer = TestThread {
            do {
                for counter in UInt64(1)...2000 {
                    try env.write { txn throws in
                        try txn.put(bytes: withUnsafeBytes(of: counter) { Array($0) }, forKey: "A", in: db)
                        try txn.put(bytes: withUnsafeBytes(of: counter) { Array($0) }, forKey: "B", in: db)
                    }
                }
            } catch { Issue.record(error) }
        }
        #expect(writer.join())
        stop.store(true, ordering: .relaxed)
        for thread in readerThreads { #expect(thread.join()) }
        #expect(inconsistent.load(ordering: .relaxed) == 0)
        #expect(wentBackwards.load(ordering: .relaxed) == 0)
        #expect(reads.load(ordering: .relaxed) > 0)
        try env.read { txn throws in
            #expect(try txn.withValue(forKey: "A", in: db) { $0!.loadUnaligned(as: UInt64.self) } == 2000)
        }
    }

    // MARK: Misuse

    @Test func writeInAReadOnlyTransactionIsEACCES() throws {
        let env = try fixture.open()
        let db = try env.database("d", integerKeys: true)
        try env.read { txn throws in
            #expect(txn.isReadOnly == true)
            let error = #expect(throws: LMDBError.self) { try txn.put(integer: 1, forKey: 1, in: db) }
            #expect(error?.code == EACCES)
            #expect(error?.description.contains("read-only") == true)
            #expect(error?.description.contains("Permission denied") == true)
            #expect(throws: LMDBError(code: EACCES)) { try txn.delete(1, in: db) }
            #expect(throws: LMDBError(code: EACCES)) { try txn.drop(db, delete: false) }
            var filled = false
            #expect(throws: LMDBError(code: EACCES)) {
                try txn.reserve(count: 8, forKey: 1, in: db) { _ in filled = true }
            }
            #expect(!filled)
        }
    }

    /// LMDB's writer lock is not reentrant: a nested write on the same thread used to block in
    /// mdb_txn_begin forever. It must fail at once instead (run on a joined thread so a
    /// regression fails the test rather than hanging the suite).
    @Test func nestedWriteOnTheSameThreadIsRefused() throws {
        let env = try fixture.open()
        let db = try env.database("d", integerKeys: true)
        let outcome = Mutex<[Int32]>([])
        let thread = TestThread {
            do {
                try env.write { txn throws in
                    try txn.put(integer: 1, forKey: 1, in: db)
                    for attempt in 0..<2 {
                        do {
                            if attempt == 0 {
                                try env.write { inner throws in try inner.put(integer: 2, forKey: 2, in: db) }
                            } else {
                                _ = try env.openDatabases(["other"], flags: .create)
                            }
                        } catch let error as LMDBError {
                            outcome.withLock { $0.append(error.code) }
                            #expect(error.description.contains("not reentrant"))
                        }
                    }
                }
                // Once the outer one has committed, this thread may write again.
                try env.write { txn throws in try txn.put(integer: 3, forKey: 3, in: db) }
            } catch { Issue.record(error) }
        }
        #expect(thread.join(), "a nested write transaction deadlocked")
        #expect(outcome.withLock { $0 } == [EDEADLK, EDEADLK])
        try env.read { txn throws in
            #expect(try txn.integer(forKey: 1, in: db) == 1)
            #expect(try txn.integer(forKey: 2, in: db) == nil)
            #expect(try txn.integer(forKey: 3, in: db) == 3)
        }
    }

    /// Writers on different threads are not mistaken for nested ones: they queue.
    @Test func writersOnOtherThreadsQueue() throws {
        let env = try fixture.open(flags: .noSync)
        let db = try env.database("d", integerKeys: true)
        let threads = (0..<4).map { index in
            TestThread {
                do {
                    for i in 0..<100 {
                        try env.write { txn throws in
                            let count = try txn.integer(forKey: 0, in: db) ?? 0
                            try txn.put(integer: count + 1, forKey: 0, in: db)
                            try txn.put(integer: 1, forKey: UInt64(1 + index * 100 + i), in: db)
                        }
                    }
                } catch { Issue.record(error) }
            }
        }
        for thread in threads { #expect(thread.join()) }
        try env.read { txn throws in
            #expect(try txn.integer(forKey: 0, in: db) == 400)
            #expect(try txn.statistics(db).entries == 401)
        }
    }

    @Test func emptyAndOverlongKeysAreBadValueSize() throws {
        let env = try fixture.open()
        let db = try env.database("d")
        let maxKeySize = env.maxKeySize
        try env.write { txn throws in
            let empty = #expect(throws: LMDBError.badValueSize) { try txn.put("v", forKey: "", in: db) }
            #expect(empty?.description.contains("MDB_BAD_VALSIZE") == true)
            #expect(empty?.description.contains(empty?.hint ?? "no hint") == true)
            #expect(empty?.hint?.contains("empty") == true)
            let long = String(repeating: "k", count: maxKeySize + 1)
            let overlong = #expect(throws: LMDBError.badValueSize) { try txn.put("v", forKey: long, in: db) }
            #expect(overlong?.hint?.contains("\(maxKeySize)") == true)
            // The longest allowed key works.
            try txn.put("v", forKey: String(repeating: "k", count: maxKeySize), in: db)
        }
        // The failed puts did not poison the committed transaction.
        #expect(try env.read { txn throws in try txn.text(forKey: String(repeating: "k", count: maxKeySize), in: db) } == "v")
    }

    @Test func absentKeyIsNilInAnEmptyDatabase() throws {
        let env = try fixture.open()
        let ints = try env.database("ints", integerKeys: true)
        let strings = try env.database("strings")
        try env.read { txn throws in
            #expect(try txn.bytes(forKey: 0, in: ints) == nil)
            #expect(try txn.bytes(forKey: "nothing", in: strings) == nil)
            var called = false
            try txn.withValue(forKey: 9, in: ints) { buffer in
                called = true
                #expect(buffer == nil)
            }
            #expect(called)
        }
    }

    // MARK: Put flags

    @Test func reserveWritesInPlace() throws {
        let env = try fixture.open()
        let db = try env.database("d", integerKeys: true)
        let expected = pattern(1001, seed: 7)
        try env.write { txn throws in
            try txn.reserve(count: expected.count, forKey: 7, in: db) { buffer in
                #expect(buffer.count == expected.count)
                buffer.copyBytes(from: expected)
            }
            // Reserving reads back inside the same transaction...
            #expect(try txn.bytes(forKey: 7, in: db) == expected)
            // ...and a large reservation lands on overflow pages.
            try txn.reserve(count: 10_000, forKey: 8, in: db) { buffer in
                for i in 0..<buffer.count { buffer[i] = UInt8(truncatingIfNeeded: i &* 31) }
            }
        }
        try env.read { txn throws in
            #expect(try txn.bytes(forKey: 7, in: db) == expected)
            #expect(try txn.bytes(forKey: 8, in: db) == (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        }
        // With .noOverwrite on an existing key nothing is reserved and `fill` is not called.
        var filled = false
        #expect(throws: LMDBError.keyExists) {
            try env.write { txn throws in try txn.reserve(count: 4, forKey: 7, in: db, flags: .noOverwrite) { _ in filled = true } }
        }
        #expect(!filled)
        #expect(try env.read { txn throws in try txn.bytes(forKey: 7, in: db) } == expected)
    }

    @Test func reserveWithAppendForABulkLoad() throws {
        let env = try fixture.open(mapSize: 64 << 10, flags: .noSync)
        let db = try env.database("d", integerKeys: true)
        try env.write { txn throws in
            for key in UInt64(1)...5000 {
                try txn.reserve(count: 24, forKey: key, in: db, flags: .append) { buffer in
                    buffer.storeBytes(of: key, toByteOffset: 0, as: UInt64.self)
                    buffer.storeBytes(of: key &* 2, toByteOffset: 8, as: UInt64.self)
                    buffer.storeBytes(of: key &* 3, toByteOffset: 16, as: UInt64.self)
                }
            }
        }
        try env.read { txn throws in
            #expect(try txn.statistics(db).entries == 5000)
            let value = try #require(try txn.bytes(forKey: 4321, in: db))
            #expect(value.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16, as: UInt64.self) } == 4321 * 3)
        }
    }

    @Test func appendWithOutOfOrderKeysIsKeyExists() throws {
        let env = try fixture.open()
        let ints = try env.database("ints", integerKeys: true)
        let strings = try env.database("strings")
        try env.write { txn throws in
            for key: UInt64 in [1, 2, 10, 256] { try txn.put(integer: key, forKey: key, in: ints, flags: .append) }
            let error = #expect(throws: LMDBError.keyExists) { try txn.put(integer: 0, forKey: 3, in: ints, flags: .append) }
            #expect(error?.description.contains("MDB_KEYEXIST") == true)
            #expect(throws: LMDBError.keyExists) { try txn.put(integer: 0, forKey: 256, in: ints, flags: .append) }
            try txn.put(integer: 1 << 40, forKey: 1 << 40, in: ints, flags: .append)

            try txn.put("1", forKey: "b", in: strings, flags: .append)
            #expect(throws: LMDBError.keyExists) { try txn.put("2", forKey: "a", in: strings, flags: .append) }
            try txn.put("3", forKey: "c", in: strings, flags: .append)
        }
        try env.read { txn throws in
            #expect(try txn.statistics(ints).entries == 5)
            #expect(try txn.integer(forKey: 3, in: ints) == nil)
            #expect(try txn.integer(forKey: 256, in: ints) == 256)
            #expect(try txn.text(forKey: "a", in: strings) == nil)
            #expect(try txn.text(forKey: "c", in: strings) == "3")
        }
    }

    @Test func noOverwriteKeepsTheOldValue() throws {
        let env = try fixture.open()
        let db = try env.database("d")
        try env.write { txn throws in try txn.put("old", forKey: "k", in: db, flags: .noOverwrite) }
        try env.write { txn throws in
            let error = #expect(throws: LMDBError.keyExists) { try txn.put("new", forKey: "k", in: db, flags: .noOverwrite) }
            #expect(error?.context.contains("k") == true)
            try txn.put("fresh", forKey: "k2", in: db, flags: .noOverwrite)
        }
        try env.read { txn throws in
            #expect(try txn.text(forKey: "k", in: db) == "old")
            #expect(try txn.text(forKey: "k2", in: db) == "fresh")
        }
    }
}
