"""Aggregate run outputs into ``results/*.csv``, regenerate the paper's tables, draw figures.

Three entry points, called by ``kbert.cli`` (or ``python -m kbert.report``):

- :func:`aggregate` reads every ``metrics.json`` (format in docs/architecture.md) and writes
  ``glue.csv``, ``squad.csv``, ``teacher.csv``, ``ablation.csv``, their ``*_summary.csv``
  (mean, sd, median, n over seeds), ``majority.csv`` (constant-prediction scores, when
  given) and ``retention.csv`` (raw, margin and paper-way retention, each labelled).
- :func:`write_tables` writes ``tables/*.md`` and ``tables/*.tex``: our rows next to the
  numbers printed in the papers (``kbert/published.yaml``).
- :func:`write_figures` writes ``*.png`` and ``*.pdf``, skipping any figure whose input CSV
  is absent.

Everything labelled "ours" comes from the CSVs; everything labelled "paper" from
``published.yaml``. Nothing else is ever plotted or printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the backend)
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from kbert import retention as ret  # noqa: E402
from kbert.provenance import atomic_path, write_csv  # noqa: E402
from kbert.tasks import GLUE_TASKS, get_task  # noqa: E402

log = logging.getLogger(__name__)

PUBLISHED_PATH = Path(__file__).with_name("published.yaml")

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
MISSING = "–"
DEV_MARK = "*"
MAJORITY_MARK = "†"
MAJORITY_NOTE = (f"{MAJORITY_MARK} Within {100 * ret.NEAR_MAJORITY:.0f} points of the majority-class "
                 "score (always the most frequent training label; \"no answer\" on SQuAD; 0 for MCC "
                 "and correlations): no better than a constant.")


# --------------------------------------------------------------------------- published


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


# --------------------------------------------------------------------------- aggregate


def find_metric_files(paths) -> list[Path]:
    """Every ``metrics.json`` named directly or found below a directory, sorted, unique."""
    found = set()
    for path in map(Path, paths):
        found.update(path.rglob("metrics.json") if path.is_dir() else [path])
    return sorted(found)


def flatten_metrics(record: dict) -> list[dict]:
    """One row per evaluated split of one ``metrics.json``; [] for files without results."""
    provenance = record.get("provenance") or {}
    base = {key: record.get(key) for key in RECORD_KEYS}
    base.update({key: provenance.get(key) for key in PROVENANCE_KEYS})
    base["teacher"] = record.get("teacher") or provenance.get("teacher")
    rows = []
    for result in record.get("results") or []:
        row = dict(base, eval_split=result.get("eval_split"),
                   data_status=result.get("data_status"), n_examples=result.get("n_examples"),
                   score=result.get("score"), notes=result.get("notes"))
        row.update(result.get("metrics") or {})
        rows.append(row)
    return rows


def unavailable_rows(unavailable, rows: list[dict]) -> list[dict]:
    """Rows with empty metrics for tasks that have no data, one per model and main variant.

    ``unavailable`` holds task names or ``{"task": ..., "reason": ...}`` dicts.
    """
    combo_keys = ["preset", "model", "family", "variant", "augment", "teacher"]
    combos = {tuple(r.get(k) for k in combo_keys) for r in rows
              if r.get("variant") in MAIN_VARIANTS or r.get("family") == TEACHER_FAMILY
              or r.get("variant") is None}
    present = {(tuple(r.get(k) for k in combo_keys), r.get("task")) for r in rows}
    out = []
    for entry in unavailable:
        entry = {"task": entry} if isinstance(entry, str) else dict(entry)
        reason = entry.get("reason", UNAVAILABLE_REASON)
        for combo in sorted(combos or {(None,) * len(combo_keys)}, key=str):
            if (combo, entry["task"]) not in present:
                out.append(dict(zip(combo_keys, combo), task=entry["task"],
                                data_status=UNAVAILABLE, notes=reason))
    return out


def fill_teacher(frame: pd.DataFrame) -> pd.DataFrame:
    """Fill the ``teacher`` column: a teacher row's own name (its ``teacher`` field, else its
    model); a student without one gets the name of its preset's teacher."""
    frame = frame.copy()
    is_teacher = frame["family"] == TEACHER_FAMILY
    frame.loc[is_teacher, "teacher"] = frame.loc[is_teacher, "teacher"].fillna(
        frame.loc[is_teacher, "model"])
    teachers = frame[is_teacher].groupby("preset", dropna=False)["teacher"].unique()
    for preset, names in teachers.items():
        if len(names) == 1:
            same_preset = frame["preset"].isna() if pd.isna(preset) else frame["preset"] == preset
            frame.loc[same_preset & frame["teacher"].isna(), "teacher"] = names[0]
    return frame


def order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    fixed = LEADING_COLUMNS + TRAILING_COLUMNS
    metrics = sorted(c for c in frame.columns if c not in fixed)
    frame = frame.reindex(columns=LEADING_COLUMNS + metrics + TRAILING_COLUMNS)
    for column in ("seed", "n_examples", "params", "flops"):
        values = pd.to_numeric(frame[column])
        if (values.dropna() % 1 == 0).all():       # integers stay integers despite empty cells
            frame[column] = values.astype("Int64")
    return frame


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """``score`` and every task metric column of a results frame."""
    fixed = set(LEADING_COLUMNS + TRAILING_COLUMNS) - {"score"}
    return ["score"] + [c for c in frame.columns if c not in fixed and c != "score"]


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Seeds aggregated: ``<metric>_mean``, ``_sd`` (ddof 1), ``_median``; ``n`` scored seeds."""
    metrics = metric_columns(frame)
    stats = [f"{m}_{s}" for m in metrics for s in ("mean", "sd", "median")]
    if frame.empty:
        return pd.DataFrame(columns=SUMMARY_KEYS + SUMMARY_FIRST + ["n", "seeds"] + stats)
    grouped = frame.groupby(SUMMARY_KEYS, dropna=False, sort=True)
    out = grouped[SUMMARY_FIRST].first()
    out["n"] = grouped["score"].count()
    out["seeds"] = grouped["seed"].agg(lambda s: ";".join(str(x) for x in sorted(s.dropna())))
    for m in metrics:
        out[f"{m}_mean"] = grouped[m].mean()
        out[f"{m}_sd"] = grouped[m].std(ddof=1)
        out[f"{m}_median"] = grouped[m].median()
    return out.reset_index()


def retention_pct(student: float, teacher: float) -> float:
    """Student score as % of the teacher's; NaN when either is missing or teacher <= 0."""
    if pd.isna(student) or pd.isna(teacher) or teacher <= 0:
        return math.nan
    return 100.0 * student / teacher


