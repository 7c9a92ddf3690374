"""What uAM's growth cap beyond the training path's cells costs a weighted push, on the CPU.

A weighted push measures each particle's distance to 1,024 of the path's cells per interval once per integration
step (``TrainedModel._growth_cap``). This trains a small uAM model on a growing Gaussian in each ``--dim`` and, in one
process, alternates pushes of ``--cells`` cells with the cap and without it (``growth_support`` set to None) over
``--rounds`` rounds:

    python benchmarks/growth_support.py [--cells 20000] [--dim 2 50] [--steps 10] [--rounds 3] [--threads 1]

It prints each side's median seconds and last ``support_cost_<dim>=<with / without>`` per dimension.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import amcore
from amcore import Snapshots, TrainConfig, train


def growing_cells(dim: int, rng: np.random.Generator) -> Snapshots:
    """Three times, 300 cells doubling to 1,200, drifting one spread along the first feature."""
    times = np.repeat([0.0, 1.0, 2.0], [300, 600, 1200])
    x = rng.normal(size=(len(times), dim))
    x[:, 0] += times
    return Snapshots.from_labels(x.astype(np.float32), times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--dim", type=int, nargs="+", default=[2, 50])
    parser.add_argument("--steps", type=int, default=10, help="integration steps per interval")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dim in args.dim:
            path = Path(tmp) / f"uam{dim}.pt"
            train(growing_cells(dim, rng), TrainConfig(objective="uam", steps=300, threads=args.threads), path)
            model = amcore.load(path)
            support = model.growth_support
            cells = rng.normal(size=(args.cells, dim)).astype(np.float32)
            seconds: dict[str, list[float]] = {"with": [], "without": []}
            held = 0
            for _ in range(args.rounds):
                for side in seconds:
                    model.growth_support = support if side == "with" else None
                    start = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        traj = model.trajectories(cells, [0.0, 1.0, 2.0], args.steps, progress=None)
                    seconds[side].append(time.perf_counter() - start)
                    held = traj.info.get("growth_held", held) if side == "with" else held
            median = {side: statistics.median(v) for side, v in seconds.items()}
            print(f"dim {dim}: {args.cells} cells, {2 * args.steps} steps: with the cap {median['with']:.2f} s, "
                  f"without {median['without']:.2f} s (held {held})")  # fmt: skip
            ratios[dim] = median["with"] / median["without"]
    print(" ".join(f"support_cost_{dim}={ratio:.3f}" for dim, ratio in ratios.items()))


if __name__ == "__main__":
    main()
