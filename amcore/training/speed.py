"""The training step's speed levers: one fused computation of the AM terms (hand-derived for the
default MLP potential, ``torch.func`` for other models), optional ``torch.compile``, GPU precision (TF32, bf16
autocast), CPU threads and the memory a step frees.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Callable

import torch
from torch import nn
from torch.func import grad, vjp
from torch.nn.parallel import DistributedDataParallel

from amcore.models import mlp_terms
from amcore.models.objective import ObjectiveSpec
from amcore.models.potentials import pace_of
from amcore.paths.interpolants import SnapshotPath
from amcore.training.losses import (
    action_loss,
    boundary_term,
    draw_action_inputs,
    pathwise_integrand,
    pathwise_mix,
)
from amcore.training.timesampling import TimeSampler

LossFn = Callable[[SnapshotPath, int, torch.Generator, TimeSampler], torch.Tensor]


def potential_terms(
    potential: nn.Module, x: torch.Tensor, t: torch.Tensor, tangents: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``s``, ``grad_x s``, ``d_t s`` and ``sum_k e_k^T (hess_x s) e_k`` over ``tangents`` (``K x B x d``) for any
    potential (``mlp_terms`` covers the default one faster).

    One reverse pass gives both first derivatives; each tangent costs one Hessian-vector product, reverse over
    reverse, which on CPU was faster than forward over reverse (and inductor compiles it; the ``jvp`` form hit
    a ZeroTensor error under vmap). Rows are independent, so gradients of sums are per-row gradients.
    """

    def value(x: torch.Tensor, t: torch.Tensor):
        s = potential(x, t)
        return s.sum(), s

    def first(x: torch.Tensor):
        (gx, gt), s = grad(value, argnums=(0, 1), has_aux=True)(x, t)
        return gx, (gt, s)

    if tangents is None:
        gx, (gt, s) = first(x)
        return s, gx, gt, None
    gx, hvp, (gt, s) = vjp(first, x, has_aux=True)
    quad = sum((hvp(e)[0] * e).sum(-1) for e in tangents)
    return s, gx, gt, quad


