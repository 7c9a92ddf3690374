"""Compare model settings on training times only: leave each interior *training* time out in turn.

Reads a store the pipeline prepared for one held-out split (``results/<experiment>/holdout-<k>/data/store.zarr``),
drops its held-out times before anything else, then for each interior training time ``j``: every model of the
config trains on the other training times, pushes the cells of the training time before ``j`` to ``t_j``, and is
scored by the exact W1 against the cells of ``j``. This is how a setting (a learning rate, an objective, an
interpolant) can be chosen on one's own data without the held-out time ever reaching the choice. In-sample fits
(pushing a training time onto the next one) cannot do that: they reward memorising the training cells, and Flow
Matching memorises faster than AM.

    python benchmarks/inner_loo.py STORE --config config/leaveout/eb.yaml [--models am fm_spline]
                                   [--set am_lr3:am:lr=0.003] [--seed 0] [--threads 1]

``--set NAME:BASE:key=value,...`` adds a variant of the config's model ``BASE``. The last line:
``inner_loo_<model>=<mean W1>`` for every model (``diverged`` for one whose training diverged or whose pushed
cells were not finite, at any left-out time).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from amcore import Snapshots, TrainConfig, load, train
from amcore.data.store import read_store
from amcore.errors import TrainingDiverged
from amcore.metrics import NonFiniteError, wasserstein


def inner_loo(snaps: Snapshots, models: dict[str, dict], workdir: Path, seed: int = 0) -> dict[str, list[float | str]]:
    """W1 of each model's prediction of every interior training time left out in turn (the store's held-out
    times are dropped first, so their cells never reach a model or a score). uAM's particles keep their weights.
    A training that diverges or a prediction with non-finite cells is reported as the reason, never as a score."""
    training = snaps.drop_times(snaps.attrs.get("holdout_times", []))
    if training.n_snapshots < 3:
        raise ValueError(f"inner leave-one-out needs three training times or more, got {training.t_values.tolist()}")
    scores: dict[str, list[float | str]] = {}
    for name, settings in models.items():
        for j in range(1, training.n_snapshots - 1):
            t_prev, t_j = float(training.t_values[j - 1]), float(training.t_values[j])
            checkpoint = workdir / f"{name}-{j}.pt"
            cfg = TrainConfig(**{**settings, "seed": seed})
            try:
                train(training.drop_times([t_j]), cfg, checkpoint, checkpoint.with_suffix(".csv"))
                cells = np.asarray(training.snapshot(j - 1))
                pushed, weight = load(checkpoint).push(cells, t_prev, t_j, with_weights=True)
                score = wasserstein(pushed, np.asarray(training.snapshot(j)), 1, 5000, seed, wa=weight)
            except (TrainingDiverged, NonFiniteError) as err:
                score = f"diverged ({type(err).__name__}: {err})"
            scores.setdefault(name, []).append(score)
    return scores


def summary(values: list[float | str]) -> str:
    """The mean W1, or ``diverged`` when any left-out time has no score."""
    return f"{np.mean(values):.4f}" if all(isinstance(v, float) for v in values) else "diverged"


def variant(spec: str, models: dict[str, dict]) -> tuple[str, dict]:
    """``NAME:BASE:key=value,...``: the config's model ``BASE`` with these settings changed (values as YAML)."""
    name, base, changes = (spec.split(":", 2) + [""])[:3]
    if base not in models:
        raise SystemExit(f"--set {spec!r}: no model {base!r} in the config (it has {sorted(models)})")
    pairs = [item.split("=", 1) for item in changes.split(",") if item]
    return name, {**models[base], **{key: yaml.safe_load(value) for key, value in pairs}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--config", required=True, help="a pipeline config: its models section is compared")
    parser.add_argument("--models", nargs="+", help="only these models of the config (default: all)")
    parser.add_argument("--set", dest="variants", nargs="+", default=[], help="NAME:BASE:key=value,...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configured = yaml.safe_load(Path(args.config).read_text())["models"]
    models = {name: settings for name, settings in configured.items() if not args.models or name in args.models}
    models.update(variant(spec, configured) for spec in args.variants)
    models = {name: {**settings, "threads": args.threads, "log_every": 10**9} for name, settings in models.items()}
    snaps = read_store(args.store)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="amcore-inner-loo-") as workdir:
        scores = inner_loo(snaps, models, Path(workdir), args.seed)
    for name, values in scores.items():
        each = " | ".join(v if isinstance(v, str) else f"{v:.4f}" for v in values)
        print(f"{name:14} mean W1 {summary(values)}  by left-out time {each}")
    print(f"({time.perf_counter() - start:.0f} s)")
    print(" ".join(f"inner_loo_{name}={summary(values)}" for name, values in scores.items()))


if __name__ == "__main__":
    main()
