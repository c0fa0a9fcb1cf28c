"""GLUE and SQuAD metrics, written out here so that evaluation never needs the network.

The definitions follow the ones the papers' numbers come from:

- GLUE: ``evaluate``'s ``glue`` metric (sklearn accuracy, binary F1 of class 1,
  Matthews correlation; scipy Pearson and Spearman). Tests cross-check ours against
  sklearn/scipy; neither is needed at run time.
- SQuAD v1.1: the official ``evaluate-v1.1.py`` (answer normalisation, max over gold
  answers, token F1 that is 0 when either side is empty).
- SQuAD v2.0: the official ``evaluate-v2.0.py`` (empty gold for unanswerable questions,
  F1 = 1 when prediction and gold are both empty, the no-answer threshold on
  ``null_odds``, the HasAns/NoAns breakdown and the best-threshold search).

All corpus-level (MCC and F1 over the whole split, never averaged over batches) and
all returned as fractions (0.86, not 86). Result-column names are ``<task>_<metric>``
and come from the task registry.
"""

from __future__ import annotations

import collections
import math
import re
import string

import numpy as np

from kbert.tasks import TaskSpec, get_task

# ---------------------------------------------------------------------------- GLUE


def _as_arrays(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape")
    if predictions.size == 0:
        raise ValueError("no predictions to score")
    return predictions, labels


def accuracy(predictions, labels) -> float:
    predictions, labels = _as_arrays(predictions, labels)
    return float(np.mean(predictions == labels))


def f1_binary(predictions, labels, positive: int = 1) -> float:
    """F1 of the positive class; 0.0 when there is no positive prediction or label (sklearn)."""
    predictions, labels = _as_arrays(predictions, labels)
    tp = np.sum((predictions == positive) & (labels == positive))
    fp = np.sum((predictions == positive) & (labels != positive))
    fn = np.sum((predictions != positive) & (labels == positive))
    denominator = 2 * tp + fp + fn
    return float(2 * tp / denominator) if denominator else 0.0


def matthews_corrcoef(predictions, labels) -> float:
    """Multi-class MCC from the confusion matrix (Gorodkin 2004, as sklearn); 0.0 if undefined."""
    predictions, labels = _as_arrays(predictions, labels)
    classes, encoded = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    truth, predicted = encoded[: len(labels)], encoded[len(labels):]
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(confusion, (truth, predicted), 1)
    true_sum, pred_sum = confusion.sum(axis=1), confusion.sum(axis=0)
    n, correct = confusion.sum(), np.trace(confusion)
    cov_tp = correct * n - true_sum @ pred_sum
    cov_pp = n * n - pred_sum @ pred_sum
    cov_tt = n * n - true_sum @ true_sum
    if cov_pp * cov_tt == 0:
        return 0.0
    return float(cov_tp / math.sqrt(cov_tt * cov_pp))


def pearson(predictions, labels) -> float:
    """Pearson r in float64; NaN when either side is constant (as scipy)."""
    x, y = (a.astype(np.float64) for a in _as_arrays(predictions, labels))
    x, y = x - x.mean(), y - y.mean()
    norm = math.sqrt((x @ x) * (y @ y))
    return float(np.clip((x @ y) / norm, -1.0, 1.0)) if norm else float("nan")


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks (scipy.stats.rankdata)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1
    return (first_rank + (counts - 1) / 2.0)[inverse]


def spearman(predictions, labels) -> float:
    predictions, labels = _as_arrays(predictions, labels)
    return pearson(_average_ranks(predictions), _average_ranks(labels))


GLUE_METRICS = {"acc": accuracy, "f1": f1_binary, "mcc": matthews_corrcoef,
                "pearson": pearson, "spearman": spearman}


def _glue_predictions(spec: TaskSpec, predictions) -> np.ndarray:
    """Logits -> class ids (argmax) or scores (squeeze), as HF run_glue does."""
    predictions = np.asarray(predictions)
    if spec.is_regression:
        return predictions.reshape(-1) if predictions.ndim == 2 and predictions.shape[1] == 1 else predictions
    return predictions.argmax(axis=-1) if predictions.ndim == 2 else predictions


# ---------------------------------------------------------------------------- SQuAD

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop a/an/the, collapse whitespace (official order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, *, empty_matches_empty: bool) -> float:
    """Bag-of-tokens F1 after normalisation.

    v1.1 scores 0 whenever nothing overlaps, even if both sides are empty; v2.0 scores
    1 when both are empty (a correct "no answer") -- hence the flag.
    """
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if empty_matches_empty and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    common = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _check_ids(predictions: dict, references: dict) -> None:
    if not references:
        raise ValueError("no SQuAD references to score")
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        # The official scripts score a missing prediction as 0 (v1.1) or skip it
        # (v2.0); in kbert it always means a bug upstream, so we stop.
        raise ValueError(f"{len(missing)} of {len(references)} questions have no prediction, "
                         f"e.g. {missing[:3]}")


def squad_v1(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1 (max over gold answers), as fractions."""
    _check_ids(predictions, references)
    em = f1 = 0.0
    for qid, golds in references.items():
        if not golds:
            raise ValueError(f"question {qid!r} has no gold answer; SQuAD v1.1 needs one")
        em += max(exact_match(predictions[qid], g) for g in golds)
        f1 += max(token_f1(predictions[qid], g, empty_matches_empty=False) for g in golds)
    return {"squad_v1_em": em / len(references), "squad_v1_f1": f1 / len(references)}


def _best_threshold(predictions, raw_scores, null_odds, has_answer) -> tuple[float, float]:
    """Official ``find_best_thresh``: sweep the no-answer threshold over the null odds.

    Start from "every question unanswered" (score = number of NoAns questions) and
    admit questions in order of rising null odds; keep the best running score.
    """
    score = best = float(sum(not h for h in has_answer.values()))
    threshold = 0.0
    for qid in sorted(null_odds, key=lambda q: null_odds[q]):
        if qid not in raw_scores:
            continue
        if has_answer[qid]:
            score += raw_scores[qid]
        elif predictions[qid]:
            score -= 1
        if score > best:
            best, threshold = score, null_odds[qid]
    return best / len(raw_scores), float(threshold)


def squad_v2(predictions: dict[str, str], references: dict[str, list[str]],
             null_odds: dict[str, float] | None = None, null_threshold: float = 1.0) -> dict[str, float]:
    """SQuAD v2.0 metrics as fractions, with the official semantics.

    ``references[qid]`` lists the gold answer texts; an empty list (or only answers
    that normalise to "") marks an unanswerable question. A question is predicted
    unanswerable when its prediction is "" or when ``null_odds[qid] > null_threshold``.
    ``best_*`` search that threshold; they are informative only when ``predictions``
    hold each question's best non-null answer (``kbert.data.squad.squad_best_spans``), not
    answers already thresholded by ``postprocess_squad``.
    """
    _check_ids(predictions, references)
    if null_odds is None:
        null_odds = {qid: 0.0 for qid in references}   # official default: never "no answer"
    missing = [qid for qid in references if qid not in null_odds]
    if missing:
        raise ValueError(f"{len(missing)} questions have no null odds, e.g. {missing[:3]}")
    golds = {qid: [g for g in answers if normalize_answer(g)] or [""]
             for qid, answers in references.items()}
    has_answer = {qid: gold != [""] for qid, gold in golds.items()}

    raw_em = {qid: max(exact_match(predictions[qid], g) for g in gold) for qid, gold in golds.items()}
    raw_f1 = {qid: max(token_f1(predictions[qid], g, empty_matches_empty=True) for g in gold)
              for qid, gold in golds.items()}

    def thresholded(raw):
        return {qid: float(not has_answer[qid]) if null_odds[qid] > null_threshold else s
                for qid, s in raw.items()}

    em, f1 = thresholded(raw_em), thresholded(raw_f1)

    def mean(scores, keep):
        values = [s for qid, s in scores.items() if keep(qid)]
        return sum(values) / len(values) if values else float("nan")

    best_em, best_em_thresh = _best_threshold(predictions, raw_em, null_odds, has_answer)
    best_f1, best_f1_thresh = _best_threshold(predictions, raw_f1, null_odds, has_answer)
    return {
        "squad_v2_em": mean(em, lambda q: True),
        "squad_v2_f1": mean(f1, lambda q: True),
        "squad_v2_hasans_em": mean(em, lambda q: has_answer[q]),
        "squad_v2_hasans_f1": mean(f1, lambda q: has_answer[q]),
        "squad_v2_noans_em": mean(em, lambda q: not has_answer[q]),
        "squad_v2_noans_f1": mean(f1, lambda q: not has_answer[q]),
        "squad_v2_best_em": best_em,
        "squad_v2_best_em_thresh": best_em_thresh,
        "squad_v2_best_f1": best_f1,
        "squad_v2_best_f1_thresh": best_f1_thresh,
    }


# ---------------------------------------------------------------------------- by task


def compute_metrics(task, predictions, labels, *, null_odds=None, null_threshold: float = 1.0) -> dict[str, float]:
    """Every result column of ``task`` (``spec.metrics``), keyed by its full name.

    GLUE: ``predictions`` are class ids, logits (argmax taken) or regression scores;
    ``labels`` the gold ids/scores. SQuAD: ``predictions`` map question id -> answer
    text and ``labels`` map question id -> gold answer texts.
    """
    spec = get_task(task)
    if spec.kind == "span":
        if spec.version_2_with_negative:
            return squad_v2(predictions, labels, null_odds, null_threshold)
        return squad_v1(predictions, labels)
    predictions = _glue_predictions(spec, predictions)
    return {column: GLUE_METRICS[column.removeprefix(f"{spec.name}_")](predictions, labels)
            for column in spec.metrics}


def key_score(task, metrics: dict[str, float]) -> float:
    """The number the paper's tables show: the mean of the task's key metrics."""
    spec = get_task(task)
    missing = [k for k in spec.key_metrics if k not in metrics]
    if missing:
        raise ValueError(f"{spec.name}: key metrics {missing} missing from {sorted(metrics)}")
    return float(np.mean([metrics[k] for k in spec.key_metrics]))
