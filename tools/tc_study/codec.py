"""Transform codec model for the embstore design study (PCA + uniform scalar quantiser + static rANS tables).
All byte counts follow the brief; see REPORT.md."""
import os, sys, math
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'shared', 'data'))
from score_npm import recall  # exact scoring function (argpartition top-10)

D = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'shared', 'data', 'npm')
# Caches and results go to a scratch directory, never into the repository.
HERE = os.environ.get('TC_STUDY_OUT', '/tmp/tc_study')
os.makedirs(HERE, exist_ok=True)
M_BITS = 12
M = 1 << M_BITS
FIXED_PER_ROW = 10.0            # index/LMDB overhead per row (measured)
FRAME = 2                       # tag byte + model id byte
TABLE_HDR = 8                   # bytes per frequency-table header
THETA_BYTES = 4                 # f32 reconstruction offset per table

X16 = np.load(f'{D}/emb.npy')
X = X16.astype(np.float64)
N, DIM = X.shape
FP32 = N * DIM * 4
QH, GH = np.load(f'{D}/queries_hot.npy'), np.load(f'{D}/gt_hot.npy')
QU, GU = np.load(f'{D}/queries_uniform.npy'), np.load(f'{D}/gt_uniform.npy')


# ---------------------------------------------------------------- PCA (float64, cached)
def pca(rows=None):
    key = 'all' if rows is None else 'sample3'
    f = f'{HERE}/pca_{key}.npz'
    if os.path.exists(f):
        z = np.load(f)
        return z['mu'], z['V'], z['w']
    Xf = X if rows is None else X[rows]
    mu = Xf.mean(0)
    Xc = Xf - mu
    w, V = np.linalg.eigh(Xc.T @ Xc / len(Xf))
    o = np.argsort(w)[::-1]
    w, V = w[o], V[:, o].T.copy()             # V: rows are components
    np.savez(f, mu=mu, V=V, w=w)
    return mu, V, w


# ---------------------------------------------------------------- basis precision
def quant_basis(V, prec):
    if prec == 'f32':
        return V.astype(np.float32).astype(np.float64)
    if prec == 'f16':
        return V.astype(np.float16).astype(np.float64)
    if prec == 'i8':                           # rowwise: f32 scale + f32 offset per component
        lo, hi = V.min(1, keepdims=True), V.max(1, keepdims=True)
        sc = ((hi - lo) / 255).astype(np.float32).astype(np.float64)
        lo = lo.astype(np.float32).astype(np.float64)
        return np.clip(np.rint((V - lo) / sc), 0, 255) * sc + lo
    raise ValueError(prec)


def basis_bytes(K, prec):
    return {'f32': 4 * K * DIM, 'f16': 2 * K * DIM, 'i8': K * DIM + 8 * K}[prec]


def project(Xc, Vq, ls):
    if not ls:
        return Xc @ Vq.T
    return np.linalg.solve(Vq @ Vq.T, Vq @ Xc.T).T


# ---------------------------------------------------------------- frequency tables
def norm_freq(counts):
    """counts: int array (symbols..., escape last). Every symbol gets freq >= 1, sum == M."""
    c = counts.astype(np.float64)
    f = np.maximum(1, np.floor(c * M / max(c.sum(), 1))).astype(np.int64)
    diff = M - f.sum()
    # give/take the remainder in proportion from the largest symbols (keeping freq >= 1)
    order = np.argsort(-c)
    i = 0
    while diff != 0:
        k = order[i % len(order)]
        if diff > 0:
            f[k] += 1; diff -= 1
        elif f[k] > 1:
            f[k] -= 1; diff += 1
        i += 1
    return f


