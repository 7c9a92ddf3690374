# Helpers shared by the rules: JSON arguments for the amcore CLI and the MLflow parent run.
# Every path and wildcard reaches the shell quoted: `{output.store:q}` in the commands (a list is quoted item by
# item), shlex.quote in params that build arguments; as_arg's JSON is quoted already (never add :q to it).


def as_arg(value, where="a config section"):
    """A config section (``where``, for an error) as one shell-quoted JSON argument."""
    return shlex.quote(json.dumps(text_keys(value, where), sort_keys=True))


def text_keys(value, where):
    """``value`` with every mapping's keys as JSON writes them (text): YAML reads `0.1:` as a number and `'2.1':` as
    text, which JSON cannot sort together (audit 34: a traceback before any job); two keys that become one are
    refused, never merged in silence."""
    if isinstance(value, list):
        return [text_keys(item, where) for item in value]
    if not isinstance(value, dict):
        return value
    out, given = {}, {}
    for key, item in value.items():
        text = json.dumps(key) if not isinstance(key, str) else key
        if text in out:
            raise ValueError(f"{where}: keys {given[text]!r} and {key!r} are one key in JSON; keep one")
        out[text], given[text] = text_keys(item, f"{where}.{text}"), key
    return out


@functools.cache
def data_stamp():
    """The data file's stamp (:func:`file_stamp`), a parameter of prepare. Read once, and only for prepare's jobs."""
    return "" if config["dataset"]["source"] == "simulate" else file_stamp(config["dataset"]["path"])


