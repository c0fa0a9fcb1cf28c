# evaluate_ood: a fine-tuned teacher or task-KD run on its task's out-of-distribution
# sets (Table 9), one job per run; `run` is the run's directory under WORK
# (teacher/{task} or task_kd/{student}/{variant}/{task}/seed{seed}).


rule evaluate_ood:
    input:
        run_model=f"{WORK}/{{run}}/model",
        run_metrics=f"{WORK}/{{run}}/metrics.json",
    output:
        metrics=f"{WORK}/ood/{{run}}/metrics.json",
    params:
        cfg=resolved_config,
        run=parent_of("run_metrics"),
        out=parent_of("metrics"),
        settings=fingerprint("evaluate_ood"),
    log:
        f"{LOGS}/evaluate_ood/{{run}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate_ood/{{run}}.tsv"
    threads: RES["evaluate_ood"]["threads"]
    resources: **job_resources("evaluate_ood")
    conda:
        "../../environment.yml"
    shell:
        "python -m kbert.cli evaluate-ood --config {params.cfg:q} --threads {threads}"
        " --run {params.run:q} --out {params.out:q} > {log:q} 2>&1"
