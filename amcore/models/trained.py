"""A trained model as a Python object: what every stage after training, and every user, works with.

``amcore.load(path)`` reads a checkpoint (or an MLflow model) into a ``TrainedModel`` that knows its objective,
time range, features and settings, and answers in numpy: ``velocity`` (AM, uAM, FM), ``drift`` (eAM),
``potential`` (the AM variants), ``growth_rate`` (uAM), ``push`` and ``trajectories`` (with the integrator that
fits the objective). Nothing else reads a checkpoint's dictionary.
"""

from __future__ import annotations

import functools
import math
import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from amcore.atomic import damaged_member
from amcore.choices import integrator
from amcore.data.labels import by_row_labels
from amcore.data.times import uneven_times
from amcore.errors import InputError
from amcore.metrics import FEW_EFFECTIVE, effective_size
from amcore.models import integrate
from amcore.models.objective import ObjectiveSpec
from amcore.models.potentials import Potential, VectorField, velocity_fn

BATCH_ROWS = 2**16  # cells per forward (and backward) pass of a field evaluation
FAR_CELLS = 5.0  # cells this many times farther out than the training cells (median) are warned of
FAR_SAMPLE = 10_000  # the cells whose median distance is read: the check's memory stays small whatever x's size
# A few cells this much farther out than the training cells' root mean square, above this share of them, are warned
# of too: by Chebyshev's inequality no cells, the training ones among them, have more than 1 / 10^2 of their number
# beyond 10 times their own root mean square, so the training cells never draw it (at 5 times, up to 4 % could: a
# rare cell type far off in a PCA)
FAR_FEW, FAR_SHARE = 10.0, 0.01


def build_network(model_args: dict) -> nn.Module:
    """The network a checkpoint's ``model_args`` describe: a potential, or a vector field for FM."""
    args = dict(model_args)
    args["t_range"] = tuple(args["t_range"])
    if args.pop("kind") == "field":
        return VectorField(**args)
    return Potential(**args)


@dataclass
class Trajectories:
    """Particles pushed along ``time``: ``x(step, particle, feature)``, ``weight(step, particle)`` for uAM."""

    x: np.ndarray
    time: np.ndarray
    weight: np.ndarray | None
    method: str
    info: dict


def _forward_only(method: str, times: np.ndarray, shown: list[float]) -> None:
    """Refuse a backward step to the integrators that cannot take one (``shown``: the times as the caller gave them)."""
    backward = np.diff(times) < 0 if method == "sde" else np.diff(times) <= 0  # an SDE may stay put (h = 0)
    if method in ("sde", "dopri5") and backward.any():
        why = ("an SDE runs forward only (its reverse needs the score of the marginals, which eAM does not learn)"
               if method == "sde" else "dopri5 steps forward only; rk4 and euler push backward too")  # fmt: skip
        raise ValueError(f"method {method!r} needs increasing times, got {shown}: {why}")


def _one_number(name: str, value) -> None:
    """Refuse text, arrays, truth values and complex numbers where one time belongs (NaN and the range are
    ``_check_times``'s; audit 85: True ran from t = 1, a 0-d array of text met numpy's own error)."""
    if isinstance(value, (str, bytes)) or not np.isscalar(value) and np.ndim(value) != 0:
        raise ValueError(f"{name} must be one number, got {value!r}")
    kind = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value).dtype.kind
    if kind not in "iuf":
        raise ValueError(f"{name} must be one real number, got {value!r}")


