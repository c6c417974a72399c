#!/usr/bin/env python3
"""embstore transform-codec design study.  python3 study.py [section ...]   (default: all)
Sections: q1 q2 q3 q4 q5 q8 int4 final rans report (q4 bits at equal Delta: q4bits.py).  Results accumulate in results.json; codec model in codec.py,
target search in search.py.  ~10 min on 2 cores."""
import json, os, sys, time
import numpy as np
import codec, search

HERE = codec.HERE   # scratch directory (TC_STUDY_OUT)
RES = f'{HERE}/results.json'
T1, T2 = 0.125, 0.0625
res = json.load(open(RES)) if os.path.exists(RES) else {}


def slim(r):
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items() if not k.startswith('_')}


def show(tag, r):
    print(f"{tag:38s} a={r['a']:.4f} frac={r['frac']:.5f} bpv={r['bpv']:.3f} K={r['K']} "
          f"hot={r.get('hot', float('nan')):.4f} uni={r.get('uni', float('nan')):.4f} "
          f"cos={r.get('cos', float('nan')):.5f} mse={r['mse']:.5f}", flush=True)


def save():
    # merge into the file (sections may run in parallel processes)
    cur = json.load(open(RES)) if os.path.exists(RES) else {}
    cur.update({k: v for k, v in res.items() if k in SAVED or k not in cur})
    json.dump(cur, open(RES, 'w'), indent=1)


SAVED = set()


def targets(name, **cfg):
    out = {}
    for t in (T1, T2):
        r = search.at_target(t, **cfg)
        show(f'{name} @{t}', r)
        out[str(t)] = slim(r)
    return out


def q1():
    """baseline: uniform Delta, per-coefficient tables, theta=0, f32 basis"""
    curve = []
    for a in (0.25, 0.3, 0.35, 0.45, 0.6, 0.8, 1.0, 1.2, 1.5, 1.8):
        r = codec.run(a); show('q1 curve', r); curve.append(slim(r))
    res['q1'] = dict(curve=curve, at=targets('q1 baseline')); SAVED.add('q1'); save()


def q2():
    """basis precision, plain vs least-squares projection: same a (Delta) as baseline crossings, and at target"""
    out = {'fixed_a': [], 'at': {}}
    for t in (T1, T2):
        a = res['q1']['at'][str(t)]['a']
        for prec in ('f32', 'f16', 'i8'):
            for ls in (False, True):
                r = codec.run(a, prec=prec, ls=ls); show(f'q2 {prec} ls={ls} a={a:.3f}', r)
                out['fixed_a'].append(slim(r))
    for prec in ('f16', 'i8'):
        out['at'][prec] = targets(f'q2 {prec}', prec=prec)
    res['q2'] = out; SAVED.add('q2'); save()


def q3():
    """theta and RDOQ at equal all-in bytes (f16 basis, uniform Delta and tilted beta=0.75)"""
    out = {}
    for beta in (0.0, 0.75):
        for theta, lam in ((False, 0), (True, 0), (False, 0.1), (True, 0.05), (True, 0.1), (True, 0.2), (True, 0.35)):
            name = f'b{beta} th{int(theta)} lam{lam}'
            out[name] = targets('q3 ' + name, prec='f16', theta=theta, lam=lam, beta=beta)
    res['q3'] = out; SAVED.add('q3'); save()


BEST = dict(prec='i8', theta=False, lam=0.1, beta=0.75)   # chosen after q2/q3 (theta hurts recall, i8 basis is free)


# recommendation after q3-q8: i8 basis, 32 shared tables, no theta, plain rounding, tilt 0.75, fit on rows 0::3
FINAL = dict(prec='i8', G=32, theta=False, lam=0.0, beta=0.75, fit='sample')


def q4():
    out = {}
    for G in (8, 16, 32, 64, None):
        out[str(G)] = targets(f'q4 G={G}', **{**BEST, 'G': G})
    res['q4'] = out; SAVED.add('q4'); save()