RETENTION_COLUMNS = ["preset", "model", "variant", "augment", "measure", "task", "eval_split",
                     "metric", "student_mean", "teacher", "teacher_mean", "majority",
                     "retention_pct", "covers"]


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


def prune_metrics(part: pd.DataFrame) -> pd.DataFrame:
    """Drop metric columns that no row of this file has (glue.csv has no SQuAD columns)."""
    empty = [m for m in metric_columns(part)[1:] if part[m].isna().all()]
    return part.drop(columns=empty)


def split_results(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The four result files as filtered views of all rows."""
    is_squad = frame["task"].astype(str).str.startswith("squad")
    is_ablated = frame["variant"].isin(ABLATION_VARIANTS)
    keys = pd.MultiIndex.from_frame(frame[["preset", "model", "task"]])
    in_ablation = is_ablated | ((frame["variant"] == "full")
                                & keys.isin(keys[is_ablated.to_numpy()]))
    return {"glue": frame[~is_squad], "squad": frame[is_squad],
            "teacher": frame[frame["family"] == TEACHER_FAMILY], "ablation": frame[in_ablation]}


def aggregate(runs, out_dir: str | Path, unavailable=(),
              majority: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Flatten every ``metrics.json`` under ``runs`` into ``out_dir/*.csv``.

    ``runs``: run directories and/or ``metrics.json`` paths. ``unavailable``: task names (or
    ``{"task", "reason"}`` dicts) that have no data; they get rows with empty metrics and
    ``data_status = unavailable``. ``majority``: the ``majority.csv`` frame
    (:func:`kbert.retention.majority_frame`); without it there is no margin retention.
    Returns the written frames by file stem.
    """
    rows = []
    for path in find_metric_files(runs):
        rows.extend(flatten_metrics(json.loads(Path(path).read_text())))
    rows.extend(unavailable_rows(unavailable, rows))
    frame = fill_teacher(order_columns(pd.DataFrame(rows)))
    frame = frame.sort_values(["task", "model", "variant", "seed", "eval_split"],
                              na_position="first", kind="stable").reset_index(drop=True)
    written = {}
    for name, part in split_results(frame).items():
        part = prune_metrics(part)
        written[name] = part
        written[f"{name}_summary"] = summarise(part)
    if majority is not None:
        written["majority"] = majority
    written["retention"] = retention_frame(
        pd.concat([written["glue_summary"], written["squad_summary"]], ignore_index=True), majority)
    out_dir = Path(out_dir)
    for name, part in written.items():
        write_csv(out_dir / f"{name}.csv", part)
    log.info("aggregated %d rows into %s", len(frame), out_dir)
    return written


def write_retention(results_dir: str | Path, config_path: str | Path) -> pd.DataFrame:
    """Recompute ``majority.csv`` (from the config's data settings) and ``retention.csv``
    from the summaries already in ``results_dir``."""
    from kbert.config import load_config

    results_dir = Path(results_dir)
    majority = ret.majority_frame(load_config(config_path))
    summary = pd.concat([read_results(results_dir, f"{name}_summary")
                         for name in ("glue", "squad")], ignore_index=True)
    retention = retention_frame(summary, majority)
    write_csv(results_dir / "majority.csv", majority)
    write_csv(results_dir / "retention.csv", retention)
    return retention


# --------------------------------------------------------------------------- table model


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


@dataclass
class Table:
    """A rendered table: title, blocks of (heading, header, rows), footnotes."""

    name: str
    title: str
    blocks: list[tuple[str, list[str], list[list[str]]]]
    notes: list[str] = field(default_factory=list)


@dataclass
class Layout:
    """Which published rows, which of our rows, and which columns one regenerated table has."""

    name: str
    title: str
    split: str                      # the paper's split: test | dev
    columns: list[str]              # catalogue keys of published.yaml
    paper: list[tuple[str, str]]    # (published table, row id or "*")
    summary: str                    # which *_summary.csv our rows come from
    paper_teacher: tuple[str, str] | None = None  # for published tables without a teacher row
    variants: tuple[str, ...] = MAIN_VARIANTS
    cf_range: tuple[float, float] | None = None   # students with CF in [low, high) (or a
    #                                               model named by a paper row); None: all
    notes: list[str] = field(default_factory=list)


GLUE_TEST = ["params", "mnli_m", "mnli_mm", "sst2", "mrpc_f1", "cola", "qqp_f1", "qnli", "rte",
             "stsb_spearman", "avg"]
GLUE_DEV = ["params", "mnli_m", "mnli_mm", "sst2", "mrpc_f1", "cola", "qqp_acc", "qnli", "rte",
            "stsb_spearman", "avg"]
# The columns of the paper's GLUE average (Table 2; no WNLI), for paper-way retention.
PAPER_GLUE_COLUMNS = [k for k in GLUE_TEST if k not in ("params", "avg")]
SQUAD = ["squad_v1_em", "squad_v1_f1", "squad_v2_em", "squad_v2_f1"]
ABLATION = ["mnli_m", "sst2", "mrpc_f1"]

LAYOUTS = [
    Layout("table2_glue_cf_lt_10", "Table 2: GLUE, compression factor < 10", "test", GLUE_TEST,
           [("kb_table2", "*")], "glue", cf_range=(0, 10)),
    Layout("table3_glue_extreme", "Table 3: GLUE, extreme compression", "test", GLUE_TEST,
           [("kb_table3", "*"), ("tb_table1", "tinybert_4"), ("mobilebert_glue", "mobilebert_tiny")],
           "glue", paper_teacher=("kb_table3", "bert_base"), cf_range=(10, math.inf)),
    Layout("table4_7_glue_dev", "Tables 4 and 7: GLUE dev", "dev", GLUE_DEV,
           [("kb_table4", "*"), ("kb_table7", "*"), ("tb_ablation", "tinybert_4:full")], "glue",
           notes=["The paper prints no BERT_BASE dev row, so paper rows have no retention here."]),
    Layout("table5_squad", "Table 5: SQuAD dev", "dev", SQUAD,
           [("kb_table5", "*"), ("mobilebert_squad", "mobilebert_tiny")], "squad",
           paper_teacher=("kb_table5", "bert_base")),
    Layout("table6_ablation", "Table 6: ablation of general (pre-training) and task KD, GLUE dev",
           "dev", ABLATION,
           [("kb_table6", "*"), ("tb_ablation", "tinybert_4:full"),
            ("tb_ablation", "tinybert_4:no_general_kd"), ("tb_ablation", "tinybert_4:no_task_kd")],
           "ablation", variants=("full",) + ABLATION_VARIANTS,
           notes=["Variants: full = general KD then task KD; no_general_kd = task KD from the "
                  "SVD initialisation; no_task_kd = general-KD student fine-tuned on labels only."]),
]


# --------------------------------------------------------------------------- our cells


def split_kind(eval_split: str) -> str:
    return "test" if str(eval_split).startswith("test") else "dev"


def split_tag(eval_split: str) -> str:
    """MNLI's matched / mismatched half of an eval split name; '' for other tasks."""
    name = str(eval_split)
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


# --------------------------------------------------------------------------- formatting


def fmt_number(value, digits: int = 1) -> str:
    return MISSING if value is None or pd.isna(value) else f"{value:.{digits}f}"


def fmt_printed(value) -> str:
    """A published cell exactly as printed (YAML keeps 83.0 vs 67)."""
    return MISSING if value is None else str(value)


def fmt_count(value, unit: float, suffix: str) -> str:
    return MISSING if value is None or pd.isna(value) else f"{value / unit:.2f}{suffix}"


def mean_or_nan(values) -> float:
    values = [v for v in values if not pd.isna(v)]
    return sum(values) / len(values) if values else math.nan


# --------------------------------------------------------------------------- score tables


TEXT_KEYS = ("preset", "model", "family", "variant", "teacher", "task", "eval_split",
             "data_status", "subject", "config")


def read_results(results_dir: Path, name: str) -> pd.DataFrame | None:
    """``results_dir/name.csv`` with empty key cells as ''; None when the file is absent."""
    path = Path(results_dir) / f"{name}.csv"
    if not path.exists():
        return None
    return pd.read_csv(path, dtype=dict.fromkeys(TEXT_KEYS, str)).fillna(dict.fromkeys(TEXT_KEYS, ""))


def paper_rows(published: dict, layout: Layout) -> list[tuple[str, dict]]:
    out = []
    for table_id, row_id in layout.paper:
        rows = published["tables"][table_id]["rows"]
        out.extend((table_id, r) for r in rows if row_id in ("*", r["id"]))
    return out


def paper_row_cells(published: dict, layout: Layout, table_id: str, row: dict,
                    columns: list[dict]) -> tuple[list[str], list[str]]:
    """The main-table cells and retention cells of one published row."""
    teacher = paper_teacher_row(published, table_id)
    if teacher is None and layout.paper_teacher:
        teacher = published_row(published, *layout.paper_teacher)
    values = [row["values"].get(c["key"]) for c in columns]
    scores = {c["key"]: float(v) for c, v in zip(columns, values)
              if "task" in c and isinstance(v, (int, float))}
    teacher_scores = {k: teacher["values"].get(k) if teacher else None for k in scores}
    teacher_scores = {k: float(v) if isinstance(v, (int, float)) else math.nan
                      for k, v in teacher_scores.items()}
    retention = [retention_pct(scores.get(c["key"], math.nan), teacher_scores.get(c["key"], math.nan))
                 for c in columns if "task" in c]
    ratio, covered = ret.paper_way_retention(scores, teacher_scores)
    source = published["tables"][table_id]
    label = row["label"] + (" (teacher)" if row.get("role") == "teacher" else "")
    main = [label, f"paper: {source['ref']}"]
    main += [fmt_printed(v) for v in values]
    main += [MISSING, fmt_with_count(100 * ratio, len(covered)),
             row.get("setup", source.get("setup", MISSING))]
    return main, [label] + [fmt_number(r) for r in retention]


def fmt_with_count(value: float, count: int) -> str:
    """A retention with the number of columns or tasks it averages: ``74.5 (8)``."""
    return MISSING if pd.isna(value) else f"{value:.1f} ({count})"


def our_cells(rows: pd.DataFrame, columns: list[dict], layout: Layout,
              majority: dict) -> list[Cell | None]:
    """Our cell per task column (None for other columns), marked where at the majority."""
    cells = [our_cell(rows, c, layout.split) if "task" in c else None for c in columns]
    for column, cell in zip(columns, cells):
        key = (column.get("task"), cell.eval_split, cell.metric) if cell else None
        if key in majority and ret.at_majority(cell.value, majority[key]):
            cell.mark += MAJORITY_MARK
    return cells


def row_margin(rows: pd.DataFrame, teacher_rows: pd.DataFrame, tasks: set[str],
               majority: dict) -> tuple[float, list[str]]:
    """Mean margin retention (x100) of one model over ``tasks``, and the tasks counted."""
    scored = rows[rows["task"].isin(tasks)].dropna(subset=["score_mean"])
    teacher = teacher_rows.set_index(["task", "eval_split"])["score_mean"].to_dict()
    margins = pd.DataFrame({"task": scored["task"], "retention_pct": [
        margin_pct(s, teacher.get((t, e), math.nan), t, e, majority)
        for s, t, e in zip(scored["score_mean"], scored["task"], scored["eval_split"])]})
    return ret.mean_margin_retention(task_margins(margins))


def our_row_cells(rows: pd.DataFrame, teacher_rows: pd.DataFrame, columns: list[dict],
                  layout: Layout, label: str, avg_keys: list[str],
                  majority: dict) -> tuple[list[str], list[str]]:
    """The main-table cells and retention cells of one model of ours. ``Avg`` and the
    ratio of averages cover ``avg_keys`` only: the columns every row of ours has."""
    cells = our_cells(rows, columns, layout, majority)
    teacher = [teacher_value(teacher_rows, c, cell) if cell else math.nan
               for c, cell in zip(columns, cells)]
    retention = [retention_pct(cell.value, t) if cell else math.nan
                 for cell, t in zip(cells, teacher)]
    averaged = {c["key"]: (cell.value, t) for c, cell, t in zip(columns, cells, teacher)
                if c["key"] in avg_keys}
    ratio, covered = ret.paper_way_retention({k: v[0] for k, v in averaged.items()},
                                             {k: v[1] for k, v in averaged.items()})
    margin, counted = row_margin(rows, teacher_rows, {c["task"] for c in columns if "task" in c},
                                 majority)
    shown = []
    for column, cell in zip(columns, cells):
        if column["key"] == "params":
            shown.append(fmt_count(rows["params"].dropna().max() if "params" in rows else None,
                                   1e6, "M"))
        elif column["key"] == "avg":
            shown.append(fmt_number(100 * mean_or_nan(v for v, _ in averaged.values())))
        else:
            shown.append(cell.show() if cell else MISSING)
    main = [label, "ours"] + shown + [fmt_with_count(margin, len(counted)),
                                      fmt_with_count(100 * ratio, len(covered)), our_setup(rows)]
    return main, [label] + [fmt_number(r) for c, r in zip(columns, retention) if "task" in c]


def common_columns(groups, columns: list[dict], layout: Layout) -> list[str]:
    """Task columns where every row of ours has a number: what our averages may cover."""
    keys = [c["key"] for c in columns if "task" in c]
    for _, rows, _ in groups:
        cells = {c["key"]: our_cell(rows, c, layout.split) for c in columns if "task" in c}
        keys = [k for k in keys if not pd.isna(cells[k].value)]
    return keys


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


def our_groups(summary: pd.DataFrame, teachers: pd.DataFrame, layout: Layout,
               columns: list[dict], paper_models: set[str]) -> list[tuple[str, pd.DataFrame, str]]:
    """(label, summary rows, preset) per row of ours: each preset's teacher, then students.

    Only rows of the table's tasks count, so the setup column and footnotes describe them.
    """
    tasks = {c["task"] for c in columns if "task" in c}
    summary, teachers = summary[summary["task"].isin(tasks)], teachers[teachers["task"].isin(tasks)]
    students = select_students(summary, layout, paper_models)
    groups = []
    for preset, preset_students in students.groupby("preset", sort=True):
        preset_teachers = teachers[teachers["preset"] == preset]
        groups += [(f"{name} (teacher)", rows, preset)
                   for name, rows in preset_teachers.groupby("teacher", sort=True)]
        groups += [(f"{model} ({variant})", rows, preset)
                   for (model, variant), rows in preset_students.groupby(["model", "variant"],
                                                                         sort=True)]
    return groups


def select_students(summary: pd.DataFrame, layout: Layout, paper_models: set[str]) -> pd.DataFrame:
    """Our students of the layout's variants; by CF range where the layout has one."""
    students = summary[(summary["family"] != TEACHER_FAMILY)
                       & summary["variant"].isin(layout.variants)]
    if layout.cf_range is None:
        return students
    low, high = layout.cf_range
    cf = students.groupby("model")["compression_factor"].transform("max")
    return students[students["model"].isin(paper_models) | ((cf >= low) & (cf < high))]


def score_table(published: dict, layout: Layout, summary: pd.DataFrame | None,
                teachers: pd.DataFrame | None, majority: dict | None = None) -> Table:
    majority = majority or {}
    columns = [column_spec(published, key) for key in layout.columns]
    score_labels = [c["label"] for c in columns if "task" in c]
    header = (["Model", "Source"] + [c["label"] for c in columns]
              + ["Margin ret. % (tasks)", "Ret. % = Avg / teacher Avg (cols)", "Setup"])
    main, retention = [], []
    shown_paper = paper_rows(published, layout)
    for table_id, row in shown_paper:
        cells, ret_cells = paper_row_cells(published, layout, table_id, row, columns)
        main.append(cells)
        retention.append(ret_cells)
    notes = list(layout.notes)
    if summary is not None and not summary.empty:
        teachers = teachers if teachers is not None else summary.iloc[0:0]
        ours = our_groups(summary, teachers, layout, columns, {r["model"] for _, r in shown_paper})
        avg_keys = common_columns(ours, columns, layout)
        for label, rows, preset in ours:
            cells, ret_cells = our_row_cells(rows, teachers[teachers["preset"] == preset], columns,
                                             layout, label, avg_keys, majority)
            main.append(cells)
            retention.append(ret_cells)
        labels = {c["key"]: c["label"] for c in columns}
        notes += our_notes(layout, pd.concat([rows for _, rows, _ in ours]) if ours else None,
                           [labels[k] for k in avg_keys], bool(majority))
    else:
        notes.append(f"No {layout.summary}_summary.csv rows: only the published numbers are shown.")
    notes += citation_notes(published, [table_id for table_id, _ in layout.paper])
    blocks = [("Scores (x100)", header, main),
              ("Raw retention (% of the row's own teacher, per column)", ["Model"] + score_labels,
               retention)]
    return Table(layout.name, layout.title, blocks, notes)


def our_notes(layout: Layout, ours: pd.DataFrame | None, avg_labels: list[str],
              has_majority: bool) -> list[str]:
    """Footnotes that say where our setup differs from the paper's and what each
    average covers."""
    if ours is None or ours.empty:
        return ["No rows of ours match this table."]
    scored = ours[ours["n"] > 0]
    kinds = set(scored["eval_split"].map(split_kind))
    notes = ["Ours: mean over seeds (± sample sd when n > 1), x100, one decimal.",
             f"Margin ret. % (ours): (student - majority) / (teacher - majority) on each task's "
             f"key score, averaged over the table's tasks where our teacher beats the majority "
             f"class by >= {100 * ret.MIN_TEACHER_MARGIN:.0f} points (their number in brackets; "
             "MNLI's two splits are one task). The paper prints no majority-class scores: – for "
             "its rows.",
             "Ret. % = Avg / teacher Avg: the paper's way, the row's average over its teacher's "
             "average on the same columns (their number in brackets); paper rows over the teacher "
             "printed in the same published table (for tables without one, KroneckerBERT's "
             "BERT_BASE row). Raw retention: each column over the row's own teacher."]
    if has_majority:
        notes.append(MAJORITY_NOTE)
    else:
        notes.append("No majority.csv: no margin retention and no majority-class marks.")
    if layout.split == "test" and "dev" in kinds:
        notes.append(f"{DEV_MARK} Our number is on the dev (validation) split; the paper's is "
                     "on the GLUE test server.")
    teachers = sorted(set(ours["teacher"]) - {""})
    if teachers:
        notes.append(f"Our teacher is {', '.join(teachers)}, not BERT_BASE: compare retention, "
                     "not raw scores.")
    statuses = sorted(set(scored["data_status"]) - {"", "full"})
    if statuses:
        notes.append(f"Data status {', '.join(statuses)}: subset = fewer examples than the "
                     "official split; derived = eval split carved from the training data.")
    if (ours["data_status"] == UNAVAILABLE).any():
        missing = sorted(set(ours.loc[ours["data_status"] == UNAVAILABLE, "task"]))
        notes.append(f"n/a: no data for {', '.join(missing)} in this setup (never dropped silently).")
    covers = ", ".join(avg_labels) or "no column"
    if "avg" in layout.columns:
        notes.append(f"Our Avg and Avg / teacher Avg cover {covers}: the columns every row of "
                     "ours has; the paper's Avg is as printed.")
    else:
        notes.append(f"Our Avg / teacher Avg covers {covers}: the columns every row of ours has.")
    return notes


def citation_notes(published: dict, table_ids) -> list[str]:
    notes = []
    for table_id in dict.fromkeys(table_ids):
        table = published["tables"][table_id]
        notes.append(" ".join([f"Source: {table['citation']} ({table['split']})."]
                              + table.get("notes", [])))
    return notes


# --------------------------------------------------------------------------- Table 1


def table1(published: dict, efficiency: pd.DataFrame | None) -> Table:
    """Shapes, params and FLOPs: paper's Table 1 next to our measured models."""
    header = ["Model", "Source", "Params (printed)", "Params (counted)", "CF",
              "FLOPs, linear layers (Eq. 7)", "FLOPs + attention scores", "Attention (n1, m1)",
              "FFN (n1, m1)", "W^E", "Latency ms", "Speedup", "Setup"]
    rows = []
    for row in published["tables"]["kb_table1"]["rows"]:
        model, values = published["models"][row["model"]], row["values"]
        counted = model.get("counted_params")
        rows.append([row["label"], "paper: KroneckerBERT Table 1",
                     f"{model['params_m']}M", f"{counted:,}" if counted else MISSING,
                     values["cf"], values["flops"], MISSING, values["attention"], values["ffn"],
                     values["embedding"], MISSING, MISSING, "BERT_BASE, seq 128"])
    notes = ["Counted params: dense biases, LayerNorms, position/token-type embeddings and "
             "pooler; classifier excluded (shared/reference/paper.md §1.6).",
             "FLOPs per sequence of 128 tokens. Linear layers (Eq. 7) is what the paper's Table 1 "
             "counts; + attention scores adds Q K^T and probs @ V, which the paper leaves out and "
             "which are the same for dense and Kronecker models."]
    measured = models_rows(efficiency)
    if measured.empty:
        notes.append("results/efficiency.csv has no `models` rows: no measured rows.")
    else:
        teacher_params = measured.groupby("config")["params"].transform("max")
        rows += [measured_row(r, teacher) for (_, r), teacher in zip(measured.iterrows(),
                                                                    teacher_params)]
        notes.append("Our CF is relative to the largest model measured in the same config (the "
                     "dense teacher); latency is CPU wall time, the paper reports none.")
    notes += [f"{published['models'][m]['label']}: {published['models'][m]['notes']}"
              for m in ("kroneckerbert_8", "kroneckerbert_5")]
    notes += citation_notes(published, ["kb_table1"])
    return Table("table1_shapes_params_flops", "Table 1: Kronecker shapes, parameters and FLOPs",
                 [("", header, rows)], notes)


def measured_row(r: pd.Series, teacher_params: float) -> list[str]:
    """One ``models`` row of efficiency.csv in Table 1's columns."""
    params = r.get("params")
    has_params = not pd.isna(params) and params > 0
    setup = (f"{r.get('config', MISSING)}; {r.get('threads', MISSING)} threads, batch "
             f"{r.get('batch', MISSING)}, seq {r.get('seq_len', MISSING)}")
    if r.get("notes"):
        setup += f"; {r['notes']}"
    return [str(r["subject"]), "ours", fmt_count(params, 1e6, "M"),
            f"{int(params):,}" if has_params else MISSING,
            f"{teacher_params / params:.1f}x" if has_params else MISSING,
            fmt_count(r.get("flops_linear"), 1e9, "B"), fmt_count(r.get("flops"), 1e9, "B"),
            MISSING, MISSING, MISSING,
            fmt_number(r.get("latency_ms_median"), 2), fmt_number(r.get("speedup"), 2), setup]


def models_rows(efficiency: pd.DataFrame | None) -> pd.DataFrame:
    if efficiency is None or "benchmark" not in efficiency:
        return pd.DataFrame(columns=["config", "subject", "params", "flops", "speedup", "flop_bound"])
    return efficiency[efficiency["benchmark"] == "models"].reset_index(drop=True)


# --------------------------------------------------------------------------- rendering


def latex_escape(text: str) -> str:
    replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#",
                    "_": r"\_", "$": r"\$", "{": r"\{", "}": r"\}", "^": r"\^{}",
                    "~": r"\~{}", "±": r"$\pm$", "–": "--", "→": r"$\to$",
                    "§": r"\S{}"}
    return "".join(replacements.get(ch, ch) for ch in str(text))


