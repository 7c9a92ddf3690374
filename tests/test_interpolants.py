import numpy as np
import pytest
import torch

from amcore import Snapshots
from amcore.models.objective import ObjectiveSpec
from amcore.paths import interpolants
from amcore.paths.interpolants import (
    BEND_LIMIT,
    NoiseSchedule,
    SnapshotPath,
    bend_limited,
    bend_ratios,
    chain_gram,
    chain_points,
    chain_rows,
    choose_shape,
    entropic_pairs,
    ot_pairs,
    spline_at,
    spline_coefficients,
    spline_weights,
)


def _snaps(n=64, times=(0.0, 1.0, 3.0)):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal((n, 2)) + 4 * k for k in range(len(times))])
    return Snapshots.from_labels(x.astype(np.float32), np.repeat(times, n))


def test_exact_ot_between_equal_clouds_is_a_permutation():
    rng = np.random.default_rng(1)
    xa, xb = rng.standard_normal((40, 2)), rng.standard_normal((40, 2))
    ia, ib, w = ot_pairs(xa, xb, max_size=100, rng=rng)
    assert sorted(ia) == list(range(40)) and sorted(ib) == list(range(40))
    np.testing.assert_allclose(w, 1 / 40)
    # Translating one cloud does not change the optimal assignment (squared Euclidean cost).
    ja, jb, _ = ot_pairs(xa, xb + 5.0, max_size=100, rng=rng)
    assert dict(zip(ia, ib, strict=True)) == dict(zip(ja, jb, strict=True))


def test_samples_lie_on_segments_between_neighbouring_snapshots():
    snaps = _snaps()
    for coupling in ("independent", "ot"):
        path = SnapshotPath(snaps, coupling=coupling)
        gen = torch.Generator().manual_seed(0)
        t = 3.0 * torch.rand(2000, generator=gen)
        xt, u = path.sample_at(t, gen)
        assert t.min() >= 0.0 and t.max() <= 3.0
        # Going back along the pair's velocity to the left observed time lands on a cell of that time.
        k = (torch.searchsorted(path.t_values, t, right=True) - 1).clamp(0, 1)
        xa = xt - (t - path.t_values[k])[:, None] * u
        left = torch.as_tensor(snaps.x)[torch.as_tensor(snaps.offsets)[k][:, None] + torch.arange(64)]
        dist = (left - xa[:, None]).norm(dim=-1).min(dim=1).values
        assert dist.max() < 1e-4, coupling


def test_entropic_pairs_sit_between_exact_ot_and_independent():
    rng = np.random.default_rng(3)
    xa, xb = rng.standard_normal((50, 2)), rng.standard_normal((50, 2)) + 1.0
    ia, ib, _ = ot_pairs(xa, xb, max_size=100, rng=rng)
    exact = dict(zip(ia, ib, strict=True))
    sharp_a, sharp_b, _ = entropic_pairs(xa, xb, reg=0.1, max_size=100, draws=16, rng=rng)
    agree = np.mean([exact[i] == j for i, j in zip(sharp_a, sharp_b, strict=True)])
    # Independent pairs would agree with the OT partner 1 time in 50; a small reg keeps most of the plan.
    assert agree > 0.3
    # A large regularisation approaches the independent coupling: partners spread over many cells.
    blur_a, blur_b, w = entropic_pairs(xa, xb, reg=100.0, max_size=100, draws=64, rng=rng)
    assert len(np.unique(blur_b[blur_a == 0])) > 20 and np.isclose(w.sum(), 1.0)


def test_a_vanishing_regularisation_gives_the_exact_plan_without_sinkhorn(capsys):
    """reg 1e-6 beside costs of order 2 (eAM with sigma 0.01, audit 9): log-domain Sinkhorn sat for minutes; the
    exact plan, the limit, stands in, and the log says so once."""
    rng = np.random.default_rng(4)
    xa, xb = rng.standard_normal((300, 2)), rng.standard_normal((300, 2)) + 1.0
    ia, ib, _ = ot_pairs(xa, xb, max_size=1000, rng=rng)
    for _ in range(2):
        ea, eb, w = entropic_pairs(xa, xb, reg=1e-6, max_size=1000, draws=4, rng=rng)
        assert dict(zip(ea, eb, strict=True)) == dict(zip(ia, ib, strict=True)) and np.isclose(w.sum(), 1.0)
    assert capsys.readouterr().err.count("the exact OT plan, its limit, stands in") <= 1  # once per process


