"""The hydrogen simulator (AM's quantum experiment): wavefunction, exact Bohmian velocity, samplers, frames."""

import math

import numpy as np
import pytest
from scipy.special import genlaguerre, sph_harm_y

from amcore.data.hydrogen import Eigenstate, Hydrogen, geometry
from amcore.data.simulate import make_simulator, simulate_snapshots


def _wavefunction_reference(n, l, m, x):  # noqa: E741
    """``R_nl Y_lm`` from SciPy's Laguerre polynomials and spherical harmonics (Condon-Shortley phase)."""
    r = np.linalg.norm(x, axis=1)
    rho = 2 * r / n
    norm = math.sqrt((2 / n) ** 3 * math.factorial(n - l - 1) / (2 * n * math.factorial(n + l)))
    radial = norm * np.exp(-rho / 2) * rho**l * genlaguerre(n - l - 1, 2 * l + 1)(rho)
    return radial * sph_harm_y(l, m, np.arccos(x[:, 2] / r), np.arctan2(x[:, 1], x[:, 0]))


@pytest.mark.parametrize("state", [(3, 2, -1), (2, 1, 0), (3, 1, 1), (4, 3, -2), (3, 0, 0)])
def test_eigenstates_match_scipy_and_their_gradients_are_exact(state):
    """Values against SciPy to rounding; the analytic gradient against central differences of the values, whose
    truncation error is ~h^2 |psi'''| (h = 1e-5 on functions varying over ~1 Bohr radius: ~1e-10) and rounding
    ~1e-16 |psi| / h (~1e-11 relative)."""
    x = 6 * np.random.default_rng(0).standard_normal((300, 3))
    e = Eigenstate(*state)
    value, grad = e.values_and_gradients(geometry(x))
    ref = _wavefunction_reference(*state, x)
    np.testing.assert_allclose(value, ref, atol=1e-13 * np.abs(ref).max())
    h = 1e-5
    fd = np.stack(
        [(e.values_and_gradients(geometry(x + h * d))[0] - e.values_and_gradients(geometry(x - h * d))[0]) / (2 * h)
         for d in np.eye(3)], axis=1,
    )  # fmt: skip
    np.testing.assert_allclose(grad, fd, atol=1e-7 * np.abs(fd).max())


def test_gradient_is_finite_on_the_z_axis():
    """On the axis phi is undefined; the gradient of psi_{2,1,1} ~ (x + i y) there is (1, i, 0) times a real factor."""
    x = np.array([[0.0, 0.0, 1.5], [0.0, 0.0, -2.0]])
    _, grad = Eigenstate(2, 1, 1).values_and_gradients(geometry(x))
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad[:, 1], 1j * grad[:, 0], atol=1e-15)
    np.testing.assert_allclose(grad[:, 2], 0, atol=1e-15)


def test_bohmian_velocity_solves_the_continuity_equation():
    """d_t |psi|^2 + div(|psi|^2 v) = 0 at random points and times, by central differences (h = 1e-4 in x and t,
    on a state varying over ~1 Bohr radius and ~1 / (E_2 - E_3) = 14 atomic units of time: truncation ~h^2 ~ 1e-8
    relative; rounding ~1e-16 / h ~ 1e-12). |psi|^2 v is the smooth flux Im(conj(psi) grad psi): nodes do not matter.
    A velocity off by a factor, a sign or a missing term (e.g. the phi-component of an m != 0 state) leaves
    residuals of the order of the terms themselves."""
    sim = Hydrogen()
    rng = np.random.default_rng(1)
    h = 1e-4
    for t in rng.uniform(0, 200, 3):
        x = np.concatenate([sim.sample(t, 40, rng), 8 * rng.standard_normal((20, 3))])

        def flux(y, t=t):
            return sim.density(y, t)[:, None] * sim.velocity(y, t)

        dt = (sim.density(x, t + h) - sim.density(x, t - h)) / (2 * h)
        div = sum((flux(x + h * d) - flux(x - h * d))[:, i] / (2 * h) for i, d in enumerate(np.eye(3)))
        scale = np.abs(dt).max() + np.abs(div).max()
        assert np.abs(dt + div).max() < 1e-6 * scale, (t, np.abs(dt + div).max(), scale)


def test_velocity_is_the_gradient_of_the_phase():
    """v = grad arg psi (hbar = m = 1): against central differences of arg psi (as Im log of a ratio: no branch cut),
    in the units of ``time_scale`` (the paper's t in [0, 1] over T = 14000)."""
    sim = Hydrogen(time_scale=14000.0)
    rng = np.random.default_rng(2)
    x, t, h = sim.sample(0.3, 200, rng), 0.3, 1e-5
    psi = [sim.wavefunction(x + s * h * d, t)[0] for d in np.eye(3) for s in (1, -1)]
    phase_grad = np.stack([np.angle(psi[2 * i] / psi[2 * i + 1]) / (2 * h) for i in range(3)], 1)
    np.testing.assert_allclose(sim.velocity(x, t), 14000.0 * phase_grad, rtol=1e-5, atol=1e-6 * 14000)


