"""The report's figures, as PNG and PDF: score vs size, retention, ablation, speed.

:func:`write_figures` draws every figure whose input CSV exists, skipping the others.
Everything labelled "ours" comes from the CSVs; everything labelled "paper" from
``published.yaml``. Nothing else is ever plotted.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the backend)
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402
import pandas as pd  # noqa: E402

from kbert import retention as ret  # noqa: E402
from kbert.artifacts import atomic_path  # noqa: E402
from kbert.report.cells import MAJORITY_MARK, MISSING, fmt_number, our_cell, our_setup, teacher_value  # noqa: E402
from kbert.report.columns import MAIN_VARIANTS, ABLATION_VARIANTS, TEACHER_FAMILY, read_results  # noqa: E402
from kbert.report.published import (ABLATION, PAPER_GLUE_COLUMNS, column_spec, load_published,  # noqa: E402
                                    paper_teacher_row, published_row)
from kbert.report.retention_csv import retention_frame, retention_pct, task_margins  # noqa: E402
from kbert.report.tables import models_rows  # noqa: E402
from kbert.tasks import get_task  # noqa: E402

log = logging.getLogger(__name__)

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



def score_panel(ax, title: str, xlabel: str, teacher=None, majority=None) -> None:
    """A dev-score panel's labels, with the teacher (dashed) and majority-class (dotted)
    lines where those scores exist."""
    if teacher is not None and not pd.isna(teacher):
        ax.axhline(100 * teacher, color="black", linestyle="--", linewidth=1, label="Teacher")
    if majority is not None and not pd.isna(majority):
        ax.axhline(100 * majority, color="grey", linestyle=":", linewidth=1, label="Majority class")
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel("dev score", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def save_panels(fig, axes, fig_dir: Path, name: str, caption: str, legend_width: float) -> list[Path]:
    """One legend (the first panel's entries) on the right, then ``save_figure``."""
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=7)
    return save_figure(fig, fig_dir, name, caption, legend_width=legend_width)


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
