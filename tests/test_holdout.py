import json
import re

import numpy as np
import pytest
from conftest import run_stages

from amcore import Snapshots
from amcore.errors import InputError
from amcore.evaluation.holdout import (
    bracket,
    copy_prev,
    external,
    ot_displacement,
    ot_push,
    prediction_variables,
    read_prediction,
    spline_path,
    write_prediction,
)
from amcore.metrics import wasserstein


def _snaps(shift=(3.0, -1.0), n=(80, 60, 80)):
    shift = np.asarray(shift)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((max(n), 2))
    x = np.concatenate([base[: n[0]], rng.standard_normal((n[1], 2)) + 10, base[: n[2]] + shift])
    return Snapshots.from_labels(x.astype(np.float32), np.repeat([0.0, 1.0, 4.0], n)), base, shift


def test_bracket_needs_an_observed_interior_time():
    snaps, _, _ = _snaps()
    assert bracket(snaps, 1.0) == (0, 1, 2)
    with pytest.raises(InputError, match="interior"):
        bracket(snaps, 4.0)
    with pytest.raises(InputError, match="not an observed time"):
        bracket(snaps, 2.0)


def test_a_store_holding_out_two_times_is_refused_by_every_baseline():
    """Held out at 1 and 4 (prepare --holdout-times 1 4): the displacement at 1 would have joined 0 and the held-out
    cells of 4, copy_prev at 4 returned the held-out cells of 1 (audit 5)."""
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((250, 2)), np.repeat([0.0, 1.0, 2.0, 4.0, 5.0], 50)
    snaps = Snapshots.from_labels(x, t, {"holdout_times": [1.0, 4.0]})
    for predict in (copy_prev, ot_displacement, ot_push, spline_path):
        with pytest.raises(InputError, match=r"the store holds out t = \[4.0\] besides 1: their cells would reach"):
            predict(snaps, 1.0)


def test_copy_prev_is_the_previous_snapshot():
    snaps, _, _ = _snaps()
    x, w = copy_prev(snaps, 1.0)
    np.testing.assert_array_equal(x, snaps.snapshot(0))
    assert w.sum() == pytest.approx(1.0)


def test_displacement_of_a_translated_cloud_is_the_translate_at_tau():
    """Between a cloud and its translate the OT map is the translation: at tau the cloud is shifted by tau c."""
    snaps, base, shift = _snaps()
    x, w = ot_displacement(snaps, 1.0)
    tau = (1.0 - 0.0) / (4.0 - 0.0)
    expected = base[:80] + tau * shift
    assert wasserstein(x, expected, wa=w) == pytest.approx(0.0, abs=1e-5)
    # Unequal sizes: the plan's support carries weights that still sum to one, marginals preserved.
    uneven, _, _ = _snaps(n=(80, 60, 50))
    x, w = ot_displacement(uneven, 1.0)
    assert w.sum() == pytest.approx(1.0) and len(x) >= 80


def test_ot_push_moves_each_previous_cell_along_the_plan():
    """Equal counts: the plan pairs each cell with its own translate, so every cell moves by tau c, in place (not
    only in distribution). Unequal counts: one point per previous cell, uniform weights, and the barycentric map
    keeps the plan's mean, so the push's mean is exactly (1 - tau) mean(a) + tau mean(b). Above max_size the
    subsampled previous cells are the ones pushed."""
    snaps, base, shift = _snaps()
    x, w = ot_push(snaps, 1.0)
    np.testing.assert_allclose(x, base[:80] + 0.25 * shift, atol=1e-5)
    assert w.sum() == pytest.approx(1.0)
    uneven, _, _ = _snaps(n=(80, 60, 50))
    x, w = ot_push(uneven, 1.0)
    a, b = np.asarray(uneven.snapshot(0), np.float64), np.asarray(uneven.snapshot(2), np.float64)
    assert x.shape == (80, 2) and np.allclose(w, 1 / 80)
    np.testing.assert_allclose(x.mean(0), 0.75 * a.mean(0) + 0.25 * b.mean(0), atol=1e-9)
    x, w = ot_push(uneven, 1.0, max_size=30)
    assert x.shape == (30, 2) and np.allclose(w, 1 / 30) and np.isfinite(x).all()


