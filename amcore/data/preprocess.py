"""Feature selection, standardisation, PCA and whitening, fitted on training times only, out of core with dask.

Every statistic (feature variances, means, scales, principal components) comes from the cells whose time is
not held out, so a held-out time cannot leak into the coordinates the model is trained and scored in; every
cell, held out or not, is then transformed the same way. Steps run in this order: select, centre and scale,
project on the principal components, whiten.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np

from amcore.errors import InputError

DEFAULTS = {
    "select": "all",
    "n_features": None,
    "indices": [],
    "standardize": False,
    "pca": None,
    "whiten": False,
    "seed": 0,
}
FEATURE_SPREAD_RATIO = 1e3  # features whose spreads differ more ask to be standardised (prepare, train)
POWER_ITERATIONS = 4  # QR-normalised: exact to float64 rounding even for the smallest kept component
COUNTS_SAMPLE = 1000  # rows read to tell raw counts (integers) from normalised values, in blocks over the input
COUNTS_BLOCKS = 10  # a file sorted by time, shallow times first, hid the counts of its later rows (audit 69)
COUNTS_TOTAL = 100  # a median total per cell from which integer features read as raw counts
COUNTS_ZEROS = 0.3  # a share of zeros from which they do at any depth (a 50-gene panel: a median total of 25)
COUNTS_WIDE = 20  # features from which that share counts: a lattice walk in 2-d is integers with zeros too


@dataclass
class Preprocessing:
    """Fitted parameters; ``None`` marks a step that is not applied."""

    config: dict
    fit_times: list[float]
    n_fit: int
    indices: np.ndarray | None = None
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    components: np.ndarray | None = None
    explained_variance: np.ndarray | None = None
    n_input: int | None = None  # the input's features (genes, columns): a model's new cells must have as many
    input_names: list[str] | None = None  # their names, where the input named them: new cells are matched by them

    def describe(self) -> str:
        """The fitted steps in words (a model's coordinates, for whoever receives it without its store)."""
        steps = []
        if self.indices is not None:
            of = f" of {self.n_input}" if self.n_input is not None else ""
            steps.append(f"{len(self.indices)}{of} features selected")
        if self.scale is not None:
            steps.append("standardised (centred, each feature divided by its spread)")
        elif self.mean is not None and self.components is None:
            steps.append("centred")
        if self.components is not None:
            steps.append(f"projected on {len(self.components)} principal components"
                         + (", whitened" if self.config.get("whiten") else ""))  # fmt: skip
        return "the input's features " + (", ".join(steps) if steps else "as given")

    def transform(self, x: da.Array) -> da.Array:
        """Apply the fitted steps lazily, chunk by chunk; float32 out once centred (``to_float32`` casts the rest)."""
        if self.indices is not None:
            x = x[:, self.indices]
        if self.mean is None:
            return self._linear(x)
        return self._linear(x.astype(np.float64) - self.mean).astype(np.float32)

    def transform_velocity(self, v: da.Array) -> da.Array:
        """A velocity in the input's coordinates carried into the transformed ones: the steps without the centring
        (a velocity is a difference of positions)."""
        return self._linear(v if self.indices is None else v[:, self.indices])

    def inverse(self, z: np.ndarray, velocity: bool = False) -> np.ndarray:
        """Cells (or with ``velocity`` velocities) in the transformed coordinates back in the selected input
        features: exact without PCA; with it, the point of the principal subspace (what the components kept)."""
        z = np.asarray(z, dtype=np.float64)
        if self.components is not None:
            if self.config["whiten"]:
                z = z * np.sqrt(np.where(self.explained_variance > 0, self.explained_variance, 1.0))
            z = z @ self.components
        if self.scale is not None:
            z = z * self.scale
        if self.mean is not None and not velocity:
            z = z + self.mean
        return z

    def selected_names(self) -> list[str]:
        """The input features the steps keep, by name where the input named them (else ``x<column>``)."""
        if self.indices is not None:
            columns = self.indices
        else:  # older stores kept no width: the centring's
            columns = np.arange(self.n_input if self.n_input is not None else len(self.mean))
        if self.input_names is not None:
            return [self.input_names[i] for i in columns]
        return [f"x{i}" for i in columns]

    def _linear(self, x: da.Array) -> da.Array:
        """Scaling, projection and whitening: the steps after the selection and the centring."""
        if self.scale is not None:
            x = x / self.scale
        if self.components is not None:
            x = x @ self.components.T
            if self.config["whiten"]:
                x = x / np.sqrt(np.where(self.explained_variance > 0, self.explained_variance, 1.0))
        return x

    @classmethod
    def from_json(cls, record: dict) -> Preprocessing | None:
        """The fitted steps from :meth:`to_json`'s record (a store's attrs ``preprocess``); ``None`` where nothing
        was fitted (the record holds the config only: the coordinates are the input's)."""
        if "fit_times" not in record:
            return None
        arrays = {key: None if record.get(key) is None else np.asarray(record[key])
                  for key in ("indices", "mean", "scale", "components", "explained_variance")}  # fmt: skip
        inputs = {"n_input": record.get("n_input"), "input_names": record.get("input_names")}  # older stores: none
        return cls(record["config"], record["fit_times"], record["n_fit"], **arrays, **inputs)

    def to_json(self) -> dict:
        """Plain lists and numbers, for the store's attrs."""

        def plain(value: np.ndarray | None) -> list | None:
            return None if value is None else value.tolist()

        return {
            "config": self.config,
            "fit_times": self.fit_times,
            "n_fit": self.n_fit,
            "indices": plain(self.indices),
            "mean": plain(self.mean),
            "scale": plain(self.scale),
            "components": plain(self.components),
            "explained_variance": plain(self.explained_variance),
            "n_input": self.n_input,
            "input_names": self.input_names,
        }


def resolve(config: dict | None) -> dict:
    """The preprocessing config with defaults filled in; unknown keys are refused."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise InputError(f"preprocess: unknown keys {unknown}; expected some of {sorted(DEFAULTS)}")
    config = {**DEFAULTS, **config}
    # A count or list the selection never reads is refused (audit 23: n_features under select all retrained all
    # and kept every feature, in silence).
    if config["n_features"] is not None and config["select"] not in ("first", "top_variance"):
        raise InputError(f"preprocess.n_features {config['n_features']}: read only by select first or top_variance, "
                         f"and select is {config['select']!r}: set select, or leave n_features out")  # fmt: skip
    if config["indices"] and config["select"] != "indices":
        raise InputError(f"preprocess.indices {config['indices']}: read only by select indices, and select is "
                         f"{config['select']!r}: set select: indices, or leave indices out")  # fmt: skip
    return config


def is_identity(config: dict) -> bool:
    """True when no step would change the data (then nothing is fitted)."""
    return config["select"] == "all" and not (config["standardize"] or config["pca"] or config["whiten"])


def _selection(config: dict, n_features: int, variance: np.ndarray | None) -> np.ndarray | None:
    select, k = config["select"], config["n_features"]
    if select == "all":
        return None
    if select in ("first", "top_variance") and not (isinstance(k, int) and 1 <= k <= n_features):
        raise InputError(f"preprocess.n_features: select {select!r} needs 1 <= n_features <= {n_features}, got {k}")
    if select == "first":
        return np.arange(k)
    if select == "top_variance":
        return np.sort(np.argsort(-variance, kind="stable")[:k])
    if select == "indices":
        indices = np.asarray(config["indices"], dtype=np.int64)
        if len(indices) == 0 or indices.min() < 0 or indices.max() >= n_features:
            raise InputError(f"preprocess.indices: need indices in [0, {n_features}), got {config['indices']}")
        if len(np.unique(indices)) != len(indices):
            raise InputError(f"preprocess.indices: repeated indices in {config['indices']}")
        return indices
    raise InputError(f"preprocess.select: unknown {select!r}; expected all, first, indices or top_variance")


FLOAT32_STEPS = 100  # float32 steps per standard deviation below which a feature is refused
NEGLIGIBLE_SPREAD = 1e-3  # of the largest feature's spread: too small to matter in any distance, never refused


def to_float32(
    x: da.Array | np.ndarray,
    where: str,
    names: list[str] | None = None,
    fix: str = "subtract the offset, or set preprocess: {standardize: true} (centred in float64 before the cast)",
) -> da.Array | np.ndarray:
    """``x`` in float32, as training holds it, refused where the cast would lose the data (``fix``: what the
    caller's route offers against an offset; the default, a config's).

    A float64 feature may hold values beyond float32's range, or vary little around a large offset: 1e8 plus noise
    of 1 keeps two or three distinct values in float32 (its step is 8 there), and everything downstream would look
    fine. Checked (one pass over the data) only when ``x`` is wider than float32; centred data never reaches here.
    A feature whose spread is negligible beside the others' (``NEGLIGIBLE_SPREAD``) is not refused: nothing it
    holds shows in a distance taken with them, flattened or not.
    """
    if np.result_type(x.dtype, np.float32) == np.float32:
        return x.astype(np.float32)
    lazy = x if isinstance(x, da.Array) else da.from_array(x, chunks=(max(1, 2**24 // max(1, x.shape[1])), -1))
    peak, spread = dask.compute(da.nanmax(abs(lazy), axis=0), da.nanstd(lazy, axis=0))  # NaN must hide no feature
    peak, spread = np.asarray(peak, dtype=np.float64), np.asarray(spread, dtype=np.float64)

    def feature(k: int) -> str:
        return f"feature {names[k]!r}" if names and k < len(names) else f"feature {k}"

    if (infinite := np.isinf(peak)).any():  # audit 57: "values as large as inf ... rescale it" fixed nothing
        k = int(np.argmax(infinite))
        raise InputError(f"{where}: {feature(k)} holds inf: drop the cells without finite values (a file's: "
                         "dataset.drop_nonfinite: true)")  # fmt: skip
    if (huge := peak > np.finfo(np.float32).max).any():
        k = int(np.argmax(huge))
        raise InputError(f"{where}: {feature(k)} has values as large as {peak[k]:.3g}, beyond float32's range "
                         "(3.4e38), in which training holds the data; rescale it")  # fmt: skip
    step = np.spacing(peak.astype(np.float32)).astype(np.float64)
    visible = spread >= NEGLIGIBLE_SPREAD * spread.max()
    if (coarse := visible & (spread > 0) & (spread < FLOAT32_STEPS * step)).any():
        k = int(np.argmax(coarse))
        raise InputError(
            f"{where}: {feature(k)} varies by {spread[k]:.3g} (standard deviation) around values as large as "
            f"{peak[k]:.10g}, where float32, in which training holds the data, resolves only {step[k]:.3g}; "
            f"{fix}"
        )
    return x.astype(np.float32)


def fit(x: da.Array, time: np.ndarray, holdout_times: list[float], config: dict) -> Preprocessing:
    """Fit the configured steps on the rows of ``x`` whose ``time`` is not in ``holdout_times``."""
    train = ~np.isin(time, holdout_times)
    n_fit = int(train.sum())
    fit_times = [float(t) for t in np.unique(time[train])]
    xt = x[train].astype(np.float64)
    variance = xt.var(axis=0).compute() if config["select"] == "top_variance" else None
    indices = _selection(config, x.shape[1], variance)
    fitted = Preprocessing(config, fit_times, n_fit, indices, n_input=int(x.shape[1]))
    if indices is not None:
        xt = xt[:, indices]
    if not (config["standardize"] or config["pca"] or config["whiten"]):
        return fitted
    mean, variance = dask.compute(xt.mean(axis=0), xt.var(axis=0))
    fitted.mean = mean
    if config["standardize"]:
        std = np.sqrt(variance)
        fitted.scale = np.where(std > 0, std, 1.0)  # a constant feature stays constant instead of dividing by 0
    if config["pca"] or config["whiten"]:
        n_dims = xt.shape[1]
        k = config["pca"] or n_dims
        if not 1 <= k <= min(n_dims, n_fit - 1):
            raise InputError(f"preprocess.pca: {k} components from {n_fit} cells x {n_dims} features")
        z = (xt - fitted.mean) / (1.0 if fitted.scale is None else fitted.scale)
        # compute=True persists the thin (cells, k + 10) range-finder iterates: each pass then streams the
        # chunks of z once instead of one graph holding z in memory for all of them. Signs are coerced, so
        # refits agree.
        _, s, v = da.linalg.svd_compressed(
            z.rechunk({1: -1}), k, iterator="QR", n_power_iter=POWER_ITERATIONS, seed=config["seed"], compute=True
        )
        s, v = dask.compute(s, v)
        fitted.components = v
        fitted.explained_variance = s**2 / (n_fit - 1)
    return fitted


def raw_counts(x) -> dict | None:
    """What ``COUNTS_SAMPLE`` rows of ``x`` show when they look like raw counts: non-negative integers, not only 0
    and 1, with a median total per cell of ``COUNTS_TOTAL`` or more, or (``COUNTS_WIDE`` features or more)
    ``COUNTS_ZEROS`` of the values 0; else None. In memory (numpy, scipy sparse) the rows are read in
    ``COUNTS_BLOCKS`` blocks spread over ``x``; a lazy file's are its first rows (a block elsewhere reads its whole
    chunk: review 71), where a file sorted by time with shallow times first shows its zeros. amcore does not normalise:
    on raw counts of 16,000 genes (audit 7) AM pushed day 0 to day 10 at W1 128 against 17.5 after each cell's total
    was normalised and log1p taken, where the cells unmoved scored 39.7 and 45.3."""
    size = COUNTS_SAMPLE // COUNTS_BLOCKS
    spread = x.shape[0] > COUNTS_SAMPLE and not isinstance(x, da.Array)
    starts = np.linspace(0, x.shape[0] - size, COUNTS_BLOCKS).astype(int) if spread else [0]
    blocks = dask.compute(*(x[s : s + (size if spread else COUNTS_SAMPLE)] for s in starts))
    sample = np.concatenate([np.asarray(b.toarray() if hasattr(b, "toarray") else b, dtype=np.float64) for b in blocks])
    integers = np.isfinite(sample).all() and (sample >= 0).all() and (sample == np.round(sample)).all()
    if not sample.size or not integers:  # no rows: prepare names an empty file
        return None
    if sample.max() < 2:  # 0/1 labels: prepare names two-valued features on their own
        return None
    total, zeros = float(np.median(sample.sum(axis=1))), float(np.mean(sample == 0))
    if total < COUNTS_TOTAL and (zeros < COUNTS_ZEROS or sample.shape[1] < COUNTS_WIDE):
        return None
    return {"cells_read": len(sample), "median_total": total, "zeros": zeros, "max": float(sample.max())}


def counts_advice(counts: dict) -> str:
    """The warning for what :func:`raw_counts` found, and the step amcore leaves to the user."""
    return (f"the input looks like raw counts (non-negative integers, a median of {counts['median_total']:.0f} per "
            f"cell and {counts['zeros']:.0%} zeros in the {counts['cells_read']} cells read): amcore does not "
            "normalise them, and on raw counts AM moved cells far worse than on normalised ones (docs/anndata.md); "
            "normalise each cell's total and take log1p first (scanpy.pp.normalize_total, "
            "scanpy.pp.log1p)")  # fmt: skip
