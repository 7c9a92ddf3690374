"""The ``amcore`` command line: one subcommand per pipeline stage, each tracked as an MLflow child run."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from amcore.atomic import check_replaceable, replacing, scratch
from amcore.errors import AlreadyRunning, InputError, Terminated, TrainingDiverged
from amcore.version import __version__

COINCIDING = ("every observed cell is one point: mmd and neighbour_excess judge the prediction's spread against none, "
              "however close it is (flagged in the table); W1 and W2 hold")  # fmt: skip


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _write_text(path: str | Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def _write_json(path: str | Path, payload: dict) -> None:
    _write_text(path, json.dumps(_sorted(payload), indent=2) + "\n")


def _time_order(key: str) -> tuple[float, ...]:
    """A time (``"12"``) or an interval between two (``evaluate.interval_name``: ``"4-12"``, ``"-1 to 0"``) as
    numbers to sort by; ValueError for any other key."""
    try:
        return (float(key),)
    except ValueError:
        pass
    for sep in (" to ", "-"):
        for at in (i for i in range(1, len(key)) if key.startswith(sep, i)):
            try:
                return float(key[:at]), float(key[at + len(sep) :])
            except ValueError:
                continue
    raise ValueError(key)


def _sorted(value):
    """Keys in order, times and intervals (every key one) by value: as text, 10 and 120 came before 3 (audit 58),
    and the interval 12-48 before 2-4 (audit 76)."""
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    if not isinstance(value, dict):
        return value
    try:
        keys = sorted(value, key=_time_order)
    except (TypeError, ValueError):
        keys = sorted(value, key=str)
    return {key: _sorted(value[key]) for key in keys}


@contextlib.contextmanager
def _dask_client(address: str | None):
    """Run dask work on an existing distributed scheduler when one is given; dask's local one otherwise."""
    if not address:
        yield None
        return
    from dask.distributed import Client

    with Client(address, timeout="30s") as client:
        print(f"amcore prepare: dask work on the scheduler at {address}", file=sys.stderr)
        yield client


def cmd_prepare(args: argparse.Namespace) -> None:
    from amcore.data.prepare import FAR_SAMPLE, FAR_SPREADS, build_snapshots
    from amcore.data.preprocess import counts_advice
    from amcore.data.store import ONE_POINT_TEXT, sparse_times, write_store
    from amcore.tracking import StageRun

    params = {**args.dataset, "preprocess": args.preprocess, "holdout_times": args.holdout_times}
    out = Path(args.out)
    # Rows too many to reorder in memory spill beside the store: same file system, seen by dask's workers too.
    with (
        StageRun("prepare", args.tags, params) as run,
        _dask_client(args.dask_scheduler),
        scratch(out.with_name(f"{out.stem}-rows")) as spill,
    ):
        snaps = build_snapshots(args.dataset, args.preprocess, args.holdout_times, spill)
        dropped = snaps.attrs["provenance"].get("dropped_nonfinite", 0)
        if dropped:
            print(f"amcore prepare: dropped {dropped} rows with NaN or inf values", file=sys.stderr)
        reader = snaps.attrs["provenance"].get("reader", {})
        if left := reader.get("left_out_columns"):
            named = f"{left[:10]}" + (f" and {len(left) - 10} more" if len(left) > 10 else "")
            print(f"amcore prepare: columns {named} are not numbers and were left out of the features "
                  "(dataset.feature_columns lists the features to take)", file=sys.stderr)  # fmt: skip
        if unnamed := reader.get("unnamed_columns"):
            print(f"amcore prepare: columns {unnamed} have no header (a row index, as pandas' to_csv writes) and "
                  "were left out of the features (dataset.feature_columns lists the features to take)",
                  file=sys.stderr)  # fmt: skip
        kept = snaps.training_snapshots()
        if few := sparse_times(snaps.t_values[kept], snaps.counts()[kept]):
            print(f"amcore prepare: warning: {few}", file=sys.stderr)
        if sizes := snaps.attrs.get("population"):  # audit 72: given, and said nowhere
            shown = ", ".join(f"t = {float(t):g}: {size:g}" for t, size in list(sizes.items())[:10])
            print(f"amcore prepare: population sizes (dataset.population): {shown}{' ...' if len(sizes) > 10 else ''}",
                  file=sys.stderr)  # fmt: skip
        if unit := reader.get("t_units"):  # audit 62: "ps" in the file, said nowhere
            print(f"amcore prepare: times in {unit} (the units of {reader['t_key']!r}): rates are per {unit}, eAM's "
                  f"sigma per square root of it", file=sys.stderr)  # fmt: skip
        if timelike := reader.get("time_like_columns"):
            print(f"amcore prepare: warning: feature columns {timelike[:10]} hold one value per time point (another "
                  "time or a batch label, not a measurement?): they separate the times by themselves; list the "
                  "features in dataset.feature_columns to leave them out", file=sys.stderr)  # fmt: skip
        if str(reader.get("x_key", "")).startswith("obsm/") and args.holdout_times:
            print(f"amcore prepare: warning: the cells are {reader['x_key']}, an embedding made outside amcore; if it "
                  "was fitted on every cell (scanpy's pca, a UMAP), the held-out times shaped it and their prediction "
                  "is no longer blind: for a leak-free benchmark give the expression (X or a layer) and let "
                  "preprocess (pca: N) fit on the training times", file=sys.stderr)  # fmt: skip
        if files := reader.get("file_labels"):
            shown = ", ".join(f"{name}: {label}" for name, label in list(files.items())[:20])
            more = f" and {len(files) - 20} more" if len(files) > 20 else ""
            source = "file_times" if args.dataset.get("file_times") else "from its name, time_pattern"
            print(f"amcore prepare: time of each file ({source}): {shown}{more}", file=sys.stderr)
        if unlisted := reader.get("unlisted_files"):
            print(f"amcore prepare: files {unlisted[:10]}{' ...' if len(unlisted) > 10 else ''} are in the folder but "
                  "not in dataset.file_times, and were not read", file=sys.stderr)  # fmt: skip
        if counts := snaps.attrs.get("raw_counts"):
            print(
                f"amcore prepare: warning: {counts_advice(counts)}, then select, standardise and project here",
                file=sys.stderr,
            )
        if far := snaps.attrs.get("far_cells"):
            read = {f"{t:g}": min(FAR_SAMPLE, int(n)) for t, n in zip(snaps.t_values, snaps.counts(), strict=True)}
            shown = ", ".join(f"t = {t}: {round(share * read[t])} of {read[t]}" for t, share in list(far.items())[:10])
            print(f"amcore prepare: warning: cells {FAR_SPREADS} or more robust spreads (1.4826 MAD, at least the "
                  f"10-90 % range / 2.56) from their time's median in some feature ({shown} cells read; at most "
                  f"{FAR_SAMPLE} a time, a uniform sample: a time not named may hold a few the sample missed): a few "
                  "far cells set the standardisation's "
                  "scale, the OT pairs, the scored w2 (it squares distances: audit 21 read 2.46 or 1.49 as a "
                  "subsample held one of 12 far cells in 60,000 or none; w1 held) and the largest terms of AM's "
                  "objective (on such data AM's default head lost to the previous time unmoved and head: inner held, "
                  "docs/benchmarks.md; head: auto chooses on training cells); check them, and drop them from the "
                  "input if they are errors (many far cells together may be a real population moving away: audit 38's "
                  "one moving 5 % read as far; keep those)", file=sys.stderr)  # fmt: skip
        if repeated := snaps.attrs.get("repeated_cells"):
            shown = ", ".join(f"t = {t}: {share:.0%}" for t, share in list(repeated.items())[:10])
            print(f"amcore prepare: warning: cells that repeat another cell of their time exactly ({shown}): copies, "
                  "or discrete values such as counts; two samples of such data share values, so the noise floor "
                  "w1_subsample_noise reads below what a flow's continuous cells can reach (docs/metrics.md)",
                  file=sys.stderr)  # fmt: skip
        if one := snaps.attrs.get("one_point_times"):
            print(f"amcore prepare: warning: every cell read of t = {', '.join(one[:10])} is one and the same point: "
                  f"{ONE_POINT_TEXT}", file=sys.stderr)  # fmt: skip
        if shared := snaps.attrs.get("shared_cells"):
            shown = ", ".join(f"t = {pair}: {share:.0%} of t = {pair.split(', ')[1]}'s" for pair, share in
                              list(shared.items())[:10])  # fmt: skip
            print(f"amcore prepare: warning: cells equal to a cell of another time exactly ({shown} cells; from "
                  f"samples of at most {FAR_SAMPLE} cells a time, an estimate beyond): "
                  "copies between times (a mix-up of files or labels), or discrete values; copied cells make the "
                  "previous time's cells unmoved (copy_prev) look like a prediction", file=sys.stderr)  # fmt: skip
        if tracked := snaps.attrs.get("tracked_cells"):
            shown = ", ".join(f"t = {pair}: {share:.0%}" for pair, share in list(tracked.items())[:5])
            more = f" and {len(tracked) - 5} more pairs" if len(tracked) > 5 else ""
            print(f"amcore prepare: warning: each time's cells lie nearer to the previous time's than to each other "
                  f"(the share whose nearest cell is the previous time's: {shown}{more}; about half for "
                  "independent samples): the same "
                  "particles followed from time to time? A held-out time then rewards carrying cells forward "
                  "(copy_prev, displacement) over a flow of the population's law, noise and all; give each time "
                  "its own particles (a disjoint subsample per frame) to compare them fairly "
                  "(docs/leave-one-out.md)", file=sys.stderr)  # fmt: skip
        if two := snaps.attrs.get("two_valued_features"):
            names = snaps.attrs.get("feature_names") or [f"x{i}" for i in range(snaps.dim)]
            shown = ", ".join(names[i] for i in two[:10]) + (" ..." if len(two) > 10 else "")
            print(f"amcore prepare: warning: {len(two)} of {snaps.dim} features take two values only in the cells "
                  f"read ({shown}): a 0/1 label; a flow moves cells continuously, so its predictions put cells "
                  "between the two values, where no cell can be; leave them out (dataset.feature_columns, "
                  "preprocess.select) or split the data by them", file=sys.stderr)  # fmt: skip
        names = snaps.attrs.get("feature_names") or [f"x{i}" for i in range(snaps.dim)]
        said = set(reader.get("time_like_columns") or [])  # a CSV's reader named its own
        if timelike := [i for i in snaps.attrs.get("time_like_features", []) if names[i] not in said]:
            shown = ", ".join(names[i] for i in timelike[:10]) + (" ..." if len(timelike) > 10 else "")
            print(f"amcore prepare: warning: {len(timelike)} of {snaps.dim} features hold one value within each time "
                  f"in the cells read ({shown}): another time or a batch label, not a measurement? They separate the "
                  "times by themselves; leave them out (dataset.feature_columns, preprocess.select)",
                  file=sys.stderr)  # fmt: skip
        if unequal := snaps.attrs.get("unequal_spreads"):
            (low, low_sd), (high, high_sd) = unequal["low"], unequal["high"]
            print(f"amcore prepare: warning: the features' standard deviations over the training times' cells read "
                  f"range from {low_sd:.3g} ({names[low]}) to {high_sd:.3g} ({names[high]}): with one length unit for "
                  "all of them (the OT pairs, the scored distances, the network's inputs) the smallest hardly count; "
                  "standardise them (preprocess.standardize: true) unless their units are meant to be compared",
                  file=sys.stderr)  # fmt: skip
        if velocity := snaps.attrs.get("velocity"):
            said = f"amcore prepare: velocities ({velocity['v_key']}) measured for {velocity['measured_cells']} of "
            said += f"{velocity['cells']} cells; a cell whose velocity is 0 is unmeasured and keeps the path's own"
            if velocity["nan_values"]:
                said += f"; {velocity['nan_values']} NaN values in {velocity['nan_cells']} cells were read as 0"
            print(said, file=sys.stderr)
        for time, labels in reader.get("merged_labels", {}).items():
            print(f"amcore prepare: labels {labels} map to one time, {time}, in dataset.time_map: their cells are "
                  "one snapshot", file=sys.stderr)  # fmt: skip
        summary = write_store(args.out, snaps, int(args.dataset.get("chunk_mb", 8) * 2**20))  # one pass over x
        _write_json(args.summary, summary)
        low, high = np.asarray(summary["feature_min"]), np.asarray(summary["feature_max"])
        if constant := [int(i) for i in np.flatnonzero(low == high)]:
            names = snaps.attrs.get("feature_names") or [f"x{i}" for i in range(snaps.dim)]
            shown = ", ".join(names[i] for i in constant[:10]) + (" ..." if len(constant) > 10 else "")
            print(f"amcore prepare: warning: {len(constant)} of {snaps.dim} features hold one value in every cell "
                  f"({shown}): a gene no cell expresses, a column of ones; they say nothing about the motion and the "
                  "plots skip them (dataset.feature_columns, preprocess.select: leave them out)",
                  file=sys.stderr)  # fmt: skip
        if digest := snaps.attrs["provenance"].get("sha256"):
            run.log_params({"data.sha256": digest})
        run.log_metrics(
            {"n_obs": summary["n_obs"], "n_features": summary["n_features"], "n_times": len(summary["times"])}
        )
        run.log_artifact(args.summary)
    print(
        f"amcore prepare: {summary['n_obs']} observations x {summary['n_features']} features "
        f"at {len(summary['times'])} times -> {args.out}",
        file=sys.stderr,
    )


