"""Out-of-distribution sets (Table 9): the registry's OodSplit entries, and the loader on a
local mirror laid out like the hub (made-up rows, tests/helpers.py), offline."""

import dataclasses

import pytest

from kbert.data.files import DataError
from kbert.data.hub import HubOfflineError
from kbert.data.splits import load_ood_split, ood_checksum
from kbert.tasks import OOD_SPLITS, get_task
from helpers import OOD_HUB_ROWS, write_ood_mirror


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    """Keep datasets' cache of the local hub mirrors out of the user's ~/.cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


@pytest.fixture
def mirror(tmp_path):
    return write_ood_mirror(tmp_path / "mirror")


def test_registry_names_the_papers_three_ood_sets():
    """Table 9: MRPC -> PAWS, SST-2 -> IMDb, RTE -> HANS, with the hub's official sizes."""
    assert {name: task for name, (task, _) in OOD_SPLITS.items()} == {"paws": "mrpc", "imdb": "sst2", "hans": "rte"}
    assert {name: (ood.hub_path, ood.hub_split, ood.size) for name, (_, ood) in OOD_SPLITS.items()} == {
        "paws": ("google-research-datasets/paws", "validation", 8000),
        "imdb": ("stanfordnlp/imdb", "test", 25000),
        "hans": ("jhu-cogsci/hans", "validation", 30000)}
    assert len({ood_checksum(ood) for _, ood in OOD_SPLITS.values()}) == 3


def test_task_spec_rejects_an_ood_set_that_does_not_fit_its_task():
    mrpc = get_task("mrpc")
    paws = OOD_SPLITS["paws"][1]
    with pytest.raises(ValueError, match="maps onto unknown labels \\['paraphrase'\\]"):
        dataclasses.replace(mrpc, ood_splits=(dataclasses.replace(paws, labels={"0": "not_equivalent",
                                                                                  "1": "paraphrase"}),))
    with pytest.raises(ValueError, match="1 text columns, the task 2"):
        dataclasses.replace(mrpc, ood_splits=(dataclasses.replace(paws, text_columns=("sentence1",)),))
    with pytest.raises(ValueError, match="name of one of its own splits"):
        dataclasses.replace(mrpc, ood_splits=(dataclasses.replace(paws, name="validation"),))


def test_loader_renames_columns_and_maps_labels_onto_the_source_task(mirror):
    imdb = load_ood_split("sst2", OOD_SPLITS["imdb"][1], hub_dir=mirror)
    assert imdb.column_names == ["sentence", "label"]          # IMDb's text is SST-2's sentence
    assert imdb["sentence"] == OOD_HUB_ROWS["imdb"][0]["text"]
    assert imdb["label"] == [1, 0, 1, 0]                       # pos -> positive (1)
    hans = load_ood_split("rte", OOD_SPLITS["hans"][1], hub_dir=mirror)
    assert hans.column_names == ["sentence1", "sentence2", "label"]
    assert hans["sentence2"] == OOD_HUB_ROWS["hans"][0]["hypothesis"]
    not_entailment = get_task("rte").label_names.index("not_entailment")
    assert hans["label"] == [not_entailment, 0, not_entailment, not_entailment]
    assert hans.features["label"].names == list(get_task("rte").label_names)


def test_labels_are_mapped_by_name_not_by_id(mirror):
    """WNLI orders its labels (not_entailment, entailment), the reverse of HANS: a HANS
    non-entailment (hub id 1) must become WNLI's not_entailment (id 0)."""
    wnli = dataclasses.replace(get_task("wnli"), ood_splits=(OOD_SPLITS["hans"][1],))
    rows = load_ood_split(wnli, OOD_SPLITS["hans"][1], hub_dir=mirror)
    assert rows["label"] == [0, 1, 0, 0]


def test_loader_caps_and_checks_the_hub_labels(tmp_path):
    mirror = write_ood_mirror(tmp_path / "mirror", label_names={"hans": ["non-entailment", "entailment"]})
    paws = load_ood_split("mrpc", OOD_SPLITS["paws"][1], max_examples=2, hub_dir=mirror)
    assert len(paws) == 2 and set(paws["sentence1"]) <= set(OOD_HUB_ROWS["paws"][0]["sentence1"])
    with pytest.raises(DataError, match="labels \\['non-entailment', 'entailment'\\], the registry expects"):
        load_ood_split("rte", OOD_SPLITS["hans"][1], hub_dir=mirror)


def test_loader_refuses_the_hub_at_once_offline(monkeypatch):
    monkeypatch.delenv("KBERT_HUB_DIR", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(HubOfflineError, match="google-research-datasets/paws"):
        load_ood_split("mrpc", OOD_SPLITS["paws"][1])
