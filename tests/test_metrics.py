import numpy as np
import pytest

from amcore.evaluation.evaluate import distances
from amcore.metrics import NonFiniteError, energy_distance, mmd_rbf, relative_l2, wasserstein


def test_w1_and_w2_of_a_translated_cloud_are_the_shift():
    """W_p(mu, mu + c) = |c| exactly for every p: the identity coupling is optimal for a pure translation."""
    x = np.random.default_rng(0).standard_normal((300, 2))
    shift = np.array([0.3, -0.4])
    assert wasserstein(x, x + shift, p=1) == (pytest.approx(0.5, abs=1e-9), "w1")
    assert wasserstein(x, x + shift, p=2) == (pytest.approx(0.5, abs=1e-9), "w2")
    assert wasserstein(x, x)[0] == pytest.approx(0.0, abs=1e-6)  # sqrt of rounding in ot.dist


def test_w1_and_w2_differ_as_the_math_says():
    """Two points at 0 against one at 0 and one at 3 (1-d): half the mass moves 3, so W1 = 1.5, W2 = sqrt(4.5)."""
    a, b = np.array([[0.0], [0.0]]), np.array([[0.0], [3.0]])
    assert wasserstein(a, b, p=1)[0] == pytest.approx(1.5)
    assert wasserstein(a, b, p=2)[0] == pytest.approx(np.sqrt(4.5))
    # Weights: all of a's mass on one point, b's on 3 with weight 0.25: W1 = 0.75.
    assert wasserstein(a, b, p=1, wb=np.array([0.75, 0.25]))[0] == pytest.approx(0.75)


def test_sliced_wasserstein_above_the_exact_limit_says_so():
    """Above the size limit the sliced distance is used and named; for a shift along an axis in 1-d it is exact."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 1))
    value, name = wasserstein(x, x + 2.0, p=1, max_size=100)
    assert name == "sliced_w1" and value == pytest.approx(2.0, abs=1e-9)
    # In d dimensions a shift c projects to |<c, theta>|, whose mean over the sphere is |c| * E|theta_1| < |c|.
    y = rng.standard_normal((400, 5))
    value, name = wasserstein(y, y + np.array([1.0, 0, 0, 0, 0]), p=2, max_size=100, projections=4000)
    # E[theta_1^2] = 1/d exactly for a uniform direction: sliced W2 = 1/sqrt(5) up to Monte Carlo (4000 dirs).
    assert name == "sliced_w2" and value == pytest.approx(1 / np.sqrt(5), rel=0.05)


def test_energy_distance_known_values():
    """Between point masses at 0 and at c: 2|c| - 0 - 0; between equal clouds: 0."""
    assert energy_distance(np.zeros((3, 2)), np.full((4, 2), 1.0)) == pytest.approx(2 * np.sqrt(2))
    x = np.random.default_rng(2).standard_normal((200, 3))
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert energy_distance(x, x + 1.0) > 0.5


def test_mmd_separates_distributions():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((400, 2)), rng.standard_normal((400, 2))
    same, shifted = mmd_rbf(a, b), mmd_rbf(a, b + 1.0)
    # Unbiased estimator: ~0 (std ~1e-3 at n=400) for equal laws, clearly positive for a unit shift.
    assert abs(same) < 5e-3
    assert shifted > 0.05


def test_relative_l2():
    err, norm = relative_l2(np.array([[1.0, 1.0]]), np.array([[1.0, 0.0]]))
    assert (err, norm) == (1.0, 1.0)


def _clouds_with_nan(bad_rows=(3, 17)):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 2)), rng.normal(size=(50, 2))
    a[list(bad_rows), 0] = [np.nan, np.inf][: len(bad_rows)]
    return a, b


@pytest.mark.parametrize("metric", [wasserstein, mmd_rbf, energy_distance])
def test_every_metric_refuses_non_finite_points(metric):
    """POT's network simplex returns 0 for a NaN cost: a diverged prediction would score as a perfect one."""
    a, b = _clouds_with_nan()
    with pytest.raises(NonFiniteError, match="2 of 60 points"):
        metric(a, b)
    with pytest.raises(NonFiniteError, match="1 of 50 points"):
        metric(b[:60].copy(), b, wa=np.r_[np.ones(49), np.nan])


def test_a_failed_prediction_scores_nan_with_its_count():
    a, b = _clouds_with_nan()
    failed = distances(a, b, None, max_size=5000, seed=0)
    assert failed["nonfinite"] == 2
    assert all(np.isnan(failed[name]) for name in ("w1", "w2", "mmd", "energy"))
    fine = distances(np.nan_to_num(a, nan=0.0, posinf=0.0), b, None, max_size=5000, seed=0)
    assert fine["nonfinite"] == 0 and all(np.isfinite(fine[name]) and fine[name] >= 0 for name in ("w1", "w2"))


def test_weights_that_all_vanished_are_a_failed_prediction_not_a_nan_score():
    """uAM weights that underflow to 0 everywhere normalise to 0/0: every cell is lost, no distance is computed."""
    a, b = np.random.default_rng(3).normal(size=(40, 2)), np.random.default_rng(4).normal(size=(30, 2))
    with pytest.raises(NonFiniteError, match="40 of 40 points"):
        wasserstein(a, b, wa=np.zeros(40))
    failed = distances(a, b, np.zeros(40), max_size=5000, seed=0)
    assert failed["nonfinite"] == 40 and np.isnan(failed["w1"]) and np.isnan(failed["mmd"])
    assert set(distances(a, b, np.zeros(40), max_size=10, seed=0)) == {
        "sliced_w1",
        "sliced_w2",
        "mmd",
        "energy",
        "nonfinite",
    }
