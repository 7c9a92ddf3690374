"""Every reader on a real file written by the library users use, and every bad input refused with a clear error."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import xarray as xr
from conftest import cli_env
from snakemake.utils import validate

from amcore.data.prepare import build_snapshots
from amcore.data.readers import to_times
from amcore.data.store import Snapshots, check_time_resolution, read_store, write_store
from amcore.errors import InputError
from amcore.paths.interpolants import SnapshotPath

TIMES = [0.0, 0.5, 2.0]
LABELS = {"day0": 0.0, "day1": 0.5, "day4": 2.0}


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    """Cells at three times in shuffled order, so the store must regroup them."""
    rng = np.random.default_rng(0)
    t = rng.permutation(np.repeat(TIMES, [7, 9, 8]))
    x = (rng.standard_normal((len(t), 5)) + t[:, None]).astype(np.float32)
    return x, t


def text_labels(t: np.ndarray) -> np.ndarray:
    inverse = {v: k for k, v in LABELS.items()}
    return np.array([inverse[v] for v in t])


def check_round_trip(tmp_path: Path, spec: dict, x: np.ndarray, t: np.ndarray) -> dict:
    """Through the store on disk: each snapshot holds exactly that time's rows (in a seeded random order), each
    the input row ``obs_index`` names."""
    snaps = build_snapshots(spec)
    write_store(tmp_path / "store.zarr", snaps)
    back = read_store(tmp_path / "store.zarr")
    assert back.t_values.tolist() == sorted(set(t.tolist()))
    np.testing.assert_array_equal(back.x, x[back.obs_index])
    for k, tk in enumerate(back.t_values):
        rows = back.obs_index[back.offsets[k] : back.offsets[k + 1]]
        np.testing.assert_array_equal(np.sort(rows), np.flatnonzero(t == tk))
    assert back.x.dtype == np.float32
    return back.attrs["provenance"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_npz_round_trip_records_provenance(tmp_path, data):
    x, t = data
    np.savez(tmp_path / "in.npz", X=x, t=t)
    provenance = check_round_trip(tmp_path, {"source": "npz", "path": str(tmp_path / "in.npz")}, x, t)
    assert provenance["sha256"] == sha256(tmp_path / "in.npz")
    assert provenance["reader"]["x_key"] == "X" and provenance["dropped_nonfinite"] == 0


def test_npy_folder_is_memory_mapped_and_named_keys_are_checked(tmp_path, data):
    x, t = data
    folder = tmp_path / "raw"
    folder.mkdir()
    np.save(folder / "counts.npy", x)
    np.save(folder / "day.npy", t)
    spec = {"source": "npy", "path": str(folder), "x_key": "counts", "t_key": "day"}
    provenance = check_round_trip(tmp_path, spec, x, t)
    assert provenance["reader"] == {"x_key": "counts", "t_key": "day", "time_map": {}, "drop_nonfinite": False}
    with pytest.raises(InputError, match=r"raw: X\.npy missing \(key 'X'\).*\['counts', 'day'\]"):
        build_snapshots({"source": "npy", "path": str(folder)})
    (folder / "X.npy").write_text("not numpy")
    with pytest.raises(InputError, match=r"raw/X\.npy: not a readable \.npy file"):
        build_snapshots({**spec, "x_key": "X"})


@pytest.mark.parametrize("x_key", ["X", "X-csr", "X-csc", "layers/counts", "obsm/X_pca"])
def test_h5ad_round_trip(tmp_path, data, x_key):
    x, t = data
    matrix = {"X": x, "X-csr": sp.csr_matrix(x), "X-csc": sp.csc_matrix(x)}.get(x_key, np.zeros_like(x))
    obs = pd.DataFrame({"day": pd.Categorical(text_labels(t)), "t": t}, index=[f"c{i}" for i in range(len(t))])
    adata = ad.AnnData(X=matrix, obs=obs)
    adata.layers["counts"] = x
    adata.obsm["X_pca"] = x[:, :3].astype(np.float64)
    adata.write_h5ad(tmp_path / "in.h5ad")
    spec = {"source": "h5ad", "path": str(tmp_path / "in.h5ad"), "x_key": x_key.split("-")[0], "t_key": "day"}
    expected = x[:, :3] if x_key == "obsm/X_pca" else x
    provenance = check_round_trip(tmp_path, {**spec, "time_map": LABELS}, expected, t)
    assert provenance["reader"]["time_map"] == LABELS
    check_round_trip(tmp_path, {**spec, "t_key": "t"}, expected, t)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tables_take_numeric_columns_or_the_given_ones(tmp_path, data, fmt):
    x, t = data
    frame = pd.DataFrame(x, columns=[f"g{i}" for i in range(x.shape[1])])
    frame.insert(0, "cell", [f"c{i}" for i in range(len(t))])
    frame["time"] = t
    path = tmp_path / f"in.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    spec = {"source": fmt, "path": str(path), "t_key": "time"}
    provenance = check_round_trip(tmp_path, spec, x, t)
    assert provenance["reader"]["feature_columns"] == [f"g{i}" for i in range(x.shape[1])], "text column skipped"
    check_round_trip(tmp_path, {**spec, "feature_columns": ["g3", "g1"]}, x[:, [3, 1]], t)
    frame["time"] = text_labels(t)
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    check_round_trip(tmp_path, {**spec, "time_map": LABELS}, x, t)


def test_pandas_nullable_numbers_in_parquet_are_read_as_floats_and_missing_ones_named(tmp_path, data):
    """``convert_dtypes()`` writes Float64 and Int64 columns: dask read them as objects, and prepare refused numbers
    as "not numbers" without naming the column (audit 88). Read as float64, a missing value is NaN, named as such."""
    x, t = data
    frame = pd.DataFrame(x.astype(np.float64), columns=[f"g{i}" for i in range(x.shape[1])]).assign(time=t)
    frame["g4"] = np.arange(len(t)) % 4
    frame = frame.convert_dtypes()
    assert str(frame["g0"].dtype) == "Float64" and str(frame["g4"].dtype) == "Int64"
    frame.to_parquet(tmp_path / "in.parquet")
    spec = {"source": "parquet", "path": str(tmp_path / "in.parquet"), "t_key": "time"}
    check_round_trip(tmp_path, spec, np.c_[x[:, :4], np.arange(len(t)) % 4].astype(np.float32), t)
    frame.loc[5, "g2"] = pd.NA
    frame.to_parquet(tmp_path / "in.parquet")
    with pytest.raises(InputError, match=r"in\.parquet: key 'g2' has NaN or inf values in 1 rows"):
        build_snapshots(spec)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.ones((24, 3)) + 1j, r"key 'X' must hold real numbers, got dtype complex128"),  # numpy dropped the imaginary
        (np.ones((24, 0)), r"key 'X' has no features \(shape \(24, 0\)\); expected at least one column"),
    ],
)
def test_complex_values_and_no_features_are_refused(tmp_path, data, x, message):
    """Both passed prepare (audit 88): complex values lost their imaginary parts with a numpy warning, and a store of
    no features failed only in training, as a divergence."""
    t = data[1]
    with pytest.raises(InputError, match=rf"in\.npz: {message}"):
        build_snapshots({"source": "npz", "path": write_npz(tmp_path, x, t)})
    if x.shape[1] == 0:
        obs = pd.DataFrame({"time": t}, index=[f"c{i}" for i in range(len(t))])
        ad.AnnData(X=x, obs=obs).write_h5ad(tmp_path / "in.h5ad")
        with pytest.raises(InputError, match=rf"in\.h5ad: {message}"):
            build_snapshots({"source": "h5ad", "path": str(tmp_path / "in.h5ad"), "t_key": "time"})


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_xarray_formats_find_obs_by_the_time_variable(tmp_path, data, fmt):
    x, t = data
    ds = xr.Dataset({"expr": (("cell", "gene"), x)}, coords={"day": ("cell", t)})
    ds = ds.transpose("gene", "cell")  # stored feature-major: the time variable says which dim is obs
    path = tmp_path / ("in.nc" if fmt == "netcdf" else "in.zarr")
    ds.to_netcdf(path) if fmt == "netcdf" else ds.to_zarr(path, zarr_format=3, consolidated=False)
    provenance = check_round_trip(tmp_path, {"source": fmt, "path": str(path), "x_key": "expr", "t_key": "day"}, x, t)
    assert provenance["reader"]["obs_dim"] == "cell"
    assert len(provenance["sha256"]) == 64


def test_directory_times_from_names_or_a_mapping(tmp_path, data):
    x, t = data
    folder = tmp_path / "per_time"
    folder.mkdir()
    for label, tk in LABELS.items():
        frame = pd.DataFrame(x[t == tk], columns=[f"g{i}" for i in range(x.shape[1])])
        frame.to_csv(folder / f"{label}.csv", index=False)
    spec = {"source": "directory", "path": str(folder), "time_pattern": r"(day\d+)", "time_map": LABELS}
    x, t = by_file(x, t)
    provenance = check_round_trip(tmp_path / "a", spec, x, t)
    assert provenance["reader"]["files"] == {"day0.csv": 7, "day1.csv": 9, "day4.csv": 8}
    # Times parsed from the numbers in the names (days, not the mapped times).
    parsed = {0.0: 0.0, 0.5: 1.0, 2.0: 4.0}
    check_round_trip(tmp_path / "b", {"source": "directory", "path": str(folder)}, x, np.vectorize(parsed.get)(t))
    mapping = {"file_times": {f"{label}.csv": tk for label, tk in LABELS.items()}}
    check_round_trip(tmp_path / "c", {"source": "directory", "path": str(folder), **mapping}, x, t)


def test_time_in_file_names_is_never_read_as_a_sign_or_a_replicate(tmp_path):
    """'day-3' is day 3 (the sign once made it -3, reversing time in silence); names whose first number is the
    same for every file (rep1_day0, rep1_day3) are refused with the setting that fixes them."""
    dashed, replicate = tmp_path / "dashed", tmp_path / "replicate"
    for folder, names in ((dashed, ("day-0", "day-3", "day-10", "-1")), (replicate, ("rep1_day0", "rep1_day3"))):
        folder.mkdir()
        for name in names:
            np.savez(folder / f"{name}.npz", X=np.random.default_rng(0).normal(size=(5, 2)))
    # As the pipeline reads it: the schema's defaults filled in (one of them once put the sign back).
    config = {"dataset": {"source": "directory", "path": str(dashed)}}
    validate(config, str(Path(__file__).parents[1] / "workflow" / "schemas" / "config.schema.yaml"))
    snaps = build_snapshots(config["dataset"])
    assert snaps.t_values.tolist() == [-1.0, 0.0, 3.0, 10.0]  # a leading sign is still a sign
    assert snaps.attrs["provenance"]["reader"]["file_labels"]["day-3.npz"] == 3.0
    with pytest.raises(InputError, match=r"every file's name gives the same time, 1\.0 .* set time_pattern"):
        build_snapshots({"source": "directory", "path": str(replicate)})
    by_day = build_snapshots({"source": "directory", "path": str(replicate), "time_pattern": r"day(\d+)"})
    assert by_day.t_values.tolist() == [0.0, 3.0]


def test_float32_time_labels_are_the_decimals_written_and_map_keys_match_numbers_however_written(tmp_path):
    """A float32 column of 0.1, 0.2, 0.3 (AnnData obs often holds float32) was read as 0.10000000149011612, ..., so
    holding out 0.2 or mapping '0.1' failed; whole-number keys written '3.0' did not match the label 3.0."""
    x = np.random.default_rng(0).normal(size=(30, 2))
    t = np.repeat(np.array([0.1, 0.2, 0.3], dtype=np.float32), 10)
    np.savez(tmp_path / "f32.npz", X=x, t=t, days=np.repeat([0.0, 3.0, 7.0], 10))
    spec = {"source": "npz", "path": str(tmp_path / "f32.npz")}
    assert build_snapshots(spec, holdout_times=[0.2]).t_values.tolist() == [0.1, 0.2, 0.3]
    mapped = build_snapshots(spec | {"time_map": {"0.1": 0, "0.2": 1, "0.3": 2}})
    assert mapped.t_values.tolist() == [0.0, 1.0, 2.0]
    by_day = build_snapshots(spec | {"t_key": "days", "time_map": {"0.0": 0, "3.0": 1, "7": 2}})
    assert by_day.t_values.tolist() == [0.0, 1.0, 2.0]


def test_table_columns_that_are_no_features(tmp_path):
    """pandas' to_csv writes the row index as a column without a header: left out and said, never a feature; the
    time column or a repeated column listed in feature_columns is refused."""
    frame = pd.DataFrame({"a": np.arange(6.0), "b": np.ones(6), "time": np.repeat([0.0, 1.0], 3)})
    frame.to_csv(tmp_path / "indexed.csv")  # index=True, the default
    spec = {"source": "csv", "path": str(tmp_path / "indexed.csv"), "t_key": "time"}
    snaps = build_snapshots(spec)
    assert snaps.attrs["feature_names"] == ["a", "b"]
    assert snaps.attrs["provenance"]["reader"]["unnamed_columns"] == ["Unnamed: 0"]
    with pytest.raises(InputError, match=r"feature_columns lists the time column 'time'"):
        build_snapshots(spec | {"feature_columns": ["a", "time"]})
    with pytest.raises(InputError, match=r"feature_columns repeats \['a'\]"):
        build_snapshots(spec | {"feature_columns": ["a", "a", "b"]})
    # A second time column (days beside the hours t_key names) is a feature only by accident: said, not refused.
    frame.assign(day=frame["time"] * 24, label=["x", "y"] * 3).to_csv(tmp_path / "days.csv", index=False)
    days = build_snapshots({"source": "csv", "path": str(tmp_path / "days.csv"), "t_key": "time"})
    assert days.attrs["provenance"]["reader"]["time_like_columns"] == ["day"]  # b is constant throughout


def by_file(x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows as a directory with one file per time (files in time order) reads them."""
    order = np.argsort(t, kind="stable")
    return x[order], t[order]