def cmd_train(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from amcore.atomic import check_lease
    from amcore.data.store import open_store
    from amcore.tracking import StageRun
    from amcore.training.train import TRAINING, TrainConfig, train

    params = dict(args.params)
    if args.threads is not None:  # the job's threads, each of torchrun's processes on this node its share
        params["threads"] = max(1, args.threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    cfg = TrainConfig.from_params(params)
    if os.environ.get("RANK", "0") == "0":  # the lease is the first rank's (train): another rank's check could see it
        check_lease(args.checkpoint, TRAINING)  # before the stage's MLflow run: a refusal is no failed training
    with StageRun("train", args.tags, asdict(cfg)) as run:  # every setting, the defaults too
        snaps = open_store(args.store)  # lazily: train loads it, or streams it when it exceeds in_memory_max_mb

        def on_metrics(step: int, metrics: dict) -> None:
            run.log_metrics(metrics, step)
            if step % (20 * cfg.log_every) == 0:
                run.flush()

        summary = train(snaps, cfg, args.checkpoint, args.loss_csv, on_metrics)
        # numbers only, and finite: a growth candidate set aside scores inf in the summary, never as a metric
        run.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float)) and math.isfinite(v)})
        # what an auto setting chose, beside the param that says "auto" (audit 82: the head was in no param or metric)
        run.log_params({f"{name}_chosen": summary[name] for name in ("head", "growth", "stride")
                        if getattr(cfg, name) == "auto"})  # fmt: skip
        run.log_model(args.checkpoint, "model")  # an MLflow model (pyfunc) that ships the checkpoint
        run.log_artifact(args.loss_csv)
    kept = f"; head {summary['head']} (chosen on held-apart cells)" if cfg.head == "auto" else ""
    if cfg.growth == "auto":
        kept += f"; growth {summary['growth']:g} (chosen by its push through the training times)"
    if cfg.stride == "auto" and summary["stride"] != 1:
        kept += f"; stride {summary['stride']} (chosen on the training intervals' motion against sampling noise)"
    if "best_step" in summary:
        kept += f"; weights of step {summary['best_step']} (validation loss {summary['validation_loss']:.5g})"
    if os.environ.get("RANK", "0") == "0":  # one line for the job, not one per process
        first = summary.get("resumed_from_step", 0)  # audit 65: a resumed run read as all its steps in that time
        ran = f"{cfg.steps - first} steps (resumed at {first} of {cfg.steps})" if first else f"{cfg.steps} steps"
        print(f"amcore train: {ran} in {summary['train_seconds']:.1f}s, final loss "
              f"{summary['final_loss']:.5g}{kept}", file=sys.stderr)  # fmt: skip


def cmd_integrate(args: argparse.Namespace) -> None:
    """Push the first time's cells to every observed time; with a held-out time, also the previous time's to it.

    Cells go ``batch_size`` at a time and each step of each batch is written to the store as it comes: memory
    holds one batch, never the trajectories (steps x cells x features).
    """
    from amcore.data.store import open_store
    from amcore.evaluation import holdout
    from amcore.models import integrate
    from amcore.models.trained import load
    from amcore.tracking import StageRun

    with StageRun("integrate", args.tags, args.params) as run:
        snaps = open_store(args.store)  # lazily: only the snapshots pushed from are read
        model = load(args.checkpoint)
        model.check_store(snaps, args.store)
        params = args.params
        steps, seed = params.get("steps_per_interval"), params.get("seed", 0)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise InputError(f"--params steps_per_interval: expected a whole number of steps >= 1, got {steps!r}")
        batch = params.get("batch_size", integrate.BATCH_SIZE)
        method = model.integrator(params.get("method", "auto"))
        grid, observed = integrate.time_grid(snaps.t_values, steps)
        prediction = None
        held_out_times = snaps.attrs.get("holdout_times", [])
        trained = model.info.get("trained_times")  # None for checkpoints from before it was recorded
        for held_out in held_out_times:
            if trained is not None and _same_time(trained, held_out):
                raise InputError(f"{args.checkpoint} was trained on t = {held_out:g}, which {args.store} holds out: "
                                 "its prediction there has seen the answer; train the model on this store")  # fmt: skip
            prev, _, _ = holdout.bracket(snaps, held_out)
            start = float(snaps.t_values[prev])
            cells, w = model.push(snaps.snapshot(prev), start, held_out, steps, method, seed, with_weights=True,
                                  batch_size=batch)  # fmt: skip
            # every particle starts at weight 1
            growth = float(np.mean(w, dtype=np.float64)) if model.objective == "uam" else None
            prediction = holdout.prediction_variables(cells, w, held_out, start, growth, True, _chosen(model))
            print(f"amcore integrate: {len(cells)} cells of t = {start:g} pushed to {held_out:g}", file=sys.stderr)
        x0 = snaps.snapshot(0)  # lazy: each batch is read from the store as it is pushed
        writer = integrate.TrajectoryWriter(
            args.out, grid, observed, len(x0), snaps.dim, method == "weighted", batch, prediction, method
        )
        with writer:
            pushed = model.trajectories(x0, snaps.t_values, steps, method, seed, batch, out=(writer.x, writer.weight))
        lost = writer.lost
        if lost:
            print(f"amcore integrate: {lost} of {len(x0)} particles became NaN or inf (evaluate marks the run "
                  "as failed)", file=sys.stderr)  # fmt: skip
        if held := pushed.info.get("growth_held"):
            print(f"amcore integrate: {held} of {len(x0)} particles went twice the radius beyond the training path's "
                  "cells, where their growth was held to the population's (docs/training.md)",
                  file=sys.stderr)  # fmt: skip
        run.log_metrics({"n_particles": len(x0), "n_steps": len(grid), "nonfinite_particles": lost, **pushed.info})
    print(
        f"amcore integrate ({method}): {len(x0)} particles over {len(grid)} steps in batches of {batch} -> {args.out}",
        file=sys.stderr,
    )


