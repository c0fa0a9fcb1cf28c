"""Golden values for every metric, and GLUE metrics cross-checked against sklearn/scipy."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from kbert import metrics as M
from kbert.tasks import TASKS

# ---------------------------------------------------------------------------- GLUE, by hand


def test_accuracy_golden():
    assert M.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5


def test_f1_golden():
    # tp = 2 (rows 0, 4), fp = 1 (row 1), fn = 1 (row 3): F1 = 2*2 / (2*2 + 1 + 1)
    assert M.f1_binary([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(4 / 6)
    assert M.f1_binary([0, 0, 0], [0, 0, 0]) == 0.0       # no positives at all: sklearn's 0.0


def test_mcc_golden():
    # tp = 2, tn = 1, fp = 1, fn = 1: (2*1 - 1*1) / sqrt(3 * 3 * 2 * 2) = 1/6
    assert M.matthews_corrcoef([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(1 / 6)
    assert M.matthews_corrcoef([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert M.matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert M.matthews_corrcoef([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0   # constant prediction


def test_pearson_spearman_golden():
    # x - mean = (-1, 0, 1), y - mean = (-7, -1, 8)/3: r = 5 / sqrt(2 * 114/9)
    assert M.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    # ranks with a tie: x -> (1, 2.5, 2.5, 4), y -> (1, 3, 2, 4): r = 4.5 / sqrt(4.5 * 5)
    assert M.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert math.isnan(M.pearson([1, 1, 1], [1, 2, 3]))      # undefined, as scipy


@pytest.mark.parametrize("seed", range(5))
def test_glue_metrics_match_sklearn_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels, predictions = rng.integers(0, 2, n), rng.integers(0, 2, n)
    assert M.accuracy(predictions, labels) == pytest.approx(skm.accuracy_score(labels, predictions))
    assert M.f1_binary(predictions, labels) == pytest.approx(
        skm.f1_score(labels, predictions, zero_division=0.0))
    assert M.matthews_corrcoef(predictions, labels) == pytest.approx(
        skm.matthews_corrcoef(labels, predictions))
    three_truth, three_pred = rng.integers(0, 3, n), rng.integers(0, 3, n)
    assert M.matthews_corrcoef(three_pred, three_truth) == pytest.approx(
        skm.matthews_corrcoef(three_truth, three_pred))
    scores, gold = rng.normal(size=n), rng.uniform(0, 5, n).round(1)   # rounding makes ties
    assert M.pearson(scores, gold) == pytest.approx(stats.pearsonr(scores, gold)[0])
    assert M.spearman(scores.round(1), gold) == pytest.approx(stats.spearmanr(scores.round(1), gold)[0])


def test_compute_metrics_columns_and_score():
    for spec in TASKS.values():
        if spec.kind == "span":
            continue
        labels = np.array([0.5, 4.0, 2.5, 1.0]) if spec.is_regression else np.array([0, 1, 1, 0])
        result = M.compute_metrics(spec.name, labels, labels)
        assert tuple(result) == spec.metrics
        assert all(k.startswith(spec.name + "_") for k in result)
    mrpc = M.compute_metrics("mrpc", np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), [1, 1, 1])
    assert mrpc == pytest.approx({"mrpc_f1": 0.8, "mrpc_acc": 2 / 3})     # logits -> argmax
    assert M.key_score("mrpc", mrpc) == pytest.approx((0.8 + 2 / 3) / 2)
    stsb = M.compute_metrics("stsb", np.array([[1.0], [2.0], [3.5]]), [1.0, 2.0, 3.0])  # squeezed
    assert stsb["stsb_spearman"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="key metrics"):
        M.key_score("cola", {"cola_acc": 0.5})
    with pytest.raises(ValueError, match="shape"):
        M.compute_metrics("sst2", [1, 0], [1, 0, 1])


# ---------------------------------------------------------------------------- SQuAD


@pytest.mark.parametrize("text, normal", [
    ("The Cat!", "cat"),
    ("an apple, a pear and the plum", "apple pear and plum"),
    ("theater anthem", "theater anthem"),          # articles only as whole words
    ("  Super\tBowl\n 50 ", "super bowl 50"),       # whitespace collapsed
    ("A.B.C.", "abc"),                             # punctuation removed before articles
    ("Denver Broncos'", "denver broncos"),
    ("the", ""),
    ("", ""),
])
def test_normalize_answer(text, normal):
    assert M.normalize_answer(text) == normal


def test_token_f1_empty_handling_differs_between_versions():
    assert M.token_f1("", "", empty_matches_empty=False) == 0.0     # v1.1 script
    assert M.token_f1("", "", empty_matches_empty=True) == 1.0      # v2.0 script
    assert M.token_f1("the", "", empty_matches_empty=True) == 1.0   # "the" normalises to ""
    assert M.token_f1("x", "", empty_matches_empty=True) == 0.0


def test_squad_v1_golden():
    predictions = {"q1": "the cat", "q2": "a dog sat", "q3": ""}
    references = {"q1": ["Cat", "dog"], "q2": ["the dog", "dog sat down"], "q3": ["x"]}
    # q1: EM 1, F1 1. q2: EM 0; F1 max(vs "dog": P .5 R 1 -> 2/3, vs "dog sat down": P 1 R 2/3 -> .8)
    # q3: an empty prediction scores 0.
    result = M.squad_v1(predictions, references)
    assert result == pytest.approx({"squad_v1_em": 1 / 3, "squad_v1_f1": 1.8 / 3})
    assert M.compute_metrics("squad_v1", predictions, references) == result
    with pytest.raises(ValueError, match="no prediction"):
        M.squad_v1({}, references)


def test_squad_v2_golden():
    references = {"a": ["Paris"], "b": [], "c": ["1990", "in 1990"], "d": ["the"]}
    predictions = {"a": "paris", "b": "", "c": "1991", "d": ""}
    # "d"'s only gold normalises to "", so it counts as unanswerable (official rule).
    result = M.squad_v2(predictions, references)
    assert result["squad_v2_em"] == pytest.approx(3 / 4)
    assert result["squad_v2_f1"] == pytest.approx(3 / 4)
    assert result["squad_v2_hasans_em"] == pytest.approx(1 / 2)
    assert result["squad_v2_noans_em"] == result["squad_v2_noans_f1"] == 1.0
    assert set(result) == set(TASKS["squad_v2"].metrics)


def test_squad_v2_threshold_and_best_threshold():
    references = {"a": ["Paris"], "b": [], "c": ["1990"]}
    best_non_null = {"a": "Paris", "b": "London", "c": "1990"}
    null_odds = {"a": -1.0, "c": 0.2, "b": 0.5}
    result = M.squad_v2(best_non_null, references, null_odds, null_threshold=0.0)
    # threshold 0: b and c predicted unanswerable -> a right, b right, c wrong
    assert result["squad_v2_em"] == pytest.approx(2 / 3)
    assert result["squad_v2_hasans_em"] == pytest.approx(1 / 2)
    # sweep: all null = 1 right; admit a (+1) -> 2; admit c (+1) -> 3 at odds 0.2; admit b (-1)
    assert result["squad_v2_best_em"] == pytest.approx(1.0)
    assert result["squad_v2_best_em_thresh"] == pytest.approx(0.2)
    assert result["squad_v2_best_f1_thresh"] == pytest.approx(0.2)
    # default threshold 1.0 admits every answer: b's "London" is wrong
    assert M.squad_v2(best_non_null, references, null_odds)["squad_v2_em"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="null odds"):
        M.squad_v2(best_non_null, references, {"a": 0.0})
