# Helpers shared by the rules: JSON arguments for the amcore CLI and the MLflow parent run.


def as_arg(value):
    """A config section as one shell-quoted JSON argument."""
    return shlex.quote(json.dumps(value, sort_keys=True))


def stage_tags(rule, **wildcards):
    return as_arg({"snakemake.rule": rule, **{f"snakemake.wildcard.{k}": v for k, v in wildcards.items()}})


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
    tracking.start_parent(uri, config["mlflow"]["experiment"], RESULTS, tags)


def end_tracking(status):
    from amcore import tracking

    tracking.end_parent(status)


def table_inputs():
    """The table's rows: each model's mean distances without held-out time, scores at each held-out time."""
    if not config["holdout_times"]:
        return expand(f"{RUN}/metrics.json", holdout="none", model=MODELS, seed=SEEDS)
    runs = expand(f"{RUN}/scores.json", holdout=HOLDOUTS, model=MODELS, seed=SEEDS)
    return runs + expand(f"{SPLIT}/{{baseline}}/scores.json", holdout=HOLDOUTS, baseline=BASELINES)


def prediction_panels():
    """Held-out predictions drawn beside the held-out cells: each model's first seed and each baseline."""
    if not config["holdout_times"]:
        return []
    panels = []
    for holdout in HOLDOUTS:
        store = f"{OUT}/holdout-{holdout}/data/store.zarr"
        for model in MODELS:
            prediction = f"{OUT}/holdout-{holdout}/{model}/seed-{SEEDS[0]}/prediction.zarr"
            panels.append({"method": model, "holdout": holdout, "store": store, "prediction": prediction})
        for baseline in BASELINES:
            prediction = f"{OUT}/holdout-{holdout}/{baseline}/prediction.zarr"
            panels.append({"method": baseline, "holdout": holdout, "store": store, "prediction": prediction})
    return panels
