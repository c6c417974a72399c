import Foundation
import Testing

/// Compares the Python reader with `embstore export` and `embstore get` on one table: the
/// reader's export, its lookups of `probe`, its view of the layers and the format version.
let compareScript = """
import json, numpy as np
from embstore_reader import Store
y = np.load(sys.argv[3]); yids = np.load(sys.argv[4])
probe = [int(v) for v in sys.argv[5].split(",") if v]
with Store(sys.argv[1]) as s:
    ids, x = s.export(sys.argv[2])
    rows, found = s.get(sys.argv[2], probe)
    layers = s.layers(sys.argv[2])
    version = s.format_version
same = x.shape == y.shape
diff = np.abs(x - y) if same else np.zeros((0, 1), np.float32)
print(json.dumps({
    "ids_equal": bool(np.array_equal(ids, yids)), "same_shape": same, "dtype": str(x.dtype),
    "identical": bool(np.array_equal(x, y)),
    "max_abs_diff": float(diff.max()) if diff.size else 0.0,
    "scale": float(np.abs(y).max()) if y.size else 0.0,
    "differing_ids": [int(i) for i in ids[(diff > 0).any(axis=1)]] if same and diff.size else [],
    "found": found.tolist(), "get": rows.astype(float).tolist(),
    "layers": layers, "version": version}))
"""

/// What the Python reader found, next to what `embstore` found.
struct ReaderComparison {
    let result: [String: Any]
    let exported: (ids: [UInt64], rows: [[Float]])
    /// `embstore get` of the probe ids: nil when not found.
    let got: [UInt64: [Float]?]

