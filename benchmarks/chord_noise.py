"""How far the cells move between neighbouring observed times, against how far two samples of one time differ.

Every straight or spline path starts from OT plans between neighbouring snapshots. Where the cells move less
between two times than the OT pairing of two finite samples scatters them, each chord's velocity is mostly
sampling noise, and no objective can read the field from it. For each interval this prints the ratio

    W2^2(half of time k, half of time k + 1) / mean(W2^2(two halves of time k), W2^2(two halves of time k + 1))

(exact OT, halves of at most ``--half`` cells each): about 1 where the interval's motion is lost in the noise.
On the analytic processes of ``analytic.py`` (11 times × 2,000 cells) beside the three shared datasets (their
configs' features, standardised, every observed time).

    python benchmarks/chord_noise.py [--dims 3 7] [--seeds 3 4 5 8 9 10 11 12] [--half 1000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import ot
from analytic import TIMES, RotatingGaussian  # this folder is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"eb_nlsb_valtest_pca100": 5, "tigon_emt": 3, "tigon_lineage": None}  # features the configs keep


def w2_squared(a: np.ndarray, b: np.ndarray) -> float:
    return float(ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), ot.dist(a, b), numItermax=10**7))


def motion_over_noise(snapshots: list[np.ndarray], rng: np.random.Generator, half: int) -> np.ndarray:
    ratios = []
    for a, b in zip(snapshots[:-1], snapshots[1:], strict=True):
        n = min(half, len(a) // 2, len(b) // 2)
        ia, ib = rng.permutation(len(a)), rng.permutation(len(b))
        noise = 0.5 * (w2_squared(a[ia[:n]], a[ia[n : 2 * n]]) + w2_squared(b[ib[:n]], b[ib[n : 2 * n]]))
        ratios.append(w2_squared(a[ia[:n]], b[ib[:n]]) / noise)
    return np.array(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[3, 7])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5, 8, 9, 10, 11, 12])
    parser.add_argument("--half", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'case':28s} {'median':>7s} {'min':>6s}  per interval")
    for dim in args.dims:
        for seed in args.seeds:
            process, draws = RotatingGaussian(dim, seed), np.random.default_rng(seed)  # analytic.py's own draws
            ratios = motion_over_noise([process.sample(t, 2000, draws) for t in TIMES], rng, args.half)
            print(f"{f'rotating d={dim} seed {seed}':28s} {np.median(ratios):7.2f} {ratios.min():6.2f}  "
                  f"{np.round(ratios, 2).tolist()}", flush=True)  # fmt: skip
    for name, features in DATASETS.items():
        path = ROOT.parent / "shared" / "data" / f"{name}.npz"
        if not path.exists():
            print(f"{name}: {path} is absent")
            continue
        data = np.load(path)
        x, t = data["X"].astype(np.float64)[:, :features], data["t"].astype(np.float64).ravel()
        x = (x - x.mean(0)) / x.std(0)
        ratios = motion_over_noise([x[t == time] for time in np.unique(t)], rng, args.half)
        print(f"{name:28s} {np.median(ratios):7.2f} {ratios.min():6.2f}  {np.round(ratios, 2).tolist()}", flush=True)


if __name__ == "__main__":
    main()