def render_markdown(table: Table) -> str:
    lines = [f"# {table.title}", ""]
    for heading, header, rows in table.blocks:
        if heading:
            lines += [f"## {heading}", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
        lines.append("")
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def render_latex(table: Table) -> str:
    lines = ["% generated by kbert.report; do not edit", r"\begin{table*}[ht]", r"\centering",
             r"\scriptsize", rf"\caption{{{latex_escape(table.title)}}}",
             rf"\label{{tab:{table.name}}}"]
    for heading, header, rows in table.blocks:
        if heading:
            lines.append(rf"\par\medskip\textbf{{{latex_escape(heading)}}}\par\smallskip")
        wide_last = header[-1] == "Setup"           # the free-text column wraps
        spec = "l" * (len(header) - wide_last) + (r"p{4.5cm}" if wide_last else "")
        lines += [rf"\begin{{tabular}}{{{spec}}}", r"\hline",
                  " & ".join(latex_escape(h) for h in header) + r" \\", r"\hline"]
        lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows]
        lines += [r"\hline", r"\end{tabular}"]
    lines += [r"\par\smallskip\begin{flushleft}\tiny"]
    lines += [latex_escape(note) + r"\\" for note in table.notes]
    lines += [r"\end{flushleft}", r"\end{table*}"]
    return "\n".join(lines) + "\n"


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_tables(results_dir: str | Path, out_dir: str | Path | None = None,
                 published: dict | None = None) -> list[Path]:
    """Regenerated paper tables as ``.md`` and ``.tex`` in ``out_dir`` (``results/tables``)."""
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir else results_dir / "tables"
    published = published or load_published()
    teachers = read_results(results_dir, "teacher_summary")
    majority = ret.majority_lookup(read_results(results_dir, "majority"))
    tables = [table1(published, read_results(results_dir, "efficiency"))]
    tables += [score_table(published, layout, read_results(results_dir, f"{layout.summary}_summary"),
                           teachers, majority) for layout in LAYOUTS]
    written = []
    for table in tables:
        for suffix, render in ((".md", render_markdown), (".tex", render_latex)):
            path = out_dir / f"{table.name}{suffix}"
            write_text(path, render(table))
            written.append(path)
    log.info("wrote %d table files to %s", len(written), out_dir)
    return written


