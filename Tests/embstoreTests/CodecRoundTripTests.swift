import Foundation
import Testing

/// One codec round trip: a make_table.py table of `n × d` ingested with `codec`.
struct CodecCase: CustomTestStringConvertible, Sendable {
    let codec: String
    let n: Int
    let d: Int
    /// Upper bound on ‖export − x‖ / ‖x‖ over the whole table; nil when the bound is computed
    /// (reduced: PCA truncation).
    let bound: Double?
    /// PCA rank for `reduced:K`, else 0.
    let rank: Int

    var testDescription: String { "\(codec) \(n)×\(d)" }
}

let codecCases: [CodecCase] = [
    // fp32 stores the float bits: exact.
    CodecCase(codec: "fp32", n: 500, d: 24, bound: 0, rank: 0),
    // fp16 has an 11-bit significand: rounding error ≤ 2⁻¹¹ relative per value, < 1e-3 overall.
    CodecCase(codec: "fp16", n: 500, d: 24, bound: 1e-3, rank: 0),
    // int8 rowwise: 255 levels over the row's range; < 1e-2 relative.
    CodecCase(codec: "int8", n: 500, d: 24, bound: 1e-2, rank: 0),
    CodecCase(codec: "int8", n: 300, d: 7, bound: 1e-2, rank: 0),
    // int4 rowwise: 15 levels; < 0.15 relative. d = 7 checks the odd last nibble.
    CodecCase(codec: "int4", n: 500, d: 24, bound: 0.15, rank: 0),
    CodecCase(codec: "int4", n: 300, d: 7, bound: 0.15, rank: 0),
    // reduced:8: no better than the optimal rank-8 affine approximation (PCA by SVD in float64,
    // Eckart–Young), and within 5 % of it.
    CodecCase(codec: "reduced:8", n: 500, d: 24, bound: nil, rank: 8),
    // bucket:32: each row replaced by one of 32 shared rows; better than replacing it by zero.
    CodecCase(codec: "bucket:32", n: 500, d: 24, bound: 1, rank: 0),
    // bucket:32:scaled: likewise (and ≤ unscaled, checked separately below).
    CodecCase(codec: "bucket:32:scaled", n: 500, d: 24, bound: 1, rank: 0),
    // tc: measured 0.145 (tc:2) and 0.015 (tc:6) relative error on this table; bounded at
    // about 1.7× that (the fit's sample and rounding move it by a few percent).
    CodecCase(codec: "tc:2", n: 500, d: 24, bound: 0.25, rank: 0),
    CodecCase(codec: "tc:6", n: 500, d: 24, bound: 0.025, rank: 0),
]

/// Compares an export with its source: ids, shape, relative L2 error, and for `rank > 0` the
/// relative error of the best rank-k affine approximation (PCA via SVD).
let measureScript = """
import json, numpy as np
x = np.load(sys.argv[1]); src_ids = np.load(sys.argv[2])
y = np.load(sys.argv[3]); ids = np.load(sys.argv[4]); rank = int(sys.argv[5])
order = np.argsort(src_ids, kind="stable")
xs = x[order].astype(np.float64)
res = {
    "shape_ok": y.shape == x.shape and y.dtype == np.float32 and ids.dtype == np.uint64,
    "ascending": bool(np.all(ids[1:] > ids[:-1])),
    "ids_equal": bool(np.array_equal(ids.astype(np.uint64), src_ids[order].astype(np.uint64))),
    "exact": bool(np.array_equal(y, x[order])),
}
if res["shape_ok"]:
    res["rel"] = float(np.linalg.norm(y - xs) / np.linalg.norm(xs))
if rank > 0:
    mu = xs.mean(axis=0)
    _, _, vt = np.linalg.svd(xs - mu, full_matrices=False)
    p = vt[:rank]
    approx = mu + (xs - mu) @ p.T @ p
    res["pca"] = float(np.linalg.norm(approx - xs) / np.linalg.norm(xs))
print(json.dumps(res))
"""

func measure(source: URL, sourceIDs: URL, export: URL, exportIDs: URL, rank: Int = 0) throws -> [String: Any] {
    try pythonJSON(measureScript, [source.path, sourceIDs.path, export.path, exportIDs.path, "\(rank)"])
}

