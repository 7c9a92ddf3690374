"""The action audit: the kinetic action a flow spends against the piecewise W2 geodesic through the snapshots."""

import numpy as np
import pytest

from amcore.metrics import drift_action, flow_action, geodesic_action


def test_flow_action_of_constant_velocities_is_exact():
    """``x_t = x_0 + v t``: ``int E|v|^2 dt = E|v|^2 (t_b - t_a)`` on each interval, whatever the step grid."""
    rng = np.random.default_rng(0)
    x0, v = rng.standard_normal((200, 3)), rng.standard_normal((200, 3))
    time = np.concatenate([np.linspace(0, 1, 7), np.linspace(1, 3, 12)[1:]])
    x = x0 + v * time[:, None, None]
    speed2 = np.square(v).sum(1).mean()
    np.testing.assert_allclose(flow_action(x, time, np.array([0.0, 1.0, 3.0])), [speed2, 2 * speed2], rtol=1e-10)


def test_weighted_flow_action_uses_the_particles_mass():
    """Two particles, one of weight 3 at speed 1 and one of weight 1 at speed 2: mass-weighted ``(3 + 4) / 4``."""
    time = np.linspace(0, 1, 5)
    x = np.stack([time * 1.0, time * 2.0], axis=1)[..., None]
    weight = np.tile([0.75, 0.25], (5, 1))
    np.testing.assert_allclose(flow_action(x, time, np.array([0.0, 1.0]), weight), [(0.75 + 0.25 * 4)])
    # The same two doubling in mass every step: the action per unit of mass is unchanged (it grew 16-fold with the
    # mass when the weights were taken relative to the first time's: audit 12).
    growing = weight * 2.0 ** np.arange(5)[:, None]
    np.testing.assert_allclose(flow_action(x, time, np.array([0.0, 1.0]), growing), [(0.75 + 0.25 * 4)])


def test_a_nan_particle_makes_its_interval_nan():
    time = np.linspace(0, 2, 5)
    x = np.zeros((5, 3, 2))
    x[3, 1, 0] = np.nan
    action = flow_action(x, time, np.array([0.0, 1.0, 2.0]))
    assert action[0] == 0 and np.isnan(action[1])


def test_geodesic_action_of_a_translation_and_the_bound_on_a_curved_flow():
    """A translated cloud: the OT plan is the translation, ``W2^2 = |c|^2`` exactly. A rigid quarter turn of a ring
    of cells: the flow's action (the arc) exceeds the geodesic's (at most the chord), as Benamou-Brenier says."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((100, 2))
    c = np.array([3.0, -1.0])
    translated = geodesic_action([a, a + c], np.array([0.0, 2.0]))[0]
    np.testing.assert_allclose(translated, [np.square(c).sum() / 2], rtol=1e-9)
    angle = np.linspace(0, np.pi / 2, 41)
    ring = rng.uniform(0, 2 * np.pi, 60)
    x = 5 * np.stack([np.cos(ring[None] + angle[:, None]), np.sin(ring[None] + angle[:, None])], -1)
    flow = flow_action(x, angle, np.array([0.0, np.pi / 2]))[0]
    geodesic = geodesic_action([x[0], x[-1]], np.array([0.0, np.pi / 2]))[0][0]
    assert geodesic < flow
    np.testing.assert_allclose(flow, 25.0 * np.pi / 2, rtol=1e-3)  # |v| = 5 for a time pi / 2, to O(step^2)


def test_the_geodesic_terms_sampling_sd_is_what_redraws_show():
    """Audit 26: on the Gaussian path a term read 3.50 against the laws' 2.79, 3.4 times the bias two samples of
    one law show: between different laws the sampling moves a term at first order, by the means of its Kantorovich
    potentials. Over 80 redraws of 400 cells at t = 0.7 and 0.8 (the laws' term: Bures' closed form), the sd the
    potentials give is the spread of the terms (within 20 %: the sd of a sample sd of 80 draws is 8 %), and +-2 sd
    holds the laws' term at least 90 % of the time (95 % expected; 90 % is 2.5 binomial sd below). The sum's sd
    counts a time's cells in its two terms: for one cloud translated at a constant speed they cancel at the inner
    times, and the sum moves only with the first and last time's cells, as much as one term does."""
    from scipy.linalg import sqrtm

    from amcore.data.simulate import GaussianPath

    path, knots = GaussianPath(), np.array([0.7, 0.8])
    cov = [path.transform(t) @ path.transform(t).T for t in knots]
    root = np.real(sqrtm(cov[0]))
    bures = np.trace(cov[0] + cov[1] - 2 * np.real(sqrtm(root @ cov[1] @ root)))
    truth = (np.square(path.mean(0.8) - path.mean(0.7)).sum() + bures) / 0.1
    rng = np.random.default_rng(3)
    draws = [geodesic_action([path.sample(t, 400, rng) for t in knots], knots) for _ in range(80)]
    terms, sds = np.array([d[0][0] for d in draws]), np.array([d[1][0] for d in draws])
    assert 0.8 < sds.mean() / terms.std(ddof=1) < 1.25
    assert np.mean(np.abs(terms - truth) < 2 * sds) >= 0.9
    cloud = rng.standard_normal((400, 2))
    _, each, total = geodesic_action([cloud + [t, 0.0] for t in range(4)], np.arange(4.0))
    np.testing.assert_allclose([*each[1:], total], each[0], rtol=1e-6)


