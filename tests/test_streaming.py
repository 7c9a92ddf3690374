"""Streaming training from a zarr store larger than the memory budget (forced here by a tiny budget)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import ot
import pytest
import torch
from conftest import BIN, cli_env

from amcore.data.prepare import build_snapshots
from amcore.data.simulate import GaussianPath, simulate_snapshots
from amcore.data.store import Snapshots, open_store, write_store
from amcore.paths.interpolants import SnapshotPath
from amcore.paths.stream import StreamingPath, training_bytes
from amcore.training.train import TrainConfig, partial_path, train

TIMES = [0.0, 0.5, 1.0, 1.5]
ROWS, CHUNK_ROWS, RESIDENT = 300, 50, 40  # chunks never straddle two snapshots: 300 = 6 x 50
HELD = 2  # index of the held-out time 1.0


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Four snapshots of distinct 2-d rows; the held-out one's chunks are garbage that no codec can decode."""
    x, t = simulate_snapshots(GaussianPath(), TIMES, ROWS, seed=0)
    snaps = Snapshots.from_labels(x, t, {"holdout_times": [TIMES[HELD]]})
    path = tmp_path_factory.mktemp("stream") / "store.zarr"
    write_store(path, snaps, chunk_bytes=CHUNK_ROWS * 2 * 4)
    for c in range(HELD * ROWS // CHUNK_ROWS, (HELD + 1) * ROWS // CHUNK_ROWS):
        (path / "x" / "c" / str(c) / "0").write_bytes(b"not a zstd frame")
    return path, snaps


def _streaming(path, budget_rows, seed=0, rank=0):
    def build(snaps, path_seed):
        return SnapshotPath(snaps, "ot", RESIDENT, seed=path_seed)

    return StreamingPath(open_store(path), build, RESIDENT, 10, budget_rows * 2 * 4, seed, rank)


def _rows(a: np.ndarray) -> set:
    return set(map(tuple, a.tolist()))


def test_resident_rows_are_rows_of_their_time_and_memory_stays_in_budget(store):
    path, snaps = store
    budget = 200  # rows: 3 times x 40 resident rows plus one chunk of 50, far below the 900 training rows
    stream = _streaming(path, budget)
    for refresh in range(3):
        before = stream.rows_read
        resident = stream.sample(refresh)
        assert stream.rows_read - before < 3 * ROWS, "a refresh reads a few chunks, never whole snapshots"
        assert resident.t_values.tolist() == [0.0, 0.5, 1.5]
        for j, k in enumerate([0, 1, 3]):
            rows = _rows(resident.snapshot(j))
            assert len(rows) == RESIDENT and rows <= _rows(snaps.snapshot(k))
        # Each resident snapshot carries its whole snapshot's mass (uAM's growth sees the store's counts).
        np.testing.assert_allclose(resident.masses(), [ROWS] * 3)
    assert stream.peak_rows <= budget


def test_samples_differ_by_rank_and_refresh_and_reproduce(store):
    path, _ = store
    first = _streaming(path, 300)
    samples = {(r, k): _streaming(path, 300, rank=r).sample(k).x for r in (0, 1) for k in (0, 1)}
    np.testing.assert_array_equal(first.sample(1).x, samples[0, 1])
    keys = list(samples)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert not np.array_equal(samples[a], samples[b]), f"{a} and {b} drew the same rows"


def test_budget_below_one_chunk_is_refused(store):
    path, _ = store
    with pytest.raises(ValueError, match="in_memory_max_mb"):
        _streaming(path, 3 * RESIDENT + 10)


def test_streamed_training_resumes_to_the_uninterrupted_result(tmp_path, store):
    path, snaps = store
    cfg = TrainConfig(steps=60, batch_size=64, width=16, depth=2, ot_max_size=RESIDENT, log_every=10,
                      checkpoint_every=30, stream_refresh_every=20, threads=1, seed=2,
                      in_memory_max_mb=300 * 2 * 4 / 2**20)  # fmt: skip
    assert training_bytes(snaps) > cfg.in_memory_max_mb * 2**20
    summary = train(open_store(path), cfg, tmp_path / "a.pt", tmp_path / "a.csv")
    assert summary["train_times"] == [0.0, 0.5, 1.5] and abs(summary["final_loss"]) < 1e2

    def crash(step, _):
        if step == 40:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train(open_store(path), cfg, tmp_path / "b.pt", tmp_path / "b.csv", on_metrics=crash)
    assert torch.load(partial_path(tmp_path / "b.pt"), weights_only=True)["step"] == 30  # inside refresh 1
    train(open_store(path), cfg, tmp_path / "b.pt", tmp_path / "b.csv")
    a, b = (torch.load(tmp_path / f"{n}.pt", weights_only=True)["ema"] for n in "ab")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)


