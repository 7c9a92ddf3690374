rule prepare:
    """Simulate or read the dataset, preprocess it (fitted without the held-out time), write the zarr store."""
    input:
        # the user's file (or folder): a changed file reruns prepare and everything after it, never a stale store
        data=[] if config["dataset"]["source"] == "simulate" else [config["dataset"]["path"]],
    output:
        store=directory(f"{SPLIT}/data/store.zarr"),
        summary=f"{SPLIT}/data/summary.json",
    params:
        dataset=as_arg(config["dataset"], "dataset"),
        data_stamp=lambda wc: data_stamp(),  # unused by the command: a change of it reruns prepare
        preprocess=as_arg(preprocess_settings()),
        holdout=lambda wc: "" if wc.holdout == "none" else wc.holdout,
        scheduler=f"--dask-scheduler {shlex.quote(config['dask_scheduler'])}" if config["dask_scheduler"] else "",
        tags=lambda wc: stage_tags("prepare", holdout=wc.holdout),
    log:
        f"{OUT}/logs/prepare_{{holdout}}.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore prepare --dataset {params.dataset} --preprocess {params.preprocess}"
        " --holdout-times {params.holdout:q} --out {output.store:q} --summary {output.summary:q}"
        " {params.scheduler} --tags {params.tags} 2>&1 | tee {log:q}"
