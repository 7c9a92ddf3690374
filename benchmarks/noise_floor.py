"""How far the noise floor from two halves of a time's cells sits above what a perfect prediction scores.

``w1_subsample_noise`` is the W1 between two disjoint subsamples of the observed cells. Where the time has fewer
than ``2 * max_exact_size`` cells and the prediction outnumbers half of them, the subsamples are halves: smaller
than the prediction and the observed cells ``w1`` compares, and W1 between samples of one law falls as they grow.
For each family (a standard Gaussian, Student-t with 3 degrees of freedom, two branches of 70 % and 30 % two units
apart in the first feature with noise 0.3), dimension and size, ``--reps`` observed clouds of ``n`` cells are drawn;
for each, the floor as the pipeline computes it (``metrics.subsample_noise`` for a prediction of ``m`` cells, one
seeded draw) and the W1 of ``--fresh`` perfect predictions (fresh ``m``-cell samples of the same law, all ``n``
observed cells, ``metrics.wasserstein``). Printed: the floor over the perfect predictions' mean W1 (mean and spread
over the clouds).

    python benchmarks/noise_floor.py [--dims 1 2 3 5 10 50] [--sizes 250:400 550:550 1500:1500] [--reps 6]
"""

from __future__ import annotations

import argparse

import numpy as np

from amcore import metrics


def cells(family: str, n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    if family == "gauss":
        return rng.standard_normal((n, dim))
    if family == "t3":
        return rng.standard_t(3, (n, dim))
    x = 0.3 * rng.standard_normal((n, dim))  # two branches
    x[:, 0] += np.where(rng.uniform(size=n) < 0.7, 2.0, -2.0)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["gauss", "t3", "branches"])
    parser.add_argument("--dims", nargs="+", type=int, default=[1, 2, 3, 5, 10, 50])
    parser.add_argument("--sizes", nargs="+", default=["250:400", "550:550", "1500:1500"],
                        help="observed:predicted cells")  # fmt: skip
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--fresh", type=int, default=4)
    parser.add_argument("--max-exact-size", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'family':9} {'d':>3} {'n':>5} {'m':>5}  {'perfect w1':>10}  floor / perfect (sd over clouds)")
    ratios = []
    for family in args.families:
        for dim in args.dims:
            for pair in args.sizes:
                n, m = (int(v) for v in pair.split(":"))
                floors, perfect = [], []
                for rep in range(args.reps):
                    x = cells(family, n, dim, rng)
                    floors.append(metrics.subsample_noise(x, args.max_exact_size, rep, size=m))
                    perfect.append(np.mean([metrics.wasserstein(cells(family, m, dim, rng), x, 1, args.max_exact_size,
                                                                rep) for _ in range(args.fresh)]))  # fmt: skip
                ratio = np.asarray(floors) / np.mean(perfect)
                ratios.append(ratio.mean())
                print(f"{family:9} {dim:3d} {n:5d} {m:5d}  {np.mean(perfect):10.4f}  {ratio.mean():.2f} "
                      f"({ratio.std():.2f})", flush=True)  # fmt: skip
    print(f"floor_over_perfect_mean={np.mean(ratios):.3f} floor_over_perfect_max={np.max(ratios):.3f}")


if __name__ == "__main__":
    main()