def test_cli_streams_a_store_over_the_budget_and_loads_one_under_it(tmp_path, store):
    path, _ = store
    for budget, expected in ((0.002, "streaming from the store"), (1.0, "data in memory")):
        params = {"steps": 20, "batch_size": 32, "width": 8, "depth": 1, "ot_max_size": RESIDENT, "threads": 1,
                  "in_memory_max_mb": budget}  # fmt: skip
        cmd = [str(BIN / "amcore"), "train", "--store", str(path), "--params", json.dumps(params),
               "--checkpoint", str(tmp_path / "m.pt"), "--loss-csv", str(tmp_path / "l.csv")]  # fmt: skip
        done = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert expected in done.stderr


def test_streamed_spline_chooses_its_tension_once(tmp_path, capfd):
    """tension: auto cross-validates on the first resident sample only; every refresh keeps that value."""
    x, t = simulate_snapshots(GaussianPath(), [0.0, 0.25, 0.5, 0.75, 1.0], ROWS, seed=0)
    path = tmp_path / "store.zarr"
    write_store(path, Snapshots.from_labels(x, t), chunk_bytes=CHUNK_ROWS * 2 * 4)
    cfg = TrainConfig(steps=40, batch_size=32, width=16, depth=2, ot_max_size=RESIDENT, log_every=10,
                      stream_refresh_every=10, threads=1, interpolation="spline", tension="auto",
                      in_memory_max_mb=300 * 2 * 4 / 2**20)  # fmt: skip
    summary = train(open_store(path), cfg, tmp_path / "m.pt", tmp_path / "m.csv")
    assert isinstance(summary["spline_tension"], float) and 0 <= summary["spline_tension"] <= 1
    assert len(summary["spline_tension_by_interval"]) == 4  # evenly spaced: no interval strays past the limit
    assert summary["spline_tension_by_interval"] == [pytest.approx(summary["spline_tension"], abs=1e-4)] * 4
    assert capfd.readouterr().err.count("amcore: spline tension") == 1  # 4 refreshes, one choice


def _w1(a: np.ndarray, b: np.ndarray) -> float:
    """Exact W1 (Euclidean cost) between two uniformly weighted point clouds."""
    return float(ot.emd2(ot.unif(len(a)), ot.unif(len(b)), ot.dist(a, b, metric="euclidean"), numItermax=10**7))


