"""The paper's tables regenerated: which published rows, which of ours and which columns
each has (``LAYOUTS``, Table 1), built into :class:`~kbert.report.render.Table` s.

:func:`write_tables` writes ``tables/*.md`` and ``tables/*.tex``: our rows next to the
numbers printed in the papers (``published.yaml``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kbert import retention as ret
from kbert.report.cells import (DEV_MARK, MAJORITY_MARK, MAJORITY_NOTE, MISSING, Cell, fmt_count,
                                fmt_number, fmt_printed, fmt_with_count, our_cell, our_setup,
                                split_kind, teacher_value)
from kbert.report.columns import (ABLATION_VARIANTS, MAIN_VARIANTS, TEACHER_FAMILY, UNAVAILABLE,
                                  read_results)
from kbert.report.published import (ABLATION, GLUE_DEV, GLUE_TEST, OOD, SQUAD, column_spec, load_published,
                                    paper_teacher_row, published_row)
from kbert.report.render import Table, write_table
from kbert.report.retention_csv import margin_pct, mean_or_nan, retention_pct, task_margins

log = logging.getLogger(__name__)


@dataclass
class Layout:
    """Which published rows, which of our rows, and which columns one regenerated table has."""

    name: str
    title: str
    split: str                      # the paper's split: test | dev
    columns: list[str]              # catalogue keys of published.yaml
    paper: list[tuple[str, str]]    # (published table, row id or "*")
    summary: str                    # which *_summary.csv our rows come from
    teachers: str = "teacher"       # which *_summary.csv our teachers' rows come from
    paper_teacher: tuple[str, str] | None = None  # for published tables without a teacher row
    variants: tuple[str, ...] = MAIN_VARIANTS
    cf_range: tuple[float, float] | None = None   # students with CF in [low, high) (or a
    #                                               model named by a paper row); None: all
    notes: list[str] = field(default_factory=list)



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
    Layout("table9_ood", "Table 9: out-of-distribution robustness, accuracy", "dev", OOD,
           [("kb_table9", "*")], "ood", teachers="ood", variants=("full",),
           notes=["Each model is evaluated on the OOD set of the task it was trained on (rule "
                  "evaluate_ood); the sets are on the hub only, so offline presets show them as n/a. "
                  "IMDb is its test split (it has no dev split); reviews are truncated to "
                  "ood.max_seq_length tokens like every task's text (docs/deviations.md)."]),
]



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



def majority_row_cells(rows: pd.DataFrame, columns: list[dict], layout: Layout, majority: dict,
                       label: str) -> list[str]:
    """The majority-class score of each task column, on the split and metric our rows show
    there (``rows``: one model's, e.g. the teacher's), so every † has its number on the page."""
    shown = []
    for column in columns:
        cell = our_cell(rows, column, layout.split) if "task" in column else None
        value = majority.get((column["task"], cell.eval_split, cell.metric)) if cell else None
        shown.append(fmt_number(100 * value if value is not None else None))
    setup = ("a constant answer: the most frequent training label (CoLA MCC 0), SQuAD's \"no answer\"; "
             "– where a constant has no score (STS-B)")
    return [label, "ours"] + shown + [MISSING, MISSING, setup]



def common_columns(groups, columns: list[dict], layout: Layout) -> list[str]:
    """Task columns where every row of ours has a number: what our averages may cover."""
    keys = [c["key"] for c in columns if "task" in c]
    for _, rows, _ in groups:
        cells = {c["key"]: our_cell(rows, c, layout.split) for c in columns if "task" in c}
        keys = [k for k in keys if not pd.isna(cells[k].value)]
    return keys



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
        if majority and ours:
            for preset, rows in pd.concat([rows for _, rows, _ in ours]).groupby("preset", sort=True):
                main.append(majority_row_cells(rows, columns, layout, majority, f"Majority class ({preset})"))
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



def teacher_rows(results_dir: Path, layout: Layout) -> pd.DataFrame | None:
    """Our teachers' summary rows for one table, from the file its layout names."""
    frame = read_results(results_dir, f"{layout.teachers}_summary")
    return None if frame is None else frame[frame["family"] == TEACHER_FAMILY]



def write_tables(results_dir: str | Path, out_dir: str | Path | None = None,
                 published: dict | None = None) -> list[Path]:
    """Regenerated paper tables as ``.md`` and ``.tex`` in ``out_dir`` (``results/tables``)."""
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir else results_dir / "tables"
    published = published or load_published()
    majority = ret.majority_lookup(read_results(results_dir, "majority"))
    tables = [table1(published, read_results(results_dir, "efficiency"))]
    tables += [score_table(published, layout, read_results(results_dir, f"{layout.summary}_summary"),
                           teacher_rows(results_dir, layout), majority) for layout in LAYOUTS]
    written = [path for table in tables for path in write_table(table, out_dir)]
    log.info("wrote %d table files to %s", len(written), out_dir)
    return written
