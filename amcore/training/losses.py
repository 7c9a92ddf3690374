"""Training objectives: Action Matching (AM), entropic AM (eAM), unbalanced AM (uAM), Flow Matching.

All AM variants minimise ``w(t0) M_0 E_0[s] - w(tK) M_K E_K[s] + int M_t E_t[w (d_t s + 1/2 |grad s|^2 + extra)
+ w' s] dt`` with ``extra = 1/2 sigma_t^2 lap s`` (eAM) or ``1/2 lam s^2`` (uAM, whose ``M_t`` is the mass of
the unnormalised measure; ``M_t = 1`` otherwise). ``w`` is an optional time weight, equivalent at the optimum.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from amcore.errors import InputError
from amcore.models.objective import ObjectiveSpec
from amcore.models.potentials import pace_of
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


def hessian_quadratic(grad: torch.Tensor, x: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    """``sum_k e_k^T (hess s) e_k`` over ``tangents`` from ``grad s`` (graph kept): one reverse Hessian-vector
    product per direction."""
    hvps = (torch.autograd.grad((grad * e).sum(), x, create_graph=True)[0] * e for e in tangents)
    return sum(hvp.sum(-1) for hvp in hvps)


def laplacian(grad: torch.Tensor, x: torch.Tensor, spec: ObjectiveSpec, gen: torch.Generator) -> torch.Tensor:
    """``lap s`` from ``grad s`` (graph kept), over the directions of ``laplacian_tangents``."""
    tangents, scale = laplacian_tangents(x, spec, gen)
    return scale * hessian_quadratic(grad, x, tangents)


def draw_action_inputs(
    path: SnapshotPath, batch: int, gen: torch.Generator, spec: ObjectiveSpec, times: TimeSampler, pace=None
) -> dict:
    """Everything random in one minibatch of the AM / eAM / uAM loss, drawn from ``gen`` in one fixed order (times,
    path points, Laplacian directions, boundary points): the one place both ``action_loss`` and the fused loss
    take their inputs from, so they see the same minibatch. ``pace``: a paced potential's (``potentials.pace_of``),
    whose time weight ``1 / pace`` multiplies ``w`` and the pathwise estimator's points (``clock_weight``)."""
    dev = times.device
    t, inv_density = times.sample(batch, gen)
    mass = mass_rate = None
    if spec.kind == "uam" and hasattr(path, "sample_weighted"):  # each point's mass (the unbalanced pairs' own)
        x, velocity, mass, mass_rate = path.sample_weighted(t, gen)
    else:
        x, velocity = path.sample_at(t, gen)
    tangents, lap_weight = None, torch.zeros((), device=dev)
    u = (t - path.t0) / path.duration
    if spec.kind == "eam":
        tangents, scale = laplacian_tangents(x, spec, gen)
        lap_weight = 0.5 * spec.sigma_at(u).pow(2) * scale
    x_first, x_last = path.sample_endpoints(batch, gen)
    w, dw = spec.weight(u, path.duration)
    ones = torch.ones((), device=dev)
    clock_weight = ones if pace is None else 1 / pace(t)
    w, dw = w * clock_weight, dw * clock_weight
    # Constants are filled on the device (torch.full, arange), never copied from the host: a copy from host memory
    # makes the host wait for the GPU in every step (device_check's step_sync).
    if spec.kind == "uam":
        mass = path.mass(t) if mass is None else mass
        m1 = path.mass(torch.full((1,), path.t1, device=dev))[0]
    else:
        mass, m1 = ones, ones
    if spec.kind == "uam" and spec.pathwise:
        mass_rate = path.log_mass_rate(t) if mass_rate is None else mass_rate
    else:
        mass_rate = torch.zeros((), device=dev)
    (w0, w1), _ = spec.weight(torch.arange(2, device=dev, dtype=t.dtype), path.duration)
    x_ends = torch.cat([x_first, x_last])
    t_ends = torch.cat([torch.full((batch,), path.t0, device=dev), torch.full((batch,), path.t1, device=dev)])
    if pace is not None:
        first, last = pace(t_ends[[0, -1]])
        w0, w1 = w0 / first, w1 / last
    if spec.pathwise == 1:  # the boundary form has no weight: its points are drawn (same random numbers), not used
        x_ends, t_ends = x_ends[:0], t_ends[:0]
    return dict(
        x=x, t=t, velocity=velocity if spec.pathwise else None, tangents=tangents, lap_weight=lap_weight, w=w, dw=dw,
        clock_weight=clock_weight, mass=mass, mass_rate=mass_rate, inv_density=inv_density,
        x_ends=x_ends, t_ends=t_ends, end_weights=torch.stack([w0, w1 * m1]),
    )  # fmt: skip


def action_loss(
    potential: nn.Module,
    path: SnapshotPath,
    batch: int,
    gen: torch.Generator,
    spec: ObjectiveSpec,
    times: TimeSampler,
) -> torch.Tensor:
    """The AM / eAM / uAM objective by Monte Carlo over time (``times``) and the interpolated path, with plain
    autograd: the reference the fused loss (``speed.FusedActionLoss``) is tested against."""
    d = draw_action_inputs(path, batch, gen, spec, times, pace_of(potential))
    x, t = d["x"].requires_grad_(True), d["t"].clone().requires_grad_(True)
    s = potential(x, t)
    ds_dx, ds_dt = torch.autograd.grad(s.sum(), (x, t), create_graph=True, materialize_grads=True)
    inner = ds_dt + 0.5 * ds_dx.pow(2).sum(-1)
    if d["tangents"] is not None:
        inner = inner + d["lap_weight"] * hessian_quadratic(ds_dx, x, d["tangents"])
    if spec.kind == "uam":
        inner = inner + 0.5 * spec.growth * s.pow(2)
    integrand = (d["w"] * inner + d["dw"] * s) * d["mass"]
    boundary = boundary_term(potential(d["x_ends"], d["t_ends"]), d["end_weights"])
    if d["velocity"] is not None:
        pathwise = pathwise_integrand(spec, s, ds_dx, d["velocity"], d["mass"], d["mass_rate"]) * d["clock_weight"]
        boundary, integrand = pathwise_mix(spec.pathwise, boundary, integrand, pathwise)
    times.update(d["t"], integrand.detach())
    return boundary + (integrand * d["inv_density"]).mean()


