#!/usr/bin/env python3
"""Corruption sweep: damage a small store in many ways and see what `verify`, `export` and `get`
make of it. Each trial copies a pristine store, changes its data.mdb once, and runs the
commands (with a timeout); every outcome is counted by class:

  refused   the command exits non-zero with a message (a clear error)
  intact    it exits 0 and prints what the pristine store gives (the damage hit unused bytes)
  WRONG     it exits 0 and prints something else: silent wrong data. For `verify`: it says ok
            while an export of some table of the damaged store fails or differs from the
            pristine one (a verify that missed damage)
  CRASH     it dies by a signal (LMDB's own page checks exit with status 3 and a message: refused)
  HANG      it outlives the timeout

Damage targets:
  <kind>    a flipped bit inside one record of that kind, found by its bytes in the file:
            segment (a data part), index (a segment's part 0), delta (a per-key row),
            bucket (a bucket row), basis (a PCA basis or tc parameter record), schema
            (a table/<name> record), manifest (a segments manifest), counts (an access
            count), note (a load note), meta (the format header or next_table_id)
  page      a random 4 KiB page of the file zeroed
  byte      a random byte anywhere flipped
  truncate  the file cut at a random page boundary

    python3 tools/corruption_sweep.py [--trials 1000] [--embstore PATH] [--seed 1] [--timeout 30] [--json] [--keep DIR]

Needs numpy and py-lmdb (pip install lmdb). Prints one line per target and class count, and
the trials that were WRONG, CRASH or HANG (with the command, to reproduce)."""
import argparse, collections, json, os, random, shutil, struct, subprocess, sys, tempfile
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, timeout):
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 'HANG', b''
    if p.returncode < 0 or p.returncode >= 128:
        return 'CRASH', p.stderr
    return ('ok' if p.returncode == 0 else 'refused'), p.stdout


def build(embstore, work):
    """A store with every record kind: dense int8 and sparse mixed segments (tc basis and
    models), bucket rows, a PCA basis, per-key delta rows."""
    rng = np.random.default_rng(7)
    n, d = 8000, 32
    x = (rng.standard_normal((n, d)) * np.linspace(1, 0.1, d)).astype(np.float32)
    np.save(f'{work}/x.npy', x)
    np.save(f'{work}/sparse.npy', rng.choice(1 << 40, n, replace=False).astype(np.uint64))
    np.save(f'{work}/freq.npy', rng.zipf(1.3, n).astype(np.uint64))
    store = f'{work}/store'
    for table, args in [('dense', ['--codec', 'int8']),
                        ('mixed', ['--ids', f'{work}/sparse.npy', '--freq', f'{work}/freq.npy', '--budget', '0.3']),
                        ('bucket', ['--codec', 'bucket:32']),
                        ('reduced', ['--codec', 'reduced:6']),
                        ('delta', ['--codec', 'fp16', '--layout', 'per-key'])]:
        subprocess.run([embstore, 'ingest', store, '--table', table, '--vectors', f'{work}/x.npy', '--quiet'] + args,
                       check=True, capture_output=True)
    add_counts(store, 'mixed', rng.choice(1 << 40, 300, replace=False), rng.integers(1, 1000, 300))
    return store


def add_counts(store, table, ids, counts):
    """Access counts for `table`, written as FORMAT.md says (t<T>/counts, u64 values; sealed
    with zlib's CRC-32 of key and value in a version-5 store), so verify sees a counts database."""
    import lmdb, zlib
    env = lmdb.open(store, max_dbs=64)
    with env.begin(write=True) as txn:
        meta = env.open_db(b'meta', txn=txn)
        header = txn.get(b'format', db=meta)
        sealed = struct.unpack_from('<I', header, 8)[0] >= 5
        schema = txn.get(b'table/' + table.encode(), db=meta)
        tid = struct.unpack_from('<I', schema, 0)[0]
        db = env.open_db(f't{tid}/counts'.encode(), txn=txn, integerkey=True)
        for i, c in zip(ids, counts):
            key, value = struct.pack('<Q', int(i)), struct.pack('<Q', int(c))
            if sealed:
                value += struct.pack('<I', zlib.crc32(key + value))
            txn.put(key, value, db=db)
    env.close()


