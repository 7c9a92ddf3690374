import torch

from amcore.training.timesampling import TimeSampler


def test_stratified_times_cover_the_interval_evenly():
    t, inv = TimeSampler("stratified", 0.0, 3.0).sample(1000, torch.Generator().manual_seed(0))
    assert torch.all(torch.histc(t, bins=10, min=0.0, max=3.0) == 100)
    assert torch.all(inv == 3.0)


def test_importance_sampling_is_unbiased_and_adapts():
    """A peaked integrand: the adapted sampler concentrates near the peak and its estimate stays unbiased."""
    sampler = TimeSampler("importance", 0.0, 1.0, bins=20, momentum=0.9)
    gen = torch.Generator().manual_seed(0)

    def f(t):
        return torch.exp(-((t - 0.8) ** 2) / 0.002)

    for _ in range(200):
        t, _ = sampler.sample(512, gen)
        sampler.update(t, f(t))
        sampler.commit()
    assert sampler.probabilities()[16] > 5 * sampler.probabilities()[2]
    estimates = torch.stack([(f(t) * inv).mean() for t, inv in (sampler.sample(4096, gen) for _ in range(50))])
    exact = (
        (0.002 * torch.pi) ** 0.5
        * 0.5
        * (torch.erf(torch.tensor(0.2 / 0.002**0.5)) + torch.erf(torch.tensor(0.8 / 0.002**0.5)))
    )
    # Standard error of the mean of 50 estimates is tiny here; 2 % covers it many times over.
    assert abs(estimates.mean() / exact - 1) < 0.02
    uniform = TimeSampler("uniform", 0.0, 1.0)
    plain = torch.stack([(f(t) * inv).mean() for t, inv in (uniform.sample(4096, gen) for _ in range(50))])
    assert estimates.std() < plain.std()


KNOTS = [0.1, 0.3, 1.0, 2.0, 4.0, 8.0, 24.0, 72.0, 168.0]  # log-spaced observations (audit 50)


def test_the_observed_clock_gives_each_interval_as_many_draws_and_stays_unbiased():
    """On the observed times' clock every interval gets the same share of draws (on t's own, the first four hours
    got 2 %), and ``mean(f(t) * inv)`` still estimates ``int f dt``: exact for f = 1 (each stratum's weight is its
    interval's length times the number of intervals), and within 1 % for a peaked f (50 x 4096 stratified draws)."""
    gen = torch.Generator().manual_seed(0)
    sampler = TimeSampler("stratified", KNOTS[0], KNOTS[-1], knots=KNOTS)
    t, inv = sampler.sample(800, gen)
    counts = torch.histc(torch.searchsorted(torch.tensor(KNOTS), t).float(), bins=8, min=0.5, max=8.5)
    assert torch.all(counts == 100)
    assert abs(float(inv.mean()) / (KNOTS[-1] - KNOTS[0]) - 1) < 1e-5

    def f(t):
        return torch.exp(-t / 2.0)

    exact = 2.0 * (torch.exp(torch.tensor(-KNOTS[0] / 2)) - torch.exp(torch.tensor(-KNOTS[-1] / 2)))
    estimates = torch.stack([(f(t) * inv).mean() for t, inv in (sampler.sample(4096, gen) for _ in range(50))])
    assert abs(estimates.mean() / exact - 1) < 0.01
    # the importance bins are on the same clock, one an interval here, tallying the clock's integrand f dt/du: the
    # last (72 to 168 h, f ~ e^-36) falls to the uniform half's floor, the third (1 to 2 h: 0.4 of f's 8 h) does not
    importance = TimeSampler("importance", KNOTS[0], KNOTS[-1], bins=8, knots=KNOTS)
    t, _ = importance.sample(4000, gen)
    importance.update(t, f(t))
    importance.commit()
    probabilities = importance.probabilities()
    assert probabilities[-1] < 0.5 / 8 + 1e-6 and probabilities[2] > 2 * probabilities[-1]


def test_gaps_within_five_fold_keep_the_clock_of_t_itself():
    """Even times, with or without one held out (gaps 1, 2, 1: EB's leave-one-out), draw as without knots."""
    for knots in ([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.5, 3.0]):
        a, b = (TimeSampler("stratified", 0.0, 3.0, knots=k) for k in (None, knots))
        draws = [s.sample(100, torch.Generator().manual_seed(0)) for s in (a, b)]
        assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    assert TimeSampler("stratified", 0.0, 3.0, knots=[0.0, 0.4, 2.5, 3.0]).knots is not None  # 2.1 / 0.4 > 5


def test_the_network_clock_is_continuous_and_its_slope_is_its_derivative():
    """The embedding's clock u is k / K at the k-th knot, continuous across it, and ``slope`` (the fused loss's
    d_t s) matches central differences inside each interval."""
    from amcore.models.potentials import TimeEmbedding

    emb = TimeEmbedding(2, KNOTS[0], KNOTS[-1], knots=KNOTS).double()
    at_knots = emb(torch.tensor(KNOTS, dtype=torch.float64))[:, 0]
    torch.testing.assert_close(at_knots, torch.arange(9, dtype=torch.float64) / 8, atol=1e-6, rtol=0)
    h = 1e-6
    for knot in KNOTS[1:-1]:
        left, right = emb(torch.tensor([knot - h, knot + h], dtype=torch.float64))
        assert (left - right).abs().max() < 1e-4
    t = torch.tensor([0.2, 0.5, 3.0, 50.0, 100.0], dtype=torch.float64)
    step = 1e-4 * t
    fd = (emb(t + step) - emb(t - step)) / (2 * step[:, None])
    torch.testing.assert_close(emb.slope(t, emb(t)), fd, rtol=1e-5, atol=1e-6)
    assert TimeEmbedding(2, 0.0, 3.0, knots=[0.0, 1.0, 2.0, 3.0]).knots is None