def test_prediction_round_trip(tmp_path):
    x = np.random.default_rng(1).standard_normal((30, 3))
    write_prediction(tmp_path / "p.zarr", x, np.full(30, 2.0), 1.5, 1.0)
    y, w, held_out = read_prediction(tmp_path / "p.zarr")
    np.testing.assert_allclose(y, x, rtol=1e-6)
    assert w.sum() == pytest.approx(1.0) and held_out == 1.5


def test_another_method_s_prediction_is_read_in_the_input_s_units_and_checked(tmp_path):
    """Audit 68: a methods developer had no documented way into the table; an npz of cells in the input's features
    is brought into the store's coordinates by its fitted preprocessing, and a wrong file is named with what it
    lacks."""
    from amcore.data.preprocess import Preprocessing

    snaps, _, _ = _snaps()
    mean, scale = np.array([1.0, -2.0]), np.array([2.0, 0.5])
    fitted = Preprocessing({"standardize": True, "whiten": False}, [0.0, 4.0], 160, mean=mean, scale=scale, n_input=2)
    snaps.attrs["preprocess"] = fitted.to_json()
    cells = np.random.default_rng(2).normal(size=(50, 2))
    np.savez(tmp_path / "mine.npz", X=cells)
    x, w = external(snaps, str(tmp_path / "mine.npz"))
    np.testing.assert_allclose(x, (cells - mean) / scale, rtol=1e-6)  # float32 once centred, as prepare stores
    assert (w == 1).all()
    np.savez(tmp_path / "weighted.npz", X=cells, weights=np.arange(50.0))
    assert external(snaps, str(tmp_path / "weighted.npz"))[1][7] == 7
    for name, arrays, message in (
        ("wide", {"X": np.ones((5, 3))}, "key 'X' must be (cells, 2), the input's features"),
        ("unnamed", {"cells": cells}, "no array 'X' (the predicted cells, one row each); it holds ['cells']"),
        ("negative", {"X": cells, "weights": -np.ones(50)}, "key 'weights' must be 50 finite numbers >= 0"),
    ):
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(InputError, match=re.escape(f"{tmp_path / name}.npz: {message}")):
            external(snaps, str(tmp_path / f"{name}.npz"))
    with pytest.raises(InputError, match="cannot read it as an npz"):
        external(snaps, str(tmp_path / "absent.npz"))
    np.save(tmp_path / "bare.npy", cells)  # review 71: a traceback; a missing X was wrapped in a second message
    with pytest.raises(InputError, match=r"bare.npy: an npz of named arrays X \(and weights\) is needed"):
        external(snaps, str(tmp_path / "bare.npy"))
    with pytest.raises(InputError) as said:
        external(snaps, str(tmp_path / "unnamed.npz"))
    assert str(said.value).count("unnamed.npz") == 1
    np.savez(tmp_path / "objects.npz", X=np.array([cells[0], "a"], dtype=object))  # review 73: numpy's bare error
    with pytest.raises(InputError, match=r"objects.npz: cannot read it as an npz of arrays X .*allow_pickle"):
        external(snaps, str(tmp_path / "objects.npz"))
    np.savez(tmp_path / "complex.npz", X=cells + 1j)
    with pytest.raises(InputError, match="X and weights must hold real numbers, got complex128"):
        external(snaps, str(tmp_path / "complex.npz"))
    del snaps.attrs["preprocess"]["n_input"]  # a store of an older amcore: its input's width unknown
    with pytest.raises(InputError, match="records no width of its input"):
        external(snaps, str(tmp_path / "mine.npz"))


