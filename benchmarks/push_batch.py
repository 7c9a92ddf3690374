"""Wall time of a model's pushes and field evaluations against the number of cells per batch, on the CPU.

A batch of 65,536 cells makes every hidden activation of a 128-wide network a 32 MB array, far beyond the CPU's
caches; a few thousand cells keep them in cache. This trains a small AM model (the default network) and, in
one process, alternates the batch sizes over ``--rounds`` rounds:

    python benchmarks/push_batch.py [--cells 100000] [--dim 2 50] [--batches 1024 4096 16384 65536] [--threads 1]

It prints each (dim, batch) pair's median seconds for ``push`` (RK4, 5 steps) and ``velocity``, and last
``push_ratio_<dim>=<time at 65,536 / time at the fastest>``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import amcore
from amcore.models import trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--dim", type=int, nargs="+", default=[2, 50])
    parser.add_argument("--batches", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    for dim in args.dim:
        times = np.repeat([0.0, 1.0], 500)
        cells = rng.normal(size=(len(times), dim)) + times[:, None]
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = Path(folder) / "m.pt"
            snaps = amcore.Snapshots.from_labels(cells, times)
            amcore.train(snaps, amcore.TrainConfig(steps=20, threads=1), checkpoint)
            model = amcore.load(checkpoint)
        x = rng.normal(size=(args.cells, dim)).astype(np.float32)
        push = {b: [] for b in args.batches}
        field = {b: [] for b in args.batches}
        for _ in range(args.rounds):
            for batch in args.batches:
                start = time.perf_counter()
                model.push(x, 0.0, 1.0, steps=5, batch_size=batch)
                push[batch].append(time.perf_counter() - start)
                trained.BATCH_ROWS = batch
                start = time.perf_counter()
                model.velocity(x, 0.5)
                field[batch].append(time.perf_counter() - start)
        for batch in args.batches:
            print(f"dim {dim} batch {batch}: push {statistics.median(push[batch]):.3f} s, velocity "
                  f"{statistics.median(field[batch]):.3f} s")  # fmt: skip
        fastest = min(statistics.median(v) for v in push.values())
        print(f"push_ratio_{dim}={statistics.median(push[max(args.batches)]) / fastest:.3g}")


if __name__ == "__main__":
    main()
