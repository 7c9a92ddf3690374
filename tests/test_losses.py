import numpy as np
import pytest
import torch
from torch import nn

from amcore import Snapshots
from amcore.data.simulate import GrowingGaussian, simulate_snapshots
from amcore.models.objective import ObjectiveSpec
from amcore.paths.interpolants import SnapshotPath
from amcore.training.losses import action_loss, laplacian
from amcore.training.timesampling import TimeSampler


def test_exact_and_hutchinson_laplacians_of_a_quadratic():
    q = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    q = q + q.T
    x = torch.randn(4000, 6).requires_grad_(True)
    (grad,) = torch.autograd.grad((0.5 * (x @ q * x).sum(-1)).sum(), x, create_graph=True)
    gen = torch.Generator().manual_seed(1)
    exact = laplacian(grad, x, ObjectiveSpec(laplacian="exact"), gen)
    torch.testing.assert_close(exact, torch.full((4000,), q.trace().item()), rtol=1e-5, atol=1e-4)
    hutch = laplacian(grad, x, ObjectiveSpec(laplacian="hutchinson", probes=2), gen)
    # e^T Q e has variance 2 sum_{i != j} Q_ij^2 per probe; the mean of 4000 x 2 probes is within 4 sigma.
    off = (q**2).sum() - (q.diagonal() ** 2).sum()
    assert abs(hutch.mean() - q.trace()) < 4 * torch.sqrt(2 * off / 8000)


class ShiftedTruth(nn.Module):
    """The analytic uAM potential of GrowingGaussian plus a constant ``delta``."""

    def __init__(self, sim: GrowingGaussian, delta: float) -> None:
        super().__init__()
        self.c = torch.tensor(sim.speed, dtype=torch.float32)
        self.k, self.delta = sim.offset, delta

    def forward(self, x, t):
        return x @ self.c + self.k + self.delta


@pytest.mark.parametrize("time_weight", ["none", "linear"])
def test_unbalanced_loss_is_minimised_by_the_true_potential(time_weight):
    """uAM pins the constant of s: shifting the true potential by +-delta must raise the loss.

    The loss is quadratic in delta with curvature lam * int w m_t dt ~ 0.5, so +-0.3 raises it by ~0.02;
    common random numbers (same seed for each delta) remove most of the Monte Carlo noise.
    """
    sim = GrowingGaussian()
    x, t = simulate_snapshots(sim, list(np.linspace(0, 1, 11)), 1000, seed=0)
    path = SnapshotPath(Snapshots.from_labels(x, t), coupling="ot")
    spec = ObjectiveSpec(kind="uam", growth=sim.growth, time_weight=time_weight)
    losses = {}
    for delta in (-0.3, 0.0, 0.3):
        gen = torch.Generator().manual_seed(0)
        losses[delta] = float(
            action_loss(ShiftedTruth(sim, delta), path, 8000, gen, spec, TimeSampler("stratified", 0, 1)).detach()
        )
    assert losses[0.0] < losses[-0.3] and losses[0.0] < losses[0.3]


@pytest.mark.parametrize("paced", [False, True], ids=["unpaced", "paced"])
@pytest.mark.parametrize("kind", ["am", "uam"])
@pytest.mark.parametrize("interpolation", ["linear", "spline"])
def test_the_pathwise_estimator_has_the_boundary_form_s_expectation(interpolation, kind, paced):
    """Same potential, same path: AM's (uAM's) loss from its boundary form (pathwise 0) and from its pathwise form
    (1) estimate one number (the chain rule along the path's particles, with uAM's mass growing 1.8-fold).
    24 independent batches of 1,000 points each; the means must agree within 4 standard errors of their difference
    (a false alarm about 1 in 16,000). AM's loss is about -0.16 and the standard error about 0.001: a wrong sign in
    either form moves the mean by the loss's size, and the cross term 5 % too large moves it by about 8 standard
    errors; uAM's mass-rate term left out moves it by about 190. Paced (``potentials.clock_pace``, rates 12-fold
    apart), the two forms weigh each time by the inverse pace and the boundary terms by the ends' own: they agree
    only if the pace's derivative is left out of ``d_t s`` and the ends are weighed as the pace says."""
    from amcore.data.simulate import GaussianPath
    from amcore.models.potentials import Potential

    sim = GaussianPath(dim=2) if kind == "am" else GrowingGaussian(dim=2)
    x, t = simulate_snapshots(sim, list(np.linspace(0, 1, 5)), 500, seed=0)
    path = SnapshotPath(Snapshots.from_labels(x, t), coupling="ot", interpolation=interpolation, tension=1.0)
    torch.manual_seed(0)
    clock = {"time_knots": [0.0, 0.05, 0.3, 1.0], "time_levels": [0.0, 0.3, 0.5, 1.0], "paced": True}
    potential = Potential(2, (0.0, 1.0), width=32, depth=2, **(clock if paced else {}))
    samples = {}
    for weight in (0.0, 1.0):
        spec, gen = ObjectiveSpec(kind, pathwise=weight), torch.Generator().manual_seed(int(weight) + 1)
        times = TimeSampler("uniform", 0.0, 1.0)
        samples[weight] = np.array(
            [float(action_loss(potential, path, 1000, gen, spec, times).detach()) for _ in range(24)]
        )
    difference = samples[0.0].mean() - samples[1.0].mean()
    error = np.sqrt(samples[0.0].var(ddof=1) / 24 + samples[1.0].var(ddof=1) / 24)
    assert abs(difference) < 4 * error, (samples[0.0].mean(), samples[1.0].mean(), error)
    assert abs(samples[1.0].mean()) > 20 * error  # the test has power: the loss is far from 0 at this precision


def test_a_paced_flow_matching_field_regresses_in_the_clock_s_time():
    """A paced field is ``gain * p(t) * f`` and its loss the residual divided by ``p``: ``|gain f - u / p|^2``, the
    regression of the path's velocity in clock units (same draws: same generator seed, drawn in the same order)."""
    from amcore.data.simulate import GaussianPath
    from amcore.models.potentials import VectorField, clock_pace
    from amcore.training.losses import fm_loss

    knots, levels = [0.0, 0.02, 0.3, 1.0], [0.0, 0.3, 0.5, 1.0]
    x, t = simulate_snapshots(GaussianPath(dim=2), knots, 200, seed=0)
    path = SnapshotPath(Snapshots.from_labels(x, t), coupling="ot", interpolation="linear")
    torch.manual_seed(0)
    field = VectorField(2, 2, (0.0, 1.0), width=16, depth=2, time_knots=knots, time_levels=levels, paced=True)
    times = TimeSampler("stratified", 0.0, 1.0, knots=knots, levels=levels)
    loss = fm_loss(field, path, 500, torch.Generator().manual_seed(3), times)
    gen = torch.Generator().manual_seed(3)
    draws, _ = times.sample(500, gen)
    xt, target = path.sample_at(draws, gen)
    pace = clock_pace(torch.tensor(knots), torch.tensor(levels), draws)
    f = field.gain * super(VectorField, field).forward(xt, draws)
    assert field.paced and pace.max() / pace.min() > 20
    torch.testing.assert_close(field(xt, draws), pace[:, None] * f)
    torch.testing.assert_close(loss, (f - target / pace[:, None]).pow(2).sum(-1).mean())
