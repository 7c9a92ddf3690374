rule evaluate:
    """Every distance of docs/metrics.md per observed time, velocity error against an analytic answer, and plots."""
    input:
        store=rules.prepare.output.store,
        checkpoint=rules.train.output.checkpoint,
        loss=rules.train.output.loss,
        trajectories=rules.integrate.output.trajectories,
    output:
        metrics=f"{RUN}/metrics.json",
        marginals=plot_output("marginals", "marginals", "Marginals"),
        trajectories=plot_output("trajectories", "trajectories", "Trajectories"),
        velocity=plot_output("velocity", "velocity", "Velocity field"),
        loss=plot_output("loss", "loss", "Training loss"),
        projections=plot_output("projections", "projections", "Marginals"),
        mmd=plot_output("mmd", "mmd", "Marginals"),
        action=plot_output("action", "action", "Action"),
        growth=plot_output("growth", "growth", "Growth"),
    params:
        evaluate=as_arg(evaluate_settings()),
        plots=lambda wc: f"{OUT}/holdout-{wc.holdout}/{wc.model}/seed-{wc.seed}/plots",
        tags=lambda wc: stage_tags("evaluate", holdout=wc.holdout, model=wc.model, seed=wc.seed),
    log:
        f"{OUT}/logs/evaluate_{{holdout}}_{{model}}_{{seed}}.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore evaluate --model {wildcards.model:q} --holdout {wildcards.holdout:q} --seed {wildcards.seed:q}"
        " --store {input.store:q} --checkpoint {input.checkpoint:q} --trajectories {input.trajectories:q}"
        " --loss-csv {input.loss:q} --params {params.evaluate} --metrics {output.metrics:q} --plots {params.plots:q}"
        " --tags {params.tags} 2>&1 | tee {log:q}"


rule score:
    """Every distance of docs/metrics.md between every prediction (models, seeds, baselines) and all held-out cells;
    each model's whole course, and on simulated data its field against the truth."""
    input:
        store=rules.prepare.output.store,
        predictions=lambda wc: [
            path for entry in scored_predictions(wc.holdout) for path in (entry["path"], entry.get("checkpoint", ""))
            if path
        ],
    output:
        scores=f"{SPLIT}/scores.json",
    params:
        predictions=lambda wc: as_arg({"predictions": scored_predictions(wc.holdout)}),
        evaluate=as_arg(score_settings()),
        tags=lambda wc: stage_tags("score", holdout=wc.holdout),
    log:
        f"{OUT}/logs/score_{{holdout}}.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore score --store {input.store:q} --predictions {params.predictions} --params {params.evaluate}"
        " --out {output.scores:q} --tags {params.tags} 2>&1 | tee {log:q}"


rule table:
    """Every method, held-out time and seed in results/<experiment>/table.csv, table.md and figures."""
    input:
        results=table_inputs(),
        predictions=[panel["prediction"] for panel in prediction_panels()],
    output:
        table=report(f"{OUT}/table.csv", caption="../report/table.rst", category="Table"),
        markdown=report(f"{OUT}/table.md", caption="../report/table.rst", category="Table"),
        figure=report(f"{OUT}/table.png", caption="../report/table.rst", category="Table"),
        **(
            {"panels": report(f"{OUT}/predictions.png", caption="../report/predictions.rst", category="Table")}
            if config["holdout_times"]
            else {}
        ),
    params:
        panels=as_arg({"panels": prediction_panels()}),
        reference=config["reference"],
        panels_arg=lambda wc, output: (
            f"--predictions-figure {shlex.quote(output.panels)}" if "panels" in output.keys() else ""
        ),
    log:
        f"{OUT}/logs/table.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore table --results {input.results:q} --table {output.table:q} --markdown {output.markdown:q}"
        " --figure {output.figure:q} --panels {params.panels} {params.panels_arg} --reference {params.reference}"
        " 2>&1 | tee {log:q}"
