"""What the pipeline reads decides what it reruns: a data file changed in place reruns prepare (never a stale store
reported as the new data's); a config that names a file for the simulator, or a simulated time by the number a
user would type, means what it says."""

from __future__ import annotations

import json
import os
import re
import shlex
import time

import numpy as np
import pytest
from conftest import snakemake


def _npz(path, shift: float) -> None:
    labels = np.repeat([0.0, 1.0, 2.0], 30)
    x = np.random.default_rng(0).normal(size=(90, 2)) + shift * labels[:, None]
    np.savez(path, X=x, t=labels)


def test_a_data_file_changed_in_place_reruns_prepare(tmp_path, tiny_config, fresh_tracker):
    fresh_tracker(tmp_path / "results")
    _npz(tmp_path / "cells.npz", 1.0)
    config = {**tiny_config, "dataset": {"source": "npz", "path": "cells.npz"}}
    done = snakemake(tmp_path, config, "--until", "prepare")
    assert done.returncode == 0, done.stderr[-3000:]
    again = snakemake(tmp_path, config, "-n", "--until", "prepare")
    assert again.returncode == 0 and "rule prepare" not in again.stdout + again.stderr
    time.sleep(1.1)  # file systems with one-second mtimes
    _npz(tmp_path / "cells.npz", 3.0)
    os.utime(tmp_path / "cells.npz")
    plan = snakemake(tmp_path, config, "-n", "--until", "prepare")
    assert plan.returncode == 0 and "rule prepare" in plan.stdout + plan.stderr


@pytest.mark.slow  # in `pytest -m slow`: CI's suite stays under 20 minutes (1,190 s here)
def test_a_data_file_replaced_by_an_older_one_reruns_prepare(tmp_path, tiny_config, fresh_tracker):
    """cp -p or rsync -t keep the source's older mtime: Snakemake saw no newer input and kept the old store beside
    the new cells (audit 14). The file's size and mtime are a parameter of prepare."""
    fresh_tracker(tmp_path / "results")
    _npz(tmp_path / "cells.npz", 1.0)
    config = {**tiny_config, "dataset": {"source": "npz", "path": "cells.npz"}}
    done = snakemake(tmp_path, config, "--until", "prepare")
    assert done.returncode == 0, done.stderr[-3000:]
    _npz(tmp_path / "cells.npz", 3.0)
    os.utime(tmp_path / "cells.npz", (1_600_000_000, 1_600_000_000))  # 2020: older than the store
    plan = snakemake(tmp_path, config, "-n", "--until", "prepare")
    assert plan.returncode == 0 and "rule prepare" in plan.stdout + plan.stderr


def test_a_path_with_the_simulator_and_a_typed_simulated_time(tmp_path, tiny_config, fresh_tracker):
    config = {**tiny_config, "data": "cells.npz"}  # the default source simulates: the file would be ignored
    refused = snakemake(tmp_path / "a", config, "-n")
    assert refused.returncode != 0 and "is read only from a file source" in refused.stdout + refused.stderr
    # n_times 11 from 0 to 1: the time 0.3 a user types is the time simulated (linspace gives 0.30000000000000004)
    dataset = {**tiny_config["dataset"], "times": [0.0, 1.0], "n_times": 11, "n_per_time": 20}
    config = {**tiny_config, "dataset": dataset, "holdout_times": [0.3]}
    fresh_tracker(tmp_path / "b" / "results")
    done = snakemake(tmp_path / "b", config, "--until", "prepare")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "b" / "results" / "tiny" / "holdout-0.3" / "data" / "store.zarr").is_dir()


def test_a_config_typo_is_named_in_one_line_not_a_schema_dump(tmp_path, tiny_config):
    config = {**tiny_config, "dataset": {**tiny_config["dataset"], "x_kye": "X"}}
    result = snakemake(tmp_path, config, "-n")
    said = result.stdout + result.stderr
    assert (
        result.returncode != 0 and "['dataset']: Additional properties are not allowed ('x_kye' was unexpected)" in said
    )
    assert len(said.splitlines()) < 40  # was 2,400 lines of schema
    # audit 90: the key meant, and the file the typo is in
    assert "('x_kye': did you mean 'x_key'?)" in said and f"the config ({tmp_path / 'config.yaml'})" in said, said


