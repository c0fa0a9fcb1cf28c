"""``retention.csv``: raw, margin and paper-way retention of every student, each labelled
with how it was computed and what it covers (the definitions are :mod:`kbert.retention`)."""

from __future__ import annotations

import math

import pandas as pd

from kbert import retention as ret
from kbert.report.cells import our_cell, teacher_value
from kbert.report.columns import RETENTION_COLUMNS, SUMMARY_KEYS, TEACHER_FAMILY
from kbert.report.published import PAPER_GLUE_COLUMNS, column_spec, load_published
from kbert.tasks import GLUE_TASKS

def retention_pct(student: float, teacher: float) -> float:
    """Student score as % of the teacher's; NaN when either is missing or teacher <= 0."""
    if pd.isna(student) or pd.isna(teacher) or teacher <= 0:
        return math.nan
    return 100.0 * student / teacher



def mean_or_nan(values) -> float:
    values = [v for v in values if not pd.isna(v)]
    return sum(values) / len(values) if values else math.nan



def raw_retention(summary: pd.DataFrame) -> pd.DataFrame:
    """Every student metric mean next to its teacher's (same preset, task, split).

    Assumes one teacher per preset, as every config has. SQuAD v2 null-score thresholds
    (``*_thresh``) are not scores and get no retention.
    """
    means = [c for c in summary.columns if c.endswith("_mean") and "_thresh" not in c]
    keys = ["preset", "task", "eval_split"]
    long = summary.melt(id_vars=SUMMARY_KEYS, value_vars=means, var_name="metric",
                        value_name="mean").dropna(subset=["mean"])
    long["metric"] = long["metric"].str.removesuffix("_mean")
    is_teacher = long["family"] == TEACHER_FAMILY
    teachers = long[is_teacher][keys + ["metric", "teacher", "mean"]].rename(
        columns={"mean": "teacher_mean"})
    students = long[~is_teacher].drop(columns="teacher").rename(columns={"mean": "student_mean"})
    merged = students.merge(teachers, on=keys + ["metric"], how="left")
    merged["measure"] = "raw"
    merged["retention_pct"] = [retention_pct(s, t) for s, t in
                               zip(merged["student_mean"], merged["teacher_mean"])]
    return merged



def margin_pct(student: float, teacher: float, task: str, split: str, majority: dict) -> float:
    """Margin retention x100 on the key score; NaN where the majority score is unknown."""
    if (task, split, "score") not in majority:
        return math.nan
    return 100 * ret.margin_retention(student, teacher, majority[task, split, "score"])



def task_margins(rows: pd.DataFrame) -> dict[str, float]:
    """Margin retention per task from one model's ``margin`` rows: a task with two eval
    splits (MNLI) is one task, the mean of the splits that count."""
    return {task: mean_or_nan(group["retention_pct"]) for task, group in rows.groupby("task")}



def headline_rows(margins: pd.DataFrame, summary: pd.DataFrame,
                  published: dict) -> list[dict]:
    """Per student: mean margin retention over the GLUE tasks that count, and the paper's
    retention (ratio of GLUE averages over the paper's GLUE columns that we have)."""
    columns = [column_spec(published, k) for k in PAPER_GLUE_COLUMNS]
    model_keys = ["preset", "model", "variant", "augment"]
    teachers = summary[summary["family"] == TEACHER_FAMILY]
    students = summary[summary["family"] != TEACHER_FAMILY]
    out = []
    for key, rows in students.groupby(model_keys, sort=True):
        ident = dict(zip(model_keys, key))
        glue = margins[(margins[model_keys] == pd.Series(ident)).all(axis=1)
                       & margins["task"].isin(GLUE_TASKS)]
        value, counted = ret.mean_margin_retention(task_margins(glue))
        out.append(dict(ident, measure="margin_mean", metric="score", retention_pct=value,
                        covers=", ".join(counted)))
        preset_teachers = teachers[teachers["preset"] == ident["preset"]]
        student, teacher = paper_columns(rows, preset_teachers, columns)
        ratio, covered = ret.paper_way_retention(student, teacher)
        labels = {c["key"]: c["label"] for c in columns}
        out.append(dict(ident, measure="paper_way", metric="glue_avg",
                        student_mean=mean_or_nan(student[c] for c in covered),
                        teacher_mean=mean_or_nan(teacher[c] for c in covered),
                        retention_pct=100 * ratio, covers=", ".join(labels[c] for c in covered)))
    return out



def paper_columns(rows: pd.DataFrame, teacher_rows: pd.DataFrame,
                  columns: list[dict]) -> tuple[dict[str, float], dict[str, float]]:
    """(student, teacher) scores by column key on the paper's columns, dev split."""
    cells = {c["key"]: our_cell(rows, c, "dev") for c in columns}
    return ({k: cell.value for k, cell in cells.items()},
            {c["key"]: teacher_value(teacher_rows, c, cells[c["key"]]) for c in columns})



def retention_frame(summary: pd.DataFrame, majority: pd.DataFrame | None = None,
                    published: dict | None = None) -> pd.DataFrame:
    """``retention.csv``: one labelled ``measure`` per row (docs/outputs.md).

    ``raw``: student / teacher per metric. ``margin``: (student - majority) / (teacher -
    majority) on the key score, per eval split, empty where the teacher is less than 5
    points above the majority (or the majority is unknown). ``margin_mean``: the headline,
    the mean over the GLUE tasks that count (``covers``). ``paper_way``: the paper's ratio
    of GLUE averages over the columns in ``covers``.
    """
    lookup = ret.majority_lookup(majority)
    raw = raw_retention(summary)
    raw["majority"] = [lookup.get(k, math.nan) for k in zip(raw["task"], raw["eval_split"],
                                                            raw["metric"])]
    margins = raw[raw["metric"] == "score"].assign(measure="margin")
    margins["retention_pct"] = [margin_pct(s, t, task, split, lookup) for s, t, task, split in
                                zip(margins["student_mean"], margins["teacher_mean"],
                                    margins["task"], margins["eval_split"])]
    headline = pd.DataFrame(headline_rows(margins, summary, published or load_published()))
    frame = pd.concat([raw, margins, headline], ignore_index=True)
    return frame.reindex(columns=RETENTION_COLUMNS).reset_index(drop=True)
