"""Leave one time out: predict a snapshot the model never saw, and the simple answers to beat.

The held-out time ``t_k`` must be interior: every method starts from **all** cells of the previous observed
time ``t_{k-1}`` and the displacement baseline also needs the next one, ``t_{k+1}``. Its cells stay in the
store (transformed with parameters fitted without them) only to score the prediction.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from amcore.choices import BASELINES
from amcore.data.store import ZSTD, Snapshots, open_zarr, write_dataset_atomic
from amcore.errors import InputError
from amcore.paths.interpolants import (
    chain_points,
    ot_pairs,
    path_velocities,
    resolve_shape,
    spline_at,
    time_subsets,
)


def bracket(snaps: Snapshots, holdout: float) -> tuple[int, int, int]:
    """Indices ``(k - 1, k, k + 1)`` of the held-out time and its observed neighbours in the store. A store that
    holds out other times too is refused: a neighbour could be one of them, and its cells would reach the
    prediction (the pipeline prepares one store per held-out time)."""
    times = [float(t) for t in snaps.t_values]
    others = [float(t) for t in snaps.attrs.get("holdout_times", []) if float(t) != holdout]
    if others:
        raise InputError(f"the store holds out t = {others} besides {holdout:g}: their cells would reach this "
                         "prediction; prepare one store per held-out time (as the pipeline does)")  # fmt: skip
    if holdout not in times:
        raise InputError(f"held-out time {holdout:g} is not an observed time; the store has {times}")
    k = times.index(holdout)
    if k == 0 or k == len(times) - 1:
        raise InputError(
            f"held-out time {holdout:g} must be interior (a previous time to start from and a next one for the "
            f"displacement baseline); the observed times are {times}"
        )
    return k - 1, k, k + 1


def copy_prev(snaps: Snapshots, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """The cells of the previous time, unchanged: the prediction of a population that does not move."""
    prev, _, _ = bracket(snaps, holdout)
    x = np.asarray(snaps.snapshot(prev), dtype=np.float64)
    return x, np.full(len(x), 1.0 / len(x))


OT_MAX_SIZE = 5000  # cells per time at most in the baselines' exact OT plans (config: baseline_ot_max_size)


def _bracketing_plan(snaps: Snapshots, holdout: float, max_size: int):
    """``(a, b, rows, cols, weights, tau)``: the cells of the bracketing times (seeded uniform subsamples above
    ``max_size``), the support of their exact OT plan and the held-out time's fraction of the gap."""
    prev, _, nxt = bracket(snaps, holdout)
    a, b = (np.asarray(snaps.snapshot(i), dtype=np.float64) for i in (prev, nxt))
    rng = np.random.default_rng(0)
    a, b = (x if len(x) <= max_size else x[np.sort(rng.choice(len(x), max_size, replace=False))] for x in (a, b))
    rows, cols, weights = ot_pairs(a, b, max_size, rng)
    t_prev, t_next = float(snaps.t_values[prev]), float(snaps.t_values[nxt])
    return a, b, rows, cols, weights, (holdout - t_prev) / (t_next - t_prev)


