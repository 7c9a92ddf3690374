import warnings

import numpy as np
import pytest
import torch

import amcore
from amcore.data.simulate import GaussianPath, GrowingGaussian, OrnsteinUhlenbeck
from amcore.models.integrate import (
    ParticleNoise,
    adaptive_steps,
    euler_steps,
    ode_steps,
    sde_steps,
    time_grid,
    weighted_steps,
)


def _field(fn):
    return lambda x, t: torch.as_tensor(fn(x.double().numpy(), float(t[0])), dtype=torch.float64)


def collect(steps) -> np.ndarray:
    """An integrator's positions at every grid time, ``(steps, particles, features)``."""
    return np.stack([x.numpy() for x in steps])


def test_adaptive_ode_matches_the_exact_flow_with_fewer_steps():
    sim = GaussianPath()
    z = np.random.default_rng(0).standard_normal((300, 2))
    x0, x1 = sim.mean(0) + z @ sim.transform(0).T, sim.mean(1) + z @ sim.transform(1).T
    grid, _ = time_grid(np.array([0.0, 0.5, 1.0]), 1)
    stats = {}
    traj = collect(adaptive_steps(_field(sim.velocity), torch.as_tensor(x0), grid, rtol=1e-7, atol=1e-7, stats=stats))
    np.testing.assert_allclose(traj[-1], x1, atol=1e-5)
    coarse_grid = time_grid(np.array([0.0, 1.0]), stats["accepted_steps"])[0]
    coarse = collect(ode_steps(_field(sim.velocity), torch.as_tensor(x0), coarse_grid))
    # RK4 with as many fixed steps as DOPRI accepted is less accurate on this bent path (it cannot adapt).
    assert np.abs(traj[-1] - x1).max() < np.abs(coarse[-1] - x1).max()


def test_euler_pushes_are_first_order():
    """Forward Euler (the AM paper's pushes): twice the steps, about half the error at t = 1 on the Gaussian path."""
    sim = GaussianPath()
    z = np.random.default_rng(0).standard_normal((200, 2))
    x0, x1 = sim.mean(0) + z @ sim.transform(0).T, sim.mean(1) + z @ sim.transform(1).T
    errors = []
    for steps in (50, 100):
        traj = collect(
            euler_steps(_field(sim.velocity), torch.as_tensor(x0), time_grid(np.array([0.0, 1.0]), steps)[0])
        )
        assert traj.shape == (steps + 1, 200, 2)
        np.testing.assert_allclose(traj[0], x0, rtol=1e-6)
        errors.append(np.abs(traj[-1] - x1).max())
    assert 1.6 < errors[0] / errors[1] < 2.4


def test_euler_maruyama_reproduces_the_ornstein_uhlenbeck_marginal():
    sim = OrnsteinUhlenbeck()
    x0 = torch.as_tensor(sim.sample(0.0, 20000, np.random.default_rng(1)))
    grid, _ = time_grid(np.array([0.0, 1.0]), 200)
    noise = ParticleNoise(0, x0.shape[1])  # as the pipeline draws it: keyed by time and particle
    traj = collect(sde_steps(_field(sim.drift), x0, grid, lambda t: sim.sigma, lambda t: noise(t, 0, len(x0))))
    # 20000 particles: standard errors ~0.005 on the mean and the std; Euler bias O(h) = O(5e-3). Margin 0.03.
    np.testing.assert_allclose(traj[-1].mean(0), sim.mean(1.0), atol=0.03)
    np.testing.assert_allclose(traj[-1].std(0), sim.std(1.0), atol=0.03)


def test_weighted_particles_carry_the_mass_of_a_growing_population():
    """Feynman-Kac: E_{p_0}[w_t] = m_t / m_0 and the weighted mean follows mu_t."""
    sim = GrowingGaussian()
    x0 = torch.as_tensor(sim.sample(0.0, 20000, np.random.default_rng(2)))
    grid, _ = time_grid(np.array([0.0, 1.0]), 50)
    steps = list(weighted_steps(_field(sim.velocity), _field(sim.growth_rate), x0, grid))
    x, w = np.stack([x.numpy() for x, _ in steps]), np.stack([w.numpy() for _, w in steps])
    ratio = np.exp(sim.log_mass(1.0))
    # The weights' coefficient of variation is ~0.3: the mean of 20000 has relative error ~0.2 %; allow 2 %.
    assert abs(w[-1].mean() / ratio - 1) < 0.02
    weighted_mean = (w[-1][:, None] * x[-1]).sum(0) / w[-1].sum()
    np.testing.assert_allclose(weighted_mean, sim.mean(1.0), atol=0.02)


