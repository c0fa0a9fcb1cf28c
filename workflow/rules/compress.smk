# Nearest-Kronecker (SVD) compression of the *pre-trained* teacher into each student.


rule compress:
    output:
        model=directory(f"{WORK}/students/{{student}}/init/model"),
        metrics=f"{WORK}/students/{{student}}/init/metrics.json",
    params:
        cfg=resolved_config,
        out=parent_of("metrics"),
        settings=fingerprint("compress"),
    log:
        f"{LOGS}/compress/{{student}}.log",
    benchmark:
        f"{BENCHMARKS}/compress/{{student}}.tsv"
    threads: RES["compress"]["threads"]
    resources: **job_resources("compress")
    conda:
        "../../environment.yml"
    shell:
        "python -m kbert.cli compress --config {params.cfg:q} --threads {threads}"
        " --student {wildcards.student} --out {params.out:q} > {log:q} 2>&1"
