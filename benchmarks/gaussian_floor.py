"""How well 11 snapshots of 2,000 cells can tell a rotating Gaussian's field, for an estimator told it is Gaussian.

On the processes of benchmarks/analytic.py (``rotating``), each snapshot's sample mean and covariance are smoothed
over time by a natural cubic smoothing spline (``scipy.interpolate.make_smoothing_spline``, on times scaled to
[0, 1]), and the field is the minimal-action one of the smoothed moments: ``m'(t) + S(t) (x - m(t))``, ``S C + C S
= C'`` (what AM identifies, benchmarks/analytic.py). It knows what no network does (the path is Gaussian), so its
error is a floor for estimators that smooth the snapshots over time, not a bound for every estimator. Scored like
``evaluate.score_truth`` (relative L2 error under ``p_t`` at the observed times, 4,000 fresh cells a time), with the
smoothing

- chosen on the data: each interior time left out in turn, the smoothing whose spline through the other times best
  predicts its sample moments (squared W2 between the Gaussians);
- chosen by the truth: the best of ``--smoothings`` for that process (no estimator can choose so).

    python benchmarks/gaussian_floor.py [--dims 3 7] [--seeds 3 4 5 8 9 10 11 12] [--cells 2000]

The last line: ``gaussian_floor_d<dim>=<mean error, data-chosen>`` for each dimension.
"""

from __future__ import annotations

import argparse

import numpy as np
from analytic import TIMES, RotatingGaussian, snapshots
from scipy.interpolate import make_smoothing_spline
from scipy.linalg import solve_continuous_lyapunov, sqrtm

from amcore import metrics

SMOOTHINGS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def moments(snaps) -> tuple[np.ndarray, np.ndarray]:
    xs = [np.asarray(snaps.snapshot(k), dtype=np.float64) for k in range(snaps.n_snapshots)]
    return np.stack([x.mean(0) for x in xs]), np.stack([np.cov(x.T) for x in xs])


def splines(times: np.ndarray, means: np.ndarray, covs: np.ndarray, smoothing: float):
    """The smoothing splines of the means and of the covariances' entries."""
    return (make_smoothing_spline(times, means, lam=smoothing),
            make_smoothing_spline(times, covs.reshape(len(times), -1), lam=smoothing))  # fmt: skip


def field(means: np.ndarray, covs: np.ndarray, smoothing: float):
    mean, cov = splines(TIMES, means, covs, smoothing)
    dmean, dcov = mean.derivative(), cov.derivative()
    d = means.shape[1]

    def velocity(x: np.ndarray, t: float) -> np.ndarray:
        c, dc = cov(t).reshape(d, d), dcov(t).reshape(d, d)
        slope = solve_continuous_lyapunov((c + c.T) / 2, (dc + dc.T) / 2)
        return dmean(t) + (x - mean(t)) @ slope.T

    return velocity


def gaussian_w2(m1: np.ndarray, c1: np.ndarray, m2: np.ndarray, c2: np.ndarray) -> float:
    root = sqrtm(c2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * sqrtm(root @ c1 @ root).real))


def left_out_error(means: np.ndarray, covs: np.ndarray, smoothing: float) -> float:
    """Each interior time's sample moments predicted by the splines through the other times (squared W2, summed)."""
    d, total = means.shape[1], 0.0
    for k in range(1, len(TIMES) - 1):
        keep = np.arange(len(TIMES)) != k
        mean, cov = splines(TIMES[keep], means[keep], covs[keep], smoothing)
        values, vectors = np.linalg.eigh((lambda c: (c + c.T) / 2)(cov(TIMES[k]).reshape(d, d)))
        c = (vectors * np.clip(values, 1e-9, None)) @ vectors.T  # a smoothed covariance may dip below zero
        total += gaussian_w2(mean(TIMES[k]), c, means[k], covs[k])
    return total


def error(sim: RotatingGaussian, velocity, rng: np.random.Generator) -> float:
    err = norm = 0.0
    for t in TIMES:
        x = sim.sample(float(t), 4000, rng)
        e, n = metrics.relative_l2(velocity(x, float(t)), sim.velocity(x, float(t)))
        err, norm = err + e, norm + n
    return float(np.sqrt(err / norm))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", nargs="+", type=int, default=[3, 7])
    parser.add_argument("--seeds", nargs="+", type=int, default=[3, 4, 5, 8, 9, 10, 11, 12])
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--smoothings", nargs="+", type=float, default=list(SMOOTHINGS))
    args = parser.parse_args()
    assert TIMES[0] == 0 and TIMES[-1] == 1, "the smoothings are for times on [0, 1]"
    if args.cells <= max(args.dims):  # a singular sample covariance: no Lyapunov field, NaN errors chosen as least
        parser.error(f"--cells {args.cells}: needs more cells than dimensions ({max(args.dims)})")
    summary = {}
    print("| process | smoothing chosen on the data | its error | best smoothing (by the truth) | its error |")
    print("|---|---|---|---|---|")
    for dim in args.dims:
        chosen_errors = []
        for seed in args.seeds:
            sim = RotatingGaussian(dim, seed)
            means, covs = moments(snapshots(sim, args.cells, seed))
            errors = [error(sim, field(means, covs, s), np.random.default_rng(0)) for s in args.smoothings]
            chosen = int(np.argmin([left_out_error(means, covs, s) for s in args.smoothings]))
            best = int(np.argmin(errors))
            chosen_errors.append(errors[chosen])
            print(f"| d = {dim}, seed {seed} | {args.smoothings[chosen]:g} | {100 * errors[chosen]:.1f} % | "
                  f"{args.smoothings[best]:g} | {100 * errors[best]:.1f} % |", flush=True)  # fmt: skip
        summary[f"gaussian_floor_d{dim}"] = float(np.mean(chosen_errors))
    print(" ".join(f"{k}={v:.4f}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
