"""benchmarks/estimator_choice.py: AM's two estimators judged on held-apart training cells, never the held-out time."""

import sys

import numpy as np
from conftest import ROOT
from test_inner_loo import snapshots

sys.path.insert(0, str(ROOT / "benchmarks"))

from estimator_choice import objectives  # noqa: E402

SETTINGS = {"objective": "am", "interpolation": "spline", "steps": 40, "batch_size": 64, "width": 16, "depth": 2}


def test_both_forms_are_scored_on_the_same_draws_and_the_held_out_cells_reach_nothing():
    nan, huge = (objectives(snapshots(value), SETTINGS, seed=0, batches=4, batch=64) for value in (np.nan, 1e6))
    assert sorted(nan) == [(m, e) for m in ("boundary", "pathwise") for e in ("boundary", "pathwise")]
    assert all(np.isfinite(v).all() and len(v) == 4 for v in nan.values())
    for key in nan:  # whatever the held-out time holds, the same trainings and the same objective values
        np.testing.assert_array_equal(nan[key], huge[key])
    # Two trainings with different estimators are two different models.
    assert not np.array_equal(nan[("boundary", "pathwise")], nan[("pathwise", "pathwise")])


def test_the_heads_are_compared_by_the_same_objective():
    values = objectives(snapshots(np.nan), SETTINGS, seed=0, batches=4, batch=64, compare="head")
    assert sorted(values) == [(m, e) for m in ("inner", "scalar") for e in ("boundary", "pathwise")]
    assert all(np.isfinite(v).all() and len(v) == 4 for v in values.values())
    assert not np.array_equal(values[("scalar", "pathwise")], values[("inner", "pathwise")])
