# Fine-tune the pre-trained teacher on each task (the teacher of task KD).


rule finetune_teacher:
    output:
        model=directory(f"{WORK}/teacher/{{task}}/model"),
        metrics=f"{WORK}/teacher/{{task}}/metrics.json",
    params:
        cfg=resolved_config,
        out=parent_of("metrics"),
        settings=fingerprint("finetune_teacher"),
        examples="",
    log:
        f"{LOGS}/finetune_teacher/{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/finetune_teacher/{{task}}.tsv"
    threads: RES["finetune_teacher"]["threads"]
    resources: **job_resources("finetune_teacher")
    conda:
        "../../environment.yml"
    shell:
        launcher("finetune_teacher") + " -m kbert.cli finetune-teacher --config {params.cfg:q} --threads {threads}"
        " --task {wildcards.task} --out {params.out:q} {params.examples} > {log:q} 2>&1"


# Teacher learning curves (config learning_curve, target `learning_curve`): the same
# fine-tuning on the first `examples` training rows; only the metrics are kept.
use rule finetune_teacher as teacher_curve with:
    output:
        model=temp(directory(f"{WORK}/learning_curve/{{task}}/n{{examples}}/model")),
        metrics=f"{WORK}/learning_curve/{{task}}/n{{examples}}/metrics.json",
    params:
        cfg=resolved_config,
        out=parent_of("metrics"),
        settings=fingerprint("finetune_teacher"),
        examples=lambda wildcards: f"--max-train-examples {int(wildcards.examples)}",
    log:
        f"{LOGS}/learning_curve/{{task}}/n{{examples}}.log",
    benchmark:
        f"{BENCHMARKS}/learning_curve/{{task}}/n{{examples}}.tsv"


rule learning_curve:
    input:
        runs=[
            f"{WORK}/learning_curve/{task}/n{n}/metrics.json"
            for task in config["learning_curve"]["tasks"]
            if task not in UNAVAILABLE
            for n in config["learning_curve"]["per_task"].get(task, config["learning_curve"]["train_examples"])
        ],
    output:
        directory(f"{RESULTS}/learning_curve"),
    params:
        cfg=resolved_config,
    log:
        f"{LOGS}/learning_curve.log",
    threads: RES["report"]["threads"]
    resources: **job_resources("report")
    conda:
        "../../environment.yml"
    shell:
        "python -m kbert.cli learning-curve --config {params.cfg:q} --threads {threads}"
        " --runs {input.runs:q} --out {output:q} > {log:q} 2>&1"
