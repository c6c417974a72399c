import Foundation
import Testing
@testable import LMDB

/// `environmentInfo`, `freeListStatistics` and `mainDatabaseStatistics`: every page in use is a
/// meta page, a page of some database (LMDB's free list and main database included), or free.
@Suite struct PageAccountingTests {
    let fixture: Fixture
    init() throws { fixture = try Fixture() }

    /// An environment with small and overflow values, deletions (free pages) and several commits.
    func churned() throws -> (Environment, [Database]) {
        let env = try fixture.open()
        let small = try env.database("small", integerKeys: true)
        let large = try env.database("large", integerKeys: true)
        let big = [UInt8](repeating: 7, count: 10_000)
        for round in 0..<4 {
            try env.write { txn throws in
                for key in UInt64(0)..<500 { try txn.put(integer: key &* UInt64(round + 1), forKey: key, in: small) }
                for key in UInt64(0)..<20 { try txn.put(bytes: big, forKey: key + 100 * UInt64(round), in: large) }
            }
            try env.write { txn throws in
                for key in stride(from: UInt64(0), to: 500, by: 3) { try txn.delete(key, in: small) }
                for key in UInt64(0)..<10 { try txn.delete(key + 100 * UInt64(round), in: large) }
            }
        }
        return (env, [small, large])
    }

    @Test func pagesInUseAreMetaDatabaseOrFreePages() throws {
        let (env, databases) = try churned()
        try env.read { txn throws in
            let info = txn.environmentInfo()
            #expect(info.lastTransaction == txn.snapshotID)
            #expect(info.mapSize == env.mapSize)
            let free = try txn.freeListStatistics()
            #expect(free.freePages > 0, "deleting values frees pages")
            let main = try txn.mainDatabaseStatistics()
            #expect(main.entries == 2)
            let named = try databases.reduce(0) { $0 + (try txn.statistics($1).pages) }
            #expect(info.pagesInUse == 2 + free.database.pages + main.pages + named + free.freePages,
                    "in use \(info.pagesInUse): free list \(free.database.pages), main \(main.pages), named \(named), free \(free.freePages)")
        }
    }

    /// The same figures as `mdb_stat -e -f -a`.
    @Test(.enabled(if: executable("mdb_stat") != nil, "needs mdb_stat from lmdb-utils"))
    func agreesWithMdbStat() throws {
        let mdbStat = try #require(executable("mdb_stat"))
        let (env, databases) = try churned()
        let report = try run(mdbStat, ["-e", "-f", "-a", env.path])
        #expect(report.status == 0, "\(report.output)")
        /// The value after `label: ` in the section that starts with `section`.
        func field(_ section: String, _ label: String) -> Int? {
            guard let start = report.output.range(of: section + "\n") else { return nil }
            for line in report.output[start.upperBound...].split(separator: "\n") {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                if !line.hasPrefix(" ") { break }
                if trimmed.hasPrefix(label + ": ") { return Int(trimmed.dropFirst(label.count + 2)) }
            }
            return nil
        }
        try env.read { txn throws in
            let info = txn.environmentInfo()
            let free = try txn.freeListStatistics()
            let main = try txn.mainDatabaseStatistics()
            #expect(field("Environment Info", "Number of pages used") == info.pagesInUse)
            #expect(field("Environment Info", "Map size") == info.mapSize)
            #expect(field("Environment Info", "Page size") == env.pageSize)
            #expect(field("Environment Info", "Last transaction ID") == info.lastTransaction)
            #expect(field("Freelist Status", "Free pages") == free.freePages)
            #expect(field("Freelist Status", "Leaf pages") == free.database.leafPages)
            #expect(field("Freelist Status", "Entries") == free.database.entries)
            #expect(field("Status of Main DB", "Leaf pages") == main.leafPages)
            #expect(field("Status of Main DB", "Entries") == main.entries)
            for database in databases {
                let stats = try txn.statistics(database)
                let section = "Status of \(database.name!)"
                #expect(field(section, "Leaf pages") == stats.leafPages, "\(section)")
                #expect(field(section, "Branch pages") == stats.branchPages, "\(section)")
                #expect(field(section, "Overflow pages") == stats.overflowPages, "\(section)")
                #expect(field(section, "Entries") == stats.entries, "\(section)")
            }
        }
    }
}
