#!/usr/bin/env python3
"""SIGKILL crash loop: start a writing `embstore` command, kill it with SIGKILL at a random
point, and check that the store holds exactly its last committed state.

Each run picks an operation (below: a fresh table or a re-ingest of an existing one, segment or
per-key layout, several codecs; `compact --out`; `compact --in-place`; `repack --out` and
`repack --in-place` under a policy: a codec, a budget, tiers with counts, a full-precision source),
runs it to completion once on a copy of the store (the reference: what the store holds if the
command commits), then runs it on the store and kills it with SIGKILL, at a random time within
the reference's duration or, one run in four, at one of the crash points the command passes
(EMBSTORE_CRASH_AT, Sources/EmbeddingStore/CrashPoints.swift). After the kill:

  - the store opens (`embstore info`) and `embstore verify` passes;
  - its content (`embstore info --json` table names, then `embstore export` of every table) is
    exactly the state before the command or the reference's state after it, nothing between;
  - for `compact --out NEW` and `repack --out NEW`: NEW is absent, or a complete store that
    verifies and exports exactly what the reference run wrote; the source is unchanged;
  - for `compact --in-place` and `repack --in-place` (a generation swap): the content is the
    state before while `CURRENT` names the generation it named before, and the reference's
    after once it names another (for compaction the two are the same: it changes no rows); the
    store directory holds nothing but the pointer, generations and what a later swap or open
    removes (staging directories, `CURRENT.tmp`, `repack-<pid>…`); and on half of these runs a
    following `compact --in-place`, run to completion, leaves the content as it was and the
    directory holding `CURRENT` and the one generation it names, nothing else.

Repack re-encodes rows; its output is a function of the store and the policy alone (fits take
their samples at fixed strides or from fixed seeds, threads split rows in fixed ranges, each row
encoded on its own; checked: three runs of each policy on one store export the same bytes), so
its reference on a copy is compared exactly, as for re-ingests.

Counts printed per operation: runs, kills before the commit (the old state; for a swap, the old
pointer), kills after it (the new state), runs that finished before the kill, failures. A new
store is started every --tables-per-store fresh tables. Exit status 1 when a run failed; its
store is kept.

    python3 tools/crash_loop.py --quick           # 20 runs, under a minute
    python3 tools/crash_loop.py --runs 300        # the long mode
    python3 tools/crash_loop.py --runs 50 --only compact --seed 3 --embstore .build/debug/embstore

Adding a command to kill: one entry in OPERATIONS, a function that returns an Operation (its argv
with {store} and {out} placeholders, whether it writes a new store at {out} or swaps a new
generation in, and the crash points it passes). Needs numpy."""
import argparse, collections, dataclasses, hashlib, json, os, random, re, shutil, signal, subprocess, sys, tempfile, time
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CRASH_POINTS = ['load.table-created', 'load.parameters-stored', 'segment.part-written', 'segment.part-written:2',
                'segment.before-commit', 'segment.committed', 'perkey.committed', 'compact.copied', 'compact.before-publish',
                'swap.staged', 'swap.published', 'swap.pointer-written', 'swap.retired',
                'repack.built', 'repack.verified', 'repack.staged']


def points(*prefixes):
    """The crash points named `<prefix>.…` or exactly `<prefix>`, for an Operation's `points`."""
    return [p for p in CRASH_POINTS if p in prefixes or p.split('.')[0] in prefixes]


# What a store directory may hold after a killed swap, besides the pointer and the generations:
# what the next swap (or a writable open) removes.
REMOVABLE = re.compile(r'(CURRENT\.tmp|data\.mdb|lock\.mdb|gen-\d{6,18}\..+|repack-\d+(\..+)?)$')
GENERATION = re.compile(r'gen-\d{6,18}$')
# Per-key loads of more than this many rows commit in several transactions by design (README,
# "Two layers per table"): a re-ingest killed between them keeps the ones committed. The loop's
# per-key re-ingests stay below it, so that each is one commit.
PER_KEY_TRANSACTION_ROWS = 65_536


@dataclasses.dataclass
class Operation:
    name: str
    argv: list            # with '{store}' and '{out}' placeholders
    writes_out: bool = False
    new_table: str = None   # a table the command creates: its reference runs on an empty store
    in_place: bool = False  # swaps a new generation in: before and after are told by the pointer
    keeps_content: bool = False   # changes no rows (compaction): after must equal before
    points: list = None     # the crash points it passes (None: all)


