"""``model.preprocess`` on the cells a user has: sparse counts, an AnnData, genes in another order or missing."""

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from amcore import TrainConfig, load, train
from amcore.data.prepare import build_snapshots
from amcore.data.store import read_store, write_store

TINY = TrainConfig(steps=5, width=8, depth=1, log_every=5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Sparse counts of 40 genes at three days, 12 of them kept by variance, standardised, 3 principal components."""
    tmp = tmp_path_factory.mktemp("genes")
    rng = np.random.default_rng(0)
    day = np.repeat([0.0, 1.0, 2.0], 50)
    counts = rng.poisson(rng.gamma(2.0, 2.0, size=40) * (1 + day[:, None] * rng.random(40)))
    genes = [f"gene{i}" for i in range(40)]
    adata = ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=pd.DataFrame({"day": day}),
                       var=pd.DataFrame(index=genes))  # fmt: skip
    adata.obs_names = [f"c{i}" for i in range(len(day))]
    adata.write_h5ad(tmp / "tc.h5ad")
    spec = {"source": "h5ad", "path": str(tmp / "tc.h5ad"), "t_key": "day"}
    config = {"select": "top_variance", "n_features": 12, "standardize": True, "pca": 3}
    write_store(tmp / "s.zarr", build_snapshots(spec, config))
    stored = read_store(tmp / "s.zarr")
    train(stored, TINY, tmp / "m.pt", tmp / "m.csv")
    return load(tmp / "m.pt"), adata, stored


def test_sparse_counts_and_an_anndata_come_out_as_the_stores_cells(trained):
    model, adata, stored = trained
    rows = stored.obs_index
    expected = np.asarray(stored.x)
    np.testing.assert_allclose(model.preprocess(adata.X[rows]), expected, atol=1e-5)  # scipy sparse
    np.testing.assert_allclose(model.preprocess(sp.csr_array(adata.X[rows])), expected, atol=1e-5)
    np.testing.assert_allclose(model.preprocess(adata[rows]), expected, atol=1e-5)  # an AnnData view


def test_genes_are_matched_by_name_and_a_missing_or_shifted_gene_is_refused(trained):
    model, adata, stored = trained
    rows = stored.obs_index
    expected = np.asarray(stored.x)
    shuffled = adata[rows, np.random.default_rng(1).permutation(adata.n_vars)]  # another file's gene order
    np.testing.assert_allclose(model.preprocess(shuffled), expected, atol=1e-5)
    x = sp.hstack([adata.X[rows], sp.csr_matrix(np.ones((len(rows), 1), np.float32))]).tocsr()
    wider = ad.AnnData(X=x, var=pd.DataFrame(index=[*adata.var_names, "extra"]))
    np.testing.assert_allclose(model.preprocess(wider), expected, atol=1e-5)  # an extra gene is ignored
    kept = list(model._preprocessing.selected_names())  # 12 of the 40 genes, by variance
    unused = [gene for gene in adata.var_names if gene not in kept]
    # Audit 18: a gene selection never reads was required all the same; now only a kept one must be there.
    np.testing.assert_allclose(model.preprocess(adata[rows, [g for g in adata.var_names if g != unused[0]]]),
                               expected, atol=1e-5)  # fmt: skip
    with pytest.raises(
        ValueError,
        match=rf"1 of the 40 features this model's input had \(of the 12 its "
        rf"preprocessing selects\) are not among x's names: \['{kept[0]}'\]",
    ):
        model.preprocess(adata[rows, [g for g in adata.var_names if g != kept[0]]])
    with pytest.raises(ValueError, match=r"the input's 40 features, got shape \(150, 39\) \(pass names="):
        model.preprocess(adata.X[rows][:, 1:])  # one gene short, nothing to match by: refused, never shifted
    with pytest.raises(ValueError, match="'gene1' names two columns"):
        model.preprocess(adata.X[rows], names=["gene1", *adata.var_names[1:]])


def test_to_input_takes_cells_and_velocities_back_to_the_genes(trained):
    """PCA keeps 3 directions of the 12 standardised genes: the cells come back as their projection on them (the
    residual is orthogonal to every component), under the kept genes' names; a velocity has no centring."""
    from amcore.data.preprocess import Preprocessing

    model, adata, stored = trained
    fitted = Preprocessing.from_json(model.info["preprocess"])
    rows = stored.obs_index
    z = np.asarray(stored.x, dtype=np.float64)
    back = model.to_input(z)
    assert list(back.columns) == [adata.var_names[i] for i in fitted.indices]
    kept = adata.X[rows].toarray()[:, fitted.indices]
    residual = (kept - back.to_numpy()) / fitted.scale
    np.testing.assert_allclose(residual @ fitted.components.T, 0.0, atol=1e-4)
    v = model.velocity(z[:5], t=0.0)
    np.testing.assert_allclose(model.to_input(v, velocity=True).to_numpy(),
                               (v @ fitted.components) * fitted.scale, rtol=1e-6)  # fmt: skip
    with pytest.raises(ValueError, match=r"z must be \(cells, 3\) in this model's coordinates"):
        model.to_input(kept)
    z[[4, 7], 1] = [np.nan, np.inf]  # a NaN cell came back as NaN genes, where preprocess refuses one (audit 88)
    with pytest.raises(ValueError, match=r"z has NaN or inf in 2 row\(s\) \(the first: row 4\)"):
        model.to_input(z)


def test_what_a_notebook_hands_the_model_is_read_by_name_or_refused_with_the_way(trained, tmp_path):
    """Audit 24: to_input read a DataFrame's columns by position (PCs in another order moved the genes by 2.4) and
    dropped its index; a backed AnnData failed on a shape that was right; an AnnData or a sparse matrix given to a
    field failed inside numpy; push refused a time as text that trajectories took."""
    model, adata, stored = trained
    rows = stored.obs_index
    z = pd.DataFrame(np.asarray(stored.x, np.float64)[:6], columns=model.feature_names, index=adata.obs_names[:6])
    back = model.to_input(z)
    pd.testing.assert_frame_equal(model.to_input(z[model.feature_names[::-1]]), back)
    assert list(back.index) == list(adata.obs_names[:6])
    adata.write_h5ad(tmp_path / "tc.h5ad")
    backed = ad.read_h5ad(tmp_path / "tc.h5ad", backed="r")
    np.testing.assert_array_equal(model.preprocess(backed)[rows], model.preprocess(adata)[rows])
    with pytest.raises(ValueError, match=r"x is an AnnData: .* model.preprocess\(adata\)"):
        model.velocity(adata, 0.0)
    cells = np.asarray(stored.x)[:6]
    np.testing.assert_array_equal(model.velocity(sp.csr_matrix(cells), 0.0), model.velocity(cells, 0.0))
    with pytest.raises(ValueError, match=r"times must be numbers, got <U1 \('0'\)"):
        model.trajectories(cells, ["0", "2"])


def test_to_input_without_pca_is_exact(tmp_path):
    rng = np.random.default_rng(2)
    t = np.repeat([0.0, 1.0, 2.0], 40)
    x = rng.normal(size=(len(t), 5)) * [1.0, 5.0, 0.2, 9.0, 3.0] + t[:, None]
    np.savez(tmp_path / "d.npz", X=x, t=t)
    snaps = build_snapshots({"source": "npz", "path": str(tmp_path / "d.npz")}, {"select": "first", "n_features": 3,
                                                                                  "standardize": True})  # fmt: skip
    write_store(tmp_path / "s.zarr", snaps)
    train(read_store(tmp_path / "s.zarr"), TINY, tmp_path / "m.pt", tmp_path / "m.csv")
    model = load(tmp_path / "m.pt")
    back = model.to_input(model.preprocess(x))
    assert list(back.columns) == ["x0", "x1", "x2"]  # an npz names no features: their columns
    np.testing.assert_allclose(back.to_numpy(), x[:, :3], rtol=1e-5, atol=1e-5)
    # and back again: the kept columns are all selection reads (audit 94: refused, 3 columns of the input's 5)
    np.testing.assert_allclose(model.preprocess(back[["x2", "x0", "x1"]]), model.preprocess(x), atol=1e-5)


def test_names_are_matched_wherever_both_sides_have_them_and_refused_where_they_cannot_be(tmp_path, trained):
    """A DataFrame's columns are its names; a store without preprocessing matches by its own feature names; names
    the model cannot check are refused; the training file's own genes, repeated names and all, are accepted."""
    model, adata, stored = trained
    rows = stored.obs_index
    frame = adata[rows].to_df()
    np.testing.assert_allclose(model.preprocess(frame[frame.columns[::-1]]), np.asarray(stored.x), atol=1e-5)
    with pytest.raises(ValueError, match="3 feature names for x of shape"):
        model.preprocess(adata.X[rows], names=["a", "b", "c"])

    t = np.repeat([0.0, 1.0, 2.0], 30)
    x = np.random.default_rng(3).normal(size=(90, 3)).astype(np.float32) + t[:, None]
    named = ad.AnnData(X=x, obs=pd.DataFrame({"day": t}), var=pd.DataFrame(index=["a", "b", "c"]))
    named.obs_names = [f"c{i}" for i in range(90)]
    named.write_h5ad(tmp_path / "n.h5ad")
    write_store(tmp_path / "n.zarr", build_snapshots({"source": "h5ad", "path": str(tmp_path / "n.h5ad"),
                                                      "t_key": "day"}))  # fmt: skip
    plain = read_store(tmp_path / "n.zarr")  # no preprocessing: the store's features are the input's
    train(plain, TINY, tmp_path / "n.pt", tmp_path / "n.csv")
    identity = load(tmp_path / "n.pt")
    np.testing.assert_allclose(identity.preprocess(named[:, ["c", "a", "b"]]), x, atol=1e-6)

    np.savez(tmp_path / "d.npz", X=x, t=t)
    write_store(tmp_path / "d.zarr", build_snapshots({"source": "npz", "path": str(tmp_path / "d.npz")},
                                                     {"standardize": True}))  # fmt: skip
    train(read_store(tmp_path / "d.zarr"), TINY, tmp_path / "d.pt", tmp_path / "d.csv")
    unnamed = load(tmp_path / "d.pt")
    with pytest.raises(ValueError, match="recorded no feature names to match them with"):
        unnamed.preprocess(x, names=["c", "a", "b"])
    np.testing.assert_allclose(unnamed.preprocess(named), unnamed.preprocess(x))  # an AnnData: by position

    repeated = ad.AnnData(X=x, obs=pd.DataFrame({"day": t}), var=pd.DataFrame(index=["a", "a", "c"]))
    repeated.obs_names = [f"c{i}" for i in range(90)]
    repeated.write_h5ad(tmp_path / "r.h5ad")
    spec = {"source": "h5ad", "path": str(tmp_path / "r.h5ad"), "t_key": "day"}
    write_store(tmp_path / "r.zarr", build_snapshots(spec, {"standardize": True}))
    train(read_store(tmp_path / "r.zarr"), TINY, tmp_path / "r.pt", tmp_path / "r.csv")
    twice = load(tmp_path / "r.pt")
    np.testing.assert_allclose(twice.preprocess(repeated), twice.preprocess(x))  # its own genes, as they were
    with pytest.raises(ValueError, match=r"the input's feature names repeat \('a' names two"):
        twice.preprocess(x[:, [2, 0, 1]], names=["c", "a", "a"])


def test_an_export_carries_the_map_back_to_the_genes(trained, tmp_path):
    """export.h5ad's ``uns["amcore"]["to_input"]`` takes its cells and velocities to genes as ``to_input`` does,
    with anndata alone (read back from the written file); a store without fitted steps carries none."""
    from amcore import export

    model, _, _ = trained
    folder = Path(model.info["path"]).parent
    export.write(export.cells(folder / "s.zarr", [{"model": "am", "seed": 0, "path": folder / "m.pt"}]),
                 tmp_path / "export.h5ad")  # fmt: skip
    adata = ad.read_h5ad(tmp_path / "export.h5ad")
    back = adata.uns["amcore"]["to_input"]
    cells = back["offset"] + adata.X @ back["basis"]
    expected = model.to_input(adata.X)
    assert list(back["features"]) == list(expected.columns)
    np.testing.assert_allclose(cells, expected.to_numpy(), rtol=1e-5, atol=1e-4)
    velocity = adata.obsm["velocity_am"]
    np.testing.assert_allclose(velocity @ back["basis"], model.to_input(velocity, velocity=True).to_numpy(),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    np.savez(tmp_path / "d.npz", X=np.random.default_rng(0).normal(size=(30, 2)), t=np.repeat([0.0, 1.0, 2.0], 10))
    write_store(tmp_path / "plain.zarr", build_snapshots({"source": "npz", "path": str(tmp_path / "d.npz")}))
    assert "to_input" not in export.cells(tmp_path / "plain.zarr", []).uns["amcore"]


def test_an_anndata_gives_the_obsm_entry_or_layer_its_model_was_trained_on(tmp_path):
    """Trained on ``x_key: obsm/X_pca``, the model's input is those 3 columns, not the AnnData's 10 genes (audit 10
    named the entry to pass); trained on a layer, the layer, not ``X`` (audit 18: a model of log-normalised counts
    read the raw counts of ``X``, 7 units off, in silence)."""
    rng = np.random.default_rng(3)
    day = np.repeat([0.0, 1.0, 2.0], 30)
    adata = ad.AnnData(X=rng.normal(size=(90, 10)).astype(np.float32), obs=pd.DataFrame({"day": day}))
    adata.obsm["X_pca"] = rng.normal(size=(90, 3)) + day[:, None]
    adata.write_h5ad(tmp_path / "a.h5ad")
    spec = {"source": "h5ad", "path": str(tmp_path / "a.h5ad"), "x_key": "obsm/X_pca", "t_key": "day"}
    write_store(tmp_path / "s.zarr", build_snapshots(spec, {"standardize": True}))
    train(read_store(tmp_path / "s.zarr"), TINY, tmp_path / "m.pt")
    model = load(tmp_path / "m.pt")
    assert model.info["input_key"] == "obsm/X_pca"
    np.testing.assert_array_equal(model.preprocess(adata), model.preprocess(adata.obsm["X_pca"]))
    assert model.preprocess(adata).shape == (90, 3)
    with pytest.raises(ValueError, match=r"trained on obsm\['X_pca'\] of its AnnData; this one has no such entry"):
        model.preprocess(ad.AnnData(X=adata.X))
    adata.layers["lognorm"] = np.log1p(np.abs(adata.X) * 10)
    adata.write_h5ad(tmp_path / "b.h5ad")
    spec = {"source": "h5ad", "path": str(tmp_path / "b.h5ad"), "x_key": "layers/lognorm", "t_key": "day"}
    write_store(tmp_path / "l.zarr", build_snapshots(spec, {"standardize": True}))
    stored = read_store(tmp_path / "l.zarr")
    train(stored, TINY, tmp_path / "l.pt")
    layered = load(tmp_path / "l.pt")
    np.testing.assert_allclose(layered.preprocess(adata[stored.obs_index]), np.asarray(stored.x), atol=1e-5)


def test_cells_far_beyond_the_training_ones_are_warned_of(trained):
    """Audit 24: raw counts given to a model of log-normalised ones came out 30 times farther out, in silence. The
    training cells' median distance from their mean is under their root mean square (1); 20 times the counts
    land over 20 times as far out (more: centring and standardising subtract the mean counts, not 20 times them)."""
    import warnings

    model, adata, stored = trained
    rows = stored.obs_index
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.preprocess(adata[rows])
    with pytest.warns(UserWarning, match=r"these cells lie more than 5 times as far .* normalised as the training"):
        model.preprocess(adata.X[rows] * 20)
    # Audit 91: a tenth of them far out left the median where it was, and nothing was said.
    few = adata.X[rows].toarray() if sp.issparse(adata.X) else np.array(adata.X[rows], dtype=np.float64)
    few[: len(few) // 10] *= 20
    with pytest.warns(UserWarning, match=r"more than 1% of these cells lie more than 10 times as far"):
        model.preprocess(few)
