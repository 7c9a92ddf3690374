rule integrate:
    """Push every cell of the first time to each observed time; with a held-out time, all cells of the previous
    time to it too (the prediction that is scored)."""
    input:
        store=rules.prepare.output.store,
        checkpoint=rules.train.output.checkpoint,
    output:
        trajectories=directory(f"{RUN}/trajectories.zarr"),
    params:
        integrate=lambda wc: as_arg(integrate_settings(wc.model, wc.seed)),
        tags=lambda wc: stage_tags("integrate", holdout=wc.holdout, model=wc.model, seed=wc.seed),
    log:
        f"{OUT}/logs/integrate_{{holdout}}_{{model}}_{{seed}}.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore integrate --store {input.store:q} --checkpoint {input.checkpoint:q} --params {params.integrate}"
        " --out {output.trajectories:q} --tags {params.tags} 2>&1 | tee {log:q}"


rule baseline:
    """A simple answer at the held-out time (amcore.choices.BASELINES): the previous cells unchanged,
    displacement interpolation, the spline path, ..."""
    input:
        store=rules.prepare.output.store,
    output:
        prediction=directory(f"{SPLIT}/{{baseline}}/prediction.zarr"),
    params:
        tags=lambda wc: stage_tags("baseline", holdout=wc.holdout, model=wc.baseline),
        # copy_prev solves no OT: 0 (the default, unread) keeps a change of the size from rerunning it (audit 23)
        max_size=lambda wc: 0 if wc.baseline == "copy_prev" else config["baseline_ot_max_size"],
    log:
        f"{OUT}/logs/baseline_{{holdout}}_{{baseline}}.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore baseline --store {input.store:q} --holdout {wildcards.holdout:q} --name {wildcards.baseline:q}"
        " --max-size {params.max_size} --out {output.prediction:q} --tags {params.tags} 2>&1 | tee {log:q}"


rule external:
    """Another method's prediction at the held-out time (config external: an npz in the input's features), in the
    store's coordinates, scored and tabled as a baseline is."""
    input:
        store=rules.prepare.output.store,
        cells=lambda wc: EXTERNAL[wc.name].replace("{holdout}", wc.holdout),
    output:
        prediction=directory(f"{SPLIT}/{{name}}/external.zarr"),
    params:
        tags=lambda wc: stage_tags("external", holdout=wc.holdout, model=wc.name),
        stamp=lambda wc: file_stamp(EXTERNAL[wc.name].replace("{holdout}", wc.holdout)),  # unused: reruns on a change
    log:
        f"{OUT}/logs/external_{{holdout}}_{{name}}.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore external --store {input.store:q} --holdout {wildcards.holdout:q} --name {wildcards.name:q}"
        " --cells {input.cells:q} --out {output.prediction:q} --tags {params.tags} 2>&1 | tee {log:q}"