class Context:
    """What operations need: the random source, the work directory, the store's tables."""

    def __init__(self, rng, work):
        self.rng, self.work, self.tables, self.counter = rng, work, {}, 0

    def vectors(self, rows, dim, table=None):
        """A new .npy of rows (and ids: the table's, or new dense or sparse ones) and its path."""
        self.counter += 1
        base = f'{self.work}/input{self.counter}'
        x = (self.rng.standard_normal((rows, dim)) * np.linspace(1, 0.1, dim)).astype(np.float32)
        np.save(base + '.npy', x)
        args = ['--vectors', base + '.npy']
        ids = None
        if table is not None:
            ids = self.tables[table]['ids']
            if ids is not None:
                ids = ids[:rows]
        elif self.rng.random() < 0.5:
            ids = self.rng.choice(1 << 40, rows, replace=False).astype(np.uint64)
        if ids is not None:
            np.save(base + '.ids.npy', ids)
            args += ['--ids', base + '.ids.npy']
        if self.rng.random() < 0.3:
            np.save(base + '.freq.npy', self.rng.zipf(1.3, rows).astype(np.uint64))
            args += ['--freq', base + '.freq.npy']
        return args, ids

    def codec(self, args, per_key, dim, rows):
        choices = [['--codec', 'int8'], ['--codec', 'fp16'], ['--codec', 'int4h'], ['--codec', 'tc:2'], ['--codec', 'fp32'],
                   ['--codec', 'reduced:4']]
        if '--freq' in args:
            choices += [['--tiers', 'fp16:5%,int8:45%,int4h']]
            if not per_key and dim >= 16 and rows >= 30_000:   # room for the index and the store's first pages
                choices += [['--budget', '0.5']]
        return choices[self.rng.integers(len(choices))]


def ingest_new(ctx, layout):
    name = f't{len(ctx.tables)}'
    rows = int(ctx.rng.choice([2_000, 30_000, 100_000, 400_000] if layout == 'segment' else [2_000, 30_000, 100_000]))
    dim = int(ctx.rng.choice([8, 16, 32]))
    args, ids = ctx.vectors(rows, dim)
    ctx.pending = (name, {'dim': dim, 'rows': rows, 'ids': ids, 'layout': layout, 'vectors': args[1],
                          'ids_path': args[args.index('--ids') + 1] if '--ids' in args else None})
    return Operation(f'ingest new {layout}', ['ingest', '{store}', '--table', name, '--layout', layout, '--quiet']
                     + args + ctx.codec(args, layout == 'per-key', dim, rows), new_table=name,
                     points=points('load', 'segment' if layout == 'segment' else 'perkey'))


def reingest(ctx, layout):
    name = sorted(ctx.tables)[ctx.rng.integers(len(ctx.tables))]
    table = ctx.tables[name]
    rows = table['rows'] if layout == 'segment' else min(table['rows'], PER_KEY_TRANSACTION_ROWS - 1)
    args, _ = ctx.vectors(rows, table['dim'], table=name)
    ctx.pending = None
    return Operation(f're-ingest {layout}', ['ingest', '{store}', '--table', name, '--layout', layout, '--quiet']
                     + args + ctx.codec(args, layout == 'per-key', table['dim'], rows),
                     points=points('load.parameters-stored', 'segment' if layout == 'segment' else 'perkey'))


def compact(ctx):
    ctx.pending = None
    return Operation('compact --out', ['compact', '{store}', '--out', '{out}'], writes_out=True, points=points('compact'))


def compact_in_place(ctx):
    ctx.pending = None
    return Operation('compact --in-place', ['compact', '{store}', '--in-place'], in_place=True, keeps_content=True,
                     points=points('compact.copied', 'swap'))


