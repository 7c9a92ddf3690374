"""Training on a store larger than memory: a resident sample per time, read by whole chunks, refreshed.

A store whose training rows exceed ``in_memory_max_mb`` is never loaded. Per observed training time the
sampler keeps ``rows_per_time`` rows drawn from a few randomly chosen zarr chunks of that snapshot (a
chunk-aligned read decodes each chunk once; nothing else of the array is touched, held-out times never)
and builds the ordinary ``SnapshotPath`` on them, so couplings and losses work unchanged. Every
``refresh_every`` steps a new sample replaces it. The sample of refresh ``r`` on rank ``rank`` depends
only on ``(seed, rank, r)``, so a resumed training sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import dask
import dask.array as da
import numpy as np
import torch

from amcore.data.store import Snapshots
from amcore.paths.interpolants import SnapshotPath

CHUNKS_PER_TIME = 4  # chunks read per time and refresh: rows from several places, at a few chunks' I/O


def _training_snapshots(snaps: Snapshots) -> list[int]:
    return snaps.kept(snaps.attrs.get("holdout_times", []))


def training_bytes(snaps: Snapshots) -> int:
    """Bytes of float32 features in the training (not held-out) snapshots."""
    counts = snaps.counts()
    return int(sum(counts[k] for k in _training_snapshots(snaps))) * snaps.dim * 4


def load_training(snaps: Snapshots) -> Snapshots:
    """The training snapshots in memory, read snapshot by snapshot (held-out rows are never read)."""
    if not isinstance(snaps.x, da.Array):
        return snaps.drop_times(snaps.attrs.get("holdout_times", []))
    keep = _training_snapshots(snaps)
    parts = [slice(snaps.offsets[k], snaps.offsets[k + 1]) for k in keep]
    offsets = np.concatenate([[0], np.cumsum([p.stop - p.start for p in parts])])
    sources = [da.concatenate([snaps.x[p] for p in parts])]
    targets = [np.empty((offsets[-1], snaps.dim), dtype=np.float32)]
    if snaps.weights is not None:
        sources.append(da.concatenate([snaps.weights[p] for p in parts]))
        targets.append(np.empty(offsets[-1], dtype=np.float64))
    da.store(sources, targets, lock=False)  # chunk by chunk into place: no second copy of the whole array
    weights = targets[1] if snaps.weights is not None else None
    return Snapshots(targets[0], snaps.t_values[keep], offsets, dict(snaps.attrs), weights)


class StreamingPath:
    """A ``SnapshotPath`` on a resident sample of a lazily opened store, refreshed every ``refresh_every`` steps.

    Same interface as ``SnapshotPath`` for the losses; ``seek(step)`` before each step swaps in the sample
    of that step's refresh. ``peak_rows`` is the most rows held at once (resident sample plus one time's
    chunk reads), for checking the memory bound.
    """

    def __init__(
        self,
        snaps: Snapshots,
        build: Callable[[Snapshots, int], SnapshotPath],
        rows_per_time: int,
        refresh_every: int,
        budget_bytes: int,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        if not isinstance(snaps.x, da.Array):
            raise TypeError("StreamingPath reads a lazily opened store (store.open_store); x is already in memory")
        self.snaps, self.build, self.seed, self.rank = snaps, build, seed, rank
        self.keep = _training_snapshots(snaps)
        self.rows_per_time, self.refresh_every = int(rows_per_time), int(refresh_every)
        self.budget_rows = budget_bytes // (4 * snaps.dim)
        bounds = np.concatenate([[0], np.cumsum(snaps.x.chunks[0])])
        self.pieces = [self._pieces(bounds, snaps.offsets[k], snaps.offsets[k + 1]) for k in self.keep]
        resident = len(self.keep) * self.rows_per_time
        largest = max(hi - lo for pieces in self.pieces for lo, hi in pieces)
        if resident + largest > self.budget_rows:
            raise ValueError(
                f"in_memory_max_mb: {budget_bytes / 2**20:.3g} MB cannot hold {self.rows_per_time} rows per time "
                f"(ot_max_size) for {len(self.keep)} times plus one chunk of {largest} rows; raise it or lower "
                "ot_max_size"
            )
        if snaps.weights is None:
            self.masses = snaps.counts()[self.keep].astype(np.float64)
        else:
            sums = [snaps.weights[snaps.offsets[k] : snaps.offsets[k + 1]].sum() for k in self.keep]
            self.masses = np.asarray(dask.compute(*sums), dtype=np.float64)
        self.peak_rows, self.rows_read = 0, 0
        self.refresh_index = -1
        self.seek(0)
        self._fingerprint = self.current.fingerprint()
        first = self.current
        self.t0, self.t1, self.dim, self.device = first.t0, first.t1, first.dim, first.device
        self.t_values = first.t_values

    @staticmethod
    def _pieces(bounds: np.ndarray, start: int, stop: int) -> list[tuple[int, int]]:
        """The row ranges of ``[start, stop)`` cut at chunk boundaries: one per chunk it overlaps."""
        first = int(np.searchsorted(bounds, start, side="right")) - 1
        last = int(np.searchsorted(bounds, stop, side="left"))
        return [(max(int(bounds[c]), start), min(int(bounds[c + 1]), stop)) for c in range(first, last)]

    def rng(self, refresh: int) -> np.random.Generator:
        """The generator of one refresh on this rank: a pure function of ``(seed, rank, refresh)``."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.rank, refresh]))

    def sample(self, refresh: int) -> Snapshots:
        """The resident sample of one refresh: per training time, rows of a few random chunks of it."""
        rng = self.rng(refresh)
        xs, weights, counts = [], [], []
        held = 0
        for j, pieces in enumerate(self.pieces):
            chosen, rows = [], 0
            for i in rng.permutation(len(pieces))[:CHUNKS_PER_TIME]:
                lo, hi = pieces[i]
                if chosen and held + rows + hi - lo > self.budget_rows:
                    break
                chosen.append((lo, hi))
                rows += hi - lo
            self.peak_rows = max(self.peak_rows, held + rows)
            self.rows_read += rows
            parts = [self.snaps.x[lo:hi] for lo, hi in chosen]
            w = None if self.snaps.weights is None else [self.snaps.weights[lo:hi] for lo, hi in chosen]
            x, w = dask.compute(parts, w)
            x = np.concatenate(x)
            w = np.ones(len(x)) if w is None else np.concatenate(w).astype(np.float64)
            take = np.arange(len(x))
            if len(x) > self.rows_per_time:
                take = np.sort(rng.choice(len(x), self.rows_per_time, replace=False))
            xs.append(x[take])
            # Weights scaled so that each resident snapshot carries the whole snapshot's mass (uAM's growth).
            weights.append(w[take] * self.masses[j] / w[take].sum())
            counts.append(len(xs[-1]))
            held += counts[-1]
        offsets = np.concatenate([[0], np.cumsum(counts)])
        attrs = {**self.snaps.attrs, "holdout_times": []}
        return Snapshots(np.concatenate(xs), self.snaps.t_values[self.keep], offsets, attrs, np.concatenate(weights))

    def seek(self, step: int) -> None:
        """Make the sample of ``step``'s refresh resident (a no-op within a refresh)."""
        refresh = step // self.refresh_every
        if refresh != self.refresh_index:
            path_seed = int(self.rng(refresh).integers(2**62))
            self.current = self.build(self.sample(refresh), path_seed)
            self.refresh_index = refresh

    @property
    def duration(self) -> float:
        return self.t1 - self.t0

    def fingerprint(self) -> str:
        """The data's identity for resuming: the first refresh's sample (a fixed function of the store)."""
        return f"stream|{self._fingerprint}"

    def mass(self, t: torch.Tensor) -> torch.Tensor:
        return self.current.mass(t)

    def sample_at(self, t: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.current.sample_at(t, gen)

    def sample_endpoints(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.current.sample_endpoints(n, gen)


def training_path(
    snaps: Snapshots,
    build: Callable[[Snapshots, int], SnapshotPath],
    budget_mb: float,
    rows_per_time: int,
    refresh_every: int,
    seed: int,
    rank: int,
) -> SnapshotPath | StreamingPath:
    """In memory when the training rows fit in ``budget_mb`` (or are in memory already), streamed otherwise."""
    size, budget = training_bytes(snaps), int(budget_mb * 2**20)
    where = "amcore train:" if rank == 0 else None
    if not isinstance(snaps.x, da.Array) or size <= budget:
        if where:
            print(f"{where} data in memory ({size / 2**20:.3g} MB of training rows)", file=sys.stderr)
        return build(load_training(snaps), seed)
    path = StreamingPath(snaps, build, rows_per_time, refresh_every, budget, seed, rank)
    if where:
        print(
            f"{where} streaming from the store ({size / 2**20:.3g} MB of training rows > in_memory_max_mb "
            f"{budget_mb:g}): {rows_per_time} resident rows per time, new ones every {refresh_every} steps",
            file=sys.stderr,
        )
    return path
