"""The augment stage: TinyBERT-style augmented training rows for one task, cached as parquet.

The rows are the task's training rows (the same capped subset the students train on), of
which the first ``max_source_examples`` are augmented. Shared by every student.
"""

from __future__ import annotations

from kbert.augment import augment_to_parquet, load_glove
from kbert.config import stage_settings
from kbert.data.task_data import train_rows
from kbert.tasks import get_task
from kbert.teachers import tokenizer_for

# The config this stage reads (kbert.config.stage_settings); its rule's rerun fingerprint hashes the same.
CONFIG_SECTIONS = ("augment", "data")


def run(config: dict, task: str, out_path: str) -> str:
    spec = get_task(task)
    if spec.kind != "classification" and spec.kind != "regression":
        raise ValueError(f"{task}: augmentation is for GLUE tasks (TinyBERT does not augment SQuAD)")
    picked = stage_settings(config, CONFIG_SECTIONS, task=task)
    s = picked["augment"]
    rows = train_rows(task, picked["data"])
    if s["max_source_examples"] is not None:  # null (the schema default): every training row
        rows = rows.select(range(min(len(rows), s["max_source_examples"])))
    rows = rows.to_pandas()
    mlm = None
    if s["candidates"] == "mlm_glove":  # asked for explicitly: a missing model is an error, not a fallback
        from transformers import BertForMaskedLM

        mlm = BertForMaskedLM.from_pretrained(s["mlm_model"]).eval()
    glove = load_glove(s["glove_vocab"])
    settings_key = {k: s[k] for k in ("candidates", "n_samples", "p", "k", "glove_vocab", "mlm_model")}
    return str(augment_to_parquet(rows, spec.text_columns, tokenizer_for(config["teacher"]), out_path,
                                  settings=settings_key, glove=glove, mlm=mlm, seed=s["seed"]))
