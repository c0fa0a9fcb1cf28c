"""Every published number we compare with: ``published.yaml`` (with its citations), the
column catalogue, and the column sets of the paper's tables."""

from __future__ import annotations

from pathlib import Path

import yaml

PUBLISHED_PATH = Path(__file__).with_name("published.yaml")



def load_published(path: str | Path | None = None) -> dict:
    """``published.yaml`` with every row given an ``id`` (``model`` or ``model:variant``)."""
    published = yaml.safe_load(Path(path or PUBLISHED_PATH).read_text())
    for table in published["tables"].values():
        for row in table["rows"]:
            row["id"] = row["model"] + (f":{row['variant']}" if "variant" in row else "")
    return published



def published_row(published: dict, table_id: str, row_id: str) -> dict:
    rows = [r for r in published["tables"][table_id]["rows"] if r["id"] == row_id]
    if not rows:
        raise KeyError(f"published.yaml: table {table_id} has no row {row_id}")
    return rows[0]



def column_spec(published: dict, key: str | dict) -> dict:
    """A column as a dict: catalogue entry (by key) or a table-local ``{key, label}``."""
    if isinstance(key, dict):
        return key
    return {"key": key, **published["columns"][key]}



def paper_teacher_row(published: dict, table_id: str) -> dict | None:
    teachers = [r for r in published["tables"][table_id]["rows"] if r.get("role") == "teacher"]
    return teachers[0] if teachers else None



GLUE_TEST = ["params", "mnli_m", "mnli_mm", "sst2", "mrpc_f1", "cola", "qqp_f1", "qnli", "rte",
             "stsb_spearman", "avg"]

GLUE_DEV = ["params", "mnli_m", "mnli_mm", "sst2", "mrpc_f1", "cola", "qqp_acc", "qnli", "rte",
            "stsb_spearman", "avg"]

# The columns of the paper's GLUE average (Table 2; no WNLI), for paper-way retention.
PAPER_GLUE_COLUMNS = [k for k in GLUE_TEST if k not in ("params", "avg")]

SQUAD = ["squad_v1_em", "squad_v1_f1", "squad_v2_em", "squad_v2_f1"]

ABLATION = ["mnli_m", "sst2", "mrpc_f1"]

OOD = ["mrpc_paws", "sst2_imdb", "rte_hans"]
