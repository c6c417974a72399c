import EmbeddingCodecs
import Foundation
import Testing
@testable import EmbeddingStore

/// `Store.evaluate` on a small mixed-codec table, every figure checked against NumPy computed
/// from `Store.export` (not from the Reader path evaluate uses), and its refusals.
@Suite struct EvaluationTests {
    static let d = 32
    static let count = 3000

    static let numpyAvailable: Bool = (try? PythonReader.run("import numpy\njson.dump({}, open(sys.argv[1], 'w'))", [])) != nil

    /// The fixture: source rows (clustered, a zero row, five copies of row 10), sparse ids in
    /// shuffled order, frequencies with zeros and ties, and a table of five forms: rows 0..<2000
    /// loaded int8, rows 2000..<3000 loaded tc:2 (a second segment, disjoint ids), then rows
    /// ≡ 1 (mod 50) put as fp16 and rows ≡ 2 (mod 50) as int4, two tc rows put as fp32, and five
    /// ids the source does not have.
    struct Fixture {
        let store: Store
        let table: Table
        let rows: [Float]
        let ids: [UInt64]
        let frequencies: [Double]
        /// The form each source row should be reported under.
        let forms: [String]
    }

    static func fixture(_ dir: TemporaryDirectory) throws -> Fixture {
        let d = Self.d, count = Self.count
        var rows = embeddingRows(count: count, dimension: d, seed: 21)
        for j in 0..<d { rows[5 * d + j] = 0 }
        for copy in 20..<25 { for j in 0..<d { rows[copy * d + j] = rows[10 * d + j] } }
        // Odd multiplier mod 2^40: distinct, sparse, in no particular order.
        let ids = (0..<UInt64(count)).map { ($0 &* 2_654_435_761 &+ 12_345) & (1 << 40 - 1) }
        var random = SeededRandom(seed: 5)
        let frequencies = (0..<count).map { row -> Double in
            if row % 17 == 0 { return 0 }
            let rank = Double(random.next() % UInt64(count)) + 1
            return (1e6 / pow(rank, 1.2)).rounded(.down)         // many ties among small counts
        }
        let store = try makeStore(dir, mapSize: 1 << 26)
        try rows.withUnsafeBufferPointer { all in
            try store.load(table: "t", ids: Array(ids[0..<2000]), rows: UnsafeBufferPointer(rebasing: all[0..<2000 * d]),
                           count: 2000, dimension: d, codec: .int8)
            try store.load(table: "t", ids: Array(ids[2000...]), rows: UnsafeBufferPointer(rebasing: all[2000 * d..<count * d]),
                           count: 1000, dimension: d, codec: .transformCoded(bitsPerValue: 2))
        }
        let table = try store.table("t")
        var forms = (0..<count).map { $0 < 2000 ? "int8" : "tc:2" }
        try store.write { batch in
            for row in 0..<2000 where row % 50 == 1 || row % 50 == 2 {
                let codec: Codec = row % 50 == 1 ? .fp16 : .int4
                try batch.put(table, id: ids[row], vector: Array(rows[row * d..<(row + 1) * d]), codec: codec)
                forms[row] = row % 50 == 1 ? "fp16" : "int4"
            }
            for row in [2001, 2999] {
                try batch.put(table, id: ids[row], vector: Array(rows[row * d..<(row + 1) * d]), codec: .fp32)
                forms[row] = "fp32"
            }
            for extra in 0..<5 { try batch.put(table, id: 1 << 41 + UInt64(extra), vector: [Float](repeating: 1, count: d), codec: .fp32) }
        }
        return Fixture(store: store, table: table, rows: rows, ids: ids, frequencies: frequencies, forms: forms)
    }

    static func evaluate(_ f: Fixture, frequencies: Bool = true, configure: (inout EvaluationOptions) -> Void = { _ in }) throws -> EvaluationReport {
        var options = EvaluationOptions()
        options.queryCount = 150
        options.seed = 7
        options.dotSampleRows = 5000      // more than the rows: the sample is every row
        options.threads = 2
        configure(&options)
        return try f.rows.withUnsafeBufferPointer {
            try f.store.evaluate(f.table, rows: $0, count: count, dimension: d, ids: f.ids,
                                 frequencies: frequencies ? f.frequencies : nil, options: options)
        }
    }

