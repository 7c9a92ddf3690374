"""Shared fixtures: a tiny pipeline config and helpers that run the real Snakemake and amcore CLIs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Seconds on 2 cores: three snapshots of 300 cells, a small net, a few hundred steps.
TINY_CONFIG = {
    "experiment": "tiny",
    "dataset": {"source": "simulate", "times": [0.0, 0.5, 1.0], "n_per_time": 300, "seed": 0},
    "models": {"am": {"objective": "am", "steps": 400, "batch_size": 256, "width": 64, "depth": 2, "lr": 3e-3}},
    "integrate": {"steps_per_interval": 5},
    "evaluate": {"truth_samples": 500},
}


def cli_env(**extra: str) -> dict:
    """The environment a user's shell would have: the project's venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def snakemake(workdir: Path, config: dict, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the project's Snakefile in ``workdir`` on ``config`` (written to ``workdir/config.yaml``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    cmd = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(configfile), "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, env=env or cli_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture
def tiny_config() -> dict:
    return yaml.safe_load(yaml.safe_dump(TINY_CONFIG))
