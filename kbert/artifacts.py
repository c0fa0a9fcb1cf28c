"""What a stage leaves on disk, and how to trace it: hashes, the git commit, atomic writes,
and a stage's outputs (``model/``, ``metrics.json`` with provenance, ``train_log.json``).

Every stage writes through these helpers so that a killed job never leaves a file that
looks finished, and every result row can be traced back to code, config, teacher and data.
A stage trains with its resume checkpoint in ``<out>.partial/`` (kept when the job is
killed, so a re-run resumes) and only renames the finished outputs onto ``<out>/``.

No torch here: the report and the config import this module too (a model is saved
through its own ``save_pretrained``).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable

import pandas as pd

from kbert import REPO_ROOT


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj) -> str:
    """Hash of a JSON-serialisable object, independent of key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sha256_json_items(items: Iterable) -> str:
    """``sha256_json(list(items))``, hashed an item at a time so the list is never held."""
    digest = hashlib.sha256(b"[")
    for i, item in enumerate(items):
        # json.dumps writes a list as its items' own dumps joined by ", ".
        digest.update(((", " if i else "") + json.dumps(item, sort_keys=True, default=str)).encode())
    digest.update(b"]")
    return digest.hexdigest()


def config_hash(config: dict) -> str:
    """sha256 of the config as canonical JSON (sorted keys); pass a resolved config."""
    return sha256_json(config)


def git_commit() -> str:
    """The checkout's commit, with ``-dirty`` when tracked files changed; ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary siblings of ``path`` left by a killed writer (for a BERT-base model, a
    full copy each): ``.<name>.<pid>.<random>`` whose process is gone. A live writer's
    are kept."""
    stale = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[a-z0-9_]{{8}}")
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*"):
        match = stale.fullmatch(tmp.name)
        if match and tmp.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling path; rename it onto ``path`` only if the block succeeds.

    Works for a file or a directory written at the yielded path. Temporaries of a killed
    earlier writer of ``path`` are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def update_csv(path: str | os.PathLike, rows: list[dict], key: str = "benchmark") -> pd.DataFrame:
    """Replace the rows of ``path`` whose ``key`` equals the new rows' ``key``; keep the rest.

    Lets several benchmarks share one CSV (``results/efficiency.csv``) without clobbering
    each other's rows.
    """
    new = pd.DataFrame(rows)
    path = Path(path)
    if path.exists():
        old = pd.read_csv(path)
        if key in old.columns:
            old = old[~old[key].isin(set(new[key]))]
        new = pd.concat([old, new], ignore_index=True)
    write_csv(path, new)
    return new


# ------------------------------------------------------------------ stage outputs


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


def provenance(config: dict, started: float, teacher_sha256: str, data_sha256: str | None, seed: int | None,
               settings: dict | None = None) -> dict:
    """The ``provenance`` of a stage's metrics.json; the caller hashes what it read
    (``kbert.teachers.teacher_hash``, its data) and passes the settings it ran with
    (``kbert.config.settings_record``), which ``aggregate`` checks against its config."""
    return {
        "settings": settings,
        "git_commit": git_commit(),
        "config_hash": config_hash(config),
        "teacher_hash": teacher_sha256,
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
