"""The spline path with and without the bend limit (``interpolants.BEND_LIMIT``), against displacement interpolation.

Each course holds interior times out in turn; the ``spline_path`` baseline (splines through OT chains of the training
times, tension ``auto`` chosen on them) is read at the held-out time with the limit and with it lifted, and scored
by the exact W1 against the held-out cells beside ``ot_displacement``. Courses: four invented ones with times
many-fold unevenly spaced (300 cells a time, 3 dimensions, noise 0.3; seeded), and the shared datasets' leave-one-out
splits (the configs' features, standardised on the training times), where present.

    python benchmarks/bend_limit.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from amcore.data.store import Snapshots
from amcore.evaluation.holdout import ot_displacement, spline_path
from amcore.metrics import wasserstein
from amcore.paths import interpolants

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _saturating(t):
    u = 1 - np.exp(-t / 4)
    return [5 * u, 3 * np.sin(np.pi * u), 0.0]


def _spiral(t):
    r = np.log1p(10 * t)
    return [r * np.cos(r), r * np.sin(r), 0.0]


def _curve(t):
    return [3 * np.cos(t / 3), 3 * np.sin(t / 3), t / 5]


def _accelerating(t):
    return [np.exp(t / 5) / 20, np.sin(t / 4), 0.0]


COURSES = {  # name: times, held-out times (None: every interior one), the cloud's mean at t
    "saturating, hours 0 0.5 1 8 24": ([0, 0.5, 1, 8, 24], [8], _saturating),
    "curve at constant speed, 0 1 2 6 7": ([0, 1, 2, 6, 7], None, _curve),
    "log-time spiral, 0 0.01 0.1 1 10 100": ([0, 0.01, 0.1, 1, 10, 100], None, _spiral),
    "accelerating, 0 10 20 21 22": ([0, 10, 20, 21, 22], None, _accelerating),
}
DATASETS = {"tigon_emt": (3, [0.1, 0.3, 0.9]), "eb_nlsb_valtest_pca100": (5, [1.0, 2.0, 3.0])}


def invented(name: str, n: int = 300, noise: float = 0.3, seed: int = 11) -> tuple[np.ndarray, np.ndarray, list]:
    times, held, mean = COURSES[name]
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.asarray(mean(t)) + noise * rng.standard_normal((n, 3)) for t in times])
    return x, np.repeat(np.asarray(times, dtype=np.float64), n), held or times[1:-1]


def scores(x: np.ndarray, t: np.ndarray, held: float, standardize: bool) -> tuple[float, float, float]:
    """W1 at ``held`` of the spline path with the limit, without it, and of displacement interpolation."""
    if standardize:  # on the training times only
        train = x[t != held]
        x = (x - train.mean(0)) / train.std(0)
    snaps = Snapshots.from_labels(x, t, attrs={"holdout_times": [float(held)]})
    target = x[t == held]
    out = []
    for limit in (interpolants.BEND_LIMIT, np.inf):
        default, interpolants.BEND_LIMIT = interpolants.BEND_LIMIT, limit
        try:
            out.append(wasserstein(spline_path(snaps, float(held))[0], target, p=1, max_size=3000))
        finally:
            interpolants.BEND_LIMIT = default
    moved, weights = ot_displacement(snaps, float(held))
    return out[0], out[1], wasserstein(moved, target, p=1, max_size=3000, wa=weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    print(f"{'course':40s} {'held':>6s} {'limited':>8s} {'unlimited':>9s} {'displacement':>12s}")
    cases = [(name, *invented(name), False) for name in COURSES]
    for name, (features, held) in DATASETS.items():
        if (path := DATA / f"{name}.npz").exists():
            data = np.load(path)
            cases.append((name, data["X"][:, :features].astype(np.float64), data["t"].ravel().astype(np.float64),
                          held, True))  # fmt: skip
    for name, x, t, held_out, standardize in cases:
        rows = []
        for held in held_out:
            rows.append(scores(x, t, held, standardize))
            print(f"{name:40s} {held:6g} {rows[-1][0]:8.3f} {rows[-1][1]:9.3f} {rows[-1][2]:12.3f}", flush=True)
        if len(rows) > 1:
            mean = np.mean(rows, axis=0)
            print(f"{name:40s} {'mean':>6s} {mean[0]:8.4f} {mean[1]:9.4f} {mean[2]:12.4f}", flush=True)


if __name__ == "__main__":
    main()