def test_directory_of_h5ad_files(tmp_path, data):
    x, t = data
    folder = tmp_path / "per_time"
    folder.mkdir()
    for tk in TIMES:
        ad.AnnData(X=sp.csr_matrix(x[t == tk])).write_h5ad(folder / f"t{tk}.h5ad")
    check_round_trip(tmp_path, {"source": "directory", "path": str(folder)}, *by_file(x, t))  # times: file names


# --- bad input: each refused with the file, the key and what was expected -------------------------------------


def write_npz(tmp_path: Path, x: np.ndarray, t: np.ndarray) -> str:
    path = tmp_path / "in.npz"
    np.savez(path, X=x, t=t)
    return str(path)


def test_nonfinite_rows_are_refused_or_dropped_and_counted(tmp_path, data):
    x, t = data
    x[[2, 5], 1] = [np.nan, np.inf]
    spec = {"source": "npz", "path": write_npz(tmp_path, x, t)}
    first = rf"\(the first: row 2 counting from 0, time {t[2]:g}\)"
    with pytest.raises(InputError, match=rf"in\.npz: key 'X' has NaN or inf values in 2 rows {first}.*drop_nonfinite"):
        build_snapshots(spec)
    snaps = build_snapshots({**spec, "drop_nonfinite": True})
    assert snaps.attrs["provenance"]["dropped_nonfinite"] == 2
    assert snaps.x.shape[0] == len(t) - 2 and np.isfinite(snaps.x.compute()).all()


