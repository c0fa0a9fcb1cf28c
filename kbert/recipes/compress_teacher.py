"""Stage 2: compress the pre-trained teacher into a student (nearest-Kronecker SVD).

No training: every compressed matrix is the best Kronecker approximation of the teacher's
(in Frobenius norm); everything else is copied. The equal-size baselines go through the
same step: low-rank students take the truncated SVD, dense TinyBERT-style students start
from random weights (kbert/compress.py).
"""

from __future__ import annotations

import time

from kbert.compress import compress
from kbert.stage_io import provenance, write_stage
from kbert.teachers import load_pretrained, tokenizer_for


def run(config: dict, student: str, out_dir: str) -> dict:
    started = time.time()
    if student not in config["students"]:
        raise ValueError(f"unknown student {student!r}; configured: {sorted(config['students'])}")
    teacher = load_pretrained(config["teacher"], config["teacher"]["finetune"]["seed"])
    spec = config["students"][student]
    match_spec = config["students"].get(spec.get("match"))
    model, report = compress(teacher, spec, match_spec)
    metrics = {"student": student, "stage": "compress", **report,
               "provenance": provenance(config, started, None, None)}
    write_stage(out_dir, metrics, model, tokenizer_for(config["teacher"]))
    return metrics
