"""``python -m kbert.report``: aggregate, retention and report without the kbert CLI.

The workflow calls the same functions through ``python -m kbert.cli aggregate|report``.
"""

from __future__ import annotations

import argparse
import logging

from kbert.report.aggregate import aggregate, write_retention
from kbert.report.figures import write_figures
from kbert.report.job_times import write_job_times
from kbert.report.tables import write_tables

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kbert.report", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    agg = commands.add_parser("aggregate", help="metrics.json files -> results/*.csv")
    agg.add_argument("--runs", nargs="+", required=True, help="run dirs or metrics.json files")
    agg.add_argument("--out", required=True, help="results directory")
    agg.add_argument("--unavailable", nargs="*", default=[], help="tasks with no data")
    rt = commands.add_parser("retention", help="results/*_summary.csv -> majority.csv and "
                             "retention.csv (for results aggregated before majority.csv existed)")
    rt.add_argument("--results", required=True)
    rt.add_argument("--config", required=True, help="the config the results were run with")
    rep = commands.add_parser("report", help="results/*.csv -> tables and figures")
    rep.add_argument("--results", required=True)
    rep.add_argument("--figures", required=True)
    rep.add_argument("--tables", help="default: RESULTS/tables")
    jt = commands.add_parser("job-times", help="Snakemake benchmark files -> job time and peak memory per job")
    jt.add_argument("--benchmarks", required=True, help="the run's benchmarks folder, e.g. work/default/benchmarks")
    jt.add_argument("--out", help="CSV with one row per job (optional)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "aggregate":
        aggregate(args.runs, args.out, args.unavailable)
    elif args.command == "retention":
        write_retention(args.results, args.config)
    elif args.command == "job-times":
        write_job_times(args.benchmarks, args.out)
    else:
        write_tables(args.results, args.tables)
        write_figures(args.results, args.figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