def repack_policy(ctx):
    """A policy for every table (a codec, a budget), or for one table: a codec, a budget, tiers
    under new counts, a codec from the table's full-precision rows (its first load's input)."""
    name = sorted(ctx.tables)[ctx.rng.integers(len(ctx.tables))]
    table = ctx.tables[name]
    codecs = [['--codec', 'int8'], ['--codec', 'int4h'], ['--codec', 'tc:2'], ['--codec', 'fp16'], ['--codec', 'reduced:4']]
    choice = ctx.rng.integers(6)
    if choice == 0:   # every table
        return codecs[ctx.rng.integers(len(codecs))] if ctx.rng.random() < 0.7 else ['--budget', '0.3']
    one = ['--table', name]
    if choice == 1 and table['layout'] == 'segment' and table['dim'] >= 16 and table['rows'] >= 30_000:
        return one + ['--budget', '0.3']
    if choice in (1, 2):   # tiers under new counts over the table's ids
        ctx.counter += 1
        base = f'{ctx.work}/counts{ctx.counter}'
        ids = table['ids'] if table['ids'] is not None else np.arange(table['rows'], dtype=np.uint64)
        ids = ids[:PER_KEY_TRANSACTION_ROWS - 1]   # rows of the table whatever re-ingests did (rows without a count count 0)
        np.save(base + '.freq.npy', ctx.rng.zipf(1.3, len(ids)).astype(np.uint64))
        np.save(base + '.ids.npy', ids)
        return one + ['--tiers', 'fp16:5%,int8:45%,int4h', '--freq', base + '.freq.npy', '--ids', base + '.ids.npy']
    if choice == 3:   # from the full-precision rows: promotions happen
        source = ['--source', table['vectors'], '--add-new'] + (['--ids', table['ids_path']] if table['ids_path'] else [])
        return one + source + codecs[ctx.rng.integers(len(codecs))]
    return one + codecs[ctx.rng.integers(len(codecs))]


def repack(ctx):
    ctx.pending = None
    return Operation('repack --out', ['repack', '{store}', '--out', '{out}', '--quiet'] + repack_policy(ctx), writes_out=True,
                     points=points('repack.built', 'repack.verified'))


def repack_in_place(ctx):
    ctx.pending = None
    return Operation('repack --in-place', ['repack', '{store}', '--in-place', '--quiet'] + repack_policy(ctx), in_place=True,
                     points=points('repack', 'swap'))


# name, weight, maker, needs an existing table
OPERATIONS = [
    ('ingest new segment', 3, lambda ctx: ingest_new(ctx, 'segment'), False),
    ('ingest new per-key', 2, lambda ctx: ingest_new(ctx, 'per-key'), False),
    ('re-ingest segment', 3, lambda ctx: reingest(ctx, 'segment'), True),
    ('re-ingest per-key', 2, lambda ctx: reingest(ctx, 'per-key'), True),
    ('compact --out', 2, compact, True),
    ('compact --in-place', 2, compact_in_place, True),
    ('repack --out', 2, repack, True),
    ('repack --in-place', 2, repack_in_place, True),
]


class Embstore:
    def __init__(self, binary, timeout):
        self.binary, self.timeout = binary, timeout

    def run(self, *args, check=True):
        p = subprocess.run([self.binary, *args], capture_output=True, timeout=self.timeout)
        if check and p.returncode != 0:
            raise Failure(f'embstore {" ".join(args)} exited {p.returncode}: {p.stderr.decode(errors="replace")[-2000:]}')
        return p

    def state(self, store, scratch):
        """Table names and a digest of every table's export; None when there is no store."""
        if not os.path.exists(store):
            return None
        self.run('info', store)
        self.run('verify', store)
        names = [t['name'] for t in json.loads(self.run('info', store, '--json').stdout)['tables']]
        state = {}
        for name in names:
            out, ids = f'{scratch}/export.npy', f'{scratch}/export.ids.npy'
            self.run('export', store, '--table', name, '--out', out, '--ids-out', ids)
            digest = hashlib.sha256()
            for path in (out, ids):
                with open(path, 'rb') as f:
                    digest.update(f.read())
                os.remove(path)
            state[name] = digest.hexdigest()[:16]
        return state


class Failure(Exception):
    pass


def pointer(store):
    """What the store's CURRENT names (None: a plain store, or no store)."""
    try:
        with open(f'{store}/CURRENT') as f:
            return f.read()
    except FileNotFoundError:
        return None


def check_directory(store):
    """Fails when the store directory holds anything but the pointer, generations and what a later
    swap or open removes."""
    if not os.path.exists(store):
        return
    strays = [e for e in os.listdir(store) if e != 'CURRENT' and not GENERATION.match(e) and not REMOVABLE.match(e)]
    if strays:
        raise Failure(f'the store directory holds what no swap or open removes: {sorted(strays)}')


