"""The compress stage: compress the pre-trained teacher into a student (nearest-Kronecker SVD).

No training: every compressed matrix is the best Kronecker approximation of the teacher's
(in Frobenius norm, or with ``init: data_aware`` in output error on calibration text
from the general-KD corpus); everything else is copied. The equal-size baselines go through the
same step: low-rank students take the truncated SVD, dense TinyBERT-style students start
from random weights (kbert/students.py).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from kbert.artifacts import provenance, sha256_json, write_stage
from kbert.config import settings_record, stage_settings
from kbert.data.corpora import load_corpus
from kbert.students import compress
from kbert.teachers import load_pretrained, teacher_hash, tokenizer_for

# The config this stage reads (kbert.config.stage_settings); its rule's rerun fingerprint hashes the same.
CONFIG_SECTIONS = ("student", "matched_student", "calibration")

# Calibration text for init: data_aware. Full windows of CALIBRATION_LENGTH tokens; the
# held-out windows come from other documents than the fitted ones.
CALIBRATION_FIT, CALIBRATION_HELDOUT, CALIBRATION_LENGTH, CALIBRATION_SEED = 128, 64, 128, 0


def calibration_ids(documents: list[str], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, held-out) token ids, (128, 128) and (64, 128): [CLS] window [SEP] of seeded documents."""
    body, fit, heldout = CALIBRATION_LENGTH - 2, [], []
    for i in np.random.default_rng(CALIBRATION_SEED).permutation(len(documents)):
        part = fit if len(fit) < CALIBRATION_FIT else heldout  # a document never feeds both
        tokens = tokenizer(documents[i], add_special_tokens=False)["input_ids"]
        for start in range(0, len(tokens) - body + 1, body):
            part.append([tokenizer.cls_token_id, *tokens[start:start + body], tokenizer.sep_token_id])
        if len(heldout) >= CALIBRATION_HELDOUT:
            return torch.tensor(fit[:CALIBRATION_FIT]), torch.tensor(heldout[:CALIBRATION_HELDOUT])
    raise ValueError(f"the calibration corpus has fewer than {CALIBRATION_FIT} + {CALIBRATION_HELDOUT} "
                     f"windows of {CALIBRATION_LENGTH} tokens (in separate documents)")


def _calibration(config: dict, calibration: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibration ids from the student's general-KD corpus (which the student trains on next)."""
    documents = [doc for name in calibration["corpus"] for doc in load_corpus(name, source=calibration["source"])]
    return calibration_ids(documents, tokenizer_for(config["teacher"]))


def run(config: dict, student: str, out_dir: str) -> dict:
    started = time.time()
    if student not in config["students"]:
        raise ValueError(f"unknown student {student!r}; configured: {sorted(config['students'])}")
    teacher = load_pretrained(config["teacher"])
    picked = stage_settings(config, CONFIG_SECTIONS, student=student)
    spec = picked["student"]
    match_spec = picked.get("matched_student")
    calibration = _calibration(config, picked["calibration"]) if "calibration" in picked else None
    model, report = compress(teacher, spec, match_spec, calibration)
    data_sha256 = None if calibration is None else sha256_json([ids.tolist() for ids in calibration])
    metrics = {"student": student, "stage": "compress", **report,
               "provenance": provenance(config, started, teacher_hash(config["teacher"]), data_sha256, None,
                                             settings=settings_record(config, CONFIG_SECTIONS, student=student))}
    write_stage(out_dir, metrics, model, tokenizer_for(config["teacher"]))
    return metrics
