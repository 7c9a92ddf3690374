"""The CLI refuses, before any work and with exit status 2, what would destroy data or score the wrong thing: an
output that is an input or a folder of someone's files, a damaged checkpoint, trajectories of another store, a
baseline at a time that was trained on, a summary of a metric no table has."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import amcore
from amcore import Snapshots, TrainConfig, train
from amcore.cli import main
from amcore.data.store import write_store

PARAMS = {"max_exact_size": 200, "kernel_max_size": 200, "projections": 20, "seed": 0}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Two stores (times 0, 1, 2 with 1 held out; and 0, 2, 4, 6), a tiny AM checkpoint and its trajectories."""
    root = tmp_path_factory.mktemp("guards")
    rng = np.random.default_rng(0)
    for name, times, held_out in (("store", [0.0, 1.0, 2.0], [1.0]), ("other", [0.0, 2.0, 4.0, 6.0], [])):
        labels = np.repeat(times, 60)
        snaps = Snapshots.from_labels(
            (rng.standard_normal((len(labels), 2)) + labels[:, None]).astype(np.float32), labels
        )
        snaps.attrs["holdout_times"] = held_out
        write_store(root / f"{name}.zarr", snaps)
    training = Snapshots.from_labels(
        np.zeros((120, 2), np.float32) + np.repeat([0.0, 6.0], 60)[:, None], np.repeat([0.0, 6.0], 60)
    )
    train(training, TrainConfig(steps=20, width=8, depth=1, log_every=10), root / "model.pt", root / "loss.csv")
    integrate = ["integrate", "--checkpoint", str(root / "model.pt"), "--params", '{"steps_per_interval": 2}']
    assert main([*integrate, "--store", str(root / "other.zarr"), "--out", str(root / "other-traj.zarr")]) == 0
    return root


