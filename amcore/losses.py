"""Training objectives: Action Matching and the Flow Matching baseline (DESIGN §1)."""

from __future__ import annotations

import torch
from torch import nn

from amcore.interpolants import SnapshotPath


def am_loss(potential: nn.Module, path: SnapshotPath, batch: int, gen: torch.Generator) -> torch.Tensor:
    """``E_{t0}[s] - E_{tK}[s] + (tK - t0) E_{t~U}[ 1/2 |grad s|^2 + d_t s ]`` by Monte Carlo.

    Minimised by the potential whose gradient carries the path of marginals with the least kinetic action.
    ``grad s`` and ``d_t s`` come from one backward pass with a graph kept for the parameter gradient.
    """
    t, xt, _ = path.sample(batch, gen)
    x_first, x_last = path.sample_endpoints(batch, gen)
    xt.requires_grad_(True)
    t.requires_grad_(True)
    s = potential(xt, t)
    ds_dx, ds_dt = torch.autograd.grad(s.sum(), (xt, t), create_graph=True)
    integrand = 0.5 * ds_dx.pow(2).sum(-1) + ds_dt
    t_first = torch.full((batch,), path.t0, device=xt.device)
    t_last = torch.full((batch,), path.t1, device=xt.device)
    boundary = potential(x_first, t_first).mean() - potential(x_last, t_last).mean()
    return boundary + path.duration * integrand.mean()


def fm_loss(field: nn.Module, path: SnapshotPath, batch: int, gen: torch.Generator) -> torch.Tensor:
    """Conditional Flow Matching: regress ``v(x_t, t)`` on the pair's straight-line velocity."""
    t, xt, target = path.sample(batch, gen)
    return (field(xt, t) - target).pow(2).sum(-1).mean()


LOSSES = {"am": am_loss, "fm": fm_loss}
