"""Synthetic snapshot processes with an analytic answer, so that a learned flow can be checked exactly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amcore.data.hydrogen import Hydrogen


@dataclass(frozen=True)
class GaussianPath:
    """``x_t = m(t) + A(t) z`` with ``z ~ N(0, I)`` and ``A(t) = R diag(a0^(1-t) a1^t) R^T``.

    The mean moves along a bent path, ``m(t) = m0 + t * shift + bend * sin(pi t) * e_bend``, and the
    covariance stretches along rotated axes. Because ``A'(t) A(t)^-1 = R diag(log(a1/a0)) R^T = B`` is
    symmetric and constant, the velocity ``v(x, t) = m'(t) + B (x - m(t))`` is a gradient field, so it is
    exactly the one Action Matching identifies (the minimal-action field carrying ``p_t``).
    """

    dim: int = 2
    shift: float = 4.0
    bend: float = 1.5
    scale_start: tuple[float, ...] = (1.0, 0.5)
    scale_end: tuple[float, ...] = (0.4, 1.2)
    angle: float = np.pi / 6

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"GaussianPath: dim must be >= 1, got {self.dim}")

    def _scales(self, which: tuple[float, ...]) -> np.ndarray:
        """Per-axis scale, cycling the configured values to any dimension."""
        return np.array([which[i % len(which)] for i in range(self.dim)], dtype=np.float64)

    def _rotation(self) -> np.ndarray:
        rot = np.eye(self.dim)
        if self.dim >= 2:
            c, s = np.cos(self.angle), np.sin(self.angle)
            rot[:2, :2] = [[c, -s], [s, c]]
        return rot

    def _directions(self) -> tuple[np.ndarray, np.ndarray]:
        start = np.zeros(self.dim)
        start[0] = 1.0
        bend = np.zeros(self.dim)
        bend[min(1, self.dim - 1)] = 1.0
        return start, bend

    def mean(self, t: float) -> np.ndarray:
        e_shift, e_bend = self._directions()
        return (t - 0.5) * self.shift * e_shift + self.bend * np.sin(np.pi * t) * e_bend

    def mean_velocity(self, t: float) -> np.ndarray:
        e_shift, e_bend = self._directions()
        return self.shift * e_shift + self.bend * np.pi * np.cos(np.pi * t) * e_bend

    def rate_matrix(self) -> np.ndarray:
        """``B = A' A^-1``, symmetric and time independent."""
        rot = self._rotation()
        rates = np.log(self._scales(self.scale_end) / self._scales(self.scale_start))
        return rot @ np.diag(rates) @ rot.T

    def transform(self, t: float) -> np.ndarray:
        rot = self._rotation()
        a = self._scales(self.scale_start) ** (1 - t) * self._scales(self.scale_end) ** t
        return rot @ np.diag(a) @ rot.T

    def sample(self, t: float, n: int, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal((n, self.dim))
        return self.mean(t) + z @ self.transform(t).T

    def sample_times(self, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One sample of ``p_t`` for each entry of ``t``."""
        rot = self._rotation()
        a = self._scales(self.scale_start) ** (1 - t[:, None]) * self._scales(self.scale_end) ** t[:, None]
        z = rng.standard_normal((len(t), self.dim))
        return self.mean(t[:, None]) + (a * (z @ rot)) @ rot.T

    def velocity(self, x: np.ndarray, t: float) -> np.ndarray:
        """The analytic velocity ``v(x, t)`` at points ``x`` of shape ``(n, dim)``."""
        return self.mean_velocity(t) + (x - self.mean(t)) @ self.rate_matrix().T


def _repeat(dim: int, values: tuple[float, ...]) -> np.ndarray:
    """``values`` cycled to ``dim`` coordinates: a simulator's per-axis settings in any dimension."""
    return np.array([values[i % len(values)] for i in range(dim)], dtype=np.float64)


@dataclass(frozen=True)
class OrnsteinUhlenbeck:
    """``dX = -A (X - mu) dt + sigma dW`` from ``N(m0, diag(s0^2))``, ``A = diag(rates)`` symmetric.

    The drift ``-A (x - mu)`` is a gradient field, so it is the one entropic AM identifies with this
    ``sigma``. Marginals are Gaussian with closed-form mean and (diagonal) covariance.
    """

    dim: int = 2
    rates: tuple[float, ...] = (1.5, 0.75)
    center: tuple[float, ...] = (0.0, 0.0)
    start: tuple[float, ...] = (3.0, -2.0)
    start_scale: tuple[float, ...] = (0.3, 0.5)
    sigma: float = 1.0

    def mean(self, t: float) -> np.ndarray:
        decay = np.exp(-_repeat(self.dim, self.rates) * t)
        return _repeat(self.dim, self.center) + decay * (_repeat(self.dim, self.start) - _repeat(self.dim, self.center))

    def std(self, t: float) -> np.ndarray:
        a = _repeat(self.dim, self.rates)
        var = np.exp(-2 * a * t) * _repeat(self.dim, self.start_scale) ** 2 + self.sigma**2 * (
            1 - np.exp(-2 * a * t)
        ) / (2 * a)
        return np.sqrt(var)

    def sample(self, t: float, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.mean(t) + rng.standard_normal((n, self.dim)) * self.std(t)

    def sample_times(self, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One sample of ``p_t`` for each entry of ``t``."""
        return self.mean(t[:, None]) + rng.standard_normal((len(t), self.dim)) * self.std(t[:, None])

    def drift(self, x: np.ndarray, t: float) -> np.ndarray:
        return -(x - _repeat(self.dim, self.center)) * _repeat(self.dim, self.rates)


@dataclass(frozen=True)
class GrowingGaussian:
    """Mass ``m_t`` of a Gaussian moving at constant speed ``c`` that grows at rate ``g = lam (c.x + k)``.

    ``q_t = m_t N(mu_t, diag(scale^2))`` with ``mu_t = mu_0 + (I + lam Sigma) c t`` and
    ``d log m / dt = lam (c . mu_t + k)`` solves ``d_t q + div(q c) = lam s q`` for ``s(x) = c.x + k``
    exactly: the potential uAM identifies, with no free constant.
    """

    dim: int = 2
    speed: tuple[float, ...] = (1.0, 0.5)
    growth: float = 0.5
    offset: float = 0.5
    scale: tuple[float, ...] = (0.5, 0.5)

    def mean(self, t: float) -> np.ndarray:
        c, var = _repeat(self.dim, self.speed), _repeat(self.dim, self.scale) ** 2
        return (1 + self.growth * var) * c * t

    def log_mass(self, t: float) -> float:
        """``log m_t - log m_0``: the integral of ``lam (c . mu_s + k)`` over ``[0, t]``."""
        c, var = _repeat(self.dim, self.speed), _repeat(self.dim, self.scale) ** 2
        return float(self.growth * (self.offset * t + 0.5 * t**2 * np.sum(c * (1 + self.growth * var) * c)))

    def sample(self, t: float, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.mean(t) + rng.standard_normal((n, self.dim)) * _repeat(self.dim, self.scale)

    def sample_times(self, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One sample of ``p_t`` for each entry of ``t``."""
        return self.mean(t[:, None]) + rng.standard_normal((len(t), self.dim)) * _repeat(self.dim, self.scale)

    def potential(self, x: np.ndarray, t: float) -> np.ndarray:
        return x @ _repeat(self.dim, self.speed) + self.offset

    def velocity(self, x: np.ndarray, t: float) -> np.ndarray:
        return np.broadcast_to(_repeat(self.dim, self.speed), x.shape).copy()

    def growth_rate(self, x: np.ndarray, t: float) -> np.ndarray:
        return self.growth * self.potential(x, t)


Simulator = GaussianPath | OrnsteinUhlenbeck | GrowingGaussian | Hydrogen
SIMULATORS = {
    "gaussian_path": GaussianPath,
    "ornstein_uhlenbeck": OrnsteinUhlenbeck,
    "growing_gaussian": GrowingGaussian,
    "hydrogen": Hydrogen,
}


def make_simulator(name: str, params: dict) -> Simulator:
    """Build a simulator from its config name and parameters."""
    if name not in SIMULATORS:
        raise ValueError(f"unknown simulator {name!r}; expected one of {sorted(SIMULATORS)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    accepted = set(SIMULATORS[name].__dataclass_fields__)
    if set(kwargs) - accepted:
        raise ValueError(
            f"dataset.params: {sorted(set(kwargs) - accepted)} not parameters of {name}; it takes {sorted(accepted)}"
        )
    return SIMULATORS[name](**kwargs)


def snapshot_counts(simulator: Simulator, times: list[float], n_per_time: int) -> list[int]:
    """Cells per time: ``n_per_time`` each, or ``n_per_time * m_t / m_0`` for a growing population."""
    if isinstance(simulator, GrowingGaussian):
        return [int(round(n_per_time * np.exp(simulator.log_mass(t) - simulator.log_mass(times[0])))) for t in times]
    return [n_per_time] * len(times)


def simulate_snapshots(
    simulator: Simulator, times: list[float], n_per_time: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Independent samples at each time, sorted by time, as a real time course would be.

    For a growing population the count at ``t`` is ``n_per_time * m_t / m_0``: the mass is in the counts. A
    simulator with a ``snapshots`` method makes its frames itself (``Hydrogen``: one population transported).
    Each time's float64 samples are cast into one float32 array as they come: memory holds the float32 cells
    and a single time's float64 samples, not every sample twice more.
    """
    rng = np.random.default_rng(seed)
    if hasattr(simulator, "snapshots"):  # one population carried through every time (Hydrogen's frames)
        frames = simulator.snapshots(times, n_per_time, rng)
        x = frames.astype(np.float32).reshape(-1, simulator.dim)
        return x, np.repeat(np.asarray(times, dtype=np.float64), n_per_time)
    counts = snapshot_counts(simulator, times, n_per_time)
    x = np.empty((sum(counts), simulator.dim), dtype=np.float32)
    ends = np.cumsum(counts)
    for t, n, end in zip(times, counts, ends, strict=True):
        x[end - n : end] = simulator.sample(t, n, rng)
    return x, np.repeat(np.asarray(times, dtype=np.float64), counts)


def truth_fields(simulator: Simulator, x: np.ndarray, t: float) -> dict[str, np.ndarray]:
    """The analytic fields a learned model is checked against, by the name metrics.json reports."""
    if isinstance(simulator, OrnsteinUhlenbeck):
        return {"drift": simulator.drift(x, t)}
    if isinstance(simulator, GrowingGaussian):
        return {"velocity": simulator.velocity(x, t), "growth": simulator.growth_rate(x, t)}
    return {"velocity": simulator.velocity(x, t)}
