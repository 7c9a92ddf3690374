"""The shell commands of the README and the docs work as written from a fresh shell (no venv, PATH=/usr/bin:/bin).

The rules call the `amcore` CLI from PATH, so `.venv/bin/snakemake ...` without the venv activated failed every
job with `amcore: command not found`. A dry run executes no command, so the real check runs a README command
(in a copy of the project, stopped after `prepare` by a profile from SNAKEMAKE_PROFILE) and needs its jobs to pass.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

FRESH_PATH = "/usr/bin:/bin"
ACTIVATE = {". .venv/bin/activate", "source .venv/bin/activate", "conda activate amcore"}
COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "results", ".snakemake", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache",
    "mlruns", "mlartifacts", "report.html", "device-check", ".whl",
)  # fmt: skip


def readme_blocks() -> list[list[str]]:
    """The commands of each ```bash block of the README and the docs, comments dropped, `&&` chains split."""
    text = "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    blocks = []
    for body in re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        commands = []
        for line in body.splitlines():
            words = shlex.split(line, comments=True)
            for command in " ".join(shlex.quote(w) if w != "&&" else w for w in words).split(" && "):
                if command.strip():
                    commands.append(command.strip())
        blocks.append(commands)
    return blocks


def runs_the_pipeline(command: str) -> bool:
    return Path(shlex.split(command)[0]).name == "snakemake" or command.startswith("make run")


def test_every_pipeline_command_finds_amcore():
    """A command that runs the pipeline is `make run` (PATH set by the Makefile) or follows a venv activation."""
    blocks = readme_blocks()
    assert blocks and any(runs_the_pipeline(c) for block in blocks for c in block)
    for commands in blocks:
        activated = False
        for command in commands:
            activated |= command in ACTIVATE
            if runs_the_pipeline(command):
                assert activated or command.startswith("make run"), f"{command!r} finds no amcore on PATH"


def test_a_readme_pipeline_command_runs_as_written_without_the_venv_on_path(tmp_path):
    assert shutil.which("amcore", path=FRESH_PATH) is None, "this machine has amcore outside the venv"
    if shutil.which("make", path=FRESH_PATH) is None:
        pytest.skip("no make in /usr/bin or /bin")
    command = next(c for block in readme_blocks() for c in block if runs_the_pipeline(c) and "data=my.npz" in c)
    repo = tmp_path / "amcore"
    shutil.copytree(ROOT, repo, ignore=COPY_IGNORE)  # copy2: pyproject.toml keeps its time
    # The project's venv, already installed: make must not reinstall it (that would point it at this copy).
    (repo / ".venv").mkdir()
    (repo / ".venv" / "bin").symlink_to(ROOT / ".venv" / "bin")
    (repo / ".venv" / ".installed").touch()
    env = {"PATH": FRESH_PATH, "HOME": os.environ.get("HOME", str(tmp_path)), "LANG": "C.UTF-8"}
    if subprocess.run(["make", "-q", "install"], cwd=repo, env=env).returncode != 0:
        pytest.fail("make would reinstall the venv")
    # The data the command names: 5 observed times, of which the command holds out 1 and 2.
    rng = np.random.default_rng(0)
    t = np.repeat(np.arange(5.0), 60)
    np.savez(repo / "my.npz", X=rng.normal(size=(t.size, 8)) + t[:, None], t=t)
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "config.yaml").write_text("until: [prepare]\n")
    result = subprocess.run(
        ["bash", "-c", command], cwd=repo, env={**env, "SNAKEMAKE_PROFILE": str(profile)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert "command not found" not in output and result.returncode == 0, output[-4000:]
    for holdout in (1, 2):
        assert (repo / "results" / "mine" / f"holdout-{holdout}" / "data" / "store.zarr" / "zarr.json").is_file()
    assert not (repo / "results" / "mine" / "holdout-3").exists()
    assert not (repo / "results" / "eb_leaveout").exists(), "the EB benchmark's results are left alone"
    assert not (repo / "results" / "mine" / "holdout-1" / "am").exists(), "the profile stops after prepare"
    # A target first in ARGS (audit 83: after --configfile, which takes several values, it was read as a config)
    target = "results/mine/holdout-1/data/store.zarr"
    again = command.replace("ARGS=", f"ARGS={target} --dry-run ", 1)
    result = subprocess.run(["bash", "-c", again], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr, result.stderr[-3000:]
