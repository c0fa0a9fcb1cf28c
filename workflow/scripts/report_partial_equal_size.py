"""The equal-size table of a sweep that has not finished (issue 18: "commit partial cells
with their state"). Rule ``equal_size`` needs every run; this reports the ones that exist.

    PYTHONPATH=. python workflow/scripts/report_partial_equal_size.py [--configfile FILE ...] --out DIR
        [--archive DIR]    # carry records across machines (below)
    PYTHONPATH=. python workflow/scripts/report_partial_equal_size.py --archive DIR --todo   # what is left

It asks Snakemake (a dry run of ``snakemake equal_size``) which of the rule's inputs are
done and up to date: files a dry run would (re)create are left out, so a stale run of an
earlier config never enters the table, and passes the rest to ``python -m kbert.cli
equal-size`` (in this process). Cells with fewer seeds than planned say "n=k of m"
(kbert.report.equal_size.planned_seeds). Run it from the repository root of the work tree
that ran the sweep.

A sweep outlives the machine it ran on through ``--archive DIR`` (committed, e.g.
``results/reference/equal_size/records``): the script first copies every done, up-to-date
record of the work directory there (teachers, students, task-KD runs and start scores;
``metrics.json`` files only, under their work-directory paths), then takes from it every
input the work directory lacks, if that record and every record it was made from (its
teacher, its student's init and general KD) carry the settings fingerprint the config
gives them today (``kbert.config.stale_settings``); records without a fingerprint are never
carried. ``--todo`` prints the sweep's runs still missing from both, seed 0 first, one per
line, as Snakemake targets.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from kbert import cli
from kbert import config as kconfig


def dry_run(configfiles: list[str]) -> str:
    # One --configfile with every file (repeating the option keeps only the last), after the target.
    cmd = ["snakemake", "--dry-run", "--printshellcmds", "--cores", "1", "equal_size", "--rerun-incomplete",
           "--configfile", *configfiles]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"snakemake --dry-run equal_size failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def pending_outputs(dry: str) -> set[str]:
    """Every file the dry run would (re)create."""
    return {path.strip() for line in re.findall(r"^\s+output: (.*)$", dry, re.M) for path in line.split(",")}


def is_done(path: str, pending: set[str]) -> bool:
    """The file exists and the dry run would not (re)create it."""
    return path not in pending and Path(path).exists()


def rule_inputs(dry: str) -> list[str]:
    """The metrics.json inputs of rule equal_size (teachers, compress records, runs, starts)."""
    block = dry.split("rule equal_size:")[1]
    inputs = re.search(r"^\s+input: (.*)$", block, re.M).group(1).split(", ")
    return [path for path in inputs if path.endswith("metrics.json")]


# ------------------------------------------------------------------ the archive


def made_from(record_path: str) -> list[str]:
    """The records a record (a path relative to the work directory) was made from, as
    workflow/rules/common.smk wires them (task_kd_inputs, init_stage): a task-KD run or
    start score from its task's teacher and its student's init, plus, for variant ``full``,
    the student's general KD; general KD from the init."""
    parts = record_path.split("/")
    if parts[0] in ("task_kd", "task_kd_start"):
        _, student, variant, task = parts[:4]
        stages = ["init", "general"] if variant == "full" else ["init"]
        return [f"teacher/{task}/metrics.json", *(f"students/{student}/{s}/metrics.json" for s in stages)]
    if parts[0] == "students" and parts[2] == "general":
        return [f"students/{parts[1]}/init/metrics.json"]
    return []


def carry_refusal(archive: Path, record_path: str, config: dict) -> str | None:
    """Why the archived record (and what it was made from) cannot stand for the config's
    run; None when it can."""
    for path in [record_path, *made_from(record_path)]:
        file = archive / path
        if not file.exists():
            return f"{path}: not in the archive"
        record = json.loads(file.read_text())
        if not (record.get("provenance") or {}).get("settings"):
            return f"{path}: no settings fingerprint (written before records carried one)"
        if (why := kconfig.stale_settings(config, record)) is not None:
            return f"{path}: {why}"
    return None