def test_nonfinite_values_in_a_csv_name_the_column(tmp_path, data):
    x, t = data
    frame = pd.DataFrame(x, columns=list("abcde")).assign(t=t)
    frame.loc[3, "t"] = np.nan
    frame.to_csv(tmp_path / "in.csv", index=False)
    spec = {"source": "csv", "path": str(tmp_path / "in.csv")}
    with pytest.raises(InputError, match=r"in\.csv: key 't' has NaN or inf values in 1 rows"):
        build_snapshots(spec)
    frame.loc[1, "c"] = -np.inf
    frame.to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(InputError, match=r"in\.csv: key 'c' has NaN or inf values in 2 rows"):
        build_snapshots(spec)


def test_bad_value_in_one_file_of_a_directory_names_that_file(tmp_path, data):
    x, t = data
    for k, tk in enumerate(TIMES):
        block = x[t == tk].copy()
        if k == 1:
            block[-1, 0] = np.inf
        np.savez(tmp_path / f"t{tk}.npz", X=block)
    last = int((t == TIMES[1]).sum()) - 1  # the last row of the second file, counted within it
    with pytest.raises(
        InputError, match=rf"t0\.5\.npz: key 'X' has NaN or inf values in 1 rows \(the first: row {last} counting"
    ):
        build_snapshots({"source": "directory", "path": str(tmp_path)})


def test_a_single_time_point_is_refused(tmp_path, data):
    x, _ = data
    with pytest.raises(InputError, match=r"in\.npz: key 't': found 1 time point"):
        build_snapshots({"source": "npz", "path": write_npz(tmp_path, x, np.ones(len(x)))})


def test_a_time_map_label_without_cells_is_refused(tmp_path, data):
    x, t = data
    spec = {"source": "npz", "path": write_npz(tmp_path, x, text_labels(t)), "time_map": {**LABELS, "day9": 9}}
    with pytest.raises(InputError, match=r"in\.npz: key 't'.*\['day9'\] have no cells"):
        build_snapshots(spec)


def test_text_times_need_a_mapping_that_covers_them(tmp_path, data):
    x, t = data
    spec = {"source": "npz", "path": write_npz(tmp_path, x, text_labels(t))}
    with pytest.raises(InputError, match=r"in\.npz: key 't': time labels must be numbers.*time_map"):
        build_snapshots(spec)
    with pytest.raises(InputError, match=r"labels \['day4'\] are not in time_map"):
        build_snapshots({**spec, "time_map": {"day0": 0, "day1": 1}})


