"""Readers turning a user's files into ``(x, time)`` arrays, with errors that name the file and key.

Each format reader returns ``(x, labels, info)``: ``x`` a dask array ``(cells, features)`` chunked along cells
(read lazily where the format allows, so later passes stay out of core), ``labels`` the raw time label of each
cell (``None`` when the reader was asked for none) and ``info`` what it read, for provenance. ``read_dataset``
turns labels into float64 times (numbers as they are, text only through ``time_map``) and refuses, or drops,
non-finite rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd

from amcore.errors import InputError

READ_CHUNK_BYTES = 64 * 2**20
FORMATS = {"npz": ".npz", "h5ad": ".h5ad", "csv": ".csv", "parquet": ".parquet", "netcdf": ".nc", "zarr": ".zarr"}
# The first number in a file's name; a sign only at the start or after '=' ("-1", "t=-0.5"), never after a word
# ("day-3" is day 3, not -3).
DEFAULT_TIME_PATTERN = r"(?:(?:^|(?<=[=\s]))[-+])?\d*\.?\d+"
# A number written as text that a time label may be read as: plain ASCII decimals only (float() also takes '1_1' as 11
# and other scripts' digits).
PLAIN_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
EXPECTED = {
    "npz": "a .npz archive",
    "npy": "a .npy file",
    "h5ad": "an AnnData .h5ad file",
    "csv": "a CSV file",
    "parquet": "a Parquet file",
    "netcdf": "a NetCDF file",
    "zarr": "a zarr group",
}
# What the libraries raise on a truncated or damaged file, while opening it or while reading its data (zarr's
# zstd codec raises RuntimeError, pyarrow's ArrowInvalid is a ValueError, h5py's errors are OSError or KeyError).
READ_ERRORS = (OSError, EOFError, ValueError, RuntimeError, KeyError, IndexError, zipfile.BadZipFile, zlib.error)
GiB = 2**30

Read = tuple[da.Array, np.ndarray | None, dict]


def available_memory() -> int:
    """Bytes this process may still allocate: ``MemAvailable`` (Linux; physical memory elsewhere), or less when
    the memory limit of its cgroup (v2: a SLURM job, a container) leaves less room."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
        available = int(re.search(r"^MemAvailable:\s+(\d+) kB$", meminfo, re.MULTILINE).group(1)) * 1024
    except (OSError, AttributeError):
        available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    room = _cgroup_room()
    return max(0, available if room is None else min(available, room))


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup v2 memory limit; ``None`` without a limit (or without cgroup v2)."""
    try:
        name = re.search(r"^0::/(.*)$", Path("/proc/self/cgroup").read_text(), re.MULTILINE).group(1)
        group = Path("/sys/fs/cgroup", name)
        limit = (group / "memory.max").read_text().strip()
        return int(limit) - int((group / "memory.current").read_text()) if limit.isdigit() else None
    except (OSError, AttributeError, ValueError):
        return None


def format_bytes(size: float) -> str:
    """A size for a message: GiB with one decimal, MiB below a tenth of a GiB."""
    return f"{size / GiB:.1f} GiB" if size >= GiB / 10 else f"{size / 2**20:.1f} MiB"


def _not_readable(path: Path, fmt: str, err: BaseException) -> InputError:
    what = EXPECTED[fmt].split(" ", 1)[1]
    detail = (str(err).strip().splitlines() or [""])[0][:300]
    return InputError(f"{path}: not a readable {what}, truncated or damaged? ({type(err).__name__}: {detail})")


def _check_not_empty(path: Path, fmt: str) -> None:
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes); expected {EXPECTED[fmt]}")


@contextlib.contextmanager
def _reading(path: Path, fmt: str) -> Iterator[None]:
    """Turn what a library raises on a truncated or damaged file into an ``InputError`` naming it and its format."""
    try:
        yield
    except InputError:
        raise
    except READ_ERRORS as err:
        raise _not_readable(path, fmt, err) from err


def _read(fmt: str, path: Path, **options) -> Read:
    """One file (or folder) in one format: an empty or unreadable one is refused with its name and format."""
    _check_not_empty(path, fmt)
    with _reading(path, fmt):
        return READERS[fmt](path, **options)


def obs_chunk_rows(n_features: int) -> int:
    """Rows per dask chunk: about 64 MB of float64 per chunk bounds the memory of every pass."""
    return max(1, READ_CHUNK_BYTES // (8 * max(1, n_features)))


def _chunked(x, path: Path, key: str) -> da.Array:
    """A 2-d numeric array (numpy, scipy sparse or dask) as a dense dask array chunked along rows only."""
    if len(x.shape) != 2:
        raise InputError(f"{path}: key {key!r} must be 2-d (cells, features), got shape {tuple(x.shape)}")
    if not np.issubdtype(x.dtype, np.number):
        raise InputError(f"{path}: key {key!r} must hold numbers, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.complexfloating):  # numpy would drop the imaginary parts with a warning (audit 88)
        raise InputError(f"{path}: key {key!r} must hold real numbers, got dtype {x.dtype}")
    if x.shape[1] == 0:
        raise InputError(f"{path}: key {key!r} has no features (shape {tuple(x.shape)}); expected at least one column")
    if not isinstance(x, da.Array):
        x = da.from_array(x, chunks=(obs_chunk_rows(x.shape[1]), -1), asarray=False)
    dense = x.map_blocks(
        lambda block: block.toarray() if hasattr(block, "toarray") else np.asarray(block),
        dtype=x.dtype,
        meta=np.empty((0, 0), dtype=x.dtype),
    )
    return dense.rechunk((obs_chunk_rows(x.shape[1]), -1))


def _check_rows(path: Path, x: da.Array, x_key: str, labels: np.ndarray | None, t_key: str | None) -> None:
    if labels is not None and len(labels) != x.shape[0]:
        raise InputError(f"{path}: key {t_key!r} has {len(labels)} labels but {x_key!r} has {x.shape[0]} rows")


ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first member, or the end record of an empty zip


def read_npz(path: Path, x_key: str = "X", t_key: str | None = "t") -> Read:
    """An ``.npz`` holding a ``(cells, features)`` matrix and one time label per cell."""
    _check_is_zip(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise InputError(f"{path}: not a readable .npz archive ({err})") from err
    with archive:
        for key in (x_key, t_key):
            if key is not None and key not in archive.files:
                raise InputError(f"{path}: key {key!r} missing; the archive holds {sorted(archive.files)}")
        headers = {key: _npz_header(archive, key) for key in (x_key, t_key) if key is not None}
        for key, header in headers.items():
            if header is not None and header[1].hasobject:
                raise InputError(
                    f"{path}: key {key!r} holds Python objects (dtype {header[1]}), which are never unpickled; "
                    f"expected numbers or strings: save it as such, e.g. np.asarray({key}, dtype=float) "
                    "(dtype=str for text labels)"
                )
        _check_npz_fits(path, x_key, headers[x_key])
        x = _chunked(np.asarray(archive[x_key]), path, x_key)
        labels = None if t_key is None else np.asarray(archive[t_key]).reshape(-1)
    _check_rows(path, x, x_key, labels, t_key)
    return x, labels, {"x_key": x_key, "t_key": t_key}


def _check_is_zip(path: Path) -> None:
    """Refuse a file that does not start as a zip does, before numpy reads it as a .npy file or a pickle."""
    with open(path, "rb") as handle:
        start = handle.read(len(np.lib.format.MAGIC_PREFIX))
    if not start.startswith(ZIP_STARTS):
        found = "a .npy array" if start == np.lib.format.MAGIC_PREFIX else "not a zip archive"
        raise InputError(
            f"{path}: not a .npz archive ({found}); expected a .npz archive as numpy.savez writes (a zip of .npy files)"
        )


def _npz_header(archive, key: str) -> tuple[tuple, np.dtype] | None:
    """Shape and dtype of a ``.npz`` member from its header alone (no data read, nothing unpickled); ``None`` for a
    header version this does not read (loading the member will tell)."""
    try:
        with archive.zip.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            shape, _, dtype = read_header[version](member)
    except KeyError:
        return None
    return shape, dtype


def _check_npz_fits(path: Path, key: str, header: tuple[tuple, np.dtype] | None) -> None:
    """A ``.npz`` member is read whole: refuse one larger than the memory available before reading it."""
    if header is None:
        return
    shape, dtype = header
    need, available = int(np.prod(shape, dtype=np.float64) * dtype.itemsize), available_memory()
    if need > available:
        raise InputError(
            f"{path}: key {key!r} is {shape} {dtype}, {format_bytes(need)} read whole, more than the "
            f"{format_bytes(available)} of memory available; expected data that fits, or save it as a folder of "
            ".npy files (source npy), which is read by rows out of core"
        )


class NpyRows:
    """A ``.npy`` file, memory-mapped afresh on each read: tiny to pickle, so dask workers open it themselves."""

    def __init__(self, path: Path) -> None:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        self.path, self.shape, self.dtype, self.ndim = str(path), array.shape, array.dtype, array.ndim

    def __getitem__(self, key):
        return np.load(self.path, mmap_mode="r", allow_pickle=False)[key]


def read_npy(path: Path, x_key: str = "X", t_key: str | None = "t") -> Read:
    """A folder of raw ``.npy`` files: ``<x_key>.npy`` (cells, features), memory-mapped, and ``<t_key>.npy``.

    The raw format numpy writes fastest: no archive to unpack, read by rows straight from the page cache.
    """
    if not path.is_dir():
        raise InputError(f"{path}: source 'npy' needs a folder holding {x_key}.npy and {t_key}.npy")
    files = {}
    for key in (x_key, t_key):
        if key is not None and not (path / f"{key}.npy").is_file():
            found = sorted(p.stem for p in path.glob("*.npy"))
            raise InputError(f"{path}: {key}.npy missing (key {key!r}); the folder holds .npy files for {found}")
        files[key] = path / f"{key}.npy"
    for file in files.values():
        _check_not_empty(file, "npy")
    with _reading(files[x_key], "npy"):
        x = _chunked(NpyRows(files[x_key]), files[x_key], x_key)
    labels = None
    if t_key is not None:
        with _reading(files[t_key], "npy"):
            labels = np.load(files[t_key], allow_pickle=False).reshape(-1)
    _check_rows(path, x, x_key, labels, t_key)
    return x, labels, {"x_key": x_key, "t_key": t_key}


def read_h5ad(path: Path, x_key: str = "X", t_key: str | None = "t") -> Read:
    """AnnData: features from ``X``, ``layers/<name>`` or ``obsm/<name>`` (dense or sparse), time from ``obs``."""
    import anndata.experimental
    import h5py
    from anndata.io import read_elem

    if not h5py.is_hdf5(path):
        raise InputError(f"{path}: not an AnnData .h5ad file (not HDF5)")
    with h5py.File(path, "r") as handle:
        group, _, name = x_key.partition("/")
        if group not in ("X", "layers", "obsm") or (group == "X") == bool(name):
            raise InputError(f"{path}: x_key {x_key!r} must be 'X', 'layers/<name>' or 'obsm/<name>'")
        if x_key not in handle:
            found = ["X"] if "X" in handle else []
            found += [f"{g}/{k}" for g in ("layers", "obsm") if g in handle for k in handle[g]]
            raise InputError(f"{path}: key {x_key!r} missing; the file holds {found}")
        elem = handle[x_key]
        encoding = elem.attrs.get("encoding-type", "array")
        if encoding not in ("array", "csr_matrix", "csc_matrix"):
            raise InputError(f"{path}: key {x_key!r} is a {encoding}; expected a dense or sparse matrix")
        if encoding == "csc_matrix":
            matrix = read_elem(elem).tocsr()  # column-major storage cannot be read by rows
        else:
            rows = obs_chunk_rows(int(elem.attrs["shape"][1]) if encoding != "array" else elem.shape[1])
            matrix = anndata.experimental.read_elem_lazy(elem, chunks=(rows, -1))
        x = _chunked(matrix, path, x_key)
        labels = None
        if t_key is not None:
            obs = handle["obs"]
            if t_key not in obs or t_key == obs.attrs.get("_index"):
                columns = list(obs.attrs.get("column-order", []))
                raise InputError(f"{path}: obs column {t_key!r} missing; obs has columns {columns}")
            labels = np.asarray(read_elem(obs[t_key]))
        info = {"x_key": x_key, "t_key": t_key}
        var = handle.get("var")
        index = None if var is None else var.attrs.get("_index")
        if group != "obsm" and index is not None and index in var:  # var_names name the columns of X and layers
            info["feature_names"] = [str(name) for name in read_elem(var[index])]
    _check_rows(path, x, x_key, labels, t_key)
    return x, labels, info


def _column_list(columns: list[str]) -> str:
    """The file's columns for an error message: all of them up to 50; beyond, the first 20, the count, and the
    text columns' names would be lost, so the ones that look like times (time, day, hour, stage, age) follow."""
    if len(columns) <= 50:
        return f"columns {columns}"
    timely = [c for c in columns[20:] if re.search(r"time|day|hour|stage|age|^t$", c, re.IGNORECASE)]
    return (f"{len(columns)} columns, the first 20: {columns[:20]}"
            + (f"; later ones that may hold times: {timely[:20]}" if timely else ""))  # fmt: skip


