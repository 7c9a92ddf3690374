"""Each training is an MLflow model (issue 14): a pyfunc of the features and the time, which ``amcore.load`` reads
back from ``runs:/``, ``models:/`` and local model directories; its checkpoint still loads with weights_only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import BIN, cli_env
from mlflow.tracking import MlflowClient

import amcore
from amcore import TrainConfig, tracking, train
from amcore.data.simulate import GaussianPath, simulate_snapshots
from amcore.data.store import Snapshots, write_store
from amcore.errors import InputError
from amcore.models.mlflow_model import save_model, time_column

PARAMS = {"steps": 30, "width": 16, "depth": 2, "batch_size": 64, "log_every": 10, "threads": 1}
ENV = (tracking.ENV_URI, tracking.ENV_EXPERIMENT, tracking.ENV_PARENT)
X = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
T = np.linspace(0.0, 1.0, 7).astype(np.float32)


def _frame(x, t, dtype=np.float32) -> pd.DataFrame:
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "t": t}).astype(dtype)


def _parent(uri: str, results_dir) -> dict:
    """A pipeline's parent run, as Snakemake's onstart opens it; its coordinates, for a stage's environment."""
    saved = {key: os.environ.pop(key, None) for key in ENV}
    try:
        tracking.start_parent(uri, "models", results_dir, {})
        return {key: os.environ[key] for key in ENV}
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, migrated_tracker):
    """The real ``amcore train`` stage under a parent run on a sqlite tracker, as the pipeline runs it."""
    root = tmp_path_factory.mktemp("mlflow-model")
    x, t = simulate_snapshots(GaussianPath(), [0.0, 0.5, 1.0], 300, seed=0)
    write_store(root / "store.zarr", Snapshots.from_labels(x, t))
    shutil.copyfile(migrated_tracker, root / "mlflow.db")  # tests/conftest.py: a fresh one takes 7.5 s
    uri = f"sqlite:///{root / 'mlflow.db'}"
    coords = _parent(uri, root)
    cmd = [str(BIN / "amcore"), "train", "--store", str(root / "store.zarr"), "--params", json.dumps(PARAMS),
           "--checkpoint", str(root / "model.pt"), "--loss-csv", str(root / "loss.csv")]  # fmt: skip
    proc = subprocess.run(cmd, env=cli_env(**coords), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(uri)
    [run] = client.search_runs([coords[tracking.ENV_EXPERIMENT]], "tags.`amcore.stage` = 'train'")
    reference = amcore.load(root / "model.pt")
    return SimpleNamespace(uri=uri, client=client, run=run, checkpoint=root / "model.pt", stderr=proc.stderr,
                           reference=reference, velocity=reference.velocity(X, T))  # fmt: skip


def test_a_run_uri_without_a_tracker_that_can_answer_is_one_clear_line(trained_run, tmp_path, monkeypatch):
    """Audit 85: a stopped server was retried for 4 minutes; with no tracker set, MLflow created ./mlflow.db and
    said only that the run was not found; a run of another tracker named no tracker."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    with pytest.raises(InputError, match=f"the tracking server http://127.0.0.1:{port} does not answer"):
        amcore.load("runs:/0123456789abcdef/model")
    missing = tmp_path / "nowhere" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{missing}")
    with pytest.raises(InputError, match="which does not exist: set MLFLOW_TRACKING_URI"):
        amcore.load("runs:/0123456789abcdef/model")
    assert not missing.parent.exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_run.uri)
    with pytest.raises(InputError, match=f"not found .*in the tracker {trained_run.uri}"):
        amcore.load("runs:/0123456789abcdef/model")


def test_the_train_stage_logs_a_pyfunc_of_the_features_and_time_that_predicts_the_velocity(trained_run, monkeypatch):
    run_id = trained_run.run.info.run_id
    assert f"MLflow model runs:/{run_id}/model" in trained_run.stderr and "MLflow call failed" not in trained_run.stderr
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_run.uri)
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    signature = pyfunc.metadata.signature
    assert signature.inputs.input_names() == ["x0", "x1", "t"] and signature.outputs.input_names() == ["x0", "x1"]
    meta = pyfunc.metadata.metadata
    assert [meta[f"amcore.{key}"] for key in ("objective", "output", "time_column")] == ["am", "velocity", "t"]
    assert meta["amcore.coordinates"] == "the input's features as given"  # audit 45: what the columns are in
    predicted = pyfunc.predict(_frame(X, T))
    assert list(predicted.columns) == ["x0", "x1"] and predicted.to_numpy().dtype == np.float32
    np.testing.assert_allclose(predicted.to_numpy(), trained_run.velocity, rtol=1e-6, atol=1e-7)
    # pandas' float64 frames too: the network computes in float32 as TrainedModel.velocity does
    np.testing.assert_allclose(pyfunc.predict(_frame(X, T, np.float64)).to_numpy(), trained_run.velocity, rtol=1e-6)
    # one logged model, ready, produced by the stage's own child run
    [logged] = trained_run.client.search_logged_models([trained_run.run.info.experiment_id])
    assert (logged.name, logged.source_run_id, str(logged.status)) == ("model", run_id, "READY")
    assert pyfunc.metadata.model_id == logged.model_id


def test_amcore_load_reads_runs_models_and_local_model_directories(trained_run, tmp_path, monkeypatch):
    run_id, uri = trained_run.run.info.run_id, trained_run.uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # URIs resolve as mlflow.pyfunc.load_model resolves them
    model = amcore.load(f"runs:/{run_id}/model")
    assert isinstance(model, amcore.TrainedModel) and model.info["path"] == f"runs:/{run_id}/model"
    assert (model.objective, model.feature_names, model.info["step"]) == ("am", ["x0", "x1"], PARAMS["steps"])
    np.testing.assert_array_equal(model.velocity(X, T), trained_run.velocity)

    [logged] = trained_run.client.search_logged_models([trained_run.run.info.experiment_id])
    version = mlflow.register_model(f"runs:/{run_id}/model", "amcore-test").version
    for source in (f"models:/{logged.model_id}", f"models:/amcore-test/{version}"):
        np.testing.assert_array_equal(amcore.load(source).velocity(X, T), trained_run.velocity)

    local = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=str(tmp_path), tracking_uri=uri)
    np.testing.assert_array_equal(amcore.load(local).velocity(X, T), trained_run.velocity)
    # The model ships the checkpoint as it is (weights_only loading) and no pickle.
    payload = torch.load(os.path.join(local, "artifacts", "model.pt"), weights_only=True)
    assert payload["objective"] == "am" and payload["step"] == PARAMS["steps"]
    files = [os.path.relpath(os.path.join(d, f), local) for d, _, fs in os.walk(local) for f in fs]
    assert not [f for f in files if f.endswith((".pkl", ".pickle"))], files
    requirements = open(os.path.join(local, "requirements.txt")).read().split()
    assert {r.split("==")[0] for r in requirements} == {"amcore", "torch", "numpy", "pandas", "mlflow"}
    assert f"mlflow=={mlflow.__version__}" in requirements


def test_an_eam_model_answers_its_drift_and_a_feature_named_t_moves_the_time_column(tmp_path):
    x, t = simulate_snapshots(GaussianPath(), [0.0, 0.5, 1.0], 300, seed=0)
    cfg = TrainConfig(objective="eam", sigma=0.5, sigma_final=0.1, **PARAMS)
    train(Snapshots.from_labels(x, t), cfg, tmp_path / "eam.pt", tmp_path / "eam.csv")
    model = save_model(tmp_path / "eam.pt", tmp_path / "eam-model")  # a local MLflow model directory
    pyfunc = mlflow.pyfunc.load_model(str(tmp_path / "eam-model"))
    assert pyfunc.metadata.metadata["amcore.output"] == "drift"
    np.testing.assert_allclose(pyfunc.predict(_frame(X, T)).to_numpy(), model.drift(X, T), rtol=1e-6, atol=1e-7)
    assert amcore.load(tmp_path / "eam-model").objective == "eam"
    assert time_column(["x0", "x1"]) == "t" and time_column(["t", "x"]) == "time"
    # Audit 16: an MLflow model given as the checkpoint was copied in whole, into a model amcore.load could not read.
    with pytest.raises(InputError, match=r"save_model takes a checkpoint file.*this one holds .*eam\.pt\)"):
        save_model(tmp_path / "eam-model", tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_a_failed_model_upload_leaves_the_stage_green_and_no_half_logged_model(trained_run, tmp_path, capsys,
                                                                            monkeypatch, fresh_tracker):  # fmt: skip
    """The tracker takes the run but cannot store files: the stage goes on, and no empty model is left behind."""
    uri = fresh_tracker(tmp_path)
    (tmp_path / "blocker").write_text("a file where the artifact directory should be")
    client = MlflowClient(uri)
    experiment = client.create_experiment("broken", artifact_location=(tmp_path / "blocker" / "art").as_uri())
    parent = client.create_run(experiment, run_name="pipeline").info.run_id
    monkeypatch.setenv(tracking.ENV_URI, uri)
    monkeypatch.setenv(tracking.ENV_EXPERIMENT, experiment)
    monkeypatch.setenv(tracking.ENV_PARENT, parent)
    with tracking.StageRun("train", {}, {"steps": 30}, final_wait_s=5) as run:
        run.log_metrics({"loss": 0.5}, 1)
        run.log_model(trained_run.checkpoint)
    assert "MLflow call failed for stage train" in capsys.readouterr().err
    [child] = client.search_runs([experiment], "tags.`amcore.stage` = 'train'")
    assert child.info.status == "FINISHED" and child.data.metrics["loss"] == 0.5
    assert list(client.search_logged_models([experiment])) == []


@pytest.mark.slow  # a server's start and stop alone take tens of seconds on 2 busy cores
def test_the_model_travels_through_an_mlflow_server(trained_run, mlflow_server, tmp_path, monkeypatch):
    """Through a server, the model's files go by its artifact proxy (mlflow-artifacts:/) both ways."""
    coords = _parent(mlflow_server.uri, tmp_path)
    for key, value in coords.items():
        monkeypatch.setenv(key, value)
    with tracking.StageRun("train", {}, {"steps": 30}, final_wait_s=10) as run:
        run.log_model(trained_run.checkpoint)
    source = f"runs:/{run.run_id}/model"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    predicted = mlflow.pyfunc.load_model(source).predict(_frame(X, T))
    np.testing.assert_allclose(predicted.to_numpy(), trained_run.velocity, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(amcore.load(source).velocity(X, T), trained_run.velocity)
