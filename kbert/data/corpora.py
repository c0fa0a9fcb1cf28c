"""Documents for general distillation: bundled WikiText-2 and SQuAD train paragraphs, or
the paper's English Wikipedia from the hub, optionally a seeded fraction of them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kbert.data.files import DataError, verified_file
from kbert.data.hub import load_hub
from kbert.data.splits import bundled_frame, check_source
from kbert.tasks import get_task

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



def _wikipedia(fraction: float, seed: int, hub_dir=None) -> list[str]:
    articles = load_hub("wikimedia/wikipedia", "20231101.en", "train", hub_dir)
    keep = math.ceil(fraction * len(articles))
    chosen = np.sort(np.random.default_rng(seed).permutation(len(articles))[:keep])
    return list(articles.select(chosen)["text"])



CORPORA = {"wikitext2": "bundled", "squad_paragraphs": "bundled", "wikipedia": "hub"}



def load_corpus(name: str, *, source: str = "bundled", fraction: float = 1.0, seed: int = 0,
                data_dir=None, hub_dir=None) -> list[str]:
    """Documents for general distillation; ``fraction`` keeps a seeded sample of them.

    ``wikitext2`` and ``squad_paragraphs`` are bundled; ``wikipedia`` (the paper's
    corpus, ``wikimedia/wikipedia`` 20231101.en) comes from the hub whatever ``source``.
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; valid: {', '.join(CORPORA)}")
    check_source(source)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"corpus fraction must be in (0, 1], got {fraction}")
    if name == "wikipedia":
        documents = _wikipedia(fraction, seed, hub_dir)
    else:
        documents = _wikitext_documents(data_dir) if name == "wikitext2" else _squad_paragraphs(data_dir)
        if fraction < 1.0:
            keep = math.ceil(fraction * len(documents))
            chosen = np.sort(np.random.default_rng(seed).permutation(len(documents))[:keep])
            documents = [documents[i] for i in chosen]
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise DataError(f"corpus {name!r} is empty (fraction {fraction})")
    return documents



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
