"""Learned fields against closed-form truths, on processes the library was not built against.

From 11 snapshots of ``--cells`` cells each (times 0, 0.1, ..., 1), train each model and report the relative L2
error under ``p_t`` of its field at the observed times (``evaluate.score_truth``, 4,000 fresh cells a time):

- ``rotating``: a Gaussian whose mean bends and whose anisotropic covariance ``R(t) D(t) R(t)^T`` rotates
  (``R(t) = exp(W t)``, ``W`` skew) in ``--dims`` dimensions, parameters drawn from the case's seed. Its
  minimal-action velocity is ``m'(t) + S(t) (x - m(t))`` with ``S`` symmetric solving the Lyapunov equation
  ``S C + C S = C'``: the field AM identifies (the rotation itself moves no density). AM (straight and spline
  interpolants; straight with the former default of four time frequencies) against Flow Matching (amcore's, on the
  same fixed OT plans, one and four time frequencies; TorchCFM's minibatch OT-CFM takes 0.8 s a step here, an
  hour a model on 2 cores); both at the default ``stride: auto``, at ``stride: 1`` (the former default) and on
  the mixture of two interleaved straight paths (``stride: 2``), there AM also with the potential head ``inner``
  and with the pathwise estimator.
- ``ou``: eAM's drift on a 3-d Ornstein-Uhlenbeck process (rates, noise and start other than the built-in's).
- ``growth``: uAM's growth rate on a growing, moving 3-d Gaussian, on the OT path and on the unbalanced one.

    python benchmarks/analytic.py [--cases rotating ou growth] [--dims 3 7] [--seeds 0 1 2] [--cells 2000]
                                   [--models am_linear fm]

The last line: ``analytic_<case>[_d<dim>]_<model>=<mean error over seeds>`` for every case and model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.linalg import expm, solve_continuous_lyapunov

from amcore import Snapshots, TrainConfig, load, train
from amcore.data.simulate import GrowingGaussian, OrnsteinUhlenbeck, simulate_snapshots
from amcore.evaluation.evaluate import score_truth

TIMES = np.linspace(0.0, 1.0, 11)


@dataclass
class RotatingGaussian:
    """``N(m(t), C(t))``: ``m(t) = c1 t + c2 sin(pi t)``, ``C(t) = R(t) diag(exp(2 l(t))) R(t)^T``, ``l`` linear."""

    dim: int
    seed: int
    c1: np.ndarray = field(init=False)
    c2: np.ndarray = field(init=False)
    rotation: np.ndarray = field(init=False)
    log_scale: tuple[np.ndarray, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(100 + self.seed)
        self.c1, self.c2 = 2.5 * rng.standard_normal(self.dim), rng.standard_normal(self.dim)
        g = rng.standard_normal((self.dim, self.dim))
        self.rotation = 0.6 * (g - g.T)
        self.log_scale = rng.uniform(-1.0, 0.6, self.dim), rng.uniform(-1.0, 0.6, self.dim)

    def mean(self, t: float) -> np.ndarray:
        return self.c1 * t + self.c2 * np.sin(np.pi * t)

    def cov(self, t: float) -> np.ndarray:
        r = expm(self.rotation * t)
        return r @ np.diag(np.exp(2 * ((1 - t) * self.log_scale[0] + t * self.log_scale[1]))) @ r.T

    def sample(self, t: float, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.mean(t) + rng.standard_normal((n, self.dim)) @ np.linalg.cholesky(self.cov(t)).T

    def velocity(self, x: np.ndarray, t: float) -> np.ndarray:
        h = 1e-5
        dcov = (self.cov(t + h) - self.cov(t - h)) / (2 * h)
        slope = solve_continuous_lyapunov(self.cov(t), dcov)
        return self.c1 + np.pi * np.cos(np.pi * t) * self.c2 + (x - self.mean(t)) @ slope.T


def snapshots(simulator, cells: int, seed: int) -> Snapshots:
    if isinstance(simulator, RotatingGaussian):  # simulate_snapshots knows the built-in simulators only
        rng = np.random.default_rng(seed)
        x = np.concatenate([simulator.sample(t, cells, rng) for t in TIMES])
        return Snapshots.from_labels(x.astype(np.float32), np.repeat(TIMES, cells))
    x, t = simulate_snapshots(simulator, list(TIMES), cells, seed)
    return Snapshots.from_labels(x, t)


def models(case: str) -> dict[str, dict]:
    if case == "rotating":
        return {
            "am_linear": {"objective": "am"},  # the defaults: stride auto (2 on these processes' noisier intervals)
            "am_linear_s1": {"objective": "am", "stride": 1},  # the former default: chords over one interval
            "am_linear_t4": {"objective": "am", "time_frequencies": 4},  # the former default: a faster time dependence
            "am_spline": {"objective": "am", "interpolation": "spline"},
            "fm": {"objective": "fm"},
            "fm_s1": {"objective": "fm", "stride": 1},
            "fm_t4": {"objective": "fm", "time_frequencies": 4},
            "am_linear_s2": {"objective": "am", "stride": 2},  # two interleaved paths, chords over two intervals
            "fm_s2": {"objective": "fm", "stride": 2},
            # <h(x, t), x>: a quadratic potential, hence a field linear in x, is one linear layer away
            "am_linear_s2_inner": {"objective": "am", "stride": 2, "head": "inner"},
            # FM's regression on the chords, restricted to gradient fields: the same variance as FM's loss
            "am_linear_s2_pathwise": {"objective": "am", "stride": 2, "pathwise": 1},
        }
    if case == "ou":
        return {"eam": {"objective": "eam", "sigma": 0.7, "coupling": "entropic"}}
    uam = {"objective": "uam", "growth": 0.4, "units": "data"}  # the simulator's growth 0.4, in its units
    return {"uam": uam, "uam_unbalanced": {**uam, "coupling": "unbalanced"}}


def simulators(case: str, dims: list[int], seeds: list[int]):
    """``(group, label, simulator, seed)``: errors are averaged over the seeds of a group."""
    if case == "rotating":
        return [(f"rotating_d{d}", f"d{d}-seed{s}", RotatingGaussian(d, s), s) for d in dims for s in seeds]
    if case == "ou":
        sim = OrnsteinUhlenbeck(dim=3, rates=(0.9, 2.0, 1.3), center=(1.0, -0.5, 0.0), start=(-2.0, 1.5, 2.5),
                                start_scale=(0.4, 0.3, 0.6), sigma=0.7)  # fmt: skip
    else:
        sim = GrowingGaussian(dim=3, speed=(0.8, -1.2, 0.5), growth=0.4, offset=0.3, scale=(0.6, 0.4, 0.5))
    return [(case, f"seed{s}", sim, s) for s in seeds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", nargs="+", default=["rotating", "ou", "growth"], choices=["rotating", "ou", "growth"]
    )
    parser.add_argument("--dims", nargs="+", type=int, default=[3, 7])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--models", nargs="+", help="only these models (default: every model of each case)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="amcore-analytic-") as scratch:
        workdir = Path(scratch)
        means: dict[str, list[float]] = {}
        print(f"{'case':9} {'process':12} {'model':12} {'field':9} {'error':>7} {'wall s':>7}  error by time (%)")
        for case in args.cases:
            for group, label, sim, seed in simulators(case, args.dims, args.seeds):
                snaps = snapshots(sim, args.cells, seed)
                for name, settings in models(case).items():
                    if args.models and name not in args.models:
                        continue
                    cfg = TrainConfig(**{"steps": args.steps, "seed": seed, "threads": args.threads, **settings})
                    start = time.perf_counter()
                    ckpt = workdir / f"{case}-{label}-{name}.pt"
                    train(snaps, cfg, ckpt, ckpt.with_suffix(".csv"))
                    scores = score_truth(sim, snaps, load(ckpt), 4000, 500, seed)
                    fieldname = {"ou": "drift", "growth": "growth"}.get(case, "velocity")
                    error = scores[f"{fieldname}_rel_error"]
                    means.setdefault(f"{group}_{name}", []).append(error)
                    by_time = " ".join(f"{100 * e:.0f}" for e in scores[f"{fieldname}_rel_error_by_time"].values())
                    print(f"{case:9} {label:12} {name:12} {fieldname:9} {error:7.4f} {time.perf_counter() - start:7.0f}"
                          f"  {by_time}", flush=True)  # fmt: skip
    print(" ".join(f"analytic_{key}={np.mean(v):.4f}" for key, v in means.items()))


if __name__ == "__main__":
    main()
