"""The finetune-teacher stage: fine-tune the pre-trained teacher on one task.

The paper gives no teacher recipe (its teacher numbers are copied from TinyBERT), so this is
the standard BERT fine-tuning: AdamW, linear warm-up/decay, cross-entropy (MSE for STS-B,
start/end cross-entropy for SQuAD).
"""

from __future__ import annotations

import time

from kbert.artifacts import provenance, resume_dir, write_stage
from kbert.config import settings_record, stage_settings
from kbert.data import batching
from kbert.data.splits import data_checksum
from kbert.data.task_data import train_features
from kbert.device import check_batch_size, runtime
from kbert.evaluate import evaluate, predict_test
from kbert.students import count_flops, count_parameters
from kbert.tasks import get_task
from kbert.teachers import load_pretrained, task_model_from_encoder, teacher_hash, tokenizer_for
from kbert.training import TrainSettings, seed_everything, train

# The config this stage reads (kbert.config.stage_settings); its rule's rerun fingerprint hashes the same.
CONFIG_SECTIONS = ("teacher.finetune", "data")


def run(config: dict, task: str, out_dir: str, max_train_examples: int | None = None) -> dict:
    """Fine-tune on ``task`` into ``out_dir``; ``max_train_examples`` (a learning-curve point)
    caps the training rows instead of the config's data.max_train_examples."""
    started = time.time()
    spec = get_task(task)
    picked = stage_settings(config, CONFIG_SECTIONS, task=task)
    s, data_cfg = picked["finetune"], picked["data"]
    if "max_train_examples" in s:  # the teacher's own training rows (config teacher.finetune)
        data_cfg = {**data_cfg, "max_train_examples": s["max_train_examples"]}
    if max_train_examples is not None:
        if max_train_examples < 1:
            raise ValueError(f"teacher fine-tuning --max-train-examples {max_train_examples}: use at least 1")
        data_cfg = {**data_cfg, "max_train_examples": max_train_examples}
    seed_everything(s["seed"])
    rt = runtime(config)
    check_batch_size(s["batch_size"], rt, f"teacher.finetune ({task})")

    tokenizer = tokenizer_for(config["teacher"])
    model = task_model_from_encoder(load_pretrained(config["teacher"]), spec.kind, spec.num_labels, s["seed"])
    model.to(rt.device)
    features = train_features(task, tokenizer, data_cfg, s["max_seq_length"], s["doc_stride"])

    def batches(epoch):
        return batching.batches(features, s["batch_size"], shuffle=True, seed=s["seed"], epoch=epoch,
                             pad_token_id=tokenizer.pad_token_id)

    def step_loss(batch):
        loss = model(**batch).loss
        return loss, {"supervised": loss.item()}

    plan = TrainSettings(epochs=s["epochs"], lr=s["lr"], steps_per_epoch=batching.num_batches(len(features), s["batch_size"]),
                         warmup_ratio=s["warmup_ratio"], weight_decay=s["weight_decay"], max_steps=s["max_steps"])
    data_sha256 = data_checksum(task, data_cfg["source"])
    teacher_sha256 = teacher_hash(config["teacher"])
    inputs = {"teacher": teacher_sha256, "settings": s, "data": data_cfg, "data_sha256": data_sha256}
    log = train(model, batches, step_loss, plan, resume_dir(out_dir), desc=f"teacher {task}",
                inputs=inputs, runtime=rt)

    metrics = {
        "task": task, "model": "teacher", "family": "teacher", "variant": "teacher", "augment": False,
        "seed": s["seed"], "params": count_parameters(model.config), "compression_factor": 1.0,
        "flops": count_flops(model.config, s["max_seq_length"]),
        "results": evaluate(model, task, tokenizer, data_cfg, s["max_seq_length"], s["doc_stride"], runtime=rt),
        "train_examples": len(features),
        "provenance": provenance(config, started, teacher_sha256, data_sha256, s["seed"],
                                 settings=settings_record(config, CONFIG_SECTIONS, task=task)),
    }
    test_files = predict_test(model, task, tokenizer, data_cfg, s["max_seq_length"], runtime=rt)
    if rt.is_main:  # one writer when data-parallel
        write_stage(out_dir, metrics, model, tokenizer, log, config, files=test_files)
    return metrics