def test_stage_labels_get_a_whole_time_map_to_start_from_and_numbers_as_text_are_read(tmp_path, data):
    """Audit 18: 'E6.5'-like stages were told to map the first label found to 0 (another stage's, in file order);
    '6.5' stored as text was refused as not a number."""
    x, t = data
    stages = np.array([f"E{6.5 + v:g}" for v in t])  # E6.5, E7, E7.5, ... in the data's shuffled order
    spec = {"source": "npz", "path": write_npz(tmp_path, x, stages)}
    expected = ", ".join(f"'E{6.5 + v:g}': {6.5 + v:g}" for v in sorted(set(t)))
    with pytest.raises(InputError, match=re.escape(f"e.g. {{{expected}}} (each label's number: check the unit)")):
        build_snapshots(spec)
    spelled = build_snapshots({"source": "npz", "path": write_npz(tmp_path, x, np.array([f"{v:g}" for v in t]))})
    np.testing.assert_array_equal(spelled.t_values, sorted(set(t)))
    # Only plain decimals, one number per label: float() reads '1_1' as 11 (a day_replicate label) and would merge
    # '01' and '1' into one time (review).
    with pytest.raises(InputError, match="time labels must be numbers"):
        to_times(np.array(["1_1", "1_2", "2_1"], dtype=object), None, "w")
    with pytest.raises(InputError, match="time labels must be numbers"):
        to_times(np.array(["01", "1", "2"], dtype=object), None, "w")


@pytest.mark.parametrize("fmt", ["csv", "h5ad"])
def test_directory_files_with_the_features_in_another_order_are_matched_by_name(tmp_path, data, fmt):
    """Audit 92: one file per time, the same genes, one file listing them in another order: stacked by position,
    g2's values were stored under g0 at that time, in silence. Matched by name they land in the first file's
    order; a file with another gene is refused, naming it."""
    x, t = data
    names = [f"g{i}" for i in range(x.shape[1])]
    folder = tmp_path / fmt
    folder.mkdir()
    for k, tk in enumerate(TIMES):
        order = list(range(x.shape[1]))[::-1] if k == 1 else list(range(x.shape[1]))  # the middle file reversed
        frame = pd.DataFrame(x[t == tk][:, order], columns=[names[j] for j in order])
        if fmt == "csv":
            frame.to_csv(folder / f"t{tk}.csv", index=False)
        else:
            ad.AnnData(X=frame.to_numpy(), var=pd.DataFrame(index=frame.columns)).write_h5ad(folder / f"t{tk}.h5ad")
    check_round_trip(tmp_path / "store", {"source": "directory", "path": str(folder)}, *by_file(x, t))
    assert build_snapshots({"source": "directory", "path": str(folder)}).attrs["feature_names"] == names
    frame = pd.DataFrame(x[t == 2.0], columns=[*names[:-1], "other"])
    if fmt == "csv":
        frame.to_csv(folder / "t2.0.csv", index=False)
    else:
        ad.AnnData(X=frame.to_numpy(), var=pd.DataFrame(index=frame.columns)).write_h5ad(folder / "t2.0.h5ad")
    with pytest.raises(InputError, match=rf"t2\.0\.{fmt}: its features are not those of t0\.0\.{fmt}: it has "
                                         rf"\['other'\] that t0\.0\.{fmt} lacks and lacks \['g4'\]"):  # fmt: skip
        build_snapshots({"source": "directory", "path": str(folder)})


def test_directory_files_must_share_feature_dims(tmp_path, data):
    x, t = data
    np.savez(tmp_path / "t0.npz", X=x[t == 0.0])
    np.savez(tmp_path / "t1.npz", X=x[t == 0.5][:, :3])
    with pytest.raises(InputError, match=r"t1\.npz: 3 features but t0\.npz has 5"):
        build_snapshots({"source": "directory", "path": str(tmp_path)})


def test_missing_keys_and_columns_are_named(tmp_path, data):
    x, t = data
    npz = write_npz(tmp_path, x, t)
    ad.AnnData(X=x, obs=pd.DataFrame({"t": t}, index=[str(i) for i in range(len(t))])).write_h5ad(tmp_path / "a.h5ad")
    pd.DataFrame(x, columns=list("abcde")).assign(t=t).to_csv(tmp_path / "a.csv", index=False)
    xr.Dataset({"X": (("obs", "f"), x)}, coords={"t": ("obs", t)}).to_netcdf(tmp_path / "a.nc")
    cases = [
        ({"source": "npz", "path": npz, "x_key": "counts"}, r"in\.npz: key 'counts' missing.*\['X', 't'\]"),
        ({"source": "h5ad", "path": str(tmp_path / "a.h5ad"), "t_key": "day"}, r"a\.h5ad: obs column 'day' missing"),
        ({"source": "h5ad", "path": str(tmp_path / "a.h5ad"), "x_key": "layers/raw"}, r"'layers/raw' missing"),
        ({"source": "csv", "path": str(tmp_path / "a.csv"), "t_key": "day"}, r"a\.csv: time column 'day' missing"),
        ({"source": "csv", "path": str(tmp_path / "a.csv"), "feature_columns": ["a", "z"]}, r"columns \['z'\] missing"),
        ({"source": "netcdf", "path": str(tmp_path / "a.nc"), "x_key": "Y"}, r"a\.nc: variable 'Y' missing"),
        ({"source": "netcdf", "path": str(tmp_path / "a.nc"), "t_key": "day"}, r"time variable 'day' missing"),
        ({"source": "npz", "path": str(tmp_path / "nope.npz")}, r"nope\.npz: file not found"),
    ]
    for spec, message in cases:
        with pytest.raises(InputError, match=message):
            build_snapshots(spec)


def test_a_header_that_names_a_column_twice_is_refused_by_name(tmp_path, data):
    """Audit 51: pandas read a CSV's second 'g3' as a feature 'g3.1' in silence, and a second time column as
    'day.1' (the first, a feature, became the time); pyarrow's refusal read as an unreadable file."""
    x, t = data
    header = "g0,g1,g3,g3,g4,day"
    rows = [",".join(f"{v:.4f}" for v in row) + f",{tk:g}" for row, tk in zip(x, t, strict=True)]
    (tmp_path / "a.csv").write_text("\n".join([header, *rows]) + "\n")
    with pytest.raises(InputError, match=r"a\.csv: the header repeats the column name\(s\) \['g3'\]"):
        build_snapshots({"source": "csv", "path": str(tmp_path / "a.csv"), "t_key": "day"})
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_arrays([pa.array(x[:, 0]), pa.array(t), pa.array(t)], names=["g0", "day", "day"])
    pq.write_table(table, tmp_path / "a.parquet")
    with pytest.raises(InputError, match=r"a\.parquet: the header repeats the column name\(s\) \['day'\]"):
        build_snapshots({"source": "parquet", "path": str(tmp_path / "a.parquet"), "t_key": "day"})