# --------------------------------------------------------------------------- figures

# Paper points for the score-vs-size figures: which models, and the tables their scores
# come from, in order of preference.
FIGURE_MODELS = ["bert_base", "tinybert_4", "mobilebert_tiny", "kroneckerbert_8", "kroneckerbert_21"]
FIGURE_SOURCES = ["kb_table2", "kb_table3", "kb_table5", "mobilebert_squad"]
FIGURE_COLUMNS = ["mnli_m", "mnli_mm", "sst2", "mrpc_f1", "cola", "qqp_f1", "qnli", "rte",
                  "stsb_spearman", "squad_v1_f1", "squad_v2_f1"]
RETENTION_MODELS = ["kroneckerbert_8", "kroneckerbert_21"]   # the paper's bars in `retention`


def paper_cell(published: dict, model: str, key: str) -> tuple[float, float]:
    """(score, retention %) of a paper model on one column, from the first FIGURE_SOURCES hit."""
    for table_id in FIGURE_SOURCES:
        for row in published["tables"][table_id]["rows"]:
            value = row["values"].get(key)
            if row["model"] == model and isinstance(value, (int, float)):
                teacher = paper_teacher_row(published, table_id)
                return float(value), retention_pct(value, teacher["values"].get(key)
                                                   if teacher else math.nan)
    return math.nan, math.nan