    /// Every number of the report against NumPy on the exported table. Tolerances (relative):
    /// row errors 1e-10 (both sides sum float64 in different orders); recall exact (both count
    /// shared neighbours; neighbours are float64 cosines with ties by smaller index, the query
    /// excluded, as ../shared/data/npm/README.md scores); dot-product errors 1e-4 (evaluate forms
    /// the products in float32; see DotErrors); decile bounds and shares 1e-12.
    @Test(.enabled(if: EvaluationTests.numpyAvailable, "python3 with numpy is not installed; skipping"))
    func everyFigureMatchesNumpy() throws {
        let dir = TemporaryDirectory()
        let f = try Self.fixture(dir)
        let report = try Self.evaluate(f)
        #expect(report.rows == Self.count && report.storeRows == Self.count + 5 && report.k == 10)
        #expect(report.dotSampleRows == Self.count && report.frequencyWeighted)
        #expect(report.forms.map(\.form) == ["fp32", "fp16", "int8", "int4", "tc:2"])
        #expect(report.querySets.map(\.name) == ["hot", "uniform"] && report.querySets.allSatisfy { $0.queries == 150 })
        #expect(report.deciles.map(\.decile) == Array(1...10) && report.deciles.allSatisfy { $0.errors.rows == 300 })

        let (exportedIDs, exported) = try f.store.export(f.table)
        func write<T>(_ values: [T], _ name: String) throws {
            try values.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: dir.file(name))) }
        }
        try write(f.rows, "source.f32")
        try write(exported, "export.f32")
        try write(exportedIDs, "export.u64")
        try write(f.ids, "ids.u64")
        try write(f.frequencies, "freq.f64")
        try JSONSerialization.data(withJSONObject: ["n": Self.count, "d": Self.d, "forms": f.forms])
            .write(to: URL(fileURLWithPath: dir.file("meta.json")))
        try JSONEncoder().encode(report).write(to: URL(fileURLWithPath: dir.file("report.json")))

        let result = try PythonReader.run(Self.numpyCheck, [dir.path])
        let mismatches = result["mismatches"] as? [String] ?? ["no mismatches list: \(result)"]
        #expect(mismatches.isEmpty, "\(mismatches.prefix(20).joined(separator: "\n"))")
        let checked = result["checked"] as? Int ?? 0
        #expect(checked > 250, "only \(checked) figures checked")
        // Not vacuous: the forms differ, and the coarse ones lose neighbours.
        let recall = Dictionary(uniqueKeysWithValues: report.forms.map { ($0.form, $0.queries[1].recall) })
        #expect(report.overall.mse! > 0 && report.forms[0].errors.mse == 0, "fp32 rows are exact")
        #expect((recall["tc:2"] ?? 1)! < (recall["int8"] ?? 0)!, "\(recall)")
    }

    static let numpyCheck = """
        import numpy as np
        w = sys.argv[2]
        meta = json.load(open(w + '/meta.json')); rep = json.load(open(w + '/report.json'))
        n, d = meta['n'], meta['d']; forms = np.array(meta['forms'])
        X = np.fromfile(w + '/source.f32', '<f4').reshape(n, d).astype(np.float64)
        E = np.fromfile(w + '/export.f32', '<f4').reshape(-1, d); eid = np.fromfile(w + '/export.u64', '<u8')
        ids = np.fromfile(w + '/ids.u64', '<u8'); f = np.fromfile(w + '/freq.f64', '<f8')
        pos = {int(v): i for i, v in enumerate(eid)}
        Y = E[[pos[int(v)] for v in ids]].astype(np.float64)
        out = {'mismatches': [], 'checked': 0}
        def close(name, got, want, rtol):
            out['checked'] += 1
            if got is None or want is None:
                if got is not None or want is not None: out['mismatches'].append(f'{name}: got {got}, want {want}')
            elif not abs(got - want) <= rtol * abs(want): out['mismatches'].append(f'{name}: got {got!r}, want {want!r}')

        nx, ny = np.linalg.norm(X, axis=1), np.linalg.norm(Y, axis=1)
        err2 = ((X - Y) ** 2).sum(1); mse = err2 / d
        both, neither = (nx > 0) & (ny > 0), (nx == 0) & (ny == 0)
        cos = np.where(both, (X * Y).sum(1) / np.where(both, nx * ny, 1), np.where(neither, 1.0, 0.0))
        rel = np.sqrt(err2) / np.where(nx > 0, nx, 1)
        def mean(v, m, wt=None):
            if wt is None: return float(v[m].mean()) if m.any() else None
            s = wt[m].sum(); return float((wt[m] * v[m]).sum() / s) if s > 0 else None
        def errors(e, m, name):
            close(name + '.rows', e['rows'], int(m.sum()), 0)
            close(name + '.zero_source_rows', e['zero_source_rows'], int((m & (nx == 0)).sum()), 0)
            close(name + '.mse', e.get('mse'), mean(mse, m), 1e-10)
            close(name + '.mean_cosine', e.get('mean_cosine'), mean(cos, m), 1e-10)
            close(name + '.mean_relative_l2', e.get('mean_relative_l2'), mean(rel, m & (nx > 0)), 1e-10)
            close(name + '.weighted_mse', e.get('weighted_mse'), mean(mse, m, f), 1e-10)
            close(name + '.weighted_mean_cosine', e.get('weighted_mean_cosine'), mean(cos, m, f), 1e-10)
            close(name + '.weighted_mean_relative_l2', e.get('weighted_mean_relative_l2'), mean(rel, m & (nx > 0), f), 1e-10)

        # Neighbours as ../shared/data/npm/README.md's recall_at_10 ranks them.
        def top10(M, q):
            x = M / np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-300)
            sim = x[q] @ x.T
            sim[np.arange(len(q)), q] = -np.inf
            return np.argsort(-sim, axis=1, kind='stable')[:, :10]
        queries = sorted({r for s in rep['query_sets'] for r in s['rows']})
        qi = {r: i for i, r in enumerate(queries)}
        truth, found = top10(X, np.array(queries)), top10(Y, np.array(queries))
        hits = {r: len(np.intersect1d(truth[qi[r]], found[qi[r]])) for r in queries}
        # Dot products against every row but the query itself.
        dot = {}
        for r in queries:
            keep = np.arange(n) != r
            base = X[keep] @ X[r]; e = base - Y[keep] @ Y[r]
            dot[r] = ((e ** 2).sum(), (base ** 2).sum(), int(keep.sum()))
        def group(g, rows, name):
            close(name + '.queries', g['queries'], len(rows), 0)
            close(name + '.recall', g.get('recall'), sum(hits[r] for r in rows) / (10 * len(rows)) if rows else None, 0)
            e2, b2, p = (sum(dot[r][i] for r in rows) for i in range(3))
            close(name + '.dot_rms_error', g.get('dot_rms_error'), float(np.sqrt(e2 / p)) if p else None, 1e-4)
            close(name + '.dot_relative_error', g.get('dot_relative_error'), float(np.sqrt(e2 / b2)) if p else None, 1e-4)
            if 'dot_pairs' in g: close(name + '.dot_pairs', g['dot_pairs'], p, 0)

        everything = np.ones(n, bool)
        errors(rep['overall'], everything, 'overall')
        sets = {s['name']: s for s in rep['query_sets']}
        for s in rep['query_sets']:
            group(s, s['rows'], s['name'])
            close(s['name'] + '.distinct', len(set(s['rows'])), len(s['rows']), 0)
        close('hot rows have freq > 0', int(sum(f[r] > 0 for r in sets['hot']['rows'])), len(sets['hot']['rows']), 0)
        for form in rep['forms']:
            m = forms == form['form']
            errors(form['errors'], m, form['form'])
            for g in form['queries']:
                group(g, [r for r in sets[g['set']]['rows'] if m[r]], form['form'] + '.' + g['set'])
        if sorted(x['form'] for x in rep['forms']) != sorted(set(meta['forms'])): out['mismatches'].append('form names')
        # Deciles: hottest first, ties by smaller row index.
        decile = np.empty(n, int); decile[np.argsort(-f, kind='stable')] = np.arange(n) * 10 // n
        close('deciles', len(rep['deciles']), 10, 0)
        for dec in rep['deciles']:
            m = decile == dec['decile'] - 1
            name = f"decile {dec['decile']}"
            errors(dec['errors'], m, name)
            close(name + '.freq_min', dec['freq_min'], float(f[m].min()), 1e-12)
            close(name + '.freq_max', dec['freq_max'], float(f[m].max()), 1e-12)
            close(name + '.freq_share', dec['freq_share'], float(f[m].sum() / f.sum()), 1e-12)
            for g in dec['queries']:
                group(g, [r for r in sets[g['set']]['rows'] if m[r]], name + '.' + g['set'])
        json.dump(out, open(sys.argv[1], 'w'))
        """

    /// Without frequencies: one uniform set, no weighted figures, no deciles, and a note saying so.
    /// Given queries replace the drawn sets. The same seed draws the same rows; another seed others.
    @Test func querySetsAndSeeds() throws {
        let dir = TemporaryDirectory()
        let f = try Self.fixture(dir)
        let plain = try Self.evaluate(f, frequencies: false)
        #expect(plain.querySets.map(\.name) == ["uniform"] && !plain.frequencyWeighted && plain.deciles.isEmpty)
        #expect(plain.overall.weightedMSE == nil && plain.overall.mse != nil)
        #expect(plain.notes.contains { $0.contains("no frequencies") && $0.contains("uniform queries only") })

        let again = try Self.evaluate(f)
        let same = try Self.evaluate(f)
        let other = try Self.evaluate(f) { $0.seed = 8 }
        #expect(again.querySets.map(\.rows) == same.querySets.map(\.rows))
        #expect(again.querySets[0].rows != other.querySets[0].rows && again.querySets[1].rows != other.querySets[1].rows)
        #expect(again.querySets[1].rows == plain.querySets[0].rows, "the uniform draw does not depend on --freq")
        // The hot draw favours frequent rows: most of them lie in the hottest decile.
        #expect(again.deciles[0].queries[0].queries > 100, "\(again.deciles[0].queries)")

        let given = try Self.evaluate(f) { $0.queries = [3, 1, 2999, 5] }
        #expect(given.querySets.map(\.name) == ["given"] && given.querySets[0].rows == [3, 1, 2999, 5])
        #expect(given.querySets[0].drawn == "given" && given.querySets[0].dotPairs == 4 * (Self.count - 1))

        let capped = try Self.evaluate(f) { $0.queryCount = 10_000 }
        let positive = f.frequencies.filter { $0 > 0 }.count
        #expect(capped.querySets.map(\.queries) == [positive, Self.count])
        #expect(capped.notes.contains { $0.contains("hot queries capped at \(positive)") })
    }

    /// Each refusal names the problem.
    @Test func refusals() throws {
        let dir = TemporaryDirectory()
        let f = try Self.fixture(dir)
        func refusal(_ fragments: [String], rows: [Float]? = nil, count: Int = Self.count, dimension: Int = Self.d,
                     ids: [UInt64]? = nil, frequencies: [Double]? = nil, queries: [Int]? = nil) {
            var options = EvaluationOptions()
            options.queries = queries
            do {
                _ = try (rows ?? f.rows).withUnsafeBufferPointer {
                    try f.store.evaluate(f.table, rows: $0, count: count, dimension: dimension, ids: ids ?? f.ids,
                                         frequencies: frequencies, options: options)
                }
                Issue.record("accepted; expected an error mentioning \(fragments)")
            } catch {
                for fragment in fragments { #expect("\(error)".contains(fragment), "\(error)") }
            }
        }
        refusal(["dimension 16", "dimension 32"], count: Self.count * 2, dimension: 16)
        refusal(["2999 ids for 3000 source rows"], ids: Array(f.ids.dropLast()))
        var ids = f.ids
        ids[7] = 1 << 42; ids[9] = 1 << 43; ids[100] = 1 << 44
        refusal(["3 source ids are not in table 't'", "first: id \(UInt64(1) << 42) at source row 7"], ids: ids)
        ids = f.ids
        ids[40] = ids[30]
        refusal(["source id \(f.ids[30]) appears twice", "rows 30 and 40"], ids: ids)
        var rows = f.rows
        rows[12 * Self.d + 3] = .infinity
        refusal(["source row 12 (id \(f.ids[12]))", "non-finite value inf at column 3"], rows: rows)
        var frequencies = f.frequencies
        frequencies[4] = -1
        refusal(["frequency of row 4 (id \(f.ids[4])) is negative"], frequencies: frequencies)
        frequencies[4] = .nan
        refusal(["frequency of row 4", "NaN"], frequencies: frequencies)
        refusal(["2 frequencies for 3000"], frequencies: [1, 2])
        refusal(["every frequency is 0"], frequencies: [Double](repeating: 0, count: Self.count))
        refusal(["query 1 is row 3000, outside the 3000 source rows"], queries: [0, 3000])
        refusal(["query row 5 is given twice (queries 0 and 2)"], queries: [5, 6, 5])
    }
}
