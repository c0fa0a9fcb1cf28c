"""How much of its teacher a student keeps, and where a score is no better than a constant.

Three facts live here and nowhere else (docs/DESIGN §5, "How to read a result"):

- the **majority-class score** of every task and eval split (:func:`majority_frame`,
  written to ``results/majority.csv`` and read by the report and the equal-size study);
- **margin retention**, the headline: (student - majority) / (teacher - majority) on a
  task's key score, counted only where the teacher beats the majority by
  ``MIN_TEACHER_MARGIN`` (:func:`margin_retention`, :func:`mean_margin_retention`);
- **paper-way retention**: the paper's ratio of GLUE averages, student average over
  teacher average on the same columns (:func:`paper_way_retention`), for the comparison
  with its printed 97.7% / 93.3%.

Scores are fractions (0.784), as in the result CSVs.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kbert.metrics import compute_metrics, key_score
from kbert.tasks import get_task

MIN_TEACHER_MARGIN = 0.05  # a teacher < 5 points above the majority has nothing to distil
NEAR_MAJORITY = 0.02       # a score within 2 points of the majority is marked "at majority"


def baseline(majority) -> float:
    """The constant-prediction score to measure margins from. Tasks without one
    (regression: a constant has no correlation) have 0, as MCC has."""
    return 0.0 if majority is None or pd.isna(majority) else float(majority)


def margin_retention(student: float, teacher: float, majority) -> float:
    """(student - majority) / (teacher - majority); NaN when either score is missing or
    the teacher beats the majority by less than ``MIN_TEACHER_MARGIN`` (then the ratio
    divides by almost nothing, or rewards a student for matching a teacher that learnt
    nothing)."""
    base = baseline(majority)
    if pd.isna(student) or pd.isna(teacher) or teacher - base < MIN_TEACHER_MARGIN:
        return math.nan
    return (student - base) / (teacher - base)


def mean_margin_retention(per_task: dict[str, float]) -> tuple[float, list[str]]:
    """The headline: mean margin retention over the tasks that count, and those tasks."""
    counted = sorted(task for task, value in per_task.items() if not pd.isna(value))
    if not counted:
        return math.nan, []
    return sum(per_task[t] for t in counted) / len(counted), counted


def paper_way_retention(student: dict[str, float], teacher: dict[str, float]) -> tuple[float, list[str]]:
    """The paper's retention: mean of the student's columns over the mean of the teacher's,
    on the columns both have (scores by column key); also returns those columns."""
    columns = [c for c in student if not pd.isna(student[c]) and not pd.isna(teacher.get(c))]
    if not columns:
        return math.nan, []
    teacher_avg = sum(teacher[c] for c in columns) / len(columns)
    if teacher_avg <= 0:
        return math.nan, columns
    return sum(student[c] for c in columns) / len(columns) / teacher_avg, columns


def at_majority(score: float, majority) -> bool:
    """Whether ``score`` is within ``NEAR_MAJORITY`` of the constant-prediction score."""
    return not pd.isna(score) and abs(score - baseline(majority)) <= NEAR_MAJORITY + 1e-12


def majority_class_metrics(task: str, data_cfg: dict) -> dict[str, dict[str, float | None]]:
    """Per eval split, every metric (and ``score``, the key score) of a constant answer:
    what a model reaches without learning the task.

    Classification: always the most frequent training label. Span tasks: always "no
    answer" (0 on SQuAD v1.1, the share of unanswerable questions on v2.0). Regression:
    None, since a constant prediction has no correlation.
    """
    from kbert.data.task_data import eval_rows, train_rows   # loads data (no torch)

    spec = get_task(task)
    if spec.kind == "regression":
        return {split: dict.fromkeys((*spec.metrics, "score")) for split in spec.eval_splits}
    if spec.kind == "classification":
        majority = int(np.bincount(train_rows(task, data_cfg)[spec.label_column]).argmax())
    out = {}
    for split in spec.eval_splits:
        rows = eval_rows(task, split, data_cfg)
        if spec.kind == "span":
            metrics = compute_metrics(task, {qid: "" for qid in rows["id"]},
                                      {qid: a["text"] for qid, a in zip(rows["id"], rows["answers"])})
        else:
            labels = np.asarray(rows[spec.label_column])
            metrics = compute_metrics(task, np.full_like(labels, majority), labels)
        out[split] = {**metrics, "score": key_score(task, metrics)}
    return out


MAJORITY_COLUMNS = ["task", "eval_split", "metric", "majority"]


def majority_frame(config: dict, tasks=None) -> pd.DataFrame:
    """``majority.csv``: one row per (task, eval split, metric), ``metric`` ``score`` being
    the key score; empty ``majority`` where a constant has no score (regression).
    ``tasks``: default every configured task that has data."""
    from kbert.config import unavailable_tasks
    from kbert.data.task_data import data_settings

    if tasks is None:
        tasks = [t for t in config["tasks"] if t not in unavailable_tasks(config)]

    rows = [{"task": task, "eval_split": split, "metric": metric, "majority": value}
            for task in sorted(set(tasks))
            for split, metrics in majority_class_metrics(task, data_settings(config, task)).items()
            for metric, value in metrics.items()]
    return pd.DataFrame(rows, columns=MAJORITY_COLUMNS)


def majority_lookup(majority: pd.DataFrame | None) -> dict[tuple[str, str, str], float]:
    """(task, eval_split, metric) -> majority score, from a ``majority.csv`` frame."""
    if majority is None:
        return {}
    return {(t, s, m): v for t, s, m, v in majority[MAJORITY_COLUMNS].itertuples(index=False)}
