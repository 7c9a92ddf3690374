"""Tracking never costs a training or an invocation: a tracker stopped mid-run, pipelines racing on one database."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ROOT, cli_env
from mlflow.tracking import MlflowClient

from amcore import tracking
from amcore.data.simulate import GaussianPath, simulate_snapshots
from amcore.data.store import Snapshots, write_store


def test_training_survives_a_tracking_outage_and_loses_no_metric(tmp_path, mlflow_server, monkeypatch):
    x, t = simulate_snapshots(GaussianPath(), [0.0, 0.5, 1.0], 200, seed=0)
    write_store(tmp_path / "store.zarr", Snapshots.from_labels(x, t))
    for key in (tracking.ENV_URI, tracking.ENV_EXPERIMENT, tracking.ENV_PARENT):
        monkeypatch.delenv(key, raising=False)
    tracking.start_parent(mlflow_server.uri, "outage", tmp_path, {})
    env = cli_env(**{k: os.environ[k] for k in (tracking.ENV_URI, tracking.ENV_EXPERIMENT, tracking.ENV_PARENT)})
    params = {"steps": 1200, "log_every": 10, "batch_size": 64, "width": 32, "depth": 2, "threads": 1}
    cmd = [str(BIN / "amcore"), "train", "--store", str(tmp_path / "store.zarr"), "--params", json.dumps(params),
           "--checkpoint", str(tmp_path / "model.pt"), "--loss-csv", str(tmp_path / "loss.csv")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("outage").experiment_id

    def logged_steps() -> int:
        runs = client.search_runs([experiment], "tags.`amcore.stage` = 'train'")
        return len(client.get_metric_history(runs[0].info.run_id, "loss")) if runs else 0

    deadline = time.monotonic() + 120
    while logged_steps() == 0:
        assert proc.poll() is None and time.monotonic() < deadline, "no metric reached the server"
        time.sleep(0.2)
    mlflow_server.stop()
    time.sleep(4)  # the training goes on without a tracker
    assert proc.poll() is None, "training must keep running while the tracker is down"
    mlflow_server.start()
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert "MLflow call failed" in stderr and "every metric of stage train arrived" in stderr
    assert logged_steps() == params["steps"] // params["log_every"]
    assert (tmp_path / "model.pt").exists()


@pytest.mark.slow  # in `pytest -m slow`: CI's suite stays under 20 minutes (1,190 s here)
def test_pipelines_started_together_share_a_fresh_sqlite_tracker(tmp_path, tiny_config):
    """Three invocations creating one sqlite database at once: each gets its parent run, none is untracked."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tiny_config["dataset"]["n_per_time"] = 100
    tiny_config["mlflow"] = {"tracking_uri": uri, "experiment": "race"}
    procs = []
    for i in range(3):
        workdir = tmp_path / f"work{i}"
        workdir.mkdir()
        (workdir / "config.yaml").write_text(yaml.safe_dump({**tiny_config, "experiment": f"race{i}"}))
        cmd = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(workdir / "config.yaml"), "--replace-workflow-config", "--cores", "1", "--until",
               "prepare"]  # fmt: skip
        with open(workdir / "snakemake.log", "w") as log:
            procs.append(subprocess.Popen(cmd, cwd=workdir, env=cli_env(), stdout=log, stderr=subprocess.STDOUT))
    for i, proc in enumerate(procs):
        proc.wait(timeout=300)
        output = (tmp_path / f"work{i}" / "snakemake.log").read_text()
        assert proc.returncode == 0, output[-3000:]
        assert "not tracked" not in output, output[-3000:]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("race").experiment_id
    parents = client.search_runs([experiment], "tags.`amcore.kind` = 'pipeline'")
    assert sorted(run.data.tags["amcore.experiment"] for run in parents) == ["race0", "race1", "race2"]
    for parent in parents:
        assert parent.info.status == "FINISHED"
        children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert [run.data.tags["amcore.stage"] for run in children] == ["prepare"]


