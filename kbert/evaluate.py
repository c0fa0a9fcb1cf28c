"""Evaluation of a task model on every eval split of its task.

One result per eval split (MNLI has two), in the ``metrics.json`` format of
docs/architecture.md: ``{eval_split, data_status, n_examples, metrics, score}``; the same
for its out-of-distribution sets (Table 9). And the predictions on a GLUE task's test
splits, as the test server's files (never scored).
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset

from kbert.data import splits
from kbert.data.batching import batches
from kbert.data.glue import encode
from kbert.data.squad import prepare_squad_eval, squad_best_spans, squad_references
from kbert.data.task_data import eval_rows
from kbert.device import Runtime, model_device
from kbert.metrics import compute_metrics, key_score
from kbert.submission import server_file
from kbert.tasks import DOC_STRIDE, get_task


def capped_status(status: str, rows: int, cap: int | None) -> str:
    """``status``, downgraded from ``full`` to ``subset`` when a cap cut the split."""
    return "subset" if status == "full" and cap is not None and rows >= cap else status


def split_status(task: str, split: str, rows: int, data_cfg: dict, cap: int | None) -> str:
    """``full``/``derived``/``subset`` of one eval split as evaluated."""
    return capped_status(splits.split_status(task, split, data_cfg["source"]), rows, cap)


def result(task: str, eval_split: str, data_status: str, n_examples: int, metrics: dict) -> dict:
    """One entry of a metrics.json ``results`` list; ``score`` is the task's key score."""
    return {"eval_split": eval_split, "data_status": data_status, "n_examples": n_examples,
            "metrics": metrics, "score": key_score(task, metrics)}


def model_inputs(batch: dict) -> dict:
    """The tensors a KBert task model takes as inputs, without the labels."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def _forward(model, batch: dict, runtime: Runtime):
    """The model's outputs for one batch: inputs on the runtime's device, under its autocast."""
    with torch.inference_mode(), runtime.autocast():
        return model(**runtime.to_device(model_inputs(batch)))


def _predict_glue(model, encoded: Dataset, batch_size: int, runtime: Runtime) -> tuple[np.ndarray, np.ndarray]:
    preds, labels = [], []
    for batch in batches(encoded, batch_size, shuffle=False):
        logits = _forward(model, batch, runtime).logits.float().cpu()
        preds.append(logits.squeeze(-1) if logits.shape[-1] == 1 else logits.argmax(-1))
        labels.append(batch["labels"])
    return torch.cat(preds).numpy(), torch.cat(labels).numpy()


def _predict_squad(model, examples: Dataset, tokenizer, max_seq_length: int, batch_size: int, version_2: bool,
                   doc_stride: int, runtime: Runtime):
    features = prepare_squad_eval(examples, tokenizer, max_seq_length, doc_stride)
    starts, ends = [], []
    for batch in batches(features, batch_size, shuffle=False):  # unshuffled: rows line up with features
        out = _forward(model, batch, runtime)
        width = batch["input_ids"].shape[1]
        pad = max_seq_length - width  # pad logits back to a common width for post-processing
        starts.append(torch.nn.functional.pad(out.start_logits.float().cpu(), (0, pad), value=-1e4))
        ends.append(torch.nn.functional.pad(out.end_logits.float().cpu(), (0, pad), value=-1e4))
    start_logits, end_logits = torch.cat(starts).numpy(), torch.cat(ends).numpy()
    # Best (for v2: best non-null) span and its null odds; the v2 metric applies the null
    # threshold itself and also reports the best threshold (HF run_qa semantics).
    best = squad_best_spans(examples, features, start_logits, end_logits, version_2=version_2)
    predictions = {qid: text for qid, (text, _) in best.items()}
    null_odds = {qid: odds for qid, (_, odds) in best.items()} if version_2 else None
    return predictions, squad_references(examples), null_odds


def evaluate(model, task: str, tokenizer, data_cfg: dict, max_seq_length: int, doc_stride: int = DOC_STRIDE,
             batch_size: int = 64, runtime: Runtime | None = None) -> list[dict]:
    """Metrics of ``model`` on every eval split of ``task``, on the model's device and in
    ``runtime``'s precision (default fp32)."""
    runtime = runtime or Runtime(model_device(model))
    spec = get_task(task)
    model.eval()
    results = []
    for split in spec.eval_splits:
        rows = eval_rows(task, split, data_cfg)
        if spec.kind == "span":
            predictions, references, null_odds = _predict_squad(
                model, rows, tokenizer, max_seq_length, batch_size, spec.version_2_with_negative, doc_stride, runtime
            )
            metrics = compute_metrics(task, predictions, references, null_odds=null_odds, null_threshold=0.0)
        else:
            predictions, labels = _predict_glue(model, encode(rows, task, tokenizer, max_seq_length), batch_size,
                                                runtime)
            metrics = compute_metrics(task, predictions, labels)
        status = split_status(task, split, len(rows), data_cfg, data_cfg["max_eval_examples"])
        results.append(result(task, split, status, len(rows), metrics))
    return results


def evaluate_ood(model, task: str, oods, tokenizer, settings: dict, runtime: Runtime | None = None) -> list[dict]:
    """Metrics of ``task``'s model on each of ``oods`` (``kbert.tasks.OodSplit``), one result
    per set named by it, in ``evaluate``'s format. ``settings``: the config's ``ood`` section
    (``max_eval_examples``, ``max_seq_length``, ``batch_size``); long texts (IMDb reviews) are
    truncated to ``max_seq_length``, as every task's are."""
    runtime = runtime or Runtime(model_device(model))
    model.eval()
    results = []
    for ood in oods:
        rows = splits.load_ood_split(task, ood, max_examples=settings["max_eval_examples"])
        predictions, labels = _predict_glue(model, encode(rows, task, tokenizer, settings["max_seq_length"]),
                                            settings["batch_size"], runtime)
        status = capped_status("full", len(rows), settings["max_eval_examples"])
        results.append(result(task, ood.name, status, len(rows), compute_metrics(task, predictions, labels)))
    return results


def predict_test(model, task: str, tokenizer, data_cfg: dict, max_seq_length: int, batch_size: int = 64,
                 runtime: Runtime | None = None) -> dict[str, str]:
    """The GLUE server's files for every test split of ``task`` that the data source has:
    ``{"predictions/<server_name>.tsv": text}`` (empty for SQuAD, and offline for every
    task but MRPC and MNLI's AX). A stage writes them next to its metrics.json."""
    runtime = runtime or Runtime(model_device(model))
    spec = get_task(task)
    model.eval()
    files = {}
    splits.check_source(data_cfg["source"])
    for test in spec.available_test_splits(data_cfg["source"]):
        rows = splits.load_test_split(task, test, source=data_cfg["source"])
        # Test labels are hidden; the encoder wants a label column, so give it zeros.
        rows = rows.add_column(spec.label_column, [0.0 if spec.is_regression else 0] * len(rows))
        predictions, _ = _predict_glue(model, encode(rows, task, tokenizer, max_seq_length), batch_size, runtime)
        files[f"predictions/{test.server_name}.tsv"] = server_file(rows["idx"], predictions, spec, test)
    return files