def test_a_missing_time_column_shows_every_column_or_the_ones_that_may_be_times(tmp_path, data):
    """Audit 51: of 23 columns only the first 20 were shown, the time column ('day') among those left out."""
    x, t = data
    frame = pd.DataFrame(np.repeat(x, 5, axis=1), columns=[f"g{i}" for i in range(25)]).assign(batch="b", day=t)
    frame.to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(InputError, match=r"'t' missing; the file has columns \['g0', .*'batch', 'day'\]$"):
        build_snapshots({"source": "csv", "path": str(tmp_path / "a.csv")})
    wide = pd.DataFrame(np.repeat(x, 12, axis=1), columns=[f"g{i}" for i in range(60)]).assign(batch="b", Day=t)
    wide.to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(InputError, match=r"62 columns, the first 20: .*; later ones that may hold times: \['Day'\]"):
        build_snapshots({"source": "csv", "path": str(tmp_path / "b.csv")})


def test_a_missing_time_spelled_as_text_is_named_as_missing(tmp_path, data):
    """Audit 51: 'NA' among numbers stored as text was offered a time_map that mapped day 3 to 0."""
    x, t = data
    labels = np.array([f"{v:g}" for v in t], dtype=object)
    labels[3] = "NA"
    with pytest.raises(InputError, match=r"time labels \['NA'\] read as missing times.*drop_nonfinite"):
        to_times(labels, None, "w")
    with pytest.raises(InputError, match=r"found \['day0', 'day1', 'day4'\]; give dataset.time_map"):
        to_times(text_labels(t), None, "w")


@pytest.mark.parametrize(
    "source, name, message",
    [
        ("h5ad", "a.h5ad", "not an AnnData .h5ad file"),
        ("npz", "a.npz", "not a .npz archive"),
        ("parquet", "a.parquet", "not a readable Parquet file"),
        ("netcdf", "a.nc", "not a readable NetCDF file"),
        ("zarr", "a.zarr", "not a readable zarr group"),
        ("csv", "a.csv", "not a readable CSV file"),
    ],
)
def test_a_file_that_is_not_what_its_extension_says(tmp_path, source, name, message):
    path = tmp_path / name
    if source == "csv":
        path.write_bytes(bytes(range(256)) * 4)
    else:
        path.write_text("cell,time\nc1,0\n")
    with pytest.raises(InputError, match=rf"{name}: {message}"):
        build_snapshots({"source": source, "path": str(path)})


@pytest.mark.parametrize("content", ["text", "npy"])
def test_a_file_named_npz_that_is_no_zip_says_so(tmp_path, data, content):
    """numpy reads a non-zip file as a .npy or a pickle: its advice to allow pickles must not reach the user."""
    path = tmp_path / "a.npz"
    path.write_text("cell,time\nc1,0\n") if content == "text" else np.save(open(path, "wb"), data[0])
    with pytest.raises(InputError, match=r"a\.npz: not a \.npz archive.*numpy\.savez") as raised:
        build_snapshots({"source": "npz", "path": str(path)})
    assert "pickle" not in str(raised.value)


@pytest.mark.parametrize("key", ["t", "X"])
def test_an_object_array_in_an_npz_is_named_not_called_damaged(tmp_path, data, key):
    """Arrays saved from pandas ``.values`` hold Python objects: the archive is fine, the key needs numbers."""
    x, t = data
    arrays = {"X": x, "t": t, key: (x if key == "X" else text_labels(t)).astype(object)}
    np.savez(tmp_path / "in.npz", **arrays)
    expected = rf"in\.npz: key '{key}' holds Python objects \(dtype object\).*np\.asarray\({key}, dtype=float\)"
    with pytest.raises(InputError, match=expected):
        build_snapshots({"source": "npz", "path": str(tmp_path / "in.npz"), "time_map": LABELS})


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_stray_text_value_in_a_numeric_column_is_refused(tmp_path, data, fmt):
    """Read as text, the column would drop out of the default features without a word; label columns still do."""
    x, t = data
    frame = pd.DataFrame(x, columns=[f"g{i}" for i in range(x.shape[1])]).assign(cell="c", time=text_labels(t))
    frame["g1"] = frame["g1"].astype(str)
    frame.loc[3, "g1"] = "oops"
    path = tmp_path / f"in.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    spec = {"source": fmt, "path": str(path), "t_key": "time", "time_map": LABELS}
    with pytest.raises(InputError, match=rf"in\.{fmt}: column 'g1' is numeric except row 3 \('oops'\) \(data rows"):
        build_snapshots(spec)
    with pytest.raises(InputError, match=r"column 'g1' is numeric except row 3"):  # also when named a feature
        build_snapshots({**spec, "feature_columns": ["g0", "g1"]})
    check_round_trip(tmp_path, {**spec, "feature_columns": ["g0", "g2"]}, x[:, [0, 2]], t)


def test_holdout_times_must_be_interior_observed_times(tmp_path, data):
    x, t = data
    spec = {"source": "npz", "path": write_npz(tmp_path, x, t)}
    with pytest.raises(InputError, match=r"holdout_times: \[1\.0\] are not observed times"):
        build_snapshots(spec, holdout_times=[1.0])
    # The first or the last time: no previous time to predict it from, or no next one for the baselines.
    for held, ends in (([0.0], "0.0"), ([2.0], "2.0"), ([2.0, 0.5, 0.0], "0.0, 2.0")):
        with pytest.raises(InputError, match=rf"holdout_times: \[{ends}\] must be interior.*of \[0\.0, 0\.5, 2\.0\]"):
            build_snapshots(spec, holdout_times=held)
    assert build_snapshots(spec, holdout_times=[0.5]).attrs["holdout_times"] == [0.5]