def cmd_baseline(args: argparse.Namespace) -> None:
    """A simple answer at the held-out time, stored like a model's prediction."""
    from amcore.data.store import read_store
    from amcore.evaluation import holdout
    from amcore.tracking import StageRun

    max_size = args.max_size or holdout.OT_MAX_SIZE
    params = {"baseline": args.name, "holdout": args.holdout, "max_size": max_size}
    with StageRun("baseline", args.tags, params) as run:
        snaps = read_store(args.store)
        _check_held_out(snaps, args.store, args.holdout, f"--holdout {args.holdout:g}", "its cells were trained on")
        prev, _, _ = holdout.bracket(snaps, args.holdout)
        x, weight = holdout.baseline(args.name, snaps, args.holdout, max_size)
        holdout.write_prediction(args.out, x, weight, args.holdout, float(snaps.t_values[prev]))
        run.log_metrics({"n_particles": len(x)})
    print(f"amcore baseline {args.name}: {len(x)} cells at t = {args.holdout:g} -> {args.out}", file=sys.stderr)


def cmd_external(args: argparse.Namespace) -> None:
    """Another method's prediction of the held-out time (an npz in the input's features), in the store's coordinates
    and stored like a baseline's, for score and the table."""
    from amcore.data.store import read_store
    from amcore.evaluation import holdout
    from amcore.tracking import StageRun

    with StageRun("external", args.tags, {"name": args.name, "holdout": args.holdout, "cells": args.cells}) as run:
        snaps = read_store(args.store)
        _check_held_out(snaps, args.store, args.holdout, f"--holdout {args.holdout:g}", "its cells were trained on")
        prev, _, _ = holdout.bracket(snaps, args.holdout)
        x, weight = holdout.external(snaps, args.cells)
        holdout.write_prediction(args.out, x, weight, args.holdout, float(snaps.t_values[prev]))
        run.log_metrics({"n_particles": len(x)})
    print(f"amcore external {args.name}: {len(x)} cells at t = {args.holdout:g} from {args.cells} -> {args.out}",
          file=sys.stderr)  # fmt: skip


def cmd_score(args: argparse.Namespace) -> None:
    """Every distance (``evaluate.DISTANCES``) between each prediction and all cells of the held-out time; each
    model's whole course from the first time; on simulated data, each model's field against the truth."""
    from amcore.data.prepare import ground_truth
    from amcore.data.store import read_store
    from amcore.evaluation import holdout
    from amcore.evaluation.evaluate import (
        DEFAULTS,
        TRUTH_ERRORS,
        course_flags,
        data_box,
        distances,
        options,
        pair_variances,
        prediction_size,
        ran_off,
        score_truth,
        select_times,
    )
    from amcore.metrics import noise_sizes
    from amcore.models.trained import load
    from amcore.tracking import StageRun

    results = []
    noise: dict[tuple, float] = {}  # the floor per held-out time and subsample sizes (predictions of one size share)
    influences: dict[str, dict[str, list]] = {}  # per held-out time's label: each method's seeds' W1 influence
    unmoved = None  # the first time's cells unmoved against the last's: one W1 for every model's course
    with StageRun("score", args.tags, args.params) as run:
        snaps = read_store(args.store)
        box = data_box(snaps)
        opts = options(args.params)
        simulator, truth_samples = ground_truth(snaps), args.params.get("truth_samples", DEFAULTS["truth_samples"])
        models = {}  # each checkpoint read and checked before any distance: a bad one stops score at once
        for entry in args.predictions["predictions"] if simulator is not None else []:
            if entry.get("checkpoint"):
                models[entry["checkpoint"]] = load(entry["checkpoint"])
                models[entry["checkpoint"]].check_store(snaps, args.store)
        # the times evaluate scores the truth at (dense frames: evaluate.n_times of them)
        truth_snaps = select_times(snaps, np.arange(snaps.n_snapshots), None, args.params.get("n_times"))[0]
        started, entries = time.perf_counter(), args.predictions["predictions"]
        for i, entry in enumerate(entries, start=1):
            x, weight, held_out = holdout.read_prediction(entry["path"])
            # a minute a prediction at 10^5 cells (audit 28): a line as each starts, not only as it ends
            print(f"amcore score: scoring {entry['method']} (seed {entry['seed'] or '-'}; {i} of {len(entries)}, "
                  f"{len(x)} predicted cells at t = {held_out:g}) [{time.perf_counter() - started:.0f} s]",
                  file=sys.stderr)  # fmt: skip
            where = f"{entry['path']}: a prediction at t = {held_out:g}"
            _check_held_out(snaps, args.store, held_out, where, "a prediction of another split")
            if x.shape[1] != snaps.dim:
                raise InputError(f"{entry['path']}: {x.shape[1]} features, but {args.store} has {snaps.dim}: a "
                                 "prediction of another dataset")  # fmt: skip
            _, k, _ = holdout.bracket(snaps, held_out)
            observed = np.asarray(snaps.snapshot(k), dtype=np.float64)
            seed = "-" if entry["seed"] in (None, "") else entry["seed"]  # seed 0 is a seed
            who = f"{entry['method']} (seed {seed}) at held-out t = {held_out:g}"
            key = (k, noise_sizes(len(observed), opts["max_exact_size"], prediction_size(x, weight)))
            scores = distances(x, observed, weight, where=who, noise=noise.get(key), box=box, influence=True, **opts)
            # The split's label as the Snakefile writes it: every digit of the time (:g would round 1.2345678)
            label = repr(float(held_out)).removesuffix(".0")
            influence = scores.pop("w1_influence", None)
            by_method = influences.setdefault(label, {}).setdefault(entry["method"], [])
            by_method += [influence] if influence is not None else []
            if not scores["nonfinite"]:  # a failed prediction's distances, the noise included, are all NaN
                noise[key] = scores["w1_subsample_noise"]
            _warn_failed(
                f"amcore score {entry['method']} (seed {seed})", scores["nonfinite"], len(x),
                scores["escaped"],
            )  # fmt: skip
            growth, _, chosen = holdout.prediction_facts(entry["path"])
            if growth is not None:
                masses = snaps.masses()
                observed_growth = float(masses[k] / masses[k - 1])
                scores["mass_rel_error"] = abs(growth / observed_growth - 1) if not scores["nonfinite"] else np.nan
                # the growth itself beside its error, which has no sign (audit 34: only the log said x1.309 of x1.385)
                scores["predicted_growth"] = growth if not scores["nonfinite"] else np.nan
                scores["observed_growth"] = observed_growth
                print(f"amcore score {who}: mass x{growth:.4g} from t = {snaps.t_values[k - 1]:g}, observed "
                      f"x{observed_growth:.4g}", file=sys.stderr)  # fmt: skip
            share = scores.get("effective_size", 1.0)  # weighted particles only; NaN where the prediction failed
            _warn_few_effective(f"amcore score {entry['method']} (seed {seed})", f"{held_out:g}", share)
            if "fewest_cells" in scores:
                print(f"amcore score {who}: only {scores['fewest_cells']} cells on one side: the distances are mostly "
                      "sampling noise (flagged in the table)", file=sys.stderr)  # fmt: skip
            if "coinciding" in scores:
                print(f"amcore score {who}: {COINCIDING}", file=sys.stderr)
            if (pushed := course_flags(entry["path"], snaps, box, opts, unmoved)) is not None:  # each seed's course
                flags, whole = pushed
                scores, unmoved = scores | flags, whole["unmoved_w1"]
                if whole["excess"] > 1:
                    print(f"amcore score {entry['method']} (seed {seed}): FLAGGED: {ran_off(whole)}", file=sys.stderr)
            if entry.get("checkpoint") in models:  # the learned field against the known one
                truth = score_truth(simulator, truth_snaps, models[entry["checkpoint"]], truth_samples,
                                    opts["max_exact_size"], opts["seed"], floor=False)  # fmt: skip
                scores |= {name: truth[name] for name in TRUTH_ERRORS if name in truth}
            # its size beside its distances: a baseline's OT subsample (baseline_ot_max_size) is a smaller
            # prediction than a model's push of every cell, whose distances carry less sampling noise (audit 28)
            scores["predicted_cells"] = len(x)
            row = {"method": entry["method"], "holdout": label, "seed": entry["seed"], "table": scores}
            if chosen:  # what head or growth auto chose on the training times (audit 82: said nowhere in the table)
                row["chosen"] = chosen
            results.append(row)
            # method.seedN.name: "am1" at seed 2 and "am" at seed 12 were both am12.w1 (audit 82)
            prefix = entry["method"] + ("" if seed == "-" else f".seed{seed}")
            run.log_metrics({f"{prefix}.{name}": v for name, v in scores.items()})
            summary = ", ".join(f"{name}={v:.4g}" for name, v in scores.items())
            print(f"amcore score {who}: {summary}", file=sys.stderr)
        variances = [
            {"holdout": label, "method": method, "peer": peer, "w1": value}
            for label, by_method in influences.items()
            for method, peers in pair_variances(by_method).items()
            for peer, value in peers.items()
        ]
        _write_json(args.out, {"results": results, "held_out_variance": variances, "settings": opts})
        run.log_artifact(args.out)


