import Foundation
import Testing

/// What `ingest` accepts and refuses. These tests make their .npy files themselves (no numpy
/// needed) and read exports back with the small reader in Support.swift.
@Suite("ingest refuses bad input and accepts sparse ids")
struct IngestValidationTests {
    @Test func sparseInt64IDs() throws {
        try withTemporaryDirectory { dir in
            let rows = randomRows(6, 5, seed: 2)
            let ids: [Int64] = [900, 3, 1 << 40, 77, 0, 12_345_678_901]
            let vectors = dir.appendingPathComponent("x.npy"), idsFile = dir.appendingPathComponent("ids.npy")
            try writeFloat32(rows, to: vectors)
            try writeInt64(ids, to: idsFile)
            let store = dir.appendingPathComponent("store")
            try embstoreOK("ingest", store.path, "--table", "sparse", "--vectors", vectors.path, "--ids", idsFile.path, "--codec", "fp32")
            let exported = try exportTable(store, "sparse", in: dir)
            let expected = zip(ids, rows).sorted { $0.0 < $1.0 }
            #expect(exported.ids == expected.map { UInt64($0.0) })
            #expect(exported.rows == expected.map(\.1))
        }
    }

    @Test func uint64IDsAndFloat16Vectors() throws {
        try withTemporaryDirectory { dir in
            // float16 input: 1.5, -2, 0.25 and 65504 (the largest half) are exact in fp16 and fp32.
            let halves: [UInt16] = [0x3E00, 0xC000, 0x3400, 0x7BFF]
            let vectors = dir.appendingPathComponent("h.npy"), idsFile = dir.appendingPathComponent("ids.npy")
            try npyFile(descr: "<f2", shape: [2, 2], payload: littleEndianBytes(halves)).write(to: vectors)
            try writeUInt64([UInt64.max - 1, 5], to: idsFile)
            let store = dir.appendingPathComponent("store")
            try embstoreOK("ingest", store.path, "--table", "h", "--vectors", vectors.path, "--ids", idsFile.path, "--codec", "fp16")
            let exported = try exportTable(store, "h", in: dir)
            #expect(exported.ids == [5, UInt64.max - 1])
            #expect(exported.rows == [[0.25, 65504], [1.5, -2]])
        }
    }