def test_escaped_rows_counts_cells_beyond_three_times_the_data_box():
    """The observed box is [0, 1]^2, widened to [-1, 2]^2: a cell at 1.9 is in, 2.1 or -1.5 is out, NaN is for
    ``lost_rows``."""
    from amcore.metrics import escaped_rows

    observed = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.2]])
    predicted = np.array([[1.9, -0.9], [2.1, 0.5], [0.5, -1.5], [np.nan, 0.0], [0.3, 0.3]])
    assert escaped_rows(predicted, observed) == 2


def test_the_data_a_cell_can_leave_is_every_observed_time():
    """A population that moves 10 of its spreads from t = 0 to 1: copy_prev's prediction (the cells of t = 0) lies
    outside three times the held-out time's box but inside the data's; a cell flung 50 spreads away is flagged
    (audit 5: copy_prev's 300 observed cells were all flagged as having left the data)."""
    from amcore import Snapshots
    from amcore.evaluation.evaluate import data_box, distances

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 10, rng.normal(size=(100, 2)) + 20])
    snaps = Snapshots.from_labels(x, np.repeat([0.0, 1.0, 2.0], 100))
    previous, held_out = np.asarray(snaps.snapshot(0)), np.asarray(snaps.snapshot(1))
    assert distances(previous, held_out, None, box=None)["escaped"] > 50  # 63 of 100
    assert distances(previous, held_out, None, box=data_box(snaps))["escaped"] == 0
    flung = previous.copy()
    flung[0] += 70
    assert distances(flung, held_out, None, box=data_box(snaps))["escaped"] == 1


def test_the_audit_of_the_true_flow_matches_the_analytic_action(tmp_path):
    """Cells pushed by the true velocity of the built-in Gaussian path (RK4, 40 steps per interval): their action
    is the process's ``int E|v|^2 dt`` (Simpson on fresh samples) to Monte Carlo error (2,000 cells, 4,000 samples:
    a few % on a speed of order 10; margin 5 %), and the geodesic through the snapshots spends no more. The plot is
    written."""
    from amcore import Snapshots
    from amcore.data.simulate import GaussianPath
    from amcore.evaluation import plots
    from amcore.evaluation.evaluate import action_audit

    sim = GaussianPath()
    rng = np.random.default_rng(0)
    knots = np.array([0.0, 0.5, 1.0])
    snaps = Snapshots.from_labels(
        np.concatenate([sim.sample(t, 2000, rng) for t in knots]).astype(np.float32), np.repeat(knots, 2000)
    )
    time = np.linspace(0.0, 1.0, 81)
    x = [sim.sample(0.0, 2000, rng)]
    for a, b in zip(time[:-1], time[1:], strict=True):
        h, y = b - a, x[-1]
        k1 = sim.velocity(y, a)
        k2 = sim.velocity(y + h / 2 * k1, a + h / 2)
        k3 = sim.velocity(y + h / 2 * k2, a + h / 2)
        k4 = sim.velocity(y + h * k3, b)
        x.append(y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4))
    audit = action_audit(np.stack(x), time, None, snaps, 2000, 0, sim, 4000)
    for name in ("0-0.5", "0.5-1"):
        np.testing.assert_allclose(audit["action_flow"][name], audit["action_truth"][name], rtol=0.05)
        assert audit["action_geodesic"][name] <= 1.05 * audit["action_truth"][name]
    assert 0.9 < audit["action_ratio"] < 1.3
    assert audit["action_noise"] < 0.1, "2-d, 2000 cells, times 0.5 apart: the geodesic is the flow's, not noise"
    plots.action_audit(tmp_path / "action.png", audit, "truth")
    assert (tmp_path / "action.png").stat().st_size > 0


