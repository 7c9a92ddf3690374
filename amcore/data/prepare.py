"""The prepare stage: turn a dataset description from the config into a canonical snapshot store."""

from __future__ import annotations

import difflib
import shutil
import tempfile
import warnings
import weakref
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import dask
import numpy as np

from amcore.data import preprocess
from amcore.data.readers import (
    READERS,
    available_memory,
    directory_format,
    format_bytes,
    read_dataset,
    read_velocity,
)
from amcore.data.shuffle import gather, within_time_order
from amcore.data.simulate import make_simulator, simulate_snapshots, snapshot_counts
from amcore.data.store import (
    MIN_CELLS_PER_TIME,
    ONE_POINT_CELLS,
    Snapshots,
    check_cells_per_time,
    check_time_resolution,
    population_weights,
)
from amcore.data.times import simulated_times
from amcore.errors import InputError

IN_MEMORY_ORDER_BYTES = 256 * 2**20  # rows up to this size (and a quarter of the memory free) reorder in memory
REPEATED_SHARE = 0.1  # cells repeating another of their time, above which the noise floor reads low
SHARED_SHARE = 0.01  # cells equal to a cell of another time, above which the pair of times is named
SHARED_MIN_HITS = 10  # matches of cells a sample holds once, from which their share is scaled to the whole time
TRACKED_SAMPLE = 500  # cells per time whose nearest neighbours say whether the next time holds the same particles
TRACKED_SHARE = 0.75  # share of them whose nearest cell is the previous time's, above which they are followed
TRACKED_MIN_CELLS = 100  # cells both times need for the check (at 20 a share of 0.75 comes by chance)
TRACKED_COMPONENTS = 20  # principal axes the check reads wider cells on
FAR_MIN_CELLS = 20  # fewer cells in a time give no robust spread to judge a far one by (audit 15)
FAR_SPREADS = 20  # a cell this many robust spreads (1.4826 MAD) from its time's median, in some feature, is far
FAR_SAMPLE = 5000  # cells per time the share of far cells is read on (each time's rows are in random order)


def _check_simulation_fits(counts: list[int], dim: int, n_per_time: int) -> None:
    """Refuse a simulation that cannot fit in the memory available, before simulating anything.

    The estimate: the float32 cells, held twice while sorted into the store's order (8 bytes per value), and
    each cell's float64 time with the sort's int64 order (24 bytes per cell). Measured peaks are within ~30 %.
    """
    need, available = sum(counts) * (8 * dim + 24), available_memory()
    if need > available:
        fits = int(n_per_time * available / need)
        raise InputError(
            f"dataset.n_per_time: {n_per_time} cells at each of {len(counts)} times in {dim} dimensions need about "
            f"{format_bytes(need)} of memory, more than the {format_bytes(available)} available; expected at most "
            f"about {fits} cells per time here"
        )


def _check_times(t_values: np.ndarray, holdout_times: list[float], where: str) -> None:
    """At least two time points, held-out times that are interior observed times, and two times to train on.

    A held-out time is predicted from the previous observed time (and the displacement baseline also needs
    the next one), so the first and the last are refused here, before anything is written.
    """
    if len(t_values) < 2:
        raise InputError(f"{where}: found {len(t_values)} time point(s) {t_values.tolist()}; at least two are needed")
    absent = [t for t in holdout_times if t not in t_values]
    if absent:
        raise InputError(f"holdout_times: {absent} are not observed times of {where}; it has {t_values.tolist()}")
    ends = sorted({t for t in holdout_times if t in (t_values[0], t_values[-1])})
    if ends:
        raise InputError(
            f"holdout_times: {ends} must be interior observed times (a previous time to predict from and a next "
            f"one for the displacement baseline), not the first or the last of {t_values.tolist()}"
        )
    if len(t_values) - len(set(holdout_times)) < 2:
        raise InputError(f"holdout_times: {holdout_times} leave fewer than two of {t_values.tolist()} to train on")
    check_time_resolution(t_values, where)