def _untrained(objective: str, dim: int = 3, seed: int = 0):
    """A freshly initialised network as a TrainedModel: pushes depend on the field, not on its training."""
    from amcore.models.trained import TrainedModel, build_network

    torch.manual_seed(seed)
    kind = {"kind": "field", "out_dim": dim} if objective == "fm" else {"kind": "potential", "head": "scalar"}
    args = {**kind, "dim": dim, "t_range": [0.0, 1.0], "width": 16, "depth": 2, "activation": "silu",
            "time_frequencies": 2}  # fmt: skip
    config = {"sigma": 0.4, "sigma_final": 0.1, "growth": 1.5}
    return TrainedModel(build_network(args), objective, config, args)


class _Spy:
    """An ``out`` array that records the rows of each write (and keeps the values)."""

    def __init__(self, shape):
        self.values, self.writes = np.full(shape, np.nan, dtype=np.float32), []

    def __setitem__(self, key, values):
        self.writes.append((key[0], key[1].start, key[1].stop))
        self.values[key] = values


@pytest.mark.parametrize(
    "objective, method", [("am", "rk4"), ("am", "euler"), ("fm", "rk4"), ("eam", "sde"), ("uam", "weighted")]
)
def test_pushing_in_batches_gives_every_cell_its_one_batch_result(objective, method, monkeypatch):
    """Each cell's ODE, weighted ODE or SDE path does not depend on the others: batches of 97 (and, for the SDE's
    noise, keyed blocks of 64 cells that batches straddle) equal one batch of all 1000 cells to float32 rounding
    of the field (matrix products of other shapes sum in another order: 1e-5 relative on values of order 1)."""
    monkeypatch.setattr(ParticleNoise, "BLOCK", 64)
    model = _untrained(objective)
    x0 = np.random.default_rng(4).normal(size=(1000, 3)).astype(np.float32)
    one = model.trajectories(x0, [0.0, 0.4, 1.0], 5, method, seed=7, batch_size=1000)
    spy_x = _Spy(one.x.shape)
    spy_w = _Spy(one.weight.shape) if one.weight is not None else None
    batched = model.trajectories(x0, [0.0, 0.4, 1.0], 5, method, seed=7, batch_size=97, out=(spy_x, spy_w))
    assert batched.method == method
    np.testing.assert_allclose(spy_x.values, one.x, rtol=1e-5, atol=1e-5)
    if spy_w is not None:
        np.testing.assert_allclose(spy_w.values, one.weight, rtol=1e-5)
    # Memory: each write is one step of at most one batch, each (step, cell) written once.
    assert all(stop - start <= 97 for _, start, stop in spy_x.writes)
    assert len(spy_x.writes) == len(one.time) * 11 and len(set(spy_x.writes)) == len(spy_x.writes)
    if method == "sde":
        other = model.trajectories(x0, [0.0, 0.4, 1.0], 5, method, seed=8, batch_size=97)
        assert not np.allclose(other.x[-1], one.x[-1])  # the seed matters


def test_adaptive_pushes_in_batches_stay_within_the_tolerance():
    """dopri5 picks one step size per batch: batches of 100 move from one batch of 600 within its tolerance."""
    model = _untrained("am")
    x0 = np.random.default_rng(5).normal(size=(600, 3)).astype(np.float32)
    one = model.trajectories(x0, [0.0, 1.0], 2, "dopri5", batch_size=600)
    batched = model.trajectories(x0, [0.0, 1.0], 2, "dopri5", batch_size=100)
    np.testing.assert_allclose(batched.x, one.x, atol=1e-4)  # rtol = atol = 1e-5 per step, a few dozen steps
    assert batched.info["accepted_steps"] <= one.info["accepted_steps"]  # the worst batch is at most the whole


