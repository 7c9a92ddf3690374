import numpy as np
import pytest

from amcore.metrics import mmd_rbf, relative_l2, wasserstein1


def test_w1_of_a_translated_cloud_is_the_shift():
    """W1(mu, mu + c) = |c| exactly: the identity coupling is optimal for a pure translation."""
    x = np.random.default_rng(0).standard_normal((300, 2))
    shift = np.array([0.3, -0.4])
    assert wasserstein1(x, x + shift) == pytest.approx(0.5, abs=1e-9)
    assert wasserstein1(x, x) == pytest.approx(0.0, abs=1e-6)  # sqrt of rounding in ot.dist


def test_w1_subsamples_above_the_exact_limit():
    """Above the limit each side is subsampled; for a point mass and its translate W1 stays exact."""
    x = np.zeros((400, 2))
    assert wasserstein1(x, x + 1.0, max_size=100) == pytest.approx(np.sqrt(2), abs=1e-9)
    # Two disjoint subsamples of one cloud: a small but non-zero distance, the sampling noise.
    y = np.random.default_rng(1).standard_normal((4000, 2))
    assert 0 < wasserstein1(y, y, max_size=500) < 0.3


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
