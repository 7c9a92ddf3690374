"""Bad input is refused up front by ``amcore prepare`` (issue 13): exit status 2, a message naming the file or the
key and what was expected, no traceback, and nothing written at ``--out`` or ``--summary``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import cli_env

from amcore import cli, tracking
from amcore.data import prepare, readers
from amcore.data.prepare import build_snapshots
from amcore.errors import InputError

TIMES = [0.0, 0.5, 1.0]
SIMULATE = {"source": "simulate", "simulator": "gaussian_path", "times": TIMES, "n_per_time": 50, "seed": 0}


def prepare_cli(tmp_path: Path, dataset: dict, *extra: str) -> subprocess.CompletedProcess:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "amcore", "prepare", "--dataset", json.dumps(dataset),
           "--out", str(out / "store.zarr"), "--summary", str(out / "summary.json"), *extra]  # fmt: skip
    return subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=120)


def prepare_in_process(tmp_path: Path, dataset: dict, capsys, monkeypatch) -> subprocess.CompletedProcess:
    """``amcore prepare`` through the CLI's own ``main`` (its exit status and stderr), without the ~3 s start of a
    fresh interpreter; anything ``main`` lets escape (the old raw tracebacks) fails the test."""
    for key in (tracking.ENV_URI, tracking.ENV_EXPERIMENT, tracking.ENV_PARENT):
        monkeypatch.delenv(key, raising=False)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    argv = ["prepare", "--dataset", json.dumps(dataset), "--out", str(out / "store.zarr"),
            "--summary", str(out / "summary.json")]  # fmt: skip
    returncode = cli.main(argv)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, returncode, captured.out, captured.err)


def assert_refused(tmp_path: Path, result: subprocess.CompletedProcess, *names: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "amcore prepare: error:" in result.stderr
    for name in names:
        assert name in result.stderr, (name, result.stderr[-3000:])
    assert list((tmp_path / "out").iterdir()) == [], "no store, summary or temporary may be left"


# --- held-out times: interior observed times only -------------------------------------------------------------


@pytest.mark.parametrize("held_out", ["0.0", "1.0"])
def test_a_first_or_last_held_out_time_is_refused_before_anything_is_written(tmp_path, held_out):
    result = prepare_cli(tmp_path, SIMULATE, "--holdout-times", held_out)
    assert_refused(tmp_path, result, f"holdout_times: [{held_out}] must be interior", "[0.0, 0.5, 1.0]")


def test_a_held_out_end_point_is_refused_before_simulating(monkeypatch):
    def simulate(*args):
        raise AssertionError("simulated although the held-out time was refusable from the config")

    monkeypatch.setattr(prepare, "simulate_snapshots", simulate)
    with pytest.raises(InputError, match=r"holdout_times: \[1\.0\] must be interior"):
        build_snapshots(SIMULATE, holdout_times=[1.0])


# --- empty and truncated files, in every format ---------------------------------------------------------------


def cells() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.repeat(TIMES, 20)
    return rng.standard_normal((len(t), 4)).astype(np.float32), t


def write(fmt: str, path: Path, x: np.ndarray, t: np.ndarray) -> None:
    """A valid file (or folder) of ``fmt``, written by the library users write it with."""
    frame = pd.DataFrame(x, columns=[f"g{i}" for i in range(x.shape[1])]).assign(t=t)
    ds = xr.Dataset({"X": (("obs", "feature"), x)}, coords={"t": ("obs", t)})
    if fmt == "npz":
        np.savez(path, X=x, t=t)
    elif fmt == "npy":
        path.mkdir()
        np.save(path / "X.npy", x)
        np.save(path / "t.npy", t)
    elif fmt == "h5ad":
        ad.AnnData(X=x, obs=pd.DataFrame({"t": t}, index=[f"c{i}" for i in range(len(t))])).write_h5ad(path)
    elif fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path)
    elif fmt == "netcdf":
        ds.to_netcdf(path)
    elif fmt == "zarr":
        ds.to_zarr(path, zarr_format=3, consolidated=False)


def damage(path: Path, how: str) -> None:
    """Empty every file under ``path`` (0 bytes), or cut each short as an interrupted copy would.

    ``chunks`` cuts only a zarr group's data chunks: its metadata still reads, the data does not (at compute).
    """
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        data = file.read_bytes()
        if how == "empty":
            file.write_bytes(b"")
        elif how == "truncated" and file.suffix == ".csv":
            file.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 4])  # inside the last row's first field
        elif how == "truncated" or (how == "chunks" and "c" in file.relative_to(path).parts):
            file.write_bytes(data[: len(data) // 2])


# What each error must say was expected.
EXPECTED = {"npz": ".npz archive", "npy": ".npy file", "h5ad": "AnnData .h5ad file", "csv": "CSV file",
            "parquet": "Parquet file", "netcdf": "NetCDF file", "zarr": "zarr group"}  # fmt: skip
SUFFIX = {"npz": ".npz", "npy": "", "h5ad": ".h5ad", "csv": ".csv", "parquet": ".parquet", "netcdf": ".nc"}
CASES = [(fmt, how) for fmt in [*SUFFIX, "zarr", "directory"] for how in ("empty", "truncated")] + [("zarr", "chunks")]


def damaged_input(tmp_path: Path, fmt: str, how: str) -> tuple[Path, str, str]:
    """A damaged input, the name of its damaged file and the format the error must say was expected."""
    x, t = cells()
    if fmt == "directory":  # one file per time, the middle one damaged
        path = tmp_path / "per_time"
        path.mkdir()
        for tk in TIMES:
            write("npz", path / f"day{tk}.npz", x[t == tk], t[t == tk])
        damage(path / "day0.5.npz", how)
        bad, expected = "day0.5.npz", ".npz archive"
    else:
        path = tmp_path / f"in{SUFFIX.get(fmt, '.zarr')}"
        write(fmt, path, x, t)
        damage(path, how)
        bad = "X.npy" if fmt == "npy" else path.name
        expected = EXPECTED[fmt]
    return path, bad, expected


@pytest.mark.parametrize("fmt, how", CASES)
def test_an_empty_or_truncated_file_is_refused_with_its_name_and_format(tmp_path, capsys, monkeypatch, fmt, how):
    path, bad, expected = damaged_input(tmp_path, fmt, how)
    result = prepare_in_process(tmp_path, {"source": fmt, "path": str(path)}, capsys, monkeypatch)
    assert_refused(tmp_path, result, bad, expected)


@pytest.mark.parametrize("fmt, how", [("npz", "empty"), ("h5ad", "truncated"), ("zarr", "chunks")])
def test_the_amcore_command_refuses_a_damaged_file_with_exit_2(tmp_path, fmt, how):
    """The issue's probe (an empty .npz ended in a raw EOFError, exit 1), a damaged header, damaged data."""
    path, bad, expected = damaged_input(tmp_path, fmt, how)
    assert_refused(tmp_path, prepare_cli(tmp_path, {"source": fmt, "path": str(path)}), bad, expected)


