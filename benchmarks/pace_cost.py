"""What the pace (``potentials.clock_pace``) costs a training step: the library's AM step on one uneven clock, the
potential paced and not, measured side by side in one run (``train_throughput.rates``: the best of 3 interleaved
rounds).

The clock is audit 50's: training times 0.1, 0.3, 1, 2, 4, 8, 12, 24, 48, 72, 120 and 168 hours, 11 intervals, so
11 windows to join (the pace's cost grows with the number of training times). Both potentials run on the same clock
(the same time features, the same draws); only the pace and its weight differ. 500 Gaussian cells a time whose
mean relaxes with a time constant of 10 hours, exact OT pairs, batch 1024, the training's default network and the
library's step (``mlp_terms``' terms).

    python benchmarks/pace_cost.py [--steps 20] [--dims 6 50] [--batch 1024]

Last line: ``pace_cost=<x>``, the largest step-time ratio paced over unpaced across the dims.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from train_throughput import rates

from amcore.data.store import Snapshots
from amcore.models.objective import ObjectiveSpec
from amcore.models.potentials import Potential
from amcore.paths.interpolants import SnapshotPath
from amcore.training.speed import action_step
from amcore.training.timesampling import TimeSampler
from amcore.training.train import TrainConfig, adam, motion_levels

TIMES = [0.1, 0.3, 1, 2, 4, 8, 12, 24, 48, 72, 120, 168]


def make_step(path: SnapshotPath, knots: list[float], levels: list[float], paced: bool, batch: int):
    """One full default AM step (loss, gradients, Adam) on a fresh potential on the clock."""
    torch.manual_seed(0)
    cfg = TrainConfig()
    model = Potential(path.dim, (path.t0, path.t1), width=cfg.width, depth=cfg.depth, time_knots=knots,
                      time_levels=levels, paced=paced)  # fmt: skip
    assert model.paced == paced
    opt, gen = adam(model, cfg.lr), torch.Generator().manual_seed(0)
    times = TimeSampler(cfg.time_sampling, path.t0, path.t1, knots=knots, levels=levels)
    loss_fn = action_step(model, ObjectiveSpec("am"), cfg.fused, cfg.compile, distributed=False)

    def step() -> None:
        loss = loss_fn(path, batch, gen, times)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="steps per round (3 rounds)")
    parser.add_argument("--dims", type=int, nargs="+", default=[6, 50])
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args()
    worst = 0.0
    print(f"{'d':>3} {'unpaced /s':>11} {'paced /s':>10} {'ratio':>6}")
    for dim in args.dims:
        t = np.repeat(np.asarray(TIMES, dtype=np.float64), 500)
        x = np.random.default_rng(0).standard_normal((len(t), dim)) + 4 * (1 - np.exp(-t / 10))[:, None]
        snaps = Snapshots.from_labels(x.astype(np.float32), t)
        knots, levels = motion_levels(snaps)
        path = SnapshotPath(snaps, coupling="ot", interpolation="linear")
        steps = {paced: make_step(path, knots, levels, paced, args.batch) for paced in (False, True)}
        best = rates(steps, args.steps, args.batch, lambda: None)
        ratio = best[False] / best[True]
        worst = max(worst, ratio)
        print(f"{dim:>3} {best[False]:>11.0f} {best[True]:>10.0f} {ratio:>6.3f}")
    print(f"pace_cost={worst:.3f}")


if __name__ == "__main__":
    main()
