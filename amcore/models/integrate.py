"""Push particles through a learned flow and keep the trajectories.

ODE (fixed-step RK4, or adaptive Dormand-Prince) for AM and FM, Euler-Maruyama for eAM's SDE, and weighted
particles for uAM (``d log w / dt = lam s(x, t)`` integrated beside ``x``). Everything is batched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from amcore.data.store import ZSTD, open_zarr, write_dataset_atomic

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def time_grid(t_values: np.ndarray, steps_per_interval: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform sub-steps inside each observed interval, so every observed time is hit exactly."""
    pieces = [np.linspace(a, b, steps_per_interval + 1)[:-1] for a, b in zip(t_values[:-1], t_values[1:], strict=False)]
    grid = np.concatenate([*pieces, t_values[-1:]])
    observed = np.zeros(len(grid), dtype=bool)
    observed[::steps_per_interval] = True
    return grid, observed


def nonfinite_particles(traj: np.ndarray) -> int:
    """Particles of ``traj(step, particle, feature)`` with a NaN or inf coordinate at any step."""
    return int((~np.isfinite(traj).all(axis=(0, 2))).sum())


def _at(t: float, like: torch.Tensor) -> torch.Tensor:
    return torch.full((len(like),), float(t), dtype=like.dtype, device=like.device)


def rk4_step(f: Velocity, x: torch.Tensor, ta: float, h: float) -> torch.Tensor:
    k1 = f(x, _at(ta, x))
    k2 = f(x + 0.5 * h * k1, _at(ta + 0.5 * h, x))
    k3 = f(x + 0.5 * h * k2, _at(ta + 0.5 * h, x))
    k4 = f(x + h * k3, _at(ta + h, x))
    return (x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)).detach()


def integrate_ode(velocity: Velocity, x0: torch.Tensor, grid: np.ndarray) -> np.ndarray:
    """Classical RK4 along ``grid``; returns ``(len(grid), n, d)`` positions."""
    out = np.empty((len(grid), *x0.shape), dtype=np.float32)
    x = x0.clone()
    out[0] = x.cpu().numpy()
    for i in range(1, len(grid)):
        x = rk4_step(velocity, x, float(grid[i - 1]), float(grid[i] - grid[i - 1]))
        out[i] = x.cpu().numpy()
    return out


def integrate_euler(velocity: Velocity, x0: torch.Tensor, grid: np.ndarray) -> np.ndarray:
    """Forward Euler along ``grid`` (the AM paper pushes its particles so): a quarter of RK4's field evaluations,
    first-order accurate."""
    out = np.empty((len(grid), *x0.shape), dtype=np.float32)
    x = x0.clone()
    out[0] = x.cpu().numpy()
    for i in range(1, len(grid)):
        x = (x + float(grid[i] - grid[i - 1]) * velocity(x, _at(float(grid[i - 1]), x))).detach()
        out[i] = x.cpu().numpy()
    return out


# Dormand-Prince 5(4) tableau.
_DP_C = [0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1]
_DP_A = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
]
_DP_B5 = [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0]
_DP_B4 = [5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40]


def integrate_adaptive(
    velocity: Velocity, x0: torch.Tensor, grid: np.ndarray, rtol: float = 1e-5, atol: float = 1e-5
) -> tuple[np.ndarray, int]:
    """Dormand-Prince 5(4) with one step size for the whole batch (worst particle), landing on each grid time.

    Returns the positions at ``grid`` and the number of accepted steps.
    """
    out = np.empty((len(grid), *x0.shape), dtype=np.float32)
    x = x0.clone()
    out[0] = x.cpu().numpy()
    h, accepted = float(grid[1] - grid[0]) / 4, 0
    min_step = 1e-9 * abs(float(grid[-1] - grid[0]))
    for i in range(1, len(grid)):
        t, t_end = float(grid[i - 1]), float(grid[i])
        while t < t_end - 1e-12:
            h = min(h, t_end - t)
            k = []
            for c, row in zip(_DP_C, _DP_A, strict=True):
                xi = x + h * sum((a * kj for a, kj in zip(row, k, strict=False)), torch.zeros_like(x))
                k.append(velocity(xi, _at(t + c * h, x)).detach())
            x5 = x + h * sum(b * kj for b, kj in zip(_DP_B5, k, strict=True))
            x4 = x + h * sum(b * kj for b, kj in zip(_DP_B4, k, strict=True))
            scale = atol + rtol * torch.maximum(x.abs(), x5.abs())
            # Particles already lost (NaN or inf) are carried, not controlled: their error would shrink h forever.
            live = torch.isfinite(x).all(1)
            err = float(((x5 - x4)[live] / scale[live]).pow(2).mean().sqrt()) if live.any() else 0.0
            if not np.isfinite(err) and h <= min_step:
                err = 0.0  # a particle leaves for infinity however small the step: let it go, the caller counts it
            if err <= 1.0:
                x, t, accepted = x5, t + h, accepted + 1
            h *= min(5.0, max(0.2, 0.9 * (err + 1e-12) ** -0.2)) if np.isfinite(err) else 0.2
        out[i] = x.cpu().numpy()
    return out, accepted


def integrate_sde(
    drift: Velocity, x0: torch.Tensor, grid: np.ndarray, sigma: Callable[[float], float], gen: torch.Generator
) -> np.ndarray:
    """Euler-Maruyama for ``dX = drift dt + sigma_t dW`` along ``grid``."""
    out = np.empty((len(grid), *x0.shape), dtype=np.float32)
    x = x0.clone()
    out[0] = x.cpu().numpy()
    for i in range(1, len(grid)):
        ta, h = float(grid[i - 1]), float(grid[i] - grid[i - 1])
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=gen.device).to(x.device)
        x = (x + h * drift(x, _at(ta, x)) + sigma(ta) * np.sqrt(h) * noise).detach()
        out[i] = x.cpu().numpy()
    return out


def integrate_weighted(
    velocity: Velocity, growth: Velocity, x0: torch.Tensor, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """RK4 on ``(x, log w)`` with ``dx/dt = v`` and ``d log w / dt = g(x, t)``; weights start at 1."""
    dim = x0.shape[1]

    def augmented(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = z[:, :dim]
        return torch.cat([velocity(x, t), growth(x, t)[:, None]], dim=1)

    z = torch.cat([x0, x0.new_zeros(len(x0), 1)], dim=1)
    traj = integrate_ode(augmented, z, grid)
    return traj[..., :dim], np.exp(traj[..., dim])


def write_trajectories(
    path: str | Path,
    x: np.ndarray,
    grid: np.ndarray,
    observed: np.ndarray,
    weight: np.ndarray | None = None,
    extra: xr.Dataset | None = None,
) -> None:
    """``x(step, particle, feature)``, ``time(step)``, for uAM ``weight(step, particle)``, and ``extra``, atomically."""
    path = Path(path)
    ds = xr.Dataset(
        {"x": (("step", "particle", "feature"), x), "observed": (("step",), observed)},
        coords={"time": (("step",), grid)},
    )
    if weight is not None:
        ds["weight"] = ("step", "particle"), weight.astype(np.float32)
    if extra is not None:
        ds = ds.merge(extra, combine_attrs="no_conflicts")
    write_dataset_atomic(ds, path, {"x": {"compressors": [ZSTD]}})


def read_trajectories(path: str | Path) -> xr.Dataset:
    with open_zarr(path) as ds:
        return ds.load()
