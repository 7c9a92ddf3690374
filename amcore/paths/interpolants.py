"""Samples of the path ``q_t`` between sparse snapshots.

Between consecutive observed times ``t_k < t_{k+1}``, pairs ``(x_a, x_b)`` drawn from a coupling of the two
marginals are interpolated linearly: ``x_t = (1 - tau) x_a + tau x_b``. An OT coupling (exact, or
entropic: the Schrödinger bridge's static coupling when ``reg = 2 V(t_a, t_b)``) is solved once per pair of
neighbouring snapshots and then sampled, so no transport problem sits in the hot loop. For eAM the pair is
joined by the Brownian bridge of ``dX = sigma_t dW`` (the same ``sigma_t`` schedule as the loss and the SDE
integrator, :class:`NoiseSchedule`): with ``V(a, b) = int_a^b sigma_s^2 ds``, ``tau = V(t_a, t) / V(t_a, t_b)``
and noise of variance ``V(t_a, t) V(t, t_b) / V(t_a, t_b)``; for a constant ``sigma`` these are the straight
line and ``sigma^2 (t - t_a)(t_b - t)/(t_b - t_a)``, and ``2 V = 2 sigma^2 (t_b - t_a)``.

A straight segment between two snapshots ignores what the other observed times say about the path. The
``spline`` interpolation glues the OT plans of neighbouring snapshots into chains ``(x_0, ..., x_K)`` through
every observed marginal and interpolates each chain by a cubic spline, relaxed towards the piecewise-linear
path by a tension ``lam`` (``x_t = (1 - lam) linear + lam natural cubic``). Both are linear in the chain's
points, so ``x_t = sum_k w_k(t) x_k`` with weights that every chain shares. At observed times
the path still passes through the observed cells, so its marginals are the snapshots exactly. Across an interval far
longer than its neighbours (hours 0, 0.5, 1, then 24) the natural spline carries their speed and bulges off the
data; each interval's tension is lowered until the spline strays from the chords by at most ``BEND_LIMIT`` of their
length (``bend_limited``: one number per interval from the chains' sums, so the path stays linear in their points).

Where each cell's velocity was measured (RNA velocity: ``dataset.v_key``), the spline can follow it: on
``[t_k, t_{k+1}]``, with ``h = t_{k+1} - t_k`` and ``s = (t - t_k) / h``, each chain adds the cubic Hermite terms
``lam_v h (h10(s) (c v_k - d_k) + h11(s) (c v_{k+1} - d_{k+1}))``, where ``d`` is the spline's own velocity at
each end. They vanish at both ends (the marginals stay the snapshots) and turn the path's velocity at each
observed cell from the spline's ``d`` to ``(1 - lam_v) d + lam_v c v``: with ``lam_v = 1`` and tension 0 the
path is the cubic Hermite interpolant of the chain's cells and their velocities. Measured velocities come in units
of their own (an RNA velocity is not per day): ``c`` (``velocity_unit``) makes the typical one (the median) as
fast as the typical chain. RNA velocities are heavy-tailed, so each ``c v`` is also held to the fastest chord of
the chains (``velocity_cap``): a measured velocity steers a chain, never faster than any chain moves between two
snapshots (1 % of velocities 1,000 times too large sent chains 20 times the data's radius away, and their mean had
shrunk every other velocity's unit tenfold).
Trajectory inference with RNA velocity as a second source of direction goes back to TrajectoryNet (Tong et al.,
ICML 2020), which regularised its flow with it.

With many closely spaced times (``stride`` s > 1) the straight path is the equal mixture of s interleaved ones:
path r joins the first time, times r, r + s, r + 2s, ... and the last. Each chord then spans about s intervals.
Over a short interval the cells move less than the OT pairing of two finite samples scatters them, and a longer
chord is less noisy. Every path starts at the first snapshot and ends at the last, so the mixture has the same ends
as each path and AM's boundary terms are unchanged. At an observed time the mixture holds that snapshot (from the
paths through it) and the chord of the others that cross it.

Where the population grows or dies unevenly (uAM), a balanced plan between two snapshots, each normalised to one,
has to carry cells from a subpopulation whose share falls into one whose share rises (audit 46: 196 of 250 cells
of a dying cluster moved into a growing one five spreads away). The ``unbalanced`` coupling first asks how much of
each cell's mass is carried and how much is created or destroyed in place: the Hellinger-Kantorovich (Wasserstein-
Fisher-Rao) problem between the two snapshots' masses, whose cost ``-log cos^2(min(|x - y| / delta, pi / 2))`` and
KL terms are the static form of uAM's own action ``|v|^2 + g^2 / lam`` at ``delta = 2 / sqrt(lam)`` (Liero, Mielke
and Savaré 2018; Chizat et al. 2018), solved with a little entropy since only its marginals are read. Those
marginals ``r`` (what leaves each cell of the first time) and ``c`` (what arrives at each cell of the second) are
then paired by exact OT, and each pair's mass runs geometrically from ``a_i / r_i`` to ``b_j / c_j`` times the
total's log-linear course (``a``, ``b``: the snapshots' own shares). At the observed times the path's weighted
marginals are the snapshots exactly, whatever ``r`` and ``c`` are; ``r`` and ``c`` only choose who is paired with
whom and where mass grows. Their ratios to ``a`` and ``b`` are held within ``MASS_RATIO_CAP`` (a cell that all but
dies would be drawn rarely with a huge weight).

Dense frames (a simulation's 1,000 time steps) need no coupling: ``nearest`` draws ``q_t`` from one of the two
frames around ``t``, the later with probability ``tau = (t - t_k) / (t_{k+1} - t_k)``, so ``q_t = (1 - tau) q_k +
tau q_{k+1}``. The AM paper rounds ``t`` to the nearest frame instead; that path is constant between midpoints and
jumps at them, and the loss's ``int E_t[d_t s] dt`` plus its boundary terms telescope into ``sum_k (E_k -
E_{k+1})[s(., t_{k+1/2})]``: a term linear in ``s`` at single times, which a potential steep in time around the
midpoints lowers without bound (as seen with 11 frames). The mixture is continuous in ``t``: the same term becomes
``-(1/h_k) int (E_{k+1} - E_k)[s(., t)] dt`` over each interval, the loss is bounded below by minus half the
mixture path's action, and the cost per sample is the paper's. The mixture of two frames is not their displacement
interpolation; it is close to it only when neighbouring frames are close (two copies of a cloud shifted by ``c``,
mixed half and half, have their variance inflated by ``|c|^2 / 4``), so ``nearest`` is refused unless
neighbouring frames are on average (root mean square) within ``NEAREST_MAX_STEP`` of the cloud's spread
(``frame_steps``): at most 1.6 % of the variance.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from amcore.choices import COUPLINGS, INTERPOLATIONS
from amcore.data.simulate import GrowingGaussian, Simulator

if TYPE_CHECKING:  # the store's module imports dask and xarray (seconds), which a loaded model does not need
    from amcore.data.store import Snapshots

UNBALANCED_REG = 0.05  # the entropy of the unbalanced problem, against costs of order 1: its marginals only are read
UNBALANCED_COST_CAP = 30.0  # its cost's ceiling: exp(-30 / 0.05) is still a float64
MASS_RATIO_CAP = 10.0  # the unbalanced path's a / r and b / c: within [1 / cap, cap]
PROGRESS_S = 10.0  # seconds between two lines on couplings being solved
NEAREST_MAX_STEP = 0.25
TENSIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
TENSION_CV_SIZE = 1000
# Interior times left out in turn, at most, evenly spread: each rebuilds the chains through all the others, so
# leaving out every one of 148 interior frames solved 22,000 OT plans (audit 62: 249 s for a baseline)
TENSION_CV_TIMES = 12
# `auto` on fewer than four training times, where none can be chosen: a natural spline through three times
# overshoots where they are unevenly spaced, a straight path ignores the bend they show; half of each has the lowest
# mean W1 on the held-out times of 4-time subsets of EB and TIGON EMT (benchmarks/tension_fallback.py).
FALLBACK_TENSION = 0.5
VELOCITY_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
# The farthest a spline may stray from its chords on one interval, over their length (root mean squares over the
# chains): a half circle's. Where one interval is far longer than its neighbours, the natural spline carries their
# speed across it and bulges off the data (times 0, 0.5, 1, 8, 24 h: 1.96 chords; TIGON EMT's 0.3 to 2.1: 1.44);
# EB's intervals stray at most 0.28 (benchmarks/tension_fallback.py).
BEND_LIMIT = 0.5
BEND_GRID = 21  # points along each interval, ends included, where the stray is read


@dataclass(frozen=True)
class NoiseSchedule:
    """eAM's ``sigma_t``: linear in the relative time ``u = (t - t0) / (t1 - t0)`` from ``sigma`` (``u = 0``) to
    ``sigma_final`` (``u = 1``; constant when None). The one schedule of the loss, the path and the integrator."""

    sigma: float = 0.0
    sigma_final: float | None = None

    @property
    def end(self) -> float:
        return self.sigma if self.sigma_final is None else self.sigma_final

    @property
    def active(self) -> bool:
        return self.sigma != 0 or self.end != 0

    def at(self, u):
        """``sigma_t`` at relative time ``u`` (a float, array or tensor)."""
        return self.sigma + (self.end - self.sigma) * u

    def variance(self, ua, ub, duration: float):
        """``V = int sigma_t^2 dt`` between relative times ``ua <= ub`` (``t = t0 + u * duration``); exact, as
        ``sigma_t`` is linear: ``duration (ub - ua) (sigma_a^2 + sigma_a sigma_b + sigma_b^2) / 3``."""
        sa, sb = self.at(ua), self.at(ub)
        return duration * (ub - ua) * (sa * sa + sa * sb + sb * sb) / 3


def ot_pairs(
    xa: np.ndarray, xb: np.ndarray, max_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Support ``(i, j, weight)`` of the exact OT plan (squared Euclidean cost) between two point clouds.

    Above ``max_size`` points per side the plan is solved on a uniform subsample of that size, keeping the
    cost of the exact solver bounded.
    """
    import ot  # POT (with scikit-learn) takes seconds to import: only where a coupling is solved

    ia = np.arange(len(xa)) if len(xa) <= max_size else rng.choice(len(xa), max_size, replace=False)
    ib = np.arange(len(xb)) if len(xb) <= max_size else rng.choice(len(xb), max_size, replace=False)
    rows, cols, weights = _exact_plan(ot.dist(xa[ia].astype(np.float64), xb[ib].astype(np.float64)))
    return ia[rows], ib[cols], weights