def test_one_model_integrates_its_own_way(tmp_path, tiny_config):
    """integrate.models: AM pushed by dopri5 with its own steps beside an eAM model that keeps auto (its SDE); a name
    that is no model of the config is refused before any job."""
    eam = {"objective": "eam", "sigma": 0.1, "steps": 50}
    models = {"am": tiny_config["models"]["am"], "noisy": eam}
    integrate = {"steps_per_interval": 5, "models": {"am": {"method": "dopri5", "steps_per_interval": 3}}}
    config = {**tiny_config, "models": models, "integrate": integrate}
    plan = snakemake(tmp_path / "a", config, "-n", "-p", "--until", "integrate")
    assert plan.returncode == 0, plan.stderr[-3000:]
    commands = [shlex.split(line) for line in plan.stdout.splitlines() if "amcore integrate" in line]
    settings = {("/am/" in " ".join(words)): json.loads(words[words.index("--params") + 1]) for words in commands}
    # the seed only where an SDE draws noise with it: a change of it reran dopri5 to the same numbers
    assert settings[True] == {"steps_per_interval": 3, "method": "dopri5", "batch_size": 65536}
    assert settings[False] == {"steps_per_interval": 5, "method": "auto", "seed": 0, "batch_size": 65536}
    config["integrate"]["models"]["amm"] = {"method": "rk4"}
    refused = snakemake(tmp_path / "b", config, "-n")
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "integrate.models: ['amm'] are not models of this config" in said


def test_a_number_where_a_list_belongs_gets_the_schema_s_one_line(tmp_path, tiny_config):
    """`--config seeds=3` (a number, not a list) is named by the schema check, not a TypeError of the list
    coercion before it; `--config 'seeds=[0, 1]'` (text items, as Snakemake reads lists) counts as numbers."""
    config = {**tiny_config, "seeds": 3}
    plan = snakemake(tmp_path / "a", config, "-n")
    said = plan.stdout + plan.stderr
    assert plan.returncode != 0 and "['seeds']: 3 is not of type 'array'" in said, said[-2000:]
    plan = snakemake(tmp_path / "b", tiny_config, "-n", "--config", "seeds=[0, 1]")
    assert plan.returncode == 0 and "seed-1/model.pt" in plan.stdout, plan.stderr[-2000:]


@pytest.mark.slow  # in `pytest -m slow`: CI's suite stays under 20 minutes (1,190 s here)
def test_more_threads_retrain_nothing_and_reach_the_training(tmp_path, tiny_config, fresh_tracker):
    """threads were a parameter of train: asking for two retrained every model to the same numbers (audit 14).
    They go as Snakemake's {threads}, each process its share."""
    tiny_config["models"]["am"]["steps"] = 20
    fresh_tracker(tmp_path / "results")
    done = snakemake(tmp_path, tiny_config, "--until", "train")
    assert done.returncode == 0, done.stderr[-3000:]
    plan = snakemake(tmp_path, {**tiny_config, "threads": 2}, "-n", "--until", "train")
    assert plan.returncode == 0 and "rule train" not in plan.stdout + plan.stderr
    forced = snakemake(tmp_path, {**tiny_config, "threads": 2}, "-n", "-p", "--forcerun", "train", "--until", "train")
    assert "--threads 2 " in forced.stdout + forced.stderr


def test_another_simulator_than_the_default_s_takes_only_the_params_written(tmp_path):
    """config/config.yaml lays gaussian_path's params.dim under every config: run without
    --replace-workflow-config, every hydrogen config stopped at prepare on a key nobody wrote (audit 17)."""
    import subprocess

    import yaml
    from conftest import BIN, ROOT, cli_env

    config = yaml.safe_load((ROOT / "config" / "hydrogen-short.yaml").read_text())
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(config))
    cmd = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "h.yaml"), "-n", "-p", "--until", "prepare"]  # fmt: skip
    plan = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    command = shlex.split(plan.stdout.split("Shell command: ")[1].splitlines()[0])
    dataset = json.loads(command[command.index("--dataset") + 1])
    assert dataset["simulator"] == "hydrogen" and dataset["params"] == config["dataset"]["params"]


