# general_kd: general distillation from the pre-trained teacher on a corpus, one per student.


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
        epochs="",
    log:
        f"{LOGS}/general_kd/{{student}}.log",
    benchmark:
        f"{BENCHMARKS}/general_kd/{{student}}.tsv"
    threads: RES["general_kd"]["threads"]
    resources: **job_resources("general_kd")
    conda:
        "../../environment.yml"
    shell:
        launcher("general_kd") + " -m kbert.cli general-kd --config {params.cfg:q} --threads {threads}"
        " --student {wildcards.student} --init {params.init:q} --out {params.out:q} {params.epochs}"
        " > {log:q} 2>&1"


# The sanity ladder's dose-response (config ladder.general_kd_epochs, e.g. 1, 3, 10): a
# chain of general-KD runs, each continuing the previous point for the epochs between them.
use rule general_kd as general_kd_dose with:
    input:
        unpack(dose_init),
    output:
        model=directory(f"{WORK}/students/{{student}}/general_{{epochs}}ep/model"),
        metrics=f"{WORK}/students/{{student}}/general_{{epochs}}ep/metrics.json",
    params:
        cfg=resolved_config,
        init=parent_of("init_metrics"),
        out=parent_of("metrics"),
        settings=fingerprint("general_kd"),
        epochs=dose_more_epochs,
    log:
        f"{LOGS}/general_kd/{{student}}/{{epochs}}ep.log",
    benchmark:
        f"{BENCHMARKS}/general_kd/{{student}}/{{epochs}}ep.tsv"
