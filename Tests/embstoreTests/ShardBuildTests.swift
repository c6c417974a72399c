import EmbeddingStore
import Foundation
import Testing

/// tools/shard_build.py on a local Ray cluster (pip install ray): a sharded store built by one
/// task per shard reads exactly as one store ingested from the same files, and a shard task
/// killed mid-build is run again by Ray and leaves no half-built shard.
@Suite(.serialized) struct ShardBuildTests {
    /// A 200,000 × 16 table with random 64-bit ids, written by NumPy; returns (vectors, ids).
    static func makeInput(_ directory: URL) throws -> (URL, URL) {
        let vectors = directory.appendingPathComponent("x.npy"), ids = directory.appendingPathComponent("ids.npy")
        let script = """
            import numpy as np, sys
            rng = np.random.default_rng(0)
            np.save(sys.argv[1], rng.standard_normal((200000, 16)).astype(np.float32))
            np.save(sys.argv[2], rng.choice(2**40, size=200000, replace=False).astype(np.uint64))
            """
        let run = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", script, vectors.path, ids.path])
        guard run.status == 0 else { throw TestFailure("numpy: \(run)") }
        return (vectors, ids)
    }

    static func shardBuild(_ arguments: [String], environment extra: [String: String] = [:]) throws -> Run {
        guard let binary = Tooling.embstoreBinary else { throw TestFailure("no embstore binary") }
        var environment = ProcessInfo.processInfo.environment
        environment.merge(extra) { $1 }
        environment["RAY_AUTH_MODE"] = "disabled"
        environment["RAY_USAGE_STATS_ENABLED"] = "0"
        return try runProcess(URL(fileURLWithPath: "/usr/bin/env"), [
            "python3", Tooling.repoRoot.appendingPathComponent("tools/shard_build.py").path, "--embstore", binary.path, "--cpus", "2",
        ] + arguments, environment: environment)
    }

