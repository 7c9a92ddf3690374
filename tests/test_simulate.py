import numpy as np
import torch

from amcore.integrate import integrate_ode, time_grid
from amcore.simulate import GaussianPath, simulate_snapshots


def test_analytic_velocity_carries_each_particle_along_the_path():
    """x_t = m(t) + A(t) z solves dx/dt = v(x, t) exactly: RK4 with the analytic field lands on x_1."""
    sim = GaussianPath()
    z = np.random.default_rng(0).standard_normal((500, 2))
    x0 = sim.mean(0.0) + z @ sim.transform(0.0).T
    x1 = sim.mean(1.0) + z @ sim.transform(1.0).T
    grid, observed = time_grid(np.array([0.0, 0.5, 1.0]), 50)

    def velocity(x, t):
        return torch.as_tensor(sim.velocity(x.double().numpy(), float(t[0])), dtype=torch.float64)

    traj = integrate_ode(velocity, torch.as_tensor(x0), grid)
    assert observed.sum() == 3 and grid[observed].tolist() == [0.0, 0.5, 1.0]
    # RK4 global error O(h^4) with h = 0.01 on a field of norm ~10: far below 1e-4.
    np.testing.assert_allclose(traj[-1], x1, atol=1e-4)


def test_velocity_is_a_gradient_field():
    """Action Matching identifies a gradient field: the Jacobian of v in x must be symmetric."""
    for dim in (2, 5):
        b = GaussianPath(dim=dim).rate_matrix()
        np.testing.assert_allclose(b, b.T, atol=1e-12)


def test_snapshot_moments_match_the_path():
    sim = GaussianPath()
    x, t = simulate_snapshots(sim, [0.0, 1.0], 20000, seed=3)
    for tk in (0.0, 1.0):
        xs = x[t == tk].astype(np.float64)
        cov = sim.transform(tk) @ sim.transform(tk).T
        # Standard error of a mean over 20000 samples with unit-order variance is < 0.01: 5 sigma margin.
        np.testing.assert_allclose(xs.mean(0), sim.mean(tk), atol=0.05)
        np.testing.assert_allclose(np.cov(xs.T), cov, atol=0.05)
