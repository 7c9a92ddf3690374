import numpy as np
import pytest

from amcore import Snapshots
from amcore.errors import InputError
from amcore.evaluation.holdout import (
    bracket,
    copy_prev,
    ot_displacement,
    read_prediction,
    spline_path,
    write_prediction,
)
from amcore.metrics import wasserstein


def _snaps(shift=(3.0, -1.0), n=(80, 60, 80)):
    shift = np.asarray(shift)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((max(n), 2))
    x = np.concatenate([base[: n[0]], rng.standard_normal((n[1], 2)) + 10, base[: n[2]] + shift])
    return Snapshots.from_labels(x.astype(np.float32), np.repeat([0.0, 1.0, 4.0], n)), base, shift


def test_bracket_needs_an_observed_interior_time():
    snaps, _, _ = _snaps()
    assert bracket(snaps, 1.0) == (0, 1, 2)
    with pytest.raises(InputError, match="interior"):
        bracket(snaps, 4.0)
    with pytest.raises(InputError, match="not an observed time"):
        bracket(snaps, 2.0)


def test_copy_prev_is_the_previous_snapshot():
    snaps, _, _ = _snaps()
    x, w = copy_prev(snaps, 1.0)
    np.testing.assert_array_equal(x, snaps.snapshot(0))
    assert w.sum() == pytest.approx(1.0)


def test_displacement_of_a_translated_cloud_is_the_translate_at_tau():
    """Between a cloud and its translate the OT map is the translation: at tau the cloud is shifted by tau c."""
    snaps, base, shift = _snaps()
    x, w = ot_displacement(snaps, 1.0)
    tau = (1.0 - 0.0) / (4.0 - 0.0)
    expected = base[:80] + tau * shift
    assert wasserstein(x, expected, wa=w) == pytest.approx(0.0, abs=1e-5)
    # Unequal sizes: the plan's support carries weights that still sum to one, marginals preserved.
    uneven, _, _ = _snaps(n=(80, 60, 50))
    x, w = ot_displacement(uneven, 1.0)
    assert w.sum() == pytest.approx(1.0) and len(x) >= 80


def test_prediction_round_trip(tmp_path):
    x = np.random.default_rng(1).standard_normal((30, 3))
    write_prediction(tmp_path / "p.zarr", x, np.full(30, 2.0), 1.5, 1.0)
    y, w, held_out = read_prediction(tmp_path / "p.zarr")
    np.testing.assert_allclose(y, x, rtol=1e-6)
    assert w.sum() == pytest.approx(1.0) and held_out == 1.5


def test_spline_path_follows_a_translation_and_never_reads_the_held_out_cells():
    """Cells translating at constant speed: OT chains pair each cell with itself and a spline through collinear knots
    is the straight line, so the baseline at the held-out time is the translated cloud to float rounding. The
    held-out cells are replaced by NaN: the baseline must not change (they never reach it)."""
    rng = np.random.default_rng(1)
    base, v = rng.standard_normal((50, 3)), np.array([0.5, -0.2, 0.1])
    times = np.array([0.0, 1.0, 2.5, 4.0, 6.0])
    x = np.concatenate([base + v * t for t in times]).astype(np.float64)
    labels = np.repeat(times, 50)
    truth = base + v * 2.5
    pred, w = spline_path(Snapshots.from_labels(x.astype(np.float32), labels), 2.5)
    np.testing.assert_allclose(w.sum(), 1.0)
    order = np.lexsort(pred.T[::-1]), np.lexsort(truth.T[::-1])
    np.testing.assert_allclose(pred[order[0]], truth[order[1]], atol=1e-4)
    x[labels == 2.5] = np.nan
    again, _ = spline_path(Snapshots.from_labels(x.astype(np.float32), labels), 2.5)
    np.testing.assert_array_equal(again, pred)
