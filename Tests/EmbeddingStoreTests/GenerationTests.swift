import Foundation
import Synchronization
import Testing
@testable import EmbeddingStore
@testable import LMDB

/// Generations behind a pointer (FORMAT.md, "Generations"): `compactInPlace`,
/// `installGeneration`, writers after a swap, readers moving at a batch boundary.
@Suite struct GenerationTests {
    /// Rows whose every value says which row and which generation it is: row `id` of generation
    /// `g` holds `rowValue(id, j) + offset(g)`, exactly (small integers and halves in fp32).
    static let d = 8
    static func rowValue(_ id: UInt64, _ j: Int) -> Float { Float(id % 1000) + 0.5 * Float(j) }
    static func offset(_ generation: Int) -> Float { 2000 * Float(generation) }

    static func rows(count: Int, generation: Int) -> [Float] {
        (0..<count * d).map { rowValue(UInt64($0 / d), $0 % d) + offset(generation) }
    }

    /// Loads `count` such rows of generation `generation` into table `t` of `store` as fp32.
    static func load(_ store: Store, count: Int, generation: Int) throws {
        let rows = rows(count: count, generation: generation)
        _ = try rows.withUnsafeBufferPointer { try store.load(table: "t", rows: $0, count: count, dimension: d, codec: .fp32) }
    }

    /// The generation a looked-up row belongs to, or nil when it is not one of ours.
    static func generation(of row: ArraySlice<Float>, id: UInt64) -> Int? {
        let g = (row[row.startIndex] - rowValue(id, 0)) / offset(1)
        guard g >= 0, g == g.rounded(), row.indices.allSatisfy({ row[$0] == rowValue(id, $0 - row.startIndex) + offset(Int(g)) }) else {
            return nil
        }
        return Int(g)
    }

    /// A store `store` in `directory` with `count` rows of generation 0 in table `t`; its path.
    static func loadedStore(_ directory: TemporaryDirectory, count: Int) throws -> (path: String, store: Store) {
        let store = try makeStore(directory)
        try load(store, count: count, generation: 0)
        return (directory.file("store"), store)
    }

    /// Row `id` of table `t` as a store newly opened at `path` reads it.
    static func freshRow(_ path: String, _ id: UInt64) throws -> [Float]? {
        let store = try Store(path: path)
        return try store.get(try store.table("t"), id: id)
    }