@Suite("codecs round trip through ingest and export", .enabled(if: Tooling.hasNumpy, "python3 with numpy is not installed; skipping"))
struct CodecRoundTripTests {
    @Test(arguments: codecCases)
    func roundTrip(_ c: CodecCase) throws {
        try withTemporaryDirectory { dir in
            try makeTable(in: dir, n: c.n, d: c.d, seed: c.d * 1000 + c.n)
            let store = dir.appendingPathComponent("store")
            let out = dir.appendingPathComponent("out.npy"), idsOut = dir.appendingPathComponent("out.ids.npy")
            try embstoreOK("ingest", store.path, "--table", "t", "--vectors", dir.appendingPathComponent("table.npy").path,
                           "--codec", c.codec)
            try embstoreOK("export", store.path, "--table", "t", "--out", out.path, "--ids-out", idsOut.path)
            let m = try measure(source: dir.appendingPathComponent("table.npy"), sourceIDs: dir.appendingPathComponent("ids.npy"),
                                export: out, exportIDs: idsOut, rank: c.rank)
            print("[measure] \(c.testDescription): \(m)")
            #expect(m["shape_ok"] as? Bool == true, "\(m)")
            #expect(m["ascending"] as? Bool == true, "ids not ascending: \(m)")
            #expect(m["ids_equal"] as? Bool == true, "ids differ from 0..<N: \(m)")
            let rel = try #require(m["rel"] as? Double)
            if let bound = c.bound {
                if bound == 0 {
                    #expect(m["exact"] as? Bool == true, "fp32 must round-trip exactly: \(m)")
                } else {
                    #expect(rel < bound, "\(c.codec): relative error \(rel) ≥ \(bound)")
                }
            } else {
                let pca = try #require(m["pca"] as? Double)
                #expect(rel >= pca * (1 - 1e-6), "\(c.codec): \(rel) beats the optimal rank-\(c.rank) error \(pca)?")
                #expect(rel <= pca * 1.05, "\(c.codec): relative error \(rel) > 1.05 × PCA rank-\(c.rank) error \(pca)")
            }
        }
    }

    /// With the same rows, a per-row scale can only help: scaled bucket error ≤ unscaled.
    @Test func scaledBucketsAreNoWorse() throws {
        try withTemporaryDirectory { dir in
            try makeTable(in: dir, n: 500, d: 24, seed: 11)
            let store = dir.appendingPathComponent("store")
            let table = dir.appendingPathComponent("table.npy"), ids = dir.appendingPathComponent("ids.npy")
            var errors: [String: Double] = [:]
            for (name, codec) in [("plain", "bucket:32"), ("scaled", "bucket:32:scaled")] {
                try embstoreOK("ingest", store.path, "--table", name, "--vectors", table.path, "--codec", codec)
                let out = dir.appendingPathComponent("\(name).npy"), idsOut = dir.appendingPathComponent("\(name).ids.npy")
                try embstoreOK("export", store.path, "--table", name, "--out", out.path, "--ids-out", idsOut.path)
                errors[name] = try #require(try measure(source: table, sourceIDs: ids, export: out, exportIDs: idsOut)["rel"] as? Double)
            }
            print("[measure] bucket:32 \(errors["plain"]!) vs bucket:32:scaled \(errors["scaled"]!)")
            #expect(errors["scaled"]! <= errors["plain"]! * (1 + 1e-6), "\(errors)")
            #expect(errors["plain"]! < 1)
        }
    }
}

@Suite("tools/embstore_reader.py reads what embstore writes",
       .enabled(if: Tooling.hasPyLMDB, "python3 with numpy and py-lmdb is not installed; skipping"))
