"""How far the chords of an exact OT plan between two finite samples move cells that should not move.

Two samples of ``--cells`` cells from the *same* standard normal in ``d`` dimensions are paired by exact OT (the
plan amcore's paths are built from). The true displacement is 0; the plan's chords are not, and along a chord the
regression of the displacement ``x_1 - x_0`` on the point ``x_tau`` is biased: at ``tau = 0`` a cell far out is
paired with one nearer the centre (slope < 0, a contraction), at ``tau = 1`` the reverse, and at the midpoint the
two cancel. Between an interior observed time's arriving and leaving chords the bias cancels too; at the first and
last observed times nothing cancels it. This is why every chord-based field (AM's and Flow Matching's alike) is
worst at the first and last times (docs/benchmarks.md).

    python benchmarks/pairing_bias.py [--dims 2 3 5 7 10] [--cells 2000] [--seed 0]

Prints, per dimension, the root-mean-square chord length and the mean diagonal of the regression slope at
``tau = 0, 0.5, 1``.
"""

from __future__ import annotations

import argparse

import numpy as np

from amcore.paths.interpolants import ot_pairs


def chord_bias(dim: int, cells: int, seed: int, taus=(0.0, 0.5, 1.0)) -> tuple[float, dict[float, float]]:
    """RMS chord length and, per ``tau``, the mean diagonal of the least-squares slope of ``x_1 - x_0`` on
    ``x_tau`` (with an intercept) over the plan's pairs."""
    rng = np.random.default_rng(seed)
    x0, x1 = rng.standard_normal((cells, dim)), rng.standard_normal((cells, dim))
    ia, ib, _ = ot_pairs(x0, x1, cells, rng)  # equal uniform clouds: the plan is a permutation
    a, b = x0[ia], x1[ib]
    slopes = {}
    for tau in taus:
        design = np.c_[(1 - tau) * a + tau * b, np.ones(len(a))]
        slope = np.linalg.lstsq(design, b - a, rcond=None)[0][:dim]
        slopes[tau] = float(np.trace(slope) / dim)
    return float(np.sqrt(((b - a) ** 2).sum(1).mean())), slopes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", nargs="+", type=int, default=[2, 3, 5, 7, 10])
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'dim':>4} {'rms chord':>10} {'slope at 0':>11} {'at 0.5':>8} {'at 1':>8}")
    for dim in args.dims:
        rms, slopes = chord_bias(dim, args.cells, args.seed)
        print(f"{dim:4d} {rms:10.3f} {slopes[0.0]:+11.3f} {slopes[0.5]:+8.3f} {slopes[1.0]:+8.3f}")


if __name__ == "__main__":
    main()