    var layers: [String: Any] { result["layers"] as? [String: Any] ?? [:] }
    var segmentKinds: [Int] { (layers["segments"] as? [[String: Any]] ?? []).compactMap { $0["kind"] as? Int } }
    var segmentIDs: [Int] { (layers["segments"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? Int } }
}

/// Exports `table` with the CLI, reads it with the Python reader, and checks that they agree:
/// the same ids, the same floats (bit for bit except the ids in `reduced`, which agree to
/// 1e-6 × max|x|), and the same rows found and missing for `probe`.
@discardableResult
func compareWithReader(_ store: URL, _ table: String, in dir: URL, probe: [UInt64], reduced: Set<UInt64> = []) throws -> ReaderComparison {
    let out = dir.appendingPathComponent("\(table)-\(UUID().uuidString).npy")
    let idsOut = dir.appendingPathComponent("\(table)-\(UUID().uuidString).ids.npy")
    try embstoreOK("export", store.path, "--table", table, "--out", out.path, "--ids-out", idsOut.path)
    let exported = (try NPYArray(contentsOf: idsOut).uint64s, try NPYArray(contentsOf: out).rows)
    let result = try pythonJSON(compareScript, [store.path, table, out.path, idsOut.path, probe.map(String.init).joined(separator: ",")])
    #expect(result["ids_equal"] as? Bool == true, "\(table): ids differ")
    #expect(result["same_shape"] as? Bool == true && result["dtype"] as? String == "float32", "\(table): \(result)")
    let differing = Set((result["differing_ids"] as? [NSNumber] ?? []).map(\.uint64Value))
    #expect(differing.isSubset(of: reduced), "\(table): rows differ from export: \(differing.subtracting(reduced).sorted().prefix(10))")
    let diff = result["max_abs_diff"] as? Double ?? .infinity, scale = result["scale"] as? Double ?? 0
    #expect(diff <= 1e-6 * scale, "\(table): reader differs from export by \(diff)")

    let run = try embstore(["get", store.path, "--table", table] + probe.map(String.init))
    #expect(run.status == 0 || run.status == 1, "\(run)")
    var got: [UInt64: [Float]?] = [:]
    for line in run.stdout.split(separator: "\n") {
        let parts = line.split(separator: ":", maxSplits: 1)
        let id = try #require(UInt64(parts[0]), "bad line \(line)")
        let rest = parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : ""
        got[id] = rest == "not found" ? .some(nil) : .some(try rest.split(separator: " ").map { try #require(Float(String($0))) })
    }
    let found = result["found"] as? [Bool] ?? []
    let rows = result["get"] as? [[Double]] ?? []
    #expect(found.count == probe.count && rows.count == probe.count)
    for (i, id) in probe.enumerated() where i < found.count && i < rows.count {
        let mine = got[id] ?? nil
        #expect(found[i] == (mine != nil), "\(table) id \(id): Python reader found \(found[i]), embstore get \(mine != nil)")
        if let mine, found[i] {
            let theirs = rows[i].map { Float($0) }
            if reduced.contains(id) {
                #expect(zip(mine, theirs).allSatisfy { abs($0 - $1) <= 1e-6 * Float(max(scale, 1)) }, "\(table) id \(id)")
            } else {
                #expect(mine == theirs, "\(table) id \(id): embstore get \(mine), Python reader \(theirs)")
            }
        }
    }
    return ReaderComparison(result: result, exported: exported, got: got)
}

// Tombstones cannot be made with the CLI (it has no delete); FormatDocTests.pythonReaderReadsEveryLayer
// checks the reader on them, and on sized segments, through the Swift API.
extension PythonReaderTests {
    /// Sparse ids across the whole u64 range (one segment of kind 3, a directory with a large
    /// shift), and sparse ids close together (a small shift).
    @Test func readerMatchesExportForSparseIDs() throws {
        try withTemporaryDirectory { dir in
            let store = dir.appendingPathComponent("store")
            let vectors = dir.appendingPathComponent("x.npy"), wideIDs = dir.appendingPathComponent("wide.npy")
            let closeIDs = dir.appendingPathComponent("close.npy")
            try writeFloat32(randomRows(300, 8, seed: 21), to: vectors)
            // Scattered over 0…2⁶⁴−1 (unsorted input): an odd multiplier is a bijection mod 2⁶⁴.
            let wide: [UInt64] = (0..<300).map { (i: Int) -> UInt64 in UInt64(i) &* 0x9E37_79B9_7F4A_7C15 }
            let close: [UInt64] = (0..<300).map { (i: Int) -> UInt64 in UInt64(1_000 + 5 * i + i % 3) }
            try writeUInt64(wide, to: wideIDs)
            try writeUInt64(close, to: closeIDs)
            try embstoreOK("ingest", store.path, "--table", "wide", "--vectors", vectors.path, "--ids", wideIDs.path, "--codec", "int8")
            try embstoreOK("ingest", store.path, "--table", "close", "--vectors", vectors.path, "--ids", closeIDs.path, "--codec", "fp16")
            for (table, ids) in [("wide", wide), ("close", close)] {
                let sorted = ids.sorted()
                let held: [UInt64] = [sorted[0], sorted[1], sorted[150], sorted[299]]
                let between: [UInt64] = [sorted[0] &+ 1, sorted[150] &+ 1, sorted[299] &- 1]
                let probe: [UInt64] = held + between + [UInt64.max, 0, 999]
                let c = try compareWithReader(store, table, in: dir, probe: probe)
                #expect(c.segmentKinds == [3], "\(table): \(c.layers)")
                #expect(c.exported.ids == sorted)
                #expect(c.got[sorted[150]] != .some(nil) && c.got[sorted[150] &+ 1] == .some(nil), "\(table): \(c.got)")
            }
        }
    }

    /// Three ingests into one table, of different codecs and overlapping ids, then a per-key
    /// ingest: three segments (newest first in the manifest) that shadow each other, and delta
    /// rows that shadow them all.
    @Test func readerMatchesExportForMixedTable() throws {
        try withTemporaryDirectory { dir in
            let store = dir.appendingPathComponent("store")
            let d = 12
            func ingest(_ name: String, ids: [UInt64], codec: String, seed: UInt64, layout: String = "segment") throws {
                let vectors = dir.appendingPathComponent("\(name).npy"), idsFile = dir.appendingPathComponent("\(name).ids.npy")
                try writeFloat32(randomRows(ids.count, d, seed: seed), to: vectors)
                try writeUInt64(ids, to: idsFile)
                try embstoreOK("ingest", store.path, "--table", "mixed", "--vectors", vectors.path, "--ids", idsFile.path,
                               "--codec", codec, "--layout", layout)
            }
            let first = (0..<300).map { UInt64($0) }                     // int8, dense
            let second = (200..<500).map { UInt64($0) }                  // fp16, dense: shadows 200…299
            let third = stride(from: 0, to: 600, by: 7).map { UInt64($0) } // reduced:4, sparse: shadows both
            let fourth = (590..<610).map { UInt64($0) }                  // int4, per key: shadows 595, 602
            try ingest("first", ids: first, codec: "int8", seed: 1)
            try ingest("second", ids: second, codec: "fp16", seed: 2)
            try ingest("third", ids: third, codec: "reduced:4", seed: 3)
            try ingest("fourth", ids: fourth, codec: "int4", seed: 4, layout: "per-key")
            let reduced = Set(third).subtracting(fourth)
            let probe: [UInt64] = [0, 1, 7, 199, 200, 203, 210, 299, 300, 301, 499, 500, 588, 595, 602, 609, 610, 10_000]
            let c = try compareWithReader(store, "mixed", in: dir, probe: probe, reduced: reduced)
            #expect(c.segmentIDs == [3, 2, 1] && c.segmentKinds == [3, 1, 1], "\(c.layers)")
            #expect(c.layers["delta"] as? Int == 20 && c.layers["tombstones"] as? Int == 0, "\(c.layers)")
            #expect(c.exported.ids == Set(first + second + third + fourth).sorted())
            #expect(c.got[500] == .some(nil) && c.got[10_000] == .some(nil) && c.got[588] != .some(nil))

            // Each id has the row of the newest layer that holds it: compare with single-table
            // exports of the same inputs.
            var expected: [UInt64: [Float]] = [:]
            for (name, ids, codec, layout) in [("first", first, "int8", "segment"), ("second", second, "fp16", "segment"),
                                               ("third", third, "reduced:4", "segment"), ("fourth", fourth, "int4", "per-key")] {
                let own = dir.appendingPathComponent("own-\(name)")
                try embstoreOK("ingest", own.path, "--table", "t", "--vectors", dir.appendingPathComponent("\(name).npy").path,
                               "--ids", dir.appendingPathComponent("\(name).ids.npy").path, "--codec", codec, "--layout", layout)
                let alone = try exportTable(own, "t", in: dir)
                #expect(alone.ids == ids.sorted())
                for (id, row) in zip(alone.ids, alone.rows) { expected[id] = row }
            }
            for (id, row) in zip(c.exported.ids, c.exported.rows) where !reduced.contains(id) {
                #expect(row == expected[id], "id \(id) is not the newest layer's row")
            }
        }
    }

    /// A version-1 store (no segments databases, no seals; what embstore wrote before segments)
    /// is read as delta only; a segment ingest upgrades it to version 4 (blockmix64), not 5 (a
    /// store below 5 is never sealed), and the table created under version 1 that was not
    /// written to keeps no segments database. A tombstone in a store marked version 1 (no writer
    /// of FORMAT.md makes one) is read as version 2 reads it, by the reader and by embstore alike.
    ///
    /// The CLI creates stores at version 5 only, so the version-1 store is made from one: its
    /// per-key rows (int8 and fp32, tags of version 1) are what a version-1 writer wrote, less
    /// their seals; the script checks each seal as it strips it and writes the 16-byte header.
    @Test func versionOneStoreIsReadAndUpgraded() throws {
        try withTemporaryDirectory { dir in
            let store = dir.appendingPathComponent("store")
            let vectors = dir.appendingPathComponent("x.npy"), later = dir.appendingPathComponent("later.npy")
            let laterIDs = dir.appendingPathComponent("later.ids.npy")
            try writeFloat32(randomRows(50, 4, seed: 31), to: vectors)
            try writeFloat32(randomRows(30, 4, seed: 32), to: later)
            try writeUInt64((0..<30).map { UInt64(40 + $0) }, to: laterIDs)
            try embstoreOK("ingest", store.path, "--table", "a", "--vectors", vectors.path, "--codec", "int8", "--layout", "per-key")
            try embstoreOK("ingest", store.path, "--table", "b", "--vectors", vectors.path, "--codec", "fp32", "--layout", "per-key")
            let downgrade = """
                import json, lmdb, struct, zlib
                env = lmdb.open(sys.argv[1], max_dbs=16)
                with env.begin() as txn:
                    names = [k for k, _ in txn.cursor()]
                assert sorted(names) == [b"meta", b"t1/bases", b"t1/buckets", b"t1/rows", b"t1/segments",
                                         b"t2/bases", b"t2/buckets", b"t2/rows", b"t2/segments"], names
                dbs = {name: env.open_db(name, integerkey=name != b"meta") for name in names}
                def strip(name, key, value):
                    assert len(value) >= 4 and struct.unpack_from("<I", value, len(value) - 4)[0] == zlib.crc32(key + value[:-4]), (name, key, value)
                    return value[:-4]
                stripped = 0
                with env.begin(write=True) as txn:
                    for name in (b"t1/segments", b"t2/segments"):
                        assert txn.stat(dbs[name])["entries"] == 0, name
                        txn.drop(dbs[name], delete=True)
                    for name in names:
                        if name.endswith(b"/segments"):
                            continue
                        items = list(txn.cursor(db=dbs[name]))
                        for key, value in items:
                            payload = strip(name, key, value)
                            if name == b"meta" and key == b"format":
                                assert payload[:8] == b"EMBSTORE" and struct.unpack_from("<I", payload, 8)[0] == 5, payload
                                payload = payload[:8] + struct.pack("<I", 1) + payload[12:]
                            txn.put(key, payload, db=dbs[name])
                            stripped += 1
                env.close()
                print(json.dumps({"stripped": stripped}))
                """
            let stripped = try pythonJSON(downgrade, [store.path])
            #expect(stripped["stripped"] as? Int == 4 + 50 + 50, "format, next_table_id, two schemas, 100 rows: \(stripped)")
            let probe: [UInt64] = [0, 3, 25, 49, 50, 69]
            for table in ["a", "b"] {
                let c = try compareWithReader(store, table, in: dir, probe: probe)
                #expect(c.result["version"] as? Int == 1 && c.segmentKinds.isEmpty && c.layers["delta"] as? Int == 50, "\(table): \(c.result)")
            }

            // A tombstone (unsealed, as every value of a version-1 store) in a copy: id 3 is
            // missing for the reader and for embstore, and the store stays version 1.
            let marked = dir.appendingPathComponent("marked")
            try FileManager.default.copyItem(at: store, to: marked)
            try python("""
                import lmdb, struct
                env = lmdb.open(sys.argv[1], max_dbs=16)
                rows = env.open_db(b"t1/rows", integerkey=True)
                with env.begin(write=True) as txn:
                    assert txn.put(struct.pack("<Q", 3), bytes([8]), db=rows, overwrite=True)
                env.close()
                """, [marked.path])
            let m = try compareWithReader(marked, "a", in: dir, probe: probe)
            #expect(m.result["version"] as? Int == 1 && m.layers["tombstones"] as? Int == 1 && m.layers["rows"] as? Int == 49, "\(m.result)")
            #expect(m.got[3] == .some(nil) && !m.exported.ids.contains(3), "\(m.got)")
            try embstoreOK("ingest", store.path, "--table", "b", "--vectors", later.path, "--ids", laterIDs.path, "--codec", "int4")
            let a = try compareWithReader(store, "a", in: dir, probe: probe)
            #expect(a.result["version"] as? Int == 4 && a.segmentKinds.isEmpty && a.layers["delta"] as? Int == 50, "\(a.result)")
            let b = try compareWithReader(store, "b", in: dir, probe: probe)
            #expect(b.segmentKinds == [1] && b.layers["delta"] as? Int == 40, "the segment replaces delta rows 40…49: \(b.layers)")
            #expect(b.exported.ids == (0..<70).map { UInt64($0) })
            let databases = try pythonJSON("""
                import json, lmdb
                env = lmdb.open(sys.argv[1], readonly=True, max_dbs=16, lock=True)
                with env.begin() as txn:
                    print(json.dumps({"names": sorted(k.decode() for k, _ in txn.cursor())}))
                """, [store.path])
            #expect(databases["names"] as? [String] == ["meta", "t1/bases", "t1/buckets", "t1/rows", "t2/bases", "t2/buckets", "t2/rows", "t2/segments"],
                    "\(databases)")
        }
    }

    /// Every kind of sealed value the Python reader reads (format version 5, FORMAT.md "Record
    /// seals"): one flipped bit in it — in a field a reader otherwise ignores where there is one —
    /// a delta row filed under another id, a value cut short of its seal and one without a
    /// seal. The reader refuses each with a `SealError` naming the database and the key, on
    /// export and on lookups, and `embstore verify` fails on each too.
    @Test func pythonReaderRefusesEveryBrokenSeal() throws {
        try withTemporaryDirectory { dir in
            let store = dir.appendingPathComponent("store")
            try makeTable(in: dir, n: 300, d: 16, seed: 8)
            let vectors = dir.appendingPathComponent("table.npy")
            // Table ids follow creation: t1 buckets (bucket rows), t2 reduced (a PCA basis),
            // t3 keyed (delta rows), t4 tc (a tc basis and a tc model).
            for (name, codec, layout) in [("buckets", "bucket:16:scaled", "segment"), ("reduced", "reduced:4", "segment"),
                                          ("keyed", "int8", "per-key"), ("tc", "tc:3", "segment")] {
                try embstoreOK("ingest", store.path, "--table", name, "--vectors", vectors.path, "--codec", codec, "--layout", layout)
            }
            let damage = """
                import lmdb, struct
                store, name, kind, key, action = sys.argv[1:6]
                env = lmdb.open(store, max_dbs=32)
                db = env.open_db(name.encode(), integerkey=kind == "int")
                k = key.encode() if kind == "str" else struct.pack("<Q", int(key))
                what, _, arg = action.partition(":")
                with env.begin(write=True) as txn:
                    value = txn.get(k, db=db)
                    assert value is not None, (name, key)
                    if what == "flip":
                        b = bytearray(value); b[int(arg)] ^= 0x01; txn.put(k, bytes(b), db=db)
                    elif what == "move":
                        assert txn.get(struct.pack("<Q", int(arg)), db=db) is None
                        txn.delete(k, db=db); txn.put(struct.pack("<Q", int(arg)), value, db=db)
                    elif what == "cut":
                        txn.put(k, value[:int(arg)], db=db)
                    elif what == "unseal":
                        txn.put(k, value[:-4], db=db)
                    else:
                        raise SystemExit("unknown action " + action)
                env.close()
                """
            let read = """
                import json, embstore_reader
                out = {}
                for path in ("export", "get"):
                    try:
                        with embstore_reader.Store(sys.argv[1]) as s:
                            if path == "export":
                                s.export(sys.argv[2])
                            else:
                                s.get(sys.argv[2], list(range(300)) + [1000])
                        out[path] = {"type": None, "message": ""}
                    except embstore_reader.FormatError as e:
                        out[path] = {"type": type(e).__name__, "message": str(e)}
                print(json.dumps(out))
                """
            for table in ["buckets", "reduced", "keyed", "tc"] {
                let sound = try pythonJSON(read, [store.path, table])
                #expect((sound["export"] as? [String: Any])?["type"] is NSNull && (sound["get"] as? [String: Any])?["type"] is NSNull,
                        "\(table): \(sound)")
            }
            // (database, key kind, key, damage, table read, what the error must name)
            let cases: [(String, String, String, String, String, String)] = [
                ("meta", "str", "format", "flip:12", "keyed", "key 'format'"),            // the reserved u32
                ("meta", "str", "next_table_id", "flip:0", "keyed", "key 'next_table_id'"),
                ("meta", "str", "table/keyed", "flip:20", "keyed", "key 'table/keyed'"), // next bucket id
                ("t1/segments", "int", "0", "flip:0", "buckets", "key 0 ("),              // the manifest
                ("t1/buckets", "int", "0", "flip:1", "buckets", "key 0 ("),
                ("t2/bases", "int", "1", "flip:8", "reduced", "key 1 ("),
                ("t4/bases", "int", "1", "flip:20", "tc", "key 1 ("),                     // tc basis
                ("t4/bases", "int", "2", "flip:16", "tc", "key 2 ("),                     // tc model's target bits
                ("t3/rows", "int", "7", "flip:1", "keyed", "key 7 ("),
                ("t3/rows", "int", "7", "move:1000", "keyed", "key 1000 ("),
                ("t3/rows", "int", "8", "cut:3", "keyed", "key 8 ("),
                ("t3/rows", "int", "9", "unseal", "keyed", "key 9 ("),
            ]
            for (i, (database, kind, key, action, table, named)) in cases.enumerated() {
                let damaged = dir.appendingPathComponent("damaged-\(i)")
                try FileManager.default.copyItem(at: store, to: damaged)
                try python(damage, [damaged.path, database, kind, key, action])
                let result = try pythonJSON(read, [damaged.path, table])
                for path in ["export", "get"] {
                    let r = result[path] as? [String: Any] ?? [:]
                    let message = r["message"] as? String ?? ""
                    #expect(r["type"] as? String == "SealError" && message.contains("'\(database)'") && message.contains(named),
                            "\(database) \(key) \(action), \(path): \(r)")
                }
                let verify = try embstore("verify", damaged.path)
                #expect(verify.status != 0, "\(database) \(key) \(action): embstore verify passed: \(verify)")
            }
        }
    }

