"""Validation cells (``validation``): a fraction of every training time's cells held apart picks the checkpoint."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
import torch
from conftest import BIN, cli_env

from amcore import Snapshots, TrainConfig, train
from amcore.data.simulate import GaussianPath, simulate_snapshots
from amcore.data.store import write_store
from amcore.training.train import Run


def test_split_cells_partitions_every_time(gaussian_snaps):
    _, _, snaps = gaussian_snaps
    rest, apart = snaps.split_cells(0.15, seed=3)
    assert apart.counts().tolist() == [150] * 6 and rest.counts().tolist() == [850] * 6
    for k in range(snaps.n_snapshots):
        both = np.concatenate([rest.snapshot(k), apart.snapshot(k)])
        # The same cells, none twice: sorted rows of the union equal the snapshot's.
        np.testing.assert_array_equal(np.unique(both, axis=0), np.unique(snaps.snapshot(k), axis=0))
        assert len(np.unique(both, axis=0)) == 1000


def test_split_cells_refuses_a_time_too_small_to_split():
    x = np.random.default_rng(0).normal(size=(13, 2)).astype(np.float32)
    snaps = Snapshots.from_labels(x, np.array([0.0] * 10 + [1.0] * 3))
    with pytest.raises(ValueError, match=r"holding 0.2 of the 3 cells at time 1 apart leaves 0 apart"):
        snaps.split_cells(0.2, seed=0)


def test_validation_cells_never_reach_the_training_path(gaussian_snaps):
    _, _, snaps = gaussian_snaps
    run = Run(snaps, TrainConfig(validation=0.1, steps=10, width=8, depth=1), None)
    trained = {row.tobytes() for row in run.path.x.numpy()}
    held = [row.tobytes() for row in run.validation_path.x.numpy()]
    assert len(held) == 600 and len(trained) == 5400
    assert not trained.intersection(held)


def test_the_held_out_time_s_cells_never_reach_the_validation_path():
    """Review 49: the cells held apart were split from every time, the held-out one included, and the validation
    path that picks the checkpoint ran through the held-out time."""
    rng = np.random.default_rng(0)
    t = np.repeat(np.arange(4.0), 50)
    x = (rng.standard_normal((len(t), 2)) + t[:, None]).astype(np.float32)
    snaps = Snapshots.from_labels(x, t, attrs={"holdout_times": [2.0]})
    run = Run(snaps, TrainConfig(validation=0.2, steps=10, width=8, depth=1), None)
    assert run.validation_path.t_values.tolist() == [0.0, 1.0, 3.0] == run.path.t_values.tolist()


def test_training_ends_with_the_weights_that_did_best_on_the_validation_cells(tmp_path, gaussian_snaps):
    _, _, snaps = gaussian_snaps
    seen: dict[int, float] = {}
    cfg = TrainConfig(validation=0.1, validate_every=40, steps=400, batch_size=64, width=16, depth=2, log_every=100)

    def record(step: int, metrics: dict) -> None:
        if "validation_loss" in metrics:
            seen[step] = metrics["validation_loss"]

    summary = train(snaps, cfg, tmp_path / "m.pt", tmp_path / "loss.csv", on_metrics=record)
    assert sorted(seen) == list(range(40, 401, 40))
    best = min(seen, key=seen.get)
    assert summary["best_step"] == best and summary["validation_loss"] == seen[best]
    # The saved weights score exactly the recorded lowest loss on the validation cells.
    run = Run(snaps, cfg, None)
    run.ema.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True)["ema"])
    run.validate(cfg.steps, None)
    assert run.best["loss"] == pytest.approx(seen[best], rel=1e-6)


def test_an_interrupted_run_with_validation_ends_as_an_uninterrupted_one(tmp_path, gaussian_snaps):
    _, _, snaps = gaussian_snaps
    cfg = TrainConfig(validation=0.1, validate_every=25, steps=150, batch_size=64, width=16, depth=2, log_every=25,
                      checkpoint_every=50)  # fmt: skip
    train(snaps, cfg, tmp_path / "whole.pt", tmp_path / "whole.csv")

    def stop(step: int, metrics: dict) -> None:
        if step == 125 and "loss" in metrics:  # after the checkpoint of step 100: a kill
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(snaps, cfg, tmp_path / "cut.pt", tmp_path / "cut.csv", on_metrics=stop)
    resumed = train(snaps, cfg, tmp_path / "cut.pt", tmp_path / "cut.csv")
    whole = torch.load(tmp_path / "whole.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut.pt", weights_only=True)
    assert resumed["best_step"] == whole["best"]["step"]
    for key in whole["ema"]:
        torch.testing.assert_close(cut["ema"][key], whole["ema"][key], rtol=0, atol=0)


def test_the_train_command_splits_a_store_and_says_which_weights_it_kept(tmp_path):
    """Through the CLI the snapshots are a lazy zarr store: the split reads only what it keeps."""
    x, t = simulate_snapshots(GaussianPath(), [0.0, 0.5, 1.0], 300, seed=0)
    store = tmp_path / "store.zarr"
    write_store(store, Snapshots.from_labels(x, t))
    params = {"steps": 100, "batch_size": 64, "width": 16, "depth": 2, "threads": 1, "validation": 0.1,
              "validate_every": 20}  # fmt: skip
    done = subprocess.run(
        [str(BIN / "amcore"), "train", "--store", str(store), "--params", json.dumps(params),
         "--checkpoint", str(tmp_path / "model.pt"), "--loss-csv", str(tmp_path / "loss.csv")],
        env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "validation loss" in done.stderr
    assert re.search(r"weights of step (20|40|60|80|100) \(validation loss -?[0-9.]+", done.stderr)


def test_a_non_finite_validation_loss_is_never_kept_as_the_best(gaussian_snaps):
    _, _, snaps = gaussian_snaps
    run = Run(snaps, TrainConfig(validation=0.1, steps=10, width=8, depth=1), None)
    with torch.no_grad():
        for p in run.ema.parameters():
            p.fill_(float("nan"))
    run.validate(5, None)
    assert run.best is None  # training then ends with its last weights, and says no step was kept
