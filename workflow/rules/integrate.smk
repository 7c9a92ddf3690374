rule integrate:
    """Push every cell of the first time through the learned flow to each observed time."""
    input:
        store=rules.prepare.output.store,
        checkpoint=rules.train.output.checkpoint,
    output:
        trajectories=directory(f"{RUN}/trajectories.zarr"),
    params:
        integrate=as_arg(config["integrate"]),
        tags=lambda wc: stage_tags("integrate", holdout=wc.holdout, model=wc.model, seed=wc.seed),
    log:
        f"{OUT}/logs/integrate_{{holdout}}_{{model}}_{{seed}}.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore integrate --store {input.store} --checkpoint {input.checkpoint} --params {params.integrate}"
        " --out {output.trajectories} --tags {params.tags} 2>&1 | tee {log}"


rule predict_model:
    """Push all cells of the time before the held-out one to the held-out time with a trained model."""
    input:
        store=rules.prepare.output.store,
        checkpoint=rules.train.output.checkpoint,
    output:
        prediction=directory(f"{RUN}/prediction.zarr"),
    params:
        integrate=as_arg(config["integrate"]),
        tags=lambda wc: stage_tags("predict", holdout=wc.holdout, model=wc.model, seed=wc.seed),
    log:
        f"{OUT}/logs/predict_{{holdout}}_{{model}}_{{seed}}.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore predict --store {input.store} --holdout {wildcards.holdout} --checkpoint {input.checkpoint}"
        " --params {params.integrate} --out {output.prediction} --tags {params.tags} 2>&1 | tee {log}"


rule predict_baseline:
    """The simple answers at the held-out time: the previous cells unchanged, or displacement interpolation."""
    input:
        store=rules.prepare.output.store,
    output:
        prediction=directory(f"{SPLIT}/{{baseline}}/prediction.zarr"),
    params:
        integrate=as_arg(config["integrate"]),
        tags=lambda wc: stage_tags("predict", holdout=wc.holdout, model=wc.baseline),
    log:
        f"{OUT}/logs/predict_{{holdout}}_{{baseline}}.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore predict --store {input.store} --holdout {wildcards.holdout} --baseline {wildcards.baseline}"
        " --params {params.integrate} --out {output.prediction} --tags {params.tags} 2>&1 | tee {log}"
