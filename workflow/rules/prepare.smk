rule prepare:
    """Simulate or read the dataset and write the canonical zarr snapshot store."""
    output:
        store=directory(f"{OUT}/data/store.zarr"),
        summary=f"{OUT}/data/summary.json",
    params:
        dataset=as_arg(config["dataset"]),
        tags=stage_tags("prepare"),
    log:
        f"{OUT}/logs/prepare.log",
    conda:
        "../../environment.yml"
    shell:
        "amcore prepare --dataset {params.dataset} --out {output.store} --summary {output.summary}"
        " --tags {params.tags} 2>&1 | tee {log}"
