"""How observed times are spaced: a module of its own, light to import (a loaded model's clock reads it)."""

from __future__ import annotations

import numpy as np

UNEVEN_GAPS = 5.0  # largest over smallest gap between observed times above which they count as uneven


def uneven_times(times) -> bool:
    """Observed times whose gaps differ more than :data:`UNEVEN_GAPS`-fold. The network's clock then runs by the
    training times (``potentials.TimeEmbedding``; below, the smallest interval keeps at least a fifth of an even
    share of the network's time and of the draws, and even times with one held out, gaps 1, 2, 1, keep ``t``'s own),
    and plots space the times evenly and colour them by order."""
    gaps = np.diff(np.unique(np.asarray(times, dtype=np.float64)))
    return len(gaps) > 1 and gaps.max() / gaps.min() > UNEVEN_GAPS
