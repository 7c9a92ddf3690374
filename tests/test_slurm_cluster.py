"""The pipeline on a real SLURM cluster through ``profiles/slurm``: every rule an sbatch job, a training
cancelled by ``scancel`` resumed by the rerun, and a training's lease known by its SLURM job.

Needs a running SLURM whose ``sinfo`` answers (``profiles/slurm/local-cluster.sh`` starts a one-node cluster on
Debian as root); skipped otherwise. The profile is the project's own with the resources cut to a laptop-sized
node (one CPU, no GPU), as docs/cluster.md tells a site without GPUs to set them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import BIN, ROOT, TINY_CONFIG, cli_env
from mlflow.tracking import MlflowClient

from amcore.training.train import partial_path


def _cluster_answers() -> bool:
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return False
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20).stdout
    except subprocess.TimeoutExpired:
        return False
    return any(s.strip("*~#") in ("idle", "mixed", "allocated") for s in states.split())


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _cluster_answers(), reason="no SLURM answers here (profiles/slurm/local-cluster.sh)"),
]


def _profile(folder: Path) -> Path:
    """profiles/slurm with each job sized to fit a small node: one CPU, no GPU, a little memory."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"].update({"cpus_per_task": 1, "mem_mb": 1000, "runtime": 20})
    profile["set-resources"]["train"].update({"cpus_per_task": 1, "mem_mb": 2000, "gpu": 0})
    profile["set-threads"]["train"] = 1
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def _run(workdir: Path, config: dict, *, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--replace-workflow-config",
           "--profile", str(_profile(workdir / "profile")), "--workflow-profile", "none",
           "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
           "--seconds-between-status-checks", "2", "--slurm-keep-successful-logs"]  # fmt: skip
    if wait:
        return subprocess.run(cmd, cwd=workdir, env=cli_env(), capture_output=True, text=True, timeout=1200)
    return subprocess.Popen(cmd, cwd=workdir, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


def _jobs_of(rule: str) -> list[tuple[str, str]]:
    """(job id, state) of every job of ``rule`` the cluster still lists, finished ones and other runs' included."""
    listed = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%k|%T"], capture_output=True, text=True).stdout
    rows = [line.split("|") for line in listed.splitlines()]
    return [(job, state) for job, comment, state in rows if comment.startswith(f"rule_{rule}")]


def test_every_rule_runs_as_a_slurm_job_and_a_cancelled_training_resumes(tmp_path):
    config = yaml.safe_load(yaml.safe_dump(TINY_CONFIG))
    done = _run(tmp_path / "whole", config)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = tmp_path / "whole" / "results" / config["experiment"]
    assert (results / "table.csv").is_file() and (results / "holdout-none" / "export.h5ad").is_file()
    logs = tmp_path / "whole" / ".snakemake" / "slurm_logs"
    for rule in ("prepare", "train", "integrate", "evaluate", "table", "export"):
        assert list((logs / f"rule_{rule}").rglob("*.log")), f"{rule} did not run as an sbatch job"
    trained = next((logs / "rule_train").rglob("*.log")).read_text()
    assert "amcore train: 400 steps" in trained, trained[-2000:]

    # scancel sends SIGTERM, then SIGKILL after KillWait: the job fails, nothing looks finished, the rerun resumes
    config["models"]["am"].update({"steps": 20000, "checkpoint_every": 50})
    run = _run(tmp_path / "cancel", config, wait=False)
    model = tmp_path / "cancel" / "results" / config["experiment"] / "holdout-none" / "am" / "seed-0" / "model.pt"
    partial = partial_path(model)
    deadline = time.monotonic() + 600
    while not (partial.exists() and torch.load(partial, weights_only=True)["step"] >= 200):
        assert run.poll() is None, run.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the training never wrote its resumable state"
        time.sleep(1)
    running = [job for job, state in _jobs_of("train") if state == "RUNNING"]
    assert len(running) == 1, _jobs_of("train")
    subprocess.run(["scancel", running[0]], check=True)
    out, _ = run.communicate(timeout=600)
    assert run.returncode != 0, out[-3000:]
    assert not model.exists(), "a cancelled training must not look finished"
    cancelled_at = torch.load(partial, weights_only=True)["step"]
    assert 200 <= cancelled_at < 20000
    # The stage unwound on SIGTERM: its MLflow run is closed as KILLED, not left RUNNING (audit 86)
    client = MlflowClient(f"sqlite:///{tmp_path / 'cancel' / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("amcore").experiment_id
    [train] = client.search_runs([experiment], "tags.`amcore.stage` = 'train'")
    assert train.info.status == "KILLED"

    rerun = _run(tmp_path / "cancel", config)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    trained = (model.parent.parents[2] / "logs" / "train_none_am_0.log").read_text()
    assert f"resuming from step {cancelled_at}" in trained, trained[-2000:]
    said = f"amcore train: {20000 - cancelled_at} steps (resumed at {cancelled_at} of 20000)"
    assert said in trained, trained[-2000:]
    assert model.is_file() and not partial.exists()


def test_a_lease_held_by_a_running_slurm_job_is_refused_until_the_job_is_cancelled(tmp_path, monkeypatch):
    """A training left running on another node by a Snakemake killed with kill -9 is known by its SLURM job: while
    squeue says the job runs, a rerun's training of the same checkpoint is refused and told to scancel it; once
    the job is over, the lease is taken over. (The node here is this machine, so the lease names another host.)"""
    from amcore.atomic import lease_path, leased
    from amcore.errors import AlreadyRunning

    sleeper = ["sbatch", "--parsable", "--wrap", "sleep 600", "--output=/dev/null", "--cpus-per-task=1", "--mem=100"]
    job = subprocess.run(sleeper, capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    target = tmp_path / "model.pt"
    lease_path(target).write_text(json.dumps({"host": "node-elsewhere", "pid": 4242, "slurm_job": job}))
    try:
        with pytest.raises(AlreadyRunning, match=rf"SLURM job {job} on host node-elsewhere.*`scancel {job}`"):
            with leased(target, "a training of this model"):
                pass
    finally:
        subprocess.run(["scancel", job], check=True)
    deadline = time.monotonic() + 60
    while subprocess.run(["squeue", "--noheader", "--jobs", job, "--format", "%T"], capture_output=True,
                         text=True).stdout.strip():  # fmt: skip
        assert time.monotonic() < deadline, f"job {job} did not end after scancel"
        time.sleep(1)
    with leased(target, "a training of this model"):
        assert json.loads(lease_path(target).read_text())["pid"] == os.getpid()
