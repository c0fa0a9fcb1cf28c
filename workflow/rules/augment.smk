# TinyBERT data augmentation of a task's training data; shared by every student.


rule augment:
    output:
        f"{WORK}/augment/{{task}}.parquet",
    params:
        cfg=resolved_config,
        settings=fingerprint("augment"),
    log:
        f"{LOGS}/augment/{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/augment/{{task}}.tsv"
    threads: RES["augment"]["threads"]
    resources: **job_resources("augment")
    conda:
        "../../environment.yml"
    shell:
        "python -m kbert.cli augment --config {params.cfg:q} --threads {threads}"
        " --task {wildcards.task} --out {output:q} > {log:q} 2>&1"