def test_a_config_laid_over_the_default_runs_the_models_it_names_and_no_other(tmp_path):
    """Audit 94: laid over config/config.yaml (`make run CONFIG=my.yaml`), a file's models ran beside the default's
    am and otcfm (twice the trainings), the table paired them all with that am, and a model named am took its 6,000
    steps. The file's models now run alone; a file naming none runs the default's."""
    import subprocess

    import yaml
    from conftest import BIN, ROOT, cli_env

    def plan(config: dict) -> list[tuple[str, dict]]:
        (tmp_path / "my.yaml").write_text(yaml.safe_dump(config))
        cmd = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
               "--configfile", str(tmp_path / "my.yaml"), "-n", "-p", "--until", "train"]  # fmt: skip
        done = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        trained = []
        for line in done.stdout.splitlines():
            if "amcore train" in line:
                words = shlex.split(line.partition("&&")[2])
                model = words[words.index("--checkpoint") + 1].split("/")[-3]  # results/<exp>/<split>/<model>/...
                trained.append((model, json.loads(words[words.index("--params") + 1])))
        return sorted(trained)

    named = plan({"experiment": "mine", "models": {"am": {"objective": "am"}, "mine": {"objective": "fm"}}})
    assert named == [("am", {"objective": "am", "seed": 0}), ("mine", {"objective": "fm", "seed": 0})]
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["models"]
    assert [name for name, _ in plan({"experiment": "mine"})] == sorted(default)


@pytest.mark.parametrize(
    ("models", "integrate", "said"),
    [({"am": {"objective": "am", "coupling": "entropic"}}, {}, "models.am: coupling 'entropic' needs entropic_reg"),
     ({"am": {"objective": "am", "interpolation": "spline", "stride": 2}}, {}, "models.am: stride (got 2)"),
     ({"u": {"objective": "uam"}}, {"method": "rk4"}, "models.u: method 'rk4' would push this uam model without"),
     ({"e": {"objective": "eam", "sigma": 0.5}}, {"models": {"e": {"method": "euler"}}}, "models.e: method 'euler'")],
)  # fmt: skip
def test_a_model_s_settings_are_refused_before_any_job(tmp_path, tiny_config, models, integrate, said):
    """Audit 17: the schema let them through; train refused them after prepare, integrate after every training."""
    config = {**tiny_config, "models": models, "integrate": {**tiny_config.get("integrate", {}), **integrate}}
    plan = snakemake(tmp_path, config, "-n")
    assert plan.returncode != 0 and said in plan.stdout + plan.stderr
    assert not (tmp_path / "results").exists()


def test_growth_auto_on_several_processes_is_refused_before_any_job(tmp_path, tiny_config):
    """Review 81: train refused it in its own job, after prepare had run."""
    config = {**tiny_config, "models": {"u": {"objective": "uam", "growth": "auto"}}, "train_processes": 2}
    plan = snakemake(tmp_path, config, "-n")
    assert plan.returncode != 0 and "growth 'auto' trains its candidates in one process, but train runs 2" in (
        plan.stdout + plan.stderr
    )
    assert not (tmp_path / "results").exists()


@pytest.mark.slow  # in `pytest -m slow`: CI's suite stays under 20 minutes (1,190 s here)
def test_a_held_out_time_typed_in_full_names_the_simulated_time(tmp_path, tiny_config, fresh_tracker):
    """n_times 4 from 0 to 1 simulates 0.333333333333 (12 digits); 1/3 typed in full passed the Snakefile's check and
    was refused by prepare (audit 17). The Snakefile now holds out the very time simulated, in every stage."""
    from amcore.data.store import read_store

    dataset = {**tiny_config["dataset"], "times": [0.0, 1.0], "n_times": 4, "n_per_time": 20}
    config = {**tiny_config, "dataset": dataset, "holdout_times": [1 / 3]}
    fresh_tracker(tmp_path / "results")
    done = snakemake(tmp_path, config, "--until", "prepare")
    assert done.returncode == 0, done.stderr[-3000:]
    store = tmp_path / "results" / "tiny" / "holdout-0.333333333333" / "data" / "store.zarr"
    assert read_store(store).attrs["holdout_times"] == [0.333333333333]


