"""The trained model as a Python object: numpy in, numpy out, the fields its objective defines, and pushes."""

import warnings

import numpy as np
import pytest
import torch

import amcore
from amcore import Snapshots, TrainConfig, train
from amcore.data.simulate import GaussianPath, GrowingGaussian, simulate_snapshots


def _trained(tmp_path, objective: str, simulator=None, **extra) -> amcore.TrainedModel:
    sim = simulator or GaussianPath()
    x, t = simulate_snapshots(sim, [0.0, 0.5, 1.0], 300, seed=0)
    cfg = TrainConfig(objective=objective, steps=60, batch_size=64, width=16, depth=2, log_every=20, **extra)
    train(Snapshots.from_labels(x, t), cfg, tmp_path / f"{objective}.pt", tmp_path / f"{objective}.csv")
    return amcore.load(tmp_path / f"{objective}.pt")


def test_am_model_answers_in_numpy_whatever_it_is_given(tmp_path):
    model = _trained(tmp_path, "am")
    assert model.objective == "am" and model.dim == 2 and model.t_range == (0.0, 1.0)
    assert model.feature_names == ["x0", "x1"] and model.info["step"] == 60
    x = np.random.default_rng(0).normal(size=(7, 2))
    v = model.velocity(x, 0.3)
    assert isinstance(v, np.ndarray) and v.shape == (7, 2) and v.dtype == np.float32
    np.testing.assert_array_equal(v, model.velocity(torch.as_tensor(x), torch.full((7,), 0.3)))
    np.testing.assert_array_equal(v, model.velocity(x.tolist(), np.full(7, 0.3)))
    # The velocity is the gradient of the potential (central differences, float32 rounding on s of order 1).
    h, s = 1e-2, model.potential
    grad0 = (s(x + [h, 0], 0.3) - s(x - [h, 0], 0.3)) / (2 * h)
    np.testing.assert_allclose(v[:, 0], grad0, atol=5e-3)
    with pytest.raises(ValueError, match="no drift"):
        model.drift(x, 0.3)
    with pytest.raises(ValueError, match=r"x must be \(cells, 2\)"):
        model.velocity(x[:, :1], 0.3)


