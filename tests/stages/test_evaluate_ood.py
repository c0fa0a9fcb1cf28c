"""The evaluate-ood stage on the smoke preset: a fine-tuned MRPC teacher evaluated on PAWS
from a local hub mirror (made-up rows), checked against its own predictions."""

import json

import numpy as np
import pytest
import torch
import yaml
from datasets import Dataset

from kbert.config import load_config
from kbert.data.glue import encode
from kbert.modeling import KBertForSequenceClassification
from kbert.stages import evaluate_ood, finetune_teacher
from kbert.teachers import tokenizer_for
from helpers import OOD_HUB_ROWS, REPO, write_ood_mirror


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """The smoke preset's MRPC teacher, fine-tuned on the bundled data (4 steps)."""
    config = load_config(REPO / "config" / "smoke.yaml")
    out = tmp_path_factory.mktemp("runs") / "teacher" / "mrpc"
    finetune_teacher.run(config, "mrpc", str(out))
    return out


def hub_config(monkeypatch, tmp_path) -> dict:
    """The smoke preset reading hub data from a local mirror that holds the OOD sets."""
    monkeypatch.setenv("KBERT_HUB_DIR", str(write_ood_mirror(tmp_path / "mirror")))
    raw = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    raw["data"]["source"] = "hub"
    raw["ood"] = {"splits": ["paws", "hans"], "max_seq_length": 32}
    return load_config(raw)


def test_evaluate_ood_scores_the_run_on_its_tasks_ood_set(teacher_run, tmp_path, monkeypatch):
    config = hub_config(monkeypatch, tmp_path)
    out = tmp_path / "ood" / "teacher" / "mrpc"
    evaluate_ood.run(config, str(teacher_run), str(out))
    record = json.loads((out / "metrics.json").read_text())
    run = json.loads((teacher_run / "metrics.json").read_text())
    assert {k: record[k] for k in ("task", "model", "family", "variant", "seed", "params", "teacher")} == {
        k: run[k] for k in ("task", "model", "family", "variant", "seed", "params", "teacher")}
    [result] = record["results"]                       # hans belongs to RTE's models, not MRPC's
    assert (result["eval_split"], result["data_status"], result["n_examples"]) == ("paws", "full", 4)
    assert set(result["metrics"]) == {"mrpc_f1", "mrpc_acc"}

    # The same accuracy by hand: the model's argmax on each PAWS row against its hub label.
    rows, _ = OOD_HUB_ROWS["paws"]
    model = KBertForSequenceClassification.from_pretrained(teacher_run / "model").eval()
    pairs = Dataset.from_dict({"sentence1": rows["sentence1"], "sentence2": rows["sentence2"], "label": rows["label"]})
    with torch.inference_mode():
        predictions = [model(**{k: torch.tensor([row[k]]) for k in ("input_ids", "attention_mask", "token_type_ids")})
                       .logits.argmax(-1).item()
                       for row in encode(pairs, "mrpc", tokenizer_for(config["teacher"]), 32)]
    assert result["metrics"]["mrpc_acc"] == pytest.approx(np.mean(np.array(predictions) == rows["label"]))
    assert record["evaluated_run"] and record["provenance"]["data_sha256"]


def test_evaluate_ood_refuses_a_run_with_no_evaluated_ood_set(teacher_run, tmp_path):
    """Bundled data has no OOD copy: nothing to evaluate is an error naming the settings."""
    config = load_config(REPO / "config" / "smoke.yaml")
    with pytest.raises(ValueError, match=r"no OOD set of mrpc is evaluated with this config \(ood.splits "
                                         r"\['paws', 'imdb', 'hans'\], data.source 'bundled'\)"):
        evaluate_ood.run(config, str(teacher_run), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
