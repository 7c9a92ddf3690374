"""amcore: learn population dynamics from unpaired time snapshots with Action Matching.

The public API; each name is imported on first use, so the command line starts without loading torch.
"""

from __future__ import annotations

import importlib

from amcore.version import __version__ as __version__  # the package version, re-exported

_HOMES = {
    "load": "amcore.models.trained",
    "TrainedModel": "amcore.models.trained",
    "Trajectories": "amcore.models.trained",
    "train": "amcore.training.train",
    "TrainConfig": "amcore.training.config",
    "Snapshots": "amcore.data.store",
    "read_store": "amcore.data.store",
    "open_store": "amcore.data.store",
    "read_trajectories": "amcore.models.integrate",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'amcore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return [*__all__, "__version__"]