def test_a_valid_csv_without_a_final_line_break_is_read(tmp_path):
    x, t = cells()
    write("csv", tmp_path / "in.csv", x, t)
    (tmp_path / "in.csv").write_text((tmp_path / "in.csv").read_text().rstrip("\n"))
    assert build_snapshots({"source": "csv", "path": str(tmp_path / "in.csv")}).x.shape == x.shape


# --- sizes that cannot fit in memory ---------------------------------------------------------------------------


def test_a_simulation_larger_than_memory_is_refused_with_the_estimate(tmp_path):
    """The issue's probe: 10^10 cells per time used to end in a 149 GiB allocation error."""
    result = prepare_cli(tmp_path, {**SIMULATE, "n_per_time": 10_000_000_000})
    need = 3 * 10_000_000_000 * (8 * 2 + 24) / 2**30  # float32 cells twice, float64 times and int64 order
    assert_refused(tmp_path, result, "dataset.n_per_time: 10000000000 cells", f"about {need:.1f} GiB", "available")


def test_the_simulation_estimate_is_checked_against_available_memory(monkeypatch):
    monkeypatch.setattr(prepare, "available_memory", lambda: 3 * 1000 * (2 * 8 + 24))  # 1000 cells per time
    assert build_snapshots({**SIMULATE, "n_per_time": 1000}).x.shape == (3000, 2)

    def simulate(*args):
        raise AssertionError("simulated although the size was refusable")

    monkeypatch.setattr(prepare, "simulate_snapshots", simulate)
    with pytest.raises(InputError, match=r"dataset\.n_per_time: 1001 cells at each of 3 times in 2 dimensions.*"
                                         r"at most about 1000 cells per time"):  # fmt: skip
        build_snapshots({**SIMULATE, "n_per_time": 1001})


def test_an_npz_member_larger_than_memory_is_refused_before_it_is_read(tmp_path, monkeypatch):
    x, t = cells()
    np.savez(tmp_path / "in.npz", X=x, t=t)
    monkeypatch.setattr(readers, "available_memory", lambda: x.nbytes - 1)
    with pytest.raises(InputError, match=r"in\.npz: key 'X' is \(60, 4\) float32.*source npy"):
        build_snapshots({"source": "npz", "path": str(tmp_path / "in.npz")})


def test_available_memory_is_a_positive_number_of_bytes():
    assert 0 < readers.available_memory() < 2**60
