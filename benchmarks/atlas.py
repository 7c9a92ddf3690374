"""Atlas scale, end to end: a million cells at forty times in fifty features, through every stage of the pipeline.

Builds a dataset from the ``gaussian_path`` simulator (a known velocity), ``--cells`` cells spread evenly over
``--times`` times in ``--dim`` features, and writes it to a Parquet file the way real files come: not sorted by
time, rows grouped by a cluster label (a text column the reader skips). Then runs the project's Snakefile on it with
``snakemake``, stage after stage (``--until``): prepare (the store in seeded random order) -> train (one AM model,
nearest-frame interpolation, streamed: the store is larger than ``in_memory_max_mb``) -> integrate -> the held-out
baselines -> evaluate -> score -> table -> export, one interior time held out. Each stage is one ``snakemake``
process, so its wall time includes Snakemake's start (a few seconds) and its peak RSS is that of the largest process
it ran (the kernel's ``ru_maxrss`` over the stage's process tree, from ``wait4``). Afterwards the trained model,
loaded with ``amcore.load``, is scored against the analytic velocity on fresh samples (``evaluate.score_truth``).

    python benchmarks/atlas.py [--cells 1000000] [--dim 50] [--times 40] [--steps 2000] [--workdir DIR]

Prints a table of stages, the held-out W1 of AM and its baselines, and as its last line
``atlas_wall_s=<x> peak_rss_gb=<y> velocity_rel_error=<z>`` (wall of all stages; the largest stage RSS).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("prepare", "train", "integrate", "baseline", "evaluate", "score", "table", "export")


def write_dataset(path: Path, cells: int, dim: int, times: np.ndarray, seed: int) -> None:
    """``cells`` samples of ``GaussianPath(dim)`` at ``times`` as Parquet, rows grouped by a cluster label (the sign
    pattern of the first three centred coordinates), so the file is in neither time nor random order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from amcore.data.simulate import GaussianPath, simulate_snapshots

    sim = GaussianPath(dim=dim)
    x, t = simulate_snapshots(sim, [float(s) for s in times], cells // len(times), seed)
    centred = x[:, : min(3, dim)] - np.stack([sim.mean(s)[: min(3, dim)] for s in t]).astype(np.float32)
    label = ((centred > 0) * (1 << np.arange(centred.shape[1]))).sum(1)
    order = np.argsort(label, kind="stable")
    columns = {f"g{j}": x[order, j] for j in range(dim)}
    columns |= {"t": t[order], "cluster": np.char.add("c", label[order].astype(str))}
    pq.write_table(pa.table(columns), path, row_group_size=1 << 16)


def config(data: Path, results: Path, times: np.ndarray, steps: int) -> dict:
    holdout = float(times[len(times) // 2])
    return {
        "experiment": "atlas",
        "results_dir": str(results),
        "dataset": {"source": "parquet", "path": str(data), "t_key": "t"},
        "holdout_times": [holdout],
        "seeds": [0],
        "threads": 2,  # the one training job has both cores
        "baselines": ["copy_prev", "ot_displacement", "spline_path"],
        # Exact OT plans on at most 2000 cells per time (seeded subsamples, redrawn every ot_refresh_every steps in
        # training): 39 plans of 5000 cells a side cost about 15 s each on one core, of 2000 about 1 s.
        "baseline_ot_max_size": 2000,
        # Streamed: the store (cells x dim x 4 bytes) is larger than in_memory_max_mb, as an atlas's would be.
        # Forty close times in fifty dimensions: q_t drawn from the nearest observed times, no pairing. Straight
        # lines between OT pairs carry the pairing noise of finite samples (the two clouds' W2 at equal laws,
        # large in 50-d) divided by a short dt: at 10^5 cells their velocity error was 2.03, the nearest
        # frames' 0.18 (2000 steps each, README "Large datasets").
        "models": {
            "am": {
                "objective": "am",
                "interpolation": "nearest",
                "steps": steps,
                "batch_size": 256,
                "in_memory_max_mb": 64,
            }
        },
        "integrate": {"steps_per_interval": 10},
        "evaluate": {"max_exact_size": 2000, "seed": 1},
    }


def run_stage(stage: str, workdir: Path, configfile: Path, log: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB, the largest process of the stage's tree) of ``snakemake --until stage``."""
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(configfile), "--replace-workflow-config", "--cores", "2",
           "--until", stage]  # fmt: skip
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"atlas: stage {stage} failed; the end of {log}:\n" + "".join(log.read_text().splitlines(True)[-40:]))
    return wall, usage.ru_maxrss / 2**20


def du(path: Path) -> float:
    """MiB of a file, or of the files under a folder."""
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--times", type=int, default=40)
    parser.add_argument("--steps", type=int, default=2000, help="AM training steps")
    parser.add_argument("--workdir", type=Path, default=None, help="kept afterwards (default: a temporary one)")
    args = parser.parse_args()
    if args.times < 25:  # audit 32: 5 times ran prepare, then train refused the frames
        parser.error(
            "--times must be at least 25: the model draws q_t from the nearest frames, which train refuses "
            "farther apart than a quarter of the cloud's spread (this path's frames are nearer from 25 times on)"
        )

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="amcore-atlas-"))
    workdir.mkdir(parents=True, exist_ok=True)
    times = np.round(np.linspace(0.0, 1.0, args.times), 6)
    data = workdir / "atlas.parquet"
    start = time.perf_counter()
    write_dataset(data, args.cells, args.dim, times, seed=0)
    took = time.perf_counter() - start
    print(f"atlas: {args.cells} cells x {args.dim} features at {args.times} times, grouped by cluster: "
          f"{du(data):.0f} MiB of Parquet in {took:.0f} s", flush=True)  # fmt: skip
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config(data, workdir / "results", times, args.steps)))

    rows = []
    for stage in STAGES:
        wall, rss = run_stage(stage, workdir, configfile, workdir / f"{stage}.snakemake.log")
        rows.append((stage, wall, rss))
        print(f"atlas: {stage:<10} {wall:8.1f} s  peak RSS {rss:5.2f} GB", flush=True)

    from amcore import load
    from amcore.data.simulate import GaussianPath
    from amcore.data.store import open_store
    from amcore.evaluation.evaluate import score_truth

    out = workdir / "results" / "atlas"
    split = next(out.glob("holdout-*"))
    truth = score_truth(GaussianPath(dim=args.dim), open_store(split / "data" / "store.zarr"),
                        load(split / "am" / "seed-0" / "model.pt"), 4000, 2000, 1)  # fmt: skip
    stages = "\n".join(["| stage | wall (s) | peak RSS (GB) |", "|---|---|---|"]
                       + [f"| {stage} | {wall:.1f} | {rss:.2f} |" for stage, wall, rss in rows])  # fmt: skip
    print(f"\n{stages}\n")
    (workdir / "stages.md").write_text(stages + "\n")
    sections = (out / "table.md").read_text().split("### ")
    print("".join(f"### {section}" for section in sections if section.split("\n")[0] in ("w1", "w1_subsample_noise")))
    if args.workdir is not None:
        store, trajectories = du(split / "data" / "store.zarr"), du(split / "am" / "seed-0" / "trajectories.zarr")
        print(f"on disk: store {store:.0f} MiB, trajectories {trajectories:.0f} MiB; in {workdir}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    total = sum(w for _, w, _ in rows)
    peak = max(r for _, _, r in rows)
    print(f"atlas_wall_s={total:.0f} peak_rss_gb={peak:.2f} velocity_rel_error={truth['velocity_rel_error']:.4f}")


if __name__ == "__main__":
    main()