# The keys of the config's dataset section (workflow/schemas/config.schema.yaml; a test keeps the two in step): a
# typo is an error, never a default silently read instead.
DATASET_KEYS = {
    "source", "path", "x_key", "t_key", "time_map", "feature_columns", "format", "chunk_mb", "drop_nonfinite",
    "file_times", "time_pattern", "simulator", "params", "times", "n_times", "n_per_time", "seed", "v_key",
    "population",
}  # fmt: skip
# The keys that only some sources read: their schema default, and the file sources that read them (None: every
# file source; the simulate source reads none). A value other than the default where the source never reads it is
# refused: a format, file_times or x_key that did nothing, retrained everything in silence (audit 23).
READ_BY = {
    "path": (None, None), "x_key": ("X", ("npz", "npy", "h5ad", "netcdf", "zarr", "directory")),
    "t_key": ("t", ("npz", "npy", "h5ad", "csv", "parquet", "netcdf", "zarr")),  # a directory's times: file names
    "feature_columns": (None, ("csv", "parquet", "directory")), "format": (None, ("directory",)),
    "file_times": ({}, ("directory",)), "time_pattern": (None, ("directory",)), "time_map": ({}, None),
    "drop_nonfinite": (False, None), "v_key": (None, None),
}  # fmt: skip


def _check_read(spec: dict) -> None:
    """Refuse dataset keys that ``spec``'s source never reads (``READ_BY``); an unknown source is named later."""
    source = spec["source"]
    if source not in ("simulate", "directory", *READERS):
        return
    unread = _unread(spec, source, READ_BY)
    named = repr(source)
    if not unread and source == "directory":  # its files' own format reads x_key or feature_columns, not both
        folder = Path(spec.get("path") or "")
        fmt = spec.get("format") or (directory_format(folder) if folder.is_dir() else None)
        if fmt is not None:
            unread = _unread(spec, fmt, {key: READ_BY[key] for key in ("x_key", "feature_columns")})
            named = f"'directory' of {fmt} files"
    if unread:
        read = "; ".join(f"{key}: {'every file source' if READ_BY[key][1] is None else ', '.join(READ_BY[key][1])}"
                         for key in unread)  # fmt: skip
        raise InputError(f"dataset.{', dataset.'.join(unread)}: the source {named} never reads "
                         f"{'them' if len(unread) > 1 else 'it'} (read by {read}): leave "
                         f"{'them' if len(unread) > 1 else 'it'} out")  # fmt: skip


def _unread(spec: dict, source: str, keys: dict) -> list[str]:
    """The keys of ``keys`` (laid out as ``READ_BY``) that ``spec`` sets to other than their default and that
    ``source`` never reads."""
    return [
        key for key, (default, sources) in keys.items()
        if spec.get(key) is not None and spec[key] != default
        and (source == "simulate" or (sources is not None and source not in sources))
    ]  # fmt: skip


