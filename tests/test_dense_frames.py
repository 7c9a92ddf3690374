"""Dense simulation frames: the ``nearest`` path, scoring a few of many frames, and the AM paper's MMD."""

import numpy as np
import pytest
import torch

from amcore import Snapshots
from amcore.data.simulate import GaussianPath, simulate_snapshots
from amcore.evaluation.evaluate import score_paper_mmd, select_times
from amcore.metrics import NonFiniteError, mmd_paper
from amcore.paths.interpolants import NEAREST_MAX_STEP, SnapshotPath, check_dense_frames
from amcore.training.train import TrainConfig


def _gaussian_frames(n_frames: int, n: int = 300, seed: int = 0) -> Snapshots:
    x, t = simulate_snapshots(GaussianPath(), list(np.linspace(0, 1, n_frames)), n, seed)
    return Snapshots.from_labels(x, t)


def test_nearest_draws_the_later_frame_with_probability_tau():
    """q_t = (1 - tau) q_k + tau q_{k+1}: every draw is a cell of one of the two frames around t, the later one with
    frequency tau (20,000 draws: standard error <= 0.0036, margin 5 of them), so q_t moves continuously in t; at the
    first and the last time the path is that frame, which is what the boundary terms draw."""
    snaps = _gaussian_frames(51, n=100)
    path = SnapshotPath(snaps, interpolation="nearest")
    gen = torch.Generator().manual_seed(0)
    h = float(snaps.t_values[1] - snaps.t_values[0])
    rows = {k: torch.as_tensor(np.asarray(snaps.snapshot(k)), dtype=torch.float64) for k in (0, 20, 21, 50)}
    n = 20000
    for tau in (0.0, 0.3, 0.8):
        x, velocity = path.sample_at(torch.full((n,), float(snaps.t_values[20]) + tau * h), gen)
        assert torch.isnan(velocity).all()  # no pair, no pair velocity: not a path Flow Matching can use
        later = (torch.cdist(x.double(), rows[21]).min(1).values < 1e-4).double()
        earlier = (torch.cdist(x.double(), rows[20]).min(1).values < 1e-4).double()
        assert (later + earlier == 1).all()
        assert abs(float(later.mean()) - tau) < 5 * np.sqrt(0.25 / n)
    first, last = path.sample_endpoints(1000, gen)
    assert (torch.cdist(first.double(), rows[0]).min(1).values < 1e-4).all()
    assert (torch.cdist(last.double(), rows[50]).min(1).values < 1e-4).all()


def test_nearest_refuses_sparse_frames_and_accepts_dense_ones():
    """11 frames of the default Gaussian path are half the cloud's spread apart (W2 between their moments, RMS): a
    mixture of neighbours is not the path, and the message says what to use instead. 101 frames are 0.05 apart."""
    with pytest.raises(ValueError, match="needs dense frames.*'linear'.*'spline'"):
        SnapshotPath(_gaussian_frames(11), interpolation="nearest")
    rms = check_dense_frames(_gaussian_frames(101), 5000, np.random.default_rng(0))
    assert rms < NEAREST_MAX_STEP / 2


def test_flow_matching_cannot_use_nearest():
    with pytest.raises(ValueError, match="Flow Matching"):
        TrainConfig(objective="fm", interpolation="nearest")


def test_select_times_keeps_the_first_and_evenly_spaced_frames():
    """1,001 frames, 10 scored: the first and every 100th, cut alike in the store, the predictions and the weights."""
    t = np.linspace(0, 1, 1001)
    snaps = Snapshots.from_labels(np.repeat(t, 2)[:, None].astype(np.float32), np.repeat(t, 2))
    predicted = np.repeat(t, 2).reshape(1001, 2, 1)
    sub, pred, w = select_times(snaps, predicted, np.ones((1001, 2)), 10)
    np.testing.assert_allclose(sub.t_values, np.linspace(0, 1, 11))
    np.testing.assert_allclose(pred[:, 0, 0], np.linspace(0, 1, 11))
    np.testing.assert_allclose(np.asarray(sub.snapshot(3))[:, 0], 0.3, rtol=1e-6)
    assert w.shape == (11, 2)
    snaps.attrs["holdout_times"] = [float(t[55])]
    sub, _, _ = select_times(snaps, predicted, None, 10)
    assert len(sub.t_values) == 12 and float(t[55]) in sub.t_values
    assert select_times(snaps, predicted, None, None)[0] is snaps


