"""The whole pipeline, for real: Snakemake, the amcore CLI, zarr stores and an MLflow backend."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import BIN, cli_env, snakemake
from mlflow.tracking import MlflowClient

from amcore.data.store import read_store
from amcore.evaluation.evaluate import DISTANCES
from amcore.models.integrate import read_trajectories

STAGES = ["evaluate", "export", "integrate", "prepare", "train"]


def run_dir(workdir: Path, config: dict, model: str = "am", holdout: str = "none", seed: int = 0) -> Path:
    return workdir / "results" / config["experiment"] / f"holdout-{holdout}" / model / f"seed-{seed}"


def check_outputs(workdir: Path, config: dict) -> dict:
    out = workdir / "results" / config["experiment"]
    run = run_dir(workdir, config)
    snaps = read_store(out / "holdout-none" / "data" / "store.zarr")
    n = config["dataset"]["n_per_time"]
    assert snaps.t_values.tolist() == config["dataset"]["times"]
    assert snaps.counts().tolist() == [n] * len(config["dataset"]["times"])
    traj = read_trajectories(run / "trajectories.zarr")
    steps = config["integrate"]["steps_per_interval"] * (len(snaps.t_values) - 1) + 1
    assert traj["x"].shape == (steps, n, 2)
    assert traj["time"].values[traj["observed"].values].tolist() == config["dataset"]["times"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["w1"]) == {"0.5", "1"}
    assert all(math.isfinite(v) for v in metrics["w1"].values())
    # what the capped subsamples were drawn from: every pushed cell, every observed one (audit 51)
    assert metrics["cells"] == {"predicted": {"0.5": n, "1": n}, "observed": {"0.5": n, "1": n}}
    # Even a few hundred steps move the cloud: W1 at t=1 without motion is ~4 (the mean shifts by 4+).
    assert metrics["w1_mean"] < 1.5
    # Measured on this tiny config (400 steps, 300 cells a time): 0.26 (seed 0), 0.27, 0.27, 0.31 (seeds 1-3); an
    # untrained field is ~1.0. 0.4 leaves a third above the worst seed seen and still needs the flow learnt.
    assert 0 <= metrics["velocity_rel_error"] < 0.4
    for name in ("marginals", "trajectories", "velocity", "loss", "action", "growth", "mmd"):
        assert (run / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(out / "table.csv", keep_default_na=False)
    assert list(table.columns) == ["method", "holdout", "seed", "metric", "value", "reference"]
    assert set(table["reference"]) == {"am"}  # what amcore summary pairs against
    # No held-out time: one row per metric, each the mean over the observed times after the first.
    rows = table.set_index("metric")["value"]
    assert rows["w1"] == pytest.approx(metrics["w1_mean"]) and rows["nonfinite"] == 0
    every = {*DISTANCES, "nonfinite", "escaped", "action_ratio", "action_noise", "course_excess", "velocity_rel_error"}
    assert set(rows.index) == every
    assert rows["velocity_rel_error"] == pytest.approx(metrics["velocity_rel_error"], rel=1e-12)  # in the table
    assert rows["escaped"] == 0
    # The whole course: the cells pushed from t = 0 end far nearer the last time's than the t = 0 cells unmoved.
    course = metrics["course"]
    assert course["ratio"] == pytest.approx(course["w1"] / course["unmoved_w1"]) and course["ratio"] < 0.5
    assert rows["course_excess"] == pytest.approx((course["w1"] - course["unmoved_w1"]) / course["noise"])
    assert rows["course_excess"] < -1  # nearer the last time than not moving, by more than the noise floor
    # The action audit: per interval, the flow's, the geodesic's and (a simulator) the true process's action.
    assert (
        set(metrics["action_flow"])
        == set(metrics["action_geodesic"])
        == set(metrics["action_truth"])
        == {"0-0.5", "0.5-1"}
    )
    assert 0 < metrics["action_geodesic_total"] <= 1.05 * metrics["action_truth_total"]
    assert rows["action_ratio"] == pytest.approx(metrics["action_flow_total"] / metrics["action_geodesic_total"])
    assert (table["holdout"] == "none").all() and (table["method"] == "am").all()
    return metrics


def check_tracking(uri: str, config: dict, metrics: dict) -> None:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("amcore")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("amcore.kind") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent_id = parents[0].info.run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert sorted(r.data.tags["amcore.stage"] for r in children) == STAGES
    assert all(r.info.status == "FINISHED" for r in children)
    # audit 95: the config's experiment names and tags every run (two configs sharing a tracker had stage runs
    # that only their parents told apart)
    name = config["experiment"]
    assert parents[0].info.run_name == f"{name}/pipeline"
    assert all(r.data.tags["amcore.experiment"] == name and r.info.run_name.startswith(f"{name}/") for r in children)
    by_stage = {r.data.tags["amcore.stage"]: r for r in children}
    train = by_stage["train"]
    model_cfg = config["models"]["am"]
    history = client.get_metric_history(train.info.run_id, "loss")
    assert [m.step for m in history] == list(range(50, model_cfg["steps"] + 1, 50))
    assert train.data.params["steps"] == str(model_cfg["steps"])
    assert train.data.tags["snakemake.wildcard.model"] == "am"
    evaluate = by_stage["evaluate"]
    assert evaluate.data.metrics["w1_mean"] == pytest.approx(metrics["w1_mean"])
    for name in DISTANCES:  # each distance per observed time after the first, under its own name
        history = client.get_metric_history(evaluate.info.run_id, f"{name}_by_time")
        assert sorted(m.step for m in history) == [1, 2], name
    assert "metrics.json" in [a.path for a in client.list_artifacts(evaluate.info.run_id)]
    assert by_stage["prepare"].data.metrics["n_obs"] == 3 * config["dataset"]["n_per_time"]


def test_tiny_pipeline_end_to_end_with_sqlite(tmp_path, tiny_config, fresh_tracker):
    fresh_tracker(tmp_path / "results")
    result = snakemake(tmp_path, tiny_config)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = check_outputs(tmp_path, tiny_config)
    check_tracking(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}", tiny_config, metrics)
    check_export(tmp_path / "results" / tiny_config["experiment"], tiny_config)

    # Incremental: nothing changed, nothing to do.
    again = snakemake(tmp_path, tiny_config, "--dry-run")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # A training parameter changed: train and everything after it, never prepare.
    changed = copy.deepcopy(tiny_config)
    changed["models"]["am"]["lr"] = 1e-3
    plan = snakemake(tmp_path, changed, "--dry-run")
    text = plan.stdout + plan.stderr
    assert plan.returncode == 0, text[-3000:]
    for rule in ("train", "integrate", "evaluate"):
        assert f"rule {rule}:" in text
    assert "rule prepare:" not in text

    # Two training processes draw other batches (one seeded stream each): train again (audit 23: nothing reran).
    processes = snakemake(tmp_path, copy.deepcopy(tiny_config) | {"train_processes": 2}, "--dry-run").stdout
    assert processes.count("rule train:") == len(tiny_config["models"]), processes[-3000:]

    # The report shows the plots.
    report = subprocess.run(
        [str(BIN / "snakemake"), "--snakefile", str(Path(__file__).parents[1] / "Snakefile"),
         "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--replace-workflow-config",
         "--report", str(tmp_path / "report.html")],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report.html").stat().st_size > 10_000

    # A re-training that fails (here it diverges at once; a kill -9 likewise) leaves no earlier model's results
    # looking current: the next run must train again, not find nothing to do and keep the old numbers.
    failing = copy.deepcopy(tiny_config)
    failing["models"]["am"]["divergence_factor"] = 1e-9
    failed = snakemake(tmp_path, failing)
    assert failed.returncode != 0 and "stopped at step" in failed.stdout + failed.stderr
    run = run_dir(tmp_path, tiny_config)
    assert not any((run / name).exists() for name in ("model.pt", "trajectories.zarr", "metrics.json", "plots"))
    plan = snakemake(tmp_path, failing, "--dry-run")
    assert "rule train:" in plan.stdout + plan.stderr


def check_export(out: Path, config: dict) -> None:
    """The export rule ran in the pipeline: every cell with the model's velocity, the MLflow runs it came from."""
    import anndata as ad

    cells = ad.read_h5ad(out / "holdout-none" / "export.h5ad")
    assert cells.n_obs == 3 * config["dataset"]["n_per_time"] and cells.obsm["velocity_am"].shape == (cells.n_obs, 2)
    mlflow = cells.uns["amcore"]["mlflow"]
    assert len(mlflow["parent_run_id"]) == 32 and len(mlflow["run_id"]) == 32  # tracked in results/mlflow.db
    assert "export.h5ad" in (out / "logs" / "export_none.log").read_text()
    assert not (out / "holdout-none" / "predictions.h5ad").exists()  # nothing held out, nothing predicted
    # evaluate says which time it scores as it goes (a minute a time at 10^5 cells was silent, audit 21)
    evaluated = next((out / "logs").glob("evaluate_none_am_*.log")).read_text()
    assert "amcore evaluate am: scoring t = 0.5 (1 of 2," in evaluated, evaluated[:2000]


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"modles": {}}, "modles"),
        ({"models": {"am": {"objective": "am", "steps": -5}}}, "-5"),
        ({"models": {"am": {"objective": "am", "learning_rate": 0.1}}}, "learning_rate"),
        ({"dataset": {"source": "simulate", "n_per_time": "many"}}, "many"),
        (
            {"models": {"am": {"objective": "am", "lr": "1e-3"}}},
            "YAML reads a number like 1e-3 or 1.0e5 as text: write 1.0e-3 or 1.0e+5",
        ),
        (  # train's words, not the schema's 'sigma: 0 was expected' (audit 94)
            {"models": {"am": {"objective": "am", "sigma": 1.0}}},
            "['models']['am']['sigma']: sigma / sigma_final (got 1.0 / None) set the diffusion of objective 'eam'",
        ),
        ({"models": {"e": {"objective": "eam"}}}, "'sigma' is a required property (eam needs sigma > 0"),
        ({"models": {"e": {"objective": "eam", "sigma": 0}}}, "minimum of 0 (eam needs sigma > 0, the noise of dX"),
        ({"holdout_times": ["E7.25"]}, "with text labels, what dataset.time_map maps them to"),
        ({"models": {"am": {"objective": "am", "tension": 0.5}}}, "['models']['am']['tension']"),
        ({"models": {"am": {"objective": "am", "growth": 2.0}}}, "['models']['am']['growth']"),
        ({"models": {"f": {"objective": "fm", "interpolation": "nearest"}}}, "['models']['f']['interpolation']"),
        # audit 29: both failed only in train, after prepare
        (
            {
                "models": {
                    "am": {"objective": "am", "interpolation": "spline", "coupling": "entropic", "entropic_reg": 1}
                }
            },
            "['models']['am']['coupling']",
        ),
        (
            {"train_processes": 3},
            "streams (3, one per process) does not divide batch_size (256)",
        ),
        ({"gpus": 1, "train_processes": 2}, "set one of them"),  # audit 65: train_processes was dropped in silence
        ({"external": {"mine": "m-{holdout}.npz"}}, "scored at held-out times, and holdout_times is empty"),
        ({"holdout_times": [0.5], "external": {"am": "m-{holdout}.npz"}}, "['am'] are named like models or baselines"),
        ({"holdout_times": [0.5], "external": {"x": "m-{holdout}.npz"}}, "external: ['m-0.5.npz'] do not exist"),
        # a model named like a baseline the config does not run is still the baseline to every reader (review)
        ({"models": {"copy_prev": {"objective": "am"}}}, "models ['copy_prev'] are named like baselines"),
        (  # a file source would read every time and cell in silence (audit 11)
            {"dataset": {"source": "npz", "path": "cells.npz", "times": [0.0, 0.3], "n_per_time": 100}},
            "dataset.n_per_time, dataset.times are read only by the simulate source",
        ),
    ],
)
def test_bad_config_is_refused_before_any_job(tmp_path, tiny_config, patch, message):
    config = {**tiny_config, **patch}
    result = snakemake(tmp_path, config)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (tmp_path / "results").exists(), "nothing may be written for a refused config"