def test_settings_that_change_no_number_rerun_nothing(tmp_path, tiny_config, fresh_tracker):
    """Audit 17: preprocess.seed without PCA reran every job, integrate.seed with only RK4 pushes reran integrate
    and evaluate, evaluate.truth_samples on a file's data reran evaluate, all to the same numbers."""
    fresh_tracker(tmp_path / "results")
    _npz(tmp_path / "cells.npz", 1.0)
    tiny_config["models"]["am"]["steps"] = 20
    config = {**tiny_config, "dataset": {"source": "npz", "path": "cells.npz"}}
    done = snakemake(tmp_path, config, "--until", "evaluate")
    assert done.returncode == 0, done.stderr[-3000:]
    changed = {**config, "preprocess": {"seed": 7}, "integrate": {**config["integrate"], "seed": 7},
               "evaluate": {**config["evaluate"], "truth_samples": 900}}  # fmt: skip
    plan = snakemake(tmp_path, changed, "-n", "--until", "evaluate")
    assert plan.returncode == 0 and not re.search(r"^(local)?rule ", plan.stdout, re.M), plan.stdout[-2000:]
    with_pca = {**config, "preprocess": {"pca": 2, "seed": 7}}  # the SVD reads it: prepare and all after rerun
    assert "rule prepare" in snakemake(tmp_path, with_pca, "-n", "--until", "evaluate").stdout


def test_each_training_seed_draws_its_own_sde_noise(tmp_path, tiny_config):
    """Audit 70: every seed's SDE push drew the same kicks, so the table's spread over seeds held none of the noise's
    draws (sd 0.0066 over integrator seeds at one training seed)."""
    config = {**tiny_config, "seeds": [0, 1], "integrate": {**tiny_config["integrate"], "seed": 5},
              "models": {"e": {"objective": "eam", "sigma": 0.3, "steps": 20}}}  # fmt: skip
    plan = snakemake(tmp_path, config, "-n", "-p", "--until", "integrate")
    assert plan.returncode == 0, plan.stderr[-2000:]
    seeds = sorted(int(s) for s in re.findall(r"amcore integrate .*?\"seed\": (\d+)", plan.stdout))
    assert seeds == [5, 6], plan.stdout[-3000:]


def test_prepare_warns_of_the_same_particles_followed_from_frame_to_frame(tmp_path, capsys):
    """Audit 62: a simulation's frames of the same 400 particles, one held out: copy_prev 0.177 and eAM with the
    right noise 0.208, where an independent sample of the true law scored 0.246; nothing said the frames were one
    ensemble followed. Independent samples of one law (ratio about 1) are not named."""
    import numpy as np

    from amcore.cli import main

    rng = np.random.default_rng(0)
    particles, frames = rng.standard_normal((400, 3)), []
    for _ in range(4):
        frames.append(particles[rng.permutation(400)])
        particles = particles + 0.05 * rng.standard_normal(particles.shape)
    for name, x in (("followed", np.vstack(frames)), ("drawn", rng.standard_normal((1600, 3)))):
        np.savez(tmp_path / f"{name}.npz", X=x, t=np.repeat(np.arange(4.0), 400))
        spec = {"source": "npz", "path": str(tmp_path / f"{name}.npz")}
        assert main(["prepare", "--dataset", json.dumps(spec), "--out", str(tmp_path / f"{name}.zarr"),
                     "--summary", str(tmp_path / f"{name}.json")]) == 0  # fmt: skip
        said = capsys.readouterr().err
        assert ("the same particles followed from time to time?" in said) is (name == "followed"), said


def test_the_followed_particles_check_needs_a_hundred_cells_and_reads_wide_cells_on_their_axes():
    """Review 63: a 2-cell time among 300-cell ones, and 1-d samples of one law, read as followed particles (the
    distance ratio it used was too loose for so few); 1,000 features made its k-d tree slower than none."""
    import numpy as np

    from amcore import Snapshots
    from amcore.data.prepare import sampled_cell_checks

    rng = np.random.default_rng(1)
    for counts, dim in (([300, 2, 300], 2), ([200] * 20, 1)):
        labels = np.repeat(np.arange(float(len(counts))), counts)
        assert sampled_cell_checks(Snapshots.from_labels(rng.standard_normal((len(labels), dim)), labels))[
            "tracked_cells"
        ] == {}  # fmt: skip
    wide = rng.standard_normal((300, 1000))
    followed = np.vstack([wide, wide + 0.01 * rng.standard_normal(wide.shape)])
    checks = sampled_cell_checks(Snapshots.from_labels(followed, np.repeat([0.0, 1.0], 300)))
    assert checks["tracked_cells"]["0, 1"] > 0.95
