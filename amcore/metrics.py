"""Distances between predicted and observed samples, and errors against an analytic answer.

Every distance keeps its name at any size (``docs/metrics.md`` says which number to compare with which):

- :func:`wassersteins`: exact W_p (POT's network simplex) on seeded subsamples of at most ``max_size`` points
  per side, and :func:`subsample_noise`, the exact W_1 between two disjoint subsamples of one cloud: the value
  below which a subsampled W_1 cannot tell two clouds apart;
- :func:`sliced_wassersteins`: sliced W_p on all points, in memory linear in the number of points;
- :func:`mmd_rbf` and :func:`energy_distance`: on seeded subsamples of at most ``max_size`` points per side,
  computed by blocks of at most ``block`` kernel entries, so their memory does not grow with the clouds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from amcore.errors import InputError

# Entries of the largest matrix a blockwise metric holds at once (16 MiB in float64). A call holds a few of them:
# the kernel blocks, and the sliced distances' sorted projections.
BLOCK_ELEMENTS = 2**21
# The RBF bandwidths are multiples of the median pairwise squared distance among at most this many pooled points.
MEDIAN_SAMPLE = 2000
# Weighted particles whose effective sample size is under this share of them are flagged: their distances (and
# their mass) measure the few that carry it.
FEW_EFFECTIVE = 0.1


class NonFiniteError(ValueError):
    """A point cloud with NaN or inf coordinates or weights: no distance to it is a number to report."""


class TooFewPoints(InputError):
    """A cloud too small for a distance: the message names the distance, the counts and the minimum."""


def lost_rows(x: np.ndarray, w: np.ndarray | None = None) -> int:
    """How many points carry no number: NaN or inf coordinates or weights, or every point when the weights sum
    to zero (uAM weights that all underflowed) or overflow, which no distance can be normalised by."""
    bad = ~np.isfinite(x).all(axis=1)
    if w is not None:
        bad |= ~np.isfinite(w)
        if not bad.any() and not 0 < np.asarray(w, dtype=np.float64).sum() < np.inf:
            return len(x)
    return int(bad.sum())


def effective_size(w: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of non-negative weights (0 when they sum to zero or one
    is infinite), computed relative to the largest weight so that weights near the float limits neither overflow nor
    underflow."""
    top = float(np.max(w, initial=0.0))
    if not 0 < top < np.inf:  # no weight, or one that ran off: no mass to count
        return 0.0
    p = np.asarray(w, dtype=np.float64) / top
    return float(p.sum() ** 2 / np.square(p).sum())


def _normalised(w: np.ndarray) -> np.ndarray:
    """Weights as probabilities, summed in float64 (float32 weights near its limit overflow their own sum)."""
    w = np.asarray(w, dtype=np.float64)
    return w / w.sum()


def _require_finite(*clouds: tuple[np.ndarray, np.ndarray | None]) -> None:
    """Refuse input with no number to it: POT's network simplex returns 0 for a NaN cost (a diverged prediction
    would score as a perfect one), and torch's kernels return NaN without a word."""
    for x, w in clouds:
        bad = lost_rows(x, w)
        if bad:
            raise NonFiniteError(f"{bad} of {len(x)} points have NaN or inf coordinates or weights (or no weight)")


def _require_points(what: str, minimum: int, *sizes: int) -> None:
    if min(sizes) < minimum:
        counts = " and ".join(str(n) for n in sizes)
        raise TooFewPoints(f"{what} needs at least {minimum} point(s) per cloud; got {counts}")


