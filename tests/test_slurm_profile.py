"""``profiles/slurm`` through the real snakemake-executor-plugin-slurm: the sbatch calls it makes.

No SLURM runs here, so ``sbatch`` is a stand-in that records its arguments and refuses the job; ``sinfo``,
``sacct``, ``squeue`` and ``scontrol`` exist and answer nothing. Everything up to the submission is the plugin's
own code on this project's profile and Snakefile.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import ROOT, cli_env, snakemake

RECORDING_SBATCH = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["SBATCH_RECORD"], "a") as record:  # the arguments, then what the job would inherit
    record.write(json.dumps([*sys.argv[1:], os.environ.get("AMCORE_CONFIG_ALONE")]) + "\\n")
sys.exit("sbatch: error: no cluster here, nothing submitted")
"""


def fake_slurm(tmp_path: Path) -> dict:
    """An environment whose PATH has the recording sbatch and silent SLURM query commands first."""
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(RECORDING_SBATCH)
    for name in ("sinfo", "sacct", "squeue", "scontrol"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = cli_env(SBATCH_RECORD=str(tmp_path / "sbatch.jsonl"))
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env


def submissions(tmp_path: Path) -> dict[str, dict[str, str]]:
    """The recorded sbatch calls by rule: ``{rule: {option: value}}`` (flags without a value map to ""; the job's
    inherited ``AMCORE_CONFIG_ALONE`` beside them)."""
    calls = {}
    for line in (tmp_path / "sbatch.jsonl").read_text().splitlines():
        *args, alone = json.loads(line)
        options, i = {"AMCORE_CONFIG_ALONE": alone}, 0
        while i < len(args):
            key, _, value = args[i].partition("=")
            if not value and i + 1 < len(args) and not args[i + 1].startswith("-"):
                value, i = args[i + 1], i + 1
            options[key] = value
            i += 1
        job = shlex.split(options["--wrap"])  # the snakemake command the allocation runs
        calls[job[job.index("--allowed-rules") + 1]] = options
    return calls


def test_slurm_profile_asks_gpus_for_train_only(tmp_path, tiny_config, fresh_tracker):
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    profile["set-resources"]["train"]["gpu"] = 2  # as the README says to raise it for DDP
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    env = fake_slurm(tmp_path)
    workdir = tmp_path / "work"
    fresh_tracker(workdir / "results")
    slurm = ["--profile", str(tmp_path / "profile"), "--keep-going", "--slurm-init-seconds-before-status-checks", "1"]

    first = snakemake(workdir, tiny_config, *slurm, env=env)
    assert first.returncode != 0 and "no cluster here" in first.stderr
    prepare = submissions(tmp_path)["prepare"]
    assert "--gpus" not in prepare and "--gres" not in prepare
    assert prepare["--ntasks"] == "1" and prepare["--cpus-per-task"] == "2" and prepare["--mem"] == "8000"

    local = snakemake(workdir, tiny_config, "--until", "prepare")
    assert local.returncode == 0, local.stderr[-3000:]
    second = snakemake(workdir, tiny_config, *slurm, env=env)
    assert second.returncode != 0
    train = submissions(tmp_path)["train"]
    # One task holding both GPUs on one node (torchrun starts a process per GPU), not one task per GPU.
    assert train["--gpus"] == "2" and "--ntasks-per-gpu" not in train and train.get("--ntasks", "1") == "1"
    assert train["--cpus-per-task"] == "8" and train["--mem"] == "32000" and train["-t"] == "240"

    # Audit 65: the job's snakemake gets the config file but not --replace-workflow-config, and laid
    # config/config.yaml under it again. Told by the environment it inherits, it trains what the run planned.
    assert train["AMCORE_CONFIG_ALONE"] == "1"
    job = shlex.split(train["--wrap"])
    wait = job.index("--wait-for-files")  # the submitting run's marker, gone with it
    after = next(i for i in range(wait + 1, len(job)) if job[i].startswith("--"))
    del job[wait:after]
    ran = subprocess.run([*job, "--dry-run"], cwd=workdir, env=env | {"AMCORE_CONFIG_ALONE": "1"},
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    planned = snakemake(workdir, tiny_config, "--dry-run", "--printshellcmds")
    params = [re.search(r"--params ('[^']*')", out.stdout + out.stderr) for out in (ran, planned)]
    assert all(params) and params[0][1] == params[1][1], (ran.stdout + ran.stderr)[-3000:]
    lost = subprocess.run([*job, "--dry-run"], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    said = lost.stdout + lost.stderr
    assert lost.returncode != 0 and "did not inherit AMCORE_CONFIG_ALONE" in said, said[-2000:]

    # The job the allocation runs is the train rule launched by torchrun with one process per GPU.
    dry = snakemake(workdir, tiny_config, *slurm, "--dry-run", "--cores", "16", env=env)  # a cluster's, not 2
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "torchrun --standalone --nproc_per_node=2 --no-python amcore train" in dry.stdout + dry.stderr
    assert "--threads 8 " in dry.stdout + dry.stderr  # the 8 CPUs it asked for (audit 43: --threads 1 used one)
    assert '"amcore.processes": "2"' in dry.stdout + dry.stderr  # the tag says the processes the job runs
    # Audit 35: a config's own count beside the profile's trained on the profile's and was tagged with the config's.
    for setting in ({"gpus": 1}, {"train_processes": 3}):
        refused = snakemake(workdir, tiny_config | setting, *slurm, "--dry-run", env=env)
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0 and "but the profile's set-resources give train 2 GPU(s)" in said, said[-2000:]
