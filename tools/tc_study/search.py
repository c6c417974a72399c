import math, codec

def at_target(target, a0=None, tol=0.0004, **cfg):
    """find a (Delta multiple) so that the all-in fraction is just <= target; returns scored result."""
    a = a0 or (0.3 if target > 0.09 else 1.3)
    pts = []
    for it in range(8):
        r = codec.run(a, score=False, **cfg)
        pts.append((a, r['frac']))
        if target - tol <= r['frac'] <= target:
            break
        # secant in log-log
        if len(pts) == 1:
            s = -0.45
        else:
            (a1, f1), (a2, f2) = pts[-2], pts[-1]
            s = (math.log(f2) - math.log(f1)) / (math.log(a2) - math.log(a1)) if a1 != a2 else -0.45
            if not (-3 < s < -0.05): s = -0.45
        a = a * math.exp((math.log(target - tol / 2) - math.log(r['frac'])) / s)
    ok = [p for p in pts if p[1] <= target]
    a = max(ok, key=lambda p: p[1])[0] if ok else a * 1.02
    return codec.run(a, **cfg)
