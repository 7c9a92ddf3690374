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


def _store(tmp_path, times=(0.0, 0.5, 1.0)):
    """The Gaussian path's cells at 0, 0.5 and 1, labelled ``times``."""
    x, t = simulate_snapshots(GaussianPath(), [0.0, 0.5, 1.0], 300, seed=0)
    labels = np.asarray(times)[np.searchsorted([0.0, 0.5, 1.0], t)]
    write_store(tmp_path / "store.zarr", Snapshots.from_labels(x, labels))
    return tmp_path / "store.zarr"


def _one_and_two_processes(tmp_path, params, times=(0.0, 0.5, 1.0)):
    """The store, and one process with ``streams: 2`` beside two torchrun processes, trained with ``params``."""
    store = _store(tmp_path, times)
    single = _train(store, tmp_path / "single", {**params, "streams": 2})
    torchrun = (str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python")
    return store, single, _train(store, tmp_path / "ddp", params, torchrun)


def test_two_process_gloo_ddp_equals_one_process(tmp_path):
    store, single, ddp = _one_and_two_processes(tmp_path, PARAMS)
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


# FM's pace divides each draw's residual, nothing DDP shares out otherwise: slow (30 s); AM's hand-derived rows in CI
@pytest.mark.parametrize("objective", ["am", pytest.param("fm", marks=pytest.mark.slow)])
def test_a_paced_network_trains_alike_on_two_processes(tmp_path, objective):
    """The middle cells labelled 0.01: half the motion in 1 % of the time, a clock whose rates are 32-fold apart, so
    the network is paced (potentials.clock_pace): AM's hand-derived terms under DDP scale their rows by the pace, and
    Flow Matching's loss divides by it on each process's draws."""
    _, single, ddp = _one_and_two_processes(tmp_path, {**PARAMS, "objective": objective}, times=(0.0, 0.01, 1.0))
    assert single["model_args"]["paced"] and ddp["model_args"]["paced"]
    for name, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][name], value, rtol=0, atol=1e-5)


@pytest.mark.slow  # in `pytest -m slow`: CI's suite stays under 20 minutes (1,190 s here)
def test_importance_sampled_times_are_the_same_on_two_processes(tmp_path):
    """Audit 25: each process moved its time proposal with its own stream's integrand, where one process moved it
    between its streams (weights 5e-3 apart). Every stream of a step now draws from one proposal, moved by all of
    them together."""
    _, single, ddp = _one_and_two_processes(tmp_path, {**PARAMS, "time_sampling": "importance"})
    for name, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][name], value, rtol=0, atol=1e-5)
    torch.testing.assert_close(ddp["time_sampler"][0], single["time_sampler"][0], rtol=0, atol=0)
    assert single["time_sampler"][1].all() and single["time_sampler"][0].std() > 0  # the proposal did adapt


@pytest.mark.slow  # in `pytest -m slow`: CI's suite stays under 20 minutes (1,190 s here)
def test_head_auto_under_two_processes_chooses_and_trains_as_one_process(tmp_path):
    """Three trainings in one torchrun job (two candidates, then the chosen head): the process group is set up and
    torn down for each, and the ranks agree on the choice, which equals one process's."""
    _, single, ddp = _one_and_two_processes(tmp_path, {**PARAMS, "head": "auto"})
    assert ddp["config"]["head"] == single["config"]["head"] == ddp["head_choice"]["head"]
    # The objectives of weights equal up to the order of float sums (atol 1e-5 below).
    numbers = {k: v for k, v in single["head_choice"].items() if k != "head"}
    assert {k: ddp["head_choice"][k] for k in numbers} == pytest.approx(numbers, rel=1e-5)
    for name, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][name], value, rtol=0, atol=1e-5)


def test_killing_torchrun_stops_its_training_processes(tmp_path):
    """Audit 25: torchrun starts its workers in sessions of their own, so after a kill -9 of torchrun they trained
    on and wrote model.pt beside a failed job. They now die with it, and leave the checkpoint a rerun resumes."""
    import signal
    import time

    store = _store(tmp_path)
    out = tmp_path / "killed"
    out.mkdir()
    params = {**PARAMS, "steps": 200_000, "checkpoint_every": 20}
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python", str(BIN / "amcore"), "train",
           "--store", str(store), "--params", json.dumps(params), "--checkpoint", str(out / "model.pt"),
           "--loss-csv", str(out / "loss.csv")]  # fmt: skip
    launcher = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "model.pt.partial").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert (out / "model.pt.partial").exists(), "the training never checkpointed"
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()

    def workers() -> list[str]:
        found = subprocess.run(["pgrep", "-f", str(out / "model.pt")], capture_output=True, text=True).stdout.split()
        return found

    deadline = time.monotonic() + 30
    while workers() and time.monotonic() < deadline:
        time.sleep(0.5)
    left = workers()
    subprocess.run(["pkill", "-9", "-f", str(out / "model.pt")])  # none, unless the test fails: never left running
    assert not left, "training processes outlived torchrun"
    assert not (out / "model.pt").exists() and (out / "model.pt.partial").exists()


@pytest.mark.slow  # in `pytest -m slow`: CI's suite stays under 20 minutes (1,190 s here)
def test_two_processes_resume_a_streamed_training_together(tmp_path):
    """Audit 56: each rank decided alone whether to resume, and a streamed path's data key is its own rank's sample:
    rank 0 resumed, rank 1 started afresh, the job wrote a wrong model.pt and hung. The first rank decides for all
    and says so once. A partial from another number of processes starts afresh, and says why."""
    store = _store(tmp_path)
    streamed = {**PARAMS, "in_memory_max_mb": 0.005, "ot_max_size": 100, "stream_refresh_every": 10, "streams": 2}
    torchrun = (str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python")
    half = _train(store, tmp_path / "half", {**streamed, "steps": 20}, torchrun)
    assert half["processes"] == 2
    half["config"]["steps"] = PARAMS["steps"]  # as the partial of the 40-step training, at step 20
    for name, launcher, params in (("two", torchrun, streamed), ("one", (), streamed)):  # one process, two streams
        out = tmp_path / name
        out.mkdir()
        torch.save(half, out / "model.pt.partial")
        cmd = [*launcher, str(BIN / "amcore"), "train", "--store", str(store), "--params", json.dumps(params),
               "--checkpoint", str(out / "model.pt"), "--loss-csv", str(out / "loss.csv")]  # fmt: skip
        result = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stderr[-3000:]
        assert torch.load(out / "model.pt", weights_only=True)["step"] == PARAMS["steps"]
        if name == "two":
            assert result.stderr.count("resuming from step 20") == 1 and "starting afresh" not in result.stderr
        else:
            assert "(the number of processes differ); starting afresh" in result.stderr
