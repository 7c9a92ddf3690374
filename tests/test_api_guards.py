"""The library from a notebook: what a scientist hands it by mistake is refused with a clear error before any work,
never trained on or answered silently."""

from __future__ import annotations

import os
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import torch

import amcore
from amcore import Snapshots, TrainConfig, train
from amcore.data.preprocess import to_float32
from amcore.errors import InputError
from amcore.models.integrate import neighbour_distance

TINY = {"steps": 10, "width": 8, "depth": 1, "log_every": 5}


def _cells(n: int = 40, times=(0.0, 1.0, 2.0), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.asarray(times), n)
    return np.random.default_rng(seed).normal(size=(len(labels), 2)) + labels[:, None], labels


def test_snapshots_refuse_shapes_labels_and_weights_that_do_not_fit():
    x, t = _cells()
    with pytest.raises(InputError, match=r"got x of shape \(120, 2\) and time of shape \(100,\)"):
        Snapshots.from_labels(x, t[:100])  # rows were silently dropped
    with pytest.raises(InputError, match=r"x must be \(cells, features\)"):
        Snapshots.from_labels(x[:, 0], t)
    with pytest.raises(InputError, match="time labels must be numbers.*time_map"):
        Snapshots.from_labels(x, np.array([f"d{int(v)}" for v in t]))
    # numbers written as text are read as prepare reads them in a file (audit 94: refused here, read there)
    spelled = Snapshots.from_labels(x, np.array([f"{v:g}" for v in t]))
    assert spelled.t_values.tolist() == Snapshots.from_labels(x, t).t_values.tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(InputError, match="1 labels are NaN or inf"):
        Snapshots.from_labels(x, np.where(np.arange(120) == 7, np.nan, t))
    with pytest.raises(InputError, match=r"weights must be one number per cell \(120\), got shape \(119,\)"):
        Snapshots.from_labels(x, t, weights=np.ones(119))
    # Audit 15: a negative weight was told the shape; one time and no feature reached training or numpy's errors.
    with pytest.raises(InputError, match=r"weights must be finite and >= 0: 1 are not \(the first: -1\.0\)"):
        Snapshots.from_labels(x, t, weights=np.where(np.arange(120) == 3, -1.0, 1.0))
    with pytest.raises(InputError, match=r"found 1 time point \(0\); at least two are needed"):
        Snapshots.from_labels(x, np.zeros(120))
    with pytest.raises(InputError, match=r"at least one of each.*\(120, 0\)"):
        Snapshots.from_labels(np.zeros((120, 0)), t)
    # A column of labels (pandas' .values of one column) and a DataFrame of features are what they look like.
    column = Snapshots.from_labels(pd.DataFrame(x, columns=["a", "b"]), t[:, None])
    flat = Snapshots.from_labels(x, t)
    np.testing.assert_array_equal(column.x, flat.x)
    np.testing.assert_array_equal(column.t_values, [0.0, 1.0, 2.0])


def test_snapshots_from_arrays_get_the_checks_prepare_makes_on_a_file(tmp_path):
    """What ``amcore prepare`` refuses in a file is refused from arrays too (audit 8: a notebook trained on 1e8 plus
    noise flattened to 3 values per feature, and on single-cell times, in silence); a DataFrame's columns name the
    features, as a CSV's do, and float32 labels are the decimals written."""
    x, t = _cells()
    refused = r"x: feature 'a' varies by 1\.\d+ .* resolves only 8; subtract the offset in float64 \(x - x\.mean"
    with pytest.raises(InputError, match=refused):
        Snapshots.from_labels(pd.DataFrame(1e8 + x, columns=["a", "b"]), t)
    assert Snapshots.from_labels(1e3 + x, t).x.std(axis=0).min() > 0.9  # float32 keeps 1e3 plus noise: accepted
    hidden = 1e8 + x
    hidden[np.flatnonzero(t == 1)[0], 1] = np.nan  # a held-out cell's NaN must not hide the flattened features
    with pytest.raises(InputError, match=r"x: feature 0 varies by 1\.\d+ .* resolves only 8"):
        Snapshots.from_labels(hidden, t, attrs={"holdout_times": [1.0]})
    tenths = (t / 10).astype(np.float32)  # held out at 0.1, as float32 labels read (review: 0.1 never matched)
    Snapshots.from_labels(hidden - 1e8, tenths, attrs={"holdout_times": [0.1]})
    # audit 57: NaN was let through to train, inf was "as large as inf ... rescale it"; both as prepare says them
    for bad in (np.nan, np.inf):
        cells = x.copy()
        cells[5, 0] = bad
        with pytest.raises(InputError, match=r"1 cells of time 0 have a NaN or inf feature \(the first: row 5 of x\)"):
            Snapshots.from_labels(cells, t)
    with pytest.raises(InputError, match="feature 'a' holds inf: drop the cells"):
        to_float32(np.where(np.arange(120)[:, None] == 5, np.inf, x), "x", ["a", "b"])
    with pytest.raises(InputError, match=r"time: each time point needs at least 2 cells .*times \(cells\): 3 \(1\)"):
        Snapshots.from_labels(np.vstack([x, x[:1]]), np.append(t, 3.0))
    with pytest.raises(InputError, match=r"and 2 more\. Drop"):  # 12 single-cell times: ten named, the rest counted
        Snapshots.from_labels(x[:12], np.arange(12.0))
    with pytest.raises(InputError, match="time: times 1700000000 to 1700000060, as little as 60 apart"):
        Snapshots.from_labels(x[:80], np.repeat([1.7e9, 1.7e9 + 60], 40))  # epoch seconds, a minute apart
    labels = (t / 10).astype(np.float32)
    snaps = Snapshots.from_labels(pd.DataFrame(x, columns=["a", "b"]), labels)
    assert snaps.t_values.tolist() == [0.0, 0.1, 0.2]  # not 0.10000000149011612
    assert snaps.attrs["feature_names"] == ["a", "b"]
    assert repr(snaps) == "Snapshots(120 cells, 2 features, 3 times, t from 0 to 0.2)"  # a line, not the arrays
    train(snaps, TrainConfig(**TINY), tmp_path / "m.pt", tmp_path / "m.csv")
    assert amcore.load(tmp_path / "m.pt").feature_names == ["a", "b"]