def test_overflowed_weights_and_constant_features_give_no_false_number():
    """uAM weights that overflowed make their interval NaN (never an infinite action reported as a number); a
    feature that is constant in the observed cells does not flag cells that moved off it by a hair."""
    from amcore.metrics import escaped_rows

    time = np.linspace(0, 1, 3)
    x = np.stack([time, 2 * time], axis=1)[..., None]
    weight = np.array([[1.0, 1.0], [np.inf, 1.0], [np.inf, 1.0]])
    assert np.isnan(flow_action(x, time, np.array([0.0, 1.0]), weight)[0])
    observed = np.array([[0.0, 5.0], [1.0, 5.0], [0.4, 5.0]])
    assert escaped_rows(np.array([[0.5, 5.001], [0.5, 7.5]]), observed) == 1
    # Observed cells that all coincide give no scale: a prediction a hair or a mile off is not judged by a box.
    assert escaped_rows(np.array([[0.5, 5.001], [9.0, 7.5]]), np.ones((4, 2))) == 0


def test_the_action_read_in_blocks_of_steps_is_the_action_read_whole():
    """Evaluate reads trajectories a block of steps at a time (bounded memory at any size): block edges must not
    drop or double a step, weighted or not. Sums of the same float64 terms: equal to rounding."""
    rng = np.random.default_rng(3)
    time = np.sort(np.r_[0.0, rng.uniform(0, 2, 23), 1.0, 2.0])
    x = np.cumsum(rng.normal(size=(len(time), 40, 3)), axis=0)
    weight = np.exp(rng.normal(scale=0.1, size=(len(time), 40)))
    knots = np.array([0.0, 1.0, 2.0])
    for w in (None, weight):
        whole = flow_action(x, time, knots, w)
        for block_values in (1, 120, 121, 1000):
            np.testing.assert_allclose(flow_action(x, time, knots, w, block_values), whole, rtol=1e-12)


def test_the_audit_says_when_the_geodesic_action_is_sampling_noise():
    """Forty times 0.025 apart of a law that barely moves, 20 dimensions, 300 cells each: the exact W2 between
    neighbouring snapshots is almost all finite-sample noise (W2 between two samples of one law in 20-d is of the
    order of the spread), so the geodesic action measures the noise and ``action_noise`` says so (the halves are
    smaller than the snapshots, so it overestimates: above 0.5 here, below 0.1 in the test above)."""
    from amcore import Snapshots
    from amcore.evaluation.evaluate import action_audit

    rng = np.random.default_rng(1)
    knots = np.linspace(0.0, 1.0, 40)
    x = np.concatenate([rng.standard_normal((300, 20)) + 0.1 * t for t in knots]).astype(np.float32)
    snaps = Snapshots.from_labels(x, np.repeat(knots, 300))
    still = np.repeat(np.asarray(snaps.snapshot(0))[None, :50], len(knots), axis=0)
    audit = action_audit(still, knots, None, snaps, 2000, 0)
    assert audit["action_noise"] > 0.5


def test_evaluate_scores_lazy_weighted_trajectories_as_loaded_ones(tmp_path):
    """evaluate opens trajectories lazily (a time, or a block of steps, read at a time): uAM's weighted particles
    read from a real zarr store that way give every distance and the action audit exactly as the loaded arrays."""
    from amcore import Snapshots
    from amcore.evaluation.evaluate import action_audit, score_marginals
    from amcore.models.integrate import read_trajectories, time_grid, write_trajectories

    rng = np.random.default_rng(4)
    knots = np.array([0.0, 0.5, 1.0])
    snaps = Snapshots.from_labels(rng.normal(size=(240, 2)).astype(np.float32), np.repeat(knots, 80))
    grid, observed = time_grid(knots, 4)
    x = np.cumsum(rng.normal(scale=0.1, size=(len(grid), 80, 2)), axis=0).astype(np.float32)
    weight = np.exp(rng.normal(scale=0.2, size=(len(grid), 80))).astype(np.float32)
    write_trajectories(tmp_path / "t.zarr", x, grid, observed, weight)
    lazy, loaded = read_trajectories(tmp_path / "t.zarr", load=False), read_trajectories(tmp_path / "t.zarr")
    steps = np.flatnonzero(lazy["observed"].values)
    scores = [score_marginals(snaps, t["x"][steps], t["weight"][steps], max_exact_size=50) for t in (lazy, loaded)]
    assert scores[0] == scores[1] and scores[0]["mass_rel_error_mean"] > 0
    audits = [action_audit(t["x"], grid, t["weight"], snaps, 50, 0) for t in (lazy, loaded)]
    assert audits[0] == audits[1]


def test_an_sdes_action_is_its_drifts_energy_not_its_brownian_increments():
    """Brownian particles with a drift of (1, 0) and sigma 1 in 2-d (audit 9): finite differences give
    ``1 + sigma^2 d / dt`` a unit of time, growing as the steps shrink (21 at 10 steps, 81 at 40); the drift's
    energy is 1 at any step count."""
    rng = np.random.default_rng(3)
    for steps in (10, 40):
        time = np.linspace(0.0, 1.0, steps + 1)
        dt = np.diff(time)[:, None, None]
        moves = np.array([1.0, 0.0]) * dt + np.sqrt(dt) * rng.standard_normal((steps, 2000, 2))
        x = np.concatenate([np.zeros((1, 2000, 2)), np.cumsum(moves, axis=0)])
        knots = np.array([0.0, 1.0])
        drift = drift_action(x, time, knots, lambda cells, t: np.tile([1.0, 0.0], (len(cells), 1)))
        np.testing.assert_allclose(drift, [1.0], rtol=1e-12)
        np.testing.assert_allclose(flow_action(x, time, knots), [1 + 2 * steps], rtol=0.05)


