"""Data: one loader over the bundled files and the hub, tokenisation, SQuAD windows.

Sources
    ``bundled``: the real files under ``data/`` (``data/PROVENANCE.md``), each verified
    against ``data/SHA256SUMS`` on first use in a process. What each split is made of,
    and its status (full / subset / derived / unavailable), is in ``kbert.tasks``.
    ``hub``: ``datasets.load_dataset`` on the ids in ``kbert.tasks`` (paper preset). With
    ``KBERT_HUB_DIR`` (or ``hub_dir=``) set, the same call reads a local mirror laid out
    like the hub (``<dir>/nyu-mll/glue/README.md``, ``<dir>/nyu-mll/glue/mrpc/*.parquet``).

Both sources give the hub schema: GLUE ``<text columns>, label (ClassLabel or float32),
idx``; SQuAD ``id, title, context, question, answers{text, answer_start}``.

SQuAD feature preparation and post-processing follow Hugging Face ``run_qa.py`` /
``utils_qa.py`` step by step, so that our numbers mean what theirs mean.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from datasets import ClassLabel, Dataset, Features, List, Value

from kbert.tasks import TASKS, OfflineSplit, TaskSpec, get_task

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("bundled", "hub")


class DataError(ValueError):
    """A data file is missing, corrupt or malformed; the message names the file."""


class HubOfflineError(ConnectionError):
    """A hub dataset was requested while the offline variables are set."""


# ------------------------------------------------------------------ files and checksums


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


# ------------------------------------------------------------------ readers (-> DataFrame)


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
def _read_file(path: Path, columns: tuple[str, ...] | None, digest: str) -> pd.DataFrame:
    # ``digest`` is part of the key so a changed file is never served from the cache.
    return READERS[path.suffix](path, columns)


# ------------------------------------------------------------------ row checks


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


# ------------------------------------------------------------------ bundled splits


def _derive(frame: pd.DataFrame, spec: TaskSpec, split: OfflineSplit) -> pd.DataFrame:
    """Keep the train or eval part of a derived split (see ``kbert.tasks.Derived``)."""
    rule = split.derived
    groups = pd.unique(frame[rule.group_by])
    ranked = sorted(groups, key=lambda key: hashlib.sha256(f"{spec.name}:{key}".encode()).hexdigest())
    eval_groups = set(ranked[: round(rule.eval_fraction * len(groups))])
    in_eval = frame[rule.group_by].isin(eval_groups)
    return frame[in_eval if rule.part == "eval" else ~in_eval].reset_index(drop=True)


def features_for(spec: TaskSpec) -> Features:
    """The hub schema of a task's raw rows."""
    if spec.kind == "span":
        return Features({"id": Value("string"), "title": Value("string"),
                         "context": Value("string"), "question": Value("string"),
                         "answers": {"text": List(Value("string")),
                                     "answer_start": List(Value("int32"))}})
    label = Value("float32") if spec.is_regression else ClassLabel(names=list(spec.label_names))
    return Features({**{c: Value("string") for c in spec.text_columns},
                     spec.label_column: label, "idx": Value("int32")})


def _offline_split(spec: TaskSpec, split: str) -> OfflineSplit:
    if split not in spec.splits:
        raise ValueError(f"{spec.name} has no split {split!r}; splits: {list(spec.splits)}")
    offline = spec.offline[split]
    if offline.status == "unavailable":
        raise DataError(f"{spec.name} {split} is unavailable offline ({offline.note}); "
                        "use source='hub' with network access")
    return offline


def _bundled_frame(spec: TaskSpec, split: str, data_dir=None) -> pd.DataFrame:
    offline = _offline_split(spec, split)
    check = _check_squad if spec.kind == "span" else _check_glue
    frames = []
    for relpath in offline.files:
        path = data_root(data_dir) / relpath
        raw = _read_file(path, offline.columns, file_digest(relpath, data_dir))
        frames.append(check(raw, spec, path))
    frame = pd.concat(frames, ignore_index=True)
    if spec.kind != "span" and "idx" not in frame:
        frame["idx"] = np.arange(len(frame))   # TSVs carry no idx: number rows in file order
    if offline.derived is not None:
        frame = _derive(frame, spec, offline)
    return frame[list(features_for(spec))]