def our_points(summary: pd.DataFrame, column: dict,
               majority: dict | None = None) -> list[tuple[str, float, float, float, bool]]:
    """(label, params, flops, score x100, at majority) for each of our models on one column.
    FLOPs are those of the column's own task: its sequence length (128 GLUE, 384 SQuAD)."""
    points = []
    rows = summary[(summary["family"] == TEACHER_FAMILY) | summary["variant"].isin(MAIN_VARIANTS)]
    several_presets = rows["preset"].nunique() > 1
    for (preset, model, variant, family), group in rows.groupby(
            ["preset", "model", "variant", "family"], sort=True):
        cell = our_cell(group, column, "dev")
        if not pd.isna(cell.value):
            label = (f"{group['teacher'].iloc[0]} (teacher" if family == TEACHER_FAMILY
                     else f"{model} ({variant}")
            label += f", {preset})" if several_presets else ")"
            flops = group.loc[group["task"] == column["task"], "flops"].max()
            key = (column["task"], cell.eval_split, cell.metric)
            near = key in (majority or {}) and ret.at_majority(cell.value, majority[key])
            points.append((label, group["params"].max(), flops, 100 * cell.value, near))
    return points


def setup_caption(summary: pd.DataFrame) -> str:
    scored = summary[summary["n"] > 0]
    return ("Ours: " + our_setup(summary) + f" ({len(scored)} scored cells). Paper: BERT_BASE "
            "teacher, full data; GLUE test server, SQuAD dev.")