    /// Each bad ids file: non-zero exit, a message naming the bad id (or the counts) and what is
    /// wrong with it (any of `problem`), and no table created.
    @Test(arguments: [
        ("negative", [4, -1, 7], ["-1"], ["negative"]),
        ("duplicate", [4, 9, 4], ["4"], ["duplicate", "twice", "more than once", "repeated"]),
        ("count", [1, 2], ["2 ids", "3 rows"], ["ids"]),
    ] as [(String, [Int64], [String], [String])])
    func badIDs(_ kind: String, _ ids: [Int64], _ words: [String], _ problem: [String]) throws {
        try withTemporaryDirectory { dir in
            let vectors = dir.appendingPathComponent("x.npy"), idsFile = dir.appendingPathComponent("ids.npy")
            try writeFloat32(randomRows(3, 4, seed: 3), to: vectors)
            try writeInt64(ids, to: idsFile)
            let store = dir.appendingPathComponent("store")
            try embstoreOK("ingest", store.path, "--table", "keep", "--vectors", vectors.path, "--codec", "fp32")
            let run = try embstore("ingest", store.path, "--table", "t", "--vectors", vectors.path, "--ids", idsFile.path, "--codec", "fp32")
            #expect(run.status != 0, "\(kind) ids were accepted: \(run)")
            for word in words {
                #expect(run.stderr.localizedCaseInsensitiveContains(word), "\(kind): stderr should mention '\(word)': \(run)")
            }
            #expect(problem.contains { run.stderr.localizedCaseInsensitiveContains($0) },
                    "\(kind): stderr should say what is wrong (one of \(problem)): \(run)")
            let info = try embstoreOK("info", store.path)
            #expect(!info.stdout.contains("table 't'"), "\(kind): table t exists after a refused ingest: \(info.stdout)")
        }
    }

    /// A NaN in row 3 is refused naming row 3, and nothing is written: not into an existing
    /// table, and a table that did not exist is not created.
    @Test func nanRowIsRefusedAndStoreUnchanged() throws {
        try withTemporaryDirectory { dir in
            let store = dir.appendingPathComponent("store")
            let good = dir.appendingPathComponent("good.npy"), bad = dir.appendingPathComponent("bad.npy")
            try writeFloat32(randomRows(5, 4, seed: 4), to: good)
            var rows = randomRows(6, 4, seed: 5)
            rows[3][2] = .nan
            try writeFloat32(rows, to: bad)
            let ids = dir.appendingPathComponent("ids.npy")
            try writeUInt64([100, 101, 102, 103, 104, 1], to: ids)   // id 1 overlaps an existing row
            try embstoreOK("ingest", store.path, "--table", "t", "--vectors", good.path, "--codec", "int8")
            let before = try exportTable(store, "t", in: dir)

            let intoExisting = try embstore("ingest", store.path, "--table", "t", "--vectors", bad.path, "--ids", ids.path, "--codec", "int8")
            #expect(intoExisting.status != 0, "\(intoExisting)")
            #expect(intoExisting.stderr.contains("row 3"), "stderr should name row 3: \(intoExisting)")
            #expect(intoExisting.stderr.localizedCaseInsensitiveContains("nan"), "\(intoExisting)")
            let after = try exportTable(store, "t", in: dir)
            #expect(after.ids == before.ids)
            #expect(after.rows == before.rows)

            let intoNew = try embstore("ingest", store.path, "--table", "new", "--vectors", bad.path, "--codec", "fp32")
            #expect(intoNew.status != 0, "\(intoNew)")
            #expect(intoNew.stderr.contains("row 3"), "\(intoNew)")
            let info = try embstoreOK("info", store.path, "--json")
            #expect(!info.stdout.contains("\"new\""), "table 'new' was created by a refused ingest: \(info.stdout)")
            #expect(try embstore("export", store.path, "--table", "new", "--out", dir.appendingPathComponent("n.npy").path).status != 0)

            let freshStore = dir.appendingPathComponent("fresh")
            let intoFresh = try embstore("ingest", freshStore.path, "--table", "t", "--vectors", bad.path, "--codec", "fp16")
            #expect(intoFresh.status != 0 && intoFresh.stderr.contains("row 3"), "\(intoFresh)")
            if FileManager.default.fileExists(atPath: freshStore.path) {
                let freshInfo = try embstore("info", freshStore.path)
                #expect(!freshInfo.stdout.contains("table 't'"), "\(freshInfo)")
            }
        }
    }

    /// fp16 cannot hold 1e6: refused naming the row (and the value or fp16).
    @Test func fp16OverflowIsRefusedNamingTheRow() throws {
        try withTemporaryDirectory { dir in
            var rows = randomRows(5, 3, seed: 6)
            rows[2][1] = 1e6
            let vectors = dir.appendingPathComponent("x.npy")
            try writeFloat32(rows, to: vectors)
            let store = dir.appendingPathComponent("store")
            let run = try embstore("ingest", store.path, "--table", "t", "--vectors", vectors.path, "--codec", "fp16")
            #expect(run.status != 0, "\(run)")
            #expect(run.stderr.contains("row 2"), "stderr should name row 2: \(run)")
            #expect(run.stderr.localizedCaseInsensitiveContains("fp16") || run.stderr.contains("65504"), "\(run)")
            // The same rows are fine as fp32.
            try embstoreOK("ingest", store.path, "--table", "t", "--vectors", vectors.path, "--codec", "fp32")
        }
    }

    /// Malformed .npy files: non-zero exit, and the message names the problem.
    @Test(arguments: ["truncated", "float64", "fortran", "not-npy", "missing", "1-d"])
    func badVectorFiles(_ kind: String) throws {
        try withTemporaryDirectory { dir in
            let file = dir.appendingPathComponent("x.npy")
            let expectWords: [String]
            switch kind {
            case "truncated":
                // Header says 10 × 4 float32 (160 bytes) but only 100 bytes follow.
                try npyFile(descr: "<f4", shape: [10, 4], payload: Array(float32Bytes(randomRows(10, 4, seed: 7).flatMap { $0 }).prefix(100)))
                    .write(to: file)
                expectWords = ["truncated", "short", "bytes", "size", "expected"]
            case "float64":
                try npyFile(descr: "<f8", shape: [2, 2], payload: littleEndianBytes([1.0, 2.0, 3.0, 4.0].map { (v: Double) in v.bitPattern }))
                    .write(to: file)
                expectWords = ["<f8", "float64", "f8", "dtype"]
            case "fortran":
                try npyFile(descr: "<f4", shape: [2, 3], fortranOrder: true, payload: float32Bytes([1, 2, 3, 4, 5, 6])).write(to: file)
                expectWords = ["fortran"]
            case "not-npy":
                try Data("hello, this is not numpy\n".utf8).write(to: file)
                expectWords = ["npy", "magic"]
            case "missing":
                expectWords = ["x.npy"]
            default:  // a 1-d array is not [N, d]
                try npyFile(descr: "<f4", shape: [6], payload: float32Bytes([1, 2, 3, 4, 5, 6])).write(to: file)
                expectWords = ["shape", "dimension", "2-d", "2 dimensions", "[n, d]"]
            }
            let store = dir.appendingPathComponent("store")
            let run = try embstore("ingest", store.path, "--table", "t", "--vectors", file.path, "--codec", "fp32")
            #expect(run.status != 0, "\(kind) was accepted: \(run)")
            #expect(expectWords.contains { run.stderr.localizedCaseInsensitiveContains($0) },
                    "\(kind): stderr should say what is wrong (one of \(expectWords)): \(run)")
            #expect(!run.stderr.contains("Fatal error") && run.status != 132 && run.status != 134 && run.status != 139,
                    "\(kind): crashed instead of reporting an error: \(run)")
        }
    }

    /// A codec refused for the table's shape (reduced:K needs K < d) must not leave a new, empty
    /// table behind ("nothing is written").
    @Test func refusedCodecLeavesNoTable() throws {
        try withTemporaryDirectory { dir in
            let vectors = dir.appendingPathComponent("x.npy")
            try writeFloat32(randomRows(6, 4, seed: 13), to: vectors)
            let store = dir.appendingPathComponent("store")
            try embstoreOK("ingest", store.path, "--table", "other", "--vectors", vectors.path, "--codec", "fp32")
            let run = try embstore("ingest", store.path, "--table", "k", "--vectors", vectors.path, "--codec", "reduced:4")
            #expect(run.status != 0 && run.stderr.contains("reduced:4"), "\(run)")
            let info = try embstoreOK("info", store.path)
            #expect(!info.stdout.contains("table 'k'"), "\(info.stdout)")
        }
    }

    @Test func unknownCodecIsRefused() throws {
        try withTemporaryDirectory { dir in
            let vectors = dir.appendingPathComponent("x.npy")
            try writeFloat32(randomRows(3, 4, seed: 8), to: vectors)
            for codec in ["fp64", "reduced:0", "reduced:4", "bucket:0", "int3"] {
                let run = try embstore("ingest", dir.appendingPathComponent("store").path, "--table", "t",
                                       "--vectors", vectors.path, "--codec", codec)
                #expect(run.status != 0, "codec \(codec) was accepted for 3 × 4 rows: \(run)")
                #expect(!run.stderr.isEmpty, "codec \(codec): no message")
            }
        }
    }
}