class FusedActionLoss:
    """``losses.action_loss`` with the derivatives and both boundary terms from ``mlp_terms`` (the default potential)
    or from ``potential_terms`` (any other), the latter optionally compiled by inductor (``torch.compile`` cannot
    compile ``autograd.grad`` with ``create_graph``; it can compile this form).

    Both take their minibatch from ``losses.draw_action_inputs`` and give the same loss and parameter gradients up
    to float rounding (tests/test_fused.py).
    """

    def __init__(
        self, potential: nn.Module, spec: ObjectiveSpec, compile: bool = False, terms: nn.Module | None = None
    ) -> None:
        """``terms``: an ``mlp_terms.ActionTerms`` of ``potential`` (possibly wrapped in DistributedDataParallel) to
        take the hand-derived terms from; without it, the ``torch.func`` form."""
        self.potential, self.spec, self.terms = potential, spec, terms
        self.loss = (
            torch.compile(self._loss, backend="inductor", mode=compile_mode(potential)) if compile else self._loss
        )

    def _loss(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        velocity: torch.Tensor | None,
        tangents: torch.Tensor | None,
        lap_weight: torch.Tensor,
        w: torch.Tensor,
        dw: torch.Tensor,
        clock_weight: torch.Tensor,
        mass: torch.Tensor,
        mass_rate: torch.Tensor,
        inv_density: torch.Tensor,
        x_ends: torch.Tensor,
        t_ends: torch.Tensor,
        end_weights: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.terms is not None:
            s, gx, gt, quad, s_ends = self.terms(x, t, tangents, x_ends, t_ends)
        else:
            s, gx, gt, quad = potential_terms(self.potential, x, t, tangents)
            s_ends = self.potential(x_ends, t_ends)
        inner = gt + 0.5 * gx.pow(2).sum(-1)
        if quad is not None:
            inner = inner + lap_weight * quad
        if self.spec.kind == "uam":
            inner = inner + 0.5 * self.spec.growth * s.pow(2)
        integrand = (w * inner + dw * s) * mass
        boundary = boundary_term(s_ends, end_weights)
        if velocity is not None:
            pathwise = pathwise_integrand(self.spec, s, gx, velocity, mass, mass_rate) * clock_weight
            boundary, integrand = pathwise_mix(self.spec.pathwise, boundary, integrand, pathwise)
        return boundary + (integrand * inv_density).mean(), integrand.detach()

    def draw(self, path: SnapshotPath, batch: int, gen: torch.Generator, times: TimeSampler) -> dict:
        """One minibatch's inputs to ``loss`` (``losses.draw_action_inputs``)."""
        return draw_action_inputs(path, batch, gen, self.spec, times, pace_of(self.potential))

    def __call__(self, path: SnapshotPath, batch: int, gen: torch.Generator, times: TimeSampler) -> torch.Tensor:
        inputs = self.draw(path, batch, gen, times)
        loss, integrand = self.loss(**inputs)
        times.update(inputs["t"], integrand)
        return loss


def compile_mode(model: nn.Module | None) -> str | None:
    """inductor's mode for a model: CUDA graphs (``reduce-overhead``) on a GPU, the default elsewhere.

    On a GPU the step of a small MLP is bound by the host launching its ~300 small kernels, not by the GPU: on one
    H200 (4x256 MLP, batch 1024) the GPU was busy 0.95 of the 7.4 ms a step took. A CUDA graph replays the
    compiled loss and its backward with one launch.
    """
    on_gpu = model is not None and any(p.is_cuda for p in model.parameters())
    return "reduce-overhead" if on_gpu else None


def action_step(model: nn.Module, spec: ObjectiveSpec, fused: bool, compile: bool, distributed: bool) -> LossFn:
    """The AM loss the training loop calls: fused (optionally compiled), or the reference ``action_loss``.

    Under DistributedDataParallel the loss must run through the forward of the module DDP wraps, whose hooks
    all-reduce the gradients: the hand-derived terms are such a module; the ``torch.func`` form is not, so other
    potentials take the reference loss on ``DDP(model)`` there.
    """
    ddp = DistributedDataParallel if distributed else (lambda module: module)
    if fused and not compile and mlp_terms.supports(model):
        return FusedActionLoss(model, spec, terms=ddp(mlp_terms.ActionTerms(model)))
    if fused and not distributed:
        return FusedActionLoss(model, spec, compile)
    if compile:
        raise ValueError("compile needs the fused loss in one process (fused: true, no DistributedDataParallel)")
    net = ddp(model)
    return lambda path, batch, gen, times: action_loss(net, path, batch, gen, spec, times)


def cpu_threads(requested: int) -> int:
    """Threads for this process: ``requested``, or (0) ``OMP_NUM_THREADS`` where the user set it, else the cores it
    may run on shared by the local processes.

    torchrun sets ``OMP_NUM_THREADS=1``, so under it (``LOCAL_WORLD_SIZE`` set) that variable is not the user's:
    leaving torch's default would run every rank on one core. Outside, it is (audit 50: a notebook on a shared
    machine, ``OMP_NUM_THREADS=1``, ran on every core, 40 times slower).
    """
    if requested > 0:
        return requested
    given = os.environ.get("OMP_NUM_THREADS", "")
    if "LOCAL_WORLD_SIZE" not in os.environ and given.isdigit() and int(given) > 0:
        return int(given)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, len(os.sched_getaffinity(0)) // local)


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(trim_mb: int = 1024, mmap_mb: int = 64) -> bool:
    """Let glibc keep the memory a training step frees (up to ``trim_mb``) for the next step; False elsewhere.

    Under glibc's defaults the step's megabyte-sized temporaries go back to the kernel when the step ends and
    fault in again page by page in the next one: on one CPU thread, thousands of faults and about 10 ms of kernel
    time in an 80 ms AM step (batch 1024). Allocations below ``mmap_mb`` come from the heap, and the process keeps
    what it has freed: its peak memory, reached in every step anyway, does not change.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    return bool(libc.mallopt(M_TRIM_THRESHOLD, trim_mb << 20) and libc.mallopt(M_MMAP_THRESHOLD, mmap_mb << 20))


def set_precision(device: torch.device, tf32: bool) -> None:
    """TF32 matmuls on CUDA when asked (10-bit mantissa inputs; off by default, as in PyTorch; on an H200 the
    gradient error was 0.1-0.4 % of the minibatch noise, benchmarks/device_check.py); no effect on CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """bf16 autocast for the loss on CUDA when asked (opt-in: on an H200 the gradient error was 4-5 % of the
    minibatch noise); a no-op on CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")
