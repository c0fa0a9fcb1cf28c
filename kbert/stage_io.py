"""What every stage writes: the checkpoint, metrics.json with provenance, atomically.

A stage trains with its resume checkpoint in ``<out>.partial/`` (kept when the job is
killed, so a re-run resumes) and only renames the finished outputs onto ``<out>/``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from kbert.config import config_hash
from kbert.provenance import atomic_path, git_commit, sha256_file, write_json
from kbert.teachers import teacher_hash


def resume_dir(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    path = out_dir.parent / f"{out_dir.name}.partial"
    path.mkdir(parents=True, exist_ok=True)
    return path


def stage_metrics(stage_dir: str | Path) -> dict:
    """The metrics.json of a stage's output directory."""
    return json.loads((Path(stage_dir) / "metrics.json").read_text())


def stage_identity(stage_dir: str | Path, **expected) -> str:
    """Which run of an input stage (init student, fine-tuned teacher) a job starts from:
    the hash of its metrics.json, which every run of that stage rewrites.

    ``expected`` (e.g. ``task="mrpc"``) must match that metrics.json, so that the output of
    another model is a clear error, not a state-dict traceback or a silent mix-up.
    """
    path = Path(stage_dir) / "metrics.json"
    metrics = stage_metrics(stage_dir)
    for key, value in expected.items():
        if metrics.get(key) != value:
            raise ValueError(f"{stage_dir} holds the output for {key} {metrics.get(key)!r}, not {value!r} "
                             f"(see {path}): pass that stage's output for {value!r}")
    return sha256_file(path)


def provenance(config: dict, started: float, data_sha256: str | None, seed: int | None) -> dict:
    return {
        "git_commit": git_commit(),
        "config_hash": config_hash(config),
        "teacher_hash": teacher_hash(config["teacher"]),
        "data_sha256": data_sha256,
        "preset": config["preset"],
        "seed": seed,
        "wall_time_s": round(time.time() - started, 1),
    }


def write_stage(out_dir: str | Path, metrics: dict, model=None, tokenizer=None, log: list[dict] | None = None,
                config: dict | None = None, files: dict[str, str] | None = None) -> None:
    """Write ``model/``, ``metrics.json``, ``train_log.json`` and any further text ``files``
    (relative path -> text, e.g. the test-server predictions) into ``out_dir`` in one rename.

    With ``config``, the row records which teacher it belongs to (the tables name it).
    """
    out_dir = Path(out_dir)
    if config is not None:
        metrics = {"teacher": config["teacher"]["name"], **metrics}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        if model is not None:
            model.save_pretrained(tmp / "model")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "model")
        if log is not None:
            write_json(tmp / "train_log.json", log)
        for relpath, text in (files or {}).items():
            (tmp / relpath).parent.mkdir(parents=True, exist_ok=True)
            (tmp / relpath).write_text(text)
        write_json(tmp / "metrics.json", metrics)
    shutil.rmtree(out_dir.parent / f"{out_dir.name}.partial", ignore_errors=True)  # resume state no longer needed