def default_binary():
    binary = os.path.join(ROOT, '.build', 'release', 'embstore')
    if not os.path.exists(binary):
        print('building the release binary (swift build -c release --product embstore)...', flush=True)
        subprocess.run(['swift', 'build', '-c', 'release', '--product', 'embstore'], cwd=ROOT, check=True)
    return binary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=300)
    parser.add_argument('--quick', action='store_true', help='20 runs')
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--embstore', default=None, help='the binary (default: .build/release/embstore, built if missing)')
    parser.add_argument('--only', default=None, help='only operations whose name contains this')
    parser.add_argument('--tables-per-store', type=int, default=6)
    parser.add_argument('--timeout', type=float, default=600, help='seconds any one command may take')
    parser.add_argument('--work', default=None, help='work directory (default: a new temporary one, removed unless a run fails)')
    args = parser.parse_args(argv)
    runs = 20 if args.quick else args.runs
    binary = os.path.abspath(args.embstore) if args.embstore else default_binary()
    embstore = Embstore(binary, args.timeout)
    work = args.work or tempfile.mkdtemp(prefix='embstore-crash-')
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    pyrandom = random.Random(args.seed)
    operations = [op for op in OPERATIONS if args.only is None or args.only in op[0]]
    if not operations:
        parser.error(f'no operation matches --only {args.only}')
    counts = collections.defaultdict(collections.Counter)
    failures = []
    started = time.time()
    generation, ctx, store, current = 0, None, None, None

    def new_store():
        nonlocal generation, ctx, store, current
        generation += 1
        ctx = Context(rng, work)
        ctx.pending = None
        store = f'{work}/store{generation}'
        current = None
        return store

    new_store()
    for run in range(runs):
        if ctx.tables and sum(1 for _ in ctx.tables) >= args.tables_per_store:
            shutil.rmtree(store, ignore_errors=True)
            new_store()
        choices = [op for op in operations if ctx.tables or not op[3]]
        if not choices:   # only operations on existing tables: make one first
            ingest = ingest_new(ctx, 'segment')
            embstore.run(*[a.format(store=store, out='') for a in ingest.argv])
            ctx.tables[ctx.pending[0]] = ctx.pending[1]
            current = embstore.state(store, work)
            choices = operations
        name, _, make, _ = choices[pyrandom.choices(range(len(choices)), weights=[op[1] for op in choices])[0]]
        op = make(ctx)
        out = f'{work}/out{run}'
        reference_store, reference_out = f'{work}/reference', f'{work}/reference-out'
        for path in (reference_store, reference_out, out):
            shutil.rmtree(path, ignore_errors=True)
        # A new table's rows depend on its input only: its reference is a load into an empty
        # store, so that anything a killed load left which the next one took over shows.
        if os.path.exists(store) and op.new_table is None:
            shutil.copytree(store, reference_store)
        began = time.time()
        try:
            embstore.run(*[a.format(store=reference_store, out=reference_out) for a in op.argv])
        except Failure as failure:   # the command cannot run on this store (a policy that does not fit): not a crash test
            counts[name]['skipped'] += 1
            print(f'skipped run {run} ({name}): {failure}', flush=True)
            continue
        duration = time.time() - began
        if current is None:
            current = embstore.state(store, work) if os.path.exists(store) else {}
        after = embstore.state(reference_store, work) or {}
        if op.new_table is not None:
            after = dict(current, **{op.new_table: after[op.new_table]})
        after_out = embstore.state(reference_out, work) if op.writes_out else None
        environment = dict(os.environ)
        point = None
        if pyrandom.random() < 0.25:
            point = pyrandom.choice(op.points or CRASH_POINTS)
            environment['EMBSTORE_CRASH_AT'] = point
        pointer_before = pointer(store)
        delay = pyrandom.uniform(0, 1.1 * duration)
        argv = [binary] + [a.format(store=store, out=out) for a in op.argv]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment)
        killed = False
        if point is None:
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                killed = True
        try:
            _, stderr = process.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        if point is not None:
            killed = process.returncode == -signal.SIGKILL
        how = f'crash point {point}' if point else f'kill after {delay:.3f} s of {duration:.3f} s'
        try:
            if op.keeps_content and after != current:
                raise Failure(f'the reference run changed the content: {after} against {current}')
            if not killed and process.returncode != 0:
                raise Failure(f'exited {process.returncode} without a kill: {stderr.decode(errors="replace")[-2000:]}')
            state = embstore.state(store, work) or {}
            out_state = embstore.state(out, work) if op.writes_out else None
            if op.writes_out:
                if state != current:
                    raise Failure(f'the source store changed: {state} against {current}')
                if out_state is not None and out_state != after_out:
                    raise Failure(f'the new store at {out} is neither absent nor the complete copy: {out_state} against {after_out}')
                outcome = 'after' if out_state is not None else 'before'
            elif op.in_place:
                # The pointer is the swap's one step: the old content until it moves, the new after.
                moved = pointer(store) != pointer_before
                if state != (after if moved else current):
                    raise Failure(f'CURRENT {"moved" if moved else "did not move"} but the content is not the state '
                                  f'{"after" if moved else "before"}: {state}\n  before {current}\n  after  {after}')
                outcome = 'after' if moved else 'before'
                check_directory(store)
                if pyrandom.random() < 0.5:   # what the kill left goes with the next swap
                    embstore.run('compact', store, '--in-place')
                    again = embstore.state(store, work)
                    if again != state:
                        raise Failure(f'a compact --in-place after the kill changed the content: {again} against {state}')
                    left = sorted(os.listdir(store))
                    if left != sorted(['CURRENT', pointer(store).strip()]):
                        raise Failure(f'a compact --in-place after the kill left {left}')
                    counts[name]['followed by a swap'] += 1
            elif state == after and state != current:
                outcome = 'after'
            elif state == current:
                outcome = 'before' if state != after else 'ambiguous'
            else:
                raise Failure(f'neither the state before nor the one after: {state}\n  before {current}\n  after  {after}')
            if not killed and outcome == 'before':
                raise Failure('the command finished but its writes are not there')
        except Failure as failure:
            kept = f'{work}/failed{run}'
            shutil.copytree(store, kept, dirs_exist_ok=True) if os.path.exists(store) else None
            failures.append(f'run {run} ({name}; {how}): {" ".join(argv)}\n    {failure}\n    store kept at {kept}')
            counts[name]['failures'] += 1
            counts[name]['runs'] += 1
            print(f'FAIL {failures[-1]}', flush=True)
            shutil.rmtree(store, ignore_errors=True)
            new_store()
            continue
        counts[name]['runs'] += 1
        counts[name][('killed ' + outcome + ' commit') if killed else 'finished before the kill'] += 1
        if op.writes_out:
            shutil.rmtree(out, ignore_errors=True)
            for leftover in os.listdir(work):   # a killed compaction's or repack's staging directories
                if leftover.startswith(f'out{run}.'):
                    counts[name]['staging left'] += 1
                    shutil.rmtree(f'{work}/{leftover}', ignore_errors=True)
        else:
            current = state
            if ctx.pending is not None and ctx.pending[0] in state:
                ctx.tables[ctx.pending[0]] = ctx.pending[1]
            ctx.pending = None
        if (run + 1) % 10 == 0:
            print(f'... {run + 1} runs, {len(failures)} failures, {time.time() - started:.0f} s', flush=True)

    columns = ['runs', 'killed before commit', 'killed after commit', 'finished before the kill', 'skipped', 'failures']
    total = collections.Counter()
    for counter in counts.values():
        total.update(counter)
    if total['killed ambiguous commit']:   # the command's new state equalled the old one: no before/after to tell
        columns.insert(3, 'killed ambiguous commit')
    print(f'\ncrash loop: {runs} runs in {time.time() - started:.0f} s, seed {args.seed}, {binary}')
    print(f'{"operation":<20}' + ''.join(f'{c:>{len(c) + 2}}' for c in columns))
    for name, _, _, _ in OPERATIONS:
        if name in counts:
            print(f'{name:<20}' + ''.join(f'{counts[name][c]:>{len(c) + 2}}' for c in columns))
    print(f'{"all":<20}' + ''.join(f'{total[c]:>{len(c) + 2}}' for c in columns))
    kills = total['killed before commit'] + total['killed after commit'] + total['killed ambiguous commit']
    print(f'{kills} kills ({total["killed before commit"]} before the commit, {total["killed after commit"]} after), '
          f'{total["finished before the kill"]} finished first, {total["skipped"]} skipped (the command refused the store '
          f'when run to completion), {len(failures)} failures')
    if total['followed by a swap']:
        print(f'followed by a compact --in-place run to completion: {total["followed by a swap"]} of the '
              f'{sum(counts[n]["runs"] for n in counts if "in-place" in n)} in-place runs (content unchanged, nothing left but '
              f'CURRENT and its generation)')
    for failure in failures:
        print('FAILED ' + failure)
    if not failures and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
