"""AM on a single-cell count time course, raw and normalised, with each potential head and ``head: auto``.

Simulates negative-binomial counts of 16,000 genes at days 0, 2, 4, 7 and 10 (1,800 to 2,500 cells a day; twelve
latent programmes of 300 genes each: progenitor ones fading, a transient early one peaking at day 3, and after day 2
one of two fates whose programme grows with time; library sizes vary by cell and by one of two batches), the kind of
data a user brings (audit 7). Two stores are prepared as a user would: the raw counts, and the counts normalised to
10^4 per cell and log1p-transformed (scanpy's ``normalize_total`` and ``log1p``); both then keep the 2,000 genes of
highest variance, standardised, on 30 principal components, with day 4 held out (fitted on the other days).

AM (straight OT interpolants, the library's defaults otherwise) is trained with the scalar head, the inner head and
``head: auto`` (which chooses between them on held-apart training cells), and cells are pushed: day 2 to the held-out
day 4 (the protocol's prediction), day 0 to day 10 (the whole course) and day 7 to day 10. Exact W1 on 1,500 seeded
cells per side, beside the cells left unmoved (``copy``).

    python benchmarks/counts_timecourse.py [--steps 1500] [--genes 16000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from amcore import TrainConfig, load, train
from amcore.data.prepare import build_snapshots
from amcore.data.store import read_store, write_store
from amcore.metrics import wasserstein

DAYS = {0: 1800, 2: 2000, 4: 2200, 7: 2400, 10: 2500}
PROGRAMMES, PROGRAMME_GENES, DISPERSION = 12, 300, 2.0
PREPROCESS = {"select": "top_variance", "n_features": 2000, "standardize": True, "pca": 30}
PUSHES = [(2, 4), (0, 10), (7, 10)]
HEADS = ["scalar", "inner", "auto"]


def programme_activity(day: float, fate: np.ndarray, pace: np.ndarray) -> np.ndarray:
    """``(cells, PROGRAMMES)``: progenitor programmes 0-2 fading over the ten days, transient 3-5 peaking at day 3,
    and after day 2 fate A's programmes 6-8 or fate B's 9-11, growing at each cell's own pace."""
    a = np.zeros((len(fate), PROGRAMMES))
    a[:, 0:3] = 2.0 * (1 - day / 10.0)
    a[:, 3:6] = 2.0 * np.exp(-(((day - 3) / 2.5) ** 2))
    late = max(0.0, (day - 2) / 8.0) * pace
    a[:, 6:9] = np.where(fate == 0, 2.5 * late, 0.0)[:, None]
    a[:, 9:12] = np.where(fate == 1, 2.5 * late, 0.0)[:, None]
    return a


def counts(genes: int, seed: int = 0) -> ad.AnnData:
    """The simulated course: sparse float32 counts, ``obs["day"]``, gene names."""
    rng = np.random.default_rng(seed)
    base = rng.normal(-2.5, 1.3, genes)  # each gene's log mean
    loadings = np.zeros((PROGRAMMES, genes))
    for k in range(PROGRAMMES):
        loadings[k, rng.choice(genes, PROGRAMME_GENES, replace=False)] = rng.gamma(2.0, 0.5, PROGRAMME_GENES)
    blocks, day_of = [], []
    for day, n in DAYS.items():
        fate = rng.integers(0, 2, n) if day > 2 else np.full(n, -1)
        activity = programme_activity(day, fate, rng.uniform(0.6, 1.4, n)) + rng.normal(0, 0.25, (n, PROGRAMMES))
        library = rng.lognormal(0, 0.35, n) * np.where(rng.integers(0, 2, n) == 1, 1.3, 1.0)
        for start in range(0, n, 500):  # 500 cells at a time: the dense means of 16,000 genes stay small
            mean = np.exp(np.minimum(base + activity[start : start + 500] @ loadings, 4.0))
            mean *= library[start : start + 500, None]
            drawn = rng.negative_binomial(DISPERSION, DISPERSION / (DISPERSION + mean)).astype(np.float32)
            blocks.append(sp.csr_matrix(drawn))
        day_of += [float(day)] * n
    obs = pd.DataFrame({"day": day_of}, index=[f"cell{i}" for i in range(len(day_of))])
    return ad.AnnData(X=sp.vstack(blocks).tocsr(), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(genes)]))


def normalised(raw: ad.AnnData) -> ad.AnnData:
    """Each cell's counts scaled to 10^4 in total, then log1p: scanpy's ``normalize_total`` and ``log1p``."""
    x = sp.diags(1e4 / np.asarray(raw.X.sum(axis=1)).ravel()) @ raw.X
    return ad.AnnData(X=x.log1p().astype(np.float32).tocsr(), obs=raw.obs.copy(), var=raw.var.copy())


def w1(a: np.ndarray, b: np.ndarray) -> float:
    return wasserstein(a, b, p=1, max_size=1500, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--genes", type=int, default=16_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    raw = counts(args.genes)
    print(f"{'data':10} {'head':8} {'chosen':7} " + " ".join(f"{f'{a}->{b}':>8} {'copy':>6}" for a, b in PUSHES))
    with tempfile.TemporaryDirectory(prefix="amcore-counts-") as scratch:
        work = Path(scratch)
        for name, adata in (("raw", raw), ("log1p", normalised(raw))):
            adata.write_h5ad(work / f"{name}.h5ad")
            spec = {"source": "h5ad", "path": str(work / f"{name}.h5ad"), "t_key": "day"}
            write_store(work / f"{name}.zarr", build_snapshots(spec, PREPROCESS, holdout_times=[4.0]))
            store = read_store(work / f"{name}.zarr")
            cells = {float(t): np.asarray(store.snapshot(k)) for k, t in enumerate(store.t_values)}
            for head in HEADS:
                cfg = TrainConfig(steps=args.steps, head=head, threads=1, log_every=10**9)
                checkpoint = work / f"{name}-{head}.pt"
                summary = train(store, cfg, checkpoint, checkpoint.with_suffix(".csv"))
                model = load(checkpoint)
                scores = [(w1(model.push(cells[a], a, b), cells[b]), w1(cells[a], cells[b])) for a, b in PUSHES]
                print(f"{name:10} {head:8} {summary.get('head', head):7} "
                      + " ".join(f"{s:8.1f} {c:6.1f}" for s, c in scores), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
