#!/usr/bin/env python3
"""The budget policy's curve: budget -> bytes on disk, recall@10 (hot, uniform), weighted error,
beside int8, int4 and tc at the same budget for every row.

    python3 tools/policy_curve.py [--table npm|bench] [--weighting retrieval|traffic]
                                  [--budgets 0.03,0.0625,...] [--embstore PATH] [--json]

--table npm (default): ../shared/data/npm with its download counts, scored by
../shared/data/score_npm.py (bytes = LMDB pages in use).
--table bench: ../shared/bench's table.npy and freq.npy ($EMB_BENCH_DIR/N1000000_d64, made by
its make_workload.py), scored by bytes on disk and traffic-weighted squared error.

Weighted error: sum_i w_i * ||x_i - x_hat_i||^2 over the exported table, w_i = count_i
(traffic) or log2(2 + count_i) (retrieval), as the store's policy weighs rows."""
import argparse, json, os, re, subprocess, sys, tempfile
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, '..', '..', 'shared'))


def pages_bytes(store):
    out = subprocess.run(['mdb_stat', '-e', store], capture_output=True, text=True, check=True).stdout
    used = int(re.search(r'Number of pages used:\s*(\d+)', out).group(1))
    return used * int(re.search(r'Page size:\s*(\d+)', out).group(1))


def weighted_error(embstore, store, x, ids, w):
    with tempfile.TemporaryDirectory() as t:
        subprocess.run([embstore, 'export', store, '--table', 't', '--out', f'{t}/y.npy', '--ids-out', f'{t}/i.npy'],
                       check=True, capture_output=True)
        y, yid = np.load(f'{t}/y.npy'), np.load(f'{t}/i.npy')
    order = np.argsort(ids)
    assert np.array_equal(yid, ids[order])
    e = ((y - x[order].astype(np.float32)) ** 2).sum(1)
    return float((w[order] * e).sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--table', choices=['npm', 'bench'], default='npm')
    ap.add_argument('--weighting', choices=['retrieval', 'traffic'], default=None)
    ap.add_argument('--budgets', default='0.03,0.0625,0.125,0.25,0.45,0.70')
    ap.add_argument('--embstore', default=os.path.join(HERE, '..', '.build', 'release', 'embstore'))
    ap.add_argument('--json', action='store_true')
    a = ap.parse_args()
    if a.table == 'npm':
        d = os.path.join(SHARED, 'data', 'npm')
        vectors, idsf, freqf = f'{d}/emb.npy', f'{d}/ids.npy', f'{d}/freq.npy'
        weighting = a.weighting or 'retrieval'
    else:
        d = os.path.join(os.environ.get('EMB_BENCH_DIR', '/tmp/embbench'), 'N1000000_d64')
        if not os.path.exists(f'{d}/table.npy'):
            sys.exit(f'{d}/table.npy is missing: python3 {SHARED}/bench/make_workload.py --out {d}')
        vectors, idsf, freqf = f'{d}/table.npy', None, f'{d}/freq.npy'
        weighting = a.weighting or 'traffic'
    x = np.load(vectors, mmap_mode='r')
    n, dim = x.shape
    ids = np.load(idsf).astype(np.uint64) if idsf else np.arange(n, dtype=np.uint64)
    freq = np.load(freqf).astype(np.float64)
    w = freq if weighting == 'traffic' else np.log2(2 + freq)
    payload = n * dim * 4
    rows = []
    with tempfile.TemporaryDirectory() as work:
        def run(label, args):
            store = f'{work}/{label.replace(":", "_").replace("%", "p").replace(" ", "_")}'
            cmd = [a.embstore, 'ingest', store, '--table', 't', '--vectors', vectors] + (['--ids', idsf] if idsf else []) + args
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                rows.append(dict(policy=label, error=done.stderr.strip().splitlines()[-1] if done.stderr else 'failed'))
                return
            row = dict(policy=label, bytes_fraction=pages_bytes(store) / payload,
                       weighted_error=weighted_error(a.embstore, store, x, ids, w))
            if a.table == 'npm':
                score = subprocess.run([sys.executable, os.path.join(SHARED, 'data', 'score_npm.py'), store, '--table', 't',
                                        '--embstore', a.embstore, '--json'], capture_output=True, text=True, check=True)
                s = json.loads(score.stdout)
                row.update(recall_hot=s['recall10_hot'], recall_uniform=s['recall10_uniform'])
            rows.append(row)
            subprocess.run(['rm', '-rf', store])

        run('int8', ['--codec', 'int8'])
        run('int4', ['--codec', 'int4'])
        for b in [float(v) for v in a.budgets.split(',')]:
            pct = f'{b * 100:g}%'
            run(f'budget {pct}', ['--budget', str(b), '--freq', freqf, '--weighting', weighting])
            run(f'tc:{pct}', ['--codec', f'tc:{pct}'])
    if a.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f'{a.table}: {n} x {dim}, weighting {weighting} (weighted error: sum of w_i ||x_i - x_hat_i||^2)')
    print(f"{'policy':<16} {'% of fp32':>9} {'recall hot':>10} {'uniform':>8} {'weighted error':>15}")
    for r in rows:
        if 'error' in r:
            print(f"{r['policy']:<16} {r['error']}")
            continue
        print(f"{r['policy']:<16} {100 * r['bytes_fraction']:9.3f} {r.get('recall_hot', float('nan')):10.4f} "
              f"{r.get('recall_uniform', float('nan')):8.4f} {r['weighted_error']:15.6g}")


if __name__ == '__main__':
    main()