    static func entries(_ directory: String) -> Set<String> {
        Set((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
    }

    // MARK: - compact in place

    @Test func compactInPlaceKeepsTheContentAndReportsItsBytes() throws {
        let directory = TemporaryDirectory()
        let store = try makeStore(directory)
        for _ in 0..<6 { try Self.load(store, count: 3_000, generation: 0) }   // five shadowed segments
        try store.put(try store.table("t"), id: 7, vector: (0..<Self.d).map { Float($0) }, codec: .fp16)
        let before = try store.export(try store.table("t"))
        let path = directory.file("store")
        #expect(!FileManager.default.fileExists(atPath: path + "/CURRENT"))   // a plain store stays plain until swapped

        let first = try store.compactInPlace()
        #expect(first.previous == nil && first.current == "gen-000001")
        #expect(first.bytesBefore > 2 * first.bytesAfter, "\(first.bytesBefore) -> \(first.bytesAfter)")
        #expect(first.bytesAfter == store.fileSize && store.generationName == "gen-000001")
        #expect(try String(contentsOfFile: path + "/CURRENT", encoding: .utf8) == "gen-000001\n")
        #expect(try store.export(try store.table("t")).values == before.values)
        #expect(try store.export(try store.table("t")).ids == before.ids)

        let second = try store.compactInPlace()
        #expect(second.previous == "gen-000001" && second.current == "gen-000002")
        _ = try store.removeRetiredGenerations()
        // Nothing of the plain store or of generation 1 is left: no process has them open.
        #expect(Self.entries(path) == ["CURRENT", "gen-000002"])
        #expect(Self.entries(path + "/gen-000002").isSubset(of: ["data.mdb", "lock.mdb"]))

        var readOnly = Store.Options()
        readOnly.readOnly = true
        let reopened = try Store(path: path, options: readOnly)
        #expect(reopened.generationName == "gen-000002")
        #expect(try reopened.export(try reopened.table("t")).values == before.values)
        #expect(try reopened.verify().problems.isEmpty)
    }

    @Test func thePathOpensAtEveryInstantOfASwap() throws {
        let directory = TemporaryDirectory()
        let (path, store) = try Self.loadedStore(directory, count: 500)
        let opened = Atomic<Int>(0), failures = Mutex<[String]>([]), stop = Atomic<Bool>(false)
        let opener = Thread {
            var readOnly = Store.Options()
            readOnly.readOnly = true
            while !stop.load(ordering: .acquiring) {
                do {
                    let reader = try Store(path: path, options: readOnly)
                    let rows = try reader.makeReader().lookup(try reader.table("t"), ids: [0, 499], missing: .error)
                    if Self.generation(of: rows[0..<Self.d], id: 0) != 0 || Self.generation(of: rows[Self.d...], id: 499) != 0 {
                        failures.withLock { $0.append("wrong rows \(rows)") }
                    }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
                opened.add(1, ordering: .releasing)
            }
        }
        opener.start()
        defer { stop.store(true, ordering: .releasing) }
        for _ in 0..<8 {
            try store.compactInPlace()
            let seen = opened.load(ordering: .acquiring)
            // Deadlock guard only: the opener runs while this thread waits.
            let deadline = ContinuousClock.now.advanced(by: .seconds(600))
            while opened.load(ordering: .acquiring) < seen + 2 && ContinuousClock.now < deadline { usleep(100) }   // gives the opener a chance
        }
        stop.store(true, ordering: .releasing)
        #expect(failures.withLock { $0 } == [])
        #expect(opened.load(ordering: .acquiring) >= 16)
    }

    @Test func leftoversOfASwapThatDiedAreRemovedAndNeverReused() throws {
        let directory = TemporaryDirectory()
        let (path, store) = try Self.loadedStore(directory, count: 100)
        try store.compactInPlace()
        // A swap killed while staging, one killed after publishing its generation, and one killed
        // while writing the pointer's new content.
        try FileManager.default.createDirectory(atPath: path + "/gen-000004.staging", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: path + "/gen-000005.staging.compacting-99", withIntermediateDirectories: true)
        try store.compact(to: path + "/gen-000007")
        try "gen-0000".write(toFile: path + "/CURRENT.tmp", atomically: false, encoding: .utf8)
        #expect(try Store(path: path).generationName == "gen-000001")   // none of it is opened
        let report = try store.compactInPlace()
        #expect(report.current == "gen-000008")
        #expect(Self.entries(path) == ["CURRENT", "gen-000008"])
    }

    /// What in-place repacks killed part-way left in the store directory (`repack-<pid>`,
    /// `repack-<pid>.repacking-<pid>`, …) goes with the next swap once their process has ended;
    /// a repack still running keeps its directories, and other names are left alone.
    @Test func aSwapRemovesWhatRepacksThatEndedLeftAndKeepsARunningOnes() throws {
        let directory = TemporaryDirectory()
        let (path, store) = try Self.loadedStore(directory, count: 100)
        try store.compactInPlace()
        let ended = Process()
        ended.executableURL = URL(fileURLWithPath: "/bin/true")
        try ended.run()
        ended.waitUntilExit()
        let dead = ended.processIdentifier, running = getpid()
        let kept = ["repack-\(running)", "repack-\(running).repacking-\(running)", "repack-notes"]
        for name in ["repack-\(dead)", "repack-\(dead).repacking-\(dead)", "repack-\(dead).repacked-\(dead)"] + kept {
            try FileManager.default.createDirectory(atPath: path + "/" + name, withIntermediateDirectories: true)
        }
        #expect(try store.compactInPlace().current == "gen-000002")
        #expect(Self.entries(path) == Set(["CURRENT", "gen-000002"] + kept))
    }

    // MARK: - Writers

    @Test func aWriteThroughAHandleFromBeforeASwapGoesToTheNewGeneration() throws {
        let directory = TemporaryDirectory()
        let (path, writer) = try Self.loadedStore(directory, count: 100)
        let table = try writer.table("t")
        let swapper = try Store(path: path)
        try swapper.compactInPlace()
        #expect(writer.generationName == nil)   // it has not looked yet
        // The old generation says it was retired (in the transaction that held it still).
        let old = writer.generation
        let marked = try old.environment.read { txn in
            try old.withMetaRecord(StoreFormat.retiredKey, in: txn) { $0.map { String(decoding: $0, as: UTF8.self) } }   // sealed
        }
        #expect(marked == "gen-000001")
        try writer.put(table, id: 1_000, vector: [Float](repeating: 3, count: Self.d), codec: .fp32)
        #expect(writer.generationName == "gen-000001")
        #expect(try Self.freshRow(path, 1_000) == [Float](repeating: 3, count: Self.d))
    }

    @Test func aSwapKilledBeforeMarkingTheOldGenerationStillTurnsItsWritersAway() throws {
        let directory = TemporaryDirectory()
        let (path, writer) = try Self.loadedStore(directory, count: 100)
        let table = try writer.table("t")
        // What a swap leaves when killed right after the pointer moved: no `retired` record.
        try writer.compact(to: path + "/gen-000003")   // a closed environment: data.mdb alone
        try GenerationDirectory(root: path).writePointer("gen-000003")
        try writer.put(table, id: 5_000, vector: [Float](repeating: 1, count: Self.d), codec: .fp32)
        #expect(writer.generationName == "gen-000003")
        #expect(try Self.freshRow(path, 5_000) == [Float](repeating: 1, count: Self.d))
    }

    @Test func aSegmentLoadCutByASwapFailsClearlyAndNothingCommittedIsLost() throws {
        let directory = TemporaryDirectory()
        let (path, writer) = try Self.loadedStore(directory, count: 100)
        let swapper = try Store(path: path)
        // The load writes a part, then the swap happens, then the load commits its segment.
        var options = LoadOptions()
        options.segmentPartBytes = 1 << 10
        let rows = Self.rows(count: 2_000, generation: 1)
        let swapped = Atomic<Bool>(false)
        options.progress = { progress in
            if progress.stage == "writing", !swapped.exchange(true, ordering: .acquiringAndReleasing) { _ = try? swapper.compactInPlace() }
        }
        #expect {
            try rows.withUnsafeBufferPointer { try writer.load(table: "u", rows: $0, count: 2_000, dimension: Self.d, codec: .fp32, options: options) }
        } throws: { error in
            guard case StoreError.generationRetired = error else { return false }
            return "\(error)".contains("run it again")
        }
        let didSwap = swapped.load(ordering: .acquiring)
        #expect(didSwap)
        // Run again, it lands in the new generation; the rows committed before are all there.
        try rows.withUnsafeBufferPointer { _ = try writer.load(table: "u", rows: $0, count: 2_000, dimension: Self.d, codec: .fp32) }
        let fresh = try Store(path: path)
        #expect(fresh.generationName == "gen-000001")
        #expect(try fresh.export(try fresh.table("u")).values == rows)
        #expect(try fresh.export(try fresh.table("t")).values == Self.rows(count: 100, generation: 0))
    }

    @Test func writesDuringSwapsAreAllKept() throws {
        let directory = TemporaryDirectory()
        let (path, writer) = try Self.loadedStore(directory, count: 100)
        let swapper = try Store(path: path)
        let table = try writer.table("t")
        let committed = Atomic<Int>(0), stop = Atomic<Bool>(false), failures = Mutex<[String]>([])
        let finished = DispatchSemaphore(value: 0)
        Thread {
            var id: UInt64 = 10_000
            while !stop.load(ordering: .acquiring) {
                do {
                    try writer.put(table, id: id, vector: (0..<Self.d).map { Self.rowValue(id, $0) }, codec: .fp32)
                    committed.store(Int(id - 10_000) + 1, ordering: .releasing)
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
                id += 1
            }
            finished.signal()
        }.start()
        for _ in 0..<6 {
            let seen = committed.load(ordering: .acquiring)
            let deadline = ContinuousClock.now.advanced(by: .seconds(600))   // deadlock guard only
            while committed.load(ordering: .acquiring) < seen + 3 && ContinuousClock.now < deadline { usleep(100) }   // gives the writer a chance
            try swapper.compactInPlace()
        }
        stop.store(true, ordering: .releasing)
        #expect(finished.wait(timeout: .now() + 600) == .success)   // deadlock guard only
        let last = committed.load(ordering: .acquiring)
        #expect(failures.withLock { $0 } == [])
        let fresh = try Store(path: path)
        #expect(fresh.generationName == "gen-000006")
        let rows = try fresh.export(try fresh.table("t"))
        let written = Set(rows.ids.filter { $0 >= 10_000 })
        #expect(last >= 18 && written == Set((0..<UInt64(last)).map { 10_000 + $0 }))
    }

    // MARK: - Installing

    @Test func installGenerationSwapsInAStagedEnvironmentAndRefusesAStaleOne() throws {
        let directory = TemporaryDirectory()
        let (path, store) = try Self.loadedStore(directory, count: 200)
        let version = try store.version()
        #expect(version.generation == nil)
        let staging = path + "/gen-repack.staging"   // anywhere on the store's file system
        do {
            let staged = try Store(path: staging)
            try Self.load(staged, count: 200, generation: 1)
            staged.close()
        }
        try store.put(try store.table("t"), id: 9_999, vector: [Float](repeating: 0, count: Self.d), codec: .fp32)
        #expect(throws: StoreError.self) { try store.installGeneration(at: staging, expecting: version) }
        let report = try Store.installGeneration(at: staging, into: path, expecting: try store.version())
        #expect(report.previous == nil && report.current == "gen-000001")
        #expect(!FileManager.default.fileExists(atPath: staging))
        let fresh = try Store(path: path)
        let rows = try fresh.makeReader().lookup(try fresh.table("t"), ids: [0, 199])
        #expect(Self.generation(of: rows[0..<Self.d], id: 0) == 1 && Self.generation(of: rows[Self.d...], id: 199) == 1)
        // An environment still open is refused.
        let open = try Store(path: directory.file("open"))
        try Self.load(open, count: 10, generation: 2)
        #expect(throws: StoreError.self) { try store.installGeneration(at: directory.file("open")) }
    }

    // MARK: - Hot swap

    /// Reader threads look up batches in a loop, each row checked against its generation, while
    /// another handle installs three new generations: no lookup fails, no batch mixes
    /// generations, every reader reaches the last one, and the old environments close.
    @Test func readersMoveToEachNewGenerationAtABatchBoundary() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("store")
        let count = 2_000
        let store = try makeStore(directory)
        try Self.load(store, count: count, generation: 0)
        let table = try store.table("t")
        let pool = ReaderPool(store: store, capacity: 2)
        let swapper = try Store(path: path)
        let generations = 3
        let threads = 4
        struct Tally { var batches = 0, failed = 0, mixed = 0, wrong = 0, newest = 0, errors: [String] = [] }
        let tallies = Locked<[Tally]>(Array(repeating: Tally(), count: threads))   // not a Mutex: TSan runs this
        let lowest = Atomic<Int>(0)   // the newest generation every thread has read
        let finished = DispatchSemaphore(value: 0)
        for thread in 0..<threads {
            Thread {
                var random = SeededRandom(seed: UInt64(thread) + 1)
                // Half the threads use a reader of their own, half the pool's. (An idle reader would
                // keep its generation open until its next batch.)
                let own = thread % 2 == 0 ? try? store.makeReader() : nil
                var tally = Tally()
                while tally.newest < generations {
                    let ids = (0..<64).map { _ in random.next() % UInt64(count) }
                    do {
                        let rows = try thread % 2 == 0 ? own!.lookup(table, ids: ids, missing: .error)
                                                       : pool.withReader { try $0.lookup(table, ids: ids, missing: .error) }
                        let seen = Set(ids.indices.map { Self.generation(of: rows[$0 * Self.d..<($0 + 1) * Self.d], id: ids[$0]) })
                        if seen.contains(nil) { tally.wrong += 1 } else if seen.count > 1 { tally.mixed += 1 }
                        if seen.count == 1, let g = seen.first!, g > tally.newest {
                            tally.newest = g
                            tallies.withLock { $0[thread].newest = g }
                            let everyone = tallies.withLock { $0.map(\.newest).min()! }
                            lowest.store(everyone, ordering: .releasing)
                        }
                    } catch {
                        tally.failed += 1
                        tally.errors.append("\(error)")
                    }
                    tally.batches += 1
                }
                let final = tally
                tallies.withLock { $0[thread] = final }
                finished.signal()
            }.start()
        }
        for generation in 1...generations {
            let staging = path + "/staged-\(generation)"
            do {
                let staged = try Store(path: staging)
                try Self.load(staged, count: count, generation: generation)
                staged.close()
            }
            // Every reader is reading generation - 1 when the next one goes in.
            let deadline = ContinuousClock.now.advanced(by: .seconds(600))   // deadlock guard only
            while lowest.load(ordering: .acquiring) < generation - 1 && ContinuousClock.now < deadline { usleep(200) }   // gives the readers a chance
            try swapper.installGeneration(at: staging)
        }
        for _ in 0..<threads { #expect(finished.wait(timeout: .now() + 600) == .success) }   // deadlock guard only
        let result = tallies.withLock { $0 }
        for tally in result {
            #expect(tally.failed == 0, "\(tally.errors.prefix(3))")
            #expect(tally.mixed == 0 && tally.wrong == 0)
            #expect(tally.newest == generations)
        }
        // The readers (and the store) let go of the old generations: nothing keeps them open.
        #expect(store.generationName == "gen-000003")
        let removal = try swapper.removeRetiredGenerations()
        #expect(Self.entries(path) == ["CURRENT", "gen-000003"], "\(removal)")
    }

    /// The embstore executable built beside this test bundle, or nil.
    static let embstoreBinary: String? = {
        let candidate = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("embstore").path
        return FileManager.default.isExecutableFile(atPath: candidate) ? candidate : nil
    }()

    /// A serving process (this one) reads while another process runs `embstore compact
    /// --in-place`: no lookup fails or reads a wrong row, the readers move (the store notices the
    /// pointer itself), and once they have, this process's release lets the old environment go.
    @Test(.enabled(if: embstoreBinary != nil, "the embstore executable is not built beside the tests"))
    func aServingStoreFollowsASwapMadeByAnotherProcess() throws {
        let directory = TemporaryDirectory()
        let (path, store) = try Self.loadedStore(directory, count: 1_000)
        let table = try store.table("t")
        let failures = Mutex<[String]>([]), done = DispatchSemaphore(value: 0)
        for thread in 0..<2 {
            Thread {
                var random = SeededRandom(seed: UInt64(thread) + 7)
                var afterMove = 0
                do {
                    let reader = try store.makeReader()
                    while afterMove < 3 {
                        let ids = (0..<64).map { _ in random.next() % 1_000 }
                        let rows = try reader.lookup(table, ids: ids, missing: .error)
                        if ids.indices.contains(where: { Self.generation(of: rows[$0 * Self.d..<($0 + 1) * Self.d], id: ids[$0]) != 0 }) {
                            failures.withLock { $0.append("wrong rows") }
                        }
                        if store.generationName == "gen-000001" && reader.isOnCurrentGeneration { afterMove += 1 }
                    }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
                done.signal()
            }.start()
        }
        let swap = Process()
        swap.executableURL = URL(fileURLWithPath: Self.embstoreBinary!)
        swap.arguments = ["compact", path, "--in-place"]
        swap.standardOutput = FileHandle.nullDevice
        try swap.run()
        swap.waitUntilExit()
        #expect(swap.terminationStatus == 0)
        for _ in 0..<2 { #expect(done.wait(timeout: .now() + 600) == .success) }   // deadlock guard only
        #expect(failures.withLock { $0 } == [])
        _ = try store.removeRetiredGenerations()
        #expect(Self.entries(path) == ["CURRENT", "gen-000001"])
    }

    @Test func aReaderLetsGoOfTheOldEnvironmentAtItsNextBatch() throws {
        let directory = TemporaryDirectory()
        let store = try makeStore(directory)
        try Self.load(store, count: 10, generation: 0)
        let table = try store.table("t")
        let reader = try store.makeReader()
        _ = try reader.lookup(table, ids: [1])
        weak let old = reader.generation.environment
        try store.compactInPlace()
        #expect(old != nil)   // the reader still holds it: no batch since
        #expect(!reader.isOnCurrentGeneration)
        _ = try reader.lookup(table, ids: [1])
        #expect(reader.isOnCurrentGeneration)
        #expect(old == nil || old!.isClosed)
    }
}
