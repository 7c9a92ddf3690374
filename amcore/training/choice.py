"""Choosing between AM settings on training cells none of the candidates saw (``head: auto``).

Every AM model minimises the same objective, ``1/2 E int |grad s - grad s*|^2 dt`` up to a constant that depends on
the path alone (eAM's ``grad s*`` is the drift that carries the path under its noise; uAM's expectation is weighted
by the path's mass and adds ``growth/2 (s - s*)^2``), so of two models the one with the lower objective on the path
through cells held apart from both trainings is the closer to that path's field. The objective is estimated for
every candidate on the same draws (common random numbers): the paired difference has a far smaller standard error
than either estimate.
"""

from __future__ import annotations

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
