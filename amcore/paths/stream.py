"""Training on a store larger than memory: a resident sample per time, read by whole chunks, refreshed.

A store whose training rows exceed ``in_memory_max_mb`` is never loaded. Per observed training time the
sampler keeps ``rows_per_time`` rows drawn from a few randomly chosen zarr chunks of that snapshot (a
chunk-aligned read decodes each chunk once; nothing else of the array is touched, held-out times never)
and builds the ordinary ``SnapshotPath`` on them, so couplings and losses work unchanged. Every
``refresh_every`` steps a new sample replaces it. The sample of refresh ``r`` on rank ``rank`` depends
only on ``(seed, rank, r)``, so a resumed training sees the same data as an uninterrupted one.

A few chunks are a uniform sample of their time because prepare stores each time's rows in a seeded random
order (``row_order`` in the store's attributes; simulated rows are independent draws anyway). A store without
it keeps its writer's order, and a file sorted by batch or cluster would stream a sub-population: said loudly.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import dask
import dask.array as da
import numpy as np
import torch

from amcore.data.store import Snapshots
from amcore.paths.interpolants import SnapshotPath

CHUNKS_PER_TIME = 4  # chunks read per time and refresh: rows from several places, at a few chunks' I/O


def training_bytes(snaps: Snapshots) -> int:
    """Bytes of float32 features (and velocities, when measured) in the training (not held-out) snapshots."""
    counts = snaps.counts()
    arrays = 1 if snaps.velocity is None else 2
    return int(sum(counts[k] for k in snaps.training_snapshots())) * snaps.dim * 4 * arrays


def load_training(snaps: Snapshots) -> Snapshots:
    """The training snapshots in memory, read snapshot by snapshot (held-out rows are never read)."""
    if not isinstance(snaps.x, da.Array):
        return snaps.drop_times(snaps.attrs.get("holdout_times", []))
    keep = snaps.training_snapshots()
    parts = [slice(snaps.offsets[k], snaps.offsets[k + 1]) for k in keep]
    offsets = np.concatenate([[0], np.cumsum([p.stop - p.start for p in parts])])
    sources = [da.concatenate([snaps.x[p] for p in parts])]
    targets = [np.empty((offsets[-1], snaps.dim), dtype=np.float32)]
    if snaps.weights is not None:
        sources.append(da.concatenate([snaps.weights[p] for p in parts]))
        targets.append(np.empty(offsets[-1], dtype=np.float64))
    if snaps.velocity is not None:
        sources.append(da.concatenate([snaps.velocity[p] for p in parts]))
        targets.append(np.empty((offsets[-1], snaps.dim), dtype=np.float32))
    da.store(sources, targets, lock=False)  # chunk by chunk into place: no second copy of the whole array
    weights = targets[1] if snaps.weights is not None else None
    velocity = targets[-1] if snaps.velocity is not None else None
    return Snapshots(targets[0], snaps.t_values[keep], offsets, dict(snaps.attrs), weights, velocity=velocity)


SLOW_REDRAW_S = 10.0  # a redraw of a path's subsamples and couplings that takes longer is announced


class RefreshedPath:
    """A ``SnapshotPath`` rebuilt every ``refresh_every`` steps on ``resident(refresh)`` with a seed of that refresh.

    Same interface as ``SnapshotPath`` for the losses; ``seek(step)`` before each step swaps in the path of that
    step's refresh. Refresh ``r`` on rank ``rank`` depends only on ``(seed, rank, r)``: a resumed training sees
    the same paths as an uninterrupted one.
    """

    kind = "refreshed"

    def __init__(
        self, build: Callable[[Snapshots, int], SnapshotPath], refresh_every: int, seed: int = 0, rank: int = 0
    ) -> None:
        self.build, self.seed, self.rank = build, seed, rank
        self.refresh_every = int(refresh_every)
        self.refresh_index = -1
        started, self.build_seconds = time.perf_counter(), 0.0
        self.seek(0)
        self.build_seconds = time.perf_counter() - started
        self._fingerprint = self.current.fingerprint()
        first = self.current
        self.t0, self.t1, self.dim, self.device = first.t0, first.t1, first.dim, first.device
        self.t_values = first.t_values

    def resident(self, refresh: int) -> Snapshots:
        """The snapshots the path of ``refresh`` is built on."""
        raise NotImplementedError

    def rng(self, refresh: int) -> np.random.Generator:
        """The generator of one refresh on this rank: a pure function of ``(seed, rank, refresh)``."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.rank, refresh]))

    def seek(self, step: int) -> None:
        """Make the path of ``step``'s refresh current (a no-op within a refresh); a redraw that takes a while says
        so as it starts (audit 28: 47 s between two step lines, as if training had hung)."""
        refresh = step // self.refresh_every
        if refresh != self.refresh_index:
            if self.refresh_index >= 0 and self.rank == 0 and self.build_seconds > SLOW_REDRAW_S:
                print(f"amcore train: step {step}: new subsamples and their couplings (about "
                      f"{self.build_seconds:.0f} s)", file=sys.stderr)  # fmt: skip
            path_seed = int(self.rng(refresh).integers(2**62))
            self.current = self.build(self.resident(refresh), path_seed)
            self.refresh_index = refresh

    @property
    def duration(self) -> float:
        return self.t1 - self.t0

    def fingerprint(self) -> str:
        """The data's identity for resuming: the first refresh's data (a fixed function of the store)."""
        return f"{self.kind}|{self._fingerprint}"

    def mass(self, t: torch.Tensor) -> torch.Tensor:
        return self.current.mass(t)

    def log_mass_rate(self, t: torch.Tensor) -> torch.Tensor:
        return self.current.log_mass_rate(t)

    def sample_at(self, t: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.current.sample_at(t, gen)

    def sample_weighted(self, t: torch.Tensor, gen: torch.Generator):
        return self.current.sample_weighted(t, gen)

    def sample_endpoints(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.current.sample_endpoints(n, gen)

    def draw(self, k: int, n: int, gen: torch.Generator) -> torch.Tensor:
        return self.current.draw(k, n, gen)


class ResampledCouplings(RefreshedPath):
    """Training snapshots in memory whose couplings are solved on subsamples (``ot_max_size`` cells of a larger
    time): each refresh draws new subsamples, so over a training every cell takes part, not one fixed draw."""

    kind = "resampled"

    def __init__(self, snaps: Snapshots, build, refresh_every: int, seed: int = 0, rank: int = 0) -> None:
        self.snaps = snaps
        super().__init__(build, refresh_every, seed, rank)

    def resident(self, refresh: int) -> Snapshots:
        return self.snaps


class StreamingPath(RefreshedPath):
    """A ``SnapshotPath`` on a resident sample of a lazily opened store, refreshed every ``refresh_every`` steps.

    ``peak_rows`` is the most rows held at once (resident sample plus one time's chunk reads), for checking the
    memory bound.
    """

    kind = "stream"

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
        self.snaps = snaps
        self.keep = snaps.training_snapshots()
        self.rows_per_time = int(rows_per_time)
        # float32 features, and as many velocities where they were measured
        self.budget_rows = budget_bytes // (4 * snaps.dim * (1 if snaps.velocity is None else 2))
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
        super().__init__(build, refresh_every, seed, rank)

    @staticmethod
    def _pieces(bounds: np.ndarray, start: int, stop: int) -> list[tuple[int, int]]:
        """The row ranges of ``[start, stop)`` cut at chunk boundaries: one per chunk it overlaps."""
        first = int(np.searchsorted(bounds, start, side="right")) - 1
        last = int(np.searchsorted(bounds, stop, side="left"))
        return [(max(int(bounds[c]), start), min(int(bounds[c + 1]), stop)) for c in range(first, last)]

    def sample(self, refresh: int) -> Snapshots:
        """The resident sample of one refresh: per training time, rows of a few random chunks of it."""
        rng = self.rng(refresh)
        xs, vs, weights, counts = [], [], [], []
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
            v = None if self.snaps.velocity is None else [self.snaps.velocity[lo:hi] for lo, hi in chosen]
            x, w, v = dask.compute(parts, w, v)
            x = np.concatenate(x)
            w = np.ones(len(x)) if w is None else np.concatenate(w).astype(np.float64)
            take = np.arange(len(x))
            if len(x) > self.rows_per_time:
                take = np.sort(rng.choice(len(x), self.rows_per_time, replace=False))
            xs.append(x[take])
            if v is not None:
                vs.append(np.concatenate(v)[take])
            # Weights scaled so that each resident snapshot carries the whole snapshot's mass (uAM's growth).
            weights.append(w[take] * self.masses[j] / w[take].sum())
            counts.append(len(xs[-1]))
            held += counts[-1]
        offsets = np.concatenate([[0], np.cumsum(counts)])
        attrs = {**self.snaps.attrs, "holdout_times": []}
        velocity = np.concatenate(vs) if vs else None
        return Snapshots(np.concatenate(xs), self.snaps.t_values[self.keep], offsets, attrs, np.concatenate(weights),
                         velocity=velocity)  # fmt: skip

    resident = sample


def training_path(
    snaps: Snapshots,
    build: Callable[[Snapshots, int], SnapshotPath],
    budget_mb: float,
    rows_per_time: int,
    refresh_every: int,
    seed: int,
    rank: int,
    ot_refresh_every: int = 1000,
    coupling: str = "ot",
) -> SnapshotPath | RefreshedPath:
    """In memory when the training rows fit in ``budget_mb`` (or are in memory already), streamed otherwise.

    ``rows_per_time`` is ``ot_max_size``: in memory, a coupling (``coupling`` not ``independent``) between times
    with more cells is solved on seeded subsamples of that many, redrawn every ``ot_refresh_every`` steps
    (``ResampledCouplings``); streamed, it is the resident rows per time, redrawn with their couplings every
    ``refresh_every`` steps. The log says which.
    """
    size, budget = training_bytes(snaps), int(budget_mb * 2**20)
    where = "amcore train:" if rank == 0 else None
    solver = {"ot": "exact OT", "entropic": "entropic OT (Sinkhorn)",
              "unbalanced": "unbalanced (Hellinger-Kantorovich) then exact OT"}.get(coupling)  # fmt: skip
    if not isinstance(snaps.x, da.Array) or size <= budget:
        training = load_training(snaps)
        largest = int(training.counts().max())
        subsampled = solver is not None and largest > rows_per_time
        if where and subsampled:  # a minute at 10^6 cells: said before, not only after (audit 28)
            print(f"{where} solving {solver} between neighbouring times on subsamples of {rows_per_time} cells per "
                  "time", file=sys.stderr)  # fmt: skip
        path = (
            ResampledCouplings(training, build, ot_refresh_every, seed, rank) if subsampled else build(training, seed)
        )
        if where:
            print(f"{where} data in memory ({size / 2**20:.3g} MB of training rows)", file=sys.stderr)
            if subsampled:
                print(
                    f"{where} {solver} between neighbouring times on seeded subsamples of {rows_per_time} of up to "
                    f"{largest} cells per time (ot_max_size), redrawn every {ot_refresh_every} steps "
                    f"(ot_refresh_every; {path.build_seconds:.1f} s per redraw)",
                    file=sys.stderr,
                )
            elif solver:
                print(f"{where} {solver} between neighbouring times on all cells (at most {largest} per time, "
                      f"within ot_max_size {rows_per_time})", file=sys.stderr)  # fmt: skip
        return path
    if where:
        print(f"{where} reading {rows_per_time} rows per time from the store"
              + (f" and solving {solver} between them" if solver else ""), file=sys.stderr)  # fmt: skip
    path = StreamingPath(snaps, build, rows_per_time, refresh_every, budget, seed, rank)
    if where and "row_order" not in snaps.attrs:
        print(
            f"{where} WARNING: this store keeps the order its rows were written in (no row_order attribute: "
            f"written before amcore stored each time in random order?); streamed draws read {CHUNKS_PER_TIME} "
            "chunks per time and see a sub-population when rows are sorted by batch, sample or cluster: run "
            "amcore prepare again",
            file=sys.stderr,
        )
    if where:
        largest = int(snaps.counts()[path.keep].max())
        couplings = f"; {solver} on them" if solver else ""
        print(
            f"{where} streaming from the store ({size / 2**20:.3g} MB of training rows > in_memory_max_mb "
            f"{budget_mb:g}): {rows_per_time} resident rows of up to {largest} per time (a uniform sample of each "
            f"time), new ones every {refresh_every} steps{couplings} ({path.build_seconds:.1f} s per redraw)",
            file=sys.stderr,
        )
    return path
