"""Paths reach the shell quoted, shell characters in results_dir are refused, held-out times are checked up front."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import ROOT, snakemake

SPACED = "my results"
# Every option of the amcore CLI that takes a path, and the rules whose commands must all show up in the plan.
PATH_OPTIONS = {
    "--out", "--summary", "--store", "--checkpoint", "--loss-csv", "--trajectories", "--metrics", "--plots",
    "--table", "--markdown", "--figure", "--predictions-figure", "--predictions-out",
}  # fmt: skip
RULES = {"prepare", "train", "integrate", "baseline", "score", "evaluate", "table", "export"}


def written(workdir: Path) -> list[str]:
    """Everything the run left in its working directory but the config and Snakemake's own state."""
    return sorted(
        str(p.relative_to(workdir))
        for p in workdir.rglob("*")
        if p.name != "config.yaml" and ".snakemake" not in p.relative_to(workdir).parts
    )


def test_results_dir_with_a_space_runs(tmp_path, tiny_config, fresh_tracker):
    config = {**tiny_config, "results_dir": SPACED}
    fresh_tracker(tmp_path / SPACED)
    result = snakemake(tmp_path, config, "--until", "prepare")
    assert result.returncode == 0, result.stderr[-4000:]
    data = tmp_path / SPACED / "tiny" / "holdout-none" / "data"
    assert (data / "store.zarr" / "zarr.json").is_file() and (data / "summary.json").is_file()
    assert (tmp_path / SPACED / "tiny" / "logs" / "prepare_none.log").is_file()
    # Nothing landed beside it under the halves of the split path ("my", "results/...").
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in (".snakemake", "config.yaml")) == [SPACED]


def test_every_command_quotes_its_paths(tmp_path, tiny_config):
    """The plan of every rule (a dry run prints each job's command): each path is one shell word."""
    config = copy.deepcopy(tiny_config) | {"results_dir": SPACED, "holdout_times": [0.25, 0.5]}
    config["dataset"]["times"] = [0.0, 0.25, 0.5, 0.75, 1.0]
    result = snakemake(tmp_path, config, "--dry-run", "--printshellcmds")
    assert result.returncode == 0, result.stderr[-4000:]
    # train first removes what an earlier model of its run left (rm -rf PATHS && amcore train ...)
    commands = re.findall(r"^Shell command: +((?:rm -rf .+? && +)?amcore .*)$", result.stdout + result.stderr,
                          flags=re.MULTILINE)  # fmt: skip
    seen = set()
    for command in commands:
        words = shlex.split(command)
        rule = words[words.index("amcore") + 1]
        seen.add(rule)
        assert "my" not in words, command
        paths = [words[i + 1] for i, word in enumerate(words[:-1]) if word in PATH_OPTIONS]
        if words[0] == "rm":
            paths += words[2 : words.index("&&")]
        paths.append(words[words.index("tee") + 1])
        if rule == "table":
            results = words[words.index("--results") + 1 : words.index("--table")]
            assert len(results) == 2 and "--predictions-figure" in words, command
            paths += results
        assert len(paths) >= 3 and all(p.startswith(f"{SPACED}/tiny/") for p in paths), command
    assert seen == RULES


@pytest.mark.parametrize(
    "results_dir, ok",
    [("results", True), (SPACED, True), ("/abs/path/run-2_b.x", True), ("../out", True),
     ("out$(touch pwned)", False), ("out`touch pwned`", False), ("out;touch pwned", False), ("a'b", False),
     ('a"b', False), ("a|b", False), ("a&b", False), ("a{b}", False), ("a\tb", False), ("out\n", False),
     ("a\nb", False), ("-out", False), ("", False)],
)  # fmt: skip
def test_results_dir_pattern(results_dir, ok):
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    validator = jsonschema.Draft202012Validator(schema["properties"]["results_dir"])
    assert validator.is_valid(results_dir) == ok


def test_shell_characters_in_results_dir_are_refused(tmp_path, tiny_config):
    """Before the pattern, this run created `pwned` (the paths reached the shell unquoted)."""
    result = snakemake(tmp_path, {**tiny_config, "results_dir": "out$(touch pwned)"}, "--until", "prepare")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "results_dir" in output and "does not match" in output, output[-3000:]
    assert not list(tmp_path.rglob("pwned")), "the shell ran a command from the config"
    assert written(tmp_path) == [], "no job may run for a refused config"


@pytest.mark.parametrize("holdout", [0.0, 1.0, 0.3])
def test_holdout_times_must_be_interior_simulated_times(tmp_path, tiny_config, holdout):
    """First, last or unobserved: refused with the key named, before any job ([0.0, 0.5, 1.0] observed)."""
    result = snakemake(tmp_path, {**tiny_config, "holdout_times": [0.5, holdout]})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"holdout_times: [{holdout}] are not interior observed times" in output, output[-3000:]
    assert written(tmp_path) == [], "no job may run for a refused config"


def test_a_reference_that_is_not_a_model_is_refused(tmp_path, tiny_config):
    """The table pairs every method against the reference: a name no model has would pair against nothing."""
    result = snakemake(tmp_path, {**tiny_config, "reference": "uam"})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "reference: 'uam' is not one of the models" in output, output[-3000:]
    assert written(tmp_path) == [], "no job may run for a refused config"


def test_without_a_model_named_am_the_table_pairs_against_the_first(tmp_path, tiny_config):
    """Audit 82: the default reference am, where no model had that name, left the paired section out in silence."""
    models = {"mine": tiny_config["models"]["am"], "flow": {"objective": "fm", "steps": 10}}
    result = snakemake(tmp_path, {**tiny_config, "models": models}, "--dry-run", "--printshellcmds")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "--reference mine" in result.stdout, result.stdout[-3000:]


def test_an_interior_holdout_time_is_planned(tmp_path, tiny_config):
    result = snakemake(tmp_path, {**tiny_config, "holdout_times": [0.5]}, "--dry-run")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "holdout-0.5" in result.stdout + result.stderr
