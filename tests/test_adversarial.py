"""AM on a small, awkward time course it was not developed on (the fast case of benchmarks/adversarial.py).

30-90 cells per time, unequal counts, Student-t (2 degrees of freedom) cells with 3 % outliers 8 units off, times
in hours (0-48). Before AM's boundary terms followed the path's own ends, such data let the loss run below its
bound and fling cells out of the data. Checked: the training loss stays above minus half the path's action (the
bound, less 10 % for Monte Carlo noise in the logged loss), no cell leaves the data's box, and the held-out
prediction is no worse than the spline path AM trained on by more than the data's noise floor (W1 between two
halves of the held-out cells).
"""

import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
adversarial = pytest.importorskip("adversarial")


def test_am_holds_up_on_a_tiny_heavy_tailed_time_course_in_hours(tmp_path):
    result = adversarial.run_case(
        "tiny_heavy_hours", steps=500, interpolations=("spline",), workdir=tmp_path, width=64, batch_size=128
    )
    am = result["spline"]
    assert am["diverged"] is None
    assert am["final_loss"] > 1.1 * am["bound"], am
    assert am["escaped"] == 0, am
    assert am["excess"] <= 1.0, am  # AM - its interpolant, in noise floors