def test_a_streamed_draw_is_a_uniform_sample_of_its_time_whatever_the_input_order(tmp_path):
    """A file sorted by one feature (as files sorted by cluster are) streams uniform draws of each time.

    For a uniform draw ``u`` of ``n`` rows of a time ``P`` (its empirical measure), ``W1`` is convex and ``P`` is
    the mean of an independent draw ``u'``, so ``E W1(u, P) <= E W1(u, u')`` (Jensen). The test asserts that
    inequality for the streamed draws, averaged over 8 refreshes x 3 times. Measured over 4 seeds of data and
    draws: streamed 0.74-0.80 of the right side, uniform draws 0.68-0.80, so the margin is 20 % at least. Before
    prepare stored each time in random order, the 4 chunks of 100 sorted rows were 4 strips of feature 0: 3.4x.
    """
    rng = np.random.default_rng(0)
    n_time, draw, times = 2000, 200, [0.0, 1.0, 2.0]
    centres = np.array([[-4.0, 0.0], [0.0, 3.0], [4.0, -1.0]])
    x = np.concatenate([centres[rng.integers(0, 3, n_time)] + rng.standard_normal((n_time, 2)) + [t, 0]
                        for t in times])  # fmt: skip
    t = np.repeat(times, n_time)
    order = np.argsort(x[:, 0], kind="stable")  # the file: sorted by feature 0, times interleaved
    np.savez(tmp_path / "in.npz", X=x[order].astype(np.float32), t=t[order])
    snaps = build_snapshots({"source": "npz", "path": str(tmp_path / "in.npz")})
    store = tmp_path / "store.zarr"
    write_store(store, snaps, chunk_bytes=100 * 2 * 4)  # 100-row chunks: 20 per time, 4 read per refresh
    lazy = open_store(store)
    assert lazy.x.chunks[0][0] == 100

    def build(resident, path_seed):
        return SnapshotPath(resident, "independent", seed=path_seed)

    stream = StreamingPath(lazy, build, draw, refresh_every=1, budget_bytes=2**20, seed=0)
    whole = [np.asarray(lazy.snapshot(k), dtype=np.float64) for k in range(3)]
    streamed, uniform = [], []
    for refresh in range(8):
        resident = stream.sample(refresh)
        for k in range(3):
            assert resident.counts()[k] == draw
            streamed.append(_w1(resident.snapshot(k).astype(np.float64), whole[k]))
            a, b = (whole[k][rng.choice(n_time, draw, replace=False)] for _ in range(2))
            uniform.append(_w1(a, b))
    assert np.mean(streamed) <= np.mean(uniform), (np.mean(streamed), np.mean(uniform))


def test_couplings_of_large_times_are_solved_on_subsamples_redrawn_every_ot_refresh_every_steps(capfd, monkeypatch):
    """In memory, 300 cells per time and ot_max_size 40: each refresh pairs 40 other cells per time (over 5
    refreshes most cells take part), the same ones for the same refresh whatever came before (resume). The solve
    is said as it starts, and a slow redraw too (audit 28: a minute of silence at 10^6 cells)."""
    from amcore.paths import stream
    from amcore.paths.stream import ResampledCouplings, training_path

    monkeypatch.setattr(stream, "SLOW_REDRAW_S", -1.0)  # every redraw counts as slow here

    x, t = simulate_snapshots(GaussianPath(), TIMES, ROWS, seed=0)
    snaps = Snapshots.from_labels(x, t)

    def build(resident, path_seed):
        return SnapshotPath(resident, "ot", RESIDENT, seed=path_seed)

    path = training_path(snaps, build, 1.0, RESIDENT, 10, seed=0, rank=0, ot_refresh_every=10, coupling="ot")
    assert isinstance(path, ResampledCouplings)
    err = capfd.readouterr().err
    assert f"exact OT between neighbouring times on seeded subsamples of {RESIDENT} of up to {ROWS} cells" in err
    assert "redrawn every 10 steps" in err
    assert err.index(f"solving exact OT between neighbouring times on subsamples of {RESIDENT}") < err.index(
        "per redraw"
    )
    used, first = set(), None
    for step in range(0, 50, 10):
        path.seek(step)
        pairs = path.current.pair_a.numpy()
        assert len(np.unique(pairs)) <= (len(TIMES) - 1) * RESIDENT
        first = pairs if first is None else first
        used |= set(pairs[pairs < ROWS].tolist())  # the first time's cells
    assert len(used) > 3 * RESIDENT, "the subsamples are redrawn"
    said = capfd.readouterr().err
    assert [f"step {step}: new subsamples" in said for step in range(0, 50, 10)] == [False, True, True, True, True]
    again = ResampledCouplings(snaps, build, 10, seed=0, rank=0)
    again.seek(40)
    np.testing.assert_array_equal(again.current.pair_a.numpy(), path.current.pair_a.numpy())
    # Within ot_max_size nothing is subsampled: one path, and the log says so.
    whole = training_path(snaps, build, 1.0, ROWS, 10, seed=0, rank=0, ot_refresh_every=10, coupling="ot")
    assert isinstance(whole, SnapshotPath)
    assert f"exact OT between neighbouring times on all cells (at most {ROWS} per time" in capfd.readouterr().err
