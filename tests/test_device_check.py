"""The prepared GPU checks (benchmarks/device_check.py) run only where a GPU is lent; their CPU mode keeps the
script from rotting in between."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, cli_env


@pytest.mark.slow
def test_device_check_runs_on_cpu(tmp_path):
    report_path = tmp_path / "report.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--device", "cpu", "--json", str(report_path)]
    subprocess.run(cmd, check=True, cwd=ROOT, env=cli_env(), timeout=900)
    report = json.loads(report_path.read_text())
    for kind in ("am", "eam"):
        # float32 against float64: a few ulp per operation over ~10 layers of sums of 256 terms, observed ~1e-6.
        assert report[kind]["fp32"]["grad"] < 1e-4
        assert report[kind]["func-fp32"]["grad"] < 1e-4
        assert report[kind]["compiled"]["grad_vs_eager"] < 1e-4
        # bf16 (8-bit mantissa) is far coarser but must still be a gradient of the same loss.
        assert report[kind]["func-bf16"]["grad"] < 0.3
        assert report[kind]["minibatch_noise"] > 0
    assert report["am"]["ddp_max_param_diff"] < 1e-6  # DDP of world size 1 averages nothing
    for kind in ("am", "eam"):
        # Two float32 forms of one gradient, 33 Adam steps: rounding (~1e-5 a gradient) grows through Adam's
        # normalisation of small components; 1e-3 observed on this CPU, 2e-4 on an H200. A wrong form is O(1).
        assert report[kind]["compiled_training"]["relative_difference"] < 1e-2
        assert "errors" not in report[kind]