def test_timestamps_float32_cannot_tell_apart_are_refused(tmp_path, data):
    """Epoch seconds a minute apart: float32 (training, integration) resolves 128 s at 1.7e9, so the three
    times would collapse onto two. Mapped to minutes they are kept as they are."""
    x, t = data
    stamps = 1.7e9 + 60.0 * np.searchsorted([0.0, 0.5, 2.0], t)
    assert len(np.unique(stamps.astype(np.float32))) < len(np.unique(stamps))  # the collapse the check prevents
    spec = {"source": "npz", "path": write_npz(tmp_path, x, stamps), "t_key": "t"}
    with pytest.raises(InputError, match=r"key 't': times 1700000000 to 1700000120.*resolves only 128 there"):
        build_snapshots(spec)
    with pytest.raises(InputError, match="time: times 1700000000 to 1700000120.*resolves only 128"):
        Snapshots.from_labels(x, stamps)  # the library's arrays, as a file
    order = np.argsort(stamps, kind="stable")
    by_hand = Snapshots(x[order], np.unique(stamps), np.searchsorted(stamps[order], [*np.unique(stamps), np.inf]))
    with pytest.raises(InputError, match="snapshot times: .*resolves only 128"):  # and a layout built by hand
        SnapshotPath(by_hand)
    minutes = {str(int(s)): float(k) for k, s in enumerate(np.unique(stamps))}
    assert build_snapshots(spec | {"time_map": minutes}).t_values.tolist() == [0.0, 1.0, 2.0]
    # Hours as epoch seconds keep 128 s of 3,600: a 4 % error in every gap, also refused.
    with pytest.raises(InputError, match="resolves only 128"):
        build_snapshots(spec | {"path": write_npz(tmp_path, x, 1.7e9 + 60 * (stamps - 1.7e9))})


@pytest.mark.parametrize(
    "times, advice",
    [
        ([1.7e9, 1.7e9 + 60, 1.7e9 + 120], r"give them relative to the first \(1700000000\)"),  # an offset
        ([0.0, 0.3, 0.1 + 0.2, 1.0], r"0\.3 and 0\.30000000000000004 differ only by float rounding"),
        # audit 88: a real design (0, 36 s, 1 h, 3 d, 7 d) is no pseudotime, and no unit can help it
        ([0.0, 0.01, 1.0, 72.0, 168.0], r"span 1\.68e\+04 times their smallest gap \(0 and 0\.01\).* merge those two"),
        ([*np.arange(201) * 1e-3, 1e4], r"202 distinct times over 1e\+07 smallest gaps .* bin the times"),
        ([0.0, 1e39, 2e39], r"times as large as 2e\+39 are beyond float32's range"),
    ],
)
def test_times_float32_cannot_hold_are_refused_with_advice_that_fits(times, advice):
    """Shifting the times helps an offset only; rounding noise, two close times of a time course, a time per cell and
    times beyond float32's range each get the advice that would help (times above 3.4e38 passed the check: their
    float32 step was NaN)."""
    with pytest.raises(InputError, match=advice):
        check_time_resolution(np.array(sorted(times)), "in.npz")


def test_a_time_of_a_single_cell_is_refused_by_prepare(tmp_path, data):
    """Every distance to or from a time needs two cells: a single-cell time failed only at evaluate, after the
    training; prepare now refuses it, naming the file, the time and its count."""
    x, t = data
    t = t.copy()
    t[np.flatnonzero(t == 0.5)[1:]] = 2.0  # one cell left at t = 0.5
    with pytest.raises(InputError, match=r"in\.npz: each time point needs at least 2 cells .*; times \(cells\): "
                                         r"0\.5 \(1\)\. Drop"):  # fmt: skip
        build_snapshots({"source": "npz", "path": write_npz(tmp_path, x, t)})


def test_a_training_time_of_a_few_cells_among_many_is_warned_of(tmp_path, capsys):
    """Audit 92: 3 cells at one time of an OU course with 300 at the others bent the whole flow through them (the
    drift's error at the next time 71 % against 9 %), and only a note on counts, pointing to growth, said anything.
    Prepare and from_labels warn of such a time; a held-out one (only scored), 20 cells among 300, and a course of
    few cells at every time (the evaluation flags those) are not."""
    import warnings

    from amcore.cli import main

    rng = np.random.default_rng(0)
    times = np.repeat([0.0, 1.0, 2.0, 3.0], [300, 3, 300, 300])
    x = rng.normal(size=(len(times), 2))
    with pytest.warns(UserWarning, match=r"time: times with a few cells among many \(t = 1: 3; a median of 300 a "
                                         r"time\): every path passes through"):  # fmt: skip
        Snapshots.from_labels(x, times)
    np.savez(tmp_path / "few.npz", X=x, t=times)
    out = ["--out", str(tmp_path / "few.zarr"), "--summary", str(tmp_path / "few.json")]
    assert main(["prepare", "--dataset", json.dumps({"source": "npz", "path": str(tmp_path / "few.npz")}), *out]) == 0
    assert "amcore prepare: warning: times with a few cells among many (t = 1: 3;" in capsys.readouterr().err
    out = ["--out", str(tmp_path / "held.zarr"), "--summary", str(tmp_path / "held.json"), "--holdout-times", "1"]
    assert main(["prepare", "--dataset", json.dumps({"source": "npz", "path": str(tmp_path / "few.npz")}), *out]) == 0
    assert "few cells among many" not in capsys.readouterr().err
    # a simulation's few cells are said once, by prepare, not by from_labels as well
    shrinking = {"source": "simulate", "simulator": "growing_gaussian", "times": [0, 1, 2, 3], "n_per_time": 200,
                 "seed": 0, "params": {"offset": -1.5, "growth": 1.0, "speed": [0.1, 0.1]}}  # fmt: skip
    out = ["--out", str(tmp_path / "sim.zarr"), "--summary", str(tmp_path / "sim.json")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["prepare", "--dataset", json.dumps(shrinking), *out]) == 0
        Snapshots.from_labels(x, times, {"holdout_times": [1.0]})  # a held-out time is only scored
        Snapshots.from_labels(rng.normal(size=(920, 2)), np.repeat([0.0, 1.0, 2.0, 3.0], [300, 20, 300, 300]))
        Snapshots.from_labels(x[:48], np.repeat([0.0, 1.0, 2.0, 3.0], 12))
    assert capsys.readouterr().err.count("few cells among many (t = 3: 2;") == 1