    @Test func eightShardsOnRayReadAsOneStoreAndAKilledTaskIsRunAgain() throws {
        try withTemporaryDirectory { directory in
            let (vectors, ids) = try Self.makeInput(directory)
            // The sample the build fits every shard's parameters on, by its documented rule.
            let fit = directory.appendingPathComponent("fit.npy")
            let sample = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", """
                import numpy as np, sys
                x = np.load(sys.argv[1]); n = len(x); s = min(n, 262144)
                np.save(sys.argv[2], x[(np.arange(s, dtype=np.float64) * n / s).astype(np.int64)])
                """, vectors.path, fit.path])
            #expect(sample.status == 0, "\(sample)")
            let marker = directory.appendingPathComponent("killed-once").path
            // int8 (no parameters), and tc:2 (a tc model fitted once for every shard) with shard
            // 3's first attempt killed.
            for (name, codec, environment) in [("plain", "int8", [String: String]()), ("killed", "tc:2", ["EMBSTORE_SHARD_BUILD_CRASH": "3:" + marker])] {
                let single = directory.appendingPathComponent("single-\(name)").path
                try embstoreOK("ingest", single, "--table", "t", "--vectors", vectors.path, "--ids", ids.path, "--codec", codec,
                               "--fit-sample", fit.path, "--fit-table-rows", "200000", "--quiet")
                let expected = directory.appendingPathComponent("expected-\(name).npy"), expectedIDs = directory.appendingPathComponent("expected-ids-\(name).npy")
                try embstoreOK("export", single, "--table", "t", "--out", expected.path, "--ids-out", expectedIDs.path)
                let out = directory.appendingPathComponent("sharded-\(name)").path
                let build = try Self.shardBuild(["--shards", "8", "--out", out, "--vectors", vectors.path, "--ids", ids.path, "--codec", codec],
                                                environment: environment)
                #expect(build.status == 0, "\(name): \(build)")
                guard build.status == 0 else { continue }
                #expect(build.stderr.contains("(8/8)"), "\(name): progress per shard: \(build.stderr)")
                if name == "killed" { #expect(FileManager.default.fileExists(atPath: marker), "shard 3's first attempt did not reach the kill") }
                let entries = Set(try FileManager.default.contentsOfDirectory(atPath: out))
                #expect(entries == Set((0..<8).map { String(format: "shard-%04d", $0) } + ["shards.json"]), "\(name): \(entries)")
                let verify = try embstore("verify", out)
                #expect(verify.status == 0 && verify.stdout.contains("ok"), "\(name): \(verify)")
                let got = directory.appendingPathComponent("got-\(name).npy"), gotIDs = directory.appendingPathComponent("got-ids-\(name).npy")
                try embstoreOK("export", out, "--table", "t", "--out", got.path, "--ids-out", gotIDs.path)
                #expect(try Data(contentsOf: got) == Data(contentsOf: expected), "\(name): rows differ from the single store's")
                #expect(try Data(contentsOf: gotIDs) == Data(contentsOf: expectedIDs), "\(name): ids differ")
                let info = try embstoreOK("info", out).stdout
                #expect(info.contains("8 shard(s)") && info.contains("200000 rows"), "\(info)")
                try Self.expectSameLookups(single: single, sharded: out)
                // Growing the Ray-built store to 12 shards moves about a third of the rows (tc rows
                // with their shared parameter records), and the store reads as before.
                let grow = try embstoreOK("grow-shards", out, "--to", "12").stdout
                let moved = grow.split(separator: " ").firstIndex(of: "of").flatMap { Int(grow.split(separator: " ")[$0 - 1]) } ?? -1
                #expect(abs(Double(moved) / 200_000 - 1.0 / 3.0) < 0.01, "\(grow)")
                #expect(try embstore("verify", out).stdout.contains("ok"))
                let grown = directory.appendingPathComponent("grown-\(name).npy")
                try embstoreOK("export", out, "--table", "t", "--out", grown.path)
                #expect(try Data(contentsOf: grown) == Data(contentsOf: expected), "rows changed by the grow")
            }
        }
    }

    /// Batched lookups (with missing ids) and pooled ones (sum and mean, weighted) through the
    /// sharded store equal the single store's, bit for bit.
    static func expectSameLookups(single: String, sharded: String) throws {
        var options = Store.Options()
        options.readOnly = true
        let one = try Store(path: single, options: options), many = try ShardedStore(path: sharded, options: options)
        let table = try one.table("t"), shardedTable = try many.table("t")
        let reader = try one.makeReader(), router = try many.makeReader()
        let stored = try one.export(table).ids
        var state: UInt64 = 99
        let ids = (0..<5_000).map { i -> UInt64 in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return i % 10 == 0 ? state >> 20 : stored[Int(state >> 33) % stored.count]
        }
        var a = [Float](repeating: .nan, count: ids.count * 16), b = a
        try ids.withUnsafeBufferPointer { ids in
            try a.withUnsafeMutableBufferPointer { _ = try reader.lookup(table, ids: ids, into: $0) }
            try b.withUnsafeMutableBufferPointer { _ = try router.lookup(shardedTable, ids: ids, into: $0) }
        }
        #expect(a.map(\.bitPattern) == b.map(\.bitPattern), "batched lookups differ")
        let offsets = Array(stride(from: 0, through: ids.count, by: 25))
        let weights = (0..<ids.count).map { Float($0 % 7) * 0.5 - 1 }
        for pooling in [Pooling.sum, .mean] {
            var pa = [Float](repeating: .nan, count: (offsets.count - 1) * 16), pb = pa
            try ids.withUnsafeBufferPointer { ids in try offsets.withUnsafeBufferPointer { offsets in try weights.withUnsafeBufferPointer { w in
                try pa.withUnsafeMutableBufferPointer { _ = try reader.lookupPooled(table, ids: ids, offsets: offsets, weights: w, pooling: pooling, into: $0) }
                try pb.withUnsafeMutableBufferPointer { _ = try router.lookupPooled(shardedTable, ids: ids, offsets: offsets, weights: w, pooling: pooling, into: $0) }
            } } }
            #expect(pa.map(\.bitPattern) == pb.map(\.bitPattern), "pooled \(pooling) lookups differ")
        }
    }

    @Test func badInputIsRefusedBeforeAnyTaskRuns() throws {
        try withTemporaryDirectory { directory in
            let (vectors, _) = try Self.makeInput(directory)
            let shortIDs = directory.appendingPathComponent("short.npy")
            try writeUInt64([1, 2, 3], to: shortIDs)
            let out = directory.appendingPathComponent("out").path
            let run = try Self.shardBuild(["--shards", "2", "--out", out, "--vectors", vectors.path, "--ids", shortIDs.path, "--codec", "int8"])
            #expect(run.status != 0 && run.stderr.contains("3 entries for 200000 rows"), "\(run)")
            #expect(!FileManager.default.fileExists(atPath: out + "/shards.json"))
        }
    }
}