class TrainedModel:
    """A trained AM / eAM / uAM potential or Flow Matching field (its EMA weights), ready to use.

    ``x`` is ``(cells, features)`` (numpy or torch), ``t`` a number or one time per cell; results are numpy.
    """

    def __init__(
        self,
        network: nn.Module,
        objective: str,
        config: dict,
        model_args: dict,
        feature_names: list[str] | None = None,
        info: dict | None = None,
        growth_unit: float = 1.0,
        growth_range: tuple[float, float] | None = None,
        growth_ranges: dict | None = None,
    ) -> None:
        self.network = network.eval().requires_grad_(False)
        self.objective = objective
        self.config = dict(config)
        # uAM's growth rate per unit of s: growth / x_scale^2 in the network's standard units (its s / x_scale^2
        # is a rate, 1/t), growth itself for checkpoints from before them (``growth_unit`` absent: 1).
        self.growth = float(self.config.get("growth", 1.0)) / float(growth_unit)
        # The growth rates uAM's training path took (``Run.growth_range``): weighted pushes stay within them.
        self.growth_range = None if growth_range is None else (float(growth_range[0]), float(growth_range[1]))
        # The same within each interval between observed times (checkpoints from before them: the whole range).
        self.growth_ranges = None if growth_ranges is None else {
            "knots": torch.as_tensor(growth_ranges["knots"], dtype=torch.float32),
            "ranges": torch.as_tensor(growth_ranges["ranges"], dtype=torch.float32)}  # fmt: skip
        # Where the training path's cells lie in each interval (``Run.growth_support``; absent before them): beyond
        # them a particle's growth is held to the population's.
        support = (growth_ranges or {}).get("support")
        self.growth_support = None if support is None else {
            "cells": torch.as_tensor(support["cells"], dtype=torch.float32),
            "radius": torch.as_tensor(support["radius"], dtype=torch.float32),
            "rate": torch.as_tensor(support["rate"], dtype=torch.float32)}  # fmt: skip
        self.model_args = dict(model_args)
        self.t_range = (float(model_args["t_range"][0]), float(model_args["t_range"][1]))
        self.dim = int(model_args["dim"])
        self.feature_names = list(feature_names) if feature_names else [f"x{i}" for i in range(self.dim)]
        self.info = dict(info or {})

    @classmethod
    @torch.inference_mode(False)  # weights loaded inside it could never take part in a velocity's backward pass
    def from_checkpoint(cls, path: str | Path) -> TrainedModel:
        """The finished training at ``path`` (``weights_only`` loading: a checkpoint runs no code)."""
        partial = Path(f"{path}.partial")
        if not Path(path).exists() and partial.is_file():  # audit 85: torch's bare FileNotFoundError
            raise FileNotFoundError(f"{path}: no such checkpoint, but {partial} holds the state of a training that did "
                                    "not finish: rerun the training to finish it (it resumes there), or load that "
                                    "file (a warning says what it is)")  # fmt: skip
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as err:  # torch says OSError, RuntimeError or UnpicklingError, naming no file
            zipped = False  # torch.save writes a zip archive (it starts PK); a folder or a CSV is no checkpoint
            if Path(path).is_file():
                with open(path, "rb") as handle:
                    zipped = handle.read(2) == b"PK"
            why = "truncated or damaged?" if zipped else "not a file torch.save wrote: amcore train's model.pt is one"
            said = str(err).strip()  # an empty file says nothing, a CSV only the byte unpickling stopped at
            said = f": {said}" if zipped and said else ""
            raise InputError(f"{path}: not a readable amcore checkpoint ({why}){said}") from err
        if damaged := damaged_member(path):
            raise InputError(f"{path}: a damaged checkpoint ({damaged} fails its checksum): its weights would be "
                             "wrong numbers; copy or train it again")  # fmt: skip
        keys = ("model_args", "ema", "objective", "config")
        missing = [key for key in keys if key not in payload] if isinstance(payload, dict) else list(keys)
        if missing:
            raise InputError(f"{path}: not an amcore checkpoint (it lacks {', '.join(missing)})")
        step, steps = payload.get("step"), payload["config"].get("steps")
        if Path(path).suffix == ".partial" or None not in (step, steps) and step < steps:  # renamed (audit 85)
            warnings.warn(f"{path} is the partial state of a training that did not finish (step {payload.get('step')} "
                          f"of {payload['config'].get('steps')}): its weights are not a trained model's",
                          stacklevel=_outside_this_module())  # fmt: skip
        network = build_network(payload["model_args"])
        network.load_state_dict(payload["ema"])
        info = {"step": payload["step"], "data": payload["data"], "history": payload["history"], "path": str(path),
                "trained_times": payload.get("times"), "store": payload.get("store"),
                "preprocess": payload.get("preprocess"), "interpolant": payload.get("interpolant"),
                "head_choice": payload.get("head_choice"), "stride_choice": payload.get("stride_choice"),
                "growth_choice": payload.get("growth_choice"), "feature_names": payload.get("feature_names"),
                "code": payload.get("code"), "input_key": payload.get("input_key"),
                "data_sha256": payload.get("data_sha256")}  # fmt: skip
        return cls(
            network, payload["objective"], payload["config"], payload["model_args"], payload.get("feature_names"), info,
            payload.get("growth_unit", 1.0), payload.get("growth_range"), payload.get("growth_ranges"),
        )  # fmt: skip

    def __repr__(self) -> str:
        t0, t1 = self.t_range
        return (
            f"TrainedModel({self.objective}, {self.dim} features, t in [{t0:g}, {t1:g}], step {self.info.get('step')})"
        )

    @property
    def coordinates(self) -> str:
        """What this model's cells are, in words: the input's features as given, or what preprocessing made of
        them (audit 45: standardised cells keep their genes' names, and raw ones passed for them)."""
        if self.info.get("preprocess") is None:
            return "the coordinates of the store it was trained on (its checkpoint records no preprocessing)"
        fitted = self._preprocessing
        return "the input's features as given" if fitted is None else fitted.describe()

    def preprocess(self, x, velocity: bool = False, names=None) -> np.ndarray:
        """Cells in the input's features (the file's ``X``, columns or genes, as ``dataset`` read them) brought into
        the coordinates this model answers in, by its store's preprocessing (selection, standardisation, PCA,
        whitening, fitted on the training times); with ``velocity``, velocities in those features (no centring).

        ``x``: an array (dense or scipy sparse), a tensor, or an AnnData (the layer or obsm entry the model was
        trained on, ``info["input_key"]``, else its ``X``; genes by ``var_names``). ``names``:
        the names of ``x``'s columns. Where the input named its features (h5ad ``var_names``, CSV columns), cells
        with names are matched to them by name (any order; extra columns are ignored) and cells without must have
        exactly the input's columns. ``(cells, features)`` float32."""
        if self.info.get("preprocess") is None:
            raise ValueError("this model's checkpoint records no preprocessing (trained before amcore recorded it, "
                             "or on a path without snapshots): bring cells into its coordinates as its store was "
                             "made")  # fmt: skip
        fitted = self._preprocessing
        given, obsm = names is not None, {}
        if hasattr(x, "var_names") and hasattr(x, "X"):  # an AnnData (or a view of one)
            obsm = {key: np.shape(value)[1:] for key, value in getattr(x, "obsm", {}).items()}
            x, names = self._anndata_cells(x, names)
        elif hasattr(x, "columns") and hasattr(x, "to_numpy"):  # a pandas DataFrame: its columns name the features
            names, x = (list(x.columns) if names is None else names), x.to_numpy()
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        # The input's feature names: recorded with the fitted steps, or the store's own without any.
        expected = fitted.input_names if fitted is not None else self.info.get("feature_names")
        if names is not None:
            names = [str(name) for name in names]
            if (
                expected is None
                and fitted is not None
                and fitted.n_input is not None
                and all(re.fullmatch(r"x\d+", name) for name in names)
            ):  # to_input's names of an input that named none: its column numbers (audit 94: the round trip failed)
                expected = [f"x{i}" for i in range(fitted.n_input)]
            if getattr(x, "ndim", 0) != 2 or len(names) != x.shape[1]:
                raise ValueError(f"{len(names)} feature names for x of shape {getattr(x, 'shape', None)}: one per "
                                 "column of (cells, features)")  # fmt: skip
            if expected is not None:
                # only the features selection kept must be there (audit 18: 10 unused genes of 2,000 missing
                # refused the cells)
                used = None if fitted is None or fitted.indices is None else [int(i) for i in fitted.indices]
                x = _by_name(x, names, expected, used)
            elif given:
                raise ValueError("names: this model's store recorded no feature names to match them with (its input "
                                 "named none); pass x in the input's column order, without names")  # fmt: skip
        if hasattr(x, "toarray"):  # scipy sparse: dense rows of the input's width (genes)
            x = x.toarray()
        x = np.asarray(x, dtype=np.float64)
        if fitted is not None and fitted.n_input is not None:
            width, fits = fitted.n_input, x.ndim == 2 and x.shape[1] == fitted.n_input
        elif fitted is not None and fitted.indices is not None:  # stores from before the input's width was kept
            fits = x.ndim == 2 and x.shape[1] > int(fitted.indices.max())
            width = f"more than {int(fitted.indices.max())} (this model's preprocessing selects some of them)"
        else:
            width = self.dim if fitted is None else len(fitted.mean)
            fits = x.ndim == 2 and x.shape[1] == width
        if not fits:
            named = " (pass names=, or an AnnData, to match them by name)" if expected is not None else ""
            there = [key for key, shape in obsm.items() if shape == (width,)]
            if there:  # trained on an obsm entry (x_key: obsm/X_pca): an AnnData's X is its genes
                named = f" (an AnnData gives its X; this one's obsm[{there[0]!r}] has {width} columns: pass that)"
            raise ValueError(f"x must be (cells, features) in the input's {width} features, got shape {x.shape}"
                             f"{named}")  # fmt: skip
        if not np.isfinite(x).all():
            raise ValueError("x has NaN or inf values")
        if fitted is None:
            return x.astype(np.float32)
        out = np.asarray(fitted.transform_velocity(x) if velocity else fitted.transform(x), dtype=np.float32)
        if not velocity:
            self._warn_far(out, preprocessed=True)
        return out

    def _warn_far(self, z, preprocessed: bool = False) -> None:
        """Warn when cells in this model's coordinates lie far beyond the training cells: their median distance from
        the training cells' mean, in the training cells' root-mean-square distance (1: as far out as they are),
        above ``FAR_CELLS``; or more than ``FAR_SHARE`` of them beyond ``FAR_FEW`` times it. From ``preprocess``
        (audit 24: raw counts where the model took log-normalised ones came out 30 times farther out, in silence) or
        given to a field or push (audit 45: genes in their own units where the model took standardised ones)."""
        center, scale = self.model_args.get("x_center"), self.model_args.get("x_scale")
        if center is None or not scale or not len(z):
            return
        z = z[:: max(1, len(z) // FAR_SAMPLE)]
        z = z.detach().cpu().double().numpy() if isinstance(z, torch.Tensor) else np.asarray(z, dtype=np.float64)
        distance = np.linalg.norm(z - np.asarray(center), axis=1) / (scale * np.sqrt(self.dim))
        if np.median(distance) > FAR_CELLS:  # most of them: the coordinates, more likely than the cells
            where = "" if preprocessed else f"in this model's coordinates ({self.coordinates}"
            where += "" if preprocessed or self._preprocessing is None else "; model.preprocess brings cells there"
            where += "" if preprocessed else "), and "
            # no number in the message: Python shows a warning once per place, not once per call (a push of an eAM
            # model that ran off warned at every step)
            warnings.warn(
                f"these cells lie more than {FAR_CELLS:g} times as far from the training cells' mean as those do "
                f"(median against root mean square): are they {where}normalised as the training data were "
                "(docs/anndata.md)? There the network only extrapolates",
                stacklevel=_outside_this_module(),
            )  # fmt: skip
        elif (distance > FAR_FEW).mean() > FAR_SHARE:  # a few (audit 91: 10 % of them 15 units out, no word)
            warnings.warn(
                f"more than {FAR_SHARE:.0%} of these cells lie more than {FAR_FEW:g} times as far from the training "
                "cells' mean as those do (root mean square): there the network only extrapolates, and what it says "
                "of them (a field, a push, uAM's growth) rests on nothing it was trained on",
                stacklevel=_outside_this_module(),
            )  # fmt: skip

    def _ran_off(self, start: torch.Tensor, end: torch.Tensor) -> tuple[int, int]:
        """Of a batch pushed from ``start`` to ``end``: how many ended NaN or inf, and how many started within and
        ended beyond ``FAR_CELLS`` times the training cells' root-mean-square distance from their mean (cells given
        out there are warned of as input, and a heavy tail's own cells there stay put: review 73). (0, 0) for a
        model without those units (``units: data``)."""
        center, scale = self.model_args.get("x_center"), self.model_args.get("x_scale")
        if center is None or not scale:
            return 0, 0
        limit = FAR_CELLS * scale * math.sqrt(self.dim)
        center = torch.as_tensor(center, dtype=end.dtype, device=end.device)
        beyond = [(z - center).norm(dim=1) > limit for z in (start, end)]
        return int((~torch.isfinite(end).all(1)).sum()), int((~beyond[0] & beyond[1]).sum())

    @staticmethod
    def _warn_ran_off(off: tuple[int, int], n: int, t: float) -> None:
        """Warn of the pushed cells :meth:`_ran_off` counted (audit 70: an SDE push in one step flung 108 of 800
        cells past twice the data's range, unsaid; the pipeline's evaluate flags escaped cells its own way)."""
        said = [f"{off[0]} are NaN or inf"] if off[0] else []
        said += [f"{off[1]} ran more than {FAR_CELLS:g} times as far from the training cells' mean as those lie (root "
                 "mean square)"] if off[1] else []  # fmt: skip
        if said:
            warnings.warn(f"at t = {t:g}, of {n} pushed cells, {' and '.join(said)}: there the field is "
                          "extrapolated (a push with more steps, within the training times, or a field that "
                          "diverges?)", stacklevel=_outside_this_module())  # fmt: skip

    def _anndata_cells(self, adata, names):
        """The matrix of ``adata`` this model's input was (``info["input_key"]``: ``X``, ``layers/<name>`` or
        ``obsm/<name>``; audit 18: a model trained on a log-normalised layer read the raw counts of ``X``, 7 units
        off, in silence) and its column names (``var_names``; an obsm entry's columns have none)."""
        group, _, name = (self.info.get("input_key") or "X").partition("/")
        if group == "X" or not name:
            x = adata.X
            if hasattr(x, "to_memory"):  # a backed AnnData's sparse X (read_h5ad(backed="r")): read whole
                x = x.to_memory()
            elif type(x).__module__.startswith("h5py"):  # its dense X
                x = x[()]
            return x, list(adata.var_names) if names is None else names
        held = getattr(adata, group, {})
        if name not in held:
            raise ValueError(f"this model was trained on {group}[{name!r}] of its AnnData; this one has no such entry "
                             f"(it holds {group} {list(held.keys())[:10]})")  # fmt: skip
        return held[name], (list(adata.var_names) if group == "layers" and names is None else names)

    @functools.cached_property
    def _preprocessing(self):
        """The store's fitted steps (``None``: none, or none recorded), read once: a PCA of thousands of genes is
        a record of millions of numbers."""
        from amcore.data.preprocess import Preprocessing

        record = self.info.get("preprocess")
        return None if record is None else Preprocessing.from_json(record)

    def to_input(self, z, velocity: bool = False):
        """Cells (or with ``velocity`` velocities, e.g. :meth:`velocity`'s) in this model's coordinates back in the
        input's features that preprocessing kept (genes by name where the input named them), as a
        ``pandas.DataFrame`` (cells x features): the inverse of :meth:`preprocess`, exact without PCA; with it,
        the point of the principal subspace (what the components kept of the input). A DataFrame ``z`` is read by
        column name and keeps its index."""
        import pandas as pd

        index = z.index if hasattr(z, "columns") and hasattr(z, "index") else None  # a DataFrame keeps its cells
        z = self._by_columns(z)  # and its columns go by name (audit 24: by position, a PC order moved the genes)
        z = np.asarray(z.detach().cpu() if isinstance(z, torch.Tensor) else z, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"z must be (cells, {self.dim}) in this model's coordinates, got shape {z.shape}")
        finite = np.isfinite(z).all(1)
        if not finite.all():  # as preprocess refuses them: a NaN row would come back as NaN genes (audit 88)
            rows = np.flatnonzero(~finite)
            raise ValueError(f"z has NaN or inf in {len(rows)} row(s) (the first: row {rows[0]}): no cell of the input "
                             "lies there")  # fmt: skip
        fitted = self._preprocessing
        if fitted is None:  # the store's coordinates are the input's
            return pd.DataFrame(z, columns=self.feature_names, index=index)
        return pd.DataFrame(fitted.inverse(z, velocity), columns=fitted.selected_names(), index=index)

    def check_store(self, snaps, store) -> None:
        """Refuse a store other than the one this model was trained on (other data, preprocessing or held-out
        time: other coordinates, where its answers mean nothing). Checkpoints from before the store was recorded
        pass; so do models trained on snapshots built in Python (they name no store)."""
        from amcore.data.store import store_identity

        trained_on = self.info.get("store")
        if trained_on is not None and store_identity(snaps.attrs) not in (None, trained_on):
            raise InputError(f"{self.info.get('path', 'this model')} was trained on another store than {store} (other "
                             "data, preprocessing or held-out time, so other coordinates): use it with the store it "
                             "was trained on")  # fmt: skip

    # -- fields ------------------------------------------------------------------------------------------------
    def _by_columns(self, x):
        """A DataFrame's columns matched to this model's features by name (audit 16: columns in another order than
        the training's moved the wrong features, in silence, where ``preprocess`` and the MLflow model match them);
        where the model recorded none, by its names x0, x1, ... (columns 0, 1, ... of a DataFrame made from an array
        by position); a scipy sparse matrix dense; any other input as given. An
        AnnData is refused with the way to its cells (audit 24: numpy's error spoke of 64 dimensions)."""
        if hasattr(x, "var_names") and hasattr(x, "X"):
            raise ValueError("x is an AnnData: this model answers in its own coordinates; model.preprocess(adata) "
                             "brings its cells there (an export's X already is: pass adata.X)")  # fmt: skip
        if hasattr(x, "toarray"):  # scipy sparse
            return x.toarray()
        if not (hasattr(x, "columns") and hasattr(x, "to_numpy")):
            return x
        recorded, names = self.info.get("feature_names"), [str(name) for name in x.columns]
        if not recorded and names != [str(i) for i in range(len(names))]:
            # an unnamed input's features are x0, x1, ... (as model.feature_names, the MLflow model and an export
            # name them): a DataFrame's own names go by them, never by position (audit 45: x1, x0 read swapped)
            recorded = self.feature_names
        if recorded:
            positions, missing = _columns_by_name(names, list(recorded))
            if missing:
                why = ("the model answers in its own coordinates (model.preprocess brings cells in the input's "
                       "features there)" if self.info.get("feature_names") else "its input named no features: name "
                       "the columns so, or pass an array in their order")  # fmt: skip
                raise ValueError(f"x's columns ({names[:5]}{' ...' if len(names) > 5 else ''}) lack {len(missing)} of "
                                 f"this model's features: {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
                                 f"{why}")  # fmt: skip
            x = x.iloc[:, positions]  # other columns (a cell type, a time) left out
        try:
            return x.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as err:
            raise ValueError(f"x's feature columns must hold numbers: {err}") from None

    def _inputs(
        self, x, t, check_times: bool = True, check_far: bool = True, first_row: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` and ``t`` as float32 tensors, refused where they cannot be cells and times of this model; cells far
        beyond the training cells are warned of (``check_far``: raw units where the model takes standardised
        ones came back barely moved, audit 45). Pandas ``x`` and ``t`` are matched by row label (``by_row_labels``).
        ``first_row``: the row of the whole input that ``x``'s first is (a batch of a push), for the messages."""
        t = by_row_labels(x, t, "t")
        x = self._by_columns(x)
        given = x.detach() if isinstance(x, torch.Tensor) else np.asarray(x)
        if not isinstance(given, torch.Tensor) and given.dtype.kind == "O":  # Decimals, None (read as NaN, refused)
            try:
                given = given.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"x must hold real numbers, got objects such as {given.flat[0]!r}") from None
        real = not given.dtype.is_complex if isinstance(given, torch.Tensor) else given.dtype.kind in "biuf"
        if not real:  # audit 36: objects met torch's own error, complex numbers lost their imaginary part in silence
            raise ValueError(f"x must hold real numbers, got {given.dtype}")
        if not isinstance(given, torch.Tensor):  # torch takes no negative strides (x[::-1]: audit 45)
            given = np.ascontiguousarray(given)
        xt = torch.as_tensor(given, dtype=torch.float32)
        if xt.ndim != 2 or xt.shape[1] != self.dim:
            raise ValueError(f"x must be (cells, {self.dim}) for this model's features, got {tuple(xt.shape)}")
        if not bool(torch.isfinite(xt).all()):  # a NaN row would come back as a NaN field, silently
            bad = (~torch.isfinite(xt)).any(1)
            first = int(bad.nonzero()[0])
            row = given[first].cpu().numpy() if isinstance(given, torch.Tensor) else given[first]
            where = f"{int(bad.sum())} of {len(xt)} cells" + (f" from row {first_row}" if first_row else "")
            if np.isfinite(row.astype(np.float64)).all():  # finite, but beyond float32's range (3.4e38)
                raise ValueError(f"x has values beyond float32's range in {where} (the first: row "
                                 f"{first + first_row}); the network computes in float32")  # fmt: skip
            raise ValueError(f"x has NaN or inf in {where} (the first: row {first + first_row}); a field at a cell "
                             "without coordinates means nothing")  # fmt: skip
        if not isinstance(t, torch.Tensor):
            t = np.asarray(t)
            if not np.issubdtype(t.dtype, np.number) or t.dtype.kind == "c":  # complex: audit 85
                raise ValueError(f"t must be a real number or one per cell, got {t.dtype} ({t.flat[0]!r})")
        elif t.is_complex():
            raise ValueError(f"t must be a real number or one per cell, got {t.dtype}")
        tt = torch.as_tensor(t, dtype=torch.float32)
        if tt.ndim != 0 and tuple(tt.shape) != (len(xt),):
            raise ValueError(f"t must be one time or one per cell ({len(xt)}), got shape {tuple(tt.shape)}")
        if check_times:
            self._check_times(tt)
        if check_far:
            self._warn_far(xt)
        return xt, tt.expand(len(xt)).contiguous() if tt.ndim == 0 else tt

    def _check_times(self, times) -> None:
        """Refuse times that are not finite; warn about times outside the trained range, where the network only
        extrapolates (nothing it learned says how the population moves there)."""
        times = torch.as_tensor(times, dtype=torch.float64)
        if times.numel() == 0:
            return
        if not bool(torch.isfinite(times).all()):
            raise ValueError("t must be finite")
        t0, t1 = self.t_range
        slack = 1e-6 * max(t1 - t0, abs(t0), abs(t1), 1e-12)
        lo, hi = float(times.min()), float(times.max())
        if lo < t0 - slack or hi > t1 + slack:
            warnings.warn(
                f"t {lo:g}{f' to {hi:g}' if hi > lo else ''} leaves the time range this model was trained on, "
                f"[{t0:g}, {t1:g}]: "
                "there the network extrapolates, and nothing it learned says how the population moves",
                stacklevel=_outside_this_module(),
            )

    def _require(self, allowed: tuple[str, ...], what: str) -> None:
        if self.objective not in allowed:
            article = "a" if self.objective == "uam" else "an"  # an AM, an EAM, an FM; a UAM
            raise ValueError(f"{article} {self.objective.upper()} model has no {what} (only {', '.join(allowed)} "
                             "models)")  # fmt: skip

    @property
    def flow(self):
        """The torch field the particles follow (``velocity`` or eAM's ``drift``), for the integrators."""
        return velocity_fn(self.network, self.objective)

    def _batched(self, fn, x, t) -> np.ndarray:
        """``fn`` over ``BATCH_ROWS`` cells at a time: the memory of a call does not grow with the number of cells
        (the velocity's backward pass keeps every hidden activation of its batch)."""
        xt, tt = self._inputs(x, t)
        parts = [
            fn(xt[i : i + BATCH_ROWS], tt[i : i + BATCH_ROWS]).detach().numpy() for i in range(0, len(xt), BATCH_ROWS)
        ]
        return np.concatenate(parts) if parts else fn(xt, tt).detach().numpy()

    def _field(self, x, t) -> np.ndarray:
        return self._batched(self.flow, x, t)

    def velocity(self, x, t) -> np.ndarray:
        """The velocity ``v(x, t)`` of the learned flow: ``grad s`` (AM, uAM), the field itself (FM)."""
        self._require(("am", "uam", "fm"), "deterministic velocity: eAM learns the SDE's drift()")
        return self._field(x, t)

    def drift(self, x, t) -> np.ndarray:
        """The drift ``grad s`` of eAM's SDE ``dX = grad s dt + sigma_t dW``."""
        self._require(("eam",), "drift")
        return self._field(x, t)

    def potential(self, x, t) -> np.ndarray:
        """The potential ``s(x, t)``; AM and eAM identify it up to a function of time, uAM exactly."""
        self._require(("am", "eam", "uam"), "potential: Flow Matching learns a vector field")
        with torch.no_grad():
            return self._batched(self.network, x, t)

    def growth_rate(self, x, t) -> np.ndarray:
        """uAM's per-cell growth rate ``growth * s(x, t) / x_scale^2`` (``d log mass / dt``), as the network gives
        it anywhere; weighted pushes hold it within ``growth_ranges``, the rates its training path's cells took in
        the interval between observed times they are in (``growth_range`` over all of them, for older checkpoints),
        and beyond the path's cells (``growth_support``) at most the population's rate (``_growth_cap``)."""
        self._require(("uam",), "growth rate")
        return self.growth * self.potential(x, t)

    def fields(self, x, t, with_potential: bool = False) -> dict[str, np.ndarray]:
        """Every field this model defines, named as the simulators name their truths (``velocity`` or ``drift``,
        uAM's ``growth``), and the ``potential`` too when asked (one evaluation of ``s`` serves both)."""
        out = {"drift" if self.objective == "eam" else "velocity": self._field(x, t)}
        if self.objective != "fm" and (with_potential or self.objective == "uam"):
            potential = self.potential(x, t)
            if with_potential:
                out["potential"] = potential
            if self.objective == "uam":
                out["growth"] = self.growth * potential
        return out

    def sigma(self, t: float) -> float:
        """eAM's noise level ``sigma_t`` (its schedule runs over the training time range, and holds its end values
        outside it, where a linear schedule would turn negative); 0 otherwise."""
        _one_number("t", t)
        if self.objective != "eam":  # no noise at any time: no range to warn about
            if not np.isfinite(float(t)):
                raise ValueError("t must be finite")
            return 0.0
        self._check_times(float(t))
        return self._sigma_at(t)

    def _sigma_at(self, t) -> float:
        """``sigma_t`` without the checks: the SDE integrator asks at every step, inside the range it checked."""
        spec = ObjectiveSpec(kind="eam", sigma=self.config["sigma"], sigma_final=self.config["sigma_final"])
        t0, t1 = self.t_range
        u = torch.tensor(min(max((float(t) - t0) / (t1 - t0), 0.0), 1.0), dtype=torch.float64)
        return float(spec.sigma_at(u))

    # -- integration -------------------------------------------------------------------------------------------
    def integrator(self, method: str = "auto") -> str:
        """The integration method ``method`` stands for (:func:`integrator`)."""
        return integrator(self.objective, method)

    def trajectories(
        self, x0, times, steps_per_interval: int = 20, method: str = "auto", seed: int = 0,
        batch_size: int = integrate.BATCH_SIZE, out: tuple | None = None, progress: float | None = integrate.PROGRESS_S,
    ) -> Trajectories:  # fmt: skip
        """Push ``x0`` (cells at ``times[0]``) through every time in ``times``, ``steps_per_interval`` steps apart.

        ``auto``: Euler-Maruyama for eAM (seeded noise), weighted particles for uAM (``d log w/dt = growth rate``,
        held within the rates of its training path: :meth:`growth_rate`; ``info["growth_held"]`` counts the
        particles that left the path's cells, twice its radius, where they grow no faster than the population),
        RK4 otherwise; ``dopri5`` is adaptive, ``euler`` first order (the AM paper's pushes). ``x`` holds every
        sub-step; ``time`` says when.

        Cells are read and pushed ``batch_size`` at a time (``x0`` may be lazy, a dask array of a store's snapshot)
        and each step of each batch is written to ``out``, ``(x, weight)``: array-likes of shapes ``(steps, cells,
        features)`` and ``(steps, cells)`` (``weight`` for the weighted method only) such as
        ``integrate.TrajectoryWriter``'s zarr arrays; numpy arrays when None. Every method but ``dopri5`` gives each
        cell the result it gets in one batch (the SDE's noise is keyed by the cell's row and the step's start time,
        ``integrate.ParticleNoise``, so a push continued from where another ended draws new noise; cells pushed in
        separate calls with one seed share their rows' kicks: give each group its own seed where they should be
        independent); ``dopri5`` takes one step size per batch, so its results move within its tolerance with the
        batching and ``accepted_steps`` is the most any batch took.

        A push that lasts says how far it has come on stderr every ``progress`` seconds (None: never).
        """
        method = self.integrator(method)
        given = np.asarray(times.detach().cpu() if isinstance(times, torch.Tensor) else times)
        if not np.issubdtype(given.dtype, np.number):  # as t everywhere else (audit 24: "0" passed here only)
            raise ValueError(f"times must be numbers, got {given.dtype} ({given.flat[0].item()!r})" if given.size else
                             "times must be numbers")  # fmt: skip
        times = given.astype(np.float64)
        if times.ndim != 1 or len(times) < 1:
            raise ValueError(f"times must be a list of at least one time (the first is x0's), got shape {times.shape}")
        per_interval = steps_per_interval
        counts = (("steps per interval", per_interval, 1), ("batch_size", batch_size, 1), ("seed", seed, 0))
        for name, count, least in counts:  # audit 85: a seed None, -1 or a Generator failed deep inside
            _whole_number(name, count, least)
        self._check_times(times)
        _forward_only(method, times, times.tolist())
        grid, _ = integrate.time_grid(times, per_interval)
        x0 = self._by_columns(x0)
        x0 = x0 if hasattr(x0, "shape") else np.asarray(x0)  # numpy, torch, or lazy (dask): read batch by batch
        if len(x0.shape) != 2 or x0.shape[1] != self.dim:
            raise ValueError(f"x must be (cells, {self.dim}) for this model's features, got {tuple(x0.shape)}")
        finite = (np.isfinite(x0).all() if isinstance(x0, np.ndarray) and x0.dtype.kind == "f" else
                  bool(torch.isfinite(x0).all()) if isinstance(x0, torch.Tensor) else True)  # fmt: skip
        if not finite:  # in memory: refused before any batch moves, by its row in the whole input (audit 85)
            self._inputs(x0, times[0], check_times=False, check_far=False)
        n, weighted = int(x0.shape[0]), method == "weighted"
        if out is None:
            out = (np.empty((len(grid), n, self.dim), dtype=np.float32),
                   np.empty((len(grid), n), dtype=np.float32) if weighted else None)  # fmt: skip
        out_x, out_w = out
        if weighted and out_w is None:
            raise ValueError("the weighted method writes weights: out needs a weight array")
        noise = integrate.ParticleNoise(seed, self.dim)
        info: dict = {}
        report = integrate.Progress(n, len(grid) - 1, progress)

        def growth(points: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                rate = self.growth * self.network(points, t)
            if self.growth_ranges is None:
                return rate if self.growth_range is None else rate.clamp(*self.growth_range)
            # the rates its path took in the interval the particles are in
            bounds = self.growth_ranges["ranges"].to(rate.device)[self._interval(t)]
            return torch.minimum(torch.maximum(rate, bounds[:, 0]), bounds[:, 1])

        held = torch.zeros(0, dtype=torch.bool)  # the batch's particles that went twice the radius beyond the path

        def limit(points: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # beyond the path's cells
            k = self._interval(t)
            bounds = self.growth_ranges["ranges"].to(points.device)[k]
            cap, off = self._growth_cap(points, k, bounds)
            held.logical_or_(off.cpu())
            return cap

        ran_off, in_memory = [0, 0], isinstance(out_x, (np.ndarray, _LastStep))  # a store's writer: evaluate flags
        for lo in range(0, n, int(batch_size)):
            hi = min(n, lo + int(batch_size))
            (xb, _), stats = self._inputs(x0[lo:hi], times[0], check_times=False, check_far=lo == 0, first_row=lo), {}
            if method == "sde":
                batch_noise = lambda t, lo=lo, hi=hi: noise(t, lo, hi)  # noqa: E731
                steps = integrate.sde_steps(self.flow, xb, grid, self._sigma_at, batch_noise)
            elif method == "weighted":
                held = torch.zeros(hi - lo, dtype=torch.bool)
                capped = self.growth_ranges is not None and self.growth_support is not None
                steps = integrate.weighted_steps(self.flow, growth, xb, grid, limit if capped else None)
            elif method == "euler":
                steps = integrate.euler_steps(self.flow, xb, grid)
            elif method == "dopri5":
                # the absolute tolerance in the data's units: 1e-5 of its spread, not 1e-5 of whatever unit
                atol = 1e-5 * float(self.model_args.get("x_scale", 1.0))
                steps = integrate.adaptive_steps(self.flow, xb, grid, atol=atol, stats=stats)
            else:
                steps = integrate.ode_steps(self.flow, xb, grid)
            state = xb
            for i, state in enumerate(steps):
                if weighted:
                    state, w = state
                    out_w[i, lo:hi] = w.cpu().numpy()
                out_x[i, lo:hi] = state.cpu().numpy()
                report(lo, hi, i)
            if in_memory:
                ran_off = [a + b for a, b in zip(ran_off, self._ran_off(xb, state), strict=True)]
            if "accepted_steps" in stats:
                info["accepted_steps"] = max(info.get("accepted_steps", 0), stats["accepted_steps"])
            if weighted and self.growth_support is not None:
                info["growth_held"] = info.get("growth_held", 0) + int(held.sum())
        if in_memory:
            self._warn_ran_off(ran_off, n, grid[-1])
        if isinstance(out_x, np.ndarray) and weighted:  # (push reads its own last step's weights)
            _warn_few_carriers(out_w[-1], grid[-1])
        return Trajectories(out_x, grid, out_w, method, info)

    def _interval(self, t: torch.Tensor) -> torch.Tensor:
        """The interval between observed times (of ``growth_ranges``) that each ``t`` is in."""
        return integrate.interval_of(self.growth_ranges["knots"].to(t.device), t)

    def _growth_cap(
        self, points: torch.Tensor, k: torch.Tensor, bounds: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The highest growth rate each particle may take: its interval's highest (``bounds[:, 1]``) within the
        path's cells there (``growth_support``'s radius), falling linearly to the population's rate (held within
        ``bounds``) at twice that distance and beyond; and which particles are that far. Off the path the network's
        rate is extrapolation; a particle that left the data is not known to outgrow its population, and with more
        than the population's mass it would hold a weighted estimate alone. Death is left as it is: a dying
        particle only weighs less."""
        support = self.growth_support
        cap, off = bounds[:, 1].clone(), torch.zeros(len(points), dtype=torch.bool, device=points.device)
        for j in k.unique().tolist():
            rows, radius = k == j, float(support["radius"][j])
            if not radius > 0:  # the path's cells coincide: no scale to judge leaving them by
                continue
            far = integrate.neighbour_distance(points[rows], support["cells"][j].to(points.device)) / radius
            lo, hi = bounds[rows, 0], bounds[rows, 1]
            floor = torch.minimum(torch.maximum(support["rate"][j].to(cap.device), lo), hi)
            cap[rows] = hi - (hi - floor) * (far - 1).clamp(0, 1)
            off[rows] = far >= 2
        return cap, off

    def push(
        self, x, t0: float, t1: float, steps: int = 20, method: str = "auto", seed: int = 0, with_weights: bool = False,
        batch_size: int = integrate.BATCH_SIZE, progress: float | None = integrate.PROGRESS_S,
    ):  # fmt: skip
        """The cells ``x`` observed at ``t0``, moved to ``t1`` in ``steps`` steps; where the training times are
        spread unevenly (``times.uneven_times``), ``steps`` between each two of the times it passes: ``t0``, the
        training times between, ``t1`` (as the pipeline integrates: 20 even steps from 0.1 to 168 hours jumped the
        first hours' fast course in one step of 8.4, audit 50); with ``with_weights``, also uAM's
        particle weights (ones for the other objectives). Only the last step is kept: memory grows with the cells,
        not the steps. A long push says how far it has come every ``progress`` seconds (None: never)."""
        _one_number("t0", t0)
        _one_number("t1", t1)
        _whole_number("steps", steps, 1)  # by its own name (audit 91: steps=5.0 was told of "steps per interval")
        x = self._by_columns(x)  # a sparse matrix has no len (audit 36)
        n = x.shape[0] if hasattr(x, "shape") else len(x)
        integrator = self.integrator(method)
        last = _LastStep((n, self.dim)), _LastStep((n,)) if integrator == "weighted" else None
        # before the training times between are added: refused, the push says its own ends (audit 88)
        _forward_only(integrator, np.array([t0, t1], dtype=np.float64), [float(t0), float(t1)])
        trained = self.info.get("trained_times") or []
        between = sorted(t for t in trained if min(t0, t1) < t < max(t0, t1)) if uneven_times(trained) else []
        times = [t0, *(between if t1 >= t0 else between[::-1]), t1]
        traj = self.trajectories(x, times, steps, method, seed, batch_size, out=last, progress=progress)
        if traj.weight is not None:
            _warn_few_carriers(traj.weight.values, t1)
        if not with_weights:
            return traj.x.values
        return traj.x.values, np.ones(n, dtype=np.float32) if traj.weight is None else traj.weight.values


def _whole_number(name: str, count, least: int) -> None:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < least:
        raise ValueError(f"{name} must be a whole number >= {least}, got {count!r}")


def _warn_few_carriers(weights: np.ndarray, t: float) -> None:
    """Warn where uAM's weights rest on under :data:`FEW_EFFECTIVE` of the particles (the pipeline flags it; audit
    57: a push from the API gave 117 times the mass for 32 with 1 % of the particles carrying it, and no word)."""
    if not len(weights):
        return
    if not np.isfinite(weights).all():  # not few carriers: a failed push, as evaluate and score read it
        warnings.warn(f"at t = {t:g} the weights of {int((~np.isfinite(weights)).sum())} particles are NaN or inf: "
                      "the push failed", stacklevel=3)  # fmt: skip
        return
    share = effective_size(weights) / len(weights)
    if share < FEW_EFFECTIVE:
        warnings.warn(f"at t = {t:g} the weights rest on {share:.1%} of the particles (effective sample size): the "
                      "mass and any distance of these cells measure those few; the growth rate away from the "
                      "training cells (where those few went) is extrapolated", stacklevel=3)  # fmt: skip


class _LastStep:
    """An ``out`` array for ``trajectories`` that keeps the last step only (steps arrive in order)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.values = np.empty(shape, dtype=np.float32)

    def __setitem__(self, key: tuple[int, slice], values: np.ndarray) -> None:
        self.values[key[1]] = values  # each step overwrites the previous one: the last stays


def _by_name(x, names: list[str], expected: list[str], used: list[int] | None = None):
    """``x``'s columns in the order of the ``expected`` feature names, matched by ``names`` (one per column); only
    the ``used`` ones (indices into ``expected``; all when None) must be there, the others are 0 where missing."""
    if names == list(expected):  # the input's own columns, duplicated names and all
        return x
    positions, missing = _columns_by_name(names, expected, used)
    if missing:
        kept = "" if used is None else f" (of the {len(used)} its preprocessing selects)"
        raise ValueError(f"{len(missing)} of the {len(expected)} features this model's input had{kept} are not among "
                         f"x's names: {missing[:5]}{' ...' if len(missing) > 5 else ''}")  # fmt: skip
    if None not in positions:
        return x[:, positions]
    dense = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)  # an unused feature is absent
    out = np.zeros((dense.shape[0], len(expected)))
    for i, k in enumerate(positions):
        if k is not None:
            out[:, i] = dense[:, k]
    return out


def _columns_by_name(names: list[str], expected: list[str], used: list[int] | None = None):
    """For each ``expected`` feature name, the column that ``names`` (one per column of x) gives it, None where none
    does; and the needed names no column has (the ``used`` ones, indices into ``expected``; all when None). Names
    the expected ones repeat, or two columns of one expected name, cannot be matched: refused. Columns of other
    names (a cell type, a time, a gene selection left out) are not looked at."""
    if len(set(expected)) < len(expected):
        repeated = next(name for name, n in Counter(expected).items() if n > 1)
        raise ValueError(f"the input's feature names repeat ({repeated!r} names two of its columns): cells cannot be "
                         "matched to them by name; pass them in the input's column order, without names")  # fmt: skip
    wanted, column = set(expected), {}
    for i, name in enumerate(names):
        if name in column and name in wanted:
            raise ValueError(f"the feature name {name!r} names two columns of x: they cannot be matched by name")
        column.setdefault(name, i)
    needed = expected if used is None else [expected[i] for i in used]
    return [column.get(name) for name in expected], [name for name in needed if name not in column]


def _outside_this_module() -> int:
    """The ``stacklevel`` of the first caller outside this module: a warning names the user's line."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        level, frame = level + 1, frame.f_back
    return level


def load(path: str | Path) -> TrainedModel:
    """A trained model from its checkpoint (``model.pt``) or from an MLflow model: ``runs:/<run_id>/model``,
    ``models:/<model_id>``, ``models:/<name>/<version>`` or a local MLflow model directory (it has an ``MLmodel``).

    URIs resolve as ``mlflow.pyfunc.load_model`` resolves them: against MLflow's tracking URI
    (``MLFLOW_TRACKING_URI`` or ``mlflow.set_tracking_uri``).
    """
    text = str(path)
    if text.startswith(("runs:/", "models:/")) or (Path(text) / "MLmodel").is_file():
        try:
            from amcore.models.mlflow_model import load_trained  # imports mlflow (seconds): only for MLflow models
        except ModuleNotFoundError as err:
            if (err.name or "").partition(".")[0] != "mlflow":
                raise
            said = f"{text}: an MLflow model needs mlflow, which amcore installs with its pipeline: pip install "
            raise ModuleNotFoundError(said + "'amcore[pipeline]' (or mlflow alone)", name="mlflow") from err
        return load_trained(text)
    return TrainedModel.from_checkpoint(path)