struct PythonReaderTests {
    /// Tables of every codec in one store, each loaded as one segment (the default layout), and a
    /// few loaded per key (the delta); the reader must decode the same floats as `embstore export`:
    /// bit for bit for the codecs whose decode is one multiply and one add (fp32, fp16, int8, int4,
    /// bucket, bucket+scale), within 1e-6 × max|x| for reduced (a sum of k products).
    @Test func readerMatchesExportForEveryCodec() throws {
        try withTemporaryDirectory { dir in
            let wide = dir.appendingPathComponent("wide"), odd = dir.appendingPathComponent("odd")
            try makeTable(in: wide, n: 400, d: 24, seed: 5)
            try makeTable(in: odd, n: 200, d: 7, seed: 6)
            let store = dir.appendingPathComponent("store")
            let tables: [(String, String, URL)] = [
                ("fp32", "fp32", wide), ("fp16", "fp16", wide), ("int8", "int8", wide), ("int4", "int4", wide),
                ("int4-odd", "int4", odd), ("reduced", "reduced:8", wide), ("bucket", "bucket:32", wide),
                ("bucket-scaled", "bucket:32:scaled", wide),
                ("int8-per-key", "int8", wide), ("reduced-per-key", "reduced:8", wide), ("bucket-scaled-per-key", "bucket:32:scaled", wide),
            ]
            var script = "import json, numpy as np\nfrom embstore_reader import Store\nres = {}\nwith Store(sys.argv[1]) as s:\n"
            script += "    res['tables'] = s.tables()\n"
            var arguments = [store.path]
            for (i, (name, codec, source)) in tables.enumerated() {
                try embstoreOK("ingest", store.path, "--table", name, "--vectors", source.appendingPathComponent("table.npy").path,
                               "--codec", codec, "--layout", name.hasSuffix("-per-key") ? "per-key" : "segment")
                let out = dir.appendingPathComponent("\(name).npy"), idsOut = dir.appendingPathComponent("\(name).ids.npy")
                try embstoreOK("export", store.path, "--table", name, "--out", out.path, "--ids-out", idsOut.path)
                arguments += [name, out.path, idsOut.path, source.appendingPathComponent("table.npy").path]
                let a = 2 + 4 * i
                script += """
                    ids, x = s.export(sys.argv[\(a)])
                    y = np.load(sys.argv[\(a + 1)]); yids = np.load(sys.argv[\(a + 2)]); src = np.load(sys.argv[\(a + 3)])
                    res[sys.argv[\(a)]] = {"ids_equal": bool(np.array_equal(ids, yids)), "dtype": str(x.dtype),
                        "same_shape": x.shape == y.shape, "identical": bool(np.array_equal(x, y)),
                        "max_abs_diff": float(np.max(np.abs(x - y))), "scale": float(np.max(np.abs(src))),
                        "layers": s.layers(sys.argv[\(a)])}

                """
            }
            script += "print(json.dumps(res))\n"
            let result = try pythonJSON(script, arguments)
            #expect(result["tables"] as? [String] == tables.map(\.0).sorted(), "\(result["tables"] ?? "nil")")
            for (name, codec, _) in tables {
                let r = try #require(result[name] as? [String: Any], "no result for \(name)")
                print("[reader-vs-export] \(name) (\(codec)): \(r)")
                #expect(r["ids_equal"] as? Bool == true, "\(name): \(r)")
                #expect(r["dtype"] as? String == "float32", "\(name): \(r)")
                #expect(r["same_shape"] as? Bool == true, "\(name): \(r)")
                let layers = try #require(r["layers"] as? [String: Any])
                let segments = try #require(layers["segments"] as? [[String: Any]])
                if name.hasSuffix("-per-key") {
                    #expect(segments.isEmpty && layers["delta"] as? Int == layers["rows"] as? Int, "\(name): \(layers)")
                } else {
                    // One dense segment (ids 0..<N) of one record size: kind 1.
                    #expect(segments.map { $0["kind"] as? Int } == [1] && layers["delta"] as? Int == 0, "\(name): \(layers)")
                }
                let diff = try #require(r["max_abs_diff"] as? Double), scale = try #require(r["scale"] as? Double)
                if codec.hasPrefix("reduced") {
                    #expect(diff <= 1e-6 * scale, "\(name): reader differs from export by \(diff)")
                } else {
                    #expect(r["identical"] as? Bool == true, "\(name): reader differs from export by \(diff)")
                }
            }

            // The reader's command line writes the same files as `embstore export`.
            let readerOut = dir.appendingPathComponent("reader.npy"), readerIDs = dir.appendingPathComponent("reader.ids.npy")
            try python("import embstore_reader; sys.exit(embstore_reader.main(sys.argv[1:]))",
                       [store.path, "--table", "int4-odd", "--out", readerOut.path, "--ids-out", readerIDs.path])
            #expect(try NPYArray(contentsOf: readerOut).payload == NPYArray(contentsOf: dir.appendingPathComponent("int4-odd.npy")).payload)
            #expect(try NPYArray(contentsOf: readerIDs).uint64s == NPYArray(contentsOf: dir.appendingPathComponent("int4-odd.ids.npy")).uint64s)
            let listing = try python("import embstore_reader; sys.exit(embstore_reader.main(sys.argv[1:]))", [store.path, "--list"])
            #expect(listing.contains("int4-odd\t") && listing.contains("dimension=7") && listing.contains("rows=200\tsegments=1\tdelta=0"),
                    "\(listing)")
            #expect(listing.contains("int8-per-key\t") && listing.contains("rows=400\tsegments=0\tdelta=400"), "\(listing)")
        }
    }

    /// A store whose format version (6) is newer than the reader knows (5) is refused, naming both
    /// versions, by the Python reader and by `embstore info`. The header keeps the bytes after
    /// the version (reserved field and the version-5 seal): a reader reads the version at offset
    /// 8 before it checks the record's length or seal, so the unknown version is what it reports.
    @Test func unknownFormatVersionIsRefused() throws {
        try withTemporaryDirectory { dir in
            let store = dir.appendingPathComponent("store"), vectors = dir.appendingPathComponent("x.npy")
            try writeFloat32(randomRows(4, 3, seed: 1), to: vectors)
            try embstoreOK("ingest", store.path, "--table", "t", "--vectors", vectors.path, "--codec", "fp32")
            let out = try python("""
                import lmdb, struct, embstore_reader
                assert embstore_reader.FORMAT_VERSION == 5, embstore_reader.FORMAT_VERSION
                env = lmdb.open(sys.argv[1], max_dbs=8)
                meta = env.open_db(b"meta")
                with env.begin(write=True) as txn:
                    header = txn.get(b"format", db=meta)
                    assert header[:8] == b"EMBSTORE" and struct.unpack_from("<I", header, 8)[0] == 5 and len(header) == 20, header
                    txn.put(b"format", header[:8] + struct.pack("<I", 6) + header[12:], db=meta)
                env.close()
                try:
                    embstore_reader.Store(sys.argv[1])
                    print("opened")
                except embstore_reader.UnsupportedVersionError as e:
                    print("refused:", e)
                """, [store.path])
            #expect(out.contains("refused:") && out.contains("version 6") && out.contains("1 to 5"), "\(out)")
            let info = try embstore("info", store.path)
            #expect(info.status != 0, "embstore info opened a version-6 store: \(info)")
            #expect(info.stderr.contains("version 6") && info.stderr.contains("1...5"), "the error should name versions 6 and 5: \(info)")
        }
    }
}