def test_a_pipeline_stopped_by_ctrl_c_closes_its_runs_killed_not_failed(tmp_path, tiny_config, fresh_tracker):
    """Audit 86: Snakemake's onerror is not told why a run ended, and a Ctrl-C read as FAILED in MLflow. Ctrl-C (a
    SIGINT to the terminal's process group) now closes the parent run and the stopped training's run KILLED, and
    the training leaves its resumable state, no model and no lease."""
    tiny_config["models"]["am"].update(steps=100_000, checkpoint_every=25)  # far longer than the test
    workdir = tmp_path / "work"
    fresh_tracker(workdir / "results")
    (workdir / "config.yaml").write_text(yaml.safe_dump(tiny_config))
    # SIGINT as a terminal leaves it: a test run started in the background (`make test &`) ignores SIGINT, every
    # process it starts inherits that, and Python keeps it ignored (the pipeline then ran on and the test hung).
    cmd = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
           "os.execv(sys.argv[1], sys.argv[1:])", str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"), "--replace-workflow-config",
           "--cores", "1"]  # fmt: skip
    with open(workdir / "snakemake.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=cli_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    model = workdir / "results" / "tiny" / "holdout-none" / "am" / "seed-0" / "model.pt"
    try:
        deadline = time.monotonic() + 300
        while not model.with_name("model.pt.partial").exists():
            assert proc.poll() is None and time.monotonic() < deadline, (workdir / "snakemake.log").read_text()[-3000:]
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) != 0
    finally:  # never a 100,000-step training left running behind a failed test
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert model.with_name("model.pt.partial").exists() and not model.exists()
    assert not model.with_name("model.pt.running").exists(), "a stopped training gives its lease back"
    client = MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("amcore").experiment_id
    [parent] = client.search_runs([experiment], "tags.`amcore.kind` = 'pipeline'")
    assert parent.info.status == "KILLED"
    [stopped] = client.search_runs([experiment], "tags.`amcore.stage` = 'train'")
    assert stopped.info.status == "KILLED"


