rule integrate:
    """Push every sample of the first time through the learned ODE to each observed time."""
    input:
        store=rules.prepare.output.store,
        checkpoint=rules.train.output.checkpoint,
    output:
        trajectories=directory(f"{OUT}/models/{{model}}/trajectories.zarr"),
    params:
        integrate=as_arg(config["integrate"]),
        tags=lambda wc: stage_tags("integrate", model=wc.model),
    log:
        f"{OUT}/logs/integrate_{{model}}.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore integrate --store {input.store} --checkpoint {input.checkpoint} --params {params.integrate}"
        " --out {output.trajectories} --tags {params.tags} 2>&1 | tee {log}"