def test_exact_sampler_matches_the_closed_form_mean_radius():
    """<r> = sum_j |a_j|^2 (3 n_j^2 - l_j (l_j + 1)) / 2 (cross terms vanish: different (l, m)), 7.75 for the default
    state at every time. 20,000 draws with std(r) = sqrt(<r^2> - <r>^2) = sqrt(78 - 7.75^2) = 4.23 (<r^2>_nl =
    n^2 (5 n^2 + 1 - 3 l (l + 1)) / 2): standard error 0.030, margin 5 of them."""
    sim = Hydrogen()
    assert len({state[1:] for state in sim.states}) == len(sim.states), "the closed form needs distinct (l, m)"
    pairs = zip(sim.amplitudes, sim.states, strict=True)
    assert sum(a * a * (3 * n**2 - ell * (ell + 1)) / 2 for a, (n, ell, _) in pairs) == pytest.approx(7.75)
    rng = np.random.default_rng(3)
    for t in (0.0, 37.0):
        r = np.linalg.norm(sim.sample(t, 20000, rng), axis=1)
        assert abs(r.mean() - 7.75) < 5 * 4.23 / np.sqrt(20000)
        assert abs((r**2).mean() - 78.0) < 5 * np.sqrt(((r**2 - 78.0) ** 2).mean() / 20000)


def test_sampler_follows_the_rotating_dipole():
    """The interference term of (3,2,-1) and (2,1,0) carries a dipole <x + i y> that turns at E_2 - E_3 = 5/72 per
    atomic unit; its size, by quadrature of the closed-form density on a grid, against the sampler's mean (standard
    error sqrt(21 / 20000) = 0.032, margin 5 of them) at two times a quarter turn apart."""
    sim = Hydrogen()
    g = np.linspace(-40, 40, 61)  # a smooth, fast-decaying density: the trapezoid rule is exact to ~1e-4 here
    grid = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    rng = np.random.default_rng(4)
    for t in (0.0, 0.25 * 2 * np.pi / (5 / 72)):
        density = sim.density(grid, t)
        assert density.sum() * (g[1] - g[0]) ** 3 == pytest.approx(1.0, abs=1e-3)  # the state is normalised
        expected = (grid[:, :2] * density[:, None]).sum(0) / density.sum()
        assert np.linalg.norm(expected) > 1.0  # a dipole to follow
        np.testing.assert_allclose(sim.sample(t, 20000, rng)[:, :2].mean(0), expected, atol=5 * np.sqrt(21 / 20000))


def test_transported_frames_follow_the_density():
    """The paper's frames: exact draws at t = 0 moved by the Bohmian velocity (RK4, 8 steps per 14 atomic units) keep
    following |psi_t|^2: after two frames (a third of a turn of the dipole) their mean matches exact draws within the
    noise of 3,000 and 20,000 points (std 4.6 per coordinate: margin 5 standard errors), and <r> stays 7.75."""
    sim = Hydrogen(frames="transport", initial="exact")
    rng = np.random.default_rng(5)
    frames = sim.snapshots([0.0, 14.0, 28.0], 3000, rng)
    exact = sim.sample(28.0, 20000, rng)
    margin = 5 * 4.6 * np.sqrt(1 / 3000 + 1 / 20000)
    np.testing.assert_allclose(frames[-1].mean(0), exact.mean(0), atol=margin)
    assert abs(frames[0].mean(0)[0] - frames[-1].mean(0)[0]) > 3 * margin  # the dipole moved
    assert abs(np.linalg.norm(frames[-1], axis=1).mean() - 7.75) < 5 * 4.23 / np.sqrt(3000)


def test_metropolis_reaches_the_density():
    """The paper's first frame: random-walk Metropolis from N(0, 50^2 I); 300 steps of std 10 already mix (acceptance
    about a third), <r> within 5 standard errors of 7.75 for 1,000 chains."""
    sim = Hydrogen(mcmc_steps=300)
    x, rate = sim.metropolis(1000, np.random.default_rng(6))
    assert 0.1 < rate < 0.9
    assert abs(np.linalg.norm(x, axis=1).mean() - 7.75) < 5 * 4.23 / np.sqrt(1000)


def test_config_builds_the_simulator_and_its_snapshots():
    """From the config's params (lists, as YAML and the store's attrs give them), frames sorted by time."""
    params = {"states": [[2, 1, 1], [1, 0, 0]], "coefficients": [1, -2], "frames": "independent"}
    sim = make_simulator("hydrogen", params)
    assert sim.states == ((2, 1, 1), (1, 0, 0)) and sim.dim == 3
    np.testing.assert_allclose(np.abs(sim.amplitudes), [1 / np.sqrt(5), 2 / np.sqrt(5)])
    x, t = simulate_snapshots(sim, [0.0, 1.0, 2.0], 50, seed=0)
    assert x.shape == (150, 3) and x.dtype == np.float32 and np.all(np.diff(t) >= 0)
    with pytest.raises(ValueError, match="0 <= l < n"):
        make_simulator("hydrogen", {"states": [[2, 2, 0]], "coefficients": [1]})
    with pytest.raises(ValueError, match="one amplitude per state"):
        make_simulator("hydrogen", {"coefficients": [1]})
