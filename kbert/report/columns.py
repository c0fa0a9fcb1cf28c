"""The columns of ``results/*.csv`` (docs/architecture.md), the values their key cells
take, and how the report reads those files back."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# Columns of glue.csv / squad.csv (docs/architecture.md); task metrics go after `score`.
LEADING_COLUMNS = ["model", "family", "variant", "augment", "task", "eval_split", "data_status",
                   "n_examples", "seed", "score"]

TRAILING_COLUMNS = ["params", "compression_factor", "flops", "teacher", "preset", "git_commit",
                    "config_hash", "teacher_hash", "data_sha256", "wall_time_s", "notes"]

RECORD_KEYS = ["model", "family", "variant", "augment", "task", "seed", "params",
               "compression_factor", "flops"]        # top-level keys of metrics.json

PROVENANCE_KEYS = ["preset", "git_commit", "config_hash", "teacher_hash", "data_sha256",
                   "wall_time_s"]

# One summary row per group; the other non-metric columns take the group's first value.
SUMMARY_KEYS = ["preset", "model", "family", "variant", "augment", "teacher", "task",
                "eval_split", "data_status"]

SUMMARY_FIRST = ["n_examples", "params", "compression_factor", "flops", "notes"]

TEACHER_FAMILY = "teacher"

MAIN_VARIANTS = ("full", "full_aug")

ABLATION_VARIANTS = ("no_general_kd", "no_task_kd")

UNAVAILABLE = "unavailable"

UNAVAILABLE_REASON = "unavailable offline"

TEXT_KEYS = ("preset", "model", "family", "variant", "teacher", "task", "eval_split",
             "data_status", "subject", "config")

RETENTION_COLUMNS = ["preset", "model", "variant", "augment", "measure", "task", "eval_split",
                     "metric", "student_mean", "teacher", "teacher_mean", "majority",
                     "retention_pct", "covers"]



def metric_columns(frame: pd.DataFrame) -> list[str]:
    """``score`` and every task metric column of a results frame."""
    fixed = set(LEADING_COLUMNS + TRAILING_COLUMNS) - {"score"}
    return ["score"] + [c for c in frame.columns if c not in fixed and c != "score"]



def read_results(results_dir: Path, name: str) -> pd.DataFrame | None:
    """``results_dir/name.csv`` with empty key cells as ''; None when the file is absent."""
    path = Path(results_dir) / f"{name}.csv"
    if not path.exists():
        return None
    return pd.read_csv(path, dtype=dict.fromkeys(TEXT_KEYS, str)).fillna(dict.fromkeys(TEXT_KEYS, ""))