def archive_done(work: Path, archive: Path, inputs: list[str], pending: set[str]) -> int:
    """Copy the work directory's done, up-to-date sweep records and the teacher and student
    records they were made from into the archive, under the same relative paths."""
    relative = {str(Path(path).relative_to(work)) for path in inputs if is_done(path, pending)}
    relative |= {upstream for path in list(relative) for upstream in made_from(path)}
    copied = 0
    for path in sorted(relative):
        source = work / path
        if not is_done(str(source), pending):
            continue
        (archive / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, archive / path)
        copied += 1
    return copied


def gather(work: Path, archive: Path | None, inputs: list[str], pending: set[str], config: dict):
    """(records to report, inputs still to run): each input from the work directory when
    done there, else from the archive when it may be carried."""
    records, todo = [], []
    for path in inputs:
        if is_done(path, pending):
            records.append(path)
            continue
        relative = str(Path(path).relative_to(work))
        if archive is not None and carry_refusal(archive, relative, config) is None:
            records.append(str(archive / relative))
        else:
            todo.append(path)
    return records, todo


def seed_first(paths: list[str]) -> list[str]:
    """Runs by seed (every cell's first seed before any second), start scores with seed 0."""
    def key(path):
        seed = re.search(r"/seed(\d+)/", path)
        return (int(seed.group(1)) if seed else 0, "/task_kd_start/" in path, path)
    return sorted(paths, key=key)


def load_merged(configfiles: list[str]) -> dict:
    """The config Snakemake resolves from these files (merged in order, then validated)."""
    merged = {}
    for path in configfiles:
        merged = kconfig.deep_merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    return kconfig.load_config(merged)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", nargs="*", default=["config/config.yaml"])
    parser.add_argument("--out", help="directory of the partial table (not with --todo)")
    parser.add_argument("--archive", type=Path, help="records carried across machines (read and updated)")
    parser.add_argument("--todo", action="store_true", help="print the runs still to do and exit")
    args = parser.parse_args()
    if not args.todo and not args.out:
        parser.error("--out is required (or --todo)")
    dry = dry_run(args.configfile)
    if "rule equal_size:" not in dry:
        sys.exit("nothing left to run: use `snakemake equal_size` for the complete table")
    config = load_merged(args.configfile)
    work = Path(config["paths"]["work"]) / config["preset"]
    pending, inputs = pending_outputs(dry), rule_inputs(dry)
    if args.archive is not None and not args.todo:
        print(f"archived {archive_done(work, args.archive, inputs, pending)} records in {args.archive}", file=sys.stderr)
    records, todo = gather(work, args.archive, inputs, pending, config)
    if args.todo:
        print("\n".join(seed_first([path for path in todo if "/task_kd" in path])))
        return 0
    runs = [path for path in records if "/task_kd_start/" not in path]
    starts = [path for path in records if "/task_kd_start/" in path]
    planned = [path for path in inputs if "/task_kd/" in path]
    done = sum("/task_kd/" in path for path in runs)
    print(f"task-KD runs done: {done} of {len(planned)}; start scores: {len(starts)}", file=sys.stderr)
    # The rule's own command names the speed CSV of this config.
    speed = Path(re.search(r"--speed (\S+)", dry.split("rule equal_size:")[1]).group(1).strip("'"))
    # The table states the config it was made with, next to it.
    resolved = Path(args.out) / "config.resolved.yaml"
    kconfig.write_resolved(config, resolved)
    argv = ["equal-size", "--config", str(resolved), "--threads", "2", "--runs", *runs, "--out", args.out]
    if speed.exists():
        argv += ["--speed", str(speed)]
    if starts:
        argv += ["--starts", *starts]
    return cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
