"""Distances between predicted and observed samples, and errors against an analytic answer."""

from __future__ import annotations

import numpy as np
import ot
import torch


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n else x[rng.choice(len(x), n, replace=False)]


def wasserstein1(a: np.ndarray, b: np.ndarray, max_size: int = 5000, seed: int = 0) -> float:
    """Exact W1 (POT's network simplex, Euclidean ground cost) between two uniform point clouds.

    Above ``max_size`` points per side both are subsampled to that size: the exact solver is ``O(n^3)``.
    """
    rng = np.random.default_rng(seed)
    a, b = _subsample(a, max_size, rng), _subsample(b, max_size, rng)
    cost = ot.dist(a.astype(np.float64), b.astype(np.float64), metric="euclidean")
    return float(ot.emd2(ot.unif(len(a)), ot.unif(len(b)), cost, numItermax=10_000_000))


def mmd_rbf(a: np.ndarray, b: np.ndarray, scales=(0.5, 1.0, 2.0), max_size: int = 5000, seed: int = 0) -> float:
    """Unbiased squared MMD with a sum of RBF kernels at ``scales`` times the pooled median distance."""
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(_subsample(a, max_size, rng), dtype=torch.float64)
    y = torch.as_tensor(_subsample(b, max_size, rng), dtype=torch.float64)
    pooled = torch.cat([x, y])
    d2 = torch.cdist(pooled, pooled).pow(2)
    median = d2[torch.triu_indices(len(pooled), len(pooled), 1).unbind()].median().clamp_min(1e-12)
    kernel = sum(torch.exp(-d2 / (2 * s**2 * median)) for s in scales) / len(scales)
    n, m = len(x), len(y)
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def relative_l2(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(sum |pred - truth|^2, sum |truth|^2)``: pooled into ``sqrt(err / norm)`` by the caller."""
    return float(((predicted - truth) ** 2).sum()), float((truth**2).sum())
