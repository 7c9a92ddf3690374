"""Training objectives: Action Matching (AM), entropic AM (eAM), unbalanced AM (uAM), Flow Matching.

All AM variants minimise ``w(t0) M_0 E_0[s] - w(tK) M_K E_K[s] + int M_t E_t[w (d_t s + 1/2 |grad s|^2 + extra)
+ w' s] dt`` with ``extra = 1/2 sigma_t^2 lap s`` (eAM) or ``1/2 lam s^2`` (uAM, whose ``M_t`` is the mass of
the unnormalised measure; ``M_t = 1`` otherwise). ``w`` is an optional time weight, equivalent at the optimum.
"""

from __future__ import annotations

import torch
from torch import nn

from amcore.models.objective import ObjectiveSpec
from amcore.paths.interpolants import SnapshotPath
from amcore.training.timesampling import TimeSampler


def exact_trace(spec: ObjectiveSpec, dim: int) -> bool:
    """Whether eAM takes the exact trace of the Hessian (else the Hutchinson estimate)."""
    return spec.laplacian == "exact" or (spec.laplacian == "auto" and dim <= spec.exact_trace_max_dim)


def laplacian_tangents(x: torch.Tensor, spec: ObjectiveSpec, gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """Directions ``e_k`` (``K x B x d``) and a scale with ``lap s = scale * sum_k e_k^T (hess s) e_k``.

    The ``d`` unit vectors (exact trace: ``d`` Hessian-vector products) for small ``d``, else ``probes`` Rademacher
    probes (Hutchinson: unbiased, ``probes`` products, variance ``2 sum_{i != j} H_ij^2 / probes`` per sample).
    """
    dim = x.shape[-1]
    if exact_trace(spec, dim):
        return torch.eye(dim, device=x.device, dtype=x.dtype)[:, None, :].expand(dim, *x.shape), 1.0
    probes = torch.randint(0, 2, (spec.probes, *x.shape), generator=gen, device=x.device).to(x.dtype) * 2 - 1
    return probes, 1.0 / spec.probes


def laplacian(grad: torch.Tensor, x: torch.Tensor, spec: ObjectiveSpec, gen: torch.Generator) -> torch.Tensor:
    """``lap s`` from ``grad s`` (graph kept), one reverse Hessian-vector product per direction of
    ``laplacian_tangents``."""
    tangents, scale = laplacian_tangents(x, spec, gen)
    hvps = (torch.autograd.grad((grad * e).sum(), x, create_graph=True)[0] * e for e in tangents)
    return scale * sum(hvp.sum(-1) for hvp in hvps)


def action_loss(
    potential: nn.Module,
    path: SnapshotPath,
    batch: int,
    gen: torch.Generator,
    spec: ObjectiveSpec,
    times: TimeSampler,
) -> torch.Tensor:
    """The AM / eAM / uAM objective by Monte Carlo over time (``times``) and the interpolated path."""
    t, inv_density = times.sample(batch, gen)
    xt, _ = path.sample_at(t, gen)
    xt.requires_grad_(True)
    t.requires_grad_(True)
    s = potential(xt, t)
    ds_dx, ds_dt = torch.autograd.grad(s.sum(), (xt, t), create_graph=True, materialize_grads=True)
    u = (t.detach() - path.t0) / path.duration
    w, dw = spec.weight(u, path.duration)
    inner = ds_dt + 0.5 * ds_dx.pow(2).sum(-1)
    if spec.kind == "eam":
        inner = inner + 0.5 * spec.sigma_at(u).pow(2) * laplacian(ds_dx, xt, spec, gen)
    if spec.kind == "uam":
        inner = inner + 0.5 * spec.growth * s.pow(2)
    integrand = w * inner + dw * s
    if spec.kind == "uam":
        integrand = integrand * path.mass(t.detach())
    times.update(t.detach(), integrand.detach())

    x_first, x_last = path.sample_endpoints(batch, gen)
    ends = torch.tensor([0.0, 1.0], device=xt.device)
    (w0, w1), _ = spec.weight(ends, path.duration)
    m0, m1 = (1.0, float(path.mass(torch.tensor([path.t1], device=xt.device)))) if spec.kind == "uam" else (1.0, 1.0)
    s_first = potential(x_first, torch.full((batch,), path.t0, device=xt.device))
    s_last = potential(x_last, torch.full((batch,), path.t1, device=xt.device))
    boundary = w0 * m0 * s_first.mean() - w1 * m1 * s_last.mean()
    return boundary + (integrand * inv_density).mean()


def fm_loss(field: nn.Module, path: SnapshotPath, batch: int, gen: torch.Generator, times: TimeSampler) -> torch.Tensor:
    """Conditional Flow Matching: regress ``v(x_t, t)`` on the pair's straight-line velocity."""
    t, _ = times.sample(batch, gen)
    xt, target = path.sample_at(t, gen)
    return (field(xt, t) - target).pow(2).sum(-1).mean()
