"""The equal-size comparison: Kronecker vs low-rank vs dense TinyBERT-style students.

Every student here went through the same teacher, data, general and task distillation
and budget, at (within 5%) the same parameter count as the Kronecker student it
``match``es, over several seeds. One entry point, :func:`write`, called by
``python -m kbert.cli equal-size``, writes into one directory (``results/equal_size/``):

    runs.csv       one row per (model, task, seed, eval split), as glue.csv
    summary.csv    mean, sd, median over seeds, with the size budget each model belongs to
                   and the split's majority-class score (what no learning reaches)
    start.csv      with ``starts`` (task_kd_start records, ``equal_size.start_scores``): each
                   student's dev score as task KD starts, before any step (its init encoder
                   with the teacher's head), per variant; with the no_general_kd runs
                   (``equal_size.no_general_kd_seeds``) the table's "start and end" block,
                   which says how much of each final score the starting point had
    init_error.csv per student: the mean relative Frobenius error of its SVD initialisation
                   per matrix group (attention, FFN, word embedding) and over all factorised
                   matrices, from its compress metrics (dense students start from random
                   weights: none); also the last block of the table
    verdicts.csv   per (budget, task): who wins, counted only where the seed spreads
                   (mean +- sd) do not overlap, and whether the winner is above the
                   majority class (a "win" at that level is a rival doing worse than
                   a constant prediction)
    equal_size.md / .tex, equal_size.png / .pdf
    speed.csv, speed.md / .tex, speed.png / .pdf   with ``speed`` (the rows of
                   ``python -m kbert.bench equal-size``): every family's latency, throughput
                   and training step at each budget, timed side by side with its teacher
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from kbert.artifacts import write_csv
from kbert.report import aggregate
from kbert.report.cells import MISSING, Cell, fmt_number, our_setup
from kbert.report.columns import TEACHER_FAMILY
from kbert.report.figures import grid, save_figure
from kbert.report.render import Table, write_table
from kbert.retention import majority_frame, majority_lookup
from kbert.tasks import task_label

log = logging.getLogger(__name__)

FAMILY_LABELS = {"kronecker": "Kronecker", "lowrank": "Low-rank (SVD)", "dense": "Dense (TinyBERT-style)"}
FAMILY_COLORS = {"kronecker": "tab:blue", "lowrank": "tab:green", "dense": "tab:orange"}
RIVALS = ("dense", "lowrank")


def budget_of(students: dict, model: str) -> str | None:
    """The Kronecker student whose size ``model`` has (itself for a Kronecker student)."""
    spec = students.get(model)
    if spec is None:
        return None
    return spec.get("match") or model


def collect(runs, students: dict, config: dict | None = None) -> pd.DataFrame:
    """Rows of every metrics.json under ``runs`` (teachers and students), with ``budget``;
    with ``config``, each checked against its settings (``aggregate.read_runs``)."""
    rows = aggregate.read_runs(runs, config)
    if not rows:
        raise ValueError(f"no evaluated runs under {list(map(str, runs))}")
    frame = aggregate.results_frame(rows)
    frame.insert(1, "budget", [budget_of(students, m) for m in frame["model"]])
    return frame.sort_values(["task", "budget", "model", "seed", "eval_split"], na_position="first",
                             kind="stable").reset_index(drop=True)


INIT_GROUPS = ("attention", "ffn", "embedding")


def matrix_group(name: str) -> str:
    """attention | ffn | embedding, from a factorised matrix's module name."""
    if name.startswith("embeddings."):
        return "embedding"
    return "attention" if ".attention." in name else "ffn"


def init_errors(runs, students: dict) -> pd.DataFrame:
    """Per sweep student with a compress record: its initialisation error by matrix group.

    ``error_<group>``: mean relative Frobenius error ||W_init - W|| / ||W|| over the group's
    factorised matrices; ``error_all``: over all of them (the compress stage's own mean).
    """
    rows = []
    for record in aggregate.stage_records(runs, "compress"):
        model = record.get("student")
        if model not in students:
            continue
        by_group = {}
        for name, error in (record.get("relative_error") or {}).items():
            by_group.setdefault(matrix_group(name), []).append(error)
        init = record.get("init", "svd")
        if record["family"] == "dense" and init == "svd":
            init = "random"   # records from before dense inits were named: every dense student was random
        rows.append({"model": model, "family": record["family"], "budget": budget_of(students, model),
                     "init": init, "params": record["params"],
                     **{f"error_{g}": float(np.mean(by_group[g])) if g in by_group else np.nan for g in INIT_GROUPS},
                     "error_all": record.get("relative_error_mean")})
    columns = ["model", "family", "budget", "init", "params", *(f"error_{g}" for g in INIT_GROUPS), "error_all"]
    return pd.DataFrame(rows, columns=columns).sort_values(["budget", "model"], kind="stable").reset_index(drop=True)