def _chosen(model) -> dict:
    """What the ``auto`` settings (``head``, ``growth``, ``stride``, the spline's ``tension`` and ``velocity_weight``)
    chose for ``model`` on its training times (audit 82: the table said none of them), empty where none chose."""
    chosen = {key: model.config[key] for key in ("head", "growth") if model.info.get(f"{key}_choice")}
    if (model.info.get("stride_choice") or {}).get("median_ratio") is not None:  # where the data could choose 2
        chosen["stride"] = model.config["stride"]
    shape = model.info.get("interpolant") or {}
    return chosen | {key: float(shape[key]) for key in ("tension", "velocity_weight")
                     if model.config.get(key) == "auto" and shape.get(key) is not None}  # fmt: skip


def _same_time(values, time, every: bool = False) -> bool:
    """Whether ``time`` is among ``values`` (``every``: the two lists are the same times), to float rounding and no
    more: times nanoseconds apart, in seconds, are different times (numpy's default tolerance of 1e-8 would merge
    them)."""
    close = np.isclose(np.asarray(values, dtype=np.float64), time, rtol=1e-9, atol=0.0)
    return bool(close.all() if every else close.any())


def _check_held_out(snaps, store: str, time: float, what: str, why: str) -> None:
    """``time`` must be the store's held-out time: anything else was trained on (or belongs to another split)."""
    held_out = snaps.attrs.get("holdout_times", [])
    if not _same_time(held_out, time):
        raise InputError(f"{what}, but {store} holds out {held_out or 'no time'}: {why}")


def _warn_failed(who: str, nonfinite: int, total: int, escaped: int = 0) -> None:
    """Say loudly that a prediction failed (its distances are NaN) or flung cells out of the data; the table marks
    both."""
    if nonfinite:
        print(f"{who}: FAILED: {nonfinite} of {total} predicted cells are NaN or inf (all of them when the weights "
              "put the population on fewer than two cells); every distance is NaN", file=sys.stderr)  # fmt: skip
    if escaped:
        print(f"{who}: FLAGGED: {escaped} of {total} predicted cells left the data (outside the "
              "box of every observed cell widened on every side by its longest side)", file=sys.stderr)  # fmt: skip


def _warn_few_effective(who: str, time: str, share: float) -> None:
    """Say that weighted particles (uAM's) rest a prediction on a few of them: its distances measure those few."""
    from amcore.evaluation.evaluate import FEW_EFFECTIVE

    if share < FEW_EFFECTIVE:
        print(f"{who}: FLAGGED: at t = {time} the weights rest the prediction on {share:.1%} of the particles "
              "(effective sample size)", file=sys.stderr)  # fmt: skip


def _advise_growth(who: str, errors: dict, holdout: str, growth: float, chosen: bool = False) -> None:
    """uAM's pushed mass far off at a training time, whose mass it was given: the price of growth is the likeliest
    cause (investigation 77, a 3-d growing Gaussian: with `growth: 1` uAM read part of the motion as growth ahead and
    death behind, its mass 43 % off at a training time where `growth: 0.1` missed by 3 %)."""
    from amcore.evaluation.evaluate import MASS_ADVICE, percent

    held = "none" if holdout == "none" else f"{float(holdout):g}"  # the keys' format
    trained = {t: e for t, e in errors.items() if t != held and np.isfinite(e)}  # NaN: a failed push, said above
    if not trained or max(trained.values()) <= MASS_ADVICE:
        return
    worst = max(trained, key=trained.get)
    how = "growth: auto chose it among 0.1, 1 and 10; " if chosen else "growth: auto chooses it on training times, or "
    print(f"{who}: the pushed mass is off by {percent(trained[worst])} at t = {worst}, a training time whose mass "
          f"uAM was given (more than {MASS_ADVICE:.0%}): its price of growth (growth: {growth:g}) may not fit these "
          "data (too cheap, it reads motion as growth ahead and death behind; too dear, it cannot follow the "
          f"masses); {how}compare growth {growth / 10:g} and {growth * 10:g} on held-out times (docs/training.md)",
          file=sys.stderr)  # fmt: skip


