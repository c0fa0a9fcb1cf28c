"""GLUE tokenisation: sentences or pairs into model inputs and labels."""

from __future__ import annotations

from datasets import Dataset, Value

from kbert.tasks import get_task

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