def test_spline_path_follows_a_translation_and_never_reads_the_held_out_cells():
    """Cells translating at constant speed: OT chains pair each cell with itself and a spline through collinear knots
    is the straight line, so the baseline at the held-out time is the translated cloud to float rounding. The
    held-out cells are replaced by NaN: the baseline must not change (they never reach it)."""
    rng = np.random.default_rng(1)
    base, v = rng.standard_normal((50, 3)), np.array([0.5, -0.2, 0.1])
    times = np.array([0.0, 1.0, 2.5, 4.0, 6.0])
    x = np.concatenate([base + v * t for t in times]).astype(np.float64)
    labels = np.repeat(times, 50)
    truth = base + v * 2.5
    pred, w = spline_path(Snapshots.from_labels(x.astype(np.float32), labels), 2.5)
    np.testing.assert_allclose(w.sum(), 1.0)
    order = np.lexsort(pred.T[::-1]), np.lexsort(truth.T[::-1])
    np.testing.assert_allclose(pred[order[0]], truth[order[1]], atol=1e-4)
    x[labels == 2.5] = np.nan
    again, _ = spline_path(Snapshots.from_labels(x.astype(np.float32), labels, {"holdout_times": [2.5]}), 2.5)
    np.testing.assert_array_equal(again, pred)


def test_the_score_command_names_seed_zero_and_the_seedless_baselines(tmp_path, capsys):
    """Seeds come as strings from the pipeline and as integers from a user's JSON: seed 0 is printed as 0, a
    baseline's missing seed as '-'."""
    from amcore.cli import main
    from amcore.data.store import write_store

    snaps, _, _ = _snaps()
    snaps.attrs["holdout_times"] = [1.0]  # the split whose held-out time the predictions are at
    write_store(tmp_path / "store.zarr", snaps)
    for name, fn in (("copy_prev", copy_prev), ("ot_push", ot_push)):
        write_prediction(tmp_path / f"{name}.zarr", *fn(snaps, 1.0), 1.0, 0.0)
    entries = [("copy_prev", 0), ("ot_push", None)]
    predictions = {"predictions": [{"method": m, "seed": s, "path": str(tmp_path / f"{m}.zarr")} for m, s in entries]}
    params = {"max_exact_size": 500, "kernel_max_size": 500, "projections": 50, "seed": 0}
    assert main(["score", "--store", str(tmp_path / "store.zarr"), "--predictions", json.dumps(predictions),
                 "--params", json.dumps(params), "--out", str(tmp_path / "scores.json")]) == 0  # fmt: skip
    said = "".join(capsys.readouterr())
    assert "amcore score copy_prev (seed 0) at held-out t = 1" in said
    assert "amcore score ot_push (seed -) at held-out t = 1" in said


def test_a_prediction_resting_on_a_few_weighted_particles_is_scored_and_flagged(tmp_path, capsys):
    """Weights that put 95 % of the mass on 2 of 80 particles (effective size 2.8 %): the score keeps its
    distances, records the share, says FLAGGED, and the table lists it; equal weights record no share."""
    from amcore.cli import main
    from amcore.data.store import write_store

    snaps, _, _ = _snaps()
    snaps.attrs["holdout_times"] = [1.0]  # the split whose held-out time the predictions are at
    write_store(tmp_path / "store.zarr", snaps)
    x, _ = copy_prev(snaps, 1.0)
    weight = np.full(80, 0.05 / 78)
    weight[[4, 40]] = 0.475
    write_prediction(tmp_path / "few.zarr", x, weight, 1.0, 0.0)
    write_prediction(tmp_path / "even.zarr", x, np.ones(80), 1.0, 0.0)
    predictions = {
        "predictions": [{"method": m, "seed": "0", "path": str(tmp_path / f"{m}.zarr")} for m in ("few", "even")]
    }
    params = {"max_exact_size": 500, "kernel_max_size": 500, "projections": 50, "seed": 0}
    assert main(["score", "--store", str(tmp_path / "store.zarr"), "--predictions", json.dumps(predictions),
                 "--params", json.dumps(params), "--out", str(tmp_path / "scores.json")]) == 0  # fmt: skip
    results = {r["method"]: r["table"] for r in json.loads((tmp_path / "scores.json").read_text())["results"]}
    share = weight.sum() ** 2 / (80 * (weight**2).sum())
    assert results["few"]["effective_size"] == pytest.approx(share) and share < 0.1
    assert np.isfinite(results["few"]["w1"]) and "effective_size" not in results["even"]
    assert (
        "amcore score few (seed 0): FLAGGED: at t = 1 the weights rest the prediction on 2.8%"
        in capsys.readouterr().err
    )
    outputs = [str(tmp_path / name) for name in ("table.csv", "table.md", "table.png")]
    args = ["table", "--results", str(tmp_path / "scores.json"), "--table", outputs[0], "--markdown", outputs[1]]
    assert main([*args, "--figure", outputs[2]]) == 0
    text = (tmp_path / "table.md").read_text()
    assert "- few, held-out 1, seed 0: effective size 2.8% of the particles" in text
    assert "- even, held-out 1, seed 0: effective size" not in text
    # audit 95: with no method named am and no --reference, no reference is recorded (it was am), and summary asks
    assert "No paired differences: no reference (no method named am;" in text
    import pandas as pd

    assert set(pd.read_csv(outputs[0], keep_default_na=False)["reference"]) == {""}
    assert main(["summary", outputs[0]]) == 2
    assert "made with no reference (no method named am" in capsys.readouterr().err
    assert main([*args, "--figure", outputs[2], "--reference", "mine"]) == 2
    assert "--reference mine: no such method in the results (['even', 'few'])" in capsys.readouterr().err


