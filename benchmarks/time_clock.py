"""The learned velocity's error on each clock of the network's time (``time_clock``), where the truth is known.

Two processes observed at unevenly spread times, 1,500 steps of AM on straight OT paths per clock and seed:

- ``relax`` (audit 50's design): a 6-d Gaussian whose first mean relaxes from 0 to 4 with a time constant of 10
  hours, whose second from 0 to -3 with one of 1 hour, and whose third spread shrinks from 1.5 to 0.5 over 10
  hours; 250 to 800 cells at each of 0.1, 0.3, 1, 2, 4, 8, 12, 24, 48, 72, 120 and 168 hours. The fast hours are
  sampled densely, as experiments are.
- ``uniform``: the built-in Gaussian path (uniform motion in ``t``) at 0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.7 and 1, 1,000
  cells a time: dense sampling where nothing is faster.

Printed per clock and seed: the relative error ``|v - v*| / |v*|`` (root mean squares over 2,000 fresh cells of
the true law) at each listed time, and over them all.

    python benchmarks/time_clock.py [--cases relax uniform] [--clocks linear motion] [--seeds 0 1 2] [--steps 1500]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np

import amcore
from amcore.data.simulate import GaussianPath, simulate_snapshots

RELAX_TIMES = [0.1, 0.3, 1, 2, 4, 8, 12, 24, 48, 72, 120, 168]


class Relaxation:
    """A diagonal Gaussian whose means and one spread relax exponentially; its minimal-action (gradient) velocity is
    ``mu'(t) + sd'(t) / sd(t) (x - mu(t))``."""

    dim = 6

    def mean(self, t: float) -> np.ndarray:
        m = np.zeros(self.dim)
        m[0], m[1] = 4 * (1 - np.exp(-t / 10)), -3 * (1 - np.exp(-t))
        return m

    def spread(self, t: float) -> np.ndarray:
        s = np.ones(self.dim)
        s[2] = 0.5 + np.exp(-t / 10)
        return s

    def sample(self, t: float, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.mean(t) + self.spread(t) * rng.standard_normal((n, self.dim))

    def velocity(self, x: np.ndarray, t: float) -> np.ndarray:
        dm, ds = np.zeros(self.dim), np.zeros(self.dim)
        dm[0], dm[1], ds[2] = 0.4 * np.exp(-t / 10), -3 * np.exp(-t), -0.1 * np.exp(-t / 10)
        return dm + ds / self.spread(t) * (x - self.mean(t))


def case(name: str, seed: int):
    """(process, snapshots, the times the error is read at)."""
    rng = np.random.default_rng(100 + seed)
    if name == "relax":
        process = Relaxation()
        counts = rng.integers(250, 800, len(RELAX_TIMES))
        x = np.concatenate([process.sample(t, n, rng) for t, n in zip(RELAX_TIMES, counts, strict=True)])
        labels = np.repeat(RELAX_TIMES, counts).astype(np.float64)
        return process, amcore.Snapshots.from_labels(x.astype(np.float32), labels), [0.1, 0.3, 1, 2, 4, 8, 24]
    process = GaussianPath()
    times = [0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0]
    x, t = simulate_snapshots(process, times, 1000, seed=seed)
    return process, amcore.Snapshots.from_labels(x, t), [float(v) for v in np.linspace(0.0, 1.0, 11)]


def errors(model, process, times) -> tuple[list[float], float]:
    rng = np.random.default_rng(7)
    each, squared, norm = [], 0.0, 0.0
    for t in times:
        cells = process.sample(t, 2000, rng)
        truth = process.velocity(cells, t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            learned = model.velocity(cells.astype(np.float32), t)
        e, n = float(np.square(learned - truth).sum(1).mean()), float(np.square(truth).sum(1).mean())
        each.append(np.sqrt(e / n))
        squared, norm = squared + e, norm + n
    return each, float(np.sqrt(squared / norm))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["relax", "uniform"], choices=["relax", "uniform"])
    parser.add_argument("--clocks", nargs="+", default=["linear", "motion"], choices=["linear", "motion"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.cases:
            for seed in args.seeds:
                process, snaps, times = case(name, seed)
                for clock in args.clocks:
                    checkpoint = Path(scratch) / f"{name}-{clock}-{seed}.pt"
                    cfg = amcore.TrainConfig(steps=args.steps, batch_size=256, seed=seed, threads=1, time_clock=clock,
                                             log_every=10**9)  # fmt: skip
                    amcore.train(snaps, cfg, checkpoint)
                    each, overall = errors(amcore.load(checkpoint), process, times)
                    shown = " ".join(f"{t:g}:{e:.3f}" for t, e in zip(times, each, strict=True))
                    print(f"{name} {clock} seed {seed}: overall {overall:.3f} | {shown}", flush=True)


if __name__ == "__main__":
    main()
