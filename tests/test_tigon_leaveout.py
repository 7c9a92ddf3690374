"""Leave one time out on real cells above the exact solver's cap: TIGON lineage (1,429, 3,781 and 5,788 cells)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, snakemake
from mlflow.tracking import MlflowClient

from amcore.evaluation.evaluate import DISTANCES

DATA = ROOT.parent / "shared" / "data" / "tigon_lineage.npz"

pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} is absent (shared datasets not mounted)")


@pytest.mark.slow  # 4 min on 2 busy cores: nine CLI jobs (imports alone take ~10 s each), the exact OT baseline
def test_every_metric_for_every_method_and_time_above_the_exact_cap(tmp_path):
    """t = 1 held out; max_exact_size 1000, below every time's count: each time point still gets every distance
    under its own name (exact W on subsamples and its noise, sliced W on all cells, MMD and energy), the table has
    them all for the model and both baselines, and MLflow logs each per time under the same names."""
    config = {
        "experiment": "tigon",
        "dataset": {"source": "npz", "path": str(DATA), "x_key": "X", "t_key": "t"},
        "holdout_times": [1],
        "seeds": [0],
        "baselines": ["copy_prev", "ot_displacement"],
        "models": {"am": {"objective": "am", "steps": 100, "batch_size": 256, "width": 32, "depth": 2}},
        "integrate": {"steps_per_interval": 5},
        "evaluate": {"max_exact_size": 1000, "kernel_max_size": 1000, "projections": 100},
    }
    result = snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-4000:]
    out = tmp_path / "results" / "tigon"

    table = pd.read_csv(out / "table.csv", keep_default_na=False, dtype={"holdout": str, "seed": str})
    methods = {"am": "0", "copy_prev": "", "ot_displacement": ""}
    expected = {
        (m, "1", s, name)
        for m, s in methods.items()
        for name in [*DISTANCES, "nonfinite", "escaped", "predicted_cells"]
    }
    expected.add(("ot_displacement", "1", "", "effective_size"))  # unequal counts: its plan's points weigh unequally
    expected.remove(("ot_displacement", "1", "", "neighbour_excess"))  # not defined for weighted points
    expected |= {("am", "1", "0", "course_excess"), ("am", "1", "0", "course_escaped")}  # score's whole course
    # each pair of methods' variance over the held-out cells' sampling (score's, for the paired intervals)
    expected |= {(m, "1", "", f"w1_held_out_var:{peer}") for m in methods for peer in methods if peer != m}
    assert set(zip(table["method"], table["holdout"], table["seed"], table["metric"], strict=True)) == expected
    assert len(table) == len(expected) and table["value"].map(math.isfinite).all()
    assert (table[table["metric"] == "nonfinite"]["value"] == 0).all()
    values = table.set_index(["method", "metric"])["value"]
    # The noise belongs to the 3,781 held-out cells (two disjoint subsamples of 1000): one number for every method.
    assert values.xs("w1_subsample_noise", level="metric").nunique() == 1
    # Not moving is the worst answer: the displacement interpolation between t = 0 and t = 2 beats it.
    assert values[("copy_prev", "w1")] > values[("ot_displacement", "w1")]
    assert values[("copy_prev", "sliced_w2")] > values[("ot_displacement", "sliced_w2")]

    # The run's own evaluation at every observed time after the first (3,781 and 5,788 cells, both subsampled).
    metrics = json.loads((out / "holdout-1" / "am" / "seed-0" / "metrics.json").read_text())
    for name in DISTANCES:
        assert set(metrics[name]) == {"1", "2"} and all(math.isfinite(v) for v in metrics[name].values()), name
        assert metrics[f"{name}_mean"] == pytest.approx(np.mean(list(metrics[name].values())))

    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("amcore").experiment_id])
    (evaluate,) = [r for r in runs if r.data.tags.get("amcore.stage") == "evaluate"]
    for name in DISTANCES:
        history = client.get_metric_history(evaluate.info.run_id, f"{name}_by_time")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2], name
