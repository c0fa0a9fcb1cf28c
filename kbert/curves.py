"""Teacher learning curves: dev score and minutes against training examples.

The issue on results that mean something asks the teachers' training subsets to be sized
from measurements, not guessed. ``config learning_curve`` (target ``learning_curve``)
fine-tunes the teacher of each listed task on each number of training rows; one entry
point, :func:`write` (``python -m kbert.cli learning-curve``), writes into one directory:

    curve.csv         one row per (task, training rows): key dev score and the key metrics
                      it averages, majority class, minutes of the run (its wall time)
    curve.md / .tex   the table;  curve.png / .pdf  score against training rows (log)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from kbert.artifacts import write_csv
from kbert.report import figures, render    # figures selects the Agg backend
from kbert.report.aggregate import find_metric_files
from kbert.report.cells import fmt_number
from kbert.retention import majority_frame, majority_lookup
from kbert.tasks import get_task, task_label

log = logging.getLogger(__name__)


def curve_frame(runs, config: dict) -> pd.DataFrame:
    """One row per teacher run: its main eval split's key score, size and minutes."""
    rows = []
    for path in find_metric_files(runs):
        record = json.loads(Path(path).read_text())
        main = record["results"][0]   # the task's main eval split comes first
        rows.append({"task": record["task"], "train_examples": record["train_examples"],
                     "eval_split": main["eval_split"], "n_examples": main["n_examples"], "score": main["score"],
                     "minutes": record["provenance"]["wall_time_s"] / 60,
                     **{m: main["metrics"][m] for m in get_task(record["task"]).key_metrics}})
    frame = pd.DataFrame(rows)
    majority = majority_lookup(majority_frame(config, sorted(frame["task"].unique())))
    frame["majority"] = [majority.get((t, s, "score")) for t, s in zip(frame["task"], frame["eval_split"])]
    return frame.sort_values(["task", "train_examples"], kind="stable").reset_index(drop=True)


def _metric_name(task: str, metric: str) -> str:
    """"squad_v1_f1" -> "F1", "stsb_pearson" -> "Pearson"."""
    name = metric.removeprefix(task + "_")
    return name.upper() if len(name) <= 3 else name.capitalize()


def _score_cell(task: str, row) -> str:
    """The key score x100, then each key metric when there are several: "55.7 (EM 48.8, F1 62.6)"."""
    cell = f"{100 * row['score']:.1f}"
    metrics = get_task(task).key_metrics
    if len(metrics) > 1:
        cell += " (" + ", ".join(f"{_metric_name(task, m)} {100 * row[m]:.1f}" for m in metrics) + ")"
    return cell


def table(frame: pd.DataFrame) -> render.Table:
    blocks = []
    for task, group in frame.groupby("task", sort=True):
        first = group.iloc[0]
        majority = fmt_number(100 * first["majority"] if first["majority"] is not None else None)
        rows = [[f"{r['train_examples']:,}", _score_cell(task, r), f"{r['minutes']:.1f}"]
                for _, r in group.iterrows()]
        blocks.append((f"{task_label(task)}: majority class {majority}, {first['n_examples']} "
                       f"{first['eval_split']} examples", ["Training rows", "Dev score", "Minutes"], rows))
    notes = [
        "The teacher fine-tuned as config teacher.finetune says (epochs, lr, batch), on the first N rows of the "
        "training split (a fixed-seed random subset, each contained in the larger ones; N past the split's size is the whole split).",
        "Dev score x100: the task's key score on its main eval split, the mean of its key metrics where it has "
        "several (MRPC: F1 and accuracy; STS-B: Pearson and Spearman; SQuAD: EM and F1), which follow it in brackets.",
        "Minutes: the run's wall time on this machine, evaluation included (the threads of resources.per_rule).",
    ]
    return render.Table("curve", "Teacher learning curves: dev score against training rows", blocks, notes)


def figure(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    panels = list(frame.groupby("task", sort=True))
    fig, axes = figures.grid(len(panels), width=4.0)
    for ax, (task, group) in zip(axes, panels):
        ax.plot(group["train_examples"], 100 * group["score"], marker="o", color="black", label="Teacher")
        for _, r in group.iterrows():
            ax.annotate(f"{r['minutes']:.0f} min", (r["train_examples"], 100 * r["score"]), fontsize=6,
                        textcoords="offset points", xytext=(0, 5), ha="center")
        figures.score_panel(ax, task_label(task), "training rows (log)", majority=group.iloc[0]["majority"])
        ax.set_xscale("log")
        # Ticks at the measured sizes only: log-axis minor labels (2x10^3, 3x10^3...) overlap.
        ax.xaxis.set_major_locator(FixedLocator(group["train_examples"].tolist()))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.tick_params(axis="x", labelsize=6)
    caption = "Teacher fine-tuning on growing training subsets; labels: minutes per run on this machine."
    return figures.save_panels(fig, axes, out_dir, "curve", caption, legend_width=0.2)


def write(runs, out_dir: str | Path, config: dict) -> pd.DataFrame:
    """The curves' CSV, table and figure into ``out_dir`` (see the module docstring)."""
    out_dir = Path(out_dir)
    frame = curve_frame(runs, config)
    write_csv(out_dir / "curve.csv", frame)
    rendered = table(frame)
    render.write_table(rendered, out_dir)
    figure(frame, out_dir)
    log.info("learning curves: %d runs into %s", len(frame), out_dir)
    return frame
