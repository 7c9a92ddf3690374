"""The ``amcore`` command line: one subcommand per pipeline stage, each tracked as an MLflow child run."""

from __future__ import annotations

import argparse
import contextlib
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
    from amcore.prepare import build_snapshots
    from amcore.store import write_store
    from amcore.tracking import StageRun

    params = {**args.dataset, "preprocess": args.preprocess, "holdout_times": args.holdout_times}
    with StageRun("prepare", args.tags, params) as run, _dask_client(args.dask_scheduler):
        snaps = build_snapshots(args.dataset, args.preprocess, args.holdout_times)
        dropped = snaps.attrs["provenance"].get("dropped_nonfinite", 0)
        if dropped:
            print(f"amcore prepare: dropped {dropped} rows with NaN or inf values", file=sys.stderr)
        summary = write_store(args.out, snaps, int(args.dataset.get("chunk_mb", 8) * 2**20))  # one pass over x
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
    from amcore.store import open_store
    from amcore.tracking import StageRun
    from amcore.train import TrainConfig, train

    cfg = TrainConfig(**args.params)
    with StageRun("train", args.tags, args.params) as run:
        snaps = open_store(args.store)  # lazily: train loads it, or streams it when it exceeds in_memory_max_mb

        def on_metrics(step: int, metrics: dict) -> None:
            run.log_metrics(metrics, step)
            if step % (20 * cfg.log_every) == 0:
                run.flush()

        summary = train(snaps, cfg, args.checkpoint, args.loss_csv, on_metrics)
        run.log_metrics({k: v for k, v in summary.items() if isinstance(v, float)})
        run.log_artifact(args.checkpoint, "model")
        run.log_artifact(args.loss_csv)
    print(
        f"amcore train: {cfg.steps} steps in {summary['train_seconds']:.1f}s, final loss {summary['final_loss']:.5g}",
        file=sys.stderr,
    )


def cmd_integrate(args: argparse.Namespace) -> None:
    import torch

    from amcore import integrate
    from amcore.losses import ObjectiveSpec
    from amcore.store import read_store
    from amcore.tracking import StageRun
    from amcore.train import load_model, velocity_fn

    with StageRun("integrate", args.tags, args.params) as run:
        snaps = read_store(args.store)
        model, payload = load_model(args.checkpoint)
        objective, cfg = payload["objective"], payload["config"]
        grid, observed = integrate.time_grid(snaps.t_values, args.params["steps_per_interval"])
        x0 = torch.as_tensor(snaps.snapshot(0))
        flow = velocity_fn(model, objective)
        method = args.params.get("method", "auto")
        if method == "auto":
            method = {"eam": "sde", "uam": "weighted"}.get(objective, "rk4")
        weight = None
        if method == "sde":
            spec = ObjectiveSpec(kind="eam", sigma=cfg["sigma"], sigma_final=cfg["sigma_final"])
            duration = grid[-1] - grid[0]

            def sigma(t: float) -> float:
                return float(spec.sigma_at(torch.tensor((t - grid[0]) / duration)))

            gen = torch.Generator().manual_seed(args.params.get("seed", 0))
            traj = integrate.integrate_sde(flow, x0, grid, sigma, gen)
        elif method == "weighted":

            def growth(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    return cfg["growth"] * model(x, t)

            traj, weight = integrate.integrate_weighted(flow, growth, x0, grid)
        elif method == "dopri5":
            traj, accepted = integrate.integrate_adaptive(flow, x0, grid)
            run.log_metrics({"accepted_steps": accepted})
        else:
            traj = integrate.integrate_ode(flow, x0, grid)
        integrate.write_trajectories(args.out, traj, grid, observed, weight)
        run.log_metrics({"n_particles": traj.shape[1], "n_steps": traj.shape[0]})
    print(
        f"amcore integrate ({method}): {traj.shape[1]} particles over {len(grid)} steps -> {args.out}", file=sys.stderr
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    import pandas as pd

    from amcore import plots
    from amcore.evaluate import score_marginals, score_truth
    from amcore.integrate import read_trajectories
    from amcore.prepare import ground_truth
    from amcore.store import read_store
    from amcore.tracking import StageRun
    from amcore.train import load_model

    params = args.params
    plots_dir = Path(args.plots)
    with StageRun("evaluate", args.tags, params) as run:
        snaps = read_store(args.store)
        traj = read_trajectories(args.trajectories)
        observed = traj["observed"].values
        predicted = traj["x"].values[observed]
        weights = traj["weight"].values[observed] if "weight" in traj else None
        model, payload = load_model(args.checkpoint)
        result: dict = {"model": args.model, "objective": payload["objective"]}
        result |= score_marginals(snaps, predicted, weights, params["max_exact_size"], params["seed"])
        simulator = ground_truth(snaps)
        if simulator is not None:
            result |= score_truth(
                simulator, snaps, model, payload, params["truth_samples"], params["max_exact_size"], params["seed"]
            )

        plots_dir.mkdir(parents=True, exist_ok=True)
        times = [float(t) for t in snaps.t_values]
        truth = [snaps.snapshot(k) for k in range(snaps.n_snapshots)]
        title = f"{args.model} ({payload['objective'].upper()})"
        plots.marginals(plots_dir / "marginals.png", truth, list(predicted), times, f"{title}: observed vs pushed")
        plots.trajectories(plots_dir / "trajectories.png", traj["x"].values, truth, f"{title}: trajectories")
        if snaps.dim >= 2:
            from amcore.evaluate import learned_fields
            from amcore.simulate import truth_fields

            field = "drift" if payload["objective"] == "eam" else "velocity"
            true_field = None
            if simulator is not None and field in truth_fields(simulator, snaps.x[:1].astype(np.float64), times[0]):
                true_field = lambda x, t: truth_fields(simulator, x, t)[field]  # noqa: E731
            plots.velocity_field(
                plots_dir / "velocity.png",
                lambda x, t: learned_fields(model, payload, x, t)[field],
                true_field,
                times,
                snaps.x,
                f"{title}: learned {field}",
            )
        else:
            plots.loss_curve(plots_dir / "velocity.png", np.zeros(1), np.zeros(1), "1-d data: no field to draw")
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
    p.add_argument("--dask-scheduler", default=None, help="address of a dask distributed scheduler (tcp://host:port)")

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