def test_a_small_reg_is_reached_by_epsilon_scaling_to_the_same_plan_in_fewer_iterations():
    """Audit 92: just above the exact plan's cutoff, Sinkhorn ran out its 5,000 iterations on a 600-cell pair (178 s)
    and its unconverged plan was used. Halving the reg from 0.05 of the median cost down, each stage starting from
    the last's potentials, ends at the same stop: the same plan (both within the stop's marginal error of the
    converged one: L1 apart well under 1 %), in fewer iterations."""
    rng = np.random.default_rng(6)
    a, b = (torch.as_tensor(rng.standard_normal((200, 2)) + shift) for shift in (0.0, 0.5))
    cost = torch.cdist(a, b).pow(2)
    reg = 0.003 * float(cost.median())
    plain, plain_its = interpolants.entropic_plan(cost, reg, reg)
    scaled, scaled_its = interpolants.entropic_plan(cost, reg, 0.05 * float(cost.median()))
    assert float((plain - scaled).abs().sum()) < 5e-3
    assert float((scaled.sum(1) - 1 / 200).abs().sum()) < 1e-3 and scaled_its < plain_its / 2, (scaled_its, plain_its)


def test_a_slow_sinkhorn_says_so_and_reports_each_pair(capsys, monkeypatch):
    """Audit 20: at a reg of 0.011 of the pairs' median cost, one pair of 1,500 cells took a minute and a training sat
    before its first step for minutes, saying nothing. Between 0.001 and 0.05 of the cost it says why, pair by pair;
    above, nothing."""

    monkeypatch.setattr(interpolants, "_said_slow", [])
    rng = np.random.default_rng(5)
    xa, xb = rng.standard_normal((100, 2)), rng.standard_normal((100, 2)) + 1.0
    median = float(np.median(((xa[:, None] - xb[None]) ** 2).sum(-1)))
    entropic_pairs(xa, xb, reg=0.02 * median, max_size=1000, draws=2, rng=rng)
    said = capsys.readouterr().err
    assert "Sinkhorn converges slowly there" in said and "Sinkhorn pair of 100 x 100 cells:" in said
    entropic_pairs(xa, xb, reg=0.2 * median, max_size=1000, draws=2, rng=rng)
    assert "Sinkhorn" not in capsys.readouterr().err


def test_brownian_bridge_adds_the_bridge_variance():
    """Between identical snapshots (x_a = x_b), x_t - x_a has variance sigma^2 (t - t_a)(t_b - t)/(t_b - t_a)."""
    x = np.zeros((500, 1), dtype=np.float32)
    snaps = Snapshots.from_labels(np.concatenate([x, x]), np.repeat([0.0, 2.0], 500))
    path = SnapshotPath(snaps, coupling="ot", sigma=0.7)
    xt, _ = path.sample_at(torch.full((20000,), 0.5), torch.Generator().manual_seed(0))
    expected = 0.7**2 * 0.5 * 1.5 / 2.0
    # 20000 samples: the variance estimate's relative standard error is sqrt(2/20000) = 1 %; allow 5 %.
    assert abs(xt.var().item() / expected - 1) < 0.05


def _quadrature_v(spec: ObjectiveSpec, t0: float, t1: float, a: float, b: float) -> float:
    """``V(a, b) = int_a^b sigma_t^2 dt`` by the trapezoid rule on the loss's own schedule (``spec.sigma_at``),
    independently of the path's closed form; 20001 nodes on a quadratic integrand: error ~1e-9."""
    grid = np.linspace(a, b, 20001)
    sigma = spec.sigma_at(torch.as_tensor((grid - t0) / (t1 - t0), dtype=torch.float64)).numpy()
    return float(np.trapezoid(sigma**2, grid))