def q5():
    out = {'all': targets('q5 fit=all', **BEST), 'sample': targets('q5 fit=rows0::3', **{**BEST, 'fit': 'sample'})}
    res['q5'] = out; SAVED.add('q5'); save()


def q8():
    out = {}
    for beta in (0.5, 1.0, 1.25):   # 0.75 = BEST, see q5 'all'
        out[f'beta{beta}'] = targets(f'q8 beta={beta}', **{**BEST, 'beta': beta})
    for dz in (0.1, 0.2):   # deadzone without RDOQ
        out[f'dz{dz}'] = targets(f'q8 dz={dz}', **{**BEST, 'lam': 0, 'dz': dz})
    out['lowvar'] = targets('q8 lowvar(0.5,x1.5)', **{**BEST, 'lowvar': (0.5, 1.5)})
    for km in (192, 256):
        out[f'kmax{km}'] = targets(f'q8 kmax={km}', **{**BEST, 'kmax': km})
    for lam in (0, 0.2):
        out[f'lam{lam}'] = targets(f'q8 lam={lam}', **{**BEST, 'lam': lam})
    out['theta'] = targets('q8 theta', **{**BEST, 'theta': True})
    res['q8'] = out; SAVED.add('q8'); save()


def int4():
    """reference: rowwise int4 (15 levels), f32 scale+bias; all-in = 200 B payload + 2 B frame + 10 B index"""
    x = codec.X.astype(np.float32)
    lo, hi = x.min(1, keepdims=True), x.max(1, keepdims=True)
    sc = (hi - lo) / 15
    y = np.rint((x - lo) / sc) * sc + lo
    h, u, c = codec.decode_score(y)
    frac = codec.N * (200 + codec.FRAME + codec.FIXED_PER_ROW) / codec.FP32
    res['int4'] = dict(frac=frac, hot=h, uni=u, cos=c); SAVED.add('int4'); save()
    print('int4 rowwise', res['int4'])


