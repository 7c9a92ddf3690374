"""The canonical snapshot store: one zarr v3 group, written through xarray, ragged along ``obs``.

Snapshot ``k`` is ``x[offsets[k]:offsets[k + 1]]`` observed at ``t_values[k]``. The store is written to a
temporary sibling and renamed when complete, so an interrupted write never looks finished.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import dask
import dask.array as da
import numcodecs
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from amcore.atomic import replacing
from amcore.data.labels import by_row_labels
from amcore.errors import InputError

CHUNK_BYTES = 8 * 2**20
ZSTD = zarr.codecs.ZstdCodec(level=3)
ZSTD_MIN_SAVING = 0.15
SAMPLE_BYTES = 2**20  # of x tried with zstd before choosing the codec


def _check_even_weights(blocks: list[np.ndarray], t_values: np.ndarray) -> None:
    """Each time's weights one positive number: a time's total is its mass (uAM's), its cells are drawn evenly, so
    unequal weights within a time would be ignored in silence and a time of no mass would divide its growth by 0."""
    # Unequal first: a time whose first cell alone weighs 0 read as a time of no mass (audit 69).
    uneven = [float(t) for t, w in zip(t_values, blocks, strict=True) if not np.allclose(w, w[0], rtol=1e-9, atol=0)]
    if uneven:
        raise InputError(f"weights: unequal within times {uneven[:10]}: amcore takes each time's total weight as its "
                         "mass (uAM) and draws a time's cells evenly, so unequal ones would be ignored in silence; "
                         "give a time's cells one weight (its total over its count)")  # fmt: skip
    empty = [float(t) for t, w in zip(t_values, blocks, strict=True) if w[0] == 0]
    if empty:
        raise InputError(f"weights: times {empty[:10]} weigh 0: a time's total weight is its mass, which uAM's growth "
                         "divides by; drop those times")  # fmt: skip


def population_weights(
    population: dict, t_values: np.ndarray, counts: np.ndarray, name: str
) -> tuple[np.ndarray, list[float]]:
    """Each cell's weight (cells sorted by time) from ``population``, time -> the population's size then (any unit):
    the size shared among the time's cells; and the sizes, time by time. uAM's masses are the weights' sum per time;
    without them they are the counts, which tell the population only where each time's cells are a fixed share of it
    (audit 8: 600 cells a day of a population growing 5.7-fold taught uAM no growth at all). ``name``: what the
    errors call the mapping (``dataset.population`` of a file, ``from_labels``' ``population``)."""
    from collections import Counter

    from amcore.data.readers import as_number

    if not hasattr(population, "items"):
        raise InputError(f"{name} must map each time to the population's size then, got {type(population).__name__}")
    observed = {float(t) for t in t_values}
    sizes = {as_number(key): size for key, size in population.items()}
    if len(sizes) < len(population):  # '2.1' and '2.10': one time, two sizes (the last one won, in silence)
        times = Counter(as_number(key) for key in population)
        twice = [key for key in population if times[as_number(key)] > 1]
        raise InputError(f"{name} names one time twice: {twice}; give each time one size")
    unknown = [key for key in population if as_number(key) not in observed]
    if unknown:
        raise InputError(f"{name} names {unknown}, which are not observed times {t_values.tolist()}")
    missing = [float(t) for t in t_values if float(t) not in sizes]
    if missing:
        raise InputError(f"{name} gives no size for times {missing}; give one for every observed time (held-out ones "
                         "too: they score a prediction's mass)")  # fmt: skip
    number = (int, float, np.number)
    bad = {key: size for key, size in population.items()
           if isinstance(size, bool) or not (isinstance(size, number) and 0 < size < np.inf)}  # fmt: skip
    if bad:
        raise InputError(f"{name} sizes must be finite numbers > 0, got {bad}")
    ordered = [float(sizes[float(t)]) for t in t_values]
    return np.repeat(np.divide(ordered, counts), counts), ordered


MIN_CELLS_PER_TIME = 2  # every distance to or from a time, and its noise floor, needs two cells
ONE_POINT_CELLS = 20  # cells a time needs to be named one point (two cells of small integers coincide by chance)
ONE_POINT_TEXT = (
    "a start from one point is a flow's too, but a placeholder or a collapsed export is not; every "
    "flow must carry the whole population through it: drop the time if it is not a measurement"
)
TIME_RESOLUTION = 1e-3  # the coarsest float32 step allowed, as a fraction of the smallest gap between times
PSEUDOTIMES = 100  # more distinct times than a time course is sampled at: a time per cell, as pseudotime gives


def check_cells_per_time(t_values: np.ndarray, counts: np.ndarray, where: str) -> None:
    """Refuse a time of fewer than ``MIN_CELLS_PER_TIME`` cells, now rather than in evaluate after the training."""
    few = counts < MIN_CELLS_PER_TIME
    if few.any():
        shown = ", ".join(f"{t:g} ({n})" for t, n in zip(t_values[few][:10], counts[few][:10], strict=True))
        more = f" and {int(few.sum()) - 10} more" if few.sum() > 10 else ""
        raise InputError(
            f"{where}: each time point needs at least {MIN_CELLS_PER_TIME} cells (every distance to or from a time "
            f"does); times (cells): {shown}{more}. Drop them, or merge them with a neighbouring time (files: "
            "dataset.time_map)"
        )


FEW_TIME_CELLS = 20  # a training time with fewer cells than this, and than FEW_TIME_SHARE of the median, is warned of
FEW_TIME_SHARE = 0.2


def sparse_times(t_values: np.ndarray, counts: np.ndarray) -> str | None:
    """A warning for times of a few cells among many (fewer than ``FEW_TIME_CELLS`` and than ``FEW_TIME_SHARE`` of
    the median count): every path passes through the snapshots, so the flow of all cells is bent through those few
    points (audit 92: an OU process with 3 cells at one time of 300 at the others, the drift's error at the next time
    71 % against 9 %, W1 there 0.43 against 0.07; said by nothing but a note on counts that pointed to growth). A
    course of few cells at every time is the evaluation's to flag, not this."""
    few = (counts < FEW_TIME_CELLS) & (counts < FEW_TIME_SHARE * np.median(counts))
    if not few.any():
        return None
    shown = ", ".join(f"t = {t:g}: {n}" for t, n in zip(t_values[few][:10], counts[few][:10], strict=True))
    return (f"times with a few cells among many ({shown}; a median of {np.median(counts):g} a time): every path "
            "passes through each snapshot's cells, so a flow learned through these few points bends toward them "
            "(3 cells of one time among 300 took a drift's error at the next time from 9 % to 71 %); drop them, "
            "merge them with a neighbouring time (files: dataset.time_map) or hold them out")  # fmt: skip


def check_time_resolution(t_values: np.ndarray, where: str) -> None:
    """Refuse times that float32, in which training samples and integration steps hold them, cannot tell apart.

    Timestamps in epoch seconds (about 1.7e9) are resolved only to 128 s in float32: minutes apart, every
    snapshot would fall on a handful of times, and a training that went on would learn a wrong time axis.
    """
    largest = float(np.abs(t_values).max())
    if not largest <= float(np.finfo(np.float32).max):  # NaN included
        raise InputError(
            f"{where}: times as large as {largest:.6g} are beyond float32's range (3.4e38), in which training holds "
            "them; give them in a coarser unit or map each label with dataset.time_map"
        )
    k = int(np.argmin(np.diff(t_values)))
    gap = float(t_values[k + 1] - t_values[k])
    step = float(np.spacing(np.float32(largest)))
    if step > TIME_RESOLUTION * gap:
        # Say what would help: shifting the times fixes an offset, not rounding noise or a time per cell.
        if gap <= 1e-9 * largest:
            pair = f"{float(t_values[k])!r} and {float(t_values[k + 1])!r}"
            advice = f"{pair} differ only by float rounding: round the labels, or map them with dataset.time_map"
        elif float(np.spacing(np.float32(t_values[-1] - t_values[0]))) > TIME_RESOLUTION * gap:
            span = (t_values[-1] - t_values[0]) / gap
            if len(t_values) > PSEUDOTIMES:
                advice = (f"{len(t_values)} distinct times over {span:.3g} smallest gaps are more than float32 keeps "
                          "apart even relative to the first; snapshots at a few times are expected (a time per cell "
                          "looks like pseudotime): bin the times with dataset.time_map")  # fmt: skip
            else:  # a real design with two times close together: shifting or rescaling the times cannot help
                pair = f"{float(t_values[k]):.6g} and {float(t_values[k + 1]):.6g}"
                advice = (f"the times span {span:.3g} times their smallest gap ({pair}), more than the about 10^4 "
                          "that float32 keeps apart, whatever the unit: merge those two times (dataset.time_map "
                          "maps both labels to one) or leave one of them out")  # fmt: skip
        else:
            advice = f"give them relative to the first ({t_values[0]:.10g}), or map each label with dataset.time_map"
        raise InputError(
            f"{where}: times {t_values[0]:.10g} to {t_values[-1]:.10g}, as little as {gap:.6g} apart, are held in "
            f"float32 for training, which resolves only {step:.6g} there; expected times whose smallest gap is at "
            f"least {1 / TIME_RESOLUTION:.0f} float32 steps: {advice}"
        )


@dataclass
class Snapshots:
    """Observations sorted by time, with the boundaries of each snapshot; ``x`` may be a lazy dask array."""

    x: np.ndarray | da.Array
    t_values: np.ndarray
    offsets: np.ndarray
    attrs: dict = field(default_factory=dict)
    weights: np.ndarray | None = None
    obs_index: np.ndarray | None = None  # each row's row number in the input (what prepare read), when known
    velocity: np.ndarray | da.Array | None = None  # each cell's measured velocity (RNA velocity), in x's coordinates

    def __post_init__(self) -> None:
        """The layout must hold together (no data is read): times strictly increasing, one block of rows each,
        the blocks covering ``x`` exactly; a gap would train on a subset of the cells in silence."""
        t, offsets = np.asarray(self.t_values), np.asarray(self.offsets)
        if t.ndim != 1 or (len(t) > 1 and not (np.diff(t) > 0).all()):
            raise InputError(f"t_values must be strictly increasing times, got {t.tolist()[:10]}")
        n = self.x.shape[0]
        if self.velocity is not None and self.velocity.shape != self.x.shape:
            raise InputError(f"velocity must have the shape of x {self.x.shape}, got {self.velocity.shape}")
        if offsets.shape != (len(t) + 1,) or offsets[0] != 0 or offsets[-1] != n or (np.diff(offsets) < 0).any():
            raise InputError(f"offsets must run from 0 to the {n} rows of x, one block per time ({len(t)}), got "
                             f"{offsets.tolist()[:10]}")  # fmt: skip

    @classmethod
    def from_labels(
        cls,
        x: np.ndarray,
        time: np.ndarray,
        attrs: dict | None = None,
        weights: np.ndarray | None = None,
        velocity: np.ndarray | None = None,
        population: dict | None = None,
    ) -> Snapshots:
        """Group rows by their time label (stable sort), as the store lays them out. ``x`` is ``(cells, features)``
        (numpy, a list, a DataFrame: its columns name the features), ``time`` one number per cell, ``velocity``
        (optional) one row per cell. uAM's mass at a time is its cells' total ``weights`` (one number per cell, equal
        within a time: the size over the count), or ``population[t]``, the population's size at ``t`` (a config's
        ``dataset.population``); without either, the cell counts.

        The checks ``amcore prepare`` makes on a file are made here too: at least two cells per time, times that
        float32 tells apart (float32 labels read as the decimals written: 0.1), cells with NaN or inf (outside the
        held-out times of ``attrs``), and float64 cells that the cast to float32 would flatten (1e8 plus noise)
        refused; a feature that is the time itself or holds one value within each time, raw counts, and a time whose
        cells are all one point are warned of (a DataFrame that kept its time column, a batch label, counts amcore
        does not normalise, a placeholder). Where ``x``
        and ``time`` (``weights``, ``velocity``) are pandas objects, rows are matched by label (``by_row_labels``)."""
        from amcore.data.preprocess import counts_advice, raw_counts, to_float32
        from amcore.data.readers import PLAIN_NUMBER, to_times

        attrs = dict(attrs or {})
        time, weights, velocity = (by_row_labels(x, v, k) for k, v in (("time", time), ("weights", weights),
                                                                        ("velocity", velocity)))  # fmt: skip
        if hasattr(x, "obs") and hasattr(x, "X"):  # an AnnData: its cells are in X, a layer or obsm, its times in obs
            raise InputError(
                "x is an AnnData: pass its cells and their times, e.g. from_labels(adata.obsm['X_pca'], "
                "adata.obs['day']) (or adata.X; model.preprocess(adata) does it for a trained model)"
            )
        if hasattr(x, "toarray"):  # scipy sparse (adata.X of counts): the dense cells a flow moves
            x = x.toarray()
        if hasattr(x, "columns") and hasattr(x, "dtypes"):  # a DataFrame: a text column is named, not numpy's error
            from pandas.api.types import is_numeric_dtype

            text = [str(name) for name, kind in x.dtypes.items() if not is_numeric_dtype(kind)]
            if text:
                raise InputError(f"x: columns {text[:5]}{' ...' if len(text) > 5 else ''} are not numbers (labels, "
                                 "batches, text?): pass the feature columns only")  # fmt: skip
        if hasattr(x, "columns") and "feature_names" not in attrs:
            attrs["feature_names"] = [str(name) for name in x.columns]
        if hasattr(x, "columns") and hasattr(x, "to_numpy"):  # nullable dtypes (Float64, Int64) too: NaN for NA
            x = x.to_numpy(dtype=np.float64, na_value=np.nan)
        # audit 57: a list of one array per time met numpy's "inhomogeneous shape" (or became 3-d)
        stacked = "" if not isinstance(x, (list, tuple)) or np.ndim(x[0]) != 2 else (
            f"; got a list of {len(x)} items of shapes {[np.shape(part) for part in x[:3]]}...: for one array per "
            "time, pass np.vstack(arrays) and time np.repeat(times, [len(a) for a in arrays])")  # fmt: skip
        try:
            x = np.asarray(x)
        except ValueError as err:
            raise InputError(f"x must be (cells, features), one row per cell ({err}){stacked}") from None
        if isinstance(getattr(time, "dtype", None), pd.DatetimeTZDtype):  # dates with a zone: refused as dates
            time = time.dt.tz_localize(None)
        time = np.asarray(time)
        if time.dtype.kind in "mM":  # durations in seconds, dates refused with the way to numbers (audit 58)
            time = to_times(time, None, "time")
        elif time.dtype.kind in "USO" and all(isinstance(t, str) and re.fullmatch(PLAIN_NUMBER, t.strip())
                                              for t in pd.unique(time.ravel())):  # fmt: skip
            time = to_times(time, None, "time")  # numbers written as text ("6.5"), as prepare reads them (audit 94)
        if x.dtype == object:  # numbers held as Python objects: read as such, anything else refused
            try:
                x = x.astype(np.float64)
            except (TypeError, ValueError) as err:
                raise InputError(f"x must hold real numbers: {err}") from None
        if time.ndim == 2 and time.shape[1] == 1:  # a column, as pandas' .values of one column gives
            time = time[:, 0]
        if x.ndim != 2 or time.ndim != 1 or len(x) != len(time) or not len(x) or not x.shape[1]:
            raise InputError(f"x must be (cells, features), at least one of each, and time one label per cell, got "
                             f"x of shape {x.shape} and time of shape {time.shape}{stacked}")  # fmt: skip
        if x.dtype.kind not in "biuf":  # text, complex, dates
            raise InputError(f"x must hold real numbers, got {x.dtype} ({x.flat[0]!r}, ...)")
        if not np.issubdtype(time.dtype, np.number) or np.issubdtype(time.dtype, np.complexfloating):
            raise InputError(f"time labels must be numbers, got {time.dtype} ({time[0]!r}, ...): map text labels "
                             "to times first (dataset.time_map does it for files)")  # fmt: skip
        if not np.isfinite(time).all():
            raise InputError(f"time: {int((~np.isfinite(time)).sum())} labels are NaN or inf")
        time = to_times(time, None, "time")  # float64, float32 labels as the decimals written (0.1)
        as_x = time.astype(x.dtype) if x.dtype.kind == "f" else time  # float32 cells hold float32 copies of 0.1
        # only the columns whose first cell is its time are read whole: no cells-by-features copy of a large x
        if same := [j for j in np.flatnonzero(x[0] == as_x[0]) if (x[:, j] == as_x).all()]:
            names = attrs.get("feature_names") or []
            column = repr(names[same[0]]) if same[0] < len(names) else f"{same[0]}"
            # a warning: a point moving at unit speed is a flow too (the tests' toy), a time column left in is not
            warnings.warn(f"x's column {column} holds the time labels themselves: if it is the time column left "
                          "among the features, drop it from x (a feature that is the time trains a flow of the "
                          "clock)", stacklevel=2)  # fmt: skip
        if looks := raw_counts(x):  # audit 69: a notebook's raw counts trained and pushed 166-fold off, unwarned
            warnings.warn(f"x: {counts_advice(looks)}", stacklevel=2)
        if x.dtype.kind == "f":  # as amcore prepare refuses them (a held-out time's cells train nothing)
            # rows whose float64 sum is not finite hold a NaN or inf (float32 sums never overflow there); then exactly
            rows = np.flatnonzero(~np.isfinite(x.sum(axis=1, dtype=np.float64)))
            rows = rows[~np.isfinite(x[rows]).all(axis=1) & ~np.isin(time[rows], attrs.get("holdout_times") or [])]
            if len(bad := rows):
                at = ", ".join(f"{v:g}" for v in np.unique(time[bad])[:5])
                raise InputError(f"x: {len(bad)} cells of time{'s' * (',' in at)} {at} have a NaN or inf feature (the "
                                 f"first: row {bad[0]} of x): drop or impute them (amcore prepare drops them with "
                                 "dataset.drop_nonfinite: true)")  # fmt: skip
        if weights is not None and population is not None:
            raise InputError("give weights (one per cell) or population (one size per time), not both: a time's "
                             "mass is its cells' total weight, or its population")  # fmt: skip
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64)
            if weights.shape != time.shape:
                raise InputError(f"weights must be one number per cell ({len(time)}), got shape {weights.shape}")
            bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
            if len(bad):
                raise InputError(f"weights must be finite and >= 0: {len(bad)} are not (the first: "
                                 f"{float(weights[bad[0]])})")  # fmt: skip
        order = np.argsort(time, kind="stable")
        t_values, counts = np.unique(time[order], return_counts=True)
        check_cells_per_time(t_values, counts, "time")
        training = ~np.isin(t_values, attrs.get("holdout_times") or [])  # a held-out time is only scored
        if few := sparse_times(t_values[training], counts[training]):
            warnings.warn(f"time: {few}", stacklevel=2)
        if len(t_values) < 2:  # as amcore prepare: a flow needs two times (train failed deep inside on one)
            raise InputError(f"time: found 1 time point ({t_values[0]:g}); at least two are needed")
        check_time_resolution(t_values, "time")
        offsets = np.concatenate([[0], np.cumsum(counts)])
        if x.dtype.kind in "iuf":  # bool (kind b) goes to 0 and 1 as it is
            fix = "subtract the offset in float64 (x - x.mean(axis=0)) before the cells come here"
            x = to_float32(x, "x", attrs.get("feature_names"), fix)
        x = np.ascontiguousarray(x[order], dtype=np.float32)
        blocks = [x[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]  # 7 times reduceat's speed
        low, high = np.array([b.min(0) for b in blocks]), np.array([b.max(0) for b in blocks])
        timelike = [j for j in np.flatnonzero((low == high).all(0) & (low.min(0) < low.max(0))) if j not in same]
        if (one := (low == high).all(1) & (counts >= ONE_POINT_CELLS)).any():  # audit 69: a placeholder in silence
            warnings.warn(f"time: every cell of t = {', '.join(f'{v:g}' for v in t_values[one][:10])} is one and the "
                          f"same point: {ONE_POINT_TEXT}", stacklevel=2)  # fmt: skip
        if (constant := np.flatnonzero((low == high).all(0) & (low.min(0) == low.max(0)))).size:  # as prepare says
            names = attrs.get("feature_names") or []
            shown = [str(names[j]) if j < len(names) else int(j) for j in constant[:10]]
            warnings.warn(f"x's columns {shown} hold one value in every cell: they say nothing about the motion, and "
                          "eAM's noise, the same in every feature, spreads the cells along them (audit 92: a std of "
                          "0.18 after a push); drop them from x", stacklevel=2)  # fmt: skip
        if timelike:  # audit 69: a batch label or another time among the features, said by prepare for CSV only
            names = attrs.get("feature_names") or []
            shown = [str(names[j]) if j < len(names) else int(j) for j in timelike[:10]]
            warnings.warn(f"x's columns {shown} hold one value within each time: another time or a batch label, not "
                          "a measurement? They separate the times by themselves: drop them from x",
                          stacklevel=2)  # fmt: skip
        if velocity is not None:
            if np.shape(velocity) != x.shape:
                raise InputError(f"velocity must have the shape of x {x.shape}, got {np.shape(velocity)}")
            velocity = np.ascontiguousarray(np.asarray(velocity)[order], dtype=np.float32)
            if not np.isfinite(velocity).all():  # a NaN would reach every path point its chain passes through
                rows = np.flatnonzero(~np.isfinite(velocity).all(axis=1))
                raise InputError(
                    f"velocity has NaN or inf (in float32) in {len(rows)} cells, the first: row "
                    f"{int(order[rows[0]])} (a cell without a measured velocity gets a row of 0)"
                )
        if weights is not None:
            weights = weights[order]
            _check_even_weights(np.split(weights, offsets[1:-1]), t_values)
        if population is not None:
            weights, sizes = population_weights(population, t_values, counts, "population")
            attrs["population"] = {str(float(t)): size for t, size in zip(t_values, sizes, strict=True)}
        return cls(x, t_values, offsets, attrs, weights, order, velocity)

    def __repr__(self) -> str:
        """A line, not the arrays (a notebook echoes it)."""
        t = self.t_values
        when = f"t = {t[0]:g}" if len(t) == 1 else f"t from {t[0]:g} to {t[-1]:g}"
        also = "".join(f", {name}" for name, held in (("weighted", self.weights), ("velocities", self.velocity))
                       if held is not None)  # fmt: skip
        return f"Snapshots({self.x.shape[0]} cells, {self.dim} features, {len(t)} times, {when}{also})"

    @property
    def n_snapshots(self) -> int:
        return len(self.t_values)

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def snapshot(self, k: int) -> np.ndarray:
        return self.x[self.offsets[k] : self.offsets[k + 1]]

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def masses(self) -> np.ndarray:
        """Total mass per snapshot: the counts, or the sum of per-observation weights when given."""
        if self.weights is None:
            return self.counts().astype(np.float64)
        return np.add.reduceat(np.asarray(self.weights, dtype=np.float64), self.offsets[:-1])  # dask: read

    def training_snapshots(self) -> list[int]:
        """Indices of the snapshots training reads: every one but the store's held-out times."""
        return self.kept(self.attrs.get("holdout_times", []))

    def kept(self, times) -> list[int]:
        """Indices of the snapshots whose time is not among ``times`` (the held-out ones)."""
        drop = {float(t) for t in times}
        return [k for k, t in enumerate(self.t_values) if float(t) not in drop]

    def drop_times(self, times) -> Snapshots:
        """These snapshots without the given times (held-out times must never reach training)."""
        keep = self.kept(times)
        return self._take([np.arange(self.offsets[k], self.offsets[k + 1]) for k in keep], self.t_values[keep])

    def _take(self, blocks: list[np.ndarray], t_values: np.ndarray) -> Snapshots:
        """The snapshots made of these rows, one block of rows per time of ``t_values``."""
        rows = np.concatenate(blocks)
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in blocks])])
        weights = None if self.weights is None else self.weights[rows]
        velocity = None if self.velocity is None else self.velocity[rows]
        return Snapshots(self.x[rows], t_values, offsets, dict(self.attrs), weights, velocity=velocity)

    def split_cells(self, fraction: float, seed: int) -> tuple[Snapshots, Snapshots]:
        """A random ``fraction`` of every time's cells apart from the rest: ``(rest, apart)``, both at every time.

        Training holds the part apart out to judge its checkpoints on cells it never fitted (``validation``).
        """
        rng = np.random.default_rng(seed)
        counts = self.counts()
        apart_counts = np.floor(fraction * counts).astype(int)
        if (apart_counts < 2).any() or (counts - apart_counts < 2).any():
            k = int(np.argmin(np.minimum(apart_counts, counts - apart_counts)))
            raise ValueError(
                f"holding {fraction:g} of the {int(counts[k])} cells at time {self.t_values[k]:g} apart leaves "
                f"{int(apart_counts[k])} apart and {int(counts[k] - apart_counts[k])} to train on; each needs 2"
            )
        orders = [start + rng.permutation(n) for start, n in zip(self.offsets[:-1], counts, strict=True)]
        rest = [np.sort(order[n:]) for order, n in zip(orders, apart_counts, strict=True)]
        apart = [np.sort(order[:n]) for order, n in zip(orders, apart_counts, strict=True)]
        return self._take(rest, self.t_values), self._take(apart, self.t_values)

    def in_memory(self) -> Snapshots:
        """These snapshots with ``x``, the weights and velocities loaded (a no-op when they already are)."""
        x, weights, obs_index, velocity = dask.compute(self.x, self.weights, self.obs_index, self.velocity)
        return Snapshots(x, self.t_values, self.offsets, self.attrs, weights, obs_index, velocity)

    def summary(self, *also) -> dict:
        """Cells per time, dimension and per-feature statistics of every stored cell, held-out times included: what
        a user checks first (the preprocessing fitted on the training times alone is in the store's attrs).

        One pass over ``x``, shared with the dask work in ``also`` (writing the store), whose results follow.
        """
        mean, std, low, high, *_ = dask.compute(self.x.mean(axis=0), self.x.std(axis=0), self.x.min(axis=0),
                                                self.x.max(axis=0), *also)  # fmt: skip
        return {
            "n_obs": int(self.x.shape[0]),
            "n_features": int(self.dim),
            "times": [float(t) for t in self.t_values],
            "cells_per_time": [int(c) for c in self.counts()],
            "feature_mean": [float(v) for v in mean],
            "feature_std": [float(v) for v in std],
            "feature_min": [float(v) for v in low],
            "feature_max": [float(v) for v in high],
            "feature_stats_over": "every stored cell, held-out times included (preprocessing is fitted without them)",
        }


