"""One split of a task, bundled or from the hub, in the hub schema: loading, derived
splits, subsampling, each split's status and checksum, and the overview of every task."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, Features, List, Value

from kbert.data.files import DataError, check_rows, data_root, file_digest, read_file
from kbert.data.hub import load_hub
from kbert.tasks import TASKS, OfflineSplit, OodSplit, TaskSpec, get_task

SOURCES = ("bundled", "hub")



def check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; valid: {', '.join(SOURCES)}")



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



def bundled_frame(spec: TaskSpec, split: str, data_dir=None) -> pd.DataFrame:
    offline = _offline_split(spec, split)
    frames = []
    for relpath in offline.files:
        path = data_root(data_dir) / relpath
        raw = read_file(path, offline.columns, file_digest(relpath, data_dir))
        frames.append(check_rows(raw, spec, path))
    frame = pd.concat(frames, ignore_index=True)
    if spec.kind != "span" and "idx" not in frame:
        frame["idx"] = np.arange(len(frame))   # TSVs carry no idx: number rows in file order
    if offline.derived is not None:
        frame = _derive(frame, spec, offline)
    return frame[list(features_for(spec))]



def _hub_split(spec: TaskSpec, split: str, hub_dir=None) -> Dataset:
    if split not in spec.splits:
        raise ValueError(f"{spec.name} has no split {split!r}; splits: {list(spec.splits)}")
    dataset = load_hub(spec.hub.path, spec.hub.name, spec.hub.splits[split], hub_dir)
    expected = list(features_for(spec))
    missing = [c for c in expected if c not in dataset.column_names]
    if missing:
        raise DataError(f"{spec.hub.path}/{spec.hub.name} {split}: columns {missing} missing; "
                        f"found {dataset.column_names}")
    return dataset.select_columns(expected)



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
    check_source(source)
    if source == "hub":
        dataset = _hub_split(spec, split, hub_dir)
    else:
        frame = bundled_frame(spec, split, data_dir)
        dataset = Dataset.from_pandas(frame, features=features_for(spec), preserve_index=False)
    return subsample(dataset, max_examples, seed)



def load_test_split(task, test, *, source: str = "bundled", data_dir=None, hub_dir=None) -> Dataset:
    """The rows of one GLUE test split (``kbert.tasks.TestSplit``): the task's text
    columns and ``idx``, every row, in the server's order. Labels are not read (hidden on
    the hub; MRPC's bundled copy has them, and they stay unused)."""
    spec = get_task(task)
    check_source(source)
    columns = [*spec.text_columns, "idx"]
    if source == "hub":
        dataset = load_hub(spec.hub.path, test.hub_name, test.hub_split, hub_dir)
        frame = dataset.select_columns(columns).to_pandas()
    else:
        if test.offline.status == "unavailable":
            raise DataError(f"{spec.name}: the {test.server_name} test split is unavailable offline "
                            f"({test.offline.note}); use source='hub' with network access")
        frame = pd.concat([read_file(data_root(data_dir) / f, None, file_digest(f, data_dir))
                           for f in test.offline.files], ignore_index=True)
    missing = [c for c in columns if c not in frame]
    if missing:
        raise DataError(f"{spec.name} {test.server_name} test: columns {missing} missing; found {list(frame)}")
    if len(frame) != test.size:
        raise DataError(f"{spec.name} {test.server_name} test: {len(frame)} rows, the server expects {test.size}")
    return Dataset.from_pandas(frame[columns], preserve_index=False)


def load_ood_split(task, ood: OodSplit, *, max_examples: int | None = None, seed: int = 0,
                   hub_dir=None) -> Dataset:
    """The rows of an out-of-distribution set (``kbert.tasks.OodSplit``) in the source
    task's schema: its text columns renamed to the task's, its labels mapped onto the
    task's label ids. Capped as ``load_split`` caps."""
    spec = get_task(task)
    dataset = load_hub(ood.hub_path, ood.hub_name, ood.hub_split, hub_dir)
    where = f"{ood.hub_path}/{ood.hub_name} {ood.hub_split}"
    missing = [c for c in (*ood.text_columns, "label") if c not in dataset.column_names]
    if missing:
        raise DataError(f"{where}: columns {missing} missing; found {dataset.column_names}")
    hub_labels = getattr(dataset.features["label"], "names", list(ood.labels))
    if list(hub_labels) != list(ood.labels):
        raise DataError(f"{where}: labels {hub_labels}, the registry expects {list(ood.labels)} (kbert/tasks.py)")
    to_ours = [spec.label_names.index(ood.labels[name]) for name in hub_labels]   # hub id -> our id
    dataset = subsample(dataset, max_examples, seed)
    rows = {ours: dataset[hub] for ours, hub in zip(spec.text_columns, ood.text_columns)}
    rows[spec.label_column] = [to_ours[label] for label in dataset["label"]]
    features = Features({k: v for k, v in features_for(spec).items() if k != "idx"})
    return Dataset.from_dict(rows, features=features)


def split_status(task, split: str, source: str = "bundled") -> str:
    """``full`` | ``subset`` | ``derived`` | ``unavailable`` for one split (hub: full)."""
    spec = get_task(task)
    check_source(source)
    if split not in spec.splits:
        raise ValueError(f"{spec.name} has no split {split!r}; splits: {list(spec.splits)}")
    return "full" if source == "hub" else spec.offline[split].status



def data_checksum(task, source: str = "bundled", data_dir=None) -> str:
    """sha256 over the verified files a task uses (bundled), or over its hub id (hub).

    The hub form identifies dataset, config and splits, not bytes: the hub revision is
    whatever ``datasets`` resolved, recorded in its own cache.
    """
    spec = get_task(task)
    check_source(source)
    if source == "hub":
        return hub_checksum({"path": spec.hub.path, "name": spec.hub.name, "splits": spec.hub.splits})
    if not spec.available_offline:
        raise DataError(f"{spec.name} is unavailable offline; it has no bundled data to hash")
    files = sorted({f for s in spec.offline.values() for f in s.files})
    listing = "".join(f"{file_digest(f, data_dir)}  {f}\n" for f in files)
    return hashlib.sha256(listing.encode()).hexdigest()



def hub_checksum(ident: dict) -> str:
    """sha256 of a hub dataset's identity (path, config, splits): the hub form of a data checksum."""
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()



def ood_checksum(ood: OodSplit) -> str:
    """The data checksum of an OOD set: its hub identity (it has no offline copy)."""
    return hub_checksum({"path": ood.hub_path, "name": ood.hub_name, "splits": {ood.name: ood.hub_split}})



def describe_tasks(source: str = "bundled", data_dir=None, tasks=None) -> pd.DataFrame:
    """One row per (task, split): n_examples, status and where the rows come from.

    ``tasks`` (names; None: every task) limits the table, and the files checked, to those
    tasks. Bundled splits are loaded (and so verified), every one of them: a bad file is
    a DataError listing every bad file, not only the first. Hub splits show the official
    sizes without downloading anything.
    """
    check_source(source)
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
                    n = len(bundled_frame(spec, split, data_dir))
                except DataError as err:
                    n, status = 0, "error"
                    errors.append(str(err))
            rows.append({"task": spec.name, "split": split, "n_examples": n, "status": status,
                         "source": origin})
    if errors:
        raise DataError("bad data files:\n  " + "\n  ".join(dict.fromkeys(errors)))
    return pd.DataFrame(rows)