def cmd_evaluate(args: argparse.Namespace) -> None:
    import pandas as pd

    from amcore.data.prepare import ground_truth
    from amcore.data.store import read_store
    from amcore.evaluation import plots
    from amcore.evaluation.evaluate import (
        ACTION_NOISE,
        DEFAULTS,
        DISTANCES,
        MASS_OFF,
        TRUTH_ERRORS,
        action_audit,
        course,
        data_box,
        diffusion_energy,
        falls_short,
        options,
        percent,
        ran_off,
        score_marginals,
        score_paper_mmd,
        score_truth,
        select_times,
    )
    from amcore.models.integrate import read_trajectories
    from amcore.models.trained import load
    from amcore.tracking import StageRun

    params = args.params
    plots_dir = Path(args.plots)
    with StageRun("evaluate", args.tags, params) as run:
        loss = pd.read_csv(args.loss_csv)  # read first: a bad one stops evaluate before any output is written
        if not {"step", "loss"} <= set(loss.columns):
            raise InputError(f"{args.loss_csv}: expected amcore train's loss CSV (columns step, loss), got "
                             f"{list(loss.columns)}")  # fmt: skip
        snaps = read_store(args.store)
        if args.holdout != "none":
            label = f"--holdout {args.holdout}"
            _check_held_out(snaps, args.store, float(args.holdout), label, "a label for the table")
        traj = read_trajectories(args.trajectories, load=False)  # read a time (or a block of steps) at a time
        observed = np.flatnonzero(traj["observed"].values)
        pushed_to = traj["time"].values[observed]
        if len(pushed_to) != len(snaps.t_values) or not _same_time(pushed_to, snaps.t_values, every=True):
            raise InputError(f"{args.trajectories}: pushed to the times {pushed_to.tolist()}, but {args.store} "
                             f"observes {snaps.t_values.tolist()}: trajectories of another store")  # fmt: skip
        predicted = traj["x"][observed]
        weights = traj["weight"][observed] if "weight" in traj else None
        stored = snaps  # every time: the plots' view is chosen on the store's training times, as the table's is
        snaps, predicted, weights = select_times(snaps, predicted, weights, params.get("n_times"))  # dense frames
        model = load(args.checkpoint)
        result: dict = {"model": args.model, "objective": model.objective}
        opts = options(params)
        box = data_box(snaps)  # one pass over the store: the escaped cells' box, the plots' features and grids
        said = time.monotonic()

        def say(line: str) -> None:
            print(f"amcore evaluate {args.model}: {line} [{time.monotonic() - said:.0f} s]", file=sys.stderr)

        result |= score_marginals(snaps, predicted, weights, box=box, say=say, **opts)
        # The table's row for a run without held-out time: each distance averaged over the observed times.
        table = {name: result[f"{name}_mean"] for name in DISTANCES if f"{name}_mean" in result}
        table |= {"nonfinite": result["nonfinite_max"], "escaped": result["escaped_max"]}
        for flag, key in (("effective_size", "effective_size_min"), ("fewest_cells", "fewest_cells_min"),
                          ("mass_rel_error", "mass_rel_error_max"), ("coinciding", "coinciding_max")):  # fmt: skip
            if key in result:  # only where it applies: weighted particles, a time of few cells
                table[flag] = result[key]
        _warn_failed(
            f"amcore evaluate {args.model}", result["nonfinite_max"], predicted.shape[1], result["escaped_max"]
        )
        if "effective_size" in result:
            worst = min(result["effective_size"], key=result["effective_size"].get)
            _warn_few_effective(f"amcore evaluate {args.model}", worst, result["effective_size"][worst])
        if result.get("mass_rel_error_max", 0.0) > MASS_OFF:  # audit 18: flagged in the table, not in the log
            off = max(result["mass_rel_error"], key=result["mass_rel_error"].get)
            print(f"amcore evaluate {args.model}: FLAGGED: the pushed mass is off by "
                  f"{percent(result['mass_rel_error'][off])} at t = {off} (more than {MASS_OFF:.0%}): the growth it "
                  "learned does not carry the population's", file=sys.stderr)  # fmt: skip
        if model.objective == "uam" and "mass_rel_error" in result:
            growth = float(model.config.get("growth", 1.0))
            _advise_growth(f"amcore evaluate {args.model}", result["mass_rel_error"], args.holdout, growth,
                           model.info.get("growth_choice") is not None)  # fmt: skip
        if "fewest_cells" in result:
            few = ", ".join(f"t = {t} ({n})" for t, n in result["fewest_cells"].items())
            print(f"amcore evaluate {args.model}: few cells at {few}: those distances are mostly sampling noise "
                  "(flagged in the table)", file=sys.stderr)  # fmt: skip
        if "coinciding" in result:
            print(f"amcore evaluate {args.model}: at t = {', '.join(result['coinciding'])}: {COINCIDING}",
                  file=sys.stderr)  # fmt: skip
        say("the push's course from the first time to the last")
        moved = traj.attrs.get("method", "sde" if model.objective == "eam" else None)  # a store from before it said
        result["course"] = course(snaps, result, opts) | {"noisy": moved == "sde"}
        table["course_excess"] = result["course"]["excess"]
        if result["course"]["excess"] > 1:
            print(f"amcore evaluate {args.model}: FLAGGED: {ran_off(result['course'])}",
                  file=sys.stderr)  # fmt: skip
        result |= {"method": args.model, "holdout": args.holdout, "seed": args.seed, "table": table}
        if chosen := _chosen(model):
            result["chosen"] = chosen
        simulator = ground_truth(snaps)
        truth_samples = params.get("truth_samples", DEFAULTS["truth_samples"])
        if simulator is not None:
            result |= score_truth(simulator, snaps, model, truth_samples, opts["max_exact_size"], opts["seed"])
            # The errors against the known answer are what a simulated run is for: in the table beside the
            # distances (audit 26: only metrics.json had them, and the distances, within noise, ranked uAM last).
            table |= {name: result[name] for name in TRUTH_ERRORS if name in result}
        if params.get("mmd_paper_alphas"):  # the AM paper's MMD beside amcore's distances
            result |= score_paper_mmd(snaps, predicted, params["mmd_paper_alphas"])
            table["mmd_paper"] = result["mmd_paper"]
        every_step = traj["weight"] if "weight" in traj else None
        say("the kinetic action along the push, beside the snapshots' geodesic")
        with warnings.catch_warnings():  # the drift along its own pushed cells: those that ran off are flagged
            warnings.filterwarnings("ignore", message="these cells lie more than")
            audit = action_audit(
                traj["x"], traj["time"].values, every_step, snaps, opts["max_exact_size"], opts["seed"],
                simulator, truth_samples, model.drift if model.objective == "eam" else None,
            )  # fmt: skip
        if model.objective == "eam":  # beside the drift's energy, the noise's: sigma_t^2 d per unit time
            audit |= diffusion_energy(model, snaps.t_values)
        result |= audit
        # The geodesic bounds a balanced flow's action: not an SDE's drift (eAM), nor uAM's, whose growth can stand
        # in for transport. Their ratios stay in metrics.json.
        if model.objective in ("am", "fm"):
            table |= {"action_ratio": audit["action_ratio"], "action_noise": audit["action_noise"]}
            if audit["action_noise"] > ACTION_NOISE:
                print(f"amcore evaluate {args.model}: the snapshots' sampling noise is {audit['action_noise']:.2g} of "
                      "the geodesic action (close times, few cells or small subsamples, many dimensions, or "
                      "snapshots that barely move): action_ratio is not informative; a larger "
                      "evaluate.max_exact_size lowers the noise where the times have more cells",
                      file=sys.stderr)  # fmt: skip
            elif args.holdout == "none" and falls_short(audit["action_ratio"], audit["action_noise"]):
                # (with a held-out time the geodesic runs through cells the model never saw: it may cut that corner)
                print(f"amcore evaluate {args.model}: FLAGGED: its flow spends {audit['action_ratio']:.2f} of the "
                      "W2 geodesic's action, less than any flow through the snapshots (sampling noise "
                      f"{audit['action_noise']:.2f}): it falls short of where the snapshots go",
                      file=sys.stderr)  # fmt: skip

        say("drawing the plots")
        plots_dir.mkdir(parents=True, exist_ok=True)
        times = [float(t) for t in snaps.t_values]
        # The plots' coordinates: the features, or the training cells' principal axes where the first features
        # hold little of their spread (plots.choose_view); cells, fields and the frame all in them.
        view = plots.training_view(stored, box)
        if view.turned:
            print(f"amcore evaluate {args.model}: {plots.view_note(view, snaps.attrs.get('feature_names'))}",
                  file=sys.stderr)  # fmt: skip
        snapshots = [snaps.snapshot(k) for k in range(snaps.n_snapshots)]
        truth = [view.cells(x) for x in snapshots]
        title = f"{args.model} ({model.objective.upper()})"
        pushed = [view.cells(predicted[k]) for k in range(snaps.n_snapshots)]  # lazy: each plot reads what it draws
        carried = None if weights is None else [weights[k] for k in range(snaps.n_snapshots)]
        names = view.names(snaps.attrs.get("feature_names"))
        drawn_box = view.box(snapshots, box)
        shown = plots.shown_features(drawn_box, count=3)  # constant features make no axis
        frame = plots.frame(truth, drawn_box)  # a few far cells set no axis
        held_out = snaps.attrs.get("holdout_times", [])
        plots.marginals(plots_dir / "marginals.png", truth, pushed, times, f"{title}: observed vs pushed",
                        axis_names=names, weights=carried, shown=shown[:2], frame=frame, held_out=held_out)  # fmt: skip
        plots.trajectories(plots_dir / "trajectories.png", view.cells(traj["x"]), truth, f"{title}: trajectories",
                           times=times, shown=shown[:2], axis_names=names, path_times=traj["time"].values,
                           frame=frame, held_out=held_out)  # fmt: skip
        plots.action_audit(plots_dir / "action.png", audit, f"{title}: kinetic action per interval",
                           noisy=audit["action_noise"] > ACTION_NOISE, times=times, held_out=held_out,
                           growth=model.objective == "uam")  # fmt: skip
        observed_mass = snaps.masses() / snaps.masses()[0]
        predicted_mass = np.ones(len(times)) if carried is None else [float(np.mean(w)) for w in carried]
        uam = model.objective == "uam"
        with _grid_of_the_plot():
            plots.growth(plots_dir / "growth.png", times, observed_mass, predicted_mass,
                         f"{title}: " + ("mass and learned growth rate" if uam else "mass (balanced: held at 1)"),
                         rate=view.scalar(model.growth_rate) if uam else None, truth=truth, axis_names=names,
                         shown=shown[:2], held_out=held_out)  # fmt: skip
        plots.projections(plots_dir / "projections.png", truth, pushed, times, f"{title}: observed vs pushed",
                          weights=carried, shown=shown, axis_names=names, held_out=held_out)  # fmt: skip
        over_time = {name: result[name] for name in ("mmd", "mmd_paper_by_time") if isinstance(result.get(name), dict)}
        plots.distances_over_time(plots_dir / "mmd.png", over_time, f"{title}: squared MMD of pushed vs observed cells",
                                  held_out=held_out)  # fmt: skip
        from amcore.data.simulate import truth_fields

        field = "drift" if model.objective == "eam" else "velocity"
        true_field = None
        if simulator is not None and field in truth_fields(simulator, snaps.x[:1].astype(np.float64), times[0]):
            true_field = view.field(lambda x, t: truth_fields(simulator, x, t)[field])
        if len(shown) >= 2:
            with _grid_of_the_plot():
                plots.velocity_field(
                    plots_dir / "velocity.png",
                    view.field(lambda x, t: model.fields(x, t)[field]),
                    true_field,
                    times,
                    view.cells(snaps.x),
                    f"{title}: learned {field}",
                    potential=None if model.objective == "fm" else view.scalar(model.potential),
                    shown=shown[:2],
                    axis_names=names,
                    box=frame,
                    cells=truth,
                    held_out=held_out,
                )
        else:
            with _grid_of_the_plot():
                plots.velocity_curves(plots_dir / "velocity.png", view.field(lambda x, t: model.fields(x, t)[field]),
                                      true_field, times, view.cells(snaps.x), f"{title}: learned {field}", field,
                                      shown[0], names, frame)  # fmt: skip
        plots.loss_curve(plots_dir / "loss.png", loss["step"].values, loss["loss"].values, f"{title}: loss")
        run.log_metrics(
            {k: v for k, v in result.items() if isinstance(v, float)}
            | {"nonfinite_max": result["nonfinite_max"], "escaped_max": result["escaped_max"]}
        )
        for k, t in enumerate(times[1:], start=1):  # a distance weighted particles lack is NaN at a failed time only
            by_time = {name: result[name].get(f"{t:g}") for name in DISTANCES if name in result}
            run.log_metrics({f"{name}_by_time": v for name, v in by_time.items() if v is not None}, k)
        _write_json(args.metrics, result | {"settings": opts})  # last: a failure before leaves no metrics.json
        run.log_artifact(args.metrics)
        run.log_artifact(plots_dir, "plots")
    summary = ", ".join(f"{k}={v:.4g}" for k, v in result.items() if isinstance(v, float))
    print(f"amcore evaluate {args.model}: {summary}", file=sys.stderr)


