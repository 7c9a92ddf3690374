"""Sinkhorn's stop for the entropic coupling: iterations, seconds and the plan's error at the old and new tolerance.

The entropic coupling (``coupling: entropic``, eAM's default reg ``2 sigma^2 dt``) only samples partners from the
plan, so a plan within a small L1 distance of the converged one draws the same pairs' law. Two 5-d Gaussian
samples of ``--cells`` cells are coupled at regularisations given as shares of the pairs' median squared
distance; for each, POT's log-domain Sinkhorn runs at ``stopThr`` 1e-7 (before audit 20) and
``interpolants.SINKHORN_TOL`` side by side, both against a reference run to 1e-9.

    python benchmarks/sinkhorn_stop.py [--cells 1500] [--shares 0.2 0.04 0.011] [--seed 0]

Prints, per share: iterations and seconds of each stop, and each plan's L1 distance to the reference (the pairs'
law moves by half of it in total variation).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import ot
import torch

from amcore.paths.interpolants import SINKHORN_TOL


def solve(cost: torch.Tensor, reg: float, tol: float) -> tuple[torch.Tensor, int, float]:
    """The plan, its iterations and seconds, as ``entropic_pairs`` calls POT."""
    uniform = ot.unif(len(cost), type_as=cost)
    started = time.perf_counter()
    plan, log = ot.sinkhorn(uniform, uniform, cost, reg, method="sinkhorn_log", numItermax=5000, stopThr=tol,
                            log=True)  # fmt: skip
    return plan, int(log["niter"]), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1500)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.2, 0.04, 0.011])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    a = torch.as_tensor(rng.standard_normal((args.cells, 5)), dtype=torch.float64)
    b = torch.as_tensor(rng.standard_normal((args.cells, 5)) * 0.8 + 0.3, dtype=torch.float64)
    cost = torch.cdist(a, b).pow(2)
    median = float(cost.median())
    print(f"{args.cells} cells a side, 5-d; reg as a share of the median cost {median:.3g}")
    print(f"share  | stop 1e-7: iterations, s, L1 | stop {SINKHORN_TOL:g}: iterations, s, L1 | time ratio")
    for share in args.shares:
        reg = share * median
        reference, _, _ = solve(cost, reg, 1e-9)
        old, old_its, old_s = solve(cost, reg, 1e-7)
        new, new_its, new_s = solve(cost, reg, SINKHORN_TOL)
        old_l1, new_l1 = float((old - reference).abs().sum()), float((new - reference).abs().sum())
        print(f"{share:<6g} | {old_its:5d} {old_s:6.1f} {old_l1:.1e} | {new_its:5d} {new_s:6.1f} {new_l1:.1e} | "
              f"{old_s / new_s:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
