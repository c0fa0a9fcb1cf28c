"""Stage outputs into frames: every ``metrics.json`` flattened into ``results/*.csv``.

:func:`aggregate` writes ``glue.csv``, ``squad.csv``, ``teacher.csv``, ``ablation.csv``,
``ood.csv`` (the out-of-distribution sets of Table 9), their ``*_summary.csv`` (mean, sd,
median, n over seeds), ``majority.csv`` (constant-prediction scores, when given) and
``retention.csv`` (:mod:`kbert.report.retention_csv`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from kbert import retention as ret
from kbert.artifacts import write_csv
from kbert.config import stale_settings
from kbert.report.columns import (ABLATION_VARIANTS, LEADING_COLUMNS, MAIN_VARIANTS, PROVENANCE_KEYS,
                                  RECORD_KEYS, SUMMARY_FIRST, SUMMARY_KEYS, TEACHER_FAMILY,
                                  TRAILING_COLUMNS, UNAVAILABLE, UNAVAILABLE_REASON, metric_columns,
                                  read_results)
from kbert.report.retention_csv import retention_frame
from kbert.tasks import OOD_SPLITS, SQUAD_TASKS

log = logging.getLogger(__name__)

def find_metric_files(paths) -> list[Path]:
    """Every ``metrics.json`` named directly or found below a directory, sorted, unique."""
    found = set()
    for path in map(Path, paths):
        found.update(path.rglob("metrics.json") if path.is_dir() else [path])
    return sorted(found)



def stage_records(runs, stage: str) -> list[dict]:
    """The metrics.json records under ``runs`` written by ``stage`` (e.g. compress)."""
    records = (json.loads(path.read_text()) for path in find_metric_files(runs))
    return [record for record in records if record.get("stage") == stage]


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




def check_settings(records: list[tuple[Path, dict]], config: dict) -> None:
    """Refuse (path, metrics.json) ``records`` that ``config`` would not produce: a record's settings fingerprint
    (``provenance.settings``) differs from the one its stage computes from ``config`` today,
    which Snakemake would have rerun unless the record was copied in by hand or kept with
    ``--rerun-triggers mtime``. Records written before records carried settings are logged,
    not refused: nothing says what produced them."""
    stale, unchecked = [], 0
    for path, record in records:
        if not (record.get("provenance") or {}).get("settings"):
            unchecked += 1
        elif (why := stale_settings(config, record)) is not None:
            stale.append(f"{path}: {why}")
    if unchecked:
        log.warning("%d metrics.json records carry no settings fingerprint (written before they did): "
                    "not checked against the config", unchecked)
    if stale:
        raise ValueError(f"{len(stale)} record(s) were produced with other settings than the config's; rerun them "
                         "(snakemake --forcerun <file>) or aggregate with the config they were run with:\n  "
                         + "\n  ".join(stale))


def read_runs(runs, config: dict | None = None) -> list[dict]:
    """The rows of every ``metrics.json`` under ``runs`` (run dirs and/or files), flattened;
    with ``config``, every record must have been produced with its settings (:func:`check_settings`)."""
    records = [(path, json.loads(path.read_text())) for path in find_metric_files(runs)]
    if config is not None:
        check_settings(records, config)
    return [row for _, record in records for row in flatten_metrics(record)]


def unavailable_rows(unavailable, rows: list[dict]) -> list[dict]:
    """Rows with empty metrics for tasks (or one eval split of a task: an OOD set) that have
    no data, one per model and main variant.

    ``unavailable`` holds task names or ``{"task", ["eval_split"], ["reason"]}`` dicts.
    """
    combo_keys = ["preset", "model", "family", "variant", "augment", "teacher"]
    combos = {tuple(r.get(k) for k in combo_keys) for r in rows
              if r.get("variant") in MAIN_VARIANTS or r.get("family") == TEACHER_FAMILY
              or r.get("variant") is None}
    # An entry without eval_split is present when any split of its task is.
    present = {(tuple(r.get(k) for k in combo_keys), r.get("task"), split) for r in rows
               for split in (None, r.get("eval_split"))}
    out = []
    for entry in unavailable:
        entry = {"task": entry} if isinstance(entry, str) else dict(entry)
        reason, split = entry.get("reason", UNAVAILABLE_REASON), entry.get("eval_split")
        for combo in sorted(combos or {(None,) * len(combo_keys)}, key=str):
            if (combo, entry["task"], split) not in present:
                out.append(dict(zip(combo_keys, combo), task=entry["task"], eval_split=split,
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




def results_frame(rows: list[dict]) -> pd.DataFrame:
    """Flattened rows as a results frame: the contract's column order, ``teacher`` filled."""
    return fill_teacher(order_columns(pd.DataFrame(rows)))


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



def prune_metrics(part: pd.DataFrame) -> pd.DataFrame:
    """Drop metric columns that no row of this file has (glue.csv has no SQuAD columns)."""
    empty = [m for m in metric_columns(part)[1:] if part[m].isna().all()]
    return part.drop(columns=empty)



def split_results(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The five result files as filtered views of all rows: OOD sets (Table 9) only in
    ``ood``, so that no in-distribution table or retention mixes them in."""
    is_ood = frame["eval_split"].isin(OOD_SPLITS)
    in_distribution = split_in_distribution(frame[~is_ood])
    return {**in_distribution, "ood": frame[is_ood]}



def split_in_distribution(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """glue, squad, teacher and ablation: rows of the tasks' own eval splits."""
    is_squad = frame["task"].isin(SQUAD_TASKS)
    is_ablated = frame["variant"].isin(ABLATION_VARIANTS)
    keys = pd.MultiIndex.from_frame(frame[["preset", "model", "task"]])
    in_ablation = is_ablated | ((frame["variant"] == "full")
                                & keys.isin(keys[is_ablated.to_numpy()]))
    return {"glue": frame[~is_squad], "squad": frame[is_squad],
            "teacher": frame[frame["family"] == TEACHER_FAMILY], "ablation": frame[in_ablation]}



def aggregate(runs, out_dir: str | Path, unavailable=(),
              majority: pd.DataFrame | None = None, config: dict | None = None) -> dict[str, pd.DataFrame]:
    """Flatten every ``metrics.json`` under ``runs`` into ``out_dir/*.csv``.

    ``runs``: run directories and/or ``metrics.json`` paths. ``unavailable``: task names (or
    ``{"task", ["eval_split"], ["reason"]}`` dicts) that have no data; they get rows with
    empty metrics and ``data_status = unavailable``. ``majority``: the ``majority.csv`` frame
    (:func:`kbert.retention.majority_frame`); without it there is no margin retention.
    ``config``: the run's config; every record must have been produced with its settings
    (:func:`check_settings`). Returns the written frames by file stem.
    """
    rows = read_runs(runs, config)
    rows.extend(unavailable_rows(unavailable, rows))
    frame = results_frame(rows)
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