def _refuse_repeated(path: Path, columns: list[str]) -> None:
    """A header that names a column twice: a reader keeps one (pyarrow) or renames the second (pandas: ``g3.1``),
    and the time or a feature would be read from the wrong one."""
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise InputError(f"{path}: the header repeats the column name(s) {repeated[:10]}; expected each column "
                         "named once")  # fmt: skip


def _plain_floats(column):
    """A column of pandas' nullable numbers as float64, its missing values (``pd.NA``) NaN, as pyarrow's nulls read."""

    def as_floats(part: pd.Series) -> pd.Series:
        return pd.Series(part.to_numpy(dtype=np.float64, na_value=np.nan), index=part.index, name=part.name)

    if isinstance(column, pd.Series):
        return as_floats(column)
    return column.map_partitions(as_floats, meta=pd.Series(dtype=np.float64, name=column.name))


def _read_frame(path: Path, frame, t_key: str | None, feature_columns: list[str] | None) -> Read:
    """A time column and feature columns (all numeric columns but the time by default) of a data frame."""
    columns = [str(c) for c in frame.columns]
    if t_key is not None and t_key not in columns:
        raise InputError(f"{path}: time column {t_key!r} missing; the file has {_column_list(columns)}")
    types = pd.api.types
    numeric = {
        str(c) for c, dtype in frame.dtypes.items() if types.is_numeric_dtype(dtype) and not types.is_bool_dtype(dtype)
    }
    text = [str(c) for c, dtype in frame.dtypes.items() if types.is_object_dtype(dtype) or types.is_string_dtype(dtype)]
    if feature_columns:
        missing = [c for c in feature_columns if c not in columns]
        if missing:
            raise InputError(f"{path}: feature columns {missing} missing; the file has {_column_list(columns)}")
        if t_key in feature_columns:
            raise InputError(f"{path}: feature_columns lists the time column {t_key!r}; a time is not a feature")
        if len(set(feature_columns)) < len(feature_columns):
            repeated = sorted({c for c in feature_columns if feature_columns.count(c) > 1})
            raise InputError(f"{path}: feature_columns repeats {repeated}; list each feature once")
        _check_not_mostly_numbers(path, frame, [c for c in feature_columns if c in text])
        not_numeric = [c for c in feature_columns if c not in numeric]
        if not_numeric:
            raise InputError(f"{path}: feature columns {not_numeric} are not numeric")
        features = list(feature_columns)
    else:
        _check_not_mostly_numbers(path, frame, [c for c in text if c != t_key])
        # A column without a header ("Unnamed: 0") is a row index (pandas' to_csv writes one), not a measurement.
        # (saved again with its index: "Unnamed: 0.1", the old index beside the new, review 55)
        unnamed = [c for c in columns if re.fullmatch(r"Unnamed: \d+(\.\d+)?", c)]
        features = [c for c in columns if c in numeric and c != t_key and c not in unnamed]
        if not features:
            raise InputError(f"{path}: no numeric feature columns besides the time column {t_key!r}")
    nullable = [c for c in features if isinstance(frame.dtypes[c], pd.api.extensions.ExtensionDtype)]
    if nullable:  # pandas' nullable numbers (Float64, Int64: what convert_dtypes writes) read as object (audit 88)
        frame = frame.assign(**{c: _plain_floats(frame[c]) for c in nullable})
    if isinstance(frame, pd.DataFrame):
        x, labels = frame[features].to_numpy(), None if t_key is None else frame[t_key].to_numpy()
    else:
        x, labels = frame[features].to_dask_array(lengths=True), None
        if t_key is not None:
            labels = frame[t_key].compute().to_numpy()
    info = {"t_key": t_key, "feature_columns": features}
    if isinstance(frame, pd.DataFrame) and labels is not None and len(np.unique(labels.astype(str))) > 1:
        # said by prepare: a feature that is one value within each time and differs across them is a label (another
        # time column, a batch), not a measurement: it separates the times by itself
        per_time = frame[features].groupby(labels.astype(str)).nunique()
        info["time_like_columns"] = [c for c in features if (per_time[c] <= 1).all() and frame[c].nunique() > 1]
    if not feature_columns:  # said by prepare: a column of labels, flags or row numbers is left out of the features
        info["left_out_columns"] = [c for c in columns if c not in features and c != t_key and c not in unnamed]
        info["unnamed_columns"] = unnamed
    return _chunked(x, path, "feature columns"), labels, info


