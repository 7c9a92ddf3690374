import numpy as np
import torch

from amcore.data.simulate import GaussianPath, GrowingGaussian, OrnsteinUhlenbeck
from amcore.models.integrate import integrate_adaptive, integrate_ode, integrate_sde, integrate_weighted, time_grid


def _field(fn):
    return lambda x, t: torch.as_tensor(fn(x.double().numpy(), float(t[0])), dtype=torch.float64)


def test_adaptive_ode_matches_the_exact_flow_with_fewer_steps():
    sim = GaussianPath()
    z = np.random.default_rng(0).standard_normal((300, 2))
    x0, x1 = sim.mean(0) + z @ sim.transform(0).T, sim.mean(1) + z @ sim.transform(1).T
    grid, _ = time_grid(np.array([0.0, 0.5, 1.0]), 1)
    traj, steps = integrate_adaptive(_field(sim.velocity), torch.as_tensor(x0), grid, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(traj[-1], x1, atol=1e-5)
    coarse = integrate_ode(_field(sim.velocity), torch.as_tensor(x0), time_grid(np.array([0.0, 1.0]), steps)[0])
    # RK4 with as many fixed steps as DOPRI accepted is less accurate on this bent path (it cannot adapt).
    assert np.abs(traj[-1] - x1).max() < np.abs(coarse[-1] - x1).max()


def test_euler_maruyama_reproduces_the_ornstein_uhlenbeck_marginal():
    sim = OrnsteinUhlenbeck()
    x0 = torch.as_tensor(sim.sample(0.0, 20000, np.random.default_rng(1)))
    grid, _ = time_grid(np.array([0.0, 1.0]), 200)
    traj = integrate_sde(_field(sim.drift), x0, grid, lambda t: sim.sigma, torch.Generator().manual_seed(0))
    # 20000 particles: standard errors ~0.005 on the mean and the std; Euler bias O(h) = O(5e-3). Margin 0.03.
    np.testing.assert_allclose(traj[-1].mean(0), sim.mean(1.0), atol=0.03)
    np.testing.assert_allclose(traj[-1].std(0), sim.std(1.0), atol=0.03)


def test_weighted_particles_carry_the_mass_of_a_growing_population():
    """Feynman-Kac: E_{p_0}[w_t] = m_t / m_0 and the weighted mean follows mu_t."""
    sim = GrowingGaussian()
    x0 = torch.as_tensor(sim.sample(0.0, 20000, np.random.default_rng(2)))
    grid, _ = time_grid(np.array([0.0, 1.0]), 50)
    x, w = integrate_weighted(_field(sim.velocity), _field(sim.growth_rate), x0, grid)
    ratio = np.exp(sim.log_mass(1.0))
    # The weights' coefficient of variation is ~0.3: the mean of 20000 has relative error ~0.2 %; allow 2 %.
    assert abs(w[-1].mean() / ratio - 1) < 0.02
    weighted_mean = (w[-1][:, None] * x[-1]).sum(0) / w[-1].sum()
    np.testing.assert_allclose(weighted_mean, sim.mean(1.0), atol=0.02)