def _exact_plan(cost: np.ndarray, wa=None, wb=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The support ``(row, col, weight)`` of the exact OT plan between ``wa`` and ``wb`` (each summing to one;
    uniform where None) for ``cost``."""
    import ot

    wa = ot.unif(cost.shape[0]) if wa is None else wa
    wb = ot.unif(cost.shape[1]) if wb is None else wb
    plan = ot.emd(wa, wb, cost, numItermax=10_000_000)
    rows, cols = np.nonzero(plan > 0)
    weights = plan[rows, cols]
    return rows, cols, weights / weights.sum()


EXACT_BELOW = 1e-3  # an entropic regularisation this small beside the costs gives the exact plan
SLOW_BELOW = 0.05  # below this share of the costs, Sinkhorn takes thousands of iterations: said, pair by pair
# Sinkhorn's stop (POT's marginal violation): the plan is only sampled for partners. At a reg of 0.011 of the median
# cost (1,500 cells a side) 1e-5 stops after 330 iterations, the plan 3e-4 in L1 from the converged one, where 1e-7
# ran 5,000 iterations (a minute) without converging (audit 20).
SINKHORN_TOL = 1e-5
SCALING_STAGE_ITERATIONS = 200  # Sinkhorn iterations at most at each reg above the one asked for (epsilon scaling)
_said_exact: list[float] = []  # once per process
_said_slow: list[float] = []


def unbalanced_pairs(
    xa: np.ndarray, xb: np.ndarray, mass_a: float, mass_b: float, length: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, weight, log_ratio)``: the exact OT plan between the shares :func:`unbalanced_shares` carries out of
    ``xa`` and into ``xb``, and each pair's ``log(a_i / r_i)``, ``log(b_j / c_j)`` (module docstring) with the shares
    the plan holds, not those asked of it: the snapshots stay exact whatever the solver met. One matrix of squared
    distances serves both problems."""
    import ot

    squared = ot.dist(xa.astype(np.float64), xb.astype(np.float64))
    ra, rb = unbalanced_shares(squared, mass_a, mass_b, length)
    ia, ib, w = _exact_plan(squared, ra, rb)
    ra, rb = np.bincount(ia, w, len(xa)), np.bincount(ib, w, len(xb))
    return ia, ib, w, np.stack([-np.log(len(xa) * ra[ia]), -np.log(len(xb) * rb[ib])], 1)


def unbalanced_shares(
    squared: np.ndarray, mass_a: float, mass_b: float, length: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(r, c)``, each summing to one: the shares of the mass that leaves each cell of the first cloud and arrives
    at each cell of the second (``squared``: their squared distances) in the Hellinger-Kantorovich plan between the
    first of total mass ``mass_a`` and the second of ``mass_b`` (cells of equal mass) at length scale ``length``
    (module docstring), their ratios to the uniform shares held within :data:`MASS_RATIO_CAP`."""
    import ot

    n_a, n_b = squared.shape
    a, b = np.full(n_a, mass_a / n_a), np.full(n_b, mass_b / n_b)
    # Beyond pi/2 lengths nothing is carried (the cost is infinite); held at UNBALANCED_COST_CAP, far above the KL
    # terms' price of letting a cell die, so that exp(-cost / reg) stays a float64 (no row of zeros). In place: at
    # 5,000 cells a side each such matrix is 200 MB.
    cost = np.sqrt(squared)
    cost /= length
    np.minimum(cost, np.pi / 2, out=cost)
    np.cos(cost, out=cost)
    np.maximum(cost, 1e-300, out=cost)
    np.log(cost, out=cost)
    cost *= -2.0
    np.minimum(cost, UNBALANCED_COST_CAP, out=cost)
    # POT's convergence and overflow warnings: the plan is checked below. (Its log-domain solver is no fallback: on
    # TIGON's lineage it stopped at an error of 1.0 after 1,079 iterations, where this one converged in about 200.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan, log = ot.unbalanced.sinkhorn_unbalanced(a, b, cost, UNBALANCED_REG, 1.0, numItermax=2000, stopThr=1e-5,
                                                      log=True)  # fmt: skip
    errors = log.get("err") or [np.inf]
    if not (np.isfinite(plan).all() and errors[-1] < 1e-3):
        print(
            f"amcore train: note: the unbalanced problem between {n_a} and {n_b} cells did not converge "
            f"(error {errors[-1]:.2g}): that interval's cells are paired as by coupling 'ot'",
            file=sys.stderr,
        )
        return np.full(n_a, 1.0 / n_a), np.full(n_b, 1.0 / n_b)
    shares = []
    for carried, n in ((plan.sum(1), n_a), (plan.sum(0), n_b)):
        total = carried.sum()  # finite (checked above); 0 where nothing is carried at all
        share = carried / total if total > 0 else np.full(n, 1.0 / n)
        for _ in range(20):  # clipped and renormalised until the cap holds (to 1 %)
            share = np.clip(share, 1.0 / (MASS_RATIO_CAP * n), MASS_RATIO_CAP / n)
            share = share / share.sum()
            if share.max() <= 1.01 * MASS_RATIO_CAP / n and share.min() >= 0.99 / (MASS_RATIO_CAP * n):
                break
        shares.append(share)
    return shares[0], shares[1]


def entropic_pairs(
    xa: np.ndarray, xb: np.ndarray, reg: float, max_size: int, draws: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``draws`` partners per row drawn from the entropic OT plan (log-domain Sinkhorn, torch backend).

    The plan is dense; sampling it once keeps ``len(xa) * draws`` equally weighted pairs in memory instead. A
    ``reg`` under ``EXACT_BELOW`` of the pairs' median cost gives the exact OT plan, its limit: Sinkhorn would take
    minutes of iterations to find it (audit 9: eAM with sigma 0.01 sat 9 minutes before its first step).
    """
    ia = np.arange(len(xa)) if len(xa) <= max_size else rng.choice(len(xa), max_size, replace=False)
    ib = np.arange(len(xb)) if len(xb) <= max_size else rng.choice(len(xb), max_size, replace=False)
    a, b = torch.as_tensor(xa[ia], dtype=torch.float64), torch.as_tensor(xb[ib], dtype=torch.float64)
    cost = torch.cdist(a, b).pow(2)
    typical = float(cost.median())
    if reg < EXACT_BELOW * typical:
        if not _said_exact:
            _said_exact.append(reg)
            print(f"amcore train: entropic_reg {reg:.3g} is under {EXACT_BELOW:g} times the pairs' median cost "
                  f"{typical:.3g}: the exact OT plan, its limit, stands in for Sinkhorn's",
                  file=sys.stderr)  # fmt: skip
        rows, cols, weights = _exact_plan(cost.numpy())
        return ia[rows], ib[cols], weights
    slow = reg < SLOW_BELOW * typical
    if slow and not _said_slow:
        _said_slow.append(reg)
        print(f"amcore train: entropic_reg {reg:.3g} is {reg / typical:.2g} of the pairs' median cost {typical:.3g}: "
              "Sinkhorn converges slowly there, reached by halving the reg from "
              f"{SLOW_BELOW:g} of the cost (epsilon scaling: 15 s for 600 cells a side at 0.002: "
              "benchmarks/sinkhorn_stop.py; more as the cells grow and the reg falls); a larger entropic_reg or "
              f"sigma, or a smaller ot_max_size, speeds it; under {EXACT_BELOW:g} the exact plan stands in",
              file=sys.stderr)  # fmt: skip
    started = time.perf_counter()
    plan, iterations = entropic_plan(cost, reg, SLOW_BELOW * typical if slow else reg)
    if slow:  # a line per pair: a training that sits before its first step says why
        print(f"amcore train: Sinkhorn pair of {len(ia)} x {len(ib)} cells: {iterations} iterations, "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)  # fmt: skip
    conditional = (plan / plan.sum(1, keepdim=True)).cumsum(1)
    u = torch.as_tensor(rng.random((len(ia), draws)), dtype=torch.float64)
    cols = torch.searchsorted(conditional, u).clamp_max(len(ib) - 1).numpy()
    rows = np.repeat(np.arange(len(ia)), draws)
    return ia[rows], ib[cols.reshape(-1)], np.full(len(rows), 1.0 / len(rows))


def entropic_plan(cost: torch.Tensor, reg: float, start: float, tol: float = SINKHORN_TOL) -> tuple[torch.Tensor, int]:
    """The entropic plan between uniform weights at ``reg`` (log-domain Sinkhorn, stopped at ``tol``) and the
    iterations it took. Below ``start``, by epsilon scaling: regs halving from ``start`` to ``reg``, each stage's
    potentials starting the next (at most ``SCALING_STAGE_ITERATIONS`` a stage), the last stage's stop as without
    (docs/benchmarks.md, benchmarks/sinkhorn_stop.py: 600 cells a side at 0.002 of the median cost, 15 s against
    45 s; audit 92's pair at about 0.001 ran out its 5,000 iterations unconverged in 178 s)."""
    import ot

    a, b = (ot.unif(n, type_as=cost) for n in cost.shape)
    halvings = math.floor(math.log2(start / reg)) if start > reg else 0  # regs from under start down to reg
    warm, previous, iterations = None, None, 0
    for j in range(halvings, -1, -1):
        stage = reg * 2.0**j
        if warm is not None:  # the duals f = eps log u carry over: log u scales by the ratio of the regs
            warm = (warm[0] * previous / stage, warm[1] * previous / stage)
        plan, log = ot.sinkhorn(a, b, cost, stage, method="sinkhorn_log", warmstart=warm, log=True,
                                numItermax=SCALING_STAGE_ITERATIONS if j else 5000, stopThr=tol)  # fmt: skip
        warm, previous, iterations = (log["log_u"], log["log_v"]), stage, iterations + int(log.get("niter", 0))
    return plan, iterations


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(c)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def _bures2(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """Squared W2 between the Gaussians with these (mean, covariance)."""
    (ma, ca), (mb, cb) = a, b
    root = _psd_sqrt(ca)
    cross = np.trace(_psd_sqrt(root @ cb @ root))
    return float((ma - mb) @ (ma - mb) + max(np.trace(ca) + np.trace(cb) - 2 * cross, 0.0))


def frame_steps(clouds, rng: np.random.Generator) -> np.ndarray:
    """``W2_Bures(q_k, q_{k+1})^2 / tr Sigma_k`` for each pair of neighbouring frames, debiased: the squared distance
    between the Gaussians with the frames' means and covariances relative to the first one's variance, less half the
    same quantity between two random halves of frame k (the estimate's own bias from finite samples, ~ 4 / n in 3-d).

    The Bures distance is a lower bound of W2 (it sees two moments only): a large value proves the frames far apart,
    a small one is necessary, not sufficient, for them to be close. Values can be negative (noise).
    """
    whole, halves = [], []
    for cloud in clouds:
        x = np.asarray(cloud, dtype=np.float64)
        order = rng.permutation(len(x))
        whole.append(_moments(x))
        halves.append((_moments(x[order[: len(x) // 2]]), _moments(x[order[len(x) // 2 :]])))
    steps = []
    for k in range(len(clouds) - 1):
        variance = max(float(np.trace(whole[k][1])), 1e-300)
        steps.append((_bures2(whole[k], whole[k + 1]) - 0.5 * _bures2(*halves[k])) / variance)
    return np.asarray(steps)


def check_dense_frames(snaps: Snapshots, max_rows: int, rng: np.random.Generator) -> float:
    """The frames' RMS step (``frame_steps``, root of the mean over pairs); refuses ``interpolation: nearest`` when it
    exceeds ``NEAREST_MAX_STEP``: a mixture of neighbouring frames that far apart is not the path. Each frame's moments
    from at most ``max_rows`` rows."""
    subsets = time_subsets(snaps.counts(), max_rows, rng)
    if min(len(s) for s in subsets) < 4:
        raise ValueError("interpolation 'nearest' needs at least four cells per frame to judge the frames' spacing")
    steps = frame_steps([np.asarray(snaps.snapshot(k))[idx] for k, idx in enumerate(subsets)], rng)
    rms = float(np.sqrt(max(steps.mean(), 0.0)))
    if rms > NEAREST_MAX_STEP:
        k = int(np.argmax(steps))
        t = snaps.t_values
        raise ValueError(
            f"interpolation 'nearest' needs dense frames: neighbouring frames are {rms:.3g} of the cloud's spread "
            f"apart (root mean square over the {len(steps)} pairs of W2 between their Gaussian moments; at most "
            f"{NEAREST_MAX_STEP:g} allowed; the widest pair is t = {t[k]:g} to {t[k + 1]:g} at "
            f"{np.sqrt(max(steps[k], 0.0)):.3g}). A mixture of frames that far apart is not a path the data moves "
            "along: use interpolation 'linear' (OT pairs) or 'spline' for sparse snapshots, or observe more frames"
        )
    return rms


def spline_coefficients(knots: np.ndarray, tension) -> np.ndarray:
    """``c[k, p, j]``: on ``[t_k, t_{k+1}]`` the weight of knot ``j`` is ``sum_p c[k, p, j] (t - t_k)^(3 - p)``.

    The natural cubic spline's cardinal functions, mixed with the piecewise-linear hat functions by ``tension``: one
    value, or one per interval (``bend_limited``). Both pass through every knot, so any mix is continuous.
    """
    from scipy.interpolate import CubicSpline

    knots = np.asarray(knots, dtype=np.float64)
    n = len(knots)
    gaps = np.diff(knots)
    linear = np.zeros((n - 1, 4, n))
    linear[np.arange(n - 1), 3, np.arange(n - 1)] = 1.0
    linear[np.arange(n - 1), 2, np.arange(n - 1)] = -1.0 / gaps
    linear[np.arange(n - 1), 2, np.arange(1, n)] = 1.0 / gaps
    tension = np.broadcast_to(np.asarray(tension, dtype=np.float64), (n - 1,))[:, None, None]
    if n < 3 or not tension.any():
        return linear
    cubic = CubicSpline(knots, np.eye(n), axis=0, bc_type="natural").c.transpose(1, 0, 2)
    return (1 - tension) * linear + tension * cubic


def chain_gram(points: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """``(K, K)``: the mean over chains of ``x_k . x_j``, moved by ``center`` (by default their mean) so that no
    offset of the data swamps their differences, from which the strays and chords of ``bend_ratios`` are read."""
    x = points - (points.mean((0, 1)) if center is None else center)
    return np.einsum("nkd,njd->kj", x, x) / len(points)


def bend_ratios(gram: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """For each interval, how far the chains' natural spline strays from their chords at its farthest, over how far
    the chords reach (root mean squares over chains, from their ``chain_gram``). A half circle strays half its
    chord."""
    n = len(knots)
    if n < 3:
        return np.zeros(n - 1)
    gaps = np.diff(knots)
    stray = spline_coefficients(knots, 1.0) - spline_coefficients(knots, 0.0)
    s = np.linspace(0, 1, BEND_GRID)[1:-1]
    powers = (s[None, :] * gaps[:, None])[:, :, None] ** np.arange(3, -1, -1)  # (interval, s, p)
    w = np.einsum("ksp,kpj->ksj", powers, stray)
    reach = np.einsum("ksj,jl,ksl->ks", w, gram, w).max(1)
    ends = np.arange(n - 1)
    chord = gram[ends, ends] + gram[ends + 1, ends + 1] - 2 * gram[ends, ends + 1]
    return np.sqrt(np.maximum(reach, 0) / np.maximum(chord, np.finfo(float).tiny))


def bend_limited(gram: np.ndarray, knots: np.ndarray, tension: float) -> np.ndarray:
    """The tension on each interval: ``tension``, lowered where the spline would stray from the chords by more than
    ``BEND_LIMIT`` of their reach (module docstring: an interval far longer than its neighbours)."""
    return np.minimum(tension, BEND_LIMIT / np.maximum(bend_ratios(gram, knots), np.finfo(float).tiny))


def say_bend_limit(knots: np.ndarray, tension: float, tensions: np.ndarray) -> None:
    """Name on stderr the intervals whose tension ``bend_limited`` lowered."""
    held = [f"t = {knots[k]:g} to {knots[k + 1]:g}: {tensions[k]:.2g}" for k in np.flatnonzero(tensions < tension)]
    if held:
        print(f"amcore: the spline's tension ({tension:g}) is lowered where it would stray from its chords by more "
              f"than {BEND_LIMIT:g} of their length ({'; '.join(held)}): such an interval is far longer than its "
              "neighbours, and their speed carried across it would bulge off the data", file=sys.stderr)  # fmt: skip


def spline_weights(coef: np.ndarray, knots: np.ndarray, t: float) -> np.ndarray:
    """The knot weights ``w(t)`` of :func:`spline_coefficients` at one time (NumPy, for evaluation)."""
    k = int(np.clip(np.searchsorted(knots, t, side="right") - 1, 0, len(knots) - 2))
    return coef[k].T @ (t - knots[k]) ** np.arange(3, -1, -1)


def time_subsets(counts, max_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The rows of each time that the couplings use: all of them, or a sorted uniform subsample of ``max_size``.

    Drawn once per time and shared by both plans that touch it, so the path arriving at an observed time and the
    path leaving it have the same marginal there (AM's loss is bounded below only then; see ``sample_endpoints``).
    """
    return [np.arange(c) if c <= max_size else np.sort(rng.choice(c, max_size, replace=False)) for c in counts]


def chain_rows(clouds: list[np.ndarray], n_chains: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_chains, K)`` row indices: Markov chains through the exact OT plans of neighbouring clouds.

    The first row is uniform on the first cloud and each step draws the next row from the plan's
    conditional, so the chains' ``k``-th points are distributed as cloud ``k``. Between equally sized,
    uniformly weighted clouds the plans are permutations and the chains are deterministic.
    """
    n0 = len(clouds[0])
    rows = [np.arange(n0) if n_chains == n0 else rng.integers(0, n0, n_chains)]
    for a, b in zip(clouds[:-1], clouds[1:], strict=True):
        ia, ib, w = ot_pairs(a, b, max(len(a), len(b)), rng)
        order = np.lexsort((ib, ia))
        ia, ib, w = ia[order], ib[order], w[order]
        row_total = np.bincount(ia, w, len(a))
        within = np.cumsum(w) - np.repeat(np.cumsum(row_total) - row_total, np.bincount(ia, minlength=len(a)))
        keys = ia + np.minimum(within / row_total[ia], 1.0)
        pick = np.searchsorted(keys, rows[-1] + rng.random(n_chains) * (1 - 1e-9))
        rows.append(ib[np.minimum(pick, len(ib) - 1)])
    return np.stack(rows, axis=1)


def chain_points(
    clouds: list[np.ndarray], rng: np.random.Generator, velocities: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(chains, K, d)``: the points of :func:`chain_rows` chains, as many as the largest cloud has cells, and the
    same cells' ``velocities`` (one array per cloud) when given."""
    rows = chain_rows(clouds, max(len(c) for c in clouds), rng)
    return chain_gather(rows, clouds), None if velocities is None else chain_gather(rows, velocities)


def chain_gather(rows: np.ndarray, arrays: list[np.ndarray]) -> np.ndarray:
    """``(chains, K, ...)``: row ``rows[:, k]`` of ``arrays[k]`` for each time ``k`` (cells or their velocities)."""
    return np.stack([a[rows[:, k]] for k, a in enumerate(arrays)], axis=1)


def velocity_unit(points: np.ndarray, velocities: np.ndarray, knots: np.ndarray) -> float:
    """``c``: the chains' median chord speed over the measured velocities' median norm, so that a typical ``c v``
    moves as fast as a typical chain; medians, as a few wild velocities must not set the unit of all. Velocities
    of 0 are unmeasured cells and do not count; 0 when none was measured."""
    norms = np.linalg.norm(velocities, axis=2)
    if not (norms > 0).any():
        return 0.0
    chords = np.linalg.norm(np.diff(points, axis=1), axis=2) / np.diff(knots)
    return float(np.median(chords)) / float(np.median(norms[norms > 0]))


def velocity_cap(points: np.ndarray, knots: np.ndarray) -> float:
    """The fastest chord of the chains (distance over time between neighbouring observed cells)."""
    return float((np.linalg.norm(np.diff(points, axis=1), axis=2) / np.diff(knots)).max())


def in_path_units(velocities, unit: float, cap: float):
    """``unit * velocities``, each row's norm held to ``cap`` (numpy or torch, rows along the last axis)."""
    scaled = unit * velocities
    norm = (scaled**2).sum(-1, keepdims=True) ** 0.5
    return scaled * (cap / (norm + (norm == 0))).clip(max=1.0) if cap > 0 else scaled * 0.0  # rows of 0 stay 0


def path_velocities(points: np.ndarray, velocities: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """The chains' measured velocities in the path's units (``velocity_unit``, held to ``velocity_cap``)."""
    return in_path_units(velocities, velocity_unit(points, velocities, knots), velocity_cap(points, knots))


def all_measured(velocities: list[np.ndarray]) -> bool:
    """Whether every cell has a measured velocity (no row of 0)."""
    return all(bool(measured(v).all()) for v in velocities)


def measured(velocities):
    """``(..., 1)``: 1 where a velocity was measured, 0 for a row of 0 (numpy or torch, rows along the last axis)."""
    return (velocities != 0).sum(-1, keepdims=True) > 0


def measured_turn(velocities, slope):
    """``velocities - slope`` where a velocity was measured; 0 for an unmeasured cell (a row of 0): its chain keeps
    the spline's own velocity ``slope`` there."""
    return (velocities - slope) * measured(velocities)


def hermite_terms(coef: np.ndarray, knots: np.ndarray, t: float) -> tuple[int, float, float, np.ndarray, np.ndarray]:
    """``(k, h h10(s), h h11(s), d_k, d_{k+1})`` at one time: the interval, the Hermite weights of the velocity
    terms, and the knot weights of the spline's own velocity at the interval's two ends."""
    k = int(np.clip(np.searchsorted(knots, t, side="right") - 1, 0, len(knots) - 2))
    h = knots[k + 1] - knots[k]
    s = (t - knots[k]) / h
    c = coef[k]  # (4, knots): weights of s^3, s^2, s, 1 in real time s * h
    return k, h * (s**3 - 2 * s**2 + s), h * (s**3 - s**2), c[2], 3 * h**2 * c[0] + 2 * h * c[1] + c[2]


def spline_at(
    points: np.ndarray,
    knots: np.ndarray,
    t: float,
    tension: float,
    velocities: np.ndarray | None = None,
    velocity_weight: float = 0.0,
) -> np.ndarray:
    """Each chain's spline (``spline_coefficients``, ``bend_limited``) read at one time ``t``: ``(chains, d)``;
    turned towards the chain cells' ``velocities`` (in the path's units: ``path_velocities``; module docstring)
    when ``velocity_weight`` is not 0."""
    coef = spline_coefficients(knots, bend_limited(chain_gram(points), knots, tension))
    x = np.einsum("k,nkd->nd", spline_weights(coef, knots, t), points)
    if velocity_weight:
        k, a, b, slope_a, slope_b = hermite_terms(coef, knots, t)
        turn_a = measured_turn(velocities[:, k], np.einsum("k,nkd->nd", slope_a, points))
        turn_b = measured_turn(velocities[:, k + 1], np.einsum("k,nkd->nd", slope_b, points))
        x = x + velocity_weight * (a * turn_a + b * turn_b)
    return x


def choose_shape(
    clouds: list[np.ndarray],
    knots: np.ndarray,
    rng: np.random.Generator,
    velocities: list[np.ndarray] | None = None,
    tension: float | str = "auto",
    velocity_weight: float | str = 0.0,
) -> tuple[tuple[float, float], dict]:
    """The ``(tension, velocity_weight)`` whose path best predicts each interior observed time left out in turn
    (exact W1; at most :data:`TENSION_CV_TIMES` of them, evenly spread), among the candidates (``TENSIONS``,
    ``VELOCITY_WEIGHTS``) of each one set to ``auto``.

    Only the given (training) clouds are used: each interior one is dropped, chains are rebuilt through the
    others, and the interpolated chains at its time are compared with its cells. With fewer than four
    times no time can be left out informatively (two are left, and every tension draws the same straight line
    between them): ``FALLBACK_TENSION`` is used, and no bend along the velocities.
    """
    from amcore.metrics import wasserstein

    tensions = TENSIONS if tension == "auto" else (float(tension),)
    weights = VELOCITY_WEIGHTS if velocity_weight == "auto" else (float(velocity_weight),)
    if len(clouds) < 4:
        return (tensions[0] if len(tensions) == 1 else FALLBACK_TENSION, weights[0] if len(weights) == 1 else 0.0), {}
    picks = [np.arange(len(c)) if len(c) <= TENSION_CV_SIZE else rng.choice(len(c), TENSION_CV_SIZE, replace=False)
             for c in clouds]  # fmt: skip
    clouds = [c[i] for c, i in zip(clouds, picks, strict=True)]
    velocities = None if velocities is None else [v[i] for v, i in zip(velocities, picks, strict=True)]
    # At weight 1 a chain's cubic is fixed by its two ends and their velocities, whatever the tension, where every
    # cell's velocity was measured: scored once then (an unmeasured end keeps the spline's slope, which has one).
    once = velocities is not None and all_measured(velocities)
    scores = {(lam, g): [] for lam in tensions for g in weights if not (once and g == 1 and lam != tensions[0])}
    left_out = np.unique(np.linspace(1, len(clouds) - 2, min(TENSION_CV_TIMES, len(clouds) - 2)).round().astype(int))
    for j in left_out:
        keep = [i for i in range(len(clouds)) if i != j]
        points, moving = chain_points([clouds[i] for i in keep], rng, velocities and [velocities[i] for i in keep])
        if moving is not None:
            moving = path_velocities(points, moving, knots[keep])
        for lam, g in scores:
            predicted = spline_at(points, knots[keep], float(knots[j]), lam, moving, g)
            scores[(lam, g)].append(wasserstein(predicted, clouds[j], p=1, max_size=TENSION_CV_SIZE))
    mean = {shape: float(np.mean(v)) for shape, v in scores.items()}
    return min(mean, key=mean.get), mean


def resolve_shape(
    tension: float | str,
    velocity_weight: float | str,
    clouds: list[np.ndarray],
    knots: np.ndarray,
    rng: np.random.Generator,
    velocities: list[np.ndarray] | None = None,
) -> tuple[float, float]:
    """``(tension, velocity_weight)`` as given, or for each ``auto`` the value ``choose_shape`` picks on these
    (training) clouds, said on stderr with its cross-validation table: the training path and the ``spline_path``
    and ``velocity_path`` baselines decide alike."""
    if velocity_weight != 0 and velocities is None:
        raise ValueError("velocity_weight turns the path towards measured velocities, and these snapshots have none: "
                         "name them with dataset.v_key (or set velocity_weight 0)")  # fmt: skip
    if tension != "auto" and velocity_weight != "auto":
        return float(tension), float(velocity_weight)
    if velocity_weight != "auto" and float(velocity_weight) == 1 and all_measured(velocities):
        return TENSIONS[0], 1.0  # each chain: the cubic through its cells and their velocities, whatever the tension
    chosen, scores = choose_shape(clouds, knots, rng, velocities, tension, velocity_weight)
    if scores:
        table = ", ".join(f"{lam:g}" + (f"/{g:g}" if velocity_weight == "auto" else "") + f": {w:.4g}"
                          for (lam, g), w in scores.items())  # fmt: skip
        named = "spline tension" + (" / velocity weight" if velocity_weight == "auto" else "")
        if velocity_weight not in ("auto", 0):
            named += f" (at velocity weight {float(velocity_weight):g})"
        shown = f"{chosen[0]:g}" + (f" / {chosen[1]:g}" if velocity_weight == "auto" else "")
        left = "each interior time" if len(clouds) - 2 <= TENSION_CV_TIMES else f"{TENSION_CV_TIMES} interior times"
        print(f"amcore: {named} {shown} (W1, {left} left out: {table})", file=sys.stderr)
    elif len(clouds) > 2:
        print(f"amcore: spline tension {chosen[0]:g}, velocity weight {chosen[1]:g}: {len(clouds)} training times "
              f"leave none to choose them on (auto takes tension {FALLBACK_TENSION:g}, half way between the straight "
              "path and the natural spline, and no bend along the velocities)", file=sys.stderr)  # fmt: skip
    return chosen


def interleaved_legs(n_snapshots: int, stride: int) -> list[tuple[int, int]]:
    """The legs ``(k, j)`` of ``stride`` interleaved paths, path by path: path ``r`` visits the first time, times
    ``r, r + stride, ...`` and the last. With ``stride`` 1: every neighbouring pair, in order."""
    last = n_snapshots - 1
    legs = []
    for r in range(stride):
        knots = sorted({0, *range(r, last, stride), last})
        legs += list(zip(knots[:-1], knots[1:], strict=True))
    return legs


def leg_index(legs: list[tuple[int, int]], n_snapshots: int, stride: int) -> torch.Tensor:
    """``(stride, intervals)``: the leg of path ``r`` that spans observed interval ``k`` (legs as
    :func:`interleaved_legs` lists them: each path starts again at time 0)."""
    index = torch.empty(stride, n_snapshots - 1, dtype=torch.long)
    r = -1
    for leg, (k, j) in enumerate(legs):
        r += k == 0
        index[r, k:j] = leg
    return index


class SnapshotPath:
    """Draws ``(t, x_t, u_t)`` along the interpolated path; ``u_t = d x_t / dt`` (straight-line or spline)."""

    def __init__(
        self,
        snaps: Snapshots,
        coupling: str = "ot",
        ot_max_size: int = 5000,
        seed: int = 0,
        device: str | torch.device = "cpu",
        sigma: float = 0.0,
        entropic_reg: float | None = None,
        entropic_draws: int = 16,
        interpolation: str = "linear",
        tension: float | str = "auto",
        sigma_final: float | None = None,
        stride: int = 1,
        velocity_weight: float | str = 0.0,
        growth_length: float | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        """``sigma`` and ``sigma_final``: the :class:`NoiseSchedule` of eAM's Brownian bridge (0: no noise);
        ``stride``: how many interleaved straight paths are mixed; ``velocity_weight``: how far the spline turns
        towards the cells' measured velocities; ``growth_length``: the ``unbalanced`` coupling's length scale, in
        the data's units (module docstring); ``progress``: where a line goes every :data:`PROGRESS_S` seconds while
        the couplings are solved (5,000 cells a time in 20-d: 20 s an interval, in silence before)."""
        if coupling not in COUPLINGS:
            raise ValueError(f"unknown coupling {coupling!r}; expected one of {COUPLINGS}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {INTERPOLATIONS}")
        if velocity_weight != 0 and interpolation != "spline":
            raise ValueError(f"velocity_weight turns spline paths: it needs interpolation 'spline', not "
                             f"{interpolation!r}")  # fmt: skip
        if interpolation == "spline" and coupling != "ot":
            raise ValueError(f"interpolation 'spline' chains exact OT plans: it needs coupling 'ot', not {coupling!r}")
        if snaps.n_snapshots < 2:
            raise ValueError(f"need at least two observed times to learn a flow, got {snaps.n_snapshots}")
        if coupling == "unbalanced" and (interpolation != "linear" or stride != 1 or sigma or growth_length is None):
            raise ValueError("coupling 'unbalanced' pairs neighbouring snapshots by their masses: it needs "
                             "interpolation 'linear', stride 1, no noise and a growth_length")  # fmt: skip
        if stride != 1 and (interpolation != "linear" or coupling == "independent"):
            raise ValueError(f"stride {stride} interleaves straight coupled paths: it needs interpolation 'linear' "
                             f"and coupling 'ot' or 'entropic', not {interpolation!r} and {coupling!r}")  # fmt: skip
        if not 1 <= stride < max(2, snaps.n_snapshots - 1):
            most = snaps.n_snapshots - 2
            allowed = "1 with so few times" if most < 2 else ("1 or 2" if most == 2 else f"1, or from 2 to {most}")
            raise ValueError(f"stride must be {allowed} (a jump over fewer than all {snaps.n_snapshots - 1} intervals "
                             f"of the training times), got {stride}")  # fmt: skip
        self.stride = int(stride)
        self.coupling = coupling
        self.device = torch.device(device)
        self.x = torch.as_tensor(snaps.x, device=self.device)
        from amcore.data.store import check_time_resolution

        check_time_resolution(np.asarray(snaps.t_values, dtype=np.float64), "snapshot times")
        self.t_values = torch.as_tensor(snaps.t_values, dtype=torch.float32, device=self.device)
        self.offsets = torch.as_tensor(snaps.offsets, device=self.device)
        self.counts = self.offsets.diff()
        self.t0, self.t1 = float(snaps.t_values[0]), float(snaps.t_values[-1])
        self.dim = snaps.dim
        self.noise = NoiseSchedule(float(sigma), None if sigma_final is None else float(sigma_final))
        masses = snaps.masses()
        self.log_mass = torch.as_tensor(np.log(masses / masses[0]), dtype=torch.float32, device=self.device)
        if coupling == "entropic" and entropic_reg is None and not self.noise.active:
            raise ValueError(
                "coupling 'entropic' needs entropic_reg, or sigma > 0 to use the Schrödinger bridge's "
                "2 int_{t_a}^{t_b} sigma_t^2 dt"
            )
        self.entropic_regs: list[float] = []
        self.pair_log_ratio: torch.Tensor | None = None  # the unbalanced coupling's (below)
        self.interpolation = interpolation
        if interpolation == "nearest":
            self.frame_step = check_dense_frames(snaps, ot_max_size, np.random.default_rng(seed))
        elif interpolation == "spline":
            self._build_chains(snaps, ot_max_size, tension, velocity_weight, np.random.default_rng(seed))
        elif coupling != "independent":
            rng = np.random.default_rng(seed)
            subsets = time_subsets(snaps.counts(), ot_max_size, rng)
            legs = interleaved_legs(snaps.n_snapshots, self.stride)
            pair_a, pair_b, cum, ratios = [], [], [], []
            relative = masses / masses[0]
            started = said = time.monotonic()
            for leg, (k, j) in enumerate(legs):
                if progress is not None and leg and time.monotonic() - said >= PROGRESS_S:
                    said = time.monotonic()
                    progress(f"{leg} of {len(legs)} couplings solved ({said - started:.0f} s)")
                sa, sb = subsets[k], subsets[j]
                xa, xb = np.asarray(snaps.snapshot(k))[sa], np.asarray(snaps.snapshot(j))[sb]
                if coupling == "unbalanced":
                    ia, ib, w, ratio = unbalanced_pairs(xa, xb, relative[k], relative[j], float(growth_length))
                    ratios.append(ratio)
                elif coupling == "ot":
                    ia, ib, w = ot_pairs(xa, xb, ot_max_size, rng)
                else:
                    ua, ub = (self._relative(float(snaps.t_values[i])) for i in (k, j))
                    reg = entropic_reg if entropic_reg is not None else 2 * self.noise.variance(ua, ub, self.duration)
                    self.entropic_regs.append(float(reg))
                    ia, ib, w = entropic_pairs(xa, xb, reg, ot_max_size, entropic_draws, rng)
                pair_a.append(sa[ia] + snaps.offsets[k])
                pair_b.append(sb[ib] + snaps.offsets[j])
                # Cumulative weights shifted by the leg: one searchsorted finds leg and pair at once.
                cum.append(leg + np.minimum(np.cumsum(w), 1.0))
            self.pair_a = torch.as_tensor(np.concatenate(pair_a), device=self.device)
            self.pair_b = torch.as_tensor(np.concatenate(pair_b), device=self.device)
            if ratios:  # per pair: log(a_i / r_i), log(b_j / c_j); the ends' cells, drawn uniformly
                self.pair_log_ratio = torch.as_tensor(np.concatenate(ratios), dtype=torch.float32, device=self.device)
                ends = (0, snaps.n_snapshots - 1)
                self.end_rows = [torch.as_tensor(snaps.offsets[k] + subsets[k], device=self.device) for k in ends]
            self.cum_weights = torch.as_tensor(np.concatenate(cum), device=self.device)
            ends = torch.as_tensor(legs, device=self.device)
            self.leg_times = self.t_values[ends]  # (legs, 2): each leg's first and last time
            self.leg_of = leg_index(legs, snaps.n_snapshots, self.stride).to(self.device)

    def _build_chains(
        self, snaps: Snapshots, max_size: int, tension: float | str, velocity_weight: float | str, rng
    ) -> None:
        """Chains through every snapshot (each subsampled once to ``max_size``), the spline's coefficients, and the
        weight and unit of the turn towards measured velocities (module docstring)."""
        subsets = time_subsets(snaps.counts(), max_size, rng)
        clouds = [np.asarray(snaps.snapshot(k))[idx].astype(np.float64) for k, idx in enumerate(subsets)]
        velocities = None
        if snaps.velocity is not None and velocity_weight != 0:
            velocities = [np.asarray(snaps.velocity[snaps.offsets[k] : snaps.offsets[k + 1]])[idx].astype(np.float64)
                          for k, idx in enumerate(subsets)]  # fmt: skip
        knots = np.asarray(snaps.t_values, dtype=np.float64)
        self.tension, self.velocity_weight = resolve_shape(tension, velocity_weight, clouds, knots, rng, velocities)
        rows = chain_rows(clouds, max(len(c) for c in clouds), rng)
        self.velocity_unit = 0.0
        if self.velocity_weight:  # every cell's velocity in the path's units, with the chains' unit and cap
            points, moving = chain_gather(rows, clouds), chain_gather(rows, velocities)
            self.velocity_unit = velocity_unit(points, moving, knots)
            cap = velocity_cap(points, knots)
            given = torch.as_tensor(np.asarray(snaps.velocity), dtype=torch.float32, device=self.device)
            self.v = in_path_units(given, self.velocity_unit, cap)
        center, block = np.mean([c.mean(0) for c in clouds], 0), 1 << 12  # blocks: chains x times x features
        gram = sum(chain_gram(chain_gather(rows[i : i + block], clouds), center) * len(rows[i : i + block])
                   for i in range(0, len(rows), block)) / len(rows)  # fmt: skip
        self.tensions = bend_limited(gram, knots, self.tension)
        rows = np.stack([snaps.offsets[k] + subsets[k][rows[:, k]] for k in range(len(subsets))], axis=1)
        self.chains = torch.as_tensor(rows, device=self.device)
        coef = spline_coefficients(knots, self.tensions)
        self.coef = torch.as_tensor(coef, dtype=torch.float32, device=self.device)

    @property
    def duration(self) -> float:
        return self.t1 - self.t0

    @property
    def sigma(self) -> float:
        """``sigma_t`` at the first time (the schedule is ``noise``)."""
        return self.noise.sigma

    def _relative(self, t):
        """``u = (t - t0) / (t1 - t0)``, the schedule's (and the loss's) relative time."""
        return (t - self.t0) / self.duration

    def _uniform(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(n, generator=gen, device=self.device)

    def _rows(self, k: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A uniformly random row of snapshot ``k`` (elementwise); float64, because a float32 uniform times a count
        above 2^24 skips rows."""
        u = torch.rand(len(k), generator=gen, device=self.device, dtype=torch.float64)
        return self.offsets[k] + (u * self.counts[k]).long().clamp_max(self.counts[k] - 1)

    def draw(self, k: int, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` cells of observed time ``k``, uniformly with replacement."""
        return self.x[self._rows(torch.full((n,), k, device=self.device), gen)]

    def fingerprint(self) -> str:
        """Identifies the data (times, counts, masses, each feature's sum and sum of squares) for resuming a
        training: a uAM training stopped and rerun with other masses (``dataset.population`` added) starts afresh,
        and so do the same values in another order of features (review 84: one sum of every value took them for the
        same data, with ``units: data`` the same network too).

        Summed in float64 block by block: a float64 copy of the whole array would double the memory.
        """
        sums = sum(torch.stack([block.sum(0, dtype=torch.float64), block.double().square().sum(0)])
                   for block in self.x.split(1 << 16))  # fmt: skip
        values = " ".join(f"{v:.10e}" for v in sums.flatten().tolist())
        masses = [f"{m:.6e}" for m in self.log_mass.tolist()]
        return f"{self.t_values.tolist()}|{self.counts.tolist()}|{values}|{masses}"

    def interval(self, t: torch.Tensor) -> torch.Tensor:
        """Index ``k`` of the observed interval ``[t_k, t_{k+1}]`` holding each ``t``."""
        return (torch.searchsorted(self.t_values, t, right=True) - 1).clamp(0, len(self.t_values) - 2)

    def mass(self, t: torch.Tensor) -> torch.Tensor:
        """Total mass at ``t`` relative to the first time, log-linear between observed times."""
        k = self.interval(t)
        ta, tb = self.t_values[k], self.t_values[k + 1]
        tau = (t - ta) / (tb - ta)
        return torch.exp((1 - tau) * self.log_mass[k] + tau * self.log_mass[k + 1])

    def log_mass_rate(self, t: torch.Tensor) -> torch.Tensor:
        """``d log mass / dt`` at ``t``: constant within each observed interval (uAM's pathwise estimator)."""
        k = self.interval(t)
        return (self.log_mass[k + 1] - self.log_mass[k]) / (self.t_values[k + 1] - self.t_values[k])

    def sample_at(self, t: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``x_t`` on the interpolated path (Brownian bridge when ``sigma_t`` is not 0) and the velocity of its mean
        ``d E[x_t | x_a, x_b] / dt``."""
        n = len(t)
        k = self.interval(t)
        ta, tb = self.t_values[k], self.t_values[k + 1]
        if self.interpolation == "nearest":
            # The later frame with probability tau: q_t = (1 - tau) q_k + tau q_{k+1}, continuous in t.
            later = (self._uniform(n, gen) * (tb - ta) < t - ta).long()
            x = self.x[self._rows(k + later, gen)]
            return x, torch.full_like(x, float("nan"))
        if self.interpolation == "spline":
            chain = self.chains[(self._uniform(n, gen) * len(self.chains)).long().clamp_max(len(self.chains) - 1)]
            s = (t - ta)[:, None]
            one, zero = torch.ones_like(s), torch.zeros_like(s)
            coef = self.coef[k]
            w = torch.einsum("np,npk->nk", torch.cat([s**3, s**2, s, one], 1), coef)
            dw = torch.einsum("np,npk->nk", torch.cat([3 * s**2, 2 * s, one, zero], 1), coef)
            points = self.x[chain]
            xt, u = torch.einsum("nk,nkd->nd", w, points), torch.einsum("nk,nkd->nd", dw, points)
            if self.velocity_weight:  # Hermite terms towards the cells' measured velocities (module docstring)
                ends = chain.gather(1, torch.stack([k, k + 1], 1))
                h = (tb - ta)[:, None]
                r = s / h
                slope_a = torch.einsum("nk,nkd->nd", coef[:, 2], points)
                slope_b = torch.einsum("nk,nkd->nd", 3 * h**2 * coef[:, 0] + 2 * h * coef[:, 1] + coef[:, 2], points)
                turn_a = measured_turn(self.v[ends[:, 0]], slope_a)
                turn_b = measured_turn(self.v[ends[:, 1]], slope_b)
                lam = self.velocity_weight
                xt = xt + lam * h * ((r**3 - 2 * r**2 + r) * turn_a + (r**3 - r**2) * turn_b)
                u = u + lam * ((3 * r**2 - 4 * r + 1) * turn_a + (3 * r**2 - 2 * r) * turn_b)
            if self.noise.active:
                _, _, std = self._bridge(t, ta, tb)
                xt = xt + std * torch.randn(xt.shape, generator=gen, device=self.device)
            return xt, u
        if self.coupling != "independent":
            ta, tb, j = self._pairs(t, k, gen)
            ia, ib = self.pair_a[j], self.pair_b[j]
        else:
            ia, ib = self._rows(k, gen), self._rows(k + 1, gen)
        xa, xb = self.x[ia], self.x[ib]
        if not self.noise.active:
            tau = ((t - ta) / (tb - ta))[:, None]
            return (1 - tau) * xa + tau * xb, (xb - xa) / (tb - ta)[:, None]
        tau, rate, std = self._bridge(t, ta, tb)
        xt = (1 - tau) * xa + tau * xb
        return xt + std * torch.randn(xt.shape, generator=gen, device=self.device), rate * (xb - xa)

    def _pairs(self, t: torch.Tensor, k: torch.Tensor, gen: torch.Generator):
        """``(t_a, t_b, j)``: for each time ``t`` in observed interval ``k``, a pair ``j`` of the coupling drawn by
        its weight and the times of its leg."""
        ta, tb = self.t_values[k], self.t_values[k + 1]
        if self.stride > 1:  # one of the interleaved paths, uniformly, and its leg over t
            k = self.leg_of[(self._uniform(len(t), gen) * self.stride).long().clamp_max(self.stride - 1), k]
            ta, tb = self.leg_times[k, 0], self.leg_times[k, 1]
        # In float64: in float32 a key k + u, k >= 32, can round up to k + 1 and land in the next interval.
        j = torch.searchsorted(self.cum_weights, k + self._uniform(len(t), gen).double() * (1 - 1e-6))
        return ta, tb, j

    def sample_weighted(
        self, t: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_t, u_t, m, d log m / dt)``: :meth:`sample_at`'s draw with each point's mass relative to the first
        time's and its rate: the total's log-linear course (:meth:`mass`), on the ``unbalanced`` coupling times each
        pair's own geometric course from ``a_i / r_i`` to ``b_j / c_j`` (module docstring). uAM's loss reads them."""
        if self.pair_log_ratio is None:
            x, u = self.sample_at(t, gen)
            return x, u, self.mass(t), self.log_mass_rate(t)
        ta, tb, j = self._pairs(t, self.interval(t), gen)
        xa, xb = self.x[self.pair_a[j]], self.x[self.pair_b[j]]
        tau, ends = (t - ta) / (tb - ta), self.pair_log_ratio[j]
        mass = self.mass(t) * torch.exp((1 - tau) * ends[:, 0] + tau * ends[:, 1])
        rate = self.log_mass_rate(t) + (ends[:, 1] - ends[:, 0]) / (tb - ta)
        return (1 - tau[:, None]) * xa + tau[:, None] * xb, (xb - xa) / (tb - ta)[:, None], mass, rate

    def _bridge(
        self, t: torch.Tensor, ta: torch.Tensor, tb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The Brownian bridge of ``dX = sigma_t dW`` from ``t_a`` to ``t_b`` at ``t`` (columns): the weight ``tau`` of
        ``x_b`` in its mean (it runs on the clock ``V``: ``V(t_a, t) / V(t_a, t_b)``), ``d tau / dt``, and its std
        ``sqrt(V(t_a, t) V(t, t_b) / V(t_a, t_b))`` per coordinate."""
        ua, u, ub = self._relative(ta), self._relative(t), self._relative(tb)
        before, after = self.noise.variance(ua, u, self.duration), self.noise.variance(u, ub, self.duration)
        total = (before + after).clamp_min(1e-30)
        rate = self.noise.at(u).pow(2) / total
        return (before / total)[:, None], rate[:, None], (before * after / total).clamp_min(0).sqrt()[:, None]

    def sample_endpoints(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples of the path's own marginals at its first and last times (AM's boundary terms).

        Not the observed cells drawn uniformly: chains and subsampled or sampled plans visit each cell a random
        number of times, and AM's loss is bounded below (by minus half the path's action) only when its boundary
        terms see exactly the distribution the path starts and ends in. Any difference is a term linear in ``s``
        that the network grows without bound with a potential steep in time at the ends.
        """
        if self.interpolation == "spline":
            first, last = (
                (self._uniform(n, gen) * len(self.chains)).long().clamp_max(len(self.chains) - 1) for _ in range(2)
            )
            return self.x[self.chains[first, 0]], self.x[self.chains[last, -1]]
        if self.pair_log_ratio is not None:  # the unbalanced pairs visit cells by r and c: the snapshots themselves
            rows = [ends[(self._uniform(n, gen) * len(ends)).long().clamp_max(len(ends) - 1)] for ends in self.end_rows]
            return self.x[rows[0]], self.x[rows[1]]
        if self.coupling != "independent" and self.interpolation != "nearest":
            last = len(self.leg_times) - 1  # the last leg ends at the last time
            ja = torch.searchsorted(self.cum_weights, self._uniform(n, gen).double() * (1 - 1e-6))
            jb = torch.searchsorted(self.cum_weights, last + self._uniform(n, gen).double() * (1 - 1e-6))
            return self.x[self.pair_a[ja]], self.x[self.pair_b[jb]]
        last = len(self.t_values) - 1
        first = torch.zeros(n, dtype=torch.long, device=self.device)
        return self.x[self._rows(first, gen)], self.x[self._rows(first + last, gen)]

    def action(self, draws: int = 200_000, seed: int = 0, pace=None) -> float:
        """The path's kinetic action ``int E|u_t|^2 dt`` (Monte Carlo over ``draws`` times and points). AM's loss on
        this path cannot go below minus half of it (``docs/training.md``); it is also what the interpolant alone
        spends, beside a learned flow's action and the geodesic's in the action audit. ``pace``: a paced potential's
        (``potentials.pace_of``), whose loss is the action in the clock's time, ``int E|u_t|^2 / p dt``. NaN for
        ``nearest``: a mixture of frames has no pair velocities (its action needs a solve of ``div(q u) = -d_t q``)."""
        if self.interpolation == "nearest":
            return float("nan")
        gen = torch.Generator(self.device).manual_seed(seed)
        t = self.t0 + torch.rand(draws, generator=gen, device=self.device, dtype=torch.float64) * self.duration
        _, u = self.sample_at(t.float(), gen)
        speed = u.double().pow(2).sum(-1)
        if pace is not None:
            speed = speed / pace(t.float()).double()
        return self.duration * float(speed.mean())


class MarginalPath:
    """The exact marginals ``p_t`` of a simulator at every ``t``: the path with no interpolation error.

    Same interface as ``SnapshotPath``; it isolates what the loss and the network can learn from what
    sparse, finite snapshots allow, and is what the analytic acceptance tests train on. The simulator draws on
    the CPU (numpy); samples land on the device of the generator that seeds them.
    """

    def __init__(self, simulator: Simulator, t0: float, t1: float) -> None:
        self.simulator, self.t0, self.t1 = simulator, float(t0), float(t1)
        self.dim = simulator.dim

    @property
    def duration(self) -> float:
        return self.t1 - self.t0

    def _draw(self, t: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device)))
        return torch.as_tensor(self.simulator.sample_times(t, rng), dtype=torch.float32, device=gen.device)

    def sample_at(self, t: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._draw(t.detach().cpu().double().numpy(), gen)
        return x, torch.full_like(x, float("nan"))

    def sample_endpoints(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self._draw(np.full(n, self.t0), gen), self._draw(np.full(n, self.t1), gen)

    def fingerprint(self) -> str:
        return repr(self.simulator)

    def mass(self, t: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.simulator, GrowingGaussian):
            return torch.ones_like(t)
        log_mass = np.vectorize(self.simulator.log_mass)(t.detach().cpu().double().numpy())
        return torch.as_tensor(
            np.exp(log_mass - self.simulator.log_mass(self.t0)), dtype=torch.float32, device=t.device
        )