def file_stamp(path):
    """A file's size and modification time (of each file, for a folder, links followed), as a job's parameter:
    Snakemake reruns a job for an input newer than its outputs, and a file replaced by an older one (cp -p, rsync
    -t) with other cells would keep the old outputs in silence (the dataset's; audit 74: an external prediction's).
    Empty for a missing path (its job names it)."""
    path = Path(path)
    if not path.exists():
        return ""
    files = [path]
    if path.is_dir():
        files = sorted(Path(top) / name for top, _, names in os.walk(path, followlinks=True) for name in names)
    stamps = [(str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists()]
    return hashlib.sha256(json.dumps(stamps).encode()).hexdigest()[:16]


def integrate_settings(model, seed):
    """The integrate section as one model and training seed run it: its own entry of integrate.models over the shared
    settings; the seed only where the SDE draws noise with it (a change of it reran every RK4 push to the same
    numbers), offset by the training seed, so that the table's spread over seeds holds the SDE's noise too (audit
    70: every seed's push drew the same kicks)."""
    shared = {key: value for key, value in config["integrate"].items() if key != "models"}
    settings = {**shared, **config["integrate"]["models"].get(model, {})}
    if integrator(config["models"][model]["objective"], settings["method"]) != "sde":
        settings.pop("seed", None)
    else:
        settings["seed"] += int(seed)
    return settings


def preprocess_settings():
    """The preprocess section, its seed only where the randomised SVD reads it (PCA or whitening): a change of it
    reran every job to the same numbers (audit 17)."""
    settings = dict(config["preprocess"])
    if not (settings.get("pca") or settings.get("whiten")):
        settings.pop("seed", None)
    return settings


def evaluate_settings():
    """The evaluate section, truth_samples only where a simulator has a truth to sample (audit 17)."""
    settings = dict(config["evaluate"])
    if config["dataset"]["source"] != "simulate":
        settings.pop("truth_samples", None)
    return settings


def score_settings():
    """The evaluate settings score reads (choices.DISTANCE_OPTIONS; a simulator's truth_samples and n_times, the times
    its truth is scored at): mmd_paper_alphas, read by evaluate only, reran score to the same numbers (audit 23)."""
    from amcore.choices import DISTANCE_OPTIONS

    truth = ("truth_samples", "n_times") if config["dataset"]["source"] == "simulate" else ()
    return {key: value for key, value in evaluate_settings().items() if key in (*DISTANCE_OPTIONS, *truth)}


def stage_tags(rule, extra=None, **wildcards):
    """The stage run's MLflow tags: the rule, its wildcards and ``extra``."""
    tags = {"snakemake.rule": rule, **{f"snakemake.wildcard.{k}": v for k, v in wildcards.items()}}
    return as_arg(tags | (extra or {}))


def processes():
    """The training's processes when more than one, as a tag: they change its numbers (with `streams` 0 one seeded
    stream each; whatever `streams`, each draws its own OT subsamples and streamed chunks), and the launcher
    derives them from resources, which Snakemake leaves out of the params it compares, so a change of
    `train_processes` or `gpus` alone kept the old models (audit 23). A profile's train gpu counts too (PROCESSES,
    the Snakefile)."""
    return {"amcore.processes": str(PROCESSES)} if PROCESSES > 1 else {}


def launcher(wildcards, resources):
    """torchrun with one process per GPU (NCCL), or `train_processes` gloo processes on CPUs; none for one."""
    n = resources.gpu if resources.gpu > 0 else config["train_processes"]
    if n <= 1:
        return ""
    return f"torchrun --standalone --nproc_per_node={n} --no-python"


def start_tracking():
    """Create the MLflow backend and parent run once, before any job starts (sqlite creation races).

    Its coordinates go to environment variables that every job inherits.
    """
    from amcore import tracking

    uri = tracking.resolve_uri(config["mlflow"]["tracking_uri"], RESULTS)
    tags = {"amcore.experiment": config["experiment"]}
    tracking.start_parent(uri, config["mlflow"]["experiment"], RESULTS, tags, config)
    tracking.note_stops()  # a run stopped by Ctrl-C or SIGTERM closes KILLED, not FAILED


def end_tracking(status):
    from amcore import tracking

    tracking.end_parent(status)


def plot_output(name, caption, category):
    """A per-run plot in the report, grouped by held-out time and labelled by model and seed."""
    return report(
        f"{RUN}/plots/{name}.png",
        caption=f"../report/{caption}.rst",
        category=category,
        subcategory="held-out t = {holdout}",
        labels={"model": "{model}", "seed": "{seed}"},
    )


def held_out_predictions(holdout):
    """What is scored at one held-out time: every model and seed (inside its trajectories), every baseline."""
    runs = [
        {"method": model, "seed": seed, "path": f"{OUT}/holdout-{holdout}/{model}/seed-{seed}/trajectories.zarr"}
        for model in MODELS
        for seed in SEEDS
    ]
    return runs + [
        {"method": name, "seed": "", "path": f"{OUT}/holdout-{holdout}/{name}/prediction.zarr"} for name in BASELINES
    ] + [
        {"method": name, "seed": "", "path": f"{OUT}/holdout-{holdout}/{name}/external.zarr"} for name in EXTERNAL
    ]  # fmt: skip


def scored_predictions(holdout):
    """What score reads at a held-out time: the predictions, each model's with its checkpoint (on simulated data its
    learned field is scored against the truth, every seed; audit 27: only the first seed's evaluate had it)."""
    truth = config["dataset"]["source"] == "simulate"  # elsewhere no truth: no checkpoint to read (nor rerun for)
    return [
        {**entry, "checkpoint": str(Path(entry["path"]).with_name("model.pt"))}
        if truth and entry["seed"] != ""
        else entry
        for entry in held_out_predictions(holdout)
    ]


def evaluated_runs():
    """Runs drawn and scored from the first time: every seed without held-out time (they make the table),
    the first seed per held-out time (the table scores the held-out time itself)."""
    if not config["holdout_times"]:
        return expand(f"{RUN}/metrics.json", holdout="none", model=MODELS, seed=SEEDS)
    return expand(f"{RUN}/metrics.json", holdout=HOLDOUTS, model=MODELS, seed=SEEDS[0])


def table_inputs():
    """The table's rows: mean distances of each run without held-out time, or the scores at each held-out time."""
    if not config["holdout_times"]:
        return evaluated_runs()
    return expand(f"{SPLIT}/scores.json", holdout=HOLDOUTS)


def prediction_panels():
    """Held-out predictions drawn beside the held-out cells: each model's first seed and each baseline."""
    return [
        {**entry, "holdout": holdout, "prediction": entry["path"], "store": f"{OUT}/holdout-{holdout}/data/store.zarr"}
        for holdout in (HOLDOUTS if config["holdout_times"] else [])
        for entry in held_out_predictions(holdout)
        if entry["seed"] in ("", SEEDS[0])
    ]


def exported_models(holdout):
    """The checkpoints whose fields `export` writes at every cell of a split: each model's first seed."""
    return [
        {"model": model, "seed": SEEDS[0], "path": f"{OUT}/holdout-{holdout}/{model}/seed-{SEEDS[0]}/model.pt"}
        for model in MODELS
    ]


def exported_predictions(holdout):
    """The predictions `export` gathers at a held-out time: every model and seed, every baseline (none without)."""
    return held_out_predictions(holdout) if holdout != "none" else []


def exports():
    """One export.h5ad per split, and predictions.h5ad per held-out time."""
    files = expand(f"{SPLIT}/export.h5ad", holdout=HOLDOUTS)
    if config["holdout_times"]:
        files += expand(f"{SPLIT}/predictions.h5ad", holdout=HOLDOUTS)
    return files
