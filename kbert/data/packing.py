"""General KD's corpus as packed windows: each document's tokens cut into [CLS] ... [SEP]
sequences of at most ``max_seq_length``, tokenised a batch at a time into Arrow files on disk.

The packed corpus is cached by what determines it (the documents' hash, the tokenizer,
``max_seq_length``, ``PACKING_VERSION``) under ``KBERT_CORPUS_DIR`` (default
``~/.cache/kbert/corpus``), so every student distilled on one corpus packs it once. Memory
stays flat in the corpus size: ``Dataset.map`` writes each batch to disk as it goes and
the result is read back memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from datasets import Dataset, Features, Sequence, Value

from kbert.artifacts import atomic_path, sha256_json
from kbert.data.corpora import documents_sha256

# Bump when the packed sequences for the same inputs change: it invalidates the cache.
PACKING_VERSION = 1
MIN_WINDOW = 8  # a window of fewer tokens (a document's tail) teaches nothing and is dropped
BATCH_DOCUMENTS = 1000  # documents tokenised per map batch (and rows per Arrow write)

# Narrow integer columns: a paper-scale corpus is ~10^8 tokens, 6 bytes each on disk.
FEATURES = Features({"input_ids": Sequence(Value("int32")), "token_type_ids": Sequence(Value("int8")),
                     "attention_mask": Sequence(Value("int8"))})


def pack_documents(batch: dict, tokenizer, max_seq_length: int) -> dict:
    """One map batch: its documents' windows (more or fewer rows than documents)."""
    body = max_seq_length - 2
    ids = []
    for tokens in tokenizer(batch["text"], add_special_tokens=False)["input_ids"]:
        for start in range(0, len(tokens), body):  # each document on its own: no window spans two
            window = tokens[start:start + body]
            if len(window) >= MIN_WINDOW:
                ids.append([tokenizer.cls_token_id, *window, tokenizer.sep_token_id])
    return {"input_ids": ids, "token_type_ids": [[0] * len(x) for x in ids],
            "attention_mask": [[1] * len(x) for x in ids]}


def tokenizer_sha256(tokenizer) -> str:
    """Hash of everything that decides a tokenizer's ids: a fast tokenizer's full spec."""
    if getattr(tokenizer, "is_fast", False):
        spec = json.loads(tokenizer.backend_tokenizer.to_str())
        # transformers sets truncation and padding anew on every call: they are not the tokenizer's.
        spec = sha256_json({k: v for k, v in spec.items() if k not in ("truncation", "padding")})
    else:
        spec = sha256_json([type(tokenizer).__name__, tokenizer.get_vocab(), tokenizer.init_kwargs])
    special = f"{tokenizer.cls_token_id} {tokenizer.sep_token_id}"
    return hashlib.sha256(f"{spec}\0{special}".encode()).hexdigest()


def corpus_cache_dir() -> Path:
    return Path(os.environ.get("KBERT_CORPUS_DIR") or Path.home() / ".cache" / "kbert" / "corpus")


def packed_windows(documents: Dataset, tokenizer, max_seq_length: int, *, num_proc: int = 1,
                   cache_dir: str | os.PathLike | None = None, documents_hash: str | None = None) -> Dataset:
    """The documents (a ``text`` column) packed into windows: ``input_ids``,
    ``token_type_ids`` (0), ``attention_mask`` (1), from the cache when already packed.

    ``num_proc`` > 1 tokenises in that many processes (the rows keep the documents' order).
    ``documents_hash``: their ``documents_sha256`` when the caller has it already (reading a
    paper-scale corpus twice costs tens of seconds). ValueError when no document gives a window.
    """
    if max_seq_length < MIN_WINDOW + 2:
        raise ValueError(f"max_seq_length {max_seq_length} leaves no room for a window of "
                         f"{MIN_WINDOW} tokens plus [CLS] and [SEP]; use at least {MIN_WINDOW + 2}")
    # 32 hex digits: the cache directory's name, and a fingerprint datasets accepts with its shard suffix.
    key = sha256_json({"documents": documents_hash or documents_sha256(documents),
                       "tokenizer": tokenizer_sha256(tokenizer),
                       "max_seq_length": max_seq_length, "version": PACKING_VERSION})[:32]
    path = Path(cache_dir or corpus_cache_dir()) / key
    if not path.is_dir():
        # scratch: map's own Arrow files, gone once save_to_disk has copied them to the cache.
        with atomic_path(path) as tmp, tempfile.TemporaryDirectory(dir=path.parent) as scratch:
            packed = documents.map(
                pack_documents, batched=True, batch_size=BATCH_DOCUMENTS, writer_batch_size=BATCH_DOCUMENTS,
                fn_kwargs={"tokenizer": tokenizer, "max_seq_length": max_seq_length},
                remove_columns=documents.column_names, features=FEATURES, num_proc=num_proc if num_proc > 1 else None,
                cache_file_name=str(Path(scratch) / "windows.arrow"), new_fingerprint=key, desc="packing the corpus")
            if len(packed) == 0:
                raise ValueError("the general-distillation corpus produced no sequences: is it empty?")
            packed.save_to_disk(str(tmp))
    return Dataset.load_from_disk(str(path))