def test_eams_noise_is_reported_beside_its_drifts_energy(tmp_path):
    """sigma 0.5 in 2-d: the noise adds sigma^2 d = 0.5 of squared displacement per unit of time, 0.25 on each half
    (what the drift's energy is to be read against: audit 9 asked how the motion splits)."""
    from amcore import Snapshots, TrainConfig, load, train
    from amcore.evaluation.evaluate import diffusion_energy

    t = np.repeat([0.0, 0.5, 1.0], 30)
    x = np.random.default_rng(0).normal(size=(90, 2)) + t[:, None]
    cfg = TrainConfig(objective="eam", sigma=0.5, steps=5, width=8, depth=1, threads=1, log_every=5)
    train(Snapshots.from_labels(x, t), cfg, tmp_path / "m.pt")
    noise = diffusion_energy(load(tmp_path / "m.pt"), np.array([0.0, 0.5, 1.0]))
    assert noise["action_diffusion"] == pytest.approx({"0-0.5": 0.25, "0.5-1": 0.25})
    assert noise["action_diffusion_total"] == pytest.approx(0.5)


def test_the_drifts_energy_is_read_on_a_seeded_subset_of_particles():
    """10^6 particles over hundreds of steps would cost the network 10^8 evaluations: at most ``max_particles`` are
    read, the same ones at every step; with b = -x on standard normal cells the energy is E|x|^2 = d = 2 a unit of
    time, within 4 standard errors of 2,000 draws (sd of |x|^2 is 2: se 0.045)."""
    rng = np.random.default_rng(5)
    time = np.linspace(0.0, 1.0, 6)
    x = rng.standard_normal((6, 50_000, 2))
    seen = []

    def drift(cells, t):
        seen.append(len(cells))
        return -cells

    action = drift_action(x, time, np.array([0.0, 1.0]), drift, max_particles=2000, seed=1)
    assert set(seen) == {2000} and abs(action[0] - 2.0) < 4 * 0.045
    again = drift_action(x, time, np.array([0.0, 1.0]), lambda cells, t: -cells, max_particles=2000, seed=1)
    np.testing.assert_array_equal(again, action)  # seeded


def test_the_geodesic_noise_is_drawn_from_the_sparser_time():
    """20 cells then 2,000 of one law: the geodesic's W2^2 is sampling noise of the 20, yet the noise was read on
    two halves of the 2,000 and called it a tenth or so (audit 15). Drawn from the sparser time, sized as the other,
    the noise is most of the geodesic, and the ratio is not read as a flow's detour or shortfall."""
    from amcore import Snapshots
    from amcore.evaluation.evaluate import action_audit

    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(2020, 2)), np.repeat([0.0, 1.0], [20, 2000])
    snaps = Snapshots.from_labels(x, t)
    still = np.repeat(np.asarray(snaps.snapshot(0))[None], 3, axis=0)  # the first time's cells, unmoved
    audit = action_audit(still, np.array([0.0, 0.5, 1.0]), None, snaps, 2000, 0)
    assert audit["action_noise"] > 0.5, audit


def test_intervals_of_negative_times_are_named_readably():
    from amcore.evaluation.evaluate import interval_name

    assert [interval_name(a, b) for a, b in ((-2.5, -1.0), (-1.0, 0.0), (0.0, 0.75))] == [
        "-2.5 to -1", "-1 to 0", "0-0.75"
    ]  # fmt: skip


def test_intervals_and_times_are_written_in_time_order(tmp_path):
    """As text the interval 12-48 came before 2-4 in metrics.json (audit 76: hours 0, 0.5, ..., 48), where the same
    data in days were in order: the order of a file's keys hung on the time unit."""
    import json

    from amcore.cli import _write_json
    from amcore.evaluation.evaluate import interval_name

    times = [-1.0, 0.0, 0.5, 1.0, 2.0, 4.0, 12.0, 48.0, 1e-5 + 48]
    names = [interval_name(a, b) for a, b in zip(times[:-1], times[1:], strict=True)]
    _write_json(tmp_path / "m.json", {"action_flow": dict.fromkeys(sorted(names), 0.0), "w1": {"48": 1, "12": 2}})
    written = json.loads((tmp_path / "m.json").read_text())
    assert list(written["action_flow"]) == names and list(written["w1"]) == ["12", "48"]
