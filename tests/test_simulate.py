import numpy as np
import pytest
import torch

from amcore.data.simulate import GaussianPath, GrowingGaussian, OrnsteinUhlenbeck, simulate_snapshots
from amcore.models.integrate import ode_steps, time_grid


def test_analytic_velocity_carries_each_particle_along_the_path():
    """x_t = m(t) + A(t) z solves dx/dt = v(x, t) exactly: RK4 with the analytic field lands on x_1."""
    sim = GaussianPath()
    z = np.random.default_rng(0).standard_normal((500, 2))
    x0 = sim.mean(0.0) + z @ sim.transform(0.0).T
    x1 = sim.mean(1.0) + z @ sim.transform(1.0).T
    grid, observed = time_grid(np.array([0.0, 0.5, 1.0]), 50)

    def velocity(x, t):
        return torch.as_tensor(sim.velocity(x.double().numpy(), float(t[0])), dtype=torch.float64)

    traj = np.stack([x.numpy() for x in ode_steps(velocity, torch.as_tensor(x0), grid)])
    assert observed.sum() == 3 and grid[observed].tolist() == [0.0, 0.5, 1.0]
    # RK4 global error O(h^4) with h = 0.01 on a field of norm ~10: far below 1e-4.
    np.testing.assert_allclose(traj[-1], x1, atol=1e-4)