def _check_not_mostly_numbers(path: Path, frame, columns: list[str]) -> None:
    """Refuse a text column whose entries are mostly numbers: a feature column with a stray value (a typo, a note),
    which would otherwise be left out of the features without a word. Labels (cell types, time labels) are text
    throughout and pass."""
    for name in columns:
        values = frame[name] if isinstance(frame, pd.DataFrame) else frame[name].compute()
        present = values.notna() & values.astype(str).str.strip().ne("")
        bad = (present & pd.to_numeric(values, errors="coerce").isna()).to_numpy(dtype=bool)
        n_bad = int(bad.sum())
        if 0 < n_bad < int(present.sum()) - n_bad:
            row = int(np.argmax(bad))
            more = f" and {n_bad - 1} more rows" if n_bad > 1 else ""
            raise InputError(
                f"{path}: column {name!r} is numeric except row {row} ({str(values.iloc[row])[:80]!r}){more} "
                "(data rows counted from 0); expected a number in every row of a feature column: fix "
                f"the value, or list the features in dataset.feature_columns to leave {name!r} out"
            )


def read_csv(path: Path, t_key: str | None = "t", feature_columns: list[str] | None = None) -> Read:
    """A CSV with a header: one row per cell (read into memory: text is for small data)."""
    try:
        frame = pd.read_csv(path)
        # pandas renames a repeated name ("g3.1"): the header as written, as pandas reads it (compressed, a BOM)
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
        _refuse_repeated(path, [name for name in header if name])  # empty ones: a spreadsheet's trailing commas
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(f"{path}: not a readable CSV file ({err})") from err
    compressed = path.suffix.lower() in (".gz", ".bz2", ".zip", ".xz", ".zst")  # its last byte is the archive's
    if len(frame) and frame.iloc[-1].isna().any() and not compressed and not _ends_with_line_break(path):
        raise InputError(
            f"{path}: the last row lacks values and no line break ends the file: truncated? Expected a complete "
            "CSV file (each row with every column, the last one ending in a line break)"
        )
    return _read_frame(path, frame, t_key, feature_columns)