class Tables:
    """Static per-table rANS models. groups[j] = table index of coefficient j (only j < K used)."""

    def __init__(self, Q, groups, ntab):
        self.groups, self.ntab = groups, ntab
        self.lo = np.zeros(ntab, np.int64); self.hi = np.zeros(ntab, np.int64)
        self.freq = []
        for t in range(ntab):
            v = Q[:, groups == t].ravel()
            lo, hi = (int(v.min()), int(v.max())) if v.size else (0, 0)
            cnt = np.bincount(v - lo, minlength=hi - lo + 1) if v.size else np.ones(1, np.int64)
            f = norm_freq(np.append(cnt, 0))        # last = escape symbol (freq 1)
            self.lo[t], self.hi[t] = lo, hi
            self.freq.append(f)
        self.off = np.cumsum([0] + [len(f) for f in self.freq])[:-1]
        allf = np.concatenate(self.freq)
        self.cost = -np.log2(allf / M)              # bits per symbol
        self.esc_idx = self.off + (self.hi - self.lo + 1)

    def nbytes(self):
        return sum(2 * len(f) + TABLE_HDR for f in self.freq)

    def bits(self, Q, cols):
        """per-entry bits (escape symbol's model cost only) and escape mask. cols: coefficient indices of Q."""
        t = self.groups[cols][None, :]
        idx = Q - self.lo[t]
        esc = (idx < 0) | (Q > self.hi[t])
        gi = np.where(esc, self.esc_idx[t], self.off[t] + np.where(esc, 0, idx))
        return self.cost[gi], esc


def fit_theta(C, Q, delta, groups, ntab):
    """per-table offset minimising MSE of nonzero symbols: theta = mean(|q| - |c|/Delta), clamped >= 0."""
    th = np.zeros(ntab)
    r = np.abs(Q) - np.abs(C) / delta
    nz = Q != 0
    for t in range(ntab):
        m = nz[:, groups == t]
        if m.any():
            th[t] = max(0.0, r[:, groups == t][m].mean())
    return th


def dequant(Q, delta, theta_col):
    return delta * (Q - theta_col * np.sign(Q))


def make_groups(sig, delta, G):
    """G shared tables grouping coefficients by log(sigma_j/Delta_j) in equal-width bins; G=None -> one per coef."""
    K = len(sig)
    if G is None or G >= K:
        return np.arange(K), K
    r = np.log(sig / delta)
    edges = np.linspace(r.min(), r.max() + 1e-9, G + 1)
    g = np.clip(np.searchsorted(edges, r, side='right') - 1, 0, G - 1)
    u, g = np.unique(g, return_inverse=True)   # drop empty bins
    return g, len(u)


def rdoq(C, delta, tabs, theta, lam, cols):
    """choose among rint(c/D), one step toward 0, and 0, minimising (c-c^)^2 + lam*D^2*bits."""
    q0 = np.rint(C / delta)
    q1 = q0 - np.sign(q0)
    best, bestc = None, None
    thc = theta[tabs.groups[cols]][None, :]
    for q in (q0, q1, np.zeros_like(q0)):
        qi = q.astype(np.int64)
        b, e = tabs.bits(qi, cols)
        cost = (C - dequant(q, delta, thc)) ** 2 + lam * (delta ** 2 if np.ndim(delta) == 0 else delta[None, :] ** 2) * (b + 16 * e)
        if best is None:
            best, bestc = qi, cost
        else:
            m = cost < bestc
            best = np.where(m, qi, best); bestc = np.where(m, cost, bestc)
    return best


def row_bytes(bits, esc):
    info = bits.sum(1)
    return FRAME + np.ceil((info + 16) / 16) * 2 + 2 + 2 * esc.sum(1), info


def decode_score(Xhat):
    Y = Xhat.astype(np.float32)
    Yn = Y / np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-12)
    Xn = X.astype(np.float32); Xn /= np.linalg.norm(Xn, axis=1, keepdims=True)
    return recall(Yn, QH, GH), recall(Yn, QU, GU), float(np.mean((Yn * Xn).sum(1)))