def _init_block(init: pd.DataFrame, labels: dict):
    header = ["Budget", "Family", "Student", "Attention", "FFN", "Word embedding", "All factorised"]
    rows = []
    for budget in list(init.groupby("budget")["params"].max().sort_values(ascending=False).index):
        group = init[init["budget"] == budget]
        for family in ("kronecker", *RIVALS):
            for _, r in group[group["family"] == family].iterrows():
                errors = ([f"{r['init']} init"] * 4 if family == "dense" else
                          [fmt_number(r[f"error_{g}"], 3) for g in (*INIT_GROUPS, "all")])
                rows.append([labels.get(budget, budget), FAMILY_LABELS[family], labels.get(r["model"], r["model"]),
                             *errors])
    return ("Initialisation error (relative Frobenius error of the SVD init, mean per matrix group)", header, rows)


def summarise(frame: pd.DataFrame, config: dict) -> pd.DataFrame:
    summary = aggregate.summarise(frame.drop(columns="budget"))
    budgets = frame.drop_duplicates("model").set_index("model")["budget"]
    summary.insert(1, "budget", summary["model"].map(budgets))
    majority = majority_lookup(majority_frame(config, summary["task"].unique()))
    summary["majority"] = [majority.get((task, split, "score"))
                           for task, split in zip(summary["task"], summary["eval_split"])]
    return summary


def first_split_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of each task's first eval split (MNLI: matched)."""
    first_split = frame.groupby("task")["eval_split"].min()
    return frame[frame["eval_split"] == frame["task"].map(first_split)]


def main_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """One scored row per (model, task): the task's first eval split."""
    return first_split_rows(summary[summary["n"] > 0])


def students_and_teachers(summary: pd.DataFrame, variant: str | None = "full") -> tuple[pd.DataFrame, pd.Series]:
    """Main-split student rows of one task-KD ``variant`` (the comparison: full; None: every
    variant), and the teacher's mean score per task."""
    is_teacher = summary["family"] == TEACHER_FAMILY
    teachers = main_rows(summary[is_teacher]).set_index("task")["score_mean"]
    students = summary[~is_teacher & ((summary["variant"] == variant) if variant else True)]
    return main_rows(students), teachers


def budgets_by_size(students: pd.DataFrame) -> list[str]:
    """Budgets from the largest student to the smallest (the paper's order: 8x, then 21x)."""
    return list(students.groupby("budget")["params"].max().sort_values(ascending=False).index)


def above_majority(row: pd.Series) -> bool | None:
    """Whether a student's whole spread (mean - sd) is above the majority-class score;
    None where the task has none (STS-B, SQuAD)."""
    if pd.isna(row["majority"]):
        return None
    return bool(row["score_mean"] - np.nan_to_num(row["score_sd"]) > row["majority"])


def verdict(kron: pd.Series | None, rival: pd.Series | None) -> str:
    """'kronecker', the rival's family, 'overlap' (mean +- sd intervals intersect), or
    'one seed' (no spread to compare: no winner is called from a single run)."""
    if kron is None or rival is None:
        return "missing"
    if min(kron["n"], rival["n"]) < 2:
        return "one seed"
    k_lo, k_hi = kron["score_mean"] - kron["score_sd"], kron["score_mean"] + kron["score_sd"]
    r_lo, r_hi = rival["score_mean"] - rival["score_sd"], rival["score_mean"] + rival["score_sd"]
    if k_lo > r_hi:
        return "kronecker"
    if r_lo > k_hi:
        return rival["family"]
    return "overlap"


