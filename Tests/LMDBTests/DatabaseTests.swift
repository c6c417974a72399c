import Foundation
import Testing
@testable import LMDB

@Suite struct DatabaseTests {
    let fixture: Fixture
    init() throws { fixture = try Fixture() }

    @Test func handlesFromOpenDatabasesStayValidAfterTheOpeningTransaction() throws {
        let env = try fixture.open()
        let databases = try env.openDatabases(["a", "b", "c"], flags: [.create, .integerKey])
        #expect(databases.map(\.name) == ["a", "b", "c"])
        #expect(Set(databases.map(\.handle)).count == 3)
        // Later transactions, on this thread and another, use the handles.
        try env.write { txn throws in
            for (index, db) in databases.enumerated() { try txn.put(integer: UInt64(index), forKey: 1, in: db) }
        }
        let reader = TestThread {
            do {
                try env.read { txn throws in
                    for (index, db) in databases.enumerated() { #expect(try txn.integer(forKey: 1, in: db) == UInt64(index)) }
                }
            } catch { Issue.record(error) }
        }
        #expect(reader.join())
        // Opening again returns the same handles.
        let again = try env.openDatabases(["c", "a"], flags: [])
        #expect(again.map(\.handle) == [databases[2].handle, databases[0].handle])
    }

    @Test func databaseOpenedInACommittedTransactionIsUsableLater() throws {
        let env = try fixture.open()
        let txn = try env.beginWrite()
        let db = try txn.openDatabase("named", flags: [.create])
        try txn.put("v", forKey: "k", in: db)
        try txn.commit()
        #expect(try env.read { txn throws in try txn.text(forKey: "k", in: db) } == "v")
        // The unnamed main database lists the named one.
        let main = try env.read { txn throws in try txn.openDatabase(nil) }
        #expect(main.name == nil)
        #expect(try env.read { txn throws in try txn.statistics(main).entries } == 1)
    }

    @Test func openingAMissingDatabaseWithoutCreateIsNotFound() throws {
        let env = try fixture.open()
        let error = #expect(throws: LMDBError.notFound) { _ = try env.openDatabases(["missing"], flags: []) }
        #expect(error?.description.contains("missing") == true)
    }

    @Test func tooManyDatabasesHasAHint() throws {
        let env = try fixture.open(maxDatabases: 2)
        _ = try env.openDatabases(["one", "two"], flags: .create)
        let error = #expect(throws: LMDBError.databasesFull) { _ = try env.openDatabases(["three"], flags: .create) }
        #expect(error?.description.contains("maxDatabases") == true)
        // The failed open rolled back; the first two are still there.
        #expect(try env.openDatabases(["one", "two"], flags: []).count == 2)
    }

    @Test func statisticsCountEntries() throws {
        let env = try fixture.open()
        let db = try env.database("d", integerKeys: true)
        #expect(try env.read { txn throws in try txn.statistics(db) }.entries == 0)
        try env.write { txn throws in
            for key in UInt64(0)..<500 { try txn.put(bytes: pattern(100, seed: key), forKey: key, in: db) }
            try txn.put(bytes: pattern(10_000, seed: 1), forKey: 1000, in: db)
        }
        let stats = try env.read { txn throws in try txn.statistics(db) }
        #expect(stats.entries == 501)
        #expect(stats.pageSize == env.pageSize)
        #expect(stats.depth >= 2)
        #expect(stats.branchPages >= 1)
        #expect(stats.leafPages >= 500 * 100 / 4096)
        // 8 + 8 + 10 000 bytes > 2038: an overflow run of 3 whole pages.
        #expect(stats.overflowPages == 3)
    }

    @Test func dropWithoutDeleteEmptiesAndDropWithDeleteRemoves() throws {
        let env = try fixture.open()
        let db = try env.database("d", integerKeys: true)
        try env.write { txn throws in for key in UInt64(0)..<100 { try txn.put(integer: key, forKey: key, in: db) } }

        try env.write { txn throws in try txn.drop(db, delete: false) }
        try env.read { txn throws in
            #expect(try txn.statistics(db).entries == 0)
            #expect(try txn.integer(forKey: 5, in: db) == nil)
        }
        // Still open and usable after being emptied.
        try env.write { txn throws in try txn.put(integer: 9, forKey: 9, in: db) }
        #expect(try env.read { txn throws in try txn.integer(forKey: 9, in: db) } == 9)

        // A drop that is rolled back leaves the database and its entries alone, but LMDB has
        // already closed the handle (mdb_drop closes it at once): it must be opened again.
        #expect(throws: TestFailure()) {
            try env.write { txn throws in
                try txn.drop(db, delete: true)
                throw TestFailure()
            }
        }
        #expect(throws: LMDBError.self) { _ = try env.read { txn throws in try txn.integer(forKey: 9, in: db) } }
        let reopened = try env.openDatabases(["d"], flags: [])[0]
        #expect(try env.read { txn throws in try txn.integer(forKey: 9, in: reopened) } == 9)

        try env.write { txn throws in try txn.drop(reopened, delete: true) }
        #expect(throws: LMDBError.notFound) { _ = try env.openDatabases(["d"], flags: []) }
        let main = try env.read { txn throws in try txn.openDatabase(nil) }
        #expect(try env.read { txn throws in try txn.statistics(main).entries } == 0)
        // It can be created afresh.
        let recreated = try env.database("d", integerKeys: true)
        #expect(try env.read { txn throws in try txn.statistics(recreated).entries } == 0)
    }

    @Test(.enabled(if: executable("mdb_stat") != nil, "needs mdb_stat from lmdb-utils"))
    func mdbStatAgreesWithStatistics() throws {
        let mdbStat = try #require(executable("mdb_stat"))
        let env = try fixture.open()
        let kept = try env.database("kept", integerKeys: true)
        let dropped = try env.database("dropped")
        try env.write { txn throws in
            for key in UInt64(0)..<123 { try txn.put(integer: key, forKey: key, in: kept) }
            try txn.put("v", forKey: "k", in: dropped)
        }
        var report = try run(mdbStat, ["-a", env.path])
        #expect(report.status == 0, "\(report.output)")
        #expect(report.output.contains("Status of kept"))
        #expect(report.output.contains("Status of dropped"))
        #expect(report.output.contains("Entries: 123"))

        try env.write { txn throws in try txn.drop(dropped, delete: true) }
        report = try run(mdbStat, ["-a", env.path])
        #expect(report.status == 0, "\(report.output)")
        #expect(report.output.contains("Status of kept"))
        #expect(!report.output.contains("Status of dropped"))
    }

    @Test func readOnlyEnvironmentOpensExistingDatabases() throws {
        do {
            let env = try fixture.open()
            _ = try env.openDatabases(["x", "y"], flags: [.create, .integerKey])
        }
        let env = try fixture.open(flags: .readOnly)
        let databases = try env.openDatabases(["x", "y"], flags: [.integerKey])
        try env.read { txn throws in
            for db in databases { #expect(try txn.statistics(db).entries == 0) }
        }
        #expect(throws: LMDBError.notFound) { _ = try env.openDatabases(["z"], flags: []) }
        // Concurrent opens from many threads are serialised.
        let threads = (0..<4).map { _ in
            TestThread {
                do {
                    for _ in 0..<50 {
                        let again = try env.openDatabases(["y", "x"], flags: [])
                        #expect(again.map(\.handle) == [databases[1].handle, databases[0].handle])
                    }
                } catch { Issue.record(error) }
            }
        }
        for thread in threads { #expect(thread.join()) }
    }
}
