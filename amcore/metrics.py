"""Distances between predicted and observed samples, and errors against an analytic answer."""

from __future__ import annotations

import numpy as np
import ot
import torch


def _subsample(x: np.ndarray, w: np.ndarray | None, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` points and their normalised weights (uniform when ``w`` is None)."""
    idx = np.arange(len(x)) if len(x) <= n else rng.choice(len(x), n, replace=False)
    weights = np.full(len(idx), 1.0 / len(idx)) if w is None else w[idx].astype(np.float64) / w[idx].sum()
    return x[idx].astype(np.float64), weights


def wasserstein1(
    a: np.ndarray, b: np.ndarray, max_size: int = 5000, seed: int = 0, wa: np.ndarray | None = None
) -> float:
    """Exact W1 (POT's network simplex, Euclidean ground cost) between point clouds; ``wa`` weights ``a``.

    Above ``max_size`` points per side both are subsampled to that size: the exact solver is ``O(n^3)``.
    """
    rng = np.random.default_rng(seed)
    (a, pa), (b, pb) = _subsample(a, wa, max_size, rng), _subsample(b, None, max_size, rng)
    cost = ot.dist(a, b, metric="euclidean")
    return float(ot.emd2(pa, pb, cost, numItermax=10_000_000))


def mmd_rbf(
    a: np.ndarray,
    b: np.ndarray,
    scales=(0.5, 1.0, 2.0),
    max_size: int = 5000,
    seed: int = 0,
    wa: np.ndarray | None = None,
) -> float:
    """Squared MMD with a sum of RBF kernels at ``scales`` times the pooled median distance.

    Unbiased (diagonals left out) for uniform weights; ``wa`` weights the points of ``a`` (uAM particles).
    """
    rng = np.random.default_rng(seed)
    (xa, pa), (xb, pb) = _subsample(a, wa, max_size, rng), _subsample(b, None, max_size, rng)
    x, y = torch.as_tensor(xa), torch.as_tensor(xb)
    pa, pb = torch.as_tensor(pa), torch.as_tensor(pb)
    pooled = torch.cat([x, y])
    d2 = torch.cdist(pooled, pooled).pow(2)
    median = d2[torch.triu_indices(len(pooled), len(pooled), 1).unbind()].median().clamp_min(1e-12)
    kernel = sum(torch.exp(-d2 / (2 * s**2 * median)) for s in scales) / len(scales)
    n = len(x)
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]

    def within(k: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        off = p @ k @ p - (p.pow(2) * k.diagonal()).sum()
        return off / (1 - p.pow(2).sum())

    return float(within(kxx, pa) + within(kyy, pb) - 2 * pa @ kxy @ pb)


def relative_l2(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(sum |pred - truth|^2, sum |truth|^2)``: pooled into ``sqrt(err / norm)`` by the caller."""
    return float(((predicted - truth) ** 2).sum()), float((truth**2).sum())