def test_the_pace_is_each_interval_s_rate_joined_continuously_at_the_knots():
    """Times 0, 3 min, 1 h, 1 week on a clock at 0, 0.14, 0.18, 1 (audit 88's course): the pace is each interval's
    ``du/dt`` times the span away from the knots, the geometric mean of its neighbours' at a knot, continuous
    (within 2 % over 1e-6 of the clock), and monotone across each window. A clock whose rates span 10-fold or less
    is not paced, and a potential without its flag (a checkpoint from before the pace) is not either."""
    from amcore.models.potentials import Potential, clock_pace, paced_clock

    knots, levels = [0.0, 0.05, 1.0, 168.0], [0.0, 0.14, 0.18, 1.0]
    k, lv = torch.tensor(knots, dtype=torch.float64), torch.tensor(levels, dtype=torch.float64)
    rates = [168 * 0.14 / 0.05, 168 * 0.04 / 0.95, 168 * 0.82 / 167]
    inside = torch.tensor([0.001, 0.02, 0.5, 0.6, 10.0, 100.0], dtype=torch.float64)
    torch.testing.assert_close(clock_pace(k, lv, inside), torch.tensor(rates, dtype=torch.float64).repeat_interleave(2))
    at_knots = clock_pace(k, lv, k[1:3])
    torch.testing.assert_close(at_knots, torch.tensor([(rates[0] * rates[1]) ** 0.5, (rates[1] * rates[2]) ** 0.5],
                                                      dtype=torch.float64))  # fmt: skip
    fine = torch.linspace(0.04, 2.0, 200_001, dtype=torch.float64)
    pace = clock_pace(k, lv, fine)
    assert (pace[1:] / pace[:-1]).max() < 1.02 and (pace[1:] <= pace[:-1] * (1 + 1e-12)).all()
    assert paced_clock(knots, levels) and not paced_clock([0.0, 1.0, 3.0, 10.0], [0.0, 0.2, 0.5, 1.0])
    clock = {"time_knots": knots, "time_levels": levels}
    assert Potential(2, (0.0, 168.0), paced=True, **clock).paced
    assert not Potential(2, (0.0, 168.0), **clock).paced and not Potential(2, (0.0, 168.0), paced=True).paced


def test_the_clock_runs_with_the_population_s_motion():
    """Half the time elapsed, half the distance moved: cells moving uniformly keep t's own clock (within 0.03);
    cells that make all their move (5 spreads) in the first 2 % of the time reach half the clock there, and the
    rest of the clock runs with t. The moments' noise is taken off on average; what is left of it in the six
    intervals that do not move stays within 0.03 of the clock (1,000 cells a time, seeded). Even times keep t's."""
    import numpy as np

    from amcore import Snapshots
    from amcore.training.train import motion_levels

    times = np.array([0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0])
    rng = np.random.default_rng(0)
    labels = np.repeat(times, 1000)
    noise = rng.standard_normal((len(labels), 2))
    knots, uniform = motion_levels(Snapshots.from_labels(noise + 10 * labels[:, None] * [1, 0], labels))
    assert knots == times.tolist()
    np.testing.assert_allclose(uniform, times, atol=0.03)
    _, early = motion_levels(Snapshots.from_labels(noise + 5 * (labels[:, None] > 0) * [1, 0], labels))
    np.testing.assert_allclose(early, [0.0, *(0.5 + 0.5 * times[1:])], atol=0.03)
    even = np.repeat([0.0, 1.0, 2.0, 4.0], 100)  # gaps within 5-fold
    assert motion_levels(Snapshots.from_labels(rng.standard_normal((400, 2)), even)) is None


def test_importance_on_the_clock_adapts_to_the_integrand_there():
    """Review: fed f(t) instead of the clock's integrand f dt/du, importance on the clock spread its estimates of
    int 1/(t + 0.1) dt wider than even draws on the clock (0.238 against 0.101); adapted to f dt/du it is tighter."""
    gen = torch.Generator().manual_seed(0)

    def f(t):
        return 1.0 / (t + 0.1)

    importance = TimeSampler("importance", KNOTS[0], KNOTS[-1], bins=16, momentum=0.9, knots=KNOTS)
    for _ in range(200):
        t, _ = importance.sample(512, gen)
        importance.update(t, f(t))
        importance.commit()
    even = TimeSampler("uniform", KNOTS[0], KNOTS[-1], knots=KNOTS)
    spread = {}
    for name, sampler in (("importance", importance), ("even", even)):
        spread[name] = torch.stack([(f(t) * inv).mean() for t, inv in (sampler.sample(512, gen) for _ in range(200))])
    exact = torch.log(torch.tensor((KNOTS[-1] + 0.1) / (KNOTS[0] + 0.1)))
    assert abs(spread["importance"].mean() / exact - 1) < 0.01
    assert spread["importance"].std() < spread["even"].std()