def verdicts(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    students, _ = students_and_teachers(summary)
    for (budget, task), group in students.groupby(["budget", "task"], sort=True):
        by_family = {r["family"]: r for _, r in group.iterrows()}
        for rival in RIVALS:
            if rival in by_family or "kronecker" in by_family:
                winner = verdict(by_family.get("kronecker"), by_family.get(rival))
                rows.append({"budget": budget, "task": task, "rival": rival, "winner": winner,
                             "winner_above_majority": above_majority(by_family[winner])
                             if winner in by_family else None,
                             "seeds_kronecker": by_family["kronecker"]["n"] if "kronecker" in by_family else 0,
                             "seeds_rival": by_family[rival]["n"] if rival in by_family else 0})
    return pd.DataFrame(rows, columns=["budget", "task", "rival", "winner", "winner_above_majority",
                                       "seeds_kronecker", "seeds_rival"])


def _cell(row: pd.Series | None, planned: int | None = None) -> str:
    """mean ± sd (n=seeds), and "of <planned>" while a partial sweep has fewer seeds than planned."""
    if row is None:
        return MISSING
    n = int(row["n"])
    seeds = f"n={n} of {planned}" if planned and n < planned else f"n={n}"
    return Cell(row["score_mean"], row["score_sd"], n).show() + f" ({seeds})"


def planned_seeds(config: dict) -> dict[str, int]:
    """How many seeds of a ``full`` run the config plans per sweep task (``equal_size``)."""
    sweep = config["equal_size"]
    return {task: len(sweep["per_task_seeds"].get(task, sweep["seeds"])) for task in sweep["tasks"]}


def won_at_majority(flag) -> bool:
    """True for a ``winner_above_majority`` of False (not for None: no majority score)."""
    return flag is not None and not pd.isna(flag) and not flag


def _verdict_cell(row: pd.Series | None) -> str:
    if row is None:
        return "missing"
    return row["winner"] + (" (at majority)" if won_at_majority(row["winner_above_majority"]) else "")


def start_scores(starts, students: dict, config: dict | None = None) -> pd.DataFrame:
    """One row per task_kd_start record's main eval split: model, family, budget, variant,
    task, score (the dev score before any task-KD step)."""
    columns = ["model", "family", "budget", "variant", "task", "eval_split", "seed", "score"]
    rows = aggregate.read_runs(starts or [], config)
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    frame["budget"] = [budget_of(students, m) for m in frame["model"]]
    return first_split_rows(frame)[columns].sort_values(["budget", "task", "family", "variant"], kind="stable").reset_index(drop=True)


def _score(value) -> str:
    return MISSING if value is None or pd.isna(value) else fmt_number(100 * value)


START_VARIANTS = ("full", "no_general_kd")


def _start_block(finals: dict[str, pd.DataFrame], starts: pd.DataFrame, budget: str, labels: dict):
    """Per (task, family) of one budget: the score as task KD starts and where it ends
    (``finals``: the main-split rows of each of START_VARIANTS), after general KD (full) and
    without it (no_general_kd)."""
    header = ["Task", "Family", "Start (after general KD)", "End: full", "Start (init, no general KD)",
              "End: no general KD"]
    rows = []
    full = finals["full"][finals["full"]["budget"] == budget]
    for task in sorted(full["task"].unique()):
        for family in ("kronecker", *RIVALS):
            cells = []
            for variant in START_VARIANTS:
                start = starts[(starts["budget"] == budget) & (starts["task"] == task) & (starts["family"] == family)
                               & (starts["variant"] == variant)]["score"]
                end = finals[variant]
                end = end[(end["budget"] == budget) & (end["task"] == task) & (end["family"] == family)]
                cells += [_score(start.iloc[0] if len(start) else None), _cell(end.iloc[0] if len(end) else None)]
            if any(c != MISSING for c in cells):
                rows.append([task_label(task), FAMILY_LABELS[family], *cells])
    return (f"Budget of {labels.get(budget, budget)}: score at the start and the end of task KD, with and "
            "without general KD", header, rows)


def table(summary: pd.DataFrame, wins: pd.DataFrame, labels: dict, init: pd.DataFrame | None = None,
          starts: pd.DataFrame | None = None, planned: dict[str, int] | None = None) -> Table:
    """``planned``: seeds per task the sweep plans (``planned_seeds``); a cell with fewer says so,
    and a note counts the (budget, task, family) cells still short of their seeds."""
    students, teachers = students_and_teachers(summary)
    planned = planned or {}
    blocks = []
    for budget in budgets_by_size(students):
        group = students[students["budget"] == budget]
        header = ["Task", "Teacher", "Majority"] + [FAMILY_LABELS[f] for f in ("kronecker", *RIVALS)] + \
                 [f"vs {FAMILY_LABELS[r].split(' ')[0].lower()}" for r in RIVALS]
        rows = []
        for task, rows_task in group.groupby("task", sort=True):
            by_family = {r["family"]: r for _, r in rows_task.iterrows()}
            teacher, majority = teachers.get(task), rows_task["majority"].iloc[0]
            won = wins[(wins["budget"] == budget) & (wins["task"] == task)].set_index("rival")
            rows.append([task_label(task), fmt_number(100 * teacher) if teacher == teacher else MISSING,
                         fmt_number(None if pd.isna(majority) else 100 * majority)]
                        + [_cell(by_family.get(f), planned.get(task)) for f in ("kronecker", *RIVALS)]
                        + [_verdict_cell(won.loc[r] if r in won.index else None) for r in RIVALS])
        params = {f: int(r["params"]) for f, r in group.drop_duplicates("family").set_index("family").iterrows()}
        sizes = ", ".join(f"{FAMILY_LABELS[f]} {params[f] / 1e6:.2f}M" for f in ("kronecker", *RIVALS) if f in params)
        blocks.append((f"Budget of {labels.get(budget, budget)} ({sizes} parameters)", header, rows))
    notes = [
        "Score x100 on the task's dev split (MNLI: matched), mean ± sample sd over seeds (n = seeds).",
        "A win counts only where the mean ± sd intervals do not overlap ('overlap': no winner; "
        "'one seed': no spread, no winner).",
        "Majority: always predicting the most frequent training label ('–': no constant scores, e.g. "
        "STS-B); '(at majority)': the winner's mean - sd is not above it, a win by not learning.",
        "Same teacher, data, general KD and task KD settings for every family; see config.<hash>.resolved.yaml in the work directory.",
        "Setup: " + our_setup(summary[summary["family"] != TEACHER_FAMILY]),
    ]
    if planned:
        budgets = budgets_by_size(students)
        cells = [(b, t, f) for b in budgets for t in planned for f in ("kronecker", *RIVALS)]
        counts = students.groupby(["budget", "task", "family"])["n"].max()
        short = sum(int(counts.get(cell, 0)) < planned[cell[1]] for cell in cells)
        if short:
            notes.append(f"Partial sweep: {short} of {len(cells)} (budget, task, family) cells have fewer seeds than "
                         "planned ('n=k of m'; '–': none yet); a verdict may change as seeds arrive.")
    finals = {variant: students_and_teachers(summary, variant)[0] for variant in START_VARIANTS}
    starts = starts if starts is not None else start_scores([], {})
    if not (finals["no_general_kd"].empty and starts.empty):  # either part of the block was run
        blocks += [_start_block(finals, starts, budget, labels) for budget in budgets_by_size(students)]
        notes.append("Start: the dev score of the student task KD starts from, before any step (its encoder after "
                     "general KD, or its initialisation, with the fine-tuned teacher's pooler and head; a dense "
                     "student's narrower head starts random, so it starts near chance). End: mean ± sd over seeds "
                     "(n). What a family gains between start and end is what task KD taught it; what it loses "
                     "without general KD is what general KD gave it.")
    if init is not None and not init.empty:
        blocks.append(_init_block(init, labels))
        notes.append("Initialisation error: ||W_init - W|| / ||W|| per factorised teacher matrix (nearest Kronecker "
                     "product, or truncated SVD for low-rank), averaged per group; 0 is the teacher itself, 1 as far as "
                     "zeros. Dense TinyBERT-style students factorise nothing: 'random init' as TinyBERT's, or "
                     "'selected init', every weight a sub-block of the teacher's (kbert.students.select_teacher_weights).")
    for rival in RIVALS:
        pairs = wins[wins["rival"] == rival]
        counts = pairs["winner"].value_counts()
        # (astype: an empty map gives an object Series, which pandas would read as column names)
        at_majority = pairs.loc[pairs["winner_above_majority"].map(won_at_majority).astype(bool), "winner"].value_counts()
        notes.append(f"Kronecker vs {FAMILY_LABELS[rival]}: Kronecker wins {counts.get('kronecker', 0)} "
                     f"({at_majority.get('kronecker', 0)} at majority), {rival} wins {counts.get(rival, 0)} "
                     f"({at_majority.get(rival, 0)} at majority), overlap {counts.get('overlap', 0)} "
                     f"of {int(counts.sum())} (budget, task) pairs.")
    return Table("equal_size", "Equal-size students: Kronecker vs low-rank vs dense (same pipeline)",
                        blocks, notes)


def figure(summary: pd.DataFrame, fig_dir: Path, labels: dict) -> list[Path]:
    students, teachers = students_and_teachers(summary)
    tasks = sorted(students["task"].unique())
    budgets = budgets_by_size(students)
    families = [f for f in ("kronecker", *RIVALS) if f in set(students["family"])]
    fig, axes = grid(len(tasks))
    width = 0.6 / len(families)
    for ax, task in zip(axes, tasks):
        rows = students[students["task"] == task]
        for i, family in enumerate(families):
            cells = [rows[(rows["budget"] == b) & (rows["family"] == family)] for b in budgets]
            means = [100 * c["score_mean"].iloc[0] if len(c) else np.nan for c in cells]
            sds = [100 * c["score_sd"].fillna(0).iloc[0] if len(c) else 0 for c in cells]
            # Points, not bars: the differences of interest are small next to the scores.
            ax.errorbar(np.arange(len(budgets)) + (i - (len(families) - 1) / 2) * width, means, yerr=sds,
                        fmt="o", capsize=3, color=FAMILY_COLORS[family], label=FAMILY_LABELS[family])
        if task in teachers:
            ax.axhline(100 * teachers[task], color="black", linestyle="--", linewidth=1, label="Teacher")
        majority = rows["majority"].iloc[0]
        if not pd.isna(majority):
            ax.axhline(100 * majority, color="grey", linestyle=":", linewidth=1, label="Majority class")
        ax.set_xticks(range(len(budgets)), [labels.get(b, b) for b in budgets], fontsize=7)
        ax.set_xlim(-0.5, len(budgets) - 0.5)
        ax.set_title(task_label(task), fontsize=9)
        ax.set_ylabel("dev score x100 (mean ± sd)", fontsize=7)
        ax.tick_params(labelsize=7)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=7)
    caption = ("Points: mean over seeds, error bars: sample sd. Same pipeline and budget for every family. "
               + our_setup(students))
    return save_figure(fig, fig_dir, "equal_size", caption, legend_width=0.16)