def _ends_with_line_break(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) in (b"\n", b"\r")


def read_parquet(path: Path, t_key: str | None = "t", feature_columns: list[str] | None = None) -> Read:
    """A Parquet file (or folder of parts), read lazily by row groups through dask."""
    import dask.dataframe as dd

    try:
        frame = dd.read_parquet(path)
    except (ValueError, OSError) as err:
        _refuse_repeated(path, _parquet_names(path))
        raise InputError(f"{path}: not a readable Parquet file ({str(err).splitlines()[-1]})") from err
    return _read_frame(path, frame, t_key, feature_columns)


def _parquet_names(path: Path) -> list[str]:
    """The column names of a Parquet file (of a folder's first part), as its schema holds them; none where the
    file cannot be read at all."""
    import pyarrow.parquet as pq

    parts = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    try:
        return list(pq.read_schema(parts[0]).names) if parts else []
    except (OSError, ValueError):
        return []


def _read_xarray(path: Path, ds, x_key: str, t_key: str | None) -> Read:
    """A data variable with dims (obs, feature) and a time variable along obs, from an xarray dataset."""
    if x_key not in ds.variables:
        raise InputError(f"{path}: variable {x_key!r} missing; data variables are {sorted(map(str, ds.data_vars))}")
    var = ds[x_key]
    # a simulation's (frame, particle, feature), the frame's time ``t_key`` itself or a coordinate along it (audit
    # 62: time along frame got the bare "must have 2 dims")
    along = ds[t_key].dims[0] if t_key in ds.variables and ds[t_key].ndim == 1 else t_key
    if var.ndim == 3 and along in var.dims:
        # the particles: the longer of the other two dims (a few features, many particles)
        feature, particle = sorted((d for d in var.dims if d != along), key=lambda d: var.sizes[d])
        raise InputError(
            f"{path}: variable {x_key!r} has dims {var.dims}, one array per time; amcore reads one row per cell: "
            f"ds.stack(obs=({str(along)!r}, {str(particle)!r})).reset_index('obs').transpose('obs', "
            f"{str(feature)!r}) makes that layout, with {t_key!r} along obs (if {str(particle)!r} holds the "
            f"particles and {str(feature)!r} the features; for held-out times, give each frame its own particles: "
            "docs/leave-one-out.md)"
        )
    if var.ndim != 2:
        raise InputError(f"{path}: variable {x_key!r} must have 2 dims (obs, feature), got {var.dims}")
    labels = None
    if t_key is not None:
        if t_key not in ds.variables:
            raise InputError(f"{path}: time variable {t_key!r} missing; variables are {sorted(map(str, ds.variables))}")
        time = ds[t_key]
        if time.ndim != 1 or time.dims[0] not in var.dims:
            raise InputError(f"{path}: time variable {t_key!r} must be 1-d along a dim of {x_key!r} {var.dims}")
        var = var.transpose(time.dims[0], ...)
        labels = time.values
    data = var.data if isinstance(var.data, da.Array) else np.asarray(var.data)
    info = {"x_key": x_key, "t_key": t_key, "obs_dim": str(var.dims[0])}
    if t_key is not None and (unit := ds[t_key].attrs.get("units")):  # kept and said: sigma is per its square root
        info["t_units"] = str(unit)
    if var.dims[1] in var.coords and var.coords[var.dims[1]].ndim == 1:  # the features' names, as a coordinate
        info["feature_names"] = [str(name) for name in var.coords[var.dims[1]].values]
    return _chunked(data, path, x_key), labels, info


