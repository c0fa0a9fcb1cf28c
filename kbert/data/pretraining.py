"""BERT pre-training inputs for general KD with MLM/NSP: sentence pairs, half of them with a
random next sentence (the masking is drawn per batch: ``kbert.data.batching.mask_tokens``).

Built as BERT's ``create_pretraining_data.py`` builds them: sentences of one document are
gathered until a pair fills ``max_seq_length``; a random cut splits them into A and B; with
probability 1/2 (and always when only one sentence was gathered) B is replaced by sentences
from a random other document, and the sentences left over go back to the document.
Differences from BERT: no ``short_seq_prob`` (every pair aims at the full length), one pass
over the corpus (BERT duplicates it 10 times with different masks; here the masks change
every epoch), and sentences are split on end punctuation and line breaks.
"""

from __future__ import annotations

import re

import numpy as np
from datasets import Dataset

IS_NEXT, RANDOM_NEXT = 0, 1  # next_sentence_label as BERT's NSP head reads it (HF: 0 = B continues A)
MIN_TOKENS = 8  # as the packed windows: a handful of stray tokens teaches nothing

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def document_sentences(documents: list[str], tokenizer) -> list[list[list[int]]]:
    """Each document as its sentences' token ids (no special tokens); empty documents dropped."""
    sentences = [[s for s in _SENTENCE_END.split(doc) if s.strip()] for doc in documents]
    flat = tokenizer([s for doc in sentences for s in doc], add_special_tokens=False)["input_ids"]
    out, start = [], 0
    for doc in sentences:
        tokens = [t for t in flat[start:start + len(doc)] if t]
        start += len(doc)
        if tokens:
            out.append(tokens)
    return out


def truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator) -> None:
    """BERT's truncation: drop a token from the longer side, its front or back at random, until they fit."""
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        del longer[0 if rng.random() < 0.5 else -1]


def _random_b(docs: list[list[list[int]]], not_doc: int, target: int, rng: np.random.Generator) -> list[int]:
    """Tokens of consecutive sentences of a random other document, from a random sentence on,
    until ``target`` tokens (at least one sentence)."""
    other = not_doc
    while other == not_doc:
        other = int(rng.integers(len(docs)))
    tokens = []
    for sentence in docs[other][int(rng.integers(len(docs[other]))):]:
        tokens += sentence
        if len(tokens) >= target:
            break
    return tokens


def document_pairs(docs: list[list[list[int]]], d: int, max_tokens: int,
                   rng: np.random.Generator) -> list[tuple[list[int], list[int], int]]:
    """(A, B, next_sentence_label) pairs of document ``d``: A + B at most ``max_tokens``."""
    sentences, pairs = docs[d], []
    chunk, length, i = [], 0, 0
    while i < len(sentences):
        chunk.append(sentences[i])
        length += len(sentences[i])
        if i == len(sentences) - 1 or length >= max_tokens:
            a_end = int(rng.integers(1, len(chunk))) if len(chunk) > 1 else 1
            a = [t for s in chunk[:a_end] for t in s]
            if len(chunk) == 1 or rng.random() < 0.5:
                b, label = _random_b(docs, d, max_tokens - len(a), rng), RANDOM_NEXT
                i -= len(chunk) - a_end  # the sentences not used go back to the document
            else:
                b, label = [t for s in chunk[a_end:] for t in s], IS_NEXT
            truncate_pair(a, b, max_tokens, rng)
            pairs.append((a, b, label))
            chunk, length = [], 0
        i += 1
    return pairs


def sentence_pairs(documents: list[str], tokenizer, max_seq_length: int, seed: int) -> Dataset:
    """[CLS] A [SEP] B [SEP] rows of at most ``max_seq_length`` tokens, seeded.

    Columns: input_ids, token_type_ids (0 for [CLS] A [SEP], 1 for B [SEP]), attention_mask,
    next_sentence_label (``IS_NEXT`` or ``RANDOM_NEXT``); each a list per row.
    """
    docs = document_sentences(documents, tokenizer)
    if len(docs) < 2:
        raise ValueError(f"the general-distillation corpus has {len(docs)} non-empty document(s); next-sentence "
                         "pairs draw their random next sentence from another document, so it needs at least 2")
    rng = np.random.default_rng(seed)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    rows = {"input_ids": [], "token_type_ids": [], "attention_mask": [], "next_sentence_label": []}
    for d in range(len(docs)):
        for a, b, label in document_pairs(docs, d, max_seq_length - 3, rng):
            if len(a) + len(b) < MIN_TOKENS:
                continue
            rows["input_ids"].append([cls, *a, sep, *b, sep])
            rows["token_type_ids"].append([0] * (len(a) + 2) + [1] * (len(b) + 1))
            rows["attention_mask"].append([1] * (len(a) + len(b) + 3))
            rows["next_sentence_label"].append(label)
    if not rows["input_ids"]:
        raise ValueError("the general-distillation corpus produced no sentence pairs: is it empty?")
    return Dataset.from_dict(rows)
