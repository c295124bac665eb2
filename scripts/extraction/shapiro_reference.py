#!/usr/bin/python3
"""Reference values of the Shapiro-Wilk test from scipy.stats.shapiro.

internal/extraction implements Royston's algorithm (AS R94) itself; its test
compares W and the p-value on every sample written here.

Debian's scipy runs the Fortran AS R94 routine (swilk.f) in single
precision: inputs are rounded to float32 before the call. The samples are
therefore drawn in float64 and rounded to float32 *here*, so that the Go code
and scipy see exactly the same numbers, and are written with 9 significant
digits (enough to round-trip a float32).

Single precision leaves scipy's W off the exact value by up to about 2e-6
at n=5000, and its p-value off by much more where W is near 1 (1-W is
formed by cancellation in float32). So each case also carries "w_mp" and
"p_mp": the same algorithm, transcribed independently from the paper and
evaluated with mpmath at 50 significant digits (exact normal quantiles and
tail), which pins the Go code's double-precision arithmetic to ~1e-12.

Writes testdata/extraction/shapiro.json:
    {"scipy": "<version>", "cases": [{"name", "x", "w", "p", "w_mp", "p_mp"}...]}

Run with Debian's python (deterministic: re-running gives identical bytes):
    /usr/bin/python3 scripts/extraction/shapiro_reference.py
"""

import json
import os
import warnings

import mpmath as mp
import numpy as np
import scipy
from scipy import stats

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "testdata", "extraction", "shapiro.json")


def cases():
    rng = np.random.default_rng(20190617)
    out = []
    sizes = [3, 4, 5, 6, 7, 8, 11, 12, 13, 20, 30, 50, 100, 101, 250, 500, 1000, 2000, 5000]
    for n in sizes:
        out.append((f"normal-{n}", rng.normal(10.0, 3.0, n)))
    for n in [3, 5, 10, 12, 50, 200, 1000, 5000]:
        out.append((f"uniform-{n}", rng.uniform(0.0, 16.0, n)))
    for n in [4, 9, 25, 100, 400, 5000]:
        out.append((f"exponential-{n}", rng.exponential(2.0, n)))
    for n in [20, 300, 2000]:
        out.append((f"lognormal-{n}", rng.lognormal(0.0, 1.0, n)))
    # Ties: rounded normals and a few hand-made small samples.
    for n in [15, 60, 500]:
        out.append((f"ties-rounded-normal-{n}", np.round(rng.normal(0.0, 2.0, n))))
    out.append(("ties-small", np.array([1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 5.0])))
    out.append(("ties-two-values", np.array([0.0] * 10 + [1.0] * 10)))
    out.append(("tiny-3-equal-gaps", np.array([1.0, 2.0, 3.0])))
    out.append(("tiny-3-skewed", np.array([0.0, 0.1, 5.0])))
    out.append(("tiny-4", np.array([2.5, 0.5, 1.75, 3.0])))
    # Near-normal distances like PRADA's pool, and a bimodal mixture.
    out.append(("bimodal-200", np.concatenate([rng.normal(0, 1, 100), rng.normal(6, 1, 100)])))
    out.append(("normal-shifted-1e3-100", rng.normal(1000.0, 0.5, 100)))
    return out


C1 = [0, 0.221157, -0.147981, -2.07119, 4.434685, -2.706056]
C2 = [0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633]
C3 = [0.544, -0.39978, 0.025054, -6.714e-4]
C4 = [1.3822, -0.77857, 0.062767, -0.0020322]
C5 = [-1.5861, -0.31082, -0.083751, 0.0038915]
C6 = [-0.4803, -0.082676, 0.0030302]
G = [-2.273, 0.459]


def poly(c, x):
    return sum(mp.mpf(ci) * x**i for i, ci in enumerate(c))


def swilk_mp(x):
    """Royston (1995), AS R94, at mpmath precision (uncensored case)."""
    mp.mp.dps = 50
    y = sorted(mp.mpf(float(v)) for v in x)
    n = len(y)
    nn2 = n // 2
    an = mp.mpf(n)
    if n == 3:
        a = [mp.sqrt(mp.mpf(1) / 2)]
    else:
        m = [-mp.sqrt(2) * mp.erfinv(2 * ((i + 1 - mp.mpf("0.375")) / (an + mp.mpf("0.25"))) - 1)
             for i in range(nn2)]
        # m[i] is the (i+1)-th largest expected normal order statistic (> 0).
        summ2 = 2 * sum(v * v for v in m)
        ssumm2 = mp.sqrt(summ2)
        rsn = 1 / mp.sqrt(an)
        a1 = poly(C1, rsn) + m[0] / ssumm2
        if n > 5:
            a2 = m[1] / ssumm2 + poly(C2, rsn)
            fac = mp.sqrt((summ2 - 2 * m[0] ** 2 - 2 * m[1] ** 2) / (1 - 2 * a1**2 - 2 * a2**2))
            a = [a1, a2] + [v / fac for v in m[2:]]
        else:
            fac = mp.sqrt((summ2 - 2 * m[0] ** 2) / (1 - 2 * a1**2))
            a = [a1] + [v / fac for v in m[1:]]
    # Full coefficient vector: -a for the lower half, +a for the upper.
    coef = [mp.mpf(0)] * n
    for i in range(nn2):
        coef[i] = -a[i]
        coef[n - 1 - i] = a[i]
    xbar = sum(y) / n
    num = sum(c * v for c, v in zip(coef, y)) ** 2
    den = sum(c * c for c in coef) * sum((v - xbar) ** 2 for v in y)
    w = num / den
    w1 = 1 - w
    if n == 3:
        p = 6 / mp.pi * (mp.asin(mp.sqrt(min(w, mp.mpf(1)))) - mp.pi / 3)
        return w, max(p, mp.mpf(0))
    yy = mp.log(w1)
    if n <= 11:
        gamma = poly(G, an)
        if yy >= gamma:
            return w, mp.mpf("1e-19")
        yy = -mp.log(gamma - yy)
        m_, s_ = poly(C3, an), mp.exp(poly(C4, an))
    else:
        m_, s_ = poly(C5, mp.log(an)), mp.exp(poly(C6, mp.log(an)))
    return w, mp.ncdf(-(yy - m_) / s_)


def main():
    rows = []
    for name, x in cases():
        x32 = np.asarray(x, dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.shapiro(x32)
        xs = [float("%.9g" % v) for v in x32]
        w_mp, p_mp = swilk_mp(xs)
        rows.append(
            {
                "name": name,
                "x": xs,
                "w": float(res.statistic),
                "p": float(res.pvalue),
                "w_mp": float(w_mp),
                "p_mp": float(p_mp),
            }
        )
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"scipy": scipy.__version__, "cases": rows}, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(rows)} cases -> {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
