rule train:
    """Fit one model (AM/eAM/uAM potential or Flow Matching field) with one seed on one split's store."""
    input:
        store=rules.prepare.output.store,
    output:
        checkpoint=f"{RUN}/model.pt",
        loss=f"{RUN}/loss.csv",
    params:
        # The threads go as {threads}, not here: a change of them alone retrains nothing (float rounding apart, the
        # same numbers).
        train=lambda wc: as_arg({**config["models"][wc.model], "seed": int(wc.seed)}),
        launcher=launcher,
        tags=lambda wc: stage_tags("train", processes(), holdout=wc.holdout, model=wc.model, seed=wc.seed),
        # What the previous model of this run left: a training that then fails (killed, diverged) must not leave
        # them looking current beside no model, or the next run would find nothing to do and keep them.
        stale=lambda wc: " ".join(
            shlex.quote(f"{OUT}/holdout-{wc.holdout}/{wc.model}/seed-{wc.seed}/{name}")
            for name in ("trajectories.zarr", "metrics.json", "plots")
        ),
    threads: config["threads"] * PROCESSES  # the profile's GPUs included (a profile's set-threads overrides)
    resources:
        gpu=config["gpus"],
    log:
        f"{OUT}/logs/train_{{holdout}}_{{model}}_{{seed}}.log",
    conda:
        "../../environment.yml"
    shell:
        "rm -rf {params.stale} && {params.launcher} amcore train --store {input.store:q} --params {params.train}"

        " --checkpoint {output.checkpoint:q} --loss-csv {output.loss:q} --threads {threads} --tags {params.tags}"
        " 2>&1 | tee {log:q}"