def test_time_varying_bridge_follows_the_loss_schedule():
    """With sigma_t linear from sigma to sigma_final (the loss's and the SDE's schedule), the bridge of dX = sigma_t dW
    pinned at x_a (t_a) and x_b (t_b) is Gaussian with mean x_a + V(t_a, t)/V(t_a, t_b) (x_b - x_a) and variance
    V(t_a, t) V(t, t_b) / V(t_a, t_b) per coordinate, V(a, b) = int_a^b sigma_s^2 ds (conditioning W_t on W_{t_b}).

    Times 0, 1, 3 and sigma 1.2 -> 0.2: at t = 2 the variance is 0.112 and tau 0.777, where a constant sigma = 1.2
    (the old bridge) gives 0.72 and 0.5.
    """
    spec = ObjectiveSpec("eam", sigma=1.2, sigma_final=0.2)
    times, a, b = (0.0, 1.0, 3.0), np.array([1.0, -1.0]), np.array([5.0, 2.0])
    x = np.stack([np.zeros((4, 2)), np.tile(a, (4, 1)), np.tile(b, (4, 1))]).reshape(-1, 2).astype(np.float32)
    snaps = Snapshots.from_labels(x, np.repeat(times, 4))
    path = SnapshotPath(snaps, coupling="ot", sigma=spec.sigma, sigma_final=spec.sigma_final)
    u = torch.linspace(0, 1, 11)
    torch.testing.assert_close(path.noise.at(u), spec.sigma_at(u))  # one schedule for path and loss

    n = 100_000
    xt, _ = path.sample_at(torch.full((n,), 2.0), torch.Generator().manual_seed(0))
    xt = xt.double().numpy()
    before, after = _quadrature_v(spec, 0, 3, 1, 2), _quadrature_v(spec, 0, 3, 2, 3)
    var = before * after / (before + after)
    mean = a + before / (before + after) * (b - a)
    # Mean: standard error sqrt(var / n) = 0.0011 per coordinate; allow 6 of them (the old tau is off by 1.1).
    np.testing.assert_allclose(xt.mean(0), mean, atol=6 * np.sqrt(var / n))
    # Variance of 2 n Gaussian values: relative standard error sqrt(2 / (2 n)) = 0.32 %; allow 2 % (6 of them).
    assert abs(xt.var(0).mean() / var - 1) < 0.02, (xt.var(0), var)
    # At the observed times the path is exactly the observed cells: no noise left.
    ends, _ = path.sample_at(torch.tensor([1.0, 3.0]), torch.Generator().manual_seed(1))
    np.testing.assert_allclose(ends.numpy(), np.stack([a, b]), atol=1e-5)


@pytest.mark.parametrize("sigma_final", [None, 0.2, 1.5])
def test_entropic_reg_is_twice_the_bridge_variance_of_each_interval(sigma_final):
    """The Schrödinger bridge's static coupling for dX = sigma_t dW is entropic OT with reg 2 V(t_a, t_b): per
    interval, from the same schedule (2 sigma^2 (t_b - t_a) for a constant sigma)."""
    spec = ObjectiveSpec("eam", sigma=0.8, sigma_final=sigma_final)
    snaps = _snaps(n=32, times=(0.0, 1.0, 3.0))
    path = SnapshotPath(snaps, coupling="entropic", sigma=spec.sigma, sigma_final=sigma_final, entropic_draws=2)
    expected = [2 * _quadrature_v(spec, 0, 3, 0, 1), 2 * _quadrature_v(spec, 0, 3, 1, 3)]
    np.testing.assert_allclose(path.entropic_regs, expected, rtol=1e-6)
    if sigma_final is None:
        np.testing.assert_allclose(path.entropic_regs, [2 * 0.8**2 * 1, 2 * 0.8**2 * 2], rtol=1e-12)
    # An explicit entropic_reg still wins.
    fixed = SnapshotPath(snaps, coupling="entropic", sigma=0.8, sigma_final=sigma_final, entropic_reg=0.3)
    assert fixed.entropic_regs == [0.3, 0.3]


