"""The EB leave-one-time-out protocol (config/leaveout/eb.yaml), shortened, on the real shared subset."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import ot
import pandas as pd
import pytest
import yaml
from conftest import ROOT, snakemake

DATA = ROOT.parent / "shared" / "data" / "eb_nlsb_valtest_pca100.npz"

pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} is absent (shared datasets not mounted)")


def expected_baselines(holdout: float) -> dict[str, float]:
    """The protocol written out independently: 5 PCs, z-scored on the training times, exact W1 (POT)."""
    data = np.load(DATA)
    x, t = data["X"][:, :5], data["t"].astype(float)
    train = t != holdout
    z = (x - x[train].mean(0)) / x[train].std(0)
    prev, true, nxt = z[t == holdout - 1], z[t == holdout], z[t == holdout + 1]

    def w1(a, b, wa=None):
        wa = ot.unif(len(a)) if wa is None else wa
        return ot.emd2(wa, ot.unif(len(b)), ot.dist(a, b, metric="euclidean"))

    plan = ot.emd(ot.unif(len(prev)), ot.unif(len(nxt)), ot.dist(prev, nxt))
    i, j = np.nonzero(plan)
    return {"copy_prev": w1(prev, true), "ot_displacement": w1(0.5 * prev[i] + 0.5 * nxt[j], true, plan[i, j])}


def test_shortened_eb_leaveout_on_the_shared_subset(tmp_path):
    """One held-out time, one seed, short trainings: the protocol's plumbing and its baselines, exactly."""
    config = yaml.safe_load((ROOT / "config" / "leaveout" / "eb.yaml").read_text())
    config = copy.deepcopy(config)
    config["dataset"]["path"] = "unused-see-data-override.npz"
    config["holdout_times"], config["seeds"] = [2], [0]
    for model in config["models"].values():
        model |= {"steps": 300, "width": 64, "depth": 2}
    config["models"] = {name: config["models"][name] for name in ("am", "otcfm")}
    result = snakemake(tmp_path, config, "--config", f"data={DATA}")
    assert result.returncode == 0, result.stderr[-4000:]
    out = Path(tmp_path) / "results" / "eb_leaveout"
    table = pd.read_csv(out / "table.csv", keep_default_na=False, dtype={"holdout": str, "seed": str})
    w1 = table[table["metric"] == "w1"].set_index("method")["value"]
    assert sorted(w1.index) == ["am", "copy_prev", "ot_displacement", "otcfm", "spline_path"]
    for name, value in expected_baselines(2.0).items():
        # float32 store vs float64 here: W1 agrees to ~1e-6 relative.
        assert w1[name] == pytest.approx(value, rel=1e-5), name
    # The reference numbers of ../shared/data/README.md (scaler fitted on all cells): 1.40 and 0.884.
    assert w1["copy_prev"] == pytest.approx(1.40, abs=0.05) and w1["ot_displacement"] == pytest.approx(0.884, abs=0.05)
    # Even 300 steps learn the motion: far better than not moving.
    assert w1["am"] < w1["copy_prev"] and w1["otcfm"] < w1["copy_prev"]
