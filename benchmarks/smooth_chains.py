"""Chains chosen jointly for a smooth path instead of pair by pair: does the pairing limit the spline path?

The spline path glues the exact OT plans of neighbouring times into chains; each plan is the cheapest on its own,
so a chain may zigzag. Here the chains' bijections are chosen to lower the kinetic energy of the piecewise-linear
chain plus ``gamma`` (in units of the mean gap squared) times the acceleration energy of its natural cubic spline,
both quadratic forms in the chain's points, by coordinate descent from the pairwise OT chains (one linear
assignment per time, holding the others). ``gamma`` 0 is the pairwise chains, their optimum. Scored by inner
leave-one-out on training times only: for each interior held-out time of the protocol, each interior *training*
time is left out, chains through the rest are read at its time (tensions 0 to 1) and compared with its cells (exact
W1). Equal counts per time (the smallest, subsampled): the chains are permutations.

    python benchmarks/smooth_chains.py data/eb_nlsb_valtest_pca100.npz:5 data/tigon_emt.npz:3
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.optimize import linear_sum_assignment

from amcore.metrics import wasserstein
from amcore.paths.interpolants import TENSIONS, chain_points, spline_at, spline_coefficients

GAMMAS = (0.0, 0.1, 1.0, 10.0, 1000.0)


def energy_form(knots: np.ndarray, gamma: float) -> np.ndarray:
    """``M`` with ``energy(chain) = sum_ab M_ab <x_a, x_b>``: kinetic energy of the straight chain plus ``gamma``
    (times the mean gap squared) the acceleration energy of its natural cubic spline."""
    n, gaps = len(knots), np.diff(knots)
    kinetic, bend = np.zeros((n, n)), np.zeros((n, n))
    coef = spline_coefficients(knots, 1.0)
    for k, h in enumerate(gaps):
        step = np.zeros(n)
        step[k], step[k + 1] = -1.0, 1.0
        kinetic += np.outer(step, step) / h
        a, b = coef[k, 0], coef[k, 1]  # the second derivative is 6 a s + 2 b on [0, h]
        bend += 12 * np.outer(a, a) * h**3 + 6 * (np.outer(a, b) + np.outer(b, a)) * h**2 + 4 * np.outer(b, b) * h
    return kinetic + gamma * gaps.mean() ** 2 * bend


def smooth_chains(clouds: list[np.ndarray], knots: np.ndarray, gamma: float, sweeps: int = 10) -> np.ndarray:
    """``(chains, K, d)`` from the pairwise OT chains, each later time's assignment re-solved in turn."""
    points, _ = chain_points(clouds, np.random.default_rng(0))
    if gamma == 0:
        return points
    form = energy_form(knots, gamma)
    for _ in range(sweeps):
        moved = 0
        for j in range(1, len(clouds)):
            others = np.delete(np.arange(len(clouds)), j)
            pull = np.einsum("b,nbd->nd", form[j, others], points[:, others])  # chain c's linear term in x_j
            rows, cols = linear_sum_assignment(2 * pull @ clouds[j].T)
            chosen = clouds[j][cols[np.argsort(rows)]]
            moved += int((chosen != points[:, j]).any(axis=1).sum())
            points[:, j] = chosen
        if not moved:
            break
    return points


def inner_scores(x: np.ndarray, t: np.ndarray) -> dict[tuple[float, float], list[float]]:
    """W1 per ``(gamma, tension)``, one entry per (held-out time, left-out training time)."""
    times = np.unique(t)
    rng = np.random.default_rng(0)
    scores: dict[tuple[float, float], list[float]] = {}
    for held in times[1:-1]:
        train = [s for s in times if s != held]
        mask = np.isin(t, train)
        z = (x - x[mask].mean(0)) / x[mask].std(0)
        size = min(int((t == s).sum()) for s in train)
        clouds = {s: z[t == s][rng.choice(int((t == s).sum()), size, replace=False)] for s in train}
        for left in train[1:-1]:
            keep = [s for s in train if s != left]
            knots = np.asarray(keep, dtype=np.float64)
            for gamma in GAMMAS:
                points = smooth_chains([clouds[s] for s in keep], knots, gamma)
                for tension in TENSIONS:
                    predicted = spline_at(points, knots, float(left), tension)
                    scores.setdefault((gamma, tension), []).append(wasserstein(predicted, z[t == left], 1, 5000))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", help="PATH.npz:FEATURES (X, t; the first FEATURES columns)")
    for spec in parser.parse_args().datasets:
        path, _, features = spec.partition(":")
        data = np.load(path)
        x, t = data["X"][:, : int(features or data["X"].shape[1])], data["t"].astype(np.float64)
        scores = inner_scores(x, t)
        print(f"{path}: mean inner leave-one-out W1 over {len(scores[(0.0, 0.0)])} problems")
        print("  gamma \\ tension " + "  ".join(f"{lam:>6g}" for lam in TENSIONS))
        for gamma in GAMMAS:
            print(f"  {gamma:>15g} " + "  ".join(f"{np.mean(scores[(gamma, lam)]):.4f}" for lam in TENSIONS))


if __name__ == "__main__":
    main()
