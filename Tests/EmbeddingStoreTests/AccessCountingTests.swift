import Foundation
import Synchronization
import Testing
@testable import EmbeddingStore

/// Online access counting: readers count the ids they are asked for, hand them over, and a
/// flush adds them to the store's counts.
@Suite struct AccessCountingTests {
    static func store(rows count: Int, dimension d: Int) throws -> (TemporaryDirectory, Store, Table) {
        let directory = TemporaryDirectory()
        let store = try makeStore(directory)
        let rows = embeddingRows(count: count, dimension: d)
        _ = try rows.withUnsafeBufferPointer { try store.load(table: "t", rows: $0, count: count, dimension: d, policy: .single(.int8)) }
        return (directory, store, try store.table("t"))
    }

    /// Every id counted (sampleEvery 1) from two reader threads: the kept counts are exact, and
    /// a second flush adds to them.
    @Test func countsFromSeveralReadersAddUpExactly() throws {
        let (directory, store, table) = try Self.store(rows: 2_000, dimension: 8)
        let counter = AccessCounter(sampleEvery: 1)
        var random = SeededRandom(seed: 9)
        let streams = (0..<2).map { _ in (0..<5_000).map { _ in UInt64(random.next() % 2_500) } }   // some ids missing
        var expected: [UInt64: UInt64] = [:]
        for stream in streams { for id in stream { expected[id, default: 0] += 1 } }
        for _ in 0..<2 {
            DispatchQueue.concurrentPerform(iterations: 2) { t in
                do {
                    let reader = try store.makeReader()
                    reader.counter = counter
                    for start in stride(from: 0, to: 5_000, by: 100) {
                        _ = try reader.lookup(table, ids: Array(streams[t][start..<start + 100]))
                    }
                } catch { Issue.record(error) }
            }   // the readers hand over as they go
            try counter.flush(to: store)
        }
        let kept = try store.accessCounts(table)
        #expect(kept == expected.mapValues { 2 * $0 })
        // The counts database's pages belong to its table in the store's page accounting.
        #expect(try store.environmentStatistics().unaccountedPages == 0)
        withExtendedLifetime(directory) {}
    }

    /// Sampling one id in four: the kept total is the number of ids asked for, to within the
    /// stride, and each count is a multiple of four.
    @Test func aSampledCountStandsForItsStride() throws {
        let (directory, store, table) = try Self.store(rows: 1_000, dimension: 8)
        let counter = AccessCounter(sampleEvery: 4)
        do {
            let reader = try store.makeReader()
            reader.counter = counter
            for batch in 0..<37 { _ = try reader.lookup(table, ids: (0..<51).map { UInt64((batch * 51 + $0) % 1_000) }) }
        }
        try counter.flush(to: store)
        let kept = try store.accessCounts(table)
        let total = kept.values.reduce(0, +)
        #expect(abs(Int(total) - 37 * 51) < 4, "\(total)")
        #expect(kept.values.allSatisfy { $0 % 4 == 0 })
        withExtendedLifetime(directory) {}
    }

    /// A reader that keeps serving hands its counts over at its next lookup after a request,
    /// and the flush timer writes them; dropping the table drops its counts.
    @Test func handoverOnRequestAndTheFlushTimer() throws {
        let (directory, store, table) = try Self.store(rows: 500, dimension: 8)
        let counter = AccessCounter(sampleEvery: 1)
        let reader = try store.makeReader()
        reader.counter = counter
        _ = try reader.lookup(table, ids: [1, 2, 3])
        #expect(counter.pendingCounts.isEmpty, "counts stay with the reader until asked for")
        counter.requestHandover()
        _ = try reader.lookup(table, ids: [3])
        #expect(counter.pendingCounts[table.id] == [1: 1, 2: 1, 3: 2])
        let timer = counter.startFlushing(to: store, every: 0.01)
        _ = try reader.lookup(table, ids: [4])
        reader.counter = nil   // hands the last counts over
        timer.stop()           // one last flush
        #expect(try store.accessCounts(table) == [1: 1, 2: 1, 3: 2, 4: 1])
        try store.dropTable("t")
        let again = try store.createTable("t", dimension: 8)
        #expect(try store.accessCounts(again).isEmpty)
        withExtendedLifetime(directory) {}
    }
}
