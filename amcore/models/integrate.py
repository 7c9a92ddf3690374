"""Push particles through a learned flow and keep the trajectories.

ODE (fixed-step RK4 or forward Euler, or adaptive Dormand-Prince) for AM and FM, Euler-Maruyama for eAM's SDE,
and weighted particles for uAM (``d log w / dt = lam s(x, t)`` integrated beside ``x``). Each integrator is a
generator of the particles' positions at each grid time, so a caller pushes cells batch by batch and writes each
step where it belongs (``TrajectoryWriter``: a zarr store, chunk by chunk) instead of holding
``(steps, cells, features)``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from amcore.atomic import replacing
from amcore.errors import InputError

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BATCH_SIZE = 2**16  # cells pushed at once (integrate.batch_size): the memory of a push does not grow with the cells
CHUNK_BYTES = 32 * 2**20  # at most this much of one step per zarr chunk of a trajectories store
PROGRESS_S = 10.0  # seconds between two progress lines of a long push
SUPPORT_NEIGHBOURS = 5  # uAM: a particle's distance to the training path's cells is to its fifth nearest
SUPPORT_BLOCK = 2**13  # points whose distances to the path's cells are held at once (8,192 x 1,024 floats: 32 MB)


class Progress:
    """Says on stderr how far a push of ``cells`` through ``steps`` integration steps has come, every ``every_s``
    seconds once it has run that long (a push of 10^5 cells sat silent for 42 s); a short push says nothing, and
    ``every_s`` None never."""

    def __init__(self, cells: int, steps: int, every_s: float | None = PROGRESS_S) -> None:
        self.cells, self.steps, self.every_s = cells, steps, every_s
        self.started = self.said = time.monotonic()

    def __call__(self, lo: int, hi: int, step: int) -> None:
        """Cells ``[0, lo)`` are through every step, ``[lo, hi)`` through ``step`` of them."""
        now = time.monotonic()
        done = (lo * self.steps + step * (hi - lo)) / max(1, self.cells * self.steps)
        if self.every_s is None or now - self.said < self.every_s or step == 0 or done >= 1:
            return
        self.said = now
        print(f"amcore push: {done:.0%} of {self.cells:,} cells through {self.steps} steps, "
              f"{now - self.started:.0f} s", file=sys.stderr)  # fmt: skip


def time_grid(t_values: np.ndarray, steps_per_interval: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform sub-steps inside each observed interval, so every observed time is hit exactly."""
    pieces = [np.linspace(a, b, steps_per_interval + 1)[:-1] for a, b in zip(t_values[:-1], t_values[1:], strict=False)]
    grid = np.concatenate([*pieces, t_values[-1:]])
    observed = np.zeros(len(grid), dtype=bool)
    observed[::steps_per_interval] = True
    return grid, observed


def _at(t: float, like: torch.Tensor) -> torch.Tensor:
    return torch.full((len(like),), float(t), dtype=like.dtype, device=like.device)


def rk4_step(f: Velocity, x: torch.Tensor, ta: float, h: float) -> torch.Tensor:
    k1 = f(x, _at(ta, x))
    k2 = f(x + 0.5 * h * k1, _at(ta + 0.5 * h, x))
    k3 = f(x + 0.5 * h * k2, _at(ta + 0.5 * h, x))
    k4 = f(x + h * k3, _at(ta + h, x))
    return (x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)).detach()


def ode_steps(velocity: Velocity, x0: torch.Tensor, grid: np.ndarray) -> Iterator[torch.Tensor]:
    """Classical RK4 along ``grid``: the positions at each grid time, ``x0`` first."""
    x = x0.clone()
    yield x
    for i in range(1, len(grid)):
        x = rk4_step(velocity, x, float(grid[i - 1]), float(grid[i] - grid[i - 1]))
        yield x


def euler_steps(velocity: Velocity, x0: torch.Tensor, grid: np.ndarray) -> Iterator[torch.Tensor]:
    """Forward Euler along ``grid`` (the AM paper pushes its particles so): the positions at each grid time,
    ``x0`` first; a quarter of RK4's field evaluations, first-order accurate."""
    x = x0.clone()
    yield x
    for i in range(1, len(grid)):
        x = (x + float(grid[i] - grid[i - 1]) * velocity(x, _at(float(grid[i - 1]), x))).detach()
        yield x


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


def adaptive_steps(
    velocity: Velocity, x0: torch.Tensor, grid: np.ndarray, rtol: float = 1e-5, atol: float = 1e-5,
    stats: dict | None = None,
) -> Iterator[torch.Tensor]:  # fmt: skip
    """Dormand-Prince 5(4) along ``grid``, landing on each grid time: the positions at each grid time, ``x0``
    first; ``stats["accepted_steps"]`` counts the accepted steps. One step size for the whole batch: its worst
    particle sets it."""
    stats = {} if stats is None else stats
    x = x0.clone()
    yield x
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
        stats["accepted_steps"] = accepted
        yield x
    stats["accepted_steps"] = accepted


