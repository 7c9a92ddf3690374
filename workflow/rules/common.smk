# Helpers shared by the rules: JSON arguments for the amcore CLI and the MLflow parent run.


def as_arg(value):
    """A config section as one shell-quoted JSON argument."""
    return shlex.quote(json.dumps(value, sort_keys=True))


def stage_tags(rule, **wildcards):
    return as_arg({"snakemake.rule": rule, **{f"snakemake.wildcard.{k}": v for k, v in wildcards.items()}})


def start_tracking():
    """Create the MLflow backend and parent run once, before any job starts (sqlite creation races)."""
    shell(
        "amcore track start --results-dir {RESULTS} --experiment {exp} {uri} --tags {tags}",
        exp=shlex.quote(config["mlflow"]["experiment"]),
        uri=f"--uri {shlex.quote(config['mlflow']['tracking_uri'])}" if config["mlflow"]["tracking_uri"] else "",
        tags=as_arg({"amcore.experiment": config["experiment"]}),
    )


def end_tracking(status):
    shell("amcore track end --results-dir {RESULTS} --status {status}")
