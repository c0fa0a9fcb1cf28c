# The sanity ladder (issue 13): its own target, `snakemake --configfile config/ladder.yaml
# --cores 2 ladder`, outside `all`. One directory, like the equal-size comparison.


rule ladder:
    input:
        runs=ladder_metrics(),
    output:
        report(
            directory(f"{RESULTS}/ladder"),
            patterns=["{name}.png"],
            caption="../report/ladder.rst",
            category="Sanity ladder",
        ),
    params:
        cfg=resolved_config,
    log:
        f"{LOGS}/ladder.log",
    threads: RES["report"]["threads"]
    resources: **job_resources("report")
    conda:
        "../../environment.yml"
    shell:
        "python -m kbert.cli ladder --config {params.cfg:q} --threads {threads}"
        " --runs {input.runs:q} --out {output:q} > {log:q} 2>&1"
