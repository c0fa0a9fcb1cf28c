# Fine-tune the pre-trained teacher on each task (the teacher of task KD).


rule finetune_teacher:
    output:
        model=directory(f"{WORK}/teacher/{{task}}/model"),
        metrics=f"{WORK}/teacher/{{task}}/metrics.json",
    params:
        cfg=resolved_config,
        out=parent_of("metrics"),
        settings=fingerprint("finetune_teacher"),
    log:
        f"{LOGS}/finetune_teacher/{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/finetune_teacher/{{task}}.tsv"
    threads: RES["finetune_teacher"]["threads"]
    resources:
        mem_mb=RES["finetune_teacher"]["mem_mb"],
        runtime=RES["finetune_teacher"]["runtime"],
        gpu=RES["finetune_teacher"]["gpu"],
    conda:
        "../../environment.yml"
    shell:
        launcher("finetune_teacher") + " -m kbert.cli finetune-teacher --config {params.cfg:q} --threads {threads}"
        " --task {wildcards.task} --out {params.out:q} > {log:q} 2>&1"
