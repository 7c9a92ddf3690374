"""Which measured velocities should turn the spline path? A per-cell confidence, scored on training times only.

The velocity path (``velocity_weight``) turns every chain at each observed cell from the spline's own velocity ``d``
towards the cell's measured one ``c v`` by one weight ``w``. An RNA velocity is noisy per cell; where it points
against the way its chain goes, either the velocity or the chain is wrong. Variants of the turn at each knot:

- ``all``: ``w (c v - d)``, as amcore does;
- ``agree``: ``w a (c v - d)`` with ``a = max(0, cos(c v, chord))``, the chord the chain's central difference
  through the knot (its mean direction there): a velocity turns the chain only as far as it agrees with it;
- ``agree2``: ``a`` squared (sharper);
- ``direction``: ``w (|d| v / |v| - d)``: the velocity's direction at the spline's own speed (no unit to estimate);
- ``smooth``: each velocity replaced by the mean of its 30 nearest cells' at the same time (scVelo's moments do the
  like to denoise), in its own unit; ``smooth_agree``: that, weighted by ``a`` as in ``agree``.

Weights go past amcore's grid (to 1.5): with ``a`` below 1 for most cells, ``agree``'s best lies at its edge.
The best of each variant over the grid is printed with its score on each of the problems.

Scored by inner leave-one-out on training times only: for each interior held-out time of the protocol, each
interior *training* time is left out, chains through the rest are read at its time (every tension and weight of
amcore's grid) and compared with its cells (exact W1). The held-out time's cells are never read.

    python benchmarks/velocity_confidence.py data/eb_nlsb_valtest_pca100.npz --features 5
"""

from __future__ import annotations

import argparse

import numpy as np

from amcore.metrics import wasserstein
from amcore.paths.interpolants import (
    TENSIONS,
    VELOCITY_WEIGHTS,
    chain_gather,
    chain_rows,
    hermite_terms,
    path_velocities,
    spline_coefficients,
    spline_weights,
)

VARIANTS = ("all", "agree", "agree2", "direction", "smooth", "smooth_agree")
WEIGHTS = (*VELOCITY_WEIGHTS, 1.25, 1.5)
NEIGHBOURS = 30


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine along the last axis (0 where either is 0)."""
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.einsum("...d,...d->...", a, b) / np.maximum(norms, 1e-300)


def neighbour_mean(cloud: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Each cell's ``values`` averaged over its ``k`` nearest cells (itself included)."""
    from scipy.spatial import cKDTree

    return values[cKDTree(cloud).query(cloud, k)[1]].mean(1)


def central_chords(points: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """``(chains, K, d)``: each chain's mean velocity through each knot (one-sided at the ends)."""
    return np.gradient(points, knots, axis=1)


def turned(points, knots, t, tension, weight, target, confidence) -> np.ndarray:
    """The spline read at ``t``, each end of the interval turned towards ``target`` by ``weight * confidence``."""
    coef = spline_coefficients(knots, tension)
    x = np.einsum("k,nkd->nd", spline_weights(coef, knots, t), points)
    k, a, b, slope_a, slope_b = hermite_terms(coef, knots, t)
    d_a, d_b = np.einsum("k,nkd->nd", slope_a, points), np.einsum("k,nkd->nd", slope_b, points)
    turn_a = confidence[:, k, None] * (target[:, k] - d_a)
    turn_b = confidence[:, k + 1, None] * (target[:, k + 1] - d_b)
    return x + weight * (a * turn_a + b * turn_b)


def direction_target(points, knots, t, tension, velocities) -> np.ndarray:
    """The measured directions at the spline's own speed at each end of ``t``'s interval (the rest left as is)."""
    coef = spline_coefficients(knots, tension)
    k, _, _, slope_a, slope_b = hermite_terms(coef, knots, t)
    target = velocities.copy()
    unit = velocities / np.maximum(np.linalg.norm(velocities, axis=2, keepdims=True), 1e-300)
    for end, slope in ((k, slope_a), (k + 1, slope_b)):
        speed = np.linalg.norm(np.einsum("k,nkd->nd", slope, points), axis=1, keepdims=True)
        target[:, end] = speed * unit[:, end]
    return target


def inner_scores(x, v, t) -> dict[tuple[str, float, float], list[float]]:
    times = np.unique(t)
    rng = np.random.default_rng(0)
    scores: dict[tuple[str, float, float], list[float]] = {}
    for held in times[1:-1]:
        train = [s for s in times if s != held]
        mask = np.isin(t, train)
        mean, std = x[mask].mean(0), x[mask].std(0)
        z, u = (x - mean) / std, v / std
        for left in train[1:-1]:
            keep = [s for s in train if s != left]
            knots = np.asarray(keep, dtype=np.float64)
            clouds, measured = [z[t == s] for s in keep], [u[t == s] for s in keep]
            rows = chain_rows(clouds, max(len(c) for c in clouds), rng)
            points, moving = chain_gather(rows, clouds), chain_gather(rows, measured)
            smoothed = chain_gather(
                rows, [neighbour_mean(c, m, NEIGHBOURS) for c, m in zip(clouds, measured, strict=True)]
            )
            scaled, calm = path_velocities(points, moving, knots), path_velocities(points, smoothed, knots)
            chords = central_chords(points, knots)
            agree, calm_agree = np.clip(cosine(scaled, chords), 0, None), np.clip(cosine(calm, chords), 0, None)
            ones = np.ones_like(agree)
            for tension in TENSIONS:
                direction = direction_target(points, knots, float(left), tension, moving)
                settings = {"all": (scaled, ones), "agree": (scaled, agree), "agree2": (scaled, agree**2),
                            "direction": (direction, ones), "smooth": (calm, ones),
                            "smooth_agree": (calm, calm_agree)}  # fmt: skip
                for weight in WEIGHTS:
                    for name, (target, confidence) in settings.items():
                        predicted = turned(points, knots, float(left), tension, weight, target, confidence)
                        w1 = wasserstein(predicted, z[t == left], 1, 5000)
                        scores.setdefault((name, tension, weight), []).append(w1)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="npz with X, t and v (the velocity in X's coordinates)")
    parser.add_argument("--features", type=int, default=5, help="the first FEATURES columns, standardised")
    args = parser.parse_args()
    data = np.load(args.data)
    x, v = data["X"][:, : args.features].astype(np.float64), data["v"][:, : args.features].astype(np.float64)
    scores = inner_scores(x, v, data["t"].astype(np.float64))
    n = len(next(iter(scores.values())))
    print(f"{args.data}: mean inner leave-one-out W1 over {n} problems (rows: tension, columns: weight)")
    for name in VARIANTS:
        best = min((np.mean(s), key) for key, s in scores.items() if key[0] == name)
        each = " ".join(f"{w:.3f}" for w in scores[best[1]])
        print(f"{name}: best {best[0]:.4f} at tension {best[1][1]:g}, weight {best[1][2]:g} (each problem: {each})")
        for tension in TENSIONS:
            row = "  ".join(f"{np.mean(scores[(name, tension, w)]):.4f}" for w in WEIGHTS)
            print(f"  {tension:>5g}  {row}")


if __name__ == "__main__":
    main()