    /// A changed byte in a segment's data part: the Python reader refuses the table naming the
    /// segment, and `embstore verify` reports it.
    @Test func damagedSegmentIsRefused() throws {
        try withTemporaryDirectory { dir in
            let store = dir.appendingPathComponent("store"), vectors = dir.appendingPathComponent("x.npy")
            try writeFloat32(randomRows(40, 6, seed: 41), to: vectors)
            try embstoreOK("ingest", store.path, "--table", "t", "--vectors", vectors.path, "--codec", "fp32")
            #expect(try embstore("verify", store.path).status == 0)
            let out = try python("""
                import lmdb, struct, embstore_reader
                env = lmdb.open(sys.argv[1], max_dbs=8)
                segments = env.open_db(b"t1/segments", integerkey=True)
                key = struct.pack("<Q", (1 << 32) | 1)
                with env.begin(write=True) as txn:
                    part = bytearray(txn.get(key, db=segments))
                    part[3] ^= 0x40
                    txn.put(key, bytes(part), db=segments)
                env.close()
                try:
                    with embstore_reader.Store(sys.argv[1]) as s:
                        s.export("t")
                    print("read")
                except embstore_reader.SegmentChecksumError as e:
                    print("refused:", e)
                """, [store.path])
            #expect(out.contains("refused:") && out.contains("'t'") && out.contains("segment 1") && out.contains("checksum"), "\(out)")
            let verify = try embstore("verify", store.path)
            #expect(verify.status == 1 && verify.stdout.contains("segment 1"), "\(verify)")
        }
    }
}