PLAIN = FuncFormatter(lambda value, _: f"{value:g}")   # 2 rather than 2x10^0 on log axes


def save_figure(fig, fig_dir: Path, name: str, caption: str,
                legend_width: float = 0.0) -> list[Path]:
    """Caption at the bottom (the setup shown), room on the right for a figure legend."""
    fig.text(0.01, 0.005, caption, fontsize=6, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1 - legend_width, 1))
    paths = []
    for suffix, metadata in ((".png", {"Software": None}), (".pdf", {"CreationDate": None})):
        path = fig_dir / f"{name}{suffix}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=150, metadata=metadata)
        paths.append(path)
    plt.close(fig)
    return paths


def grid(n: int, width: float = 3.2, height: float = 2.8):
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.6), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def figure_score_vs_size(published: dict, summary: pd.DataFrame, fig_dir: Path, axis: str,
                         majority: dict | None = None) -> list[Path]:
    """Score vs params (``axis='params'``) or FLOPs per task, log x, paper and ours; our
    points at the majority class are marked with a dagger."""
    columns = [column_spec(published, k) for k in FIGURE_COLUMNS]
    columns = [c for c in columns if our_points(summary, c)]
    if not columns:
        log.info("skipping score_vs_%s: no scores of ours", axis)
        return []
    paper_x = {"params": ("params_m", 1e6), "flops": ("gflops", 1e9)}[axis]
    # One colour per model of ours across every panel (after the paper models' C0-C4).
    ours = sorted({point[0] for c in columns for point in our_points(summary, c)})
    colour = {label: plt.cm.tab20(5 + i) for i, label in enumerate(ours)}
    fig, axes = grid(len(columns))
    for ax, column in zip(axes, columns):
        for model in FIGURE_MODELS:
            spec, (y, _) = published["models"][model], paper_cell(published, model, column["key"])
            if spec.get(paper_x[0]) is not None and not pd.isna(y):
                ax.scatter(spec[paper_x[0]] * paper_x[1], y, marker="o", facecolors="none",
                           edgecolors=f"C{FIGURE_MODELS.index(model)}",
                           label=f"paper: {spec['label']}")
        for label, params, flops, y, near in our_points(summary, column, majority):
            x = params if axis == "params" else flops
            if not pd.isna(x):
                ax.scatter(x, y, marker="s", color=colour[label], label=f"ours: {label}")
                if near:
                    ax.annotate(MAJORITY_MARK, (x, y), textcoords="offset points", xytext=(4, 2),
                                fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{column['label']} ({column['measure']})", fontsize=8)
        seq = get_task(column["task"]).max_seq_length
        ax.set_xlabel("parameters" if axis == "params" else
                      f"FLOPs (ours: seq {seq}; paper: as printed, seq 128)", fontsize=6)
        ax.set_ylabel("score x100", fontsize=7)
        ax.tick_params(which="both", labelsize=6)
    handles = {h.get_label(): h for ax in axes for h in ax.collections}
    fig.legend(handles.values(), handles.keys(), loc="center right", fontsize=6)
    fig.suptitle(f"Score vs {axis}: paper (hollow) and ours (filled); {MAJORITY_MARK}: ours within "
                 f"{100 * ret.NEAR_MAJORITY:.0f} points of the majority class", fontsize=9)
    return save_figure(fig, fig_dir, f"score_vs_{axis}", setup_caption(summary), legend_width=0.2)


def figure_retention(published: dict, summary: pd.DataFrame, fig_dir: Path,
                     majority: pd.DataFrame | None = None) -> list[Path]:
    """Three panels: raw retention per task (the paper's KroneckerBERT_8/21 and ours),
    our margin retention per task, and the headline numbers, each labelled."""
    columns = [column_spec(published, k) for k in FIGURE_COLUMNS]
    lookup = ret.majority_lookup(majority)
    series = {f"paper: {published['models'][model]['label']}":
              [paper_cell(published, model, c["key"])[1] for c in columns]
              for model in RETENTION_MODELS}
    near = {}
    students = summary[(summary["family"] != TEACHER_FAMILY) & summary["variant"].isin(MAIN_VARIANTS)]
    teachers = summary[summary["family"] == TEACHER_FAMILY]
    for (preset, model, variant), rows in students.groupby(["preset", "model", "variant"], sort=True):
        label = f"ours: {model} ({variant})"
        cells = [our_cell(rows, c, "dev") for c in columns]
        series[label] = [
            retention_pct(cell.value, teacher_value(teachers[teachers["preset"] == preset], c, cell))
            for c, cell in zip(columns, cells)]
        near[label] = [(c["task"], cell.eval_split, cell.metric) in lookup
                       and ret.at_majority(cell.value, lookup[c["task"], cell.eval_split, cell.metric])
                       for c, cell in zip(columns, cells)]
    if not near or all(all(map(pd.isna, series[k])) for k in near):
        log.info("skipping retention: no student with a teacher score of ours")
        return []
    table = retention_frame(summary, majority, published)
    table = table[table["variant"].isin(MAIN_VARIANTS)]
    fig, axes = plt.subplots(3, 1, figsize=(12, 11), height_ratios=(4, 3, 3))
    raw_panel(axes[0], columns, series, near)
    margin_panel(axes[1], table[table["measure"] == "margin"])
    headline_panel(axes[2], published, table)
    for ax in axes:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, fig_dir, "retention", setup_caption(summary))