FAMILY_ORDER = ("teacher", "kronecker", *RIVALS)


def _ordered(speed: pd.DataFrame) -> pd.DataFrame:
    """Teacher first, then each budget (as the benchmark listed it) with its families in order."""
    budgets = list(dict.fromkeys(speed["budget"].fillna("").astype(str)))
    key = speed["budget"].fillna("").astype(str).map(budgets.index) * 10 + speed["family"].map(FAMILY_ORDER.index)
    return speed.assign(_key=key).sort_values(["config", "_key"], kind="stable").drop(columns="_key")


def speed_table(speed: pd.DataFrame) -> Table:
    """Latency, throughput and training step of each family at each budget, per teacher config."""
    blocks = []
    for config, group in speed.groupby("config", sort=False):
        first = group.iloc[0]
        header = ["Model", "Family", "Params (M)", "GFLOPs / sequence", "Latency, ms (batch 1)", "× teacher",
                  f"Throughput, seq/s (batch {int(first['batch'])})", "× teacher", "Training step, ms", "× teacher"]
        rows = [[r["subject"], FAMILY_LABELS.get(r["family"], "Teacher"), fmt_number(r["params"] / 1e6, 2),
                 fmt_number(r["flops"] / 1e9, 2), fmt_number(r["latency_ms_median"], 1),
                 fmt_number(r["latency_speedup"], 2), fmt_number(r["throughput_median"], 1),
                 fmt_number(r["speedup"], 2), fmt_number(r.get("train_step_ms_median"), 1),
                 fmt_number(r.get("train_speedup"), 2)] for _, r in _ordered(group).iterrows()]
        threads = int(first["threads"])
        blocks.append((f"{config}, sequence length {int(first['seq_len'])}, {threads} CPU thread{'s' * (threads != 1)}",
                       header, rows))
    notes = [
        "Measured side by side in one run (`python -m kbert.bench equal-size`): every round times every model of "
        "a block once, the order alternating; medians over rounds; random weights (timing does not depend on them).",
        "× teacher: median of per-round ratios to the block's dense teacher (above 1: faster).",
        "FLOPs: Eq. 7 for the linear layers plus the attention-score products, per sequence.",
        "Each budget's low-rank and dense students have the parameter count of its Kronecker student (within 5%).",
    ]
    return Table("speed", "Equal-size students: CPU latency, throughput and training step", blocks, notes)


