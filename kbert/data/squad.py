"""SQuAD windows and post-processing, step by step as Hugging Face ``run_qa.py`` /
``utils_qa.py`` do them, so that our numbers mean what theirs mean."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from datasets import Dataset

from kbert.tasks import DOC_STRIDE

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
                        doc_stride: int = DOC_STRIDE) -> Dataset:
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
                       doc_stride: int = DOC_STRIDE) -> Dataset:
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
