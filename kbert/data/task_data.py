"""What the stages train and evaluate on: a task's data settings from the config, its
capped train and eval rows, and its tokenised training features."""

from __future__ import annotations

from datasets import Dataset

from kbert.data.glue import encode
from kbert.data.splits import load_split
from kbert.data.squad import prepare_squad_train
from kbert.tasks import DOC_STRIDE, get_task


def data_settings(config: dict, task: str) -> dict:
    """The ``data`` section of the config with the task's overrides merged."""
    from kbert.config import settings

    return settings(config, "data", task=task)


def train_rows(task: str, data_cfg: dict) -> Dataset:
    """The training rows of ``task``. A capped subset is drawn with a fixed seed, so every
    run seed (and the augmentation stage) sees the same examples: seeds vary training only."""
    return load_split(task, "train", source=data_cfg["source"], max_examples=data_cfg["max_train_examples"], seed=0)


def eval_rows(task: str, split: str, data_cfg: dict) -> Dataset:
    """The rows of one eval split, capped as every evaluation caps them."""
    return load_split(task, split, source=data_cfg["source"], max_examples=data_cfg["max_eval_examples"], seed=0)


def train_features(task: str, tokenizer, data_cfg: dict, max_seq_length: int, doc_stride: int = DOC_STRIDE,
                   extra_rows: Dataset | None = None) -> Dataset:
    """Tokenised training examples (SQuAD: training windows), optionally plus augmented rows."""
    spec = get_task(task)
    rows = train_rows(task, data_cfg)
    if extra_rows is not None:
        from datasets import concatenate_datasets

        rows = concatenate_datasets([rows, extra_rows.cast(rows.features)])
    if spec.kind == "span":
        return prepare_squad_train(rows, tokenizer, max_seq_length, doc_stride)
    return encode(rows, task, tokenizer, max_seq_length)
