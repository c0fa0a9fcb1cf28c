"""The sanity ladder: one pipeline over growing compression factors, to tell a bug from a limit.

The ladder (``config/ladder.yaml``, target ``ladder``) runs the same task distillation from
a lossless student (every Kronecker factor B of shape 1x1: an exact copy of the teacher)
through milder and harsher Kronecker students, each next to a low-rank student of the same
size. Read it bottom up:

- the lossless rung must end where the fine-tuned teacher ends; if it does not, the recipe
  destroys what it starts from (a bug, or a learning rate);
- if the low-rank rung learns where the Kronecker rung of its size does not, the
  initialisation is the limit; if neither learns while the lossless rung does, the recipe is.

One entry point, :func:`write` (``python -m kbert.cli ladder``), writes into one directory:

    ladder.csv        one row per (student, variant, task): score, teacher, majority class,
                      retention (student / teacher), margin retention, init error, size
    ladder.md / .tex  the table;  ladder.png / .pdf  score against compression factor
    dose.csv          the dose-response (``ladder.dose_students``): score after 0, 1, 3, ...
                      general-KD epochs, with the general-KD loss each point ended at
    dose.md / .tex    its table, with the projection below;  dose.png / .pdf  score
                      against general-KD epochs
    dose_projection.csv  per (student, task): the first measured point at the target margin
                      retention (``ladder.dose_target_margin``), else where a straight line
                      through the points, margin against log2(1 + epochs), reaches it
"""

from __future__ import annotations

import logging
import math

import numpy as np
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from kbert.config import general_kd_epochs_of  # noqa: E402
from kbert.artifacts import write_csv  # noqa: E402
from kbert.report import equal_size, figures, render  # noqa: E402
from kbert.report.aggregate import stage_records  # noqa: E402
from kbert.report.cells import MISSING, fmt_number  # noqa: E402
from kbert.report.retention_csv import retention_pct  # noqa: E402
from kbert.retention import MIN_TEACHER_MARGIN, NEAR_MAJORITY, at_majority, margin_retention  # noqa: E402
from kbert.tasks import task_label  # noqa: E402

log = logging.getLogger(__name__)

FAMILY_MARKERS = {"kronecker": "o", "lowrank": "s", "dense": "^"}


def init_errors(runs) -> dict[str, float]:
    """Mean relative Frobenius error of each student's compress step (its SVD init)."""
    return {record["student"]: record.get("relative_error_mean") for record in stage_records(runs, "compress")}


def general_kd_losses(runs) -> dict[tuple[str, float], float]:
    """(student, general-KD epochs) -> the general-KD loss its last step ended at."""
    return {(record["student"], record.get("general_kd_epochs")): record["last_loss"]
            for record in stage_records(runs, "general_kd")}


def ladder_frame(runs, config: dict) -> pd.DataFrame:
    """One row per (student, variant, task) on the task's main eval split."""
    frame = equal_size.collect(runs, config["students"])
    summary = equal_size.summarise(frame, config)
    students, teachers = equal_size.students_and_teachers(summary, variant=None)
    errors = init_errors(runs)
    rows = []
    for _, r in students.iterrows():
        teacher = teachers.get(r["task"], math.nan)
        majority = r["majority"]
        rows.append({
            "task": r["task"], "model": r["model"], "family": r["family"], "variant": r["variant"],
            "params": r["params"], "compression_factor": r["compression_factor"],
            "init_error": errors.get(r["model"], math.nan),
            "score": r["score_mean"], "score_sd": r["score_sd"], "n": r["n"], "n_examples": r["n_examples"],
            "teacher": teacher, "majority": majority,
            "retention_pct": retention_pct(r["score_mean"], teacher),
            "margin_retention": margin_retention(r["score_mean"], teacher, majority),
            "at_majority": at_majority(r["score_mean"], majority),
            "general_kd_epochs": general_kd_epochs_of(r["variant"]),
        })
    out = pd.DataFrame(rows)
    out["general_kd_epochs"] = out["general_kd_epochs"].astype("Int64")  # whole epochs; <NA> for augmented runs
    return out.sort_values(["task", "variant", "compression_factor", "family"], kind="stable").reset_index(drop=True)


