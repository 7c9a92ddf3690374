"""Which of two AM settings fits its objective better, judged on training cells the models never saw.

Reads a store the pipeline prepared for one held-out split and drops its held-out times first (or draws a rotating
Gaussian process of benchmarks/analytic.py). A tenth of every training time's cells is held apart
(``Snapshots.split_cells``); AM (the config's ``am`` model) is trained on the rest twice: with the boundary form
(``pathwise: 0``) and the pathwise form (``pathwise: 1``), with ``--compare head`` the scalar and the ``inner``
potential head, or with ``--compare time`` one time frequency and none (``time_frequencies`` 1 and 0). Every
such model minimises the same objective, ``1/2 E int |grad s - grad s*|^2`` up to a constant, so the one with the
lower objective on the path through the held-apart cells is closer to that path's field. The objective is
estimated with both estimators on the same draws for both models (common random numbers), so the difference has a
small standard error.

    python benchmarks/estimator_choice.py STORE --config config/leaveout/eb.yaml [--seed 0] [--batches 200]
    python benchmarks/estimator_choice.py --rotating 7 4 --compare head   # dimension 7, process seed 4
    python benchmarks/estimator_choice.py --rotating 3 4 --stride 1 --compare time

On other snapshots: ``objectives(snaps, {"objective": "am"}, seed=0, batches=200)``. The last line:
``objective_<first>=<x> objective_<second>=<y> difference=<y - x> se=<se>`` (pathwise estimator); a negative
difference favours the second setting.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from analytic import RotatingGaussian, models, snapshots

from amcore import Snapshots, TrainConfig, load, train
from amcore.data.store import read_store
from amcore.models.objective import ObjectiveSpec
from amcore.paths.interpolants import SnapshotPath
from amcore.training.choice import held_apart_objectives

FORMS = {"boundary": 0.0, "pathwise": 1.0}  # the estimators, by their share of the pathwise form
CANDIDATES = {
    "pathwise": {"boundary": {"pathwise": 0.0}, "pathwise": {"pathwise": 1.0}},
    "head": {"scalar": {"head": "scalar"}, "inner": {"head": "inner"}},
    "time": {"t1": {"time_frequencies": 1}, "t0": {"time_frequencies": 0}},
}


def objectives(snaps: Snapshots, settings: dict, seed: int, batches: int, batch: int = 512,
               compare: str = "pathwise") -> dict[tuple, np.ndarray]:  # fmt: skip
    """``{(model, estimator form): per-batch objective values}`` on the held-apart cells' path, one model per
    setting of ``CANDIDATES[compare]`` (the snapshots' held-out times are dropped first)."""
    training = snaps.drop_times(snaps.attrs.get("holdout_times", []))
    fit, held = training.split_cells(0.1, seed)
    models, tension = {}, settings.get("tension", "auto")
    with tempfile.TemporaryDirectory(prefix="amcore-estimator-") as workdir:
        for form, overrides in CANDIDATES[compare].items():
            cfg = TrainConfig(**{**settings, **overrides, "seed": seed, "threads": 1, "log_every": 10**9})
            checkpoint = Path(workdir) / f"{form}.pt"
            summary = train(fit, cfg, checkpoint, checkpoint.with_suffix(".csv"))
            loaded = load(checkpoint)
            models[form], clock = loaded.network, loaded.model_args  # one clock (t's own on even times) for all
            tension = summary.get("spline_tension", tension)  # the same path shape as the models trained on
    path = SnapshotPath(held.in_memory(), settings.get("coupling", "ot"), seed=seed + 1, tension=tension,
                        interpolation=settings.get("interpolation", "linear"),
                        stride=settings.get("stride", 1))  # fmt: skip
    values = {}
    for estimator, share in FORMS.items():
        drawn = held_apart_objectives(models, path, ObjectiveSpec("am", pathwise=share), batch, batches, seed + 2,
                                      clock.get("time_knots"), clock.get("time_levels"))  # fmt: skip
        values |= {(form, estimator): v for form, v in drawn.items()}
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", nargs="?")
    parser.add_argument("--config", help="a pipeline config: its models.am settings are trained")
    parser.add_argument(
        "--rotating",
        nargs=2,
        type=int,
        metavar=("DIM", "SEED"),
        help="instead of a store: benchmarks/analytic.py's rotating Gaussian, AM as there (stride 2)",
    )
    parser.add_argument("--stride", type=int, default=2, help="with --rotating: the path's stride")
    parser.add_argument("--compare", choices=sorted(CANDIDATES), default="pathwise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    if (args.store is None) == (args.rotating is None) or (args.store is None) != (args.config is None):
        parser.error("give a STORE with --config, or --rotating DIM SEED alone")
    torch.set_num_threads(1)
    if args.rotating:
        dim, process = args.rotating
        snaps = snapshots(RotatingGaussian(dim, process), 2000, process)  # as analytic.py draws it by default
        settings = models("rotating")["am_linear_s2"] | {"stride": args.stride}
    else:
        snaps, settings = read_store(args.store), yaml.safe_load(Path(args.config).read_text())["models"]["am"]
    values = objectives(snaps, settings, args.seed, args.batches, compare=args.compare)
    first, second = CANDIDATES[args.compare]
    for estimator in FORMS:
        a, b = values[(first, estimator)], values[(second, estimator)]
        diff = b - a
        se = diff.std(ddof=1) / np.sqrt(len(diff))
        print(f"{estimator} estimator: {first} model {a.mean():.4f}, {second} model {b.mean():.4f}, "
              f"difference {diff.mean():+.4f} ± {se:.4f}")  # fmt: skip
    print(f"objective_{first}={a.mean():.4f} objective_{second}={b.mean():.4f} "
          f"difference={diff.mean():.4f} se={se:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
