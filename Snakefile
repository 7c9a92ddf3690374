# amcore: Action Matching on time-indexed snapshots. configfile, validate, includes and `rule all` live
# here: Snakemake drops a default target set in an included file.
import json
import shlex

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")

RESULTS = config["results_dir"]
OUT = f"{RESULTS}/{config['experiment']}"
MODELS = sorted(config["models"])


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/integrate.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        expand(f"{OUT}/models/{{model}}/metrics.json", model=MODELS),
        f"{OUT}/comparison.csv",
    default_target: True


onstart:
    start_tracking()


onsuccess:
    end_tracking("FINISHED")


onerror:
    end_tracking("FAILED")
