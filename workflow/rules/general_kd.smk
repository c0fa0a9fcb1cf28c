# Stage 1: general distillation from the pre-trained teacher on a corpus, one per student.


rule general_kd:
    input:
        init_model=f"{WORK}/students/{{student}}/init/model",
        init_metrics=f"{WORK}/students/{{student}}/init/metrics.json",
    output:
        model=directory(f"{WORK}/students/{{student}}/general/model"),
        metrics=f"{WORK}/students/{{student}}/general/metrics.json",
    params:
        cfg=resolved_config,
        init=parent_of("init_metrics"),
        out=parent_of("metrics"),
        settings=fingerprint("general_kd"),
    log:
        f"{LOGS}/general_kd/{{student}}.log",
    benchmark:
        f"{BENCHMARKS}/general_kd/{{student}}.tsv"
    threads: RES["general_kd"]["threads"]
    resources:
        mem_mb=RES["general_kd"]["mem_mb"],
        runtime=RES["general_kd"]["runtime"],
        gpu=RES["general_kd"]["gpu"],
    conda:
        "../../environment.yml"
    shell:
        launcher("general_kd") + " -m kbert.cli general-kd --config {params.cfg:q} --threads {threads}"
        " --student {wildcards.student} --init {params.init:q} --out {params.out:q} > {log:q} 2>&1"
