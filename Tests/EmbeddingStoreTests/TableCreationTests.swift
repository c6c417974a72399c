import Foundation
import Synchronization
import Testing
@testable import EmbeddingStore

/// A load that creates its table makes it visible in its last commit: never before, and never
/// when it fails (issue 9: a failed or killed first load left an empty table).
@Suite struct TableCreationTests {
    /// Rows in memory whose reads fail once `failing` is set: a load that breaks part-way,
    /// after its parameters and some segment parts are committed.
    struct FailingRows: RowSource, @unchecked Sendable {   // `rows` is read, never written
        final class Switch: Sendable {
            let on = Atomic<Bool>(false)
        }
        let rows: MemoryRows
        let failing = Switch()
        var count: Int { rows.count }
        var dimension: Int { rows.dimension }

        func withRows<R>(_ range: Range<Int>, _ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R {
            if failing.on.load(ordering: .acquiring) { throw StoreError.invalidArgument("the source broke at rows \(range)") }
            return try rows.withRows(range, body)
        }

        func release() {}
    }

    /// The keys of `meta` that start with `prefix`.
    static func metaKeys(_ store: Store, prefix: String) throws -> [String] {
        try store.environment.read { txn in
            try txn.withCursor(store.meta) { cursor in
                var keys: [String] = []
                var entry = try cursor.seek(atLeast: prefix)
                while let current = entry, current.stringKey.hasPrefix(prefix) {
                    keys.append(current.stringKey)
                    entry = try cursor.next()
                }
                return keys
            }
        }
    }

    @Test func aFailingFirstLoadLeavesNoTableAndWasNeverVisible() throws {
        let directory = TemporaryDirectory()
        let store = try makeStore(directory)
        let d = 16, count = 20_000
        let rows = embeddingRows(count: count, dimension: d)
        rows.withUnsafeBufferPointer { buffer in
            let source = FailingRows(rows: MemoryRows(buffer, count: count, dimension: d))
            var options = LoadOptions()
            options.segmentPartBytes = 64 << 10   // several parts committed before the failure
            let seenMidLoad = Mutex<[String]?>(nil)
            options.progress = { progress in
                guard progress.stage == "writing" else { return }
                seenMidLoad.withLock { seen in
                    if seen == nil { seen = (try? store.tableNames()) ?? ["(error)"] }
                }
                source.failing.on.store(true, ordering: .releasing)
            }
            #expect(throws: StoreError.self) {
                try store.load(table: "t", source: source, policy: .single(.transformCoded(bitsPerValue: 2)), options: options)
            }
            #expect(seenMidLoad.withLock { $0 } == [], "the table was visible while its load ran")
        }
        #expect(try store.tableNames() == [])
        #expect(throws: StoreError.self) { try store.table("t") }
        #expect(try Self.metaKeys(store, prefix: StoreFormat.creatingKeyPrefix) == [])
        #expect(try store.verify().problems.isEmpty)
        // The name is free for the next load, of any dimension.
        let other = embeddingRows(count: 100, dimension: 8, seed: 2)
        _ = try other.withUnsafeBufferPointer { try store.load(table: "t", rows: $0, count: 100, dimension: 8, policy: .single(.int8)) }
        #expect(try store.export(try store.table("t")).ids.count == 100)
    }

