import Foundation
import Testing

/// `embstore codecs` lists every spelling `--codec` takes, and each one works: a table ingested
/// with it exports finite rows close to the source, and tools/embstore_reader.py (written from
/// FORMAT.md alone) reads the same floats (bit for bit; reduced rows to rounding).
@Suite("every codec embstore codecs lists", .enabled(if: Tooling.hasPyLMDB, "python3 with numpy and py-lmdb is not installed; skipping"))
struct CodecsCommandTests {
    @Test func everyListedFormIngestsAndReadsBackTheSameInPython() throws {
        let listing = try embstoreOK("codecs", "--dimension", "24", "--json")
        let forms = try #require(try JSONSerialization.jsonObject(with: Data(listing.stdout.utf8)) as? [[String: Any]])
        let codecs = forms.compactMap { $0["codec"] as? String }
        for family in ["fp32", "fp16", "int8", "int4", "int4h", "int2h", "reduced:6", "bucket:256", "bucket:256:scaled", "tc:2", "tc:8", "tc:25%"] {
            #expect(codecs.contains(family), "\(family) is not listed: \(codecs)")
        }
        #expect(forms.allSatisfy { ($0["bytes_per_row"] as? Double ?? 0) > 0 })
        #expect((forms.first { $0["codec"] as? String == "tc:4" }?["bytes_per_row"] as? Double) == 18.0, "6 + 4 × 24 / 8")
        let text = try embstoreOK("codecs", "--dimension", "24")
        #expect(text.stdout.split(separator: "\n").count == codecs.count)

        try withTemporaryDirectory { dir in
            try makeTable(in: dir, n: 400, d: 24, seed: 5)
            let table = dir.appendingPathComponent("table.npy")
            // Bucket forms past 256 rows would fit more buckets than rows: one of each is enough.
            // Budgets (tc:P%) are for tables larger than the 13 pages a store starts with; the
            // store tests check them on such tables.
            for codec in codecs where (!codec.hasPrefix("bucket:") || codec.hasPrefix("bucket:256")) && !codec.hasSuffix("%") {
                let store = dir.appendingPathComponent("store-" + codec.replacingOccurrences(of: ":", with: "_"))
                try embstoreOK("ingest", store.path, "--table", "t", "--vectors", table.path, "--codec", codec)
                let out = dir.appendingPathComponent("out.npy"), idsOut = dir.appendingPathComponent("ids.npy")
                try embstoreOK("export", store.path, "--table", "t", "--out", out.path, "--ids-out", idsOut.path)
                let result = try pythonJSON("""
                    import json, numpy as np
                    from embstore_reader import Store
                    x = np.load(sys.argv[1]); y = np.load(sys.argv[2])
                    with Store(sys.argv[3]) as s:
                        ids, z = s.export("t")
                    print(json.dumps({"finite": bool(np.isfinite(y).all()), "rel": float(np.linalg.norm(y - x) / np.linalg.norm(x)),
                                      "same_ids": bool((ids == np.load(sys.argv[4])).all()), "exact": bool((z == y).all()),
                                      "max_diff": float(np.abs(z - y).max())}))
                    """, [table.path, out.path, store.path, idsOut.path])
                #expect(result["finite"] as? Bool == true && result["same_ids"] as? Bool == true, "\(codec): \(result)")
                #expect((result["rel"] as? Double ?? 9) < 1, "\(codec): \(result)")
                if codec.hasPrefix("reduced:") {
                    #expect((result["max_diff"] as? Double ?? 1) < 1e-5, "\(codec): \(result)")
                } else {
                    #expect(result["exact"] as? Bool == true, "\(codec): the Python reader differs: \(result)")
                }
            }
        }
    }
}
