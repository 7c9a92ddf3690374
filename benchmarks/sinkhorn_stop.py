"""Sinkhorn for the entropic coupling: its stop, and epsilon scaling where the reg is small.

The entropic coupling (``coupling: entropic``, eAM's default reg ``2 sigma^2 dt``) only samples partners from the
plan, so a plan within a small L1 distance of the converged one draws the same pairs' law. Two 5-d Gaussian
samples of ``--cells`` cells are coupled at regularisations given as shares of the pairs' median squared
distance; for each, POT's log-domain Sinkhorn runs at ``stopThr`` 1e-7 (before audit 20), at
``interpolants.SINKHORN_TOL``, and at that stop by epsilon scaling from ``SLOW_BELOW`` of the median cost (what
``entropic_pairs`` does below it), each against a reference run (scaled, to 1e-9).

    python benchmarks/sinkhorn_stop.py [--cells 1500] [--shares 0.2 0.04 0.011] [--seed 0]

Prints, per share: iterations and seconds of each, each plan's L1 distance to the reference (the pairs' law moves
by half of it in total variation), and plain over scaled seconds at the same stop.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import ot
import torch

from amcore.paths.interpolants import SINKHORN_TOL, SLOW_BELOW, entropic_plan


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
    print(f"share  | stop 1e-7: its, s, L1 | stop {SINKHORN_TOL:g}: its, s, L1 | scaled: its, s, L1 | plain / scaled")
    for share in args.shares:
        reg = share * median
        reference, _ = entropic_plan(cost, reg, SLOW_BELOW * median, 1e-9)
        old, old_its, old_s = solve(cost, reg, 1e-7)
        new, new_its, new_s = solve(cost, reg, SINKHORN_TOL)
        started = time.perf_counter()
        scaled, scaled_its = entropic_plan(cost, reg, SLOW_BELOW * median)
        scaled_s = time.perf_counter() - started
        old_l1, new_l1, scaled_l1 = (float((plan - reference).abs().sum()) for plan in (old, new, scaled))
        print(f"{share:<6g} | {old_its:5d} {old_s:6.1f} {old_l1:.1e} | {new_its:5d} {new_s:6.1f} {new_l1:.1e} | "
              f"{scaled_its:5d} {scaled_s:6.1f} {scaled_l1:.1e} | {new_s / scaled_s:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