def _heading(title: str, first: pd.Series) -> str:
    """A table block's heading: what it is, the teacher, the majority class, the dev size."""
    majority = MISSING if pd.isna(first["majority"]) else f"{100 * first['majority']:.1f}"
    return (f"{title}: teacher {100 * first['teacher']:.1f}, majority class {majority}, "
            f"{first['n_examples']} dev examples")


def _margin_cell(row: pd.Series) -> str:
    return MISSING if pd.isna(row["margin_retention"]) else f"{100 * row['margin_retention']:.0f}%"


def _score_cell(row: pd.Series) -> str:
    below = not pd.isna(row["majority"]) and row["score"] < row["majority"] - NEAR_MAJORITY
    mark = " (at majority)" if row["at_majority"] else " (below majority)" if below else ""
    # Several seeds: mean ± sd (n), as the equal-size table writes them.
    spread = f" ± {100 * row['score_sd']:.1f} (n={row['n']:.0f})" if row["n"] > 1 else ""
    return f"{100 * row['score']:.1f}{spread} ({row['retention_pct']:.0f}%){mark}"


def table(frame: pd.DataFrame, labels: dict) -> render.Table:
    blocks = []
    for (task, variant), group in frame.groupby(["task", "variant"], sort=True):
        header = ["Student", "Family", "CF", "Params (M)", "Init error", "Score (% of teacher)", "Margin retention"]
        rows = [[labels.get(r["model"], r["model"]), r["family"], f"{r['compression_factor']:.1f}",
                 f"{r['params'] / 1e6:.2f}", fmt_number(r["init_error"], 3), _score_cell(r), _margin_cell(r)]
                for _, r in group.iterrows()]
        blocks.append((_heading(f"{task_label(task)}, {variant}", group.iloc[0]), header, rows))
    notes = [
        "Score x100 on the task's dev split (MNLI: matched; the heading gives its size), the task's key score "
        "(MRPC: mean of F1 and accuracy); one seed unless the cell says mean ± sd (n=seeds).",
        "% of teacher = student / fine-tuned teacher. Margin retention = (student - majority) / "
        f"(teacher - majority); '–' where the teacher beats the majority by less than {100 * MIN_TEACHER_MARGIN:.0f} points.",
        f"'(at majority)': within {100 * NEAR_MAJORITY:.0f} points of always predicting the most frequent training label; "
        "'(below majority)': more than that below it.",
        "Init error: mean relative Frobenius error of the factorised matrices at the SVD init "
        "(0 for the lossless student, whose Kronecker factors B are 1x1; for init: data_aware the weight error "
        "of its factors, higher by design: they lower the output error on calibration text instead); '–' for a dense "
        "student, which factorises nothing: random init, or with 'selected init' sub-blocks of the teacher's weights.",
        "no_general_kd: task KD from the init; full: after general KD. Settings: config.<hash>.resolved.yaml in the work directory.",
    ]
    return render.Table("ladder", "Sanity ladder: the same task KD from a lossless student to 21x", blocks, notes)


def figure(frame: pd.DataFrame, out_dir: Path, labels: dict) -> list[Path]:
    panels = list(frame.groupby(["task", "variant"], sort=True))
    fig, axes = figures.grid(len(panels), width=4.2)
    for ax, ((task, variant), group) in zip(axes, panels):
        for family, rows in group.groupby("family", sort=False):
            ax.plot(rows["compression_factor"], 100 * rows["score"], marker=FAMILY_MARKERS.get(family, "o"),
                    color=equal_size.FAMILY_COLORS.get(family), label=equal_size.FAMILY_LABELS.get(family, family))
        first = group.iloc[0]
        figures.score_panel(ax, f"{task_label(task)} ({variant})", "compression factor (log)",
                            first["teacher"], first["majority"])
        ax.set_xscale("log")
        rungs = sorted(group["compression_factor"].unique())
        ax.set_xticks(rungs, [f"{cf:.1f}" for cf in rungs], minor=False)
        ax.xaxis.set_minor_locator(plt.NullLocator())   # the rungs are the only ticks worth reading
    caption = "Same task KD for every rung; compression factor 1 is the lossless student (B 1x1)."
    return figures.save_panels(fig, axes, out_dir, "ladder", caption, legend_width=0.3)