def sde_steps(
    drift: Velocity, x0: torch.Tensor, grid: np.ndarray, sigma: Callable[[float], float],
    noise: Callable[[float], torch.Tensor],
) -> Iterator[torch.Tensor]:  # fmt: skip
    """Euler-Maruyama as a generator of the positions at each grid time; ``noise(t)`` is the standard normal
    increment of the step that starts at time ``t`` (shaped like ``x0``)."""
    x = x0.clone()
    yield x
    for i in range(1, len(grid)):
        ta, h = float(grid[i - 1]), float(grid[i] - grid[i - 1])
        x = (x + h * drift(x, _at(ta, x)) + sigma(ta) * np.sqrt(h) * noise(ta).to(x)).detach()
        yield x


class ParticleNoise:
    """Standard normal increments keyed by ``(seed, the step's start time, block of BLOCK particles)``: particle
    ``i`` gets the same noise whichever batch it is pushed in, so a batched SDE run equals the one-shot run of the
    same seed; and a push continued from where another ended draws new noise (keyed by the step's number, its
    second leg re-drew the first's kicks: twice the variance, audit 36), the same as one push over both legs where
    their grid times agree bit for bit (elsewhere other noise of the same law)."""

    BLOCK = 4096

    def __init__(self, seed: int, dim: int) -> None:
        self.seed, self.dim = int(seed), int(dim)

    def __call__(self, t: float, lo: int, hi: int) -> torch.Tensor:
        """The increments of particles ``lo..hi-1`` in the step that starts at ``t`` (float32, ``(hi - lo, dim)``)."""
        first, last = lo // self.BLOCK, (hi - 1) // self.BLOCK
        when = int(np.float64(t).view(np.uint64))  # the time's exact bits: every float its own key
        blocks = []
        for block in range(first, last + 1):
            state = np.random.SeedSequence([self.seed, when, block]).generate_state(2, np.uint32)
            gen = torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
            blocks.append(torch.randn((self.BLOCK, self.dim), generator=gen))
        return torch.cat(blocks)[lo - first * self.BLOCK : hi - first * self.BLOCK]


