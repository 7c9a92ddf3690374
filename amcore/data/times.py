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


def simulated_times(spec: dict) -> list[float]:
    """The simulate source's observed times: ``times``, or ``n_times`` evenly spaced from its first to its last."""
    times = [float(t) for t in spec["times"]]
    if spec.get("n_times"):
        lo, hi = min(times), max(times)
        # 12 significant digits of the span: 0.3, not linspace's 0.30000000000000004, so the time a config names
        # is the time simulated (the Snakefile checks held-out times against these)
        digits = 12 - int(np.floor(np.log10(hi - lo))) if hi > lo else 12
        times = [round(float(t), digits) for t in np.linspace(lo, hi, int(spec["n_times"]))]
    return times
