"""What keeping a step's freed memory (``speed.keep_freed_memory``, which ``amcore train`` calls) saves on the CPU.

The setting belongs to the process, so each measurement is a fresh process: training steps of the default
potential (MLP 4x256, d = 5, batch 1024, one thread), under glibc's malloc defaults and with freed memory kept,
alternated round by round so that both see the same load. Each process reports, per step after a warm-up: wall
time, kernel (system) time and minor page faults. Printed: their medians over the rounds, a line
``<variant>_kept_speedup=<x>`` (median step time under the defaults over that kept) per variant, and last the
medians as JSON.

    python benchmarks/freed_memory.py [--rounds 5] [--steps 10] [--kinds am eam]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from train_throughput import make_step  # this folder is on sys.path when run as a script

from amcore.data.simulate import OrnsteinUhlenbeck, simulate_snapshots
from amcore.data.store import Snapshots
from amcore.paths.interpolants import SnapshotPath
from amcore.training.speed import keep_freed_memory
from amcore.training.train import TrainConfig

MODES = ("defaults", "kept")


def worker(mode: str, kind: str, steps: int) -> None:
    """Run ``steps`` training steps of amcore after 3 warm-up steps; print their mean costs as JSON."""
    torch.set_num_threads(1)
    if mode == "kept" and not keep_freed_memory():
        sys.exit("keep_freed_memory needs glibc's malloc")
    x, t = simulate_snapshots(OrnsteinUhlenbeck(dim=5), [0.0, 0.5, 1.0], 2048, seed=0)
    path = SnapshotPath(Snapshots.from_labels(x, t), coupling="independent")
    spec = TrainConfig(objective=kind, sigma=1.0 if kind == "eam" else 0.0).spec()
    step = make_step("amcore", path, spec, compile=False, batch=1024)
    for _ in range(3):
        step()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    per_step = {
        "wall_ms": 1e3 * wall / steps,
        "sys_ms": 1e3 * (after.ru_stime - before.ru_stime) / steps,
        "faults": (after.ru_minflt - before.ru_minflt) / steps,
    }
    print(json.dumps(per_step))


def measure(mode: str, kind: str, steps: int) -> dict[str, float]:
    run = subprocess.run(
        [sys.executable, __file__, "--worker", mode, kind, "--steps", str(steps)], capture_output=True, text=True
    )
    if run.returncode:
        sys.exit(f"worker {mode} {kind} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="measured steps per process")
    parser.add_argument("--kinds", nargs="+", default=["am", "eam"], choices=["am", "eam"])
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.steps)
        return
    results = {(kind, mode): [] for kind in args.kinds for mode in MODES}
    for _ in range(args.rounds):
        for kind in args.kinds:
            for mode in MODES:
                results[kind, mode].append(measure(mode, kind, args.steps))
    print(f"d=5, batch 1024, MLP 4x256, 1 thread; medians over {args.rounds} alternated rounds, per step")
    print(f"{'variant':8} {'malloc':9} {'wall ms':>8} {'sys ms':>7} {'faults':>7}")
    median = {}
    for (kind, mode), runs in results.items():
        median[kind, mode] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        m = median[kind, mode]
        print(f"{kind:8} {mode:9} {m['wall_ms']:>8.1f} {m['sys_ms']:>7.1f} {m['faults']:>7.0f}")
    for kind in args.kinds:
        ratio = median[kind, "defaults"]["wall_ms"] / median[kind, "kept"]["wall_ms"]
        print(f"{kind}_kept_speedup={ratio:.2f}")
    print(json.dumps({f"{kind}_{mode}": m for (kind, mode), m in median.items()}))


if __name__ == "__main__":
    main()
