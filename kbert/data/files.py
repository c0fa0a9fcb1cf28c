"""Bundled files: where they are, their checksums (``data/SHA256SUMS``), the readers, and
the row checks that turn a malformed file into a ``DataError`` naming the file and row."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kbert import REPO_ROOT
from kbert.tasks import TaskSpec

class DataError(ValueError):
    """A data file is missing, corrupt or malformed; the message names the file."""



def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``$KBERT_DATA_DIR``, else the repository's ``data/``."""
    return Path(data_dir or os.environ.get("KBERT_DATA_DIR") or REPO_ROOT / "data")



@functools.lru_cache(maxsize=8)
def _expected_sums(sums_file: Path, mtime_ns: int) -> dict[str, str]:
    expected = {}
    for line in sums_file.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            expected[name.lstrip("*")] = digest
    return expected



@functools.lru_cache(maxsize=64)
def _sha256_once(path: Path, size: int, mtime_ns: int) -> str:
    # Keyed on size and mtime: re-hashed only when the file changes, so verifying at
    # every load costs one stat() after the first time in a process.
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()



def verified_file(relpath: str, data_dir=None) -> Path:
    """The path of a bundled file after checking it against ``SHA256SUMS``."""
    root = data_root(data_dir)
    sums_file, path = root / "SHA256SUMS", root / relpath
    if not sums_file.is_file():
        raise DataError(f"{sums_file} is missing; the bundled data cannot be verified")
    expected = _expected_sums(sums_file, sums_file.stat().st_mtime_ns).get(relpath)
    if expected is None:
        raise DataError(f"{relpath} is not listed in {sums_file}")
    if not path.is_file():
        raise DataError(f"bundled data file {path} is missing (expected sha256 {expected})")
    stat = path.stat()
    actual = _sha256_once(path, stat.st_size, stat.st_mtime_ns)
    if actual != expected:
        raise DataError(f"{path} is corrupt or altered: sha256 {actual}, expected {expected} "
                        f"(from {sums_file}); restore it from git or the shared data")
    return path



def file_digest(relpath: str, data_dir=None) -> str:
    """sha256 of a bundled file, verified against ``SHA256SUMS``."""
    path = verified_file(relpath, data_dir)
    stat = path.stat()
    return _sha256_once(path, stat.st_size, stat.st_mtime_ns)



def _read_parquet(path: Path, columns) -> pd.DataFrame:
    return read_parquet(path)



def read_parquet(path: str | os.PathLike) -> pd.DataFrame:
    """A parquet file as a DataFrame; a file that is not parquet is a DataError naming it
    (pyarrow's own message, e.g. "Corrupt snappy compressed data", names no file)."""
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise DataError(f"{path}: not a readable parquet file ({err}); restore or regenerate it") from err



def _read_tsv(path: Path, columns: tuple[str, ...] | None) -> pd.DataFrame:
    """A GLUE-style TSV: no quoting, tab-separated, first line the header unless
    ``columns`` names them. Text is kept byte-exact (GLUE sentences end in a space)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError(f"{path} is empty: expected " + ("a header line and " if columns is None else "")
                        + "tab-separated rows; restore the file (git checkout data/)")
    if columns is None:
        columns, lines, first = tuple(lines[0].split("\t")), lines[1:], 2
    else:
        first = 1
    rows = []
    for number, line in enumerate(lines, start=first):
        fields = line.rstrip("\r").split("\t")
        if len(fields) != len(columns):
            raise DataError(f"{path}, line {number} (row {number - first}): {len(fields)} fields, "
                            f"expected {len(columns)} ({', '.join(columns)})")
        rows.append(fields)
    return pd.DataFrame(rows, columns=list(columns))



def _read_squad_json(path: Path, columns) -> pd.DataFrame:
    """Flatten SQuAD JSON into one row per question, in the hub schema.

    Unanswerable v2.0 questions get empty answer lists (their ``plausible_answers``
    are dropped, as on the hub).
    """
    try:
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a SQuAD JSON file ({err})") from err
    rows = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                rows.append({
                    "id": qa["id"], "title": article["title"], "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": {"text": [a["text"] for a in answers],
                                "answer_start": [a["answer_start"] for a in answers]},
                })
    return pd.DataFrame(rows)



READERS = {".parquet": _read_parquet, ".tsv": _read_tsv, ".json": _read_squad_json}



@functools.lru_cache(maxsize=32)
def read_file(path: Path, columns: tuple[str, ...] | None, digest: str) -> pd.DataFrame:
    # ``digest`` is part of the key so a changed file is never served from the cache.
    return READERS[path.suffix](path, columns)



def _label_ids(values: pd.Series, spec: TaskSpec, path: Path) -> list[int]:
    """Label ids in HF order; a TSV may give the name ("neutral") or the id ("1")."""
    names = spec.label_names
    ids = []
    for row, value in enumerate(values):
        if isinstance(value, str) and value in names:
            ids.append(names.index(value))
        elif str(value).lstrip("-").isdigit() and 0 <= int(value) < len(names):
            ids.append(int(value))
        else:
            raise DataError(f"{path}, row {row}: label {value!r} is not one of {list(names)} "
                            f"or an id 0..{len(names) - 1}")
    return ids



def _check_glue(frame: pd.DataFrame, spec: TaskSpec, path: Path) -> pd.DataFrame:
    missing = [c for c in (*spec.text_columns, spec.label_column) if c not in frame]
    if missing:
        raise DataError(f"{path}: columns {missing} missing; found {list(frame.columns)}")
    for column in spec.text_columns:
        for row, text in enumerate(frame[column]):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{path}, row {row}: {column} is empty or not text ({text!r})")
    frame = frame.copy()
    if spec.is_regression:
        scores = pd.to_numeric(frame[spec.label_column], errors="coerce").astype("float64")
        bad = np.flatnonzero(~np.isfinite(scores.to_numpy()))
        if bad.size:
            raise DataError(f"{path}, row {bad[0]}: label {frame[spec.label_column].iloc[bad[0]]!r} "
                            "is not a finite score")
        frame[spec.label_column] = scores
    else:
        frame[spec.label_column] = _label_ids(frame[spec.label_column], spec, path)
    return frame



def _check_squad(frame: pd.DataFrame, spec: TaskSpec, path: Path) -> pd.DataFrame:
    duplicated = frame["id"][frame["id"].duplicated()]
    if len(duplicated):
        raise DataError(f"{path}: question id {duplicated.iloc[0]!r} occurs twice")
    for row in frame.itertuples():
        if not row.question.strip():
            raise DataError(f"{path}, row {row.Index} (id {row.id}): empty question")
        if not row.answers["text"] and not spec.version_2_with_negative:
            raise DataError(f"{path}, row {row.Index} (id {row.id}): no answer in a v1.1 file")
        for text, start in zip(row.answers["text"], row.answers["answer_start"]):
            if row.context[start:start + len(text)] != text:
                raise DataError(f"{path}, row {row.Index} (id {row.id}): answer {text!r} is not at "
                                f"character {start} of the context")
    return frame


def check_rows(frame: pd.DataFrame, spec: TaskSpec, path: Path) -> pd.DataFrame:
    """The rows of one bundled file of ``spec``, checked (GLUE labels as ids in HF order)."""
    return (_check_squad if spec.kind == "span" else _check_glue)(frame, spec, path)