def final():
    """recommended configuration at the targets with margin; row statistics (Q6) and sparsity (Q7)"""
    cfg = FINAL
    out = {}
    for t in (0.122, 0.061, T1, T2, 0.09):
        r = search.at_target(t, tol=0.0003, **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
        show(f'final @{t}', r); out[str(t)] = slim(r)
    res['final'] = dict(cfg=cfg, at=out); SAVED.add('final'); save()


def rans():
    """tiny real rANS (32-bit state, 16-bit renormalisation, M=4096) on 200 rows: compare with the formula"""
    cfg = FINAL
    out = {}
    for t in ('0.122', '0.061'):
        r = codec.run(res['final']['at'][t]['a'], score=False, keep=True, **cfg)
        Q, tabs, cols = r['_Q'], r['_tabs'], r['_cols']
        cums = [np.concatenate([[0], np.cumsum(f)]) for f in tabs.freq]
        L = 1 << 16
        diffs, real, form = [], [], []
        rows = np.arange(0, codec.N, codec.N // 200)[:200]
        for i in rows:
            syms, raw = [], 0
            for j in cols:
                tt = tabs.groups[j]; q = int(Q[i, j])
                s = q - tabs.lo[tt]
                if s < 0 or q > tabs.hi[tt]:
                    s = len(tabs.freq[tt]) - 1; raw += 2           # escape + 2 raw bytes
                syms.append((tt, int(s)))
            # encode in reverse so the decoder reads forward
            x, words = L, []
            for tt, s in reversed(syms):
                f, c = int(tabs.freq[tt][s]), int(cums[tt][s])
                xmax = ((L >> codec.M_BITS) << 16) * f
                while x >= xmax:
                    words.append(x & 0xffff); x >>= 16
                x = ((x // f) << codec.M_BITS) + (x % f) + c
            # decode check
            words_rev = words[::-1]; y = x; k = 0
            for tt, s in syms:
                m = y & (codec.M - 1)
                sd = int(np.searchsorted(cums[tt], m, side='right') - 1)
                assert sd == s
                y = int(tabs.freq[tt][sd]) * (y >> codec.M_BITS) + m - int(cums[tt][sd])
                while y < L:
                    y = (y << 16) | words_rev[k]; k += 1
            assert y == L and k == len(words)
            nbytes = 2 * len(words) + 4 + raw + codec.FRAME
            b, e = tabs.bits(Q[i:i + 1], cols)
            fb, _ = codec.row_bytes(b, e)
            real.append(nbytes); form.append(float(fb[0]))
        real, form = np.array(real), np.array(form)
        out[t] = dict(rows=len(rows), real_mean=float(real.mean()), formula_mean=float(form.mean()),
                      mean_diff=float((real - form).mean()), max_abs_diff=float(np.abs(real - form).max()))
        print('rans', t, out[t])
    res['rans'] = out; SAVED.add('rans'); save()


def report():
    """print markdown tables from results.json"""
    R = json.load(open(RES))

    def row(name, r):
        return (f"| {name} | {r['a']:.4f} | {r['bpv']:.3f} | {r['K']} | {r['frac']*100:.3f}% | "
                f"{r['hot']:.4f} | {r['uni']:.4f} | {r['cos']:.5f} | {r['mse']:.5f} |")
    H = "| config | a=Δ/σ̄ | bits/value | K | all-in | hot | uniform | mean cos | MSE |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    print('### Q1 curve (uniform Δ, per-coef tables, θ=0, f32 basis)\n' + H)
    for r in R['q1']['curve']:
        print(row('baseline', r))
    for t, r in R['q1']['at'].items():
        print(row(f'baseline @{t}', r))
    if 'q2' in R:
        print('\n### Q2 basis precision at fixed Δ (baseline crossings)\n' + H)
        for r in R['q2']['fixed_a']:
            print(row(f"{r['prec']} {'LS' if r['ls'] else 'plain'}", r))
        print('\nat equal all-in bytes:\n' + H)
        for p, d in R['q2']['at'].items():
            for t, r in d.items():
                print(row(f'{p} @{t}', r))
    for sec, title in (('q3', 'Q3 θ / RDOQ (f16 basis) at equal bytes'), ('q4', 'Q4 table grouping G (best config)'),
                       ('q5', 'Q5 fit on all vs rows 0::3'), ('q8', 'Q8 extras (best config, one change each)')):
        if sec in R:
            print(f'\n### {title}\n' + H)
            for name, d in R[sec].items():
                for t, r in d.items():
                    extra = f" tables={r['table_B']}B ntab={r['ntab']}" if sec == 'q4' else ''
                    extra += f" esc/row={r['esc_per_row']:.4f}" if sec == 'q5' else ''
                    print(row(f'{name} @{t}{extra}', r))
    if 'final' in R:
        print(f"\n### Final {R['final']['cfg']}\n" + H)
        for t, r in R['final']['at'].items():
            print(row(f'final @{t}', r))
        print('\n| target | row B mean | min | max | distinct sizes | escapes/row | escape rate | nnz/row | model B | table B |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
        for t, r in R['final']['at'].items():
            print(f"| {t} | {r['row_mean']:.2f} | {r['row_min']} | {r['row_max']} | {r['row_distinct']} | "
                  f"{r['esc_per_row']:.4f} | {r['esc_rate']:.2e} | {r['nnz']:.1f} | {r['model_B']} | {r['table_B']} |")
    if 'int4' in R:
        r = R['int4']; print(f"\nint4 rowwise: all-in {r['frac']*100:.3f}% hot {r['hot']:.4f} uni {r['uni']:.4f} cos {r['cos']:.5f}")
    if 'rans' in R:
        print('\nrANS check:', json.dumps(R['rans']))


if __name__ == '__main__':
    secs = sys.argv[1:] or ['q1', 'q2', 'q3', 'q4', 'q5', 'q8', 'int4', 'final', 'rans', 'report']
    for s in secs:
        t0 = time.time(); globals()[s](); print(f'[{s} {time.time() - t0:.0f}s]', flush=True)