def test_noise_schedule_integral_is_exact():
    """The closed form of V for a linear sigma_t against the trapezoid rule, including a schedule through 0."""
    for schedule in (NoiseSchedule(0.7), NoiseSchedule(1.2, 0.2), NoiseSchedule(0.0, 2.0), NoiseSchedule(1.0, 0.0)):
        spec = ObjectiveSpec("eam", sigma=schedule.sigma, sigma_final=schedule.sigma_final)
        for lo, hi in ((0.0, 1.0), (0.25, 0.6), (0.9, 1.0)):
            closed = schedule.variance(lo, hi, 2.5)
            assert closed == pytest.approx(_quadrature_v(spec, 0.0, 2.5, 2.5 * lo, 2.5 * hi), rel=1e-7)


def test_spline_weights_reproduce_straight_lines_at_every_tension():
    """Both the hat functions and the natural cubic's cardinal functions reproduce affine motion exactly."""
    knots = np.array([0.0, 0.5, 2.0, 3.0, 5.0])
    for tension in (0.0, 0.5, 1.0, np.array([0.2, 1.0, 0.0, 0.7])):  # one, or one per interval (bend_limited)
        coef = spline_coefficients(knots, tension)
        for t in np.linspace(0, 5, 23):
            w = spline_weights(coef, knots, t)
            assert w.sum() == pytest.approx(1.0) and w @ knots == pytest.approx(t)
        # At the knots the path is the chain's point itself: the weight vector is one-hot.
        np.testing.assert_allclose(spline_weights(coef, knots, 2.0), [0, 0, 1, 0, 0], atol=1e-12)


def test_spline_path_passes_through_every_snapshot_and_follows_chains():
    snaps = _snaps(times=(0.0, 1.0, 3.0, 4.0))
    path = SnapshotPath(snaps, coupling="ot", interpolation="spline", tension=1.0)
    gen = torch.Generator().manual_seed(0)
    for k, t in enumerate(snaps.t_values):
        xt, _ = path.sample_at(torch.full((3000,), float(t)), gen)
        cells = torch.as_tensor(snaps.snapshot(k))
        # Each sample is one of the cells of that time (the chains' k-th points are the snapshot).
        # float32 weights: the one-hot weight vector at a knot is exact to a few ulps.
        assert (xt[:, None] - cells[None]).norm(dim=-1).min(dim=1).values.max() < 1e-4
    # Equal sizes: the chains are permutations, every cell of every time is on exactly one chain.
    for k in range(snaps.n_snapshots):
        assert sorted(path.chains[:, k].tolist()) == list(range(snaps.offsets[k], snaps.offsets[k + 1]))
    # The velocity is the time derivative of the position along the chain (finite difference check).
    t = torch.full((1,), 2.0)
    chain = path.chains[:1]
    path.chains = chain
    x1, u = path.sample_at(t, gen)
    x2, _ = path.sample_at(t + 1e-3, gen)
    torch.testing.assert_close((x2 - x1) / 1e-3, u, atol=2e-2, rtol=1e-2)


def test_chains_preserve_unequal_marginals():
    """Markov chains through the OT plans: each time's chain points are distributed as its snapshot."""
    rng = np.random.default_rng(2)
    clouds = [rng.standard_normal((n, 2)) + k for k, n in enumerate((40, 80, 20))]
    rows = chain_rows(clouds, 8000, rng)
    for k, cloud in enumerate(clouds):
        freq = np.bincount(rows[:, k], minlength=len(cloud)) / len(rows)
        # Multinomial counts: each frequency 1/n with std sqrt(1/(n * 8000)) <= 0.0016; allow 5 std.
        assert np.abs(freq - 1 / len(cloud)).max() < 5 * np.sqrt(1 / (len(cloud) * 8000))


