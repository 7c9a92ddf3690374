"""Outputs appear whole or not at all (amcore.atomic)."""

from __future__ import annotations

import pytest

from amcore.atomic import replacing


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_directory_replaces_the_previous_one_and_the_suffix_survives(tmp_path):
    target = tmp_path / "store.zarr"
    target.mkdir()
    (target / "stale").write_text("x")
    with replacing(target) as tmp:
        assert tmp.suffix == ".zarr" and tmp.parent == tmp_path
        tmp.mkdir()
        (tmp / "fresh").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["fresh"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]
