"""benchmarks/inner_loo.py: settings compared on training times only, the held-out time's cells never used."""

import sys

import numpy as np
import pytest
from conftest import ROOT

from amcore import Snapshots

sys.path.insert(0, str(ROOT / "benchmarks"))
inner_loo_module = pytest.importorskip("inner_loo")

MODELS = {
    "am": {"objective": "am", "steps": 60, "batch_size": 64, "width": 16, "depth": 2, "threads": 1},
    "fm": {"objective": "fm", "steps": 60, "batch_size": 64, "width": 16, "depth": 2, "threads": 1},
}


def snapshots(held_out_value: float) -> Snapshots:
    """Five times of a drifting 2-d Gaussian; time 2 is held out and its cells replaced by ``held_out_value``."""
    rng = np.random.default_rng(0)
    t = np.repeat(np.arange(5.0), 40)
    x = rng.standard_normal((len(t), 2)) + t[:, None] * np.array([1.0, -0.5])
    x[t == 2] = held_out_value
    return Snapshots.from_labels(x.astype(np.float32), t, attrs={"holdout_times": [2.0]})


def test_scores_come_from_training_times_only(tmp_path):
    nan = inner_loo_module.inner_loo(snapshots(np.nan), MODELS, tmp_path / "a")
    huge = inner_loo_module.inner_loo(snapshots(1e6), MODELS, tmp_path / "b")
    # Training times 0, 1, 3, 4: the interior ones (1 and 3) are left out in turn, for each model.
    assert {name: len(v) for name, v in nan.items()} == {"am": 2, "fm": 2}
    assert all(np.isfinite(v).all() for v in nan.values())
    assert nan == huge  # the held-out cells reach nothing: the same scores whatever they hold


def test_variant_changes_only_what_it_names():
    name, settings = inner_loo_module.variant("am_lr3:am:lr=0.003,interpolation=spline", MODELS)
    assert name == "am_lr3"
    assert settings == {**MODELS["am"], "lr": 0.003, "interpolation": "spline"}
    with pytest.raises(SystemExit, match="no model 'nope'"):
        inner_loo_module.variant("x:nope:lr=1", MODELS)


def test_a_diverged_training_is_reported_as_such_and_growth_keeps_its_weights(tmp_path):
    small = {"steps": 60, "batch_size": 64, "width": 16, "depth": 2, "threads": 1}
    models = {
        "am_diverges": {"objective": "am", "divergence_factor": 1e-9, **small},  # stops at its first check
        "uam": {"objective": "uam", **small},
    }
    scores = inner_loo_module.inner_loo(snapshots(np.nan), models, tmp_path)
    assert all(v.startswith("diverged (TrainingDiverged") for v in scores["am_diverges"]), scores
    assert inner_loo_module.summary(scores["am_diverges"]) == "diverged"
    assert all(isinstance(v, float) and np.isfinite(v) for v in scores["uam"]), scores
    assert inner_loo_module.summary(scores["uam"]) == f"{np.mean(scores['uam']):.4f}"
