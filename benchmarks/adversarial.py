"""AM on data it was not built against: tiny, heavy-tailed, unequal, oddly timed or scaled, high-dimensional.

Each case holds one interior time out, trains AM on the rest (straight and spline interpolants, the library's
defaults otherwise) and scores the held-out prediction (cells of the previous time pushed forward) by exact W1
against every held-out cell, beside the interpolant AM trained on (``ot_displacement`` for straight lines,
``spline_path`` for splines), the previous time's cells unmoved (``W1 copy``) and the data's noise floor (W1
between two random halves of the held-out cells).

Per model it prints: the final loss and AM's lower bound for it (minus half the training path's action: a loss
below it means the objective is exploited, not learned), cells that left the data (outside the held-out cells'
box widened by its width on every side), and ``excess`` = W1(AM) - W1(its interpolant) in units of the noise
floor: AM holds up when it is at most 1. Last line: ``adversarial_worst_excess=<x> diverged=<n>``.

``--objective uam`` trains unbalanced AM instead (the bound is then not AM's and is not checked): its pushed
particles carry weights, W1 weighs them, and ``ess`` is their effective sample size as a share of the particles
(a prediction resting on fewer than two particles counts as diverged, as ``amcore evaluate`` fails it).
``--objective eam`` trains entropic AM with a noise that alone spreads a cell by ``--noise-share`` of the cells'
spread over the training times (``sigma = share * spread / sqrt(t_last - t_first)``, the spread the median over
features and training times of 1.4826 times the cells' median absolute deviation: no case has a known sigma, so each
gets one in its own units) and pushes the previous time's cells by the SDE; its loss has no AM bound either.

    python benchmarks/adversarial.py [--steps 2000] [--cases eb_tiny heavy_tailed ...] [--objective am|uam|eam]
        [--head scalar|inner|auto] [--noise-share 0.5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from amcore import Snapshots, TrainConfig, load, train
from amcore.data.simulate import GaussianPath
from amcore.errors import TrainingDiverged
from amcore.evaluation.evaluate import failed_cells
from amcore.evaluation.holdout import ot_displacement, spline_path
from amcore.metrics import effective_size, escaped_rows, wasserstein
from amcore.models.potentials import pace_of
from amcore.paths.interpolants import SnapshotPath

EB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eb_nlsb_valtest_pca100.npz"


def eb_case(
    counts: list[int], time_unit: float = 1.0, dims: int = 5, seed: int = 1, scale: float = 1.0, offset: float = 0.0
) -> tuple[Snapshots, float]:
    """EB's first ``dims`` PCs, ``counts[k]`` cells of day ``k``, z-scored, then times ``scale`` plus ``offset``;
    times multiplied by ``time_unit``."""
    data = np.load(EB)
    x, t = data["X"][:, :dims], data["t"]
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(np.flatnonzero(t == k), n, replace=False) for k, n in enumerate(counts)])
    x = (x[keep] - x[keep].mean(0)) / x[keep].std(0) * scale + offset
    return Snapshots.from_labels(x.astype(np.float32), t[keep].astype(np.float64) * time_unit), 1.0 * time_unit


def gaussian_case(
    dim: int,
    counts: list[int],
    heavy_tails: bool = False,
    seed: int = 0,
    time_unit: float = 1.0,
    far: float = 0.0,
) -> tuple[Snapshots, float]:
    """A bent, stretching Gaussian path (``GaussianPath``) at evenly spaced times in ``[0, time_unit]``; with
    ``heavy_tails`` its ``z`` is Student-t with 2 degrees of freedom (infinite variance) and 3 % of cells are
    outliers 8 units off; with ``far`` instead, 1 % of the cells' ``z`` are ``far`` times larger (audit 6)."""
    sim = GaussianPath(dim=dim, shift=3.0, bend=1.2, scale_start=(1.0, 0.6, 0.8), scale_end=(0.5, 1.1, 0.7))
    rng = np.random.default_rng(seed)
    times = np.linspace(0.0, 1.0, len(counts))
    clouds = []
    for t, n in zip(times, counts, strict=True):
        z = rng.standard_t(2, (n, dim)) if heavy_tails or far else rng.standard_normal((n, dim))
        if far:
            z[rng.choice(n, max(1, n // 100), replace=False)] *= far
        x = sim.mean(t) + z @ sim.transform(t).T
        if heavy_tails:
            out = rng.random(n) < 0.03
            x[out] += 8.0 * rng.choice([-1.0, 1.0], (out.sum(), dim))
        clouds.append(x)
    labels = np.repeat(times, counts) * time_unit
    return Snapshots.from_labels(np.concatenate(clouds).astype(np.float32), labels), float(times[1] * time_unit)


def uneven_week_case(seed: int = 21) -> tuple[Snapshots, float]:
    """Audit 88's design: 2-d, two clusters turning on a spiral at a pace that slows with log time, seen at 0, 3 min,
    1 h, 3 days and a week (60, 35, 100, 45 and 80 cells), Student-t (2 degrees of freedom) scatter and 4 % of cells
    thrown about 15 units off; 72 h held out. Its intervals' speeds differ about 500-fold."""
    rng = np.random.default_rng(seed)
    times, counts = [0.0, 0.05, 1.0, 72.0, 168.0], [60, 35, 100, 45, 80]
    clouds = []
    for t, n in zip(times, counts, strict=True):
        angle = 3 * np.pi * np.log1p(100 * t) / np.log1p(16_800)
        branch = rng.integers(0, 2, n)
        radius = 3.0 + 2.0 * branch
        x = radius[:, None] * np.c_[np.cos(angle + np.pi * branch), np.sin(angle + np.pi * branch)]
        x += 0.3 * rng.standard_t(2, (n, 2))
        x[rng.random(n) < 0.04] += 15.0 * rng.standard_normal(2)
        clouds.append(x)
    return Snapshots.from_labels(np.concatenate(clouds).astype(np.float32), np.repeat(times, counts)), 72.0


CASES = {
    "eb_tiny": lambda: eb_case([60, 70, 50, 80, 65]),
    "eb_tiny_hours": lambda: eb_case([60, 70, 50, 80, 65], time_unit=24.0),
    "eb_30_cells": lambda: eb_case([30, 30, 30, 30, 30], seed=2),
    "eb_unequal": lambda: eb_case([40, 300, 60, 250, 45], seed=3),
    "eb_seconds": lambda: eb_case([60, 70, 50, 80, 65], time_unit=86_400.0, seed=5),
    "eb_thousands": lambda: eb_case([60, 70, 50, 80, 65], scale=1e3, offset=5e3),
    "eb_micro": lambda: eb_case([60, 70, 50, 80, 65], scale=1e-5),
    "heavy_tailed": lambda: gaussian_case(5, [80] * 5, heavy_tails=True),
    "tiny_heavy_hours": lambda: gaussian_case(3, [30, 90, 40, 70, 35], heavy_tails=True, seed=4, time_unit=48.0),
    "far_outliers": lambda: gaussian_case(20, [300] * 5, far=100.0),
    "dim2": lambda: gaussian_case(2, [100] * 5),
    "dim10": lambda: gaussian_case(10, [100] * 5),
    "dim50": lambda: gaussian_case(50, [100] * 5),
    "uneven_week": uneven_week_case,
}


NOISE_SHARE = 0.5


def eam_sigma(snaps: Snapshots, share: float) -> float:
    """The sigma whose noise alone spreads a cell by ``share`` of the cells' spread over the training times."""
    cells = [np.asarray(snaps.snapshot(k), dtype=np.float64) for k in range(len(snaps.t_values))]
    mad = [np.median(np.abs(c - np.median(c, axis=0)), axis=0) for c in cells]  # robust: t(2) has no variance
    spread = 1.4826 * float(np.median([np.median(m) for m in mad]))
    return share * spread / float(np.sqrt(snaps.t_values[-1] - snaps.t_values[0]))


def w1(a: np.ndarray, b: np.ndarray, wa: np.ndarray | None = None) -> float:
    return wasserstein(a, b, p=1, max_size=10_000, wa=wa)


def run_case(
    name: str, steps: int, interpolations=("linear", "spline"), workdir: Path | None = None, **settings
) -> dict:
    """Train and score every interpolation on one case; a dict per model plus the baselines and noise floor.
    ``settings``: TrainConfig fields beyond the defaults (the fast test trains a smaller network); the checkpoints
    go to ``workdir``, or to a temporary folder removed afterwards."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="amcore-adversarial-") as scratch:
            return run_case(name, steps, interpolations, Path(scratch), **settings)
    snaps, holdout = CASES[name]()
    times = [float(t) for t in snaps.t_values]
    k = times.index(holdout)
    prev, observed = np.asarray(snaps.snapshot(k - 1)), np.asarray(snaps.snapshot(k))
    training = snaps.drop_times([holdout])
    if settings.get("objective") == "eam":
        settings = {"sigma": eam_sigma(training, settings.pop("noise_share", NOISE_SHARE))} | settings
    rng = np.random.default_rng(0)
    half = rng.permutation(len(observed))
    floor = w1(observed[half[: len(half) // 2]], observed[half[len(half) // 2 :]])
    interpolants = {"linear": ot_displacement(snaps, holdout), "spline": spline_path(snaps, holdout)}
    result = {"case": name, "dim": snaps.dim, "counts": snaps.counts().tolist(), "noise_floor": floor,
              "copy_prev_w1": w1(prev, observed), "sigma": settings.get("sigma")}  # fmt: skip
    for interp in interpolations:
        base_x, base_w = interpolants[interp]
        interpolant = SnapshotPath(training, interpolation=interp)
        entry = {"interpolant_w1": w1(base_x, observed, base_w), "bound": -0.5 * interpolant.action()}
        cfg = TrainConfig(interpolation=interp, steps=steps, log_every=max(steps // 10, 1), **settings)
        start = time.perf_counter()
        try:
            summary = train(training, cfg, workdir / f"{name}-{interp}.pt", workdir / f"{name}-{interp}.csv")
        except TrainingDiverged as err:
            entry |= {"diverged": str(err).split(":")[0], "wall_s": time.perf_counter() - start}
            result[interp] = entry
            continue
        model = load(workdir / f"{name}-{interp}.pt")
        if (pace := pace_of(model.network)) is not None:  # its loss is the action in the clock's time
            entry["bound"] = -0.5 * interpolant.action(pace=pace)
        pushed = model.trajectories(prev, [times[k - 1], holdout])
        pred, weight = pushed.x[-1], None if pushed.weight is None else pushed.weight[-1].astype(np.float64)
        lost = failed_cells(pred, weight)
        entry |= {
            "head": summary.get("head", cfg.head),
            "diverged": f"{lost} cells NaN or inf (all: weights on fewer than two)" if lost else None,
            "final_loss": summary["final_loss"],
            "escaped": escaped_rows(pred, observed),
            "am_w1": float("nan") if lost else w1(pred, observed, weight),
            "ess": 1.0 if weight is None or lost else effective_size(weight) / len(weight),
            "wall_s": time.perf_counter() - start,
        }
        entry["excess"] = (entry["am_w1"] - entry["interpolant_w1"]) / floor
        result[interp] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--json", type=Path, help="write every result here")
    parser.add_argument("--objective", choices=["am", "uam", "eam"], default="am")
    parser.add_argument("--noise-share", type=float, default=NOISE_SHARE,
                        help="eam: the share of the cells' spread its noise alone spreads a cell by")  # fmt: skip
    parser.add_argument("--head", choices=["scalar", "inner", "auto"], default="scalar", help="AM's potential head")
    args = parser.parse_args()
    if not EB.exists():
        args.cases = [c for c in args.cases if not c.startswith("eb_")]
        print(f"{EB} absent: the EB cases are skipped", file=sys.stderr)
    rows, worst, diverged = [], -np.inf, 0
    print(f"{'case':15} {'interp':7} {'loss':>9} {'bound':>8} {'escaped':>7} {'W1 AM':>8} {'W1 path':>8} "
          f"{'W1 copy':>8} {'floor':>7} {'excess':>7} {'ess':>5} {'wall s':>7} head")  # fmt: skip
    for name in args.cases:
        extra = {"noise_share": args.noise_share} if args.objective == "eam" else {}
        result = run_case(name, args.steps, objective=args.objective, head=args.head, **extra)
        rows.append(result)
        for interp in ("linear", "spline"):
            e = result[interp]
            if e["diverged"]:
                diverged += 1
                print(f"{name:15} {interp:7} DIVERGED: {e['diverged']}")
                continue
            worst = max(worst, e["excess"])
            print(f"{name:15} {interp:7} {e['final_loss']:9.3g} {e['bound']:8.3g} {e['escaped']:7d} "
                  f"{e['am_w1']:8.4g} {e['interpolant_w1']:8.4g} {result['copy_prev_w1']:8.4g} "
                  f"{result['noise_floor']:7.3g} {e['excess']:7.2f} "
                  f"{e['ess']:5.2f} {e['wall_s']:7.0f} {e['head']}", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"adversarial_worst_excess={worst:.3f} diverged={diverged}")


if __name__ == "__main__":
    main()
