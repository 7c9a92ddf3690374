# amcore: Action Matching on time-indexed snapshots. configfile, validate, includes and `rule all` live
# here: Snakemake drops a default target set in an included file.
import copy
import difflib
import functools
import hashlib
import json
import math
import os
import re
import shlex
import sys
from pathlib import Path

import yaml

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import ExecMode
from snakemake.utils import min_version, validate

min_version("9.0")

CONFIG_ALONE = "AMCORE_CONFIG_ALONE"  # "1": the run read its config file alone, without config/config.yaml


# The repository's default, wherever --directory points: a path relative to the working directory was skipped in
# silence outside the repository, or read from a run directory's own copy.
configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


# --replace-workflow-config never reaches the jobs an executor plugin starts (SLURM's get --configfiles only): each
# laid config/config.yaml under the user's file again and trained other settings than the run had planned (audit
# 65: 6,000 steps where the file gave none). The run's choice travels in the environment, which sbatch passes on.
if workflow.exec_mode == ExecMode.DEFAULT:
    os.environ[CONFIG_ALONE] = "1" if workflow.config_settings.replace_workflow_config else "0"
elif CONFIG_ALONE not in os.environ:
    raise WorkflowError(
        f"this job did not inherit {CONFIG_ALONE} from the snakemake run that submitted it, so it cannot tell "
        "whether that run read its config file alone (--replace-workflow-config): let jobs inherit the "
        "environment (sbatch's default; unset SBATCH_EXPORT=NONE) or pass it with --envvars"
    )
elif os.environ[CONFIG_ALONE] == "1" and workflow.config_settings.overwrite_config:
    config.clear()
    config.update(copy.deepcopy(workflow.config_settings.overwrite_config))


envvars:
    CONFIG_ALONE,


# A config that names its models runs those alone. Laid over config/config.yaml key by key, the default's am and
# otcfm trained beside them, the table paired every method with that am, and a model of the same name took the
# default's steps (audit 94). The config's other sections still fill in from the default.
if "models" in (workflow.config_settings.overwrite_config or {}):
    config["models"] = copy.deepcopy(workflow.config_settings.overwrite_config["models"])


