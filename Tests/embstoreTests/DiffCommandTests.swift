import Foundation
import Testing

/// `embstore diff` as a user runs it, its figures recomputed with NumPy from the two stores'
/// exports, and its refusals.
@Suite("diff compares two stores, and NumPy agrees")
struct DiffCommandTests {
    static let n = 600, d = 16

    /// Store A: ids 0..<600 as int8. Store B: ids 0..<400 as int4, 400..<540 as fp16, 540..<550
    /// as int8 (the same records as A's), and ids 1000..<1010 that A lacks. Counts for ids
    /// 0..<600 in freq.npy.
    static func stores(_ dir: URL) throws -> (a: String, b: String) {
        try makeTable(in: dir, n: n, d: d, seed: 5)
        let a = dir.appendingPathComponent("A").path, b = dir.appendingPathComponent("B").path
        try python("""
            import numpy as np
            x = np.load(sys.argv[1] + '/table.npy')
            for name, rows, ids in [('b1', x[:400], np.arange(400)), ('b2', x[400:540], np.arange(400, 540)),
                                    ('b3', x[540:550], np.arange(540, 550)), ('b4', x[:10] * 2, np.arange(1000, 1010))]:
                np.save(sys.argv[1] + '/' + name + '.npy', rows)
                np.save(sys.argv[1] + '/' + name + '_ids.npy', ids.astype(np.uint64))
            np.save(sys.argv[1] + '/freq.npy', (np.arange(600) * 7919 % 613).astype(np.float64))
            """, [dir.path])
        try embstoreOK("ingest", a, "--table", "t", "--vectors", dir.appendingPathComponent("table.npy").path, "--codec", "int8")
        for (part, codec) in [("b1", "int4"), ("b2", "fp16"), ("b3", "int8"), ("b4", "int8")] {
            try embstoreOK("ingest", b, "--table", "t", "--vectors", dir.appendingPathComponent("\(part).npy").path,
                           "--ids", dir.appendingPathComponent("\(part)_ids.npy").path, "--codec", codec)
        }
        return (a, b)
    }