def test_float64_values_float32_would_flatten_are_centred_first_or_refused(tmp_path, data):
    """1e8 plus cells spread by about 1: float32's step is 8 there, so casting on reading left two or three distinct
    values per feature, silently. Standardised, the cells are centred in float64 before the cast and keep their
    spread; without it prepare is refused, naming the feature and what to do. A value beyond float32's range
    (finite in float64) became inf after the finiteness check; it is refused too."""
    x, t = data
    assert len(np.unique((1e8 + x[:, 0].astype(np.float64)).astype(np.float32))) <= 4  # the collapse prevented
    spec = {"source": "npz", "path": write_npz(tmp_path, 1e8 + x.astype(np.float64), t)}
    with pytest.raises(InputError, match=r"in\.npz: feature 0 varies by 1\.\d+ .* resolves only 8; subtract the off"):
        build_snapshots(spec)
    snaps = build_snapshots(spec, {"standardize": True})
    standard = (x - x.mean(0)) / x.std(0)  # all times train: no held-out time
    np.testing.assert_allclose(snaps.x, standard[snaps.obs_index], atol=1e-5)  # float32 rounding of values ~1
    # A feature that varies by 1e-9 around 5 beside features spread by 1 shows in no distance: not refused.
    quiet = np.column_stack([x, 5 + 1e-9 * x[:, 0]])
    assert build_snapshots({"source": "npz", "path": write_npz(tmp_path, quiet, t)}).dim == 6
    huge = x.astype(np.float64)
    huge[3, 2] = 1e39
    with pytest.raises(InputError, match=r"feature 2 has values as large as 1e\+39, beyond float32's range"):
        build_snapshots({"source": "npz", "path": write_npz(tmp_path, huge, t)})


# --- the real CLI ---------------------------------------------------------------------------------------------


def prepare_cli(tmp_path: Path, dataset: dict, *extra: str) -> subprocess.CompletedProcess:
    out = ["--out", str(tmp_path / "out" / "store.zarr"), "--summary", str(tmp_path / "out" / "summary.json")]
    (tmp_path / "out").mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "amcore", "prepare", "--dataset", json.dumps(dataset), *out, *extra]
    return subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "case, message",
    [("text_h5ad", r"fake\.h5ad: not an AnnData"), ("nan_npz", r"in\.npz: key 'X' has NaN or inf values in 1 rows")],
)
def test_cli_refuses_bad_input_with_exit_2_and_writes_nothing(tmp_path, data, case, message):
    x, t = data
    if case == "text_h5ad":
        (tmp_path / "fake.h5ad").write_text("not hdf5\n")
        dataset = {"source": "h5ad", "path": str(tmp_path / "fake.h5ad")}
    else:
        x[4, 2] = np.nan
        dataset = {"source": "npz", "path": write_npz(tmp_path, x, t)}
    result = prepare_cli(tmp_path, dataset)
    assert result.returncode == 2, result.stderr
    assert "amcore prepare: error:" in result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert list((tmp_path / "out").iterdir()) == [], "no store, summary or temporary file may be left"


