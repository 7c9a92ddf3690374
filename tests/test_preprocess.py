"""Preprocessing: fitted on training times only, correct against exact numpy answers, chunk by chunk."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from amcore.data import preprocess
from amcore.data.prepare import build_snapshots
from amcore.data.store import read_store, write_store
from amcore.errors import InputError

# Feature scales far apart, so the principal axes are well separated and a randomized SVD recovers them exactly.
SCALES = np.array([6.0, 0.5, 3.0, 1.0, 0.1, 2.0])
FULL = {"select": "top_variance", "n_features": 4, "standardize": True, "pca": 2, "whiten": True}


def config(**overrides) -> dict:
    return preprocess.resolve(overrides)


@pytest.fixture
def cells() -> tuple[np.ndarray, np.ndarray]:
    """Two training times of well-behaved cells and a held-out time 2 that is wildly different."""
    rng = np.random.default_rng(1)
    rotation = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    train = (rng.standard_normal((400, 6)) * SCALES) @ rotation.T
    held = 1000.0 + 300.0 * rng.standard_normal((150, 6)) * SCALES[::-1]
    x = np.concatenate([train, held]).astype(np.float32)
    t = np.concatenate([np.repeat([0.0, 1.0], 200), np.full(150, 2.0)])
    order = rng.permutation(len(t))
    return x[order], t[order]


def chunked(x: np.ndarray, rows: int = 37) -> da.Array:
    return da.from_array(x, chunks=(rows, -1))


def assert_same_fit(a: preprocess.Preprocessing, b: preprocess.Preprocessing) -> None:
    np.testing.assert_array_equal(a.indices, b.indices)
    for name in ("mean", "scale", "explained_variance"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9)
    # Signs are fixed by coerce_signs; chunk layouts differ only by float64 rounding.
    np.testing.assert_allclose(a.components, b.components, atol=1e-9)


def test_a_held_out_time_leaks_into_no_fitted_parameter(cells):
    x, t = cells
    train = t != 2.0
    cfg = config(**FULL)
    with_holdout = preprocess.fit(chunked(x), t, [2.0], cfg)
    train_only = preprocess.fit(chunked(x[train]), t[train], [], cfg)
    on_all = preprocess.fit(chunked(x), t, [], cfg)
    assert_same_fit(with_holdout, train_only)
    assert with_holdout.fit_times == [0.0, 1.0] and with_holdout.n_fit == 400
    assert not np.allclose(on_all.mean, with_holdout.mean[: len(on_all.mean)], atol=1.0)
    assert not np.allclose(np.abs(on_all.components @ with_holdout.components.T), np.eye(2), atol=0.1)


def test_the_store_keeps_held_out_cells_transformed_with_training_parameters(tmp_path, cells):
    x, t = cells
    t = np.where(t == 2.0, 1.5, t)  # a held-out time must be interior: between the training times 0 and 2
    t = np.where(t == 1.0, 2.0, t)
    np.savez(tmp_path / "in.npz", X=x, t=t)
    snaps = build_snapshots({"source": "npz", "path": str(tmp_path / "in.npz")}, FULL, [1.5])
    write_store(tmp_path / "s.zarr", snaps)
    back = read_store(tmp_path / "s.zarr")
    assert back.attrs["holdout_times"] == [1.5]
    params = back.attrs["preprocess"]
    train_only = preprocess.fit(chunked(x[t != 1.5]), t[t != 1.5], [], config(**FULL))
    assert params["indices"] == train_only.indices.tolist()
    np.testing.assert_allclose(params["mean"], train_only.mean, rtol=1e-9)
    np.testing.assert_allclose(params["components"], train_only.components, atol=1e-9)
    assert back.counts().tolist() == [200, 150, 200], "held-out cells stay in the store"
    rows = back.obs_index[back.offsets[1] : back.offsets[2]]  # the input rows of t = 1.5, in the store's order
    assert (t[rows] == 1.5).all()
    expected = train_only.transform(chunked(x[rows])).compute()
    np.testing.assert_allclose(back.snapshot(1), expected, rtol=1e-5)
    training = np.concatenate([back.snapshot(0), back.snapshot(2)])
    np.testing.assert_allclose(np.cov(training.T), np.eye(2), atol=1e-4)  # whitened on the training cells only


def test_standardize_gives_training_cells_zero_mean_unit_variance(cells):
    x, t = cells
    fitted = preprocess.fit(chunked(x), t, [2.0], config(standardize=True))
    z = fitted.transform(chunked(x)).compute()
    np.testing.assert_allclose(z[t != 2.0].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[t != 2.0].std(axis=0), 1.0, rtol=1e-5)
    assert np.abs(z[t == 2.0].mean(axis=0)).min() > 10, "held-out cells are transformed, not refitted"


def test_pca_matches_an_exact_svd_on_the_training_cells(cells):
    x, t = cells
    train = x[t != 2.0].astype(np.float64)
    centred = train - train.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    fitted = preprocess.fit(chunked(x, rows=23), t, [2.0], config(pca=3, seed=7))
    np.testing.assert_allclose(fitted.explained_variance, s[:3] ** 2 / (len(train) - 1), rtol=1e-8)
    np.testing.assert_allclose(np.abs(np.sum(fitted.components * vt[:3], axis=1)), 1.0, atol=1e-8)
    projected = fitted.transform(chunked(x)).compute()
    np.testing.assert_allclose(projected[t != 2.0], centred @ fitted.components.T, rtol=1e-4, atol=1e-4)


def test_whitening_without_pca_keeps_every_component(cells):
    x, t = cells
    fitted = preprocess.fit(chunked(x), t, [2.0], config(whiten=True))
    z = fitted.transform(chunked(x)).compute()[t != 2.0]
    assert z.shape[1] == x.shape[1]
    np.testing.assert_allclose(np.cov(z.T), np.eye(x.shape[1]), atol=1e-4)


def test_feature_selection_first_indices_and_top_variance(cells):
    x, t = cells
    first = preprocess.fit(chunked(x), t, [2.0], config(select="first", n_features=2))
    assert first.indices.tolist() == [0, 1]
    picked = preprocess.fit(chunked(x), t, [2.0], config(select="indices", indices=[4, 1]))
    np.testing.assert_array_equal(picked.transform(chunked(x)).compute(), x[:, [4, 1]])
    top = preprocess.fit(chunked(x), t, [2.0], config(select="top_variance", n_features=2))
    variance = x[t != 2.0].astype(np.float64).var(axis=0)
    assert top.indices.tolist() == sorted(np.argsort(variance)[-2:].tolist())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"select": "first", "n_features": 9}, r"n_features <= 6, got 9"),
        ({"select": "top_variance"}, r"n_features <= 6, got None"),
        ({"select": "indices", "indices": [0, 6]}, r"indices in \[0, 6\)"),
        ({"pca": 7}, r"preprocess.pca: 7 components from 400 cells x 6 features"),
    ],
)
def test_impossible_settings_are_refused(cells, overrides, message):
    x, t = cells
    with pytest.raises(InputError, match=message):
        preprocess.fit(chunked(x), t, [2.0], config(**overrides))


def test_unknown_keys_and_steps_on_simulated_data_are_refused():
    with pytest.raises(InputError, match=r"unknown keys \['standardise'\]"):
        preprocess.resolve({"standardise": True})
    # What the selection never reads (audit 23: it retrained everything and kept every feature, in silence).
    with pytest.raises(InputError, match=r"n_features 50: read only by select first or top_variance, and select is"):
        preprocess.resolve({"n_features": 50})
    with pytest.raises(InputError, match=r"indices \[1\]: read only by select indices, and select is 'first'"):
        preprocess.resolve({"select": "first", "n_features": 2, "indices": [1]})
    with pytest.raises(InputError, match="simulate source's ground truth"):
        build_snapshots({"source": "simulate", "simulator": "gaussian_path", "times": [0, 1], "n_per_time": 5,
                         "seed": 0}, {"pca": 1})  # fmt: skip
