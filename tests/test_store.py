import json

import numpy as np
import pytest

from amcore.data.store import Snapshots, read_store, write_store


def test_round_trip_keeps_layout_and_attrs(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3)).astype(np.float32)
    t = rng.choice([2.0, 0.0, 1.0], size=50)
    snaps = Snapshots.from_labels(x, t, {"provenance": {"source": "test"}, "holdout_times": [1.0]})
    path = tmp_path / "s.zarr"
    write_store(path, snaps, chunk_bytes=64)
    back = read_store(path)
    assert back.t_values.tolist() == [0.0, 1.0, 2.0]
    for k, tk in enumerate(back.t_values):
        rows = np.sort(x[t == tk], axis=0)
        np.testing.assert_array_equal(np.sort(back.snapshot(k), axis=0), rows)
    assert back.attrs == {"provenance": {"source": "test"}, "holdout_times": [1.0]}
    assert json.loads((path / "x" / "zarr.json").read_text())["chunk_grid"]["configuration"]["chunk_shape"] == [5, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"], "no temporary store may be left behind"


def test_reading_something_else_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a snapshot store"):
        read_store(tmp_path / "missing.zarr")


def test_zstd_only_where_it_pays(tmp_path):
    """Plain floats save ~8 % under zstd at a fraction of the disk's speed: stored raw; counts keep zstd."""
    rng = np.random.default_rng(0)
    t = np.repeat([0.0, 1.0], 2000)
    floats = rng.standard_normal((4000, 8)).astype(np.float32)
    counts = rng.poisson(0.5, (4000, 8)).astype(np.float32)
    for name, x in (("floats", floats), ("counts", counts)):
        write_store(tmp_path / f"{name}.zarr", Snapshots.from_labels(x, t))
        np.testing.assert_array_equal(read_store(tmp_path / f"{name}.zarr").x, x)
    codecs = {
        name: [c["name"] for c in json.loads((tmp_path / f"{name}.zarr" / "x" / "zarr.json").read_text())["codecs"]]
        for name in ("floats", "counts")
    }
    assert "zstd" not in codecs["floats"] and "zstd" in codecs["counts"]


def test_write_store_returns_the_summary_of_what_it_wrote(tmp_path):
    x = np.arange(14, dtype=np.float32).reshape(7, 2)
    snaps = Snapshots.from_labels(x, np.array([0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0]))
    summary = write_store(tmp_path / "s.zarr", snaps, chunk_bytes=16)
    assert summary["cells_per_time"] == [2, 3, 2] and summary["n_obs"] == 7
    np.testing.assert_allclose(summary["feature_mean"], x.mean(0))
    np.testing.assert_allclose(summary["feature_std"], x.std(0), rtol=1e-6)