def build_snapshots(
    spec: dict,
    preprocess_config: dict | None = None,
    holdout_times: list[float] | None = None,
    workdir: str | Path | None = None,
) -> Snapshots:
    """Simulate or read the dataset that ``spec`` (the config's ``dataset`` section) describes, then preprocess.

    Preprocessing is fitted on the cells whose time is not in ``holdout_times`` and applied to all of them. A
    file's rows are stored time by time, each time's rows in a random order seeded by ``dataset.seed`` (so a few
    chunks of a time are a uniform sample of it, whatever the order of the file); ``obs_index`` keeps the input
    row of each. Rows too large to reorder in memory are spilled under ``workdir`` (a temporary folder when
    None), which must stay until the store is written.
    """
    unknown = sorted(set(spec) - DATASET_KEYS)
    if unknown:
        close = {key: difflib.get_close_matches(key, sorted(DATASET_KEYS), 1) for key in unknown}
        named = ", ".join(f"{key!r}" + (f" (did you mean {close[key][0]!r}?)" if close[key] else "") for key in unknown)
        raise InputError(f"dataset: unknown key{'s' if len(unknown) > 1 else ''} {named}")
    if "source" not in spec:
        raise InputError("dataset: no source (simulate, npz, npy, h5ad, csv, parquet, netcdf, zarr or directory)")
    _check_read(spec)
    config = preprocess.resolve(preprocess_config)
    holdout = sorted(float(t) for t in holdout_times or [])
    if spec["source"] == "simulate":
        if not preprocess.is_identity(config):
            raise InputError("preprocess: the simulate source's ground truth is in raw coordinates; no steps allowed")
        if spec.get("population"):
            raise InputError("dataset.population: a simulator's masses are its own (growing_gaussian's grow); "
                             "population is for files")  # fmt: skip
        simulator = make_simulator(spec["simulator"], spec.get("params", {}))
        times = simulated_times(spec)
        _check_times(np.unique(times), holdout, "dataset.times")  # before simulating anything
        counts = snapshot_counts(simulator, times, spec["n_per_time"])
        if min(counts) < MIN_CELLS_PER_TIME:  # a shrinking population rounds to no cells: the time would vanish
            raise InputError(f"dataset.n_per_time: {spec['n_per_time']} cells at the first time leave "
                             f"{dict(zip(times, counts, strict=True))} cells per time; each needs at least "
                             f"{MIN_CELLS_PER_TIME}: raise n_per_time")  # fmt: skip
        _check_simulation_fits(counts, simulator.dim, spec["n_per_time"])
        try:
            x, t = simulate_snapshots(simulator, times, spec["n_per_time"], spec["seed"])
        except MemoryError as err:  # the estimate above counts the samples only, not the copies
            raise InputError(
                f"dataset.n_per_time: {spec['n_per_time']} cells per time do not fit in memory ({err})"
            ) from err
        provenance = {"source": "simulate", "simulator": spec["simulator"], "seed": spec["seed"]}
        truth = {"simulator": spec["simulator"], "params": asdict(simulator)}
        with warnings.catch_warnings():  # amcore prepare says it of the training times, once (it knows the held-out)
            warnings.filterwarnings("ignore", message="time: times with a few cells among many")
            snaps = Snapshots.from_labels(x, t, {"provenance": provenance, "ground_truth": truth})
        _check_times(snaps.t_values, holdout, "dataset")
        snaps.attrs["preprocess"] = {"config": config}
        snaps.attrs["row_order"] = {"within_time": "simulated"}  # independent draws: any chunks are a uniform sample
    else:
        x, time, provenance, rows = read_dataset(spec)
        counts_seen = preprocess.raw_counts(x)
        velocity = None
        if spec.get("v_key"):
            velocity, read = read_velocity(spec, rows, (len(rows) + provenance["dropped_nonfinite"], x.shape[1]))
        names = provenance["reader"].pop("feature_names", None) or provenance["reader"].get("feature_columns")
        t_key = None if spec["source"] == "directory" else provenance["reader"].get("t_key")  # times from file names
        _check_times(np.unique(time), holdout, provenance["path"] + (f": key {t_key!r}" if t_key else ""))
        fitted = None if preprocess.is_identity(config) else preprocess.fit(x, time, holdout, config)
        if fitted is not None:
            if names and len(names) == x.shape[1]:  # new cells are matched to the input's features by name
                fitted.input_names = [str(name) for name in names]
            x = fitted.transform(x)
            velocity = None if velocity is None else fitted.transform_velocity(velocity)
        x = preprocess.to_float32(x, provenance["path"], feature_names(names, fitted, x.shape[1]))
        if velocity is not None:  # beyond float32's range they would turn inf in the cast: refused, as x's are
            where = f"{provenance['path']}: key {spec['v_key']!r} (velocities)"
            velocity = preprocess.to_float32(velocity, where, feature_names(names, fitted, x.shape[1]))
        seed = int(spec.get("seed", 0))
        order, t_values, counts = within_time_order(time, seed)
        check_cells_per_time(t_values, counts, provenance["path"])  # now, not by evaluate after the training
        budget = min(IN_MEMORY_ORDER_BYTES, available_memory() // 4)
        spill = workdir
        if spill is None and x.shape[0] * x.shape[1] * x.dtype.itemsize > budget:
            spill = tempfile.mkdtemp(prefix="amcore-rows-")
        x = gather(x, order, budget, spill)  # x may be a lazy dask array (out of core): never through dask's take
        if velocity is not None:  # the same order, spilled beside x's rows where they are
            velocity = gather(velocity, order, budget, spill and Path(spill) / "velocity")
            # counted on the gathered rows: in memory, or one read of the spill, not the input's read again
            measured = int(dask.compute((velocity != 0).any(axis=1).sum())[0])
            if not measured:
                raise InputError(f"{provenance['path']}: key {spec['v_key']!r} (velocities): every cell's velocity "
                                 "is 0 or NaN: there is nothing to turn the path with (a cell whose velocity is 0 "
                                 "counts as unmeasured)")  # fmt: skip
            read = {"v_key": spec["v_key"], **read, "measured_cells": measured, "cells": int(velocity.shape[0])}
        offsets = np.concatenate([[0], np.cumsum(counts)])
        attrs = {"provenance": {"source": spec["source"], **provenance}}
        attrs["row_order"] = {"within_time": "random", "seed": seed}  # what streaming relies on
        # obs_index: what export maps cells back with
        weights = None
        if spec.get("population"):
            weights, sizes = population_weights(
                spec["population"], t_values, counts, f"{provenance['path']}: dataset.population"
            )
            attrs["population"] = {str(float(t)): size for t, size in zip(t_values, sizes, strict=True)}
        snaps = Snapshots(x, t_values, offsets, attrs, weights, obs_index=rows[order], velocity=velocity)
        if counts_seen:
            attrs["raw_counts"] = counts_seen
        if velocity is not None:
            attrs["velocity"] = read
        if spill is not None and workdir is None:
            weakref.finalize(snaps, shutil.rmtree, spill, True)
        snaps.attrs["preprocess"] = {"config": config} if fitted is None else fitted.to_json()
        names = feature_names(names, fitted, x.shape[1])
        if names:
            snaps.attrs["feature_names"] = names
    snaps.attrs["holdout_times"] = holdout
    if spec["source"] != "simulate":
        snaps.attrs.update(sampled_cell_checks(snaps))
    return snaps


def _previous_neighbours(a: np.ndarray, b: np.ndarray) -> float:
    """The share of ``TRACKED_SAMPLE`` of ``b``'s cells whose nearest other cell among ``a`` and ``b`` (as many each)
    is one of ``a``'s: about a half for independent samples of one law (binomial, sd 0.022 at 500), less where the
    law moved, near 1 for the same particles moved a little. Wide cells are read on their first
    ``TRACKED_COMPONENTS`` principal axes (a k-d tree in 1,000 features was 5 times slower than none: review 63)."""
    from scipy.spatial import cKDTree

    asked = b[:TRACKED_SAMPLE]
    pooled = np.concatenate([a, b])
    if pooled.shape[1] > TRACKED_COMPONENTS:
        centre = asked.mean(0)
        axes = np.linalg.svd(asked - centre, full_matrices=False)[2][:TRACKED_COMPONENTS]
        pooled, asked = (pooled - centre) @ axes.T, (asked - centre) @ axes.T
    _, nearest = cKDTree(pooled).query(asked, k=2)
    own = len(a) + np.arange(len(asked))  # each asked cell's own row in pooled: never its own neighbour
    other = np.where(nearest[:, 0] == own, nearest[:, 1], nearest[:, 0])
    return float(np.mean(other < len(a)))


def sampled_cell_checks(snaps: Snapshots) -> dict:
    """What the cells themselves put in doubt, read on the first ``FAR_SAMPLE`` cells of each time (a uniform
    sample: rows are in random order within a time), each sample read (and, for a preprocessed store, computed)
    once for all (each entry lists only what it flags):

    - ``far_cells``, ``{time: share}``: :func:`far_share`.
    - ``repeated_cells``, ``{time: share}``: cells that repeat others of their time (over ``REPEATED_SHARE``:
      copies, or discrete values such as counts) make two samples share values, so the noise floor
      ``w1_subsample_noise`` reads below what a prediction of continuous cells can reach (audit 15: 0.283 against
      0.428 for five copies of each cell).
    - ``shared_cells``, ``{"a, b": share of b's cells equal to one of a's}`` (over ``SHARED_SHARE``; b's sample
      against a's: an estimate where a has more than ``FAR_SAMPLE`` cells): cells
      copied between times make the previous time's cells unmoved look like a prediction (audit 38: half of a time
      copied from the one before, copy_prev scored 0.331 against AM's 0.320, in silence).
    - ``two_valued_features``, feature indices: a feature of two values (a 0/1 label) has no path between them that
      a flow can take without putting cells where no data can be (audit 38: AM 0.628 against displacement's 0.394).
    - ``time_like_features``, feature indices: one value within every time's cells read, another across times (a
      batch, another time): they separate the times by themselves (audit 69: a CSV's columns were named so, an
      npz's or a preprocessed store's not).
    - ``one_point_times``: times whose cells read are all one point (a placeholder, a collapsed export): every flow
      must pass the whole population through it (audit 69: named only as copies lowering the noise floor).
    - ``tracked_cells``, ``{"a, b": share}``: b's cells whose nearest cell is one of a's (:func:`_previous_neighbours`)
      over ``TRACKED_SHARE``, where about half are for independent samples of one law and fewer where it moved:
      the same particles followed from frame to frame, a simulation's (seen where the samples hold most of each
      frame's particles: frames of up to ``FAR_SAMPLE``).
      Leave-one-out then rewards carrying cells forward over a flow of the law (audit 62: copy_prev 0.177, eAM with
      the right noise 0.208, an independent sample of the true law 0.246).
    - ``unequal_spreads``, ``{"low": [feature, sd], "high": [feature, sd]}``: the features' standard deviations
      over the training times' cells read differ more than ``preprocess.FEATURE_SPREAD_RATIO`` times: with one
      length unit for all (OT, distances, the network's inputs) the smallest hardly count (audit 90: minutes, one
      feature 1000 times the others, unstandardised; said by train alone, after every baseline was scored on it).
    """
    far, repeated, shared, seen, lows, highs, two, tracked, one_point = {}, {}, {}, [], [], [], [], {}, []
    moments, training = np.zeros((3, snaps.dim)), set(snaps.training_snapshots())  # cells, sum, sum of squares
    previous = None
    counts = snaps.counts()
    for k, t in enumerate(snaps.t_values):
        lo, hi = snaps.offsets[k], min(snaps.offsets[k] + FAR_SAMPLE, snaps.offsets[k + 1])
        x = np.array(snaps.x[lo:hi], dtype=np.float64)  # a copy: never the store's own array
        x += 0.0  # -0.0 becomes 0.0, for the rows' bytes
        if (share := far_share(x)) > 0:
            far[f"{t:g}"] = share
        keys = [hash(row.tobytes()) for row in np.ascontiguousarray(x)]  # 64-bit: no collision in 10^9 pairs
        held = Counter(keys)
        if (share := 1 - len(held) / len(x)) > REPEATED_SHARE:
            repeated[f"{t:g}"] = float(share)
        if len(held) == 1 and len(x) >= ONE_POINT_CELLS:
            one_point.append(f"{t:g}")
        for earlier, rows, scale in seen:
            # A value a's sample holds several times is one a holds widely (found whatever the sample); a copy of one
            # of a's cells is in a's sample with chance 1 / scale, so those matched once stand for scale times as
            # many, where enough were matched to scale (a 2 % of zero rows in both read as 26 % copied, scaled).
            widely = sum(rows.get(key, 0) > 1 for key in keys)
            once = sum(rows.get(key, 0) == 1 for key in keys)
            hits = widely + (once * scale if once >= SHARED_MIN_HITS else once)
            if (share := min(1.0, hits / len(keys))) > SHARED_SHARE:
                shared[f"{earlier}, {t:g}"] = share
        n = min(len(x), len(previous) if previous is not None else 0)  # both sides as dense
        if n >= TRACKED_MIN_CELLS and (pair := f"{snaps.t_values[k - 1]:g}, {t:g}") not in shared:
            if (share := _previous_neighbours(previous[:n], x[:n])) > TRACKED_SHARE:
                tracked[pair] = share
        previous = x
        if k in training:
            moments += [np.full(snaps.dim, len(x)), x.sum(0), np.square(x).sum(0)]
        seen.append((f"{t:g}", held, float(counts[k] / len(x))))
        lows.append(x.min(0))
        highs.append(x.max(0))
        two.append(((x == lows[-1]) | (x == highs[-1])).all(0))
    ends = np.concatenate([lows, highs])  # each time's two values must be the same two
    low, high = ends.min(0), ends.max(0)
    pairs = np.flatnonzero(np.all(two, axis=0) & ((ends == low) | (ends == high)).all(0) & (low < high))
    # one value within each time, another across them: a batch or another time (a CSV's reader names its columns)
    timelike = np.flatnonzero(np.all(np.array(lows) == np.array(highs), axis=0) & (low < high))
    checks = {"far_cells": far, "repeated_cells": repeated, "shared_cells": shared,
              "two_valued_features": [int(i) for i in pairs if i not in timelike], "tracked_cells": tracked,
              "time_like_features": [int(i) for i in timelike], "one_point_times": one_point}  # fmt: skip
    n, total, squares = moments
    sd = np.sqrt(np.maximum(squares / np.maximum(n, 1) - (total / np.maximum(n, 1)) ** 2, 0))
    spread = np.flatnonzero(sd > 0)
    if len(spread) > 1 and sd[spread].max() > preprocess.FEATURE_SPREAD_RATIO * sd[spread].min():
        low, high = spread[np.argmin(sd[spread])], spread[np.argmax(sd[spread])]
        checks["unequal_spreads"] = {"low": [int(low), float(sd[low])], "high": [int(high), float(sd[high])]}
    return checks


def far_share(x: np.ndarray) -> float:
    """The share of cells ``FAR_SPREADS`` robust spreads or more from their time's median in some feature; 0 under
    ``FAR_MIN_CELLS`` cells (the MAD of 3 cells put an ordinary one 39 spreads away, audit 15). The robust spread is
    1.4826 times the median absolute deviation, or a 2.5631th of the 10-90 % range where that is larger (both are
    the standard deviation of Gaussian cells): a feature zero in about half the cells (raw or sparse counts) has a
    MAD near 0, and 16 of 40 ordinary cells read as far (audit 88). A few far cells set a standardisation's scale,
    the OT pairs' costs and the largest terms of AM's objective: on Student-t cells (2 degrees of freedom, 20-d) with
    1 % of them 100 times farther, AM's held-out W1 was worse than the previous time's cells unmoved (audit 6), where
    Flow Matching, the spline path and AM with ``head: inner`` held."""
    if len(x) < FAR_MIN_CELLS:
        return 0.0
    median = np.median(x, axis=0)
    low, high = np.quantile(x, [0.1, 0.9], axis=0)
    spread = np.maximum(1.4826 * np.median(np.abs(x - median), axis=0), (high - low) / 2.5631)
    live = spread > 0  # a feature constant in most cells has no spread to judge by
    return float((np.abs(x[:, live] - median[live]) > FAR_SPREADS * spread[live]).any(axis=1).mean())


def feature_names(names: list[str] | None, fitted, n_features: int) -> list[str] | None:
    """The store's feature names: the input's (h5ad var_names, csv/parquet columns) after ``select``; ``PC1``,
    ``PC2``, ... after ``pca`` or ``whiten``; ``None`` when the input names none."""
    if fitted is not None and fitted.components is not None:
        names = [f"PC{i + 1}" for i in range(len(fitted.components))]
    elif names and fitted is not None and fitted.indices is not None:
        names = [names[i] for i in fitted.indices]
    return [str(name) for name in names] if names and len(names) == n_features else None


def ground_truth(snaps: Snapshots):
    """The analytic simulator behind a store, or ``None`` for real data."""
    truth = snaps.attrs.get("ground_truth")
    return make_simulator(truth["simulator"], truth["params"]) if truth else None
