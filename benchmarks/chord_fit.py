"""What the chords of the OT paths say about a rotating Gaussian's field, before any network reads them.

On one process of benchmarks/analytic.py (11 snapshots of ``--cells`` cells), every interval's exact OT plan gives
chords ``x_t = (1 - s) x_k + s x_{k+1}`` with velocity ``(x_{k+1} - x_k) / dt``. Two least-squares fits of those
velocities, each scored like ``evaluate.score_truth`` (relative L2 error against the truth on fresh cells):

- per interval, a field affine in ``x`` fitted at ``s = 0, 0.5, 1`` on that interval's chords alone: how noisy one
  interval's plan is, and whether the error depends on where along the chord it is read (the pairing bias of
  benchmarks/pairing_bias.py) or not (the plan's sampling noise);
- over all intervals, a field affine in ``x`` with coefficients polynomial in ``t`` of each ``--degrees``: how the
  smoothness in time trades the noise of single intervals against the bend of the truth, at every observed time.

    python benchmarks/chord_fit.py [--dim 3] [--seed 4] [--cells 2000] [--degrees 1 2 3]
"""

from __future__ import annotations

import argparse

import numpy as np
from analytic import TIMES, RotatingGaussian

from amcore import metrics
from amcore.paths.interpolants import ot_pairs


def affine(x: np.ndarray, t: float | np.ndarray, degree: int) -> np.ndarray:
    """Features ``[x, 1] (x) [1, t, ..., t^degree]`` of a field affine in ``x``, polynomial in ``t``."""
    powers = np.power(np.broadcast_to(np.asarray(t, dtype=np.float64), (len(x),))[:, None], np.arange(degree + 1))
    return np.einsum("ni,nj->nij", np.c_[x, np.ones(len(x))], powers).reshape(len(x), -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=3)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--degrees", nargs="+", type=int, default=[1, 2, 3])
    args = parser.parse_args()
    sim, rng = RotatingGaussian(args.dim, args.seed), np.random.default_rng(args.seed)
    clouds = [sim.sample(t, args.cells, rng) for t in TIMES]  # as analytic.py draws them
    chords = []
    for a, b in zip(clouds[:-1], clouds[1:], strict=True):
        ia, ib, _ = ot_pairs(a, b, args.cells, rng)  # equal uniform clouds: a permutation
        chords.append((a[ia], b[ib]))
    fresh = np.random.default_rng([args.seed, 2])

    def error(coef: np.ndarray, t: float, degree: int) -> float:
        x = sim.sample(t, 4000, fresh)
        err, norm = metrics.relative_l2(affine(x, t, degree) @ coef, sim.velocity(x, t))
        return 100 * float(np.sqrt(err / norm))

    dt = TIMES[1] - TIMES[0]
    print("one interval's chords, affine in x, error (%) at s = 0 / 0.5 / 1:")
    for k, (a, b) in enumerate(chords):
        row = []
        for s in (0.0, 0.5, 1.0):
            coef = np.linalg.lstsq(affine((1 - s) * a + s * b, 0.0, 0), (b - a) / dt, rcond=None)[0]
            row.append(error(coef, TIMES[k] + s * dt, 0))
        print(f"  {TIMES[k]:.1f}-{TIMES[k + 1]:.1f}: " + " / ".join(f"{e:5.1f}" for e in row))
    print("all chords, affine in x, polynomial in t, error (%) at each observed time:")
    s = rng.uniform(size=(len(chords), args.cells, 1))
    for degree in args.degrees:
        design = np.concatenate([affine((1 - u) * a + u * b, TIMES[k] + dt * u[:, 0], degree)
                                 for k, ((a, b), u) in enumerate(zip(chords, s, strict=True))])  # fmt: skip
        target = np.concatenate([(b - a) / dt for a, b in chords])
        coef = np.linalg.lstsq(design, target, rcond=None)[0]
        print(f"  degree {degree}: " + " ".join(f"{error(coef, t, degree):4.1f}" for t in TIMES))


if __name__ == "__main__":
    main()