def read_netcdf(path: Path, x_key: str = "X", t_key: str | None = "t") -> Read:
    """NetCDF (4 or 3) through xarray, lazily."""
    import xarray as xr

    try:
        ds = xr.open_dataset(path, chunks={})
    except (ValueError, OSError) as err:
        raise InputError(f"{path}: not a readable NetCDF file ({str(err).splitlines()[0]})") from err
    return _read_xarray(path, ds, x_key, t_key)


def read_zarr(path: Path, x_key: str = "X", t_key: str | None = "t") -> Read:
    """A zarr group (v2 or v3) through xarray, lazily."""
    import xarray as xr

    try:
        ds = xr.open_zarr(path, consolidated=False)
    except (ValueError, OSError) as err:
        raise InputError(f"{path}: not a readable zarr group ({err})") from err
    return _read_xarray(path, ds, x_key, t_key)


READERS: dict[str, Callable[..., Read]] = {
    "npz": read_npz,
    "npy": read_npy,
    "h5ad": read_h5ad,
    "csv": read_csv,
    "parquet": read_parquet,
    "netcdf": read_netcdf,
    "zarr": read_zarr,
}
OPTIONS = {
    "npz": ("x_key", "t_key"),
    "npy": ("x_key", "t_key"),
    "h5ad": ("x_key", "t_key"),
    "csv": ("t_key", "feature_columns"),
    "parquet": ("t_key", "feature_columns"),
    "netcdf": ("x_key", "t_key"),
    "zarr": ("x_key", "t_key"),
}


def _number_or_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def directory_format(path: Path) -> str:
    """The format of a folder's files, from their one suffix."""
    if not path.is_dir():
        raise InputError(f"{path}: source 'directory' needs a folder")
    suffixes = {p.suffix for p in path.iterdir() if p.suffix in FORMATS.values()}
    if len(suffixes) != 1:
        raise InputError(f"{path}: cannot tell the file format from suffixes {sorted(suffixes)}; set format")
    return next(f for f, s in FORMATS.items() if s in suffixes)


def read_directory(
    path: Path,
    fmt: str | None = None,
    file_times: dict | None = None,
    time_pattern: str = DEFAULT_TIME_PATTERN,
    **options,
) -> Read:
    """A folder with one file per time point; the time comes from ``file_times`` or from the file name."""
    if not path.is_dir():
        raise InputError(f"{path}: source 'directory' needs a folder")
    fmt = fmt or directory_format(path)
    if file_times:
        files = [path / name for name in file_times]
        missing = [p.name for p in files if not p.exists()]
        if missing:
            raise InputError(f"{path}: files {missing} named in file_times do not exist")
        labels = list(file_times.values())
    else:
        files = sorted(p for p in path.iterdir() if p.suffix == FORMATS[fmt])
        pattern = re.compile(time_pattern)
        labels = []
        for file in files:
            match = pattern.search(file.stem)
            if match is None:
                raise InputError(f"{file}: no time in the file name (time_pattern {time_pattern!r})")
            labels.append(_number_or_text(match.group(1) if pattern.groups else match.group(0)))
        if len(files) > 1 and len(set(labels)) == 1:
            names = [f.name for f in files[:3]]
            raise InputError(
                f"{path}: every file's name gives the same time, {labels[0]} (time_pattern {time_pattern!r}, whose "
                f"first group or else whole match is the time, on {names}...): set time_pattern to pick the time, "
                r"e.g. 'day(\d+)', or list dataset.file_times"
            )
    if not files:
        raise InputError(f"{path}: no {FORMATS[fmt]} files")
    blocks, rows, first_names = [], {}, None
    for file in files:
        kwargs = {k: v for k, v in options.items() if k in OPTIONS[fmt] and k != "t_key"}
        x, _, info = _read(fmt, file, t_key=None, **kwargs)
        if blocks and x.shape[1] != blocks[0].shape[1]:
            raise InputError(
                f"{file}: {x.shape[1]} features but {files[0].name} has {blocks[0].shape[1]}; "
                "every file of a directory must have the same features"
            )
        names = _feature_names(info)
        if first_names is None:
            first_names = names
        elif names is not None and names != first_names:
            x = x[:, _same_order(file, names, files[0].name, first_names)]
        blocks.append(x)
        rows[file.name] = int(x.shape[0])
    per_row = np.repeat(np.array(labels, dtype=object), list(rows.values()))
    info = {**info, "t_key": None, "format": fmt, "files": rows, "file_labels": dict(zip(rows, labels, strict=True))}
    for key in ("feature_names", "feature_columns"):  # the first file's order, which every file's columns now take
        if key in info:
            info[key] = first_names
    if file_times:  # said by prepare: a file of the folder that file_times does not name is not read
        found = (p.name for p in path.iterdir() if p.suffix == FORMATS[fmt])
        info["unlisted_files"] = sorted(name for name in found if name not in rows)
    return da.concatenate(blocks).rechunk((obs_chunk_rows(blocks[0].shape[1]), -1)), per_row, info


