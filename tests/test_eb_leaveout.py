"""The EB leave-one-time-out protocol (config/leaveout/eb.yaml) on the real shared subset.

The fast test runs the protocol's first jobs (prepare, then the baselines) through Snakemake and checks them
against the protocol written out independently; the slow one runs it whole, shortened (trainings, table)."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import numpy as np
import ot
import pandas as pd
import pytest
import yaml
from conftest import BIN, ROOT, cli_env, snakemake

from amcore.evaluation.holdout import read_prediction

DATA = ROOT.parent / "shared" / "data" / "eb_nlsb_valtest_pca100.npz"

pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} is absent (shared datasets not mounted)")


def eb_config(steps: int = 300) -> dict:
    """config/leaveout/eb.yaml holding t = 2 out with one seed and short trainings of AM and OT-CFM."""
    config = copy.deepcopy(yaml.safe_load((ROOT / "config" / "leaveout" / "eb.yaml").read_text()))
    config["dataset"]["path"] = "unused-see-data-override.npz"
    config["holdout_times"], config["seeds"] = [2], [0]
    for model in config["models"].values():
        model |= {"steps": steps, "width": 64, "depth": 2}
    config["models"] = {name: config["models"][name] for name in ("am", "otcfm")}
    return config


def w1(a: np.ndarray, b: np.ndarray, wa: np.ndarray | None = None) -> float:
    wa = ot.unif(len(a)) if wa is None else wa / wa.sum()
    return float(ot.emd2(wa, ot.unif(len(b)), ot.dist(a, b, metric="euclidean")))


def expected_baselines(holdout: float) -> tuple[dict[str, float], np.ndarray]:
    """The protocol written out independently: 5 PCs, z-scored on the training times, exact W1 (POT); and the
    held-out cells, to score the pipeline's predictions with the same W1."""
    data = np.load(DATA)
    x, t = data["X"][:, :5], data["t"].astype(float)
    train = t != holdout
    z = (x - x[train].mean(0)) / x[train].std(0)
    prev, true, nxt = z[t == holdout - 1], z[t == holdout], z[t == holdout + 1]
    plan = ot.emd(ot.unif(len(prev)), ot.unif(len(nxt)), ot.dist(prev, nxt))
    i, j = np.nonzero(plan)
    expected = {"copy_prev": w1(prev, true), "ot_displacement": w1(0.5 * prev[i] + 0.5 * nxt[j], true, plan[i, j])}
    return expected, true


@pytest.mark.slow  # in `pytest -m slow`: CI's suite stays under 20 minutes (1,190 s here)
def test_eb_baselines_through_the_pipeline_match_the_protocol_written_out(tmp_path):
    """Snakemake's prepare and baseline jobs on the real subset: the same W1 as the independent computation, to
    float32 rounding (~1e-6 relative), and the reference numbers of ../shared/data/README.md (scaler fitted on all
    cells there): 1.40 and 0.884."""
    split = Path("results") / "eb_leaveout" / "holdout-2"
    targets = [str(split / name / "prediction.zarr") for name in ("copy_prev", "ot_displacement")]
    result = snakemake(tmp_path, eb_config(), *targets, "--config", f"data={DATA}")
    assert result.returncode == 0, result.stderr[-4000:]
    expected, true = expected_baselines(2.0)
    for name, value in expected.items():
        x, weight, holdout = read_prediction(tmp_path / split / name / "prediction.zarr")
        assert holdout == 2.0
        assert w1(x, true, weight) == pytest.approx(value, rel=1e-5), name
    assert expected["copy_prev"] == pytest.approx(1.40, abs=0.05)
    assert expected["ot_displacement"] == pytest.approx(0.884, abs=0.05)


def test_the_velocity_overlay_adds_its_models_and_baseline_to_the_whole_protocol(tmp_path):
    """config/leaveout/eb_velocity.yaml laid over eb.yaml (Snakemake merges the two): every model and baseline of
    eb.yaml and the velocity ones, in their own results folder; the velocities reach prepare. A dry run."""
    configs = [str(ROOT / "config" / "leaveout" / name) for name in ("eb.yaml", "eb_velocity.yaml")]
    cmd = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", *configs, "--config", f"data={DATA}", "--dry-run", "--cores", "2"]  # fmt: skip
    plan = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    text = plan.stdout + plan.stderr
    assert plan.returncode == 0, text[-3000:]
    trained = set(re.findall(r"results/eb_velocity/holdout-\d/(\w+)/seed-\d/model\.pt", text))
    eb = yaml.safe_load((ROOT / "config" / "leaveout" / "eb.yaml").read_text())
    assert trained == set(eb["models"]) | {"am_velocity", "fm_velocity"}
    assert "results/eb_velocity/holdout-2/velocity_path/prediction.zarr" in text
    assert '"v_key": "v"' in text  # prepare's dataset argument


@pytest.mark.slow
def test_shortened_eb_leaveout_on_the_shared_subset(tmp_path):
    """One held-out time, one seed, short trainings: the whole protocol to its table, baselines exactly."""
    result = snakemake(tmp_path, eb_config(), "--config", f"data={DATA}")
    assert result.returncode == 0, result.stderr[-4000:]
    out = Path(tmp_path) / "results" / "eb_leaveout"
    table = pd.read_csv(out / "table.csv", keep_default_na=False, dtype={"holdout": str, "seed": str})
    w1_table = table[table["metric"] == "w1"].set_index("method")["value"]
    assert sorted(w1_table.index) == ["am", "copy_prev", "ot_displacement", "ot_push", "otcfm", "spline_path"]
    for name, value in expected_baselines(2.0)[0].items():
        assert w1_table[name] == pytest.approx(value, rel=1e-5), name
    # Even 300 steps learn the motion: far better than not moving.
    assert w1_table["am"] < w1_table["copy_prev"] and w1_table["otcfm"] < w1_table["copy_prev"]