def interval_of(knots: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Index ``k`` of the interval ``[t_k, t_{k+1}]`` between observed times ``knots`` that holds each ``t`` (the
    first or last beyond them)."""
    return (torch.searchsorted(knots, t.reshape(-1).to(knots.dtype), right=True) - 1).clamp(0, len(knots) - 2)


def neighbour_distance(points: torch.Tensor, cells: torch.Tensor, among_themselves: bool = False) -> torch.Tensor:
    """Each point's distance to its ``SUPPORT_NEIGHBOURS``-th nearest of ``cells`` (``among_themselves``: ``points``
    are ``cells``, each not its own neighbour). The fifth, not the first: a path's cells repeat where a snapshot has
    fewer cells than the path has chains, and the nearest of those copies is at distance 0."""
    k, cells = min(SUPPORT_NEIGHBOURS + among_themselves, len(cells)), cells.float()
    blocks = (torch.cdist(block.float(), cells).topk(k, dim=1, largest=False).values[:, -1]
              for block in points.split(SUPPORT_BLOCK))  # fmt: skip
    return torch.cat(list(blocks))


def weighted_steps(
    velocity: Velocity, growth: Velocity, x0: torch.Tensor, grid: np.ndarray, limit: Velocity | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """RK4 on ``(x, log w)`` with ``dx/dt = v`` and ``d log w / dt = g(x, t)``, weights from 1: ``(positions,
    weights)`` at each grid time. ``limit(x, t)``: each particle's highest rate over the step that starts at ``t``,
    read once per step from where the particles are then (a cap read at every stage cost a push in 2-d half its
    time again, benchmarks/growth_support.py)."""
    dim = x0.shape[1]
    z = torch.cat([x0, x0.new_zeros(len(x0), 1)], dim=1)
    yield x0.clone(), torch.ones(len(x0), dtype=x0.dtype, device=x0.device)
    for i in range(1, len(grid)):
        ta = float(grid[i - 1])
        cap = None if limit is None else limit(z[:, :dim], _at(ta, z))

        def augmented(state: torch.Tensor, t: torch.Tensor, cap=cap) -> torch.Tensor:
            x, rate = state[:, :dim], growth(state[:, :dim], t)
            return torch.cat([velocity(x, t), (rate if cap is None else torch.minimum(rate, cap))[:, None]], dim=1)

        z = rk4_step(augmented, z, ta, float(grid[i]) - ta)
        yield z[:, :dim], torch.exp(z[:, dim])


def write_trajectories(
    path: str | Path,
    x: np.ndarray,
    grid: np.ndarray,
    observed: np.ndarray,
    weight: np.ndarray | None = None,
    extra: xr.Dataset | None = None,
) -> None:
    """``x(step, particle, feature)``, ``time(step)``, for uAM ``weight(step, particle)``, and ``extra``, atomically."""
    from amcore.data.store import ZSTD, write_dataset_atomic  # here, as below: the store's module imports dask (s)

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


class _Rows:
    """One variable of a ``TrajectoryWriter``: ``rows[step, lo:hi] = values`` writes into the zarr array and
    records which particles became NaN or inf."""

    def __init__(self, array, lost: np.ndarray | None) -> None:
        self.array, self.lost, self.shape = array, lost, array.shape

    def __setitem__(self, key: tuple[int, slice], values: np.ndarray) -> None:
        self.array[key] = values
        if self.lost is not None:
            self.lost[key[1]] |= ~np.isfinite(values).reshape(len(values), -1).all(axis=1)


class TrajectoryWriter:
    """A trajectories store (``x(step, particle, feature)``, ``time(step)``, ``observed``, uAM's ``weight``,
    ``extra``, and the integration ``method`` in its attributes) filled step by step and batch by batch
    (``writer.x[step, lo:hi] = ...``), renamed into place when the block exits cleanly. A zarr chunk holds one step
    of ``chunk_rows`` particles (at most ``CHUNK_BYTES``), so a batch of that size writes whole chunks and memory
    holds one batch's state, never the trajectories; ``lost`` counts the particles that became NaN or inf at any
    step."""

    def __init__(
        self, path: str | Path, grid: np.ndarray, observed: np.ndarray, n: int, dim: int, weighted: bool,
        chunk_rows: int = BATCH_SIZE, extra: xr.Dataset | None = None, method: str | None = None,
    ) -> None:  # fmt: skip
        self.path, self.grid, self.observed, self.n, self.dim = Path(path), grid, observed, n, dim
        self.weighted, self.extra, self.method = weighted, extra, method
        self.chunk = max(1, min(chunk_rows, n or 1, CHUNK_BYTES // (4 * max(1, dim))))
        self.nonfinite = np.zeros(n, dtype=bool)

    def __enter__(self) -> TrajectoryWriter:
        import dask.array as da
        import zarr

        from amcore.data.store import ZSTD

        self._replacing = replacing(self.path)
        tmp = self._replacing.__enter__()
        steps = len(self.grid)
        x = da.zeros((steps, self.n, self.dim), dtype=np.float32, chunks=(1, self.chunk, self.dim))  # never computed
        ds = xr.Dataset(
            {"x": (("step", "particle", "feature"), x), "observed": (("step",), self.observed)},
            coords={"time": (("step",), self.grid)},
        )
        encoding = {"x": {"chunks": (1, self.chunk, self.dim), "compressors": [ZSTD]}}
        if self.weighted:
            ds["weight"] = ("step", "particle"), da.zeros((steps, self.n), dtype=np.float32, chunks=(1, self.chunk))
            encoding["weight"] = {"chunks": (1, self.chunk)}
        if self.extra is not None:
            ds = ds.merge(self.extra, combine_attrs="no_conflicts")
        if self.method is not None:  # how the particles moved (an SDE's noise spreads them: evaluate.ran_off says so)
            ds.attrs["method"] = self.method
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=encoding, compute=False)
        group = zarr.open_group(tmp, mode="r+", zarr_format=3)
        self.x = _Rows(group["x"], self.nonfinite)
        self.weight = _Rows(group["weight"], None) if self.weighted else None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._replacing.__exit__(exc_type, exc, tb)

    @property
    def lost(self) -> int:
        return int(self.nonfinite.sum())


def read_trajectories(path: str | Path, load: bool = True) -> xr.Dataset:
    """A trajectories store, loaded (``load=False``: lazily, for reading a few steps or particles of a big one), or a
    baseline's held-out prediction (its ``holdout_x`` alone). Another zarr store is refused by name (audit 95: a
    snapshot store was returned, and ``x`` without steps failed later, elsewhere)."""
    from amcore.data.store import open_zarr

    ds = open_zarr(path)
    if "t_values" in ds or not ("x" in ds and "step" in ds["x"].dims or "holdout_x" in ds):
        kind = "a snapshot store: amcore.read_store reads it" if "t_values" in ds else "not written by amcore integrate"
        ds.close()
        raise InputError(f"{path}: not a trajectories store (x by step, particle, feature) or a held-out prediction "
                         f"(holdout_x): {kind}")  # fmt: skip
    if not load:
        return ds
    with ds:
        return ds.load()
