"""What a model is trained for: the objective's name and settings (``ObjectiveSpec``), shared by training and
``TrainedModel``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from amcore.paths.interpolants import NoiseSchedule


@dataclass(frozen=True)
class ObjectiveSpec:
    """What the loss needs beyond the model and the data."""

    kind: str = "am"
    sigma: float = 0.0
    sigma_final: float | None = None
    growth: float = 1.0
    laplacian: str = "auto"
    exact_trace_max_dim: int = 1
    probes: int = 1
    time_weight: str = "none"
    pathwise: float = 0.0

    @property
    def noise(self) -> NoiseSchedule:
        """eAM's ``sigma_t`` schedule, shared with the path's Brownian bridge and entropic coupling."""
        return NoiseSchedule(self.sigma, self.sigma_final)

    def sigma_at(self, u: torch.Tensor) -> torch.Tensor:
        """``sigma_t`` at relative time ``u in [0, 1]``: constant, or linear to ``sigma_final``."""
        return self.noise.at(u)

    def weight(self, u: torch.Tensor, duration: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``w`` and ``dw/dt``; ``linear`` is the reference code's ``w = 1 - u``."""
        if self.time_weight == "linear":
            return 1 - u, torch.full_like(u, -1.0 / duration)
        return torch.ones_like(u), torch.zeros_like(u)
