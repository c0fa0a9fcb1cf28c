# CPU latency, throughput, params and FLOPs: whole models (teacher vs students) and
# single Kronecker layers vs their FLOP bound. Low priority, so that on a local machine
# they run when little else does; for publication numbers rerun them on an idle machine
# (snakemake --cores N -f bench_models bench_layers).


rule bench_models:
    output:
        report(
            f"{RESULTS}/efficiency.csv",
            caption="../report/efficiency.rst",
            category="Efficiency",
        ),
    params:
        cfg=resolved_config,
        settings=fingerprint("bench"),
    log:
        f"{LOGS}/bench_models.log",
    benchmark:
        f"{BENCHMARKS}/bench_models.tsv"
    priority: -10
    threads: RES["bench_models"]["threads"]
    resources: **job_resources("bench_models")
    conda:
        "../../environment.yml"
    shell:
        "python -m kbert.cli bench models --config {params.cfg:q} --out {output:q} > {log:q} 2>&1"


rule bench_layers:
    output:
        report(
            f"{RESULTS}/efficiency_layers.csv",
            caption="../report/efficiency.rst",
            category="Efficiency",
        ),
    params:
        cfg=resolved_config,
        settings=fingerprint("bench"),
    log:
        f"{LOGS}/bench_layers.log",
    benchmark:
        f"{BENCHMARKS}/bench_layers.tsv"
    priority: -10
    threads: RES["bench_layers"]["threads"]
    resources: **job_resources("bench_layers")
    conda:
        "../../environment.yml"
    shell:
        "python -m kbert.cli bench layers --config {params.cfg:q} --out {output:q} > {log:q} 2>&1"


# Speed at equal size (issue 18): each Kronecker student next to its low-rank and dense
# twins of the same parameter count and their teacher, timed side by side in one run; the
# equal_size rule turns it into speed.csv/.md/.png of results/equal_size/.
rule bench_equal_size:
    output:
        EQUAL_SIZE_SPEED,
    params:
        cfg=resolved_config,
        settings=fingerprint("bench"),
    log:
        f"{LOGS}/bench_equal_size.log",
    benchmark:
        f"{BENCHMARKS}/bench_equal_size.tsv"
    priority: -10
    threads: RES["bench_models"]["threads"]
    resources: **job_resources("bench_models")
    conda:
        "../../environment.yml"
    shell:
        "python -m kbert.cli bench equal-size --config {params.cfg:q} --out {output:q} > {log:q} 2>&1"