    /// What a load killed after creating its table leaves: `creating/<name>` and the table's
    /// databases. Readers do not see it; the next load of the same dimension takes it over, one
    /// of another dimension replaces it; `compact` leaves it out.
    @Test func aKilledLoadsTableIsInvisibleAndTakenOver() throws {
        let directory = TemporaryDirectory()
        let store = try makeStore(directory)
        let d = 8
        let (abandoned, created) = try store.tableForLoad("t", dimension: d)
        #expect(created && abandoned.isBeingCreated)
        #expect(try store.tableNames() == [])
        #expect(throws: StoreError.self) { try store.table("t") }
        #expect(try store.verify().problems.isEmpty)

        let (again, createdAgain) = try store.tableForLoad("t", dimension: d)
        #expect(!createdAgain && again.id == abandoned.id)
        let rows = embeddingRows(count: 500, dimension: d)
        _ = try rows.withUnsafeBufferPointer { try store.load(table: "t", rows: $0, count: 500, dimension: d, policy: .single(.int8)) }
        #expect(try store.table("t").id == abandoned.id)
        #expect(try Self.metaKeys(store, prefix: StoreFormat.creatingKeyPrefix) == [])

        let (wider, _) = try store.tableForLoad("u", dimension: d)
        let (replacement, replaced) = try store.tableForLoad("u", dimension: 2 * d)
        #expect(replaced && replacement.id != wider.id)
        #expect(throws: StoreError.self) {   // the load of the replaced marker cannot publish it
            try store.write { batch in try batch.generation.publishIfBeingCreated(wider, in: batch.txn) }
        }
        // A per-key load killed after its first transaction: rows in the marked table's delta.
        // The next load must not take them over with the table.
        let (perKey, _) = try store.tableForLoad("v", dimension: d)
        try store.write { batch in try batch.put(perKey, id: 999, vector: [Float](repeating: 1, count: d), codec: .fp32) }
        _ = try rows.withUnsafeBufferPointer { try store.load(table: "v", rows: $0, count: 500, dimension: d, policy: .single(.int8)) }
        #expect(try store.table("v").id != perKey.id)
        #expect(try store.get(try store.table("v"), id: 999) == nil)
        #expect(try store.export(try store.table("v")).ids == (0..<500).map { UInt64($0) })

        let report = try store.compact(to: directory.file("compacted"))
        #expect(report.abandonedTables == 1)   // u's; v's first marker was replaced, its databases are dropped too
        let copy = try Store(path: directory.file("compacted"))
        #expect(try copy.tableNames() == ["t", "v"])
        #expect(try Self.metaKeys(copy, prefix: StoreFormat.creatingKeyPrefix) == [])
        let databases = try copy.environment.read { txn in
            try txn.withCursor(try txn.openDatabase(nil)) { cursor in
                var names: [String] = []
                var entry = try cursor.first()
                while let current = entry { names.append(current.stringKey); entry = try cursor.next() }
                return names
            }
        }
        let live = try ["t", "v"].map { try copy.table($0).id }
        let reachable = databases.filter { name in name == "meta" || live.contains { name.hasPrefix("t\($0)/") } }
        #expect(reachable == databases, "\(databases)")
        #expect(try copy.export(try copy.table("t")).values == (try store.export(try store.table("t")).values))
    }

    /// A swap leaves out a table a load is creating; the load, writing on after the swap, is told
    /// the store was swapped and to run it again (CI once saw "no table named" here instead), and
    /// the next load of the name creates it afresh.
    @Test func aLoadCreatingItsTableAcrossASwapIsToldToRunAgain() throws {
        let directory = TemporaryDirectory()
        let store = try makeStore(directory)
        let d = 8
        let (cut, created) = try store.tableForLoad("w", dimension: d)
        #expect(created)
        _ = try store.compactInPlace()
        func expectToldToRunAgain(_ body: () throws -> Void) {
            do {
                try body()
                Issue.record("a write into a table whose creation a swap cut went through")
            } catch {
                let text = "\(error)"
                #expect(text.contains("swapped to a new generation") && text.contains("table 'w'") && text.contains("run it again"), "\(text)")
            }
        }
        expectToldToRunAgain { try store.write { batch in try batch.put(cut, id: 1, vector: [Float](repeating: 1, count: d), codec: .fp32) } }
        expectToldToRunAgain { try store.write { batch in try batch.generation.publishIfBeingCreated(cut, in: batch.txn) } }
        #expect(try store.tableNames() == [])
        #expect(try Self.metaKeys(store, prefix: StoreFormat.creatingKeyPrefix) == [])
        let rows = embeddingRows(count: 300, dimension: d)
        _ = try rows.withUnsafeBufferPointer { try store.load(table: "w", rows: $0, count: 300, dimension: d, policy: .single(.int8)) }
        #expect(try store.export(try store.table("w")).ids.count == 300)
        #expect(try store.verify().problems.isEmpty)
    }
}