def grouped_bars(ax, labels: list[str], series: dict[str, list[float]]) -> dict[str, list[float]]:
    """Bars of every series side by side per label; returns each series' bar positions."""
    width = 0.8 / len(series)
    positions = {}
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, [0 if pd.isna(v) else v for v in values], width, label=name,
               hatch="//" if name.startswith("paper") else None, alpha=0.85)
        positions[name] = xs
    ax.set_xticks(range(len(labels)), labels, fontsize=8, rotation=15)
    return positions


def raw_panel(ax, columns: list[dict], series: dict, near: dict) -> None:
    positions = grouped_bars(ax, [c["label"] for c in columns], series)
    for name, flags in near.items():
        for x, value, flag in zip(positions[name], series[name], flags):
            if flag:
                ax.annotate(MAJORITY_MARK, (x, max(value, 0)), ha="center", va="bottom", fontsize=8)
    ax.axhline(100, color="black", linewidth=0.8, linestyle="--")
    ax.set_ylabel("student / teacher, %")
    ax.set_title(f"Raw retention per task (paper: GLUE test / SQuAD dev vs BERT_BASE; ours: dev vs "
                 f"our teacher); {MAJORITY_MARK}: our score within "
                 f"{100 * ret.NEAR_MAJORITY:.0f} points of the majority class; missing bars = no data",
                 fontsize=8)


def margin_panel(ax, margins: pd.DataFrame) -> None:
    """Ours only: the paper prints no majority-class scores."""
    tasks = sorted(set(margins["task"]))
    series = {}
    for (model, variant), rows in margins.groupby(["model", "variant"], sort=True):
        per_task = task_margins(rows)
        series[f"ours: {model} ({variant})"] = [per_task.get(t, math.nan) for t in tasks]
    if not series:
        ax.set_axis_off()
        return
    positions = grouped_bars(ax, tasks, series)
    for name, values in series.items():       # say why a bar of a task that ran is missing
        ran = set(margins.loc[margins["model"] + " (" + margins["variant"] + ")"
                              == name.removeprefix("ours: "), "task"])
        for x, value, task in zip(positions[name], values, tasks):
            if pd.isna(value) and task in ran:
                ax.annotate("excl.", (x, 0), ha="center", va="bottom", fontsize=5, rotation=90)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.axhline(100, color="black", linewidth=0.8, linestyle="--")
    ax.set_ylabel("margin retention, %")
    ax.set_title("Margin retention per task, ours: (student - majority) / (teacher - majority) on "
                 f"the key score; excl. = teacher < {100 * ret.MIN_TEACHER_MARGIN:.0f} points above "
                 "the majority (or no score); MNLI = mean of its two splits", fontsize=8)


