"""aggregate refuses a metrics.json that the config would not produce (its stage's settings
changed since), so that a record copied between work directories, or kept by a run with
``--rerun-triggers mtime``, cannot slip into the results tables."""

from __future__ import annotations

import json
import logging

import pytest

from kbert.config import settings_record, stale_settings
from kbert.report.aggregate import read_runs
from tests.helpers import SMOKE_STUDENT, SMOKE_TASK, smoke_config

TASK_KD_SECTIONS = ("task_kd", "data")        # kbert/stages/task_kd.py CONFIG_SECTIONS
TEACHER_SECTIONS = ("teacher.finetune", "data")  # kbert/stages/finetune_teacher.py


def write_record(path, settings):
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"task": SMOKE_TASK, "provenance": {"settings": settings}}))


def test_a_record_is_accepted_by_the_config_it_was_run_with(tmp_path):
    config = smoke_config()
    write_record(tmp_path / "task_kd", settings_record(config, TASK_KD_SECTIONS, task=SMOKE_TASK, student=SMOKE_STUDENT))
    write_record(tmp_path / "teacher", settings_record(config, TEACHER_SECTIONS, task=SMOKE_TASK))
    read_runs([tmp_path], config)


def test_a_record_whose_stage_settings_changed_is_refused_with_its_path(tmp_path):
    record = settings_record(smoke_config(), TASK_KD_SECTIONS, task=SMOKE_TASK, student=SMOKE_STUDENT)
    write_record(tmp_path / "task_kd", record)
    changed = smoke_config(lr=3.0e-3)  # smoke's task_kd.lr is 1e-3
    assert "task_kd, data" in stale_settings(changed, {"provenance": {"settings": record}})
    with pytest.raises(ValueError, match=r"(?s)1 record\(s\) were produced with other settings.*task_kd/metrics.json"):
        read_runs([tmp_path], changed)


def test_a_change_to_another_stage_leaves_a_record_alone(tmp_path):
    write_record(tmp_path / "teacher", settings_record(smoke_config(), TEACHER_SECTIONS, task=SMOKE_TASK))
    read_runs([tmp_path], smoke_config(lr=3.0e-3))  # task KD's lr: the teacher never read it


def test_a_record_of_a_student_the_config_lacks_is_refused(tmp_path):
    record = settings_record(smoke_config(), TASK_KD_SECTIONS, task=SMOKE_TASK, student=SMOKE_STUDENT)
    config = smoke_config()
    del config["students"][SMOKE_STUDENT]
    assert "not in the config" in stale_settings(config, {"provenance": {"settings": record}})


def test_records_without_settings_are_logged_not_refused(tmp_path, caplog):
    write_record(tmp_path / "old", None)
    with caplog.at_level(logging.WARNING):
        read_runs([tmp_path], smoke_config())
    assert "1 metrics.json records carry no settings fingerprint" in caplog.text
