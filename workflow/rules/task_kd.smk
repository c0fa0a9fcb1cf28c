# task_kd: task distillation from the fine-tuned teacher, one run per
# (student, variant, task, seed). The variant decides the initial student and the data:
#   full           general-KD student, task data
#   full_aug       general-KD student, task data + augmented rows
#   no_general_kd  SVD-initialised student, task data
#   no_task_kd     general-KD student, fine-tuned on the labels only


rule task_kd:
    input:
        unpack(task_kd_inputs),
    output:
        model=directory(f"{WORK}/task_kd/{{student}}/{{variant}}/{{task}}/seed{{seed}}/model"),
        metrics=f"{WORK}/task_kd/{{student}}/{{variant}}/{{task}}/seed{{seed}}/metrics.json",
    params:
        cfg=resolved_config,
        init=parent_of("init_metrics"),
        teacher=parent_of("teacher_metrics"),
        augmented=augmented_arg,
        out=parent_of("metrics"),
        settings=fingerprint("task_kd"),
    log:
        f"{LOGS}/task_kd/{{student}}/{{variant}}/{{task}}/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/task_kd/{{student}}/{{variant}}/{{task}}/seed{{seed}}.tsv"
    threads: RES["task_kd"]["threads"]
    resources: **job_resources("task_kd")
    conda:
        "../../environment.yml"
    shell:
        launcher("task_kd") + " -m kbert.cli task-kd --config {params.cfg:q} --threads {threads}"
        " --task {wildcards.task} --student {wildcards.student}"
        " --variant {wildcards.variant} --seed {wildcards.seed}"
        " --init {params.init:q} --teacher {params.teacher:q} {params.augmented}"
        " --out {params.out:q} > {log:q} 2>&1"


# task_kd_start: the dev score of the student a task-KD run starts from (its init encoder
# with the teacher's head), before any step; for the equal-size table (equal_size.start_scores).
rule task_kd_start:
    input:
        unpack(task_kd_inputs),
    output:
        metrics=f"{WORK}/task_kd_start/{{student}}/{{variant}}/{{task}}/seed{{seed}}/metrics.json",
    params:
        cfg=resolved_config,
        init=parent_of("init_metrics"),
        teacher=parent_of("teacher_metrics"),
        out=parent_of("metrics"),
        settings=fingerprint("task_kd_start"),
    log:
        f"{LOGS}/task_kd_start/{{student}}/{{variant}}/{{task}}/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/task_kd_start/{{student}}/{{variant}}/{{task}}/seed{{seed}}.tsv"
    threads: RES["task_kd_start"]["threads"]
    resources: **job_resources("task_kd_start")
    conda:
        "../../environment.yml"
    shell:
        "python -m kbert.cli task-kd-start --config {params.cfg:q} --threads {threads}"
        " --task {wildcards.task} --student {wildcards.student}"
        " --variant {wildcards.variant} --seed {wildcards.seed}"
        " --init {params.init:q} --teacher {params.teacher:q}"
        " --out {params.out:q} > {log:q} 2>&1"
