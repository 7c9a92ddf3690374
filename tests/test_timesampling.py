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
