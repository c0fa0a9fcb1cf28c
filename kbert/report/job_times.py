"""Job time and peak memory of a run, from Snakemake's benchmark files.

    python -m kbert.report job-times --benchmarks work/default/benchmarks [--out job_times.csv]

Every rule with a ``benchmark:`` directive writes one TSV per job: wall seconds, max RSS
(MB), CPU seconds and more (Snakemake's columns). This reads them all into one row per job,
``rule`` being the first folder under ``--benchmarks`` (or the file's name for a job at the
top) and ``job`` the rest of the path, and prints the totals per rule, the run's **job
time** (the sum over jobs: what the default preset's 3-hour budget counts, independent of
how many jobs ran side by side) and its **largest max RSS** (the 8 GiB budget).

A job that ran several times (``--repeat``, or a file appended to by a rerun) counts its
last line: the measurement of the output that exists.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kbert.artifacts import write_csv

COLUMNS = {"s": "seconds", "max_rss": "max_rss_mb", "cpu_time": "cpu_seconds", "mean_load": "mean_load"}


def read_benchmarks(root: str | Path) -> pd.DataFrame:
    """One row per benchmark TSV under ``root``: rule, job, seconds, max_rss_mb, cpu_seconds, mean_load."""
    root = Path(root)
    files = sorted(root.rglob("*.tsv"))
    if not files:
        raise FileNotFoundError(f"no Snakemake benchmark files (*.tsv) under {root}")
    rows = []
    for path in files:
        table = pd.read_csv(path, sep="\t")
        missing = [c for c in COLUMNS if c not in table.columns]
        if table.empty or missing:
            raise ValueError(f"{path}: not a Snakemake benchmark file (missing {missing or 'rows'})")
        last = table.iloc[-1]
        parts = path.relative_to(root).with_suffix("").parts
        rows.append({"rule": parts[0], "job": "/".join(parts[1:]),
                     **{new: pd.to_numeric(last[old], errors="coerce") for old, new in COLUMNS.items()}})
    return pd.DataFrame(rows)


def per_rule(jobs: pd.DataFrame) -> pd.DataFrame:
    """Jobs, seconds (sum) and largest max RSS per rule, the largest time first."""
    summary = jobs.groupby("rule").agg(jobs=("job", "size"), seconds=("seconds", "sum"),
                                       max_rss_mb=("max_rss_mb", "max"))
    return summary.sort_values("seconds", ascending=False)


def summary_text(jobs: pd.DataFrame) -> str:
    """The per-rule table, the job time and the peak memory, as printed by the command."""
    lines = [per_rule(jobs).to_string(float_format=lambda v: f"{v:,.0f}"), ""]
    total, peak = jobs["seconds"].sum(), jobs.loc[jobs["max_rss_mb"].idxmax()]
    lines.append(f"job time: {total:,.0f} s = {total / 3600:.2f} h over {len(jobs)} jobs")
    lines.append(f"largest max RSS: {peak['max_rss_mb']:,.0f} MB = {peak['max_rss_mb'] / 1024:.2f} GiB "
                 f"({peak['rule']}{'/' + peak['job'] if peak['job'] else ''})")
    return "\n".join(lines)


def write_job_times(benchmarks: str | Path, out: str | Path | None = None) -> pd.DataFrame:
    """Read every benchmark file, write ``out`` (CSV, atomically) if given, print the summary."""
    jobs = read_benchmarks(benchmarks)
    if out is not None:
        write_csv(out, jobs)
    print(summary_text(jobs))
    return jobs