@contextlib.contextmanager
def _grid_of_the_plot():
    """Silences the model's warning of far cells while a plot reads its fields on a grid over the data's box: the
    grid is the pipeline's own, not cells a user passed (audit 90: heavy-tailed data's box, whose outliers stretch it,
    drew "are they normalised as the training data were?" in evaluate's log)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"(more than \S+ of )?these cells lie more than", category=UserWarning
        )
        yield


def cmd_table(args: argparse.Namespace) -> None:
    """One long table (method, holdout, seed, metric, value, reference), its mean ± std rendering, and figures."""
    from amcore import tracking
    from amcore.evaluation import plots
    from amcore.evaluation import table as tables

    results, sources, variances, settings = [], [], [], []
    if len(set(map(os.path.realpath, args.results))) < len(args.results):
        raise InputError(f"--results {args.results}: a file given twice would count its runs twice (as more seeds)")
    for path in args.results:
        try:
            loaded = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not JSON ({err}); expected amcore evaluate's metrics.json or score's "
                             "scores.json") from err  # fmt: skip
        if not isinstance(loaded, dict):
            raise InputError(f"{path}: a JSON {type(loaded).__name__}; expected amcore evaluate's metrics.json (an "
                             "object) or score's scores.json")  # fmt: skip
        found = loaded["results"] if "results" in loaded else [loaded]
        results += found
        sources += [path] * len(found)
        variances += loaded.get("held_out_variance", [])
        settings.append(loaded.get("settings"))
    keys = [(r.get("method"), str(r.get("holdout")), "" if r.get("seed") is None else str(r.get("seed")))
            for r in results]  # fmt: skip
    seen: dict[tuple, str] = {}
    for key, path in zip(keys, sources, strict=True):
        if key in seen:  # two runs of one method, split and seed (two experiments) would be averaged as seeds
            method, holdout, seed = key
            raise InputError(f"--results: {seen[key]} and {path} both hold method {method!r} at holdout {holdout} "
                             f"with seed {seed or '(none)'}: results of two runs (another experiment or dataset?) "
                             "would be averaged as one; give one run's files")  # fmt: skip
        seen[key] = path
    table = tables.long_table(results, variances)
    methods = sorted(set(table["method"]))
    if args.reference is None:  # audit 95: am was recorded as the reference of a table that had none
        args.reference = "am" if "am" in methods else ""
    elif args.reference not in methods:
        raise InputError(f"--reference {args.reference}: no such method in the results ({methods})")
    shared = settings[0] if all(s == settings[0] for s in settings) else None  # the subsample sizes, where one
    markdown = tables.markdown(table, args.reference, shared, tables.chosen_lines(results))
    recorded = table.assign(reference=args.reference)  # what summary pairs against unless told otherwise
    _write_text(args.table, recorded.to_csv(index=False))
    _write_text(args.markdown, markdown)
    if (table["holdout"] == "none").all():
        series = {r["method"]: list(r["w1"].values()) for r in results if "w1" in r}
        times = [float(t) for t in next(r["w1"] for r in results if "w1" in r)]
        floors = [list(r["w1_subsample_noise"].values()) for r in results if "w1_subsample_noise" in r]
        floor = np.nanmedian(np.array(floors, dtype=np.float64), axis=0).tolist() if floors else None
        perfect = [r["w1_noise_floor_mean"] for r in results if "w1_noise_floor_mean" in r]
        plots.metric_by_time(Path(args.figure), times, series, "W1 (pushed from the first time vs observed)",
                             "each method's W1 at each observed time", floor,
                             float(np.median(perfect)) if perfect else None)  # fmt: skip
    else:
        floors = tables.summary(table, "w1_subsample_noise")  # per method: a floor of its prediction's size
        levels = {h: [v for cols in floors.values() if h in cols for v in cols[h] if np.isfinite(v)]
                  for h in dict.fromkeys(h for cols in floors.values() for h in cols)}  # fmt: skip
        floor = {h: float(np.median(values)) for h, values in levels.items() if values}
        pairs = tables.paired_differences(table, "w1", args.reference)
        # Beside W1 (on subsamples), the sliced W1 of all cells: in many dimensions W1 of a few thousand cells is
        # mostly noise, and ranked 30-d predictions the other way round (audit 28). Its dots hold the seeds' spread
        # only: no paired panel, whose intervals would leave out the cells' sampling.
        sliced = [(tables.summary(table, "sliced_w1"), "sliced W1 at the held-out time (all cells)", None, None)]
        plots.holdout_bars(Path(args.figure), tables.summary(table, "w1"), "W1 at the held-out time", floor, pairs,
                           args.reference, sliced if (table["metric"] == "sliced_w1").any() else [],
                           {method for method, _ in tables.marked_runs(table)})  # fmt: skip
    artifacts = [args.table, args.markdown, args.figure]
    if args.predictions_figure:
        plots.holdout_panels(Path(args.predictions_figure), tables.load_panels(args.panels["panels"]))
        artifacts.append(args.predictions_figure)
    tracking.log_to_parent(artifacts)
    print(markdown, file=sys.stderr)
    failed = tables.failures(table)
    if len(failed):
        where = args.markdown
        print(
            f"amcore table: {len(failed)} prediction(s) FAILED (NaN or inf cells), marked in {where}", file=sys.stderr
        )


def cmd_summary(args: argparse.Namespace) -> None:
    """One table across experiments: each dataset's methods, noise floor and paired differences."""
    from amcore.evaluation.table import HELD_OUT_VAR, across_datasets

    tables, where, left_out, seen = {}, {}, [], {}
    paths = [Path(p).resolve() for p in args.tables]
    for path, name in zip(paths, _experiment_names(paths), strict=True):
        table = _read_table(path)
        held = table[table["holdout"] != "none"]  # rows of a split without a held-out time are no held-out score
        if held.empty:  # audit 41: results/*/table.csv takes in make run's default
            print(f"amcore summary: {name}: no held-out time (cells pushed from the first time: not the held-out "
                  "protocol), left out", file=sys.stderr)  # fmt: skip
            left_out.append(name)
            continue
        rows = held.sort_values(list(held.columns)).reset_index(drop=True)  # a copy in another order is a copy
        if twin := next((other for other, their in seen.items() if their.equals(rows)), None):
            raise InputError(f"{path} holds the held-out rows of {twin}: one experiment given twice (a copy?)")
        seen[path] = rows
        _check_complete(path, held, {args.metric, "w1_subsample_noise"})
        tables[name], where[name] = held, path
    if not tables:
        raise InputError("none of the tables holds a held-out time: summary compares leave-one-out experiments "
                         "(config/leaveout/*.yaml, or holdout_times in yours); a run without one has its table.md "
                         "already")  # fmt: skip
    recorded = {name: _recorded_reference(where[name], table) for name, table in tables.items()}
    references = _references(args.reference, recorded, left_out)
    for name, table in tables.items():
        metrics = sorted(m for m in set(table["metric"]) if not m.startswith(HELD_OUT_VAR))  # a pair's, not a metric
        if args.metric not in metrics:
            raise InputError(f"--metric {args.metric}: not in {name}'s table (it has {metrics})")
        if not references[name]:
            raise InputError(f"{name}'s table was made with no reference (no method named am, and no --reference "
                             f"given to amcore table): give --reference {name}=MODEL, one of "
                             f"{sorted(set(table['method']))}")  # fmt: skip
        if references[name] not in set(table["method"]):
            said = "--reference " if args.reference else f"the reference {name} was paired against, "
            raise InputError(f"{said}{references[name]}: no such method in {name}'s table "
                             f"({sorted(set(table['method']))}): give the model to pair against, as the config's "
                             f"reference does (--reference {name}=MODEL for this table alone)")  # fmt: skip
    text = across_datasets(tables, args.metric, references)
    if args.out:
        _write_text(args.out, text)
    print(text)