def test_cli_drops_nonfinite_preprocesses_and_chunks_the_store(tmp_path, data):
    x, t = data
    x[4, 2] = np.inf
    dataset = {"source": "npz", "path": write_npz(tmp_path, x, t), "drop_nonfinite": True, "chunk_mb": 1e-4}
    result = prepare_cli(tmp_path, dataset, "--preprocess", '{"standardize": true}', "--holdout-times", "0.5")
    assert result.returncode == 0, result.stderr
    assert "dropped 1 rows with NaN or inf values" in result.stderr
    store = tmp_path / "out" / "store.zarr"
    attrs = read_store(store).attrs
    assert attrs["provenance"]["dropped_nonfinite"] == 1 and attrs["holdout_times"] == [0.5]
    assert attrs["preprocess"]["fit_times"] == [0.0, 2.0] and attrs["preprocess"]["n_fit"] == 15 - (t[4] != 0.5)
    chunk_rows = json.loads((store / "x" / "zarr.json").read_text())["chunk_grid"]["configuration"]["chunk_shape"]
    assert chunk_rows == [int(1e-4 * 2**20) // (4 * 5), 5]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sum(summary["cells_per_time"]) == len(t) - 1


def test_cli_says_which_columns_it_left_out_and_which_labels_it_merged(tmp_path, data):
    """A CSV's text and boolean columns are not features, and a time_map may send two labels to one time: both
    were done without a word. prepare now says so, and the store still holds the numeric features at three times."""
    x, t = data
    labels = text_labels(t)
    labels[labels == "day1"] = np.where(np.arange((labels == "day1").sum()) % 2, "day1", "day1b")
    frame = pd.DataFrame({"t": labels, "g0": x[:, 0], "g1": x[:, 1], "kind": "stem", "flag": x[:, 2] > 0})
    frame.to_csv(tmp_path / "cells.csv", index=False)
    dataset = {"source": "csv", "path": str(tmp_path / "cells.csv"), "time_map": LABELS | {"day1b": 0.5}}
    result = prepare_cli(tmp_path, dataset)
    assert result.returncode == 0, result.stderr
    assert "columns ['kind', 'flag'] are not numbers and were left out of the features" in result.stderr
    assert "labels ['day1', 'day1b'] map to one time, 0.5, in dataset.time_map" in result.stderr
    back = read_store(tmp_path / "out" / "store.zarr")
    assert back.dim == 2 and back.t_values.tolist() == TIMES


def test_durations_are_read_in_seconds_and_dates_refused(tmp_path, capsys):
    """A simulation's times written as timedelta64 came back in nanoseconds (10 s read as 1e10) and trained a model
    that moved nothing; datetime64 was refused as labels that "differ only by float rounding" (audit 11)."""
    x = np.random.default_rng(0).normal(size=(30, 2))
    seconds = np.repeat([0.0, 0.05, 10.0], 10)
    durations = pd.to_timedelta(seconds, unit="s").to_numpy()
    xr.Dataset({"X": (("obs", "f"), x), "t": ("obs", durations)}).to_netcdf(tmp_path / "d.nc")
    snaps = build_snapshots({"source": "netcdf", "path": str(tmp_path / "d.nc")})
    assert snaps.t_values.tolist() == [0.0, 0.05, 10.0]
    assert "durations read in seconds (0 to 10)" in capsys.readouterr().err
    assert Snapshots.from_labels(x, durations).t_values.tolist() == [0.0, 0.05, 10.0]
    dates = np.datetime64("2024-01-01") + durations
    xr.Dataset({"X": (("obs", "f"), x), "t": ("obs", dates)}).to_netcdf(tmp_path / "dates.nc")
    with pytest.raises(InputError, match=r"dates\.nc: key 't': times are dates .* give the time since the first"):
        build_snapshots({"source": "netcdf", "path": str(tmp_path / "dates.nc")})


def test_a_netcdf_feature_coordinate_names_the_features_and_a_per_time_array_is_shown_its_stacking(tmp_path):
    """A feature coordinate ['x', 'y', 'z'] was dropped (plots said x0, x1); a (t, particle, feature) array, a
    simulation's natural layout, was refused without the way to one row per cell (audit 11)."""
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(20, 3)), np.repeat([0.0, 1.0], 10)
    ds = xr.Dataset({"X": (("obs", "feature"), x), "t": ("obs", t)}, coords={"feature": ["x", "y", "z"]})
    ds.to_netcdf(tmp_path / "named.nc")
    assert build_snapshots({"source": "netcdf", "path": str(tmp_path / "named.nc")}).attrs["feature_names"] == [
        "x", "y", "z"
    ]  # fmt: skip
    cube = xr.Dataset({"X": (("t", "particle", "feature"), x.reshape(2, 10, 3))}, coords={"t": [0.0, 1.0]})
    cube.to_netcdf(tmp_path / "cube.nc")
    with pytest.raises(InputError, match=r"one array per time.*ds\.stack\(obs=\('t', 'particle'\)\)") as err:
        build_snapshots({"source": "netcdf", "path": str(tmp_path / "cube.nc")})
    recipe = str(err.value).split("amcore reads one row per cell: ")[1].split(" makes")[0]
    stacked = eval(recipe, {"ds": cube})  # the recipe as written makes the layout that is read
    stacked.to_netcdf(tmp_path / "stacked.nc")
    snaps = build_snapshots({"source": "netcdf", "path": str(tmp_path / "stacked.nc")})
    assert snaps.t_values.tolist() == [0.0, 1.0] and snaps.counts().tolist() == [10, 10]
    # audit 62: frames along "frame" with their times a coordinate "time" got the bare "must have 2 dims"
    assert "t_units" not in snaps.attrs["provenance"]["reader"]  # none written, none said
    frames = xr.Dataset(
        {"X": (("frame", "particle", "feature"), x.reshape(2, 10, 3))}, coords={"time": ("frame", [0.0, 1.5])}
    )
    frames.to_netcdf(tmp_path / "frames.nc")
    with pytest.raises(InputError, match=r"ds\.stack\(obs=\('frame', 'particle'\)\).* with 'time' along obs") as err:
        build_snapshots({"source": "netcdf", "path": str(tmp_path / "frames.nc"), "t_key": "time"})
    recipe = str(err.value).split("amcore reads one row per cell: ")[1].split(" makes")[0]
    restacked = eval(recipe, {"ds": frames})
    restacked["time"].attrs["units"] = "ps"  # a physicist's unit, kept where the store says where it came from
    restacked.to_netcdf(tmp_path / "restacked.nc")
    snaps = build_snapshots({"source": "netcdf", "path": str(tmp_path / "restacked.nc"), "t_key": "time"})
    assert snaps.t_values.tolist() == [0.0, 1.5] and snaps.counts().tolist() == [10, 10]
    assert snaps.attrs["provenance"]["reader"]["t_units"] == "ps"


def test_the_header_check_reads_what_pandas_reads(tmp_path, data):
    """Review: the repeated-header check opened the file as UTF-8 text, refusing a .csv.gz pandas read and a
    spreadsheet's trailing empty columns, and missed a repeat behind a byte-order mark."""
    x, t = data
    frame = pd.DataFrame(x[:, :2], columns=["g0", "g1"]).assign(t=t)
    frame.to_csv(tmp_path / "a.csv.gz", index=False)
    assert build_snapshots({"source": "csv", "path": str(tmp_path / "a.csv.gz")}).dim == 2
    rows = [f"{a:.3f},{b:.3f},{tk:g},," for (a, b), tk in zip(x[:, :2], t, strict=True)]
    (tmp_path / "b.csv").write_text("\n".join(["g0,g1,t,,", *rows]) + "\n")
    assert build_snapshots({"source": "csv", "path": str(tmp_path / "b.csv"), "feature_columns": ["g0", "g1"]}).dim == 2
    (tmp_path / "c.csv").write_bytes(b"\xef\xbb\xbft,g0,t\n" + b"\n".join(b"%g,1,2" % tk for tk in t) + b"\n")
    with pytest.raises(InputError, match=r"repeats the column name\(s\) \['t'\]"):
        build_snapshots({"source": "csv", "path": str(tmp_path / "c.csv")})


def test_a_compressed_csv_ending_in_an_empty_cell_and_a_twice_saved_index_are_read(tmp_path, data):
    """Review 55: a .csv.gz whose last row ends in an empty cell was refused as truncated (the check read the
    archive's last byte), and a CSV saved again with pandas' index took the old index ('Unnamed: 0.1') as a
    feature."""
    x, t = data
    frame = pd.DataFrame(x[:, :2], columns=["g0", "t"]).assign(g1=x[:, 2])  # the feature last: the row ends in it
    frame["t"] = t
    frame.loc[len(frame) - 1, "g1"] = np.nan
    frame.to_csv(tmp_path / "a.csv.gz", index=False)
    spec = {"source": "csv", "path": str(tmp_path / "a.csv.gz"), "drop_nonfinite": True}
    assert build_snapshots(spec).dim == 2
    pd.DataFrame(x[:, :2], columns=["g0", "g1"]).assign(t=t).to_csv(tmp_path / "once.csv")
    pd.read_csv(tmp_path / "once.csv").to_csv(tmp_path / "twice.csv")
    snaps = build_snapshots({"source": "csv", "path": str(tmp_path / "twice.csv")})
    assert snaps.attrs["provenance"]["reader"]["feature_columns"] == ["g0", "g1"]
