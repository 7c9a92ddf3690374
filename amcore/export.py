"""AnnData out: a split's cells with what each model learned at them, and the held-out predictions, for scanpy.

``cells`` reads a snapshot store into an AnnData, its cells in the input's order (rows prepare dropped left out;
audit 18: in the store's order, by time and shuffled within, a copy of a column onto the input misaligned every
row in silence): ``X`` the store's features (its
feature names as ``var_names``, or the model's ``x0, x1, ...`` when the input named none), ``obs["time"]``,
``obs["held_out"]`` and ``obs["input_row"]`` (the row prepare read the cell from). When the input was AnnData
(an ``.h5ad`` file, or a directory of them), its ``obs`` is read again, only ``obs``, after checking the file's
SHA-256 against the store's provenance, and each cell gets its ``obs_name`` and ``obs`` columns back. For each
model (one checkpoint per name): ``obsm["velocity_<model>"]`` the velocity (eAM: the drift) at the cell at its
own time, ``obs["potential_<model>"]`` (AM, eAM, uAM) and ``obs["growth_rate_<model>"]`` (uAM).

``predictions`` puts every prediction of a held-out time (models, seeds, baselines) in one AnnData, one row per
predicted cell with ``obs["method"]``, ``obs["seed"]``, ``obs["from_input_row"]`` (a model's predicted cell: the
input row of the cell it was pushed from; -1 elsewhere), ``obs["weight"]`` (summing to 1 per prediction; uAM's
growth from the previous time in ``uns["amcore"]["predicted_growth"]``), ``obs["time"]``, and the observed
held-out cells beside them as method ``observed``.

Both carry their provenance in ``uns["amcore"]``: the data's provenance and SHA-256, each model's training
config (JSON text: lossless, ``None`` included), checkpoint and step, and the MLflow run ids when tracked; and,
where preprocessing was fitted, ``to_input``: the affine map back to the input's kept features (genes).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from amcore.atomic import replacing
from amcore.errors import InputError


def _text(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("amcore")
    except PackageNotFoundError:
        return "unknown"


def read_input_obs(provenance: dict) -> pd.DataFrame | None:
    """The input's ``obs`` (index: ``obs_names``), one row per input row, when the input was AnnData; else None.

    Only ``obs`` is read. The input must be the very file prepare read: its SHA-256 is checked first.
    """
    import h5py
    from anndata.io import read_elem

    from amcore.data.readers import content_sha256

    source, reader = provenance.get("source"), provenance.get("reader", {})
    if (reader.get("format") if source == "directory" else source) != "h5ad":
        return None
    path = Path(provenance["path"])
    if not path.exists():
        raise InputError(f"{path}: the input prepare read is gone; its obs_names and obs cannot be exported")
    digest = content_sha256(path)
    if digest != provenance.get("sha256"):
        raise InputError(
            f"{path}: changed since prepare read it (SHA-256 {digest[:16]}... is not {provenance.get('sha256')!s:.16}"
            "...): its obs would not match the store's cells; run prepare again"
        )
    files = [path / name for name in reader["files"]] if source == "directory" else [path]
    frames = []
    for file in files:
        with h5py.File(file, "r") as handle:
            frames.append(read_elem(handle["obs"]))
    obs = pd.concat(frames) if len(frames) > 1 else frames[0]
    obs.index = obs.index.astype(str)
    return obs


def _aligned_obs(snaps, time_of_cell: np.ndarray) -> pd.DataFrame | None:
    """The input's ``obs`` rows of the store's cells, in the store's order, checked against their times."""
    from amcore.data.readers import to_times

    provenance = snaps.attrs.get("provenance", {})
    obs = read_input_obs(provenance)
    if obs is None:
        return None
    where = provenance["path"]
    if snaps.obs_index is None:
        raise InputError(
            f"the store of {where} has no obs_index (it was written before amcore recorded each cell's input row): "
            "run prepare again to export the input's obs_names and obs"
        )
    rows = np.asarray(snaps.obs_index)
    if len(rows) and rows.max() >= len(obs):
        raise InputError(f"{where}: {len(obs)} rows in obs, but the store has cells from row {rows.max()}")
    picked = obs.iloc[rows]
    reader = provenance.get("reader", {})
    t_key = reader.get("t_key")
    if t_key is not None and t_key in picked.columns:  # the cells and the rows must tell the same times
        times = to_times(picked[t_key].to_numpy(), reader.get("time_map") or {}, f"{where}: obs column {t_key!r}")
        if not np.array_equal(times, time_of_cell):
            raise InputError(f"{where}: obs column {t_key!r} does not give the store's times: the store and the "
                             "input disagree; run prepare again")  # fmt: skip
    return picked