def test_times_it_was_not_trained_on_are_refused_or_flagged(tmp_path):
    model = _trained(tmp_path, "am")
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"one per cell \(3\), got shape \(2,\)"):
        model.velocity(x, np.zeros(2))
    with pytest.raises(ValueError, match="t must be finite"):
        model.potential(x, float("nan"))
    with pytest.raises(ValueError, match="t must be a real number or one per cell, got <U2"):
        model.velocity(x, "d1")
    with pytest.raises(ValueError, match="t must be finite"):
        model.trajectories(x, [0.0, np.inf])
    # Outside [0, 1] the network extrapolates: a warning that names the caller's line and the trained range.
    with pytest.warns(UserWarning, match=r"trained on, \[0, 1\]") as caught:
        model.push(x, 0.0, 1.5)
    assert caught[0].filename == __file__
    with pytest.warns(UserWarning, match=r"t -0.5 leaves the time range"):
        model.velocity(x, -0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the ends of the range themselves are inside
        model.trajectories(x, [0.0, 1.0])


def test_push_is_the_last_step_of_the_trajectories_and_moves_by_the_velocity(tmp_path):
    model = _trained(tmp_path, "am")
    x0 = np.random.default_rng(1).normal(size=(50, 2))
    traj = model.trajectories(x0, [0.0, 0.5, 1.0], steps_per_interval=10)
    assert traj.x.shape == (21, 50, 2) and traj.method == "rk4" and traj.weight is None
    np.testing.assert_allclose(traj.time[[0, 10, 20]], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(model.push(x0, 0.0, 1.0, steps=20), traj.x[-1], atol=1e-5)
    # A tiny step moves each cell by dt * v (first order).
    dt = 1e-3
    np.testing.assert_allclose((model.push(x0, 0.2, 0.2 + dt, steps=1) - x0) / dt, model.velocity(x0, 0.2), atol=1e-2)


def test_a_long_push_says_how_far_it_has_come_and_a_short_one_is_silent(tmp_path, capfd):
    model = _trained(tmp_path, "am")
    x0 = np.random.default_rng(1).normal(size=(30, 2))
    capfd.readouterr()  # the training's lines
    quiet = model.push(x0, 0.0, 1.0, steps=4, batch_size=10)
    assert capfd.readouterr().err == ""  # well under the default 10 s
    # A report at every chance: 3 batches of 10 cells, 4 steps each, less the last (done).
    said = model.push(x0, 0.0, 1.0, steps=4, batch_size=10, progress=0.0)
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 11 and lines[0].startswith("amcore push: 8% of 30 cells through 4 steps, 0 s")
    assert lines[4].startswith("amcore push: 42% of") and lines[-1].startswith("amcore push: 92% of")
    np.testing.assert_array_equal(said, quiet)
    model.push(x0, 0.0, 1.0, steps=4, batch_size=10, progress=None)
    assert capfd.readouterr().err == ""


def test_each_objective_offers_its_own_fields(tmp_path):
    x = np.random.default_rng(2).normal(size=(9, 2))
    fm = _trained(tmp_path, "fm")
    assert fm.velocity(x, 0.5).shape == (9, 2)
    with pytest.raises(ValueError, match="no potential"):
        fm.potential(x, 0.5)
    eam = _trained(tmp_path, "eam", sigma=0.5, sigma_final=0.1)
    assert eam.drift(x, 0.5).shape == (9, 2) and eam.sigma(0.0) == 0.5 and eam.sigma(1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="drift"):
        eam.velocity(x, 0.5)
    pushed = eam.trajectories(x, [0.0, 1.0], 10, seed=3)
    assert pushed.method == "sde"
    np.testing.assert_array_equal(pushed.x, eam.trajectories(x, [0.0, 1.0], 10, seed=3).x)  # seeded noise
    assert not np.array_equal(pushed.x, eam.trajectories(x, [0.0, 1.0], 10, seed=4).x)
    uam = _trained(tmp_path, "uam", simulator=GrowingGaussian(), growth=2.0)
    # growth 2 in standard units: a rate of 2 s / x_scale^2 (s / x_scale^2 is in 1/t whatever the data's scale)
    rate = 2.0 / uam.model_args["x_scale"] ** 2
    np.testing.assert_allclose(uam.growth_rate(x, 0.5), rate * uam.potential(x, 0.5), rtol=1e-6)
    # The rates its training path took bound the weighted pushes; the path's own cells lie within them.
    lo, hi = uam.growth_range
    path_cells = GrowingGaussian().sample(0.5, 200, np.random.default_rng(1))
    assert lo < hi and lo <= np.median(uam.growth_rate(path_cells, 0.5)) <= hi
    cells, weights = uam.push(x, 0.0, 1.0, steps=10, with_weights=True)
    traj = uam.trajectories(x, [0.0, 1.0], 10)
    assert traj.method == "weighted" and cells.shape == (9, 2)
    assert cells.dtype == weights.dtype == np.float32, "the README: answers are float32"
    np.testing.assert_allclose(weights, traj.weight[-1])


def test_the_checkpoint_loads_without_running_code(tmp_path):
    """``weights_only`` loading: a checkpoint is tensors and plain values, never a pickle that runs code."""
    _trained(tmp_path, "am")
    payload = torch.load(tmp_path / "am.pt", weights_only=True)
    assert payload["objective"] == "am"


def test_fields_come_in_bounded_batches_with_the_same_numbers(tmp_path, monkeypatch):
    """Cells are evaluated ``BATCH_ROWS`` at a time (bounded memory for an atlas): the answers do not change."""
    from amcore.models import trained

    model = _trained(tmp_path, "uam", simulator=GrowingGaussian(), growth=2.0)
    x, t = np.random.default_rng(5).normal(size=(10, 2)), np.linspace(0, 1, 10)
    whole = model.fields(x, t, with_potential=True)
    monkeypatch.setattr(trained, "BATCH_ROWS", 3)
    batched = model.fields(x, t, with_potential=True)
    assert sorted(batched) == ["growth", "potential", "velocity"]
    for key in whole:
        np.testing.assert_allclose(batched[key], whole[key], rtol=1e-6, atol=1e-7)
    rate = 2.0 / model.model_args["x_scale"] ** 2
    np.testing.assert_allclose(batched["growth"], rate * batched["potential"], rtol=1e-6)


def test_checkpoints_from_before_the_standard_units_load_as_they_were_trained(tmp_path):
    """A checkpoint whose ``model_args`` have no ``x_center``, ``x_scale`` or ``t_unit`` was trained on raw
    coordinates: it must evaluate its MLP on them, unscaled. One that has them reads standardised cells and
    scales its output; both come from the same weights, so the two differ exactly by the units."""
    model = _trained(tmp_path, "am")
    args = dict(model.model_args)
    assert args["x_scale"] > 0 and args["t_unit"] == 0.5 and len(args["x_center"]) == 2  # times 0, 0.5, 1
    legacy = {k: v for k, v in args.items() if k not in ("x_center", "x_scale", "t_unit")}
    raw = amcore.TrainedModel(
        amcore.models.trained.build_network(legacy), "am", model.config, legacy, info=dict(model.info)
    )
    raw.network.load_state_dict(model.network.state_dict())
    x = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    mlp = raw.network.net
    expected = mlp.net(torch.cat([torch.as_tensor(x), mlp.embed(torch.full((5,), 0.3))], -1)).squeeze(-1)
    np.testing.assert_allclose(raw.potential(x, 0.3), expected.numpy(), rtol=1e-6)
    z = (x - np.asarray(args["x_center"], dtype=np.float32)) / args["x_scale"]
    np.testing.assert_allclose(
        model.potential(x, 0.3), args["x_scale"] ** 2 / args["t_unit"] * raw.potential(z, 0.3), rtol=1e-5, atol=1e-6
    )


def test_units_data_keeps_the_network_in_the_data_units(tmp_path):
    """``units: data`` (config/hydrogen.yaml) trains the network of before the standard units: no units in the
    checkpoint, so it loads as one from before them."""
    model = _trained(tmp_path, "am", units="data")
    assert not {"x_center", "x_scale", "t_unit"} & set(model.model_args)
    assert model.network.gain == 1.0 and model.network.net.x_scale == 1.0
    with pytest.raises(ValueError, match="units must be 'standard' or 'data'"):
        TrainConfig(units="raw")


@pytest.mark.parametrize(("objective", "head"), [("fm", "scalar"), ("am", "inner"), ("am", "quadratic")])
def test_one_feature_models_push_cells_as_a_column(tmp_path, objective, head):
    """With one feature a d-wide output is one column: squeezed as if it were a scalar potential, it broadcast
    against the cells' column into an (n, n) square (a crash in the first integration step, or for the inner head
    a potential that sums over the whole batch)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(m, 1.0, size=(100, 1)) for m in (0.0, 1.0, 3.0)]).astype(np.float32)
    cfg = TrainConfig(objective=objective, head=head, steps=20, batch_size=32, width=8, depth=2, log_every=10)
    snaps = Snapshots.from_labels(x, np.repeat([0.0, 1.0, 2.0], 100))
    train(snaps, cfg, tmp_path / "m.pt", tmp_path / "m.csv")
    model = amcore.load(tmp_path / "m.pt")
    cells = x[:50]
    v = model.velocity(cells, 0.5)
    assert v.shape == (50, 1)
    # Each cell's answer is its own: a broadcast square would mix every cell of the batch into each.
    np.testing.assert_allclose(model.velocity(cells[:10], 0.5), v[:10], rtol=1e-5, atol=1e-6)
    if objective == "am":
        np.testing.assert_allclose(model.potential(cells[:10], 0.5), model.potential(cells, 0.5)[:10], rtol=1e-5)
    later = model.push(cells, 0.0, 2.0)
    assert later.shape == (50, 1) and np.isfinite(later).all()


def test_careless_notebook_calls_get_answers_or_say_what_was_wrong(tmp_path):
    """Audit 85: under torch.inference_mode every gradient (and a training) raised autograd's own error; a seed of
    None or -1 failed deep inside; True ran from t = 1 and a complex t lost its imaginary part; a NaN in a later
    batch of a push was named by its row in the batch, after the batches before it had moved."""
    model = _trained(tmp_path, "am")
    x = np.random.default_rng(0).normal(size=(9, 2))
    outside = model.velocity(x, 0.5)
    with torch.inference_mode():
        np.testing.assert_array_equal(model.velocity(x, 0.5), outside)
        inside = model.push(torch.as_tensor(x, dtype=torch.float32), 0.0, 1.0)
    np.testing.assert_array_equal(inside, model.push(x, 0.0, 1.0))
    (tmp_path / "again").mkdir()
    with torch.inference_mode(), torch.no_grad():  # and training there: the same model
        again = _trained(tmp_path / "again", "am")
    np.testing.assert_array_equal(again.velocity(x, 0.5), outside)
    for seed in (None, -1, 1.5, np.random.default_rng(0)):
        with pytest.raises(ValueError, match="seed must be a whole number >= 0"):
            model.push(x, 0.0, 1.0, seed=seed)
    for t0 in (True, 0.5 + 1j, np.array("0")):
        with pytest.raises(ValueError, match="t0 must be one real number"):
            model.push(x, t0, 1.0)
    with pytest.raises(ValueError, match="t must be a real number or one per cell, got complex"):
        model.velocity(x, 0.5 + 0j)
    many = np.random.default_rng(1).normal(size=(70_000, 2))
    many[69_995] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf in 1 of 70000 cells \(the first: row 69995\)"):
        model.push(many, 0.0, 1.0, steps=2, progress=None)


def test_a_damaged_or_unfinished_checkpoint_is_never_taken_for_a_model(tmp_path):
    """Audit 85: torch.load checks no checksum, so damaged bytes inside a tensor loaded as wrong numbers; a partial
    state renamed to model.pt loaded without a word; a missing model.pt beside its .partial met torch's bare error."""
    import shutil
    import zipfile

    from amcore.errors import InputError

    _trained(tmp_path, "am")
    data = bytearray((tmp_path / "am.pt").read_bytes())
    with zipfile.ZipFile(tmp_path / "am.pt") as archive:
        member = max((m for m in archive.infolist() if "/data/" in m.filename), key=lambda m: m.file_size)
    name_length = int.from_bytes(data[member.header_offset + 26 : member.header_offset + 28], "little")
    extra_length = int.from_bytes(data[member.header_offset + 28 : member.header_offset + 30], "little")
    start = member.header_offset + 30 + name_length + extra_length
    data[start : start + 16] = bytes(16)
    (tmp_path / "damaged.pt").write_bytes(data)
    with pytest.raises(InputError, match=f"damaged.pt: a damaged checkpoint \\({member.filename} fails its checksum"):
        amcore.load(tmp_path / "damaged.pt")
    payload = torch.load(tmp_path / "am.pt", weights_only=True)
    payload["step"] = 20
    torch.save(payload, tmp_path / "renamed.pt")
    with pytest.warns(UserWarning, match=r"did not finish \(step 20 of 60\)"):
        amcore.load(tmp_path / "renamed.pt")
    shutil.move(tmp_path / "renamed.pt", tmp_path / "gone.pt.partial")
    with pytest.raises(FileNotFoundError, match="gone.pt: no such checkpoint, but .*gone.pt.partial holds the state"):
        amcore.load(tmp_path / "gone.pt")


def test_a_plots_grid_over_the_data_s_box_draws_no_far_cells_warning(tmp_path):
    """Audit 90: evaluate's field plots read the model on a grid over the data's box, which heavy-tailed outliers
    stretch, and its log asked the user whether "these cells" were normalised. The grid is the pipeline's own; the
    warning stays for cells a user passes."""
    from amcore.cli import _grid_of_the_plot

    model = _trained(tmp_path, "am")
    far = np.full((10, 2), 1e3)
    with pytest.warns(UserWarning, match="lie more than 5 times as far"):
        model.velocity(far, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with _grid_of_the_plot():
            model.velocity(far, 0.5)
        with pytest.raises(UserWarning, match="lie more than 5 times as far"):
            model.velocity(far, 0.5)
        with _grid_of_the_plot():  # a few of the grid's points far out: silent too
            model.velocity(np.concatenate([np.zeros((90, 2)), far]), 0.5)