def test_auto_tension_prefers_the_spline_on_a_curved_path():
    """Clouds translated along a parabola: left-out times are predicted better by the cubic spline."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((200, 2)) * 0.3
    knots = np.arange(6.0)
    clouds = [base + np.array([t, 0.5 * t**2]) for t in knots]
    (tension, weight), scores = choose_shape(clouds, knots, rng)
    assert tension >= 0.75 and weight == 0 and scores[(1.0, 0.0)] < scores[(0.0, 0.0)]
    # On straight, uniform motion every tension interpolates exactly.
    straight = [base + np.array([t, 0.0]) for t in knots]
    _, scores = choose_shape(straight, knots, rng)
    assert max(scores.values()) < 1e-6
    # Three times leave two once the interior one is out: nothing to choose on, so half way, with no scores.
    assert choose_shape(clouds[:3], knots[:3], rng) == ((0.5, 0.0), {})


def _slowing(times, n=150, seed=5):
    """Clouds whose mean moves fast at first and then settles (audit 90's uneven course, made smaller)."""
    rng = np.random.default_rng(seed)
    s = 1 - np.exp(-np.asarray(times) / 4)
    return [np.array([5 * u, 3 * np.sin(np.pi * u)]) + 0.2 * rng.standard_normal((n, 2)) for u in s]


def test_bend_limit_holds_a_long_interval_near_its_chords():
    """Times 0, 0.5, 1, 24: the natural spline carries the fast early motion across the 23-hour interval and
    bulges off the path; the limit lowers that interval's tension alone, to a stray of BEND_LIMIT chords."""
    knots = np.array([0.0, 0.5, 1.0, 24.0])
    points, _ = chain_points(_slowing(knots), np.random.default_rng(0))
    ratios = bend_ratios(chain_gram(points), knots)
    assert ratios[2] > 2 * BEND_LIMIT and (ratios[:2] < BEND_LIMIT).all()
    # The ratios are read from sums over chains: an offset of the data a million times its spread changes none.
    np.testing.assert_allclose(bend_ratios(chain_gram(points + 1e6), knots), ratios, rtol=1e-6)
    tensions = bend_limited(chain_gram(points), knots, 1.0)
    assert tensions[:2].tolist() == [1.0, 1.0] and tensions[2] == pytest.approx(BEND_LIMIT / ratios[2])
    # Read independently, point by point on a finer grid than the limit's: the stray is BEND_LIMIT chords at most.
    grid = np.linspace(1.0, 24.0, 461)[1:-1]
    stray = [np.sqrt(((spline_at(points, knots, t, 1.0) - spline_at(points, knots, t, 0.0)) ** 2).sum(1).mean())
             for t in grid]  # fmt: skip
    chord = np.sqrt(((points[:, 3] - points[:, 2]) ** 2).sum(1).mean())
    assert max(stray) / chord == pytest.approx(BEND_LIMIT, rel=0.01)
    # The cells at 8 h, never seen: the limited spline lands nearer them than the natural one would.
    truth = _slowing([8.0], seed=6)[0]
    natural = np.einsum("k,nkd->nd", spline_weights(spline_coefficients(knots, 1.0), knots, 8.0), points)
    assert _w1(spline_at(points, knots, 8.0, 1.0), truth) < 0.5 * _w1(natural, truth)


def test_bend_limit_leaves_evenly_spaced_curves_alone():
    """A parabola through evenly spaced times: the spline is the path's own shape, and keeps its tension."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((200, 2)) * 0.3
    knots = np.arange(6.0)
    points, _ = chain_points([base + np.array([t, 0.5 * t**2]) for t in knots], rng)
    assert (bend_ratios(chain_gram(points), knots) < 0.1).all()
    assert bend_limited(chain_gram(points), knots, 1.0).tolist() == [1.0] * 5


def test_pair_draws_stay_in_their_interval_with_many_times():
    """The largest float32 uniform must still pick a pair of its own interval: with 40 times the search key
    k + u once rounded (float32) to k + 1, a pair of the next interval, or past the end in the last one."""
    rng = np.random.default_rng(0)
    times = np.arange(40, dtype=np.float64)
    # 300 rows a time: the 300 OT weights 1/300 add up to 1 - 4e-15, so an interval's last key is just under k + 1.
    x = np.concatenate([0.1 * rng.standard_normal((300, 1)) + 10 * k for k in range(40)]).astype(np.float32)
    path = SnapshotPath(Snapshots.from_labels(x, np.repeat(times, 300)), coupling="ot")
    assert path.cum_weights[-1] < 39
    path._uniform = lambda n, gen: torch.full((n,), 1 - 2**-24)  # the largest value torch.rand returns
    t = torch.tensor([38.5, 37.5, 33.5, 0.5])
    xt, u = path.sample_at(t, torch.Generator().manual_seed(0))
    # Snapshot k sits at 10 k: on a segment of the right interval x_t is 10 t give or take the spread (0.1).
    assert ((xt[:, 0] - 10 * t).abs() < 1).all()
    assert ((u - 10).abs() < 1).all()


def _row_frequencies(path: SnapshotPath, x: torch.Tensor) -> np.ndarray:
    """How often each stored row was drawn (``x`` holds exact copies of stored rows)."""
    rows = torch.cdist(x.double(), path.x.double()).argmin(1)
    return np.bincount(rows.numpy(), minlength=len(path.x)) / len(x)


@pytest.mark.parametrize("interpolation", ["spline", "linear"])
def test_boundary_terms_see_the_distribution_the_path_starts_and_ends_in(interpolation):
    """AM's loss is bounded below only if its boundary samples follow the path's own end marginals: chains through
    3 -> 7 -> 5 cells visit the 3 first cells 7 times in all, unevenly, and a plan solved on a subsample of 4 of
    5 cells never starts at the fifth. Uniform draws of the observed cells would differ by a total variation of
    about 0.1-0.2; two samples of 100,000 draws of the same distribution over <= 7 rows differ by < 0.01."""
    rng = np.random.default_rng(3)
    counts = [3, 7, 5] if interpolation == "spline" else [5, 5, 5]
    x = np.concatenate([rng.standard_normal((n, 2)) + 4 * k for k, n in enumerate(counts)]).astype(np.float32)
    snaps = Snapshots.from_labels(x, np.repeat([0.0, 1.0, 2.0], counts))
    path = SnapshotPath(snaps, interpolation=interpolation, ot_max_size=4, seed=1)
    gen = torch.Generator().manual_seed(0)
    n = 100_000
    first, last = path.sample_endpoints(n, gen)
    start, _ = path.sample_at(torch.full((n,), 0.0), gen)
    end, _ = path.sample_at(torch.full((n,), 2.0), gen)
    assert 0.5 * np.abs(_row_frequencies(path, first) - _row_frequencies(path, start)).sum() < 0.01
    assert 0.5 * np.abs(_row_frequencies(path, last) - _row_frequencies(path, end)).sum() < 0.01


def test_plans_arriving_at_and_leaving_a_subsampled_time_share_its_cells():
    """Both plans that touch an interior time use the same subsample of it (``time_subsets``), so the path's
    marginal there is one distribution whichever side it is reached from: a difference is, like a boundary
    mismatch, a term linear in ``s`` that AM's loss can grow without bound."""
    snaps = _snaps(n=50)
    path = SnapshotPath(snaps, ot_max_size=20, seed=0)
    k = path.cum_weights.ceil().long() - 1
    arriving = np.unique(path.pair_b[k == 0].numpy())
    leaving = np.unique(path.pair_a[k == 1].numpy())
    assert len(arriving) == 20
    np.testing.assert_array_equal(arriving, leaving)


def test_stride_mixes_interleaved_straight_paths():
    """Times 0..6 with every cell of time k at k^2 (1-d): with stride 2 the paths are 0-2-4-6 and 0-1-3-5-6, so a
    point at t in (2, 3) lies on chord 2-4 or chord 1-3, each with probability 1/2, and moves at its slope."""
    times = np.arange(7.0)
    x = np.repeat(times**2, 50)[:, None].astype(np.float32)
    path = SnapshotPath(Snapshots.from_labels(x, np.repeat(times, 50)), coupling="ot", stride=2)
    gen = torch.Generator().manual_seed(0)
    n = 4000
    t = torch.full((n,), 2.25)
    xt, u = path.sample_at(t, gen)
    at = {6.0: 4 + 6 * 0.25, 4.0: 1 + 4 * 1.25}  # slope -> position: chord 2-4 (4 to 16), chord 1-3 (1 to 9)
    assert set(np.round(u[:, 0].numpy(), 4)) == set(at)
    for slope, position in at.items():
        on = u[:, 0] == slope
        # 4000 fair draws: the share is within 0.5 +- 0.04 (5 standard deviations).
        assert abs(float(on.float().mean()) - 0.5) < 0.04
        np.testing.assert_allclose(xt[on, 0].numpy(), position, rtol=1e-6)
    # Both paths start and end at the observed ends: AM's boundary terms see times 0 and 6.
    first, last = path.sample_endpoints(500, gen)
    assert (first == 0).all() and (last == 36).all()


def test_stride_one_is_the_neighbouring_path_and_bad_strides_are_refused():
    snaps = _snaps(times=(0.0, 1.0, 3.0, 4.0))
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    t = torch.linspace(0.0, 4.0, 101)
    a, b = SnapshotPath(snaps, seed=1).sample_at(t, gen_a), SnapshotPath(snaps, seed=1, stride=1).sample_at(t, gen_b)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="stride 2 interleaves straight coupled paths"):
        SnapshotPath(snaps, interpolation="spline", stride=2)
    with pytest.raises(ValueError, match=r"stride must be 1 or 2 \(a jump over fewer than all 3 intervals"):
        SnapshotPath(snaps, stride=3)
    with pytest.raises(ValueError, match=r"stride must be 1 with so few times .* 2 intervals"):  # audit 16
        SnapshotPath(Snapshots(snaps.x[: snaps.offsets[3]], snaps.t_values[:3], snaps.offsets[:4]), stride=2)