@pytest.mark.parametrize(
    "simulator, model, expected",
    [
        # The slow set (90 s each): eAM's drift and uAM's growth are checked in test_family, their integrators in
        # test_integrate, and evaluate's reading of weighted trajectories in test_action_audit.
        pytest.param(
            "ornstein_uhlenbeck",
            {"objective": "eam", "sigma": 1.0, "coupling": "entropic"},
            "drift_rel_error",
            marks=pytest.mark.slow,
        ),  # fmt: skip
        pytest.param(
            # units: data, as config/growth_uam.yaml: the simulator's growth rate is growth * s in its own units
            "growing_gaussian",
            {"objective": "uam", "growth": 0.5, "units": "data"},
            "growth_rel_error",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_entropic_and_unbalanced_variants_run_through_the_pipeline(tmp_path, tiny_config, simulator, model, expected,
                                                                  fresh_tracker):  # fmt: skip
    fresh_tracker(tmp_path / "results")
    config = copy.deepcopy(tiny_config)
    config["dataset"]["simulator"] = simulator
    config["models"] = {"m": {**tiny_config["models"]["am"], **model}}
    result = snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-4000:]
    out = run_dir(tmp_path, config, "m")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["objective"] == model["objective"]
    # A few hundred steps: far from converged, but clearly better than an untrained field (error ~1). Measured
    # (seeds 0-3): eAM drift 0.19, 0.21, 0.19, 0.18; uAM growth 0.16, 0.14, 0.19, 0.16. 0.3 is 40 % above the worst.
    assert 0 <= metrics[expected] < 0.3
    traj = read_trajectories(out / "trajectories.zarr")
    if model["objective"] == "uam":
        assert "weight" in traj and set(metrics["mass_rel_error"]) == {"0.5", "1"}
        assert metrics["mass_rel_error_mean"] < 0.3
    log = (tmp_path / "results" / "tiny" / "logs" / "integrate_none_m_0.log").read_text()
    assert ("(sde)" if model["objective"] == "eam" else "(weighted)") in log


def test_leave_one_time_out_with_seeds_and_baselines(tmp_path, tiny_config, mlflow_server):
    """One store and one model per held-out time and seed; baselines and models scored in one table, tracked on a
    real MLflow server."""
    config = copy.deepcopy(tiny_config)
    config["dataset"]["times"] = [0.0, 0.25, 0.5, 0.75, 1.0]
    config["holdout_times"] = [0.25, 0.5]
    config["seeds"] = [0, 1]
    config["models"]["am"] |= {"steps": 200, "interpolation": "spline", "tension": "auto"}
    # Each held-out time is a split of its own: its store, a model per seed, its baselines (planned here; the run
    # below holds out one time, which keeps this test's Snakemake jobs, each 10 s of start-up, to a dozen).
    plan = snakemake(tmp_path / "plan", config, "--dry-run")
    text = plan.stdout + plan.stderr
    assert plan.returncode == 0, text[-3000:]
    for holdout in ("0.25", "0.5"):
        assert f"results/tiny/holdout-{holdout}/data/store.zarr" in text
        assert all(f"results/tiny/holdout-{holdout}/am/seed-{s}/model.pt" in text for s in (0, 1))
    config["holdout_times"] = [0.5]
    # Audit 68: another method's prediction (here a fresh sample of the true law, in the input's units) is scored
    # and tabled beside the baselines
    from amcore.data.simulate import make_simulator, simulate_snapshots

    truth, _ = simulate_snapshots(make_simulator("gaussian_path", {}), [0.5], config["dataset"]["n_per_time"], 7)
    np.savez(tmp_path / "mine-0.5.npz", X=truth)
    config["external"] = {"mine": "mine-{holdout}.npz"}
    result = snakemake(tmp_path, config, env=cli_env(MLFLOW_TRACKING_URI=mlflow_server.uri))
    assert result.returncode == 0, result.stderr[-4000:]
    assert not (tmp_path / "results" / "mlflow.db").exists(), "MLFLOW_TRACKING_URI must win over the default"
    client = MlflowClient(mlflow_server.uri)
    runs = client.search_runs([client.get_experiment_by_name("amcore").experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("amcore.kind") == "pipeline"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    stages = sorted(r.data.tags["amcore.stage"] for r in children)
    assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in children)
    assert stages == sorted(["prepare", "train", "train", "integrate", "integrate", "evaluate", "baseline",
                             "baseline", "baseline", "external", "score", "export"]), stages  # fmt: skip
    out = tmp_path / "results" / "tiny"
    snaps = read_store(out / "holdout-0.5" / "data" / "store.zarr")
    assert snaps.attrs["holdout_times"] == [0.5]  # recorded, so training drops it
    traj = read_trajectories(run_dir(tmp_path, config, holdout="0.5", seed=1) / "trajectories.zarr")
    # All cells of the previous time were pushed to the held-out time.
    assert traj["holdout_x"].shape == (config["dataset"]["n_per_time"], 2)
    table = pd.read_csv(out / "table.csv", keep_default_na=False, dtype={"holdout": str, "seed": str})
    w1 = table[table["metric"] == "w1"]
    assert sorted(set(zip(w1["method"], w1["holdout"], w1["seed"], strict=True))) == sorted(
        [("am", "0.5", s) for s in ("0", "1")]
        + [(b, "0.5", "") for b in ("copy_prev", "ot_displacement", "spline_path", "mine")]
    )
    # No effective_size: every prediction's particles weigh the same (equal counts: the displacement plan is a
    # permutation).
    pairs = {f"w1_held_out_var:{m}" for m in ("am", "copy_prev", "ot_displacement", "spline_path", "mine")}
    every = {
        *DISTANCES,
        "nonfinite",
        "escaped",
        "course_excess",
        "course_escaped",
        "velocity_rel_error",
        *pairs,
        "predicted_cells",
    }
    assert set(table["metric"]) == every
    assert (table[table["metric"] == "nonfinite"]["value"] == 0).all()
    # Score's push from the first time flags every seed's held-out rows (here nothing to flag), with the number
    # evaluate gives the first seed's (the same push and subsamples).
    course = table[table["metric"] == "course_excess"]
    assert list(zip(course["method"], course["seed"], strict=True)) == [("am", "0"), ("am", "1")]
    assert (course["value"] < 1).all()
    evaluated = json.loads((run_dir(tmp_path, config, holdout="0.5", seed=0) / "metrics.json").read_text())
    assert course["value"].iloc[0] == pytest.approx(evaluated["course"]["excess"], rel=1e-12)
    # So does the learned field's error against the truth (audit 27: a held-out table had none).
    errors = table[table["metric"] == "velocity_rel_error"]
    assert list(errors["seed"]) == ["0", "1"] and (errors["value"] < 1).all()
    assert errors["value"].iloc[0] == pytest.approx(evaluated["velocity_rel_error"], rel=1e-12)
    value = {(m, h): v for m, h, v in zip(w1["method"], w1["holdout"], w1["value"], strict=True)}
    # The cloud moves: not moving at all is far worse than interpolating between the bracketing times.
    assert value[("copy_prev", "0.5")] > 2 * value[("ot_displacement", "0.5")]
    assert value[("mine", "0.5")] < value[("copy_prev", "0.5")] / 2  # a sample of the truth, not moved off it
    markdown = (out / "table.md").read_text()
    assert "### w1" in markdown and "| am |" in markdown and " ± " in markdown
    assert "the sampling of the held-out cells" in markdown  # the paired intervals hold it
    # Audit 28: the subsample sizes the distances were computed with, and each prediction's size, are in the table
    assert "(at most `evaluate.max_exact_size` = 2000 cells per side)" in markdown
    cells = table[table["metric"] == "predicted_cells"]
    assert (cells["value"] == config["dataset"]["n_per_time"]).all() and len(cells) == 6  # 2 seeds, 4 others
    assert (out / "predictions.png").read_bytes()[:4] == b"\x89PNG"
    # Settings a job never reads rerun nothing of it (audit 23): score reads no mmd_paper_alphas, copy_prev solves
    # no OT (of the three baselines, two rerun); evaluate does rerun.
    changed = copy.deepcopy(config)
    changed["evaluate"] = changed.get("evaluate", {}) | {"mmd_paper_alphas": [1.0]}
    changed["baseline_ot_max_size"] = 100
    plan = snakemake(tmp_path, changed, "--dry-run").stdout
    assert "rule evaluate:" in plan and plan.count("rule baseline:") == 2, plan[-3000:]
    assert "rule score:" in plan  # after the OT baselines' new predictions, whose numbers move
    changed["baseline_ot_max_size"] = config.get("baseline_ot_max_size", 5000)
    plan = snakemake(tmp_path, changed, "--dry-run").stdout
    assert "rule evaluate:" in plan and "rule score:" not in plan and "rule baseline:" not in plan, plan[-3000:]
    # A store deleted by hand is made again (audit 30: "Nothing to be done", the store left missing).
    store = out / "holdout-0.5" / "data" / "store.zarr"
    store.rename(store.with_name("moved.zarr"))
    plan = snakemake(tmp_path, config, "--dry-run").stdout
    store.with_name("moved.zarr").rename(store)
    assert "rule prepare:" in plan, plan[-3000:]
    # Audit 74: the external prediction replaced by other cells with an older time (cp -p) kept its old score
    mine = tmp_path / "mine-0.5.npz"
    stamp = mine.stat().st_mtime_ns
    np.savez(mine, X=truth + 0.5)
    os.utime(mine, ns=(stamp - 10**9, stamp - 10**9))
    plan = snakemake(tmp_path, config, "--dry-run").stdout
    np.savez(mine, X=truth)
    os.utime(mine, ns=(stamp, stamp))
    assert "rule external:" in plan and "rule score:" in plan, plan[-3000:]
    check_a_nan_model_is_marked_failed(tmp_path, config)


def check_a_nan_model_is_marked_failed(workdir: Path, config: dict) -> None:
    """The trap: POT scores a NaN prediction W1 = 0, the best in the table. Poison one trained model (held-out
    0.5, seed 0) and rerun: Snakemake redoes its integrate, evaluate and score, the table and the export, and the
    run is reported as failed everywhere while the other seed and the baselines keep their numbers."""
    import torch

    checkpoint = run_dir(workdir, config, holdout="0.5") / "model.pt"
    payload = torch.load(checkpoint, weights_only=True)
    for weights in (payload["ema"], payload["model"]):
        next(iter(weights.values())).fill_(float("nan"))
    torch.save(payload, checkpoint)
    result = snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-4000:]
    said = result.stdout + result.stderr  # the jobs' output, as the user sees it
    assert "amcore score am (seed 0): FAILED: 300 of 300 predicted cells are NaN or inf" in said
    assert "amcore table: 1 prediction(s) FAILED" in said
    metrics = json.loads((checkpoint.parent / "metrics.json").read_text())
    assert metrics["nonfinite_max"] == 300 and math.isnan(metrics["w1_mean"]) and math.isnan(metrics["w1"]["1"])
    out = workdir / "results" / "tiny"
    table = pd.read_csv(out / "table.csv", dtype={"holdout": str, "seed": str})
    rows = table.set_index(["method", "holdout", "seed", "metric"])["value"]
    assert rows[("am", "0.5", "0", "nonfinite")] == 300
    assert all(math.isnan(rows[("am", "0.5", "0", m)]) for m in DISTANCES)
    assert rows[("am", "0.5", "1", "nonfinite")] == 0 and rows[("am", "0.5", "1", "w1")] > 0
    baseline = table[(table["method"] == "copy_prev") & (table["metric"] == "w1")]["value"]
    assert (baseline > 0).all() and len(baseline) == 1  # the baselines are still scored
    markdown = (out / "table.md").read_text()
    assert "- am, held-out 0.5, seed 0: 300 cells" in markdown
    am_w1 = markdown.split("### w1")[1].split("| am |")[1].splitlines()[0]
    assert am_w1.count("FAILED (1 of 2 seeds)") == 1  # at t = 0.5, the one held-out time: never seed 1 alone
    assert "| copy_prev | FAILED |" in markdown.split("paired by seed")[1]  # no interval over the seed left


def test_splits_of_an_earlier_config_of_the_same_experiment_are_named(tmp_path, tiny_config):
    """A second config of one experiment name rewrote its table from its own splits only, and the held-out rows of
    the first vanished from it in silence (audit 10); the run now names the splits it leaves out."""
    (tmp_path / "results" / tiny_config["experiment"] / "holdout-7.25").mkdir(parents=True)
    result = snakemake(tmp_path, tiny_config, "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "holds holdout-7.25 from an earlier config of experiment" in result.stderr
    assert "holdout-none from an earlier" not in result.stderr


def test_yaml_keys_of_numbers_and_text_reach_the_jobs_as_json(tmp_path, tiny_config):
    """Audit 34: `0.1:` beside `'2.1':` (a number and a text key) crashed the config's JSON before any job; keys
    that are one in JSON (0.5 and '0.5') are refused, never merged."""
    config = copy.deepcopy(tiny_config)
    config["dataset"]["time_map"] = {0.5: 1.0, "0.5": 2.0}
    result = snakemake(tmp_path, config, "--dry-run")
    said = result.stdout + result.stderr
    assert result.returncode != 0 and "dataset.time_map: keys " in said and "are one key in JSON" in said, said
    assert "0.5 and '0.5'" in said or "'0.5' and 0.5" in said, said
    config["dataset"]["time_map"] = {0.5: 1.0, "day1": 2.0}  # mixed, distinct: on to the jobs (prepare judges it)
    result = snakemake(tmp_path, config, "--dry-run")
    said = result.stdout + result.stderr
    assert result.returncode == 0 and "TypeError" not in said, said[-3000:]
