"""AnnData out: `amcore export` on a real store and real trained models, read back with anndata, drawn with scanpy."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import snakemake

import amcore
from amcore import TrainConfig, train
from amcore.cli import main
from amcore.data.prepare import build_snapshots
from amcore.data.store import read_store, write_store
from amcore.evaluation.holdout import read_prediction

TIMES = [0.0, 0.5, 1.0]
SIMULATE = {"source": "simulate", "simulator": "gaussian_path", "times": TIMES, "n_per_time": 60, "seed": 0}


def _train(store, path, objective: str) -> None:
    cfg = TrainConfig(objective=objective, steps=30, width=16, depth=2, batch_size=64, log_every=10)
    train(read_store(store), cfg, path, path.with_suffix(".csv"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A simulated store with t = 0.5 held out, an AM and a uAM model trained on it, AM's held-out prediction."""
    root = tmp_path_factory.mktemp("export")
    store = root / "store.zarr"
    write_store(store, build_snapshots(SIMULATE, holdout_times=[0.5]))
    for objective in ("am", "uam"):
        _train(store, root / f"{objective}.pt", objective)
    assert main(["integrate", "--store", str(store), "--checkpoint", str(root / "am.pt"),
                 "--params", '{"steps_per_interval": 5}', "--out", str(root / "am.zarr")]) == 0  # fmt: skip
    assert main(["baseline", "--store", str(store), "--holdout", "0.5", "--name", "copy_prev",
                 "--out", str(root / "copy_prev.zarr")]) == 0  # fmt: skip
    return root


def _checkpoints(root, *names: str) -> str:
    return json.dumps({"models": [{"model": name, "seed": "0", "path": str(root / f"{name}.pt")} for name in names]})


def test_the_checkpoint_named_in_an_export_loads_from_any_working_directory(trained, tmp_path, monkeypatch):
    """The pipeline passes paths relative to its working directory; the export kept them so, and amcore.load on
    them failed anywhere else (audit 12)."""
    monkeypatch.chdir(trained)
    models = json.dumps({"models": [{"model": "am", "seed": "0", "path": "am.pt"}]})
    assert main(["export", "--store", "store.zarr", "--models", models, "--out", str(tmp_path / "e.h5ad")]) == 0
    monkeypatch.chdir(tmp_path)
    checkpoint = ad.read_h5ad(tmp_path / "e.h5ad").uns["amcore"]["models"]["am"]["checkpoint"]
    assert Path(checkpoint).is_absolute() and amcore.load(checkpoint).info["step"] == 30


def test_each_cell_gets_each_models_fields_at_its_own_time(trained, tmp_path):
    out = tmp_path / "export.h5ad"
    argv = ["export", "--store", str(trained / "store.zarr"), "--models", _checkpoints(trained, "am", "uam")]
    assert main([*argv, "--out", str(out)]) == 0
    adata = ad.read_h5ad(out)
    snaps = read_store(trained / "store.zarr")
    assert adata.shape == (3 * 60, 2) and list(adata.var_names) == ["x0", "x1"]  # simulated: the model's names
    np.testing.assert_array_equal(adata.X, snaps.x)
    np.testing.assert_array_equal(adata.obs["time"], np.repeat(TIMES, 60))
    assert adata.obs["held_out"].sum() == 60 and (adata.obs.loc[adata.obs["held_out"], "time"] == 0.5).all()
    # The simulator samples in time order: the input rows are 0..n-1, and name the cells.
    np.testing.assert_array_equal(adata.obs["input_row"], np.arange(adata.n_obs))
    assert list(adata.obs_names[:3]) == ["0", "1", "2"]
    x, t = adata.X, adata.obs["time"].to_numpy()
    for name in ("am", "uam"):
        model = amcore.load(trained / f"{name}.pt")
        np.testing.assert_array_equal(adata.obsm[f"velocity_{name}"], model.velocity(x, t))  # per cell, own time
        np.testing.assert_array_equal(adata.obs[f"potential_{name}"], model.potential(x, t))
        info = adata.uns["amcore"]["models"][name]
        assert info["objective"] == name and info["field"] == "velocity" and info["step"] == 30
        assert json.loads(info["config"]) == json.loads(json.dumps(model.config))  # JSON: a tuple comes back a list
    uam = amcore.load(trained / "uam.pt")  # growth 1 in standard units: a rate of s / x_scale^2
    np.testing.assert_array_equal(adata.obs["growth_rate_uam"], uam.growth_rate(x, t))
    rate = 1 / uam.model_args["x_scale"] ** 2
    np.testing.assert_allclose(adata.obs["growth_rate_uam"], rate * adata.obs["potential_uam"], rtol=1e-6)
    assert "growth_rate_am" not in adata.obs
    uns = adata.uns["amcore"]
    assert json.loads(uns["data"])["simulator"] == "gaussian_path" and list(uns["holdout_times"]) == [0.5]
    assert json.loads(uns["ground_truth"]) == json.loads(json.dumps(snaps.attrs["ground_truth"]))  # its parameters too
    assert dict(uns["mlflow"]) == {}  # untracked here; the pipeline test sees the run ids