def _feature_names(info: dict) -> list[str] | None:
    """The feature names a reader found (h5ad's var_names, NetCDF's coordinate, a table's columns), or None (npz)."""
    names = info.get("feature_names") or info.get("feature_columns")
    return None if names is None else [str(name) for name in names]


def _same_order(file: Path, names: list[str], first: str, first_names: list[str]) -> np.ndarray:
    """The columns of ``file`` in the order of the folder's first file: files written one per time may list the
    same genes in another order, and stacked by position they would mix the features in silence (audit 92: g2's
    values under g0 at one time). Other names than the first file's are refused, naming them."""
    if sorted(names) != sorted(first_names):
        extra, lacking = sorted(set(names) - set(first_names)), sorted(set(first_names) - set(names))
        raise InputError(f"{file}: its features are not those of {first}: it has {_first(extra)} that {first} "
                         f"lacks and lacks {_first(lacking)}; every file of a directory must have the same "
                         "features")  # fmt: skip
    if len(set(names)) < len(names):
        raise InputError(f"{file}: its features are those of {first} in another order, and some names repeat "
                         f"({_first(sorted({n for n in names if names.count(n) > 1}))}): they cannot be matched; "
                         "give each feature one name")  # fmt: skip
    position = {name: j for j, name in enumerate(names)}
    return np.array([position[name] for name in first_names])


def _first(items: list, n: int = 10) -> str:
    """The first ``n`` of ``items`` for a message, and how many more there are."""
    return f"{items[:n]}" + (f" and {len(items) - n} more" if len(items) > n else "")


MISSING_LABELS = {"", "na", "n/a", "nan", "none", "null", "-"}  # text a spreadsheet writes for no value


def _label_text(label) -> str:
    """A label as it is looked up in ``time_map``: text as is, numbers without a trailing ``.0``."""
    if isinstance(label, (float, np.floating)):
        return np.format_float_positional(float(label), trim="-")
    return str(label)


def as_number(key) -> float | None:
    try:
        return float(key)
    except (TypeError, ValueError):
        return None


# Dates written as text: ISO (2024-03-01, with a time of day or not), 01/03/2024, 1.3.24, 2024/03/01
DATE_TEXT = r"\d{4}-\d{1,2}-\d{1,2}(?:[ T].*)?|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}|\d{4}/\d{1,2}/\d{1,2}"


def _in_order(labels) -> list[str]:
    """Labels as text, by the first number each holds, then as text (audit 58: day 0, day 1, day 10, day 120, day 3)."""

    def key(label: str) -> tuple[float, str]:
        number = re.search(DEFAULT_TIME_PATTERN, label)
        return (float(number.group()) if number else np.inf, label)

    return sorted(map(str, labels), key=key)


def _suggested_map(text: list) -> str:
    """A ``time_map`` to start from: each label's first number (``E6.5``: 6.5, ``day-3``: 3), in order, where every
    label has one and they differ (check the unit: stages, days, hours); else the first label's entry."""
    numbers = [re.search(DEFAULT_TIME_PATTERN, str(label)) for label in text]
    if all(numbers) and len({float(n.group()) for n in numbers}) == len(text):
        pairs = sorted((float(n.group()), n.group(), str(label)) for n, label in zip(numbers, text, strict=True))
        shown = ", ".join(f"{label!r}: {number}" for _, number, label in pairs[:12])
        return f"{{{shown}{', ...' if len(pairs) > 12 else ''}}} (each label's number: check the unit)"
    return f"{{{_in_order(text)[0]!r}: 0.0, ...}}"