def run(a, prec='f32', ls=False, G=None, theta=False, lam=0.0, fit='all', dz=0.0,
        lowvar=None, beta=0.0, kmax=None, score=True, keep=False):
    """a: Delta as a multiple of sqrt(mean coefficient variance) of the fit.
    dz: deadzone (rounding offset reduction) for plain quantisation.
    lowvar: (ratio, factor): Delta_j *= factor for coefficients with sigma_j/Delta < ratio."""
    rows = None if fit == 'all' else np.arange(0, N, 3)
    mu, V, w = pca(rows)
    mu32 = mu.astype(np.float32).astype(np.float64)
    Vq = quant_basis(V, prec)
    Xf = X if rows is None else X[rows]
    Cf = project(Xf - mu32, Vq, ls)
    sig = np.sqrt(np.maximum(Cf.var(0), 1e-30))
    D0 = a * math.sqrt(w.sum() / DIM)
    delta = np.full(DIM, D0)
    if beta:   # tilt: Delta_j = D0 * (sigma_j / sigma_rms)^-beta  (beta=0: uniform)
        delta = np.minimum(D0 * (sig / math.sqrt(w.sum() / DIM)) ** (-beta), 1e3 * D0)
    if kmax:   # force coefficients >= kmax to zero (not coded, basis not stored)
        delta[kmax:] = 1e3 * D0
    if lowvar is not None:
        delta = np.where(sig / delta < lowvar[0], delta * lowvar[1], delta)

    def q_plain(C, dl):
        return (np.sign(C) * np.floor(np.abs(C) / dl + 0.5 - dz)).astype(np.int64)

    Qf = q_plain(Cf, delta)
    K = int(np.nonzero((Qf != 0).any(0))[0].max()) + 1
    if ls and K < DIM:   # re-project with the truncated stored basis
        Cf = project(Xf - mu32, Vq[:K], True)
        Qf = q_plain(Cf, delta[:K])
    Cf, Qf, delta, sig = Cf[:, :K], Qf[:, :K], delta[:K], sig[:K]
    cols = np.arange(K)
    groups, ntab = make_groups(sig, delta, G)
    tabs = Tables(Qf, groups, ntab)
    th = fit_theta(Cf, Qf, delta, groups, ntab) if theta else np.zeros(ntab)
    if lam > 0:
        for _ in range(2):
            Qf = rdoq(Cf, delta, tabs, th, lam, cols)
            tabs = Tables(Qf, groups, ntab)
            if theta:
                th = fit_theta(Cf, Qf, delta, groups, ntab)
    # encode all rows with the fitted model
    if rows is None:
        C, Q = Cf, Qf
    else:
        C = project(X - mu32, Vq[:K], ls) if ls else (X - mu32) @ Vq[:K].T
        Q = rdoq(C, delta, tabs, th, lam, cols) if lam > 0 else q_plain(C, delta)
    bits, esc = tabs.bits(Q, cols)
    rb, info = row_bytes(bits, esc)
    model = (4 * DIM + basis_bytes(K, prec) + 4 * K + K + tabs.nbytes() + (THETA_BYTES * ntab if theta else 0))
    total = N * FIXED_PER_ROW + rb.sum() + model
    r = dict(a=a, beta=beta, prec=prec, ls=ls, G=G, ntab=ntab, theta=theta, lam=lam, fit=fit, dz=dz, kmax=kmax, K=K,
             delta=D0, bpv=float(info.mean() / DIM), info_B=float(info.mean() / 8),
             row_mean=float(rb.mean()), row_min=int(rb.min()), row_max=int(rb.max()),
             row_distinct=int(len(np.unique(rb))), esc_per_row=float(esc.sum(1).mean()),
             esc_rate=float(esc.mean()), nnz=float((Q != 0).sum(1).mean()),
             model_B=int(model), table_B=int(tabs.nbytes()), total_B=float(total), frac=float(total / FP32),
             mse=float(((C - dequant(Q, delta, th[groups][None, :])) ** 2).sum(1).mean()))
    if score:
        Xhat = mu32 + dequant(Q, delta, th[groups][None, :]) @ Vq[:K]
        r['hot'], r['uni'], r['cos'] = decode_score(Xhat)
    if keep:
        r['_Q'], r['_tabs'], r['_cols'] = Q, tabs, cols
    return r