def test_held_out_predictions_and_the_observed_cells_in_one_anndata(trained, tmp_path):
    predictions = json.dumps({"predictions": [
        {"method": "am", "seed": "0", "path": str(trained / "am.zarr")},
        {"method": "copy_prev", "seed": "", "path": str(trained / "copy_prev.zarr")},
    ]})  # fmt: skip
    out = tmp_path / "predictions.h5ad"
    argv = ["export", "--store", str(trained / "store.zarr"), "--models", _checkpoints(trained, "am")]
    assert main([*argv, "--out", str(tmp_path / "e.h5ad"), "--predictions", predictions, "--predictions-out",
                 str(out)]) == 0  # fmt: skip
    adata = ad.read_h5ad(out)
    assert list(adata.obs["method"].cat.categories) == ["am", "copy_prev", "observed"]
    assert (adata.obs["time"] == 0.5).all() and list(adata.var_names) == ["x0", "x1"]
    for method, path in (("am", "am.zarr"), ("copy_prev", "copy_prev.zarr")):
        x, weight, held_out = read_prediction(trained / path)
        rows = (adata.obs["method"] == method).to_numpy()
        np.testing.assert_array_equal(adata.X[rows], x.astype(np.float32))
        np.testing.assert_allclose(adata.obs.loc[rows, "weight"], weight)
    assert set(adata.obs.loc[adata.obs["method"] == "am", "seed"]) == {"0"}
    observed = (adata.obs["method"] == "observed").to_numpy()
    snaps = read_store(trained / "store.zarr")
    np.testing.assert_array_equal(adata.X[observed], snaps.snapshot(1))
    np.testing.assert_array_equal(adata.obs.loc[observed, "input_row"], np.arange(60, 120))
    pushed = (adata.obs["method"] == "am").to_numpy()  # each predicted cell names the cell it was pushed from
    np.testing.assert_array_equal(adata.obs.loc[pushed, "from_input_row"], snaps.obs_index[:60])
    assert (adata.obs.loc[~pushed, "from_input_row"] == -1).all()  # copy_prev's and the observed cells: none
    with pytest.raises(SystemExit):  # the two options go together
        main([*argv, "--out", str(tmp_path / "e.h5ad"), "--predictions"])
    assert main([*argv, "--out", str(tmp_path / "e.h5ad"), "--predictions", predictions]) == 2


def _anndata_input(tmp_path) -> tuple[ad.AnnData, str]:
    """Cells in shuffled time order with text time labels, obs_names, obs columns (one named like ours) and one
    row with a NaN feature (dropped: the rows after it keep their own obs)."""
    rng = np.random.default_rng(3)
    t = rng.permutation(np.repeat(TIMES, [30, 25, 35]))
    x = (rng.standard_normal((len(t), 2)) + t[:, None]).astype(np.float32)
    x[7, 1] = np.nan
    obs = pd.DataFrame(
        {
            "day": pd.Categorical([f"day{v:g}" for v in t]),
            "batch": rng.integers(0, 4, len(t)),
            "time": [f"{v:g} d" for v in t],
        },
        index=[f"cell-{i:03d}" for i in range(len(t))],
    )
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=["geneA", "geneB"]))
    path = str(tmp_path / "input.h5ad")
    adata.write_h5ad(path)
    return adata, path


