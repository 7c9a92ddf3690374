"""Synthetic snapshot processes with an analytic answer, so that a learned flow can be checked exactly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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

    def velocity(self, x: np.ndarray, t: float) -> np.ndarray:
        """The analytic velocity ``v(x, t)`` at points ``x`` of shape ``(n, dim)``."""
        return self.mean_velocity(t) + (x - self.mean(t)) @ self.rate_matrix().T


SIMULATORS = {"gaussian_path": GaussianPath}


def make_simulator(name: str, params: dict) -> GaussianPath:
    """Build a simulator from its config name and parameters (without the sampling keys)."""
    if name not in SIMULATORS:
        raise ValueError(f"unknown simulator {name!r}; expected one of {sorted(SIMULATORS)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    return SIMULATORS[name](**kwargs)


def simulate_snapshots(
    simulator: GaussianPath, times: list[float], n_per_time: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Independent samples at each time: ``(x, time)`` sorted by time, as a real time course would be."""
    rng = np.random.default_rng(seed)
    xs = [simulator.sample(t, n_per_time, rng) for t in times]
    time = np.repeat(np.asarray(times, dtype=np.float64), n_per_time)
    return np.concatenate(xs).astype(np.float32), time