def test_the_parent_run_holds_the_config_and_code_and_a_killed_invocation_is_closed(tmp_path, monkeypatch,
                                                                                    fresh_tracker):  # fmt: skip
    """Audit 14: the parent run had no parameter, no run said which code ran, and a kill -9 left the parent and its
    stages RUNNING for good. The next invocation of the same results folder marks them KILLED once their process is
    gone; another folder's run, and a live one, are left alone. A config key MLflow cannot name (a time_map label
    with '=') stays in config.json and untracks nothing."""
    uri = fresh_tracker(tmp_path)
    for key in (tracking.ENV_URI, tracking.ENV_EXPERIMENT, tracking.ENV_PARENT):
        monkeypatch.delenv(key, raising=False)
    config = {"experiment": "e", "models": {"am": {"objective": "am", "steps": 10}}, "time_map": {"day=3 (a)": 3}}
    tracking.start_parent(uri, "prov", tmp_path / "results", {}, config)
    killed = os.environ[tracking.ENV_PARENT]
    with tracking.StageRun("prepare", {}, {"given": 1}) as stage:  # a stage that then dies with its invocation
        stage.log_params({"data": {"sha256": "ab12"}})
        stage.log_metrics({"n_obs": 3.0})
    client = MlflowClient(uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("prov").experiment_id], "tags.`amcore.stage` = 'prepare'"
    )
    assert run.data.params == {"given": "1", "data.sha256": "ab12"}
    assert run.data.tags["amcore.git_commit"] and run.data.tags["amcore.version"]
    client.update_run(run.info.run_id, status="RUNNING")  # as a kill -9 leaves it: never terminated
    tracking.start_parent(uri, "prov", tmp_path / "results", {}, config)  # its process (this one) lives: left alone
    assert client.get_run(killed).info.status == "RUNNING"
    client.set_terminated(os.environ[tracking.ENV_PARENT])
    client.set_tag(killed, "amcore.pid", "999999999")  # no such process: the invocation was killed
    parent = client.get_run(killed)
    assert parent.data.params["models.am.steps"] == "10" and parent.data.tags["amcore.git_commit"]
    # audit 31: a dirty tree's commit named no change (two trees, one tag), and no package version was recorded
    commit, packages = parent.data.tags["amcore.git_commit"], parent.data.tags["amcore.packages"]
    assert re.fullmatch(r"([0-9a-f]{40}|unknown)(\+dirty\.[0-9a-f]{12})?", commit), commit
    assert "torch " in packages and "pot " in packages and "numpy " in packages
    patched = [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert ("code.patch" in patched) == ("+dirty." in commit), patched
    assert json.loads(Path(client.download_artifacts(killed, "config.json", str(tmp_path))).read_text()) == config
    tracking.start_parent(uri, "prov", tmp_path / "other", {}, config)
    elsewhere = os.environ[tracking.ENV_PARENT]
    tracking.start_parent(uri, "prov", tmp_path / "results", {}, config)
    assert client.get_run(killed).info.status == "KILLED" and client.get_run(run.info.run_id).info.status == "KILLED"
    assert client.get_run(elsewhere).info.status == "RUNNING"


def test_a_tracking_database_on_a_full_disk_is_one_line_not_a_traceback_a_retry(tmp_path, monkeypatch, capfd,
                                                                                small_disk):  # fmt: skip
    """Audit 30: the MLflow database filling its disk mid-run printed two tracebacks for every retry (72 in one
    stage, 3,132 log lines) and buried what failed. The stage says it once, in a line, and what did not arrive."""
    disk = small_disk("4m")
    uri = f"sqlite:///{disk / 'mlflow.db'}"
    for key in (tracking.ENV_URI, tracking.ENV_EXPERIMENT, tracking.ENV_PARENT):
        monkeypatch.delenv(key, raising=False)
    tracking.start_parent(uri, "full", tmp_path / "results", {})
    assert os.environ.get(tracking.ENV_PARENT), capfd.readouterr().err
    with open(disk / "filler", "wb") as filler:  # the rest of the disk, to the last block
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass
    capfd.readouterr()
    with tracking.StageRun("export", {}, {"given": 1}, final_wait_s=3.0) as stage:
        for step in range(50):
            stage.log_metrics({f"value_{i}": float(i) for i in range(20)}, step)
        time.sleep(3.0)  # the sender's retries
    said = capfd.readouterr().err
    assert "Traceback" not in said and "[SQL:" not in said, said[:3000]
    assert said.count("database or disk is full") == 1, said[:3000]
    assert "amcore: MLflow did not take 1000 metric values of stage export" in said
    assert len(said.splitlines()) <= 3, said[:3000]


def test_what_an_auto_setting_chose_reaches_mlflow(tmp_path, monkeypatch, fresh_tracker):
    """The train run's params keep ``head: auto`` and ``growth: auto`` as given; what they chose goes beside them as
    ``head_chosen`` / ``growth_chosen`` (audit 82: the chosen head was in no param, tag or metric)."""
    x, t = simulate_snapshots(GaussianPath(), [0.0, 0.5, 1.0], 60, seed=0)
    write_store(tmp_path / "store.zarr", Snapshots.from_labels(x, t))
    for key in (tracking.ENV_URI, tracking.ENV_EXPERIMENT, tracking.ENV_PARENT):
        monkeypatch.delenv(key, raising=False)
    uri = fresh_tracker(tmp_path)
    tracking.start_parent(uri, "chosen", tmp_path, {})
    env = cli_env(**{k: os.environ[k] for k in (tracking.ENV_URI, tracking.ENV_EXPERIMENT, tracking.ENV_PARENT)})
    small = {"steps": 30, "batch_size": 32, "width": 8, "depth": 1, "threads": 1, "log_every": 10}
    for name, auto in (("head", {"objective": "eam", "sigma": 0.3, "head": "auto"}),
                       ("growth", {"objective": "uam", "growth": "auto"})):  # fmt: skip
        cmd = [str(BIN / "amcore"), "train", "--store", str(tmp_path / "store.zarr"), "--params",
               json.dumps({**small, **auto}), "--checkpoint", str(tmp_path / f"{name}.pt"), "--loss-csv",
               str(tmp_path / f"{name}.csv"), "--tags", json.dumps({"which": name})]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("chosen").experiment_id
    runs = {r.data.tags["which"]: r for r in client.search_runs([experiment], "tags.`amcore.stage` = 'train'")}
    head, growth = runs["head"].data, runs["growth"].data
    assert head.params["head"] == "auto" and head.params["head_chosen"] in ("scalar", "inner")
    assert growth.params["growth"] == "auto" and float(growth.params["growth_chosen"]) in (0.1, 1.0, 10.0)
    assert growth.metrics["growth"] == float(growth.params["growth_chosen"])
    assert "head_chosen" not in growth.params and "growth_chosen" not in head.params
