"""Neural potentials ``s_theta(x, t)`` (AM) and vector fields ``v_theta(x, t)`` (Flow Matching)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from amcore.choices import ACTIVATIONS, HEADS
from amcore.data.times import uneven_times


def clock_of(knots: torch.Tensor, levels: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u, du/dt)``: the clock at ``levels`` (increasing, 0 to 1) at the increasing ``knots``, linear between them
    and beyond the ends."""
    intervals = len(knots) - 1
    k = (torch.searchsorted(knots, t.contiguous(), right=True) - 1).clamp(0, intervals - 1)
    rate = (levels[k + 1] - levels[k]) / (knots[k + 1] - knots[k])
    return levels[k] + (t - knots[k]) * rate, rate


def time_of(knots: torch.Tensor, levels: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t, dt/du)``: :func:`clock_of` inverted."""
    intervals = len(knots) - 1
    k = (torch.searchsorted(levels, u.contiguous(), right=True) - 1).clamp(0, intervals - 1)
    stretch = (knots[k + 1] - knots[k]) / (levels[k + 1] - levels[k])
    return knots[k] + (u - levels[k]) * stretch, stretch


# The clock's rates (``du/dt``) of its intervals spanning more than this: the potential is paced (``clock_pace``).
PACE_RANGE = 10.0
# The pace's change at an inner knot spans this share of the shorter neighbouring interval (on the clock) each side.
PACE_WINDOW = 0.25


def clock_rate_range(knots, levels) -> float:
    """How many times faster the clock runs in its fastest interval than in its slowest."""
    rates = np.diff(np.asarray(levels, dtype=np.float64)) / np.diff(np.asarray(knots, dtype=np.float64))
    return float(rates.max() / rates.min())


def paced_clock(knots, levels) -> bool:
    """Whether a network on this clock is paced: its intervals' rates span more than :data:`PACE_RANGE`-fold."""
    return clock_rate_range(knots, levels) > PACE_RANGE