def dose_frame(frame: pd.DataFrame, runs, config: dict) -> pd.DataFrame:
    """The dose students' rows at each number of general-KD epochs (0: no_general_kd)."""
    dose = frame[frame["model"].isin(config["ladder"]["dose_students"]) & frame["general_kd_epochs"].notna()].copy()
    losses = general_kd_losses(runs)
    dose["general_kd_last_loss"] = [losses.get((m, e), math.nan) for m, e in zip(dose["model"], dose["general_kd_epochs"])]
    return dose.sort_values(["task", "model", "general_kd_epochs"], kind="stable").reset_index(drop=True)


MIN_PROJECTION_POINTS = 3  # a line through two noisy points is not a trend


def dose_projection(dose: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per (task, model): at how many general-KD epochs margin retention reaches ``target``.

    ``reached_at``: the first measured point at or above it. Otherwise a least-squares line
    of margin retention against log2(1 + epochs) (each doubling of the general-KD budget
    buys the same gain: the SST-2 points lie on such a line) is extended to the target:
    ``projected_epochs`` is where it gets there, inf when the line does not rise. Tasks whose
    teacher is within MIN_TEACHER_MARGIN of the majority class have no margin to retain
    and are left out, as are curves with fewer than MIN_PROJECTION_POINTS points.
    """
    rows = []
    for (task, model), group in dose.groupby(["task", "model"], sort=True):
        group = group.dropna(subset=["margin_retention"]).sort_values("general_kd_epochs")
        first = group.iloc[0] if len(group) else None
        if first is None or first["teacher"] - first["majority"] < MIN_TEACHER_MARGIN:
            continue
        epochs, margin = group["general_kd_epochs"].to_numpy(float), group["margin_retention"].to_numpy(float)
        above = epochs[margin >= target]
        row = {"task": task, "model": model, "target_margin": target, "points": len(group),
               "max_epochs": epochs.max(), "best_margin": margin.max(),
               "reached_at": above.min() if len(above) else math.nan,
               "slope_per_doubling": math.nan, "projected_epochs": math.nan}
        if not len(above) and len(group) >= MIN_PROJECTION_POINTS:
            slope, intercept = np.polyfit(np.log2(1 + epochs), margin, 1)
            row["slope_per_doubling"] = slope
            doublings = (target - intercept) / slope if slope > 0 else math.inf
            row["projected_epochs"] = 2.0 ** doublings - 1 if doublings < 1000 else math.inf  # 2**1000: never
        rows.append(row)
    return pd.DataFrame(rows)


def _epochs(n: float) -> str:
    return "1 epoch" if n == 1 else f"{n:,.0f} epochs"


def _projection_note(row: pd.Series, labels: dict) -> str:
    who = f"{labels.get(row['model'], row['model'])} on {task_label(row['task'])}"
    if not math.isnan(row["reached_at"]):
        return f"{who}: margin retention {row['target_margin']:.0%} reached at {_epochs(row['reached_at'])} (measured)."
    if math.isnan(row["projected_epochs"]):
        return (f"{who}: below {row['target_margin']:.0%} at every point (best {row['best_margin']:.0%}); "
                f"{row['points']:.0f} {'point is' if row['points'] == 1 else 'points are'} too few to project.")
    if math.isinf(row["projected_epochs"]):
        return (f"{who}: below {row['target_margin']:.0%} at every point (best {row['best_margin']:.0%}) and the "
                f"fitted line does not rise ({row['slope_per_doubling']:+.0%} per doubling): no budget on this curve reaches it.")
    return (f"{who}: below {row['target_margin']:.0%} at every point up to {_epochs(row['max_epochs'])} (best "
            f"{row['best_margin']:.0%}); the fitted line ({row['slope_per_doubling']:+.0%} margin per doubling of the "
            f"epochs) reaches it at about {_epochs(row['projected_epochs'])}, an extrapolation, not a measurement.")


def dose_table(dose: pd.DataFrame, labels: dict, projection: pd.DataFrame | None = None) -> render.Table:
    blocks = []
    for (task, model), group in dose.groupby(["task", "model"], sort=True):
        header = ["General-KD epochs", "General-KD loss at the end", "Score (% of teacher)", "Margin retention"]
        rows = [[f"{r['general_kd_epochs']:.0f}", fmt_number(r["general_kd_last_loss"], 2), _score_cell(r),
                 _margin_cell(r)] for _, r in group.iterrows()]
        blocks.append((_heading(f"{labels.get(model, model)} on {task_label(task)}", group.iloc[0]), header, rows))
    notes = [
        "The same task KD after 0 (the SVD init), 1, 3, ... epochs of general KD on the offline corpus "
        "(config general_kd.corpus). The points are a chain: each continues the previous one for the epochs "
        "between them, with its own warm-up and linear decay (docs/deviations.md).",
        "General-KD loss: the sum of the embedding, attention and hidden-state terms at the last step of that point.",
        "Score, % of teacher, margin retention and the majority marks as in ladder.md.",
    ]
    if projection is not None and not projection.empty:
        notes.append("Projection (dose_projection.csv): margin retention against log2(1 + epochs), a least-squares "
                     f"line through at least {MIN_PROJECTION_POINTS} points, extended to the target.")
        notes += [_projection_note(row, labels) for _, row in projection.iterrows()]
    return render.Table("dose", "Dose-response: task-KD score against general-KD epochs", blocks, notes)


def dose_figure(dose: pd.DataFrame, out_dir: Path, labels: dict) -> list[Path]:
    panels = list(dose.groupby("task", sort=True))
    fig, axes = figures.grid(len(panels), width=4.2)
    for ax, (task, group) in zip(axes, panels):
        for model, rows in group.groupby("model", sort=True):
            ax.plot(rows["general_kd_epochs"], 100 * rows["score"], marker="o", label=labels.get(model, model))
        first = group.iloc[0]
        figures.score_panel(ax, task_label(task), "general-KD epochs of the offline corpus",
                            first["teacher"], first["majority"])
        ax.set_xscale("symlog", linthresh=1)  # 0 epochs (the SVD init) stays on the axis
        points = sorted(group["general_kd_epochs"].unique())
        ax.set_xticks(points, [f"{e:.0f}" for e in points])
        ax.xaxis.set_minor_locator(plt.NullLocator())
    caption = "Same task KD after each general-KD budget; 0 is the SVD init."
    return figures.save_panels(fig, axes, out_dir, "dose", caption, legend_width=0.3)


def write(runs, out_dir: str | Path, config: dict) -> pd.DataFrame:
    """The ladder's CSV, table and figure into ``out_dir`` (see the module docstring)."""
    out_dir = Path(out_dir)
    frame = ladder_frame(runs, config)
    labels = {name: spec.get("label", name) for name, spec in config["students"].items()}
    ladder = frame[frame["variant"].isin(config["ladder"]["variants"])].reset_index(drop=True)
    write_csv(out_dir / "ladder.csv", ladder)
    render.write_table(table(ladder, labels), out_dir)
    figure(ladder, out_dir, labels)
    dose = dose_frame(frame, runs, config)
    if not dose.empty:
        write_csv(out_dir / "dose.csv", dose)
        projection = dose_projection(dose, config["ladder"]["dose_target_margin"])
        write_csv(out_dir / "dose_projection.csv", projection)
        render.write_table(dose_table(dose, labels, projection), out_dir)
        dose_figure(dose, out_dir, labels)
    log.info("sanity ladder: %d rows, dose-response: %d rows, into %s", len(ladder), len(dose), out_dir)
    return ladder