# ------------------------------------------------------------------ hub


def _offline_mode() -> bool:
    flags = (os.environ.get("HF_DATASETS_OFFLINE", ""), os.environ.get("HF_HUB_OFFLINE", ""))
    return any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags) or bool(
        datasets.config.HF_HUB_OFFLINE)


def _hub_location(hub_path: str, hub_dir=None) -> str:
    """Where ``load_dataset`` should look: a local mirror, else the hub id itself."""
    mirror = hub_dir or os.environ.get("KBERT_HUB_DIR")
    if mirror:
        local = Path(mirror) / hub_path
        if not local.is_dir():
            raise DataError(f"hub mirror {mirror} has no {hub_path}/ (expected {local})")
        return str(local)
    if _offline_mode():
        # Fail here, before datasets spends time on retries or cache look-ups.
        raise HubOfflineError(
            f"source='hub' needs {hub_path} from the Hugging Face Hub, but HF_DATASETS_OFFLINE/"
            "HF_HUB_OFFLINE is set. Use source='bundled', point KBERT_HUB_DIR at a local "
            "mirror laid out like the hub, or unset the offline variables on a networked machine.")
    return hub_path


def _load_hub(path: str, name: str, split: str, hub_dir=None) -> Dataset:
    location = _hub_location(path, hub_dir)
    try:
        return datasets.load_dataset(location, name, split=split)
    except (ConnectionError, OSError, ValueError) as err:
        raise DataError(f"could not load {path} (config {name!r}, split {split!r}) "
                        f"from {location}: {err}") from err


def _hub_split(spec: TaskSpec, split: str, hub_dir=None) -> Dataset:
    if split not in spec.splits:
        raise ValueError(f"{spec.name} has no split {split!r}; splits: {list(spec.splits)}")
    dataset = _load_hub(spec.hub.path, spec.hub.name, spec.hub.splits[split], hub_dir)
    expected = list(features_for(spec))
    missing = [c for c in expected if c not in dataset.column_names]
    if missing:
        raise DataError(f"{spec.hub.path}/{spec.hub.name} {split}: columns {missing} missing; "
                        f"found {dataset.column_names}")
    return dataset.select_columns(expected)


# ------------------------------------------------------------------ public loaders


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; valid: {', '.join(SOURCES)}")


def subsample(dataset: Dataset, max_examples: int | None, seed: int = 0) -> Dataset:
    """At most ``max_examples`` rows, chosen by ``seed`` and kept in their original order."""
    if max_examples is None or max_examples >= len(dataset):
        return dataset
    if max_examples < 1:
        raise ValueError(f"max_examples must be >= 1 or None, got {max_examples}")
    chosen = np.random.default_rng(seed).permutation(len(dataset))[:max_examples]
    return dataset.select(np.sort(chosen))


def load_split(task, split: str, *, source: str = "bundled", max_examples: int | None = None,
               seed: int = 0, data_dir=None, hub_dir=None) -> Dataset:
    """Raw rows of one split of ``task`` in the hub schema (see module docstring).

    ``split`` is "train" or one of ``spec.eval_splits``. ``max_examples`` subsamples
    deterministically in ``seed`` (the data status then becomes a subset: record it).
    """
    spec = get_task(task)
    _check_source(source)
    if source == "hub":
        dataset = _hub_split(spec, split, hub_dir)
    else:
        frame = _bundled_frame(spec, split, data_dir)
        dataset = Dataset.from_pandas(frame, features=features_for(spec), preserve_index=False)
    return subsample(dataset, max_examples, seed)


def split_status(task, split: str, source: str = "bundled") -> str:
    """``full`` | ``subset`` | ``derived`` | ``unavailable`` for one split (hub: full)."""
    spec = get_task(task)
    _check_source(source)
    if split not in spec.splits:
        raise ValueError(f"{spec.name} has no split {split!r}; splits: {list(spec.splits)}")
    return "full" if source == "hub" else spec.offline[split].status


