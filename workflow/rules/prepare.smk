rule prepare:
    """Simulate or read the dataset, preprocess it (fitted on training times only), write the zarr snapshot store."""
    output:
        store=directory(f"{OUT}/data/store.zarr"),
        summary=f"{OUT}/data/summary.json",
    params:
        dataset=as_arg(config["dataset"]),
        preprocess=as_arg(config["preprocess"]),
        holdout=" ".join(repr(float(t)) for t in config["holdout_times"]),
        scheduler=f"--dask-scheduler {shlex.quote(config['dask_scheduler'])}" if config["dask_scheduler"] else "",
        tags=stage_tags("prepare"),
    log:
        f"{OUT}/logs/prepare.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore prepare --dataset {params.dataset} --preprocess {params.preprocess}"
        " --holdout-times {params.holdout} --out {output.store} --summary {output.summary}"
        " {params.scheduler} --tags {params.tags} 2>&1 | tee {log}"