def clock_pace(knots: torch.Tensor, levels: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The pace ``p(t)``: each interval's rate ``du/dt`` times the span (1 where the clock is ``t``'s own), its log
    linear in ``u`` across :data:`PACE_WINDOW` of the shorter neighbouring interval each side of an inner knot.

    A paced potential is ``s = p(t) s_hat`` trained with the time weight ``1 / p`` (``losses.draw_action_inputs``):
    the action in the clock's time, ``int (d_t s_hat + p/2 |grad s_hat|^2) dt``, whose ``grad s_hat`` moves cells
    per unit of the clock, at one scale in every interval. Unpaced, the network's ``grad s`` must be about 40 per
    hour in the first interval of times 0, 3 min, 1 h, 1 week and 0.01 per hour in the last; 1 % of the first held
    over 71 hours carried cells 25 units off data within 4.4 (audit 88). Continuous: with each interval's rate alone,
    jumping at the knots where the network's ``grad s_hat`` is smooth, audit 50's relaxation read 0.24-0.46 of the
    truth's speed off at 1, 2 and 4 hours, against 0.16-0.28 unpaced. The pace's own derivative needs no term, as
    ``s``'s ``p' s_hat`` and the weight's ``(1/p)' s`` cancel.
    """
    steps = levels[1:] - levels[:-1]
    rates = steps / (knots[1:] - knots[:-1])
    log_rates = torch.log(rates * (knots[-1] - knots[0]))
    half = PACE_WINDOW * torch.minimum(steps[:-1], steps[1:])  # each inner knot's window, each side
    # u less the inner knots' levels, from t (the clock is linear on each side of a knot), and how far through each
    # knot's window that is (0 before it, 1 after): every knot at once, in a few kernels whatever their number
    ahead = t[..., None] - knots[1:-1]
    ahead = ahead * torch.where(ahead < 0, rates[:-1], rates[1:])
    through = ((ahead + half) / (2 * half)).clamp(0, 1)
    return (log_rates[0] + through @ (log_rates[1:] - log_rates[:-1])).exp()


def clock_levels(knots, levels=None) -> torch.Tensor | None:
    """The clock's levels at ``knots`` (equal steps where ``levels`` is None: a checkpoint that holds knots
    alone), or None where the knots are not :func:`uneven_times` (``t``'s own clock)."""
    if knots is None or not uneven_times(knots):
        return None
    if levels is None:
        return torch.linspace(0.0, 1.0, len(knots))
    return torch.as_tensor(levels, dtype=torch.float32)


class TimeEmbedding(nn.Module):
    """The clock ``u`` and a few sinusoidal features of it: lets a small MLP bend quickly in time.

    ``u`` runs from 0 to 1 over ``[t_min, t_max]``: linearly in ``t``, or, given the training times (``knots``) and
    the clock's ``levels`` there (``train.motion_levels``: as far as the population has moved), linearly between
    them and beyond the ends. Times taken at 0.1, 0.3, 1, 2, ..., 168 hours, the first hours the fastest, then get the
    network's time resolution where the cells move; on the linear clock the first 4 hours were 2 % of the range, and
    the learned field there was half as fast as the truth (audit 50). Knots that are not :func:`uneven_times` give the
    linear clock.
    ``n_frequencies`` features at ``pi k`` over ``u``, and one at each of ``periods`` (in the data's time units, on
    the linear clock): dynamics known to oscillate (the hydrogen atom's dipole turns every ``2 pi / (E_2 - E_3)``,
    155 times over the AM paper's time range) get that oscillation as an input instead of from hundreds of features.
    """

    def __init__(self, n_frequencies: int, t_min: float, t_max: float, periods=(), knots=None, levels=None) -> None:
        super().__init__()
        span = max(t_max - t_min, 1e-12)
        self.register_buffer("t_min", torch.tensor(float(t_min)))
        self.register_buffer("span", torch.tensor(float(span)))
        extra = [2 * math.pi * span / float(p) for p in periods]  # on the linear clock
        freqs = math.pi * torch.arange(1, n_frequencies + 1, dtype=torch.float64)
        self.register_buffer("freqs", torch.cat([freqs, torch.tensor(extra, dtype=torch.float64)]).float())
        self.n_clock = n_frequencies
        levels = clock_levels(knots, levels)
        # from model_args, not the state dict: a checkpoint without knots loads the linear clock
        self.register_buffer("knots", None if levels is None else torch.as_tensor(knots, dtype=torch.float32),
                             persistent=False)  # fmt: skip
        self.register_buffer("levels", levels, persistent=False)

    @property
    def dim(self) -> int:
        return 1 + 2 * len(self.freqs)

    def clock(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u, du/dt)`` at ``t`` (class docstring)."""
        if self.knots is None:
            return (t - self.t_min) / self.span, torch.ones_like(t) / self.span
        return clock_of(self.knots, self.levels, t)

    def _rates(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``u``, ``du/dt``, each sinusoid's angle per unit ``t`` and its angle at ``t`` (``(..., n)`` each)."""
        u, rate = self.clock(t)
        linear = u if self.knots is None else (t - self.t_min) / self.span
        per_clock, per_period = self.freqs[: self.n_clock], self.freqs[self.n_clock :]
        angles = torch.cat([u[..., None] * per_clock, linear[..., None] * per_period], -1)
        rates = torch.cat([rate[..., None] * per_clock, (per_period / self.span).expand(*t.shape, -1)], -1)
        return u, rate, rates, angles

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        u, _, _, angles = self._rates(t)
        return torch.cat([u[..., None], torch.sin(angles), torch.cos(angles)], dim=-1)

    def slope(self, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``d embed(t) / dt`` from ``features = embed(t)`` (no second evaluation of sin and cos)."""
        n = len(self.freqs)
        sin, cos = features[..., 1 : 1 + n], features[..., 1 + n :]
        if self.knots is None:  # t's own clock, to the bit as before the clocks: trainings on it reproduce
            ones = torch.ones_like(features[..., :1])
            return torch.cat([ones, self.freqs * cos, -self.freqs * sin], dim=-1) / self.span
        _, rate, rates, _ = self._rates(t)
        return torch.cat([rate[..., None], rates * cos, -rates * sin], dim=-1)


class MLPField(nn.Module):
    """MLP of ``((x - x_center) / x_scale, embed(t))`` with ``out_dim`` outputs: 1 for a potential, ``d`` for a
    vector field.

    The network sees cells in standard units and time relative to its range whatever units the data came in (a
    time course in seconds, coordinates in thousands); ``x_center`` and ``x_scale`` come from the training cells.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        t_range: tuple[float, float],
        width: int = 128,
        depth: int = 3,
        activation: str = "silu",
        time_frequencies: int = 1,
        time_periods=(),
        time_knots=None,
        time_levels=None,
        x_center=None,
        x_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        if any(not float(p) > 0 for p in time_periods):
            raise ValueError(f"time_periods must be > 0, got {list(time_periods)}")
        self.embed = TimeEmbedding(
            time_frequencies, *t_range, periods=time_periods, knots=time_knots, levels=time_levels
        )
        center = torch.zeros(dim) if x_center is None else torch.tensor(x_center, dtype=torch.float32)
        self.register_buffer("x_center", center, persistent=False)  # from model_args, not the state dict
        self.x_scale = _positive("x_scale", x_scale)
        layers: list[nn.Module] = []
        n_in = dim + self.embed.dim
        for _ in range(depth):
            layers += [nn.Linear(n_in, width), getattr(nn, ACTIVATIONS[activation])()]
            n_in = width
        layers.append(nn.Linear(n_in, out_dim))
        self.net = nn.Sequential(*layers)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_center) / self.x_scale

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.standardize(x), self.embed(t)], dim=-1))


