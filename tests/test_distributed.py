"""Two real gloo processes under torchrun take exactly the steps of one process with the same global batch."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
from conftest import BIN, cli_env

from amcore.data.simulate import GaussianPath, simulate_snapshots
from amcore.data.store import Snapshots, write_store

PARAMS = {"steps": 40, "batch_size": 128, "width": 32, "depth": 2, "threads": 1, "seed": 11, "log_every": 10}


def _train(store, out, params, launcher=()):
    out.mkdir()
    cmd = [*launcher, str(BIN / "amcore"), "train", "--store", str(store), "--params", json.dumps(params),
           "--checkpoint", str(out / "model.pt"), "--loss-csv", str(out / "loss.csv")]  # fmt: skip
    result = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out / "model.pt", weights_only=True)


def test_two_process_gloo_ddp_equals_one_process(tmp_path):
    x, t = simulate_snapshots(GaussianPath(), [0.0, 0.5, 1.0], 300, seed=0)
    store = tmp_path / "store.zarr"
    write_store(store, Snapshots.from_labels(x, t))
    single = _train(store, tmp_path / "single", {**PARAMS, "streams": 2})
    torchrun = (str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python")
    ddp = _train(store, tmp_path / "ddp", PARAMS, torchrun)
    for name, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][name], value, rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        np.loadtxt(tmp_path / "ddp" / "loss.csv", delimiter=",", skiprows=1),
        np.loadtxt(tmp_path / "single" / "loss.csv", delimiter=",", skiprows=1),
        rtol=1e-5,
    )
    # And the stream split matters: one stream of 128 is a different (equally valid) run.
    other = _train(store, tmp_path / "one", {**PARAMS, "streams": 1})
    assert any(not torch.allclose(other["model"][k], v) for k, v in single["model"].items())


def test_head_auto_under_two_processes_chooses_and_trains_as_one_process(tmp_path):
    """Three trainings in one torchrun job (two candidates, then the chosen head): the process group is set up and
    torn down for each, and the ranks agree on the choice, which equals one process's."""
    x, t = simulate_snapshots(GaussianPath(), [0.0, 0.5, 1.0], 300, seed=0)
    store = tmp_path / "store.zarr"
    write_store(store, Snapshots.from_labels(x, t))
    params = {**PARAMS, "head": "auto"}
    single = _train(store, tmp_path / "single", {**params, "streams": 2})
    torchrun = (str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python")
    ddp = _train(store, tmp_path / "ddp", params, torchrun)
    assert ddp["config"]["head"] == single["config"]["head"] == ddp["head_choice"]["head"]
    # The objectives of weights equal up to the order of float sums (atol 1e-5 below).
    numbers = {k: v for k, v in single["head_choice"].items() if k != "head"}
    assert {k: ddp["head_choice"][k] for k in numbers} == pytest.approx(numbers, rel=1e-5)
    for name, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][name], value, rtol=0, atol=1e-5)
