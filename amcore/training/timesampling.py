"""Monte Carlo over time for the action integral: uniform, stratified, or adaptive importance sampling.

Each sampler returns times and the inverse of their sampling density, so ``mean(f(t) / density(t))`` is an
unbiased estimate of ``int f(t) dt`` whichever sampler is used.
"""

from __future__ import annotations

import torch

from amcore.choices import TIME_SAMPLINGS
from amcore.models.potentials import clock_levels, clock_of, time_of


class TimeSampler:
    """Times on ``[t0, t1]``; ``importance`` draws bins in proportion to a running RMS of the integrand.

    Sampling proportional to ``sqrt(E[f^2])`` per bin minimises the estimator's variance among piecewise
    constant densities; half of the mass stays uniform so no bin is ever starved.
    """

    def __init__(
        self, kind: str, t0: float, t1: float, bins: int = 20, momentum: float = 0.99, device: str = "cpu",
        knots=None, levels=None,
    ) -> None:  # fmt: skip
        """``knots``, ``levels``: the training times and the clock (``potentials.clock_of``) the draws are uniform,
        stratified or binned on, as the network's time is; None (or gaps within 5-fold of each other): ``t``."""
        if kind not in TIME_SAMPLINGS:
            raise ValueError(f"unknown time sampling {kind!r}; expected one of {TIME_SAMPLINGS}")
        self.kind, self.t0, self.duration = kind, t0, t1 - t0
        self.knots = self.levels = None
        if (on := clock_levels(knots, levels)) is not None:
            self.knots = torch.tensor(knots, dtype=torch.float32, device=device)
            self.levels = on.to(device)
        self.bins, self.momentum = bins, momentum
        self.device = torch.device(device)
        self.second_moment = torch.ones(bins, device=self.device)
        self.seen = torch.zeros(bins, dtype=torch.bool, device=self.device)
        self.pending: list[torch.Tensor] = []  # this step's tallies (sums, counts per bin), until commit

    def probabilities(self) -> torch.Tensor:
        rms = self.second_moment.sqrt()
        return 0.5 * rms / rms.sum() + 0.5 / self.bins

    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Times and the inverse of their density."""
        if self.knots is None:
            return self._sample(n, gen, self.t0, self.duration)
        u, inverse = self._sample(n, gen, 0.0, 1.0)
        t, stretch = time_of(self.knots, self.levels, u)
        return t, inverse * stretch

    def _sample(self, n: int, gen: torch.Generator, start: float, length: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws on ``[start, start + length]`` and the inverse of their density."""
        dev = self.device
        u = torch.rand(n, generator=gen, device=dev)
        if self.kind == "uniform":
            return start + length * u, torch.full((n,), length, device=dev)
        if self.kind == "stratified":
            strata = (torch.arange(n, device=dev) + u) / n
            t = start + length * strata[torch.randperm(n, generator=gen, device=dev)]
            return t, torch.full((n,), length, device=dev)
        probs = self.probabilities()
        b = torch.multinomial(probs, n, replacement=True, generator=gen)
        t = start + length * (b + u) / self.bins
        return t, length / (self.bins * probs[b])

    def update(self, t: torch.Tensor, values: torch.Tensor) -> None:
        """Feed back integrand values at ``t`` (detached) to refine the importance proposal: tallied per bin, one
        tally per call, and applied by :meth:`commit`. Every minibatch of a step draws from the same proposal, so a
        step's streams take the same times whether one process runs them or one process each (audit 25: the
        second stream of one process drew from a proposal the first had moved)."""
        if self.kind != "importance":
            return
        if self.knots is None:
            u = (t - self.t0) / self.duration
        else:  # on the clock the integrand is f dt/du: its bins are drawn by that
            u, rate = clock_of(self.knots, self.levels, t)
            values = values / rate
        b = (u * self.bins).long().clamp(0, self.bins - 1)
        sums = torch.zeros(self.bins, device=self.device).index_add_(0, b, values.double().pow(2).float())
        counts = torch.zeros(self.bins, device=self.device).index_add_(0, b, torch.ones_like(values))
        self.pending.append(torch.stack([sums, counts]))

    def commit(self, gather=None) -> None:
        """Apply the step's tallies, in the order they came; ``gather`` (a tensor's stack over every process, in
        rank order: ``Cluster.gather_tensor``) adds the other processes' streams, so every process holds the state
        one process running all the streams would."""
        if not self.pending:
            return
        tallies = torch.stack(self.pending)
        self.pending = []
        if gather is not None:
            tallies = gather(tallies)
        sums, counts = tallies.sum(0)
        hit = counts > 0
        batch_moment = sums / counts.clamp_min(1)
        # The first visit replaces the flat prior; later visits are averaged with momentum. Masks by torch.where,
        # not boolean indexing, which would make a GPU wait for the step to finish.
        old = torch.where(self.seen, self.second_moment, batch_moment)
        self.second_moment = torch.where(
            hit, self.momentum * old + (1 - self.momentum) * batch_moment, self.second_moment
        )
        self.seen |= hit