def speed_figure(speed: pd.DataFrame, fig_dir: Path) -> list[Path]:
    """Throughput and latency speed-up over the teacher, per family and budget, one panel per config."""
    configs = list(dict.fromkeys(speed["config"]))
    fig, axes = grid(2 * len(configs), width=3.6)
    for i, config in enumerate(configs):
        rows = _ordered(speed[(speed["config"] == config) & (speed["family"] != "teacher")])
        budgets = list(dict.fromkeys(rows["budget"].astype(str)))
        families = [f for f in ("kronecker", *RIVALS) if f in set(rows["family"])]
        for ax, column, what in ((axes[2 * i], "speedup", f"throughput (batch {int(rows['batch'].iloc[0])})"),
                                 (axes[2 * i + 1], "latency_speedup", "latency (batch 1)")):
            width = 0.8 / len(families)
            for j, family in enumerate(families):
                values = [rows[(rows["budget"].astype(str) == b) & (rows["family"] == family)][column] for b in budgets]
                heights = [v.iloc[0] if len(v) else np.nan for v in values]
                ax.bar(np.arange(len(budgets)) + (j - (len(families) - 1) / 2) * width, heights, width,
                       color=FAMILY_COLORS[family], label=FAMILY_LABELS[family])
            ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="Teacher")
            ax.set_xticks(range(len(budgets)), [f"{b}x budget" if b.isdigit() else b for b in budgets], fontsize=7)
            ax.set_ylabel(f"{what}: speed-up over the teacher", fontsize=7)
            ax.set_title(config, fontsize=9)
            ax.tick_params(labelsize=7)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=7)
    first = speed.iloc[0]
    caption = (f"CPU, {int(first['threads'])} threads, sequence length {int(first['seq_len'])}; medians of "
               "interleaved rounds, measured side by side in one run (python -m kbert.bench equal-size).")
    return save_figure(fig, fig_dir, "speed", caption, legend_width=0.16)