class Paced:
    """``pace``: :func:`clock_pace` on the network's clock where ``paced`` (from ``model_args``: a checkpoint from
    before the pace loads unpaced, as it was trained), else ones."""

    paced: bool = False

    @property
    def clock_embedding(self) -> TimeEmbedding:
        raise NotImplementedError

    def pace(self, t: torch.Tensor) -> torch.Tensor:
        """The pace at ``t``, no gradient in ``t``: ``p``'s own derivative needs no term (:func:`clock_pace`)."""
        if not self.paced:
            return torch.ones_like(t)
        return clock_pace(self.clock_embedding.knots, self.clock_embedding.levels, t.detach())


class VectorField(Paced, MLPField):
    """Flow Matching's velocity ``(x_scale / t_unit) f``: ``f`` moves standard units per ``t_unit`` of time, so
    that a network of order one fits a time course in hours as well as one in seconds; ``paced``, times the pace,
    ``f`` moving them per unit of the clock (``losses.fm_loss`` divides the residual by it)."""

    def __init__(
        self, dim: int, out_dim: int, t_range: tuple[float, float], t_unit: float = 1.0, paced: bool = False, **mlp
    ) -> None:
        super().__init__(dim, out_dim, t_range, **mlp)
        self.gain = self.x_scale / _positive("t_unit", t_unit)
        self.paced = bool(paced) and self.embed.knots is not None

    @property
    def clock_embedding(self) -> TimeEmbedding:
        return self.embed

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        f = super().forward(x, t)
        return self.gain * (self.pace(t)[..., None] * f if self.paced else f)


def _positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return float(value)


class Potential(Paced, nn.Module):
    """A scalar potential ``s(x, t)`` with one of three heads on an MLP.

    ``scalar``: the MLP's single output. ``quadratic``: ``1/2 |z - h(x, t)|^2`` and ``inner``: ``<h(x, t), z>``
    with ``h`` a vector-valued MLP and ``z`` the standardised ``x``; both build in the near-quadratic growth of
    typical AM potentials. Each is scaled by ``gain = x_scale^2 / t_unit``, so ``grad_x s`` is in standard units
    per ``t_unit`` (see ``VectorField``), and, ``paced`` on an uneven clock, by its pace (:func:`clock_pace`).
    """

    def __init__(
        self, dim: int, t_range: tuple[float, float], head: str = "scalar", t_unit: float = 1.0, paced: bool = False,
        **mlp,
    ) -> None:  # fmt: skip
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown potential head {head!r}; expected one of {HEADS}")
        self.head = head
        self.net = MLPField(dim, 1 if head == "scalar" else dim, t_range, **mlp)
        self.gain = self.net.x_scale**2 / _positive("t_unit", t_unit)
        self.paced = bool(paced) and self.net.embed.knots is not None

    @property
    def clock_embedding(self) -> TimeEmbedding:
        return self.net.embed

    def scale(self, t: torch.Tensor) -> torch.Tensor | float:
        """What the network's output is multiplied by at ``t``: ``gain``, times the pace where paced."""
        return self.gain * self.pace(t) if self.paced else self.gain

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h, scale = self.net(x, t), self.scale(t)
        if self.head == "scalar":
            return scale * h.squeeze(-1)
        z = self.net.standardize(x)
        if self.head == "quadratic":
            return scale * 0.5 * (z - h).pow(2).sum(-1)
        return scale * (h * z).sum(-1)


def pace_of(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A paced network's pace (under DistributedDataParallel too), else None."""
    model = getattr(model, "module", model)
    return model.pace if getattr(model, "paced", False) else None


def potential_velocity(potential: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``grad_x s(x, t)``: the AM velocity, without building a graph for the parameters. Under
    ``torch.inference_mode`` too (a notebook's idiom, audit 85: enable_grad cannot lift it), on copies of ``x`` and
    ``t`` made outside it: tensors made inside it cannot take part in a backward pass."""
    with torch.inference_mode(False), torch.enable_grad():
        if x.is_inference() or t.is_inference():
            x, t = x.clone(), t.clone()
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(potential(x, t).sum(), x)
    return grad


def velocity_fn(model: nn.Module, objective: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The learned velocity (or drift, for eAM): ``grad_x s`` for AM variants, the field itself for FM."""
    if objective == "fm":
        return lambda x, t: model(x, t)
    return lambda x, t: potential_velocity(model, x, t)