def test_the_score_labels_its_split_with_every_digit_of_the_time(tmp_path):
    """The Snakefile names a split by repr of its time (1.2345678); the scores must too, or the table's joins and
    headings would name a time that is not there (:g gives 1.23457)."""
    from amcore.cli import main
    from amcore.data.store import write_store

    rng = np.random.default_rng(0)
    labels = np.repeat([0.0, 1.2345678, 2.0], 40)
    snaps = Snapshots.from_labels((rng.normal(size=(120, 2)) + labels[:, None]).astype(np.float32), labels)
    snaps.attrs["holdout_times"] = [1.2345678]
    write_store(tmp_path / "store.zarr", snaps)
    write_prediction(tmp_path / "copy.zarr", *copy_prev(snaps, 1.2345678), 1.2345678, 0.0)
    predictions = {"predictions": [{"method": "copy_prev", "seed": "", "path": str(tmp_path / "copy.zarr")}]}
    params = {"max_exact_size": 100, "kernel_max_size": 100, "projections": 20, "seed": 0}
    assert main(["score", "--store", str(tmp_path / "store.zarr"), "--predictions", json.dumps(predictions),
                 "--params", json.dumps(params), "--out", str(tmp_path / "scores.json")]) == 0  # fmt: skip
    (row,) = json.loads((tmp_path / "scores.json").read_text())["results"]
    assert row["holdout"] == "1.2345678"