def test_couplings_that_take_long_say_how_many_are_solved(monkeypatch):
    """Audit 51: 5,000 cells a time in 20-d took 20 s an interval and the log was silent for three minutes."""
    monkeypatch.setattr(interpolants, "PROGRESS_S", 0.0)
    lines: list[str] = []
    SnapshotPath(_snaps(times=(0.0, 1.0, 2.0, 3.0)), progress=lines.append)
    assert lines[0].startswith("1 of 3 couplings solved (") and lines[-1].startswith("2 of 3 couplings solved (")
    monkeypatch.setattr(interpolants, "PROGRESS_S", 1e9)  # a short solve says nothing
    lines.clear()
    SnapshotPath(_snaps(times=(0.0, 1.0, 2.0, 3.0)), progress=lines.append)
    assert lines == []


def test_auto_tension_leaves_out_at_most_a_dozen_times_of_dense_frames(monkeypatch):
    """Audit 62: 151 frames left out each of 149 in turn, every one rebuilding the chains through all the others
    (22,000 OT plans, 249 s for a baseline); a dozen evenly spread times choose as well on a parabola."""
    from amcore.paths import interpolants

    built = []
    real = interpolants.chain_points
    monkeypatch.setattr(interpolants, "chain_points", lambda clouds, *a: built.append(len(clouds)) or real(clouds, *a))
    rng = np.random.default_rng(3)
    base = rng.standard_normal((60, 2)) * 0.3
    knots = np.linspace(0.0, 5.0, 40)
    (tension, _), _ = choose_shape([base + np.array([t, 0.5 * t**2]) for t in knots], knots, rng)
    assert built == [39] * interpolants.TENSION_CV_TIMES and tension >= 0.75


def _w1(a: np.ndarray, b: np.ndarray) -> float:
    from amcore.metrics import wasserstein

    return wasserstein(a, b, p=1)
