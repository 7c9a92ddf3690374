rule evaluate:
    """W1 and MMD per observed time, velocity error against an analytic answer, and plots."""
    input:
        store=rules.prepare.output.store,
        checkpoint=rules.train.output.checkpoint,
        loss=rules.train.output.loss,
        trajectories=rules.integrate.output.trajectories,
    output:
        metrics=f"{OUT}/models/{{model}}/metrics.json",
        marginals=report(
            f"{OUT}/models/{{model}}/plots/marginals.png",
            caption="../report/marginals.rst",
            category="Marginals",
            labels={"model": "{model}"},
        ),
        trajectories=report(
            f"{OUT}/models/{{model}}/plots/trajectories.png",
            caption="../report/trajectories.rst",
            category="Trajectories",
            labels={"model": "{model}"},
        ),
        velocity=report(
            f"{OUT}/models/{{model}}/plots/velocity.png",
            caption="../report/velocity.rst",
            category="Velocity field",
            labels={"model": "{model}"},
        ),
        loss=report(
            f"{OUT}/models/{{model}}/plots/loss.png",
            caption="../report/loss.rst",
            category="Training loss",
            labels={"model": "{model}"},
        ),
    params:
        evaluate=as_arg(config["evaluate"]),
        plots=lambda wc: f"{OUT}/models/{wc.model}/plots",
        tags=lambda wc: stage_tags("evaluate", model=wc.model),
    log:
        f"{OUT}/logs/evaluate_{{model}}.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore evaluate --model {wildcards.model} --store {input.store} --checkpoint {input.checkpoint}"
        " --trajectories {input.trajectories} --loss-csv {input.loss} --params {params.evaluate}"
        " --metrics {output.metrics} --plots {params.plots} --tags {params.tags}"
        " 2>&1 | tee {log}"


rule compare:
    """All models side by side: one table and one W1-per-time figure, attached to the parent run."""
    input:
        metrics=expand(f"{OUT}/models/{{model}}/metrics.json", model=MODELS),
    output:
        table=report(f"{OUT}/comparison.csv", caption="../report/comparison.rst", category="Comparison"),
        figure=report(f"{OUT}/comparison.png", caption="../report/comparison.rst", category="Comparison"),
    log:
        f"{OUT}/logs/compare.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore compare --metrics {input.metrics} --table {output.table} --figure {output.figure}"
        " 2>&1 | tee {log}"