def test_score_writes_how_each_difference_moves_with_the_held_out_cells_and_the_table_widens_by_it(tmp_path, capsys):
    """Two methods on three seeds and a baseline, scored against the 60 held-out cells: score writes, per ordered
    pair of methods, the variance of their W1 means' difference over the held-out cells' sampling (the influence
    functions at one set of cells, paired); it is the pair's own (symmetric, zero for a method against itself
    never written), and the table's interval for am - fm is wider than the seeds alone give."""
    from amcore.cli import main
    from amcore.data.store import write_store
    from amcore.evaluation.table import paired_differences

    snaps, _, _ = _snaps()
    snaps.attrs["holdout_times"] = [1.0]
    write_store(tmp_path / "store.zarr", snaps)
    rng = np.random.default_rng(1)
    entries = [{"method": "copy_prev", "seed": "", "path": str(tmp_path / "copy_prev.zarr")}]
    write_prediction(tmp_path / "copy_prev.zarr", *copy_prev(snaps, 1.0), 1.0, 0.0)
    for seed in range(3):
        for method, scale in (("am", 1.0), ("fm", 1.3)):
            path = str(tmp_path / f"{method}{seed}.zarr")
            write_prediction(path, rng.standard_normal((60, 2)) * scale + 10, np.ones(60), 1.0, 0.0)
            entries.append({"method": method, "seed": str(seed), "path": path})
    params = {"max_exact_size": 500, "kernel_max_size": 500, "projections": 50, "seed": 0}
    predictions = json.dumps({"predictions": entries})
    assert main(["score", "--store", str(tmp_path / "store.zarr"), "--predictions", predictions,
                 "--params", json.dumps(params), "--out", str(tmp_path / "scores.json")]) == 0  # fmt: skip
    variances = json.loads((tmp_path / "scores.json").read_text())["held_out_variance"]
    got = {(v["method"], v["peer"]): v["w1"] for v in variances}
    assert set(got) == {(a, b) for a in ("copy_prev", "am", "fm") for b in ("copy_prev", "am", "fm") if a != b}
    assert all(v["holdout"] == "1" for v in variances)
    assert got["am", "fm"] == pytest.approx(got["fm", "am"]) and got["am", "fm"] > 0
    # copy_prev (the first time's cells, far from the held-out ones) moves with the cells unlike am: a larger variance
    assert got["am", "copy_prev"] > got["am", "fm"]
    outputs = [str(tmp_path / name) for name in ("table.csv", "table.md", "table.png")]
    args = ["table", "--results", str(tmp_path / "scores.json"), "--table", outputs[0], "--markdown", outputs[1]]
    assert main([*args, "--figure", outputs[2]]) == 0
    import pandas as pd

    table = pd.read_csv(outputs[0], keep_default_na=False, dtype={"holdout": str, "seed": str})
    mean, low, high, _, cells = paired_differences(table)["fm"]["1"]
    seeds_only = paired_differences(table[~table["metric"].str.startswith("w1_held_out_var")])["fm"]["1"]
    assert seeds_only[0] == mean and high - low > seeds_only[2] - seeds_only[1] and cells and not seeds_only[4]
    assert "sampling of the held-out cells" in (tmp_path / "table.md").read_text()
    assert main(["summary", outputs[0]]) == 0  # the summary's intervals hold it too
    assert main(["summary", outputs[0], "--metric", "w1_held_out_var:fm"]) == 2, "a pair's variance is no metric"
    # The table records what it paired against, and summary pairs against that unless told otherwise: a config's
    # reference fm used to be summarised against am unless --reference was given again.
    assert main([*args, "--figure", outputs[2], "--reference", "fm"]) == 0
    assert set(pd.read_csv(outputs[0])["reference"]) == {"fm"}
    capsys.readouterr()
    assert main(["summary", outputs[0]]) == 0
    said = capsys.readouterr().out
    assert "### fm − peer" in said and "| fm | reference |" in said and "| am | reference |" not in said
    assert main(["summary", outputs[0], "--reference", "am"]) == 0
    assert "| am | reference |" in capsys.readouterr().out
    edited = pd.read_csv(outputs[0], keep_default_na=False, dtype=str)
    edited.loc[0, "reference"] = "am"
    edited.to_csv(tmp_path / "mixed.csv", index=False)
    assert main(["summary", str(tmp_path / "mixed.csv")]) == 2
    assert "mixed.csv: column 'reference' holds ['am', 'fm']" in capsys.readouterr().err


