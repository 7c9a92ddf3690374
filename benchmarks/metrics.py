"""The distances of one time point before and after issue 15, side by side: wall time and peak memory.

Before: exact W1/W2 up to ``max_exact_size`` cells per side and sliced distances (POT, 500 directions, named
``sliced_w1``/``sliced_w2``) above it, MMD and energy distance from dense matrices on subsamples of
``max_exact_size`` (the code of commit 1826755, copied below). After: ``evaluate.distances`` (exact W1/W2 on
subsamples, their subsampling noise, sliced W on all cells, blockwise MMD and energy). Each runs in a fresh process
on the same clouds (``--cells`` predicted and observed cells, ``--dim`` features, a shifted Gaussian), each at its
own default ``max_exact_size`` unless told; peak RSS is counted above the process's RSS once the clouds are built.
Printed: one line per variant, then ``time_ratio=<before / after> rss_ratio=<before / after>``.

    python benchmarks/metrics.py [--cells 20000] [--dim 50] [--max-exact-size N] [--before-max-exact-size 5000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import ot
import torch


def before(a: np.ndarray, b: np.ndarray, max_size: int, seed: int) -> dict[str, float]:
    """The distances as commit 1826755 computed them (amcore/metrics.py and amcore/evaluate.py there)."""

    def subsample(x, n, rng):
        idx = np.arange(len(x)) if len(x) <= n else rng.choice(len(x), n, replace=False)
        return x[idx].astype(np.float64), np.full(len(idx), 1.0 / len(idx))

    result = {}
    for p in (1, 2):
        if max(len(a), len(b)) > max_size:
            value = ot.sliced_wasserstein_distance(a, b, None, None, n_projections=500, p=p, seed=seed)
            result[f"sliced_w{p}"] = float(value)
        else:
            cost = ot.dist(a, b, metric="euclidean")
            value = ot.emd2(ot.unif(len(a)), ot.unif(len(b)), cost**p, numItermax=10_000_000)
            result[f"w{p}"] = float(max(value, 0.0) ** (1 / p))
    rng = np.random.default_rng(seed)
    (xa, pa), (xb, pb) = subsample(a, max_size, rng), subsample(b, max_size, rng)
    x, y, pa, pb = (torch.as_tensor(v) for v in (xa, xb, pa, pb))
    pooled = torch.cat([x, y])
    d2 = torch.cdist(pooled, pooled).pow(2)
    median = d2[torch.triu_indices(len(pooled), len(pooled), 1).unbind()].median().clamp_min(1e-12)
    kernel = sum(torch.exp(-d2 / (2 * s**2 * median)) for s in (0.5, 1.0, 2.0)) / 3
    n = len(x)
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]

    def within(k, p):
        return (p @ k @ p - (p.pow(2) * k.diagonal()).sum()) / (1 - p.pow(2).sum())

    result["mmd"] = float(within(kxx, pa) + within(kyy, pb) - 2 * pa @ kxy @ pb)
    rng = np.random.default_rng(seed)
    (xa, pa), (xb, pb) = subsample(a, max_size, rng), subsample(b, max_size, rng)
    x, y, pa, pb = (torch.as_tensor(v) for v in (xa, xb, pa, pb))
    cross = pa @ torch.cdist(x, y) @ pb
    result["energy"] = float(2 * cross - pa @ torch.cdist(x, x) @ pa - pb @ torch.cdist(y, y) @ pb)
    return result


def worker(variant: str, cells: int, dim: int, max_exact_size: int) -> None:
    from amcore.evaluation.evaluate import distances

    rng = np.random.default_rng(0)
    predicted, observed = rng.standard_normal((cells, dim)) + 0.3, rng.standard_normal((cells, dim))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if variant == "before":
        scores = before(predicted, observed, max_exact_size, seed=1)
    else:
        scores = distances(predicted, observed, None, max_exact_size=max_exact_size, seed=1)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"wall_s": wall, "peak_rss_mb": (peak - base) / 1024, "scores": scores}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--max-exact-size", type=int, default=None, help="after; default: the library's")
    parser.add_argument("--before-max-exact-size", type=int, default=5000, help="before (its default: 5000)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.max_exact_size is None:
        from amcore.evaluation.evaluate import DEFAULTS

        args.max_exact_size = DEFAULTS["max_exact_size"]
    if args.worker:
        worker(args.worker, args.cells, args.dim, args.max_exact_size)
        return
    measured = {}
    for variant in ("before", "after"):
        size = args.before_max_exact_size if variant == "before" else args.max_exact_size
        cmd = [sys.executable, __file__, "--worker", variant, "--cells", str(args.cells), "--dim", str(args.dim),
               "--max-exact-size", str(size)]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"{variant} failed: {run.stderr[-2000:]}")
        measured[variant] = json.loads(run.stdout.strip().splitlines()[-1])
        m = measured[variant]
        scores = ", ".join(f"{k}={v:.4g}" for k, v in m["scores"].items())
        print(f"{variant:6s} {args.cells} x {args.dim}, max_exact_size {size}: "
              f"{m['wall_s']:.1f} s, peak RSS +{m['peak_rss_mb']:.0f} MB; {scores}")  # fmt: skip
    b, a = measured["before"], measured["after"]
    print(f"time_ratio={b['wall_s'] / a['wall_s']:.2f} rss_ratio={b['peak_rss_mb'] / a['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
