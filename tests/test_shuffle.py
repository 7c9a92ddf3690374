"""Prepare stores each time's rows in a seeded random order, in bounded memory (in memory or through a spill)."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np

from amcore.cli import main
from amcore.data import prepare, shuffle
from amcore.data.store import read_store


def test_within_time_order_groups_by_time_and_permutes_each_time():
    t = np.array([2.0, 0.0, 1.0, 0.0, 2.0, 0.0, 1.0])
    order, t_values, counts = shuffle.within_time_order(t, seed=3)
    assert t_values.tolist() == [0.0, 1.0, 2.0] and counts.tolist() == [3, 2, 2]
    assert np.array_equal(np.sort(order), np.arange(len(t))) and np.array_equal(t[order], np.sort(t))
    np.testing.assert_array_equal(order, shuffle.within_time_order(t, seed=3)[0])  # seeded
    big = np.repeat([0.0, 1.0], 1000)
    orders = {seed: shuffle.within_time_order(big, seed)[0] for seed in (0, 1)}
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0][:1000], np.arange(1000)), "the input order within a time is not kept"


def test_gather_in_memory_and_through_a_spill_give_x_in_the_order(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1003, 3)).astype(np.float32)
    lazy = da.from_array(x, chunks=(100, 3))
    order = rng.permutation(len(x))
    in_memory = shuffle.gather(lazy, order, budget_bytes=x.nbytes)
    np.testing.assert_array_equal(in_memory.compute(), x[order])
    shuffle.SPILL_BLOCK_BYTES, saved = 256 * 3 * 4, shuffle.SPILL_BLOCK_BYTES  # 256-row output blocks: 4 of them
    try:
        spilled = shuffle.gather(lazy, order, budget_bytes=0, workdir=tmp_path / "spill")
    finally:
        shuffle.SPILL_BLOCK_BYTES = saved
    assert spilled.chunks[0] == (256, 256, 256, 235)
    assert len(list((tmp_path / "spill").glob("rows-*.pos.npy"))) == 11  # one spill per input chunk
    np.testing.assert_array_equal(spilled.compute(), x[order])


def test_prepare_spills_rows_it_cannot_reorder_in_memory_and_leaves_nothing_behind(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((900, 4)).astype(np.float32)
    t = rng.choice([0.0, 1.0, 2.0], len(x))
    np.savez(tmp_path / "in.npz", X=x, t=t)
    stores, spills, spilled = {}, [], shuffle._spilled

    def spilling(x, dest, workdir):
        spills.append(workdir)
        return spilled(x, dest, workdir)

    monkeypatch.setattr(shuffle, "_spilled", spilling)
    for name, budget in (("memory", 2**30), ("spill", 0)):
        monkeypatch.setattr(prepare, "IN_MEMORY_ORDER_BYTES", budget)
        out = tmp_path / name / "store.zarr"
        dataset = json.dumps({"source": "npz", "path": str(tmp_path / "in.npz"), "seed": 5})
        argv = ["prepare", "--dataset", dataset, "--out", str(out), "--summary", str(out.with_suffix(".json"))]
        assert main(argv) == 0
        assert sorted(p.name for p in out.parent.iterdir()) == ["store.json", "store.zarr"], "no spill left"
        stores[name] = read_store(out)
    assert [p.parent for p in spills] == [tmp_path / "spill"]  # beside the store
    memory, spill = stores["memory"], stores["spill"]
    np.testing.assert_array_equal(spill.x, memory.x)
    np.testing.assert_array_equal(spill.obs_index, memory.obs_index)
    np.testing.assert_array_equal(memory.x, x[memory.obs_index])
    assert memory.attrs["row_order"] == {"within_time": "random", "seed": 5}
