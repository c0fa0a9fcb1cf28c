"""The recipe must not destroy a perfect student: the sanity ladder's first rung as a test.

A lossless student (every Kronecker factor B of shape 1x1, embedding n = 1: an exact copy
of the pre-trained teacher, with the fine-tuned teacher's head) goes through task KD, both
phases, on an MRPC slice with the smoke preset's tiny teacher. It must end where the
fine-tuned teacher ends: the same class probabilities on the dev slice. With the prediction-layer
phase at the Eq. 14 learning rate it did not (on the real MRPC it fell to the majority
class); this test pins the phase's own learning rate, ``task_kd.prediction_lr``.
"""

import copy
from pathlib import Path

import pytest
import torch
import yaml

from kbert.config import load_config
from kbert.data.batching import batches
from kbert.data.glue import encode
from kbert.data.task_data import eval_rows
from kbert.evaluate import model_inputs
from kbert.modeling import TASK_MODELS
from kbert.stages import compress, finetune_teacher, task_kd
from kbert.teachers import tokenizer_for
from helpers import REPO

GAP = 0.05   # largest allowed mean |P_student(class) - P_teacher(class)| over the dev slice


@pytest.fixture(scope="module")
def config():
    raw = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    hidden, ffn = raw["teacher"]["random"]["hidden_size"], raw["teacher"]["random"]["intermediate_size"]
    raw["students"]["lossless"] = {"family": "kronecker", "attention_a_shape": [hidden, hidden],
                                   "ffn_a_shape": [ffn, hidden], "embedding_n": 1}
    raw["data"].update(max_train_examples=64, max_eval_examples=64)
    # A tiny teacher trained longer only learns the label prior (one class everywhere); two
    # small steps keep its predictions input-dependent, which is what the check needs.
    raw["teacher"]["finetune"].update(max_steps=2, lr=1e-4)
    # The default preset's task KD, shortened: Eq. 14 at a rate a lossless student survives,
    # then the prediction-layer phase (TinyBERT's 3e-5).
    raw["task_kd"].update(epochs=1, max_steps=None, lr=1e-4, prediction_epochs=2, prediction_lr=3e-5)
    return load_config(raw)


@pytest.fixture(scope="module")
def teacher_dir(config, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "mrpc"
    finetune_teacher.run(config, "mrpc", str(out))
    return out


def probabilities(model_dir: Path, config: dict) -> torch.Tensor:
    model = TASK_MODELS["classification"].from_pretrained(model_dir / "model").eval()
    rows = encode(eval_rows("mrpc", "validation", config["data"]), "mrpc", tokenizer_for(config["teacher"]), 64)
    with torch.no_grad():
        logits = torch.cat([model(**model_inputs(b)).logits for b in batches(rows, 16, shuffle=False)])
    return logits.softmax(-1)   # (examples, 2)


def gap(config: dict, teacher_dir: Path, student_dir: Path) -> float:
    return (probabilities(teacher_dir, config) - probabilities(student_dir, config)).abs().mean().item()


def distil_lossless(config: dict, teacher_dir: Path, out: Path) -> dict:
    compress.run(config, "lossless", str(out / "init"))
    return task_kd.run(config, "mrpc", "lossless", "no_general_kd", 0, str(out / "init"), str(teacher_dir),
                       str(out / "kd"))


def test_task_kd_keeps_a_lossless_student_at_the_teacher(config, teacher_dir, tmp_path):
    distil_lossless(config, teacher_dir, tmp_path)
    print("gap", gap(config, teacher_dir, tmp_path / "kd"))
    assert gap(config, teacher_dir, tmp_path / "kd") <= GAP


def test_the_prediction_phase_at_the_eq14_rate_breaks_it(config, teacher_dir, tmp_path):
    """The check can fail: a prediction phase at too high a rate moves the copy off the teacher."""
    broken = copy.deepcopy(config)
    broken["task_kd"]["prediction_lr"] = 5e-4 * 20   # the smoke slice is 64 rows: a stronger push, same effect
    distil_lossless(broken, teacher_dir, tmp_path)
    print("gap broken", gap(config, teacher_dir, tmp_path / "kd"))
    assert gap(config, teacher_dir, tmp_path / "kd") > GAP
