"""The training recipes on tiny models and data: they learn, and bad input fails cleanly."""

import copy
import json

import pytest
import yaml

from kbert.config import load_config, stage_settings
from kbert.stages import augment, compress, evaluate_ood, finetune_teacher, general_kd, task_kd, task_kd_start
from helpers import REPO


@pytest.fixture(scope="module")
def smoke_config():
    raw = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    raw["general_kd"].update(max_steps=40, epochs=3, lr=3e-3)
    return load_config(raw)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, smoke_config):
    out = tmp_path_factory.mktemp("runs") / "init"
    compress.run(smoke_config, "kron_4", str(out))
    return out


def test_compress_writes_a_loadable_student(compressed):
    metrics = json.loads((compressed / "metrics.json").read_text())
    assert metrics["compression_factor"] == pytest.approx(4, rel=0.05)
    assert (compressed / "model" / "model.safetensors").exists()
    assert not (compressed.parent / "init.partial").exists()


def test_general_kd_lowers_the_distillation_loss(compressed, tmp_path, smoke_config):
    metrics = general_kd.run(smoke_config, "kron_4", str(compressed), str(tmp_path / "general"))
    log = json.loads((tmp_path / "general" / "train_log.json").read_text())
    assert len(log) == 40
    first = sum(row["loss"] for row in log[:5]) / 5
    last = sum(row["loss"] for row in log[-5:]) / 5
    assert last < first
    assert metrics["steps"] == 40


@pytest.mark.parametrize("stage", [compress, general_kd, task_kd, task_kd_start, augment, finetune_teacher, evaluate_ood],
                         ids=lambda m: m.__name__)
def test_config_sections_name_known_sections(stage, smoke_config):
    """A misspelt section fails here, not only in the workflow's fingerprint."""
    student = next(iter(smoke_config["students"]))
    picked = stage_settings(smoke_config, stage.CONFIG_SECTIONS, task="mrpc", student=student)
    assert picked and set(picked) <= {section.rsplit(".", 1)[-1] for section in stage.CONFIG_SECTIONS}


