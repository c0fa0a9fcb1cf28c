"""Documents for general distillation: bundled WikiText-2, SQuAD train paragraphs and the
GLUE training texts, or the paper's English Wikipedia from the hub, optionally a seeded
fraction of them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from datasets import Dataset

from kbert.artifacts import sha256_json_items
from kbert.data.files import DataError, verified_file
from kbert.data.hub import load_hub
from kbert.data.splits import bundled_frame, check_source
from kbert.tasks import GLUE, get_task

def _wikitext_documents(data_dir=None) -> list[str]:
    """Articles of bundled WikiText-2 valid + test; an article starts at a " = Title = " line.

    Section headings (" = = Section = = ") are dropped; paragraphs are joined by newlines.
    """
    documents, paragraphs = [], []
    for relpath in ("wikitext2/valid.txt", "wikitext2/test.txt"):
        for line in verified_file(relpath, data_dir).read_text(encoding="utf-8").split("\n"):
            text = line.strip()
            is_title = text.startswith("= ") and text.endswith(" =") and not text.startswith("= =")
            if is_title:
                if paragraphs:
                    documents.append("\n".join(paragraphs))
                paragraphs = []
            elif text and not text.startswith("= "):
                paragraphs.append(text)
    if paragraphs:
        documents.append("\n".join(paragraphs))
    return documents



def _squad_paragraphs(data_dir=None) -> list[str]:
    # Train articles only: dev contexts are evaluation data for SQuAD (and, through the
    # derived split, for SQuAD v2.0), so general KD must never see them.
    frame = bundled_frame(get_task("squad_v1"), "train", data_dir)
    return list(pd.unique(frame["context"]))



def _glue_train_texts(data_dir=None) -> list[str]:
    """The texts, without labels, of every bundled GLUE training split (one document per
    example, a pair's sentences on two lines). Training splits only, derived ones cut as
    for the tasks themselves, so no evaluation text enters general KD. Not the paper's
    corpus: an in-domain lever for CPU-scale general KD (issue 13; docs/deviations.md)."""
    documents = []
    for spec in GLUE:
        if spec.offline["train"].status == "unavailable":
            continue
        frame = bundled_frame(spec, "train", data_dir)
        documents += ["\n".join(texts) for texts in zip(*(frame[c].astype(str) for c in spec.text_columns))]
    return documents



def _wikipedia(fraction: float, seed: int, hub_dir=None) -> Dataset:
    """A seeded ``fraction`` of the articles, as a view of the hub's memory-mapped files."""
    articles = load_hub("wikimedia/wikipedia", "20231101.en", "train", hub_dir)
    return articles.select(_sample(len(articles), fraction, seed)).select_columns(["text"])



def _sample(n: int, fraction: float, seed: int) -> np.ndarray:
    """The sorted indices of a seeded ``fraction`` of ``n`` documents (all when 1.0)."""
    if fraction == 1.0:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:math.ceil(fraction * n)])



CORPORA = {"wikitext2": "bundled", "squad_paragraphs": "bundled", "glue_train": "bundled", "wikipedia": "hub"}
BUNDLED_CORPORA = {"wikitext2": _wikitext_documents, "squad_paragraphs": _squad_paragraphs,
                   "glue_train": _glue_train_texts}



def corpus_documents(name: str, *, source: str = "bundled", fraction: float = 1.0, seed: int = 0,
                     data_dir=None, hub_dir=None) -> Dataset:
    """Documents for general distillation, a ``text`` column; ``fraction`` keeps a seeded sample.

    ``wikitext2``, ``squad_paragraphs`` and ``glue_train`` are bundled; ``wikipedia`` (the paper's
    corpus, ``wikimedia/wikipedia`` 20231101.en) comes from the hub whatever ``source``,
    and stays on disk: its articles are read a batch at a time, never all at once.
    Empty documents are dropped.
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; valid: {', '.join(CORPORA)}")
    check_source(source)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"corpus fraction must be in (0, 1], got {fraction}")
    if name == "wikipedia":
        documents = _wikipedia(fraction, seed, hub_dir).filter(
            lambda texts: [bool(t.strip()) for t in texts], input_columns="text", batched=True)
    else:
        texts = BUNDLED_CORPORA[name](data_dir)
        documents = Dataset.from_dict({"text": [texts[i] for i in _sample(len(texts), fraction, seed)
                                                if texts[i].strip()]})
    if len(documents) == 0:
        raise DataError(f"corpus {name!r} is empty (fraction {fraction})")
    return documents



def load_corpus(name: str, **options) -> list[str]:
    """``corpus_documents`` as a list of strings (the calibration text, tests); the keyword
    options are ``corpus_documents``'s."""
    return list(corpus_documents(name, **options)["text"])



def documents_sha256(documents: Dataset) -> str:
    """``sha256_json`` of the documents' texts as a list, read a batch at a time."""
    return sha256_json_items(text for batch in documents.iter(batch_size=1000) for text in batch["text"])



def describe_corpora(data_dir=None) -> pd.DataFrame:
    """One row per bundled general-distillation corpus: its documents (so verified);
    DataError listing every bad file."""
    rows, errors = [], []
    for name, where in CORPORA.items():
        if where != "bundled":
            continue
        try:
            rows.append({"corpus": name, "n_documents": len(load_corpus(name, data_dir=data_dir))})
        except DataError as err:
            errors.append(str(err))
    if errors:
        raise DataError("bad corpus files:\n  " + "\n  ".join(errors))
    return pd.DataFrame(rows)