def headline_panel(ax, published: dict, table: pd.DataFrame) -> None:
    """The headline numbers: ours (margin mean and paper way) and the paper's (paper way)."""
    names, values = [], []
    for (model, variant), rows in table.groupby(["model", "variant"], sort=True):
        for measure, what in (("margin_mean", "margin, mean over tasks"),
                              ("paper_way", "ratio of GLUE averages")):
            row = rows[rows["measure"] == measure]
            if not row.empty:
                covers = row["covers"].iloc[0] if isinstance(row["covers"].iloc[0], str) else ""
                names.append(f"ours: {model} ({variant}), {what}\n[{covers}]")
                values.append(row["retention_pct"].iloc[0])
    for model in RETENTION_MODELS:
        scores = {c: paper_cell(published, model, c)[0] for c in PAPER_GLUE_COLUMNS}
        teacher = {c: paper_cell(published, "bert_base", c)[0] for c in PAPER_GLUE_COLUMNS}
        ratio, covered = ret.paper_way_retention(scores, teacher)
        names.append(f"paper: {published['models'][model]['label']}, ratio of GLUE averages\n"
                     f"[{len(covered)} test columns, vs BERT_BASE]")
        values.append(100 * ratio)
    ys = range(len(names))
    ax.barh(ys, [0 if pd.isna(v) else v for v in values],
            color=["C7" if n.startswith("paper") else "C0" for n in names], label="retention, %")
    for y, value in zip(ys, values):
        ax.annotate(fmt_number(value), (max(0, value if not pd.isna(value) else 0), y),
                    xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    ax.set_yticks(list(ys), names, fontsize=6)
    ax.invert_yaxis()
    ax.axvline(100, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel("retention, %")
    ax.set_title("Headline retention, each labelled with how it was computed and what it covers",
                 fontsize=8)


def figure_ablation(published: dict, ablation: pd.DataFrame, fig_dir: Path) -> list[Path]:
    """Table 6 style bars: variants per task, the paper's panel and one per model of ours."""
    columns = [column_spec(published, k) for k in ABLATION]
    variants = ("full",) + ABLATION_VARIANTS
    panels = {"paper: KroneckerBERT_8 (Table 6, BERT_BASE teacher)": {
        v: [published_row(published, "kb_table6", f"kroneckerbert_8:{v}")["values"][c["key"]]
            for c in columns] for v in variants}}
    for (preset, model), rows in ablation.groupby(["preset", "model"], sort=True):
        panels[f"ours: {model} ({preset})"] = {
            v: [100 * our_cell(rows[rows["variant"] == v], c, "dev").value for c in columns]
            for v in variants if (rows["variant"] == v).any()}
    if len(panels) == 1:
        log.info("skipping ablation: no ablation rows of ours")
        return []
    fig, axes = grid(len(panels), width=4.2, height=3.2)
    for ax, (title, bars) in zip(axes, panels.items()):
        width = 0.8 / len(variants)
        for i, variant in enumerate(variants):
            if variant in bars:
                xs = [j + (i - 1) * width for j in range(len(columns))]
                ax.bar(xs, [0 if pd.isna(v) else v for v in bars[variant]], width,
                       label=variant, color=f"C{i}")
        ax.set_xticks(range(len(columns)), [c["label"] for c in columns])
        ax.tick_params(labelsize=7)
        ax.set_ylabel("dev score x100", fontsize=7)
        ax.set_title(title, fontsize=8)
    # One legend beside the panels: inside an axes it covers the tallest bars.
    handles = {h.get_label(): h for ax in axes for h in ax.containers}
    fig.legend(handles.values(), handles.keys(), loc="center right", fontsize=7)
    fig.suptitle("Ablation: general KD and task KD (Table 6 style)", fontsize=9)
    return save_figure(fig, fig_dir, "ablation", "Ours: " + our_setup(ablation), legend_width=0.14)


def figure_speed(efficiency: pd.DataFrame | None, layers: pd.DataFrame | None,
                 fig_dir: Path) -> list[Path]:
    """Measured speedup vs the FLOP bound, per layer shape and per model; y = x is the bound."""
    sets = {"layer shapes": layers, "models": models_rows(efficiency)}
    sets = {name: frame.dropna(subset=["speedup", "flop_bound"]) for name, frame in sets.items()
            if frame is not None and {"speedup", "flop_bound"} <= set(frame.columns)}
    sets = {name: frame for name, frame in sets.items() if not frame.empty}
    if not sets:
        log.info("skipping speed_vs_flops: no efficiency rows with speedup and flop_bound")
        return []
    fig, ax = plt.subplots(figsize=(6, 5))
    for marker, (name, frame) in zip("os", sets.items()):
        for i, (_, row) in enumerate(frame.iterrows()):
            where = f" ({row['config']})" if name == "models" and "config" in row else ""
            ax.scatter(row["flop_bound"], row["speedup"], marker=marker, color=f"C{i % 10}",
                       label=f"{name}: {row['subject']}{where}")
    values = pd.concat([f[["speedup", "flop_bound"]] for f in sets.values()]).to_numpy().ravel()
    low, high = min(values.min(), 1) / 1.5, values.max() * 1.5
    ax.plot([low, high], [low, high], color="black", linestyle="--", label="FLOP bound (y = x)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(PLAIN)
        axis.set_minor_formatter(NullFormatter())  # unlabelled minor ticks: labels would overlap
    ax.set_xlabel("FLOP bound (dense FLOPs / Kronecker FLOPs)")
    ax.set_ylabel("measured speedup (dense time / Kronecker time)")
    ax.set_title("Kronecker speedup vs FLOP bound", fontsize=9)
    ax.legend(fontsize=5, loc="upper left")
    threads = sorted({str(t) for f in sets.values() if "threads" in f for t in f["threads"].dropna()})
    caption = (f"Ours, CPU, threads {', '.join(threads) or MISSING}; "
               "from results/efficiency_layers.csv and results/efficiency.csv (benchmark models).")
    return save_figure(fig, fig_dir, "speed_vs_flops", caption)


def write_figures(results_dir: str | Path, fig_dir: str | Path,
                  published: dict | None = None) -> list[Path]:
    """Every figure whose input CSV exists under ``results_dir``, as PNG and PDF."""
    results_dir, fig_dir = Path(results_dir), Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)        # exists even when every figure is skipped
    published = published or load_published()
    majority = read_results(results_dir, "majority")
    summaries = [f for f in (read_results(results_dir, "glue_summary"),
                             read_results(results_dir, "squad_summary")) if f is not None]
    written = []
    if summaries:
        summary = pd.concat(summaries, ignore_index=True)
        lookup = ret.majority_lookup(majority)
        written += figure_score_vs_size(published, summary, fig_dir, "params", lookup)
        written += figure_score_vs_size(published, summary, fig_dir, "flops", lookup)
        written += figure_retention(published, summary, fig_dir, majority)
    else:
        log.info("skipping score and retention figures: no glue/squad summary in %s", results_dir)
    ablation = read_results(results_dir, "ablation_summary")
    if ablation is not None and not ablation.empty:
        written += figure_ablation(published, ablation, fig_dir)
    else:
        log.info("skipping ablation: %s/ablation_summary.csv absent or empty", results_dir)
    written += figure_speed(read_results(results_dir, "efficiency"),
                            read_results(results_dir, "efficiency_layers"), fig_dir)
    return written


# --------------------------------------------------------------------------- command line


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "aggregate":
        aggregate(args.runs, args.out, args.unavailable)
    elif args.command == "retention":
        write_retention(args.results, args.config)
    else:
        write_tables(args.results, args.tables)
        write_figures(args.results, args.figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