def _log_gaussian(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    diff = x - mean
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (np.einsum("nd,nd->n", diff, np.linalg.solve(cov, diff.T).T) + logdet + len(mean) * np.log(2 * np.pi))


def _fd_gradient(f, x: np.ndarray, h: float) -> np.ndarray:
    """Central differences of a scalar or vector function of each row of ``x``: ``(n, [out,] dim)``."""
    cols = []
    for i in range(x.shape[1]):
        step = np.zeros(x.shape[1])
        step[i] = h
        cols.append((f(x + step) - f(x - step)) / (2 * h))
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("dim", [2, 5])
def test_velocity_transports_the_gaussian_path(dim):
    """The claim: v(x, t) = m'(t) + B (x - m(t)) carries p_t = N(m(t), A(t) A(t)^T), i.e. the continuity equation
    d_t p + div(p v) = 0, in log form d_t log p + v . grad log p + div v = 0, holds everywhere.

    Checked with central differences of the Gaussian density built from ``mean`` and ``transform`` alone (not from
    ``rate_matrix``) at random points and times. With h = 1e-4 the truncation error is ~h^2 * |third derivative|
    (~1e-7) and rounding ~1e-16 / h (~1e-12), against terms of size ~10: a wrong B (e.g. a missing factor, or
    the non-symmetric A' A^-1 of a rotating frame) leaves residuals of order 1.
    """
    sim = GaussianPath(dim=dim)
    rng = np.random.default_rng(0)
    h = 1e-4
    for t in rng.uniform(0.05, 0.95, 5):

        def log_p(x, t=t):
            a = sim.transform(t)
            return _log_gaussian(x, sim.mean(t), a @ a.T)

        x = sim.sample(t, 50, rng) + rng.standard_normal((50, dim))  # also off the bulk of p_t
        dt_log_p = (log_p(x, t + h) - log_p(x, t - h)) / (2 * h)
        grad_log_p = _fd_gradient(log_p, x, h)
        div_v = np.trace(_fd_gradient(lambda y, t=t: sim.velocity(y, t), x, h), axis1=1, axis2=2)
        terms = np.abs(dt_log_p) + np.abs(np.einsum("nd,nd->n", sim.velocity(x, t), grad_log_p)) + np.abs(div_v)
        residual = dt_log_p + np.einsum("nd,nd->n", sim.velocity(x, t), grad_log_p) + div_v
        assert np.abs(residual).max() < 1e-5 * max(1.0, terms.max()), (t, np.abs(residual).max())


@pytest.mark.parametrize("dim", [2, 5])
def test_velocity_is_a_gradient_field(dim):
    """Action Matching identifies a gradient field: the Jacobian of v in x, by central differences at random points
    and times, is symmetric (v is affine in x, so differences are exact to rounding, ~1e-16 / h = 1e-11)."""
    sim = GaussianPath(dim=dim)
    rng = np.random.default_rng(1)
    for t in rng.uniform(0, 1, 4):
        x = 3 * rng.standard_normal((20, dim))
        jac = _fd_gradient(lambda y, t=t: sim.velocity(y, t), x, 1e-5)
        np.testing.assert_allclose(jac, np.swapaxes(jac, 1, 2), atol=1e-8)
        assert np.abs(jac - np.swapaxes(jac, 1, 2)).max() < 1e-8 * max(1.0, np.abs(jac).max())


def test_growing_gaussian_solves_its_unbalanced_continuity_equation():
    """The claim of GrowingGaussian: q_t = m_t N(mu_t, diag(scale^2)) with v = c solves d_t q + div(q c) = lam s q,
    i.e. d_t log q + c . grad log q = lam s(x), checked by central differences (same tolerances as above)."""
    sim = GrowingGaussian(dim=3, speed=(1.0, 0.5, -0.7), growth=0.5, offset=0.3, scale=(0.5, 0.8, 0.4))
    rng = np.random.default_rng(2)
    h = 1e-4
    cov = np.diag(np.array([0.5, 0.8, 0.4]) ** 2)
    for t in rng.uniform(0.05, 0.95, 4):

        def log_q(x, t=t):
            return sim.log_mass(t) + _log_gaussian(x, sim.mean(t), cov)

        x = sim.sample(t, 40, rng)
        dt_log_q = (log_q(x, t + h) - log_q(x, t - h)) / (2 * h)
        transport = np.einsum("nd,nd->n", sim.velocity(x, t), _fd_gradient(log_q, x, h))
        np.testing.assert_allclose(dt_log_q + transport, sim.growth_rate(x, t), atol=1e-5)


def test_ornstein_uhlenbeck_marginals_solve_the_fokker_planck_equation():
    """The claim of OrnsteinUhlenbeck: its Gaussian marginals solve d_t p = -div(p b) + sigma^2/2 lap p for the drift
    b = -A (x - mu); in log form d_t log p = -div b - b . grad log p + sigma^2/2 (lap log p + |grad log p|^2)."""
    sim = OrnsteinUhlenbeck(dim=2, sigma=0.8)
    rng = np.random.default_rng(3)
    # log p is quadratic in x: its differences in x are exact to rounding (~1e-16 / h^2 = 1e-10 for the Laplacian);
    # in t the central difference's truncation is ~h_t^2 |d_t^3 log p| (~1e-8 with h_t = 1e-5), rounding ~1e-11.
    h, h_t = 1e-3, 1e-5
    for t in rng.uniform(0.1, 0.9, 4):

        def log_p(x, t=t):
            return _log_gaussian(x, sim.mean(t), np.diag(sim.std(t) ** 2))

        x = sim.sample(t, 40, rng)
        dt_log_p = (log_p(x, t + h_t) - log_p(x, t - h_t)) / (2 * h_t)
        grad = _fd_gradient(log_p, x, h)
        lap = np.trace(_fd_gradient(lambda y, lp=log_p: _fd_gradient(lp, y, h), x, h), axis1=1, axis2=2)
        div_b = np.trace(_fd_gradient(lambda y, t=t: sim.drift(y, t), x, h), axis1=1, axis2=2)
        b = sim.drift(x, t)
        rhs = -div_b - np.einsum("nd,nd->n", b, grad) + 0.5 * sim.sigma**2 * (lap + (grad**2).sum(1))
        # Terms of size ~10; a wrong variance formula (e.g. sigma^2 (1 - e^{-2at}) / a) leaves residuals of order 1.
        np.testing.assert_allclose(dt_log_p, rhs, atol=1e-6 * max(1.0, np.abs(dt_log_p).max()))


def test_snapshot_moments_match_the_path():
    sim = GaussianPath()
    x, t = simulate_snapshots(sim, [0.0, 1.0], 20000, seed=3)
    for tk in (0.0, 1.0):
        xs = x[t == tk].astype(np.float64)
        cov = sim.transform(tk) @ sim.transform(tk).T
        # Standard error of a mean over 20000 samples with unit-order variance is < 0.01: 5 sigma margin.
        np.testing.assert_allclose(xs.mean(0), sim.mean(tk), atol=0.05)
        np.testing.assert_allclose(np.cov(xs.T), cov, atol=0.05)
