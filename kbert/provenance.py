"""Provenance and safe output: hashes, git commit, atomic writes.

Every stage writes through these helpers so that a killed job never leaves a file that
looks finished, and every result row can be traced back to code, config and data.
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
from pathlib import Path

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
