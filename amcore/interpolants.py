"""Samples of the path ``q_t`` between sparse snapshots (DESIGN §2).

Between consecutive observed times ``t_k < t_{k+1}``, pairs ``(x_a, x_b)`` drawn from a coupling of the two
marginals are interpolated linearly: ``x_t = (1 - tau) x_a + tau x_b``. An OT coupling (exact, or
entropic: the Schrödinger bridge's static coupling when ``reg = 2 sigma^2 (t_b - t_a)``) is solved once per
pair of neighbouring snapshots and then sampled, so no transport problem sits in the hot loop. For eAM a
Brownian bridge ``sigma sqrt((t - t_a)(t_b - t)/(t_b - t_a)) eps`` is added to the interpolation.
"""

from __future__ import annotations

import numpy as np
import ot
import torch

from amcore.simulate import GrowingGaussian, Simulator
from amcore.store import Snapshots

COUPLINGS = ("independent", "ot", "entropic")


def ot_pairs(
    xa: np.ndarray, xb: np.ndarray, max_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Support ``(i, j, weight)`` of the exact OT plan (squared Euclidean cost) between two point clouds.

    Above ``max_size`` points per side the plan is solved on a uniform subsample of that size, keeping the
    cost of the exact solver bounded.
    """
    ia = np.arange(len(xa)) if len(xa) <= max_size else rng.choice(len(xa), max_size, replace=False)
    ib = np.arange(len(xb)) if len(xb) <= max_size else rng.choice(len(xb), max_size, replace=False)
    cost = ot.dist(xa[ia].astype(np.float64), xb[ib].astype(np.float64))
    plan = ot.emd(ot.unif(len(ia)), ot.unif(len(ib)), cost, numItermax=10_000_000)
    rows, cols = np.nonzero(plan > 0)
    weights = plan[rows, cols]
    return ia[rows], ib[cols], weights / weights.sum()


def entropic_pairs(
    xa: np.ndarray, xb: np.ndarray, reg: float, max_size: int, draws: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``draws`` partners per row drawn from the entropic OT plan (log-domain Sinkhorn, torch backend).

    The plan is dense; sampling it once keeps ``len(xa) * draws`` equally weighted pairs in memory instead.
    """
    ia = np.arange(len(xa)) if len(xa) <= max_size else rng.choice(len(xa), max_size, replace=False)
    ib = np.arange(len(xb)) if len(xb) <= max_size else rng.choice(len(xb), max_size, replace=False)
    a, b = torch.as_tensor(xa[ia], dtype=torch.float64), torch.as_tensor(xb[ib], dtype=torch.float64)
    cost = torch.cdist(a, b).pow(2)
    plan = ot.sinkhorn(ot.unif(len(ia), type_as=cost), ot.unif(len(ib), type_as=cost), cost, reg,
                       method="sinkhorn_log", numItermax=5000, stopThr=1e-7)  # fmt: skip
    conditional = (plan / plan.sum(1, keepdim=True)).cumsum(1)
    u = torch.as_tensor(rng.random((len(ia), draws)), dtype=torch.float64)
    cols = torch.searchsorted(conditional, u).clamp_max(len(ib) - 1).numpy()
    rows = np.repeat(np.arange(len(ia)), draws)
    return ia[rows], ib[cols.reshape(-1)], np.full(len(rows), 1.0 / len(rows))


class SnapshotPath:
    """Draws ``(t, x_t, u_t)`` along the interpolated path; ``u_t`` is the pair's straight-line velocity."""

    def __init__(
        self,
        snaps: Snapshots,
        coupling: str = "ot",
        ot_max_size: int = 5000,
        seed: int = 0,
        device: str | torch.device = "cpu",
        sigma: float = 0.0,
        entropic_reg: float | None = None,
        entropic_draws: int = 16,
    ) -> None:
        if coupling not in COUPLINGS:
            raise ValueError(f"unknown coupling {coupling!r}; expected one of {COUPLINGS}")
        if snaps.n_snapshots < 2:
            raise ValueError(f"need at least two observed times to learn a flow, got {snaps.n_snapshots}")
        self.coupling = coupling
        self.device = torch.device(device)
        self.x = torch.as_tensor(snaps.x, device=self.device)
        self.t_values = torch.as_tensor(snaps.t_values, dtype=torch.float32, device=self.device)
        self.offsets = torch.as_tensor(snaps.offsets, device=self.device)
        self.counts = self.offsets.diff()
        self.t0, self.t1 = float(snaps.t_values[0]), float(snaps.t_values[-1])
        self.dim = snaps.dim
        self.sigma = float(sigma)
        masses = snaps.masses()
        self.log_mass = torch.as_tensor(np.log(masses / masses[0]), dtype=torch.float32, device=self.device)
        if coupling == "entropic" and entropic_reg is None and self.sigma <= 0:
            raise ValueError("coupling 'entropic' needs entropic_reg, or sigma > 0 to use 2 sigma^2 (t_b - t_a)")
        if coupling != "independent":
            rng = np.random.default_rng(seed)
            pair_a, pair_b, cum = [], [], []
            for k in range(snaps.n_snapshots - 1):
                xa, xb = snaps.snapshot(k), snaps.snapshot(k + 1)
                if coupling == "ot":
                    ia, ib, w = ot_pairs(xa, xb, ot_max_size, rng)
                else:
                    gap = float(snaps.t_values[k + 1] - snaps.t_values[k])
                    reg = entropic_reg if entropic_reg is not None else 2 * self.sigma**2 * gap
                    ia, ib, w = entropic_pairs(xa, xb, reg, ot_max_size, entropic_draws, rng)
                pair_a.append(ia + snaps.offsets[k])
                pair_b.append(ib + snaps.offsets[k + 1])
                # Cumulative weights shifted by k: one searchsorted finds interval and pair at once.
                cum.append(k + np.minimum(np.cumsum(w), 1.0))
            self.pair_a = torch.as_tensor(np.concatenate(pair_a), device=self.device)
            self.pair_b = torch.as_tensor(np.concatenate(pair_b), device=self.device)
            self.cum_weights = torch.as_tensor(np.concatenate(cum), device=self.device)

    @property
    def duration(self) -> float:
        return self.t1 - self.t0

    def _uniform(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(n, generator=gen, device=self.device)

    def _rows(self, k: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A uniformly random row of snapshot ``k`` (elementwise)."""
        return self.offsets[k] + (self._uniform(len(k), gen) * self.counts[k]).long().clamp_max(self.counts[k] - 1)

    def fingerprint(self) -> str:
        """Identifies the data (times, counts, a checksum of the values) for resuming a training."""
        total = float(self.x.double().sum())
        return f"{self.t_values.tolist()}|{self.counts.tolist()}|{total:.10e}"

    def interval(self, t: torch.Tensor) -> torch.Tensor:
        """Index ``k`` of the observed interval ``[t_k, t_{k+1}]`` holding each ``t``."""
        return (torch.searchsorted(self.t_values, t, right=True) - 1).clamp(0, len(self.t_values) - 2)

    def mass(self, t: torch.Tensor) -> torch.Tensor:
        """Total mass at ``t`` relative to the first time, log-linear between observed times."""
        k = self.interval(t)
        ta, tb = self.t_values[k], self.t_values[k + 1]
        tau = (t - ta) / (tb - ta)
        return torch.exp((1 - tau) * self.log_mass[k] + tau * self.log_mass[k + 1])

    def sample_at(self, t: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``x_t`` on the interpolated path (Brownian bridge when ``sigma > 0``) and the pair's velocity."""
        n = len(t)
        k = self.interval(t)
        if self.coupling != "independent":
            j = torch.searchsorted(self.cum_weights, k + self._uniform(n, gen) * (1 - 1e-6))
            ia, ib = self.pair_a[j], self.pair_b[j]
        else:
            ia, ib = self._rows(k, gen), self._rows(k + 1, gen)
        ta, tb = self.t_values[k], self.t_values[k + 1]
        tau = ((t - ta) / (tb - ta))[:, None]
        xa, xb = self.x[ia], self.x[ib]
        xt = (1 - tau) * xa + tau * xb
        if self.sigma > 0:
            bridge_std = self.sigma * torch.sqrt(((t - ta) * (tb - t) / (tb - ta)).clamp_min(0))[:, None]
            xt = xt + bridge_std * torch.randn(xt.shape, generator=gen, device=self.device)
        return xt, (xb - xa) / (tb - ta)[:, None]

    def sample_endpoints(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples of the first and the last observed marginal (AM's boundary terms)."""
        last = len(self.t_values) - 1
        first = torch.zeros(n, dtype=torch.long, device=self.device)
        return self.x[self._rows(first, gen)], self.x[self._rows(first + last, gen)]


class MarginalPath:
    """The exact marginals ``p_t`` of a simulator at every ``t``: the path with no interpolation error.

    Same interface as ``SnapshotPath``; it isolates what the loss and the network can learn from what
    sparse, finite snapshots allow, and is what the analytic acceptance tests train on.
    """

    coupling = "exact"

    def __init__(self, simulator: Simulator, t0: float, t1: float) -> None:
        self.simulator, self.t0, self.t1, self.device = simulator, float(t0), float(t1), torch.device("cpu")
        self.dim = simulator.dim

    @property
    def duration(self) -> float:
        return self.t1 - self.t0

    def _draw(self, t: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
        return torch.as_tensor(self.simulator.sample_times(t, rng), dtype=torch.float32)

    def sample_at(self, t: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._draw(t.detach().double().numpy(), gen)
        return x, torch.full_like(x, float("nan"))

    def sample_endpoints(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self._draw(np.full(n, self.t0), gen), self._draw(np.full(n, self.t1), gen)

    def fingerprint(self) -> str:
        return repr(self.simulator)

    def mass(self, t: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.simulator, GrowingGaussian):
            return torch.ones_like(t)
        log_mass = np.vectorize(self.simulator.log_mass)(t.detach().double().numpy())
        return torch.as_tensor(np.exp(log_mass - self.simulator.log_mass(self.t0)), dtype=torch.float32)