def test_training_refuses_non_finite_training_cells_but_never_reads_held_out_ones(tmp_path):
    x, t = _cells()
    broken = x.copy()
    broken[45, 1] = np.nan  # a cell of time 1
    with pytest.raises(InputError, match=r"1 cells of time 1 have a NaN or inf feature \(the first: row 45 of x\)"):
        Snapshots.from_labels(broken, t)  # as prepare refuses them (audit 57: it was train, after the arrays)
    held_out = Snapshots.from_labels(broken, t, {"holdout_times": [1.0]})
    train(held_out, TrainConfig(**TINY), tmp_path / "m.pt", tmp_path / "m.csv")
    assert amcore.load(tmp_path / "m.pt").info["trained_times"] == [0.0, 2.0]


def test_training_outputs_are_checked_before_the_first_step_and_threads_restored(tmp_path):
    snaps = Snapshots.from_labels(*_cells())
    with pytest.raises(InputError, match="the checkpoint and the loss CSV are the same file"):
        train(snaps, TrainConfig(**TINY), tmp_path / "m.pt", tmp_path / "m.pt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="is a folder: a checkpoint and a loss CSV are files"):
        train(snaps, TrainConfig(**TINY), tmp_path / "folder", tmp_path / "m.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # no .partial, no loss CSV
    before = torch.get_num_threads()
    train(snaps, TrainConfig(**TINY, threads=1), tmp_path / "m.pt", tmp_path / "m.csv")
    assert torch.get_num_threads() == before


def test_text_settings_and_infinities_are_refused_when_the_config_is_built():
    for setting, value in (("time_weight", "Linear"), ("laplacian", "Exact"), ("activation", "relu")):
        with pytest.raises(InputError, match=f"{setting} must be one of"):
            TrainConfig(**{setting: value})
    with pytest.raises(InputError, match="lr must be a number > 0, got inf"):
        TrainConfig(lr=float("inf"))
    with pytest.raises(InputError, match="sigma must be a finite number, got nan"):
        TrainConfig(objective="eam", sigma=float("nan"))
    assert type(TrainConfig(seed=np.int64(3)).seed) is int  # torch's generators take Python integers only


def test_pushes_refuse_step_counts_and_times_that_mean_nothing(tmp_path):
    snaps = Snapshots.from_labels(*_cells())
    train(snaps, TrainConfig(**TINY), tmp_path / "m.pt", tmp_path / "m.csv")
    model, cells = amcore.load(tmp_path / "m.pt"), np.zeros((3, 2))
    for steps in (-1, 0, 2.5):  # -1 returned the cells unmoved; audit 91: push's steps by its own name
        with pytest.raises(ValueError, match="^steps must be a whole number >= 1"):
            model.push(cells, 0.0, 2.0, steps=steps)
        with pytest.raises(ValueError, match="steps per interval must be a whole number >= 1"):
            model.trajectories(cells, [0.0, 2.0], steps_per_interval=steps)
    with pytest.raises(ValueError, match="times must be a list of at least one time"):
        model.trajectories(cells, [])
    cells[1, 0] = np.nan  # a cell without coordinates came back as a NaN velocity row, silently
    for call in (lambda: model.velocity(cells, 1.0), lambda: model.push(cells, 0.0, 2.0)):
        with pytest.raises(ValueError, match=r"x has NaN or inf in 1 of 3 cells \(the first: row 1\)"):
            call()
    with pytest.raises(ValueError, match=r"x has values beyond float32's range in 2 of 2 cells"):
        model.velocity(np.full((2, 2), 1e39), 1.0)  # finite, but said to be NaN or inf
    with pytest.raises(ValueError, match="an AM model has no growth rate"):
        model.growth_rate(np.zeros((2, 2)), 1.0)
    # audit 36: a sparse matrix crashed push only; objects met torch's error; complex lost its imaginary part
    sparse = scipy.sparse.csr_matrix(np.eye(2))
    np.testing.assert_array_equal(model.push(sparse, 0.0, 2.0), model.push(np.eye(2), 0.0, 2.0))
    for odd, said in ((np.array([[1, "a"]], dtype=object), "got objects such as 1"),
                      (np.zeros((1, 2)) + 1j, "got complex128")):  # fmt: skip
        with pytest.raises(ValueError, match=f"x must hold real numbers, {said}"):
            model.velocity(odd, 1.0)
    with pytest.raises(ValueError, match=r"x has NaN or inf in 1 of 1 cells"):
        model.velocity(np.array([[1, None]]), 1.0)  # None in an object array is a missing value
    np.testing.assert_array_equal(model.velocity(np.array([[Decimal(1), 2]], dtype=object), 1.0),
                                  model.velocity(np.array([[1.0, 2.0]]), 1.0))  # fmt: skip
    with pytest.raises(ValueError, match=r"batch_size must be a whole number >= 1, got 0"):
        model.push(np.eye(2), 0.0, 2.0, batch_size=0)  # ran one cell at a time
    # audit 5: an array for t0 failed inside numpy; sde ran Euler in silence; sigma(NaN) answered 0
    with pytest.raises(ValueError, match=r"t0 must be one number, got array"):
        model.push(np.zeros((2, 2)), np.zeros(3), 2.0)
    with pytest.raises(ValueError, match="an AM model has no noise for the SDE to draw"):
        model.push(np.zeros((2, 2)), 0.0, 2.0, method="sde")
    with pytest.raises(ValueError, match="t must be finite"):
        model.sigma(float("nan"))
    (tmp_path / "m.pt.partial").write_bytes((tmp_path / "m.pt").read_bytes())
    with pytest.warns(UserWarning, match=r"m\.pt\.partial is the partial state of a training that did not finish"):
        amcore.load(tmp_path / "m.pt.partial")


def test_backward_pushes_run_where_the_method_can_and_are_refused_where_it_cannot(tmp_path):
    """RK4 pushes backward (there and back returns the cells); dopri5 returned its input unmoved and eAM's SDE all
    NaN: both are refused by name."""
    snaps = Snapshots.from_labels(*_cells())
    train(snaps, TrainConfig(**TINY), tmp_path / "am.pt", tmp_path / "am.csv")
    train(snaps, TrainConfig(**TINY, objective="eam", sigma=0.1), tmp_path / "eam.pt", tmp_path / "eam.csv")
    am, eam = amcore.load(tmp_path / "am.pt"), amcore.load(tmp_path / "eam.pt")
    cells = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    there = am.push(cells, 0.0, 2.0)
    assert np.abs(there - cells).max() > 1e-3
    np.testing.assert_allclose(am.push(there, 2.0, 0.0), cells, atol=1e-4)  # RK4's error at 20 steps
    with pytest.raises(ValueError, match=r"method 'dopri5' needs increasing times, got \[2.0, 0.0\]"):
        am.push(there, 2.0, 0.0, method="dopri5")
    with pytest.raises(ValueError, match=r"method 'dopri5' needs increasing times, got \[0.0, 2.0, 1.0\]"):
        am.trajectories(cells, [0.0, 2.0, 1.0], method="dopri5")
    with pytest.raises(ValueError, match=r"method 'sde' needs increasing times.*reverse needs the score"):
        eam.push(cells, 2.0, 0.0)
    np.testing.assert_array_equal(eam.push(cells, 1.0, 1.0), cells)  # staying put is no backward step (audit 36)
    # Audit 88: on uneven times the refusal listed the training times the push passes, which the user never gave
    uneven = Snapshots.from_labels(*_cells(times=(0.0, 0.1, 6.0, 24.0)))
    train(uneven, TrainConfig(**TINY, objective="eam", sigma=0.1), tmp_path / "week.pt", tmp_path / "week.csv")
    with pytest.raises(ValueError, match=r"method 'sde' needs increasing times, got \[24.0, 0.0\]"):
        amcore.load(tmp_path / "week.pt").push(cells, 24.0, 0.0)
    # Audit 36: a push continued from where another ended re-drew the first leg's kicks (noise keyed by the step's
    # number), twice the variance; keyed by the step's time, the two legs are the one push over their common grid.
    many = np.zeros((2000, 2), np.float32)
    once = eam.push(many, 0.0, 2.0, steps=8, seed=3)
    legs = eam.push(eam.push(many, 0.0, 1.0, steps=4, seed=3), 1.0, 2.0, steps=4, seed=3)
    np.testing.assert_allclose(legs, once, atol=1e-5)
    # Outside the trained times the noise schedule holds its end value (a linear one turned negative there).
    with pytest.warns(UserWarning, match="leaves the time range this model was trained on"):
        assert eam.sigma(10.0) == eam.sigma(2.0)
    with pytest.raises(ValueError, match="t must be one number, got '0.5'"):
        eam.sigma("0.5")
    # An ODE method on eAM dropped its noise in silence (W1 0.64 against 0.14 with the SDE on the default path).
    for method in ("rk4", "dopri5", "euler"):
        with pytest.raises(ValueError, match=f"method '{method}' would push this eam model without its noise"):
            eam.push(cells, 0.0, 2.0, method=method)


def test_features_on_scales_a_thousand_fold_apart_are_flagged(tmp_path, capsys):
    x, t = _cells()
    x[:, 1] *= 1e-4
    train(Snapshots.from_labels(x, t), TrainConfig(**TINY), tmp_path / "m.pt", tmp_path / "m.csv")
    assert "WARNING: the features' spreads range from" in capsys.readouterr().err
    train(Snapshots.from_labels(*_cells()), TrainConfig(**TINY), tmp_path / "n.pt", tmp_path / "n.csv")
    assert "spreads range" not in capsys.readouterr().err


def test_training_needs_two_times_the_holdout_leaves(tmp_path):
    """Every time held out crashed in numpy ("need at least one array to concatenate"), before a word of what."""
    snaps = Snapshots.from_labels(*_cells())
    snaps.attrs["holdout_times"] = [0.0, 1.0, 2.0]
    with pytest.raises(InputError, match=r"need at least two training times to learn a flow, got \[\] \(times"):
        train(snaps, TrainConfig(**TINY), tmp_path / "m.pt")


def test_snapshots_built_by_hand_must_hold_together():
    """Blocks that miss rows would train on a subset in silence; times out of order would be read as other times."""
    x = np.zeros((10, 2), np.float32)
    with pytest.raises(InputError, match=r"offsets must run from 0 to the 10 rows of x, one block per time \(2\)"):
        Snapshots(x, np.array([0.0, 1.0]), np.array([0, 4, 8]))
    with pytest.raises(InputError, match="t_values must be strictly increasing"):
        Snapshots(x, np.array([1.0, 0.0]), np.array([0, 5, 10]))
    assert Snapshots(x, np.array([0.0, 1.0]), np.array([0, 5, 10])).counts().tolist() == [5, 5]


def test_loading_a_file_that_is_no_checkpoint_says_so(tmp_path):
    """The loss CSV beside the model is the likeliest mistake: torch's own error said 'pop from empty list'."""
    (tmp_path / "loss.csv").write_text("step,loss\n1,0.5\n")
    with pytest.raises(InputError, match=r"loss\.csv: not a readable amcore checkpoint \(not a file torch\.save.*\)$"):
        amcore.load(tmp_path / "loss.csv")  # the message ends there: torch's ": 115" (a byte) said nothing (audit 75)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.pt: not a readable amcore checkpoint \(not a file torch\.save.*\)$"):
        amcore.load(tmp_path / "empty.pt")
    x, t = _cells()
    train(Snapshots.from_labels(x, t), TrainConfig(**TINY), tmp_path / "m.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "m.pt").read_bytes()[:2000])
    with pytest.raises(InputError, match=r"cut\.pt: not a readable amcore checkpoint \(truncated or damaged\?\)"):
        amcore.load(tmp_path / "cut.pt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match=r"folder: not a readable amcore checkpoint \(not a file torch\.save"):
        amcore.load(tmp_path / "folder")


def test_eam_says_its_sigma_is_the_noise_of_rescaled_coordinates(tmp_path, capsys):
    """A physical sigma on standardised cells is sigma / std_j per feature (audit 9: drift error 11 % -> 55 %)."""
    from amcore.data.prepare import build_snapshots

    x, t = _cells()
    np.savez(tmp_path / "d.npz", X=x * [1.0, 30.0], t=t)
    cfg = TrainConfig(objective="eam", sigma=0.5, **TINY)
    for preprocess, said in (({"standardize": True}, True), (None, False)):
        snaps = build_snapshots({"source": "npz", "path": str(tmp_path / "d.npz")}, preprocess)
        capsys.readouterr()
        train(snaps, cfg, tmp_path / "m.pt")
        err = capsys.readouterr().err
        assert ("eAM's sigma is the noise of the store's coordinates, which preprocess standardised" in err) == said
        # audit 42: nothing said the time unit where no preprocessing rescaled the cells
        assert ("eAM's sigma is noise in the data's units per square root of its time unit (the training times run "
                "from 0 to 2)" in err) != said  # fmt: skip


def test_a_model_matches_a_dataframe_s_columns_by_name(tmp_path):
    """Audit 16: a DataFrame whose columns came in another order than the training's moved the wrong feature, in
    silence (geneB moved by +1 where geneA should have), while the MLflow model matched the same frame by name."""
    x, t = _cells()
    frame = pd.DataFrame(x, columns=["geneA", "geneB"])
    train(Snapshots.from_labels(frame, t), TrainConfig(**TINY), tmp_path / "m.pt")
    model = amcore.load(tmp_path / "m.pt")
    swapped = frame[["geneB", "geneA"]]
    np.testing.assert_array_equal(model.velocity(swapped, 0.5), model.velocity(x, 0.5))
    np.testing.assert_array_equal(model.potential(swapped, 0.5), model.potential(x, 0.5))
    np.testing.assert_array_equal(model.push(swapped, 0.0, 1.0, steps=2), model.push(x, 0.0, 1.0, steps=2))
    with_time = frame.assign(t=0.5, cell_type="a")  # columns the model does not know are left out, text too
    np.testing.assert_array_equal(model.velocity(with_time, 0.5), model.velocity(x, 0.5))
    np.testing.assert_array_equal(model.velocity(frame.astype("Float64"), 0.5), model.velocity(x, 0.5))
    with pytest.raises(ValueError, match=r"lack 1 of this model's features: \['geneB'\].*model.preprocess"):
        model.velocity(frame.rename(columns={"geneB": "Sox2"}), 0.5)
    unnamed = amcore.load(_trained_without_names(tmp_path))
    np.testing.assert_array_equal(unnamed.velocity(pd.DataFrame(x), 0.5), unnamed.velocity(x, 0.5))  # by position
    # audit 57: rows sorted by a gene beside per-cell times as a Series met other cells' times, in silence
    per_cell = pd.Series(np.linspace(0.0, 2.0, len(frame)), index=frame.index)
    order = frame.sort_values("geneA")
    # The same cells in another order meet other float32 roundings (the batch's layout): a few ulps, where a wrong
    # match is off by the field's own size
    same = {"rtol": 1e-5, "atol": 1e-7}
    np.testing.assert_allclose(model.velocity(order, per_cell), model.velocity(frame, per_cell)[order.index], **same)


def test_a_received_model_says_its_coordinates_and_is_not_fed_other_ones(tmp_path):
    """Audit 45: an unnamed model read a DataFrame of x1, x0 by position (the velocity of the swapped cells, off by up
    to 2), where the MLflow model and the export match x0, x1 by name; cells in the input's units passed for a
    standardised model's (its features keep the genes' names) and came back barely moved, with no word; a
    reversed view of an array met torch's error on negative strides."""
    import warnings

    from amcore.data.preprocess import Preprocessing

    unnamed = amcore.load(_trained_without_names(tmp_path))
    x, _ = _cells(seed=1)
    np.testing.assert_array_equal(unnamed.velocity(pd.DataFrame({"x1": x[:, 1], "x0": x[:, 0]}), 0.5),
                                  unnamed.velocity(x, 0.5))  # fmt: skip
    with pytest.raises(ValueError, match=r"lack 2 of this model's features: \['x0', 'x1'\]"):
        unnamed.velocity(pd.DataFrame(x, columns=["a", "b"]), 0.5)  # names that say nothing of x0, x1: not by position
    np.testing.assert_allclose(unnamed.velocity(x[::-1], 0.5), unnamed.velocity(x, 0.5)[::-1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        unnamed.push(x[::-1], 0.0, 1.0, steps=2), unnamed.push(x, 0.0, 1.0, steps=2)[::-1], atol=1e-6
    )
    assert unnamed.coordinates == "the input's features as given"  # from_labels preprocesses nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cells like the training cells: no word
        unnamed.velocity(x, 0.5)
        unnamed.push(x, 0.0, 1.0, steps=2)
    raw = 100 * x + 140  # as if in the input's units, where the training cells were of spread 1
    for answer in (lambda: unnamed.velocity(raw, 0.5), lambda: unnamed.push(raw, 0.0, 1.0, steps=2)):
        with pytest.warns(UserWarning, match=r"as far from the training cells' mean.*this model's coordinates") as got:
            answer()
        # nothing to preprocess: not sent to model.preprocess (review: it raised there); one warning a call, whatever
        # the cells' batches
        assert len(got) == 1 and "model.preprocess" not in str(got[0].message)
    with pytest.raises(ValueError, match="its input named no features: name the columns so, or pass an array"):
        unnamed.velocity(pd.DataFrame(x)[[1, 0]], 0.5)  # integer columns in another order: not read by position
    fitted = Preprocessing({"whiten": False}, [0.0], 10, mean=np.zeros(3), scale=np.ones(3), n_input=3)
    assert fitted.describe() == "the input's features standardised (centred, each feature divided by its spread)"
    pca = Preprocessing({"whiten": True}, [0.0], 10, indices=np.arange(5), mean=np.zeros(5), components=np.ones((2, 5)),
                        n_input=50)  # fmt: skip
    assert pca.describe() == ("the input's features 5 of 50 features selected, projected on 2 principal components, "
                              "whitened")  # fmt: skip


def _trained_without_names(tmp_path) -> str:
    train(Snapshots.from_labels(*_cells()), TrainConfig(**TINY), tmp_path / "plain.pt")
    return tmp_path / "plain.pt"


def test_notebook_inputs_of_the_wrong_kind_are_named():
    """Audit 16: a sparse matrix read as 'x of shape ()', an AnnData as numpy's 'maximum number of dimension',
    an array or dict given to train as an AttributeError; identical cells trained into a divergence that blamed
    the learning rate."""
    import anndata
    import scipy.sparse

    x, t = _cells()
    sparse = Snapshots.from_labels(scipy.sparse.csr_matrix(x), t)
    np.testing.assert_array_equal(sparse.x, Snapshots.from_labels(x, t).x)
    with pytest.raises(InputError, match=r"x: columns \['batch'\] are not numbers"):
        Snapshots.from_labels(pd.DataFrame(x, columns=["a", "b"]).assign(batch="B"), t)
    with pytest.raises(InputError, match="x must hold real numbers, got complex128"):
        Snapshots.from_labels(x + 1j, t)
    # pandas' nullable dtypes (convert_dtypes, read_csv's numpy_nullable) and numbers held as objects are numbers
    for numbers in (pd.DataFrame(x, columns=["a", "b"]).astype("Float64"), x.astype(object)):
        np.testing.assert_array_equal(Snapshots.from_labels(numbers, t).x, Snapshots.from_labels(x, t).x)
    with pytest.raises(InputError, match=r"x is an AnnData: pass its cells and their times"):
        Snapshots.from_labels(anndata.AnnData(x), t)
    with pytest.raises(InputError, match="snapshots must be amcore.Snapshots, got ndarray"):
        train(x, TrainConfig(**TINY), "unused.pt")
    with pytest.raises(InputError, match="the config must be an amcore.TrainConfig, got dict"):
        train(Snapshots.from_labels(x, t), dict(TINY), "unused.pt")
    for objective in ({}, {"objective": "eam", "sigma": 0.5}):  # eAM's noise note divided by the spread (review)
        with pytest.raises(InputError, match="the training cells have no spread"):
            train(Snapshots.from_labels(np.ones_like(x), t), TrainConfig(**TINY, **objective), "unused.pt")


def test_an_eam_noise_far_beyond_the_cells_spread_is_noted_before_training(tmp_path, capfd):
    """Audit 52: sigma 50 on cells of spread 1 (or a sigma for another time unit) trained in silence and was flagged
    only after the push. Spread 1 over 2 time units: sigma 0.5 spreads a cell by 0.71 (no note), sigma 5 by 7.1."""
    snaps = Snapshots.from_labels(*_cells())
    for sigma in (0.5, 5.0):
        train(snaps, TrainConfig(**TINY, objective="eam", sigma=sigma), tmp_path / f"{sigma}.pt")
        said = capfd.readouterr().err
        noted = "eAM's noise alone spreads a cell by sigma √(t_last - t_first) = 7.07 over the training times"
        assert (noted in said) == (sigma == 5.0), said


def test_the_default_threads_follow_omp_num_threads_outside_torchrun(monkeypatch):
    """Audit 50: a notebook with OMP_NUM_THREADS=1 on a shared machine trained on every core. Under torchrun (which
    sets it to 1 itself, LOCAL_WORLD_SIZE beside it) the ranks share the cores instead."""
    from amcore.training.speed import cpu_threads

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_threads(0) == 1 and cpu_threads(3) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cpu_threads(0) == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert cpu_threads(0) == cores


def test_a_push_across_unevenly_spread_training_times_steps_through_them(tmp_path, capfd):
    """Audit 50: 20 even steps from 0.1 to 168 hours took one step of 8.4 across the fast first hours. Across training
    times spread unevenly a push takes ``steps`` between each two it passes, forward and backward, as the pipeline
    integrates; across even ones (hydrogen's 1,001 frames) it keeps ``steps`` in all."""
    times = (0.0, 0.1, 0.3, 2.0)
    train(Snapshots.from_labels(*_cells(times=times)), TrainConfig(**TINY), tmp_path / "m.pt")
    assert "amcore train: time clock: with the population's motion (0: 0.00, 0.1: " in capfd.readouterr().err
    model = amcore.load(tmp_path / "m.pt")
    cells = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    through = model.trajectories(cells, [0.05, 0.1, 0.3, 1.0], steps_per_interval=3)
    np.testing.assert_array_equal(model.push(cells, 0.05, 1.0, steps=3), through.x[-1])
    back = model.trajectories(cells, [1.5, 0.3, 0.1], steps_per_interval=2)
    np.testing.assert_array_equal(model.push(cells, 1.5, 0.1, steps=2), back.x[-1])
    train(Snapshots.from_labels(*_cells()), TrainConfig(**TINY), tmp_path / "even.pt")
    assert "time clock: t's own (the training times' gaps are within 5-fold of each other)" in capfd.readouterr().err
    even = amcore.load(tmp_path / "even.pt")
    np.testing.assert_array_equal(even.push(cells, 0.0, 2.0, steps=4), even.trajectories(cells, [0.0, 2.0], 4).x[-1])


def test_uam_s_growth_range_reads_its_path_on_the_training_clock(tmp_path, monkeypatch):
    """Review 54: the range a uAM push is held in was read at times uniform in t, so on log-spaced times the fast
    first hours (where the rates are extreme) held 2 % of the cells it was read on. Cells that make all their move in
    the first 2 % of the time put half the clock there: about half the range's cells now (a third at least)."""
    from amcore.paths.interpolants import SnapshotPath
    from amcore.training.train import GROWTH_RANGE_BATCH

    seen = []
    sample_at = SnapshotPath.sample_at

    def spy(self, t, gen):
        if len(t) == GROWTH_RANGE_BATCH:
            seen.append(t.clone())
        return sample_at(self, t, gen)

    monkeypatch.setattr(SnapshotPath, "sample_at", spy)
    times = (0.0, 0.01, 0.02, 1.0)
    x, t = _cells(times=times)
    x[:, 0] += 5 * (t > 0)
    train(Snapshots.from_labels(x, t), TrainConfig(**TINY, objective="uam"), tmp_path / "m.pt")
    drawn = torch.cat(seen)
    assert len(drawn) and float((drawn < 0.02).double().mean()) > 1 / 3


def test_a_uam_push_takes_the_growth_rates_of_the_interval_it_is_in(tmp_path):
    """TIGON EMT (0.3 held out): a cell that left the data in the long last interval took the largest rate of the
    path, 42 per unit time, which only the short first interval's cells reach, and carried 10^9 times the mass. The
    rates a push is held in are now those its path took in the interval the particles are in."""
    times = (0.0, 0.05, 2.0)
    x, t = _cells(n=60, times=times)
    train(Snapshots.from_labels(x, t), TrainConfig(**TINY, objective="uam"), tmp_path / "m.pt")
    model = amcore.load(tmp_path / "m.pt")
    ranges = np.asarray(model.growth_ranges["ranges"])
    np.testing.assert_allclose(model.growth_ranges["knots"], times)
    assert ranges.shape == (2, 2) and (ranges[:, 0] <= ranges[:, 1]).all()
    assert ranges[:, 0].min() == pytest.approx(model.growth_range[0]) and ranges[:, 1].max() == pytest.approx(
        model.growth_range[1])  # fmt: skip
    # Each interval's own bounds: the first wide open, the last pinned to one rate, 0.25 (RK4 on log w is exact
    # for a constant rate: exp(0.25) after one unit of time in the last interval).
    cells = x[t == 0.05][:5].astype(np.float32)
    model.growth_ranges["ranges"] = torch.tensor([[-100.0, 100.0], [0.25, 0.25]])
    _, weights = model.push(cells, 1.0, 2.0, steps=10, with_weights=True)
    np.testing.assert_allclose(weights, np.exp(0.25), rtol=1e-5)
    _, first = model.push(cells, 0.0, 0.04, steps=10, with_weights=True)  # RK4 stages at a knot read the next interval
    model.growth_ranges, model.growth_range = None, None  # the network's own rates, as in the first interval
    _, free = model.push(cells, 0.0, 0.04, steps=10, with_weights=True)
    np.testing.assert_allclose(first, free, rtol=1e-6)


def test_a_rare_far_cluster_of_the_training_cells_draws_no_warning_of_far_cells(tmp_path):
    """Review of audit 91's fix: a few cells far out are warned of, but a rare cell type far off in the training
    data itself is not "far beyond the training cells" (2 % of them at 6.6 times their root mean square here).
    Chebyshev: no cells have more than 1 % of their number beyond 10 times their own root mean square."""
    import warnings

    x, t = _cells(n=200, times=(0.0, 1.0))
    x[::50, 0] += 30.0  # 2 % of the cells, 30 units out
    train(Snapshots.from_labels(x, t), TrainConfig(**TINY), tmp_path / "m.pt")
    model = amcore.load(tmp_path / "m.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.velocity(x[t == 0], 0.0)
    x[::50, 0] += 300.0  # now far beyond them
    with pytest.warns(UserWarning, match="more than 1% of these cells lie more than 10 times as far"):
        model.velocity(x[t == 0], 0.0)


def test_a_uam_particle_that_left_the_training_path_grows_no_faster_than_its_population(tmp_path):
    """TIGON EMT (0.3 held out): one of the first time's cells pushed off the data took its interval's fastest
    rates all the way, grew 16,000-fold and carried 99 % of the mass (effective size 1.01). Beyond the path's
    cells a particle's growth rate is now held to the population's (here the counts double in a unit of time:
    log 2), a particle among them keeps the network's; death is untouched."""
    x, t = _cells(n=60, times=(0.0, 1.0))
    x, t = np.concatenate([x, x[t == 1] + 0.01]), np.concatenate([t, np.full(60, 1.0)])  # 60 cells, then 120
    train(Snapshots.from_labels(x, t), TrainConfig(**TINY, objective="uam"), tmp_path / "m.pt")
    model = amcore.load(tmp_path / "m.pt")
    support = model.growth_support
    assert support["cells"].shape == (1, 1024, 2) and float(support["radius"][0]) > 0
    assert float(support["rate"][0]) == pytest.approx(np.log(2), rel=1e-5)
    # A potential constant in space: nothing moves, and every particle's rate is 3 (within the bounds set wide).
    model.network = lambda points, times: points.sum(1) * 0 + 3.0 / model.growth
    model.growth_ranges["ranges"] = torch.tensor([[-100.0, 100.0]])
    path = support["cells"][0]
    near = path[neighbour_distance(path, path, among_themselves=True).argmin()]  # the one with the closest neighbours
    far = path.max(0).values + 3 * support["radius"][0]  # three radii beyond every path cell
    cells = torch.stack([near, far]).numpy()
    traj = model.trajectories(cells, [0.0, 1.0], steps_per_interval=10)
    np.testing.assert_allclose(np.log(traj.weight[-1]), [3.0, np.log(2)], rtol=1e-5)
    assert traj.info["growth_held"] == 1
    model.network = lambda points, times: points.sum(1) * 0 - 3.0 / model.growth  # dying: untouched anywhere
    traj = model.trajectories(cells, [0.0, 1.0], steps_per_interval=10)
    np.testing.assert_allclose(np.log(traj.weight[-1]), [-3.0, -3.0], rtol=1e-5)
    assert traj.info["growth_held"] == 1  # it left the path's cells all the same


def test_pandas_rows_are_matched_by_label_and_a_time_column_or_a_list_of_arrays_is_named():
    """Audit 57: a DataFrame sorted by a gene beside its times as a Series paired cells with other cells' times (and
    the model's fields with other cells' times), in silence; the time left among the features trained a flow of
    the clock; a list of one array per time met numpy's "inhomogeneous shape"."""
    x, t = _cells()
    frame, times = pd.DataFrame(x, columns=["a", "b"]), pd.Series(t, name="day")
    shuffled = frame.sort_values("a")
    by_label, in_order = Snapshots.from_labels(shuffled, times), Snapshots.from_labels(frame, times)
    for k in range(3):  # each time holds the same cells (the store's order within a time is the input's)
        np.testing.assert_array_equal(np.sort(by_label.snapshot(k), 0), np.sort(in_order.snapshot(k), 0))
    # review: repeated labels (pd.concat of per-day frames) or none in common (barcodes beside 0, 1, ...) name no
    # row: by position, as before; labels that only partly match are refused
    days = pd.concat([frame.iloc[:40], frame.iloc[40:80].reset_index(drop=True), frame.iloc[80:]])
    barcodes = frame.set_axis([f"cell{i}" for i in range(len(frame))])
    for positional in (days, barcodes):
        np.testing.assert_array_equal(Snapshots.from_labels(positional, times).x, in_order.x)
    with pytest.raises(InputError, match=r"row labels only partly match \(60 of x's 120 are among time's 120\)"):
        Snapshots.from_labels(shuffled, times.set_axis(times.index + 60))
    with pytest.warns(UserWarning, match="x's column 'day' holds the time labels themselves"):
        Snapshots.from_labels(frame.assign(day=t), times)
    tenths = np.float32(t / 10)  # float32 cells hold float32 copies of 0.1
    with pytest.warns(UserWarning, match="x's column 2 holds the time labels themselves"):
        Snapshots.from_labels(np.c_[x, tenths].astype(np.float32), t / 10)
    with pytest.raises(InputError, match=r"list of 3 items .* np\.vstack\(arrays\)"):
        Snapshots.from_labels([x[t == k] for k in range(3)], [0, 1, 2])


def test_dates_are_refused_with_the_way_to_numbers_and_durations_read_in_seconds():
    """Audit 58: dates as datetime64 were "text labels" to map with time_map (a file's key) here; dates written as
    text were offered a map of each date's first number (the year alone, or the day of the month out of order);
    labels were listed as text sorts them (day 0, day 1, day 10, day 120, day 3)."""
    from amcore.data.readers import to_times

    x, t = _cells(n=20, times=(0.0, 3.0))
    with pytest.raises(InputError, match=r"time: times are dates .* \(t - t\.min\(\)\) / np\.timedelta64\(1, 'h'\)"):
        Snapshots.from_labels(x, pd.to_datetime(t, unit="D"))
    hours = Snapshots.from_labels(x, (t * 3600).astype("timedelta64[s]"))
    np.testing.assert_array_equal(hours.t_values, [0.0, 10800.0])
    for dates in (["2024-03-01", "2024-04-05", "2025-03-01"], ["28/02/2024", "20/06/2024"]):
        with pytest.raises(InputError, match=r"dates written as text .* pd\.to_datetime\(col\)"):
            to_times(np.array(dates), None, "f.csv")
    with pytest.raises(InputError, match=r"found \['day 0', 'day 3', 'day 10', 'day 120'\]"):
        to_times(np.array(["day 10", "day 0", "day 3", "day 120"]), None, "f.csv")


def test_pushed_cells_that_run_off_or_turn_nan_are_warned_of(tmp_path):
    """Audit 70: an SDE push in one step flung 108 of 800 cells past twice the data's range and said nothing (the
    pipeline flags them as escaped). Cells pushed as far out as five times the training cells' own spread, or NaN,
    are warned of; a push of the training cells is not."""
    import warnings

    x, t = _cells()
    train(Snapshots.from_labels(x, t), TrainConfig(**TINY), tmp_path / "m.pt")
    model = amcore.load(tmp_path / "m.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.push(x[:40], 0.0, 1.0, steps=2)
        model.trajectories(x[:40], [0.0, 1.0], 2)
    # cells given far out are warned of as input only; a heavy tail's own far cells that stay put are not run off
    # (review 73): only cells that start within five spreads and end beyond them, or end NaN
    start = torch.as_tensor(np.array([[0.0, 0.0], [60.0, 60.0], [0.0, 1.0], [1.0, 0.0]]), dtype=torch.float32)
    end = start.clone()
    assert model._ran_off(start, end) == (0, 0)
    end[0], end[2] = torch.tensor([60.0, -60.0]), torch.tensor([float("nan"), 0.0])
    assert model._ran_off(start, end) == (1, 1)
    with pytest.warns(UserWarning, match=r"at t = 2, of 4 pushed cells, 1 are NaN or inf and 1 ran more than 5 times"):
        model._warn_ran_off((1, 1), 4, 2.0)
    far = x[:5] + 60.0
    with pytest.warns(UserWarning) as said:
        model.push(far, 0.0, 1.0, steps=2)
    assert not any("pushed cells" in str(w.message) for w in said)
    # a field that flings every cell off: said by push and by trajectories, not by a store's writer (evaluate flags)
    fling = property(lambda self: lambda z, t: torch.full_like(z, 1000.0))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(model), "flow", fling)
        for answer in (lambda: model.push(x[:8], 0.0, 1.0, steps=2), lambda: model.trajectories(x[:8], [0, 1], 2)):
            with pytest.warns(UserWarning, match=r"at t = 1, of 8 pushed cells, 8 ran more than 5 times as far"):
                answer()


def test_a_loaded_model_pushes_without_the_pipelines_libraries(tmp_path):
    """``amcore.load`` cost 2.5 times ``import torch`` (audit 75): the model's modules imported the store's (dask,
    xarray's zarr backend) and the metrics' (POT, which imports sklearn), none of which a push uses."""
    import subprocess
    import sys

    x, t = _cells()
    train(Snapshots.from_labels(x, t), TrainConfig(**TINY), tmp_path / "am.pt")
    train(Snapshots.from_labels(x, t), TrainConfig(**TINY, objective="uam"), tmp_path / "uam.pt")  # review 78
    script = (
        "import sys, numpy as np, amcore\n"
        "for name in 'am', 'uam':\n"
        f"    amcore.load({str(tmp_path)!r} + f'/{{name}}.pt').push(np.zeros((5, 2)), 0.0, 2.0, steps=4)\n"
        "print(sorted({'dask', 'zarr', 'ot', 'sklearn', 'mlflow', 'snakemake'} & set(sys.modules)))\n"
        "print(dir(amcore))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    imported, public = done.stdout.strip().splitlines()
    assert imported == "[]", done.stdout + done.stderr
    assert public == str(sorted([*amcore.__all__, "__version__"]))  # the public names, not the modules it imported


def test_the_library_trains_and_loads_without_the_pipelines_packages(tmp_path):
    """Snakemake and MLflow are the pipeline's extra (``amcore[pipeline]``, about 170 packages): the library trains,
    loads and pushes without them, and an MLflow model's URI says what it needs."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules.update(mlflow=None, snakemake=None)  # as if not installed: importing them fails\n"
        "import numpy as np, amcore\n"
        "x, t = np.random.default_rng(0).normal(size=(120, 2)), np.repeat([0.0, 1.0, 2.0], 40)\n"
        f"amcore.train(amcore.Snapshots.from_labels(x, t), amcore.TrainConfig(**{TINY!r}), 'm.pt')\n"
        "print(amcore.load('m.pt').push(x[:5], 0.0, 1.0).shape)\n"
        "try:\n"
        "    amcore.load('runs:/0123/model')\n"
        "except ModuleNotFoundError as err:\n"
        "    print(err)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shape, said = done.stdout.strip().splitlines()
    assert shape == "(5, 2)" and said.endswith("needs mlflow, which amcore installs with its pipeline: pip install "
                                               "'amcore[pipeline]' (or mlflow alone)")  # fmt: skip


def test_a_snapshot_store_and_a_trajectories_store_are_not_read_as_each_other(tmp_path):
    """Audit 95: read_trajectories returned a snapshot store (its x has no steps: the error came later, elsewhere), and
    read_store on a trajectories store raised a bare KeyError."""
    import xarray as xr

    from amcore.data.store import read_store, write_store
    from amcore.errors import InputError

    snaps = Snapshots.from_labels(np.zeros((20, 2), np.float32), np.repeat([0.0, 1.0], 10))
    write_store(tmp_path / "store.zarr", snaps)
    with pytest.raises(InputError, match="store.zarr: not a trajectories store .* a snapshot store: amcore.read_store"):
        amcore.read_trajectories(tmp_path / "store.zarr")
    pushed = xr.Dataset({"x": (("step", "particle", "feature"), np.zeros((2, 3, 2)))})
    pushed.to_zarr(tmp_path / "t.zarr", consolidated=False)
    assert amcore.read_trajectories(tmp_path / "t.zarr").x.shape == (2, 3, 2)
    with pytest.raises(InputError, match=r"t.zarr: not a snapshot store \(it lacks \['offsets', 't_values'\]\): a "
                                         "trajectories store or a held-out prediction"):  # fmt: skip
        read_store(tmp_path / "t.zarr")
    xr.Dataset({"y": ("n", np.zeros(3))}).to_zarr(tmp_path / "other.zarr", consolidated=False)
    with pytest.raises(InputError, match="other.zarr: not a trajectories store .* not written by amcore integrate"):
        amcore.read_trajectories(tmp_path / "other.zarr")