def test_the_integrate_command_writes_trajectories_batch_by_batch_to_zarr(tmp_path):
    """``amcore integrate`` with batches of 64: the store equals the in-memory push of the same cells; the
    held-out prediction too; a zarr chunk holds one step of one batch."""
    import json

    from amcore.cli import main
    from amcore.data.prepare import build_snapshots
    from amcore.data.store import read_store, write_store
    from amcore.models.integrate import read_trajectories
    from amcore.training.train import TrainConfig, train

    spec = {"source": "simulate", "simulator": "growing_gaussian", "times": [0.0, 0.5, 1.0], "n_per_time": 300,
            "seed": 0}  # fmt: skip
    write_store(tmp_path / "store.zarr", build_snapshots(spec, holdout_times=[0.5]))
    snaps = read_store(tmp_path / "store.zarr")
    cfg = TrainConfig(objective="uam", steps=5, batch_size=32, width=8, depth=1, log_every=5)
    train(snaps, cfg, tmp_path / "m.pt", tmp_path / "m.csv")
    params = {"steps_per_interval": 4, "batch_size": 64}
    argv = ["integrate", "--store", str(tmp_path / "store.zarr"), "--checkpoint", str(tmp_path / "m.pt"),
            "--params", json.dumps(params), "--out", str(tmp_path / "traj.zarr")]  # fmt: skip
    assert main(argv) == 0
    traj = read_trajectories(tmp_path / "traj.zarr")
    model = amcore.load(tmp_path / "m.pt")
    expected = model.trajectories(snaps.snapshot(0), snaps.t_values, 4)
    np.testing.assert_allclose(traj["x"].values, expected.x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(traj["weight"].values, expected.weight, rtol=1e-5)
    np.testing.assert_allclose(traj["time"].values, expected.time)
    assert np.flatnonzero(traj["observed"].values).tolist() == [0, 4, 8]
    assert traj.attrs["method"] == "weighted"  # how they moved (evaluate names an SDE's sigma where one runs off)
    cells, weights = model.push(snaps.snapshot(0), 0.0, 0.5, 4, with_weights=True)
    np.testing.assert_allclose(traj["holdout_x"].values, cells, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(traj["holdout_weight"].values, weights / weights.sum(), rtol=1e-5)
    chunks = json.loads((tmp_path / "traj.zarr" / "x" / "zarr.json").read_text())["chunk_grid"]["configuration"]
    assert chunks["chunk_shape"] == [1, 64, 2]
    # Audits 50, 52: opened as the README said, Snakemake's timestamp file in the folder made zarr warn each time;
    # amcore.read_trajectories opens it without a word
    (tmp_path / "traj.zarr" / ".snakemake_timestamp").touch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(amcore.read_trajectories(tmp_path / "traj.zarr")["x"].values, traj["x"].values)


def test_a_push_whose_weights_rest_on_few_particles_warns():
    """Audit 57: a uAM push from the API gave 117 times the mass where 32 was right, carried by 1 % of the particles,
    and said nothing (the pipeline flags it). Growth rates that spread the weights over orders of magnitude warn
    (the weights' effective sample size under 10 % of the particles); nearly even weights do not."""
    import warnings

    x0 = np.random.default_rng(0).standard_normal((400, 3)).astype(np.float32)
    steep = _untrained("uam")
    steep.growth = 100.0  # the rate is 100 times the network's output: log-weights spread by tens
    with pytest.warns(UserWarning, match=r"at t = 1 the weights rest on \d+\.\d% of the particles"):
        steep.push(x0, 0.0, 1.0, steps=4, with_weights=True)
    with pytest.warns(UserWarning, match="the weights rest on"):
        steep.trajectories(x0, [0.0, 1.0], 4)
    steep.growth = 1e6  # weights beyond float32: a failed push, named as one, never as few carriers
    with pytest.warns(UserWarning, match=r"the weights of \d+ particles are NaN or inf: the push failed"):
        steep.push(x0, 0.0, 1.0, steps=4, with_weights=True)
    flat = _untrained("uam")
    flat.growth = 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flat.push(x0, 0.0, 1.0, steps=4, with_weights=True)