def write_speed(speed_csv: str | Path, out_dir: str | Path) -> pd.DataFrame:
    """The benchmark's rows into ``out_dir``: speed.csv, its table and figure."""
    out_dir = Path(out_dir)
    speed = pd.read_csv(speed_csv)
    speed = speed[speed["benchmark"] == "equal_size"]
    if speed.empty:
        raise ValueError(f"{speed_csv}: no rows of benchmark 'equal_size' (python -m kbert.bench equal-size writes them)")
    write_csv(out_dir / "speed.csv", speed)
    write_table(speed_table(speed), out_dir)
    speed_figure(speed, out_dir)
    return speed


def write(runs, out_dir: str | Path, config: dict, speed: str | Path | None = None,
          starts=None) -> dict[str, pd.DataFrame]:
    """Everything of the comparison into ``out_dir`` (see the module docstring)."""
    out_dir = Path(out_dir)
    students = config["students"]
    frame = collect(runs, students, config)
    summary = summarise(frame, config)
    wins = verdicts(summary)
    init = init_errors(runs, students)
    start = start_scores(starts, students, config)
    written = {"runs": frame, "summary": summary, "verdicts": wins, "init_error": init}
    if starts:
        written["start"] = start
    for name, part in written.items():
        write_csv(out_dir / f"{name}.csv", part)
    labels = {name: spec.get("label", name) for name, spec in students.items()}
    rendered = table(summary, wins, labels, init, start, planned_seeds(config))
    write_table(rendered, out_dir)
    figure(summary, out_dir, labels)
    if speed is not None:
        written["speed"] = write_speed(speed, out_dir)
    log.info("equal-size comparison: %d runs into %s", len(frame), out_dir)
    return written
