"""Rows of a dask array put in a given order, in bounded memory: how prepare stores each time in random order.

A real file is sorted by batch, sample or cluster; a store that kept that order would hand the streaming
sampler, which reads a few whole chunks of a time, a sub-population. Prepare therefore stores each time's rows
in a seeded random permutation (``within_time_order``) and records the input row of every stored row.

``gather(x, order)`` returns ``x[order]`` without dask's all-to-all ``take``, which holds the whole array in
memory at once. Up to ``budget_bytes`` the rows are scattered straight into one array (one pass over ``x``).
Above it, a two-pass external shuffle: each input chunk is cut by destination block and spilled to disk sorted
by block, then each output block is assembled from its slices of every spill file (memory: one output block
plus a few input chunks, whatever the size of ``x``; I/O: one more write and read of the array).
"""

from __future__ import annotations

import os
from pathlib import Path

import dask
import dask.array as da
import numpy as np

SPILL_BLOCK_BYTES = 64 * 2**20  # rows per output block of the external shuffle: ~64 MB of them


def within_time_order(time: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, t_values, counts)``: input rows grouped by time (ascending), each time's rows in a uniformly
    random order drawn from ``seed``; row ``j`` of the result is input row ``order[j]``."""
    by_time = np.argsort(time, kind="stable")
    t_values, counts = np.unique(time[by_time], return_counts=True)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        by_time[lo:hi] = rng.permutation(by_time[lo:hi])
    return by_time, t_values, counts


def _blocks(x: da.Array):
    """``(first row, block)`` for each chunk of ``x`` (chunked along rows only), a few computed at a time."""
    bounds = np.concatenate([[0], np.cumsum(x.chunks[0])]).astype(np.int64)
    parts = x.rechunk({1: -1}).to_delayed().ravel()
    window = max(1, min(8, os.cpu_count() or 1))
    for start in range(0, len(parts), window):
        for i, block in enumerate(dask.compute(*parts[start : start + window]), start=start):
            yield int(bounds[i]), np.asarray(block)


def gather(
    x: np.ndarray | da.Array, order: np.ndarray, budget_bytes: int, workdir: str | Path | None = None
) -> np.ndarray | da.Array:
    """``x[order]`` (``order`` a permutation of the rows), in memory up to ``budget_bytes``, else through a spill
    under ``workdir`` (which must outlive the computation of the returned dask array); a dask ``x`` stays one."""
    order = np.asarray(order, dtype=np.int64)
    if not isinstance(x, da.Array):
        return np.ascontiguousarray(x[order])
    n, dim = x.shape
    dest = np.empty(n, dtype=np.int64)
    dest[order] = np.arange(n, dtype=np.int64)  # where each input row goes
    if n * dim * x.dtype.itemsize <= budget_bytes:
        out = np.empty((n, dim), dtype=x.dtype)
        for lo, block in _blocks(x):
            out[dest[lo : lo + len(block)]] = block
        return da.from_array(out, chunks=(x.chunks[0], -1))  # still a dask array, as the caller's was
    if workdir is None:
        raise ValueError("gather: the rows exceed the memory budget and no folder was given to spill them to")
    return _spilled(x, dest, Path(workdir))


def _spilled(x: da.Array, dest: np.ndarray, workdir: Path) -> da.Array:
    """Pass one (now, one task per input chunk, in parallel): each chunk's rows sorted by destination block and
    spilled with their positions in it. Pass two (lazily, when the result is computed): each output block read
    back from its slices of the spill files."""
    n, dim = x.shape
    rows = max(1, SPILL_BLOCK_BYTES // (x.dtype.itemsize * max(1, dim)))
    n_blocks = -(-n // rows)
    workdir.mkdir(parents=True, exist_ok=True)
    bounds = np.concatenate([[0], np.cumsum(x.chunks[0])]).astype(np.int64)
    parts = x.rechunk({1: -1}).to_delayed().ravel()
    pieces: list[list[tuple[str, int, int]]] = [[] for _ in range(n_blocks)]
    tasks = []
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        name = str(workdir / f"rows-{i}")
        tasks.append(dask.delayed(_spill, pure=False)(parts[i], dest[lo:hi], rows, name))
        ends = np.cumsum(np.bincount(dest[lo:hi] // rows, minlength=n_blocks))
        for b in np.flatnonzero(np.diff(np.concatenate([[0], ends]))):
            pieces[b].append((name, int(ends[b - 1]) if b else 0, int(ends[b])))
    dask.compute(*tasks)  # each task holds one input chunk; nothing comes back
    parts = []
    for b in range(n_blocks):
        size = min(rows, n - b * rows)
        task = dask.delayed(_assemble, pure=True)(pieces[b], size, dim, x.dtype.str)
        parts.append(da.from_delayed(task, (size, dim), dtype=x.dtype))
    return da.concatenate(parts)


def _spill(block: np.ndarray, target: np.ndarray, rows: int, name: str) -> None:
    """One input chunk's rows, sorted by the output block they go to (stable), and their positions in it."""
    bucket = target // rows
    by_bucket = np.argsort(bucket, kind="stable")
    np.save(f"{name}.npy", np.asarray(block)[by_bucket])
    np.save(f"{name}.pos.npy", (target[by_bucket] - bucket[by_bucket] * rows).astype(np.int32))


def _assemble(pieces: list[tuple[str, int, int]], size: int, dim: int, dtype: str) -> np.ndarray:
    """One output block from its slices of the spill files (memory-mapped: only those rows are read)."""
    out = np.empty((size, dim), dtype=dtype)
    for name, start, stop in pieces:
        rows = np.load(f"{name}.npy", mmap_mode="r")[start:stop]
        out[np.load(f"{name}.pos.npy", mmap_mode="r")[start:stop]] = rows
    return out