def test_score_checks_every_seeds_whole_course(tmp_path, capsys):
    """Each seed's push from the first time, not only the first seed's (evaluate's): one that lands on the last
    time scores far below one noise floor; one that overshoots by 30 runs the course off, leaves the data and is
    flagged (an SDE's flag names its noise sigma too); a baseline has no course."""
    from amcore.cli import main
    from amcore.data.store import write_store
    from amcore.models.integrate import TrajectoryWriter

    snaps, base, shift = _snaps()
    snaps.attrs["holdout_times"] = [1.0]
    write_store(tmp_path / "store.zarr", snaps)
    held = np.asarray(snaps.snapshot(1))[np.arange(80) % 60]
    lost = base[:80] + shift
    lost[:7] = np.nan  # 7 cells lost on the way: they left the data too
    far = base[:80] + shift + 30.0
    for seed, last, method in ((0, base[:80] + shift, "ode"), (1, far, "sde"), (2, lost, "ode"), (3, far, "ode")):
        extra = prediction_variables(held, np.ones(80), 1.0, 0.0, pushed=True)
        with TrajectoryWriter(tmp_path / f"am{seed}.zarr", np.array([0.0, 1.0, 4.0]), np.ones(3, bool), 80, 2,
                              False, extra=extra, method=method) as out:  # fmt: skip
            for step, x in enumerate((base[:80], held, last)):
                out.x[step, 0:80] = x.astype(np.float32)
    write_prediction(tmp_path / "copy_prev.zarr", *copy_prev(snaps, 1.0), 1.0, 0.0)
    entries = [{"method": "am", "seed": s, "path": str(tmp_path / f"am{s}.zarr")} for s in (0, 1, 2, 3)]
    entries.append({"method": "copy_prev", "seed": "", "path": str(tmp_path / "copy_prev.zarr")})
    params = {"max_exact_size": 500, "kernel_max_size": 500, "projections": 50, "seed": 0}
    predictions = json.dumps({"predictions": entries})
    assert main(["score", "--store", str(tmp_path / "store.zarr"), "--predictions", predictions,
                 "--params", json.dumps(params), "--out", str(tmp_path / "scores.json")]) == 0  # fmt: skip
    rows = [r["table"] for r in json.loads((tmp_path / "scores.json").read_text())["results"]]
    assert rows[0]["course_excess"] < -1 and rows[0]["course_escaped"] == 0
    assert rows[1]["course_excess"] > 10 and rows[1]["course_escaped"] > 40
    assert rows[2]["course_escaped"] == 7 and np.isnan(rows[2]["course_excess"])  # NaN cells are never a score
    assert "course_excess" not in rows[4] and "course_mass_error" not in rows[0]
    said = capsys.readouterr().err
    assert "amcore score am (seed 1): FLAGGED: pushed from the first time" in said
    assert "amcore score am (seed 0): FLAGGED" not in said
    # an SDE's push (eAM) may run off by its noise alone: its line names sigma, an ODE's does not
    flagged = {line.split(")")[0]: line for line in said.splitlines() if "FLAGGED" in line}
    assert "noise sigma is too large" in flagged["amcore score am (seed 1"]
    assert "sigma" not in flagged["amcore score am (seed 3"]


def test_score_gives_each_model_its_fields_error_against_the_truth_at_evaluates_times(tmp_path, capsys):
    """Audit 27: a held-out table of simulated data had no truth errors. Score reads each model's checkpoint and
    draws evaluate's samples at evaluate's times (`n_times` of dense frames: review), so the first seed's error is
    evaluate's; a checkpoint of another store stops score before any distance, nothing written."""
    from amcore.cli import main

    dataset = {"source": "simulate", "simulator": "gaussian_path", "params": {"dim": 2},
               "times": [0, 0.25, 0.5, 0.75, 1], "n_per_time": 100, "seed": 0}  # fmt: skip
    settings = {"truth_samples": 300, "n_times": 2}
    store, run = run_stages(tmp_path, dataset, "0.5", steps=30, steps_per_interval=4, evaluate=settings)
    evaluated = json.loads((run / "metrics.json").read_text())["velocity_rel_error"]

    def score(entry: dict, out: str) -> int:
        predictions = json.dumps({"predictions": [{"method": "am", "seed": "0", "path": str(run / "t.zarr")} | entry]})
        return main(["score", "--store", str(store), "--predictions", predictions, "--params",
                     json.dumps(settings), "--out", str(tmp_path / out)])  # fmt: skip

    assert score({"checkpoint": str(run / "m.pt")}, "with.json") == 0
    (row,) = json.loads((tmp_path / "with.json").read_text())["results"]
    assert row["table"]["velocity_rel_error"] == evaluated
    assert score({}, "without.json") == 0  # no checkpoint: no truth error
    assert "velocity_rel_error" not in json.loads((tmp_path / "without.json").read_text())["results"][0]["table"]
    other = tmp_path / "other.zarr"
    assert main(["prepare", "--dataset", json.dumps(dataset), "--out", str(other), "--summary",
                 str(tmp_path / "o.json")]) == 0  # fmt: skip
    params = {"objective": "am", "steps": 30, "width": 16, "depth": 2, "log_every": 10}
    assert main(["train", "--store", str(other), "--params", json.dumps(params), "--checkpoint",
                 str(tmp_path / "o.pt"), "--loss-csv", str(tmp_path / "o.csv")]) == 0  # fmt: skip
    capsys.readouterr()
    assert score({"checkpoint": str(tmp_path / "o.pt")}, "bad.json") == 2
    assert "trained on another store" in capsys.readouterr().err and not (tmp_path / "bad.json").exists()