def _read_table(path: Path):
    """An experiment's long table (``amcore table``'s table.csv), or an error naming the file and what it is."""
    import pandas as pd

    if not path.is_file():
        raise InputError(f"{path}: no such table; give each experiment's results/<experiment>/table.csv")
    if path.suffix == ".md":  # audit 41: pandas' tokenizer error said nothing of the file
        raise InputError(f"{path}: table.md is the table's rendering; give the table.csv beside it")
    try:  # seed "" (a baseline) and holdout "none" stay text; an empty value is a failed run's NaN
        table = pd.read_csv(path, keep_default_na=False, na_values={"value": ["", "NaN", "nan"]},
                            dtype={"holdout": str, "seed": str, "reference": str})  # fmt: skip
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not an amcore table (not CSV: {str(err).strip()}); give "
                         "results/<experiment>/table.csv") from None  # fmt: skip
    missing = sorted({"method", "holdout", "seed", "metric", "value"} - set(table.columns))
    if missing:
        raise InputError(f"{path}: not an amcore table (no columns {missing}); give results/<experiment>/table.csv")
    if table.empty:
        raise InputError(f"{path}: an amcore table without rows; give a finished experiment's table.csv")
    if not pd.api.types.is_numeric_dtype(table["value"]):
        raise InputError(f"{path}: column 'value' holds text; expected the numbers amcore table writes")
    return table


def _check_complete(path: Path, table, metrics: set[str]) -> None:
    """Refuse a table where a method's seed lacks a held-out time at which ``metrics`` (those the summary averages)
    were scored: its mean over the held-out times would average other times (audit 41: a row deleted by hand moved
    am's mean from 1.196 to 1.208, in silence). Other metrics may be ragged (an older amcore scored some times)."""
    part = table[table["metric"].isin(metrics)]
    for metric, scored in part.groupby("metric", sort=False):
        times = set(scored["holdout"])
        for (method, seed), rows in scored.groupby(["method", "seed"], sort=False):
            if lacking := sorted(times - set(rows["holdout"])):
                run = f"seed {seed}" if seed else "one value"
                raise InputError(f"{path}: {method} ({run}) has no {metric} at held-out {lacking}, which other runs "
                                 "have: a table edited by hand or cut short? amcore table writes every run of a "
                                 "config")  # fmt: skip


def _experiment_names(paths: list[Path]) -> list[str]:
    """Each table's experiment: its folder's name, with as many folders above as it takes to tell tables in folders
    of the same name apart (runs/a/exp and runs/b/exp: a/exp and b/exp). The same table twice is refused."""
    if len(set(paths)) < len(paths):
        twice = sorted({str(p) for p in paths if paths.count(p) > 1})
        raise InputError(f"{twice}: the same table given twice; each is one experiment")
    depth = 1
    while True:
        names = ["/".join(p.parent.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
        depth += 1


def _recorded_reference(path: Path, table) -> str:
    """The model ``amcore table`` paired the experiment against (its config's ``reference``); ``am`` for a table
    written before it was recorded."""
    if "reference" not in table.columns:
        return "am"
    names = sorted(set(table["reference"].fillna("")))
    if len(names) != 1:
        raise InputError(f"{path}: column 'reference' holds {names}; expected the one model amcore table paired "
                         "against, on every row")  # fmt: skip
    return names[0]


def _references(given: list[str], recorded: dict[str, str], left_out: list[str] = ()) -> dict[str, str]:
    """``{experiment: model}``: each table's recorded reference, unless ``--reference`` names a bare MODEL for every
    experiment or EXPERIMENT=MODEL for one."""
    experiments = list(recorded)
    default = [g for g in given if "=" not in g]
    if len(default) > 1:
        raise InputError(f"--reference: {default} are several models for every table; give one, or EXPERIMENT=MODEL")
    references = {name: default[0] if default else model for name, model in recorded.items()}
    for name, _, model in (g.partition("=") for g in given if "=" in g):
        if name in left_out:
            raise InputError(f"--reference {name}={model}: {name} was left out (no held-out time)")
        if name not in references:
            raise InputError(
                f"--reference {name}={model}: no table of experiment {name!r}; the tables are {experiments}"
            )
        references[name] = model
    return references


def cmd_datasets(args: argparse.Namespace) -> None:
    """List the named public datasets, or download, check and convert one."""
    from amcore.data import datasets

    if args.action == "list":
        for spec in datasets.DATASETS.values():
            print(f"{spec.name}\t{spec.file}\t{spec.description} ({spec.license})")
        return
    if not args.name:
        raise InputError(f"amcore datasets fetch: which dataset? one of {sorted(datasets.DATASETS)}")
    path = datasets.fetch(args.name, args.to)
    print(f"amcore datasets: {args.name} -> {path}", file=sys.stderr)


def cmd_export(args: argparse.Namespace) -> None:
    """The split's cells as AnnData with each model's fields at them; with a held-out time, its predictions too."""
    from amcore import export
    from amcore.tracking import StageRun

    checkpoints = args.models["models"]
    entries = (args.predictions or {}).get("predictions", [])
    if bool(entries) != bool(args.predictions_out):
        raise ValueError("--predictions (a non-empty list) and --predictions-out go together")
    params = {"store": args.store, "models": {m["model"]: {"seed": m.get("seed", ""), "path": m["path"]}
                                              for m in checkpoints}}  # fmt: skip
    with StageRun("export", args.tags, params) as run:
        run.flush()  # the run opens in the background while the fields are computed: its id goes into uns
        cells = export.cells(args.store, checkpoints)
        ids = export.mlflow_ids(run)
        cells.uns["amcore"]["mlflow"] = ids
        export.write(cells, args.out)
        metrics = {"n_obs": cells.n_obs, "n_features": cells.n_vars, "n_models": len(checkpoints)}
        if args.predictions_out:
            predicted = export.predictions(args.store, entries, list(cells.var_names))
            predicted.uns["amcore"]["mlflow"] = ids
            export.write(predicted, args.predictions_out)
            metrics["n_predicted"] = int((predicted.obs["method"] != "observed").sum())
        run.log_metrics(metrics)
    also = f" and {len(entries)} predictions -> {args.predictions_out}" if args.predictions_out else ""
    print(f"amcore export: {cells.n_obs} cells x {cells.n_vars} features, {len(checkpoints)} model(s) -> "
          f"{args.out}{also}", file=sys.stderr)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amcore", description=__doc__)
    parser.add_argument("--version", action="version", version=f"amcore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def stage(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--tags", type=_json, default={}, help="MLflow tags of the stage run (JSON)")
        p.set_defaults(func=func)
        return p

    p = stage("prepare", cmd_prepare, "write the canonical snapshot store")
    p.add_argument("--dataset", type=_json, required=True, help="the config's dataset section (JSON)")
    p.add_argument("--out", required=True, help="snapshot store (.zarr)")
    p.add_argument("--summary", required=True, help="summary JSON")
    p.add_argument("--preprocess", type=_json, default={}, help="the config's preprocess section (JSON)")
    p.add_argument("--holdout-times", type=float, nargs="*", default=[], help="times left out of any fitting")
    p.add_argument("--dask-scheduler", default=None, help="address of a dask distributed scheduler (tcp://host:port)")

    p = stage("train", cmd_train, "fit an AM potential or a Flow Matching field")
    p.add_argument("--store", required=True, help="snapshot store (.zarr) from amcore prepare")
    p.add_argument("--params", type=_json, required=True, help="training parameters (JSON)")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.pt)")
    p.add_argument("--loss-csv", required=True, help="training loss history (.csv)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the whole job, shared by its "
                   "processes (Snakemake's {threads}), in place of the params' threads: a change of them reruns "
                   "nothing")  # fmt: skip

    p = stage("integrate", cmd_integrate, "push the first snapshot through the learned flow")
    p.add_argument("--store", required=True, help="snapshot store (.zarr) from amcore prepare")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.pt)")
    p.add_argument("--params", type=_json, required=True, help="JSON: steps_per_interval, and optionally method, seed, "
                   "batch_size (the config's integrate section for this model, without its models key)")  # fmt: skip
    p.add_argument("--out", required=True, help="trajectories (.zarr)")

    p = stage("baseline", cmd_baseline, "a baseline's prediction at a held-out time")
    p.add_argument("--store", required=True, help="snapshot store (.zarr) from amcore prepare")
    p.add_argument("--holdout", type=float, required=True, help="the held-out time")
    p.add_argument("--name", required=True, help="copy_prev, ot_displacement, ot_push, spline_path or velocity_path")
    p.add_argument("--max-size", type=int, default=None, help="cells per time at most in OT plans (default 5000)")
    p.add_argument("--out", required=True, help="prediction (.zarr)")

    p = stage("external", cmd_external, "another method's prediction at a held-out time, scored as a baseline")
    p.add_argument("--store", required=True, help="snapshot store (.zarr) from amcore prepare")
    p.add_argument("--holdout", type=float, required=True, help="the held-out time")
    p.add_argument("--name", required=True, help="the method's name in the table")
    p.add_argument("--cells", required=True, help="npz: X (cells x the input's features, before preprocessing), "
                   "optionally weights (one per cell)")  # fmt: skip
    p.add_argument("--out", required=True, help="prediction (.zarr)")

    p = stage("score", cmd_score, "distances between predictions and the cells of their held-out time")
    p.add_argument("--store", required=True, help="snapshot store (.zarr) from amcore prepare")
    p.add_argument(
        "--predictions",
        type=_json,
        required=True,
        help='{"predictions": [{"method", "seed", "path", "checkpoint" (a model\'s, for the truth)}]}',
    )
    p.add_argument("--params", type=_json, required=True, help="the config's evaluate section (JSON)")
    p.add_argument("--out", required=True, help="scores JSON")

    p = stage("evaluate", cmd_evaluate, "score pushed samples and the learned velocity; draw plots")
    p.add_argument("--model", required=True, help="model name, for titles and metrics.json")
    p.add_argument("--holdout", default="none", help="the split's held-out time, for the table")
    p.add_argument("--seed", default="", help="the training seed, for the table")
    p.add_argument("--store", required=True, help="snapshot store (.zarr) from amcore prepare")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.pt)")
    p.add_argument("--trajectories", required=True, help="the first time's cells pushed (.zarr, amcore integrate)")
    p.add_argument("--loss-csv", required=True, help="training loss history (.csv)")
    p.add_argument("--params", type=_json, required=True, help="the config's evaluate section (JSON)")
    p.add_argument("--metrics", required=True, help="output metrics (.json)")
    p.add_argument("--plots", required=True, help="directory for PNG plots")

    p = stage("table", cmd_table, "every method, held-out time and seed in one table, with figures")
    p.add_argument("--results", nargs="+", required=True, help="metrics.json (no held-out time) and scores JSON")
    p.add_argument("--table", required=True, help="output CSV: method, holdout, seed, metric, value, reference")
    p.add_argument("--markdown", required=True, help="output markdown: mean ± std over seeds")
    p.add_argument("--figure", required=True, help="output PNG: W1 per held-out time (or per time)")
    p.add_argument("--panels", type=_json, default=None, help="held-out predictions to draw (JSON)")
    p.add_argument("--predictions-figure", default=None, help="output PNG: true vs predicted cells")
    p.add_argument("--reference", help="the model every other method is paired against by seed (default am "
                   "where the results hold it, else none; the pipeline passes its config's reference)")  # fmt: skip

    p = stage("export", cmd_export, "AnnData (.h5ad) of the cells with each model's fields; held-out predictions")
    p.add_argument("--store", required=True, help="snapshot store (.zarr) from amcore prepare")
    p.add_argument("--models", type=_json, default={"models": []}, help='{"models": [{"model", "seed", "path"}]}')
    p.add_argument("--out", required=True, help="cells (.h5ad)")
    p.add_argument("--predictions", type=_json, default=None, help='{"predictions": [{"method", "seed", "path"}]}')
    p.add_argument("--predictions-out", default=None, help="held-out predictions (.h5ad)")

    p = sub.add_parser("summary", help="one table across experiments (each results/<experiment>/table.csv)")
    p.set_defaults(func=cmd_summary)
    p.add_argument("tables", nargs="+", help="table.csv of each experiment; named by its folder")
    p.add_argument("--metric", default="w1", help="the distance to summarise (default w1; any the tables hold)")
    p.add_argument(
        "--reference",
        nargs="+",
        default=[],
        help="the model the paired differences are taken against: MODEL for every table, EXPERIMENT=MODEL for one "
        "(default: the one each table was paired against, its config's reference)",
    )
    p.add_argument("--out", default=None, help="also write the markdown here")

    p = sub.add_parser("datasets", help="public datasets by name: list them, or fetch one into a folder")
    p.set_defaults(func=cmd_datasets)
    p.add_argument("action", choices=["list", "fetch"])
    p.add_argument("name", nargs="?", help="the dataset to fetch (see `amcore datasets list`)")
    p.add_argument("--to", default="data", help="folder to write the converted npz to (default: data)")
    return parser


