"""Choosing between AM settings on training cells: the head (``head: auto``) and uAM's price of growth (``growth:
auto``).

Every AM model minimises the same objective, ``1/2 E int |grad s - grad s*|^2 dt`` up to a constant that depends on
the path alone (eAM's ``grad s*`` is the drift that carries the path under its noise; uAM's expectation is weighted
by the path's mass and adds ``growth/2 (s - s*)^2``), so of two models the one with the lower objective on the path
through cells held apart from both trainings is the closer to that path's field. The objective is estimated for
every candidate on the same draws (common random numbers): the paired difference has a far smaller standard error
than either estimate.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from amcore.models.objective import ObjectiveSpec
from amcore.paths.interpolants import SnapshotPath
from amcore.training.losses import action_loss
from amcore.training.timesampling import TimeSampler

APART = 0.1  # the share of every training time's cells held apart from the candidates' trainings
BATCHES = 100  # objective estimates per candidate (each a batch of the training's batch_size)
CLEAR = 2.0  # standard errors by which a candidate must beat the default to replace it


def held_apart_objectives(
    networks: dict[str, nn.Module],
    path: SnapshotPath,
    spec: ObjectiveSpec,
    batch: int,
    batches: int,
    seed: int,
    knots=None,
    levels=None,
) -> dict[str, np.ndarray]:
    """``{candidate: per-batch objective}`` on ``path``, every candidate on the same draws; times drawn on the
    candidates' clock (``knots``, ``levels``: ``TimeSampler``), as in their trainings and validations."""
    values = {}
    for name, network in networks.items():
        device = next(network.parameters()).device
        gen = torch.Generator(device).manual_seed(seed)
        times = TimeSampler("stratified", path.t0, path.t1, device=device, knots=knots, levels=levels)
        values[name] = np.asarray([action_loss(network, path, batch, gen, spec, times).item() for _ in range(batches)])
        if not np.isfinite(values[name]).all():  # never a difference of NaNs or infinities read as a choice
            raise ValueError(f"the {name} candidate's objective on the held-apart cells is not finite")
    return values


def choose(values: dict[str, np.ndarray], default: str) -> tuple[str, dict]:
    """The candidate with the lowest mean objective where it beats ``default`` by more than :data:`CLEAR` standard
    errors of the paired difference, else ``default``; and the record of the choice (means, differences, errors)."""
    record = {"objectives": {name: float(v.mean()) for name, v in values.items()}, "differences": {}}
    best, best_mean = default, values[default].mean()
    for name, v in values.items():
        if name == default:
            continue
        diff = v - values[default]
        se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
        record["differences"][name] = {"difference": float(diff.mean()), "se": se}
        if diff.mean() < -CLEAR * se and v.mean() < best_mean:
            best, best_mean = name, v.mean()
    record["chosen"] = best
    return best, record


GROWTHS = (0.1, 1.0, 10.0)  # growth auto's candidates: the default, a tenth and ten times it (investigation 80)
GROWTH_CELLS = 2000  # cells of each training time a growth candidate is pushed from and scored against
MASS_GATE = 0.2  # a candidate whose push misses a training time's mass by more is set aside (evaluate's advice)


def growth_score(model, training, seed: int) -> dict:
    """How uAM ``model``'s weighted push of the first training time's cells lands on every later training time: the
    mean weighted W1 there (``w1``) and the worst relative mass error (``mass_error``); infinite where a push fails.

    The cells are the training cells themselves, yet the price of growth does not buy a closer fit of them: too
    cheap, uAM reads motion as growth ahead and death behind and puts mass in the wrong places and amounts; too
    dear, it cannot follow the masses. The weighted W1 sees both where the mass alone does not (investigation 80:
    mass error alone picked growth 0.1 on two clusters where it moved 66-72 % of the static cluster's cells into the
    growing one; inner leave-one-out pushes over one interval barely told the candidates apart)."""
    from amcore.metrics import wasserstein

    rng = np.random.default_rng(seed)

    def cells(k: int) -> np.ndarray:  # a seeded sample of a time's cells, the only rows read from a lazy store
        x = training.snapshot(k)
        return np.asarray(x[np.sort(rng.choice(len(x), min(len(x), GROWTH_CELLS), replace=False))], dtype=np.float32)

    times = np.asarray(training.t_values, dtype=np.float64)
    masses = training.masses() / training.masses()[0]
    with warnings.catch_warnings():  # a candidate's few carriers are its score's business, not the model's warning
        warnings.simplefilter("ignore")  # (audit 82: read as if about the model kept)
        pushed = model.trajectories(cells(0), times, progress=None)
    w1s, errors = [], []
    for k in range(1, len(times)):
        step = int(np.argmin(np.abs(pushed.time - times[k])))
        x, w = pushed.x[step], pushed.weight[step].astype(np.float64)
        if not (np.isfinite(x).all() and np.isfinite(w).all() and w.sum() > 0):
            return {"w1": float("inf"), "mass_error": float("inf")}
        errors.append(abs(w.mean() - masses[k]) / masses[k])
        w1s.append(wasserstein(x, cells(k), p=1, max_size=GROWTH_CELLS, wa=w))
    w1 = float(np.mean(w1s))  # a NaN would neither win nor lose a comparison: it is a failed push, as above
    return {"w1": w1 if np.isfinite(w1) else float("inf"), "mass_error": float(max(errors))}


def choose_growth(scores: dict[float, dict]) -> tuple[float, dict]:
    """The candidate of lowest ``w1`` among those within :data:`MASS_GATE` of every training mass (among all where
    none is), and the record of the choice."""
    gated = {g: v for g, v in scores.items() if v["mass_error"] <= MASS_GATE}
    pool = gated or scores
    growth = min(pool, key=lambda g: pool[g]["w1"])
    if not np.isfinite(pool[growth]["w1"]):
        raise ValueError("growth auto: every candidate's push failed (non-finite cells or weights); set a growth")
    return growth, {"growth": growth, "scores": {f"{g:g}": v for g, v in scores.items()}, "gated": bool(gated)}
