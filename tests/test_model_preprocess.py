"""``model.preprocess`` on the cells a user has: sparse counts, an AnnData, genes in another order or missing."""

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
    with pytest.raises(ValueError, match=r"1 of the 40 features this model's input had are not among x's names: "
                                         r"\['gene0'\]"):  # fmt: skip
        model.preprocess(adata[rows, 1:])
    with pytest.raises(ValueError, match=r"the input's 40 features, got shape \(150, 39\) \(pass names="):
        model.preprocess(adata.X[rows][:, 1:])  # one gene short, nothing to match by: refused, never shifted
    with pytest.raises(ValueError, match="'gene1' names two columns"):
        model.preprocess(adata.X[rows], names=["gene1", *adata.var_names[1:]])
