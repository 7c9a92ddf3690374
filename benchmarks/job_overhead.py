"""What a Snakemake job costs before it computes anything: the interpreter, imports, MLflow's run set-up.

Every figure is the median wall time of fresh processes (``--rounds`` each, alternated): the interpreter alone,
the imports of the heavy libraries on their own, ``amcore --help``, ``snakemake --dry-run`` on the default config
(the Snakefile's own checks, which every ``snakemake`` call runs), loading a model and pushing 100 cells from
Python, and real stages on a tiny store (they compute next to nothing, so their time is overhead): ``baseline
copy_prev``, ``integrate``, ``prepare`` and a five-step ``train``, untracked and tracked (a sqlite MLflow backend
and parent run created first, as the pipeline's ``onstart`` does).

    python benchmarks/job_overhead.py [--rounds 5] [--compare /path/to/other/checkout]

With ``--compare`` each command also runs on the other source tree (``PYTHONPATH``), alternated with this one,
and the last column is the ratio other / this.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ["numpy", "xarray", "zarr", "dask.array", "pandas", "scipy.interpolate", "matplotlib.pyplot", "torch",
             "ot", "mlflow"]  # fmt: skip


def timed(cmd: list[str], src: Path, env: dict, cwd: Path) -> float:
    """Wall seconds of ``cmd`` importing amcore from ``src`` (run elsewhere: ``python -m`` puts the working
    directory first on the path, ahead of ``PYTHONPATH``); ``{tree}`` in ``cmd`` stands for ``src``."""
    cmd = [part.replace("{tree}", str(src)) for part in cmd]
    start = time.perf_counter()
    done = subprocess.run(cmd, env={**env, "PYTHONPATH": str(src)}, capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd[:6])} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compare", type=Path, default=None, help="another checkout's root, measured alongside")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from amcore import tracking
    from amcore.data.prepare import build_snapshots
    from amcore.data.store import read_store, write_store
    from amcore.training.train import TrainConfig, train

    work = Path(tempfile.mkdtemp(prefix="amcore-overhead-"))
    try:
        spec = {"source": "simulate", "simulator": "gaussian_path", "times": [0.0, 0.5, 1.0], "n_per_time": 200,
                "seed": 0}  # fmt: skip
        store = work / "store.zarr"
        write_store(store, build_snapshots(spec, holdout_times=[0.5]))
        tiny = {"steps": 5, "width": 8, "depth": 1, "batch_size": 32, "log_every": 5, "coupling": "independent"}
        cfg = TrainConfig(**tiny)
        train(read_store(store), cfg, work / "m.pt", work / "m.csv")
        py = [sys.executable]
        amcore = [*py, "-m", "amcore"]
        out = str(work / "out.zarr")
        commands = {"python -c pass": [*py, "-c", "pass"]}
        commands |= {f"import {lib}": [*py, "-c", f"import {lib}"] for lib in LIBRARIES}
        commands["amcore --help"] = [*amcore, "--help"]
        snakemake = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", "{tree}/Snakefile"]
        commands["snakemake --dry-run"] = [*snakemake, "--directory", str(work / "sm"), "--cores", "1", "--dry-run"]
        # A collaborator's script: the model alone, outside the pipeline (audit 75).
        push = f"import amcore, numpy as np; amcore.load({str(work / 'm.pt')!r}).push(np.zeros((100, 2)), 0.0, 1.0)"
        commands["amcore.load + push"] = [*py, "-c", push]
        stages = {
            "baseline copy_prev": [*amcore, "baseline", "--store", str(store), "--holdout", "0.5", "--name",
                                   "copy_prev", "--out", out],
            "integrate": [*amcore, "integrate", "--store", str(store), "--checkpoint", str(work / "m.pt"),
                          "--params", json.dumps({"steps_per_interval": 2}), "--out", out],
            "prepare": [*amcore, "prepare", "--dataset", json.dumps(spec), "--out", out, "--summary",
                        str(work / "s.json")],
            "train": [*amcore, "train", "--store", str(store), "--params", json.dumps(tiny), "--checkpoint",
                      f"{out}/model.pt", "--loss-csv", f"{out}/loss.csv"],
        }  # fmt: skip
        plain = {k: v for k, v in os.environ.items() if not k.startswith(("AMCORE_MLFLOW_", "MLFLOW_TRACKING"))}
        tracking.start_parent(f"sqlite:///{work / 'mlflow.db'}", "overhead", work, {})
        tracked = {**plain, **{k: v for k, v in os.environ.items() if k.startswith("AMCORE_MLFLOW_")}}
        runs = [(name, cmd, plain) for name, cmd in commands.items()]
        for name, cmd in stages.items():
            runs += [(f"amcore {name}", cmd, plain), (f"amcore {name} (tracked)", cmd, tracked)]
        trees = [ROOT] + ([args.compare.resolve()] if args.compare else [])
        results = {name: {tree: [] for tree in trees} for name, _, _ in runs}
        for _ in range(args.rounds):
            for name, cmd, env in runs:
                for tree in trees:
                    results[name][tree].append(timed(cmd, tree, env, work))
                    shutil.rmtree(out, ignore_errors=True)
        header = f"{'command':36s} {'this (s)':>9s}"
        header += f" {'other (s)':>10s} {'other/this':>10s}" if args.compare else ""
        print(header)
        for name, _, _ in runs:
            this = statistics.median(results[name][ROOT])
            line = f"{name:36s} {this:9.2f}"
            if args.compare:
                other = statistics.median(results[name][trees[1]])
                line += f" {other:10.2f} {other / this:10.2f}"
            print(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
