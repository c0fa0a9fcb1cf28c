# Aggregate every evaluated model into results/*.csv, then the paper's tables and figures.
# Tasks without data (kbert.config.unavailable_tasks) have no runs; aggregate reads them
# from the config and lists them as unavailable.


rule aggregate:
    input:
        runs=run_metrics(),
    output:
        glue=f"{RESULTS}/glue.csv",
        squad=f"{RESULTS}/squad.csv",
        teacher=f"{RESULTS}/teacher.csv",
        ablation=f"{RESULTS}/ablation.csv",
    params:
        cfg=resolved_config,
        out=parent_of("glue"),
    log:
        f"{LOGS}/aggregate.log",
    threads: RES["aggregate"]["threads"]
    resources: **job_resources("aggregate")
    conda:
        "../../environment.yml"
    shell:
        "python -m kbert.cli aggregate --config {params.cfg:q} --threads {threads}"
        " --runs {input.runs:q} --out {params.out:q} > {log:q} 2>&1"


rule report:
    input:
        rules.aggregate.output,
        efficiency=f"{RESULTS}/efficiency.csv",
        efficiency_layers=f"{RESULTS}/efficiency_layers.csv",
    output:
        tables=report(
            directory(f"{RESULTS}/tables"),
            patterns=["{name}.md"],
            caption="../report/tables.rst",
            category="Tables",
        ),
        figures=report(
            directory(FIGURES),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    params:
        cfg=resolved_config,
        results=parent_of("efficiency"),
    log:
        f"{LOGS}/report.log",
    threads: RES["report"]["threads"]
    resources: **job_resources("report")
    conda:
        "../../environment.yml"
    shell:
        "python -m kbert.cli report --config {params.cfg:q} --threads {threads}"
        " --results {params.results:q} --figures {output.figures:q} > {log:q} 2>&1"


# The equal-size comparison (Kronecker vs low-rank vs dense at one parameter budget, over
# seeds): its own target, `snakemake --cores 8 equal_size`, outside `all` (it costs several
# times the paper pipeline). One directory, since results/tables/ and the figures
# directory belong to the report rule above.
rule equal_size:
    input:
        runs=equal_size_metrics(),
        starts=equal_size_start_metrics(),
        speed=EQUAL_SIZE_SPEED,
    output:
        report(
            directory(f"{RESULTS}/equal_size"),
            patterns=["{name}.png"],
            caption="../report/equal_size.rst",
            category="Equal size",
        ),
    params:
        cfg=resolved_config,
        starts=starts_arg,
    log:
        f"{LOGS}/equal_size.log",
    threads: RES["report"]["threads"]
    resources: **job_resources("report")
    conda:
        "../../environment.yml"
    shell:
        "python -m kbert.cli equal-size --config {params.cfg:q} --threads {threads}"
        " --runs {input.runs:q} --speed {input.speed:q} {params.starts} --out {output:q} > {log:q} 2>&1"


# The GLUE test server's files of one model (teacher or student): every test split the
# data source has, checked for rows and labels, and zipped (docs/outputs.md).
rule glue_submission:
    input:
        runs=submission_runs,
    output:
        directory(f"{RESULTS}/glue_submission/{{model}}"),
    params:
        cfg=resolved_config,
    log:
        f"{LOGS}/glue_submission/{{model}}.log",
    threads: RES["aggregate"]["threads"]
    resources: **job_resources("aggregate")
    conda:
        "../../environment.yml"
    shell:
        "python -m kbert.cli glue-submission --config {params.cfg:q} --threads {threads}"
        " --runs {input.runs:q} --out {output:q} > {log:q} 2>&1"
