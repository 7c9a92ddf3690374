"""Push particles through a learned velocity field and keep the trajectories (DESIGN §4)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from amcore.store import ZSTD, open_zarr, write_dataset_atomic

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def time_grid(t_values: np.ndarray, steps_per_interval: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform sub-steps inside each observed interval, so every observed time is hit exactly."""
    pieces = [np.linspace(a, b, steps_per_interval + 1)[:-1] for a, b in zip(t_values[:-1], t_values[1:], strict=False)]
    grid = np.concatenate([*pieces, t_values[-1:]])
    observed = np.zeros(len(grid), dtype=bool)
    observed[::steps_per_interval] = True
    return grid, observed


def integrate_ode(velocity: Velocity, x0: torch.Tensor, grid: np.ndarray) -> np.ndarray:
    """Classical RK4 along ``grid``; returns ``(len(grid), n, d)`` positions."""
    x = x0.clone()

    def at(t: float) -> torch.Tensor:
        return torch.full((len(x0),), t, dtype=x0.dtype)

    out = np.empty((len(grid), *x0.shape), dtype=np.float32)
    out[0] = x.numpy()
    for i, (ta, tb) in enumerate(zip(grid[:-1], grid[1:], strict=False), start=1):
        h = float(tb - ta)

        k1 = velocity(x, at(ta))
        k2 = velocity(x + 0.5 * h * k1, at(ta + 0.5 * h))
        k3 = velocity(x + 0.5 * h * k2, at(ta + 0.5 * h))
        k4 = velocity(x + h * k3, at(tb))
        x = (x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)).detach()
        out[i] = x.numpy()
    return out


def write_trajectories(path: str | Path, x: np.ndarray, grid: np.ndarray, observed: np.ndarray) -> None:
    """``x(step, particle, feature)`` and ``time(step)`` as zarr v3, written atomically."""
    path = Path(path)
    ds = xr.Dataset(
        {"x": (("step", "particle", "feature"), x), "observed": (("step",), observed)},
        coords={"time": (("step",), grid)},
    )
    write_dataset_atomic(ds, path, {"x": {"compressors": [ZSTD]}})


def read_trajectories(path: str | Path) -> xr.Dataset:
    with open_zarr(path) as ds:
        return ds.load()