def data_checksum(task, source: str = "bundled", data_dir=None) -> str:
    """sha256 over the verified files a task uses (bundled), or over its hub id (hub).

    The hub form identifies dataset, config and splits, not bytes: the hub revision is
    whatever ``datasets`` resolved, recorded in its own cache.
    """
    spec = get_task(task)
    _check_source(source)
    if source == "hub":
        ident = json.dumps({"path": spec.hub.path, "name": spec.hub.name, "splits": spec.hub.splits},
                           sort_keys=True)
        return hashlib.sha256(ident.encode()).hexdigest()
    if not spec.available_offline:
        raise DataError(f"{spec.name} is unavailable offline; it has no bundled data to hash")
    files = sorted({f for s in spec.offline.values() for f in s.files})
    listing = "".join(f"{file_digest(f, data_dir)}  {f}\n" for f in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def describe_tasks(source: str = "bundled", data_dir=None, tasks=None) -> pd.DataFrame:
    """One row per (task, split): n_examples, status and where the rows come from.

    ``tasks`` (names; None: every task) limits the table, and the files checked, to those
    tasks. Bundled splits are loaded (and so verified), every one of them: a bad file is
    a DataError listing every bad file, not only the first. Hub splits show the official
    sizes without downloading anything.
    """
    _check_source(source)
    rows, errors = [], []
    for spec in (TASKS.values() if tasks is None else [get_task(t) for t in tasks]):
        for split in spec.splits:
            status = split_status(spec, split, source)
            if source == "hub":
                n, origin = spec.hub.sizes[split], f"{spec.hub.path}:{spec.hub.name}/{spec.hub.splits[split]}"
            elif status == "unavailable":
                n, origin = 0, f"unavailable offline ({spec.offline[split].note})"
            else:
                offline = spec.offline[split]
                origin = " + ".join(offline.files)
                if offline.derived:
                    origin += f" [{offline.derived.part} part, by {offline.derived.group_by}]"
                try:
                    n = len(_bundled_frame(spec, split, data_dir))
                except DataError as err:
                    n, status = 0, "error"
                    errors.append(str(err))
            rows.append({"task": spec.name, "split": split, "n_examples": n, "status": status,
                         "source": origin})
    if errors:
        raise DataError("bad data files:\n  " + "\n  ".join(dict.fromkeys(errors)))
    return pd.DataFrame(rows)


def describe_corpora(data_dir=None) -> pd.DataFrame:
    """One row per bundled general-distillation corpus: its documents (so verified);
    DataError listing every bad file."""
    rows, errors = [], []
    for name, where in CORPORA.items():
        if where != "bundled":
            continue
        try:
            rows.append({"corpus": name, "n_documents": len(load_corpus(name, data_dir=data_dir))})
        except DataError as err:
            errors.append(str(err))
    if errors:
        raise DataError("bad corpus files:\n  " + "\n  ".join(errors))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ corpora for general KD


def _wikitext_documents(data_dir=None) -> list[str]:
    """Articles of bundled WikiText-2 valid + test; an article starts at a " = Title = " line.

    Section headings (" = = Section = = ") are dropped; paragraphs are joined by newlines.
    """
    documents, paragraphs = [], []
    for relpath in ("wikitext2/valid.txt", "wikitext2/test.txt"):
        for line in verified_file(relpath, data_dir).read_text(encoding="utf-8").split("\n"):
            text = line.strip()
            is_title = text.startswith("= ") and text.endswith(" =") and not text.startswith("= =")
            if is_title:
                if paragraphs:
                    documents.append("\n".join(paragraphs))
                paragraphs = []
            elif text and not text.startswith("= "):
                paragraphs.append(text)
    if paragraphs:
        documents.append("\n".join(paragraphs))
    return documents


def _squad_paragraphs(data_dir=None) -> list[str]:
    # Train articles only: dev contexts are evaluation data for SQuAD (and, through the
    # derived split, for SQuAD v2.0), so general KD must never see them.
    frame = _bundled_frame(get_task("squad_v1"), "train", data_dir)
    return list(pd.unique(frame["context"]))


def _wikipedia(fraction: float, seed: int, hub_dir=None) -> list[str]:
    articles = _load_hub("wikimedia/wikipedia", "20231101.en", "train", hub_dir)
    keep = math.ceil(fraction * len(articles))
    chosen = np.sort(np.random.default_rng(seed).permutation(len(articles))[:keep])
    return list(articles.select(chosen)["text"])


CORPORA = {"wikitext2": "bundled", "squad_paragraphs": "bundled", "wikipedia": "hub"}


def load_corpus(name: str, *, source: str = "bundled", fraction: float = 1.0, seed: int = 0,
                data_dir=None, hub_dir=None) -> list[str]:
    """Documents for general distillation; ``fraction`` keeps a seeded sample of them.

    ``wikitext2`` and ``squad_paragraphs`` are bundled; ``wikipedia`` (the paper's
    corpus, ``wikimedia/wikipedia`` 20231101.en) comes from the hub whatever ``source``.
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; valid: {', '.join(CORPORA)}")
    _check_source(source)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"corpus fraction must be in (0, 1], got {fraction}")
    if name == "wikipedia":
        documents = _wikipedia(fraction, seed, hub_dir)
    else:
        documents = _wikitext_documents(data_dir) if name == "wikitext2" else _squad_paragraphs(data_dir)
        if fraction < 1.0:
            keep = math.ceil(fraction * len(documents))
            chosen = np.sort(np.random.default_rng(seed).permutation(len(documents))[:keep])
            documents = [documents[i] for i in chosen]
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise DataError(f"corpus {name!r} is empty (fraction {fraction})")
    return documents


# ------------------------------------------------------------------ GLUE tokenisation


def encode(dataset: Dataset, task, tokenizer, max_seq_length: int | None = None) -> Dataset:
    """Tokenise sentences or pairs (longest-first truncation, no padding: ``batches``
    pads per batch). Columns: input_ids, token_type_ids, attention_mask, labels."""
    spec = get_task(task)
    if spec.kind == "span":
        raise ValueError(f"{spec.name} is a span task: use prepare_squad_train/prepare_squad_eval")
    max_length = max_seq_length or spec.max_seq_length

    def tokenize(rows):
        encoded = tokenizer(*(rows[c] for c in spec.text_columns), truncation=True,
                            max_length=max_length)
        encoded["labels"] = rows[spec.label_column]
        return encoded

    encoded = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names)
    label_type = Value("float32" if spec.is_regression else "int64")
    return encoded if encoded.features["labels"] == label_type else encoded.cast_column("labels", label_type)


# ------------------------------------------------------------------ batching

PADDED_COLUMNS = {"input_ids": None, "token_type_ids": 0, "attention_mask": 0}  # None: pad_token_id
SCALAR_COLUMNS = ("labels", "start_positions", "end_positions")


def batch_indices(lengths, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                  chunk_batches: int = 50) -> list[np.ndarray]:
    """Row indices of each batch.

    Shuffled: permute the rows, sort each chunk of ``chunk_batches`` batches by length
    (so a batch holds similar lengths and pads little), then shuffle the batch order.
    Deterministic for (seed, epoch). Unshuffled: rows in order, so outputs line up with
    the dataset (needed for SQuAD post-processing).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths)
    n = len(lengths)
    if not shuffle:
        return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    chunk = batch_size * chunk_batches
    result = []
    for start in range(0, n, chunk):
        rows = order[start:start + chunk]
        rows = rows[np.argsort(lengths[rows], kind="stable")]
        result += [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    return [result[i] for i in rng.permutation(len(result))]


def num_batches(n_rows: int, batch_size: int) -> int:
    """Batches per epoch from ``batch_indices`` (its length-sorted chunks are whole batches)."""
    return math.ceil(n_rows / batch_size)


def batches(encoded: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
            pad_token_id: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Padded LongTensor batches of ``input_ids``/``token_type_ids``/``attention_mask``
    plus whichever of labels (float for regression), start_positions, end_positions
    exist. Non-tensor columns (example_id, offset_mapping) are left out."""
    padded = [c for c in PADDED_COLUMNS if c in encoded.column_names]
    scalars = [c for c in SCALAR_COLUMNS if c in encoded.column_names]
    if "input_ids" not in padded:
        raise ValueError(f"dataset has no input_ids (columns {encoded.column_names}); encode it first")
    columns = encoded.select_columns(padded + scalars)[:]
    lengths = [len(ids) for ids in columns["input_ids"]]
    float_labels = "labels" in scalars and encoded.features["labels"].dtype.startswith("float")
    for rows in batch_indices(lengths, batch_size, shuffle=shuffle, seed=seed, epoch=epoch):
        width = max(lengths[i] for i in rows)
        batch = {}
        for column in padded:
            fill = pad_token_id if PADDED_COLUMNS[column] is None else PADDED_COLUMNS[column]
            tensor = torch.full((len(rows), width), fill, dtype=torch.long)
            for r, i in enumerate(rows):
                tensor[r, : lengths[i]] = torch.tensor(columns[column][i], dtype=torch.long)
            batch[column] = tensor
        for column in scalars:
            dtype = torch.float32 if column == "labels" and float_labels else torch.long
            batch[column] = torch.tensor([columns[column][i] for i in rows], dtype=dtype)
        yield batch


# ------------------------------------------------------------------ SQuAD windows (HF run_qa)


def _windows(rows, tokenizer, max_seq_length: int, doc_stride: int):
    """Tokenise (question, context) into overlapping windows over the context."""
    if tokenizer.padding_side != "right":
        raise ValueError("SQuAD windows assume a right-padding tokenizer (question first)")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("SQuAD windows need a fast tokenizer (offset mappings)")
    questions = [q.lstrip() for q in rows["question"]]   # HF: leading spaces waste window room
    return tokenizer(questions, rows["context"], truncation="only_second", max_length=max_seq_length,
                     stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)


def _answer_tokens(offsets, sequence_ids, answers, cls_index: int) -> tuple[int, int]:
    """Token start/end of the first answer, or (cls, cls) if there is none or it is not
    wholly inside this window (HF run_qa ``prepare_train_features``)."""
    if not answers["answer_start"]:
        return cls_index, cls_index
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    first = sequence_ids.index(1)
    last = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
        return cls_index, cls_index
    start = first
    while start < len(offsets) and offsets[start][0] <= start_char:
        start += 1
    end = last
    while offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def prepare_squad_train(dataset: Dataset, tokenizer, max_seq_length: int = 384,
                        doc_stride: int = 128) -> Dataset:
    """Training windows with start_positions/end_positions (CLS when no answer in window)."""

    def prepare(rows):
        windows = _windows(rows, tokenizer, max_seq_length, doc_stride)
        sample = windows.pop("overflow_to_sample_mapping")
        offsets = windows.pop("offset_mapping")
        windows["start_positions"], windows["end_positions"] = [], []
        for i, window_offsets in enumerate(offsets):
            ids = windows["input_ids"][i]
            cls_index = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
            start, end = _answer_tokens(window_offsets, windows.sequence_ids(i),
                                        rows["answers"][sample[i]], cls_index)
            windows["start_positions"].append(start)
            windows["end_positions"].append(end)
        return windows

    return dataset.map(prepare, batched=True, remove_columns=dataset.column_names)


def prepare_squad_eval(dataset: Dataset, tokenizer, max_seq_length: int = 384,
                       doc_stride: int = 128) -> Dataset:
    """Evaluation windows with example_id and offset_mapping (None outside the context)."""

    def prepare(rows):
        windows = _windows(rows, tokenizer, max_seq_length, doc_stride)
        sample = windows.pop("overflow_to_sample_mapping")
        windows["example_id"] = [rows["id"][s] for s in sample]
        windows["offset_mapping"] = [
            [list(o) if kind == 1 else None for o, kind in zip(offsets, windows.sequence_ids(i))]
            for i, offsets in enumerate(windows["offset_mapping"])]
        return windows

    return dataset.map(prepare, batched=True, remove_columns=dataset.column_names)


# ------------------------------------------------------------------ SQuAD post-processing


def _rows(data, columns: list[str]) -> dict[str, list]:
    if isinstance(data, Dataset):
        return data.select_columns(columns)[:]
    if isinstance(data, dict):
        return {c: list(data[c]) for c in columns}
    return {c: [row[c] for row in data] for c in columns}


def _ranked_answers(context: str, feature_ids, offsets_all, start_logits, end_logits, *,
                    version_2: bool, n_best: int, max_answer_length: int):
    """HF ``postprocess_qa_predictions`` for one example: its n-best list (dicts with
    text, start_logit, end_logit; best first) and the null score (v2, else None)."""
    null, candidates = None, []
    for i in feature_ids:
        start, end, offsets = np.asarray(start_logits[i]), np.asarray(end_logits[i]), offsets_all[i]
        feature_null = start[0] + end[0]   # the CLS position scores "no answer"
        if null is None or null["score"] > feature_null:
            null = {"offsets": (0, 0), "score": feature_null, "start_logit": start[0], "end_logit": end[0]}
        for s in np.argsort(start)[-1: -n_best - 1: -1].tolist():
            for e in np.argsort(end)[-1: -n_best - 1: -1].tolist():
                if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                    continue   # padding or a question/special token
                if e < s or e - s + 1 > max_answer_length:
                    continue
                candidates.append({"offsets": (offsets[s][0], offsets[e][1]),
                                   "score": start[s] + end[e], "start_logit": start[s], "end_logit": end[e]})
    if version_2 and null is not None:
        candidates.append(null)
    ranked = sorted(candidates, key=lambda c: c["score"], reverse=True)[:n_best]
    if version_2 and null is not None and not any(c["offsets"] == (0, 0) for c in ranked):
        ranked.append(null)
    for c in ranked:
        c["text"] = context[c["offsets"][0]: c["offsets"][1]]
    if not ranked or (len(ranked) == 1 and ranked[0]["text"] == ""):
        ranked.insert(0, {"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "score": 0.0})
    return ranked, (null["score"] if version_2 and null is not None else None)


def squad_best_spans(examples, features, start_logits, end_logits, *, version_2: bool,
                     n_best: int = 20, max_answer_length: int = 30) -> dict[str, tuple[str, float | None]]:
    """Per question id: the best answer text (v2: best *non-null*) and its null odds
    (null score - that answer's score; v2 only, else None).

    ``features`` come from ``prepare_squad_eval``; ``start_logits[i]``/``end_logits[i]``
    belong to feature i (a 2-D array, or one array per feature; padding past the
    feature's length is ignored).
    """
    example_rows = _rows(examples, ["id", "context"])
    feature_rows = _rows(features, ["example_id", "offset_mapping"])
    if len(start_logits) != len(feature_rows["example_id"]) or len(end_logits) != len(start_logits):
        raise ValueError(f"{len(start_logits)} start and {len(end_logits)} end logit rows for "
                         f"{len(feature_rows['example_id'])} features")
    features_of = defaultdict(list)
    for i, example_id in enumerate(feature_rows["example_id"]):
        features_of[example_id].append(i)
    best = {}
    for example_id, context in zip(example_rows["id"], example_rows["context"]):
        ranked, null_score = _ranked_answers(
            context, features_of[example_id], feature_rows["offset_mapping"], start_logits, end_logits,
            version_2=version_2, n_best=n_best, max_answer_length=max_answer_length)
        if not version_2:
            best[example_id] = (ranked[0]["text"], None)
            continue
        answer = next(c for c in ranked if c["text"] != "")
        best[example_id] = (answer["text"],
                            float(null_score - answer["start_logit"] - answer["end_logit"]))
    return best


def postprocess_squad(examples, features, start_logits, end_logits, *, version_2: bool,
                      n_best: int = 20, max_answer_length: int = 30,
                      null_score_diff_threshold: float = 0.0) -> tuple[dict[str, str], dict[str, float]]:
    """Answer text per question id, and null odds per id (v2; empty for v1.1).

    v2: predict "" when null odds > ``null_score_diff_threshold`` (HF run_qa rule).
    """
    best = squad_best_spans(examples, features, start_logits, end_logits, version_2=version_2,
                            n_best=n_best, max_answer_length=max_answer_length)
    if not version_2:
        return {qid: text for qid, (text, _) in best.items()}, {}
    predictions = {qid: "" if odds > null_score_diff_threshold else text
                   for qid, (text, odds) in best.items()}
    return predictions, {qid: odds for qid, (_, odds) in best.items()}


def squad_references(dataset: Dataset) -> dict[str, list[str]]:
    """Gold answer texts per question id, the ``references`` of ``kbert.metrics.squad_v*``."""
    rows = _rows(dataset, ["id", "answers"])
    return {qid: list(answers["text"]) for qid, answers in zip(rows["id"], rows["answers"])}