# `--config 'holdout_times=[1, 2]'` arrives as ['1', '2']: Snakemake reads a list on the command line with YAML's
# base loader, which keeps every item text. Numbers written so are numbers.
for _key in ("holdout_times", "seeds"):
    for _i, _item in enumerate(config[_key] if isinstance(config.get(_key), list) else []):
        if isinstance(_item, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", _item):
            config[_key][_i] = int(_item) if re.fullmatch(r"[-+]?\d+", _item) else float(_item)

try:
    validate(config, "workflow/schemas/config.schema.yaml")
except WorkflowError as err:  # the first line and where, not the 2,000-line schema dump that follows them
    _lines = str(err).splitlines()
    _what = next((line for line in _lines if line.startswith("ValidationError")), _lines[0])
    _where = next((line.rstrip(":") for line in _lines if line.startswith("On instance")), "On instance")
    _where = _where.removeprefix("On instance") or "top level"
    _what = _what.removeprefix("ValidationError: ")
    if _where.startswith("['holdout_times']") and "is not of type 'number'" in _what:
        _what += " (held-out times are the numbers the data's times are: with text labels, what dataset.time_map maps them to)"
    elif re.match(r"'[-+]?\d+(\.\d*)?[eE][-+]?\d+' is not of type", _what):  # YAML 1.1 reads 1e-3 as text
        _what += " (YAML reads a number like 1e-3 or 1.0e5 as text: write 1.0e-3 or 1.0e+5, a dot and a signed exponent)"
    elif "'sigma' is a required property" in _what or _where.endswith("['sigma']") and "minimum" in _what:
        _what += " (eam needs sigma > 0, the noise of dX = grad s dt + sigma dW: docs/training.md, eAM's noise)"
    elif re.search(r"was expected|should not be valid", _what) and any(
        "['then']" in line for line in _lines if line.startswith("Failed validating")
    ):
        _what += " (a setting read only with another objective, interpolation or implementation: its description in the schema says which)"
        _path = re.findall(r"\['([^']*)'\]", _where)
        if len(_path) == 3 and _path[0] == "models":  # a model's: train's own words (audit 94: 'sigma: 0 was expected')
            from amcore.training.config import TrainConfig

            try:
                TrainConfig.from_params(config["models"][_path[1]])
            except (TypeError, ValueError) as _err:  # InputError is a ValueError
                _what = str(_err)
    elif _what.startswith("Additional properties are not allowed") and (
        _unexpected := re.findall(r"'([^']+)'", _what.partition("(")[2])
    ):  # audit 90: a typo got no suggestion
        # every property name the schema defines, at any depth
        _stack, _known = [yaml.safe_load(Path(workflow.basedir, "workflow/schemas/config.schema.yaml").read_text())], set()
        while _stack:
            _node = _stack.pop()
            if isinstance(_node, dict):
                _known |= set(_node["properties"]) if isinstance(_node.get("properties"), dict) else set()
                _stack += list(_node.values())
            elif isinstance(_node, list):
                _stack += _node
        _known = sorted(_known)
        _meant = [f"{key!r}: did you mean {close[0]!r}?" for key in _unexpected
                  if (close := difflib.get_close_matches(key, _known, n=1))]  # fmt: skip
        _what += f" ({'; '.join(_meant)})" if _meant else ""
    _files = ", ".join(str(path) for path in workflow.config_settings.configfiles or []) or "config/config.yaml"
    raise WorkflowError(
        f"the config ({_files}) does not fit workflow/schemas/config.schema.yaml: {_where}: {_what} "
        "(docs/configuration.md lists every key)"
    ) from None

# Held-out times are checked against the simulated times before any job: an end time has no previous (or next)
# observed time to predict it from. The times of the user's data are checked by `amcore prepare`.
if config["dataset"]["source"] == "simulate":
    from amcore.data.times import simulated_times

    _times = sorted(simulated_times(config["dataset"]))
    _bad = [t for t in config["holdout_times"] if not any(math.isclose(float(t), s) for s in _times[1:-1])]
    if _bad:
        raise ValueError(
            f"holdout_times: {_bad} are not interior observed times of dataset.times {_times}: a held-out time must "
            "be one of the simulated times, neither the first nor the last"
        )
    # Each held-out time as the very time simulated: 1/3 typed in full names the 0.333333333333 that n_times makes,
    # which prepare and every later stage compare with exactly (audit 17: it passed here and was refused there).
    config["holdout_times"] = [next(s for s in _times if math.isclose(float(t), s)) for t in config["holdout_times"]]

if config.get("data"):
    config["dataset"]["path"] = config["data"]  # `--config data=PATH` runs the same protocol on other data
# With a file source the simulator's keys are ignored: those config/config.yaml lays under every config silently,
# those the user wrote (times to keep, cells to draw) never.
from snakemake.common.configfile import load_configfile

_given = [(str(path), (load_configfile(str(path)) or {}).get("dataset") or {})
          for path in workflow.config_settings.configfiles or []]  # fmt: skip
_given.append(("--config", (workflow.config_settings.config or {}).get("dataset") or {}))
# Another simulator than config/config.yaml's takes only the params the user wrote: the default's (gaussian_path's
# dim) stopped every hydrogen config at prepare with a key nobody had written (audit 17).
_default = (load_configfile(str(Path(workflow.basedir) / "config" / "config.yaml")) or {}).get("dataset") or {}
if config["dataset"]["source"] == "simulate" and config["dataset"].get("simulator") != _default.get("simulator"):
    _written = {key for _, _dataset in _given for key in (_dataset.get("params") or {})}
    config["dataset"]["params"] = {k: v for k, v in (config["dataset"].get("params") or {}).items() if k in _written}
if config["dataset"]["source"] != "simulate":
    for _where, _dataset in _given:
        _bad = sorted(k for k in ("simulator", "params", "times", "n_times", "n_per_time") if _dataset.get(k) is not None)
        if _bad and _dataset.get("source", config["dataset"]["source"]) != "simulate":
            raise ValueError(
                f"{_where}: dataset.{', dataset.'.join(_bad)} are read only by the simulate source; the source "
                f"{config['dataset']['source']!r} reads every time and cell of the file: leave them out (to use fewer "
                "times or cells, write a file of those; holdout_times leaves a time out of training)"
            )
    for _key in ("simulator", "params", "times", "n_times", "n_per_time"):  # what config/config.yaml laid under
        config["dataset"].pop(_key, None)
if config["dataset"]["source"] == "simulate" and config["dataset"].get("path"):
    raise ValueError(
        f"dataset.path (or data) {config['dataset']['path']!r} is read only from a file source: the source is "
        "'simulate'; set dataset.source to the file's format (npz, h5ad, csv, ...)"
    )

RESULTS = config["results_dir"]
OUT = f"{RESULTS}/{config['experiment']}"
MODELS = sorted(config["models"])
SEEDS = [str(seed) for seed in config["seeds"]]
# Leave one time out: one prepared store and one set of models per held-out time; "none" trains on all.
# Labels read back as the very time (repr, not :g, whose 6 digits turn 1.2345678 into a time that is not there).
HOLDOUTS = [repr(float(t)).removesuffix(".0") for t in config["holdout_times"]] or ["none"]
BASELINES = config["baselines"] if config["holdout_times"] else []
from amcore.choices import BASELINES as ALL_BASELINES

if set(MODELS) & set(ALL_BASELINES):  # one named so read as the baseline wherever tables look for it (review)
    raise ValueError(f"models {sorted(set(MODELS) & set(ALL_BASELINES))} are named like baselines; rename them")
EXTERNAL = config["external"] if config["holdout_times"] else {}
if config["external"] and not config["holdout_times"]:
    raise ValueError("external: other methods' predictions are scored at held-out times, and holdout_times is empty")
if _clash := sorted(set(EXTERNAL) & (set(MODELS) | set(ALL_BASELINES))):
    raise ValueError(f"external: {_clash} are named like models or baselines; rename them")
if _one := [name for name, path in EXTERNAL.items() if "{holdout}" not in path and len(HOLDOUTS) > 1]:
    raise ValueError(f"external: {_one} name no {{holdout}} in their path: one file would stand for every held-out "
                     f"time {HOLDOUTS}")  # fmt: skip
# Before any job: a path changed to a missing file kept the old table in silence (audit 74: nothing to be done)
_wanted = [path.replace("{holdout}", h) for path in EXTERNAL.values() for h in HOLDOUTS]
if _missing := [path for path in _wanted if not Path(path).exists()]:
    raise ValueError(f"external: {_missing[:5]} do not exist (a relative path is read from the run's folder, "
                     f"{Path.cwd()})")  # fmt: skip
_turned = [m for m in MODELS if config["models"][m].get("velocity_weight", 0) != 0]
_turned += ["velocity_path"] if "velocity_path" in BASELINES else []
if _turned and not config["dataset"].get("v_key"):
    raise ValueError(
        f"{', '.join(_turned)} turn the path towards the cells' measured velocities, and dataset.v_key names none: "
        "name the array that holds them (an npz key, an h5ad layers/<name> or obsm/<name>), or set velocity_weight 0 "
        "and leave out the velocity_path baseline"
    )
if set(config["integrate"]["models"]) - set(MODELS):
    raise ValueError(
        f"integrate.models: {sorted(set(config['integrate']['models']) - set(MODELS))} are not models of this "
        f"config (they are {MODELS})"
    )
# Every model's settings as amcore train and integrate will read them, before any job: train refused a combination
# the schema let through only once prepare had run, integrate a method only after every training (audit 17).
from amcore.errors import InputError
from amcore.choices import integrator
from amcore.training.config import TrainConfig

# One training's processes: a GPU each, else train_processes. A profile's set-resources (profiles/slurm: train's
# gpu) decides the job's GPUs and so the launcher: a config that says otherwise is refused, never tagged as run
# (audit 35: `gpus: 2` under the SLURM profile trained on one GPU, tagged as two processes).
if config["gpus"] > 0 and config["train_processes"] > 1:  # audit 65: train_processes was dropped in silence
    raise ValueError(
        f"gpus: {config['gpus']} and train_processes: {config['train_processes']}: a training runs one process per "
        "GPU when gpus is set, and train_processes CPU processes otherwise; set one of them"
    )
_site = (workflow.resource_settings.overwrite_resources or {}).get("train", {}).get("gpu")
_site = None if _site is None else int(getattr(_site, "value", _site))
if _site is not None and (config["gpus"] not in (0, _site) or (_site > 0 and config["train_processes"] > 1)):
    raise ValueError(
        f"gpus: {config['gpus']}, train_processes: {config['train_processes']}, but the profile's set-resources "
        f"give train {_site} GPU(s), which decide how many processes train runs: set the profile's train gpu (e.g. "
        "profiles/slurm/config.yaml) instead, and leave gpus out (train_processes: CPU trainings, gpu 0)"
    )
_gpus = config["gpus"] if _site is None else _site
PROCESSES = max(1, _gpus if _gpus > 0 else config["train_processes"])
for _model in MODELS:
    try:
        _cfg = TrainConfig.from_params(config["models"][_model])
        _cfg.streams_of(PROCESSES)
        if _cfg.growth == "auto" and PROCESSES > 1:  # refused before prepare runs, not in the train job (review 81)
            raise InputError(f"growth 'auto' trains its candidates in one process, but train runs {PROCESSES}: set "
                             "a growth, or train_processes / gpus 1")  # fmt: skip
        _method = config["integrate"]["models"].get(_model, {}).get("method", config["integrate"]["method"])
        integrator(config["models"][_model]["objective"], _method)
    except (InputError, ValueError) as err:
        raise ValueError(f"models.{_model}: {err}") from None
# The model the table pairs the others against: am, else the config's first Action Matching model (am, eam or uam),
# else its first (audit 82: a run without a model named am had no pairs at all).
_in_order = list(config["models"])
_first = next((name for name in _in_order if config["models"][name]["objective"] != "fm"), _in_order[0])
config.setdefault("reference", "am" if "am" in MODELS else _first)
if config["reference"] not in MODELS:
    raise ValueError(f"reference: {config['reference']!r} is not one of the models {MODELS}")
SPLIT = f"{OUT}/holdout-{{holdout}}"
RUN = f"{SPLIT}/{{model}}/seed-{{seed}}"
# Splits of an earlier config of this experiment's name stay on disk but leave its table: say so, never in silence.
_other = sorted(p.name for p in Path(OUT).glob("holdout-*") if p.name.removeprefix("holdout-") not in HOLDOUTS)
if _other:
    print(f"amcore: {OUT} holds {', '.join(_other)} from an earlier config of experiment {config['experiment']!r}; "
          "this run's table leaves them out (give each config its own experiment name to keep both tables)",
          file=sys.stderr)  # fmt: skip


wildcard_constraints:
    holdout=r"none|[-+0-9.eE]+",
    seed=r"\d+",
    model="|".join(MODELS),
    baseline="|".join(BASELINES) or "(?!)",
    name="|".join(map(re.escape, EXTERNAL)) or "(?!)",


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/integrate.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/export.smk"


rule all:
    input:
        # Every run's model and trajectories are targets: an intermediate lost to a killed rerun is made again,
        # never left missing beside the metrics it made.
        expand(f"{RUN}/{{name}}", holdout=HOLDOUTS, model=MODELS, seed=SEEDS, name=["model.pt", "trajectories.zarr"]),
        # and each split's store: one deleted by hand is made again, never left missing (audit 30)
        expand(rules.prepare.output.store, holdout=HOLDOUTS),
        evaluated_runs(),
        rules.table.output,
        exports(),
    default_target: True


onstart:
    start_tracking()


onsuccess:
    end_tracking("FINISHED")


onerror:
    end_tracking("FAILED")
