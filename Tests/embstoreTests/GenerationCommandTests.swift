import Foundation
import Synchronization
import Testing

/// `compact --in-place` through real processes: the path opens and reads at every instant of a
/// swap, writers in other processes are redirected or told clearly, a killed swap leaves the
/// complete old store or the complete new one, and every command works on both layouts.
@Suite struct GenerationCommandTests {
    /// Ingests a 2,000 × 8 table `t` twice (a shadowed segment to compact away); returns its rows.
    static func makeStore(_ directory: URL) throws -> (store: String, vectors: URL) {
        let rows = (0..<2_000).map { i in (0..<8).map { Float(i % 997) + 0.25 * Float($0) } }
        let vectors = directory.appendingPathComponent("v.npy")
        try writeFloat32(rows, to: vectors)
        let store = directory.appendingPathComponent("store").path
        for _ in 0..<2 { try embstoreOK("ingest", store, "--table", "t", "--vectors", vectors.path, "--codec", "fp32", "--quiet") }
        return (store, vectors)
    }

    static func entries(_ path: String) -> Set<String> {
        Set((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [])
    }

    @Test func everyCommandWorksOnAPlainStoreAndAfterCompactInPlace() throws {
        try withTemporaryDirectory { directory in
            let (store, vectors) = try Self.makeStore(directory)
            let before = try embstoreOK("export", store, "--table", "t", "--out", directory.appendingPathComponent("a.npy").path)
            #expect(!Self.entries(store).contains("CURRENT"))
            let run = try embstoreOK("compact", store, "--in-place")
            #expect(run.stdout.contains("plain store") && run.stdout.contains("-> gen-000001") && run.stdout.contains("verified"))
            #expect(Self.entries(store) == ["CURRENT", "gen-000001"])
            try embstoreOK("export", store, "--table", "t", "--out", directory.appendingPathComponent("b.npy").path)
            #expect(try Data(contentsOf: directory.appendingPathComponent("a.npy")) == Data(contentsOf: directory.appendingPathComponent("b.npy")))
            #expect(before.status == 0)
            #expect(try embstoreOK("info", store).stdout.contains("gen-000001/data.mdb"))
            #expect(try embstoreOK("get", store, "--table", "t", "3").stdout.hasPrefix("3: 3.0 3.25"))
            #expect(try embstoreOK("verify", store).stdout.contains("ok"))
            try embstoreOK("stats", store)
            try embstoreOK("ingest", store, "--table", "u", "--vectors", vectors.path, "--codec", "int8", "--quiet")
            try embstoreOK("compact", store, "--out", directory.appendingPathComponent("copy").path)
            #expect(Self.entries(directory.appendingPathComponent("copy").path).contains("data.mdb"))   // --out writes a plain store
            let second = try embstoreOK("compact", store, "--in-place")
            #expect(second.stdout.contains("gen-000001") && second.stdout.contains("-> gen-000002") && second.stdout.contains("removed gen-000001"))
            #expect(Self.entries(store) == ["CURRENT", "gen-000002"])
            let bad = try embstore("compact", store)
            #expect(bad.status != 0 && bad.stderr.contains("--in-place"))
        }
    }

    @Test func thePathOpensAndReadsAtEveryInstantOfSwapsInAnotherProcess() throws {
        try withTemporaryDirectory { directory in
            let (store, _) = try Self.makeStore(directory)
            guard let binary = Tooling.embstoreBinary else { throw TestFailure("no embstore binary") }
            // A process that opens the store and reads rows 5 and 1999 over and over until told
            // to stop, counting its reads and writing down any that fail or differ.
            let stop = directory.appendingPathComponent("stop").path
            let count = directory.appendingPathComponent("count").path
            let failures = directory.appendingPathComponent("failures").path
            let script = """
                while [ ! -e '\(stop)' ]; do
                  out=$('\(binary.path)' get '\(store)' --table t 5 1999 2>&1)
                  [ "$out" = "$(printf '5: 5.0 5.25 5.5 5.75 6.0 6.25 6.5 6.75\\n1999: 5.0 5.25 5.5 5.75 6.0 6.25 6.5 6.75')" ] || echo "$out" >> '\(failures)'
                  echo >> '\(count)'
                done
                """
            let reader = Process()
            reader.executableURL = URL(fileURLWithPath: "/bin/sh")
            reader.arguments = ["-c", script]
            try reader.run()
            defer {
                _ = FileManager.default.createFile(atPath: stop, contents: nil)
                reader.waitUntilExit()
            }
            func reads() -> Int { ((try? Data(contentsOf: URL(fileURLWithPath: count)))?.count) ?? 0 }
            for _ in 0..<5 {
                let seen = reads()
                let deadline = ContinuousClock.now.advanced(by: .seconds(600))   // deadlock guard only
                while reads() < seen + 2 && ContinuousClock.now < deadline { usleep(1_000) }   // gives the reader process a chance
                try embstoreOK("compact", store, "--in-place")
            }
            _ = FileManager.default.createFile(atPath: stop, contents: nil)
            reader.waitUntilExit()
            #expect(reads() >= 10)
            let failed = (try? String(contentsOfFile: failures, encoding: .utf8)) ?? ""
            #expect(failed.isEmpty, "\(failed.prefix(2_000))")
        }
    }

    @Test func writerProcessesDuringSwapsAreRedirectedOrToldAndLoseNothing() throws {
        try withTemporaryDirectory { directory in
            let (store, vectors) = try Self.makeStore(directory)
            // Six loads of new tables in other processes, while this one swaps the store three
            // times: each either commits (and its table is in the final store, whole) or fails
            // saying the store was swapped.
            let runs = Mutex<[Run]>([])
            let group = DispatchGroup()
            for load in 0..<6 {
                DispatchQueue.global().async(group: group) {
                    let run = (try? embstore("ingest", store, "--table", "w\(load)", "--vectors", vectors.path, "--codec", "int8", "--quiet"))
                        ?? Run(status: -1, stdout: "", stderr: "did not run")
                    runs.withLock { $0.append(run) }
                }
            }
            for _ in 0..<3 { try embstoreOK("compact", store, "--in-place") }
            group.wait()
            let info = try embstoreOK("info", store).stdout
            for (load, run) in runs.withLock({ $0 }).enumerated() {
                if run.status == 0 {
                    let name = run.stdout.split(separator: "'").dropFirst().first.map(String.init) ?? "?"
                    #expect(info.contains("table '\(name)': dimension 8, 2000 rows"), "\(run)")
                } else {
                    #expect(run.stderr.contains("swapped to a new generation") && run.stderr.contains("run it again"), "load \(load): \(run)")
                }
            }
            #expect(try embstoreOK("verify", store).stdout.contains("ok"))
        }
    }

    @Test func aKilledSwapLeavesTheCompleteOldStoreOrTheCompleteNewOne() throws {
        try withTemporaryDirectory { directory in
            let (store, _) = try Self.makeStore(directory)
            guard let binary = Tooling.embstoreBinary else { throw TestFailure("no embstore binary") }
            let expected = directory.appendingPathComponent("expected.npy")
            try embstoreOK("export", store, "--table", "t", "--out", expected.path)
            // Kill points spread over a whole swap: how long one takes here, uninterrupted.
            let started = ContinuousClock.now
            try embstoreOK("compact", store, "--in-place")
            let swapMicroseconds = (ContinuousClock.now - started).components
            let span = UInt32(min(2_000_000, Int(swapMicroseconds.seconds) * 1_000_000 + Int(swapMicroseconds.attoseconds / 1_000_000_000_000))) * 13 / 10
            var random = SystemRandomNumberGenerator()
            var outcomes: [String: Int] = [:]
            for trial in 0..<16 {
                let swap = Process()
                swap.executableURL = binary
                swap.arguments = ["compact", store, "--in-place"]
                swap.standardOutput = FileHandle.nullDevice
                swap.standardError = FileHandle.nullDevice
                try swap.run()
                usleep(UInt32.random(in: 0..<max(span, 1), using: &random))   // where to kill it, not synchronisation
                kill(swap.processIdentifier, SIGKILL)
                swap.waitUntilExit()
                let generation = (try? String(contentsOfFile: store + "/CURRENT", encoding: .utf8)) ?? "plain"
                outcomes[swap.terminationReason == .uncaughtSignal ? "killed" : "finished", default: 0] += 1
                let exported = directory.appendingPathComponent("after-\(trial).npy")
                try embstoreOK("export", store, "--table", "t", "--out", exported.path)
                #expect(try Data(contentsOf: exported) == Data(contentsOf: expected), "trial \(trial), \(generation)")
                #expect(try embstoreOK("verify", store).stdout.contains("ok"))
            }
            // What the killed swaps left is removed by the next one.
            try embstoreOK("compact", store, "--in-place")
            let left = Self.entries(store)
            #expect(left.count == 2 && left.contains("CURRENT"), "\(left) after \(outcomes)")
        }
    }
}