def to_times(labels: np.ndarray, time_map: dict | None, where: str) -> np.ndarray:
    """Float64 times from labels: numbers stay, text goes through ``time_map``; unknown text is an error.

    Labels stored in float32 are read as the decimals they were written as (0.1, not 0.10000000149011612: the
    float64 of a float32 0.1); a number finds its ``time_map`` key whichever way the key writes it (3, 3.0).
    Durations (timedelta64) are read in seconds, never in their storage unit (nanoseconds, often: a run of 10 s
    became 1e10 in silence); dates (datetime64) are refused: the time since which is the user's choice."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "m":
        seconds = labels / np.timedelta64(1, "s")  # NaT becomes NaN, a missing label
        print(f"{where}: durations read in seconds ({np.nanmin(seconds):g} to {np.nanmax(seconds):g})",
              file=sys.stderr)  # fmt: skip
        labels = seconds
    elif labels.dtype.kind == "M":
        raise InputError(
            f"{where}: times are dates ({labels.dtype}, first {labels.min()}): give the time since the first, in the "
            "unit that suits the process, e.g. hours: (t - t.min()) / np.timedelta64(1, 'h') (a duration, "
            "timedelta64, is read in seconds)"
        )
    if not time_map and np.issubdtype(labels.dtype, np.number) and labels.dtype.itemsize >= 8:
        return labels.astype(np.float64)
    codes, uniques = pd.factorize(labels)
    uniques = np.asarray(uniques)
    if np.issubdtype(uniques.dtype, np.floating) and uniques.dtype.itemsize < 8:
        uniques = [float(np.format_float_positional(u, trim="-")) for u in uniques]  # the shortest decimal
    else:
        uniques = uniques.tolist()
    if time_map:
        by_number = {n: value for key, value in time_map.items() if (n := as_number(key)) is not None}

        def mapped(label):
            if _label_text(label) in time_map:
                return time_map[_label_text(label)]
            number = None if isinstance(label, (str, bytes)) else as_number(label)
            return by_number.get(number)

        unknown = [u for u in uniques if mapped(u) is None]
        if unknown:
            raise InputError(f"{where}: labels {_first(unknown)} are not in time_map (keys {sorted(time_map)})")
        values = [float(mapped(u)) for u in uniques]
    else:
        text = [u for u in uniques if isinstance(u, (str, bytes, bool, np.bool_))]
        spelled = [float(u) if isinstance(u, str) and re.fullmatch(PLAIN_NUMBER, u.strip()) else u for u in uniques]
        plain = not any(isinstance(u, (str, bytes, bool, np.bool_)) for u in spelled)
        if text and plain and len(set(map(float, spelled))) == len(spelled):
            # numbers stored as text ("6.5", a CSV's quoted column), each label its own number ('01' beside '1', or
            # '2' beside 2, would merge two labels): read as the numbers they spell
            shown = sorted(text, key=float)[:10]
            print(f"{where}: text labels read as the numbers they spell ({', '.join(map(str, shown))})",
                  file=sys.stderr)  # fmt: skip
            uniques = spelled
        elif text:
            absent = [u for u in text if isinstance(u, str) and u.strip().lower() in MISSING_LABELS]
            if absent and all(u in absent or not isinstance(s, str) for u, s in zip(uniques, spelled, strict=True)):
                raise InputError(
                    f"{where}: time labels {absent} read as missing times beside numbers; expected a number in every "
                    "row: give those cells their time, or leave the time empty (NaN) and set dataset.drop_nonfinite: "
                    "true to drop them"
                )
            if all(isinstance(u, str) and re.fullmatch(DATE_TEXT, u.strip()) for u in text):
                # audit 58: the map suggested from each date's first number kept only its year (or its day)
                raise InputError(f"{where}: time labels are dates written as text ({_first(_in_order(text))}): "
                                 "amcore reads numbers; give the time since the first date, in the unit that suits "
                                 "the process, e.g. days: (pd.to_datetime(col) - pd.to_datetime(col).min()).dt.days "
                                 "in pandas (or dataset.time_map, a time per date)")  # fmt: skip
            raise InputError(f"{where}: time labels must be numbers, found {_first(_in_order(text))}; give "
                             f"dataset.time_map, e.g. {_suggested_map(text)}")  # fmt: skip
        values = [float(u) for u in uniques]
    return np.append(np.asarray(values, dtype=np.float64), np.nan)[codes]  # code -1 (a missing label): NaN


def content_sha256(path: Path) -> str:
    """SHA-256 of a file, or of every file under a folder (names and contents, in sorted order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda h=handle: h.read(2**20), b""):
                digest.update(block)
    return digest.hexdigest()


def _locate_row(row: int, path: Path, info: dict) -> tuple[Path, int]:
    """The file holding ``row`` (the input itself, or one file of a directory) and the row's 0-based place among
    that file's cells (a CSV's header not counted)."""
    if "files" not in info:
        return path, row
    ends = np.cumsum(list(info["files"].values()))
    k = int(np.searchsorted(ends, row, side="right"))
    return path / list(info["files"])[k], row - (int(ends[k - 1]) if k else 0)


def read_dataset(spec: dict) -> tuple[da.Array, np.ndarray, dict, np.ndarray]:
    """Read the file source that ``spec`` (the config's ``dataset`` section) describes: x in float32 (float64 when
    the file's values need it), float64 times,
    provenance, and each row's row number in the input (rows with NaN or inf dropped leave gaps)."""
    source = spec["source"]
    if "path" not in spec:
        raise InputError(f"dataset.path: source {source!r} needs a path")
    path = Path(spec["path"])
    if not path.exists():
        raise InputError(f"{path}: file not found")
    options = {k: spec[k] for k in ("x_key", "t_key", "feature_columns") if spec.get(k) is not None}
    if source == "directory":
        directory = {k: spec[k] for k in ("file_times", "time_pattern") if spec.get(k)}
        x, labels, info = read_directory(path, spec.get("format"), **directory, **options)
        info |= directory
        where = f"{path}: file_times" if spec.get("file_times") else f"{path}: file names"
    elif source in READERS:
        x, labels, info = _read(source, path, **{k: v for k, v in options.items() if k in OPTIONS[source]})
        where = f"{path}: key {info['t_key']!r}"
    else:
        raise InputError(f"dataset.source: unknown source {source!r}; expected simulate or one of {sorted(READERS)}")
    # The content hash reads every byte once more: let it run beside the finiteness pass instead of after it.
    with ThreadPoolExecutor(1) as pool:
        sha256 = pool.submit(content_sha256, path)
        try:  # the first pass over every value: a damaged chunk shows here, before anything is written
            x, time, n_bad, info, rows = _finite_rows(x, labels, spec, path, info, where)
        except InputError:
            raise
        except READ_ERRORS as err:
            raise _unreadable_file(path, source, info, options, err) from err
    provenance = {"path": str(path), "sha256": sha256.result(), "reader": info, "dropped_nonfinite": n_bad}
    return x, time, provenance, rows