    @Test func figuresAgreeWithNumPyOnTheExports() throws {
        try withTemporaryDirectory { dir in
            let (a, b) = try Self.stores(dir)
            let freq = dir.appendingPathComponent("freq.npy").path
            let svg = dir.appendingPathComponent("diff.svg").path
            let run = try embstoreOK("diff", a, b, "--freq", freq, "--query-count", "120", "--worst", "5", "--json", "--plot", svg)
            let out = dir.appendingPathComponent("diff.json")
            try run.stdout.write(to: out, atomically: true, encoding: .utf8)
            for (side, store) in [("a", a), ("b", b)] {
                try embstoreOK("export", store, "--table", "t", "--out", dir.appendingPathComponent("\(side).npy").path,
                               "--ids-out", dir.appendingPathComponent("\(side)_ids.npy").path)
            }
            // Every figure of the JSON, recomputed from the exports; the last line says what failed.
            let check = try pythonJSON("""
                import json
                import numpy as np
                d = sys.argv[1]
                r = json.load(open(d + '/diff.json'))
                t = r['tables'][0]['diff']
                a, ia = np.load(d + '/a.npy').astype(np.float64), np.load(d + '/a_ids.npy')
                b, ib = np.load(d + '/b.npy').astype(np.float64), np.load(d + '/b_ids.npy')
                f_all = np.load(d + '/freq.npy')
                bad = []
                def same(name, ours, theirs, tol=1e-9):
                    if ours is None or theirs is None:
                        if ours is not theirs: bad.append(f'{name}: {ours} vs {theirs}')
                    elif abs(ours - theirs) > tol * max(1.0, abs(theirs)): bad.append(f'{name}: {ours} vs numpy {theirs}')
                common, pa, pb = np.intersect1d(ia, ib, return_indices=True)
                only_a, only_b = np.setdiff1d(ia, ib), np.setdiff1d(ib, ia)
                for key, value in [('rows_a', len(ia)), ('rows_b', len(ib)), ('common', len(common)),
                                   ('only_a', len(only_a)), ('only_b', len(only_b))]:
                    if t[key] != value: bad.append(f'{key}: {t[key]} vs {value}')
                if t['only_a_ids'] != only_a[:5].tolist() or t['only_b_ids'] != only_b[:5].tolist(): bad.append('only ids')
                A, B = a[pa], b[pb]
                na, nb = np.linalg.norm(A, axis=1), np.linalg.norm(B, axis=1)
                cos = (A * B).sum(1) / (na * nb)
                rel = np.linalg.norm(A - B, axis=1) / na
                identical = (np.load(d + '/a.npy')[pa].view(np.uint32) == np.load(d + '/b.npy')[pb].view(np.uint32)).all(1)
                f = np.where(common < len(f_all), f_all[np.minimum(common, len(f_all) - 1)], 0.0)
                order = np.lexsort((np.arange(len(common)), -f))       # hottest first, ties by id
                decile = np.empty(len(common), int); decile[order] = np.arange(len(common)) * 10 // len(common)
                edges = np.array(t['errors']['histogram']['edges'])
                def check_errors(name, e, rows):
                    if e['rows'] != rows.sum(): bad.append(f'{name} rows')
                    if e['identical_rows'] != identical[rows].sum(): bad.append(f'{name} identical {e["identical_rows"]} vs {identical[rows].sum()}')
                    for key, values in [('cosine', cos[rows]), ('relative_l2', rel[rows])]:
                        same(f'{name} {key} mean', e[key]['mean'], values.mean())
                        for label, q in [('min', 0), ('p0.1', .001), ('p1', .01), ('p10', .1), ('p50', .5), ('p90', .9),
                                         ('p99', .99), ('p99.9', .999), ('max', 1)]:
                            same(f'{name} {key} {label}', e[key][label], np.quantile(values, q))
                    v = rel[rows]
                    counts = np.bincount(np.searchsorted(edges, v[v > 0], side='right'), minlength=len(edges) + 1)
                    if e['histogram']['counts'] != counts.tolist() or e['histogram']['zero_rows'] != int((v == 0).sum()):
                        bad.append(f'{name} histogram')
                check_errors('all', t['errors'], np.ones(len(common), bool))
                if len(t['deciles']) != 10: bad.append('deciles')
                for dec in t['deciles']:
                    rows = decile == dec['decile'] - 1
                    check_errors(f'decile {dec["decile"]}', dec['errors'], rows)
                    same(f'decile {dec["decile"]} share', dec['freq_share'], f[rows].sum() / f.sum())
                    if dec['freq_min'] != f[rows].min() or dec['freq_max'] != f[rows].max(): bad.append('decile freq range')
                # Worst rows: largest relative L2, ties by id.
                worst = np.lexsort((common, -rel))[:5]
                if [w['id'] for w in t['worst']] != common[worst].tolist(): bad.append(f'worst {t["worst"]}')
                # Codec changes, as loaded.
                changes = {(c['from'], c['to']): c['rows'] for c in t['codec_changes']}
                if changes != {('int8', 'int4'): 400, ('int8', 'fp16'): 140, ('int8', 'int8'): 10}: bad.append(f'changes {changes}')
                if t['changed_codec_rows'] != 540: bad.append('changed rows')
                # Top-10 agreement of the query rows JSON names, by exact cosine in float64.
                def top(M, q):
                    U = M / np.linalg.norm(M, axis=1, keepdims=True)
                    s = U @ U[q]; s[q] = -np.inf
                    return set(np.lexsort((np.arange(len(M)), -s))[:10].tolist())
                pos = {int(i): k for k, i in enumerate(common)}
                for qs in t['neighbours']:
                    agree = [len(top(A, pos[i]) & top(B, pos[i])) / 10 for i in qs['ids']]
                    same(qs['name'] + ' agreement', qs['agreement'], float(np.mean(agree)))
                    for dec in t['deciles']:
                        g = next(x for x in dec['neighbours'] if x['set'] == qs['name'])
                        mine = [x for x, i in zip(agree, qs['ids']) if decile[pos[i]] == dec['decile'] - 1]
                        if g['queries'] != len(mine): bad.append('decile queries')
                        same('decile agreement', g['agreement'], float(np.mean(mine)) if mine else None)
                if [q['name'] for q in t['neighbours']] != ['hot', 'uniform'] or t['k'] != 10: bad.append('sets')
                hot = t['neighbours'][0]['ids']
                if len(set(hot)) != 120 or any(f[pos[i]] <= 0 for i in hot): bad.append('hot draw')
                print(json.dumps({'bad': bad, 'agreement': t['neighbours'][1]['agreement']}))
                """, [dir.path])
            #expect((check["bad"] as? [String]) == [], "\(check["bad"] ?? "")")
            // int4 rows move some neighbours, but most stay.
            let agreement = check["agreement"] as? Double ?? 0
            #expect(agreement > 0.5 && agreement < 1, "\(agreement)")

            // Bytes: each side's table on disk as `embstore stats` counts it.
            let result = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
            let table = ((result?["tables"] as? [[String: Any]])?.first?["diff"] as? [String: Any]) ?? [:]
            for (side, store) in [("bytes_a", a), ("bytes_b", b)] {
                let all = try JSONSerialization.jsonObject(with: Data(try embstoreOK("stats", store, "--table", "t", "--json").stdout.utf8)) as? [String: Any]
                let stats = (all?["tables"] as? [[String: Any]])?.first
                let bytes = table[side] as? [String: Any]
                #expect(bytes?["disk_bytes"] as? Int == stats?["disk_bytes"] as? Int, "\(side): \(bytes ?? [:]) vs \(stats ?? [:])")
            }
            #expect((table["bytes_b"] as? [String: Any])?["rows"] as? Int == 560)

            // The chart: every decile and both stores' bars.
            let chart = try String(contentsOfFile: svg, encoding: .utf8)
            for fragment in ["decile 1<", "decile 10<", "(b) Bytes on disk", ">int4<", ">fp16<", "median "] {
                #expect(chart.contains(fragment), "the chart lacks \(fragment)")
            }
            // The text report.
            let text = try embstoreOK("diff", a, b, "--freq", freq, "--query-count", "50").stdout
            for fragment in ["only in A 50 (ids 550, 551", "only in B 10 (ids 1000", "int4   400  72.73%", "top-10 neighbour agreement", "worst rows", "decile 10"] {
                #expect(text.contains(fragment), "the text lacks '\(fragment)':\n\(text)")
            }
        }
    }

