"""prepare on a real dask distributed scheduler gives the same store as dask's local scheduler."""

from __future__ import annotations

import json
import subprocess

import numpy as np
from conftest import BIN, cli_env
from dask.distributed import LocalCluster

from amcore import read_store


def _prepare(tmp_path, name, *extra):
    cmd = [str(BIN / "amcore"), "prepare", "--dataset", json.dumps({"source": "npz", "path": str(tmp_path / "in.npz")}),
           "--preprocess", json.dumps({"standardize": True, "pca": 3}), "--holdout-times", "1.0",
           "--out", str(tmp_path / f"{name}.zarr"), "--summary", str(tmp_path / f"{name}.json"), *extra]  # fmt: skip
    result = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def test_prepare_runs_on_a_given_dask_scheduler(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "in.npz", X=rng.standard_normal((600, 8)), t=np.repeat([0.0, 1.0, 2.0], 200))
    _prepare(tmp_path, "local")
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=None
    ) as cluster:
        log = _prepare(tmp_path, "remote", "--dask-scheduler", cluster.scheduler_address)
        assert f"dask work on the scheduler at {cluster.scheduler_address}" in log
        assert cluster.scheduler.task_groups or cluster.scheduler.transition_counter > 0
    local, remote = read_store(tmp_path / "local.zarr"), read_store(tmp_path / "remote.zarr")
    np.testing.assert_allclose(remote.x, local.x, atol=1e-5)
    assert remote.attrs["holdout_times"] == [1.0]
