import os
"""Recall noise: per-query SE and paired SE of differences between configs at 6.25% (final vs neighbours)."""
import numpy as np, codec, study, json
R = json.load(open(os.path.join(codec.HERE, 'results.json')))

def per_query(Yn, Q, G):
    S = Yn[Q] @ Yn.T; S[np.arange(len(Q)), Q] = -np.inf
    top = np.argpartition(-S, 10, axis=1)[:, :10]
    return np.array([len(set(top[i]) & set(G[i])) / 10 for i in range(len(Q))])

store = {}
def grab(Xhat):
    Y = Xhat.astype(np.float32); Yn = Y / np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-12)
    store['h'] = per_query(Yn, codec.QH, codec.GH); store['u'] = per_query(Yn, codec.QU, codec.GU)
    return store['h'].mean(), store['u'].mean(), 0.0
codec.decode_score = grab
out = {}
runs = {'final': (study.FINAL, R['final']['at']['0.0625']['a']),
        'beta0.5': ({**study.FINAL, 'beta': 0.5}, None), 'baseline_i8': (dict(prec='i8'), R['q2']['at']['i8']['0.0625']['a'])}
import search
pq = {}
for k, (cfg, a) in runs.items():
    r = search.at_target(0.0625, **cfg) if a is None else codec.run(a, **cfg)
    pq[k] = (store['h'].copy(), store['u'].copy())
    print(k, r['frac'], r['hot'], r['uni'], 'SE hot %.4f uni %.4f' % (store['h'].std() / 31.62, store['u'].std() / 31.62))
for k in ('beta0.5', 'baseline_i8'):
    dh = pq['final'][0] - pq[k][0]; du = pq['final'][1] - pq[k][1]
    print(f'final - {k}: hot {dh.mean():+.4f} ± {dh.std()/31.62:.4f}, uni {du.mean():+.4f} ± {du.std()/31.62:.4f}')
