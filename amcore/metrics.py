"""Distances between predicted and observed samples, and errors against an analytic answer."""

from __future__ import annotations

import numpy as np
import ot
import torch


class NonFiniteError(ValueError):
    """A point cloud with NaN or inf coordinates or weights: no distance to it is a number to report."""


def lost_rows(x: np.ndarray, w: np.ndarray | None = None) -> int:
    """How many points carry no number: NaN or inf coordinates or weights, or every point when the weights sum
    to zero (uAM weights that all underflowed), which no distance can be normalised by."""
    bad = ~np.isfinite(x).all(axis=1)
    if w is not None:
        bad |= ~np.isfinite(w)
        if not bad.any() and not w.sum() > 0:
            return len(x)
    return int(bad.sum())


def _require_finite(*clouds: tuple[np.ndarray, np.ndarray | None]) -> None:
    """Refuse input with no number to it: POT's network simplex returns 0 for a NaN cost (a diverged prediction
    would score as a perfect one), and torch's kernels return NaN without a word."""
    for x, w in clouds:
        bad = lost_rows(x, w)
        if bad:
            raise NonFiniteError(f"{bad} of {len(x)} points have NaN or inf coordinates or weights (or no weight)")


def wasserstein_name(n_a: int, n_b: int, p: int, max_size: int) -> str:
    """``w<p>`` when computed exactly, ``sliced_w<p>`` above ``max_size`` points on either side."""
    return f"sliced_w{p}" if max(n_a, n_b) > max_size else f"w{p}"


def _subsample(x: np.ndarray, w: np.ndarray | None, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` points and their normalised weights (uniform when ``w`` is None)."""
    idx = np.arange(len(x)) if len(x) <= n else rng.choice(len(x), n, replace=False)
    weights = np.full(len(idx), 1.0 / len(idx)) if w is None else w[idx].astype(np.float64) / w[idx].sum()
    return x[idx].astype(np.float64), weights


def wasserstein(
    a: np.ndarray,
    b: np.ndarray,
    p: int = 1,
    max_size: int = 5000,
    seed: int = 0,
    wa: np.ndarray | None = None,
    wb: np.ndarray | None = None,
    projections: int = 500,
) -> tuple[float, str]:
    """``(W_p, name)`` between weighted point clouds (Euclidean ground cost).

    Exact (POT's network simplex, ``O(n^3)``) up to ``max_size`` points per side, named ``w1``/``w2``;
    above it the sliced distance over ``projections`` random directions, named ``sliced_w1``/``sliced_w2``
    (smaller than W_p by about ``sqrt(d)``: never compare it with an exact value).
    Raises ``NonFiniteError`` on NaN or inf points or weights.
    """
    _require_finite((a, wa), (b, wb))
    name = wasserstein_name(len(a), len(b), p, max_size)
    if name.startswith("sliced"):
        pa = None if wa is None else wa / wa.sum()
        pb = None if wb is None else wb / wb.sum()
        value = ot.sliced_wasserstein_distance(
            a.astype(np.float64), b.astype(np.float64), pa, pb, n_projections=projections, p=p, seed=seed
        )
        return float(value), name
    pa = ot.unif(len(a)) if wa is None else wa.astype(np.float64) / wa.sum()
    pb = ot.unif(len(b)) if wb is None else wb.astype(np.float64) / wb.sum()
    cost = ot.dist(a.astype(np.float64), b.astype(np.float64), metric="euclidean")
    value = ot.emd2(pa, pb, cost**p, numItermax=10_000_000)
    return float(max(value, 0.0) ** (1 / p)), name


def energy_distance(
    a: np.ndarray,
    b: np.ndarray,
    max_size: int = 5000,
    seed: int = 0,
    wa: np.ndarray | None = None,
    wb: np.ndarray | None = None,
) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between the weighted empirical measures.

    Zero only for equal measures; above ``max_size`` points per side both are subsampled to that size.
    Raises ``NonFiniteError`` on NaN or inf points or weights.
    """
    _require_finite((a, wa), (b, wb))
    rng = np.random.default_rng(seed)
    (xa, pa), (xb, pb) = _subsample(a, wa, max_size, rng), _subsample(b, wb, max_size, rng)
    x, y = torch.as_tensor(xa), torch.as_tensor(xb)
    pa, pb = torch.as_tensor(pa), torch.as_tensor(pb)
    cross = pa @ torch.cdist(x, y) @ pb
    return float(2 * cross - pa @ torch.cdist(x, x) @ pa - pb @ torch.cdist(y, y) @ pb)


def mmd_rbf(
    a: np.ndarray,
    b: np.ndarray,
    scales=(0.5, 1.0, 2.0),
    max_size: int = 5000,
    seed: int = 0,
    wa: np.ndarray | None = None,
    wb: np.ndarray | None = None,
) -> float:
    """Squared MMD with the mean of RBF kernels at ``scales`` times the pooled median distance.

    Unbiased (diagonals left out) for uniform weights; ``wa``/``wb`` weight the points (uAM particles).
    Raises ``NonFiniteError`` on NaN or inf points or weights.
    """
    _require_finite((a, wa), (b, wb))
    rng = np.random.default_rng(seed)
    (xa, pa), (xb, pb) = _subsample(a, wa, max_size, rng), _subsample(b, wb, max_size, rng)
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


def _kernel_sum(x: torch.Tensor, y: torch.Tensor, alphas, block: int, skip_diagonal: bool) -> float:
    """``sum_ij sum_a exp(-alpha_a |x_i - y_j|^2)`` over blocks of ``block`` rows (memory O(block^2)); with
    ``skip_diagonal`` (``x`` is ``y``) the ``i == j`` terms are left out."""
    total = torch.zeros((), dtype=torch.float64)
    for i in range(0, len(x), block):
        xi = x[i : i + block]
        for j in range(0, len(y), block):
            d2 = (xi[:, None, :] - y[None, j : j + block, :]).pow(2).sum(-1)
            k = sum(torch.exp(-alpha * d2) for alpha in alphas)
            if skip_diagonal and i == j:
                k = k - torch.diag_embed(torch.diagonal(k))
            total += k.sum()
    return float(total)


def mmd_paper(a: np.ndarray, b: np.ndarray, alphas=(1e-4, 1e-4, 1e-4), block: int = 1024) -> float:
    """Unbiased squared MMD (Gretton et al. 2012) with the kernel ``k(x, y) = sum_j exp(-alpha_j |x - y|^2)``: the
    estimator the Action Matching paper reports (its three kernels, one per dimension of its 3-d data, all with
    ``alpha = 1e-4``). Every point on both sides (no subsampling), blockwise in float64 so 5,000 x 5,000 points stay
    in a few MB. Can be negative (unbiased); the paper averages its absolute value over time.
    Raises ``NonFiniteError`` on NaN or inf points, ``ValueError`` with fewer than two points on a side.
    """
    _require_finite((a, None), (b, None))
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"mmd_paper needs at least two points on each side, got {len(a)} and {len(b)}")
    x, y = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    n, m = len(x), len(y)
    kxx = _kernel_sum(x, x, alphas, block, skip_diagonal=True) / (n * (n - 1))
    kyy = _kernel_sum(y, y, alphas, block, skip_diagonal=True) / (m * (m - 1))
    kxy = _kernel_sum(x, y, alphas, block, skip_diagonal=False) / (n * m)
    return kxx + kyy - 2 * kxy