def boundary_term(s_ends: torch.Tensor, end_weights: torch.Tensor) -> torch.Tensor:
    """``w_0 E_first[s] - w_1 m_1 E_last[s]`` from ``s`` at the boundary draws (first half, then last half); zero
    when none were evaluated (``pathwise`` 1: the boundary form has no weight, and ``s`` there costs a third of
    a step)."""
    if s_ends.numel() == 0:
        return s_ends.sum()
    first, last = s_ends.view(2, -1).mean(-1)
    return end_weights[0] * first - end_weights[1] * last


def pathwise_integrand(
    spec: ObjectiveSpec, s: torch.Tensor, gx: torch.Tensor, v: torch.Tensor, mass: torch.Tensor, mass_rate: torch.Tensor
) -> torch.Tensor:
    """AM's (and uAM's) pathwise estimator per path point: the boundary terms traded for the path's velocities.

    Along a path particle ``x(t)`` carrying the path's mass ``m(t)`` the chain rule gives
    ``d(m s)/dt = m' s + m (d_t s + grad s . x')``: the boundary terms ``m_0 E_0[s] - m_K E_K[s]`` and
    ``int m d_t s`` together equal ``-int m (grad s . x' + (log m)' s) dt`` in expectation (the path's ends are the
    boundary draws), so ``m (1/2 |grad s|^2 + growth/2 s^2 - grad s . x' - (log m)' s)`` per point has the same
    expectation and minimiser; with ``m = 1`` (AM) it is Flow Matching restricted to gradient fields. The boundary
    form sees only where the points are; the pathwise form also sees each pair's velocity, and none of ``s``'s
    values at the ends.
    """
    point = 0.5 * gx.pow(2).sum(-1) - (gx * v).sum(-1)
    if spec.kind == "uam":
        point = point + (0.5 * spec.growth * s - mass_rate) * s
    return point * mass


def pathwise_mix(
    weight: float, boundary: torch.Tensor, integrand: torch.Tensor, pathwise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The boundary and integrand with a share ``weight`` of the pathwise estimator (``pathwise_integrand``)."""
    return (1 - weight) * boundary, (1 - weight) * integrand + weight * pathwise


def torchcfm_matcher(coupling: str, sigma: float):
    """TorchCFM's own conditional flow matcher, the published peer from its package: minibatch exact OT (OT-CFM,
    ``coupling: ot``) or independent pairs (I-CFM), with its constant ``sigma``."""
    try:
        from torchcfm.conditional_flow_matching import (
            ConditionalFlowMatcher,
            ExactOptimalTransportConditionalFlowMatcher,
        )
    except ImportError as err:
        raise InputError(
            "implementation 'torchcfm' needs the torchcfm package; `make install` puts it in .venv "
            "(pip install --no-deps torchcfm==1.0.7: its other requirements are not used)"
        ) from err
    matcher = ExactOptimalTransportConditionalFlowMatcher if coupling == "ot" else ConditionalFlowMatcher
    return matcher(sigma=sigma)


def torchcfm_loss(field: nn.Module, path: SnapshotPath, matcher, batch: int, gen: torch.Generator) -> torch.Tensor:
    """TorchCFM's flow matching across observed times, as its single-cell examples train: on every interval
    ``[t_k, t_{k+1}]``, ``batch`` cells drawn from each side are paired and noised by the package's matcher (its
    minibatch OT plan, its sigma); the interval's unit clock is mapped to real time (velocity divided by ``dt_k``).

    The matcher draws from NumPy's and torch's global generators; both are seeded from ``gen`` first, so a run
    (and a resumed one) is reproducible.
    """
    seed = int(torch.randint(2**31, (1,), generator=gen, device=gen.device))
    np.random.seed(seed)
    torch.manual_seed(seed)
    xs, ts, us = [], [], []
    for k in range(len(path.t_values) - 1):
        ta, tb = path.t_values[k], path.t_values[k + 1]
        tau = torch.rand(batch, generator=gen, device=gen.device)
        tau, xt, ut = matcher.sample_location_and_conditional_flow(
            path.draw(k, batch, gen), path.draw(k + 1, batch, gen), t=tau
        )
        xs.append(xt)
        ts.append(ta + tau * (tb - ta))
        us.append(ut / (tb - ta))
    return (field(torch.cat(xs), torch.cat(ts)) - torch.cat(us)).pow(2).sum(-1).mean()


def fm_loss(field: nn.Module, path: SnapshotPath, batch: int, gen: torch.Generator, times: TimeSampler) -> torch.Tensor:
    """Conditional Flow Matching: regress ``v(x_t, t)`` on the pair's straight-line velocity; a paced field's
    residual divided by its pace (``potentials.clock_pace``): the regression in the clock's time, every interval's
    velocities at one scale (on times 0, 3 min, 1 h, 1 week the first interval's squared residuals outweighed the
    last's 200,000-fold, and the loss ran past the divergence check's scale by step 200, audit 88's course)."""
    t, _ = times.sample(batch, gen)
    xt, target = path.sample_at(t, gen)
    residual = field(xt, t) - target
    if (pace := pace_of(field)) is not None:
        residual = residual / pace(t)[:, None]
    return residual.pow(2).sum(-1).mean()
