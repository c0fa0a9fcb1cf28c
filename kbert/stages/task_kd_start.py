"""The task-kd-start stage: a student's dev score at the start of task KD, before any step.

The model is the one task KD starts from (``task_kd.starting_models``): the general-KD
encoder (or, for ``no_general_kd``, the SVD init) with the fine-tuned teacher's pooler and
prediction head; a narrower dense student's head is random, seeded as in task KD. The
equal-size comparison reads these scores next to the trained ones, so that it can say how
much of a family's final score its starting point already had (issue 18: does
initialisation or training decide the gap). No training: a stage of its own, so that adding
it retrains nothing.
"""

from __future__ import annotations

import time

from kbert.artifacts import provenance, stage_identity, write_stage
from kbert.config import check_variant, settings_record, stage_settings
from kbert.data.splits import data_checksum
from kbert.device import runtime
from kbert.evaluate import evaluate
from kbert.stages.task_kd import general_kd_epochs, run_record, starting_models
from kbert.teachers import teacher_hash, tokenizer_for
from kbert.training import seed_everything

# The config this stage reads (kbert.config.stage_settings): task KD's evaluation settings.
CONFIG_SECTIONS = ("task_kd", "data")

STAGE = "task_kd_start"


def run(config: dict, task: str, student: str, variant: str, seed: int, init_dir: str, teacher_dir: str,
        out_dir: str) -> dict:
    check_variant(variant)
    if variant not in ("full", "no_general_kd"):
        raise ValueError(f"task-kd-start: variant {variant!r} starts from the same student as full or "
                         f"no_general_kd; evaluate one of those")
    started = time.time()
    init_id, teacher_id = stage_identity(init_dir, student=student), stage_identity(teacher_dir, task=task)
    picked = stage_settings(config, CONFIG_SECTIONS, task=task, student=student)
    s, data_cfg = picked["task_kd"], picked["data"]
    seed_everything(seed)  # the same draws as the task-KD run of this seed (kbert/stages/task_kd.py)
    rt = runtime(config)
    tokenizer = tokenizer_for(config["teacher"])
    teacher, model = starting_models(task, init_dir, teacher_dir, rt.device)
    data_sha256 = data_checksum(task, data_cfg["source"])
    metrics = {
        **run_record(config, task, student, variant, seed, model, teacher, s["max_seq_length"]),
        "stage": STAGE,
        "results": evaluate(model, task, tokenizer, data_cfg, s["max_seq_length"], s["doc_stride"], runtime=rt),
        "general_kd_epochs": general_kd_epochs(init_dir),
        "init_run": init_id, "teacher_run": teacher_id,
        "provenance": provenance(config, started, teacher_hash(config["teacher"]), data_sha256, seed,
                                 settings=settings_record(config, CONFIG_SECTIONS, task=task, student=student)),
    }
    if rt.is_main:
        write_stage(out_dir, metrics, config=config)
    return metrics
