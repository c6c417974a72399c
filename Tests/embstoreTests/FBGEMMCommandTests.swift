import Foundation
import Testing

/// `ingest --format fbgemm-*`, `export --format fbgemm-*` and `ingest --state-dict` through the
/// binary, on the fixtures torch made (Tests/Fixtures/fbgemm, tools/make_fbgemm_fixtures.py).
@Suite("FBGEMM rows and TorchRec state dicts on the command line")
struct FBGEMMCommandTests {
    static let fixtures = Tooling.repoRoot.appendingPathComponent("Tests/Fixtures/fbgemm")
    static func fixture(_ name: String) -> String { fixtures.appendingPathComponent(name + ".npy").path }

    @Test(arguments: [("int8", "d16", nil), ("int4", "d16", "16"), ("int8", "d13", nil), ("int4", "d13", "13")] as [(String, String, String?)])
    func importThenExportGivesTheSameBytes(_ codec: String, _ table: String, _ dimension: String?) throws {
        try withTemporaryDirectory { dir in
            let store = dir.appendingPathComponent("store").path, out = dir.appendingPathComponent("out.npy")
            let ingest = try embstoreOK(["ingest", store, "--table", "t", "--format", "fbgemm-\(codec)", "--vectors", Self.fixture("\(codec)_\(table)"),
                                         "--quiet"] + (dimension.map { ["--dimension", $0] } ?? []))
            #expect(ingest.stdout.contains("as \(codec == "int8" ? "int8" : "int4h") records"))
            let export = try embstoreOK("export", store, "--table", "t", "--format", "fbgemm-\(codec)", "--out", out.path)
            #expect(export.stdout.contains("300 \(codec == "int8" ? "int8" : "int4h") records copied, 0 rows quantized"))
            let given = try NPYArray(contentsOf: URL(fileURLWithPath: Self.fixture("\(codec)_\(table)"))), back = try NPYArray(contentsOf: out)
            #expect(back.descr == "|u1" && back.shape == given.shape)
            #expect(back.payload == given.payload)
        }
    }

    @Test(arguments: [("int8", "d16"), ("int4", "d16"), ("int8", "d13"), ("int4", "d13")])
    func floatRowsExportAsTorchsPrepack(_ codec: String, _ table: String) throws {
        try withTemporaryDirectory { dir in
            let store = dir.appendingPathComponent("store").path, out = dir.appendingPathComponent("out.npy")
            try embstoreOK("ingest", store, "--table", "t", "--vectors", Self.fixture("rows_\(table)"), "--codec", "fp32", "--quiet")
            try embstoreOK("export", store, "--table", "t", "--format", "fbgemm-\(codec)", "--out", out.path)
            #expect(try NPYArray(contentsOf: out).payload == NPYArray(contentsOf: URL(fileURLWithPath: Self.fixture("\(codec)_\(table)"))).payload)
        }
    }

    /// Each refusal: a non-zero exit, a message with these words, and no store made.
    @Test(arguments: [
        (["--format", "fbgemm-int4", "--vectors", "int4_d16"], ["--dimension 16", "--dimension 15"]),
        (["--format", "fbgemm-int4", "--vectors", "int4_d16", "--dimension", "13"], ["--dimension 13", "11 bytes", "12 bytes"]),
        (["--format", "fbgemm-int8", "--vectors", "int8_d16", "--dimension", "15"], ["23 bytes", "24 bytes"]),
        (["--format", "fbgemm-int8", "--vectors", "rows_d16"], ["uint8"]),
        (["--format", "fbgemm-int8", "--vectors", "int8_d16", "--codec", "int8"], ["stores the rows as given"]),
        (["--vectors", "int8_d16", "--codec", "fp32"], ["float32 or float16"]),
    ] as [([String], [String])])
    func refusals(_ arguments: [String], _ words: [String]) throws {
        try withTemporaryDirectory { dir in
            let store = dir.appendingPathComponent("store")
            let resolved = arguments.map { ["int4_d16", "int8_d16", "rows_d16"].contains($0) ? Self.fixture($0) : $0 }
            let run = try embstore(["ingest", store.path, "--table", "t"] + resolved)
            #expect(run.status != 0)
            for word in words { #expect(run.stderr.contains(word), "\(run)") }
            #expect(!FileManager.default.fileExists(atPath: store.path))
        }
    }

    @Test func aRowWithAnInfiniteScaleIsNamedAndNothingIsWritten() throws {
        try withTemporaryDirectory { dir in
            let given = try NPYArray(contentsOf: URL(fileURLWithPath: Self.fixture("int8_d16")))
            var payload = [UInt8](given.payload)
            payload.replaceSubrange(5 * 24 + 16..<5 * 24 + 20, with: [0x00, 0x00, 0x80, 0x7F])   // row 5's f32 scale: +inf
            let bad = dir.appendingPathComponent("bad.npy")
            try npyFile(descr: "|u1", shape: given.shape, payload: payload).write(to: bad)
            let store = dir.appendingPathComponent("store")
            let run = try embstore("ingest", store.path, "--table", "t", "--format", "fbgemm-int8", "--vectors", bad.path)
            #expect(run.status != 0)
            #expect(run.stderr.contains("row 5") && run.stderr.contains("scale") && run.stderr.contains("inf"), "\(run)")
            #expect(!FileManager.default.fileExists(atPath: store.path))
        }
    }

    /// A directory of TABLE.npy (what tools/torchrec_export.py writes) loads every table; --table
    /// picks one; an .npz numpy.savez wrote loads the same (when numpy is here to write one).
    @Test func stateDictDirectoryAndNpz() throws {
        try withTemporaryDirectory { dir in
            let state = dir.appendingPathComponent("state")
            try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: Self.fixture("rows_d16"), toPath: state.appendingPathComponent("user.npy").path)
            try FileManager.default.copyItem(atPath: Self.fixture("rows_d13"), toPath: state.appendingPathComponent("item.npy").path)
            let store = dir.appendingPathComponent("store").path
            let run = try embstoreOK("ingest", store, "--state-dict", state.path, "--codec", "fp32", "--quiet")
            #expect(run.stdout.contains("into table 'item'") && run.stdout.contains("into table 'user'") && run.stdout.contains("ingested 2 tables"))
            let exported = try exportTable(URL(fileURLWithPath: store), "item", in: dir)
            #expect(exported.rows.flatMap { $0 } == (try NPYArray(contentsOf: URL(fileURLWithPath: Self.fixture("rows_d13"))).floats))
            let one = dir.appendingPathComponent("one").path
            try embstoreOK("ingest", one, "--state-dict", state.path, "--table", "user", "--codec", "int8", "--quiet")
            #expect(try embstoreOK("info", one).stdout.contains("table 'user'"))
            let missing = try embstore("ingest", one, "--state-dict", state.path, "--table", "nope", "--codec", "int8")
            #expect(missing.status != 0 && missing.stderr.contains("item, user"))
            guard Tooling.hasNumpy else { return }
            let npz = dir.appendingPathComponent("state.npz").path
            _ = try python("import numpy as np, sys; np.savez(sys.argv[1], user=np.load(sys.argv[2]), item=np.load(sys.argv[3]))",
                           [npz, Self.fixture("rows_d16"), Self.fixture("rows_d13")])
            let fromNpz = dir.appendingPathComponent("npz").path
            try embstoreOK("ingest", fromNpz, "--state-dict", npz, "--codec", "fp32", "--quiet")
            #expect(try exportTable(URL(fileURLWithPath: fromNpz), "item", in: dir).rows == exported.rows)
        }
    }
}