def records(store):
    """Values of each record kind, as bytes to find in the file."""
    import lmdb
    found = collections.defaultdict(list)
    env = lmdb.open(store, readonly=True, max_dbs=64, lock=False)
    with env.begin() as txn:
        names = [k.decode() for k, _ in txn.cursor()]
        meta = env.open_db(b'meta', txn=txn)
        for k, v in txn.cursor(db=meta):
            if k.startswith(b'table/'):
                found['schema'].append(bytes(v))
            elif k.startswith(b'load/'):
                found['note'].append(bytes(v))
            else:
                found['meta'].append(bytes(v))
        for name in names:
            if '/' not in name:
                continue
            db = env.open_db(name.encode(), txn=txn)
            kind = name.split('/')[1]
            for k, v in txn.cursor(db=db):
                v = bytes(v)
                if kind == 'segments':
                    key = struct.unpack('<Q', k)[0]
                    found['manifest' if key == 0 else ('index' if key & 0xFFFFFFFF == 0 else 'segment')].append(v)
                elif kind == 'rows':
                    found['delta'].append(v)
                elif kind == 'buckets':
                    found['bucket'].append(v)
                elif kind == 'bases':
                    found['basis'].append(v)
                elif kind == 'counts':
                    found['counts'].append(v)
    env.close()
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--trials', type=int, default=1000)
    ap.add_argument('--embstore', default=os.path.join(HERE, '..', '.build', 'release', 'embstore'))
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--timeout', type=float, default=30)
    ap.add_argument('--json', action='store_true')
    ap.add_argument('--keep', metavar='DIR', help='copy the damaged store of every WRONG, CRASH or HANG trial to DIR/trial-N')
    a = ap.parse_args()
    rng = random.Random(a.seed)
    work = tempfile.mkdtemp(prefix='embstore-sweep.')
    try:
        store = build(a.embstore, work)
        data = open(f'{store}/data.mdb', 'rb').read()
        kinds = {k: v for k, v in records(store).items() if v}
        tables = ['dense', 'mixed', 'bucket', 'reduced', 'delta']
        outcome, out = run([a.embstore, 'verify', store], a.timeout)
        if outcome != 'ok':
            sys.exit(f'the pristine store does not verify: {out.decode(errors="replace")}')
        baseline = {t: run([a.embstore, 'export', store, '--table', t, '--out', '/dev/stdout'], a.timeout)[1] for t in tables}
        sparse = [str(i) for i in np.load(f'{work}/sparse.npy')[:3]]
        probe = {t: (sparse if t == 'mixed' else ['0', '1', '2']) for t in tables}
        gets = {t: run([a.embstore, 'get', store, '--table', t] + probe[t], a.timeout)[1] for t in tables}
        targets = sorted(kinds) + ['page', 'byte', 'truncate']
        counts = collections.defaultdict(collections.Counter)
        bad = []
        for trial in range(a.trials):
            target = targets[trial % len(targets)]
            damaged = bytearray(data)
            if target in kinds:
                value = rng.choice(kinds[target])
                # Every copy of the record in the file: LMDB's copy-on-write leaves old copies in
                # pages it no longer uses (meta records are rewritten by every commit), and the
                # first one found may be such a copy; the same bit of each is flipped, so the copy
                # LMDB reads is damaged too.
                needle = value if len(value) <= 64 else value[:64]
                copies, at = [], data.find(needle)
                while at >= 0:
                    copies.append(at)
                    at = data.find(needle, at + 1)
                if not copies:
                    counts[target]['skipped (bytes not found)'] += 1
                    continue
                relative, bit = rng.randrange(len(value)), 1 << rng.randrange(8)
                for at in copies:
                    damaged[at + relative] ^= bit
                offset = copies[0] + relative
            elif target == 'page':
                page = rng.randrange(len(data) // 4096)
                offset = page * 4096
                damaged[offset:offset + 4096] = bytes(4096)
            elif target == 'byte':
                offset = rng.randrange(len(data))
                damaged[offset] ^= 1 << rng.randrange(8)
            else:
                offset = 4096 * rng.randrange(len(data) // 4096)
                damaged = damaged[:offset]
            trial_store = f'{work}/t'
            shutil.rmtree(trial_store, ignore_errors=True)
            os.makedirs(trial_store)
            open(f'{trial_store}/data.mdb', 'wb').write(damaged)
            checks = [('verify', [a.embstore, 'verify', trial_store], None)]
            table = rng.choice(tables)
            checks.append(('export', [a.embstore, 'export', trial_store, '--table', table, '--out', '/dev/stdout'], baseline[table]))
            checks.append(('get', [a.embstore, 'get', trial_store, '--table', table] + probe[table], gets[table]))
            for command, cmd, expected in checks:
                outcome, out = run(cmd, a.timeout)
                if outcome == 'ok' and command == 'verify':
                    # verify said ok: every table must then export exactly as before.
                    missed = [t for t in tables
                              if run([a.embstore, 'export', trial_store, '--table', t, '--out', '/dev/stdout'], a.timeout) != ('ok', baseline[t])]
                    outcome = 'WRONG' if missed else 'intact'
                elif outcome == 'ok':
                    outcome = 'intact' if expected is None or out == expected else 'WRONG'
                counts[target][f'{command} {outcome}'] += 1
                if outcome in ('WRONG', 'CRASH', 'HANG'):
                    if a.keep:
                        shutil.copytree(trial_store, f'{a.keep}/trial-{trial}', dirs_exist_ok=True)
                    bad.append({'trial': trial, 'target': target, 'offset': offset, 'command': command, 'outcome': outcome})
        if a.json:
            print(json.dumps({'trials': a.trials, 'counts': {k: dict(v) for k, v in counts.items()}, 'bad': bad}))
        else:
            print(f'{a.trials} trials on {store} ({len(data)} bytes); per target: command outcome counts')
            for target in targets:
                print(f'  {target:9s} ' + ', '.join(f'{k} {n}' for k, n in sorted(counts[target].items())))
            totals = collections.Counter()
            for c in counts.values():
                for k, n in c.items():
                    totals[k.split(' ', 1)[1]] += n
            print('  totals    ' + ', '.join(f'{k} {n}' for k, n in sorted(totals.items())))
            for b in bad[:40]:
                print(f'  {b["outcome"]}: trial {b["trial"]}, {b["target"]} at byte {b["offset"]}, {b["command"]}')
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
