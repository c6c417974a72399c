#!/usr/bin/env python3
"""Quality per byte: the npm table under every codec and rate, scored as a checker scores it.

    python3 tools/quality_per_byte.py [--codecs fp32,int8,tc:3.5,...] [--data ../shared/data]
                                      [--embstore PATH] [--work DIR] [--json OUT.jsonl]

For each codec: `embstore ingest` of ../shared/data/npm (30,000 × 384, real download counts),
then `../shared/data/score_npm.py` (bytes on disk as LMDB pages in use, recall@10 for hot and
uniform queries, mean cosine), then `embstore bench`: lookups of 65,536 of the table's ids
drawn uniformly (batches of 512, the rows/s a service would see for that codec), and its
decode-only workload for the codec (512 rows already in cache, decoded in runs of 8 by the
decoder lookups use; codecs with parameters fitted on the first 20,000 rows). Prints one Markdown table row per codec as it goes, and JSON lines with --json.
The default codec list is every form `embstore codecs --dimension 384` prints, except the
bucket forms with more than 1024 buckets (slow k-means fits that lose on this table anyway).
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--codecs', help='comma-separated --codec spellings (default: every listed form)')
    ap.add_argument('--data', default=os.path.join(HERE, '..', '..', 'shared', 'data'))
    ap.add_argument('--embstore', default=None, help='embstore binary (default: build release)')
    ap.add_argument('--work', default=None, help='scratch directory (default: a temporary one)')
    ap.add_argument('--json', help='also write JSON lines here')
    ap.add_argument('--bench-reps', type=int, default=3)
    a = ap.parse_args()

    binary = a.embstore
    if binary is None:
        root = os.path.join(HERE, '..')
        subprocess.run(['swift', 'build', '-c', 'release', '--product', 'embstore'], cwd=root, check=True,
                       stdout=sys.stderr)
        binary = os.path.join(run(['swift', 'build', '-c', 'release', '--show-bin-path'], cwd=root).stdout.strip(), 'embstore')
    npm = os.path.join(a.data, 'npm')
    score = os.path.join(a.data, 'score_npm.py')
    if a.codecs:
        codecs = a.codecs.split(',')
    else:
        forms = json.loads(run([binary, 'codecs', '--dimension', '384', '--json']).stdout)
        codecs = [f['codec'] for f in forms
                  if not (f['codec'].startswith('bucket:') and int(f['codec'].split(':')[1]) > 1024)]

    work = a.work or tempfile.mkdtemp(prefix='embstore-qpb-')
    os.makedirs(work, exist_ok=True)
    ids = np.load(os.path.join(npm, 'ids.npy'))
    stream = os.path.join(work, 'stream.npy')
    np.save(stream, np.random.default_rng(7).choice(ids, 65536).astype(np.uint64))
    rows_stream = os.path.join(work, 'rows.npy')   # row numbers of emb.npy, for decode-only
    np.save(rows_stream, np.random.default_rng(8).integers(0, ids.size, 512).astype(np.uint64))
    out = open(a.json, 'w') if a.json else None
    n, d = ids.size, 384
    print('| codec | bytes/row on disk | % of fp32 | recall@10 hot | recall@10 uniform | mean cosine | lookup rows/s | decode rows/s | ingest s |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|---:|')
    for codec in codecs:
        store = os.path.join(work, 'store')
        shutil.rmtree(store, ignore_errors=True)
        started = time.time()
        try:
            run([binary, 'ingest', store, '--table', 'npm', '--vectors', os.path.join(npm, 'emb.npy'),
                 '--ids', os.path.join(npm, 'ids.npy'), '--codec', codec])
        except subprocess.CalledProcessError as e:
            print(f'| {codec} | refused: {e.stderr.strip()} |', flush=True)
            continue
        ingest = time.time() - started
        s = json.loads(run([sys.executable, score, store, '--embstore', binary, '--json']).stdout)
        rows_per_s = None
        for line in run([binary, 'bench', store, '--table', 'npm', '--ids', stream, '--json',
                         '--reps', str(a.bench_reps), '--rep-seconds', '0.3']).stdout.splitlines():
            j = json.loads(line)
            if j.get('workload') == 'lookup':
                rows_per_s = j['rows_per_s']
        decode_per_s = None
        for line in run([binary, 'bench', store, '--table', 'npm', '--ids', rows_stream, '--json', '--reps', str(a.bench_reps),
                         '--rep-seconds', '0.2', '--table-npy', os.path.join(npm, 'emb.npy'), '--decode-only',
                         '--decode-codecs', codec]).stdout.splitlines():
            j = json.loads(line)
            if j.get('workload') == 'decode':
                decode_per_s = j['rows_per_s']
        line = dict(codec=codec, bytes_per_row=s['bytes_fraction'] * 4 * d, bytes_fraction=s['bytes_fraction'],
                    recall10_hot=s['recall10_hot'], recall10_uniform=s['recall10_uniform'],
                    mean_cosine=s['mean_cosine'], lookup_rows_per_s=rows_per_s, decode_rows_per_s=decode_per_s,
                    ingest_s=ingest, N=int(n), d=d)
        print(f"| {codec} | {line['bytes_per_row']:.1f} | {100 * s['bytes_fraction']:.2f} | {s['recall10_hot']:.4f} | "
              f"{s['recall10_uniform']:.4f} | {s['mean_cosine']:.5f} | {rows_per_s / 1e6:.2f} M | "
              f"{decode_per_s / 1e6:.2f} M | {ingest:.1f} |", flush=True)
        if out:
            out.write(json.dumps(line) + '\n')
            out.flush()
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
