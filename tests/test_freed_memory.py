"""``speed.keep_freed_memory`` (called by ``amcore train``) spares the training step its page faults."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow  # 32 s of the default run's 14 minutes, for a property of one allocator setting
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_memory acts on glibc's malloc only")
def test_kept_memory_spares_each_step_its_page_faults():
    """The AM step at batch 1024 frees megabytes of temporaries; under glibc's defaults they go back to the kernel
    and fault in again in the next step. Kept, a step faults at most a quarter as often (medians of three
    alternated rounds, so one round slowed by a neighbouring process does not decide). Observed on 2 cores:
    1,700-5,700 faults a step under the defaults, 0-270 kept (the rest comes and goes with the machine)."""
    script = ROOT / "benchmarks" / "freed_memory.py"
    cmd = [sys.executable, str(script), "--rounds", "3", "--steps", "5", "--kinds", "am"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    medians = json.loads(run.stdout.splitlines()[-1])
    assert medians["am_kept"]["faults"] < medians["am_defaults"]["faults"] / 4, medians
