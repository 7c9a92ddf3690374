"""How many interior times ``tension: auto`` leaves out in turn, on dense frames.

Each left-out time rebuilds the OT chains through all the others, so leaving out every interior time costs the
square of the number of times (audit 62: 151 frames, 22,000 exact plans, 249 s for the ``spline_path`` baseline
alone). ``interpolants.TENSION_CV_TIMES`` evenly spread times choose instead. This times ``choose_shape`` both
ways, side by side in one run, on independent samples of a bending, breathing 3-d Gaussian at ``--frames`` times,
and prints each way's choice and its mean W1 per candidate tension.

    python benchmarks/tension_cv_times.py [--frames 151] [--cells 400] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from amcore.paths import interpolants


def frames(n: int, cells: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Independent samples of ``N((3t, sin 2t, 0), diag(1 + t/2, 1, 1 - t/3))`` at ``n`` times in [0, 2]."""
    rng = np.random.default_rng(seed)
    knots = np.linspace(0.0, 2.0, n)
    clouds = [
        np.array([3 * t, np.sin(2 * t), 0.0]) + rng.standard_normal((cells, 3)) * np.sqrt([1 + t / 2, 1, 1 - t / 3])
        for t in knots
    ]
    return clouds, knots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=151)
    parser.add_argument("--cells", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    clouds, knots = frames(args.frames, args.cells, args.seed)
    walls = {}
    for label, left_out in (("a dozen", interpolants.TENSION_CV_TIMES), ("every one", args.frames)):
        interpolants.TENSION_CV_TIMES = left_out
        start = time.perf_counter()
        (tension, _), scores = interpolants.choose_shape(clouds, knots, np.random.default_rng(args.seed))
        walls[label] = time.perf_counter() - start
        shown = " ".join(f"{lam:g}: {w1:.4f}" for (lam, _), w1 in scores.items())
        print(f"{label:9} left out: tension {tension:g} in {walls[label]:6.1f} s  (mean W1 by tension {shown})")
    print(f"tension_cv_speedup={walls['every one'] / walls['a dozen']:.1f}")


if __name__ == "__main__":
    main()
