"""Batches: length-bucketed row order and padded LongTensor batches (the only torch here)."""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset

PADDED_COLUMNS = {"input_ids": None, "token_type_ids": 0, "attention_mask": 0}  # None: pad_token_id

SCALAR_COLUMNS = ("labels", "start_positions", "end_positions", "next_sentence_label")

NOT_PREDICTED = -100  # the MLM label of a position that is not predicted (cross_entropy's ignore_index)



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



def row_lengths(encoded: Dataset) -> np.ndarray:
    """Tokens in each row's ``input_ids``, read from Arrow a chunk at a time (no Python lists)."""
    ids = encoded.select_columns(["input_ids"]).with_format("arrow")
    chunks = [pc.list_value_length(table["input_ids"]).to_numpy() for table in ids.iter(batch_size=10_000)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)



def batches(encoded: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
            pad_token_id: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Padded LongTensor batches of ``input_ids``/``token_type_ids``/``attention_mask``
    plus whichever of labels (float for regression), start_positions, end_positions,
    next_sentence_label exist. Non-tensor columns (example_id, offset_mapping) are left out.
    Only a batch's rows are read at a time, so ``encoded`` may be a memory-mapped corpus."""
    padded = [c for c in PADDED_COLUMNS if c in encoded.column_names]
    scalars = [c for c in SCALAR_COLUMNS if c in encoded.column_names]
    if "input_ids" not in padded:
        raise ValueError(f"dataset has no input_ids (columns {encoded.column_names}); encode it first")
    columns = encoded.select_columns(padded + scalars)
    lengths = row_lengths(encoded)
    float_labels = "labels" in scalars and encoded.features["labels"].dtype.startswith("float")
    for rows in batch_indices(lengths, batch_size, shuffle=shuffle, seed=seed, epoch=epoch):
        picked = columns[rows.tolist()]  # this batch's rows, in batch order
        width = int(lengths[rows].max())
        batch = {}
        for column in padded:
            fill = pad_token_id if PADDED_COLUMNS[column] is None else PADDED_COLUMNS[column]
            tensor = torch.full((len(rows), width), fill, dtype=torch.long)
            for r, values in enumerate(picked[column]):
                tensor[r, : len(values)] = torch.tensor(values, dtype=torch.long)
            batch[column] = tensor
        for column in scalars:
            dtype = torch.float32 if column == "labels" and float_labels else torch.long
            batch[column] = torch.tensor(picked[column], dtype=dtype)
        yield batch



def mask_tokens(batch: dict[str, torch.Tensor], rng: np.random.Generator, *, mask_token_id: int,
                vocab_size: int, special_ids: list[int], probability: float = 0.15) -> dict[str, torch.Tensor]:
    """BERT's masked-LM corruption of one padded batch; a new batch with MLM ``labels``.

    Every real token that is not special ([CLS], [SEP], ...) is chosen with ``probability``;
    a chosen token becomes [MASK] (80%), a random vocabulary id (10%) or stays (10%).
    input_ids, attention_mask: (B, T); returns input_ids (B, T) corrupted and labels (B, T),
    the original id where chosen and ``NOT_PREDICTED`` elsewhere.
    """
    ids = batch["input_ids"].numpy()
    maskable = (batch["attention_mask"].numpy() == 1) & ~np.isin(ids, special_ids)  # (B, T)
    chosen = maskable & (rng.random(ids.shape) < probability)
    roll = rng.random(ids.shape)  # < 0.8: [MASK]; [0.8, 0.9): random token; >= 0.9: unchanged
    corrupted = ids.copy()
    corrupted[chosen & (roll < 0.8)] = mask_token_id
    randomised = chosen & (roll >= 0.8) & (roll < 0.9)
    corrupted[randomised] = rng.integers(vocab_size, size=int(randomised.sum()))
    labels = np.where(chosen, ids, NOT_PREDICTED)
    return {**batch, "input_ids": torch.from_numpy(corrupted), "labels": torch.from_numpy(labels)}
