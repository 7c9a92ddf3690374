"""Sliced W of weighted cells before and after audit 28's speed-up, side by side on the same clouds.

Score spent half its minute per prediction at 200,000 cells a side in the sliced distances: predictions that carry
weights all equal (copying the previous time, AM's push) took the weighted path, which searched both weight scales
for every merged point of every direction (batched ``torch.searchsorted``). After: equal weights go as none (the
uniform path finds the pieces once for all directions), and truly weighted rows merge their two scales with one
stable sort of two sorted runs. Printed: seconds and SW1/SW2 of each, and the ratios.

    python benchmarks/sliced_weights.py [--cells 200000] [--dim 30] [--projections 500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from amcore import metrics


def before_1d(u, v, wu, wv, ps):
    """``metrics._wasserstein_1d``'s weighted branch as it was (commit e858907): searchsorted on both scales."""
    (su, cu), (sv, cv) = metrics._sorted(u, wu), metrics._sorted(v, wv)
    n, m, rows = su.shape[1], sv.shape[1], len(su)
    cu = np.tile(np.arange(1, n + 1) / n, (rows, 1)) if cu is None else cu
    cv = np.tile(np.arange(1, m + 1) / m, (rows, 1)) if cv is None else cv
    q = np.sort(np.concatenate([cu, cv], axis=1), axis=1)
    dq = np.diff(q, axis=1, prepend=0.0)
    tq = torch.from_numpy(q)
    iu = torch.searchsorted(torch.from_numpy(cu), tq).clamp_max_(n - 1).numpy()
    iv = torch.searchsorted(torch.from_numpy(cv), tq).clamp_max_(m - 1).numpy()
    gap = np.abs(np.take_along_axis(su, iu, axis=1) - np.take_along_axis(sv, iv, axis=1))
    return {p: (gap**p * dq).sum(axis=1) for p in ps}


def timed(label: str, run) -> tuple[float, dict]:
    start = time.perf_counter()
    value = run()
    seconds = time.perf_counter() - start
    print(f"{label:44} {seconds:7.2f} s  SW1 {value[1]:.10f}  SW2 {value[2]:.10f}")
    return seconds, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200000)
    parser.add_argument("--dim", type=int, default=30)
    parser.add_argument("--projections", type=int, default=500)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    a = rng.normal(size=(int(args.cells * 0.95), args.dim))
    b = rng.normal(size=(int(args.cells * 1.05), args.dim)) + 0.3
    equal, uneven = np.full(len(a), 1.0 / len(a)), rng.gamma(2.0, size=len(a))
    sliced = metrics.sliced_wassersteins
    after_1d = metrics._wasserstein_1d
    for name, weights, after_weights in (("equal weights", equal, None), ("uneven weights", uneven, uneven)):
        metrics._wasserstein_1d = before_1d
        slow, old = timed(f"{name}, before", lambda w=weights: sliced(a, b, (1, 2), args.projections, 1, wa=w))
        metrics._wasserstein_1d = after_1d
        fast, new = timed(f"{name}, after", lambda w=after_weights: sliced(a, b, (1, 2), args.projections, 1, wa=w))
        change = max(abs(new[p] / old[p] - 1) for p in (1, 2))
        print(f"{name}: time_ratio={slow / fast:.2f} (before / after), largest relative change {change:.1e}")


if __name__ == "__main__":
    main()
