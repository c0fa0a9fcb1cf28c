"""The equal-size table of a sweep that has not finished (issue 18: "commit partial cells
with their state"). Rule ``equal_size`` needs every run; this reports the ones that exist.

    PYTHONPATH=. python workflow/scripts/report_partial_equal_size.py [--configfile FILE ...] --out DIR

It asks Snakemake (a dry run of ``snakemake equal_size``) which of the rule's inputs are
done and up to date: files a dry run would (re)create are left out, so a stale run of an
earlier config never enters the table, and passes the rest to ``python -m kbert.cli
equal-size`` (in this process) with the resolved config the rule would use. Cells with fewer seeds than planned
say "n=k of m" (kbert.report.equal_size.planned_seeds). Run it from the repository root of
the work tree that ran the sweep.
"""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from kbert import cli


def dry_run(configfiles: list[str]) -> str:
    cmd = ["snakemake", "--dry-run", "--printshellcmds", "--cores", "1", "equal_size", "--rerun-incomplete"]
    cmd += [f"--configfile={path}" for path in configfiles]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"snakemake --dry-run equal_size failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def done_inputs(dry: str) -> tuple[list[str], list[str], list[str]]:
    """(runs, starts, every task-KD input) of rule equal_size: the runs and start scores
    that exist and that the dry run would not (re)create."""
    pending = {path.strip() for line in re.findall(r"^\s+output: (.*)$", dry, re.M) for path in line.split(",")}
    block = dry.split("rule equal_size:")[1]
    inputs = re.search(r"^\s+input: (.*)$", block, re.M).group(1).split(", ")
    done = [path for path in inputs if path.endswith("metrics.json") and path not in pending and Path(path).exists()]
    starts = [path for path in done if "/task_kd_start/" in path]
    runs = [path for path in done if "/task_kd_start/" not in path]
    return runs, starts, [path for path in inputs if "/task_kd/" in path]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", nargs="*", default=["config/config.yaml"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dry = dry_run(args.configfile)
    if "rule equal_size:" not in dry:
        sys.exit("nothing left to run: use `snakemake equal_size` for the complete table")
    runs, starts, planned = done_inputs(dry)
    # The rule's own command names the resolved config and the speed CSV of this config.
    command = dry.split("rule equal_size:")[1]
    resolved = Path(re.search(r"--config (\S+)", command).group(1).strip("'"))
    speed = Path(re.search(r"--speed (\S+)", command).group(1).strip("'"))
    if not resolved.exists():
        sys.exit(f"{resolved}: no resolved config of this config; a real run of the sweep writes it")
    done = sum("/task_kd/" in path for path in runs)
    print(f"task-KD runs done: {done} of {len(planned)}; start scores: {len(starts)}", file=sys.stderr)
    argv = ["equal-size", "--config", str(resolved), "--threads", "2", "--runs", *runs, "--out", args.out]
    if speed.exists():
        argv += ["--speed", str(speed)]
    if starts:
        argv += ["--starts", *starts]
    return cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