def _subsample(x: np.ndarray, w: np.ndarray | None, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` points (float64) and their normalised weights.

    Unweighted clouds: ``n`` distinct points drawn uniformly, equal weights. Weighted ones (uAM particles): ``n``
    draws with probability proportional to the weights, each distinct point weighted by how often it was drawn
    (an unbiased sample of the weighted measure, whose size does not collapse when a few weights dominate).
    Clouds of at most ``n`` points are kept whole with their own weights.
    """
    if len(x) <= n:
        weights = np.full(len(x), 1.0 / len(x)) if w is None else _normalised(w)
        return x.astype(np.float64), weights
    if w is None:
        idx = rng.choice(len(x), n, replace=False)
        return x[idx].astype(np.float64), np.full(n, 1.0 / n)
    p = _normalised(w)
    idx, counts = np.unique(rng.choice(len(x), n, p=p), return_counts=True)
    return x[idx].astype(np.float64), counts / n


def _observed_first(a, wa, b, wb, max_size: int, rng: np.random.Generator) -> tuple[tuple, tuple]:
    """The subsamples of ``b`` (the observed cells), then of ``a``: ``b``'s draws come first from ``rng``, so every
    prediction of any size is scored on the same subsample of the observed cells, in the same order (paired, as
    the held-out variance of a difference assumes: :func:`held_out_variance`)."""
    return _subsample(b, wb, max_size, rng), _subsample(a, wa, max_size, rng)


def _exact(xa: np.ndarray, pa: np.ndarray, xb: np.ndarray, pb: np.ndarray, ps: tuple[int, ...]) -> dict[int, float]:
    """Exact W_p for each ``p`` from one Euclidean cost matrix."""
    return _solve(xa, pa, xb, pb, ps)[0]


def _solve(
    xa: np.ndarray, pa: np.ndarray, xb: np.ndarray, pb: np.ndarray, ps: tuple[int, ...]
) -> tuple[dict[int, float], np.ndarray | None]:
    """:func:`_exact`, and for ``p = 1`` the optimal dual potential on ``xb``'s side (None without ``p = 1``)."""
    import ot  # here, as in geodesic_action: POT imports sklearn (seconds), which a loaded model's push never needs

    cost = ot.dist(xa, xb, metric="euclidean")
    out, potential = {}, None
    for p in ps:
        if p == 1:
            _, log = ot.emd(pa, pb, cost, numItermax=10_000_000, log=True)
            value, potential = float(log["cost"]), np.asarray(log["v"], dtype=np.float64)
        else:
            value = float(ot.emd2(pa, pb, cost**p, numItermax=10_000_000))
        out[p] = max(value, 0.0) ** (1 / p)
    return out, potential


def wassersteins(
    a: np.ndarray,
    b: np.ndarray,
    ps: tuple[int, ...] = (1, 2),
    max_size: int = 2000,
    seed: int = 0,
    wa: np.ndarray | None = None,
    wb: np.ndarray | None = None,
) -> dict[int, float]:
    """``{p: W_p}``: exact optimal transport (Euclidean ground cost) between weighted point clouds.

    A cloud of more than ``max_size`` points is replaced by a seeded subsample of ``max_size`` (see
    :func:`_subsample`; ``b``'s drawn first, so every ``a`` meets the same points of ``b``); the network simplex
    costs ``O(n^3)`` time and several ``n x n`` float64 matrices (measured on 2 cores, 50-d: 2.5 s and 0.6 GB at
    2,000 points per side, 42 s and 1.6 GB at 5,000).
    A subsampled W_p is biased upwards by the subsampling: compare it with :func:`subsample_noise`.
    Raises ``NonFiniteError`` on NaN or inf points or weights, ``TooFewPoints`` on an empty cloud.
    """
    return wassersteins_with_influence(a, b, ps, max_size, seed, wa, wb)[0]


def wassersteins_with_influence(
    a: np.ndarray,
    b: np.ndarray,
    ps: tuple[int, ...] = (1, 2),
    max_size: int = 2000,
    seed: int = 0,
    wa: np.ndarray | None = None,
    wb: np.ndarray | None = None,
) -> tuple[dict[int, float], np.ndarray | None]:
    """:func:`wassersteins`, and with ``p = 1`` among ``ps`` W_1's influence function at the points of ``b`` the plan
    was solved on (its subsample, in the order drawn: the same points for every ``a``): how W_1 moves with the
    cells of ``b``, so the variance that sampling them gives W_1, or the difference of two W_1 against one ``b``, is
    ``var(influence) / m`` for their ``m`` points (:func:`held_out_variance`).

    The influence is the optimal dual potential on ``b``'s side, the c-transform of ``a``'s,
    ``g(y) = min_i |x_i - y| - u_i``: the central limit theorem of semi-discrete optimal transport (del Barrio,
    Gonzalez-Sanz and Loubes 2022) gives ``sqrt(m) (W_1(a, b_m) - W_1(a, b)) -> N(0, var g(Y))`` for a fixed ``a``
    whose potential is unique (docs/leave-one-out.md: where it is not, the variance misleads)."""
    _require_finite((a, wa), (b, wb))
    _require_points("exact W_p", 1, len(a), len(b))
    rng = np.random.default_rng(seed)
    (xb, pb), (xa, pa) = _observed_first(a, wa, b, wb, max_size, rng)
    return _solve(xa, pa, xb, pb, tuple(ps))


def held_out_variance(influences: list[np.ndarray], coefficients: list[float]) -> float:
    """The variance, over the sampling of the observed points, of ``sum_k c_k W_1(a_k, b)`` for predictions ``a_k``
    scored against one ``b`` (their influence functions at its points, :func:`wassersteins_with_influence`): the
    delta method on the sum. For the difference of two methods it is what a paired interval over training seeds
    misses: both are scored on the same cells, one sample of the time."""
    combined = sum(c * g for c, g in zip(coefficients, influences, strict=True))
    return float(np.var(combined, ddof=1) / len(combined))


def wasserstein(
    a: np.ndarray,
    b: np.ndarray,
    p: int = 1,
    max_size: int = 2000,
    seed: int = 0,
    wa: np.ndarray | None = None,
    wb: np.ndarray | None = None,
) -> float:
    """Exact W_p on seeded subsamples of at most ``max_size`` points per side: :func:`wassersteins` for one ``p``."""
    return wassersteins(a, b, (p,), max_size, seed, wa, wb)[p]


def noise_sizes(n: int, max_size: int, size: int | None = None) -> tuple[int, int]:
    """The two subsamples' sizes of :func:`subsample_noise` on ``n`` points: predictions whose sizes give the same
    pair share one floor."""
    if size is None:
        return min(max_size, n // 2), min(max_size, n // 2)
    first = max(1, min(size, max_size, n // 2))
    return first, min(n - first, max_size)


def subsample_noise(
    x: np.ndarray,
    max_size: int = 2000,
    seed: int = 0,
    w: np.ndarray | None = None,
    p: int = 1,
    size: int | None = None,
) -> float:
    """Exact W_p between two disjoint seeded subsamples of one cloud, each of ``min(max_size, n // 2)`` points;
    with ``size`` (the cells of the prediction this floor is for), the first of ``min(size, max_size, n // 2)`` and
    the second of the rest, up to ``max_size``: what a perfect prediction of ``size`` cells would score (one pushed
    from 40 cells against 300 observed has more noise than two halves of 150 say).

    Two samples of one law are this far apart by chance. With ``2 * max_size`` points or more the halves have the
    size of the subsamples :func:`wassersteins` compares; with fewer they are two random halves, smaller than those
    subsamples, and the value is an upper estimate of their noise (W_p between samples shrinks as they grow: about 1.1
    to 1.6 times a perfect prediction's W1 in 1 to 3 dimensions at a few hundred points, benchmarks/noise_floor.py).
    Weighted points keep their weights, renormalised within each half.
    Raises ``TooFewPoints`` below two points, ``NonFiniteError`` on NaN or inf points or weights.
    """
    _require_finite((x, w))
    _require_points("the subsampling noise (two disjoint subsamples)", 2, len(x))
    first, second = noise_sizes(len(x), max_size, size)
    order = np.random.default_rng(seed).permutation(len(x))
    halves = []
    for idx in (order[:first], order[first : first + second]):
        weights = np.full(len(idx), 1.0 / len(idx)) if w is None else w[idx].astype(np.float64)
        if not weights.sum() > 0:
            raise TooFewPoints(f"the subsampling noise: one of two halves of {len(x)} points carries no weight")
        halves.append((x[idx].astype(np.float64), _normalised(weights)))
    (xa, pa), (xb, pb) = halves
    return _exact(xa, pa, xb, pb, (p,))[p]


def _directions(dim: int, projections: int, seed: int) -> torch.Tensor:
    """``projections`` seeded directions, uniform on the unit sphere, as columns of a ``dim x projections`` matrix."""
    theta = torch.randn(dim, projections, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return theta / theta.norm(dim=0, keepdim=True)


def _sorted(z: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Each row sorted, and for weighted points the cumulative weights along it (the last set to exactly 1).

    numpy's sort: torch's took 6x longer on 500 rows of 20,000 (2 cores)."""
    if w is None:
        return np.sort(z, axis=1), None
    order = np.argsort(z, axis=1)
    cdf = np.cumsum(w[order], axis=1)
    cdf[:, -1] = 1.0
    return np.take_along_axis(z, order, axis=1), cdf


def _wasserstein_1d(u: np.ndarray, v: np.ndarray, wu, wv, ps) -> dict[int, np.ndarray]:
    """``{p: W_p^p}`` per row between the 1-d weighted samples ``u[i]`` and ``v[i]``: the integral over ``q`` of
    ``|F_u^-1(q) - F_v^-1(q)|^p``, exact on the pieces where both quantile functions are constant.

    Uniform weights (``None``) have the same cumulative weights ``k / n`` in every row, so the pieces are found
    once; weighted rows each merge their own."""
    (su, cu), (sv, cv) = _sorted(u, wu), _sorted(v, wv)
    n, m = su.shape[1], sv.shape[1]
    if cu is None and cv is None and n == m:
        gap, dq = np.abs(su - sv), np.full(n, 1.0 / n)
    elif cu is None and cv is None:
        gu, gv = np.arange(1, n + 1) / n, np.arange(1, m + 1) / m
        q = np.sort(np.concatenate([gu, gv]))
        dq = np.diff(q, prepend=0.0)
        iu, iv = np.searchsorted(gu, q).clip(max=n - 1), np.searchsorted(gv, q).clip(max=m - 1)
        gap = np.abs(su[:, iu] - sv[:, iv])
    else:
        rows = len(su)
        cu = np.tile(np.arange(1, n + 1) / n, (rows, 1)) if cu is None else cu
        cv = np.tile(np.arange(1, m + 1) / m, (rows, 1)) if cv is None else cv
        # Merge each row's two increasing weight scales (a stable sort of two sorted runs: a merge); a cell of u's
        # scale is at the count of u's before it, and so for v. Against searching each scale for every merged
        # point: 3.5x faster at 190,000 and 210,000 cells, the same pieces (where two scales tie, the second piece
        # is empty, dq 0, whatever it indexes).
        both = np.concatenate([cu, cv], axis=1)
        order = np.argsort(both, axis=1, kind="stable")
        q = np.take_along_axis(both, order, axis=1)
        dq = np.diff(q, axis=1, prepend=0.0)
        from_u = order < n
        iu = (np.cumsum(from_u, axis=1) - from_u).clip(max=n - 1)
        iv = (np.cumsum(~from_u, axis=1) - ~from_u).clip(max=m - 1)
        gap = np.abs(np.take_along_axis(su, iu, axis=1) - np.take_along_axis(sv, iv, axis=1))
    return {p: (gap**p * dq).sum(axis=1) for p in ps}


def sliced_wassersteins(
    a: np.ndarray,
    b: np.ndarray,
    ps: tuple[int, ...] = (1, 2),
    projections: int = 500,
    seed: int = 0,
    wa: np.ndarray | None = None,
    wb: np.ndarray | None = None,
    block: int = BLOCK_ELEMENTS,
) -> dict[int, float]:
    """``{p: SW_p}``: the sliced Wasserstein distance on all points, ``(mean_theta W_p^p(<a, theta>, <b, theta>))
    ^ (1/p)`` over ``projections`` seeded random directions, exact in 1-d for every direction.

    Directions go in batches of ``max(1, block // (len(a) + len(b)))``: memory is the float64 copies of the clouds
    and a few ``batch x (len(a) + len(b))`` arrays, linear in the number of points; time ``O(projections
    (n log n + n d))``. Smaller than W_p (by about ``sqrt(d)`` for a translation): never compare it with an exact
    value. The same seed gives every prediction the same directions, so differences between methods are paired.
    Raises ``NonFiniteError`` on NaN or inf points or weights, ``TooFewPoints`` on an empty cloud.
    """
    _require_finite((a, wa), (b, wb))
    _require_points("sliced W_p", 1, len(a), len(b))
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    wx, wy = (None if w is None else _normalised(w) for w in (wa, wb))
    theta = _directions(x.shape[1], projections, seed).numpy()
    batch = max(1, block // (len(x) + len(y)))
    sums = dict.fromkeys(ps, 0.0)
    for start in range(0, projections, batch):
        directions = theta[:, start : start + batch].T
        # (batch, n): each direction's projections contiguous in a row, as the sorts want them
        values = _wasserstein_1d(directions @ x.T, directions @ y.T, wx, wy, ps)
        for p in ps:
            sums[p] += float(values[p].sum())
    return {p: max(sums[p] / projections, 0.0) ** (1 / p) for p in ps}


def _pair_sum(x: torch.Tensor, y: torch.Tensor | None, px: torch.Tensor, py: torch.Tensor | None, f: Callable,
              block: int) -> torch.Tensor:  # fmt: skip
    """``sum_ij px_i py_j f(|x_i - y_j|^2)`` by blocks of rows of ``x``, at most ``block`` entries at once.

    ``f(d2, w)`` returns ``f(d2) @ w`` and may overwrite ``d2``. ``y=None`` means ``y = x`` and ``py = px``: each
    block of rows then meets only itself and the points after it, counted twice by symmetry (half the work)."""
    symmetric = y is None
    y, py = (x, px) if symmetric else (y, py)
    x_norms, y_norms = (x * x).sum(dim=1), (y * y).sum(dim=1)
    rows = max(1, block // len(y))
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, len(x), rows):
        stop = min(start + rows, len(x))
        first = start if symmetric else 0  # the first point of y this block meets
        d2 = torch.addmm(y_norms[first:], x[start:stop], y[first:].T, alpha=-2.0)
        d2.add_(x_norms[start:stop, None]).clamp_min_(0.0)
        weights = py[first:]
        if symmetric:
            weights = torch.cat([weights[: stop - start], 2 * weights[stop - start :]])
        total += px[start:stop] @ f(d2, weights)
    return total


def _clouds(a, b, wa, wb, max_size: int, seed: int):
    """Seeded subsamples of at most ``max_size`` points per side, as float64 tensors with their weights, centred
    on their pooled mean: ``|x|^2 + |y|^2 - 2 x.y`` then loses no digits to an offset of the data (days, counts).
    The observed side ``b`` is drawn first: the same cells for every prediction (``_observed_first``)."""
    rng = np.random.default_rng(seed)
    (xb, pb), (xa, pa) = _observed_first(a, wa, b, wb, max_size, rng)
    centre = np.concatenate([xa, xb]).mean(axis=0)
    return (torch.as_tensor(v) for v in (xa - centre, xb - centre, pa, pb)), rng


def energy_distance(
    a: np.ndarray,
    b: np.ndarray,
    max_size: int = 5000,
    seed: int = 0,
    wa: np.ndarray | None = None,
    wb: np.ndarray | None = None,
    block: int = BLOCK_ELEMENTS,
) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between the weighted empirical measures.

    Zero only for equal measures. Above ``max_size`` points per side both are subsampled to that size (seeded);
    the sums run over blocks of at most ``block`` pairs, so memory does not grow with the clouds.
    Raises ``NonFiniteError`` on NaN or inf points or weights, ``TooFewPoints`` on an empty cloud.
    """
    _require_finite((a, wa), (b, wb))
    _require_points("the energy distance", 1, len(a), len(b))
    (x, y, pa, pb), _ = _clouds(a, b, wa, wb, max_size, seed)

    def mean_distance(u, v, pu, pv):
        return _pair_sum(u, v, pu, pv, lambda d2, w: d2.sqrt_() @ w, block)

    return float(2 * mean_distance(x, y, pa, pb) - mean_distance(x, None, pa, None) - mean_distance(y, None, pb, None))


def _median_sq_distance(pooled: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The median pairwise squared distance, among at most ``MEDIAN_SAMPLE`` seeded points of the pooled cloud (the
    lower of the two middle values when the pairs are even in number, as ``torch.median``: below a few dozen points
    that moves MMD, audit 66: 0.139 against 0.127 on 2 + 2 points).

    No absolute floor: the bandwidth must scale with the data (a floor of 1e-12 made MMD vanish for data in units
    of 1e-8). When most pairs coincide (duplicated cells) the mean squared distance sets the scale; any does when
    all points are one."""
    if len(pooled) > MEDIAN_SAMPLE:
        pooled = pooled[torch.as_tensor(rng.choice(len(pooled), MEDIAN_SAMPLE, replace=False))]
    d2 = torch.cdist(pooled, pooled).pow_(2)
    pairs = d2[torch.triu_indices(len(pooled), len(pooled), 1).unbind()]
    median = pairs.median()
    if median > 0:
        return median
    mean = pairs.mean()
    return mean if mean > 0 else torch.ones((), dtype=pairs.dtype)


def _rbf_mean(rates: list[float]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(d2, w) -> mean_k exp(-rates[k] d2) @ w``, overwriting ``d2``. Rates that are the smallest times a power of
    two (the default bandwidths 0.5, 1, 2 give 16, 4, 1) come from one exponential by squaring: less than half the
    time of three exponentials (elementwise passes over the block dominate), the same numbers to a few ulp."""
    low = min(rates)
    powers = [round(np.log2(r / low)) for r in rates]
    if any(r != low * 2**k for r, k in zip(rates, powers, strict=True)) or max(powers) > 8:
        return lambda d2, w: sum(torch.exp(d2 * -r) @ w for r in rates) / len(rates)

    def squaring(d2: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        term = d2.mul_(-low).exp_()  # exp(-low d2), in place: each power squares it in place too
        total = torch.zeros(len(d2), dtype=d2.dtype)
        for k in range(max(powers) + 1):
            if k in powers:
                total += powers.count(k) * (term @ w)
            if k < max(powers):
                term.mul_(term)
        return total / len(rates)

    return squaring


def mmd_rbf(
    a: np.ndarray,
    b: np.ndarray,
    scales=(0.5, 1.0, 2.0),
    max_size: int = 5000,
    seed: int = 0,
    wa: np.ndarray | None = None,
    wb: np.ndarray | None = None,
    block: int = BLOCK_ELEMENTS,
) -> float:
    """Squared MMD with the mean of RBF kernels ``exp(-|x - y|^2 / (2 s^2 m))``, ``s`` in ``scales``, ``m`` the
    median pairwise squared distance of the pooled points (:func:`_median_sq_distance`).

    Unbiased (diagonals left out) for uniform weights; ``wa``/``wb`` weight the points (uAM particles). Above
    ``max_size`` points per side both are subsampled to that size (seeded; weighted clouds by ``max_size`` draws in
    proportion to the weights, whose distinct pairs the within-cloud terms average over); the sums run over blocks
    of at most ``block`` pairs, so memory does not grow with the clouds.
    Raises ``NonFiniteError`` on NaN or inf points or weights, ``TooFewPoints`` below two points per cloud (the
    within-cloud terms need two distinct points).
    """
    _require_finite((a, wa), (b, wb))
    _require_points("the MMD (within-cloud pairs)", 2, len(a), len(b))
    (x, y, pa, pb), rng = _clouds(a, b, wa, wb, max_size, seed)
    median = _median_sq_distance(torch.cat([x, y]), rng)
    kernel = _rbf_mean([1.0 / (2 * s**2 * float(median)) for s in scales])

    def within(u: torch.Tensor, p: torch.Tensor, drawn: bool) -> torch.Tensor:
        """``E k(X, X')`` over pairs of distinct samples. Drawn in proportion to weights (:func:`_subsample`), the
        samples are the ``max_size`` draws, two draws of one point a legitimate pair; otherwise each point is one
        sample of weight ``p_i`` and only its pairs with itself are left out (``k(x, x) = 1``)."""
        total = _pair_sum(u, None, p, None, kernel, block)
        if drawn:
            return (max_size * total - 1) / (max_size - 1)
        squares = p.pow(2).sum()
        if not squares < 1:
            raise TooFewPoints("the MMD (within-cloud pairs) needs two points with weight; all of it is on one")
        return (total - squares) / (1 - squares)

    drawn_a, drawn_b = (w is not None and len(z) > max_size for w, z in ((wa, a), (wb, b)))
    return float(within(x, pa, drawn_a) + within(y, pb, drawn_b) - 2 * _pair_sum(x, y, pa, pb, kernel, block))


def neighbour_excess(
    a: np.ndarray, b: np.ndarray, k: int = 10, max_size: int = 5000, seed: int = 0, block: int = BLOCK_ELEMENTS
) -> float:
    """How far the cells of two clouds keep to their own kind among their ``k`` nearest neighbours (Schilling's
    nearest-neighbour two-sample statistic), on coordinates scaled by ``b``'s spread per feature.

    For each cell of the pooled clouds, the share of its ``k`` nearest other cells that come from its own cloud, less
    the share equal laws give (``(n_own - 1) / (n - 1)``), over what full separation adds (``1`` minus that share);
    averaged over the two clouds. 0: the neighbourhoods cannot tell the clouds apart; 1: no cell has a neighbour of
    the other cloud. It sees a branch missed or mixed in a few features of many, where a distance summed over every
    feature (W1) is within its noise floor; scaling each feature by the observed cells' standard deviation gives a
    narrow feature the weight of a broad one. Unweighted clouds; at most ``max_size`` seeded cells per side. Copies
    of a cell within a cloud count once: a copy is its twin's nearest neighbour, of its own kind, so a prediction
    that repeats its cells read as apart (audit 10: spline_path's 3,000 rows of 1,489 cells scored 0.264, its
    distinct cells 0.119). A cloud of one distinct cell is apart from any other (1), never an error.
    """
    a, b = (np.asarray(z).reshape(len(z), -1) for z in (a, b))  # one feature given flat: a column
    _require_finite((a, None), (b, None))
    _require_points("the neighbour excess", 2, len(a), len(b))
    (x, y, _, _), _ = _clouds(a, b, None, None, max_size, seed)
    x, y = torch.unique(x, dim=0), torch.unique(y, dim=0)
    if min(len(x), len(y)) < 2:  # a cloud of one distinct cell (a prediction collapsed onto a point) mixes with none
        return 0.0 if len(x) == len(y) == 1 and torch.equal(x, y) else 1.0
    spread = y.std(dim=0)
    spread = torch.where(spread > 0, spread, torch.ones_like(spread))  # a constant feature separates nothing
    pooled = torch.cat([x, y]) / spread
    own = torch.cat([torch.zeros(len(x), dtype=torch.bool), torch.ones(len(y), dtype=torch.bool)])
    k = min(k, len(pooled) - 1)
    rows = max(1, block // len(pooled))
    same = torch.empty(len(pooled), dtype=torch.float64)
    for start in range(0, len(pooled), rows):
        part = pooled[start : start + rows]
        d2 = torch.cdist(part, pooled).pow_(2)
        d2[torch.arange(len(part)), torch.arange(start, start + len(part))] = torch.inf  # not its own neighbour
        nearest = d2.topk(k, largest=False).indices
        same[start : start + len(part)] = (own[nearest] == own[start : start + len(part), None]).double().mean(1)
    n = len(pooled)
    excess = []
    for cloud, count in ((~own, len(x)), (own, len(y))):
        chance = (count - 1) / (n - 1)
        excess.append((same[cloud].mean() - chance) / (1 - chance))
    return float(sum(excess) / 2)


def relative_l2(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(sum |pred - truth|^2, sum |truth|^2)``: pooled into ``sqrt(err / norm)`` by the caller."""
    return float(((predicted - truth) ** 2).sum()), float((truth**2).sum())


def drift_action(
    x, time: np.ndarray, knots: np.ndarray, drift, block_values: int = 2**24, max_particles: int = 10_000, seed: int = 0
) -> np.ndarray:
    """``int E|b|^2 dt`` per interval of ``knots``: the energy of an SDE's drift ``b = drift(cells, t)`` along its
    particles ``x(step, particle, feature)``, each step's left point (Euler-Maruyama's). Finite differences of SDE
    paths measure the Brownian increments (about ``sigma^2 d / dt`` a step, growing as the steps shrink), not a
    velocity. The expectation is taken over a seeded subset of at most ``max_particles`` particles (the same at every
    step): the drift is a network evaluated at each of hundreds of steps, and 10^6 particles would cost it 10^8
    evaluations. NaN where a particle of the subset is not finite; ``x`` may be lazy: read a block of steps at a
    time."""
    n_steps, n, d = x.shape
    keep = None if n <= max_particles else np.sort(np.random.default_rng(seed).choice(n, max_particles, replace=False))
    block = max(1, block_values // max(1, min(n, max_particles) * d))
    per_step = []
    for a in range(0, n_steps - 1, block):
        b = min(a + block, n_steps - 1)
        cells = np.asarray(x[a:b] if keep is None else x[a:b, keep], dtype=np.float64)
        for s, step in enumerate(cells, start=a):
            finite = np.isfinite(step).all()
            v = drift(step, float(time[s])) if finite else np.full_like(step, np.nan)
            per_step.append(float(np.square(v).sum(-1).mean()) * (time[s + 1] - time[s]))
    index = np.searchsorted(time, knots)
    return np.array([sum(per_step[a:b]) for a, b in zip(index[:-1], index[1:], strict=True)])


def flow_action(x, time: np.ndarray, knots: np.ndarray, weight=None, block_values: int = 2**24) -> np.ndarray:
    """The kinetic action ``int E|v|^2 dt`` a pushed population spends between each pair of neighbouring ``knots``.

    From trajectories ``x(step, particle, feature)`` on the grid ``time`` (which holds every knot): the sum over
    steps of ``E|dx|^2 / dt``, exact for paths straight within a step and otherwise a lower estimate that converges
    as steps shrink. With uAM ``weight(step, particle)``, each step is the weighted mean under the step's start
    weights normalised to sum to 1: the action per unit of mass, as the geodesic between the snapshots' laws
    counts it, whether the population grew or died; NaN where any particle or weight is not finite.
    ``x`` and ``weight`` may be lazy (xarray or dask): they are read a block of steps at a time, about
    ``block_values`` numbers each, so memory never holds the trajectories.
    """
    n_steps, n, d = x.shape
    block = max(1, block_values // max(1, n * d))
    per_step = []
    for a in range(0, n_steps - 1, block):
        b = min(a + block, n_steps - 1)
        dx2 = np.square(np.diff(np.asarray(x[a : b + 1], dtype=np.float64), axis=0)).sum(-1)
        dt = np.diff(time[a : b + 1])
        finite = np.isfinite(dx2).all(1)
        with np.errstate(all="ignore"):  # NaN, inf or vanished weights are marked below, never scored
            if weight is None:
                step = dx2.mean(1) / dt
            else:
                w = np.asarray(weight[a:b], dtype=np.float64)
                total = w.sum(1)
                step = (w * dx2).sum(1) / total / dt
                finite &= np.isfinite(w).all(1) & (total > 0)
        per_step.append(np.where(finite & np.isfinite(step), step, np.nan))
    per_step = np.concatenate(per_step) if per_step else np.zeros(0)
    index = np.searchsorted(time, knots)
    return np.array([per_step[a:b].sum() for a, b in zip(index[:-1], index[1:], strict=True)])


def geodesic_action(
    clouds: list[np.ndarray], knots: np.ndarray, max_size: int = 5000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, float]:
    """``W2^2(p_k, p_{k+1}) / dt_k`` per interval: the action of the piecewise W2 geodesic through the snapshots, a
    lower bound on the action of any flow without growth that carries ``p_k`` to ``p_{k+1}`` (Benamou-Brenier), for
    the laws the cells are drawn from (growth can stand in for transport: uAM's true flow may spend less). Exact
    OT on a seeded subsample of at most ``max_size`` cells of each time (one per time, shared by its two
    intervals).

    Also the standard deviation its cells' sampling gives each term, and their sum: to first order a term moves by
    the mean of its Kantorovich potentials over each side's cells (del Barrio & Loubes 2019), so its variance is
    ``var(u)/n_a + var(v)/n_b``, and a time's cells move its two terms together (``v_{k-1}/dt_{k-1} + u_k/dt_k``
    each). Between two different laws this is first order in the sampling, where the bias two samples of one law
    show is second: on the 2-d Gaussian path (2,000 cells, 0.1 apart) a term read 3.50 against the laws' 2.79, 2.1
    of its sd (0.34), and 3.4 times that bias (audit 26)."""
    import ot

    rng = np.random.default_rng(seed)
    drawn = [_subsample(x, None, max_size, rng) for x in clouds]
    out, sd, influence = [], [], [np.zeros(len(x)) for x, _ in drawn]
    for k, dt in enumerate(np.diff(knots)):
        (xa, pa), (xb, pb) = drawn[k], drawn[k + 1]
        value, log = ot.emd2(pa, pb, ot.dist(xa, xb), numItermax=10_000_000, log=True)
        u, v = np.asarray(log["u"]), np.asarray(log["v"])
        out.append(value / dt)
        sd.append(np.sqrt(np.var(u) / len(u) + np.var(v) / len(v)) / dt)  # the cells weigh alike
        influence[k] += u / dt
        influence[k + 1] += v / dt
    total = np.sqrt(sum(np.var(g) / len(g) for g in influence))
    return np.array(out), np.array(sd), float(total)


def escaped_rows(predicted: np.ndarray, observed: np.ndarray) -> int:
    """Predicted cells that left the data: outside the observed cells' bounding box widened on every side by its
    longest side (three times the box for a square one). Their distances are finite and honest, but a flow that
    flings cells there has failed for those cells, whatever its W1; non-finite rows are counted by ``lost_rows``.
    The margin is the longest side for every feature, so a feature that barely varies (or a constant one) does
    not flag cells that moved by a hair; it is in the data's own units, so time units never change it. Observed
    cells that all coincide have no box to leave (no scale to judge by): nothing is flagged."""
    finite = predicted[np.isfinite(predicted).all(1)]
    lo, hi = observed.min(0), observed.max(0)
    width = (hi - lo).max()
    if not width > 0:
        return 0
    return int((~((finite >= lo - width) & (finite <= hi + width)).all(1)).sum())


def mmd_paper(a: np.ndarray, b: np.ndarray, alphas=(1e-4, 1e-4, 1e-4), block: int = BLOCK_ELEMENTS) -> float:
    """Unbiased squared MMD (Gretton et al. 2012) with the kernel ``k(x, y) = sum_j exp(-alpha_j |x - y|^2)``: the
    estimator the Action Matching paper reports (its three kernels, one per dimension of its 3-d data, all with
    ``alpha = 1e-4``). Every point on both sides (no subsampling), by blocks of at most ``block`` pairs in float64
    (:func:`_pair_sum`), so 5,000 x 5,000 points stay in a few MB. Can be negative (unbiased); the paper averages its
    absolute value over time.
    Raises ``NonFiniteError`` on NaN or inf points, ``TooFewPoints`` below two points per cloud.
    """
    _require_finite((a, None), (b, None))
    _require_points("the MMD (within-cloud pairs)", 2, len(a), len(b))
    (x, y, pa, pb), _ = _clouds(a, b, None, None, max(len(a), len(b)), 0)
    rates = [float(alpha) for alpha in alphas]

    def kernel(d2: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return sum(torch.exp(d2 * -r) @ w for r in rates)

    def within(u: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        n = len(u)  # the pairs of distinct points: the diagonal, k(x, x) = len(rates), weighs 1 / n
        return (_pair_sum(u, None, p, None, kernel, block) - len(rates) / n) * n / (n - 1)

    return float(within(x, pa) + within(y, pb) - 2 * _pair_sum(x, y, pa, pb, kernel, block))
