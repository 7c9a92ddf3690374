"""Time of AM's training step with the boundary form against the pathwise form (``pathwise: 1``), side by side.

The pathwise form needs no potential at the boundary draws (a batch's worth at each end), so its step skips their
forward and backward passes. Both steps run on the same spline path (5 times of 550 cells, d = 5), the default
potential and its hand-derived terms, batch 256, one thread, alternating in ``--rounds`` rounds of ``--steps``
steps (loss and backward).

    python benchmarks/pathwise_step.py [--rounds 3] [--steps 300]

The last line: ``pathwise_over_boundary=<median step time ratio>``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from amcore import Snapshots, TrainConfig
from amcore.models.potentials import Potential
from amcore.paths.interpolants import SnapshotPath
from amcore.training.speed import action_step
from amcore.training.timesampling import TimeSampler


def step_ms(path: SnapshotPath, share: float, steps: int) -> float:
    """Milliseconds per AM step (loss and backward) with a share ``share`` of the pathwise form."""
    torch.manual_seed(0)
    model = Potential(path.dim, (path.t0, path.t1), width=128, depth=3)
    step = action_step(model, TrainConfig(pathwise=share, interpolation="spline").spec(), True, False, False)
    gen, times = torch.Generator().manual_seed(0), TimeSampler("stratified", path.t0, path.t1)
    for _ in range(20):
        step(path, 256, gen, times).backward()
    start = time.perf_counter()
    for _ in range(steps):
        step(path, 256, gen, times).backward()
    return 1e3 * (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    t = np.repeat(np.arange(5.0), 550)
    x = (rng.standard_normal((len(t), 5)) + t[:, None]).astype(np.float32)
    path = SnapshotPath(Snapshots.from_labels(x, t), interpolation="spline")
    times = {0.0: [], 1.0: []}
    for _ in range(args.rounds):
        for share in times:
            times[share].append(step_ms(path, share, args.steps))
    for share, values in times.items():
        print(f"pathwise {share:g}: {np.median(values):.2f} ms per step (median of {args.rounds} rounds)")
    print(f"pathwise_over_boundary={np.median(times[1.0]) / np.median(times[0.0]):.2f}")


if __name__ == "__main__":
    main()