def store_identity(attrs: dict) -> str | None:
    """A short fingerprint of what made a store's coordinates: the input file (its sha256) or simulator, the fitted
    preprocessing, the held-out times. A checkpoint keeps its store's, and a model is used only on that store.
    ``None`` for snapshots that ``amcore prepare`` did not make (no provenance): nothing to tell them by."""
    if "provenance" not in attrs:
        return None
    return hashlib.sha256(json.dumps(attrs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def compressors_for(sample: np.ndarray) -> list:
    """Zstd when it saves at least ``ZSTD_MIN_SAVING`` on a sample of the data, no codec otherwise.

    Plain float features (PCA scores, simulations) barely compress (~8 %) while zstd runs at ~300 MB/s per
    core, several times slower than the disk; counts and rounded values compress well and keep it.
    """
    raw = np.ascontiguousarray(sample).tobytes()
    if raw and len(numcodecs.Zstd(level=ZSTD.level).encode(raw)) > (1 - ZSTD_MIN_SAVING) * len(raw):
        return []
    return [ZSTD]


def write_store(path: str | Path, snaps: Snapshots, chunk_bytes: int = CHUNK_BYTES) -> dict:
    """Write ``snaps`` as a zarr v3 store at ``path``, atomically; returns ``snaps.summary()`` from the same pass."""
    path = Path(path)
    rows_per_chunk = max(1, chunk_bytes // (4 * max(1, snaps.dim)))
    x = snaps.x.rechunk((rows_per_chunk, -1)) if isinstance(snaps.x, da.Array) else snaps.x  # dask chunks = zarr's
    ds = xr.Dataset(
        {
            "x": (("obs", "feature"), x),
            "time": (("obs",), np.repeat(snaps.t_values, snaps.counts()).astype(np.float64)),
            "t_values": (("snapshot",), snaps.t_values.astype(np.float64)),
            "offsets": (("boundary",), snaps.offsets.astype(np.int64)),
        },
        attrs={key: json.dumps(value) for key, value in snaps.attrs.items()},
    )
    if snaps.weights is not None:
        ds["mass"] = ("obs",), snaps.weights.astype(np.float64)
    if snaps.obs_index is not None:
        ds["obs_index"] = ("obs",), snaps.obs_index.astype(np.int64)
    sample = np.asarray(x[: min(rows_per_chunk, SAMPLE_BYTES // (4 * max(1, snaps.dim)) + 1)])
    encoding = {
        "x": {"chunks": (min(rows_per_chunk, len(snaps.x)) or 1, snaps.dim), "compressors": compressors_for(sample)},
        "time": {"chunks": (min(rows_per_chunk, len(snaps.x)) or 1,), "compressors": [ZSTD]},
    }
    if "obs_index" in ds:
        encoding["obs_index"] = encoding["time"]
    if snaps.velocity is not None:
        v = snaps.velocity
        v = v.rechunk(x.chunks) if isinstance(v, da.Array) and isinstance(x, da.Array) else np.asarray(v)
        ds["velocity"] = ("obs", "feature"), v
        encoding["velocity"] = {"chunks": encoding["x"]["chunks"], "compressors": encoding["x"]["compressors"]}
    snaps = Snapshots(x, snaps.t_values, snaps.offsets, snaps.attrs, snaps.weights)
    return write_dataset_atomic(ds, path, encoding, snaps.summary)


def write_dataset_atomic(ds: xr.Dataset, path: str | Path, encoding: dict, alongside=None):
    """Write ``ds`` as zarr v3 to a temporary sibling, then rename it to ``path``.

    ``alongside(write)``, when given, runs the dask work ``write`` together with its own (one pass over the
    shared inputs) and its result is returned.
    """
    with replacing(path) as tmp:
        write = ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=encoding, compute=False)
        result = alongside(write) if alongside else dask.compute(write)
    return result if alongside else None


def open_zarr(path: str | Path) -> xr.Dataset:
    """Open a zarr group lazily; Snakemake's timestamp file inside directory outputs is not a zarr node."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")
        return xr.open_zarr(path, consolidated=False)


def open_store(path: str | Path) -> Snapshots:
    """Open a store lazily: ``x`` (and ``mass``) stay dask arrays chunked as on disk, so nothing big is read yet."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(f"{path}: not a snapshot store (no zarr.json); run the prepare stage first")
    ds = open_zarr(path)
    missing = {"x", "t_values", "offsets"} - set(ds.variables)
    if missing:
        pushed = "t_values" not in ds and ("step" in ds.dims or "holdout_x" in ds)
        kind = ": a trajectories store or a held-out prediction, amcore.read_trajectories reads it" if pushed else ""
        raise InputError(f"{path}: not a snapshot store (it lacks {sorted(missing)}){kind}")
    attrs = {key: json.loads(value) for key, value in ds.attrs.items()}
    weights = ds["mass"].data if "mass" in ds else None
    obs_index = ds["obs_index"].data if "obs_index" in ds else None
    x = ds["x"].data.astype(np.float32)
    velocity = ds["velocity"].data.astype(np.float32) if "velocity" in ds else None
    return Snapshots(x, ds["t_values"].values, ds["offsets"].values, attrs, weights, obs_index, velocity)


def read_store(path: str | Path) -> Snapshots:
    """Load a whole store into memory (the fast path for data that fits)."""
    return open_store(path).in_memory()