def test_anndata_input_comes_back_with_its_obs_names_and_columns(trained, tmp_path):
    original, path = _anndata_input(tmp_path)
    spec = {"source": "h5ad", "path": path, "t_key": "day", "drop_nonfinite": True,
            "time_map": {"day0": 0.0, "day0.5": 0.5, "day1": 1.0}}  # fmt: skip
    store = tmp_path / "store.zarr"
    write_store(store, build_snapshots(spec))
    _train(store, tmp_path / "am.pt", "am")  # a model is exported only with the store it was trained on
    trained = tmp_path
    out = tmp_path / "export.h5ad"
    argv = ["export", "--store", str(store), "--models", _checkpoints(trained, "am"), "--out", str(out)]
    assert main(argv) == 0
    adata = ad.read_h5ad(out)
    assert adata.n_obs == original.n_obs - 1 and "cell-007" not in adata.obs_names
    assert list(adata.var_names) == ["geneA", "geneB"]  # the input's var_names, recorded by prepare
    # The input's order, the dropped cell left out (audit 18: the store's order, by time and shuffled within, let a
    # column copied onto the input land on other cells, in silence).
    assert list(adata.obs_names) == [name for name in original.obs_names if name != "cell-007"]
    # Every cell carries the obs row it was read from: name, columns, and the features themselves.
    expected = original.obs.loc[adata.obs_names]
    np.testing.assert_array_equal(adata.obs["input_row"], [original.obs_names.get_loc(n) for n in adata.obs_names])
    assert (adata.obs["day"].astype(str) == expected["day"].astype(str)).all()
    np.testing.assert_array_equal(adata.obs["batch"], expected["batch"])
    assert (adata.obs["time_input"] == expected["time"]).all()  # the input's own "time" column, renamed
    np.testing.assert_array_equal(adata.obs["time"], [float(d.removeprefix("day")) for d in expected["day"]])
    np.testing.assert_array_equal(adata.X, original[adata.obs_names].X)
    assert adata.uns["amcore"]["data_sha256"] == json.loads(adata.uns["amcore"]["data"])["sha256"]
    np.testing.assert_allclose(adata.obsm["velocity_am"], amcore.load(trained / "am.pt").velocity(adata.X,
                               adata.obs["time"].to_numpy()), rtol=1e-6)  # float32 sums in another order  # fmt: skip

    # The input changed since prepare read it: its obs could belong to other cells; refused.
    original.obs["batch"] = 0
    original.write_h5ad(path)
    assert main(argv) == 2


def test_scanpy_draws_an_export(trained, tmp_path):
    sc = pytest.importorskip("scanpy")
    import matplotlib

    matplotlib.use("Agg")
    out = tmp_path / "export.h5ad"
    argv = ["export", "--store", str(trained / "store.zarr"), "--models", _checkpoints(trained, "am")]
    assert main([*argv, "--out", str(out)]) == 0
    adata = ad.read_h5ad(out)
    sc.pl.scatter(adata, x="x0", y="x1", color="time", show=False).figure.savefig(tmp_path / "cells.png")
    adata.obsm["X_cells"] = adata.X[:, :2]  # docs/anndata.md's recipe
    ax = sc.pl.embedding(adata, basis="X_cells", color="potential_am", show=False)
    v = adata.obsm["velocity_am"]
    ax.quiver(adata.X[::10, 0], adata.X[::10, 1], v[::10, 0], v[::10, 1], angles="xy")
    ax.figure.savefig(tmp_path / "velocity.png")
    for name in ("cells.png", "velocity.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_the_export_rule_s_command_with_a_held_out_time(tmp_path, tiny_config):
    """The held-out variant's export command, from a dry run (the rule itself runs in test_pipeline's end-to-end
    run): every prediction, the first seed's models."""
    config = copy.deepcopy(tiny_config)
    config |= {"holdout_times": [0.5], "seeds": [0, 1], "baselines": ["copy_prev"]}
    plan = snakemake(tmp_path / "plan", config, "--dry-run", "--printshellcmds")
    assert plan.returncode == 0, plan.stderr[-4000:]
    (command,) = re.findall(r"^Shell command: +(amcore export .*)$", plan.stdout + plan.stderr, flags=re.MULTILINE)
    words = shlex.split(command)
    predictions = json.loads(words[words.index("--predictions") + 1])["predictions"]
    assert [(p["method"], p["seed"]) for p in predictions] == [("am", "0"), ("am", "1"), ("copy_prev", "")]
    assert words[words.index("--predictions-out") + 1] == "results/tiny/holdout-0.5/predictions.h5ad"
    assert [m["seed"] for m in json.loads(words[words.index("--models") + 1])["models"]] == ["0"]  # first seed


@pytest.mark.slow
def test_scanpy_finds_the_neighbours_of_an_atlas_sized_export(tmp_path):
    """Above 4,096 cells scanpy hands the neighbour search to pynndescent, whose 0.7 returns sparse arrays that
    scanpy 1.11 cannot read ('csr_array' has no getnnz: audit 10); the dev install pins it below 0.7. (Slow: numba
    compiles pynndescent on first use, about 40 s.)"""
    sc = pytest.importorskip("scanpy")
    adata = ad.AnnData(np.random.default_rng(0).normal(size=(5000, 10)).astype(np.float32))
    sc.pp.neighbors(adata, use_rep="X", n_neighbors=15)
    assert adata.obsp["distances"].shape == (5000, 5000)
