"""The task-kd stage: task distillation from the fine-tuned teacher into the student (paper §3.5).

Student: the general-KD encoder (or, for the ``no_general_kd`` ablation, the SVD init),
with the pooler and prediction head copied from the fine-tuned teacher (paper §3.7).
Loss: embedding + attention-score + hidden MSE + logit loss + supervised loss, unweighted
(Eq. 14), layer l to layer l. Variants (docs/architecture.md):

    full           task KD on the original training data (the paper's KroneckerBERT)
    full_aug       task KD on original + TinyBERT-augmented data
    no_general_kd  as full, from the SVD init (Table 6, "Pre-training: None")
    no_task_kd     fine-tune the general-KD student on labels only (Table 6, "w/o KD")

``task_kd.prediction_epochs`` > 0 adds TinyBERT's second phase (prediction-layer terms
only) after the Eq. 14 epochs; the paper has one phase (docs/deviations.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch
from datasets import Dataset

from kbert.artifacts import provenance, resume_dir, sha256_file, stage_identity, stage_metrics, write_stage
from kbert.config import check_variant, settings_record, stage_settings
from kbert.data import batching
from kbert.data.splits import data_checksum
from kbert.data.task_data import train_features
from kbert.device import check_batch_size, runtime
from kbert.evaluate import evaluate, model_inputs, predict_test
from kbert.losses import distillation_loss
from kbert.modeling import TASK_MODELS, KBertModel
from kbert.students import count_flops, count_parameters
from kbert.tasks import get_task
from kbert.teachers import task_model_from_encoder, teacher_hash, tokenizer_for
from kbert.training import TrainSettings, seed_everything, train

# The config this stage reads (kbert.config.stage_settings); its rule's rerun fingerprint hashes the same.
CONFIG_SECTIONS = ("task_kd", "data")


def student_task_model(encoder: KBertModel, teacher, kind: str, num_labels: int):
    """The student encoder with the fine-tuned teacher's pooler and prediction head.

    A narrower (dense TinyBERT-style) student cannot take them: its head starts random
    and is learnt in task distillation, as in TinyBERT.
    """
    model = task_model_from_encoder(encoder, kind, num_labels)
    if encoder.config.hidden_size == teacher.config.hidden_size:
        head = "qa_outputs" if kind == "span" else "classifier"
        getattr(model, head).load_state_dict(getattr(teacher, head).state_dict())
        model.bert.pooler.load_state_dict(teacher.bert.pooler.state_dict())
    return model


def starting_models(task: str, init_dir: str, teacher_dir: str, device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(fine-tuned teacher, student task model) as task KD starts: the student is the
    encoder of ``init_dir`` with the teacher's head (kbert/stages/task_kd_start.py
    evaluates exactly this). Call it right after seeding: a narrower student's random head
    draws from the seeded generator."""
    spec = get_task(task)
    teacher = TASK_MODELS[spec.kind].from_pretrained(Path(teacher_dir) / "model").eval()
    encoder = KBertModel.from_pretrained(Path(init_dir) / "model")
    model = student_task_model(encoder, teacher, spec.kind, spec.num_labels).to(device)
    return teacher.to(device), model


def run_record(config: dict, task: str, student: str, variant: str, seed: int, model, teacher,
               max_seq_length: int) -> dict:
    """What a task-KD record says about its run and its student (size, shapes, FLOPs)."""
    params = count_parameters(model.config)
    return {
        "task": task, "model": student, "family": config["students"][student].get("family", "kronecker"),
        "variant": variant, "augment": variant == "full_aug", "seed": seed,
        "params": params, "compression_factor": count_parameters(teacher.config) / params,
        "flops": count_flops(model.config, max_seq_length),
        "kronecker": model.config.kronecker, "low_rank": model.config.low_rank,
        "shape": {k: getattr(model.config, k) for k in ("hidden_size", "num_hidden_layers", "intermediate_size")},
    }


def augmented_rows(path: str | None) -> Dataset | None:
    """The new rows of an augmentation parquet (its originals are already in the train split)."""
    if path is None:
        return None
    frame = pd.read_parquet(path)
    new = frame[frame["augmented"]].drop(columns=["augmented"])
    if new.empty:
        raise ValueError(f"{path} holds no augmented rows: nothing to add to the training data")
    return Dataset.from_pandas(new, preserve_index=False)


def general_kd_epochs(init_dir: str) -> float | None:
    """General-KD epochs behind the initial student: 0 from the SVD init; None from a
    general-KD output written before they were counted."""
    init = stage_metrics(init_dir)
    return 0 if init.get("stage") == "compress" else init.get("general_kd_epochs")


