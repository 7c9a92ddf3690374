rule train:
    """Fit one model (AM/eAM/uAM potential or Flow Matching field) on the snapshot store."""
    input:
        store=rules.prepare.output.store,
    output:
        checkpoint=f"{OUT}/models/{{model}}/model.pt",
        loss=f"{OUT}/models/{{model}}/loss.csv",
    params:
        train=lambda wc: as_arg({**config["models"][wc.model], "threads": config["threads"]}),
        launcher=launcher,
        tags=lambda wc: stage_tags("train", model=wc.model),
    threads: config["threads"] * max(1, config["train_processes"])
    resources:
        gpu=config["gpus"],
    log:
        f"{OUT}/logs/train_{{model}}.log",
    conda:
        "../../environment.yml"
    shell:
        "{params.launcher} amcore train --store {input.store} --params {params.train}"
        " --checkpoint {output.checkpoint} --loss-csv {output.loss} --tags {params.tags} 2>&1 | tee {log}"
