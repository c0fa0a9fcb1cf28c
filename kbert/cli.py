"""``python -m kbert.cli <stage> ...``: every stage of the pipeline, callable by hand.

The Snakemake rules call exactly these commands (docs/architecture.md lists them). Each
stage validates the config first, sets the offline switches, uses the job's thread
budget and writes its outputs atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys


def _offline(config: dict) -> None:
    """Offline presets fail at once on a stray hub call instead of retrying for minutes."""
    if config.get("offline", True):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _load(args) -> dict:
    """Validate the config and apply its offline switches before anything imports
    huggingface_hub (which reads HF_HUB_OFFLINE once, at import)."""
    from kbert.config import load_config

    config = load_config(args.config)
    _offline(config)
    from kbert.training import set_threads

    set_threads(args.threads or config["resources"]["threads"])
    if hasattr(args, "device"):  # a training stage
        _runtime_flags(config, args)
    return config


def _runtime_flags(config: dict, args) -> None:
    """--device/--precision override the config; a value this machine cannot run fails here, before any work."""
    from kbert.device import runtime

    for key in ("device", "precision"):
        if getattr(args, key):
            config[key] = getattr(args, key)
    runtime(config)


def cmd_data(args, config=None) -> None:
    """Check and describe the data: one task's files, or (all) every task's and the
    general-distillation corpora; every bad file is reported, not only the first."""
    import pandas as pd

    from kbert.data.corpora import describe_corpora
    from kbert.data.files import DataError
    from kbert.data.splits import describe_tasks

    checks = [lambda: describe_tasks(args.source, tasks=None if args.task == "all" else [args.task])]
    if args.task == "all" and args.source == "bundled":
        checks.append(describe_corpora)
    problems = []
    for check in checks:
        try:
            table = check()
        except DataError as err:
            problems += str(err).splitlines()[1:]
            continue
        with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 60):
            print(table.to_string(index=False))
    if problems:
        raise DataError("bad data files:\n" + "\n".join(dict.fromkeys(problems)))


def cmd_finetune_teacher(args, config) -> None:
    from kbert.stages import finetune_teacher

    finetune_teacher.run(config, args.task, args.out, max_train_examples=args.max_train_examples)


def cmd_compress(args, config) -> None:
    from kbert.stages import compress

    report = compress.run(config, args.student, args.out)
    keys = ("family", "kronecker", "low_rank", "shape", "params", "compression_factor", "relative_error_mean")
    print(json.dumps({k: report[k] for k in keys}, indent=2))


def cmd_general_kd(args, config) -> None:
    from kbert.stages import general_kd

    general_kd.run(config, args.student, args.init, args.out, epochs=args.epochs)


def cmd_augment(args, config) -> None:
    from kbert.stages import augment

    print(augment.run(config, args.task, args.out))


def cmd_task_kd(args, config) -> None:
    from kbert.stages import task_kd

    task_kd.run(config, args.task, args.student, args.variant, args.seed, args.init, args.teacher, args.out,
                args.augmented)


def cmd_task_kd_start(args, config) -> None:
    from kbert.stages import task_kd_start

    record = task_kd_start.run(config, args.task, args.student, args.variant, args.seed, args.init, args.teacher,
                               args.out)
    print(json.dumps([{"eval_split": r["eval_split"], "score": r["score"]} for r in record["results"]]))


def cmd_evaluate_ood(args, config) -> None:
    from kbert.stages import evaluate_ood

    evaluate_ood.run(config, args.run, args.out)


def cmd_aggregate(args, config) -> None:
    from kbert.config import ood_splits, unavailable_tasks
    from kbert.report.aggregate import aggregate
    from kbert.retention import majority_frame

    _, unavailable_ood = ood_splits(config)
    aggregate(args.runs, args.out, unavailable=unavailable_tasks(config) + unavailable_ood,
              majority=majority_frame(config), config=config)


def cmd_report(args, config) -> None:
    from kbert.report.figures import write_figures
    from kbert.report.tables import write_tables

    write_tables(args.results, os.path.join(args.results, "tables"))
    write_figures(args.results, args.figures)


def cmd_equal_size(args, config) -> None:
    from kbert.report.equal_size import write

    write(args.runs, args.out, config, speed=args.speed, starts=args.starts)


def cmd_glue_submission(args, config) -> None:
    from kbert.report.submission import write_submission

    names = write_submission(args.runs, args.out)
    print(f"{args.out}: {', '.join(names)} and submission.zip")


def cmd_ladder(args, config) -> None:
    from kbert.ladder import write

    write(args.runs, args.out, config)


def cmd_learning_curve(args, config) -> None:
    from kbert.curves import write

    write(args.runs, args.out, config)


def cmd_bench(args, config=None) -> None:
    from kbert.bench.__main__ import main as bench_main

    bench_main(args.rest)


#: Stages that train a model: they take --device and --precision.
TRAINING_STAGES = ("finetune-teacher", "general-kd", "task-kd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kbert.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True)

    def stage(name, func, help_text, config=True):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--debug", action="store_true", help="show the traceback of an error (also KBERT_DEBUG=1)")
        if config:
            p.add_argument("--config", required=True, help="config YAML (validated before anything runs)")
            p.add_argument("--threads", type=int, default=None, help="torch threads (default: resources.threads)")
        if name in TRAINING_STAGES:
            p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: the config's device)")
            p.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16", "auto"],
                           help="forward-pass precision (default: the config's precision)")
        p.set_defaults(func=func)
        return p

    p = stage("data", cmd_data, "print every task's source, split sizes and status", config=False)
    p.add_argument("--task", default="all")
    p.add_argument("--source", default="bundled", choices=["bundled", "hub"])

    p = stage("finetune-teacher", cmd_finetune_teacher, "fine-tune the pre-trained teacher on one task")
    p.add_argument("--task", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-train-examples", type=int, default=None,
                   help="cap the training rows (a learning-curve point); default: the config's data.max_train_examples")

    p = stage("compress", cmd_compress, "build a student from the pre-trained teacher (SVD init; dense: random)")
    p.add_argument("--student", required=True)
    p.add_argument("--out", required=True)

    p = stage("general-kd", cmd_general_kd, "general distillation on the text corpus")
    p.add_argument("--student", required=True)
    p.add_argument("--init", required=True, help="output dir of the compress stage")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=None,
                   help="train this many whole epochs (the ladder's dose-response), from --init that may be "
                        "an earlier general-KD output; default: the config's epochs and max_steps")

    p = stage("augment", cmd_augment, "TinyBERT data augmentation of one task's training rows")
    p.add_argument("--task", required=True)
    p.add_argument("--out", required=True, help="parquet file")

    p = stage("task-kd", cmd_task_kd, "task distillation (or an ablation variant) for one task and seed")
    for name in ("task", "student", "variant", "init", "teacher", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--augmented", default=None, help="augmentation parquet (variant full_aug only)")

    p = stage("task-kd-start", cmd_task_kd_start, "dev score of the student task KD starts from, before any step")
    for name in ("task", "student", "variant", "init", "teacher", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--seed", type=int, required=True, help="seeds a narrower student's random head, as in task KD")

    p = stage("evaluate-ood", cmd_evaluate_ood, "evaluate one task run on its task's out-of-distribution sets")
    p.add_argument("--run", required=True, help="output dir of finetune-teacher or task-kd")
    p.add_argument("--out", required=True)

    p = stage("aggregate", cmd_aggregate, "collect metrics.json files into results/*.csv")
    p.add_argument("--runs", nargs="+", required=True, help="metrics.json files or run directories")
    p.add_argument("--out", required=True)

    p = stage("report", cmd_report, "paper tables and figures from results/*.csv")
    p.add_argument("--results", required=True)
    p.add_argument("--figures", required=True)

    p = stage("equal-size", cmd_equal_size, "the equal-size comparison: CSVs, table and figure in one directory")
    p.add_argument("--runs", nargs="+", required=True, help="metrics.json files of the sweep and its teachers")
    p.add_argument("--out", required=True)
    p.add_argument("--speed", default=None, help="CSV of python -m kbert.bench equal-size: adds speed.csv/.md/.png")
    p.add_argument("--starts", nargs="+", default=None,
                   help="metrics.json files of task-kd-start: adds start.csv and the table's start-of-task-KD block")

    p = stage("glue-submission", cmd_glue_submission,
              "one model's GLUE test-server files, checked (rows, labels) and zipped")
    p.add_argument("--runs", nargs="+", required=True, help="metrics.json files or run directories of one model")
    p.add_argument("--out", required=True)

    p = stage("ladder", cmd_ladder, "the sanity ladder: CSV, table and figure in one directory")
    p.add_argument("--runs", nargs="+", required=True, help="metrics.json files of the ladder, its teachers and inits")
    p.add_argument("--out", required=True)

    p = stage("learning-curve", cmd_learning_curve, "teacher learning curves: CSV, table and figure in one directory")
    p.add_argument("--runs", nargs="+", required=True, help="metrics.json files of the curve's teacher runs")
    p.add_argument("--out", required=True)

    p = stage("bench", cmd_bench, "benchmarks: layers | models | augment (see python -m kbert.bench -h)", config=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


class Interrupted(Exception):
    """SIGTERM (a scheduler's time limit, snakemake killing its jobs): not a failed job."""


def _interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


# Errors a user can cause (bad config, data, paths, a diverging run, the Hub while
# offline): one line naming the file or key, no traceback.
USER_ERRORS = (ValueError, OSError, ImportError, ArithmeticError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        config = _load(args) if getattr(args, "config", None) else None
        args.func(args, config)
    except (Interrupted, KeyboardInterrupt) as err:
        name = str(err) or "SIGINT"
        print(f"kbert {args.stage}: interrupted ({name}); run it again to resume from its last checkpoint",
              file=sys.stderr)
        return 128 + getattr(signal, name, signal.SIGINT)
    except USER_ERRORS as err:
        if args.debug or os.environ.get("KBERT_DEBUG"):
            raise
        print(f"kbert {args.stage}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
