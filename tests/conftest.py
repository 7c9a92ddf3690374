"""Shared fixtures: a tiny pipeline config and helpers that run the real Snakemake and amcore CLIs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
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
    cmd += ["--configfile", str(configfile), "--replace-workflow-config", "--cores", "2", *args]  # the file alone
    return subprocess.run(cmd, cwd=workdir, env=env or cli_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(autouse=True)
def no_leaked_tracking_coordinates():
    """``tracking.start_parent`` exports the parent run's coordinates into ``os.environ``; a test that calls it
    must not hand them on: later CLI calls would report to its stopped server and wait out their retries."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("AMCORE_MLFLOW_")}
    yield
    for key in [k for k in os.environ if k.startswith("AMCORE_MLFLOW_")]:
        del os.environ[key]
    os.environ.update(saved)


@pytest.fixture
def tiny_config() -> dict:
    return yaml.safe_load(yaml.safe_dump(TINY_CONFIG))


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 with its own sqlite backend; can be stopped and restarted."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", str(self.root / "artifacts")]  # fmt: skip
        log = open(self.root / "server.log", "a")
        # No job-execution workers: they outlive a stopped server and make stopping it take ~25 s.
        env = cli_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mlflow server did not start: {(self.root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture(scope="session")
def migrated_tracker(tmp_path_factory) -> Path:
    """An empty MLflow sqlite database at MLflow's current schema, built once per test process: MLflow builds a new
    one by running every schema migration (7.5 s here), which each test on a fresh tracker would repeat."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("migrated-tracker")
    SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts")).engine.dispose()
    return folder / "mlflow.db"


@pytest.fixture
def fresh_tracker(migrated_tracker):
    """``fresh_tracker(folder)`` puts an empty, migrated ``mlflow.db`` in ``folder`` (a pipeline's results folder
    holds its tracker) and returns its URI. Creating a tracker from nothing stays tested where it is the point:
    the README's run (tests/test_readme_commands.py) and the full disk (tests/test_tracking.py)."""

    def place(folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(migrated_tracker, folder / "mlflow.db")
        return f"sqlite:///{folder / 'mlflow.db'}"

    return place


@pytest.fixture
def mlflow_server(tmp_path, fresh_tracker):
    server = MlflowServer(tmp_path / "mlflow-server")
    fresh_tracker(server.root)  # its backend store
    server.start()
    yield server
    server.stop()


def velocity_error(sim, model, times, n=2000, seed=5) -> float:
    """Pooled relative L2 error of a trained model's velocity against the simulator's under p_t at ``times``."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    err = norm = 0.0
    for t in times:
        x = sim.sample(t, n, rng)
        v = sim.velocity(x, t)
        learned = model.flow(torch.as_tensor(x, dtype=torch.float32), torch.full((n,), t)).detach().numpy()
        err, norm = err + ((learned - v) ** 2).sum(), norm + (v**2).sum()
    return float(np.sqrt(err / norm))


@pytest.fixture(scope="module")
def gaussian_snaps():
    """The default 2-d Gaussian path at six times, 1000 cells each: ``(simulator, times, snapshots)``."""
    from amcore import Snapshots
    from amcore.data.simulate import GaussianPath, simulate_snapshots

    sim = GaussianPath()
    times = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    x, t = simulate_snapshots(sim, times, 1000, seed=0)
    return sim, times, Snapshots.from_labels(x, t)


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk("64k")``: a folder on a filesystem of that size (tmpfs; root only, the test skipped elsewhere),
    unmounted after the test: a disk that fills."""
    mounted = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"small-{len(mounted)}"
        folder.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
        try:
            mounted_ok = subprocess.run(command, capture_output=True).returncode == 0
        except OSError:  # no mount command at all
            mounted_ok = False
        if not mounted_ok:
            pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)  # a database the process still holds open


def run_stages(tmp_path: Path, dataset: dict, holdout: str, steps: int, steps_per_interval: int,
               evaluate: dict | None = None) -> tuple[Path, Path]:  # fmt: skip
    """prepare, train (a tiny AM), integrate and evaluate through the CLI, as the pipeline chains them, holding out
    ``holdout``: the store's path and the run's folder (``m.pt``, ``t.zarr``, ``metrics.json``, ``plots``)."""
    import json

    from amcore.cli import main

    store, run = tmp_path / "s.zarr", tmp_path / "run"
    assert main(["prepare", "--dataset", json.dumps(dataset), "--holdout-times", holdout, "--out", str(store),
                 "--summary", str(tmp_path / "s.json")]) == 0  # fmt: skip
    params = {"objective": "am", "steps": steps, "width": 16, "depth": 2, "log_every": 10}
    assert main(["train", "--store", str(store), "--params", json.dumps(params), "--checkpoint", str(run / "m.pt"),
                 "--loss-csv", str(run / "loss.csv")]) == 0  # fmt: skip
    assert (
        main(
            [
                "integrate",
                "--store",
                str(store),
                "--checkpoint",
                str(run / "m.pt"),
                "--params",
                json.dumps({"steps_per_interval": steps_per_interval}),
                "--out",
                str(run / "t.zarr"),
            ]
        )
        == 0
    )
    assert main(["evaluate", "--model", "am", "--holdout", holdout, "--seed", "0", "--store", str(store),
                 "--checkpoint", str(run / "m.pt"), "--trajectories", str(run / "t.zarr"), "--loss-csv",
                 str(run / "loss.csv"), "--params", json.dumps(evaluate or {}), "--metrics", str(run / "metrics.json"),
                 "--plots", str(run / "plots")]) == 0  # fmt: skip
    return store, run