def ot_displacement(snaps: Snapshots, holdout: float, max_size: int = OT_MAX_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """McCann's displacement interpolation between the bracketing snapshots at the held-out time.

    The exact OT plan (squared Euclidean cost) between the cells of ``t_{k-1}`` and ``t_{k+1}``, and one weighted
    point ``(1 - tau) x_i + tau y_j`` per pair in its support (no resampling). Above ``max_size`` cells a side the
    plan is solved on a seeded uniform subsample of that size (the exact solver's cost grows as n^3), as the
    training path's couplings are; the log of the evaluate stage says so.
    """
    a, b, rows, cols, weights, tau = _bracketing_plan(snaps, holdout, max_size)
    return (1 - tau) * a[rows] + tau * b[cols], weights


def ot_push(snaps: Snapshots, holdout: float, max_size: int = OT_MAX_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The same plan as :func:`ot_displacement`, read as a push of the previous time's cells, as the models are scored:
    each cell moved a fraction ``tau`` of the way to the barycentre of its partners (the plan's barycentric map).

    Displacement interpolation puts one weighted point on every pair of the plan's support, so with unequal counts
    it splits a cell's mass across places and carries more points than any push of the previous time's cells can;
    this baseline has one point per cell. Above ``max_size`` cells a side the plan is solved on the same seeded
    subsamples as :func:`ot_displacement`'s, and the previous time's kept cells are the ones pushed. Every row of
    the plan carries its cell's mass (1/n > 0), so the barycentre is always defined.
    """
    a, b, rows, cols, weights, tau = _bracketing_plan(snaps, holdout, max_size)
    barycentre = np.zeros_like(a)
    np.add.at(barycentre, rows, weights[:, None] * b[cols])
    barycentre /= np.bincount(rows, weights, len(a))[:, None]
    return (1 - tau) * a + tau * barycentre, np.full(len(a), 1.0 / len(a))


def spline_path(
    snaps: Snapshots,
    holdout: float,
    tension: float | str = "auto",
    max_size: int = OT_MAX_SIZE,
    velocity_weight: float | str = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The path AM trains on with ``interpolation: spline``, read at the held-out time: splines through OT chains of
    every *training* time (the held-out one dropped), the tension ``auto`` chosen on those times alone (and the bend
    along measured velocities, ``velocity_weight``, likewise). What AM adds beyond its interpolant is its score
    minus this one's; the chains are seeded like the training path's (``ot_max_size`` cells per time at most)."""
    bracket(snaps, holdout)
    training = snaps.drop_times([holdout])
    rng = np.random.default_rng(0)
    subsets = time_subsets(training.counts(), max_size, rng)
    clouds = [np.asarray(training.snapshot(k), dtype=np.float64)[idx] for k, idx in enumerate(subsets)]
    velocities = None
    if velocity_weight != 0 and training.velocity is not None:
        v = np.asarray(training.velocity, dtype=np.float64)
        velocities = [v[training.offsets[k] : training.offsets[k + 1]][idx] for k, idx in enumerate(subsets)]
    knots = np.asarray(training.t_values, dtype=np.float64)
    tension, weight = resolve_shape(tension, velocity_weight, clouds, knots, rng, velocities)
    points, moving = chain_points(clouds, rng, velocities)
    if weight:
        moving = path_velocities(points, moving, knots)
    predicted = spline_at(points, knots, holdout, tension, moving, weight)
    return predicted, np.full(len(predicted), 1.0 / len(predicted))


def baseline(name: str, snaps: Snapshots, holdout: float, max_size: int = OT_MAX_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The baseline ``name``'s prediction at ``holdout``; OT plans on at most ``max_size`` cells per time."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINES}")
    if name == "copy_prev":
        return copy_prev(snaps, holdout)
    if name == "ot_displacement":
        return ot_displacement(snaps, holdout, max_size)
    if name == "ot_push":
        return ot_push(snaps, holdout, max_size)
    if name == "spline_path":
        return spline_path(snaps, holdout, max_size=max_size)
    if snaps.velocity is None:
        raise InputError("the velocity_path baseline turns the spline path towards the cells' measured velocities, "
                         "and this store has none: name them with dataset.v_key, or leave velocity_path out of the "
                         "baselines")  # fmt: skip
    return spline_path(snaps, holdout, max_size=max_size, velocity_weight="auto")


def prediction_variables(
    x: np.ndarray, weight: np.ndarray, holdout: float, start: float, growth: float | None = None, pushed: bool = False,
    chosen: dict | None = None,
) -> xr.Dataset:  # fmt: skip
    """The prediction at a held-out time as ``holdout_x(holdout_particle, feature)`` and its weights (summing to 1);
    ``growth``: the mass it predicts there over the mass it started from (uAM's), which the weights no longer say;
    ``pushed``: particle ``i`` is the ``i``-th cell of the start time, moved (a model's; a baseline's points are not);
    ``chosen``: the settings ``head: auto`` or ``growth: auto`` chose for the model on its training times.

    Models carry it inside their trajectories store, baselines in a store of their own; both read alike.
    """
    attrs = {"holdout": json.dumps(float(holdout)), "holdout_start": json.dumps(float(start))}
    return xr.Dataset(
        {
            "holdout_x": (("holdout_particle", "feature"), x.astype(np.float32)),
            "holdout_weight": (("holdout_particle",), (weight / weight.sum()).astype(np.float64)),
        },
        attrs=attrs
        | ({} if growth is None else {"holdout_growth": json.dumps(float(growth))})
        | ({"holdout_pushed": "true"} if pushed else {})
        | ({"holdout_chosen": json.dumps(chosen)} if chosen else {}),
    )


def external(snaps: Snapshots, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Another method's prediction of the held-out time, from an npz of ``X`` (cells by the input's features, in its
    units and column order, as ``dataset`` read them) and optionally ``weights`` (one per cell; default equal),
    brought into the store's coordinates by its preprocessing (fitted on the training times): scored and tabled as
    a baseline is. NaN or inf cells are kept for score to mark the prediction FAILED."""
    from amcore.data.preprocess import Preprocessing

    try:
        data = np.load(path)
    except (OSError, ValueError) as err:  # missing, or not numpy's
        raise InputError(f"{path}: cannot read it as an npz of arrays X (and weights): {err}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):  # a bare .npy: one array, no names
        raise InputError(f"{path}: an npz of named arrays X (and weights) is needed, not one array (np.savez(path, "
                         "X=cells))")  # fmt: skip
    with data:
        if "X" not in data:
            raise InputError(f"{path}: no array 'X' (the predicted cells, one row each); it holds {list(data)}")
        try:  # members are read here: an object array (pickled) fails now, not at load (review 73)
            x = data["X"]
            weight = data["weights"] if "weights" in data else np.ones(len(x))
        except ValueError as err:
            raise InputError(f"{path}: cannot read it as an npz of arrays X (and weights): {err}") from None
    if x.dtype.kind not in "biuf" or weight.dtype.kind not in "biuf":
        raise InputError(f"{path}: X and weights must hold real numbers, got {x.dtype} and {weight.dtype}")
    x, weight = x.astype(np.float64), weight.astype(np.float64)
    fitted = Preprocessing.from_json(snaps.attrs.get("preprocess") or {})
    if fitted is not None and fitted.n_input is None:
        raise InputError("the store's preprocessing records no width of its input (written by an older amcore): "
                         "rerun prepare to score another method's cells against it")  # fmt: skip
    width = snaps.dim if fitted is None else fitted.n_input
    if x.ndim != 2 or x.shape[1] != width or not len(x):
        raise InputError(f"{path}: key 'X' must be (cells, {width}), the input's features as the dataset holds them "
                         f"(before preprocessing), got shape {x.shape}")  # fmt: skip
    if weight.shape != (len(x),) or not np.isfinite(weight).all() or (weight < 0).any() or not weight.sum() > 0:
        raise InputError(f"{path}: key 'weights' must be {len(x)} finite numbers >= 0, not all 0, got shape "
                         f"{weight.shape}")  # fmt: skip
    x = x if fitted is None else np.asarray(fitted.transform(x), dtype=np.float64)
    return x, weight


def write_prediction(path, x: np.ndarray, weight: np.ndarray, holdout: float, start: float) -> None:
    write_dataset_atomic(prediction_variables(x, weight, holdout, start), path, {"holdout_x": {"compressors": [ZSTD]}})


def prediction_facts(path) -> tuple[float | None, bool, dict]:
    """What a prediction at ``path`` says beside its cells: the mass it gives its held-out time over its start's
    (``None``: nothing of mass, a balanced model's or a baseline's), whether its particles are the start time's
    cells, in order, moved, and what its model's ``auto`` settings chose (empty: none)."""
    with open_zarr(path) as ds:
        growth, pushed = ds.attrs.get("holdout_growth"), ds.attrs.get("holdout_pushed") == "true"
        chosen = json.loads(ds.attrs.get("holdout_chosen", "{}"))
    return (None if growth is None else float(json.loads(growth))), pushed, chosen


def read_prediction(path) -> tuple[np.ndarray, np.ndarray, float]:
    """``(x, weight, held-out time)`` from a baseline's prediction or a model's trajectories store."""
    with open_zarr(path) as ds:
        if "holdout_x" not in ds:
            raise KeyError(f"{path}: no prediction at a held-out time (holdout_x); was a time held out?")
        return ds["holdout_x"].values.astype(np.float64), ds["holdout_weight"].values, json.loads(ds.attrs["holdout"])
