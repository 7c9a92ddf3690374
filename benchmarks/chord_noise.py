"""How far the cells move between neighbouring observed times, against how far two samples of one time differ.

Every straight or spline path starts from OT plans between neighbouring snapshots. Where the cells move less
between two times than the OT pairing of two finite samples scatters them, each chord's velocity is mostly
sampling noise, and no objective can read the field from it. For each interval this prints two ratios, each of a
half of time k against a half of time k + 1, over the mean of two halves of time k and two halves of time k + 1
(exact OT, halves of at most ``--half`` cells each):

    w2:     squared W2 (the plan's mean squared pair length)
    median: the plan's median squared pair length, what train's note reads (``train._paired_median``)

About 1 where the interval's motion is lost in the noise. Where cells sit in branches far apart, two halves hold
them in shares a few cells apart and the plan must carry those few far: W2 of halves then swamps the motion, the
median does not. On the analytic processes of ``analytic.py`` (11 times x 2,000 cells) beside the three shared
datasets (their configs' features, standardised, every observed time).

    python benchmarks/chord_noise.py [--dims 3 7] [--seeds 3 4 5 8 9 10 11 12] [--half 500]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import ot
from analytic import TIMES, RotatingGaussian  # this folder is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"eb_nlsb_valtest_pca100": 5, "tigon_emt": 3, "tigon_lineage": None}  # features the configs keep


def pair_lengths(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared lengths of the exact OT plan's pairs between two clouds of equal size (a permutation)."""
    cost = ot.dist(a, b)
    plan = ot.emd(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), cost, numItermax=10**7)
    rows, cols = np.nonzero(plan > 0.5 / len(a))
    return cost[rows, cols]


def motion_over_noise(snapshots: list[np.ndarray], rng: np.random.Generator, half: int) -> dict[str, np.ndarray]:
    ratios: dict[str, list[float]] = {"w2": [], "median": []}
    for a, b in zip(snapshots[:-1], snapshots[1:], strict=True):
        n = min(half, len(a) // 2, len(b) // 2)
        ia, ib = rng.permutation(len(a)), rng.permutation(len(b))
        a1, a2, b1, b2 = a[ia[:n]], a[ia[n : 2 * n]], b[ib[:n]], b[ib[n : 2 * n]]
        lengths = [pair_lengths(a1, b1), pair_lengths(a1, a2), pair_lengths(b1, b2)]
        for name, stat in (("w2", np.mean), ("median", np.median)):
            moved, *halves = (float(stat(part)) for part in lengths)
            ratios[name].append(moved / np.mean(halves))
    return {name: np.array(values) for name, values in ratios.items()}


def show(name: str, ratios: dict[str, np.ndarray]) -> None:
    for stat, values in ratios.items():
        print(f"{name:28s} {stat:>6s} {np.median(values):7.2f} {values.min():6.2f}  {np.round(values, 2).tolist()}",
              flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[3, 7])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5, 8, 9, 10, 11, 12])
    parser.add_argument("--half", type=int, default=500, help="cells per half at most (train's note: 500)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'case':28s} {'ratio':>6s} {'median':>7s} {'min':>6s}  per interval")
    for dim in args.dims:
        for seed in args.seeds:
            process, draws = RotatingGaussian(dim, seed), np.random.default_rng(seed)  # analytic.py's own draws
            show(f"rotating d={dim} seed {seed}", motion_over_noise([process.sample(t, 2000, draws) for t in TIMES],
                                                                    rng, args.half))  # fmt: skip
    for name, features in DATASETS.items():
        path = ROOT.parent / "shared" / "data" / f"{name}.npz"
        if not path.exists():
            print(f"{name}: {path} is absent")
            continue
        data = np.load(path)
        x, t = data["X"].astype(np.float64)[:, :features], data["t"].astype(np.float64).ravel()
        x = (x - x.mean(0)) / x.std(0)
        show(name, motion_over_noise([x[t == time] for time in np.unique(t)], rng, args.half))


if __name__ == "__main__":
    main()