# Each command's output arguments, and the arguments it reads: an output must never be an input (writing it would
# destroy what is being read) nor a folder amcore did not write.
OUTPUTS = {
    "prepare": ("out", "summary"), "train": ("checkpoint", "loss_csv"), "integrate": ("out",), "baseline": ("out",),
    "external": ("out",), "score": ("out",), "evaluate": ("metrics", "plots"),
    "table": ("table", "markdown", "figure", "predictions_figure"), "export": ("out", "predictions_out"),
    "summary": ("out",),
}  # fmt: skip
INPUTS = ("store", "checkpoint", "trajectories", "loss_csv", "results", "tables", "cells")
FOLDER_OUTPUTS = {("prepare", "out"), ("integrate", "out"), ("baseline", "out"), ("external", "out")}  # zarr stores


# The config sections a command's --params carries (workflow/schemas/config.schema.yaml): a typo is an error, not a
# default silently used.
PARAM_KEYS = {
    "integrate": {"steps_per_interval", "method", "seed", "batch_size"},
    "evaluate": {"max_exact_size", "kernel_max_size", "projections", "truth_samples", "n_times", "mmd_paper_alphas",
                 "seed"},
}  # fmt: skip
PARAM_KEYS["score"] = PARAM_KEYS["evaluate"]


def _check_params(args: argparse.Namespace) -> None:
    import difflib

    known = PARAM_KEYS.get(args.command)
    if known is None:
        return
    for key in sorted(set(args.params) - known):
        close = difflib.get_close_matches(key, sorted(known), 1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(sorted(known))}"
        raise InputError(f"--params: unknown {args.command} setting {key!r}{hint}")


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, outputs that name an input or each other, or a folder amcore did not write."""
    names = OUTPUTS.get(args.command, ())
    outputs = {name: Path(getattr(args, name)).resolve() for name in names if getattr(args, name, None)}
    inputs: dict[Path, str] = {}
    for name in INPUTS:
        if name in names or getattr(args, name, None) is None:
            continue
        for value in getattr(args, name) if isinstance(getattr(args, name), list) else [getattr(args, name)]:
            inputs[Path(value).resolve()] = name
    seen: dict[Path, str] = {}
    for name, path in outputs.items():
        flag = f"--{name.replace('_', '-')}"
        if path in inputs:
            raise InputError(f"{flag} {path} is also --{inputs[path].replace('_', '-')}: an output never overwrites "
                             "what the command reads; give it another path")  # fmt: skip
        if path in seen:
            raise InputError(f"{flag} and --{seen[path].replace('_', '-')} are the same path {path}")
        seen[path] = name
        if (args.command, name) in FOLDER_OUTPUTS and path.is_file():
            raise InputError(f"{flag} {path} is a file: amcore writes a zarr store (a folder) there and will not "
                             "replace a file with it")  # fmt: skip
        if name != "plots":  # evaluate's plots folder holds files, each replaced on its own
            check_replaceable(path)
        _check_writable(path, flag)


def _check_writable(path: Path, flag: str) -> None:
    """The nearest existing folder above ``path`` must be a folder this process can write in: found now, not after
    an hour of training."""
    above = path.parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise InputError(f"{flag} {path}: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: cannot write in {above} (permission denied)")


def _where_full(err: BaseException, args: argparse.Namespace) -> str:
    """Where a full disk that names no file is (zarr and numpy name none): the command's outputs' folders."""
    if not isinstance(err, OSError) or err.errno not in (errno.ENOSPC, errno.EDQUOT) or err.filename:
        return ""
    folders = dict.fromkeys(str(Path(getattr(args, name)).resolve().parent)
                            for name in OUTPUTS.get(args.command, ()) if getattr(args, name, None))  # fmt: skip
    if not folders:
        return ""
    return f" (writing under {', '.join(folders)}: free space there, see `df -h {next(iter(folders))}`)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _terminable():
            _check_params(args)
            _check_outputs(args)
            args.func(args)
    except Terminated:
        print(f"amcore {args.command}: stopped by SIGTERM; no output it was writing was kept", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyError as err:  # a bare key (a missing entry of a JSON argument or a file) says nothing by itself
        what = err.args[0] if err.args else ""
        said = f"missing key {what!r}" if isinstance(what, str) and " " not in what else str(what)
        print(f"amcore {args.command}: error: {said}", file=sys.stderr)
        return 2
    except (InputError, ValueError, OSError, AlreadyRunning) as err:  # OSError: a missing file, a full disk, ...
        print(f"amcore {args.command}: error: {err}{_where_full(err, args)}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"amcore {args.command}: error: {err}", file=sys.stderr)
        return 3
    return 0


@contextlib.contextmanager
def _terminable():
    """SIGTERM raises Terminated while a stage runs, so that its outputs and its MLflow run close as on Ctrl-C (audit
    86: a training cancelled by scancel left its stage's run RUNNING for good). Not in a process of a multi-process
    training: one blocked in a collective on a dead peer would not see the exception, and SIGTERM must end it."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


if __name__ == "__main__":
    sys.exit(main())