    @Test func sourceScoresBothStoresAndIdsRestrictTheRows() throws {
        try withTemporaryDirectory { dir in
            let (a, b) = try Self.stores(dir)
            try writeInt64((0..<300).map { Int64($0) }, to: dir.appendingPathComponent("some.npy"))
            try python("import numpy as np; np.save(sys.argv[1] + '/x300.npy', np.load(sys.argv[1] + '/table.npy')[:300])", [dir.path])
            let run = try embstoreOK("diff", a, b, "--table", "t", "--source", dir.appendingPathComponent("x300.npy").path,
                                     "--ids", dir.appendingPathComponent("some.npy").path, "--query-count", "40", "--json")
            let result = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
            let entry = (result?["tables"] as? [[String: Any]])?.first ?? [:]
            let diff = entry["diff"] as? [String: Any] ?? [:]
            #expect(diff["common"] as? Int == 300 && diff["only_a"] as? Int == 0 && diff["only_b"] as? Int == 0)
            // Each side's evaluation is embstore eval's on that store.
            for (key, store) in [("source_a", a), ("source_b", b)] {
                let eval = try JSONSerialization.jsonObject(with: Data(try embstoreOK(
                    "eval", store, "--table", "t", "--source", dir.appendingPathComponent("x300.npy").path,
                    "--ids", dir.appendingPathComponent("some.npy").path, "--query-count", "40", "--json").stdout.utf8)) as? [String: Any]
                let mine = entry[key] as? [String: Any]
                #expect((mine?["overall"] as? NSDictionary) == (eval?["overall"] as? NSDictionary), "\(key)")
                #expect((mine?["query_sets"] as? NSArray) == (eval?["query_sets"] as? NSArray), "\(key)")
            }
        }
    }

    @Test func badInputIsRefusedWithAClearMessage() throws {
        try withTemporaryDirectory { dir in
            let (a, b) = try Self.stores(dir)
            try embstoreOK("ingest", b, "--table", "other", "--vectors", dir.appendingPathComponent("b1.npy").path, "--codec", "int8")
            for store in [a, b] {   // a second table both have
                try embstoreOK("ingest", store, "--table", "u", "--vectors", dir.appendingPathComponent("b2.npy").path, "--codec", "fp16")
            }
            try writeInt64([1, 2, 3], to: dir.appendingPathComponent("short.npy"))
            try writeInt64([1, 2], to: dir.appendingPathComponent("two.npy"))
            try writeFloat32(randomRows(5, 8, seed: 1), to: dir.appendingPathComponent("narrow.npy"))
            let cases: [([String], String)] = [
                (["--table", "other"], "has no table 'other'"),
                (["--table", "t", "--freq", dir.appendingPathComponent("short.npy").path, "--ids", dir.appendingPathComponent("two.npy").path],
                 "has 3 counts but"),
                (["--table", "t", "--source", dir.appendingPathComponent("narrow.npy").path], "has rows of dimension 8, but table 't' has dimension 16"),
                (["--source", dir.appendingPathComponent("narrow.npy").path], "name it with --table"),
                (["--query-count", "0"], "--query-count must be at least 1"),
            ]
            for (extra, message) in cases {
                let run = try embstore(["diff", a, b] + extra)
                #expect(run.status != 0 && run.stderr.contains(message), "\(extra): \(run)")
            }
            let missing = try embstore(["diff", a, dir.appendingPathComponent("nothing").path])
            #expect(missing.status != 0 && missing.stderr.contains("is not an embstore store"), "\(missing)")
        }
    }
}
