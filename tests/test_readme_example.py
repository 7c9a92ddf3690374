"""The README's Python example runs as written, and its config example is a valid config."""

from __future__ import annotations

import re
import warnings

import yaml
from conftest import ROOT
from snakemake.utils import validate

from amcore import Snapshots, TrainConfig, train
from amcore.data.simulate import GaussianPath, simulate_snapshots


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """Where `make run` leaves its AM model (a short training stands in for it)."""
    run = tmp_path / "results" / "default" / "holdout-none" / "am" / "seed-0"
    x, t = simulate_snapshots(GaussianPath(), [0.0, 0.5, 1.0], 200, seed=0)
    cfg = TrainConfig(steps=20, batch_size=64, width=16, depth=2, log_every=10)
    train(Snapshots.from_labels(x, t), cfg, run / "model.pt", run / "loss.csv")
    monkeypatch.chdir(tmp_path)
    load, train_here = blocks("python")
    namespace: dict = {}
    with warnings.catch_warnings():  # its cells are like the model's at t = 0: no cell runs off (audit 75: 8 did)
        warnings.simplefilter("error", UserWarning)
        exec(compile(load, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    assert namespace["velocity"].shape == (500, 2) and namespace["later"].shape == (500, 2)
    assert namespace["path"].x.shape[1:] == (500, 2)
    assert "TrainedModel(am, 2 features, t in [0, 1], step 20)" in capsys.readouterr().out
    exec(compile(train_here, "README.md", "exec"), namespace)  # noqa: S102 - and its training from arrays
    drift = namespace["model"].velocity(namespace["cells"][:500], t=0.0).mean(axis=0)
    assert abs(drift - 1.0).max() < 0.2  # the cloud moves by (1, 1) a unit of time
    assert (tmp_path / "my_model.csv").exists()


def test_the_config_example_is_valid():
    (example,) = blocks("yaml")
    config = yaml.safe_load(example)
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    assert config["dataset"]["source"] == "h5ad"