def _mmd_direct(a: np.ndarray, b: np.ndarray, alphas) -> float:
    """The unbiased estimator written out on full kernel matrices."""

    def k(x, y):
        d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
        return sum(np.exp(-alpha * d2) for alpha in alphas)

    n, m = len(a), len(b)
    kxx, kyy = k(a, a), k(b, b)
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * k(a, b).mean()
    )


def test_mmd_paper_matches_the_estimator_written_out():
    """Blocks of 8 rows over 37 and 53 points (uneven last blocks, a diagonal inside each block of x with x) give the
    full-matrix value to rounding, for the paper's alphas and for mixed ones."""
    rng = np.random.default_rng(0)
    a, b = 10 * rng.standard_normal((37, 3)), 10 * rng.standard_normal((53, 3)) + 2.0
    for alphas in ((1e-4, 1e-4, 1e-4), (1e-3, 0.02)):
        assert mmd_paper(a, b, alphas, block=8) == pytest.approx(_mmd_direct(a, b, alphas), rel=1e-10, abs=1e-14)
    # For kernels far wider than the clouds, MMD^2 ~ 2 sum_j alpha_j |mean_a - mean_b|^2 (the first-order term).
    # Corrections: alpha (|c|^2 + 2 d) ~ 0.2 % from the next order, 2 tr(Sigma) / n ~ 0.1 % from the unbiasing.
    x, y = rng.standard_normal((1000, 3)), rng.standard_normal((1000, 3)) + [3.0, 0, 0]
    expected = 2 * 3e-4 * np.sum((x.mean(0) - y.mean(0)) ** 2)
    assert mmd_paper(x, y) == pytest.approx(expected, rel=0.01)
    with pytest.raises(NonFiniteError):
        mmd_paper(np.array([[np.nan, 0, 0], [0, 0, 0]]), b)


def test_score_paper_mmd_averages_absolute_values_and_fails_loudly():
    """The mean of |MMD^2| over the scored times (as the paper's code), each time's signed value beside it; a time
    whose pushed cells are not all finite is NaN, and so is the mean."""
    rng = np.random.default_rng(1)
    t = np.array([0.0, 1.0, 2.0])
    x = np.concatenate([rng.standard_normal((50, 3)) + k for k in range(3)]).astype(np.float32)
    snaps = Snapshots.from_labels(x, np.repeat(t, 50))
    predicted = np.stack([np.asarray(snaps.snapshot(k)) + 0.5 for k in range(3)])
    result = score_paper_mmd(snaps, predicted, [1e-2])
    values = [mmd_paper(predicted[k], np.asarray(snaps.snapshot(k)), (1e-2,)) for k in (1, 2)]
    assert list(result["mmd_paper_by_time"]) == ["1", "2"]
    assert result["mmd_paper"] == pytest.approx(np.mean(np.abs(values)))
    predicted[2, 0, 0] = np.inf
    result = score_paper_mmd(snaps, predicted, [1e-2])
    assert np.isnan(result["mmd_paper_by_time"]["2"]) and np.isnan(result["mmd_paper"])


def test_time_periods_add_features_of_those_periods():
    """A period P in the data's time units is the feature sin(2 pi (t - t0) / P): 1 a quarter period in, 0 after
    whole periods; its slope (used by the fused loss for d_t s) is the derivative, by central differences."""
    from amcore.models.potentials import TimeEmbedding

    emb = TimeEmbedding(2, 0.0, 14000.0, periods=(90.478,))
    t = torch.tensor([0.0, 90.478 / 4, 3 * 90.478], dtype=torch.float64)
    features = emb.double()(t)
    assert features.shape == (3, 1 + 2 * 3)
    np.testing.assert_allclose(features[:, 3].numpy(), [0.0, 1.0, 0.0], atol=1e-5)
    h = 1e-3
    slope = emb.slope(t, features)
    fd = (emb(t + h) - emb(t - h)) / (2 * h)
    np.testing.assert_allclose(slope.numpy(), fd.numpy(), rtol=1e-5, atol=1e-8)


def test_warmup_ramps_the_learning_rate_and_grad_clip_is_checked():
    from amcore.training.train import cosine_lr

    cfg = TrainConfig(lr=1e-4, lr_final=1e-4, warmup_steps=100, steps=1000)
    assert cosine_lr(0, cfg) == pytest.approx(1e-6) and cosine_lr(49, cfg) == pytest.approx(5e-5)
    assert cosine_lr(99, cfg) == cosine_lr(500, cfg) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="grad_clip"):
        TrainConfig(grad_clip=0.0)
