"""Our cells: one model's number for one paper column from the ``*_summary.csv`` rows,
and how numbers, marks and our setup are printed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from kbert import retention as ret
from kbert.report.columns import UNAVAILABLE, UNAVAILABLE_REASON
from kbert.tasks import OOD_SPLITS

MISSING = "–"

DEV_MARK = "*"

MAJORITY_MARK = "†"

MAJORITY_NOTE = (f"{MAJORITY_MARK} Within {100 * ret.NEAR_MAJORITY:.0f} points of the majority-class "
                 "score (always the most frequent training label; \"no answer\" on SQuAD; 0 for MCC "
                 "and correlations): no better than a constant.")



def fmt_number(value, digits: int = 1) -> str:
    return MISSING if value is None or pd.isna(value) else f"{value:.{digits}f}"



def fmt_printed(value) -> str:
    """A published cell exactly as printed (YAML keeps 83.0 vs 67)."""
    return MISSING if value is None else str(value)



def fmt_count(value, unit: float, suffix: str) -> str:
    return MISSING if value is None or pd.isna(value) else f"{value / unit:.2f}{suffix}"



def fmt_with_count(value: float, count: int) -> str:
    """A retention with the number of columns or tasks it averages: ``74.5 (8)``."""
    return MISSING if pd.isna(value) else f"{value:.1f} ({count})"



@dataclass
class Cell:
    """One table cell of ours: a mean (fraction), sd and seed count, or a text."""

    value: float = math.nan
    sd: float = math.nan
    n: int = 0
    text: str = ""
    mark: str = ""
    eval_split: str = ""
    metric: str = ""

    def show(self) -> str:
        if self.text:
            return self.text
        if pd.isna(self.value):
            return MISSING
        spread = f" ± {100 * self.sd:.1f}" if self.n > 1 and not pd.isna(self.sd) else ""
        return f"{100 * self.value:.1f}{spread}{self.mark}"



def split_kind(eval_split: str) -> str:
    return "test" if str(eval_split).startswith("test") else "dev"



def split_tag(eval_split: str) -> str:
    """What a paper column's ``split_tag`` matches: an out-of-distribution set's name, MNLI's
    matched / mismatched half of an eval split name, else ''."""
    name = str(eval_split)
    if name in OOD_SPLITS:
        return name
    return "mismatched" if "mismatched" in name else "matched" if "matched" in name else ""



def our_cell(rows: pd.DataFrame, column: dict, table_split: str) -> Cell:
    """Our value for one column from one model's summary rows; the paper's split preferred."""
    if "task" not in column:
        return Cell()
    rows = rows[(rows["task"] == column["task"])
                & ((rows["eval_split"].map(split_tag) == column.get("split_tag", ""))
                   | (rows["data_status"] == UNAVAILABLE))]
    if rows.empty:
        return Cell()
    if (rows["data_status"] == UNAVAILABLE).all():
        reason = rows["notes"].dropna().iloc[0] if rows["notes"].notna().any() else UNAVAILABLE_REASON
        return Cell(text=f"n/a ({reason})")
    metric = column["metric"]
    if f"{metric}_mean" not in rows:
        return Cell()
    rows = rows[rows[f"{metric}_mean"].notna()]
    if rows.empty:
        return Cell()
    same = rows[rows["eval_split"].map(split_kind) == table_split]
    row = (same if not same.empty else rows).sort_values("eval_split").iloc[0]
    mark = "" if split_kind(row["eval_split"]) == table_split else DEV_MARK
    return Cell(row[f"{metric}_mean"], row[f"{metric}_sd"], int(row["n"]), mark=mark,
                eval_split=row["eval_split"], metric=metric)



def teacher_value(teacher_rows: pd.DataFrame, column: dict, cell: Cell) -> float:
    """Our teacher's mean for the same task, split and metric as ``cell``."""
    if not cell.metric or teacher_rows.empty:
        return math.nan
    match = teacher_rows[(teacher_rows["task"] == column["task"])
                         & (teacher_rows["eval_split"] == cell.eval_split)]
    column_name = f"{cell.metric}_mean"
    if match.empty or column_name not in match:
        return math.nan
    return match[column_name].iloc[0]



def our_setup(rows: pd.DataFrame) -> str:
    """Where our setup differs from the paper's: teacher, data, split, seeds, preset."""
    scored = rows[rows["n"] > 0] if "n" in rows else rows
    teacher = ", ".join(sorted(set(rows["teacher"]) - {""})) or "unknown"
    data = "/".join(sorted(set(scored["data_status"]) - {""})) or MISSING
    splits = "/".join(sorted(set(scored["eval_split"]) - {""})) or MISSING
    seeds = sorted(set(scored["n"].astype(int))) if not scored.empty else [0]
    seed_text = f"n={seeds[0]}" if len(seeds) == 1 else f"n={seeds[0]}-{seeds[-1]}"
    preset = ", ".join(sorted(set(rows["preset"]) - {""})) or MISSING
    return (f"teacher {teacher}; data {data}; split {splits}; seeds {seed_text}"
            f"{' (mean ± sd)' if seeds[-1] > 1 else ''}; preset {preset}")