def test_unknown_student_is_rejected(smoke_config, tmp_path):
    with pytest.raises(ValueError, match="unknown student 'kron_99'"):
        compress.run(smoke_config, "kron_99", str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_task_kd_rejects_bad_variants(smoke_config, tmp_path):
    with pytest.raises(ValueError, match="unknown variant"):
        task_kd.run(smoke_config, "mrpc", "kron_4", "half", 0, "a", "b", str(tmp_path / "o"))
    with pytest.raises(ValueError, match="full_aug needs --augmented"):
        task_kd.run(smoke_config, "mrpc", "kron_4", "full_aug", 0, "a", "b", str(tmp_path / "o"))


@pytest.mark.parametrize("student", ["kron_4", "dense_4"])
def test_task_kd_start_scores_the_model_task_kd_starts_from(student, compressed, tmp_path, smoke_config, monkeypatch):
    """task-kd-start evaluates exactly the model a task-KD run of the same seed starts from:
    with task KD's training skipped, the run scores the same. dense_4 is narrower than the
    teacher, so its head is random and the seed has to give the same draws."""
    finetune_teacher.run(smoke_config, "mrpc", str(tmp_path / "teacher"))
    init = compressed if student == "kron_4" else tmp_path / "dense_init"
    if student != "kron_4":
        compress.run(smoke_config, student, str(init))
    start = task_kd_start.run(smoke_config, "mrpc", student, "no_general_kd", 1, str(init), str(tmp_path / "teacher"),
                              str(tmp_path / "start"))
    assert start["stage"] == "task_kd_start" and start["variant"] == "no_general_kd" and start["general_kd_epochs"] == 0
    assert json.loads((tmp_path / "start" / "metrics.json").read_text())["results"] == start["results"]
    monkeypatch.setattr(task_kd, "train", lambda *args, **kwargs: [])  # no step: the model stays where it starts
    untrained = task_kd.run(smoke_config, "mrpc", student, "no_general_kd", 1, str(init), str(tmp_path / "teacher"),
                            str(tmp_path / "kd"))
    assert untrained["results"] == start["results"]
    assert {k: untrained[k] for k in ("params", "flops", "family")} == {k: start[k] for k in ("params", "flops", "family")}
    with pytest.raises(ValueError, match="starts from the same student as full"):
        task_kd_start.run(smoke_config, "mrpc", student, "no_task_kd", 1, str(init), str(tmp_path / "teacher"),
                          str(tmp_path / "x"))


def test_config_without_students_is_rejected_before_any_work(smoke_config):
    bad = copy.deepcopy(smoke_config)
    bad["students"]["kron_4"]["target_compression"] = -3
    with pytest.raises(ValueError, match="target_compression"):
        load_config(bad)


def test_prediction_phase_trains_the_prediction_terms_only(compressed, tmp_path, smoke_config):
    """task_kd.prediction_epochs: TinyBERT's second phase runs after the Eq. 14 steps."""
    from kbert.stages import finetune_teacher

    config = copy.deepcopy(smoke_config)
    config["task_kd"]["prediction_epochs"] = 1
    finetune_teacher.run(config, "mrpc", str(tmp_path / "teacher"))
    task_kd.run(config, "mrpc", "kron_4", "full", 0, str(compressed), str(tmp_path / "teacher"), str(tmp_path / "kd"))
    log = json.loads((tmp_path / "kd" / "train_log.json").read_text())
    first, second = log[:4], log[4:]          # smoke: max_steps 4, then one epoch of 32 rows at batch 8
    assert len(second) == 4
    assert all({"attention", "hidden", "logit"} <= set(row) for row in first)
    assert all(set(row) == {"step", "epoch", "loss", "logit", "supervised"} for row in second)
    assert not (tmp_path / "kd.partial").exists()
    assert json.loads((tmp_path / "kd" / "metrics.json").read_text())["general_kd_epochs"] == 0  # from the SVD init


def test_dose_response_chain_counts_general_kd_epochs(compressed, tmp_path, smoke_config):
    """general-kd --epochs K: K whole epochs (max_steps ignored), continuing an earlier
    general-KD output; metrics.json counts the epochs along the chain."""
    first = general_kd.run(smoke_config, "kron_4", str(compressed), str(tmp_path / "e1"), epochs=1)
    assert first["general_kd_epochs"] == 1
    second = general_kd.run(smoke_config, "kron_4", str(tmp_path / "e1"), str(tmp_path / "e2"), epochs=1)
    assert second["general_kd_epochs"] == 2 and second["steps"] == first["steps"]
    with pytest.raises(ValueError, match="starts from the compress stage"):
        general_kd.run(smoke_config, "kron_4", str(tmp_path / "e1"), str(tmp_path / "e3"))
    with pytest.raises(ValueError, match="at least 1"):
        general_kd.run(smoke_config, "kron_4", str(compressed), str(tmp_path / "e4"), epochs=0)


def test_teacher_learning_curve_point_caps_the_training_rows(tmp_path, smoke_config):
    from kbert.stages import finetune_teacher

    metrics = finetune_teacher.run(smoke_config, "sst2", str(tmp_path / "n8"), max_train_examples=8)
    assert metrics["train_examples"] == 8
    with pytest.raises(ValueError, match="at least 1"):
        finetune_teacher.run(smoke_config, "sst2", str(tmp_path / "n0"), max_train_examples=0)


def test_teacher_rows_of_its_own_win_over_the_students_data_cap(tmp_path, smoke_config):
    """teacher.finetune.per_task.<task>.max_train_examples: the teacher learns from more rows
    than data.max_train_examples gives the students (smoke: 32)."""
    config = copy.deepcopy(smoke_config)
    config["teacher"]["finetune"]["per_task"] = {"sst2": {"max_train_examples": 40, "epochs": 1}}
    metrics = finetune_teacher.run(config, "sst2", str(tmp_path / "own"))
    assert metrics["train_examples"] == 40
    assert stage_settings(config, task_kd.CONFIG_SECTIONS, task="sst2", student="kron_4")["data"]["max_train_examples"] == 32


def test_augment_takes_every_training_row_when_max_source_examples_is_null(tmp_path, smoke_config):
    """null is the schema default: it means every row of the (capped) training split."""
    import pandas as pd

    config = copy.deepcopy(smoke_config)
    config["augment"]["max_source_examples"] = None
    out = augment.run(config, "mrpc", str(tmp_path / "mrpc.parquet"))
    frame = pd.read_parquet(out)
    assert (~frame["augmented"]).sum() == config["data"]["max_train_examples"] == 32
    assert frame["augmented"].any()
