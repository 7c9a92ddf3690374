"""Peak memory and wall time of pushing many cells: in batches written step by step, against all at once.

Builds a store whose first time holds ``--cells`` cells (default 10^6) in ``--dim`` dimensions (default 50) and
a small model on it, then, in fresh child processes, alternately:

- ``batched``: ``amcore integrate`` as the pipeline runs it (``integrate.batch_size`` cells at a time, each step
  of each batch written to the zarr store as it comes);
- ``one-shot``: what ``amcore integrate`` did before: every cell in one tensor, the whole ``(steps, cells,
  features)`` array in memory, then written.

    python benchmarks/integrate.py [--cells 1000000] [--dim 50] [--times 3] [--steps 5] [--batch 65536]
                                   [--rounds 1] [--threads N]

On shared cores pass ``--threads 1``: two torch threads contending with other processes spin at each parallel
region, which charges batches per region rather than per cell and makes either side's time meaningless.

Its last line reads ``rss_ratio=<one-shot / batched peak RSS> time_ratio=<one-shot / batched wall>``. The
one-shot child is skipped (``--no-one-shot``) where its memory would not fit: about ``steps x cells x dim x 4``
bytes of trajectories plus the field's activations for every cell at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LAUNCHER = """import os, sys
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
status, usage = os.wait4(pid, 0)[1:]
print(f"maxrss_kb={usage.ru_maxrss}", file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""

ONE_SHOT = """import sys, json
import numpy as np
from amcore.models import integrate
from amcore.models.trained import load
from amcore.data.store import open_store
store, checkpoint, out, params = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
snaps, model = open_store(store), load(checkpoint)
x0 = np.asarray(snaps.snapshot(0), dtype=np.float32)
traj = model.trajectories(x0, snaps.t_values, params["steps_per_interval"], batch_size=len(x0))
_, observed = integrate.time_grid(snaps.t_values, params["steps_per_interval"])
integrate.write_trajectories(out, traj.x, traj.time, observed, traj.weight)
"""


def run_child(cmd: list[str], threads: int | None) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of a child started from a tiny launcher (its RSS is its own)."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{cmd[:4]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    maxrss = next(int(line.split("=")[1]) for line in done.stderr.splitlines() if line.startswith("maxrss_kb="))
    return wall, maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--times", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="integrator steps between observed times")
    parser.add_argument("--batch", type=int, default=65536)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the children (default: all)")
    parser.add_argument("--no-one-shot", action="store_true")
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()

    from amcore.data.store import Snapshots, write_store
    from amcore.training.train import TrainConfig, train

    work = Path(tempfile.mkdtemp(prefix="amcore-integrate-bench-", dir=args.dir))
    try:
        rng = np.random.default_rng(0)
        counts = [args.cells] + [1000] * (args.times - 1)  # only the first time is pushed
        t = np.repeat(np.linspace(0.0, 1.0, args.times), counts)
        x = (rng.standard_normal((len(t), args.dim), dtype=np.float32) + t[:, None]).astype(np.float32)
        store = work / "store.zarr"
        write_store(store, Snapshots.from_labels(x, t))
        small = Snapshots.from_labels(x[-2000:], t[-2000:])
        cfg = TrainConfig(steps=20, batch_size=256, width=args.width, depth=2, coupling="independent", log_every=20)
        train(small, cfg, work / "model.pt", work / "loss.csv")
        del x, t
        params = {"steps_per_interval": args.steps, "batch_size": args.batch}
        steps = (args.times - 1) * args.steps + 1
        print(
            f"{args.cells} cells x {args.dim} features pushed through {steps} steps (trajectories: "
            f"{steps * args.cells * args.dim * 4 / 2**30:.2f} GiB), MLP width {args.width}",
            file=sys.stderr,
        )
        model = str(work / "model.pt")
        batched_cmd = [sys.executable, "-m", "amcore", "integrate", "--store", str(store), "--checkpoint", model,
                       "--params", json.dumps(params), "--out", str(work / "b.zarr")]  # fmt: skip
        one_shot_cmd = [sys.executable, "-c", ONE_SHOT, str(store), model, str(work / "o.zarr"), json.dumps(params)]
        results: dict[str, list[tuple[float, float]]] = {"batched": [], "one-shot": []}
        for _ in range(args.rounds):
            for name, cmd in (("batched", batched_cmd), ("one-shot", one_shot_cmd)):
                if name == "one-shot" and args.no_one_shot:
                    continue
                wall, rss = run_child(cmd, args.threads)
                results[name].append((wall, rss))
                print(f"{name}: {wall:.1f} s, peak RSS {rss:.2f} GB", file=sys.stderr)
                shutil.rmtree(work / ("b.zarr" if name == "batched" else "o.zarr"), ignore_errors=True)
        best = {name: (min(w for w, _ in r), min(m for _, m in r)) for name, r in results.items() if r}
        line = f"batched_rss_gb={best['batched'][1]:.3f} batched_s={best['batched'][0]:.1f}"
        if "one-shot" in best:
            line += (
                f" one_shot_rss_gb={best['one-shot'][1]:.3f} one_shot_s={best['one-shot'][0]:.1f}"
                f" rss_ratio={best['one-shot'][1] / best['batched'][1]:.2f}"
                f" time_ratio={best['one-shot'][0] / best['batched'][0]:.2f}"
            )
        print(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
