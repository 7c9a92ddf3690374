"""The ``amcore`` command line: one subcommand per pipeline stage, each tracked as an MLflow child run."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from amcore.readers import InputError


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def cmd_prepare(args: argparse.Namespace) -> None:
    from amcore.prepare import build_snapshots
    from amcore.store import write_store
    from amcore.tracking import StageRun

    params = {**args.dataset, "preprocess": args.preprocess, "holdout_times": args.holdout_times}
    with StageRun("prepare", args.tags, params) as run:
        snaps = build_snapshots(args.dataset, args.preprocess, args.holdout_times)
        dropped = snaps.attrs["provenance"].get("dropped_nonfinite", 0)
        if dropped:
            print(f"amcore prepare: dropped {dropped} rows with NaN or inf values", file=sys.stderr)
        summary = snaps.summary()
        write_store(args.out, snaps, int(args.dataset.get("chunk_mb", 8) * 2**20))
        _write_json(args.summary, summary)
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
    from amcore.store import read_store
    from amcore.tracking import StageRun
    from amcore.train import TrainConfig, train

    cfg = TrainConfig(**args.params)
    with StageRun("train", args.tags, args.params) as run:
        snaps = read_store(args.store)

        def on_metrics(step: int, metrics: dict) -> None:
            run.log_metrics(metrics, step)
            if step % (20 * cfg.log_every) == 0:
                run.flush()

        summary = train(snaps, cfg, args.checkpoint, args.loss_csv, on_metrics)
        run.log_metrics(summary)
        run.log_artifact(args.checkpoint, "model")
        run.log_artifact(args.loss_csv)
    print(
        f"amcore train: {cfg.steps} steps in {summary['train_seconds']:.1f}s, final loss {summary['final_loss']:.5g}",
        file=sys.stderr,
    )


def cmd_integrate(args: argparse.Namespace) -> None:
    import torch

    from amcore.integrate import integrate_ode, time_grid, write_trajectories
    from amcore.store import read_store
    from amcore.tracking import StageRun
    from amcore.train import load_model, velocity_fn

    with StageRun("integrate", args.tags, args.params) as run:
        snaps = read_store(args.store)
        model, payload = load_model(args.checkpoint)
        grid, observed = time_grid(snaps.t_values, args.params["steps_per_interval"])
        x0 = torch.as_tensor(snaps.snapshot(0))
        traj = integrate_ode(velocity_fn(model, payload["objective"]), x0, grid)
        write_trajectories(args.out, traj, grid, observed)
        run.log_metrics({"n_particles": traj.shape[1], "n_steps": traj.shape[0]})
    print(f"amcore integrate: {traj.shape[1]} particles over {len(grid)} steps -> {args.out}", file=sys.stderr)


def cmd_evaluate(args: argparse.Namespace) -> None:
    import pandas as pd
    import torch

    from amcore import metrics, plots
    from amcore.integrate import read_trajectories
    from amcore.prepare import ground_truth
    from amcore.store import read_store
    from amcore.tracking import StageRun
    from amcore.train import load_model, velocity_fn

    params = args.params
    plots_dir = Path(args.plots)
    with StageRun("evaluate", args.tags, params) as run:
        snaps = read_store(args.store)
        traj = read_trajectories(args.trajectories)
        predicted = traj["x"].values[traj["observed"].values]
        model, payload = load_model(args.checkpoint)
        times = [float(t) for t in snaps.t_values]
        truth = [snaps.snapshot(k) for k in range(snaps.n_snapshots)]
        result: dict = {"model": args.model, "objective": payload["objective"], "w1": {}, "mmd": {}}
        for k in range(1, len(times)):
            key = f"{times[k]:g}"
            result["w1"][key] = metrics.wasserstein1(predicted[k], truth[k], params["max_exact_size"])
            result["mmd"][key] = metrics.mmd_rbf(predicted[k], truth[k], max_size=params["max_exact_size"])
        result["w1_mean"] = float(np.mean(list(result["w1"].values())))
        result["mmd_mean"] = float(np.mean(list(result["mmd"].values())))
        simulator = ground_truth(snaps)
        if simulator is not None:
            velocity = velocity_fn(model, payload["objective"])
            rng = np.random.default_rng(params["seed"])
            err = norm = 0.0
            by_time, floor = {}, []
            for k, t in enumerate(times):
                xs = simulator.sample(t, params["truth_samples"], rng)
                learned = velocity(torch.as_tensor(xs, dtype=torch.float32), torch.full((len(xs),), t))
                e, n = metrics.relative_l2(learned.detach().numpy(), simulator.velocity(xs, t))
                by_time[f"{t:g}"] = float(np.sqrt(e / n))
                err, norm = err + e, norm + n
                if k > 0:
                    fresh = simulator.sample(t, len(truth[k]), rng)
                    floor.append(metrics.wasserstein1(fresh, truth[k], params["max_exact_size"]))
            result["velocity_rel_error"] = float(np.sqrt(err / norm))
            result["velocity_rel_error_by_time"] = by_time
            result["w1_noise_floor_mean"] = float(np.mean(floor))

        plots_dir.mkdir(parents=True, exist_ok=True)
        title = f"{args.model} ({payload['objective'].upper()})"
        plots.marginals(plots_dir / "marginals.png", truth, list(predicted), times, f"{title}: observed vs pushed")
        plots.trajectories(plots_dir / "trajectories.png", traj["x"].values, truth, f"{title}: trajectories")
        loss = pd.read_csv(args.loss_csv)
        plots.loss_curve(plots_dir / "loss.png", loss["step"].values, loss["loss"].values, f"{title}: loss")
        _write_json(args.metrics, result)
        run.log_metrics({k: v for k, v in result.items() if isinstance(v, float)})
        for k, t in enumerate(times[1:], start=1):
            run.log_metrics({"w1_by_time": result["w1"][f"{t:g}"], "mmd_by_time": result["mmd"][f"{t:g}"]}, k)
        run.log_artifact(args.metrics)
        run.log_artifact(plots_dir, "plots")
    summary = ", ".join(f"{k}={v:.4g}" for k, v in result.items() if isinstance(v, float))
    print(f"amcore evaluate {args.model}: {summary}", file=sys.stderr)


def cmd_compare(args: argparse.Namespace) -> None:
    import pandas as pd

    from amcore import plots, tracking

    rows, series = [], {}
    for path in args.metrics:
        result = json.loads(Path(path).read_text())
        for metric in ("w1", "mmd"):
            rows += [
                {"model": result["model"], "metric": metric, "time": float(t), "value": v}
                for t, v in result[metric].items()
            ]
        for key, value in result.items():
            if isinstance(value, float):
                rows.append({"model": result["model"], "metric": key, "time": float("nan"), "value": value})
        series[result["model"]] = list(result["w1"].values())
        times = [float(t) for t in result["w1"]]
    table = pd.DataFrame(rows)
    tmp = Path(args.table).with_name(f".{Path(args.table).name}.tmp-{os.getpid()}")
    table.to_csv(tmp, index=False)
    os.replace(tmp, args.table)
    plots.metric_by_time(Path(args.figure), times, series, "W1 (pushed vs observed)", "models side by side")
    tracking.log_to_parent([args.table, args.figure])
    means = table[table["time"].isna()].pivot(index="model", columns="metric", values="value")
    print(means.to_string(float_format=lambda v: f"{v:.4g}"), file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amcore", description=__doc__)
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

    p = stage("train", cmd_train, "fit an AM potential or a Flow Matching field")
    p.add_argument("--store", required=True)
    p.add_argument("--params", type=_json, required=True, help="training parameters (JSON)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--loss-csv", required=True)

    p = stage("integrate", cmd_integrate, "push the first snapshot through the learned flow")
    p.add_argument("--store", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--params", type=_json, required=True)
    p.add_argument("--out", required=True, help="trajectories (.zarr)")

    p = stage("evaluate", cmd_evaluate, "score pushed samples and the learned velocity; draw plots")
    p.add_argument("--model", required=True, help="model name, for titles and metrics.json")
    p.add_argument("--store", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--trajectories", required=True)
    p.add_argument("--loss-csv", required=True)
    p.add_argument("--params", type=_json, required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--plots", required=True, help="directory for PNG plots")

    p = stage("compare", cmd_compare, "tabulate and plot the metrics of several models side by side")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json files")
    p.add_argument("--table", required=True, help="output CSV: model, metric, time, value")
    p.add_argument("--figure", required=True, help="output PNG")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (InputError, FileNotFoundError, KeyError, ValueError) as err:
        print(f"amcore {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