def read_velocity(spec: dict, rows: np.ndarray, shape: tuple[int, int]) -> tuple[da.Array, dict]:
    """The measured velocity (RNA velocity, say) of each kept row (``rows``, as ``read_dataset`` returned them),
    from the array that ``dataset.v_key`` names in the same file (or each file of a directory); ``shape`` is the
    input's ``x`` before rows were dropped: the velocities must have the same rows and features.

    A NaN is read as 0, as scVelo writes NaN for the genes it fits no velocity to and a cell without a velocity
    is a row of them: a feature without a velocity moves none, and a cell whose velocity is 0 is unmeasured (its
    chain keeps the path's own velocity). Infinities are refused. Also returns how many NaN were read so."""
    key, path, source = spec["v_key"], Path(spec["path"]), spec["source"]
    fmt = (spec.get("format") or directory_format(path)) if source == "directory" else source
    if "x_key" not in OPTIONS.get(fmt, ()):
        formats = sorted(f for f, options in OPTIONS.items() if "x_key" in options)
        raise InputError(f"{path}: dataset.v_key names an array, and {fmt} files have none; velocities are read from "
                         f"{', '.join(formats)}")  # fmt: skip
    group, _, name = str(key).partition("/")
    if fmt == "h5ad" and (group not in ("layers", "obsm") or not name):
        raise InputError(f"{path}: dataset.v_key {key!r} must be 'layers/<name>' or 'obsm/<name>' (the velocity "
                         "beside the positions, as scVelo writes layers/velocity)")  # fmt: skip
    with _reading(path, fmt):
        if source == "directory":
            directory = {k: spec[k] for k in ("file_times", "time_pattern") if spec.get(k)}
            v, _, info = read_directory(path, fmt, **directory, x_key=key)
        else:
            v, _, info = _read(fmt, path, x_key=key, t_key=None)
    if v.shape != shape:
        raise InputError(f"{path}: key {key!r} (velocities) has shape {tuple(v.shape)}; expected one row per cell and "
                         f"one column per feature, as x has: {shape}")  # fmt: skip
    v = v[rows] if len(rows) != shape[0] else v
    infinite, nan = da.isinf(v).any(axis=1), da.isnan(v)
    infinite, nan_values, nan_cells = da.compute(infinite, nan.sum(), nan.any(axis=1).sum())
    if infinite.any():
        row = int(rows[np.argmax(infinite)])
        n = int(infinite.sum())
        raise InputError(f"{_locate_row(row, path, info)[0]}: key {key!r} (velocities) has inf values in {n} "
                         f"row{'s' if n > 1 else ''}, the first at row {row}")  # fmt: skip
    if nan_values:
        v = da.where(nan, 0, v)
    v = v.astype(np.result_type(v.dtype, np.float32))  # float64 stays so until prepare casts it (to_float32)
    return v, {"nan_values": int(nan_values), "nan_cells": int(nan_cells)}


def _unreadable_file(path: Path, source: str, info: dict, options: dict, err: BaseException) -> InputError:
    """The error for data that failed to read: in a directory, each file is read again to name the damaged one."""
    if "files" not in info:
        return _not_readable(path, source, err)
    fmt = info["format"]
    kwargs = {k: v for k, v in options.items() if k in OPTIONS[fmt] and k != "t_key"}
    for name in info["files"]:
        try:
            with _reading(path / name, fmt):
                _read(fmt, path / name, t_key=None, **kwargs)[0].sum().compute()
        except InputError as found:
            return found
    return _not_readable(path, fmt, err)


def _finite_rows(x: da.Array, labels: np.ndarray, spec: dict, path: Path, info: dict, where: str):
    """Times from labels, and the rows with NaN or inf refused (or dropped when ``drop_nonfinite``)."""
    time_map = spec.get("time_map") or {}
    time = to_times(labels, time_map, where)
    bad_x = (~da.isfinite(x)).any(axis=1).compute()
    bad = bad_x | ~np.isfinite(time)
    n_bad = int(bad.sum())
    if n_bad and not spec.get("drop_nonfinite", False):
        row = int(np.argmax(bad))
        key = info["t_key"]
        if bad_x[row]:
            column = int(np.argmin(np.isfinite(x[row].compute())))
            key = info["feature_columns"][column] if "feature_columns" in info else info["x_key"]
        file, within = _locate_row(row, path, info)
        raise InputError(
            f"{file}: key {key!r} has NaN or inf values in {n_bad} rows (the first: row {within} counting from 0, "
            f"time {time[row]:g}); set dataset.drop_nonfinite: true to drop them"
        )
    rows = np.flatnonzero(~bad)
    if n_bad:
        x, time = x[~bad], time[~bad]
    empty = sorted(label for label, t in time_map.items() if not np.any(time == float(t)))
    if empty:
        raise InputError(f"{where}: time_map labels {empty} have no cells; each listed time point needs cells")
    info |= {"time_map": time_map, "drop_nonfinite": bool(spec.get("drop_nonfinite", False))}
    by_time: dict[float, list[str]] = {}
    for label, value in time_map.items():
        by_time.setdefault(float(value), []).append(str(label))
    if merged := {f"{t:g}": labels for t, labels in by_time.items() if len(labels) > 1}:
        info["merged_labels"] = merged  # said by prepare: one time point from several labels, as the map asks
    # float64 stays float64 until preprocessing has centred it (preprocess.to_float32): cast first, values such as
    # 1e8 + noise of 1 would keep a few distinct levels.
    return x.astype(np.result_type(x.dtype, np.float32)), time, n_bad, info, rows
