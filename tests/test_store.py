import json

import numpy as np
import pytest

from amcore.store import Snapshots, read_store, write_store


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
