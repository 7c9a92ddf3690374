"""The spline tension for three training times, where ``tension: auto`` has nothing to choose on.

With three training times, leaving the interior one out leaves two, and every tension draws the same straight line
between them, so ``auto`` falls back to a fixed value (``interpolants.FALLBACK_TENSION``). This measures the
candidates on every 4-time subset of a time course: each of the subset's two middle times is held out, the splines
through OT chains of the other three (standardised on those three) are read at its time at tensions 0, 0.5 and 1,
and scored by the exact W1 against its cells. Features: the first FEATURES columns of each ``PATH.npz:FEATURES``.

    python benchmarks/tension_fallback.py data/eb_nlsb_valtest_pca100.npz:5 data/tigon_emt.npz:3
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from amcore.metrics import wasserstein
from amcore.paths.interpolants import chain_points, spline_at

CANDIDATES = (0.0, 0.5, 1.0)


def subset_scores(x: np.ndarray, t: np.ndarray, seed: int = 0, max_size: int = 3000) -> list[tuple[str, list[float]]]:
    """``(label, W1 per candidate tension)`` for each 4-time subset and each of its two middle times held out."""
    times = np.unique(t)
    rows = []
    for subset in itertools.combinations(range(len(times)), 4):
        for held in subset[1:3]:
            train = [k for k in subset if k != held]
            pooled = np.concatenate([x[t == times[k]] for k in train])
            center, scale = pooled.mean(0), pooled.std(0)
            clouds = [(x[t == times[k]] - center) / scale for k in train]
            target = (x[t == times[held]] - center) / scale
            points, _ = chain_points(clouds, np.random.default_rng(seed))
            knots = times[train].astype(np.float64)
            w1 = [
                wasserstein(spline_at(points, knots, float(times[held]), lam), target, p=1, max_size=max_size)
                for lam in CANDIDATES
            ]
            rows.append((f"times {[f'{times[k]:g}' for k in subset]}, {times[held]:g} held out", w1))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", help="PATH.npz:FEATURES (arrays X and t)")
    args = parser.parse_args()
    for spec in args.datasets:
        path, features = spec.rsplit(":", 1)
        data = np.load(path)
        rows = subset_scores(data["X"][:, : int(features)].astype(np.float64), data["t"])
        print(f"{path} (tension {', '.join(f'{lam:g}' for lam in CANDIDATES)}):")
        for label, w1 in rows:
            print(f"  {label}: " + "  ".join(f"{w:.3f}" for w in w1))
        table = np.array([w1 for _, w1 in rows])
        means = "  ".join(f"{lam:g}: {m:.4f}" for lam, m in zip(CANDIDATES, table.mean(0), strict=True))
        worst = "  ".join(f"{lam:g}: {m:.3f}" for lam, m in zip(CANDIDATES, (table / table[:, :1]).max(0), strict=True))
        print(f"  mean W1  {means}\n  worst ratio to the straight path  {worst}")


if __name__ == "__main__":
    main()