def run(config: dict, task: str, student: str, variant: str, seed: int, init_dir: str, teacher_dir: str,
        out_dir: str, augmented: str | None = None) -> dict:
    check_variant(variant)
    if (variant == "full_aug") != (augmented is not None):
        raise ValueError("variant full_aug needs --augmented FILE, and only it takes one")
    started = time.time()
    init_id, teacher_id = stage_identity(init_dir, student=student), stage_identity(teacher_dir, task=task)
    spec = get_task(task)
    picked = stage_settings(config, CONFIG_SECTIONS, task=task, student=student)
    s, data_cfg = picked["task_kd"], picked["data"]
    seed_everything(seed)
    rt = runtime(config)
    check_batch_size(s["batch_size"], rt, f"task_kd ({task}, {student})")

    tokenizer = tokenizer_for(config["teacher"])
    teacher, model = starting_models(task, init_dir, teacher_dir, rt.device)
    features = train_features(task, tokenizer, data_cfg, s["max_seq_length"], s["doc_stride"], augmented_rows(augmented))
    weights = {"supervised": 1.0} if variant == "no_task_kd" else s["losses"]

    def batches(epoch):
        return batching.batches(features, s["batch_size"], shuffle=True, seed=seed, epoch=epoch,
                             pad_token_id=tokenizer.pad_token_id)

    def step_loss(terms):
        def compute(batch):
            with torch.inference_mode():  # the teacher is a fixed target: no autograd bookkeeping at all
                t_out = teacher(**model_inputs(batch))
            s_out = model(**batch)
            return distillation_loss(s_out, t_out, batch["attention_mask"], terms, spec.kind, s["temperature"],
                                     projection=getattr(model.bert, "fit_dense", None),
                                     normalisation=s["loss_normalisation"])
        return compute

    steps_per_epoch = batching.num_batches(len(features), s["batch_size"])
    plan = TrainSettings(epochs=s["epochs"], lr=s["lr"], steps_per_epoch=steps_per_epoch,
                         warmup_ratio=s["warmup_ratio"], weight_decay=s["weight_decay"], max_steps=s["max_steps"])
    run_name = f"{student}/{variant}/{task}/seed{seed}"
    data_sha256 = data_checksum(task, data_cfg["source"])
    inputs = {"settings": s, "variant": variant, "seed": seed, "init": init_id,
              "teacher": teacher_id, "data": data_cfg, "data_sha256": data_sha256,
              "augmented": augmented and sha256_file(augmented)}
    log = train(model, batches, step_loss(weights), plan, resume_dir(out_dir), desc=f"task KD {run_name}",
                inputs=inputs, runtime=rt)
    prediction = {k: weights[k] for k in ("logit", "supervised") if weights.get(k)}
    if s["prediction_epochs"] and variant != "no_task_kd":
        # TinyBERT's second phase: the prediction layer alone, once the intermediate terms
        # (which dominate the Eq. 14 sum) have been fitted, at its own small lr (TinyBERT:
        # 3e-5; at 5e-4 it collapsed a lossless student). Own checkpoint directory, so a
        # killed run resumes inside whichever phase it was in.
        second = TrainSettings(epochs=s["prediction_epochs"], lr=s["prediction_lr"], steps_per_epoch=steps_per_epoch,
                               warmup_ratio=s["warmup_ratio"], weight_decay=s["weight_decay"])
        phase_dir = resume_dir(out_dir) / "prediction"
        phase_dir.mkdir(exist_ok=True)
        log += train(model, lambda epoch: batches(s["epochs"] + epoch), step_loss(prediction), second, phase_dir,
                     desc=f"task KD {run_name} (prediction layer)",
                     inputs={**inputs, "phase": "prediction"}, runtime=rt)

    metrics = {
        **run_record(config, task, student, variant, seed, model, teacher, s["max_seq_length"]),
        "results": evaluate(model, task, tokenizer, data_cfg, s["max_seq_length"], s["doc_stride"], runtime=rt),
        "train_examples": len(features),
        "general_kd_epochs": general_kd_epochs(init_dir),
        "provenance": provenance(config, started, teacher_hash(config["teacher"]), data_sha256, seed,
                                 settings=settings_record(config, CONFIG_SECTIONS, task=task, student=student)),
    }
    test_files = predict_test(model, task, tokenizer, data_cfg, s["max_seq_length"], runtime=rt)
    if rt.is_main:  # one writer when data-parallel
        write_stage(out_dir, metrics, model, tokenizer, log, config, files=test_files)
    return metrics