def _var_names(snaps, models: list) -> list[str]:
    names = snaps.attrs.get("feature_names")
    if names and len(names) == snaps.dim:
        return [str(name) for name in names]
    if models:
        return list(models[0].feature_names)
    return [f"x{i}" for i in range(snaps.dim)]


def _fields(model, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """Velocity (or drift), potential and growth rate of ``model`` at each cell at its own time."""
    found = model.fields(x, t, with_potential=True)
    out = {"velocity": found.get("velocity", found.get("drift"))}
    out |= {
        name: np.ravel(found[key])
        for key, name in (("potential", "potential"), ("growth", "growth_rate"))
        if key in found
    }
    return out


def to_input_map(snaps) -> dict | None:
    """The affine map from the store's features back to the input features preprocessing kept, ``None`` where
    nothing was fitted: ``offset + z @ basis`` for cells, ``v @ basis`` for velocities (what
    ``TrainedModel.to_input`` computes), so an exported file goes back to genes without amcore."""
    from amcore.data.preprocess import Preprocessing

    fitted = Preprocessing.from_json(snaps.attrs.get("preprocess", {}))
    if fitted is None:
        return None
    return {
        "features": np.asarray(fitted.selected_names(), dtype=str),
        "offset": fitted.inverse(np.zeros((1, snaps.dim)))[0],
        "basis": fitted.inverse(np.eye(snaps.dim), velocity=True),
    }


def _provenance(snaps, store: str | Path) -> dict:
    provenance = snaps.attrs.get("provenance", {})
    back = to_input_map(snaps)
    return (
        {
            "store": str(store),
            "data_sha256": str(provenance.get("sha256", "")),
            "data": _text(provenance),
            # a simulation's parameters (audit 45: a received export named the simulator, not its dim or times)
            **({"ground_truth": _text(snaps.attrs["ground_truth"])} if "ground_truth" in snaps.attrs else {}),
            "preprocess": _text(snaps.attrs.get("preprocess", {}).get("config", {})),
            "holdout_times": np.asarray(snaps.attrs.get("holdout_times", []), dtype=np.float64),
            "amcore_version": _version(),
        }
        | ({} if back is None else {"to_input": back})
        | (
            {"population": {str(t): float(m) for t, m in snaps.attrs["population"].items()}}
            if "population" in snaps.attrs
            else {}
        )
    )


def cells(store: str | Path, checkpoints: list[dict]):
    """The store's cells as AnnData, with each model's fields at them; ``checkpoints``: ``[{"model", "seed",
    "path"}]``, one per model name."""
    import anndata

    from amcore.data.store import read_store
    from amcore.models.trained import load

    snaps = read_store(store)
    names = [entry["model"] for entry in checkpoints]
    if len(set(names)) != len(names):
        raise ValueError(f"one checkpoint per model name, got {names}")
    models = [load(entry["path"]) for entry in checkpoints]
    for entry, model in zip(checkpoints, models, strict=True):
        if model.dim != snaps.dim:
            raise ValueError(f"{entry['path']}: a model of {model.dim} features, but {store} has {snaps.dim}")
        model.check_store(snaps, store)
    x = np.ascontiguousarray(snaps.x, dtype=np.float32)
    t = np.repeat(snaps.t_values.astype(np.float64), snaps.counts())

    obs = _aligned_obs(snaps, t)
    ours = pd.DataFrame(index=pd.RangeIndex(len(x)))
    ours["time"] = t
    ours["held_out"] = np.isin(t, np.asarray(snaps.attrs.get("holdout_times", []), dtype=np.float64))
    if snaps.obs_index is not None:
        ours["input_row"] = np.asarray(snaps.obs_index, dtype=np.int64)
    obsm, uns_models = {}, {}
    for entry, model in zip(checkpoints, models, strict=True):
        name = entry["model"]
        fields = _fields(model, x, t)
        obsm[f"velocity_{name}"] = fields["velocity"]
        for key in ("potential", "growth_rate"):
            if key in fields:
                ours[f"{key}_{name}"] = fields[key]
        uns_models[name] = {
            "objective": model.objective,
            "field": "drift" if model.objective == "eam" else "velocity",
            "seed": str(entry.get("seed", "")),
            "checkpoint": str(Path(entry["path"]).resolve()),  # amcore.load finds it from any working directory
            "step": int(model.info.get("step") or 0),
            "t_range": np.asarray(model.t_range, dtype=np.float64),
            "config": _text(model.config),
        }
    if obs is None:
        index = ours["input_row"].astype(str) if "input_row" in ours else pd.Index(map(str, range(len(x))))
        ours.index = pd.Index(np.asarray(index), dtype=str)
    else:  # the input's columns first, as they were; one that clashes with ours is renamed <name>_input
        obs = obs.rename(columns={c: f"{c}_input" for c in obs.columns if c in ours.columns})
        ours.index = obs.index
        ours = pd.concat([obs, ours], axis=1)
    adata = anndata.AnnData(X=x, obs=ours, var=pd.DataFrame(index=pd.Index(_var_names(snaps, models), dtype=str)))
    for key, value in obsm.items():
        adata.obsm[key] = value
    adata.uns["amcore"] = {**_provenance(snaps, store), "models": uns_models}
    if "input_row" in ours:  # the input's order (the store's is by time, shuffled within): aligned row for row
        adata = adata[np.argsort(ours["input_row"].to_numpy(), kind="stable")].copy()
    return adata


def predictions(store: str | Path, entries: list[dict], var_names: list[str] | None = None):
    """Every prediction at the held-out time(s) of ``entries`` (``[{"method", "seed", "path"}]``: a model's
    trajectories store or a baseline's prediction) and the observed held-out cells, as one AnnData."""
    import anndata

    from amcore.data.store import read_store
    from amcore.evaluation import holdout

    snaps = read_store(store)
    blocks, frames, held, growth = [], [], [], {}
    for entry in entries:
        x, weight, t = holdout.read_prediction(entry["path"])
        seed = str(entry.get("seed", ""))
        label = f"{entry['method']}/seed-{seed}" if seed else entry["method"]
        predicted, pushed, _ = holdout.prediction_facts(entry["path"])
        if predicted is not None:  # by method, then seed: an h5ad key holds no "/"
            growth.setdefault(entry["method"], {})[seed or "-"] = predicted
        blocks.append(x.astype(np.float32))
        frame = pd.DataFrame(
            {"method": entry["method"], "seed": seed, "time": float(t), "weight": weight},
            index=[f"{label}/{i}" for i in range(len(x))],
        )
        start, _, _ = holdout.bracket(snaps, t)
        if pushed and snaps.obs_index is not None and len(x) == snaps.counts()[start]:  # cell i of the start time
            frame["from_input_row"] = np.asarray(snaps.obs_index[snaps.offsets[start] : snaps.offsets[start + 1]])
        frames.append(frame)
        if t not in held:
            held.append(t)
    for t in held:
        _, k, _ = holdout.bracket(snaps, t)
        x = np.asarray(snaps.snapshot(k), dtype=np.float32)
        frame = pd.DataFrame(
            {"method": "observed", "seed": "", "time": float(t), "weight": np.full(len(x), 1.0 / max(1, len(x)))},
            index=[f"observed/{t:g}/{i}" for i in range(len(x))],
        )
        if snaps.obs_index is not None:
            frame["input_row"] = np.asarray(snaps.obs_index[snaps.offsets[k] : snaps.offsets[k + 1]], dtype=np.int64)
        blocks.append(x)
        frames.append(frame)
    if not blocks:
        raise ValueError("no predictions to export")
    obs = pd.concat(frames)
    for column in ("input_row", "from_input_row"):  # -1: none (a predicted cell has no row; observed ones no start)
        if column in obs:
            obs[column] = obs[column].fillna(-1).astype(np.int64)
    obs["method"] = pd.Categorical(obs["method"], categories=list(dict.fromkeys(obs["method"])))
    names = var_names or _var_names(snaps, [])
    adata = anndata.AnnData(X=np.concatenate(blocks), obs=obs, var=pd.DataFrame(index=pd.Index(names, dtype=str)))
    adata.uns["amcore"] = {
        **_provenance(snaps, store),
        "predictions": _text([{k: str(v) for k, v in entry.items()} for entry in entries]),
    } | ({"predicted_growth": growth} if growth else {})
    return adata


def mlflow_ids(run, wait_s: float = 20.0) -> dict[str, str]:
    """The MLflow parent run of the pipeline and this stage's run, when tracked (the stage's run opens in the
    background: it is waited for up to ``wait_s``)."""
    from amcore import tracking

    ids = {}
    if os.environ.get(tracking.ENV_PARENT):
        ids["parent_run_id"] = os.environ[tracking.ENV_PARENT]
    if run is not None and run.state is not None:
        run.flush()
        deadline = time.monotonic() + wait_s
        while run.run_id is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if run.run_id:
            ids["run_id"] = run.run_id
    return ids


def write(adata, path: str | Path) -> None:
    """Write ``adata`` as ``.h5ad`` atomically (a temporary sibling, renamed when complete)."""
    with replacing(path) as tmp:
        adata.write_h5ad(tmp)