/// Two processes loading into the same new table at once: both succeed (the second to create
/// it takes the table the first made), every round.
@Suite struct ConcurrentCreationTests {
    @Test func twoIngestsCreatingOneTableBothSucceed() throws {
        try withTemporaryDirectory { dir in
            let rows = randomRows(500, 8, seed: 3)
            let vectors = dir.appendingPathComponent("x.npy")
            try writeFloat32(rows, to: vectors)
            for round in 0..<6 {
                let store = dir.appendingPathComponent("store\(round)")
                let runs = embstoreAtOnce(2, "ingest", store.path, "--table", "t", "--vectors", vectors.path, "--codec", "int8", "--quiet")
                for run in runs { #expect(run.status == 0, "round \(round): \(run)") }
                let exported = try exportTable(store, "t", in: dir)
                #expect(exported.ids == (0..<500).map { UInt64($0) })
            }
        }
    }
}

/// A store in a directory the reader may not write (nor its lock file) is read without LMDB's
/// lock file. Run as a user without write permission: as `nobody` through setpriv when the
/// suite runs as root (root writes anywhere), directly otherwise.
@Suite struct ReadOnlyDirectoryTests {
    @Test func aStoreInAReadOnlyDirectoryCanBeRead() throws {
        guard let binary = Tooling.embstoreBinary else { throw TestFailure("no embstore binary") }
        try withTemporaryDirectory { dir in
            let rows = randomRows(300, 8, seed: 4)
            let vectors = dir.appendingPathComponent("x.npy")
            try writeFloat32(rows, to: vectors)
            let store = dir.appendingPathComponent("store")
            try embstoreOK("ingest", store.path, "--table", "t", "--vectors", vectors.path, "--codec", "fp32", "--quiet")
            for path in [dir.path, store.path] { #expect(chmod(path, 0o755) == 0) }
            for name in ["data.mdb", "lock.mdb"] { #expect(chmod(store.appendingPathComponent(name).path, 0o444) == 0) }
            #expect(chmod(store.path, 0o555) == 0)
            defer { _ = chmod(store.path, 0o755) }
            func asReader(_ arguments: [String]) throws -> Run {
                guard getuid() == 0 else { return try runProcess(binary, arguments) }
                return try runProcess(URL(fileURLWithPath: "/usr/bin/setpriv"),
                                      ["--reuid=65534", "--regid=65534", "--clear-groups", binary.path] + arguments)
            }
            let probe = try asReader(["--help"])
            guard probe.status == 0 else {
                // The checkout is not readable by `nobody` (a private home directory): nothing to try.
                print("[read-only directory] skipped: cannot run embstore as an unprivileged user here: \(probe.stderr)")
                return
            }
            let info = try asReader(["info", store.path])
            #expect(info.status == 0 && info.stdout.contains("300 rows"), "\(info)")
            let verify = try asReader(["verify", store.path])
            #expect(verify.status == 0, "\(verify)")
            let get = try asReader(["get", store.path, "--table", "t", "7"])
            #expect(get.status == 0 && get.stdout.contains("\(rows[7][0])"), "\(get)")
            // Writing stays refused, with a clear error.
            let write = try asReader(["ingest", store.path, "--table", "u", "--vectors", vectors.path, "--codec", "fp32", "--quiet"])
            #expect(write.status != 0 && write.stderr.contains("Permission denied"), "\(write)")
        }
    }
}

/// Access counts from the command line: two `bench --track-every 1` processes at once both add
/// their counts, and `stats --tracked` shares the lookups out from them.
@Suite struct TrackedCountsCommandTests {
    @Test func benchTracksAndStatsReadsTheCounts() throws {
        try withTemporaryDirectory { dir in
            let rows = randomRows(400, 8, seed: 5)
            let vectors = dir.appendingPathComponent("x.npy"), stream = dir.appendingPathComponent("ids.npy")
            try writeFloat32(rows, to: vectors)
            try writeUInt64((0..<2_048).map { UInt64(($0 * 7) % 300) }, to: stream)   // rows 0..<300 only
            let store = dir.appendingPathComponent("store")
            try embstoreOK("ingest", store.path, "--table", "t", "--vectors", vectors.path, "--codec", "int8", "--quiet")
            let none = try embstore("stats", store.path, "--tracked")
            #expect(none.status != 0 && none.stderr.contains("no access counts kept"), "\(none)")
            let runs = embstoreAtOnce(2, "bench", store.path, "--table", "t", "--ids", stream.path, "--batch", "256",
                                      "--reps", "1", "--rep-seconds", "0.01", "--track-every", "1", "--json")
            for run in runs {
                #expect(run.status == 0 && run.stdout.contains("\"track_every\": 1"), "\(run)")
            }
            let stats = try embstoreOK("stats", store.path, "--tracked")
            #expect(stats.stdout.contains("over 300 rows with a count"), "\(stats)")
        }
    }
}

/// A flipped bit in a row's bytes: `verify --json` says what is damaged and exits 1, and
/// `export` fails instead of writing the flipped row.
@Suite struct DamageCommandTests {
    @Test func verifyJSONAndExportRefuseAFlippedBit() throws {
        try withTemporaryDirectory { dir in
            var rows = randomRows(200, 8, seed: 6)
            rows[17][3] = 1234.5   // a value to find in the file
            let vectors = dir.appendingPathComponent("x.npy")
            try writeFloat32(rows, to: vectors)
            let store = dir.appendingPathComponent("store")
            try embstoreOK("ingest", store.path, "--table", "t", "--vectors", vectors.path, "--codec", "fp32", "--quiet")
            let sound = try embstoreOK("verify", store.path, "--json")
            #expect(sound.stdout.contains("\"ok\":true"), "\(sound)")
            let file = store.appendingPathComponent("data.mdb")
            var bytes = try Data(contentsOf: file)
            let pattern = withUnsafeBytes(of: Float(1234.5).bitPattern.littleEndian) { Data($0) }
            let at = try #require(bytes.range(of: pattern)).lowerBound
            bytes[at] ^= 0x01
            try bytes.write(to: file)
            let damaged = try embstore("verify", store.path, "--json")
            #expect(damaged.status == 1 && damaged.stdout.contains("\"ok\":false") && damaged.stdout.contains("checksum mismatch"), "\(damaged)")
            let export = try embstore("export", store.path, "--table", "t", "--out", dir.appendingPathComponent("y.npy").path)
            #expect(export.status != 0 && export.stderr.contains("checksum mismatch"), "\(export)")
        }
    }
}

/// Every page of a small store zeroed in turn: `verify` never dies by a signal (LMDB's own page
/// checks end the process with status 3 and a message). Some pages are free, and zeroing them
/// changes nothing; the counts per exit status are printed.
@Suite struct ZeroedPageTests {
    @Test func verifySurvivesEveryZeroedPage() throws {
        try withTemporaryDirectory { dir in
            let rows = randomRows(600, 8, seed: 8)
            let vectors = dir.appendingPathComponent("x.npy")
            try writeFloat32(rows, to: vectors)
            let store = dir.appendingPathComponent("store")
            try embstoreOK("ingest", store.path, "--table", "seg", "--vectors", vectors.path, "--codec", "int8", "--quiet")
            try embstoreOK("ingest", store.path, "--table", "keys", "--vectors", vectors.path, "--codec", "fp16", "--layout", "per-key", "--quiet")
            let pristine = try Data(contentsOf: store.appendingPathComponent("data.mdb"))
            let pages = pristine.count / 4096
            var byStatus: [Int32: Int] = [:]
            for page in 2..<pages {   // the two meta pages are LMDB's own to choose between
                let trial = dir.appendingPathComponent("t\(page)")
                try FileManager.default.createDirectory(at: trial, withIntermediateDirectories: true)
                var damaged = pristine
                damaged.replaceSubrange(page * 4096..<(page + 1) * 4096, with: Data(count: 4096))
                try damaged.write(to: trial.appendingPathComponent("data.mdb"))
                let run = try embstore("verify", trial.path)
                byStatus[run.status, default: 0] += 1
                #expect(run.status >= 0 && run.status < 128, "page \(page): \(run)")
                if run.status == 3 { #expect(run.stderr.contains("LMDB found a damaged page"), "page \(page): \(run)") }
                try FileManager.default.removeItem(at: trial)
            }
            print("[zeroed pages] \(pages - 2) pages: verify exit statuses \(byStatus.sorted { $0.key < $1.key })")
        }
    }
}