def refused(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    return capsys.readouterr().err


def test_an_output_that_is_an_input_or_a_foreign_folder_is_refused_and_left_alone(work, capsys, tmp_path):
    store = str(work / "store.zarr")
    said = refused(capsys, "integrate", "--store", store, "--checkpoint", str(work / "model.pt"),
                   "--params", '{"steps_per_interval": 2}', "--out", store)  # fmt: skip
    assert "--out" in said and "is also --store" in said
    assert (work / "store.zarr" / "zarr.json").exists() or (work / "store.zarr" / ".zgroup").exists()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("a month of work")
    said = refused(
        capsys, "baseline", "--store", store, "--holdout", "1", "--name", "copy_prev", "--out", str(precious)
    )
    assert "did not write" in said and (precious / "notes.txt").read_text() == "a month of work"
    (tmp_path / "afile").write_text("x")
    said = refused(capsys, "baseline", "--store", store, "--holdout", "1", "--name", "copy_prev",
                   "--out", str(tmp_path / "afile" / "p.zarr"))  # fmt: skip
    assert "is a file, not a folder" in said and not (tmp_path / "p.zarr").exists()
    said = refused(capsys, "baseline", "--store", store, "--holdout", "1", "--name", "copy_prev",
                   "--out", str(tmp_path / "afile"))  # fmt: skip
    assert "is a file: amcore writes a zarr store" in said and (tmp_path / "afile").read_text() == "x"


def test_a_model_is_used_only_on_the_store_it_was_trained_on(capsys, tmp_path):
    """Two prepared stores of as many features (two simulators): integrate and export of one's model on the other
    ran without a word (the coordinates mean other things there)."""
    from amcore.cli import main as amcore_main
    from amcore.data.prepare import build_snapshots

    for name, simulator in (("a", "gaussian_path"), ("b", "ornstein_uhlenbeck")):
        spec = {"source": "simulate", "simulator": simulator, "times": [0.0, 0.5, 1.0], "n_per_time": 60, "seed": 0}
        write_store(tmp_path / f"{name}.zarr", build_snapshots(spec))
    fit = [
        "--params",
        '{"steps": 10, "width": 8}',
        "--checkpoint",
        str(tmp_path / "m.pt"),
        "--loss-csv",
        str(tmp_path / "m.csv"),
    ]
    assert amcore_main(["train", "--store", str(tmp_path / "a.zarr"), *fit]) == 0
    push = ["integrate", "--checkpoint", str(tmp_path / "m.pt"), "--params", '{"steps_per_interval": 2}']
    said = refused(capsys, *push, "--store", str(tmp_path / "b.zarr"), "--out", str(tmp_path / "t.zarr"))
    assert f"{tmp_path / 'm.pt'} was trained on another store than {tmp_path / 'b.zarr'}" in said
    assert not (tmp_path / "t.zarr").exists()
    assert amcore_main([*push, "--store", str(tmp_path / "a.zarr"), "--out", str(tmp_path / "t.zarr")]) == 0


def test_a_damaged_checkpoint_is_named_never_a_traceback(work, capsys, tmp_path):
    whole = (work / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    said = refused(capsys, "integrate", "--store", str(work / "store.zarr"), "--checkpoint", str(tmp_path / "cut.pt"),
                   "--params", '{"steps_per_interval": 2}', "--out", str(tmp_path / "t.zarr"))  # fmt: skip
    assert f"{tmp_path / 'cut.pt'}: not a readable amcore checkpoint" in said and not (tmp_path / "t.zarr").exists()
    said = refused(capsys, "integrate", "--store", str(work / "store.zarr"), "--checkpoint", str(work / "model.pt"),
                   "--params", '{"steps_per_interval": 0}', "--out", str(tmp_path / "t.zarr"))  # fmt: skip
    assert "steps_per_interval: expected a whole number of steps >= 1, got 0" in said
    typo = '{"steps_per_interval": 2, "methd": "euler"}'
    said = refused(capsys, "integrate", "--store", str(work / "store.zarr"), "--checkpoint", str(work / "model.pt"),
                   "--params", typo, "--out", str(tmp_path / "t.zarr"))  # fmt: skip
    assert "unknown integrate setting 'methd' (did you mean 'method'?)" in said


def test_a_model_trained_on_the_held_out_time_never_predicts_it(work, capsys, tmp_path):
    """A checkpoint trained on all of times 0, 1, 2 pushed onto the split that holds 1 out: refused (the leak);
    the same model trained on that split's store (1 dropped) predicts it."""
    labels = np.repeat([0.0, 1.0, 2.0], 60)
    snaps = Snapshots.from_labels(
        (np.random.default_rng(1).normal(size=(180, 2)) + labels[:, None]).astype(np.float32), labels
    )
    cfg = TrainConfig(steps=10, width=8, depth=1, log_every=5)
    train(snaps, cfg, tmp_path / "all.pt", tmp_path / "all.csv")
    args = ["integrate", "--store", str(work / "store.zarr"), "--params", '{"steps_per_interval": 2}']
    said = refused(capsys, *args, "--checkpoint", str(tmp_path / "all.pt"), "--out", str(tmp_path / "t.zarr"))
    assert "was trained on t = 1, which" in said and "seen the answer" in said and not (tmp_path / "t.zarr").exists()
    from amcore.data.store import read_store

    train(read_store(work / "store.zarr"), cfg, tmp_path / "split.pt", tmp_path / "split.csv")
    assert amcore.load(tmp_path / "split.pt").info["trained_times"] == [0.0, 2.0]
    assert main([*args, "--checkpoint", str(tmp_path / "split.pt"), "--out", str(tmp_path / "t.zarr")]) == 0


def test_trajectories_of_another_store_and_a_trained_time_are_not_scored(work, capsys, tmp_path):
    said = refused(capsys, "evaluate", "--model", "am", "--store", str(work / "store.zarr"),
                   "--checkpoint", str(work / "model.pt"), "--trajectories", str(work / "other-traj.zarr"),
                   "--loss-csv", str(work / "loss.csv"), "--params", json.dumps(PARAMS),
                   "--metrics", str(tmp_path / "metrics.json"), "--plots", str(tmp_path / "plots"))  # fmt: skip
    assert "trajectories of another store" in said and not (tmp_path / "metrics.json").exists()
    (tmp_path / "loss.csv").write_text("epoch,value\n1,2\n")
    said = refused(capsys, "evaluate", "--model", "am", "--store", str(work / "other.zarr"),
                   "--checkpoint", str(work / "model.pt"), "--trajectories", str(work / "other-traj.zarr"),
                   "--loss-csv", str(tmp_path / "loss.csv"), "--params", json.dumps(PARAMS),
                   "--metrics", str(tmp_path / "metrics.json"), "--plots", str(tmp_path / "plots"))  # fmt: skip
    assert "expected amcore train's loss CSV (columns step, loss)" in said and not (tmp_path / "plots").exists()
    said = refused(capsys, "evaluate", "--model", "am", "--holdout", "7", "--store", str(work / "other.zarr"),
                   "--checkpoint", str(work / "model.pt"), "--trajectories", str(work / "other-traj.zarr"),
                   "--loss-csv", str(work / "loss.csv"), "--params", json.dumps(PARAMS),
                   "--metrics", str(tmp_path / "metrics.json"), "--plots", str(tmp_path / "plots"))  # fmt: skip
    assert "--holdout 7, but" in said and "holds out no time" in said
    said = refused(capsys, "baseline", "--store", str(work / "store.zarr"), "--holdout", "2", "--name", "copy_prev",
                   "--out", str(tmp_path / "p.zarr"))  # fmt: skip
    assert "--holdout 2, but" in said and "holds out [1.0]: its cells were trained on" in said
    assert not (tmp_path / "p.zarr").exists()
    from amcore.evaluation.holdout import write_prediction

    write_prediction(tmp_path / "p2.zarr", np.zeros((5, 2)), np.ones(5), 2.0, 0.0)  # held out 2: another split
    write_prediction(tmp_path / "p3.zarr", np.zeros((5, 3)), np.ones(5), 1.0, 0.0)  # three features
    cases = [("store", "p2.zarr", "a prediction of another split"), ("store", "p3.zarr", "another dataset"),
             ("other", "p2.zarr", "holds out no time: a prediction of another split")]  # fmt: skip
    for store, path, why in cases:
        entry = {"predictions": [{"method": "x", "seed": "", "path": str(tmp_path / path)}]}
        said = refused(capsys, "score", "--store", str(work / f"{store}.zarr"), "--predictions", json.dumps(entry),
                       "--params", json.dumps(PARAMS), "--out", str(tmp_path / "scores.json"))  # fmt: skip
        assert why in said and not (tmp_path / "scores.json").exists()


def test_a_summary_of_a_metric_or_reference_no_table_has_is_refused(capsys, tmp_path):
    folder = tmp_path / "eb"
    folder.mkdir()
    rows = ["method,holdout,seed,metric,value", "am,1,0,w1,0.8", "am,1,1,w1,0.9", "copy_prev,1,,w1,1.2"]
    (folder / "table.csv").write_text("\n".join(rows) + "\n")
    assert "--metric w11: not in eb's table (it has ['w1'])" in refused(
        capsys, "summary", str(folder / "table.csv"), "--metric", "w11"
    )
    assert "--reference amm: no such method in eb's table" in refused(
        capsys, "summary", str(folder / "table.csv"), "--reference", "amm"
    )
    assert main(["summary", str(folder / "table.csv")]) == 0


def test_summary_tells_tables_in_folders_of_one_name_apart_and_refuses_what_is_no_table(capsys, tmp_path):
    """runs_a/eb and runs_b/eb were one column holding the second table; the same table twice counted once; a
    table without amcore's columns or with text values crashed with a pandas error."""
    rows = ["method,holdout,seed,metric,value", "am,1,0,w1,{}", "copy_prev,1,,w1,1.2"]
    for run, value in (("runs_a", 0.8), ("runs_b", 0.5)):
        (tmp_path / run / "eb").mkdir(parents=True)
        (tmp_path / run / "eb" / "table.csv").write_text("\n".join(rows).format(value) + "\n")
    tables = [str(tmp_path / run / "eb" / "table.csv") for run in ("runs_a", "runs_b")]
    assert main(["summary", *tables]) == 0
    text = capsys.readouterr().out
    assert "runs_a/eb" in text and "runs_b/eb" in text and "0.8" in text and "0.5" in text
    assert "the same table given twice" in refused(capsys, "summary", tables[0], tables[0])
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert "not an amcore table (no columns ['holdout', 'method', 'metric', 'seed', 'value'])" in refused(
        capsys, "summary", str(tmp_path / "other.csv")
    )
    (tmp_path / "text.csv").write_text("\n".join(rows).format("high") + "\n")
    assert "column 'value' holds text" in refused(capsys, "summary", str(tmp_path / "text.csv"))
    # audit 41: table.md met pandas' tokenizer; a copy counted as a second dataset; make run's table (no held-out
    # time) joined results/*/table.csv as if held out; a seed without one time averaged the others; "0 seeds" of a
    # reference that has no such metric
    (tmp_path / "table.md").write_text("## w1 by held-out time\n\n| method | 1 | 2 |\n|---|---|---|\n")
    assert "table.md: table.md is the table's rendering; give the table.csv" in refused(
        capsys, "summary", str(tmp_path / "table.md"))  # fmt: skip
    (tmp_path / "ragged.csv").write_text("method,holdout\nam,1\nam,1,0,w1\n")
    assert "ragged.csv: not an amcore table (not CSV: Error tokenizing" in refused(
        capsys, "summary", str(tmp_path / "ragged.csv"))  # fmt: skip
    (tmp_path / "copy" / "eb").mkdir(parents=True)
    reordered = (tmp_path / "runs_a" / "eb" / "table.csv").read_text().splitlines()
    (tmp_path / "copy" / "eb" / "table.csv").write_text("\n".join([reordered[0], *reordered[:0:-1]]) + "\n")
    assert "holds the held-out rows of" in refused(capsys, "summary", tables[0], str(tmp_path / "copy/eb/table.csv"))
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "table.csv").write_text("method,holdout,seed,metric,value\nam,none,0,w1,0.07\n")
    assert main(["summary", tables[0], str(tmp_path / "default" / "table.csv")]) == 0
    said = capsys.readouterr()
    assert "default: no held-out time" in said.err and "default" not in said.out
    assert "none of the tables holds a held-out time" in refused(capsys, "summary", str(tmp_path / "default/table.csv"))
    assert "--reference default=uam: default was left out (no held-out time)" in refused(
        capsys, "summary", tables[0], str(tmp_path / "default/table.csv"), "--reference", "default=uam")  # fmt: skip
    (tmp_path / "empty.csv").write_text("")
    said = refused(capsys, "summary", str(tmp_path / "empty.csv"))
    assert "empty.csv: not an amcore table (not CSV: No columns" in said
    (tmp_path / "cut").mkdir()
    cut = ["method,holdout,seed,metric,value", "am,1,0,w1,0.8", "am,2,0,w1,0.9", "am,1,1,w1,0.7", "uam,1,0,mmd,0.1"]
    (tmp_path / "cut" / "table.csv").write_text("\n".join(cut) + "\n")
    assert "am (seed 1) has no w1 at held-out ['2'], which other runs have" in refused(
        capsys, "summary", str(tmp_path / "cut" / "table.csv"))  # fmt: skip
    whole = [*cut, "am,2,1,w1,0.8", "uam,1,1,mmd,0.2", "copy_prev,1,,w1,1.2"]  # copy_prev never scored at t = 2
    (tmp_path / "cut" / "table.csv").write_text("\n".join(whole) + "\n")
    assert "copy_prev (one value) has no w1 at held-out ['2']" in refused(
        capsys, "summary", str(tmp_path / "cut" / "table.csv"))  # fmt: skip
    # Complete in what is averaged: another metric scored at some times only (an older amcore) and rows of a split
    # without a held-out time (they averaged in: 25.65 for 0.8) pass, and the latter stay out of the means.
    whole = [*whole, "copy_prev,2,,w1,1.3", "am,1,0,course_excess,0.1", "am,none,0,w1,99", "am,none,1,w1,99"]
    (tmp_path / "cut" / "table.csv").write_text("\n".join(whole) + "\n")
    assert main(["summary", str(tmp_path / "cut" / "table.csv"), "--metric", "mmd", "--reference", "uam"]) == 0
    assert main(["summary", str(tmp_path / "cut" / "table.csv"), "--reference", "uam"]) == 0
    said = capsys.readouterr().out
    assert "nothing to pair (uam has no w1)" in said and "| am | 0.8 ± 0.071 |" in said and "99" not in said


def test_a_missing_key_is_named_as_one(capsys, tmp_path):
    """A results JSON that is not amcore's: the message says a key is missing, not just the key's name."""
    (tmp_path / "scores.json").write_text('{"foo": 1}')
    out = [str(tmp_path / name) for name in ("t.csv", "t.md", "t.png")]
    said = refused(capsys, "table", "--results", str(tmp_path / "scores.json"), "--table", out[0], "--markdown", out[1],
                   "--figure", out[2])  # fmt: skip
    assert "amcore table: error: missing key 'table'" in said and not any(Path(o).exists() for o in out)
    (tmp_path / "list.json").write_text("[1, 2]")
    said = refused(capsys, "table", "--results", str(tmp_path / "list.json"), "--table", out[0], "--markdown", out[1],
                   "--figure", out[2])  # fmt: skip
    assert "list.json: a JSON list; expected amcore evaluate's metrics.json" in said
    (tmp_path / "text.json").write_text("not json")
    said = refused(capsys, "table", "--results", str(tmp_path / "text.json"), "--table", out[0], "--markdown", out[1],
                   "--figure", out[2])  # fmt: skip
    assert "text.json: not JSON" in said
    said = refused(capsys, "table", "--results", str(tmp_path / "scores.json"), str(tmp_path / "scores.json"),
                   "--table", out[0], "--markdown", out[1], "--figure", out[2])  # fmt: skip
    assert "a file given twice would count its runs twice" in said and not any(Path(o).exists() for o in out)
    # two experiments' scores of the same split: their rows would be averaged as seeds (am 1.742 +- 0.0087 over
    # two datasets in the audit)
    for name, w1 in (("a", 1.0), ("b", 2.0)):
        run = {"method": "am", "holdout": "24", "seed": "0", "table": {"w1": w1}}
        (tmp_path / f"{name}.json").write_text(json.dumps({"results": [run]}))
    said = refused(capsys, "table", "--results", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                   "--table", out[0], "--markdown", out[1], "--figure", out[2])  # fmt: skip
    assert "a.json and " in said and "b.json both hold method 'am' at holdout 24 with seed 0" in said
    assert not any(Path(o).exists() for o in out)


def test_a_dataset_key_with_a_typo_is_refused_and_the_keys_match_the_schema(capsys, tmp_path):
    """`x_kye` would have read the default `X` without a word; the code's keys are the schema's."""
    import yaml
    from conftest import ROOT

    from amcore.data.prepare import DATASET_KEYS

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert DATASET_KEYS == set(schema["properties"]["dataset"]["properties"])
    labels = np.repeat([0.0, 1.0, 2.0], 10)
    np.savez(tmp_path / "d.npz", X=np.zeros((30, 2)), t=labels)
    spec = {"source": "npz", "path": str(tmp_path / "d.npz"), "x_kye": "X"}
    out = ["--out", str(tmp_path / "s.zarr"), "--summary", str(tmp_path / "s.json")]
    said = refused(capsys, "prepare", "--dataset", json.dumps(spec), *out)
    assert "dataset: unknown key 'x_kye' (did you mean 'x_key'?)" in said and not (tmp_path / "s.zarr").exists()
    said = refused(capsys, "prepare", "--dataset", json.dumps({"path": str(tmp_path / "d.npz")}), *out)
    assert "dataset: no source" in said
    # A key the source never reads, other than its default, is refused (audit 23: it retrained all for nothing);
    # the schema's defaults pass wherever they are laid, and so do the keys each source does read.
    defaults = {key: spec["default"] for key, spec in schema["properties"]["dataset"]["properties"].items()
                if "default" in spec}  # fmt: skip
    for source, unread in (("npz", {"format": "npy", "feature_columns": ["a"]}), ("csv", {"x_key": "Y"}),
                           ("directory", {"t_key": "day"}),  # its times come from the file names
                           ("simulate", {"time_map": {"a": 1.0}, "v_key": "v"})):  # fmt: skip
        said = refused(capsys, "prepare", "--dataset", json.dumps(defaults | {"source": source} | unread), *out)
        assert f"dataset.{', dataset.'.join(sorted(unread))}: the source {source!r} never reads" in said, said
    # A directory reads what its files' format reads: x_key beside CSV files, feature_columns beside npz ones.
    (tmp_path / "csvs").mkdir()
    pd.DataFrame({"a": [0.0] * 3}).to_csv(tmp_path / "csvs" / "day1.csv", index=False)
    for fmt, folder, unread in (
        ("csv", {"path": str(tmp_path / "csvs")}, {"x_key": "Y"}),  # format: the suffix
        ("npz", {"path": str(tmp_path), "format": "npz"}, {"feature_columns": ["a"]}),
    ):
        folder = {"source": "directory", **folder}
        said = refused(capsys, "prepare", "--dataset", json.dumps(defaults | folder | unread), *out)
        assert f"dataset.{next(iter(unread))}: the source 'directory' of {fmt} files never reads it" in said, said
    simulate = defaults | {"source": "simulate", "simulator": "gaussian_path", "params": {"dim": 2}, "times": [0, 1]}
    assert main(["prepare", "--dataset", json.dumps(simulate), *out]) == 0
    pd.DataFrame({"a": [0.0] * 6, "t": [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]}).to_csv(tmp_path / "d.csv", index=False)
    csv = defaults | {"source": "csv", "path": str(tmp_path / "d.csv"), "feature_columns": ["a"], "time_map": {}}
    assert main(["prepare", "--dataset", json.dumps(csv), "--out", str(tmp_path / "c.zarr"), "--summary",
                 str(tmp_path / "c.json")]) == 0  # fmt: skip


def test_times_a_nanosecond_apart_are_different_times(capsys, tmp_path):
    """Times in seconds, 1e-9 apart: the model trained without the held-out time predicts it (numpy's default
    tolerance, 1e-8 absolute, read 0 and 2e-9 as the held-out 1e-9 and refused the push as a leak)."""
    from amcore.data.store import read_store

    labels = np.repeat([0.0, 1e-9, 2e-9], 40)
    x = np.random.default_rng(2).normal(size=(120, 2)) + 1e9 * labels[:, None]
    snaps = Snapshots.from_labels(x.astype(np.float32), labels, {"holdout_times": [1e-9]})
    write_store(tmp_path / "ns.zarr", snaps)
    train(read_store(tmp_path / "ns.zarr"), TrainConfig(steps=10, width=8, depth=1, log_every=5),
          tmp_path / "m.pt", tmp_path / "m.csv")  # fmt: skip
    args = ["integrate", "--store", str(tmp_path / "ns.zarr"), "--checkpoint", str(tmp_path / "m.pt")]
    assert main([*args, "--params", '{"steps_per_interval": 2}', "--out", str(tmp_path / "t.zarr")]) == 0
    assert "error" not in capsys.readouterr().err


def test_prepare_warns_of_cells_far_from_their_time(capsys, tmp_path):
    """1 % of cells 100 times farther than the rest (audit 6: AM then lost to the previous time unmoved) are named
    with their share per time; Gaussian cells, however many, are not, nor sparse counts' ordinary cells (about half
    of each feature's cells zero, the rest |N(t, 1)|: their MAD is near 0, and audit 88 read 16 of 40 as far)."""
    from amcore.cli import main

    rng = np.random.default_rng(0)
    labels = np.repeat([0.0, 1.0, 2.0], 300)
    x = rng.normal(size=(900, 5)) + labels[:, None]
    np.savez(tmp_path / "calm.npz", X=x, t=labels)
    zero = np.argsort(rng.random((900, 5)), axis=0) < 405  # 45 % of each feature's cells, about as many a time
    np.savez(tmp_path / "sparse.npz", X=np.where(zero, 0.0, np.abs(x)), t=labels)
    x[::100] *= 100  # three cells a time
    np.savez(tmp_path / "far.npz", X=x, t=labels)
    for name, warned in (("calm", False), ("sparse", False), ("far", True)):
        spec = {"source": "npz", "path": str(tmp_path / f"{name}.npz")}
        out = ["--out", str(tmp_path / f"{name}.zarr"), "--summary", str(tmp_path / f"{name}.json")]
        assert main(["prepare", "--dataset", json.dumps(spec), "--preprocess", '{"standardize": true}', *out]) == 0
        said = capsys.readouterr().err
        assert ("from their time's median in some feature (t = 0: 3 of 300, t = 1: 3 of 300, t = 2: 3 of 300 cells "
                "read;" in said) is warned, said  # fmt: skip
        assert ("robust spreads" in said) is warned, said
    # A time of 3 Gaussian cells has no robust spread to judge by: its MAD put a normal cell 39 spreads away and
    # prepare told the user to drop a third of it (audit 15).
    labels = np.repeat([0.0, 1.0, 2.0], [300, 3, 300])
    cells = rng.normal(size=(603, 2))
    cells[300:303] = [[0.0, 0.0], [0.01, 0.01], [1.0, 1.0]]  # ordinary cells; their MAD is 0.01
    np.savez(tmp_path / "few.npz", X=cells, t=labels)
    spec = {"source": "npz", "path": str(tmp_path / "few.npz")}
    out = ["--out", str(tmp_path / "few.zarr"), "--summary", str(tmp_path / "few.json")]
    assert main(["prepare", "--dataset", json.dumps(spec), *out]) == 0
    assert "robust spreads" not in capsys.readouterr().err


def test_prepare_warns_of_cells_that_repeat_others(capsys, tmp_path):
    """Five copies of each cell set the noise floor at 0.283 where a good prediction scored 0.428 (audit 15), in
    silence; continuous cells are not warned of."""
    from amcore.cli import main

    rng = np.random.default_rng(0)
    labels = np.repeat([0.0, 1.0, 2.0], 300)
    cells = rng.normal(size=(900, 2)) + labels[:, None]
    np.savez(tmp_path / "distinct.npz", X=cells, t=labels)
    np.savez(tmp_path / "copies.npz", X=np.repeat(cells[::5], 5, axis=0), t=labels)
    for name, warned in (("distinct", False), ("copies", True)):
        spec = {"source": "npz", "path": str(tmp_path / f"{name}.npz")}
        out = ["--out", str(tmp_path / f"{name}.zarr"), "--summary", str(tmp_path / f"{name}.json")]
        assert main(["prepare", "--dataset", json.dumps(spec), *out]) == 0
        said = capsys.readouterr().err
        assert ("repeat another cell of their time exactly (t = 0: 80%, t = 1: 80%, t = 2: 80%)" in said) is warned
        assert "cells equal to a cell of another time" not in said and "take two values" not in said
    # audit 38: half of t = 2's cells copied from t = 1 (copy_prev then tied AM), and a 0/1 feature, in silence
    shared = cells.copy()
    shared[600:750] = cells[300:450]
    binary = np.c_[cells, (np.random.default_rng(1).random(900) < 0.2 + 0.2 * labels).astype(float)]
    copied = "cells equal to a cell of another time exactly (t = 1, 2: 50% of t = 2's cells; from samples"
    two = "1 of 3 features take two values only in the cells read (x2)"
    for name, x, warning in (("shared", shared, copied), ("binary", binary, two)):
        np.savez(tmp_path / f"{name}.npz", X=x, t=labels)
        spec = {"source": "npz", "path": str(tmp_path / f"{name}.npz")}
        out = ["--out", str(tmp_path / f"{name}.zarr"), "--summary", str(tmp_path / f"{name}.json")]
        assert main(["prepare", "--dataset", json.dumps(spec), *out]) == 0
        assert warning in capsys.readouterr().err


def test_prepare_warns_of_features_a_thousand_times_apart(capsys, tmp_path):
    """Audit 90: minutes, one feature 1000 times the others, unstandardised: only train said so, after every
    baseline had been scored on it. Prepare names the narrowest and widest feature; standardised, it is silent."""
    from amcore.cli import main

    rng = np.random.default_rng(0)
    labels = np.repeat([0.0, 1.0, 2.0], 200)
    cells = (rng.normal(size=(600, 3)) + labels[:, None]) * [1.0, 2000.0, 1.5]
    np.savez(tmp_path / "wide.npz", X=cells, t=labels)
    for name, preprocess, warned in (("raw", {}, True), ("standard", {"standardize": True}, False)):
        spec = {"source": "npz", "path": str(tmp_path / "wide.npz")}
        out = ["--out", str(tmp_path / f"{name}.zarr"), "--summary", str(tmp_path / f"{name}.json")]
        assert main(["prepare", "--dataset", json.dumps(spec), "--preprocess", json.dumps(preprocess), *out]) == 0
        said = capsys.readouterr().err
        # sd sqrt(1 + 2/3) = 1.29 for x0 (unit noise, means 0, 1, 2), 2000 times that for x1
        shown = re.search(r"training times' cells read range from ([0-9.e+]+) \(x0\) to ([0-9.e+]+) \(x1\)", said)
        assert (shown is not None) is warned
        if warned:
            low, high = float(shown[1]), float(shown[2])
            assert low == pytest.approx(1.29, abs=0.1) and high / low == pytest.approx(2000, rel=0.1)  # own noise


def test_cells_copied_between_large_times_are_estimated_and_shared_values_are_not_scaled():
    """Past the 5,000 cells sampled a time, a copy shows in the samples at 5,000 / n of its share: 10 % copied
    between two times of 60,000 cells was not named, and is (about 0.09); 2 % of cells at one value (zero rows) in
    each time, no copy, read as 26 % once scaled, and reads as the 2 % they are."""
    from amcore import Snapshots
    from amcore.data.prepare import sampled_cell_checks

    rng = np.random.default_rng(0)
    n = 60_000
    a, b = rng.normal(size=(n, 5)).astype(np.float32), rng.normal(size=(n, 5)).astype(np.float32) + 1
    copied = b.copy()
    copied[: n // 10] = a[rng.choice(n, n // 10, replace=False)]
    zeros_a, zeros_b = a.copy(), b.copy()
    zeros_a[: n // 50], zeros_b[: n // 50] = 0.0, 0.0
    for first, second, low, high in ((a, copied, 0.06, 0.14), (zeros_a, zeros_b, 0.015, 0.03)):
        # each time in random order, as prepare stores it (the sample is a uniform draw)
        snaps = Snapshots.from_labels(np.r_[first[rng.permutation(n)], second[rng.permutation(n)]],
                                      np.repeat([0.0, 1.0], n))  # fmt: skip
        # 10 % copied: about 42 cells matched once in the samples, so the estimate holds within 2.6 of their sd
        share = sampled_cell_checks(snaps)["shared_cells"]["0, 1"]
        assert low < share < high, share


def test_prepare_names_features_that_hold_one_value_in_every_cell(capsys, tmp_path):
    """A column of ones and a column of 0.1s (whose float32 mean is not 0.1 exactly: a std can read 1e-9) among
    three moving features; a feature constant within each time but not across them is not named."""
    import pandas as pd

    from amcore.cli import main

    rng = np.random.default_rng(0)
    labels = np.repeat([0.0, 1.0, 2.0], 200)
    frame = pd.DataFrame(rng.normal(size=(600, 3)) + labels[:, None], columns=["a", "b", "c"])
    frame.insert(1, "ones", 1.0)
    frame["tenth"] = 0.1
    frame["dose"] = np.repeat([0.1, 0.2, 0.3], 200) + rng.normal(0, 1e-3, 600)  # moves, slowly
    frame["t"] = labels
    frame.to_csv(tmp_path / "cells.csv", index=False)
    spec = {"source": "csv", "path": str(tmp_path / "cells.csv"), "t_key": "t"}
    out = ["--out", str(tmp_path / "cells.zarr"), "--summary", str(tmp_path / "cells.json")]
    assert main(["prepare", "--dataset", json.dumps(spec), *out]) == 0
    assert "2 of 6 features hold one value in every cell (ones, tenth)" in capsys.readouterr().err
    summary = json.loads((tmp_path / "cells.json").read_text())
    assert summary["feature_min"][1] == summary["feature_max"][1] == 1.0


def test_prepare_warns_that_an_embedding_made_outside_may_hold_the_held_out_times(capsys, tmp_path):
    """Audit 18: the docs promise preprocessing fitted on the training times alone, and an obsm/X_pca that scanpy
    fitted on every cell carried the held-out stage into the benchmark in silence; X gets no such warning."""
    import anndata as ad
    import pandas as pd

    from amcore.cli import main

    rng = np.random.default_rng(0)
    day = np.repeat([0.0, 1.0, 2.0], 40)
    adata = ad.AnnData(X=rng.normal(size=(120, 5)).astype(np.float32), obs=pd.DataFrame({"day": day}))
    adata.obsm["X_pca"] = rng.normal(size=(120, 2)) + day[:, None]
    adata.write_h5ad(tmp_path / "a.h5ad")
    for key, held, warned in (("obsm/X_pca", ["1"], True), ("obsm/X_pca", [], False), ("X", ["1"], False)):
        spec = {"source": "h5ad", "path": str(tmp_path / "a.h5ad"), "x_key": key, "t_key": "day"}
        out = ["--out", str(tmp_path / f"{len(held)}{key[0]}.zarr"), "--summary", str(tmp_path / f"{key[0]}.json")]
        assert main(["prepare", "--dataset", json.dumps(spec), *out, "--holdout-times", *held]) == 0
        assert ("an embedding made outside amcore" in capsys.readouterr().err) is warned


def test_prepare_warns_of_raw_counts_and_not_of_normalised_ones(capsys, tmp_path):
    """Integer counts (a median total of about 1,000 per cell) are named as such, with the step amcore leaves to
    the user; the same counts normalised and log1p-transformed, or Gaussian cells, are not."""
    from amcore.cli import main

    rng = np.random.default_rng(0)
    labels = np.repeat([0.0, 1.0, 2.0], 100)
    counts = rng.poisson(20.0, size=(300, 50)).astype(np.float64)
    logged = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    for name, x, warned in (
        ("counts", counts, True),
        ("logged", logged, False),
        ("gauss", rng.normal(size=(300, 5)), False),
    ):
        np.savez(tmp_path / f"{name}.npz", X=x, t=labels)
        spec = {"source": "npz", "path": str(tmp_path / f"{name}.npz")}
        out = ["--out", str(tmp_path / f"{name}.zarr"), "--summary", str(tmp_path / f"{name}.json")]
        assert main(["prepare", "--dataset", json.dumps(spec), "--preprocess", '{"pca": 3}', *out]) == 0
        said = capsys.readouterr().err
        assert ("looks like raw counts (non-negative integers, a median of 1002 per cell and 0% zeros in the 300 "
                "cells read)" in said) is warned, said  # fmt: skip
        assert ("scanpy.pp.normalize_total" in said) is warned


def test_raw_counts_are_told_across_the_file_at_any_depth_and_from_the_python_api(capsys, tmp_path):
    """Audit 69: only the first 1,000 rows were read and a median total of 100 needed, so a file sorted by time
    whose early times were shallow, or a 50-gene panel (a median of about 25), passed unwarned; ``from_labels``
    never looked, and a notebook's counts were pushed 166-fold off the data."""
    from amcore.cli import main
    from amcore.data.store import Snapshots

    rng = np.random.default_rng(0)
    labels = np.repeat([0.0, 1.0, 2.0], 1000)
    deepening = rng.poisson(np.repeat([0.2, 2.0, 20.0], 1000)[:, None], size=(3000, 50)).astype(np.float64)
    panel = rng.poisson(0.5, size=(3000, 50)).astype(np.float64)
    for name, x in (("deepening", deepening), ("panel", panel)):
        np.savez(tmp_path / f"{name}.npz", X=x, t=labels)
        spec = {"source": "npz", "path": str(tmp_path / f"{name}.npz")}
        out = ["--out", str(tmp_path / f"{name}.zarr"), "--summary", str(tmp_path / f"{name}.json")]
        assert main(["prepare", "--dataset", json.dumps(spec), *out]) == 0
        assert "looks like raw counts" in capsys.readouterr().err, name
        with pytest.warns(UserWarning, match=r"x: the input looks like raw counts .*scanpy.pp.normalize_total"):
            Snapshots.from_labels(x, labels)
    logged = np.log1p(deepening / np.maximum(deepening.sum(1, keepdims=True), 1) * 1e4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Snapshots.from_labels(logged, labels)  # normalised: nothing to say
        Snapshots.from_labels((rng.random((3000, 4)) < 0.5).astype(float), labels)  # 0/1 labels are not counts
        walk = np.abs(rng.integers(-1, 2, size=(3000, 2, 6)).sum(2)).astype(float)  # review 71: a lattice walk
        Snapshots.from_labels(walk, labels)  # integers with zeros in 2-d, no count matrix
        Snapshots.from_labels(np.repeat([[1.0], [2.0]], 5, axis=0)[:6], [0, 0, 1, 1, 2, 2])  # two cells coincide
    np.savez(tmp_path / "empty.npz", X=np.ones((0, 5)), t=np.zeros(0))  # review 71: numpy's "zero-size array"
    spec = json.dumps({"source": "npz", "path": str(tmp_path / "empty.npz")})
    out = ["--out", str(tmp_path / "e.zarr"), "--summary", str(tmp_path / "e.json")]
    assert main(["prepare", "--dataset", spec, *out]) == 2
    assert "found 0 time point(s)" in capsys.readouterr().err


def test_a_feature_of_one_value_per_time_is_warned_of_from_any_source(capsys, tmp_path):
    """Audit 69: a batch-like feature (10 t^2, one value within each time) was named for a CSV only; an npz, a
    standardised store and ``from_labels`` took it in silence. A CSV's is said once."""
    from amcore.cli import main
    from amcore.data.store import Snapshots

    rng = np.random.default_rng(0)
    labels = np.repeat([0.0, 1.0, 2.0], 200)
    x = np.column_stack([rng.normal(size=600) + labels, 10 * labels**2, rng.normal(size=600)])
    np.savez(tmp_path / "b.npz", X=x, t=labels)
    pd.DataFrame({"g0": x[:, 0], "batch": x[:, 1], "g2": x[:, 2], "day": labels}).to_csv(tmp_path / "b.csv")
    for k, (source, spec, preprocess) in enumerate(
        (("npz", {}, "{}"), ("npz", {}, '{"standardize": true}'), ("csv", {"t_key": "day"}, "{}"))
    ):
        out = ["--out", str(tmp_path / f"{k}.zarr"), "--summary", str(tmp_path / f"{k}.json")]
        dataset = json.dumps({"source": source, "path": str(tmp_path / f"b.{source}"), **spec})
        assert main(["prepare", "--dataset", dataset, "--preprocess", preprocess, *out]) == 0
        said = capsys.readouterr().err
        told = said.count("hold one value within each time") + said.count("hold one value per time point")
        assert told == 1 and ("(x1)" in said or "['batch']" in said), said
    with pytest.warns(UserWarning, match=r"x's columns \[1\] hold one value within each time"):
        Snapshots.from_labels(x, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Snapshots.from_labels(np.delete(x, 1, axis=1), labels)
    # audit 92: a column of one value in every cell, warned of by prepare only; eAM's noise spread cells along it
    with pytest.warns(UserWarning, match=r"x's columns \[1\] hold one value in every cell: they say nothing"):
        Snapshots.from_labels(np.column_stack([x[:, 0], np.ones(600)]), labels)


def test_a_time_of_one_point_is_named_as_such(capsys, tmp_path):
    """Audit 69: every cell of a time one point was named only as copies that lower the noise floor."""
    from amcore.cli import main
    from amcore.data.store import Snapshots

    labels = np.repeat([0.0, 1.0, 2.0, 3.0], 100)
    x = np.random.default_rng(0).normal(size=(400, 3)) + labels[:, None]
    x[labels == 2.0] = x[200]
    np.savez(tmp_path / "p.npz", X=x, t=labels)
    out = ["--out", str(tmp_path / "p.zarr"), "--summary", str(tmp_path / "p.json")]
    assert main(["prepare", "--dataset", json.dumps({"source": "npz", "path": str(tmp_path / "p.npz")}), *out]) == 0
    assert "every cell read of t = 2 is one and the same point" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="every cell of t = 2 is one and the same point"):
        Snapshots.from_labels(x, labels)


def test_a_full_disk_names_where_it_is_full_and_leaves_nothing(work, capsys, small_disk):
    """Audit 30: a checkpoint on a full disk ended in torch's `unexpected pos 77376 vs 77328` (a traceback, exit 1),
    and a store on one in a bare `[Errno 28] No space left on device`: each is now one line naming the path, exit
    2, nothing left on the disk."""
    full_disk = small_disk("64k")
    params = json.dumps({"steps": 20, "width": 256, "depth": 2, "log_every": 10})  # a checkpoint of about 1.6 MB
    said = refused(capsys, "train", "--store", str(work / "other.zarr"), "--params", params, "--checkpoint",
                   str(full_disk / "model.pt"), "--loss-csv", str(work / "full-loss.csv"))  # fmt: skip
    assert "amcore train: error: [Errno 28] No space left on device: " in said and "model.pt" in said, said
    assert "Traceback" not in said and "unexpected pos" not in said
    rows = np.repeat([0.0, 1.0], 5000)
    np.savez(work / "big.npz", X=np.random.default_rng(0).normal(size=(len(rows), 8)), t=rows)  # 320 kB in float32
    said = refused(capsys, "prepare", "--dataset", json.dumps({"source": "npz", "path": str(work / "big.npz")}),
                   "--out", str(full_disk / "store.zarr"), "--summary", str(work / "full.json"))  # fmt: skip
    assert "No space left on device" in said and f"writing under {full_disk}" in said, said
    assert not any(full_disk.iterdir()), "a failed write leaves nothing"


def test_a_weighted_push_that_fails_at_some_times_is_scored_where_it_holds(work, tmp_path):
    """Audit 55: a uAM whose weights rested on under two particles at the last two times stopped evaluate with
    "missing key '0.25'" (a distance weighted particles lack, NaN only at the failed times) and left metrics.json and
    plots behind. The failed time is NaN and counted, the others scored, metrics.json written last."""
    import zarr

    from amcore.data.store import read_store

    snaps = read_store(work / "other.zarr")
    uam = TrainConfig(objective="uam", steps=20, width=8, depth=1, log_every=10)
    train(snaps, uam, tmp_path / "uam.pt", tmp_path / "uam.csv")
    traj = tmp_path / "traj.zarr"
    argv = ["integrate", "--store", str(work / "other.zarr"), "--checkpoint", str(tmp_path / "uam.pt"),
            "--params", '{"steps_per_interval": 2}', "--out", str(traj)]  # fmt: skip
    assert main(argv) == 0
    weight = zarr.open_array(str(traj / "weight"), mode="r+")
    last = np.zeros(weight.shape[1], np.float32)
    last[0] = 1.0  # the last time's mass on one particle: failed there
    weight[weight.shape[0] - 1] = last
    argv = ["evaluate", "--model", "uam", "--store", str(work / "other.zarr"), "--checkpoint", str(tmp_path / "uam.pt"),
            "--trajectories", str(traj), "--loss-csv", str(tmp_path / "uam.csv"), "--params", json.dumps(PARAMS),
            "--metrics", str(tmp_path / "metrics.json"), "--plots", str(tmp_path / "plots")]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["nonfinite"]["6"] > 0 and np.isnan(metrics["w1"]["6"]) and np.isfinite(metrics["w1"]["2"])


def test_json_outputs_list_times_in_order(tmp_path):
    """Audit 58: metrics.json listed days 1, 10, 120, 3, 40 (sorted as text) and -19 before -50."""
    from amcore.cli import _write_json

    _write_json(tmp_path / "m.json", {"w1": {"120": 1, "3": 2, "-50": 3, "10": 4}, "cells": {"b": 1, "a": 2}})
    written = json.loads((tmp_path / "m.json").read_text())
    assert list(written) == ["cells", "w1"] and list(written["cells"]) == ["a", "b"]
    assert list(written["w1"]) == ["-50", "3", "10", "120"]


def test_the_cli_says_its_version(capsys):
    """``amcore --version`` asked for a command (audit 75); the version is the package's."""
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"amcore {amcore.__version__}"
