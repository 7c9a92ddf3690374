rule export:
    """AnnData for scanpy: the split's cells with each model's velocity (eAM: drift), potential and growth rate at
    every cell (first seed), the input's obs_names and obs; with a held-out time, every prediction of it too."""
    input:
        store=rules.prepare.output.store,
        checkpoints=lambda wc: [entry["path"] for entry in exported_models(wc.holdout)],
        predictions=lambda wc: [entry["path"] for entry in exported_predictions(wc.holdout)],
    output:
        cells=f"{SPLIT}/export.h5ad",
        **({"predictions": f"{SPLIT}/predictions.h5ad"} if config["holdout_times"] else {}),
    params:
        models=lambda wc: as_arg({"models": exported_models(wc.holdout)}),
        predictions=lambda wc, output: (
            f"--predictions {as_arg({'predictions': exported_predictions(wc.holdout)})}"
            f" --predictions-out {shlex.quote(output.predictions)}"
            if "predictions" in output.keys()
            else ""
        ),
        tags=lambda wc: stage_tags("export", holdout=wc.holdout),
    log:
        f"{OUT}/logs/export_{{holdout}}.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore export --store {input.store:q} --models {params.models} --out {output.cells:q} {params.predictions}"
        " --tags {params.tags} 2>&1 | tee {log:q}"
