"""A training killed part-way (a real SIGKILL to a real process) resumes to the same parameters."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from conftest import BIN, cli_env

from amcore.atomic import lease_path
from amcore.data.simulate import GaussianPath, simulate_snapshots
from amcore.data.store import Snapshots, write_store
from amcore.training.train import partial_path

PARAMS = {"steps": 600, "checkpoint_every": 25, "batch_size": 128, "width": 32, "depth": 2, "threads": 1, "seed": 3}


def _train_cmd(store, out, params=PARAMS):
    return [str(BIN / "amcore"), "train", "--store", str(store), "--params", json.dumps(params),
            "--checkpoint", str(out / "model.pt"), "--loss-csv", str(out / "loss.csv")]  # fmt: skip


def _kill_once_past(proc: subprocess.Popen, partial, step: int, timeout_s: float) -> None:
    """SIGKILL ``proc`` once its resumable state ``partial`` holds ``step`` or more."""
    deadline = time.monotonic() + timeout_s
    while not (partial.exists() and torch.load(partial, weights_only=True)["step"] >= step):
        assert proc.poll() is None, "training ended before it could be killed: make it longer"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path):
    x, t = simulate_snapshots(GaussianPath(), [0.0, 0.5, 1.0], 300, seed=0)
    store = tmp_path / "store.zarr"
    write_store(store, Snapshots.from_labels(x, t))
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir()
    killed.mkdir()
    subprocess.run(_train_cmd(store, straight), env=cli_env(), check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(_train_cmd(store, killed), env=cli_env(), stderr=subprocess.PIPE, text=True)
    partial = partial_path(killed / "model.pt")
    _kill_once_past(proc, partial, 200, 240)
    killed_at = torch.load(partial, weights_only=True)["step"]
    assert killed_at < PARAMS["steps"] and not (killed / "model.pt").exists(), "a killed job must not look finished"

    resumed = subprocess.run(_train_cmd(store, killed), env=cli_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from step {killed_at}" in resumed.stderr
    # audit 65: the closing line read as every step run in the resumed run's time
    left = PARAMS["steps"] - killed_at
    assert f"amcore train: {left} steps (resumed at {killed_at} of {PARAMS['steps']}) in " in resumed.stderr
    assert not partial.exists()
    a = torch.load(straight / "model.pt", weights_only=True)
    b = torch.load(killed / "model.pt", weights_only=True)
    for key in ("model", "ema"):
        for name in a[key]:
            torch.testing.assert_close(b[key][name], a[key][name], rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        np.loadtxt(killed / "loss.csv", delimiter=",", skiprows=1),
        np.loadtxt(straight / "loss.csv", delimiter=",", skiprows=1),
        rtol=1e-6,
    )


def test_a_training_stopped_by_sigterm_closes_its_mlflow_run_and_resumes(tmp_path, monkeypatch, fresh_tracker):
    """Audit 86: scancel (SIGTERM, then SIGKILL after SLURM's KillWait) killed the training at once, and its stage's
    MLflow run stayed RUNNING for good, beside the resumed training's. Now the stage unwinds: the run is KILLED, the
    resumable state stays, nothing looks finished."""
    from mlflow.tracking import MlflowClient

    from amcore import tracking

    x, t = simulate_snapshots(GaussianPath(), [0.0, 0.5, 1.0], 300, seed=0)
    store = tmp_path / "store.zarr"
    write_store(store, Snapshots.from_labels(x, t))
    for key in (tracking.ENV_URI, tracking.ENV_EXPERIMENT, tracking.ENV_PARENT):
        monkeypatch.delenv(key, raising=False)
    uri = fresh_tracker(tmp_path)
    tracking.start_parent(uri, "stopped", tmp_path, {})
    env = cli_env(**{k: os.environ[k] for k in (tracking.ENV_URI, tracking.ENV_EXPERIMENT, tracking.ENV_PARENT)})
    proc = subprocess.Popen(_train_cmd(store, tmp_path), env=env, stderr=subprocess.PIPE, text=True)
    partial = partial_path(tmp_path / "model.pt")
    deadline = time.monotonic() + 240
    while not (partial.exists() and torch.load(partial, weights_only=True)["step"] >= 100):
        assert proc.poll() is None, "training ended before it could be stopped: make it longer"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "amcore train: stopped by SIGTERM; no output it was writing was kept" in stderr
    assert partial.exists() and not (tmp_path / "model.pt").exists()
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("stopped").experiment_id
    [stopped] = client.search_runs([experiment], "tags.`amcore.stage` = 'train'")
    assert stopped.info.status == "KILLED"
    resumed = subprocess.run(_train_cmd(store, tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "resuming from step" in resumed.stderr, resumed.stderr[-2000:]
    statuses = sorted(r.info.status for r in client.search_runs([experiment], "tags.`amcore.stage` = 'train'"))
    assert statuses == ["FINISHED", "KILLED"]


def test_a_second_training_of_one_checkpoint_is_refused_while_the_first_runs(tmp_path, monkeypatch, fresh_tracker):
    """kill -9 of Snakemake leaves its training running, and the rerun's training resumed from the same
    model.pt.partial beside it: two processes wrote one resumable state and one model.pt. The second is refused,
    naming the first and how to stop it, before it opens an MLflow run (audit 87: a FAILED training run stood
    beside the running one); the first trains on, and gives its lease back when stopped."""
    import socket

    from mlflow.tracking import MlflowClient

    from amcore import tracking

    x, t = simulate_snapshots(GaussianPath(), [0.0, 0.5, 1.0], 300, seed=0)
    store = tmp_path / "store.zarr"
    write_store(store, Snapshots.from_labels(x, t))
    cmd = _train_cmd(store, tmp_path, PARAMS | {"steps": 100_000})  # far longer than the test
    for key in (tracking.ENV_URI, tracking.ENV_EXPERIMENT, tracking.ENV_PARENT):
        monkeypatch.delenv(key, raising=False)
    uri = fresh_tracker(tmp_path)
    tracking.start_parent(uri, "refused", tmp_path, {})
    env = cli_env(**{k: os.environ[k] for k in (tracking.ENV_URI, tracking.ENV_EXPERIMENT, tracking.ENV_PARENT)})
    first = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        partial, deadline = partial_path(tmp_path / "model.pt"), time.monotonic() + 240
        while not partial.exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first training did not start"
            time.sleep(0.05)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"is already running (process {first.pid} on host {socket.gethostname()}" in second.stderr
        assert f"stop it with `kill {first.pid}`" in second.stderr
        assert first.poll() is None, "the refused training must leave the first alone"
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("refused").experiment_id
        runs = client.search_runs([experiment], "tags.`amcore.stage` = 'train'")
        assert [run.info.status for run in runs] == ["RUNNING"], "the refused training opens no run"
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    assert first.returncode == 128 + signal.SIGTERM
    assert partial.exists() and not lease_path(tmp_path / "model.pt").exists()


def test_a_partial_checkpoint_resumes_only_the_same_data(tmp_path, capsys):
    from amcore import TrainConfig, train

    def snaps(seed):
        x, t = simulate_snapshots(GaussianPath(), [0.0, 1.0], 100, seed=seed)
        return Snapshots.from_labels(x, t)

    cfg = TrainConfig(steps=20, batch_size=32, width=8, depth=1, log_every=10, threads=1)
    train(snaps(0), cfg, tmp_path / "a.pt", tmp_path / "a.csv")
    payload = torch.load(tmp_path / "a.pt", weights_only=True)
    payload["step"] = 10
    for name, data_seed in (("same", 0), ("other", 1)):
        torch.save(payload, partial_path(tmp_path / f"{name}.pt"))
        train(snaps(data_seed), cfg, tmp_path / f"{name}.pt", tmp_path / f"{name}.csv")
    err = capsys.readouterr().err
    assert "resuming from step 10" in err
    assert "is from another training (the data, the network differ); starting afresh" in err


def test_a_partial_of_the_same_values_in_another_feature_order_or_store_starts_afresh(tmp_path, capsys):
    """Review 84: the data's fingerprint was one sum of every value, so the features swapped read as the same data
    (with ``units: data`` the same network too), and a partial of another store resumed: with growth auto's finished
    candidates kept to resume, a model of other data could have been kept."""
    from amcore import TrainConfig, train

    x, t = simulate_snapshots(GaussianPath(), [0.0, 1.0], 100, seed=0)
    cfg = TrainConfig(steps=20, batch_size=32, width=8, depth=1, log_every=10, threads=1, units="data")
    train(Snapshots.from_labels(x, t), cfg, tmp_path / "a.pt", tmp_path / "a.csv")
    payload = torch.load(tmp_path / "a.pt", weights_only=True)
    payload["step"] = 10
    torch.save(payload, partial_path(tmp_path / "swapped.pt"))
    train(Snapshots.from_labels(x[:, ::-1].copy(), t), cfg, tmp_path / "swapped.pt", tmp_path / "swapped.csv")
    assert "is from another training (the data differ); starting afresh" in capsys.readouterr().err

    def stored(sha):
        return Snapshots.from_labels(x, t, attrs={"provenance": {"sha256": sha}})

    train(stored("a"), cfg, tmp_path / "b.pt", tmp_path / "b.csv")
    payload = torch.load(tmp_path / "b.pt", weights_only=True)
    payload["step"] = 10
    for name, sha in (("same", "a"), ("other", "b")):
        torch.save(payload, partial_path(tmp_path / f"{name}.pt"))
        capsys.readouterr()
        train(stored(sha), cfg, tmp_path / f"{name}.pt", tmp_path / f"{name}.csv")
        err = capsys.readouterr().err
        assert ("resuming from step 10" in err) == (name == "same"), err
    assert "is from another training (the store differ); starting afresh" in err


def test_a_partial_saved_before_a_setting_existed_resumes_only_for_the_clock(tmp_path, capsys):
    """A partial from before time_clock existed resumes (its clock is in the network's model_args, compared too);
    one lacking any other setting does not (review 55: velocity_weight changes no model_args)."""
    from amcore import TrainConfig, train

    x, t = simulate_snapshots(GaussianPath(), [0.0, 1.0], 100, seed=0)
    cfg = TrainConfig(steps=20, batch_size=32, width=8, depth=1, log_every=10, threads=1)
    train(Snapshots.from_labels(x, t), cfg, tmp_path / "a.pt", tmp_path / "a.csv")
    payload = torch.load(tmp_path / "a.pt", weights_only=True)
    payload["step"] = 10
    for missing in ("time_clock", "velocity_weight"):
        older = {**payload, "config": {k: v for k, v in payload["config"].items() if k != missing}}
        torch.save(older, partial_path(tmp_path / f"{missing}.pt"))
        capsys.readouterr()
        train(Snapshots.from_labels(x, t), cfg, tmp_path / f"{missing}.pt", tmp_path / f"{missing}.csv")
        err = capsys.readouterr().err
        assert ("resuming from step 10" in err) == (missing == "time_clock"), err


@pytest.mark.slow  # three trainings twice, in processes of their own (the plain kill -9 case above is fast)
def test_growth_auto_killed_in_a_candidate_resumes_to_the_uninterrupted_model(tmp_path):
    """kill -9 while ``growth: auto`` trains its second candidate: nothing looks finished; the rerun resumes the
    first candidate at its last step (no step trained twice) and the second from its state, and keeps the model an
    uninterrupted choice keeps, with no candidate file left beside it."""
    x, t = simulate_snapshots(GaussianPath(), [0.0, 0.5, 1.0], 200, seed=0)
    store = tmp_path / "store.zarr"
    write_store(store, Snapshots.from_labels(x, t))
    params = {**PARAMS, "objective": "uam", "growth": "auto", "steps": 300}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for folder in (straight, killed):
        folder.mkdir()

    def cmd(out):
        return [*_train_cmd(store, out)[:5], json.dumps(params), *_train_cmd(store, out)[6:]]

    subprocess.run(cmd(straight), env=cli_env(), check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(cmd(killed), env=cli_env(), stderr=subprocess.DEVNULL)
    _kill_once_past(proc, partial_path(killed / "model.pt.growth-1"), 100, 400)
    assert not (killed / "model.pt").exists(), "a killed job must not look finished"
    resumed = subprocess.run(cmd(killed), env=cli_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    found = re.findall(r"resuming from step (\d+) \(\S+growth-([\d.]+)\.partial\)", resumed.stderr)
    resumed_at = {growth: int(step) for step, growth in found}
    assert resumed_at.keys() == {"0.1", "1"}, resumed.stderr[-2000:]  # the first finished before the kill, at its end
    assert resumed_at["0.1"] == params["steps"] and 100 <= resumed_at["1"] < params["steps"]
    assert sorted(p.name for p in killed.iterdir()) == ["loss.csv", "model.pt"]
    a = torch.load(straight / "model.pt", weights_only=False)
    b = torch.load(killed / "model.pt", weights_only=False)
    assert a["growth_choice"] == b["growth_choice"]
    for name in a["ema"]:
        torch.testing.assert_close(b["ema"][name], a["ema"][name], rtol=0, atol=1e-6)
